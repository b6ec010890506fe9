/**
 * sha2-256 on worker threads, so hashing runs beside the event loop (and beside the file reads and
 * writes on the libuv pool) instead of on it. Works on memory the caller shares
 * (`SharedArrayBuffer`): nothing is copied to the worker. Used by `BlobWriter` for whole chunks in
 * shared window buffers, by `Store.chunkMatches` for pulled chunks in pooled receive buffers, and
 * by the store for the leaf layers it computes from stored chunks; everything else hashes on the
 * calling thread.
 *
 * One task hashes one chunk: its sha2-256 (its id) and, given a block size smaller than the chunk,
 * the leaf hash of each block (`leafHash` of `core/tree.ts`: sha2-256 of 0x00 and the block), in
 * one walk over the bytes, block by block, so the second hash of a block reads it from the cache.
 * Or it hashes one received block's leaf alone (`leaf`): a pull verifies every block this way
 * before it counts. The worker's leaf formula is checked against `leafHash` by the unit tests.
 *
 * One pool per store does both jobs: each worker is a V8 isolate of its own (~10 MiB resident
 * before any work), and a pull hashes blocks as they arrive while adds hash whole chunks, so two
 * pools would mostly sit beside each other.
 */
import { Worker } from 'node:worker_threads'

/** @default 2 — one per core on the machines shoal targets; hashing is the add path's main CPU cost */
export const HASH_WORKERS = 2

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
const LEAF_PREFIX = Uint8Array.of(0)
parentPort.on('message', ({ id, buffer, offset, length, blockSize }) => {
  try {
    const bytes = new Uint8Array(buffer, offset, length)
    if (blockSize < 0) {
      parentPort.postMessage({ id, digest: createHash('sha256').update(LEAF_PREFIX).update(bytes).digest() })
      return
    }
    const whole = createHash('sha256')
    let leaves
    if (blockSize > 0 && length > blockSize) {
      const count = Math.ceil(length / blockSize)
      leaves = new Uint8Array(count * 32)
      for (let i = 0; i < count; i++) {
        const block = bytes.subarray(i * blockSize, Math.min(length, (i + 1) * blockSize))
        whole.update(block)
        leaves.set(createHash('sha256').update(LEAF_PREFIX).update(block).digest(), i * 32)
      }
    } else {
      whole.update(bytes)
    }
    parentPort.postMessage({ id, digest: whole.digest(), leaves })
  } catch (err) {
    parentPort.postMessage({ id, error: String(err && err.message || err) })
  }
})
`

/** What one task gives back. */
export interface ChunkHashes {
  /** sha2-256 of the whole chunk. */
  digest: Uint8Array
  /** Leaf hashes of its blocks, concatenated (32 bytes each), when it has more than one block. */
  leaves?: Uint8Array
}

interface Waiting { resolve: (h: ChunkHashes) => void, reject: (e: Error) => void }

export class HashPool {
  private readonly workers: Worker[] = []
  private readonly waiting = new Map<number, Waiting>()
  private nextId = 0
  private turn = 0

  constructor (size = HASH_WORKERS) {
    for (let i = 0; i < size; i++) {
      const worker = new Worker(WORKER_SOURCE, { eval: true })
      worker.on('message', ({ id, digest, leaves, error }: { id: number, digest?: Uint8Array, leaves?: Uint8Array, error?: string }) => {
        const w = this.waiting.get(id)
        this.waiting.delete(id)
        this.settled(worker)
        if (error !== undefined || digest === undefined) w?.reject(new Error(`hashing on a worker failed: ${error ?? 'no digest'}`))
        else w?.resolve(leaves === undefined ? { digest } : { digest, leaves })
      })
      worker.on('error', err => {
        for (const w of this.waiting.values()) w.reject(err)
        this.waiting.clear()
        this.tasks.set(worker, 0)
        worker.unref()
      })
      // After the listeners: adding a 'message' listener refs the worker's port again. An idle
      // pool never keeps the process alive; a worker with a task does (`post`), so a caller
      // awaiting a hash is not left behind when nothing else holds the event loop.
      worker.unref()
      this.workers.push(worker)
    }
  }

  /** The sha2-256 digest of `view`, which MUST be backed by a SharedArrayBuffer and stay unchanged until this resolves. */
  async sha256 (view: Uint8Array): Promise<Uint8Array> {
    return (await this.hashChunk(view, 0)).digest
  }

  /**
   * The digest of chunk `view` and, when `blockSize` > 0 and the chunk is longer than one block,
   * its blocks' leaf hashes. Same contract on `view` as `sha256`.
   */
  async hashChunk (view: Uint8Array, blockSize: number): Promise<ChunkHashes> {
    if (blockSize < 0) throw new RangeError(`block size ${blockSize} is negative`)
    return await this.post(view, blockSize)
  }

  /** The leaf hash of one block (`leafHash` of `core/tree.ts`). Same contract on `view` as `sha256`. */
  async leaf (view: Uint8Array): Promise<Uint8Array> {
    return (await this.post(view, -1)).digest
  }

  /** One task; `blockSize` -1 asks for the leaf hash of `view`. */
  private async post (view: Uint8Array, blockSize: number): Promise<ChunkHashes> {
    if (!(view.buffer instanceof SharedArrayBuffer)) throw new TypeError('HashPool hashes shared memory only')
    const id = this.nextId++
    const worker = this.workers[this.turn++ % this.workers.length]
    if (worker === undefined) throw new Error('hash pool is closed')
    return await new Promise<ChunkHashes>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject })
      const tasks = this.tasks.get(worker) ?? 0
      if (tasks === 0) worker.ref()
      this.tasks.set(worker, tasks + 1)
      worker.postMessage({ id, buffer: view.buffer, offset: view.byteOffset, length: view.byteLength, blockSize })
    })
  }

  /** Tasks each worker has in hand: a worker with none is unref'ed. */
  private readonly tasks = new Map<Worker, number>()

  private settled (worker: Worker): void {
    const tasks = (this.tasks.get(worker) ?? 1) - 1
    this.tasks.set(worker, tasks)
    if (tasks === 0) worker.unref()
  }

  async close (): Promise<void> {
    const workers = this.workers.splice(0)
    await Promise.all(workers.map(async w => await w.terminate()))
  }
}
