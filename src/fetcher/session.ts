/**
 * A fetch session: gets every missing block of one version from many peers at once.
 *
 * The unit of a request is a piece — a span of consecutive blocks of one chunk (`pieces.ts`) — and
 * each block is verified and stored the moment it arrives, so a peer can pass it on before its
 * chunk is whole, and a late or failed request is retried for its missing blocks only. Each peer has
 * a window of bytes in flight sized to its measured rate; the peer selector decides who gets the
 * next request and the piece picker what it asks for (`strategies.ts`: rarest-first by default).
 * Every request has a deadline from the peer's measured rate and queue; a late one is cancelled and
 * asked of someone else. When nothing is left unrequested, the endgame asks other peers for the
 * pieces still in flight and cancels the losers when one arrives. A web seed is one more channel
 * (`origin-channel.ts`), asked only for pieces no connected peer holds.
 *
 * MUST hold:
 * - no byte is used unverified: the target's `putBlock` checks every block against its chunk's
 *   tree (or the chunk id); a mismatch re-queues the piece and penalises the sender (the judge
 *   bans repeat offenders);
 * - no stall: with live sources the session makes progress, and without any for
 *   `noProgressTimeoutMs` it fails with a `FetchStalledError` saying what is missing and why
 *   (while peers that hold the missing pieces answer QUEUED it waits, up to `maxBusyWaitMs`);
 * - bounded memory: at most `maxInFlightBytes` requested, or received and not yet stored, at once
 *   across all peers, plus `seedReserveBytes` asked of seeds; nothing is asked while the target's
 *   whole chunks waiting to be written exceed `maxWriteBacklogBytes`.
 *
 * Peers are added by the owner (connected peers, providers, new connections); the session never
 * dials anyone itself except through the peer source's `channel`.
 */
import type { CodecName } from '../core/codec.js'
import { byteLength, type ChunkId } from '../core/digest.js'
import { AbortedError, DigestMismatchError, MalformedDataError, ShoalError } from '../core/errors.js'
import { blockCount } from '../core/tree.js'
import { isStaller, longRunRate, silenceAllowedMs, twoSpansMs, type PeerHistory } from './liveness.js'
import { isWhole, OriginChannel } from './origin-channel.js'
import { Availability, Holdings, PieceTable, type Piece } from './pieces.js'
import { createPicker, createSelector, PieceSet, type PieceOrder, type SelectablePeer, type StrategyName } from './strategies.js'
import { MAX_URGENT_SCAN } from './priority.js'
import type { Arrival, BlockRange, Channel, OriginSource, PeerHave, PeerJudge, PrioritySource, Target } from './types.js'

export type { Arrival, BlockRange, Channel, Offence, OriginSource, PeerHave, PeerJudge, PrioritySource, Span, Target } from './types.js'

export interface SessionOptions {
  strategy: StrategyName
  pieceOrder: PieceOrder
  /** Bytes of one piece (a span of blocks), at least one block. @default 1 MiB */
  spanBytes: number
  /**
   * Bytes requested, or received and not yet stored, at once across all peers, requests to seeds
   * (complete peers, while partial peers are connected) aside. The daemon's pulls pass
   * `MAX_PULL_IN_FLIGHT_BYTES` (16 MiB, `daemon/daemon.ts`); this default serves tests and other
   * embedders. why: docs/decisions/0014-pull-windows-and-budgets.md @default 64 MiB
   */
  maxInFlightBytes: number
  /** Bytes requested from seeds at once (one piece each; at least one piece in all). @default 8 MiB */
  seedReserveBytes: number
  /**
   * While the target holds more than this in whole chunks not yet written (`writeBacklogBytes`),
   * no request is issued, to peers or seeds: when the disk (or the event loop that completes its
   * writes) falls behind the links, what arrives waits in the senders' queues and the kernel's
   * socket buffers, not in this process. Without it a pull on a busy node held dozens of
   * chunk buffers at once. why: docs/decisions/0025-write-backlog.md @default 8 MiB
   */
  maxWriteBacklogBytes: number
  /**
   * Requests in flight to one peer at once, whatever their bytes: below what a server queues per
   * stream (`MAX_PENDING_PER_STREAM`, 64), past which it answers BUSY, with room for CANCELs it
   * has not read yet: small pieces would otherwise fill the byte window with more requests than a
   * server queues. why: docs/decisions/0014-pull-windows-and-budgets.md @default 48
   */
  maxRequestsPerPeer: number
  /**
   * Per-peer window bounds; the adaptive window aims at `windowSeconds` of the peer's rate. The
   * least is small so that peers sharing one downlink each hold little of it queued.
   * why: docs/decisions/0014-pull-windows-and-budgets.md
   */
  minWindowBytes: number
  maxWindowBytes: number
  windowSeconds: number
  /**
   * The least window of a peer while a reader waits, also before its rate is measured (the rate's
   * `windowSeconds` still apply above it). With an unmeasured peer's window, the first peer to
   * answer would take the reader's next pieces while the others idle.
   * why: docs/decisions/0015-reads-while-pulling.md @default 2 MiB
   */
  readerWindowBytes: number
  /**
   * Deadline = base + 2 × (bytes queued at the peer) / rate, the rate measured from that peer
   * (before it is, `initialRateBytesPerSecond`). When it passes while the peer delivered
   * something recently, the request keeps waiting (the peer is busy, not stuck), up to
   * `maxRequestAgeMs`.
   */
  requestTimeoutBaseMs: number
  maxRequestAgeMs: number
  /** The rate a peer is assumed to have before it is measured (for its first deadlines). @default 4 MB/s */
  initialRateBytesPerSecond: number
  /** Requests for one piece at once in the endgame. */
  endgameMaxRequests: number
  /** Fail when nothing arrives for this long. */
  noProgressTimeoutMs: number
  /** Timeouts in a row, with nothing received between, before a peer is judged stalling. */
  maxConsecutiveTimeouts: number
  /**
   * ...and at least this long since it was first asked, with nothing ever received from it. A TCP
   * flow through a congested queue can go silent for tens of seconds while retransmissions back
   * off. why: docs/decisions/0016-deadlines-and-stall-bans.md @default 30 s
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
   * A piece a peer first answered DUPLICATE for this long ago (plus twice the time such a span
   * takes at that peer's rate), and that has not come another way since, is asked of it urgently:
   * the peer that got it may not be connected here, or may never pass it on. DUPLICATE is a hint,
   * never a refusal for good.
   */
  duplicateGiveUpMs: number
  /**
   * Chunks smaller than this are always asked for urgently: for them the DUPLICATE round trip and
   * the wait for another peer's copy cost more than the seed sending them again. @default 256 KiB
   */
  superSeedMinBytes: number
  /**
   * A peer's long-run rate stretches its allowed silence and DUPLICATE give-up only once measured
   * over this much busy time; tick-sized samples of a short, fast exchange understate it. @default 2 s
   */
  minRateSampleMs: number
  /** The most that rate may add to either. @default 30 s */
  maxRateAllowanceMs: number
  /**
   * A block codec is offered to a peer (its blocks may come compressed) while this pull receives
   * less than this many bytes a second from it: on a link that fast, encoding and decoding cost
   * more time than the bytes they save (on loopback the sender's encoding, not the link, would set
   * the pace). 0: never offered; `Infinity`: always. @default 48 MiB/s
   */
  compressBelowBytesPerSecond: number
}

export const DEFAULT_SESSION_OPTIONS: SessionOptions = {
  strategy: 'weighted',
  pieceOrder: 'rarest',
  spanBytes: 1024 * 1024,
  maxInFlightBytes: 64 * 1024 * 1024,
  seedReserveBytes: 8 * 1024 * 1024,
  maxWriteBacklogBytes: 8 * 1024 * 1024,
  maxRequestsPerPeer: 48,
  minWindowBytes: 2 * 1024 * 1024,
  maxWindowBytes: 24 * 1024 * 1024,
  windowSeconds: 0.5,
  readerWindowBytes: 2 * 1024 * 1024,
  requestTimeoutBaseMs: 5_000,
  maxRequestAgeMs: 120_000,
  initialRateBytesPerSecond: 4 * 1024 * 1024,
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
  maxRateAllowanceMs: 30_000,
  compressBelowBytesPerSecond: 48 * 1024 * 1024
}

/** In the endgame a request is late once in flight longer than this many pieces take at its peer's rate. @default 2 */
export const ENDGAME_LATE_PIECES = 2
/** How often rates, progress and stalls are checked. @default 250 ms */
export const TICK_MS = 250
/** @default 8 — peers that could not be used named in a stalled pull's message, at most */
export const MAX_UNUSABLE_NAMED = 8
/**
 * Peers a session dials because a seed's DUPLICATE named them as the holder of a piece: each is
 * dialed once; past this many, a DUPLICATE naming a new one is treated as naming an unreachable
 * peer (the piece is asked for urgently). A hostile seed cannot make a puller dial without bound.
 * @default 64
 */
export const MAX_DIALED_HOLDERS = 64
/**
 * A holder a DUPLICATE named that has not announced what it holds this long after it was dialed is
 * treated as unreachable: the pieces held back for it are asked for urgently. A dial to a peer that
 * left can take far longer to fail. @default 1.5 s
 */
export const HOLDER_DIAL_MS = 1_500
/** Weight of the newest rate sample. @default 0.3 */
export const RATE_EWMA = 0.3

/** The session could make no progress: no source has the missing pieces, or none answers. */
export class FetchStalledError extends ShoalError {
  readonly code = 'FETCH_STALLED'
}

export interface SessionProgress {
  bytes: number
  /** Bytes of the blocks received so far as they crossed the links (fewer than their size when they came encoded). */
  wireBytes: number
  /** Size of the blocks received so far (those `wireBytes` decoded to). */
  receivedBytes: number
  totalBytes: number
  chunks: number
  peers: number
  rate: number
  fromOrigin: number
}

interface Request {
  controller: AbortController
  /** Bytes asked for and not yet arrived. */
  size: number
  /** Bytes of the whole span asked for. */
  span: number
  started: number
  timer: NodeJS.Timeout
  queued?: boolean
  /** Blocks of it being verified and stored: the request is settled only after them. */
  arrivals: Array<Promise<void>>
}

class PeerState implements SelectablePeer {
  channel?: Channel
  readonly holdings: Holdings
  /** Pieces this peer is counted as holding in `Availability` (partial peers only). */
  readonly counted: Uint8Array
  readonly inflight = new Map<number, Request>()
  inflightBytes = 0
  rate = 0
  /** Sent faster than `compressBelowBytesPerSecond` (and not yet below half of it since): offered no codec. */
  fast = false
  receivedInTick = 0
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
  readonly deferred = new Map<number, number>()
  /** When this peer first answered DUPLICATE for each piece (naming the holder in `holderOf`). */
  readonly firstDuplicate = new Map<number, number>()
  /** When this peer last answered DUPLICATE for each piece. */
  readonly lastDuplicate = new Map<number, number>()
  /** Pieces asked of this peer again without urgency after their last DUPLICATE had gone stale (`duplicateGaveUp`). */
  readonly staleAsked = new Set<number>()
  /** The peer each DUPLICATE named as holding the piece now (when it named one). */
  readonly holderOf = new Map<number, string>()

  constructor (readonly key: string, totalChunks: number, pieces: number, readonly origin?: OriginChannel) {
    this.holdings = new Holdings(totalChunks)
    this.counted = new Uint8Array(origin === undefined ? pieces : 0)
    if (origin !== undefined) {
      this.channel = origin
      this.holdings.set({ complete: true })
    }
  }

  get load (): number { return this.channel?.load ?? 0 }

  /** When a whole block, or bytes of one still arriving, last came from this peer. */
  get lastHeardAt (): number { return Math.max(this.lastBlockAt, this.lastBytesAt) }
}

export class FetchSession {
  private readonly opts: SessionOptions
  private readonly table: PieceTable
  private readonly peers = new Map<string, PeerState>()
  /**
   * Per peer, for the whole session (kept when its channel closes and a new `PeerState` starts):
   * when it was first asked, the bytes of blocks it delivered, when it last said QUEUED.
   */
  private readonly history = new Map<string, PeerHistory>()
  private readonly unrequested: PieceSet<number>
  /**
   * Chunks with a piece requested, oldest first: their other pieces are asked for before any new
   * chunk is started (libtorrent's partial pieces first), so few chunks are assembled at once —
   * each holds a chunk-sized buffer until its last block is verified.
   */
  private readonly started = new Set<ChunkId>()
  /**
   * Pieces a partial peer was asked for and did not deliver (timed out, refused, gone): a seed may
   * be asked for them though partial peers claim them (a partial peer that claims pieces and
   * goes silent otherwise holds them out of the seed's reach for good).
   */
  private readonly failedAtPartial = new Set<number>()
  /** Peers that could not be used, and why (an older shoal, unreachable): said when the pull stalls. */
  private readonly unusable = new Map<string, string>()
  /** Peers dialed because a DUPLICATE named them, and when (`MAX_DIALED_HOLDERS`, `HOLDER_DIAL_MS`). */
  private readonly dialedHolders = new Map<string, number>()
  private readonly requesters = new Map<number, Set<string>>()
  private readonly availability: Availability
  /** Blocks of each piece still missing here. */
  private readonly remaining: Int32Array
  private inflightBytes = 0
  /** Bytes received and being verified and written; they count against `maxInFlightBytes` too. */
  private storingBytes = 0
  private readonly selector
  private readonly picker
  private readonly origin?: PeerState
  private fromOrigin = 0
  /** Bytes of blocks received and stored: as they crossed the links, and decoded. */
  private wireReceived = 0
  private rawReceived = 0
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
      /** What to fetch before the piece order's choice (readers waiting for bytes: `priority.ts`). */
      priority?: PrioritySource
      /** The block codec to offer for a chunk's blocks (from its tensor's dtype: `core/codec.ts`), or undefined: none. */
      codecOf?: (id: ChunkId) => CodecName | undefined
      /** Given the encoded form of each block that came encoded and was verified and stored, to pass on as it came. */
      relay?: (block: { chunk: ChunkId, blockSize: number, index: number }, encoded: readonly Uint8Array[]) => void
    } = {}
  ) {
    this.opts = { ...DEFAULT_SESSION_OPTIONS, ...options }
    const spanBlocks = Math.max(1, Math.floor(this.opts.spanBytes / target.blockSize))
    this.table = new PieceTable(target, spanBlocks)
    const n = this.table.pieces.length
    this.availability = new Availability(n)
    this.remaining = new Int32Array(n)
    const order: number[] = []
    this.table.pieces.forEach((p, i) => {
      let left = 0
      for (let b = p.first; b < p.first + p.count; b++) if (target.blockMissing(p.chunk, b)) left++
      this.remaining[i] = left
      order.push(i)
    })
    this.unrequested = new PieceSet(order)
    for (const i of order) if (this.remaining[i]! > 0) this.unrequested.add(i)
    this.selector = createSelector(this.opts.strategy)
    this.picker = createPicker<number>(this.opts.pieceOrder)
    if (extras.origin !== undefined && target.needed().some(id => target.originOf(id) !== undefined)) {
      this.origin = new PeerState('origin', target.totalChunks, n, new OriginChannel(target, extras.origin))
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
    const unprioritize = this.extras.priority?.onChange(() => this.pump())
    this.pump()
    try {
      await done
    } finally {
      unprioritize?.()
      signal?.removeEventListener('abort', onAbort)
      this.stop()
    }
  }

  /**
   * Adds a candidate source; safe to call repeatedly and while running.
   * @returns true when it was new (not known, not banned, the session not failed)
   */
  addPeer (key: string): boolean {
    if (this.hasPeer(key) || this.judge.isBanned(key) || this.failure !== undefined) return false
    const peer = new PeerState(key, this.target.totalChunks, this.table.pieces.length)
    this.peers.set(key, peer)
    void this.connect(peer)
    return true
  }

  /** Whether `key` was added (it may have left since). */
  hasPeer (key: string): boolean {
    return this.peers.has(key)
  }

  get peerCount (): number {
    let n = 0
    for (const p of this.peers.values()) if (!p.gone && p.holdings.known) n++
    return n
  }

  progress (): SessionProgress {
    let rate = 0
    for (const p of this.peers.values()) rate += p.rate
    return { bytes: this.target.bytesPresent, wireBytes: this.wireReceived, receivedBytes: this.rawReceived, totalBytes: this.target.totalBytes, chunks: this.target.totalChunks, peers: this.peerCount, rate: rate + (this.origin?.rate ?? 0), fromOrigin: this.fromOrigin }
  }

  // ---- peers and what they hold ------------------------------------------------------------

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
        onUpdate: update => this.onUpdate(peer, update)
      })
    } catch (err) {
      const message = (err as Error).message
      if ((err as Error).name === 'OldPeerError') {
        if (!this.unusable.has(peer.key)) this.extras.log?.info({ peer: peer.key, err: message }, 'peer runs an older shoal: not used')
        this.judge.note?.(peer.key, message)
      } else {
        this.extras.log?.debug({ peer: peer.key, err: message }, 'could not reach peer')
      }
      if (this.unusable.size < MAX_UNUSABLE_NAMED || this.unusable.has(peer.key)) this.unusable.set(peer.key, message)
      this.dropPeer(peer)
    }
  }

  private onHave (peer: PeerState, state: PeerHave | undefined): void {
    if (peer.gone) return
    this.extras.log?.debug({ peer: peer.key, complete: state?.complete }, 'HAVE received')
    const hadPartial = this.partialPeers() > 0
    this.forgetHoldings(peer)
    if (!peer.holdings.set(state)) {
      this.punish(peer, 'protocol', `HAVE bitfield of ${state !== undefined && !state.complete ? state.bits.byteLength : 0} bytes for ${this.target.totalChunks} chunks`)
      return
    }
    if (peer.holdings.complete) this.availability.complete++
    else if (peer.holdings.partial) for (let i = 0; i < this.table.pieces.length; i++) this.recount(peer, i)
    if (!hadPartial && peer.holdings.partial) this.withdrawFromSeeds()
    this.pump()
  }

  /**
   * The first partial peer is known: seeds are asked one piece at a time from now on (`injects`),
   * so requests queued at a seed beyond that, none of whose blocks has arrived, are withdrawn
   * (CANCEL). At the start of a swarm each puller knows only the seed and queues a whole window
   * there (16 MiB: ~30 s deep at 25 Mbit/s among six pullers). The seed holds each queued piece
   * as on its way to this puller and refuses it to the others (DUPLICATE) until their hint ages,
   * and then sent it twice or more.
   */
  private withdrawFromSeeds (): void {
    for (const seed of this.peers.values()) {
      if (!this.injects(seed)) continue
      const waiting = [...seed.inflight].filter(([, req]) => req.arrivals.length === 0).sort((a, b) => a[1].started - b[1].started)
      // One request stays, unless blocks of another are arriving.
      for (const [piece, req] of waiting.slice(waiting.length === seed.inflight.size ? 1 : 0)) {
        if (!this.settle(seed, piece, req)) continue
        req.controller.abort()
        this.requeue(piece)
      }
    }
  }

  private onUpdate (peer: PeerState, update: { chunks: number[], ranges: BlockRange[] }): void {
    if (peer.gone || peer.holdings.complete) return
    const touched = new Set<number>()
    for (const i of update.chunks) {
      if (peer.holdings.addChunk(i)) for (const piece of this.table.ofIndex(i)) touched.add(piece)
    }
    for (const r of update.ranges) {
      peer.holdings.addRange(r)
      for (const piece of this.table.ofIndex(r.chunk)) touched.add(piece)
    }
    for (const piece of touched) this.recount(peer, piece)
    this.pump()
  }

  /** Brings `piece`'s count in line with whether `peer` (partial) holds it now. */
  private recount (peer: PeerState, piece: number): void {
    const p = this.table.pieces[piece]
    if (p === undefined || peer.holdings.complete) return
    const holds = peer.holdings.hasPiece(p, this.target.indicesOf(p.chunk))
    if (holds && peer.counted[piece] === 0) { peer.counted[piece] = 1; this.availability.gained(piece) } else if (!holds && peer.counted[piece] === 1) { peer.counted[piece] = 0; this.availability.lost(piece) }
  }

  private forgetHoldings (peer: PeerState): void {
    if (peer.holdings.complete) this.availability.complete--
    for (let i = 0; i < peer.counted.length; i++) {
      if (peer.counted[i] === 1) { peer.counted[i] = 0; this.availability.lost(i) }
    }
    peer.holdings.set(undefined)
  }

  /** The peer does not have `piece` after all: it no longer counts for its chunk. */
  private forgetPiece (peer: PeerState, piece: number): void {
    const p = this.table.pieces[piece]
    if (p === undefined) return
    if (peer.holdings.complete) {
      this.availability.complete--
      peer.holdings.forgetChunk(-1, this.target.totalChunks)
      for (let i = 0; i < this.table.pieces.length; i++) this.recount(peer, i)
    }
    for (const index of this.target.indicesOf(p.chunk)) peer.holdings.forgetChunk(index, this.target.totalChunks)
    for (const other of this.table.ofChunk(p.chunk)) this.recount(peer, other)
  }

  private peerHas (peer: PeerState, piece: number): boolean {
    const p = this.table.pieces[piece]
    if (p === undefined) return false
    if (peer.origin !== undefined) return peer.origin.serves(p.chunk) && (this.availability.of(piece) === 0 || this.livePeers() === 0)
    if (peer.holdings.complete) return true
    return peer.counted[piece] === 1
  }

  /** Whether `key` is a source of this pull that may announce pieces it receives (connected, not known to lack the version). */
  private mayPassOn (key: string): boolean {
    const p = this.peers.get(key)
    return p !== undefined && !p.gone && p.holdings.state !== 'none'
  }

  /**
   * Whether the peer a DUPLICATE named may pass the piece on here: a source of this pull, or one
   * not yet known, which is dialed now (once, `MAX_DIALED_HOLDERS`). With no peer named, whether
   * any partial peer is connected. A holder whose dial fails frees the pieces deferred for it
   * (`dropPeer`), so they are asked for urgently at once.
   */
  private mayReachHolder (holder: string | undefined): boolean {
    if (holder === undefined) return this.partialPeers() > 0
    const dialed = this.dialedHolders.get(holder)
    if (dialed !== undefined && this.peers.get(holder)?.holdings.known !== true && Date.now() - dialed >= HOLDER_DIAL_MS) return false
    if (this.mayPassOn(holder)) return true
    if (this.peers.has(holder) || dialed !== undefined || this.dialedHolders.size >= MAX_DIALED_HOLDERS) return false
    this.dialedHolders.set(holder, Date.now())
    this.addPeer(holder)
    const slow = setTimeout(() => { if (this.peers.get(holder)?.holdings.known !== true) this.releaseHeldFor(holder) }, HOLDER_DIAL_MS)
    slow.unref?.()
    return this.mayPassOn(holder)
  }

  /** Pieces seeds held back for `holder` to pass on: it cannot (gone, or not reachable in time), so they are asked again at once. */
  private releaseHeldFor (holder: string): void {
    let released = false
    for (const other of this.peers.values()) {
      for (const [piece, h] of other.holderOf) {
        if (h !== holder) continue
        other.holderOf.delete(piece)
        other.deferred.delete(piece)
        other.firstDuplicate.set(piece, -Infinity)
        released = true
      }
    }
    if (released && this.failure === undefined) this.pump()
  }

  private livePeers (): number {
    let n = 0
    for (const p of this.peers.values()) if (!p.gone && p.holdings.known) n++
    return n
  }

  private partialPeers (): number {
    let n = 0
    for (const p of this.peers.values()) if (!p.gone && p.holdings.partial) n++
    return n
  }

  /**
   * Connected peers busy serving others, not gone: one of their requests in flight is QUEUED for an
   * upload slot, or they answered QUEUED within `noProgressTimeoutMs`. (The time alone is not
   * enough: timers run late on a loaded machine, and a request acknowledged long ago may still wait.)
   */
  private busyPeers (now: number): number {
    let n = 0
    for (const p of this.peers.values()) {
      if (p.gone) continue
      if (now - p.queuedAt < this.opts.noProgressTimeoutMs || [...p.inflight.values()].some(r => r.queued === true)) n++
    }
    return n
  }

  // ---- budget --------------------------------------------------------------------------------

  /** `reading`: a reader waits for pieces not requested yet (`readerWaiting`). */
  private windowOf (peer: PeerState, reading: boolean): number {
    if (peer.origin !== undefined) return this.opts.originConcurrency * this.opts.spanBytes
    // A seed serves every puller at once: one request each keeps it busy, and the rest of the
    // budget goes to partial peers, whose uplinks otherwise idle while requests queue at the seed.
    if (this.injects(peer)) return 1
    // While a reader waits, pieces are handed out as peers free up (`soonestFree`): a small
    // window keeps the bytes in flight near the reader's position, spread over every peer.
    if (reading) return Math.min(this.opts.maxWindowBytes, Math.max(this.opts.readerWindowBytes, peer.rate * this.opts.windowSeconds))
    if (this.opts.strategy !== 'weighted' || peer.rate === 0) return Math.max(this.opts.minWindowBytes, Math.min(this.opts.maxWindowBytes, 16 * 1024 * 1024))
    return Math.max(this.opts.minWindowBytes, Math.min(this.opts.maxWindowBytes, peer.rate * this.opts.windowSeconds))
  }

  /**
   * Whether the DUPLICATE hints `peer` gave for `piece` have run out (`duplicateGiveUpMs`, plus two
   * spans at its rate, since the first; at once when the holder cannot help: `-Infinity`), so the
   * piece is asked of it urgently. Except once: when its last DUPLICATE is older than two backoffs
   * (`duplicateBackoffMs`: the piece was not asked for since), the piece is first asked again
   * without urgency. That refusal said where the piece was going then; the holder has since had
   * it, passed it on, or cancelled (a puller withdraws what it queued at a seed). Asked urgently
   * instead, a seed sent one span to each puller whose first refusal for it had aged at about the
   * same time: at 25 Mbit/s, where a puller asks a seed one piece at a time, pullers that each got
   * a DUPLICATE in the first second asked again 12–33 s later, urgently, up to four of them within
   * 3 s (decision 0003). The check is recorded here (`staleAsked`): it is made once per holder.
   */
  private duplicateGaveUp (peer: PeerState, piece: number, size: number, now: number): boolean {
    const first = peer.firstDuplicate.get(piece)
    if (first === undefined || now - first < this.opts.duplicateGiveUpMs + twoSpansMs(peer, size, this.opts)) return false
    const last = peer.lastDuplicate.get(piece)
    if (peer.staleAsked.has(piece) || last === undefined || now - last < 2 * this.opts.duplicateBackoffMs) return true
    peer.staleAsked.add(piece)
    return false
  }

  /** Whether `peer` is a seed this session asks one piece at a time (see `windowOf`): the swarm's only source of new pieces. */
  private injects (peer: PeerState, partial = this.partialPeers() > 0): boolean {
    return partial && peer.origin === undefined && peer.holdings.complete
  }

  /**
   * Issues requests while some peer has window left and something to ask for. Requests to seeds
   * (`injects`) have their own budget, `seedReserveBytes`: spent from `maxInFlightBytes`, they
   * waited behind requests to partial peers, and the seed's uplink, the swarm's bottleneck, idled.
   */
  private pump (): void {
    if (this.failure !== undefined) return
    if (this.target.done) { this.complete(); return }
    // The arrivals that are writing call pump again when their chunk is written.
    if ((this.target.writeBacklogBytes ?? 0) > this.opts.maxWriteBacklogBytes) return
    for (let guard = 0; guard < 10_000; guard++) {
      const reading = this.readerWaiting()
      const partial = this.partialPeers() > 0
      let seedHeld = 0
      for (const p of this.peers.values()) if (this.injects(p, partial)) seedHeld += p.inflightBytes
      const held = this.inflightBytes + this.storingBytes - seedHeld
      const fits = (peer: PeerState, size: number): boolean => this.injects(peer, partial)
        ? seedHeld === 0 || seedHeld + size <= this.opts.seedReserveBytes
        : held === 0 || held + size <= this.opts.maxInFlightBytes
      const eligible: PeerState[] = []
      for (const p of this.peers.values()) {
        if (!p.gone && p.channel?.isOpen === true && p.holdings.known && p.inflightBytes < this.windowOf(p, reading) && p.inflight.size < this.opts.maxRequestsPerPeer && fits(p, 1)) eligible.push(p)
      }
      if (this.origin !== undefined && this.origin.inflight.size < this.opts.originConcurrency && fits(this.origin, 1)) eligible.push(this.origin)
      let issued = false
      while (eligible.length > 0 && !issued) {
        const peer = reading ? this.soonestFree(eligible) : this.selector.pick(eligible)
        if (peer === undefined) break
        const piece = this.pickFor(peer)
        const size = piece === undefined ? 0 : this.table.pieces[piece]!.size
        if (piece === undefined || !fits(peer, size) || (peer.origin === undefined && peer.inflightBytes > 0 && peer.inflightBytes + size > this.windowOf(peer, reading))) {
          eligible.splice(eligible.indexOf(peer), 1)
          continue
        }
        this.request(peer, piece)
        issued = true
      }
      if (!issued) return
    }
  }

  /** Whether a reader waits for, or streams, a chunk that still has unrequested pieces. */
  private readerWaiting (): boolean {
    return this.urgentPiece(() => true) !== undefined
  }

  /**
   * The first unrequested piece `ok` accepts among the chunks the priority source wants first,
   * looking at most at `MAX_URGENT_SCAN` pieces.
   */
  private urgentPiece (ok: (piece: number) => boolean): number | undefined {
    const source = this.extras.priority
    if (source === undefined) return undefined
    let scanned = 0
    for (const id of source.urgent(chunk => this.target.isMissing(chunk))) {
      for (const piece of this.table.ofChunk(id)) {
        if (++scanned > MAX_URGENT_SCAN) return undefined
        if (this.unrequested.has(piece) && ok(piece)) return piece
      }
    }
    return undefined
  }

  /**
   * While a reader waits: the eligible peer that would start sending a new request soonest (the
   * least backlog at its rate). A reader needs its bytes in order, so its pieces go to every peer
   * in turn, each at the front of its queue, and all their uplinks carry the bytes it needs next;
   * spread by the selector instead, one peer could hold most of them behind its own backlog while
   * the others sent pieces needed later (the first tensor came at a third of the link rate).
   */
  private soonestFree (eligible: readonly PeerState[]): PeerState | undefined {
    let measured = 0
    let sum = 0
    for (const p of eligible) if (p.rate > 0) { measured++; sum += p.rate }
    const fallback = measured > 0 ? sum / measured : this.opts.initialRateBytesPerSecond
    let best: PeerState | undefined
    let soonest = Infinity
    for (const p of eligible) {
      const wait = p.inflightBytes / (p.rate > 0 ? p.rate : fallback)
      if (wait < soonest) { best = p; soonest = wait }
    }
    return best
  }

  private pickFor (peer: PeerState): number | undefined {
    const now = Date.now()
    // A complete peer (a seed) is asked only for pieces no partial peer holds yet, so its upload
    // goes to what the swarm lacks; partial peers redistribute the rest.
    const seedOnly = peer.holdings.complete && peer.origin === undefined && this.partialPeers() > 0
    const may = (piece: number): boolean => this.peerHas(peer, piece) && !((peer.deferred.get(piece) ?? 0) > now) && (!seedOnly || this.availability.partialHolders(piece) === 0 || this.failedAtPartial.has(piece))
    const urgent = this.pickUrgent(peer, now)
    if (urgent !== undefined) return urgent
    const open = this.pickStarted(may)
    if (open !== undefined) return open
    const fresh = this.picker.pick(this.unrequested, may, piece => this.availability.of(piece))
    if (fresh !== undefined || this.unrequested.size > 0 || peer.origin !== undefined) return fresh
    // Endgame: nothing unrequested; duplicate the piece whose request is latest (in flight longer
    // than its peer's rate predicts), so the tail does not wait on one slow peer.
    let best: number | undefined
    let latest = 0
    for (const [piece, who] of this.requesters) {
      if (who.has(peer.key) || who.size >= this.opts.endgameMaxRequests || !this.peerHas(peer, piece)) continue
      if (seedOnly && this.availability.partialHolders(piece) > 0 && !this.failedAtPartial.has(piece)) continue
      const late = Math.min(...[...who].map(key => this.lateness(key, piece, now)))
      if (late > latest) { best = piece; latest = late }
    }
    return best
  }

  /**
   * An unrequested piece of a chunk the priority source wants first that `peer` holds. A seed may
   * be asked for it though partial peers hold it: a reader is waiting.
   */
  private pickUrgent (peer: PeerState, now: number): number | undefined {
    return this.urgentPiece(piece => this.peerHas(peer, piece) && !((peer.deferred.get(piece) ?? 0) > now))
  }

  /** An unrequested piece of a chunk already started that `may` allows; chunks with none left are forgotten. */
  private pickStarted (may: (piece: number) => boolean): number | undefined {
    for (const chunk of this.started) {
      let left = false
      for (const piece of this.table.ofChunk(chunk)) {
        if (!this.unrequested.has(piece)) continue
        left = true
        if (may(piece)) return piece
      }
      if (!left) this.started.delete(chunk)
    }
    return undefined
  }

  /** How long a request has been in flight beyond the time its peer needs for one such piece. */
  private lateness (key: string, piece: number, now: number): number {
    const holder = key === 'origin' ? this.origin : this.peers.get(key)
    const req = holder?.inflight.get(piece)
    if (holder === undefined || req === undefined) return 0
    const expected = 1000 * ENDGAME_LATE_PIECES * req.span / Math.max(holder.rate, this.opts.initialRateBytesPerSecond)
    return now - req.started - expected
  }

  // ---- requests ------------------------------------------------------------------------------

  /** The blocks of `piece` still missing here: from the first missing one to the last. */
  private spanOf (piece: Piece): { first: number, count: number, bytes: number } | undefined {
    let first = -1
    let last = -1
    for (let b = piece.first; b < piece.first + piece.count; b++) {
      if (!this.target.blockMissing(piece.chunk, b)) continue
      if (first < 0) first = b
      last = b
    }
    if (first < 0) return undefined
    const bs = this.target.blockSize
    const size = this.target.sizeOf(piece.chunk)
    return { first, count: last - first + 1, bytes: Math.min(size, (last + 1) * bs) - first * bs }
  }

  private request (peer: PeerState, piece: number): void {
    const p = this.table.pieces[piece]!
    const span = this.spanOf(p)
    if (span === undefined) {
      this.pieceDone(piece)
      return
    }
    const size = span.bytes
    const controller = new AbortController()
    // The deadline follows the peer's long-run rate, not its recent average: that decays toward 0
    // while the peer is silent and would give a request to a quiet peer the longest deadline
    // there is. Capped: past 2³¹ ms a timer fires at once.
    // why: docs/decisions/0016-deadlines-and-stall-bans.md
    const measured = longRunRate(peer, this.opts)
    const rate = measured > 0 ? measured : peer.rate > 0 ? peer.rate : this.opts.initialRateBytesPerSecond
    const timeoutMs = Math.min(this.opts.maxRequestAgeMs, this.opts.requestTimeoutBaseMs + 2000 * (peer.inflightBytes + size) / rate)
    const timer = setTimeout(() => this.onTimeout(peer, piece), timeoutMs)
    const req: Request = { controller, size, span: size, started: Date.now(), timer, arrivals: [] }
    peer.inflight.set(piece, req)
    if (!this.history.has(peer.key)) this.history.set(peer.key, { firstAskedAt: Date.now(), delivered: 0, queuedAt: -Infinity })
    peer.inflightBytes += size
    this.inflightBytes += size
    this.unrequested.delete(piece)
    this.started.add(p.chunk)
    const who = this.requesters.get(piece) ?? new Set()
    who.add(peer.key)
    this.requesters.set(piece, who)
    // Urgent in the endgame, for a small chunk (`superSeedMinBytes`), and to a partial peer
    // (every puller needs every piece, so its upload is never spent twice; holding it back only
    // idles its uplink). To a seed a request is urgent only once DUPLICATE cannot help: the peer
    // it named cannot be reached from here (or none was named and no partial peer is connected),
    // or `duplicateGiveUpMs` passed since the first refusal and the copy evidently does not reach
    // this node another way (no stall on a hint). Until then a retry is refused again while the
    // first copy is still on its way, so the seed's upload, the swarm's bottleneck, is not spent
    // twice on one piece — also in the first seconds of a pull, before the pullers know each other.
    peer.deferred.delete(piece)
    const urgent = who.size > 1 || !peer.holdings.complete || this.target.sizeOf(p.chunk) < this.opts.superSeedMinBytes ||
      this.duplicateGaveUp(peer, piece, size, Date.now())
    this.extras.log?.debug({ peer: peer.key, chunk: p.chunk, first: span.first, count: span.count, size, urgent, peerInflight: peer.inflightBytes, inflight: this.inflightBytes, storing: this.storingBytes }, 'span requested')
    const channel = peer.channel as Channel
    const onQueued = (): void => {
      if (peer.inflight.get(piece) === req) req.queued = true
      peer.queuedAt = Date.now()
      const history = this.history.get(peer.key)
      if (history !== undefined) history.queuedAt = peer.queuedAt
    }
    const codec = this.codecFor(peer, channel, p.chunk)
    channel.want({ chunk: p.chunk, first: span.first, count: span.count, blockSize: this.target.blockSize, ...(codec !== undefined ? { codec } : {}) }, {
      signal: controller.signal,
      urgent,
      onQueued,
      onBlock: arrival => { req.arrivals.push(this.onArrival(peer, piece, req, arrival, channel, codec)) },
      onLate: arrival => { void this.onArrival(peer, piece, undefined, arrival, channel, codec) }
    }).then(
      async () => {
        // What the blocks proved (a corrupt one cancels the rest) decides before the request ends.
        await Promise.allSettled(req.arrivals)
        if (!this.settle(peer, piece, req)) return
        // Every block came; any still missing (refused as not needed meanwhile) go back in.
        this.requeue(piece)
        this.pump()
      },
      (err: unknown) => { this.onRequestError(peer, piece, req, err as Error) }
    )
  }

  /** Ends a request's bookkeeping; returns false if it was already settled (cancelled, timed out). */
  private settle (peer: PeerState, piece: number, req?: Request): boolean {
    const current = peer.inflight.get(piece)
    if (current === undefined || (req !== undefined && current !== req)) return false
    clearTimeout(current.timer)
    peer.inflight.delete(piece)
    peer.inflightBytes -= current.size
    this.inflightBytes -= current.size
    const who = this.requesters.get(piece)
    who?.delete(peer.key)
    if (who?.size === 0) this.requesters.delete(piece)
    return true
  }

  /** Puts a piece back in the pool if it still has missing blocks and nobody is fetching it. */
  private requeue (piece: number): void {
    if ((this.remaining[piece] ?? 0) > 0 && !this.requesters.has(piece)) this.unrequested.add(piece)
  }

  /**
   * One block from `peer` (or a whole chunk from the origin): counted as delivered, verified and
   * stored, and the piece closed when it was its last block. `req` is undefined for a block that
   * came after its request was cancelled: it is used if still missing (its bytes crossed the link
   * anyway, and asking again would spend another upload on them).
   */
  private async onArrival (peer: PeerState, piece: number, req: Request | undefined, arrival: Arrival, channel: Channel, codec?: CodecName): Promise<void> {
    const wire = byteLength(arrival.data)
    const p = this.table.pieces[piece]
    // The block's own bytes: the arrival's, or what they decode to (then handed back as well).
    let data = arrival.data
    try {
      if (this.failure !== undefined || p === undefined) return
      if (arrival.encoded === true) {
        try {
          if (channel.decode === undefined) throw new MalformedDataError('an encoded block on a channel that decodes none')
          // Only the codec this side offered for the span (and raw) is accepted: a peer cannot
          // make this node run a decoder it did not ask for.
          data = channel.decode(arrival.data, { maxSize: this.target.blockSize, accept: codec !== undefined ? ['raw', codec] : ['raw'] })
        } catch (err) {
          if (!(err instanceof MalformedDataError)) throw err
          this.refuseBlock(peer, piece, req, `sent block ${arrival.index} of ${p.chunk} encoded in a form that does not decode: ${err.message}`)
          this.pump()
          return
        }
      }
      const size = byteLength(data)
      if (req !== undefined && peer.inflight.get(piece) === req) {
        const taken = Math.min(size, req.size)
        req.size -= taken
        peer.inflightBytes -= taken
        this.inflightBytes -= taken
      }
      peer.lastBlockAt = Date.now()
      peer.receivedInTick += size
      peer.received += size
      const history = this.history.get(peer.key)
      if (history !== undefined) history.delivered += size
      this.storingBytes += size
      try {
        await this.extras.download?.take(wire, this.controller.signal).catch(() => {})
        const whole = isWhole(arrival)
        const stored = whole ? await this.target.put(p.chunk, data) : await this.target.putBlock(p.chunk, arrival.index, data, arrival.proof)
        this.extras.log?.debug({ peer: peer.key, chunk: p.chunk, index: arrival.index, size, wire, stored, late: req === undefined }, 'block received')
        if (req === undefined && !stored) return
        peer.consecutiveTimeouts = 0
        this.lastProgress = Date.now()
        this.wireReceived += wire
        this.rawReceived += size
        if (peer.origin !== undefined) this.fromOrigin += size
        else this.judge.credit(peer.key, size, wire)
        if (stored) {
          if (arrival.encoded === true && !whole) this.extras.relay?.({ chunk: p.chunk, blockSize: this.target.blockSize, index: arrival.index }, arrival.data)
          this.blocksStored(p.chunk, whole ? undefined : arrival.index)
        }
      } catch (err) {
        if (err instanceof DigestMismatchError) {
          if (peer.origin !== undefined) peer.origin.refused(p.chunk)
          this.refuseBlock(peer, piece, req, `sent bytes that are not block ${arrival.index} of ${p.chunk}${arrival.encoded === true ? ' (they came encoded, and decoded to other bytes)' : ''}`)
        } else {
          this.fail(err as Error)
        }
      } finally {
        this.storingBytes -= size
      }
      this.pump()
    } finally {
      if (data !== arrival.data) channel.release?.(data)
      channel.release?.(arrival.data)
    }
  }

  /** A block from `peer` refused as corrupt: the peer is punished, and the rest of its request not trusted either (asked again, elsewhere if need be). */
  private refuseBlock (peer: PeerState, piece: number, req: Request | undefined, detail: string): void {
    this.punish(peer, 'corrupt', detail)
    if (req !== undefined && this.settle(peer, piece, req)) req.controller.abort()
    this.requeue(piece)
  }

  /**
   * The codec to offer `peer` for a chunk's blocks: the chunk's (from its tensor's dtype), while
   * this pull receives less than `compressBelowBytesPerSecond` from the peer and its channel can
   * decode; else none. A peer is offered codecs only once its rate is measured (a first window on a
   * fast link is not held to the encoder's pace); one that went past the rate is offered them again
   * only below half of it, so a link near the rate does not flip at every tick (compressed blocks
   * arrive as more bytes a second than raw ones).
   */
  private codecFor (peer: PeerState, channel: Channel, chunk: ChunkId): CodecName | undefined {
    if (channel.decode === undefined || peer.origin !== undefined) return undefined
    const below = this.opts.compressBelowBytesPerSecond
    if (below !== Infinity) {
      if (!(below > 0) || peer.rate === 0) return undefined
      if (peer.rate >= below) peer.fast = true
      else if (peer.rate < below / 2) peer.fast = false
      if (peer.fast) return undefined
    }
    const codec = this.extras.codecOf?.(chunk)
    return codec === 'raw' ? undefined : codec
  }

  /** Block `index` of `id` (every block, when undefined) is now stored: close the pieces it completes. */
  private blocksStored (id: ChunkId, index: number | undefined): void {
    const pieces = this.table.ofChunk(id)
    const target = index === undefined ? pieces : [this.table.pieceOf(id, index)].filter((x): x is number => x !== undefined)
    for (const piece of target) {
      const p = this.table.pieces[piece]!
      let left = 0
      for (let b = p.first; b < p.first + p.count; b++) if (this.target.blockMissing(id, b)) left++
      this.remaining[piece] = left
      if (left === 0) this.pieceDone(piece)
    }
  }

  /** Every block of `piece` is here: out of the pool, and other requests for it cancelled. */
  private pieceDone (piece: number): void {
    this.remaining[piece] = 0
    this.unrequested.delete(piece)
    for (const key of [...(this.requesters.get(piece) ?? [])]) {
      const other = key === 'origin' ? this.origin : this.peers.get(key)
      const req = other?.inflight.get(piece)
      if (other === undefined || req === undefined) continue
      this.settle(other, piece, req)
      req.controller.abort()
    }
  }

  /** A partial peer did not deliver `piece`: seeds may be asked for it from now on. */
  private failedAt (peer: PeerState, piece: number): void {
    if (peer.origin === undefined && !peer.holdings.complete) this.failedAtPartial.add(piece)
  }

  private onRequestError (peer: PeerState, piece: number, req: Request, err: Error): void {
    if (!this.settle(peer, piece, req)) return
    this.failedAt(peer, piece)
    const name = err.name
    const p = this.table.pieces[piece]
    if (name === 'DontHaveError') {
      // It said it had the piece: a lie, or it lost it. Forget that it has it.
      this.forgetPiece(peer, piece)
      this.punish(peer, 'lie', `claimed blocks ${p?.first ?? 0}+ of ${p?.chunk ?? ''} but did not have them`)
    } else if (name === 'OriginError') {
      this.extras.log?.debug({ chunk: p?.chunk, err: err.message }, 'origin request failed')
    } else if (name === 'PeerRequestError' && (err as { wireCode?: string }).wireCode === 'DUPLICATE') {
      const holder = (err as { holder?: string }).holder
      if (!this.mayReachHolder(holder)) {
        // Nobody connected here could pass the piece on, and the peer named (if any) cannot be
        // reached: the hint cannot help, so ask urgently at once.
        peer.firstDuplicate.set(piece, -Infinity)
        peer.lastDuplicate.set(piece, Date.now())
        peer.staleAsked.delete(piece)
        this.extras.log?.debug({ peer: peer.key, chunk: p?.chunk, holder }, 'DUPLICATE for a peer not reachable here: asking urgently')
      } else {
        const now = Date.now()
        peer.deferred.set(piece, now + this.opts.duplicateBackoffMs)
        // A new holder is a new wait: the piece is on its way there now.
        const previous = peer.holderOf.get(piece)
        if (!peer.firstDuplicate.has(piece) || (holder !== undefined && holder !== previous)) {
          peer.firstDuplicate.set(piece, now)
          peer.staleAsked.delete(piece)
        }
        peer.lastDuplicate.set(piece, now)
        if (holder !== undefined) peer.holderOf.set(piece, holder)
        this.extras.log?.debug({ peer: peer.key, chunk: p?.chunk, holder }, 'piece deferred: DUPLICATE')
      }
    } else if (name === 'PeerRequestError') {
      this.extras.log?.debug({ peer: peer.key, err: err.message }, 'peer refused a request')
    }
    this.requeue(piece)
    this.pump()
  }

  private onTimeout (peer: PeerState, piece: number): void {
    const req = peer.inflight.get(piece)
    if (req === undefined) return
    // A peer that keeps sending is serving a queue (other requesters share its upload) or a slow
    // link: let the request wait, up to `maxRequestAgeMs`; the endgame fetches the last pieces
    // elsewhere anyway. A request the peer said is QUEUED for an upload slot waits too (up to
    // `maxQueuedMs`): a peer whose slots all serve others is busy.
    const now = Date.now()
    const heard = now - peer.lastHeardAt < silenceAllowedMs(peer, req.span, this.opts)
    const queued = req.queued === true && now - req.started < this.opts.maxQueuedMs
    if (peer.origin === undefined && (heard || queued) && now - req.started < this.opts.maxRequestAgeMs) {
      req.timer = setTimeout(() => this.onTimeout(peer, piece), this.opts.requestTimeoutBaseMs)
      return
    }
    this.settle(peer, piece, req)
    req.controller.abort()
    this.failedAt(peer, piece)
    this.requeue(piece)
    if (req.queued === true) {
      // Busy, not stalling: it acknowledged the request and holds it for a slot. Ask elsewhere,
      // and do not count it against the peer (otherwise a seed whose slots a hostile requester
      // filled would be banned as a staller by every honest puller waiting on it).
      this.extras.log?.debug({ peer: peer.key, piece, ms: now - req.started }, 'queued request cancelled: the peer is busy')
      this.pump()
      return
    }
    this.extras.log?.debug({ peer: peer.key, piece, ms: now - req.started }, 'request timed out')
    // Asked again of another holder first: sent straight back to the peer that just stalled on
    // it, a piece could wait on it again while an idle peer had it. A sole holder is asked again.
    if (this.origin !== undefined || [...this.peers.values()].some(o => o !== peer && !o.gone && this.peerHas(o, piece))) {
      peer.deferred.set(piece, now + this.opts.requestTimeoutBaseMs)
    }
    peer.consecutiveTimeouts++
    if (peer.origin === undefined && isStaller(this.history.get(peer.key), peer.consecutiveTimeouts, now, this.opts)) {
      this.punish(peer, 'stall', `${peer.consecutiveTimeouts} requests timed out and nothing received in ${Math.round((now - (this.history.get(peer.key)?.firstAskedAt ?? now)) / 1000)} s`)
    } else if (peer.origin === undefined) {
      this.judge.penalize(peer.key, 'timeout', `request for piece ${piece} timed out`)
    }
    this.pump()
  }

  /** Penalises a peer; drops it from the session when the judge bans it. */
  private punish (peer: PeerState, offence: 'corrupt' | 'lie' | 'stall' | 'protocol', detail: string): void {
    if (peer.origin !== undefined) return
    const banned = this.judge.penalize(peer.key, offence, detail)
    this.extras.log?.info({ peer: peer.key, offence, detail, banned }, 'peer misbehaved')
    // The offence is recorded: drop the peer without penalising it again.
    if (banned || offence === 'protocol') this.dropPeer(peer)
  }

  private dropPeer (peer: PeerState, err?: Error): void {
    if (peer.gone) return
    peer.gone = true
    this.forgetHoldings(peer)
    for (const [piece, req] of [...peer.inflight]) {
      this.settle(peer, piece, req)
      req.controller.abort()
      this.failedAt(peer, piece)
      this.requeue(piece)
    }
    if (err instanceof MalformedDataError) this.judge.penalize(peer.key, 'protocol', err.message)
    this.peers.delete(peer.key)
    this.releaseHeldFor(peer.key)
    this.pump()
  }

  // ---- time ----------------------------------------------------------------------------------

  private onTick (): void {
    const seconds = TICK_MS / 1000
    const now = Date.now()
    for (const p of [...this.peers.values(), ...(this.origin !== undefined ? [this.origin] : [])]) {
      // Liveness and the long-run rate follow block bytes as they arrive; the EWMA that weights
      // peer selection follows whole blocks.
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
    if (this.target.done) { this.complete(); return }
    this.extras.onProgress?.(this.progress())
    const idle = now - this.lastProgress
    if (idle > this.opts.noProgressTimeoutMs) {
      const busy = this.busyPeers(now)
      if (busy === 0 || idle > this.opts.maxBusyWaitMs) {
        const live = this.livePeers()
        const missing = this.unrequested.size + this.requesters.size
        const seconds = Math.round(idle / 1000)
        const unusable = [...this.unusable].map(([key, why]) => `${key}: ${why}`).join('; ')
        const reason = live === 0
          ? unusable !== ''
            ? `no peer it could use has ${this.target.version} (${unusable})`
            : `no peer has ${this.target.version}${this.origin === undefined ? ' and no origin is listed' : ', and its origin did not answer'} (check --peer and the network)`
          : busy > 0
            ? `${busy} peer(s) that have it are busy: they answered QUEUED (every upload slot in use) but delivered none of the ${missing} missing pieces for ${seconds} s; try again later, or add peers`
            : `${live} peer(s) connected, but none delivered any of the ${missing} missing pieces for ${seconds} s`
        this.fail(new FetchStalledError(`pull of ${this.target.version} stalled: ${reason}`))
        return
      }
    }
    this.pump()
  }

  private complete (): void {
    if (this.failure !== undefined) return
    // A last report at 100%: a pull shorter than a tick has no other.
    this.extras.onProgress?.(this.progress())
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
      for (const [piece, req] of [...p.inflight]) { this.settle(p, piece, req); req.controller.abort() }
      if (p.origin === undefined) void p.channel?.unwatch(this.target.version).catch(() => {})
    }
  }
}

/** Blocks of a chunk of `size` bytes in the target's geometry (exported for tests). */
export function blocksOf (target: Pick<Target, 'blockSize' | 'sizeOf'>, id: ChunkId): number {
  return blockCount(target.sizeOf(id), target.blockSize)
}
