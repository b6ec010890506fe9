/**
 * Reusable receive buffers for large frames: a frame is copied into one buffer as it arrives
 * instead of being kept as the many small buffers the transport delivered.
 *
 * Why: a 4 MiB chunk arrives as ~64 decrypted 64 KiB buffers. Held until the chunk is complete,
 * hashed and written, they outlive the young generation and are freed only by full collections,
 * which cost more CPU than the transfer's decryption; written as 64 parts they also cost more
 * kernel time than one contiguous write. One copy into a reused buffer lets them die young.
 *
 * Buffers are `SharedArrayBuffer`s by default, so a receiver can hash them on worker threads without
 * another copy. A pool whose buffers never leave the main thread (the store's read pool for serving)
 * uses ordinary `ArrayBuffer`s (`shared: false`): the buffers it lets go when more are out than it
 * keeps are then reclaimed sooner. why: docs/decisions/0011-buffer-pools.md
 *
 * Contract: a buffer from `take` belongs to the caller until it is handed back with `give`;
 * after `give` its contents MUST NOT be used. Not giving a buffer back is safe (it is garbage
 * collected; the pool allocates another); giving back one that is not out is ignored.
 */

/**
 * Buffers of the largest size kept for reuse at most (one pull's in-flight budget of 4 MiB
 * chunks, and a little more); as bytes, the bound of every size class together. More may be out at
 * once; they are simply not kept.
 * @default 8
 */
export const MAX_POOLED_BUFFERS = 8

/**
 * @default 64 KiB — the smallest buffer a pool hands out. A request is served from the smallest
 * power of two (from this up to the pool's `size`) that holds it: a 256 KiB block takes a 256 KiB
 * buffer, not a 4 MiB one, so a pull of small blocks does not take and zero a buffer of the
 * largest frame for each.
 */
export const MIN_BUFFER_CLASS = 64 * 1024

export interface BufferPoolOptions {
  /** Largest buffers kept for reuse at most, as a byte bound over every size class. @default {@link MAX_POOLED_BUFFERS} */
  maxPooled?: number
  /** `SharedArrayBuffer`s (for hashing on worker threads) or ordinary `ArrayBuffer`s. @default true */
  shared?: boolean
}

export class BufferPool {
  /** Free buffers by their byte length (a size class). */
  private readonly free = new Map<number, ArrayBufferLike[]>()
  private freeBytes = 0
  /** Buffers handed out and not given back (weakly: one never given back is simply collected). */
  private readonly out = new WeakSet<ArrayBufferLike>()
  private readonly maxPooledBytes: number
  private readonly shared: boolean

  /** `size`: bytes of the largest buffer, the largest length `take` accepts. */
  constructor (readonly size: number, options: BufferPoolOptions = {}) {
    this.maxPooledBytes = (options.maxPooled ?? MAX_POOLED_BUFFERS) * size
    this.shared = options.shared ?? true
  }

  /** A view of `length` bytes (at most `size`) at the start of a buffer now owned by the caller. */
  take (length: number): Uint8Array {
    if (length > this.size) throw new RangeError(`${length} bytes asked of a pool of ${this.size}-byte buffers`)
    const bytes = classOf(length, this.size)
    let buffer = this.free.get(bytes)?.pop()
    if (buffer !== undefined) this.freeBytes -= bytes
    else buffer = this.shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes)
    this.out.add(buffer)
    return new Uint8Array(buffer, 0, length)
  }

  /** Whether the buffer behind `view` is one this pool handed out and has not had back. */
  isOut (view: Uint8Array): boolean {
    return this.out.has(view.buffer)
  }

  /** Hands back the buffer behind `view` (any view of it); ignored unless it is out. */
  give (view: Uint8Array): void {
    const buffer = view.buffer
    if (!this.out.delete(buffer)) return
    if (this.freeBytes + buffer.byteLength > this.maxPooledBytes) return
    const list = this.free.get(buffer.byteLength)
    if (list === undefined) this.free.set(buffer.byteLength, [buffer])
    else list.push(buffer)
    this.freeBytes += buffer.byteLength
  }
}

/** The size class of a buffer for `length` bytes: the smallest power of two from MIN_BUFFER_CLASS that holds it, or `size`. */
function classOf (length: number, size: number): number {
  let bytes = MIN_BUFFER_CLASS
  while (bytes < length) bytes *= 2
  return Math.min(bytes, size)
}
