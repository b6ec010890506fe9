/**
 * A buffered little-endian cursor over a {@link ByteSource}, and the validation helpers the
 * readers share.
 *
 * Contract:
 * - every read is bounds-checked against `limit` (the file size) BEFORE fetching, and a short file
 *   is a `MalformedModelError` naming the file, the offset and what was being read;
 * - read-ahead starts at `MIN_READ_WINDOW_BYTES` after each seek and doubles up to
 *   `MAX_READ_WINDOW_BYTES` while reads stay sequential, so walking a header costs about its own
 *   size and skipping weights costs nothing;
 * - `skip` only moves the position; it never fetches the skipped bytes;
 * - total fetched bytes may be capped (`budget`), for formats whose structure has no size field.
 */
import { MalformedModelError } from '../core/errors.js'
import { escapeUnsafe, unsafeCharacter } from '../core/names.js'
import { MAX_READ_WINDOW_BYTES, MIN_READ_WINDOW_BYTES } from './limits.js'
import type { ByteSource } from './types.js'

/**
 * The error every reader throws: the file, then the problem. Names taken from the file appear in
 * it with control, bidirectional and invisible characters escaped, so a message displays as what
 * it says.
 */
export function malformed (file: string, problem: string): MalformedModelError {
  return new MalformedModelError(escapeUnsafe(`${file}: ${problem}`))
}

/** Converts a u64/i64 read from a file to a number, or throws if it is not a safe non-negative integer. */
export function toSafe (file: string, value: bigint, what: string): number {
  if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw malformed(file, `${what} is ${value}, outside 0..${Number.MAX_SAFE_INTEGER}`)
  }
  return Number(value)
}

/**
 * Throws unless `path` is a plain relative path: non-empty, no NUL, not absolute (`/x`, `\x`,
 * `C:x`), no `..` segment, and no control, bidirectional or invisible format character
 * (`unsafeCharacter`). Both `/` and `\` count as separators.
 */
export function checkRelativePath (file: string, path: string, what: string): void {
  const bad = (why: string): never => { throw malformed(file, `${what} ${JSON.stringify(path)} ${why}`) }
  if (path.length === 0) bad('is empty')
  if (path.includes('\0')) bad('contains a NUL byte')
  const unsafe = unsafeCharacter(path)
  if (unsafe !== undefined) bad(`contains ${unsafe}`)
  if (/^[/\\]/.test(path) || /^[A-Za-z]:/.test(path)) bad('is an absolute path; it must be relative to the model folder')
  if (path.split(/[/\\]/).some(seg => seg === '..')) bad('contains a ".." segment; it must stay inside the model folder')
}

/**
 * Sets an own, enumerable property even for keys like `__proto__`, so names taken from a file
 * can never reach an object's prototype.
 */
export function setOwn<T> (target: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true })
}

/** Sum over tensors of the product of their shapes. */
export function parameterCount (tensors: ReadonlyArray<{ shape: readonly number[] }>): number {
  return tensors.reduce((sum, t) => sum + Number(elementCount(t.shape)), 0)
}

/** Product of a shape as a bigint (1 for a scalar). */
export function elementCount (shape: readonly number[]): bigint {
  let n = 1n
  for (const d of shape) n *= BigInt(d)
  return n
}

export class Cursor {
  /** Absolute position of the next read. */
  pos: number
  private buf: Uint8Array = new Uint8Array(0)
  private view: DataView = new DataView(new ArrayBuffer(0))
  private bufStart = 0
  private window = MIN_READ_WINDOW_BYTES
  private fetched = 0

  constructor (
    private readonly src: ByteSource,
    readonly file: string,
    pos = 0,
    private readonly budget = Number.POSITIVE_INFINITY,
    readonly limit = src.size
  ) {
    this.pos = pos
  }

  /** Bytes fetched from the source so far. */
  get bytesFetched (): number { return this.fetched }

  /** Makes `[pos, pos + n)` available and returns its index in `buf`. */
  private async need (n: number, what: string): Promise<number> {
    if (n > this.limit - this.pos) {
      throw malformed(this.file, `${what} at offset ${this.pos} needs ${n} bytes but the file ends at ${this.limit} (truncated or corrupt header)`)
    }
    const rel = this.pos - this.bufStart
    if (rel >= 0 && rel + n <= this.buf.byteLength) return rel
    const sequential = rel >= 0 && rel <= this.buf.byteLength && this.buf.byteLength > 0
    this.window = sequential ? Math.min(this.window * 2, MAX_READ_WINDOW_BYTES) : MIN_READ_WINDOW_BYTES
    const length = Math.min(this.limit - this.pos, Math.max(n, this.window))
    this.fetched += length
    if (this.fetched > this.budget) {
      throw malformed(this.file, `header structure exceeds the ${this.budget}-byte scan limit`)
    }
    this.buf = await this.src.read(this.pos, length)
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength)
    this.bufStart = this.pos
    return 0
  }

  /** Moves forward `n` bytes without fetching them; throws if that passes `end` (default: the file end). */
  skip (n: number, what: string, end = this.limit): void {
    if (!Number.isSafeInteger(n) || n < 0 || n > end - this.pos) {
      throw malformed(this.file, `${what} at offset ${this.pos} is ${n} bytes long but only ${end - this.pos} remain`)
    }
    this.pos += n
  }

  /**
   * Up to `max` bytes from `pos` without consuming them (fewer only where `limit` is nearer): a
   * view valid until the next read. For decoders of variable-length fields (protobuf varints).
   */
  async peek (max: number, what: string): Promise<Uint8Array> {
    const n = Math.min(max, this.limit - this.pos)
    const i = await this.need(n, what)
    return this.buf.subarray(i, i + n)
  }

  /** What is already buffered from `pos`, at most `max` bytes, without fetching (possibly empty). */
  buffered (max: number): Uint8Array {
    const rel = this.pos - this.bufStart
    if (rel < 0 || rel >= this.buf.byteLength) return this.buf.subarray(0, 0)
    return this.buf.subarray(rel, rel + Math.min(max, this.limit - this.pos))
  }

  async bytes (n: number, what: string): Promise<Uint8Array> {
    const i = await this.need(n, what)
    this.pos += n
    return this.buf.subarray(i, i + n)
  }

  async u8 (what: string): Promise<number> {
    const i = await this.need(1, what)
    this.pos += 1
    return this.view.getUint8(i)
  }

  async u32 (what: string): Promise<number> {
    const i = await this.need(4, what)
    this.pos += 4
    return this.view.getUint32(i, true)
  }

  async u64 (what: string): Promise<bigint> {
    const i = await this.need(8, what)
    this.pos += 8
    return this.view.getBigUint64(i, true)
  }

  /** A u64 that must fit a safe integer (lengths, counts, offsets). */
  async u64n (what: string): Promise<number> {
    return toSafe(this.file, await this.u64(what), what)
  }

  /** Reads a fixed-width little-endian scalar named by its DataView getter. */
  async scalar (kind: 'Int8' | 'Uint16' | 'Int16' | 'Int32' | 'Float32' | 'BigInt64' | 'Float64', what: string): Promise<number | bigint> {
    const width = SCALAR_WIDTH[kind]
    const i = await this.need(width, what)
    this.pos += width
    const v = this.view
    switch (kind) {
      case 'Int8': return v.getInt8(i)
      case 'Uint16': return v.getUint16(i, true)
      case 'Int16': return v.getInt16(i, true)
      case 'Int32': return v.getInt32(i, true)
      case 'Float32': return v.getFloat32(i, true)
      case 'BigInt64': return v.getBigInt64(i, true)
      case 'Float64': return v.getFloat64(i, true)
    }
  }
}

const SCALAR_WIDTH = { Int8: 1, Uint16: 2, Int16: 2, Int32: 4, Float32: 4, BigInt64: 8, Float64: 8 } as const
