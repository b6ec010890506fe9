/**
 * Frame parsing on the receiving side, with no socket: bytes go in, whole verified frames come out.
 *
 * Reads follow the socket's `onread` protocol: `readBuffer()` says where the next read should land,
 * `read(n)` says that `n` bytes landed there. While a frame's data has at least
 * `DIRECT_READ_MIN_BYTES` still to come, the buffer is the rest of the frame's pooled buffer, so
 * the kernel writes the data where the owner will read it (no copy); otherwise it is a reusable
 * scratch buffer whose bytes are parsed and copied out at once. `push(bytes)` takes bytes from
 * anywhere else (tests, fuzzing); both paths run the same state machine.
 *
 * MUST hold:
 * - A header is checked against the caps (`maxDataBytes`, `maxProofBytes`) as soon as its 14
 *   bytes are in, before a buffer is taken for its data: a header over a cap throws
 *   `MalformedDataError` and nothing of its frame is buffered.
 * - A frame reaches `onFrame` only whole and, when encrypted, after its tag verified: decrypted
 *   bytes of a frame whose tag fails are never handed on (its buffer goes back to the pool).
 * - After a throw the reader is finished: the caller closes the connection and calls `close()`.
 *
 * Encrypted data is decrypted as it arrives, read by read, in slices of `DECRYPT_SLICE_BYTES`:
 * `decipher.update` always returns a new buffer (node:crypto cannot decrypt into a given one), so
 * each slice costs one allocation of its size and a copy of the plaintext into the pooled buffer,
 * over the ciphertext it came from.
 */
import { createDecipheriv, type DecipherGCM, type KeyObject } from 'node:crypto'
import { MalformedDataError } from '../../core/errors.js'
import type { BufferPool } from '../../core/buffer-pool.js'
import { DECRYPT_SLICE_BYTES, DIRECT_READ_MIN_BYTES, HEADER_BYTES, NONCE_BYTES, SCRATCH_BYTES, TAG_BYTES } from './constants.js'
import { decodeHeader, nonceOf, type BulkFrame } from './wire.js'

export interface FrameReaderInit {
  /** Buffers for frames' data; each must hold `maxDataBytes`. */
  pool: BufferPool
  /** The connection's AES-256-GCM key; absent when frames are sent in clear. */
  key?: KeyObject
  maxDataBytes: number
  maxProofBytes: number
  /** Called with each whole, verified frame; it owns `frame.data` (see `BufferPool`). */
  onFrame: (frame: BulkFrame) => void
}

type Section = 'header' | 'proof' | 'data' | 'tag'

const EMPTY = new Uint8Array(0)

export class FrameReader {
  private readonly scratch = new Uint8Array(SCRATCH_BYTES)
  /** Header, then proof: the frame's additional authenticated data. */
  private readonly head: Uint8Array
  private readonly tag = Buffer.alloc(TAG_BYTES)
  private readonly nonce = new Uint8Array(NONCE_BYTES)
  private section: Section = 'header'
  /** Bytes of the current section received so far. */
  private have = 0
  /** Bytes of the current frame's plaintext written into `target`. */
  private plain = 0
  private reqId = 0
  private encoded = false
  private index = 0
  private proofLen = 0
  private dataLen = 0
  private target: Uint8Array = EMPTY
  private decipher: DecipherGCM | undefined
  /** Whether the buffer handed out last is the target (a direct read). */
  private direct = false
  private finished = false
  /** Frames handed on; the next frame's nonce. */
  frames = 0
  /** Bytes of frames received, counted as they arrive. */
  bytesReceived = 0

  constructor (private readonly init: FrameReaderInit) {
    if (init.pool.size < init.maxDataBytes) throw new RangeError(`the pool's ${init.pool.size}-byte buffers cannot hold frames of ${init.maxDataBytes} bytes`)
    this.head = new Uint8Array(HEADER_BYTES + init.maxProofBytes)
  }

  /** Where the next read should put its bytes. */
  readBuffer (): Uint8Array {
    if (this.section === 'data' && this.dataLen - this.have >= DIRECT_READ_MIN_BYTES) {
      this.direct = true
      return this.target.subarray(this.have, this.dataLen)
    }
    this.direct = false
    return this.scratch
  }

  /** `n` bytes were read into the buffer `readBuffer` returned last. Throws `MalformedDataError`. */
  read (n: number): void {
    if (this.finished) throw new MalformedDataError('bytes arrived after the bulk connection failed')
    if (!this.direct) {
      this.push(this.scratch.subarray(0, n))
      return
    }
    this.bytesReceived += n
    const at = this.have
    this.have += n
    if (this.decipher !== undefined) this.decrypt(this.target.subarray(at, at + n))
    else this.plain = this.have
    if (this.have === this.dataLen) this.dataDone()
  }

  /** Parses `bytes` (copied out as needed; the caller may reuse them). Throws `MalformedDataError`. */
  push (bytes: Uint8Array): void {
    if (this.finished) throw new MalformedDataError('bytes arrived after the bulk connection failed')
    this.bytesReceived += bytes.byteLength
    let at = 0
    // `finished`: the owner may close the connection from `onFrame`; the rest is not parsed.
    while (at < bytes.byteLength && !this.finished) {
      const left = bytes.byteLength - at
      if (this.section === 'header' || this.section === 'proof') {
        const size = this.section === 'header' ? HEADER_BYTES : HEADER_BYTES + this.proofLen
        const filled = this.section === 'header' ? this.have : HEADER_BYTES + this.have
        const n = Math.min(size - filled, left)
        this.head.set(bytes.subarray(at, at + n), filled)
        this.have += n
        at += n
        if (filled + n === size) {
          if (this.section === 'header') this.headerDone()
          else this.startData()
        }
      } else if (this.section === 'data') {
        const n = Math.min(this.dataLen - this.have, left)
        const part = bytes.subarray(at, at + n)
        this.have += n
        at += n
        if (this.decipher !== undefined) {
          this.decrypt(part)
        } else {
          this.target.set(part, this.plain)
          this.plain += n
        }
        if (this.have === this.dataLen) this.dataDone()
      } else {
        const n = Math.min(TAG_BYTES - this.have, left)
        this.tag.set(bytes.subarray(at, at + n), this.have)
        this.have += n
        at += n
        if (this.have === TAG_BYTES) this.tagDone()
      }
    }
  }

  /** Whether a frame is partly received (the connection ending now would cut it). */
  get midFrame (): boolean {
    return this.section !== 'header' || this.have > 0
  }

  /** A description of where the stream stopped, for messages. */
  describePosition (): string {
    if (!this.midFrame) return `after ${this.frames} whole frame(s)`
    const total = HEADER_BYTES + this.proofLen + this.dataLen + (this.init.key !== undefined ? TAG_BYTES : 0)
    const got = this.section === 'header'
      ? this.have
      : this.section === 'proof' ? HEADER_BYTES + this.have : this.section === 'data' ? HEADER_BYTES + this.proofLen + this.have : total - TAG_BYTES + this.have
    return this.section === 'header'
      ? `inside the header of frame ${this.frames} (${got} of ${HEADER_BYTES} bytes)`
      : `inside frame ${this.frames} (${got} of ${total} bytes)`
  }

  /** Hands a half-received frame's buffer back to the pool. Idempotent. */
  close (): void {
    this.finished = true
    this.releaseTarget()
    this.decipher = undefined
    this.section = 'header' // `readBuffer` hands out the scratch buffer, never a view of a given-back one
    this.have = 0
  }

  private headerDone (): void {
    const h = decodeHeader(this.head)
    const { maxDataBytes, maxProofBytes } = this.init
    if (h.dataLen > maxDataBytes) {
      this.fail(`frame ${this.frames} declares ${h.dataLen} bytes of data, over the ${maxDataBytes}-byte cap (MAX_BULK_DATA_BYTES)`)
    }
    if (h.proofLen > maxProofBytes) {
      this.fail(`frame ${this.frames} declares a ${h.proofLen}-byte proof, over the ${maxProofBytes}-byte cap (MAX_PROOF_BYTES)`)
    }
    this.reqId = h.reqId
    this.index = h.index
    this.encoded = h.encoded === true
    this.proofLen = h.proofLen
    this.dataLen = h.dataLen
    this.section = 'proof'
    this.have = 0
    if (this.proofLen === 0) this.startData()
  }

  private startData (): void {
    const key = this.init.key
    if (key !== undefined) {
      const decipher = createDecipheriv('aes-256-gcm', key, nonceOf(this.frames, this.nonce), { authTagLength: TAG_BYTES })
      decipher.setAAD(this.head.subarray(0, HEADER_BYTES + this.proofLen))
      this.decipher = decipher
    }
    this.target = this.dataLen > 0 ? this.init.pool.take(this.dataLen) : EMPTY
    this.section = 'data'
    this.have = 0
    this.plain = 0
    if (this.dataLen === 0) this.dataDone()
  }

  /** Decrypts in slices of `DECRYPT_SLICE_BYTES`, each copied into the target where its plaintext belongs. */
  private decrypt (ciphertext: Uint8Array): void {
    const decipher = this.decipher!
    for (let at = 0; at < ciphertext.byteLength; at += DECRYPT_SLICE_BYTES) {
      const out = decipher.update(ciphertext.subarray(at, at + DECRYPT_SLICE_BYTES))
      if (this.plain + out.byteLength > this.dataLen) this.fail(`frame ${this.frames} decrypted to more bytes than it declared`)
      this.target.set(out, this.plain)
      this.plain += out.byteLength
    }
  }

  private dataDone (): void {
    if (this.init.key === undefined) {
      this.deliver()
      return
    }
    this.section = 'tag'
    this.have = 0
  }

  private tagDone (): void {
    const decipher = this.decipher!
    let rest: Buffer
    try {
      decipher.setAuthTag(this.tag)
      rest = decipher.final()
    } catch {
      this.fail(`frame ${this.frames} failed authentication (its AES-GCM tag does not match): the bytes were changed on the way, or sender and receiver hold different keys`)
    }
    if (rest.byteLength > 0) {
      if (this.plain + rest.byteLength > this.dataLen) this.fail(`frame ${this.frames} decrypted to more bytes than it declared`)
      this.target.set(rest, this.plain)
      this.plain += rest.byteLength
    }
    if (this.plain !== this.dataLen) this.fail(`frame ${this.frames} decrypted to ${this.plain} of its ${this.dataLen} bytes`)
    this.deliver()
  }

  private deliver (): void {
    const frame: BulkFrame = {
      reqId: this.reqId,
      index: this.index,
      ...(this.encoded ? { encoded: true } : {}),
      proof: this.head.slice(HEADER_BYTES, HEADER_BYTES + this.proofLen),
      data: this.target
    }
    this.target = EMPTY
    this.decipher = undefined
    this.section = 'header'
    this.have = 0
    this.frames++
    this.init.onFrame(frame)
  }

  private releaseTarget (): void {
    if (this.target.byteLength > 0) this.init.pool.give(this.target)
    this.target = EMPTY
  }

  private fail (message: string): never {
    this.close()
    throw new MalformedDataError(message)
  }
}
