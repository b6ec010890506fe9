/**
 * Requesting side of `/shoal/chunks/1.0.0`: a `PeerChannel` is one outbound stream to one peer,
 * over which any number of WANTs are pipelined and versions are watched.
 *
 * `want` resolves with the bytes the peer sent (the caller verifies them), or rejects with
 * `DontHaveError`, `PeerRequestError` or `PeerGoneError`; aborting its signal sends CANCEL. A
 * block the server had already begun sending still arrives: it goes to the request's `onLate`,
 * if it has one (its bytes crossed the link anyway), else it is dropped. Every block that arrives
 * is answered with RECEIVED, which lets the server reuse that block's buffer.
 * A channel is single-use: once its stream closes every pending request rejects, and the owner
 * opens a new channel when it needs the peer again.
 *
 * Given a `BufferPool`, blocks arrive in pooled buffers: the bytes `want` resolves with belong to
 * the caller, who hands them back with `release` once done (forgetting to only costs reuse).
 */
import { CID } from 'multiformats/cid'
import type { Stream } from '@libp2p/interface'
import type { Uint8ArrayList } from 'uint8arraylist'
import type { ChunkId, VersionId } from '../../core/digest.js'
import { AbortedError, MalformedDataError } from '../../core/errors.js'
import type { BufferPool } from '../../core/buffer-pool.js'
import { decodeBlock } from './block.js'
import { FramedStream } from '../framing.js'
import { MAX_FRAME_BYTES, POOLED_FRAME_MIN_BYTES, READ_BUFFER_SLACK_BYTES } from './constants.js'
import { DontHaveError, PeerGoneError, fromWire } from './errors.js'
import { ChunkRequest, ChunkResponse } from './pb/chunks.js'
import type { HaveState } from './server.js'

export interface VersionWatcher {
  onHave: (state: HaveState | undefined) => void
  onUpdate: (indices: number[]) => void
}

/** Chunk bytes as received: the parts of the frame, not joined. */
export type BlockBytes = Uint8Array[]

interface Pending { resolve: (bytes: BlockBytes) => void, reject: (err: Error) => void, cleanup: () => void, onQueued?: () => void }

/** Cancelled requests remembered for their late blocks, at most; the oldest is forgotten first. @default 64 */
export const MAX_CANCELLED_REMEMBERED = 64

export class PeerChannel {
  private readonly framed: FramedStream
  private readonly pending = new Map<number, Pending>()
  /** Cancelled requests with an `onLate`, by request id, oldest first. */
  private readonly cancelled = new Map<number, (bytes: BlockBytes) => void>()
  private readonly watchers = new Map<string, VersionWatcher>()
  private nextId = 1
  private closeListeners: Array<(err?: Error) => void> = []
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

  /** Bytes of blocks received on this stream so far, blocks still arriving included (not HAVE updates or other small messages). */
  get bytesReceived (): number {
    return this.framed.largeFrameBytes
  }

  onClose (listener: (err?: Error) => void): void {
    if (!this.framed.isOpen) listener()
    else this.closeListeners.push(listener)
  }

  /**
   * `urgent`: serve even if the peer just sent this chunk to someone else (see `DUPLICATE`).
   * `onQueued`: called if the peer says the request waits for one of its upload slots (QUEUED).
   * `onLate`: takes the block if it arrives after the request was cancelled (and then owns it, as
   * the caller of `want` would: hand it back with `release`).
   */
  async want (id: ChunkId, signal?: AbortSignal, urgent = false, onQueued?: () => void, onLate?: (bytes: BlockBytes) => void): Promise<BlockBytes> {
    if (!this.framed.isOpen) throw new PeerGoneError('the stream to this peer is closed')
    signal?.throwIfAborted()
    const reqId = this.nextId
    this.nextId = this.nextId >= 0xffff_fff0 ? 1 : this.nextId + 1
    return await new Promise<BlockBytes>((resolve, reject) => {
      const onAbort = (): void => {
        if (!this.pending.has(reqId)) return
        this.pending.delete(reqId)
        if (onLate !== undefined) this.rememberCancelled(reqId, onLate)
        void this.send({ type: ChunkRequest.Type.CANCEL, id: reqId, cid: new Uint8Array(0), urgent: false }).catch(() => {})
        reject(new AbortedError('request cancelled'))
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.pending.set(reqId, { resolve, reject, cleanup: () => signal?.removeEventListener('abort', onAbort), ...(onQueued !== undefined ? { onQueued } : {}) })
      this.send({ type: ChunkRequest.Type.WANT, id: reqId, cid: CID.parse(id).bytes, urgent }).catch((err: unknown) => {
        this.settle(reqId)?.reject(new PeerGoneError(`could not send a request: ${(err as Error).message}`))
      })
    })
  }

  /** Hands back the buffers of a block `want` resolved with; its bytes MUST NOT be used after. */
  release (bytes: BlockBytes): void {
    if (this.pool !== undefined) for (const part of bytes) this.pool.give(part)
  }

  /** Asks what the peer has of `version` and to be kept posted. */
  async watch (version: VersionId, watcher: VersionWatcher): Promise<void> {
    this.watchers.set(version, watcher)
    await this.send({ type: ChunkRequest.Type.INTEREST, id: 0, cid: CID.parse(version).bytes })
  }

  async unwatch (version: VersionId): Promise<void> {
    if (!this.watchers.delete(version)) return
    await this.send({ type: ChunkRequest.Type.UNINTEREST, id: 0, cid: CID.parse(version).bytes }).catch(() => {})
  }

  abort (err: Error): void {
    this.framed.abort(err)
  }

  async close (): Promise<void> {
    await this.framed.close()
  }

  private async send (req: { type: ChunkRequest.Type, id: number, cid: Uint8Array, urgent?: boolean }): Promise<void> {
    await this.framed.send(ChunkRequest.encode(req as ChunkRequest))
  }

  private onFrame (frame: Uint8ArrayList): void {
    let res: ChunkResponse
    try {
      const block = decodeBlock(frame)
      if (block !== undefined) {
        this.load = block.load
        this.deliver(block.id, block.data)
        return
      }
      res = ChunkResponse.decode(frame)
    } catch (err) {
      this.framed.abort(new MalformedDataError(`undecodable response: ${(err as Error).message}`))
      return
    }
    this.load = res.load
    switch (res.type) {
      case ChunkResponse.Type.BLOCK: this.deliver(res.id, [res.data]); break
      case ChunkResponse.Type.DONT_HAVE: this.cancelled.delete(res.id); this.settle(res.id)?.reject(new DontHaveError('peer does not have the chunk')); break
      case ChunkResponse.Type.ERROR: this.cancelled.delete(res.id); this.settle(res.id)?.reject(fromWire(res.code, res.message, res.holder)); break
      case ChunkResponse.Type.HAVE: this.onHave(res); break
      case ChunkResponse.Type.HAVE_UPDATE: this.watcherOf(res.version)?.onUpdate(res.indices); break
      case ChunkResponse.Type.QUEUED: this.pending.get(res.id)?.onQueued?.(); break
      default: break
    }
  }

  private rememberCancelled (reqId: number, onLate: (bytes: BlockBytes) => void): void {
    this.cancelled.set(reqId, onLate)
    if (this.cancelled.size > MAX_CANCELLED_REMEMBERED) this.cancelled.delete(this.cancelled.keys().next().value as number)
  }

  /**
   * A whole block arrived: acknowledged, then to its request, or, for a request no longer pending,
   * to its `onLate` if it was cancelled with one, else dropped.
   */
  private deliver (reqId: number, bytes: BlockBytes): void {
    this.received(reqId)
    const pending = this.settle(reqId)
    if (pending !== undefined) { pending.resolve(bytes); return }
    const onLate = this.cancelled.get(reqId)
    this.cancelled.delete(reqId)
    if (onLate !== undefined) onLate(bytes)
    else this.release(bytes)
  }

  /** Tells the server a block has fully arrived (even one cancelled meanwhile), so it can reuse the block's buffer. */
  private received (reqId: number): void {
    void this.send({ type: ChunkRequest.Type.RECEIVED, id: reqId, cid: new Uint8Array(0) }).catch(() => {})
  }

  private onHave (res: ChunkResponse): void {
    const watcher = this.watcherOf(res.version)
    if (watcher === undefined) return
    if (res.complete) watcher.onHave({ complete: true })
    else if (res.data.byteLength === 0) watcher.onHave(undefined)
    else watcher.onHave({ complete: false, bits: res.data })
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
    p.cleanup()
    return p
  }

  private shutdown (err?: Error): void {
    const reason = new PeerGoneError(`stream to peer closed${err !== undefined ? `: ${err.message}` : ''}`)
    for (const [id] of this.pending) this.settle(id)?.reject(reason)
    this.cancelled.clear()
    this.watchers.clear()
    for (const l of this.closeListeners.splice(0)) l(err)
  }
}
