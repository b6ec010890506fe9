/**
 * Chunk reads: whether the store holds chunks, and their verified bytes — whole, a range, or
 * blocks with their proofs — from wherever a verified copy lives: a blob, a partial file a pull
 * is writing (recorded in the index, or written and not yet recorded: the chunks the store keeps
 * from `chunkWritten` until `recordChunks` or `chunksDropped`), or a cold file.
 *
 * MUST hold:
 * - bytes are returned only from a copy that was hashed to the chunk's id when it was written
 *   (or, for a cold file, when it is decoded); they are not re-hashed here (`store/store.ts`);
 * - a chunk a pull wrote is servable from the moment the pull says so (`chunkWritten`), before its
 *   location is durable, and until its last copy goes (`chunksDropped`);
 * - buffers handed out with `pooled` come back through `releaseChunk` and are reused.
 */
import { BufferPool } from '../core/buffer-pool.js'
import { MAX_CHUNK_SIZE } from '../core/chunking.js'
import type { ChunkId } from '../core/digest.js'
import { InvalidInputError } from '../core/errors.js'
import { checkBlockSize } from '../core/manifest.js'
import { blockCount, blockRange } from '../core/tree.js'
import { isErrno, type WriteContext } from '../util/fsutil.js'
import type { ChunkReads } from './api.js'
import { decodeColdBlocks, decodeColdChunk, parseColdChunk, readColdFile, type ColdChunkView } from './cold-chunks.js'
import type { HashPool } from './hash-pool.js'
import type { IndexDb } from './index-db.js'
import type { Layout } from './layout.js'
import { LeafStore } from './leaf-store.js'
import type { ReadCache } from './read-cache.js'
import type { ChunkPlace, Logger, RecordedChunk, Span } from './store.js'

/** Read buffers kept for serving chunks (see `releaseChunk`). @default 4 */
export const READ_POOL_BUFFERS = 4

/**
 * Bytes of cold files kept parsed for serving, least recently used out: a peer asks for a chunk
 * span by span (1 MiB each), and reading the whole file again for each span cost the seed more CPU
 * than encoding the blocks would have. @default 8 MiB (two of the largest files, at least)
 */
export const COLD_VIEW_CACHE_BYTES = 8 * 1024 * 1024

const NO_PROOF = new Uint8Array(0)

export interface ChunkReaderDeps {
  index: IndexDb
  layout: Layout
  reads: ReadCache
  hashPool: () => HashPool
  log: Logger
}

export class ChunkReader implements ChunkReads {
  /**
   * Buffers for chunks read to be served: a new 4 MiB buffer per served chunk made the garbage
   * collector, not encryption, the largest cost of a seed sending at full speed.
   */
  private readonly readPool = new BufferPool(MAX_CHUNK_SIZE, { maxPooled: READ_POOL_BUFFERS, shared: false })
  /** Chunks verified and written by a pull but not yet durable/indexed: servable already. */
  private readonly fresh = new Map<ChunkId, ChunkPlace>()
  /** Cold files read for serving, parsed (`COLD_VIEW_CACHE_BYTES`); a file is written once, under its chunk id. */
  private readonly coldViews = new Map<ChunkId, ColdChunkView>()
  private coldViewBytes = 0
  /** Leaf layers for serving proofs: cache, index, computed from the chunk (see `store/leaf-store.ts`). */
  readonly leafLayers: LeafStore
  private readonly index: IndexDb
  private readonly layout: Layout
  private readonly reads: ReadCache
  private readonly log: Logger

  constructor (deps: ChunkReaderDeps) {
    this.index = deps.index
    this.layout = deps.layout
    this.reads = deps.reads
    this.log = deps.log
    this.leafLayers = new LeafStore({
      index: deps.index,
      hashPool: deps.hashPool,
      readWhole: async (id, into) => await this.readLocated(await this.locate(id), 0, into.byteLength, { take: () => into, give: () => {} }) ?? await this.readCold(id, into),
      log: deps.log
    })
  }

  /**
   * Reads one chunk's bytes from any blob or partial file that holds it, or undefined. The bytes
   * were verified when written and are not re-hashed here (see the module doc).
   */
  async readChunk (id: ChunkId, options: { pooled?: boolean } = {}): Promise<Uint8Array | undefined> {
    const candidates = await this.locate(id)
    const size = candidates[0]?.size
    if (size === undefined) return await this.readCold(id)
    // A blob compressed away between the lookup and the read: its chunk is in cold/ by then.
    return await this.readLocated(candidates, 0, size, options.pooled === true ? this.readPool : undefined) ?? await this.readCold(id)
  }

  /**
   * Reads `length` bytes at `start` inside chunk `id` (as `readChunk`: verified bytes from a blob
   * or partial file, not re-hashed; with `pooled`, in a read buffer handed back with
   * `releaseChunk`), or undefined when the store does not hold the chunk.
   */
  async readChunkRange (id: ChunkId, start: number, length: number, options: { pooled?: boolean } = {}): Promise<Uint8Array | undefined> {
    const candidates = await this.locate(id)
    const located = candidates.length === 0 ? undefined : await this.readLocated(candidates, start, length, options.pooled === true ? this.readPool : undefined)
    if (located !== undefined) return located
    return (await this.readCold(id))?.subarray(start, start + length)
  }

  /**
   * A chunk only `cold/` holds, decoded and re-hashed (into `into` when given), or undefined when
   * there is none or its file is damaged (logged; `verify` quarantines it).
   */
  private async readCold (id: ChunkId, into?: Uint8Array): Promise<Uint8Array | undefined> {
    const file = await this.coldFile(id)
    if (file === undefined) return undefined
    try {
      return decodeColdChunk(file, id, into)
    } catch (err) {
      this.coldUnreadable(id, err)
      return undefined
    }
  }

  /** The parsed cold file of chunk `id`, or undefined (none, or not well-formed: logged). */
  private async coldView (id: ChunkId): Promise<ColdChunkView | undefined> {
    // The index decides whether the chunk is cold here; the file's bytes may come from the cache.
    if (await this.index.coldChunks.get(id) === undefined) {
      this.forgetColdView(id)
      return undefined
    }
    const cached = this.coldViews.get(id)
    if (cached !== undefined) {
      this.coldViews.delete(id)
      this.coldViews.set(id, cached)
      return cached
    }
    const file = await this.readColdBytes(id)
    if (file === undefined) return undefined
    let view: ColdChunkView
    try {
      view = parseColdChunk(file, id)
    } catch (err) {
      this.coldUnreadable(id, err)
      return undefined
    }
    if (file.byteLength <= COLD_VIEW_CACHE_BYTES) {
      this.coldViews.set(id, view)
      this.coldViewBytes += file.byteLength
      for (const [old, v] of this.coldViews) {
        if (this.coldViewBytes <= COLD_VIEW_CACHE_BYTES) break
        this.forgetColdView(old, v)
      }
    }
    return view
  }

  /** Logs that chunk `id`'s cold file could not be read back or decoded, and what to do. */
  private coldUnreadable (id: ChunkId, err: unknown): void {
    this.log.warn({ chunk: id, err: (err as Error).message }, 'a cold chunk could not be read back; run shoal verify')
  }

  private forgetColdView (id: ChunkId, view = this.coldViews.get(id)): void {
    if (view === undefined || !this.coldViews.delete(id)) return
    this.coldViewBytes -= view.file.byteLength
  }

  private async coldFile (id: ChunkId): Promise<Uint8Array | undefined> {
    if (await this.index.coldChunks.get(id) === undefined) return undefined
    return await this.readColdBytes(id)
  }

  /**
   * The bytes of chunk `id`'s cold file (its size bounded before anything is allocated:
   * `readColdFile`), or undefined: none there, or one that cannot be read (logged with why).
   */
  private async readColdBytes (id: ChunkId): Promise<Uint8Array | undefined> {
    try {
      return await readColdFile(this.layout.coldChunk(id), id)
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) this.coldUnreadable(id, err)
      return undefined
    }
  }

  /**
   * Blocks `[first, first + count)` of chunk `id` cut at `blockSize`, to serve: their bytes in one
   * read from wherever the chunk's verified bytes live (as `readChunk`; with `pooled`, in a read
   * buffer the caller hands back with `releaseChunk`), and one proof per block from the chunk's
   * leaf layer (cache, index, or computed from the chunk once: see `store/leaf-store.ts`). A chunk
   * of one block at `blockSize` (every chunk of a schema-1 manifest, at `MAX_CHUNK_SIZE`) needs no
   * layer: its proof is empty and its id verifies it. Undefined when the store does not hold the
   * chunk (or its bytes no longer match its id).
   * @throws InvalidInputError for a block size a manifest may not declare, or blocks outside the chunk
   * @throws AbortedError when `signal` aborts while a layer is being computed
   */
  async readSpan (id: ChunkId, blockSize: number, first: number, count: number, options: { pooled?: boolean, signal?: AbortSignal } = {}): Promise<Span | undefined> {
    checkBlockSize(blockSize)
    if (!Number.isInteger(first) || !Number.isInteger(count) || first < 0 || count < 1) {
      throw new InvalidInputError(`blocks ${first} + ${count} of chunk ${id} are not a span: the first block is 0 or more, the count 1 or more`)
    }
    const candidates = await this.locate(id)
    let coldView = candidates.length === 0 ? await this.coldView(id) : undefined
    const size = candidates[0]?.size ?? coldView?.size
    if (size === undefined) return undefined
    const blocks = blockCount(size, blockSize)
    if (first + count > blocks) {
      throw new InvalidInputError(`blocks ${first} to ${first + count - 1} of chunk ${id} are outside it: at ${size} bytes it has ${blocks} blocks of ${blockSize}`)
    }
    let proofs: Uint8Array[]
    if (blocks === 1) proofs = [NO_PROOF]
    else {
      const layer = await this.leafLayers.get(id, blockSize, size, options.signal)
      if (layer === undefined) return undefined
      proofs = []
      for (let i = first; i < first + count; i++) proofs.push(layer.proof(i))
    }
    const [start] = blockRange(size, blockSize, first)
    const [lastStart, lastLength] = blockRange(size, blockSize, first + count - 1)
    if (coldView === undefined) {
      const data = await this.readLocated(candidates, start, lastStart + lastLength - start, options.pooled === true ? this.readPool : undefined)
      if (data !== undefined) return { data, proofs }
      // A blob compressed away between the lookup and the read: its chunk is in cold/ by then.
      coldView = await this.coldView(id)
      if (coldView === undefined || coldView.size !== size) return undefined
    }
    // Decode the cold blocks that cover the span (unhashed: the proofs let the receiver check them).
    const from = Math.floor(start / coldView.blockSize)
    const to = Math.floor((lastStart + lastLength - 1) / coldView.blockSize)
    try {
      const decoded = decodeColdBlocks(coldView, from, to - from + 1, new Uint8Array((to - from + 1) * coldView.blockSize), id)
      const at = start - from * coldView.blockSize
      const data = decoded.subarray(at, at + lastStart + lastLength - start)
      // Cut at the span's block size, the stored blocks are the span's: a server can send them as they are.
      if (coldView.blockSize !== blockSize) return { data, proofs }
      const file = coldView.file
      return { data, proofs, encoded: coldView.blocks.slice(first, first + count).map(([s, l]) => file.subarray(s, s + l)) }
    } catch (err) {
      this.coldUnreadable(id, err)
      return undefined
    }
  }

  /** Where verified bytes of chunk `id` live: a fresh (pulled, not yet indexed) copy first. */
  private async locate (id: ChunkId): Promise<ChunkPlace[]> {
    const fresh = this.fresh.get(id)
    const candidates: ChunkPlace[] = fresh !== undefined ? [fresh] : []
    for (const [digest, offset, size] of await this.index.chunks.get(id) ?? []) candidates.push({ digest, offset, size })
    return candidates
  }

  /**
   * Reads `length` bytes at `start` inside the chunk from the first of `candidates` that has them,
   * into a buffer of `buffers` when given (handed back when nothing could be read), or undefined.
   */
  private async readLocated (candidates: ChunkPlace[], start: number, length: number, buffers?: { take: (length: number) => Uint8Array, give: (buffer: Uint8Array) => void }): Promise<Uint8Array | undefined> {
    for (const c of candidates) {
      if (start + length > c.size) continue
      const into = buffers !== undefined && length <= MAX_CHUNK_SIZE ? buffers.take(length) : undefined
      // A partial file becomes a blob by rename: try the blob, then the partial, then the blob
      // again. A partial gone between the first two opens was renamed meanwhile; without the
      // third try a chunk that was announced would be answered DONT_HAVE (and the server judged
      // a liar by the requester).
      const blob = this.layout.blob(c.digest)
      for (const path of [blob, this.layout.partialBlob(c.digest), blob]) {
        const bytes = await this.reads.read(path, c.offset + start, length, into).catch(() => { this.reads.forget(path) })
        if (bytes !== undefined) return bytes
      }
      if (into !== undefined) buffers?.give(into)
    }
    return undefined
  }

  /**
   * Hands back bytes `readChunk` returned with `pooled`, once nothing uses them any more (for a
   * served chunk: the peer said it has received it); they MUST NOT be used after. Other bytes are
   * ignored.
   */
  releaseChunk (bytes: Uint8Array): void {
    this.readPool.give(bytes)
  }

  /** Which of `ids` this store holds (one index read for all of them). */
  async heldChunks (ids: readonly ChunkId[]): Promise<Set<ChunkId>> {
    if (ids.length === 0) return new Set()
    const locations = await this.index.chunks.getMany([...ids])
    const cold = await this.index.coldChunks.getMany([...ids])
    return new Set(ids.filter((id, i) => this.fresh.has(id) || locations[i] !== undefined || cold[i] !== undefined))
  }

  /**
   * A verified chunk was written at `at` in a partial file: servable from now on, before it is
   * recorded (`recordChunks`). The store keeps that copy until the chunk is recorded or its partial
   * file goes (`chunksDropped`).
   */
  chunkWritten (id: ChunkId, at: ChunkPlace): void {
    this.fresh.set(id, at)
  }

  /**
   * Records where chunks written into partial files live, with the leaf layers they were verified
   * with, in one batch, once their bytes are durable (the caller fsynced them); from then on they
   * are served from the index. A location already recorded is not added twice.
   */
  async recordChunks (chunks: readonly RecordedChunk[], what: WriteContext): Promise<void> {
    const byId = new Map<ChunkId, RecordedChunk[]>()
    for (const c of chunks) byId.set(c.id, [...(byId.get(c.id) ?? []), c])
    const ids = [...byId.keys()]
    const existing = await this.index.locationsMany(ids)
    const batch = this.index.batch()
    ids.forEach((id, i) => {
      const locations = existing[i] ?? []
      for (const c of byId.get(id) ?? []) {
        if (!locations.some(([d, o]) => d === c.digest && o === c.offset)) locations.push([c.digest, c.offset, c.size])
        if (c.leaves !== undefined) batch.putLeaves(id, c.leaves.blockSize, c.leaves.layer, c.size)
      }
      batch.setLocations(id, locations)
    })
    await batch.commit(what)
    for (const id of ids) this.fresh.delete(id)
  }

  /** Chunks whose last copy in a partial file went (a pull was dropped): no longer served from it. */
  chunksDropped (ids: Iterable<ChunkId>): void {
    for (const id of ids) this.fresh.delete(id)
  }
}
