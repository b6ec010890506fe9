/**
 * Where a version's manifest comes from, in one place: the store (a version this node holds, or
 * one it learnt of through a head), else its peers. Pulls resolve the manifest they fetch by; an
 * accepted head has the manifest it names fetched from the peer that sent it, so this node can show
 * that version; the manifest protocol serves what the store has.
 *
 * MUST hold: a manifest from anywhere but this node's own `add` is decoded within the node's
 * limits (`ManifestLimits`, off the event loop: `ManifestDecoder`) and its bytes hash to the
 * version id; one over the limits is refused with the config key that raises them, and no
 * penalty; a peer whose bytes do not hash, or are an invalid manifest, is penalised (offence
 * `manifest`); peers are asked as `ManifestFinder` says.
 *
 * Not a goal: deciding whether to pull a version (`PullManager`), or which heads to accept
 * (`heads/`).
 */
import { peerIdFromString } from '@libp2p/peer-id'
import type { VersionId } from '../core/digest.js'
import { MalformedDataError } from '../core/errors.js'
import { DEFAULT_MANIFEST_LIMITS, type Manifest, type ManifestLimits } from '../core/manifest.js'
import type { PeerJudge } from '../fetcher/session.js'
import type { ManifestSource } from '../protocol/manifest/index.js'
import type { HeadStore } from '../store/heads.js'
import type { Logger } from './logger.js'
import { ManifestDecoder } from './manifest-decoder.js'
import { ManifestFinder, MANIFEST_RETRY_MS, type ManifestPeers } from './manifest-finder.js'

/** @default 20 — DHT providers of a version asked for its manifest, per query */
export const MAX_MANIFEST_PROVIDERS = 20

export interface ManifestResolverInit {
  /** The store's manifests: those of versions it holds, and those known through a head. */
  manifests: Pick<HeadStore, 'manifest' | 'putKnownManifest'>
  /** Whether this node added `version` itself: its manifest is then the operator's own, not limited. */
  isLocal: (version: VersionId) => Promise<boolean>
  judge: PeerJudge
  log: Logger
  /** What a manifest from a peer may hold. @default DEFAULT_MANIFEST_LIMITS */
  limits?: ManifestLimits
  /** @default a `ManifestDecoder` of its own, closed by `stop` */
  decoder?: ManifestDecoder
  /** Metrics: a peer was penalised for a manifest while a pull looked for one. */
  onRejected?: (offence: string) => void
  /** Waits before each round of asking peers. @default MANIFEST_RETRY_MS */
  retryMs?: readonly number[]
}

/** A manifest a pull can use: its bytes, decoded, and whether this node added the version itself. */
export interface ResolvedManifest {
  bytes: Uint8Array
  manifest: Manifest
  local: boolean
}

export class ManifestResolver implements ManifestSource {
  private readonly decoder: ManifestDecoder
  private readonly finder: ManifestFinder
  private peers?: ManifestPeers
  private stopped = false

  constructor (private readonly init: ManifestResolverInit) {
    this.decoder = init.decoder ?? new ManifestDecoder()
    this.finder = new ManifestFinder({
      judge: init.judge, decoder: this.decoder, limits: () => this.limits, log: init.log, stopped: () => this.stopped,
      ...(init.onRejected !== undefined ? { onRejected: init.onRejected } : {}),
      retryMs: init.retryMs ?? MANIFEST_RETRY_MS
    }, MAX_MANIFEST_PROVIDERS)
  }

  /** The peers to ask (the node, once it runs). */
  attach (peers: ManifestPeers): void {
    this.peers = peers
  }

  async stop (): Promise<void> {
    this.stopped = true
    await this.decoder.close()
  }

  /** Canonical manifest bytes of `version` held here (stored or known through a head), for peers that ask. */
  async manifest (version: VersionId): Promise<Uint8Array | undefined> {
    return await this.init.manifests.manifest(version)
  }

  /**
   * The manifest of `version` for a pull: the stored one (checked within the limits unless this node
   * added it), else the first valid one a peer has (`ManifestFinder.find`).
   * @throws TooLargeError over the limits, naming the config key that raises them
   * @throws MalformedDataError when the version names an invalid manifest
   * @throws NotFoundError when no peer had it
   */
  async resolve (version: VersionId, signal?: AbortSignal): Promise<ResolvedManifest> {
    const peers = this.peers
    if (peers === undefined || this.stopped) throw new Error('the node is not running')
    const local = await this.init.isLocal(version)
    const stored = await this.init.manifests.manifest(version)
    if (stored !== undefined) return { bytes: stored, manifest: await this.finder.decode(stored, version, local ? undefined : this.limits, signal), local }
    return { ...await this.finder.find(peers, version, signal), local }
  }

  /**
   * Keeps the manifest of `version`, named by a head `peer` sent, as known: asked of that peer
   * when the store has none. Resolves true when it was fetched and kept, false when there was
   * nothing to do or the peer did not answer with it.
   * @throws MalformedDataError when the peer's bytes are not the version's manifest (it is penalised)
   */
  async learn (version: VersionId, peer: string, signal?: AbortSignal): Promise<boolean> {
    const peers = this.peers
    if (peers === undefined || this.stopped) return false
    if (await this.init.manifests.manifest(version) !== undefined) return false
    const bytes = await peers.services.manifests.fetch(peerIdFromString(peer), version, signal).catch(() => undefined)
    if (bytes === undefined) return false
    try {
      await this.init.manifests.putKnownManifest(version, bytes)
    } catch (err) {
      if (err instanceof MalformedDataError) this.init.judge.penalize(peer, 'manifest', `served an invalid manifest for ${version}: ${err.message}`)
      throw err
    }
    return true
  }

  private get limits (): ManifestLimits {
    return this.init.limits ?? DEFAULT_MANIFEST_LIMITS
  }
}
