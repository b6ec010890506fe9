/**
 * Length-prefixed protobuf framing over a libp2p 3 stream, shared by shoal's protocols.
 *
 * - Receiving: frames are decoded synchronously from the stream's `message` events with an
 *   explicit `maxFrameBytes`; a length prefix above the cap aborts the stream at once, before
 *   any of the frame is buffered (a peer cannot make us allocate more than the cap).
 * - Sending: `send` writes the varint length and the frame; when the stream asks for it, the next
 *   send waits for `drain`. Sends are serialised, so callers may send from several tasks.
 *
 * Flow control is the protocols' job: a requester bounds what it has asked for, so a well-behaved
 * peer never has more than that in flight; the read buffer cap catches one that is not.
 */
import type { Stream } from '@libp2p/interface'
import { LengthPrefixedDecoder } from '@libp2p/utils'
import * as varint from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import { MalformedDataError } from '../core/errors.js'

export interface FramedStreamInit {
  /** Largest frame accepted. */
  maxFrameBytes: number
  /** Bytes decoded but not yet handled that may pile up before the stream is aborted. */
  maxBufferBytes: number
  onFrame: (frame: Uint8ArrayList) => void
  /** Called once when the stream ends or fails, with the error if any. */
  onClose: (err?: Error) => void
}

export class FramedStream {
  private sending: Promise<void> = Promise.resolve()
  private closed = false

  constructor (readonly stream: Stream, private readonly init: FramedStreamInit) {
    stream.maxReadBufferLength = Math.max(stream.maxReadBufferLength, init.maxBufferBytes)
    const decoder = new LengthPrefixedDecoder({ maxDataLength: init.maxFrameBytes, maxBufferSize: init.maxBufferBytes })
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

  /** Queues one frame; resolves when it has been handed to the stream. */
  async send (frame: Uint8Array | Uint8ArrayList): Promise<void> {
    const next = this.sending.then(async () => {
      if (this.closed) throw new Error('stream is closed')
      const prefix = varint.encode(frame.byteLength)
      const ok = this.stream.send(new Uint8ArrayList(prefix, frame))
      if (!ok) await this.stream.onDrain()
    })
    this.sending = next.catch(() => {})
    await next
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
    this.init.onClose(err)
  }
}
