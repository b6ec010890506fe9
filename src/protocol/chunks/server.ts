/**
 * Serving side of `/shoal/chunks/2.0.0`: one `ServerSession` per inbound stream.
 *
 * - WANT (a span: blocks `[first, first + count)` of a chunk, in the requester's block size):
 *   queued (at most `MAX_PENDING_PER_STREAM`, else `BUSY`); when the upload limiter grants a slot,
 *   the span is read (never before: waiting WANTs hold no bytes) with the proof of each block, and
 *   once the limiter grants its bandwidth its blocks are sent, one BLOCK per block in order, or
 *   DONT_HAVE for the span. A WANT that has to wait for the limiter is answered QUEUED first.
 * - BULK: with a bulk channel (`protocol/bulk/`), the session offers the peer a connection (port,
 *   single-use token, key — over this noise-secured stream, so only that peer learns them); once
 *   the peer connects, BLOCK payloads go there and everything else stays here. Without one, or
 *   past its caps, it answers ERROR `BULK_OFF` and blocks stay on this stream.
 * - CANCEL: drops a queued or in-progress WANT; nothing more is sent for it (blocks already handed
 *   to the stream still arrive, and the requester may keep them).
 * - RECEIVED: the requester has every block of the span; its bytes go back to the source
 *   (`ChunkSource.release`) for reuse. Only then is it certain that no layer below (yamux, noise,
 *   the socket) still holds them. Spans sent on a bulk connection are handed back as soon as the
 *   kernel took them.
 * - INTEREST: answers HAVE (whole chunks as a bitfield, or `complete`, and the verified blocks of
 *   chunks in progress as ranges), then streams HAVE_UPDATE batches as chunks and blocks of that
 *   version become available here, so a requester can fetch a block the moment it is verified
 *   (cut-through). UNINTEREST stops them.
 *
 * The session never reads storage: it calls the injected `ChunkSource`, which MUST return only
 * verified bytes. Every response carries `load` (uploads queued or running here).
 */
import { CID } from 'multiformats/cid'
import type { Stream } from '@libp2p/interface'
import type { Uint8ArrayList } from 'uint8arraylist'
import { codecNameOf, type CodecName } from '../../core/codec.js'
import { RAW_CODEC, DAG_CBOR_CODEC, type ChunkId, type VersionId } from '../../core/digest.js'
import { MalformedDataError } from '../../core/errors.js'
import { isBlockSize } from '../../core/tree.js'
import type { BulkOffer, BulkSender } from '../bulk/index.js'
import { FramedStream, SendStalledError } from '../framing.js'
import { DUPLICATE_HOLD_MS, DUPLICATE_TRANSIT_MS, HAVE_UPDATE_INTERVAL_MS, MAX_FRAME_BYTES, MAX_HAVE_RANGES, MAX_INTERESTS_PER_STREAM, MAX_PENDING_PER_STREAM, MAX_RECENT_SENDS, MAX_REQUEST_FRAME_BYTES, MAX_SPAN_BLOCKS, MAX_UNRECEIVED_PER_STREAM } from './constants.js'
import { encodeBlock } from './block.js'
import { WireCode } from './errors.js'
import { ChunkRequest, ChunkResponse, type BlockRange } from './pb/chunks.js'

/** What a node has of a version: all of it, or whole chunks (a bitfield over its chunk list) and verified blocks of chunks in progress. */
export type HaveState = { complete: true } | { complete: false, bits: Uint8Array, ranges: BlockRange[] }

/** What became available since: chunks now whole (global indices), blocks now verified. */
export interface HaveUpdate { chunks: number[], ranges: BlockRange[] }

/**
 * The verified bytes of a span (contiguous) and the proof of each of its blocks (joined audit
 * paths); `encoded`: per block, an encoded form the node keeps it in (a cold chunk's), to send as it is.
 */
export interface Span { data: Uint8Array, proofs: Uint8Array[], encoded?: ReadonlyArray<Uint8Array | undefined> }

/** What the serving side needs from the node: verified bytes and availability. */
export interface ChunkSource {
  /**
   * Verified bytes of blocks `[first, first + count)` of chunk `id`, cut in blocks of `blockSize`,
   * with their proofs; undefined when this node lacks any of them.
   */
  readSpan: (id: ChunkId, blockSize: number, first: number, count: number, signal: AbortSignal) => Promise<Span | undefined>
  /** What this node has of a version, or undefined when it knows nothing of it. */
  have: (version: VersionId) => Promise<HaveState | undefined>
  /** Calls `listener` as chunks and blocks of `version` become available. */
  watch: (version: VersionId, listener: (update: HaveUpdate) => void) => () => void
  /** Takes back bytes `readSpan` returned once the peer has received them (optional: reuse only). */
  release?: (bytes: Uint8Array) => void
}

/**
 * Upload limits, in two steps: a slot, taken before the span is read (so a server holds at most
 * as many spans in memory as it has slots, however many WANTs wait), then the bandwidth for the
 * span once its size is known.
 */
export interface UploadLimiter {
  /**
   * A slot for an upload to `peer`. A limiter SHOULD bound the slots one peer holds at once, so a
   * peer that stops reading (every send it starts then waits, slot held, until `SEND_STALL_MS`)
   * cannot take the node's upload from everyone else.
   */
  slot: (signal: AbortSignal, peer?: string) => Promise<() => void>
  bandwidth: (bytes: number, signal: AbortSignal) => Promise<void>
  /** Whether `slot(peer)` would wait now: the requester is then told QUEUED. */
  slotWouldWait?: (peer?: string) => boolean
  /** Whether `bandwidth(bytes)` would wait now: the requester is then told QUEUED, if it was not already. */
  bandwidthWouldWait?: (bytes: number) => boolean
  /** Uploads queued or running, reported to requesters. */
  load: () => number
}

export interface ServerLog { debug: (obj: object, msg?: string) => void }

/** Called when a peer misbehaves on the serving side: `unread` — it stopped reading what it asked for (`SendStalledError`). */
export type PeerFaultHook = (peer: string, offence: 'unread', detail: string) => void

/**
 * Called after a span went out: who got it, how many bytes of blocks, how many crossed the link
 * (fewer when blocks went encoded), and the versions that peer said it wants.
 */
export type SentHook = (peer: string, bytes: number, versions: string[], wireBytes: number) => void

/** One block to send, as `BlockEncoder` sees it. */
export interface OutgoingBlock { chunk: ChunkId, blockSize: number, index: number, bytes: Uint8Array }

/**
 * Encodes blocks for the wire, when a WANT offers a codec: the node's cache of encoded blocks
 * (`EncodedBlocks`), so a block is encoded once however many peers it goes to.
 */
export interface BlockEncoder {
  /**
   * `block` encoded in `codec` (a `core/codec.ts` encoded block, smaller than the block), or
   * undefined: send it raw. `stored`: the encoded form the node keeps the block in, if any (used
   * as it is when it is in `codec` and pays).
   */
  encode: (block: OutgoingBlock, codec: CodecName, stored?: Uint8Array) => Uint8Array | undefined
}

/** Makes a bulk offer for a peer (the node's `BulkService.offer`); throws when it cannot. */
export type BulkOfferer = (peer: string, signal: AbortSignal) => BulkOffer

/** What a server learns about one send of a chunk, for `RecentSends`. */
export interface SendRecord {
  /** The block was handed to the stream (`true`), or could not be (`false`: forgotten). */
  done: (sent: boolean) => void
  /** The peer confirmed with RECEIVED that the whole block arrived. */
  delivered: () => void
  /** The peer cancelled the request: it may not keep the block, so the chunk is not held for it. */
  cancelled: () => void
}

/**
 * Which chunks this node sent recently and to whom, shared by all sessions: a second peer asking
 * for a chunk another peer is receiving right now is told DUPLICATE (fetch it from that peer),
 * unless its request is urgent. So a seed's upload goes to pieces the swarm does not have yet.
 *
 * A chunk is held while its send is on its way (at most `transitMs` past the start: a block can
 * wait long behind others on a slow link, but one stuck upload must not refuse a chunk to
 * everyone for ever), then `holdMs` from the recipient's RECEIVED. A send the recipient cancelled
 * holds nothing: that peer keeps the block only if it still lacks the piece when it arrives.
 */
export class RecentSends {
  private readonly sent = new Map<string, { to: string, started: number, deliveredAt?: number }>()

  constructor (
    private readonly holdMs = DUPLICATE_HOLD_MS,
    private readonly max = MAX_RECENT_SENDS,
    private readonly transitMs = DUPLICATE_TRANSIT_MS
  ) {}

  /** True when `id` is on its way to a peer other than `to`, or reached one less than `holdMs` ago. */
  heldFor (id: string, to: string, now = Date.now()): boolean {
    return this.holderOf(id, to, now) !== undefined
  }

  /** The peer (other than `to`) that `id` is on its way to or reached less than `holdMs` ago, if any. */
  holderOf (id: string, to: string, now = Date.now()): string | undefined {
    const entry = this.sent.get(id)
    if (entry === undefined || entry.to === to) return undefined
    const held = entry.deliveredAt !== undefined ? now - entry.deliveredAt < this.holdMs : now - entry.started < this.transitMs
    return held ? entry.to : undefined
  }

  /**
   * `peer` disconnected from this node: it holds nothing here any more. Naming it would send a
   * requester to dial a peer that may be gone (a puller that finished and left), and the piece
   * would wait for that dial to fail.
   */
  forget (peer: string): void {
    for (const [id, entry] of this.sent) if (entry.to === peer) this.sent.delete(id)
  }

  /** Records that `id` is about to go to `to`. */
  start (id: string, to: string, now = Date.now()): SendRecord {
    this.sent.delete(id)
    const entry: { to: string, started: number, deliveredAt?: number } = { to, started: now }
    this.sent.set(id, entry)
    if (this.sent.size > this.max) {
      const oldest = this.sent.keys().next().value
      if (oldest !== undefined) this.sent.delete(oldest)
    }
    const current = (): boolean => this.sent.get(id) === entry
    return {
      done: sent => { if (!sent && current()) this.sent.delete(id) },
      delivered: () => { if (current()) entry.deliveredAt = Date.now() },
      cancelled: () => { if (current() && entry.deliveredAt === undefined) this.sent.delete(id) }
    }
  }
}

export interface ServerSessionOptions {
  onSent?: SentHook
  sendStallMs?: number
  onFault?: PeerFaultHook
  /** Offers bulk connections (the node's bulk channel); absent: blocks stay on the stream. */
  bulk?: BulkOfferer
  /** Encodes blocks for WANTs that offer a codec; absent: every block goes raw. */
  encoder?: BlockEncoder
}

export class ServerSession {
  private readonly framed: FramedStream
  private readonly pending = new Map<number, AbortController>()
  /** Bytes of spans sent and not yet RECEIVED, by request id, oldest first. */
  private readonly unreceived = new Map<number, Uint8Array>()
  /** Sends whose RECEIVED or CANCEL has not come yet, by request id, oldest first (see `RecentSends`). */
  private readonly sends = new Map<number, SendRecord>()
  private readonly interests = new Map<string, { stop: () => void, chunks: number[], ranges: BlockRange[], timer?: NodeJS.Timeout }>()
  /** The bulk connection blocks go on, once the peer connected. */
  private bulk?: BulkSender
  private bulkOffered = false
  private readonly closed = new AbortController()

  constructor (
    stream: Stream,
    private readonly remote: string,
    private readonly source: ChunkSource,
    private readonly limiter: UploadLimiter,
    private readonly recent: RecentSends,
    private readonly log: ServerLog,
    private readonly options: ServerSessionOptions = {}
  ) {
    this.framed = new FramedStream(stream, {
      maxFrameBytes: MAX_REQUEST_FRAME_BYTES,
      maxBufferBytes: MAX_REQUEST_FRAME_BYTES * (MAX_PENDING_PER_STREAM + 16),
      onFrame: frame => this.onFrame(frame),
      onClose: err => {
        if (err instanceof SendStalledError) options.onFault?.(this.remote, 'unread', err.message)
        this.shutdown()
      },
      ...(options.sendStallMs !== undefined ? { sendStallMs: options.sendStallMs } : {})
    })
  }

  private onFrame (frame: Uint8ArrayList): void {
    let req: ChunkRequest
    try {
      req = ChunkRequest.decode(frame)
    } catch (err) {
      this.framed.abort(new MalformedDataError(`undecodable request: ${(err as Error).message}`))
      return
    }
    switch (req.type) {
      case ChunkRequest.Type.WANT: this.want(req); break
      case ChunkRequest.Type.CANCEL:
        this.pending.get(req.id)?.abort()
        this.pending.delete(req.id)
        this.sends.get(req.id)?.cancelled()
        this.sends.delete(req.id)
        break
      case ChunkRequest.Type.INTEREST: void this.interest(req); break
      case ChunkRequest.Type.UNINTEREST: this.uninterest(req); break
      case ChunkRequest.Type.RECEIVED: this.received(req.id); break
      case ChunkRequest.Type.BULK: this.offerBulk(); break
      default: void this.reply({ type: ChunkResponse.Type.ERROR, id: req.id, code: WireCode.BAD_REQUEST, message: 'unknown request type' })
    }
  }

  private want (req: ChunkRequest): void {
    const id = parseCid(req.cid, RAW_CODEC)
    if (id === undefined) {
      void this.reply({ type: ChunkResponse.Type.ERROR, id: req.id, code: WireCode.BAD_REQUEST, message: 'cid is not a raw-codec CIDv1' })
      return
    }
    if (req.count < 1 || req.count > MAX_SPAN_BLOCKS || !isBlockSize(req.blockSize) || req.first > 0xffff) {
      void this.reply({ type: ChunkResponse.Type.ERROR, id: req.id, code: WireCode.BAD_REQUEST, message: `a span is 1 to ${MAX_SPAN_BLOCKS} blocks of a power-of-two block size from 16 KiB to 4 MiB (got ${req.count} blocks from ${req.first} of ${req.blockSize} bytes)` })
      return
    }
    if (this.pending.size >= MAX_PENDING_PER_STREAM || this.pending.has(req.id)) {
      void this.reply({ type: ChunkResponse.Type.ERROR, id: req.id, code: WireCode.BUSY, message: `more than ${MAX_PENDING_PER_STREAM} requests pending` })
      return
    }
    const key = `${id}/${req.first}`
    const holder = req.urgent ? undefined : this.recent.holderOf(key, this.remote)
    if (holder !== undefined) {
      void this.reply({ type: ChunkResponse.Type.ERROR, id: req.id, code: WireCode.DUPLICATE, message: 'just sent to another peer; fetch it there', holder })
      return
    }
    const sending = this.recent.start(key, this.remote)
    this.sends.set(req.id, sending)
    if (this.sends.size > MAX_PENDING_PER_STREAM + MAX_UNRECEIVED_PER_STREAM) this.sends.delete(this.sends.keys().next().value as number)
    const controller = new AbortController()
    this.pending.set(req.id, controller)
    const finished = (sent: boolean): void => {
      sending.done(sent)
      if (!sent && this.sends.get(req.id) === sending) this.sends.delete(req.id)
    }
    const overtaken = req.urgent ? undefined : () => this.recent.holderOf(key, this.remote)
    // A codec this build does not know (a newer peer's) is not offered as far as this side goes: raw.
    const codec = req.codec !== 0 ? codecNameOf(req.codec) : undefined
    void this.serve(req.id, id, req.blockSize, req.first, req.count, req.stream, codec, controller.signal, overtaken).then(finished, () => { finished(false) }).finally(() => {
      if (this.pending.get(req.id) === controller) this.pending.delete(req.id)
    })
  }

  /**
   * Serves one WANT; resolves true when its blocks were sent. `overtaken` (non-urgent WANTs) names
   * the peer the span went to while this WANT waited for its upload slot, if any.
   */
  private async serve (reqId: number, id: ChunkId, blockSize: number, first: number, count: number, onStream: boolean, codec: CodecName | undefined, signal: AbortSignal, overtaken?: () => string | undefined): Promise<boolean> {
    let release: (() => void) | undefined
    let span: Span | undefined
    let handedOver = false
    try {
      // A request that waits for a slot or the rate cap is acknowledged (with the load counting
      // it), so the requester can tell a busy server from a stalled one, whose silence gets it banned.
      const queued = this.limiter.slotWouldWait?.(this.remote) === true
      const acquiring = this.limiter.slot(signal, this.remote)
      if (queued) void this.reply({ type: ChunkResponse.Type.QUEUED, id: reqId })
      release = await acquiring
      if (signal.aborted) return false
      // While this WANT waited, the span may have gone to another peer (an urgent WANT, or one
      // whose requester gave up on the hint). Sending it now would spend this upload twice on it:
      // the requester is told DUPLICATE, as it would be had it asked now.
      // why: docs/decisions/0003-seed-requests-at-swarm-start.md
      const holder = queued ? overtaken?.() : undefined
      if (holder !== undefined) {
        void this.reply({ type: ChunkResponse.Type.ERROR, id: reqId, code: WireCode.DUPLICATE, message: 'sent to another peer while this request waited; fetch it there', holder })
        return false
      }
      span = await this.source.readSpan(id, blockSize, first, count, signal)
      if (signal.aborted) return false
      if (span === undefined) {
        await this.reply({ type: ChunkResponse.Type.DONT_HAVE, id: reqId })
        return false
      }
      const bytes = span.data
      const encoded = this.encodeSpan(id, blockSize, first, count, bytes, codec, span.encoded)
      const wireBytes = encoded.reduce((n, e, i) => n + (e?.byteLength ?? blockBytes(bytes, blockSize, i)), 0)
      if (!queued && this.limiter.bandwidthWouldWait?.(wireBytes) === true) void this.reply({ type: ChunkResponse.Type.QUEUED, id: reqId })
      await this.limiter.bandwidth(wireBytes, signal)
      if (signal.aborted) return false
      let bulk = !onStream && this.bulk?.isOpen === true ? this.bulk : undefined
      if (bulk === undefined) this.awaitReceipt(reqId, bytes)
      handedOver = bulk === undefined
      let at = 0
      for (let i = 0; i < count; i++) {
        const size = Math.min(blockSize, bytes.byteLength - at)
        const enc = encoded[i]
        const block = enc ?? bytes.subarray(at, at + size)
        const proof = span.proofs[i] ?? new Uint8Array(0)
        if (bulk !== undefined) {
          try {
            await bulk.send({ reqId, index: first + i, encoded: enc !== undefined }, proof, block, { signal })
          } catch (err) {
            if (signal.aborted) return false
            // The bulk connection broke: this block and the rest go on the stream (the requester
            // counts a block that came both ways once), which then holds the bytes until RECEIVED.
            this.log.debug({ peer: this.remote, err: (err as Error).message, chunk: id, index: first + i }, 'bulk send failed: the rest of the span goes on the stream')
            bulk = undefined
            this.awaitReceipt(reqId, bytes)
            handedOver = true
          }
        }
        if (bulk === undefined) await this.framed.send(encodeBlock(reqId, this.limiter.load(), first + i, proof, block, enc !== undefined))
        at += size
        if (signal.aborted) return false
      }
      this.log.debug({ peer: this.remote, chunk: id, first, count, size: bytes.byteLength, wire: wireBytes, bulk: bulk !== undefined }, 'span sent')
      this.options.onSent?.(this.remote, bytes.byteLength, [...this.interests.keys()], wireBytes)
      return true
    } catch (err) {
      if (signal.aborted || !this.framed.isOpen) return false
      this.log.debug({ err, chunk: id }, 'serving a span failed')
      await this.reply({ type: ChunkResponse.Type.ERROR, id: reqId, code: WireCode.INTERNAL, message: 'could not read or send the span' }).catch(() => {})
      return false
    } finally {
      // Bytes read but never handed to the stream (or sent on a bulk connection, whose send
      // resolves once the kernel has them) go straight back; the stream's wait for RECEIVED.
      if (!handedOver && span !== undefined) this.source.release?.(span.data)
      release?.()
    }
  }

  /** Each block of a span encoded in `codec` when the encoder says it pays, else undefined (raw). */
  private encodeSpan (id: ChunkId, blockSize: number, first: number, count: number, bytes: Uint8Array, codec: CodecName | undefined, stored?: ReadonlyArray<Uint8Array | undefined>): Array<Uint8Array | undefined> {
    const encoder = this.options.encoder
    const out: Array<Uint8Array | undefined> = new Array(count)
    for (let i = 0; i < count; i++) {
      out[i] = codec === undefined || codec === 'raw' || encoder === undefined
        ? undefined
        : encoder.encode({ chunk: id, blockSize, index: first + i, bytes: bytes.subarray(i * blockSize, i * blockSize + blockBytes(bytes, blockSize, i)) }, codec, stored?.[i])
    }
    return out
  }

  /** Keeps `bytes` until the requester says RECEIVED for `reqId` (bounded; see the constant). */
  private awaitReceipt (reqId: number, bytes: Uint8Array): void {
    if (this.source.release === undefined) return
    this.unreceived.set(reqId, bytes)
    if (this.unreceived.size > MAX_UNRECEIVED_PER_STREAM) this.unreceived.delete(this.unreceived.keys().next().value as number)
  }

  private received (reqId: number): void {
    this.sends.get(reqId)?.delivered()
    this.sends.delete(reqId)
    const bytes = this.unreceived.get(reqId)
    if (bytes === undefined) return
    this.unreceived.delete(reqId)
    this.source.release?.(bytes)
  }

  /** Answers BULK: an offer (once per stream), then blocks go on the connection the peer opens. */
  private offerBulk (): void {
    const offerer = this.options.bulk
    if (offerer === undefined || this.bulkOffered) {
      void this.reply({ type: ChunkResponse.Type.ERROR, code: WireCode.BULK_OFF, message: offerer === undefined ? 'this node has no bulk channel (transfer.bulk.enabled is false, or its port could not be bound)' : 'a bulk connection was already offered on this stream' })
      return
    }
    this.bulkOffered = true
    let offer: BulkOffer
    try {
      offer = offerer(this.remote, this.closed.signal)
    } catch (err) {
      void this.reply({ type: ChunkResponse.Type.ERROR, code: WireCode.BULK_OFF, message: (err as Error).message })
      return
    }
    void this.reply({ type: ChunkResponse.Type.BULK, port: offer.port, token: offer.token, key: offer.key ?? new Uint8Array(0) })
    void offer.connected.then(sender => {
      if (sender === undefined) return
      if (!this.framed.isOpen) { sender.abort(new Error('the control stream closed')); return }
      this.bulk = sender
      sender.onClose(err => {
        if (this.bulk === sender) this.bulk = undefined
        if (err instanceof SendStalledError) this.options.onFault?.(this.remote, 'unread', err.message)
      })
    }, () => {})
  }

  private async interest (req: ChunkRequest): Promise<void> {
    const version = parseCid(req.cid, DAG_CBOR_CODEC)
    if (version === undefined || this.interests.size >= MAX_INTERESTS_PER_STREAM) {
      await this.reply({ type: ChunkResponse.Type.ERROR, id: req.id, code: WireCode.BAD_REQUEST, message: 'bad version id or too many interests' })
      return
    }
    if (this.interests.has(version)) return
    const entry: { stop: () => void, chunks: number[], ranges: BlockRange[], timer?: NodeJS.Timeout } = { stop: () => {}, chunks: [], ranges: [] }
    this.interests.set(version, entry)
    entry.stop = this.source.watch(version, update => {
      entry.chunks.push(...update.chunks)
      entry.ranges.push(...update.ranges)
      entry.timer ??= setTimeout(() => this.flush(version), HAVE_UPDATE_INTERVAL_MS)
    })
    const asked = Date.now()
    const state = await this.source.have(version)
    const versionBytes = req.cid
    if (state === undefined) await this.reply({ type: ChunkResponse.Type.HAVE, version: versionBytes, data: new Uint8Array(0) })
    else if (state.complete) await this.reply({ type: ChunkResponse.Type.HAVE, version: versionBytes, complete: true })
    else await this.reply({ type: ChunkResponse.Type.HAVE, version: versionBytes, data: state.bits, ranges: state.ranges.slice(0, MAX_HAVE_RANGES) })
    this.log.debug({ peer: this.remote, version, ms: Date.now() - asked, complete: state?.complete }, 'HAVE sent')
  }

  private flush (version: string): void {
    const entry = this.interests.get(version)
    if (entry === undefined) return
    entry.timer = undefined
    const chunks = entry.chunks.splice(0)
    const ranges = entry.ranges.splice(0)
    for (let at = 0; at < Math.max(chunks.length, ranges.length); at += MAX_HAVE_RANGES) {
      void this.reply({ type: ChunkResponse.Type.HAVE_UPDATE, version: CID.parse(version).bytes, indices: chunks.slice(at, at + MAX_HAVE_RANGES), ranges: ranges.slice(at, at + MAX_HAVE_RANGES) }).catch(() => {})
    }
  }

  private uninterest (req: ChunkRequest): void {
    const version = parseCid(req.cid, DAG_CBOR_CODEC)
    const entry = version === undefined ? undefined : this.interests.get(version)
    if (entry === undefined || version === undefined) return
    entry.stop()
    clearTimeout(entry.timer)
    this.interests.delete(version)
  }

  private async reply (res: Reply): Promise<void> {
    const frame = ChunkResponse.encode({
      id: 0, data: new Uint8Array(0), version: new Uint8Array(0), indices: [], complete: false, code: '', message: '', holder: '',
      index: 0, proof: new Uint8Array(0), ranges: [], port: 0, token: new Uint8Array(0), key: new Uint8Array(0),
      ...res,
      load: this.limiter.load()
    } as unknown as ChunkResponse)
    if (frame.byteLength > MAX_FRAME_BYTES) throw new Error('response over the frame cap')
    await this.framed.send(frame).catch(() => {})
  }

  private shutdown (): void {
    this.closed.abort()
    for (const c of this.pending.values()) c.abort()
    this.pending.clear()
    // Whatever was not RECEIVED may still be referenced below; the garbage collector takes it.
    this.unreceived.clear()
    // Blocks not confirmed before the stream closed may never have arrived: hold them for nobody.
    for (const record of this.sends.values()) record.cancelled()
    this.sends.clear()
    for (const e of this.interests.values()) { e.stop(); clearTimeout(e.timer) }
    this.interests.clear()
    this.bulk?.abort(new Error('the control stream closed'))
    this.bulk = undefined
  }
}

interface Reply {
  type: ChunkResponse.Type
  id?: number
  data?: Uint8Array
  version?: Uint8Array
  indices?: number[]
  ranges?: BlockRange[]
  complete?: boolean
  code?: string
  message?: string
  holder?: string
  port?: number
  token?: Uint8Array
  key?: Uint8Array
}

/** Bytes of block `i` of a span's `bytes` cut at `blockSize` (the last may be short). */
function blockBytes (bytes: Uint8Array, blockSize: number, i: number): number {
  return Math.max(0, Math.min(blockSize, bytes.byteLength - i * blockSize))
}

function parseCid (bytes: Uint8Array, codec: number): string | undefined {
  try {
    const cid = CID.decode(bytes)
    return cid.version === 1 && cid.code === codec ? cid.toString() : undefined
  } catch {
    return undefined
  }
}
