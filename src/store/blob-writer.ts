/**
 * Writes one file's bytes into the store, chunk by chunk, and names it by what it holds.
 *
 * The caller decides where chunks end; the writer hashes every chunk itself (so ids are never taken
 * on trust), writes to a temporary file under `tmp/`, and on `commit` fsyncs, renames to
 * `blobs/<file digest>` (0444), fsyncs the folder, and only then returns the records the store
 * indexes. `abort` (or any failure) removes the temporary file: nothing partial is ever kept. A disk
 * failure is mapped by the store's `onFailure` (which trips its write guard).
 *
 * Block trees: given a block size (`BlobWriterOptions.blockSize`), the writer also computes, in the
 * same task that hashes a chunk, the leaf hashes of the chunk's blocks (`store/leaves.ts`) and the
 * root of their tree, for every chunk of more than one block: the manifest gets the root, the
 * index the leaf layer (`Store.indexBlob`).
 *
 * Throughput: `append` hashes on the calling thread while the previous append's write runs on the
 * libuv pool, so reading, hashing and writing overlap. The buffer given to `append` must stay
 * untouched until the next `append` (or `commit`) resolves. Every `FLUSH_INTERVAL` bytes a
 * `datasync` starts in the background, so the disk takes the data while later chunks are hashed
 * and `commit`'s fsync only waits for the tail; it is an early start, never a durability promise
 * (only `commit`'s fsync is).
 */
import { open, rename, rm, chmod, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { ChunkHasher, chunkIdFromSha256, fileDigest, type ChunkId, type FileDigest } from '../core/digest.js'
import type { HashPool } from './hash-pool.js'
import { InvalidInputError } from '../core/errors.js'
import { MAX_CHUNK_SIZE } from '../core/chunking.js'
import { checkBlockSize, type ChunkRef } from '../core/manifest.js'
import { fsyncDir, mapFsError, pathExists, tmpName, writeFully } from '../util/fsutil.js'
import { layerRoot, LeafHasher } from './leaves.js'
import type { Layout } from './layout.js'

/**
 * Bytes written between background `datasync`s of the temporary file (see the module doc).
 * @default 256 MiB
 */
export const FLUSH_INTERVAL = 256 * 1024 * 1024

/** A chunk as written: a manifest's `ChunkRef` (with its root) and, for the index, its leaf layer. */
export interface WrittenChunk extends ChunkRef {
  /** Leaf hashes of its blocks, concatenated; present exactly when `root` is. */
  leaves?: Uint8Array
}

export interface WrittenBlob {
  digest: FileDigest
  size: number
  chunks: WrittenChunk[]
  /** The block size the chunks' trees were computed at; 0 when none were (see `BlobWriterOptions`). */
  blockSize: number
  /** False when identical bytes were already stored (the fresh copy replaced them). */
  created: boolean
}

export interface BlobWriterOptions {
  /** Cut chunks into blocks of this size and compute their trees; 0 (the default) computes none. */
  blockSize?: number
  /** Maps the error of a failed write (default `mapFsError`). */
  onFailure?: (err: unknown, doing: string) => unknown
}

export class BlobWriter {
  private readonly hasher = new ChunkHasher()
  private readonly leafHasher: LeafHasher | undefined
  private readonly chunks: WrittenChunk[] = []
  private chunkBytes = 0
  private position = 0
  private pending: Promise<unknown> = Promise.resolve()
  private hashing: Promise<unknown> = Promise.resolve()
  /** The background `datasync` in flight, if any; `commit` and `abort` wait for it. */
  private flushing: Promise<void> | undefined
  private flushedAt = 0
  private done = false

  private constructor (
    private readonly layout: Layout,
    private readonly fh: FileHandle,
    readonly tmpPath: string,
    private readonly pool: HashPool | undefined,
    private readonly onFailure: (err: unknown, doing: string) => unknown,
    private readonly blockSize: number
  ) {
    if (blockSize > 0) this.leafHasher = new LeafHasher(blockSize)
  }

  static async create (layout: Layout, pool?: HashPool, options: BlobWriterOptions = {}): Promise<BlobWriter> {
    const blockSize = options.blockSize ?? 0
    if (blockSize !== 0) checkBlockSize(blockSize)
    const onFailure = options.onFailure ?? mapFsError
    const path = join(layout.tmp, tmpName('blob'))
    let fh
    try {
      fh = await open(path, 'wx', 0o644)
    } catch (err) {
      throw onFailure(err, 'creating a blob in tmp/')
    }
    return new BlobWriter(layout, fh, path, pool, onFailure, blockSize)
  }

  /**
   * Appends `bytes`. `ends` are offsets within `bytes` (ascending, > 0) where a chunk ends; bytes
   * after the last end continue a chunk that a later append ends.
   */
  async append (bytes: Uint8Array, ends: readonly number[]): Promise<void> {
    // Whole chunks in shared memory are hashed on the worker pool, beside this thread.
    if (this.pool !== undefined && bytes.buffer instanceof SharedArrayBuffer && this.chunkBytes === 0 && ends[ends.length - 1] === bytes.length) {
      let from = 0
      const hashes: Array<Promise<unknown>> = []
      for (const end of ends) {
        if (end <= from || end > bytes.length) throw new InvalidInputError(`chunk end ${end} is out of order or past the buffer`)
        if (end - from > MAX_CHUNK_SIZE) throw new InvalidInputError(`a chunk of ${end - from} bytes is over the ${MAX_CHUNK_SIZE}-byte cap`)
        const slot: WrittenChunk = { id: '' as ChunkId, size: end - from }
        this.chunks.push(slot)
        hashes.push(this.pool.hashChunk(bytes.subarray(from, end), this.blockSize).then(h => {
          slot.id = chunkIdFromSha256(h.digest)
          if (h.leaves !== undefined) {
            slot.root = layerRoot(h.leaves)
            slot.leaves = h.leaves
          }
        }))
        from = end
      }
      // The previous window's hashes finish before this append resolves, so the caller may reuse
      // that buffer afterwards (the same contract as for writes).
      await this.hashing
      this.hashing = Promise.all(hashes)
      await this.write(bytes)
      return
    }
    let start = 0
    for (const end of ends) {
      if (end <= start || end > bytes.length) throw new InvalidInputError(`chunk end ${end} is out of order or past the buffer`)
      this.hasher.update(bytes.subarray(start, end))
      this.leafHasher?.update(bytes.subarray(start, end))
      this.closeChunk(this.chunkBytes + end - start)
      start = end
    }
    if (start < bytes.length) {
      this.hasher.update(bytes.subarray(start))
      this.leafHasher?.update(bytes.subarray(start))
      this.chunkBytes += bytes.length - start
      if (this.chunkBytes > MAX_CHUNK_SIZE) throw new InvalidInputError(`a chunk grew past ${MAX_CHUNK_SIZE} bytes`)
    }
    await this.write(bytes)
  }

  private async write (bytes: Uint8Array): Promise<void> {
    await this.pending
    const at = this.position
    this.position += bytes.length
    const write = writeFully(this.fh, bytes, 0, bytes.length, at).catch((err: unknown) => { throw this.onFailure(err, 'writing a blob') })
    // The next append, commit or abort awaits it; until then a failure (ENOSPC) must not count as
    // an unhandled rejection, which would bring the whole daemon down.
    write.catch(() => {})
    this.pending = write
    if (this.flushing === undefined && at - this.flushedAt >= FLUSH_INTERVAL) this.startFlush(at)
  }

  async commit (): Promise<WrittenBlob> {
    if (this.chunkBytes > 0) throw new InvalidInputError('the last chunk was not ended')
    try {
      await this.hashing
      await this.pending
      await this.flushing
      await this.fh.sync()
      await this.fh.close()
      this.done = true
      const digest = fileDigest(this.chunks)
      const target = this.layout.blob(digest)
      // Renaming over an existing copy is safe (same content, atomic) and heals a damaged one.
      const created = !(await pathExists(target))
      await chmod(this.tmpPath, 0o444)
      await rename(this.tmpPath, target)
      await fsyncDir(this.layout.blobs)
      return { digest, size: this.position, chunks: this.chunks, blockSize: this.blockSize, created }
    } catch (err) {
      await this.abort()
      throw this.onFailure(err, 'storing a blob')
    }
  }

  async abort (): Promise<void> {
    if (!this.done) {
      this.done = true
      await this.pending.catch(() => {})
      await this.flushing?.catch(() => {})
      await this.fh.close().catch(() => {})
    }
    await rm(this.tmpPath, { force: true })
  }

  /** Starts a background `datasync` of what was written before `upTo` (earlier appends' writes). */
  private startFlush (upTo: number): void {
    this.flushedAt = upTo
    const flush = this.fh.datasync().then(
      () => { if (this.flushing === flush) this.flushing = undefined },
      (err: unknown) => { throw this.onFailure(err, 'writing a blob') }
    )
    // A failure is kept (not cleared) so that `commit` reports it; see `append` for the catch.
    flush.catch(() => {})
    this.flushing = flush
  }

  private closeChunk (size: number): void {
    if (size > MAX_CHUNK_SIZE) throw new InvalidInputError(`a chunk of ${size} bytes is over the ${MAX_CHUNK_SIZE}-byte cap`)
    const leaves = this.leafHasher?.finish()
    this.chunks.push(leaves === undefined ? { id: this.hasher.digest(), size } : { id: this.hasher.digest(), size, root: layerRoot(leaves), leaves })
    this.chunkBytes = 0
  }
}
