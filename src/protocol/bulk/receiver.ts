/**
 * The receiving end of one bulk connection (client side): `connectBulk` dials the server, sends
 * the hello (magic and token: the only bytes this side ever sends), waits for the one-byte answer,
 * then parses frames (`FrameReader`) and hands each whole, verified frame to the owner's listener.
 *
 * MUST hold:
 * - `connectBulk` settles within `timeoutMs` (dial, hello, answer): a `BulkReceiver`, or a
 *   `BulkUnavailableError` saying what happened (refused, unreachable, timed out, token refused,
 *   server busy, closed) so the owner sends blocks on the libp2p stream instead; `AbortedError`
 *   when the caller's signal fires first. Nothing is left open after a failure.
 * - The socket reads into the receiver's own buffers (`onread`): frame data goes straight into a
 *   buffer from the owner's pool; bytes of a frame are never handed on before the frame is whole
 *   and (encrypted) its tag verified.
 * - A frame over a cap, a bad tag, a connection that ends inside a frame: the connection closes
 *   with `MalformedDataError`, nothing more is handed on, the half-filled buffer goes back to the
 *   pool. `onClose` listeners are called once (no error for a clean end between frames).
 * - Frames that complete before a listener is set are kept (reading pauses) and handed to the
 *   listener when it is set.
 */
import { createSecretKey, type KeyObject } from 'node:crypto'
import { connect as netConnect, type Socket } from 'node:net'
import { AbortedError, InvalidInputError, MalformedDataError } from '../../core/errors.js'
import type { BufferPool } from '../../core/buffer-pool.js'
import { CONNECT_TIMEOUT_MS, HelloAnswer, KEY_BYTES, MAX_BULK_DATA_BYTES, MAX_PROOF_BYTES, OFFER_TTL_MS, TOKEN_BYTES } from './constants.js'
import { BulkClosedError, BulkUnavailableError } from './errors.js'
import { FrameReader } from './reader.js'
import type { CloseListener } from './sender.js'
import { encodeHello, type BulkFrame } from './wire.js'

export type FrameListener = (frame: BulkFrame) => void

export interface ConnectOptions {
  /** Buffers for frames' data (each must hold `maxDataBytes`); the frame listener gives them back. */
  pool: BufferPool
  signal?: AbortSignal
  /** Dial, hello and answer must be done within this. @default CONNECT_TIMEOUT_MS */
  timeoutMs?: number
  /** Set here to receive frames from the first one (else see `BulkReceiver.onFrame`). */
  onFrame?: FrameListener
  /** @default MAX_BULK_DATA_BYTES */
  maxDataBytes?: number
  /** @default MAX_PROOF_BYTES */
  maxProofBytes?: number
}

/**
 * Dials a bulk listener and presents `token`. `key`: the offer's key, or undefined when the
 * server sends in clear (`transfer.encrypt: false`).
 */
export async function connectBulk (host: string, port: number, token: Uint8Array, key: Uint8Array | undefined, options: ConnectOptions): Promise<BulkReceiver> {
  if (token.byteLength !== TOKEN_BYTES) throw new InvalidInputError(`a bulk token is ${TOKEN_BYTES} bytes, not ${token.byteLength}`)
  if (key !== undefined && key.byteLength !== KEY_BYTES) throw new InvalidInputError(`a bulk key is ${KEY_BYTES} bytes, not ${key.byteLength}`)
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new InvalidInputError(`bulk port ${port} is not a TCP port (1–65535)`)
  if (options.signal?.aborted === true) throw new AbortedError('the bulk connect was aborted')
  const receiver = new BulkReceiver(host, port, token, key !== undefined ? createSecretKey(key) : undefined, options)
  await receiver.ready
  return receiver
}

export class BulkReceiver {
  /** `host:port` of the server, for messages. */
  readonly remote: string
  /** @internal Settles when the server answered the hello. */
  readonly ready: Promise<void>
  private readonly socket: Socket
  private readonly reader: FrameReader
  private readonly answer = new Uint8Array(1)
  private answered = false
  private listener: FrameListener | undefined
  private readonly queued: BulkFrame[] = []
  private readonly closeListeners: CloseListener[] = []
  private closed = false
  private closeReason: Error | undefined
  private socketError: Error | undefined
  private settleReady: ((err?: Error) => void) | undefined
  private readonly pool: BufferPool

  /** @internal Use `connectBulk`. */
  constructor (host: string, port: number, token: Uint8Array, key: KeyObject | undefined, options: ConnectOptions) {
    this.remote = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
    this.listener = options.onFrame
    this.pool = options.pool
    this.reader = new FrameReader({
      pool: options.pool,
      ...(key !== undefined ? { key } : {}),
      maxDataBytes: options.maxDataBytes ?? MAX_BULK_DATA_BYTES,
      maxProofBytes: options.maxProofBytes ?? MAX_PROOF_BYTES,
      onFrame: frame => this.dispatch(frame)
    })
    const timeoutMs = options.timeoutMs ?? CONNECT_TIMEOUT_MS
    const signal = options.signal
    this.ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.finish(new BulkUnavailableError(`${this.remote} did not accept the bulk token within ${timeoutMs} ms (dial, token and answer): the port may be filtered or the peer overloaded`))
      }, timeoutMs)
      const onAbort = (): void => this.finish(new AbortedError('the bulk connect was aborted'))
      signal?.addEventListener('abort', onAbort, { once: true })
      this.settleReady = err => {
        this.settleReady = undefined
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        if (err !== undefined) reject(err)
        else resolve()
      }
    })
    this.socket = netConnect({
      host,
      port,
      noDelay: true,
      onread: { buffer: () => this.answered ? this.reader.readBuffer() : this.answer, callback: n => this.onRead(n) }
    })
    this.socket.once('connect', () => { this.socket.write(encodeHello(token)) })
    this.socket.on('error', err => { this.socketError ??= err })
    this.socket.on('end', () => this.ended())
    this.socket.once('close', () => this.ended())
  }

  /** Bytes of frames received so far, counted as they arrive (before a frame is whole): a sign of life. */
  get bytesReceived (): number {
    return this.reader.bytesReceived
  }

  /** Frames handed on so far. */
  get frames (): number {
    return this.reader.frames
  }

  get isOpen (): boolean {
    return !this.closed
  }

  /** Sets the listener that receives every frame from now on (and any kept while there was none). */
  onFrame (listener: FrameListener): void {
    this.listener = listener
    for (const frame of this.queued.splice(0)) {
      if (this.closed) {
        this.reader.close()
        return
      }
      this.dispatch(frame)
    }
    if (!this.closed) this.socket.resume() // reading stopped while frames waited for a listener
  }

  /** Called once when the connection closes: no error for a close by this side or a clean end between frames. */
  onClose (listener: CloseListener): void {
    if (this.closed) queueMicrotask(() => listener(this.closeReason))
    else this.closeListeners.push(listener)
  }

  /** Closes the connection; a frame being received is dropped. */
  close (): void {
    this.finish(undefined)
  }

  /** @returns false to pause reading (frames are waiting for a listener). */
  private onRead (n: number): boolean {
    if (this.closed) return false
    try {
      if (!this.answered) {
        this.answerReceived(this.answer[0]!)
      } else {
        this.reader.read(n)
      }
    } catch (err) {
      this.finish(err instanceof MalformedDataError ? err : new MalformedDataError(`bulk frame from ${this.remote} could not be read: ${(err as Error).message}`))
      return false
    }
    return this.queued.length === 0
  }

  private answerReceived (code: number): void {
    if (code === HelloAnswer.ACCEPTED) {
      this.answered = true
      this.settleReady?.()
      return
    }
    const reason = code === HelloAnswer.TOKEN_REFUSED
      ? `${this.remote} refused the bulk token: it is unknown, expired (an offer lasts ${OFFER_TTL_MS / 1000} s) or already used; ask the peer for a new offer`
      : code === HelloAnswer.BUSY
        ? `${this.remote} is busy (at its cap of bulk connections, or of sockets still presenting tokens); try again later`
        : `${this.remote} answered the bulk hello with byte 0x${code.toString(16).padStart(2, '0')}, which is not a bulk channel answer: something else listens on that port`
    this.finish(new BulkUnavailableError(reason))
  }

  private dispatch (frame: BulkFrame): void {
    const listener = this.listener
    if (listener === undefined || this.queued.length > 0) {
      this.queued.push(frame)
      return
    }
    try {
      listener(frame)
    } catch (err) {
      this.finish(err instanceof Error ? err : new Error(String(err)))
    }
  }

  /** Before the answer: a failed connect. After it: the connection ends. */
  private ended (): void {
    if (this.closed) return
    if (!this.answered) {
      this.finish(this.connectError())
      return
    }
    const cause = this.socketError
    if (cause !== undefined) {
      this.finish(new BulkClosedError(`the bulk connection from ${this.remote} broke: ${cause.message}`, { cause }))
    } else if (this.reader.midFrame) {
      this.finish(new MalformedDataError(`the bulk connection from ${this.remote} ended ${this.reader.describePosition()}`))
    } else {
      this.finish(undefined)
    }
  }

  private connectError (): BulkUnavailableError {
    const err = this.socketError as NodeJS.ErrnoException | undefined
    const at = this.remote
    if (err === undefined) return new BulkUnavailableError(`${at} closed the connection before answering the bulk token (the server may have stopped, or be over its cap)`)
    switch (err.code) {
      case 'ECONNREFUSED':
        return new BulkUnavailableError(`${at} refused the connection: nothing listens on that port (the peer's bulk channel is off, or a firewall rejects it)`, { cause: err })
      case 'EHOSTUNREACH':
      case 'ENETUNREACH':
        return new BulkUnavailableError(`${at} is unreachable (${err.code}): no route to the peer's bulk port`, { cause: err })
      case 'ETIMEDOUT':
        return new BulkUnavailableError(`${at} did not answer the dial (ETIMEDOUT): the port may be filtered`, { cause: err })
      case 'ECONNRESET':
        return new BulkUnavailableError(`${at} reset the connection before answering the bulk token (the server may be over its cap)`, { cause: err })
      default:
        return new BulkUnavailableError(`cannot open a bulk connection to ${at}: ${err.message}`, { cause: err })
    }
  }

  /** Closes once; before the answer this rejects `connectBulk` with `err`. */
  private finish (err: Error | undefined): void {
    if (this.closed) return
    this.closed = true
    this.closeReason = err
    this.socket.destroy()
    this.reader.close()
    for (const frame of this.queued.splice(0)) if (frame.data.byteLength > 0) this.pool.give(frame.data)
    this.settleReady?.(err ?? new BulkClosedError(`the bulk connection to ${this.remote} was closed before the server answered`))
    for (const listener of this.closeListeners.splice(0)) listener(err)
  }
}
