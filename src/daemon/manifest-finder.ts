/**
 * Finding a version's manifest among peers, and checking it, for a pull: the first step of
 * accepting one, before anything is recorded or allocated.
 *
 * MUST hold: a manifest is used only if its bytes hash to the version asked for and it decodes
 * within the node's limits; bytes are held for at most `MANIFEST_ASK_PEERS` answers at once
 * (`MAX_MANIFEST_BYTES` each); a peer that sends bytes that do not hash, or an invalid manifest,
 * is penalised (offence `manifest`); one over the limits is refused without a penalty (another
 * node's limits may be higher); decoding runs off the event loop (`ManifestDecoder`).
 */
import { CID } from 'multiformats/cid'
import type { ContentRouting, PeerId, PeerStore } from '@libp2p/interface'
import { blockMatches, type VersionId } from '../core/digest.js'
import { AbortedError, MalformedDataError, NotFoundError, TooLargeError } from '../core/errors.js'
import type { Manifest, ManifestLimits } from '../core/manifest.js'
import type { PeerJudge } from '../fetcher/session.js'
import type { ManifestExchange } from '../protocol/manifest/index.js'
import type { Logger } from './logger.js'
import type { ManifestDecoder } from './manifest-decoder.js'

/** @default 5 s — how long to look for a manifest among DHT providers */
export const MANIFEST_PROVIDER_TIMEOUT_MS = 5_000
/** @default 5 s — one peer's answer to a manifest request */
export const MANIFEST_ASK_TIMEOUT_MS = 5_000
/** @default [0, 250, 500, 1000, 2000, 4000] ms — waits before each round of asking for a manifest */
export const MANIFEST_RETRY_MS = [0, 250, 500, 1000, 2000, 4000]
/**
 * Peers asked for a manifest at once, per round: each may answer with up to `MAX_MANIFEST_BYTES`
 * (32 MiB), which is held until it is checked. Those not asked yet go first.
 * @default 8
 */
export const MANIFEST_ASK_PEERS = 8

/** Which limit a `TooLargeError` hit, as the config key that raises it. */
const LIMIT_KEYS: Record<string, string> = { chunks: 'transfer.maxManifestChunks', size: 'transfer.maxVersionBytes' }

/** What the finder uses of the node: its peers, the DHT, and the manifest protocol. */
export interface ManifestPeers {
  readonly peerId: PeerId
  getPeers: () => PeerId[]
  services: { manifests: Pick<ManifestExchange, 'fetch'> }
  contentRouting: Pick<ContentRouting, 'findProviders'>
  peerStore: Pick<PeerStore, 'merge'>
}

export interface ManifestFinderDeps {
  judge: PeerJudge
  decoder: ManifestDecoder
  /** What a manifest from a peer may hold (the config at the time of the pull). */
  limits: () => ManifestLimits
  log: Logger
  stopped: () => boolean
  /** Metrics: an offence was recorded. */
  onRejected?: (offence: string) => void
  /** Waits before each round of asking. @default MANIFEST_RETRY_MS */
  retryMs?: readonly number[]
}

export class ManifestFinder {
  constructor (private readonly deps: ManifestFinderDeps, private readonly maxProviders: number) {}

  /**
   * Asks connected peers (`MANIFEST_ASK_PEERS` at a time, those not asked yet first), then DHT
   * providers, for the manifest. The first answer whose bytes hash to `version` is decoded and
   * checked once (identical bytes from others need no second look); a peer whose bytes do not
   * hash, or are not a valid manifest, is penalised. A head reaches a node by gossip in
   * milliseconds, often before any neighbour has fetched the manifest it names, so a miss is
   * retried after each of `MANIFEST_RETRY_MS`.
   *
   * @throws TooLargeError over the limits (no penalty: another node's limits may be higher)
   * @throws NotFoundError when no peer had a valid one
   */
  async find (node: ManifestPeers, version: VersionId, signal?: AbortSignal): Promise<{ bytes: Uint8Array, manifest: Manifest }> {
    const asked = new Set<string>()
    const ask = async (peer: PeerId): Promise<Uint8Array | undefined> => {
      const key = peer.toString()
      if (this.deps.judge.isBanned(key)) return undefined
      asked.add(key)
      try {
        const timeout = AbortSignal.timeout(MANIFEST_ASK_TIMEOUT_MS)
        const bytes = await node.services.manifests.fetch(peer, version, signal === undefined ? timeout : AbortSignal.any([signal, timeout]))
        if (bytes === undefined) return undefined
        if (!blockMatches(bytes, version)) {
          this.penalize(key, `served bytes that do not hash to version ${version}`)
          return undefined
        }
        return bytes
      } catch (err) {
        this.deps.log.debug({ peer: key, err: (err as Error).message }, 'manifest fetch failed')
        return undefined
      }
    }
    const check = async (from: PeerId[]): Promise<{ bytes: Uint8Array, manifest: Manifest } | undefined> => {
      const got = await first(from, ask)
      if (got === undefined) return undefined
      try {
        return { bytes: got.bytes, manifest: await this.decode(got.bytes, version, this.deps.limits(), signal) }
      } catch (err) {
        if (err instanceof MalformedDataError) {
          this.penalize(got.peer.toString(), `served an invalid manifest for ${version}: ${err.message}`)
          // The bytes hash to the id: every copy anywhere is the same invalid manifest.
          throw new MalformedDataError(`version ${version} names an invalid manifest, which cannot be pulled: ${err.message}`, { cause: err })
        }
        throw err
      }
    }
    const schedule = this.deps.retryMs ?? MANIFEST_RETRY_MS
    for (const [round, wait] of schedule.entries()) {
      if (wait > 0) await sleep(wait, signal)
      if (this.deps.stopped()) break
      const fresh = node.getPeers().filter(p => !asked.has(p.toString()))
      const found = await check(shuffle(fresh).slice(0, MANIFEST_ASK_PEERS)).catch(keep)
      if (found !== undefined) return found
      if (round !== 0 && round !== schedule.length - 1) continue
      try {
        const providers: PeerId[] = []
        for await (const provider of node.contentRouting.findProviders(CID.parse(version), { signal: AbortSignal.timeout(MANIFEST_PROVIDER_TIMEOUT_MS) })) {
          if (provider.id.equals(node.peerId)) continue
          await node.peerStore.merge(provider.id, { multiaddrs: provider.multiaddrs }).catch(() => {})
          providers.push(provider.id)
          if (providers.length >= this.maxProviders) break
        }
        const fromProviders = await check(providers.slice(0, MANIFEST_ASK_PEERS)).catch(keep)
        if (fromProviders !== undefined) return fromProviders
      } catch (err) {
        this.deps.log.debug({ err: (err as Error).message }, 'provider query for a manifest ended')
      }
      // Asked everyone connected already: start over with them next round.
      if (fresh.length <= MANIFEST_ASK_PEERS) asked.clear()
    }
    throw new NotFoundError(`no reachable peer has the manifest of ${version} (bytes that hash to that id); check --peer and that a peer holds the version`)
    /** A manifest refused for what it is ends the search (every copy is the same bytes); anything else tries further. */
    function keep (err: unknown): undefined {
      if (err instanceof TooLargeError || err instanceof MalformedDataError || err instanceof AbortedError) throw err
      return undefined
    }
  }

  private penalize (peer: string, detail: string): void {
    this.deps.onRejected?.('manifest')
    const banned = this.deps.judge.penalize(peer, 'manifest', detail)
    this.deps.log.info({ peer, offence: 'manifest', detail, banned }, 'peer misbehaved')
  }

  /** Decodes off the event loop; a limit hit names the config key that raises it. */
  async decode (bytes: Uint8Array, version: VersionId, limits: ManifestLimits | undefined, signal?: AbortSignal): Promise<Manifest> {
    try {
      return await this.deps.decoder.decode(bytes, version, limits, signal)
    } catch (err) {
      const key = err instanceof TooLargeError && err.limit !== undefined ? LIMIT_KEYS[err.limit] : undefined
      if (key !== undefined) throw new TooLargeError(`refusing to pull ${version}: ${(err as Error).message} (${key} in config.json raises it)`, (err as TooLargeError).limit, { cause: err })
      throw err
    }
  }
}

/** The first of `peers` whose `ask` answers with bytes; undefined when none does. */
async function first (peers: PeerId[], ask: (peer: PeerId) => Promise<Uint8Array | undefined>): Promise<{ peer: PeerId, bytes: Uint8Array } | undefined> {
  if (peers.length === 0) return undefined
  return await new Promise(resolve => {
    let left = peers.length
    for (const peer of peers) {
      void ask(peer).then(bytes => {
        left--
        if (bytes !== undefined) resolve({ peer, bytes })
        else if (left === 0) resolve(undefined)
      })
    }
  })
}

function shuffle<T> (items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[items[i], items[j]] = [items[j] as T, items[i] as T]
  }
  return items
}

async function sleep (ms: number, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted()
  await new Promise<void>((resolve, reject) => {
    const onAbort = (): void => { clearTimeout(timer); reject(new AbortedError()) }
    const timer = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve() }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

