/**
 * A fetch session: gets every missing chunk of one version from many peers at once.
 *
 * Each peer has a window of bytes in flight (pipelined requests) sized to its measured rate; the
 * peer selector decides who gets the next request and the piece picker what it asks for
 * (`strategies.ts`). Every request has a deadline adapted to the peer's rate and queue; a late one
 * is cancelled and asked of someone else. When nothing is left unrequested, the endgame asks
 * other peers for the pieces still in flight and cancels the losers when one arrives.
 *
 * MUST hold:
 * - no byte is used unverified: the target's `put` hashes it; a mismatch re-queues the piece and
 *   penalises the sender (the judge bans repeat offenders);
 * - no stall: with live sources the session makes progress, and without any for
 *   `noProgressTimeoutMs` it fails with a `FetchStalledError` saying what is missing and why;
 * - bounded memory: at most `maxInFlightBytes` requested, or received and not yet stored, at once
 *   across all peers, plus `seedReserveBytes` asked of seeds.
 *
 * Peers are added by the owner (connected peers, providers, new connections); the session never
 * dials anyone itself except through `SessionPeers.channel`.
 */
import { byteLength, type ChunkId, type VersionId } from '../core/digest.js'
import { AbortedError, DigestMismatchError, MalformedDataError, ShoalError } from '../core/errors.js'
import { createPicker, createSelector, PieceSet, type PieceOrder, type SelectablePeer, type StrategyName } from './strategies.js'

/** What the session needs of a peer connection (a `PeerChannel`). */
export interface Channel {
  readonly isOpen: boolean
  readonly load: number
  /**
   * Bytes of blocks received from the peer so far, blocks still arriving included (never HAVE
   * updates: a peer that announces but does not send is not alive for this); when present,
   * liveness follows it rather than whole blocks, which at a slow link arrive seconds apart.
   */
  readonly bytesReceived?: number
  /**
   * Resolves with the chunk's bytes, possibly in parts (unverified: the target verifies).
   * `onQueued` is called when the peer acknowledges that the request waits for an upload slot.
   * `onLate` takes the block if it still arrives after the request was cancelled (then to be
   * handed back through `release` like any other).
   */
  want: (id: ChunkId, signal?: AbortSignal, urgent?: boolean, onQueued?: () => void, onLate?: (bytes: Uint8Array[]) => void) => Promise<Uint8Array | Uint8Array[]>
  /** Hands back what `want` resolved with once the session is done with it (pooled buffers). */
  release?: (bytes: Uint8Array[]) => void
  watch: (version: VersionId, watcher: { onHave: (state: { complete: true } | { complete: false, bits: Uint8Array } | undefined) => void, onUpdate: (indices: number[]) => void }) => Promise<void>
  unwatch: (version: VersionId) => Promise<void>
  onClose: (listener: (err?: Error) => void) => void
}

/** What the session needs of the pull's storage (a `PullTarget`). */
export interface Target {
  readonly version: VersionId
  readonly totalChunks: number
  readonly totalBytes: number
  readonly bytesPresent: number
  readonly done: boolean
  needed: () => ChunkId[]
  isMissing: (id: ChunkId) => boolean
  sizeOf: (id: ChunkId) => number
  indicesOf: (id: ChunkId) => number[]
  put: (id: ChunkId, bytes: Uint8Array | readonly Uint8Array[]) => Promise<boolean>
  /** Chunk id at a global index. */
  chunkAt: (index: number) => ChunkId | undefined
  /** Origin URL and byte range for a chunk, if its file lists an origin. */
  originOf: (id: ChunkId) => { url: string, offset: number } | undefined
}

/**
 * `timeout`: one late request (soft); `stall`: repeated timeouts with nothing ever delivered;
 * `unread`: as a requester, it stopped reading the blocks it asked this node for;
 * `manifest`: served a manifest that is not the one asked for (bytes that do not hash to the
 * version id) or not a valid one (not canonical, not decodable, schema or invariants broken).
 */
export type Offence = 'corrupt' | 'lie' | 'timeout' | 'stall' | 'protocol' | 'unread' | 'manifest'

/** Daemon-wide memory of peers: credit, penalties, bans. */
export interface PeerJudge {
  isBanned: (peer: string) => boolean
  /** Records an offence; returns true when the peer is now banned. */
  penalize: (peer: string, offence: Offence, detail: string) => boolean
  credit: (peer: string, bytes: number) => void
}

export interface OriginSource {
  fetchRange: (url: string, offset: number, length: number, options: { signal?: AbortSignal }) => Promise<Uint8Array>
  /** Whether `url` may be asked now (`OriginBudget`: not backing off, not given up); absent = always. */
  usable?: (url: string) => boolean
  /** `url` sent bytes that do not hash to the chunk asked for. */
  refused?: (url: string) => void
}

export interface SessionOptions {
  strategy: StrategyName
  pieceOrder: PieceOrder
  /**
   * Bytes requested, or received and not yet stored, at once across all peers, requests to seeds
   * (complete peers, while partial peers are connected) aside. @default 64 MiB
   */
  maxInFlightBytes: number
  /** Bytes requested from seeds at once (one piece each; at least one piece in all). @default 8 MiB */
  seedReserveBytes: number
  /** Per-peer window bounds; the adaptive window aims at `windowSeconds` of the peer's rate. */
  minWindowBytes: number
  maxWindowBytes: number
  windowSeconds: number
  /**
   * Deadline = base + 2 × (bytes queued at the peer) / max(rate, minRate). When it passes while
   * the peer delivered something within `requestTimeoutBaseMs`, the request keeps waiting (the
   * peer is busy, not stuck), up to `maxRequestAgeMs`.
   */
  requestTimeoutBaseMs: number
  maxRequestAgeMs: number
  minRateBytesPerSecond: number
  /** Requests for one piece at once in the endgame. */
  endgameMaxRequests: number
  /** Fail when nothing arrives for this long. */
  noProgressTimeoutMs: number
  /** Timeouts in a row, with nothing received between, before a peer is judged stalling. */
  maxConsecutiveTimeouts: number
  /**
   * ...and at least this long since it was first asked, with nothing ever received from it. A TCP
   * flow through a congested queue can go silent for 20 s (retransmission timeouts backing off):
   * at 25 Mbit/s a puller banned the seed so. @default 30 s
   */
  stallMs: number
  /**
   * A request the peer acknowledged as QUEUED (waiting for one of its upload slots) may wait this
   * long from when it was sent before it is cancelled: the peer is busy, not stalled. @default 30 s
   */
  maxQueuedMs: number
  /**
   * While a peer that has missing pieces keeps answering QUEUED, the pull waits for it past
   * `noProgressTimeoutMs`, up to this long without progress: a seed whose slots all serve others
   * is busy, not gone (a peer could also say QUEUED for ever, hence the bound). @default 5 min
   */
  maxBusyWaitMs: number
  /** Origin requests at once. */
  originConcurrency: number
  /** A peer that answered DUPLICATE for a piece is not asked for it again for this long. */
  duplicateBackoffMs: number
  /**
   * A piece a peer first answered DUPLICATE for this long ago (plus twice the time such a block
   * takes at that peer's rate: on a slow link the copy takes that much longer to arrive and move
   * on), and that has not come another way since, is asked of it urgently: the peer that got it may
   * not be connected here, or may never pass it on. DUPLICATE is a hint, never a refusal for good.
   */
  duplicateGiveUpMs: number
  /**
   * Pieces smaller than this are always asked for urgently: for them the DUPLICATE round trip and
   * the wait for another peer's copy cost more than the seed sending them again (a 64 KiB version
   * pulled by 8 nodes at once took 2.2 s, most of it waiting on one hint). @default 256 KiB
   */
  superSeedMinBytes: number
  /**
   * A peer's long-run rate stretches its allowed silence and DUPLICATE give-up (see
   * `twoBlocksMs`) only once measured over this much busy time; tick-sized samples of a short,
   * fast exchange understate it. @default 2 s
   */
  minRateSampleMs: number
  /** The most that rate may add to either. @default 30 s */
  maxRateAllowanceMs: number
}

export const DEFAULT_SESSION_OPTIONS: SessionOptions = {
  strategy: 'weighted',
  pieceOrder: 'rarest',
  maxInFlightBytes: 64 * 1024 * 1024,
  seedReserveBytes: 8 * 1024 * 1024,
  minWindowBytes: 8 * 1024 * 1024,
  maxWindowBytes: 24 * 1024 * 1024,
  windowSeconds: 0.5,
  requestTimeoutBaseMs: 5_000,
  maxRequestAgeMs: 120_000,
  minRateBytesPerSecond: 4 * 1024 * 1024,
  endgameMaxRequests: 2,
  noProgressTimeoutMs: 60_000,
  maxConsecutiveTimeouts: 3,
  stallMs: 30_000,
  maxQueuedMs: 30_000,
  maxBusyWaitMs: 5 * 60_000,
  originConcurrency: 4,
  duplicateBackoffMs: 2_000,
  // As long as a server holds a chunk back after it arrived (DUPLICATE_HOLD_MS).
  duplicateGiveUpMs: 15_000,
  superSeedMinBytes: 256 * 1024,
  minRateSampleMs: 2_000,
  maxRateAllowanceMs: 30_000
}

/** In the endgame a request is late once in flight longer than this many pieces take at its peer's rate. @default 2 */
export const ENDGAME_LATE_PIECES = 2
/** How often rates, progress and stalls are checked. @default 250 ms */
export const TICK_MS = 250
/** Weight of the newest rate sample. @default 0.3 */
export const RATE_EWMA = 0.3

/** The session could make no progress: no source has the missing pieces, or none answers. */
export class FetchStalledError extends ShoalError {
  readonly code = 'FETCH_STALLED'
}

export interface SessionProgress {
  bytes: number
  totalBytes: number
  chunks: number
  peers: number
  rate: number
  fromOrigin: number
}

interface Request { controller: AbortController, size: number, started: number, timer: NodeJS.Timeout, queued?: boolean }

class PeerState implements SelectablePeer {
  channel?: Channel
  have: 'unknown' | 'none' | 'complete' | Uint8Array = 'unknown'
  readonly inflight = new Map<ChunkId, Request>()
  inflightBytes = 0
  rate = 0
  receivedInTick = 0
  busyInTick = false
  consecutiveTimeouts = 0
  received = 0
  lastBlockAt = 0
  /** When this peer last answered QUEUED to one of this session's requests. */
  queuedAt = -Infinity
  /** The channel's `bytesReceived` at the last tick, and when it last grew. */
  blockBytesSeen = 0
  lastBytesAt = 0
  /** Bytes received and milliseconds spent while this session had requests at the peer: its long-run rate. */
  busyBytes = 0
  busyMs = 0
  gone = false
  /** Pieces this peer said it just gave someone else: not asked of it again before `until`. */
  readonly deferred = new Map<ChunkId, number>()
  /** When this peer first answered DUPLICATE for each piece. */
  readonly firstDuplicate = new Map<ChunkId, number>()

  constructor (readonly key: string, readonly origin = false) {}

  get load (): number { return this.channel?.load ?? 0 }

  /** When a whole block, or bytes of one still arriving, last came from this peer. */
  get lastHeardAt (): number { return Math.max(this.lastBlockAt, this.lastBytesAt) }

  hasIndex (i: number): boolean {
    if (this.have === 'complete') return true
    if (!(this.have instanceof Uint8Array)) return false
    return ((this.have[i >> 3] ?? 0) & (0x80 >> (i & 7))) !== 0
  }
}

export class FetchSession {
  private readonly opts: SessionOptions
  private readonly peers = new Map<string, PeerState>()
  /**
   * Per peer, for the whole session (kept when its channel closes and a new `PeerState` starts):
   * when it was first asked for a chunk, and the bytes of blocks it delivered.
   */
  private readonly history = new Map<string, { firstAskedAt: number, delivered: number, queuedAt: number }>()
  private readonly unrequested: PieceSet<ChunkId>
  private readonly requesters = new Map<ChunkId, Set<string>>()
  /** Partial peers holding each chunk (complete peers are counted in `completePeers`). */
  private readonly partialHolders = new Map<ChunkId, number>()
  private completePeers = 0
  /** Global indices of each needed chunk, ascending. */
  private readonly indices = new Map<ChunkId, number[]>()
  private inflightBytes = 0
  /** Bytes received and being verified and written; they count against `maxInFlightBytes` too. */
  private storingBytes = 0
  private readonly selector
  private readonly picker
  private readonly origin?: PeerState
  private fromOrigin = 0
  private lastProgress = Date.now()
  private failure?: Error
  private finished?: () => void
  private tick?: NodeJS.Timeout
  private readonly controller = new AbortController()

  constructor (
    private readonly target: Target,
    private readonly peerSource: { channel: (peer: string, signal: AbortSignal) => Promise<Channel> },
    private readonly judge: PeerJudge,
    options: Partial<SessionOptions> = {},
    private readonly extras: {
      origin?: OriginSource
      /** Download cap: a block is taken in only once its bytes are granted, which holds back new requests. */
      download?: { take: (bytes: number, signal?: AbortSignal) => Promise<void> }
      onProgress?: (p: SessionProgress) => void
      log?: { debug: (o: object, m?: string) => void, info: (o: object, m?: string) => void }
    } = {}
  ) {
    this.opts = { ...DEFAULT_SESSION_OPTIONS, ...options }
    const needed = target.needed()
    // Where each needed chunk occurs, ascending; fixed for the session, looked up on hot paths.
    for (const id of needed) this.indices.set(id, [...target.indicesOf(id)].sort((a, b) => a - b))
    const first = (id: ChunkId): number => this.indices.get(id)?.[0] ?? 0
    this.unrequested = new PieceSet([...needed].sort((a, b) => first(a) - first(b)))
    for (const id of needed) this.unrequested.add(id)
    this.selector = createSelector(this.opts.strategy)
    this.picker = createPicker<ChunkId>(this.opts.pieceOrder)
    if (extras.origin !== undefined && needed.some(id => target.originOf(id) !== undefined)) {
      this.origin = new PeerState('origin', true)
      this.origin.have = 'complete'
    }
  }

  /** Runs until the target is complete; rejects with the reason when it cannot finish. */
  async run (signal?: AbortSignal): Promise<void> {
    if (this.target.done) return
    const onAbort = (): void => this.fail(new AbortedError('pull cancelled'))
    signal?.addEventListener('abort', onAbort, { once: true })
    const done = new Promise<void>((resolve, reject) => {
      this.finished = () => { if (this.failure !== undefined) reject(this.failure); else resolve() }
    })
    this.tick = setInterval(() => this.onTick(), TICK_MS)
    this.pump()
    try {
      await done
    } finally {
      signal?.removeEventListener('abort', onAbort)
      this.stop()
    }
  }

  /** Adds a candidate source; safe to call repeatedly and while running. */
  addPeer (key: string): void {
    if (this.peers.has(key) || this.judge.isBanned(key) || this.failure !== undefined) return
    const peer = new PeerState(key)
    this.peers.set(key, peer)
    void this.connect(peer)
  }

  get peerCount (): number {
    return [...this.peers.values()].filter(p => !p.gone && p.have !== 'none' && p.have !== 'unknown').length
  }

  progress (): SessionProgress {
    let rate = 0
    for (const p of this.peers.values()) rate += p.rate
    return { bytes: this.target.bytesPresent, totalBytes: this.target.totalBytes, chunks: this.target.totalChunks, peers: this.peerCount, rate: rate + (this.origin?.rate ?? 0), fromOrigin: this.fromOrigin }
  }

  private async connect (peer: PeerState): Promise<void> {
    try {
      const asked = Date.now()
      const channel = await this.peerSource.channel(peer.key, this.controller.signal)
      this.extras.log?.debug({ peer: peer.key, ms: Date.now() - asked }, 'channel open')
      if (peer.gone) return
      peer.channel = channel
      peer.blockBytesSeen = channel.bytesReceived ?? 0
      channel.onClose(err => {
        this.extras.log?.debug({ peer: peer.key, err: err?.message, inflight: peer.inflight.size }, 'channel closed')
        this.dropPeer(peer, err)
      })
      await channel.watch(this.target.version, {
        onHave: state => this.onHave(peer, state),
        onUpdate: indices => this.onUpdate(peer, indices)
      })
    } catch (err) {
      this.extras.log?.debug({ peer: peer.key, err: (err as Error).message }, 'could not reach peer')
      this.dropPeer(peer)
    }
  }

  private onHave (peer: PeerState, state: { complete: true } | { complete: false, bits: Uint8Array } | undefined): void {
    if (peer.gone) return
    this.extras.log?.debug({ peer: peer.key, complete: state?.complete }, 'HAVE received')
    this.forgetHoldings(peer)
    if (state === undefined) peer.have = 'none'
    else if (state.complete) {
      peer.have = 'complete'
      this.completePeers++
    } else {
      if (state.bits.byteLength !== Math.ceil(this.target.totalChunks / 8)) {
        this.punish(peer, 'protocol', `HAVE bitfield of ${state.bits.byteLength} bytes for ${this.target.totalChunks} chunks`)
        return
      }
      peer.have = new Uint8Array(state.bits)
      for (let i = 0; i < this.target.totalChunks; i++) if (peer.hasIndex(i)) this.holderGained(i)
    }
    this.pump()
  }

  private onUpdate (peer: PeerState, indices: number[]): void {
    if (peer.gone || peer.have === 'complete') return
    if (!(peer.have instanceof Uint8Array)) peer.have = new Uint8Array(Math.ceil(this.target.totalChunks / 8))
    for (const i of indices) {
      if (i >= this.target.totalChunks || peer.hasIndex(i)) continue
      peer.have[i >> 3]! |= 0x80 >> (i & 7)
      this.holderGained(i)
    }
    this.pump()
  }

  private holderGained (index: number): void {
    const id = this.target.chunkAt(index)
    if (id === undefined || !this.target.isMissing(id)) return
    // Count a chunk once per peer even if it occurs at several indices: count its first index only.
    if (this.firstIndex(id) !== index) return
    this.partialHolders.set(id, (this.partialHolders.get(id) ?? 0) + 1)
  }

  private forgetHoldings (peer: PeerState): void {
    if (peer.have === 'complete') this.completePeers--
    else if (peer.have instanceof Uint8Array) {
      for (const [id, n] of this.partialHolders) {
        if (peer.hasIndex(this.firstIndex(id))) this.partialHolders.set(id, n - 1)
      }
    }
    peer.have = 'none'
  }

  /** The peer does not have `id` after all: a complete peer becomes "everything but `id`". */
  private forgetChunk (peer: PeerState, id: ChunkId): void {
    if (peer.have === 'complete') {
      this.forgetHoldings(peer)
      const bits = new Uint8Array(Math.ceil(this.target.totalChunks / 8))
      peer.have = bits
      for (let i = 0; i < this.target.totalChunks; i++) {
        bits[i >> 3]! |= 0x80 >> (i & 7)
        this.holderGained(i)
      }
    }
    if (!(peer.have instanceof Uint8Array)) return
    const held = this.partialHolders.get(id)
    if (held !== undefined && peer.hasIndex(this.firstIndex(id))) this.partialHolders.set(id, held - 1)
    for (const i of this.indicesOf(id)) peer.have[i >> 3]! &= ~(0x80 >> (i & 7))
  }

  private peerHas (peer: PeerState, id: ChunkId): boolean {
    if (peer.origin) {
      const where = this.target.originOf(id)
      return where !== undefined && this.extras.origin?.usable?.(where.url) !== false && (this.availability(id) === 0 || this.livePeers() === 0)
    }
    if (peer.have === 'complete') return true
    if (!(peer.have instanceof Uint8Array)) return false
    return this.indicesOf(id).some(i => peer.hasIndex(i))
  }

  private indicesOf (id: ChunkId): readonly number[] {
    return this.indices.get(id) ?? []
  }

  private firstIndex (id: ChunkId): number {
    return this.indices.get(id)?.[0] ?? -1
  }

  private availability (id: ChunkId): number {
    return this.completePeers + (this.partialHolders.get(id) ?? 0)
  }

  /** Whether `key` is a source of this pull that may announce pieces it receives (connected, not known to lack the version). */
  private mayPassOn (key: string): boolean {
    const p = this.peers.get(key)
    return p !== undefined && !p.gone && p.have !== 'none'
  }

  private livePeers (): number {
    let n = 0
    for (const p of this.peers.values()) if (!p.gone && (p.have === 'complete' || p.have instanceof Uint8Array)) n++
    return n
  }

  private windowOf (peer: PeerState): number {
    if (peer.origin) return this.opts.originConcurrency * Math.max(...[1, ...this.target.needed().slice(0, 1).map(id => this.target.sizeOf(id))])
    // A seed serves every puller at once: one request each keeps it busy, and the rest of the
    // budget goes to partial peers, whose uplinks otherwise idle while requests queue at the seed.
    if (this.injects(peer)) return 1
    if (this.opts.strategy !== 'weighted' || peer.rate === 0) return Math.max(this.opts.minWindowBytes, Math.min(this.opts.maxWindowBytes, 16 * 1024 * 1024))
    return Math.max(this.opts.minWindowBytes, Math.min(this.opts.maxWindowBytes, peer.rate * this.opts.windowSeconds))
  }

  /** Whether `peer` is a seed this session asks one piece at a time (see `windowOf`): the swarm's only source of new pieces. */
  private injects (peer: PeerState, partial = this.partialPeers() > 0): boolean {
    return partial && !peer.origin && peer.have === 'complete'
  }

  /**
   * Issues requests while some peer has window left and something to ask for. Requests to seeds
   * (`injects`) have their own budget, `seedReserveBytes`: spent from `maxInFlightBytes`, they
   * waited behind requests to partial peers, and the seed's uplink, the swarm's bottleneck, idled.
   */
  private pump (): void {
    if (this.failure !== undefined) return
    if (this.target.done) { this.complete(); return }
    for (let guard = 0; guard < 10_000; guard++) {
      const partial = this.partialPeers() > 0
      let seedHeld = 0
      for (const p of this.peers.values()) if (this.injects(p, partial)) seedHeld += p.inflightBytes
      const held = this.inflightBytes + this.storingBytes - seedHeld
      const fits = (peer: PeerState, size: number): boolean => this.injects(peer, partial)
        ? seedHeld === 0 || seedHeld + size <= this.opts.seedReserveBytes
        : held === 0 || held + size <= this.opts.maxInFlightBytes
      const eligible: PeerState[] = []
      for (const p of this.peers.values()) {
        if (!p.gone && p.channel?.isOpen === true && (p.have === 'complete' || p.have instanceof Uint8Array) && p.inflightBytes < this.windowOf(p) && fits(p, 1)) eligible.push(p)
      }
      if (this.origin !== undefined && this.origin.inflight.size < this.opts.originConcurrency && fits(this.origin, 1)) eligible.push(this.origin)
      let issued = false
      while (eligible.length > 0 && !issued) {
        const peer = this.selector.pick(eligible)
        if (peer === undefined) break
        const id = this.pickFor(peer)
        const size = id === undefined ? 0 : this.target.sizeOf(id)
        if (id === undefined || !fits(peer, size) || (!peer.origin && peer.inflightBytes > 0 && peer.inflightBytes + size > this.windowOf(peer))) {
          eligible.splice(eligible.indexOf(peer), 1)
          continue
        }
        this.request(peer, id)
        issued = true
      }
      if (!issued) return
    }
  }

  private pickFor (peer: PeerState): ChunkId | undefined {
    const now = Date.now()
    // A complete peer (a seed) is asked only for pieces no partial peer holds yet, so its upload
    // goes to what the swarm lacks; partial peers redistribute the rest.
    const seedOnly = peer.have === 'complete' && this.partialPeers() > 0
    const fresh = this.picker.pick(this.unrequested, id =>
      this.peerHas(peer, id) && !((peer.deferred.get(id) ?? 0) > now) && (!seedOnly || (this.partialHolders.get(id) ?? 0) === 0),
    id => this.availability(id))
    if (fresh !== undefined || this.unrequested.size > 0 || peer.origin) return fresh
    // Endgame: nothing unrequested; duplicate the piece whose request is latest (in flight longer
    // than its peer's rate predicts), so the tail does not wait on one slow peer.
    let best: ChunkId | undefined
    let latest = 0
    for (const [id, who] of this.requesters) {
      if (who.has(peer.key) || who.size >= this.opts.endgameMaxRequests || !this.peerHas(peer, id)) continue
      if (seedOnly && (this.partialHolders.get(id) ?? 0) > 0) continue
      const late = Math.min(...[...who].map(key => this.lateness(key, id, now)))
      if (late > latest) { best = id; latest = late }
    }
    return best
  }

  /** How long a request has been in flight beyond the time its peer needs for one such piece. */
  private lateness (key: string, id: ChunkId, now: number): number {
    const holder = key === 'origin' ? this.origin : this.peers.get(key)
    const req = holder?.inflight.get(id)
    if (holder === undefined || req === undefined) return 0
    const expected = 1000 * ENDGAME_LATE_PIECES * req.size / Math.max(holder.rate, this.opts.minRateBytesPerSecond)
    return now - req.started - expected
  }

  /** Connected peers that answered QUEUED within `noProgressTimeoutMs`: busy serving others, not gone. */
  private busyPeers (now: number): number {
    let n = 0
    for (const p of this.peers.values()) if (!p.gone && now - p.queuedAt < this.opts.noProgressTimeoutMs) n++
    return n
  }

  private partialPeers (): number {
    let n = 0
    for (const p of this.peers.values()) if (!p.gone && p.have instanceof Uint8Array) n++
    return n
  }

  private request (peer: PeerState, id: ChunkId): void {
    const size = this.target.sizeOf(id)
    const controller = new AbortController()
    const rate = Math.max(peer.rate, this.opts.minRateBytesPerSecond)
    const timeoutMs = this.opts.requestTimeoutBaseMs + 2000 * (peer.inflightBytes + size) / rate
    const timer = setTimeout(() => this.onTimeout(peer, id), timeoutMs)
    peer.inflight.set(id, { controller, size, started: Date.now(), timer })
    if (!this.history.has(peer.key)) this.history.set(peer.key, { firstAskedAt: Date.now(), delivered: 0, queuedAt: -Infinity })
    peer.inflightBytes += size
    this.inflightBytes += size
    this.unrequested.delete(id)
    const who = this.requesters.get(id) ?? new Set()
    who.add(peer.key)
    this.requesters.set(id, who)
    // Urgent in the endgame, for a small piece (`superSeedMinBytes`), when no partial peer is
    // connected (nobody else could pass the piece on, so DUPLICATE would only delay it), and to a
    // partial peer (every puller needs every piece, so its upload is never spent twice; holding it
    // back only idles its uplink).
    // Otherwise a retry after DUPLICATE is refused again while the first copy is still on its way,
    // so a seed's upload is not spent twice; `duplicateGiveUpMs` after the first refusal it is
    // urgent, since the copy evidently does not reach this node another way (no stall on a hint).
    peer.deferred.delete(id)
    const urgent = who.size > 1 || peer.have !== 'complete' || size < this.opts.superSeedMinBytes || this.partialPeers() === 0 ||
      Date.now() - (peer.firstDuplicate.get(id) ?? Infinity) >= this.opts.duplicateGiveUpMs + this.twoBlocksMs(peer, size)
    this.extras.log?.debug({ peer: peer.key, chunk: id, size, urgent, peerInflight: peer.inflightBytes, inflight: this.inflightBytes, storing: this.storingBytes }, 'chunk requested')
    const channel = peer.channel
    const onQueued = (): void => {
      const req = peer.inflight.get(id)
      if (req !== undefined && req.controller === controller) req.queued = true
      peer.queuedAt = Date.now()
      const history = this.history.get(peer.key)
      if (history !== undefined) history.queuedAt = peer.queuedAt
    }
    const onLate = (bytes: Uint8Array[]): void => {
      void this.onLateBlock(peer, id, bytes).finally(() => channel?.release?.(bytes))
    }
    const fetching = peer.origin ? this.fetchOrigin(id, controller.signal) : (channel as Channel).want(id, controller.signal, urgent, onQueued, onLate)
    fetching.then(
      async bytes => {
        try {
          await this.onBlock(peer, id, bytes)
        } finally {
          if (Array.isArray(bytes)) channel?.release?.(bytes)
        }
      },
      (err: unknown) => { this.onRequestError(peer, id, err as Error) }
    )
  }

  private refuseOrigin (id: ChunkId): void {
    const where = this.target.originOf(id)
    if (where !== undefined) this.extras.origin?.refused?.(where.url)
  }

  private async fetchOrigin (id: ChunkId, signal: AbortSignal): Promise<Uint8Array | Uint8Array[]> {
    const where = this.target.originOf(id)
    if (where === undefined || this.extras.origin === undefined) throw new Error('no origin for this chunk')
    return await this.extras.origin.fetchRange(where.url, where.offset, this.target.sizeOf(id), { signal })
  }

  /** Ends a request's bookkeeping; returns false if it was already settled (cancelled, timed out). */
  private settle (peer: PeerState, id: ChunkId): boolean {
    const req = peer.inflight.get(id)
    if (req === undefined) return false
    clearTimeout(req.timer)
    peer.inflight.delete(id)
    peer.inflightBytes -= req.size
    this.inflightBytes -= req.size
    const who = this.requesters.get(id)
    who?.delete(peer.key)
    if (who?.size === 0) this.requesters.delete(id)
    return true
  }

  /** Puts a piece back in the pool if it is still missing and nobody is fetching it. */
  private requeue (id: ChunkId): void {
    if (this.target.isMissing(id) && !this.requesters.has(id)) this.unrequested.add(id)
  }

  private async onBlock (peer: PeerState, id: ChunkId, bytes: Uint8Array | Uint8Array[]): Promise<void> {
    const size = byteLength(bytes)
    if (this.extras.download !== undefined && peer.inflight.has(id)) await this.extras.download.take(size, this.controller.signal).catch(() => {})
    if (!this.settle(peer, id)) return
    await this.store(peer, id, bytes, size, false)
  }

  /**
   * A block that arrives after its request was cancelled (timed out, or lost in the endgame) is
   * used if the piece is still missing: its bytes crossed the link anyway, and asking again spends
   * another upload on them. At 25 Mbit/s every piece a seed sent twice had been requested first by
   * a puller whose flow from the seed was starved for 7 s; the request timed out, the block then
   * arrived and was dropped, and another puller later had to ask the seed for it again.
   */
  private async onLateBlock (peer: PeerState, id: ChunkId, bytes: Uint8Array[]): Promise<void> {
    if (this.failure !== undefined || this.finished === undefined || !this.target.isMissing(id)) return
    const size = byteLength(bytes)
    await this.extras.download?.take(size, this.controller.signal).catch(() => {})
    await this.store(peer, id, bytes, size, true)
  }

  /** Counts a block from `peer` as delivered, verifies and writes it, and asks for more. */
  private async store (peer: PeerState, id: ChunkId, bytes: Uint8Array | Uint8Array[], size: number, late: boolean): Promise<void> {
    peer.lastBlockAt = Date.now()
    peer.receivedInTick += size
    peer.received += size
    const history = this.history.get(peer.key)
    if (history !== undefined) history.delivered += size
    this.storingBytes += size
    try {
      const stored = await this.target.put(id, bytes)
      this.extras.log?.debug({ peer: peer.key, chunk: id, size, stored, late }, 'chunk received')
      if (late && !stored) return
      peer.consecutiveTimeouts = 0
      this.lastProgress = Date.now()
      if (peer.origin) this.fromOrigin += size
      else this.judge.credit(peer.key, size)
      if (stored) {
        this.unrequested.delete(id) // a late block's piece may have been put back meanwhile
        this.cancelOthers(id)
      }
    } catch (err) {
      if (err instanceof DigestMismatchError) {
        if (peer.origin) this.refuseOrigin(id)
        this.punish(peer, 'corrupt', `sent bytes that do not hash to ${id}`)
      } else {
        this.fail(err as Error)
        return
      }
      this.requeue(id)
    } finally {
      this.storingBytes -= size
    }
    this.pump()
  }

  private cancelOthers (id: ChunkId): void {
    for (const key of [...(this.requesters.get(id) ?? [])]) {
      const other = key === 'origin' ? this.origin : this.peers.get(key)
      const req = other?.inflight.get(id)
      if (other === undefined || req === undefined) continue
      this.settle(other, id)
      req.controller.abort()
    }
  }

  private onRequestError (peer: PeerState, id: ChunkId, err: Error): void {
    if (!this.settle(peer, id)) return
    const name = err.name
    if (name === 'DontHaveError') {
      // It said it had the piece: a lie, or it lost it. Forget that it has it.
      this.forgetChunk(peer, id)
      this.punish(peer, 'lie', `claimed ${id} but did not have it`)
    } else if (name === 'OriginError') {
      this.extras.log?.debug({ chunk: id, err: err.message }, 'origin request failed')
    } else if (name === 'PeerRequestError' && (err as { wireCode?: string }).wireCode === 'DUPLICATE') {
      const holder = (err as { holder?: string }).holder
      if (holder !== undefined && !this.mayPassOn(holder)) {
        // The peer the chunk went to is not one of this pull's sources, so the hint cannot help
        // here: ask urgently at once. In a sparse fleet a follower waited 17 s (the give-up) for
        // pieces the seed had sent to a node it was not connected to.
        peer.firstDuplicate.set(id, -Infinity)
        this.extras.log?.debug({ peer: peer.key, chunk: id, holder }, 'DUPLICATE for a peer not connected here: asking urgently')
      } else {
        peer.deferred.set(id, Date.now() + this.opts.duplicateBackoffMs)
        if (!peer.firstDuplicate.has(id)) peer.firstDuplicate.set(id, Date.now())
        this.extras.log?.debug({ peer: peer.key, chunk: id, holder }, 'chunk deferred: DUPLICATE')
      }
    } else if (name === 'PeerRequestError') {
      this.extras.log?.debug({ peer: peer.key, err: err.message }, 'peer refused a request')
    }
    this.requeue(id)
    this.pump()
  }

  private onTimeout (peer: PeerState, id: ChunkId): void {
    const req = peer.inflight.get(id)
    if (req === undefined) return
    // A peer that keeps sending is serving a queue (other requesters share its upload) or a slow
    // link: let the request wait, up to `maxRequestAgeMs`; the endgame fetches the last pieces
    // elsewhere anyway. Bytes of a block still arriving count: at 0.5 MB/s a 4 MiB block takes 8 s.
    // A request the peer said is QUEUED for an upload slot waits too (up to `maxQueuedMs`): a peer
    // whose slots all serve others is busy, and asking again elsewhere would lose its place.
    const now = Date.now()
    const heard = now - peer.lastHeardAt < this.silenceAllowedMs(peer, req.size)
    const queued = req.queued === true && now - req.started < this.opts.maxQueuedMs
    if (!peer.origin && (heard || queued) && now - req.started < this.opts.maxRequestAgeMs) {
      req.timer = setTimeout(() => this.onTimeout(peer, id), this.opts.requestTimeoutBaseMs)
      return
    }
    this.settle(peer, id)
    req.controller.abort()
    this.requeue(id)
    if (req.queued === true) {
      // Busy, not stalling: it acknowledged the request and holds it for a slot. Ask elsewhere,
      // and do not count it against the peer (a seed whose slots a hostile requester filled was
      // banned as a staller by every honest puller waiting on it).
      this.extras.log?.debug({ peer: peer.key, chunk: id, ms: now - req.started }, 'queued request cancelled: the peer is busy')
      this.pump()
      return
    }
    this.extras.log?.debug({ peer: peer.key, chunk: id, ms: now - req.started }, 'request timed out')
    peer.consecutiveTimeouts++
    // Nothing ever delivered counts across reconnects: a peer whose connection was cut and reopened
    // starts a new `PeerState`, but not a new record (a puller banned a busy seed so at 25 Mbit/s).
    // A peer that said QUEUED within `stallMs` is busy, not stalling.
    const history = this.history.get(peer.key)
    const silentFor = now - (history?.firstAskedAt ?? now)
    const busy = now - (history?.queuedAt ?? -Infinity) < this.opts.stallMs
    if (!peer.origin && peer.consecutiveTimeouts >= this.opts.maxConsecutiveTimeouts && silentFor >= this.opts.stallMs && history?.delivered === 0 && !busy) {
      this.punish(peer, 'stall', `${peer.consecutiveTimeouts} requests timed out and nothing received in ${Math.round(silentFor / 1000)} s`)
    } else if (!peer.origin) {
      this.judge.penalize(peer.key, 'timeout', `request for ${id} timed out`)
    }
    this.pump()
  }

  /**
   * How long a peer may send nothing before its requests time out: `requestTimeoutBaseMs`, plus
   * twice the time one such block takes at the peer's long-run rate (`twoBlocksMs`). TCP
   * through a congested queue goes quiet for seconds (retransmission timeouts back off to 3 s and
   * more); at 0.5 MB/s a 4 MiB block may wait 17 s more, where cancelling it wastes what the peer
   * already sent. A peer that never sent anything gets the base alone, so a staller is caught as fast.
   */
  private silenceAllowedMs (peer: PeerState, size: number): number {
    return this.opts.requestTimeoutBaseMs + this.twoBlocksMs(peer, size)
  }

  /**
   * Twice the time a block of `size` takes at the peer's long-run rate, at most
   * `maxRateAllowanceMs`; 0 before it delivered a whole block and was measured for
   * `minRateSampleMs`.
   */
  private twoBlocksMs (peer: PeerState, size: number): number {
    const rate = peer.received > 0 && peer.busyMs >= this.opts.minRateSampleMs ? peer.busyBytes * 1000 / peer.busyMs : 0
    return rate > 0 ? Math.min(this.opts.maxRateAllowanceMs, 2000 * size / rate) : 0
  }

  /** Penalises a peer; drops it from the session when the judge bans it. */
  private punish (peer: PeerState, offence: Offence, detail: string): void {
    if (peer.origin) return
    const banned = this.judge.penalize(peer.key, offence, detail)
    this.extras.log?.info({ peer: peer.key, offence, detail, banned }, 'peer misbehaved')
    // The offence is recorded: drop the peer without penalising it again.
    if (banned || offence === 'protocol') this.dropPeer(peer)
  }

  private dropPeer (peer: PeerState, err?: Error): void {
    if (peer.gone) return
    peer.gone = true
    this.forgetHoldings(peer)
    for (const [id, req] of [...peer.inflight]) {
      this.settle(peer, id)
      req.controller.abort()
      this.requeue(id)
    }
    if (err instanceof MalformedDataError) this.judge.penalize(peer.key, 'protocol', err.message)
    this.peers.delete(peer.key)
    this.pump()
  }

  private onTick (): void {
    const seconds = TICK_MS / 1000
    const now = Date.now()
    for (const p of [...this.peers.values(), ...(this.origin !== undefined ? [this.origin] : [])]) {
      // Liveness and the long-run rate follow block bytes as they arrive; the EWMA that weights
      // peer selection follows whole blocks, as it measured better: with it smoothed over bytes
      // as they arrive, the swarm benchmark's last host finished 1.56–1.68× the bound instead of
      // 1.51–1.52×, its hosts spread over 7 s instead of 2.
      let blockBytes = p.receivedInTick
      const counted = p.channel?.bytesReceived
      if (counted !== undefined) {
        blockBytes = counted - p.blockBytesSeen
        if (blockBytes > 0) p.lastBytesAt = now
        p.blockBytesSeen = counted
      }
      // A silence longer than the base does not count as busy time: a peer that stops sending
      // keeps its rate (and so its allowed silence) instead of earning a longer one the longer it
      // is quiet.
      if (p.inflight.size > 0 && (blockBytes > 0 || now - p.lastHeardAt < this.opts.requestTimeoutBaseMs)) {
        p.busyBytes += blockBytes
        p.busyMs += TICK_MS
      }
      if (p.inflight.size > 0 || p.receivedInTick > 0) {
        const sample = p.receivedInTick / seconds
        p.rate = p.rate === 0 ? sample : p.rate * (1 - RATE_EWMA) + sample * RATE_EWMA
      }
      p.receivedInTick = 0
    }
    this.extras.onProgress?.(this.progress())
    if (this.target.done) { this.complete(); return }
    const idle = now - this.lastProgress
    if (idle > this.opts.noProgressTimeoutMs) {
      const busy = this.busyPeers(now)
      if (busy === 0 || idle > this.opts.maxBusyWaitMs) {
        const live = this.livePeers()
        const missing = this.unrequested.size + this.requesters.size
        const seconds = Math.round(idle / 1000)
        const reason = live === 0
          ? `no peer has ${this.target.version}${this.origin === undefined ? ' and no origin is listed' : ', and its origin did not answer'} (check --peer and the network)`
          : busy > 0
            ? `${busy} peer(s) that have it are busy: they answered QUEUED (every upload slot in use) but delivered none of the ${missing} missing chunks for ${seconds} s; try again later, or add peers`
            : `${live} peer(s) connected, but none delivered any of the ${missing} missing chunks for ${seconds} s`
        this.fail(new FetchStalledError(`pull of ${this.target.version} stalled: ${reason}`))
        return
      }
    }
    this.pump()
  }

  private complete (): void {
    if (this.failure !== undefined) return
    this.finished?.()
  }

  private fail (err: Error): void {
    if (this.failure !== undefined) return
    this.failure = err
    this.finished?.()
  }

  private stop (): void {
    clearInterval(this.tick)
    this.controller.abort()
    for (const p of [...this.peers.values(), ...(this.origin !== undefined ? [this.origin] : [])]) {
      for (const [id, req] of [...p.inflight]) { this.settle(p, id); req.controller.abort() }
      if (!p.origin) void p.channel?.unwatch(this.target.version).catch(() => {})
    }
  }
}
