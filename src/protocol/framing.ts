/**
 * Length-prefixed protobuf framing over a libp2p 3 stream, shared by shoal's protocols.
 *
 * - Receiving: frames are decoded synchronously from the stream's `message` events with an
 *   explicit `maxFrameBytes`; a length prefix above the cap aborts the stream at once, before
 *   any of the frame is buffered (a peer cannot make us allocate more than the cap). Frames of at
 *   least `assemble.minBytes` are copied, as they arrive, into one buffer from `assemble.pool`
 *   and handed over as that buffer, which the receiver then owns (see `BufferPool`); smaller
 *   frames are views of the received parts.
 * - Sending: `send` writes the varint length and the frame; when the stream asks for it, the next
 *   send waits for `drain`. Sends are serialised, so callers may send from several tasks.
 * - A peer that stops reading cannot hold a sender for ever: while a send waits for `drain`, the
 *   stream's write buffer must shrink at least once every `sendStallMs` (`SEND_STALL_MS`), else
 *   the stream is aborted with `SendStalledError` (the peer's window stayed shut: it read nothing).
 *
 * Flow control is the protocols' job: a requester bounds what it has asked for, so a well-behaved
 * peer never has more than that in flight; the read buffer cap catches one that is not.
 */
import type { Stream } from '@libp2p/interface'
import * as varint from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import { MalformedDataError, SendStalledError } from '../core/errors.js'
import type { BufferPool } from '../core/buffer-pool.js'

/**
 * A send waiting for the peer to read may see no progress (not one byte of its write buffer taken)
 * for at most this long before the stream is aborted. An honest flow through a congested queue can
 * go silent for tens of seconds while retransmission timeouts back off; one that stays silent
 * longer is a peer that stopped reading, holding whatever the sender reserved for it.
 * why: docs/decisions/0022-upload-slots-and-send-stall.md
 * @default 30 s
 */
export const SEND_STALL_MS = 30_000
/** How often a waiting send checks the write buffer for progress. @default 1 s */
const DRAIN_POLL_MS = 1_000

export { SendStalledError }

export interface FramedStreamInit {
  /** Largest frame accepted. */
  maxFrameBytes: number
  /** Bytes received but not yet decoded into a frame that may pile up before the stream is aborted. */
  maxBufferBytes: number
  onFrame: (frame: Uint8ArrayList) => void
  /** Called once when the stream ends or fails, with the error if any. */
  onClose: (err?: Error) => void
  /** Assemble frames of at least `minBytes` in buffers from `pool` (its buffers hold `maxFrameBytes`). */
  assemble?: { pool: BufferPool, minBytes: number }
  /** See `SEND_STALL_MS`. @default SEND_STALL_MS */
  sendStallMs?: number
}

/** Splits a byte stream into length-prefixed frames; see the module doc. */
export class FrameDecoder {
  private readonly buffer = new Uint8ArrayList()
  /** The large frame being assembled, and how much of it has arrived. */
  private target?: Uint8Array
  private filled = 0
  /**
   * Bytes of assembled (large) frames received so far, counted as they arrive: a sign of a block
   * on its way between frames. Small messages (HAVE updates, errors) do not count, so a peer that
   * only announces what it has is not taken for one that is sending.
   */
  largeFrameBytes = 0

  constructor (private readonly init: Pick<FramedStreamInit, 'maxFrameBytes' | 'maxBufferBytes' | 'assemble'>) {}

  /** Frames completed by `data`, in order. Throws on a length over the cap or a buffer overflow. */
  * decode (data: Uint8Array | Uint8ArrayList): Generator<Uint8ArrayList> {
    this.buffer.append(data)
    while (true) {
      if (this.target !== undefined) {
        const n = Math.min(this.target.byteLength - this.filled, this.buffer.byteLength)
        copyInto(this.buffer, n, this.target, this.filled)
        this.buffer.consume(n)
        this.filled += n
        this.largeFrameBytes += n
        if (this.filled < this.target.byteLength) return
        const frame = this.target
        this.target = undefined
        yield new Uint8ArrayList(frame)
        continue
      }
      if (this.buffer.byteLength > this.init.maxBufferBytes) {
        throw new MalformedDataError(`read buffer over ${this.init.maxBufferBytes} bytes`)
      }
      const decoded = readPrefix(this.buffer)
      if (decoded === undefined) return // the length prefix has not fully arrived
      const { length, prefix } = decoded
      if (length > this.init.maxFrameBytes) throw new MalformedDataError(`frame of ${length} bytes over the ${this.init.maxFrameBytes}-byte cap`)
      const assemble = this.init.assemble
      if (assemble !== undefined && length >= assemble.minBytes) {
        this.buffer.consume(prefix)
        this.target = assemble.pool.take(length)
        this.filled = 0
        continue
      }
      if (this.buffer.byteLength < prefix + length) return
      const frame = this.buffer.sublist(prefix, prefix + length)
      this.buffer.consume(prefix + length)
      if (length > 0) yield frame
    }
  }

  /** Hands a half-assembled frame's buffer back (the stream ended). */
  close (): void {
    if (this.target !== undefined) this.init.assemble?.pool.give(this.target)
    this.target = undefined
  }
}

/**
 * The varint length prefix at the start of `list` and its size in bytes; undefined while it has not
 * fully arrived.
 * Throws `MalformedDataError` for a prefix longer than a 53-bit length. Reads byte by byte through
 * the parts, without `Uint8ArrayList.get` (which looks for the part from the first one each time:
 * a list of many small parts made the prefix cost more than the frame).
 */
export function readPrefix (list: Uint8ArrayList): { length: number, prefix: number } | undefined {
  let value = 0
  let scale = 1
  let read = 0
  for (const part of list) {
    for (let i = 0; i < part.byteLength; i++) {
      const byte = part[i]!
      value += (byte & 0x7f) * scale
      read++
      if ((byte & 0x80) === 0) return { length: value, prefix: read }
      if (read >= MAX_PREFIX_BYTES) throw new MalformedDataError(`a length prefix of more than ${MAX_PREFIX_BYTES} bytes`)
      scale *= 128
    }
  }
  return undefined
}

/** Bytes of the longest varint length prefix read (7 bits each: 2^56, past any frame cap). */
const MAX_PREFIX_BYTES = 8

/** Copies the first `count` bytes of `list` into `target` at `offset`. */
function copyInto (list: Uint8ArrayList, count: number, target: Uint8Array, offset: number): void {
  let done = 0
  for (const part of list) {
    if (done >= count) break
    const n = Math.min(part.byteLength, count - done)
    target.set(n === part.byteLength ? part : part.subarray(0, n), offset + done)
    done += n
  }
}

export class FramedStream {
  private sending: Promise<void> = Promise.resolve()
  private closed = false
  private readonly decoder: FrameDecoder

  constructor (readonly stream: Stream, private readonly init: FramedStreamInit) {
    stream.maxReadBufferLength = Math.max(stream.maxReadBufferLength, init.maxBufferBytes)
    const decoder = this.decoder = new FrameDecoder(init)
    stream.addEventListener('message', evt => {
      if (this.closed) return
      try {
        for (const frame of decoder.decode(evt.data)) init.onFrame(frame)
      } catch (err) {
        this.abort(new MalformedDataError(`peer sent a bad frame: ${(err as Error).message}`))
      }
    })
    stream.addEventListener('close', evt => this.finish((evt as { error?: Error }).error))
    stream.addEventListener('remoteCloseWrite', () => this.finish())
  }

  get isOpen (): boolean {
    return !this.closed
  }

  /** See `FrameDecoder.largeFrameBytes`. */
  get largeFrameBytes (): number {
    return this.decoder.largeFrameBytes
  }

  /** Queues one frame; resolves when it has been handed to the stream. */
  async send (frame: Uint8Array | Uint8ArrayList): Promise<void> {
    const next = this.sending.then(async () => {
      if (this.closed) throw new Error('stream is closed')
      const prefix = varint.encode(frame.byteLength)
      const ok = this.stream.send(new Uint8ArrayList(prefix, frame))
      if (!ok) await this.drained()
    })
    this.sending = next.catch(() => {})
    await next
  }

  /**
   * Waits for `drain`, aborting the stream once its write buffer has not shrunk for `sendStallMs`.
   * Progress, not a total deadline: a slow honest reader keeps taking bytes, however long the frame.
   */
  private async drained (): Promise<void> {
    const stallMs = this.init.sendStallMs ?? SEND_STALL_MS
    let waiting = this.stream.writeBufferLength
    let progressAt = Date.now()
    while (true) {
      const poll = AbortSignal.timeout(Math.min(DRAIN_POLL_MS, stallMs))
      try {
        await this.stream.onDrain({ signal: poll })
        return
      } catch (err) {
        if (!poll.aborted) throw err
      }
      const now = this.stream.writeBufferLength
      if (now < waiting) progressAt = Date.now()
      waiting = now
      if (Date.now() - progressAt >= stallMs) {
        const err = new SendStalledError(`the peer read nothing of ${waiting} bytes waiting to be sent for ${stallMs / 1000} s (it stopped reading)`)
        this.abort(err)
        throw err
      }
    }
  }

  abort (err: Error): void {
    if (this.closed) return
    this.stream.abort(err)
    this.finish(err)
  }

  async close (): Promise<void> {
    if (this.closed) return
    await this.sending
    await this.stream.close().catch(() => {})
    this.finish()
  }

  private finish (err?: Error): void {
    if (this.closed) return
    this.closed = true
    this.decoder.close()
    this.init.onClose(err)
  }
}
