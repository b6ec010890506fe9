/**
 * Pulls: for each version being fetched, one `PullTarget` (storage) and one `FetchSession`
 * (network), fed with peers from every source the node has — connected peers, DHT providers of
 * the version, and peers that connect later. Several requests for the same version join one pull.
 * Pulls interrupted by a crash or a stop are resumed at start-up from their verified chunks.
 *
 * A pull is accepted in this order, each step before anything costlier: the manifest's bytes
 * (at most `MAX_MANIFEST_BYTES` on the wire) hash to the version id (else the sender is penalised
 * and the next peer asked); it decodes within `ManifestLimits` and is valid, off the event loop
 * (`ManifestResolver`: invalid → the sender is penalised, too large → refused, no penalty); it is
 * of the model asked for; the disk has room (`PullTarget.open`). Only then are records, files and
 * per-chunk state created.
 *
 * Origins (web seeds): those of a version this node added (`add --origin`) are the operator's own;
 * those of any other manifest only when `transfer.origins` allows them. Each pull asks its origins
 * through its own `OriginBudget` (backoff, failure cap).
 *
 * A failed attempt (the session stalled, a write failed, a resumed pull refused) counts in the
 * pull's record; at `maxPullAttempts` the pull is given up: discarded like a cancelled one
 * (`cancel`, `PullTarget.discard`), reported through `onGiveUp`, and `PullGivenUpError` says how
 * to try again. A stop of the daemon is not an attempt.
 *
 * What is served of the versions being pulled is `LocalChunkSource`'s job: this module tells it of
 * each pull's target as it opens (`RunningPulls`).
 */
import { CID } from 'multiformats/cid'
import { peerIdFromString } from '@libp2p/peer-id'
import { chunkCodecs } from '../core/codec.js'
import type { ChunkId, VersionId } from '../core/digest.js'
import { parseCid } from '../core/digest.js'
import { AbortedError, InvalidInputError, NotFoundError, PullCancelledError, PullGivenUpError } from '../core/errors.js'
import { parseRef } from '../core/names.js'
import { OriginAllowList } from '../core/origins.js'
import type { TokenBucket } from '../fetcher/bandwidth.js'
import { OriginBudget, type OriginClient } from '../fetcher/origin.js'
import { ReadPriority } from '../fetcher/priority.js'
import { FetchSession, FetchStalledError, type PeerJudge, type SessionOptions, type SessionProgress } from '../fetcher/session.js'
import type { ShoalNode } from '../p2p/node.js'
import { PullTarget } from '../store/pull-target.js'
import type { PullView } from '../store/verified-read.js'
import type { ResolvedVersion, Store } from '../store/store.js'
import { DEFAULT_MAX_PULL_ATTEMPTS } from '../config/config.js'
import type { RunningPulls } from './chunk-source.js'
import type { Logger } from './logger.js'
import type { ManifestResolver } from './manifest-resolver.js'

/**
 * How often a running pull asks the DHT for more providers: quickly at first (the peers that start
 * pulling at the same moment find each other within a second or two), then every 10 s while
 * queries find new providers (`nextProviderQueryDelay`).
 * @default [250, 500, 1000, 2000, 4000, 10000] ms, the last repeating
 */
export const PROVIDER_QUERY_SCHEDULE_MS = [250, 500, 1000, 2000, 4000, 10_000]
/**
 * The longest wait between two provider queries of one pull. Once the schedule is done, a query
 * that finds no provider the pull did not know doubles the wait, up to this; one that finds one
 * brings it back to the schedule's last step. Peers that connect are added as they connect
 * whatever the DHT says, so a settled swarm costs a query every two minutes, not every 10 s.
 * @default 120000
 */
export const PROVIDER_QUERY_MAX_MS = 120_000
/** @default 20 — providers asked for per query */
export const MAX_PROVIDERS_PER_QUERY = 20

/**
 * The wait before the provider query after query `round` (0 for the first one after the immediate
 * one), given the wait before it (`previousMs`) and whether it found a provider the pull did not
 * know. Pure: `PullManager` keeps the state.
 */
export function nextProviderQueryDelay (round: number, previousMs: number | undefined, foundNew: boolean): number {
  const last = PROVIDER_QUERY_SCHEDULE_MS.length - 1
  const steady = PROVIDER_QUERY_SCHEDULE_MS[last] ?? 10_000
  if (round < last) return PROVIDER_QUERY_SCHEDULE_MS[round] ?? steady
  if (foundNew || previousMs === undefined) return steady
  return Math.min(PROVIDER_QUERY_MAX_MS, Math.max(steady, 2 * previousMs))
}

export interface PullProgress extends SessionProgress {
  version: string
  name: string
  files: Array<{ path: string, size: number, bytes: number }>
}

interface ActivePull {
  finished?: boolean
  /** Set by `cancel`: the pull's end is not a failed attempt, and its data goes. */
  cancelled?: boolean
  readonly controller: AbortController
  target: PullTarget
  session: FetchSession
  done: Promise<ResolvedVersion>
  listeners: Set<(p: PullProgress) => void>
  /** What readers of the version being pulled need first (`fetcher/priority.ts`). */
  priority: ReadPriority
}

/** A pull seen by a reader: its target, its end, and what to ask of it first. */
export interface ReadablePull extends PullView {
  readonly priority: ReadPriority
}

export interface PullManagerOptions {
  session: Partial<SessionOptions>
  /** The daemon's origin client; each pull wraps it in its own `OriginBudget`. */
  origin?: Pick<OriginClient, 'fetchRange'>
  /** Origins a manifest from elsewhere may use (`transfer.origins`). @default none */
  origins?: OriginAllowList
  /** @default DEFAULT_ORIGIN_MAX_FAILURES (`transfer.originMaxFailures`) */
  originMaxFailures?: number
  /** @default DEFAULT_MAX_PULL_ATTEMPTS */
  maxPullAttempts?: number
  download?: TokenBucket
  /** Keeps the encoded form of blocks that came encoded and were verified, to pass on as they came (`EncodedBlocks.keep`). */
  relay?: (block: { chunk: ChunkId, blockSize: number, index: number }, encoded: readonly Uint8Array[]) => void
  /** Metrics: verified bytes received for a model from a peer; chunks refused. */
  onReceived?: (model: string, peer: string, bytes: number) => void
  onRejected?: (offence: string) => void
  /** A pull was given up (its data is gone): for the `pull.failed` event. */
  onGiveUp?: (info: { name: string, version: VersionId, attempts: number, error: string, retry: string }) => void
}

export class PullManager implements RunningPulls {
  private readonly active = new Map<string, ActivePull>()
  private readonly starting = new Map<string, Promise<ActivePull>>()
  /** Versions whose pull is being accepted (manifest fetched and checked), for `status` and `cancel`. */
  private readonly checking = new Map<string, { name: string, controller: AbortController }>()
  private readonly opened = new Set<(target: PullTarget) => void>()
  private node?: ShoalNode
  private stopped = false

  constructor (
    private readonly store: Store,
    private readonly judge: PeerJudge,
    private readonly manifests: Pick<ManifestResolver, 'resolve'>,
    private readonly options: PullManagerOptions,
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
    for await (const [version, record] of this.store.pullRecords()) {
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

  /**
   * The running pull of `version`, for reading it as it arrives; undefined when none runs (the
   * version is complete here, or nobody pulls it).
   */
  reading (version: VersionId): ReadablePull | undefined {
    const pull = this.active.get(version)
    return pull === undefined ? undefined : readable(pull)
  }

  /**
   * Starts (or joins) the pull of `name@<version id>` and returns it as soon as it runs, for a
   * reader that streams the version while it arrives; the pull goes on without the reader.
   * Undefined when the version is already complete here.
   */
  async startReading (name: string, version: VersionId, signal?: AbortSignal): Promise<ReadablePull | undefined> {
    const running = this.reading(version)
    if (running !== undefined) return running
    if (await this.store.hasVersion(version)) {
      const v = await this.store.resolve(`${name}@${version}`)
      if (v.missing.length === 0) return undefined
    }
    // A recorded pull keeps its pin; a pull a reader starts does not pin (as `resolve --ensure`).
    const started = this.start(name, version, (await this.store.pullRecord(version))?.pin ?? false)
    // A pull outlives whoever started it: the reader may leave, the pull goes on.
    started.catch(() => {})
    const pull = signal === undefined
      ? await started
      : await Promise.race([started, new Promise<never>((_resolve, reject) => { signal.addEventListener('abort', () => reject(new AbortedError('the reader went away')), { once: true }) })])
    return readable(pull)
  }

  list (): PullProgress[] {
    return [...this.active.values()].map(p => this.progressOf(p, p.session.progress()))
  }

  /** Pulls being accepted: their manifest is being fetched and checked. */
  listChecking (): Array<{ name: string, version: string }> {
    return [...this.checking].map(([version, { name }]) => ({ name, version }))
  }

  /**
   * Stops the pull of `name@<version id>` (running, being accepted, or only recorded) and drops its
   * record and partial data; whoever waits on it gets `PullCancelledError`.
   * @throws NotFoundError when no such pull runs or is recorded
   */
  async cancel (ref: string, signal?: AbortSignal): Promise<{ name: string, version: VersionId, running: boolean, files: number, bytes: number }> {
    const { name, selector } = parseRef(ref)
    if (selector === undefined) throw new InvalidInputError(`give the version whose pull to cancel: ${name}@<version id>`)
    const version = parseCid(selector).toString() as VersionId
    const starting = this.starting.get(version)
    this.checking.get(version)?.controller.abort(new PullCancelledError(`the pull of ${name}@${version} was cancelled`))
    if (starting !== undefined) await starting.catch(() => {})
    signal?.throwIfAborted()
    const pull = this.active.get(version)
    if (pull !== undefined) {
      if (pull.target.manifest.name !== name) throw new InvalidInputError(`the pull of ${version} is of ${pull.target.manifest.name}, not ${name}`)
      pull.cancelled = true
      pull.controller.abort()
      await pull.done.catch(() => {})
    }
    const record = await this.store.pullRecord(version)
    if (pull === undefined && record === undefined && starting === undefined) {
      throw new NotFoundError(`no pull of ${name}@${version} is running or recorded here (shoal status lists the pulls in progress)`)
    }
    if (record !== undefined && record.name !== name) throw new InvalidInputError(`the pull of ${version} is of ${record.name}, not ${name}`)
    const freed = await PullTarget.discard(this.store, version)
    const running = pull !== undefined || starting !== undefined
    this.log.info({ version, name, running, ...freed }, 'pull cancelled; its record and partial data were removed')
    return { name, version, running, ...freed }
  }

  async stop (): Promise<void> {
    this.stopped = true
    for (const pull of this.active.values()) await pull.target.close()
  }

  // ---- RunningPulls (what `LocalChunkSource` serves from) ------------------------------------

  targets (): Iterable<PullTarget> {
    return [...this.active.values()].map(p => p.target)
  }

  target (version: VersionId): PullTarget | undefined {
    return this.active.get(version)?.target
  }

  onOpened (listener: (target: PullTarget) => void): void {
    this.opened.add(listener)
  }

  // ---- internals -----------------------------------------------------------------------------

  private async start (name: string, version: VersionId, pin: boolean): Promise<ActivePull> {
    const existing = this.active.get(version) ?? await this.starting.get(version)
    if (existing !== undefined) return existing
    // Not the requester's signal: requests join one pull, which outlives any of them (and resumes).
    const controller = new AbortController()
    const starting = this.open(name, version, pin, controller.signal)
    this.starting.set(version, starting)
    this.checking.set(version, { name, controller })
    try {
      return await starting
    } catch (err) {
      this.starting.delete(version)
      // A recorded pull (resumed, or failed before) that cannot even be opened is an attempt too.
      if (!(err instanceof AbortedError) && !this.stopped && await this.store.pullRecord(version) !== undefined) throw await this.attemptFailed(name, version, err)
      throw err
    } finally {
      this.starting.delete(version)
      this.checking.delete(version)
    }
  }

  private async open (name: string, version: VersionId, pin: boolean, signal?: AbortSignal): Promise<ActivePull> {
    const node = this.node
    if (node === undefined || this.stopped) throw new Error('the node is not running')
    const t0 = Date.now()
    // A version this node added: its manifest and its origins are the operator's own.
    const { bytes, manifest, local } = await this.manifests.resolve(version, signal)
    if (manifest.name !== name) throw new InvalidInputError(`version ${version} is ${manifest.name}, not ${name}`)
    const t1 = Date.now()
    const allowed = local ? () => true : (url: string) => this.options.origins?.allows(url) === true
    signal?.throwIfAborted()
    const target = await PullTarget.open(this.store, version, bytes, { pin, manifest, origins: allowed })
    try {
      return await this.run(name, version, target, local, allowed, t0, t1)
    } catch (err) {
      await target.close()
      throw err
    }
  }

  /** Starts fetching into an opened target; returns the pull, whose `done` settles when it ends. */
  private async run (name: string, version: VersionId, target: PullTarget, local: boolean, allowed: (url: string) => boolean, t0: number, t1: number): Promise<ActivePull> {
    const node = this.node
    if (node === undefined || this.stopped) throw new Error('the node is not running')
    for (const listener of this.opened) listener(target)
    let recorded = 0
    target.on('recorded', (chunks, bytes) => {
      recorded += bytes
      this.log.debug({ version, chunks, bytes, recorded }, 'chunks recorded')
    })
    const t2 = Date.now()
    await target.copyLocal()
    this.log.debug({ version, manifestMs: t1 - t0, openMs: t2 - t1, copyLocalMs: Date.now() - t2, chunks: target.totalChunks }, 'pull opened')
    const listeners = new Set<(p: PullProgress) => void>()
    const base = this.judge
    const judge: PeerJudge = {
      isBanned: peer => base.isBanned(peer),
      credit: (peer, bytes, wireBytes) => { base.credit(peer, bytes, wireBytes); this.options.onReceived?.(name, peer, bytes) },
      penalize: (peer, offence, detail) => { this.options.onRejected?.(offence); return base.penalize(peer, offence, detail) },
      note: (peer, detail) => { base.note?.(peer, detail) }
    }
    const origin = this.options.origin === undefined
      ? undefined
      : new OriginBudget(this.options.origin, {
        ...(this.options.originMaxFailures !== undefined ? { maxFailures: this.options.originMaxFailures } : {}),
        ...(local ? {} : { allowRedirect: allowed }),
        logger: this.log
      })
    const priority = new ReadPriority()
    const codecs = this.options.session.compressBelowBytesPerSecond === 0 ? undefined : chunkCodecs(target.manifest.files)
    const relay = this.options.relay
    const session = new FetchSession(target, {
      channel: async (peer, signal) => await node.services.chunks.channel(peerIdFromString(peer), signal)
    }, judge, this.options.session, {
      priority,
      ...(origin !== undefined ? { origin } : {}),
      ...(this.options.download !== undefined ? { download: this.options.download } : {}),
      ...(codecs !== undefined ? { codecOf: (id: ChunkId) => codecs.get(id) } : {}),
      ...(relay !== undefined ? { relay } : {}),
      onProgress: p => { const full = this.progressOf(pull, p); for (const l of listeners) l(full) },
      log: this.log
    })
    const pull: ActivePull = { target, session, listeners, priority, controller: new AbortController(), done: undefined as unknown as Promise<ResolvedVersion> }
    const unused = new Set(target.manifest.files.flatMap(f => (f.origins ?? []).filter(u => !allowed(u))))
    if (unused.size > 0) this.log.info({ version, origins: [...unused].slice(0, 4), count: unused.size }, 'the manifest lists origins this node does not allow (transfer.origins); they are not used')
    /** A stall says why origins did not help, when the manifest listed some this node does not use. */
    const explained = (err: unknown): unknown => err instanceof FetchStalledError && unused.size > 0
      ? new FetchStalledError(`${err.message}; its manifest lists ${unused.size} origin URL(s) this node does not use (add their hosts to transfer.origins in config.json to allow them)`, { cause: err })
      : err
    const cid = CID.parse(version)
    void node.contentRouting.provide(cid, { signal: AbortSignal.timeout(30_000) }).catch(() => {})
    for (const peer of node.getPeers()) session.addPeer(peer.toString())
    let round = 0
    let delay: number | undefined
    let foundNew = false
    let discovery: NodeJS.Timeout | undefined
    const next = (): void => {
      delay = nextProviderQueryDelay(round++, delay, foundNew)
      discovery = setTimeout(() => {
        void this.discover(cid, session)
          .then(fresh => { foundNew = fresh > 0 })
          .finally(() => { if (!pull.finished) next() })
      }, delay)
    }
    void this.discover(cid, session)
    next()
    pull.done = (async () => {
      let failure: unknown
      try {
        await session.run(pull.controller.signal)
        const v = await target.completed()
        this.log.info({ version, name, bytes: target.totalBytes, ...(origin !== undefined && origin.stats().length > 0 ? { origins: origin.stats() } : {}) }, 'pull complete')
        return v
      } catch (err) {
        failure = err
      } finally {
        pull.finished = true
        clearTimeout(discovery)
        this.active.delete(version)
        await target.close()
      }
      if (pull.cancelled === true) throw new PullCancelledError(`the pull of ${name}@${version} was cancelled; its partial data was removed`, { cause: failure })
      if (this.stopped) throw failure
      throw await this.attemptFailed(name, version, explained(failure))
    })()
    pull.done.catch(() => {})
    this.active.set(version, pull)
    return pull
  }

  /**
   * Counts a failed attempt of a recorded pull; at `maxPullAttempts` gives it up (discards it).
   * Returns the error for the caller to throw.
   */
  private async attemptFailed (name: string, version: VersionId, failure: unknown): Promise<Error> {
    const err = failure instanceof Error ? failure : new Error(String(failure))
    const record = await this.store.pullRecord(version).catch(() => undefined)
    if (record === undefined) return err
    const attempts = (record.attempts ?? 0) + 1
    const max = this.options.maxPullAttempts ?? DEFAULT_MAX_PULL_ATTEMPTS
    if (attempts < max) {
      await this.store.updatePullRecord(version, { ...record, attempts }, { doing: `counting a failed attempt of the pull of ${name}@${version}`, kept: 'the attempt is not counted' })
      this.log.info({ version, name, attempts, max, err: err.message }, 'pull attempt failed; it will be resumed')
      return err
    }
    // Not while another attempt has started meanwhile (a new request joined after this one failed).
    if (this.active.has(version) || this.starting.has(version)) return err
    await PullTarget.discard(this.store, version)
    const retry = `shoal pull ${name}@${version}`
    this.log.warn({ version, name, attempts, err: err.message, retry }, 'pull given up after too many failed attempts; its partial data was removed')
    this.options.onGiveUp?.({ name, version, attempts, error: err.message, retry })
    return new PullGivenUpError(`gave up pulling ${name}@${version} after ${attempts} failed attempts (last: ${err.message}); its partial data was removed. To try again: ${retry}`, { cause: err })
  }

  /**
   * Finds providers of the version in the DHT and offers them to the session.
   * @returns how many of them the session did not know
   */
  private async discover (cid: CID, session: FetchSession): Promise<number> {
    const node = this.node
    if (node === undefined) return 0
    let fresh = 0
    try {
      let n = 0
      for await (const provider of node.contentRouting.findProviders(cid, { signal: AbortSignal.timeout(PROVIDER_QUERY_SCHEDULE_MS[PROVIDER_QUERY_SCHEDULE_MS.length - 1] ?? 10_000) })) {
        if (provider.id.equals(node.peerId)) continue
        const key = provider.id.toString()
        if (!session.hasPeer(key)) {
          // Only a provider the pull does not know yet needs its addresses kept for the dial.
          if (provider.multiaddrs.length > 0) await node.peerStore.merge(provider.id, { multiaddrs: provider.multiaddrs }).catch(() => {})
          if (session.addPeer(key)) fresh++
        }
        if (++n >= MAX_PROVIDERS_PER_QUERY) break
      }
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'provider query ended')
    }
    return fresh
  }

  private progressOf (pull: ActivePull, p: SessionProgress): PullProgress {
    const files = pull.target.fileProgress()
    return {
      ...p, version: pull.target.version, name: pull.target.manifest.name,
      files: files.length <= 64 ? files : files.filter(f => f.bytes > 0 && f.bytes < f.size)
    }
  }
}

function readable (pull: ActivePull): ReadablePull {
  return { target: pull.target, ended: pull.done, priority: pull.priority, want: ids => pull.priority.wait(ids) }
}
