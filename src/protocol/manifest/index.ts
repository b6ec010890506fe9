/**
 * `/shoal/manifest/1.0.0`: fetch a version's manifest by id. One request and one response per
 * stream, both capped (`MAX_MANIFEST_BYTES`). The requester checks the bytes hash to the id it
 * asked for (`decodeManifest(bytes, id)`) before using them; this service only moves bytes.
 */
import { CID } from 'multiformats/cid'
import type { PeerId, Startable, Stream } from '@libp2p/interface'
import type { ConnectionManager, Registrar } from '@libp2p/interface-internal'
import { pbStream } from '@libp2p/utils'
import { MAX_MANIFEST_BYTES } from '../../core/manifest.js'
import type { VersionId } from '../../core/digest.js'
import { ManifestRequest, ManifestResponse } from './pb/manifest.js'

export const MANIFEST_PROTOCOL = '/shoal/manifest/1.0.0'
/** @default 30 s */
export const MANIFEST_TIMEOUT_MS = 30_000
/** @default 1 KiB — a request carries one CID */
const MAX_REQUEST_BYTES = 1024

export interface ManifestSource {
  /** Canonical manifest bytes of a version this node has, or undefined. */
  manifest: (version: VersionId) => Promise<Uint8Array | undefined>
}

export interface ManifestExchange {
  /** Asks `peer` for the manifest of `version`; undefined when the peer does not have it. */
  fetch: (peer: PeerId, version: VersionId, signal?: AbortSignal) => Promise<Uint8Array | undefined>
}

export interface ManifestExchangeComponents { registrar: Registrar, connectionManager: ConnectionManager }

class ManifestExchangeService implements ManifestExchange, Startable {
  constructor (private readonly components: ManifestExchangeComponents, private readonly source: ManifestSource) {}

  async start (): Promise<void> {
    await this.components.registrar.handle(MANIFEST_PROTOCOL, async stream => { await this.serve(stream) })
  }

  async stop (): Promise<void> {
    await this.components.registrar.unhandle(MANIFEST_PROTOCOL)
  }

  private async serve (stream: Stream): Promise<void> {
    const signal = AbortSignal.timeout(MANIFEST_TIMEOUT_MS)
    try {
      const pb = pbStream(stream, { maxDataLength: MAX_REQUEST_BYTES })
      const req = await pb.read(ManifestRequest, { signal })
      let bytes: Uint8Array | undefined
      try {
        const cid = CID.decode(req.version)
        bytes = await this.source.manifest(cid.toString())
      } catch {
        bytes = undefined
      }
      await pb.write({ found: bytes !== undefined, manifest: (bytes ?? new Uint8Array(0)) as Uint8Array<ArrayBuffer> }, ManifestResponse, { signal })
      await stream.close({ signal })
    } catch (err) {
      stream.abort(err as Error)
    }
  }

  async fetch (peer: PeerId, version: VersionId, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    const deadline = AbortSignal.timeout(MANIFEST_TIMEOUT_MS)
    const combined = signal === undefined ? deadline : AbortSignal.any([signal, deadline])
    const stream = await this.components.connectionManager.openStream(peer, MANIFEST_PROTOCOL, { signal: combined })
    try {
      const pb = pbStream(stream, { maxDataLength: MAX_MANIFEST_BYTES + 1024, maxBufferSize: MAX_MANIFEST_BYTES + 4096 })
      await pb.write({ version: CID.parse(version).bytes }, ManifestRequest, { signal: combined })
      const res = await pb.read(ManifestResponse, { signal: combined })
      await stream.close({ signal: combined }).catch(() => {})
      return res.found ? res.manifest : undefined
    } catch (err) {
      stream.abort(err as Error)
      throw err
    }
  }
}

export function manifestExchange (source: ManifestSource): (components: ManifestExchangeComponents) => ManifestExchange {
  return components => new ManifestExchangeService(components, source)
}
