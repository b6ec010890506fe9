/**
 * Pulls: for each version being fetched, one `PullTarget` (storage) and one `FetchSession`
 * (network), fed with peers from every source the node has — connected peers, DHT providers of
 * the version, and peers that connect later. Several requests for the same version join one pull.
 * Pulls interrupted by a crash or a stop are resumed at start-up from their verified chunks.
 *
 * Also the node's `ChunkSource`: what it can serve and what it has of each version, including
 * versions it is still pulling (pieces are served the moment they are verified).
 */
import { CID } from 'multiformats/cid'
import { peerIdFromString } from '@libp2p/peer-id'
import type { PeerId } from '@libp2p/interface'
import type { ChunkId, VersionId } from '../core/digest.js'
import { parseCid } from '../core/digest.js'
import { InvalidInputError, NotFoundError } from '../core/errors.js'
import { decodeManifest } from '../core/manifest.js'
import { parseRef } from '../core/names.js'
import type { TokenBucket } from '../fetcher/bandwidth.js'
import { FetchSession, type OriginSource, type PeerJudge, type SessionOptions, type SessionProgress } from '../fetcher/session.js'
import type { ShoalNode } from '../p2p/node.js'
import type { ChunkSource, HaveState } from '../protocol/chunks/index.js'
import { PullTarget } from '../store/pull-target.js'
import type { ResolvedVersion, Store } from '../store/store.js'
import type { Logger } from './logger.js'

/**
 * How often a running pull asks the DHT for more providers: quickly at first (the peers that start
 * pulling at the same moment find each other within a second or two), then every 10 s.
 * @default [250, 500, 1000, 2000, 4000, 10000] ms, the last repeating
 */
export const PROVIDER_QUERY_SCHEDULE_MS = [250, 500, 1000, 2000, 4000, 10_000]
/** @default 5 s — how long to look for a manifest among DHT providers */
export const MANIFEST_PROVIDER_TIMEOUT_MS = 5_000
/** @default 5 s — one peer's answer to a manifest request */
export const MANIFEST_ASK_TIMEOUT_MS = 5_000
/** @default [0, 250, 500, 1000, 2000, 4000] ms — waits before each round of asking for a manifest */
export const MANIFEST_RETRY_MS = [0, 250, 500, 1000, 2000, 4000]
/** @default 20 — providers asked for per query */
export const MAX_PROVIDERS_PER_QUERY = 20

export interface PullProgress extends SessionProgress {
  version: string
  name: string
  files: Array<{ path: string, size: number, bytes: number }>
}

interface ActivePull {
  finished?: boolean
  target: PullTarget
  session: FetchSession
  done: Promise<ResolvedVersion>
  listeners: Set<(p: PullProgress) => void>
}

export class PullManager implements ChunkSource {
  private readonly active = new Map<string, ActivePull>()
  private readonly starting = new Map<string, Promise<ActivePull>>()
  private readonly watchers = new Map<string, Set<(indices: number[]) => void>>()
  private node?: ShoalNode
  private stopped = false

  constructor (
    private readonly store: Store,
    private readonly judge: PeerJudge,
    private readonly options: {
      session: Partial<SessionOptions>
      origin?: OriginSource
      download?: TokenBucket
      /** Metrics: verified bytes received for a model from a peer; chunks refused. */
      onReceived?: (model: string, peer: string, bytes: number) => void
      onRejected?: (offence: string) => void
    },
    private readonly log: Logger
  ) {}

  attach (node: ShoalNode): void {
    this.node = node
    node.addEventListener('peer:connect', evt => {
      for (const pull of this.active.values()) pull.session.addPeer(evt.detail.toString())
    })
  }

  /** Resumes pulls recorded in the store (interrupted by a stop or a crash). */
  async resumeAll (): Promise<void> {
    for await (const [version, record] of this.store.index.pulls.iterator()) {
      this.log.info({ version, name: record.name }, 'resuming pull')
      void this.pull(`${record.name}@${version}`, { pin: record.pin }).catch(err => {
        this.log.warn({ version, err: (err as Error).message }, 'resumed pull failed')
      })
    }
  }

  /** Pulls `name@<version id>`; resolves when the version is complete and visible. */
  async pull (ref: string, options: { pin?: boolean, onProgress?: (p: PullProgress) => void, signal?: AbortSignal } = {}): Promise<ResolvedVersion> {
    const { name, selector } = parseRef(ref)
    if (selector === undefined) throw new InvalidInputError(`give the version to pull: ${name}@<version id>`)
    const version = parseCid(selector).toString() as VersionId
    if (await this.store.hasVersion(version)) {
      const v = await this.store.resolve(`${name}@${version}`)
      if (v.missing.length === 0) return v
    }
    const pull = await this.start(name, version, options.pin ?? true)
    if (options.onProgress !== undefined) pull.listeners.add(options.onProgress)
    try {
      if (options.signal === undefined) return await pull.done
      return await Promise.race([pull.done, new Promise<never>((_resolve, reject) => {
        options.signal?.addEventListener('abort', () => reject(options.signal?.reason), { once: true })
      })])
    } finally {
      if (options.onProgress !== undefined) pull.listeners.delete(options.onProgress)
    }
  }

  list (): PullProgress[] {
    return [...this.active.values()].map(p => this.progressOf(p, p.session.progress()))
  }

  async stop (): Promise<void> {
    this.stopped = true
    for (const pull of this.active.values()) await pull.target.close()
  }

  // ---- ChunkSource ---------------------------------------------------------------------------

  async readChunk (id: ChunkId): Promise<Uint8Array | undefined> {
    return await this.store.readChunk(id, { pooled: true })
  }

  release (bytes: Uint8Array): void {
    this.store.releaseChunk(bytes)
  }

  async have (version: VersionId): Promise<HaveState | undefined> {
    const pull = this.active.get(version)
    if (pull !== undefined) return pull.target.allPresent ? { complete: true } : { complete: false, bits: pull.target.bits }
    if (!await this.store.hasVersion(version)) return undefined
    const v = await this.store.resolve(`${(await this.store.index.versions.get(version))?.name ?? ''}@${version}`).catch(() => undefined)
    return v !== undefined && v.missing.length === 0 ? { complete: true } : undefined
  }

  watch (version: VersionId, listener: (indices: number[]) => void): () => void {
    const set = this.watchers.get(version) ?? new Set()
    set.add(listener)
    this.watchers.set(version, set)
    return () => {
      set.delete(listener)
      if (set.size === 0) this.watchers.delete(version)
    }
  }

  // ---- internals -----------------------------------------------------------------------------

  private async start (name: string, version: VersionId, pin: boolean): Promise<ActivePull> {
    const existing = this.active.get(version) ?? await this.starting.get(version)
    if (existing !== undefined) return existing
    const starting = this.open(name, version, pin)
    this.starting.set(version, starting)
    try {
      return await starting
    } finally {
      this.starting.delete(version)
    }
  }

  private async open (name: string, version: VersionId, pin: boolean): Promise<ActivePull> {
    const node = this.node
    if (node === undefined || this.stopped) throw new Error('the node is not running')
    const t0 = Date.now()
    const bytes = await this.store.heads.manifest(version) ?? await this.fetchManifest(version)
    const manifest = decodeManifest(bytes, version)
    if (manifest.name !== name) throw new InvalidInputError(`version ${version} is ${manifest.name}, not ${name}`)
    const t1 = Date.now()
    const target = await PullTarget.open(this.store, version, bytes, { pin })
    target.on('have', indices => { for (const l of this.watchers.get(version) ?? []) l(indices) })
    const t2 = Date.now()
    await target.copyLocal()
    this.log.debug({ version, manifestMs: t1 - t0, openMs: t2 - t1, copyLocalMs: Date.now() - t2 }, 'pull opened')
    const listeners = new Set<(p: PullProgress) => void>()
    const base = this.judge
    const judge: PeerJudge = {
      isBanned: peer => base.isBanned(peer),
      credit: (peer, bytes) => { base.credit(peer, bytes); this.options.onReceived?.(name, peer, bytes) },
      penalize: (peer, offence, detail) => { this.options.onRejected?.(offence); return base.penalize(peer, offence, detail) }
    }
    const session = new FetchSession(target, {
      channel: async (peer, signal) => await node.services.chunks.channel(peerIdFromString(peer), signal)
    }, judge, this.options.session, {
      ...(this.options.origin !== undefined ? { origin: this.options.origin } : {}),
      ...(this.options.download !== undefined ? { download: this.options.download } : {}),
      onProgress: p => { const full = this.progressOf(pull, p); for (const l of listeners) l(full) },
      log: this.log
    })
    const pull: ActivePull = { target, session, listeners, done: undefined as unknown as Promise<ResolvedVersion> }
    const cid = CID.parse(version)
    void node.contentRouting.provide(cid, { signal: AbortSignal.timeout(30_000) }).catch(() => {})
    for (const peer of node.getPeers()) session.addPeer(peer.toString())
    let round = 0
    let discovery: NodeJS.Timeout | undefined
    const next = (): void => {
      discovery = setTimeout(() => {
        void this.discover(cid, session).finally(() => { if (!pull.finished) next() })
      }, PROVIDER_QUERY_SCHEDULE_MS[Math.min(round++, PROVIDER_QUERY_SCHEDULE_MS.length - 1)])
    }
    void this.discover(cid, session)
    next()
    pull.done = (async () => {
      try {
        await session.run()
        const v = await target.completed()
        this.log.info({ version, name, bytes: target.totalBytes }, 'pull complete')
        return v
      } finally {
        pull.finished = true
        clearTimeout(discovery)
        this.active.delete(version)
        await target.close()
      }
    })()
    pull.done.catch(() => {})
    this.active.set(version, pull)
    return pull
  }

  /** Finds providers of the version in the DHT and offers them to the session. */
  private async discover (cid: CID, session: FetchSession): Promise<void> {
    const node = this.node
    if (node === undefined) return
    try {
      let n = 0
      for await (const provider of node.contentRouting.findProviders(cid, { signal: AbortSignal.timeout(PROVIDER_QUERY_SCHEDULE_MS[PROVIDER_QUERY_SCHEDULE_MS.length - 1] ?? 10_000) })) {
        if (provider.id.equals(node.peerId)) continue
        if (provider.multiaddrs.length > 0) await node.peerStore.merge(provider.id, { multiaddrs: provider.multiaddrs }).catch(() => {})
        session.addPeer(provider.id.toString())
        if (++n >= MAX_PROVIDERS_PER_QUERY) break
      }
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'provider query ended')
    }
  }

  /**
   * Asks every connected peer at once, then DHT providers, for the manifest; the bytes must hash to
   * `version`. A head reaches a node by gossip in milliseconds, often before any neighbour has
   * fetched the manifest it names, so a miss is retried after each of `MANIFEST_RETRY_MS`.
   */
  private async fetchManifest (version: VersionId): Promise<Uint8Array> {
    const node = this.node
    if (node === undefined) throw new Error('the node is not running')
    const asked = new Set<string>()
    const ask = async (peer: PeerId): Promise<Uint8Array | undefined> => {
      if (this.judge.isBanned(peer.toString())) return undefined
      asked.add(peer.toString())
      try {
        const bytes = await node.services.manifests.fetch(peer, version, AbortSignal.timeout(MANIFEST_ASK_TIMEOUT_MS))
        if (bytes === undefined) return undefined
        decodeManifest(bytes, version)
        return bytes
      } catch (err) {
        this.log.debug({ peer: peer.toString(), err: (err as Error).message }, 'manifest fetch failed')
        return undefined
      }
    }
    const first = async (peers: PeerId[]): Promise<Uint8Array | undefined> => {
      if (peers.length === 0) return undefined
      return await new Promise(resolve => {
        let left = peers.length
        for (const peer of peers) {
          void ask(peer).then(bytes => {
            left--
            if (bytes !== undefined) resolve(bytes)
            else if (left === 0) resolve(undefined)
          })
        }
      })
    }
    for (const [round, wait] of MANIFEST_RETRY_MS.entries()) {
      if (wait > 0) await new Promise(resolve => setTimeout(resolve, wait))
      if (this.stopped) break
      const bytes = await first(node.getPeers())
      if (bytes !== undefined) return bytes
      if (round !== 0 && round !== MANIFEST_RETRY_MS.length - 1) continue
      try {
        const providers: PeerId[] = []
        for await (const provider of node.contentRouting.findProviders(CID.parse(version), { signal: AbortSignal.timeout(MANIFEST_PROVIDER_TIMEOUT_MS) })) {
          if (provider.id.equals(node.peerId)) continue
          await node.peerStore.merge(provider.id, { multiaddrs: provider.multiaddrs }).catch(() => {})
          providers.push(provider.id)
          if (providers.length >= MAX_PROVIDERS_PER_QUERY) break
        }
        const found = await first(providers)
        if (found !== undefined) return found
      } catch (err) {
        this.log.debug({ err: (err as Error).message }, 'provider query for a manifest ended')
      }
    }
    throw new NotFoundError(`no reachable peer has the manifest of ${version} (asked ${asked.size}); check --peer and that a peer holds the version`)
  }

  private progressOf (pull: ActivePull, p: SessionProgress): PullProgress {
    const files = pull.target.fileProgress()
    return {
      ...p, version: pull.target.version, name: pull.target.manifest.name,
      files: files.length <= 64 ? files : files.filter(f => f.bytes > 0 && f.bytes < f.size)
    }
  }
}
