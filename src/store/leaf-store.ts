/**
 * Where the store finds a chunk's leaf layer to serve proofs from (`Store.readSpan`): an LRU in
 * memory, then the index's `leaves` sublevel, then the chunk's own bytes.
 *
 * MUST hold:
 * - a layer is served only if it was made from bytes that hash to the chunk id: layers in the
 *   index were (see `store/leaves.ts`), and one computed here is computed in the same worker task
 *   that re-hashes the chunk; a chunk whose stored bytes no longer match its id gets no layer (it
 *   is `verify`'s to find) and is not served;
 * - concurrent requests for the same missing layer compute it once;
 * - memory is bounded: the cache by `LEAF_CACHE_BYTES`, computations by `LEAF_COMPUTE_CONCURRENCY`
 *   (each holds one chunk in a shared buffer while the hash workers read it).
 *
 * A layer computed here is written to the index on its own; when that write fails (a full disk),
 * the layer is still served from memory and computed again after a restart. Not a goal: evicting
 * layers of chunks the store dropped (a layer depends only on the chunk's bytes and the block
 * size, so a cached one is never wrong, only unused; `readSpan` finds no bytes for such a chunk).
 */
import { BufferPool } from '../core/buffer-pool.js'
import { MAX_CHUNK_SIZE } from '../core/chunking.js'
import { chunkIdFromSha256, type ChunkId } from '../core/digest.js'
import { AbortedError } from '../core/errors.js'
import { blockCount, TREE_HASH_BYTES } from '../core/tree.js'
import type { HashPool } from './hash-pool.js'
import type { IndexDb } from './index-db.js'
import { checkLayer, LeafLayer, leavesKey } from './leaves.js'

/**
 * Bytes of leaf layers (leaves and inner nodes) kept in memory. At 256 KiB blocks a 4 MiB chunk's
 * layer takes about 1 KiB, so the default holds the layers of ~16 GB of chunks.
 * @default 4 MiB
 */
export const LEAF_CACHE_BYTES = 4 * 1024 * 1024

/** Layers computed from chunk bytes at once; each holds a chunk of up to 4 MiB meanwhile. @default 2 */
export const LEAF_COMPUTE_CONCURRENCY = 2

export interface LeafStoreLogger {
  warn: (obj: object, msg?: string) => void
  debug: (obj: object, msg?: string) => void
}

/** What `LeafStore` needs of the store. */
export interface LeafStoreDeps {
  index: IndexDb
  hashPool: () => HashPool
  /** Reads chunk `id` whole into `into` (exactly its size), from wherever its verified bytes live. */
  readWhole: (id: ChunkId, into: Uint8Array) => Promise<Uint8Array | undefined>
  log: LeafStoreLogger
}

export class LeafStore {
  private readonly cache = new Map<string, LeafLayer>()
  private cachedBytes = 0
  private readonly loading = new Map<string, Promise<LeafLayer | undefined>>()
  private readonly buffers = new BufferPool(MAX_CHUNK_SIZE, { maxPooled: LEAF_COMPUTE_CONCURRENCY, shared: true })
  private running = 0
  private readonly queue: Array<() => void> = []

  constructor (private readonly deps: LeafStoreDeps, private readonly maxBytes = LEAF_CACHE_BYTES) {}

  /**
   * The layer of chunk `id` (`size` bytes, more than one block) at `blockSize`, or undefined when
   * the chunk's bytes cannot be read or no longer match its id.
   */
  async get (id: ChunkId, blockSize: number, size: number, signal?: AbortSignal): Promise<LeafLayer | undefined> {
    const key = leavesKey(id, blockSize)
    const cached = this.cache.get(key)
    if (cached !== undefined) {
      // Re-insert: the map's order is least recently used first.
      this.cache.delete(key)
      this.cache.set(key, cached)
      return cached
    }
    let load = this.loading.get(key)
    if (load === undefined) {
      load = this.load(id, blockSize, size).finally(() => { this.loading.delete(key) })
      this.loading.set(key, load)
    }
    return await whileNotAborted(load, signal)
  }

  /** Keeps `leaves` (checked by the caller) as chunk `id`'s layer at `blockSize` in memory. */
  remember (id: ChunkId, blockSize: number, leaves: Uint8Array): LeafLayer {
    const layer = new LeafLayer(leaves)
    this.put(leavesKey(id, blockSize), layer)
    return layer
  }

  /** Forgets every cached layer of chunk `id` (after `verify` replaced a wrong one in the index). */
  forget (id: ChunkId): void {
    for (const key of [...this.cache.keys()]) {
      if (key.startsWith(`${id}\0`)) this.drop(key)
    }
  }

  private async load (id: ChunkId, blockSize: number, size: number): Promise<LeafLayer | undefined> {
    const key = leavesKey(id, blockSize)
    const stored = await this.deps.index.leaves.get(key)
    if (stored !== undefined && stored.byteLength === blockCount(size, blockSize) * TREE_HASH_BYTES) {
      const layer = new LeafLayer(stored)
      this.put(key, layer)
      return layer
    }
    const leaves = await this.compute(id, blockSize, size)
    if (leaves === undefined) return undefined
    const layer = new LeafLayer(leaves)
    this.put(key, layer)
    try {
      await this.deps.index.commit([{ type: 'put', sublevel: this.deps.index.leaves, key, value: checkLayer(id, blockSize, leaves, size) }], {
        doing: `recording the leaf layer of chunk ${id}`, kept: 'the layer is served from memory and computed again after a restart'
      })
    } catch (err) {
      this.deps.log.warn({ chunk: id, err: (err as Error).message }, 'could not record a leaf layer; it is served from memory')
    }
    return layer
  }

  /** Reads the chunk whole and hashes it on the workers: its id re-checked, its leaves computed. */
  private async compute (id: ChunkId, blockSize: number, size: number): Promise<Uint8Array | undefined> {
    await this.slot()
    const into = this.buffers.take(size)
    try {
      const bytes = await this.deps.readWhole(id, into)
      if (bytes === undefined) return undefined
      const { digest, leaves } = await this.deps.hashPool().hashChunk(bytes, blockSize)
      if (chunkIdFromSha256(digest) !== id) {
        this.deps.log.warn({ chunk: id }, 'stored bytes of a chunk no longer hash to its id; it is not served (run shoal verify)')
        return undefined
      }
      return leaves
    } finally {
      this.buffers.give(into)
      this.release()
    }
  }

  private put (key: string, layer: LeafLayer): void {
    this.drop(key)
    this.cache.set(key, layer)
    this.cachedBytes += layer.bytes
    while (this.cachedBytes > this.maxBytes && this.cache.size > 1) {
      const oldest = this.cache.keys().next().value as string
      this.drop(oldest)
    }
  }

  private drop (key: string): void {
    const layer = this.cache.get(key)
    if (layer === undefined) return
    this.cache.delete(key)
    this.cachedBytes -= layer.bytes
  }

  private async slot (): Promise<void> {
    if (this.running < LEAF_COMPUTE_CONCURRENCY) {
      this.running++
      return
    }
    await new Promise<void>(resolve => this.queue.push(resolve))
  }

  private release (): void {
    const next = this.queue.shift()
    if (next !== undefined) next()
    else this.running--
  }
}

/** `promise`, or `AbortedError` as soon as `signal` aborts (the work itself goes on for others). */
async function whileNotAborted<T> (promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return await promise
  if (signal.aborted) throw new AbortedError('reading blocks was aborted')
  let onAbort = (): void => {}
  const aborted = new Promise<never>((_resolve, reject) => {
    onAbort = () => { reject(new AbortedError('reading blocks was aborted')) }
    signal.addEventListener('abort', onAbort, { once: true })
  })
  try {
    return await Promise.race([promise, aborted])
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}
