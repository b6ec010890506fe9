/**
 * The sending end of one bulk connection (server side, after the client's token was accepted).
 *
 * MUST hold:
 * - Frames go out whole and in the order `send` was called; each encrypted frame uses the next
 *   nonce of the counter (never one twice under the connection's key).
 * - Backpressure: a frame is written only once the frames before it were taken by the socket
 *   (`write` returned true, or `drain`), so at most one frame waits in Node's buffer; `send`
 *   resolves once its frame's bytes are in the kernel (its last write's callback). From then on
 *   the sender holds nothing of `data`: the caller may reuse the buffer.
 * - A send that sees none of the socket's queued bytes taken for `sendStallMs` destroys the
 *   connection with `SendStalledError`: the peer stopped reading. Progress is seen write by write
 *   (`SEND_WRITE_BYTES`), not only frame by frame, so a slow reader of 4 MiB frames is not taken
 *   for a stalled one.
 * - The client never sends after its token: any byte from it closes the connection
 *   (`MalformedDataError`).
 * - When the connection closes (either side, a stall, a bad byte), every pending send rejects
 *   with the reason and the `onClose` listeners are called once.
 *
 * Costs per frame: one cipher (`createCipheriv`) and one `update` per data part (node:crypto
 * allocates the ciphertext: one buffer of the frame's size), one `writev` per `SEND_WRITE_BYTES`.
 * In clear, the data is written from the caller's buffer without a copy.
 */
import type { KeyObject } from 'node:crypto'
import type { Socket } from 'node:net'
import type { Uint8ArrayList } from 'uint8arraylist'
import { AbortedError, InvalidInputError, MalformedDataError, SendStalledError } from '../../core/errors.js'
import { HEADER_BYTES, NONCE_BYTES, SEND_POLL_MS, SEND_WRITE_BYTES, TAG_BYTES } from './constants.js'
import { BulkClosedError } from './errors.js'
import { isU32, sealFrame, type FrameIds } from './wire.js'

export interface BulkSenderInit {
  /** Who is on the other end, for messages. */
  peer: string
  /** AES-256-GCM key of this connection; absent: frames in clear. */
  key?: KeyObject
  sendStallMs: number
  maxDataBytes: number
  maxProofBytes: number
}

export interface SendOptions {
  /** Stops waiting (the frame is not sent if it was still queued; a frame already written still goes out whole). */
  signal?: AbortSignal
}

export type CloseListener = (err?: Error) => void

interface Waiter { reject: (err: Error) => void }

export class BulkSender {
  readonly peer: string
  private readonly nonce = new Uint8Array(NONCE_BYTES)
  private counter = 0
  /** Settles when the frame before the next one was taken by the socket. */
  private gate: Promise<void> = Promise.resolve()
  private readonly waiting = new Set<Waiter>()
  private readonly closeListeners: CloseListener[] = []
  private closing = false
  /** Set once closed: the error pending and later sends reject with. */
  private closedWith: Error | undefined
  /** Why it closed, for `onClose` (undefined: closed by this side). */
  private closeReason: Error | undefined
  private socketError: Error | undefined
  private watchers = 0
  private monitor: NodeJS.Timeout | undefined
  private progressAt = 0
  private lastFlushed = 0
  /** Bytes whose write callback has come: taken by the kernel. */
  private flushed = 0
  /** Bytes of frames handed to the socket. */
  bytesSent = 0
  framesSent = 0

  constructor (private readonly socket: Socket, private readonly init: BulkSenderInit) {
    this.peer = init.peer
    socket.on('data', (chunk: Buffer) => {
      this.abort(new MalformedDataError(`peer ${this.peer} sent ${chunk.byteLength} bytes on its bulk connection after the token; a client sends nothing after it`))
    })
    socket.on('error', err => { this.socketError ??= err })
    socket.once('close', () => {
      const cause = this.socketError
      this.finish(cause !== undefined
        ? new BulkClosedError(`the bulk connection to ${this.peer} broke: ${cause.message}`, { cause })
        : new BulkClosedError(`peer ${this.peer} closed the bulk connection`))
    })
  }

  get isOpen (): boolean {
    return this.closedWith === undefined && !this.closing
  }

  /**
   * Sends one frame. `proof` and `data` are the caller's until this resolves. Rejects with
   * `BulkClosedError`, `SendStalledError`, `AbortedError`, or `InvalidInputError` for a frame over
   * the caps (a caller's mistake: nothing is sent, the connection stays open).
   */
  async send (ids: FrameIds, proof: Uint8Array, data: Uint8Array | Uint8ArrayList, options: SendOptions = {}): Promise<void> {
    if (!isU32(ids.reqId) || !isU32(ids.index)) throw new InvalidInputError(`reqId ${ids.reqId} and index ${ids.index} must be whole numbers in [0, 2^32)`)
    if (proof.byteLength > this.init.maxProofBytes) throw new InvalidInputError(`a ${proof.byteLength}-byte proof is over the ${this.init.maxProofBytes}-byte cap of a bulk frame`)
    if (data.byteLength > this.init.maxDataBytes) throw new InvalidInputError(`${data.byteLength} bytes of data are over the ${this.init.maxDataBytes}-byte cap of a bulk frame`)
    options.signal?.throwIfAborted()
    this.assertOpen()
    const before = this.gate
    let release!: () => void
    this.gate = new Promise(resolve => { release = resolve })
    let written: Promise<void>
    try {
      await this.watched(before, options.signal)
      this.assertOpen()
      written = this.writeFrame(ids, proof, data)
      written.catch(() => {}) // awaited below, unless waiting for drain fails first
      if (this.socket.writableNeedDrain) await this.watched(new Promise(resolve => this.socket.once('drain', resolve)), options.signal)
    } finally {
      release()
    }
    await this.watched(written, options.signal)
  }

  /**
   * Sends nothing more: frames already written are flushed (a peer that reads nothing is cut off
   * after `sendStallMs`), then the connection is closed. Sends still queued reject with
   * `BulkClosedError`. Resolves once closed; never rejects.
   */
  async close (): Promise<void> {
    if (this.closedWith !== undefined || this.closing) return
    this.closing = true
    const ended = new Promise<void>(resolve => this.socket.end(resolve))
    await this.watched(ended).catch(() => {})
    this.finish(undefined)
  }

  /** Closes at once: unsent bytes are dropped, pending sends reject with `err`. */
  abort (err: Error): void {
    this.finish(err)
  }

  /** Called once when the connection closes: no error when this side closed it. */
  onClose (listener: CloseListener): void {
    if (this.closedWith !== undefined) queueMicrotask(() => listener(this.closeReason))
    else this.closeListeners.push(listener)
  }

  private assertOpen (): void {
    if (this.closedWith !== undefined) throw this.closedWith
    if (this.closing) throw new BulkClosedError(`the bulk connection to ${this.peer} is closing`)
  }

  /** Encrypts (with a key) and writes one frame; resolves when its last byte is in the kernel. */
  private writeFrame (ids: FrameIds, proof: Uint8Array, data: Uint8Array | Uint8ArrayList): Promise<void> {
    const { head, parts, tag } = sealFrame(ids, proof, data instanceof Uint8Array ? [data] : [...data], this.init.key, this.counter, this.nonce)
    this.counter++
    this.framesSent++
    this.bytesSent += head.byteLength + data.byteLength + (tag?.byteLength ?? 0)

    const socket = this.socket
    let resolveWritten!: () => void
    let rejectWritten!: (err: Error) => void
    const written = new Promise<void>((resolve, reject) => { resolveWritten = resolve; rejectWritten = reject })
    const pieces: Uint8Array[] = [head]
    for (const part of parts) {
      for (let at = 0; at < part.byteLength; at += SEND_WRITE_BYTES) pieces.push(part.subarray(at, Math.min(at + SEND_WRITE_BYTES, part.byteLength)))
    }
    if (tag !== undefined) pieces.push(tag)
    // One writev per group of about SEND_WRITE_BYTES: the header rides with the first piece, the tag with the last.
    const groupMax = SEND_WRITE_BYTES + HEADER_BYTES + this.init.maxProofBytes + TAG_BYTES
    let group = 0
    socket.cork()
    pieces.forEach((piece, i) => {
      if (group > 0 && group + piece.byteLength > groupMax) {
        socket.uncork()
        socket.cork()
        group = 0
      }
      const n = piece.byteLength
      const last = i === pieces.length - 1
      socket.write(piece, err => {
        if (err != null) {
          if (last) rejectWritten(this.closedWith ?? new BulkClosedError(`the bulk connection to ${this.peer} failed: ${err.message}`))
          return
        }
        this.flushed += n
        if (last) resolveWritten()
      })
      group += n
    })
    socket.uncork()
    return written
  }

  /**
   * Waits for `p` while watching the socket for progress: the connection closing, the signal, or
   * no byte taken for `sendStallMs` ends the wait with that reason.
   */
  private async watched (p: Promise<void>, signal?: AbortSignal): Promise<void> {
    if (this.closedWith !== undefined) throw this.closedWith
    this.watch(+1)
    try {
      await new Promise<void>((resolve, reject) => {
        const waiter: Waiter = { reject }
        const onAbort = (): void => reject(new AbortedError('the bulk send was aborted'))
        this.waiting.add(waiter)
        signal?.addEventListener('abort', onAbort, { once: true })
        p.then(resolve, reject).finally(() => {
          this.waiting.delete(waiter)
          signal?.removeEventListener('abort', onAbort)
        })
      })
    } finally {
      this.watch(-1)
    }
  }

  private watch (delta: number): void {
    this.watchers += delta
    if (this.watchers > 0 && this.monitor === undefined) {
      this.progressAt = Date.now()
      this.lastFlushed = this.flushed
      const stallMs = this.init.sendStallMs
      this.monitor = setInterval(() => this.checkProgress(), Math.min(SEND_POLL_MS, stallMs))
    } else if (this.watchers === 0 && this.monitor !== undefined) {
      clearInterval(this.monitor)
      this.monitor = undefined
    }
  }

  private checkProgress (): void {
    const now = Date.now()
    const queued = this.socket.writableLength
    if (this.flushed !== this.lastFlushed || queued === 0) {
      this.lastFlushed = this.flushed
      this.progressAt = now
      return
    }
    const stallMs = this.init.sendStallMs
    if (now - this.progressAt >= stallMs) {
      this.abort(new SendStalledError(`peer ${this.peer} read nothing of ${queued} bytes waiting on its bulk connection for ${stallMs / 1000} s (it stopped reading)`))
    }
  }

  private finish (err: Error | undefined): void {
    if (this.closedWith !== undefined) return
    this.closedWith = err ?? new BulkClosedError(`the bulk connection to ${this.peer} was closed by this side`)
    this.closeReason = err
    if (this.monitor !== undefined) clearInterval(this.monitor)
    this.monitor = undefined
    for (const w of this.waiting) w.reject(this.closedWith)
    this.waiting.clear()
    this.socket.destroy()
    for (const listener of this.closeListeners.splice(0)) listener(err)
  }
}
