/**
 * Requesting side of `/shoal/chunks/2.0.0`: a `PeerChannel` is one outbound stream to one peer,
 * over which any number of WANTs are pipelined and versions are watched.
 *
 * A WANT asks for a span of blocks of one chunk. Each block is handed to the request's `onBlock`
 * as it arrives (unverified: the caller verifies it against its manifest's tree), so a block can
 * be checked, stored and passed on before the rest of its chunk has come; `want` resolves once
 * every block of the span was handed over, or rejects with `DontHaveError`, `PeerRequestError` or
 * `PeerGoneError`; aborting its signal sends CANCEL. Blocks the server had already sent still
 * arrive: they go to the request's `onLate`, if it has one, else they are dropped. Once every block
 * of a span has arrived (a cancelled one's too) the channel answers RECEIVED, which lets the server
 * reuse its buffer.
 *
 * Blocks come on the stream, or — once the server offered one and this side reached it — on the
 * bulk channel (`protocol/bulk/`); the two are the same to a request. A bulk connection that fails
 * or closes only sends blocks back to the stream: what was on it is lost, so every request still
 * waiting for blocks is asked again on the stream (a new WANT for the blocks it lacks, the old one
 * cancelled; a block that then comes twice counts once), and every WANT sent while no bulk
 * connection is up says `stream`, so the server never sends on one this side has closed. A
 * channel is single-use: once its stream closes every pending request rejects, and the owner
 * opens a new channel when it needs the peer again.
 *
 * Given a `BufferPool`, blocks arrive in pooled buffers: the bytes handed over belong to the
 * caller, who gives them back with `release` once done (forgetting to only costs reuse).
 */
import { CID } from 'multiformats/cid'
import type { Stream } from '@libp2p/interface'
import type { Uint8ArrayList } from 'uint8arraylist'
import type { ChunkId, VersionId } from '../../core/digest.js'
import { CODECS, CODEC_HEADER_BYTES, decodeBlock as decodeEncoded, type CodecName } from '../../core/codec.js'
import { AbortedError, MalformedDataError } from '../../core/errors.js'
import type { BufferPool } from '../../core/buffer-pool.js'
import type { BulkReceiver } from '../bulk/index.js'
import { decodeBlock } from './block.js'
import { FramedStream } from '../framing.js'
import { MAX_FRAME_BYTES, MAX_HAVE_RANGES, MAX_SPAN_BLOCKS, POOLED_FRAME_MIN_BYTES, READ_BUFFER_SLACK_BYTES } from './constants.js'
import { DontHaveError, PeerGoneError, fromWire } from './errors.js'
import { ChunkRequest, ChunkResponse, type BlockRange } from './pb/chunks.js'
import type { HaveState, HaveUpdate } from './server.js'

export interface VersionWatcher {
  onHave: (state: HaveState | undefined) => void
  onUpdate: (update: HaveUpdate) => void
}

/** Bytes of one block as received: the parts of its frame, not joined. */
export type BlockBytes = Uint8Array[]

/**
 * A span of blocks of one chunk, in the geometry of the version being pulled; `codec`: the block
 * codec this side decodes for it (the server may send each block in it, or raw).
 */
export interface Span { chunk: ChunkId, first: number, count: number, blockSize: number, codec?: CodecName }

/**
 * One block of a span as it arrives: its index in the chunk, its proof (k × 32 bytes) and bytes;
 * `encoded`: the bytes are the block encoded (`core/codec.ts`), to be decoded (`PeerChannel.decode`)
 * before it is verified.
 */
export interface BlockArrival { index: number, proof: Uint8Array, data: BlockBytes, encoded?: boolean }

export interface WantOptions {
  signal?: AbortSignal
  /** Serve even if the peer just sent this chunk to someone else (see `DUPLICATE`). */
  urgent?: boolean
  /** The peer says the request waits for one of its upload slots (QUEUED). */
  onQueued?: () => void
  /** Each block of the span, as it arrives (the caller then owns its bytes). */
  onBlock: (block: BlockArrival) => void
  /** Blocks that arrive after the request was cancelled (the caller then owns their bytes). */
  onLate?: (block: BlockArrival) => void
}

/** Asks the peer for a bulk connection and dials it; undefined when there is none to be had. */
export type BulkDialer = (offer: { port: number, token: Uint8Array, key: Uint8Array | undefined }, signal: AbortSignal) => Promise<BulkReceiver | undefined>

interface Pending {
  /** The id its blocks come under now; earlier ids (asked again after a bulk connection closed) in `superseded`. */
  id: number
  /** Ids this request was sent under before, whose blocks still count. */
  old: number[]
  urgent: boolean
  span: Span
  /** Block indices still to come. */
  left: Set<number>
  onBlock: (block: BlockArrival) => void
  onQueued?: () => void
  onLate?: (block: BlockArrival) => void
  resolve: () => void
  reject: (err: Error) => void
  cleanup: () => void
}

/** Cancelled requests remembered for their late blocks, at most; the oldest is forgotten first. @default 64 */
export const MAX_CANCELLED_REMEMBERED = 64

export class PeerChannel {
  private readonly framed: FramedStream
  private readonly pending = new Map<number, Pending>()
  /** Cancelled requests, by request id, oldest first: blocks still to come (to `onLate`, or dropped). */
  private readonly cancelled = new Map<number, { left: Set<number>, onLate?: (block: BlockArrival) => void }>()
  /** Requests asked again under a new id, by their old ids: blocks still coming under those count. */
  private readonly superseded = new Map<number, Pending>()
  private readonly watchers = new Map<string, VersionWatcher>()
  private nextId = 1
  private closeListeners: Array<(err?: Error) => void> = []
  private bulk?: BulkReceiver
  private bulkBytesBefore = 0
  /** Last load the peer reported. */
  load = 0

  /**
   * `maxInFlightBytes`: what this side may have asked for at once; bounds the read buffer.
   * `pool`: where blocks are assembled; its buffers MUST hold `MAX_FRAME_BYTES`.
   */
  constructor (readonly stream: Stream, maxInFlightBytes: number, private readonly pool?: BufferPool) {
    this.framed = new FramedStream(stream, {
      maxFrameBytes: MAX_FRAME_BYTES,
      maxBufferBytes: maxInFlightBytes + READ_BUFFER_SLACK_BYTES,
      onFrame: frame => this.onFrame(frame),
      onClose: err => this.shutdown(err),
      ...(pool !== undefined ? { assemble: { pool, minBytes: POOLED_FRAME_MIN_BYTES } } : {})
    })
  }

  get isOpen (): boolean {
    return this.framed.isOpen
  }

  /** Bytes of blocks received from this peer so far, blocks still arriving included (not HAVE updates or other small messages). */
  get bytesReceived (): number {
    return this.framed.largeFrameBytes + this.bulkBytesBefore + (this.bulk?.bytesReceived ?? 0)
  }

  /** Whether blocks come on a bulk connection now. */
  get bulkOpen (): boolean {
    return this.bulk?.isOpen === true
  }

  /** Calls `listener` once the stream closes (at once if it has), with what broke it, if anything. */
  onClose (listener: (err?: Error) => void): void {
    if (!this.framed.isOpen) listener(this.closeError)
    else this.closeListeners.push(listener)
  }

  /** What broke the stream, once it closed. */
  private closeError?: Error

  /** Asks for the blocks of `span`; see the module doc. */
  async want (span: Span, options: WantOptions): Promise<void> {
    if (!this.framed.isOpen) throw new PeerGoneError('the stream to this peer is closed')
    if (span.count < 1 || span.count > MAX_SPAN_BLOCKS) throw new RangeError(`a span has 1 to ${MAX_SPAN_BLOCKS} blocks, not ${span.count}`)
    const { signal } = options
    signal?.throwIfAborted()
    await new Promise<void>((resolve, reject) => {
      const left = new Set<number>()
      for (let i = span.first; i < span.first + span.count; i++) left.add(i)
      const onAbort = (): void => {
        if (this.pending.get(p.id) !== p) return
        this.settle(p.id)
        for (const id of [p.id, ...p.old]) {
          this.rememberCancelled(id, p.left, options.onLate)
          void this.send({ type: ChunkRequest.Type.CANCEL, id }).catch(() => {})
        }
        reject(new AbortedError('request cancelled'))
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      const p: Pending = {
        id: this.takeId(), old: [], urgent: options.urgent === true,
        span, left, onBlock: options.onBlock, resolve, reject,
        cleanup: () => signal?.removeEventListener('abort', onAbort),
        ...(options.onQueued !== undefined ? { onQueued: options.onQueued } : {}),
        ...(options.onLate !== undefined ? { onLate: options.onLate } : {})
      }
      this.pending.set(p.id, p)
      this.sendWant(p, span.first, span.count)
    })
  }

  private takeId (): number {
    const id = this.nextId
    if (this.nextId >= 0xffff_fff0) {
      this.nextId = 1
      this.idsWrapped = true
    } else {
      this.nextId++
    }
    return id
  }

  /** Request ids started again from 1 (after 2³² requests): every id may have been made. */
  private idsWrapped = false

  private sendWant (p: Pending, first: number, count: number): void {
    const id = p.id
    const codec = p.span.codec !== undefined ? CODECS[p.span.codec].id : 0
    this.send({ type: ChunkRequest.Type.WANT, id, cid: CID.parse(p.span.chunk).bytes, urgent: p.urgent, first, count, blockSize: p.span.blockSize, stream: !this.bulkOpen, codec }).catch((err: unknown) => {
      if (this.pending.get(id) === p) this.settle(id)?.reject(new PeerGoneError(`could not send a request: ${(err as Error).message}`))
    })
  }

  /**
   * The bulk connection closed: blocks that were on it are lost, and the server may not know yet.
   * Every request still waiting is asked again on the stream, for the blocks it lacks (one span
   * from the first to the last of them), under a new id; the old one is cancelled, and its blocks
   * that still come count.
   */
  private askAgainOnStream (): void {
    for (const p of [...this.pending.values()]) {
      if (this.pending.get(p.id) !== p || p.left.size === 0) continue
      let first = Infinity
      let last = -1
      for (const i of p.left) { first = Math.min(first, i); last = Math.max(last, i) }
      const old = p.id
      this.pending.delete(old)
      this.superseded.set(old, p)
      p.old.push(old)
      p.id = this.takeId()
      this.pending.set(p.id, p)
      void this.send({ type: ChunkRequest.Type.CANCEL, id: old }).catch(() => {})
      this.sendWant(p, first, last - first + 1)
    }
  }

  /** Hands back the buffers of a block; its bytes MUST NOT be used after. */
  release (bytes: BlockBytes): void {
    if (this.pool !== undefined) for (const part of bytes) this.pool.give(part)
  }

  /**
   * An encoded block's bytes decoded (into a pooled buffer, when the channel has a pool: hand it
   * back with `release` like any block). The encoded bytes stay the caller's. Throws a
   * `MalformedDataError` for bytes that do not decode: a codec not in `accept`, a declared length
   * over `maxSize` (a decompression bomb, refused before anything is allocated), a broken body.
   */
  decode (encoded: BlockBytes, options: { maxSize: number, accept: readonly CodecName[] }): BlockBytes {
    const bytes = encoded.length === 1 ? encoded[0]! : concat(encoded)
    const into = this.pool !== undefined && bytes.byteLength >= CODEC_HEADER_BYTES ? this.takeFor(bytes, options.maxSize) : undefined
    try {
      return [decodeEncoded(bytes, { maxSize: options.maxSize, accept: options.accept, ...(into !== undefined ? { into } : {}) })]
    } catch (err) {
      if (into !== undefined) this.pool?.give(into)
      throw err
    }
  }

  /** A pooled buffer for the decoded length an encoded block declares (checked against `maxSize` by the decoder first). */
  private takeFor (encoded: Uint8Array, maxSize: number): Uint8Array | undefined {
    const declared = new DataView(encoded.buffer, encoded.byteOffset, encoded.byteLength).getUint32(2, true)
    if (declared === 0 || declared > maxSize) return undefined
    return this.pool!.take(declared)
  }

  /** Asks what the peer has of `version` and to be kept posted. */
  async watch (version: VersionId, watcher: VersionWatcher): Promise<void> {
    this.watchers.set(version, watcher)
    await this.send({ type: ChunkRequest.Type.INTEREST, cid: CID.parse(version).bytes })
  }

  async unwatch (version: VersionId): Promise<void> {
    if (!this.watchers.delete(version)) return
    await this.send({ type: ChunkRequest.Type.UNINTEREST, cid: CID.parse(version).bytes }).catch(() => {})
  }

  /**
   * Asks the peer for a bulk connection and, if it offers one, dials it with `dial`; from then on
   * blocks may come on it. Resolves true when blocks will come on it. Never throws: the stream
   * stays the way in.
   */
  async openBulk (dial: BulkDialer, signal: AbortSignal): Promise<boolean> {
    if (this.bulk !== undefined || !this.framed.isOpen) return this.bulkOpen
    const offered = new Promise<ChunkResponse | undefined>(resolve => {
      this.bulkAnswer = resolve
      signal.addEventListener('abort', () => resolve(undefined), { once: true })
    })
    try {
      await this.send({ type: ChunkRequest.Type.BULK })
      const offer = await offered
      if (offer === undefined || offer.type !== ChunkResponse.Type.BULK || !this.framed.isOpen) return false
      const receiver = await dial({ port: offer.port, token: offer.token, key: offer.key.byteLength > 0 ? offer.key : undefined }, signal).catch(() => undefined)
      if (receiver === undefined) return false
      if (!this.framed.isOpen) { receiver.close(); return false }
      this.bulk = receiver
      receiver.onFrame(frame => this.deliver(frame.reqId, frame.index, frame.proof, [frame.data], frame.encoded === true))
      receiver.onClose(() => {
        this.bulkBytesBefore += receiver.bytesReceived
        if (this.bulk !== receiver) return
        this.bulk = undefined
        if (this.framed.isOpen) this.askAgainOnStream()
      })
      return true
    } catch {
      return false
    } finally {
      this.bulkAnswer = undefined
    }
  }

  private bulkAnswer?: (res: ChunkResponse | undefined) => void

  abort (err: Error): void {
    this.framed.abort(err)
  }

  async close (): Promise<void> {
    await this.framed.close()
  }

  private async send (req: Partial<ChunkRequest> & { type: ChunkRequest.Type }): Promise<void> {
    await this.framed.send(ChunkRequest.encode({ id: 0, cid: new Uint8Array(0), urgent: false, first: 0, count: 0, blockSize: 0, ...req } as ChunkRequest))
  }

  private onFrame (frame: Uint8ArrayList): void {
    let res: ChunkResponse
    try {
      const block = decodeBlock(frame)
      if (block !== undefined) {
        this.load = block.load
        this.deliver(block.id, block.index, block.proof, block.data, block.encoded)
        return
      }
      res = ChunkResponse.decode(frame, { limits: { indices: MAX_HAVE_RANGES, ranges: MAX_HAVE_RANGES } })
    } catch (err) {
      this.framed.abort(new MalformedDataError(`undecodable response: ${(err as Error).message}`))
      return
    }
    this.load = res.load
    switch (res.type) {
      case ChunkResponse.Type.BLOCK: this.deliver(res.id, res.index, res.proof, [res.data], res.encoded); break
      case ChunkResponse.Type.DONT_HAVE: this.cancelled.delete(res.id); this.settle(res.id)?.reject(new DontHaveError('peer does not have every block of the span')); break
      case ChunkResponse.Type.ERROR:
        if (res.id === 0 && this.bulkAnswer !== undefined) { this.bulkAnswer(res); break }
        this.cancelled.delete(res.id)
        this.settle(res.id)?.reject(fromWire(res.code, res.message, res.holder))
        break
      case ChunkResponse.Type.HAVE: this.onHave(res); break
      case ChunkResponse.Type.HAVE_UPDATE: this.watcherOf(res.version)?.onUpdate({ chunks: res.indices, ranges: res.ranges }); break
      case ChunkResponse.Type.QUEUED: this.pending.get(res.id)?.onQueued?.(); break
      case ChunkResponse.Type.BULK: this.bulkAnswer?.(res); break
      default: break
    }
  }

  private rememberCancelled (reqId: number, left: Set<number>, onLate: ((block: BlockArrival) => void) | undefined): void {
    this.cancelled.set(reqId, onLate !== undefined ? { left, onLate } : { left })
    if (this.cancelled.size > MAX_CANCELLED_REMEMBERED) this.cancelled.delete(this.cancelled.keys().next().value as number)
  }

  /**
   * One block arrived: to its request (which resolves once its last block came, and is then
   * acknowledged), or, for a request no longer pending, to its `onLate` if it was cancelled with
   * one, else dropped. A block the request did not ask for (another index, a repeat) is a broken
   * protocol: the stream is aborted — except a repeat of a request asked again after its bulk
   * connection closed, whose blocks may come both ways.
   */
  private deliver (reqId: number, index: number, proof: Uint8Array, data: BlockBytes, encoded = false): void {
    const arrival: BlockArrival = encoded ? { index, proof, data, encoded } : { index, proof, data }
    const pending = this.pending.get(reqId) ?? this.superseded.get(reqId)
    if (pending !== undefined) {
      if (!pending.left.delete(index)) {
        this.release(data)
        const { first, count } = pending.span
        if (pending.old.length > 0 && index >= first && index < first + count) return
        this.framed.abort(new MalformedDataError(`peer sent block ${index} for request ${reqId}, which did not ask for it`))
        return
      }
      pending.onBlock(arrival)
      if (pending.left.size === 0) {
        for (const id of [pending.id, ...pending.old]) this.received(id)
        this.settle(pending.id)?.resolve()
      }
      return
    }
    const cancelled = this.cancelled.get(reqId)
    if (cancelled !== undefined && cancelled.left.delete(index)) {
      if (cancelled.left.size === 0) {
        this.cancelled.delete(reqId)
        this.received(reqId)
      }
      if (cancelled.onLate !== undefined) cancelled.onLate(arrival)
      else this.release(data)
      return
    }
    this.release(data)
    // A request forgotten since (settled, or cancelled long ago) may still get blocks; one never
    // made may not.
    if (!this.idsWrapped && (reqId === 0 || reqId >= this.nextId)) {
      this.framed.abort(new MalformedDataError(`peer sent block ${index} for request ${reqId}, which was never made`))
    }
  }

  /** Tells the server every block of `reqId` has arrived (even one cancelled meanwhile), so it can reuse the span's buffer. */
  private received (reqId: number): void {
    void this.send({ type: ChunkRequest.Type.RECEIVED, id: reqId }).catch(() => {})
  }

  private onHave (res: ChunkResponse): void {
    const watcher = this.watcherOf(res.version)
    if (watcher === undefined) return
    if (res.complete) watcher.onHave({ complete: true })
    else if (res.data.byteLength === 0 && res.ranges.length === 0) watcher.onHave(undefined)
    else watcher.onHave({ complete: false, bits: res.data, ranges: res.ranges })
  }

  private watcherOf (versionBytes: Uint8Array): VersionWatcher | undefined {
    try {
      return this.watchers.get(CID.decode(versionBytes).toString())
    } catch {
      return undefined
    }
  }

  private settle (reqId: number): Pending | undefined {
    const p = this.pending.get(reqId)
    if (p === undefined) return undefined
    this.pending.delete(reqId)
    for (const id of p.old) this.superseded.delete(id)
    p.cleanup()
    return p
  }

  private shutdown (err?: Error): void {
    this.closeError = err
    const reason = new PeerGoneError(`stream to peer closed${err !== undefined ? `: ${err.message}` : ''}`)
    for (const [id] of this.pending) this.settle(id)?.reject(reason)
    this.cancelled.clear()
    this.superseded.clear()
    this.watchers.clear()
    this.bulk?.close()
    this.bulkAnswer?.(undefined)
    for (const l of this.closeListeners.splice(0)) l(err)
  }
}

export type { BlockRange }

function concat (parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0))
  let at = 0
  for (const p of parts) { out.set(p, at); at += p.byteLength }
  return out
}
