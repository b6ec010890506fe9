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
import type { ChunkId } from '../core/digest.js'
import { DecodedTooLargeError, DigestMismatchError, MalformedDataError, TruncatedDataError, UnknownCodecError } from '../core/errors.js'

/** @default 2 — one per core on the machines shoal targets; hashing is the add path's main CPU cost */
export const HASH_WORKERS = 2

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const { createHash } = require('node:crypto')
const LEAF_PREFIX = Uint8Array.of(0)
// store/cold-chunks, loaded on the first cold chunk (built, or through tsx when running from source).
let cold
const coldModule = () => cold ??= (async () => {
  if (workerData.tsx) (await import('tsx/esm/api')).register()
  return await import(workerData.coldModule)
})()
parentPort.on('message', async ({ id, buffer, offset, length, blockSize, coldId, into }) => {
  if (coldId !== undefined) {
    try {
      const { decodeColdChunk, parseColdChunk } = await coldModule()
      const file = new Uint8Array(buffer, offset, length)
      const out = into ?? new Uint8Array(new SharedArrayBuffer(parseColdChunk(file, coldId).size))
      const decoded = decodeColdChunk(file, coldId, out)
      parentPort.postMessage({ id, decoded })
    } catch (err) {
      parentPort.postMessage({ id, error: String(err && err.message || err), errorName: err && err.name })
    }
    return
  }
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

// From source (tests), the workers load `store/cold-chunks` through the same TypeScript loader.
const FROM_SOURCE = import.meta.url.endsWith('.ts')
const COLD_MODULE = new URL(`./cold-chunks.${FROM_SOURCE ? 'ts' : 'js'}`, import.meta.url).href

/** A worker's error as the typed error it was (what `decodeCold` throws). */
function revive (name: string, message: string): Error {
  if (name === 'DigestMismatchError') return new DigestMismatchError(message)
  if (name === 'TruncatedDataError') return new TruncatedDataError(message)
  if (name === 'UnknownCodecError') return new UnknownCodecError(message)
  if (name === 'DecodedTooLargeError') return new DecodedTooLargeError(message)
  if (name === 'MalformedDataError') return new MalformedDataError(message)
  return new Error(`decoding on a worker failed: ${message}`)
}

/** What one task gives back. */
export interface ChunkHashes {
  /** sha2-256 of the whole chunk. */
  digest: Uint8Array
  /** Leaf hashes of its blocks, concatenated (32 bytes each), when it has more than one block. */
  leaves?: Uint8Array
}

interface Waiting { resolve: (h: ChunkHashes & { decoded?: Uint8Array }) => void, reject: (e: Error) => void }

export class HashPool {
  private readonly workers: Worker[] = []
  private readonly waiting = new Map<number, Waiting>()
  private nextId = 0
  private turn = 0

  constructor (size = HASH_WORKERS) {
    for (let i = 0; i < size; i++) {
      const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { coldModule: COLD_MODULE, tsx: FROM_SOURCE } })
      worker.on('message', ({ id, digest, leaves, decoded, error, errorName }: { id: number, digest?: Uint8Array, leaves?: Uint8Array, decoded?: Uint8Array, error?: string, errorName?: string }) => {
        const w = this.waiting.get(id)
        this.waiting.delete(id)
        this.settled(worker)
        if (decoded !== undefined) w?.resolve({ digest: new Uint8Array(0), decoded })
        else if (error !== undefined && errorName !== undefined) w?.reject(revive(errorName, error))
        else if (error !== undefined || digest === undefined) w?.reject(new Error(`hashing on a worker failed: ${error ?? 'no digest'}`))
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

  /**
   * Chunk `id` decoded from its cold file `file` (`decodeColdChunk` of `store/cold-chunks.ts`, on a
   * worker: parsed, decoded and re-hashed), into `into` (shared memory that holds the chunk) or new
   * shared memory. `file` MUST be backed by a SharedArrayBuffer and stay unchanged until this
   * resolves; `into` MUST NOT be touched until then.
   * @throws MalformedDataError for a file that does not decode; DigestMismatchError when it decodes to other bytes
   */
  async decodeCold (file: Uint8Array, id: ChunkId, into?: Uint8Array): Promise<Uint8Array> {
    if (into !== undefined && !(into.buffer instanceof SharedArrayBuffer)) throw new TypeError('HashPool decodes into shared memory only')
    return (await this.post(file, 0, id, into)).decoded!
  }

  /** One task; `blockSize` -1 asks for the leaf hash of `view`, `coldId` for `view` decoded as that chunk's cold file. */
  private async post (view: Uint8Array, blockSize: number, coldId?: ChunkId, into?: Uint8Array): Promise<ChunkHashes & { decoded?: Uint8Array }> {
    if (!(view.buffer instanceof SharedArrayBuffer)) throw new TypeError('HashPool hashes shared memory only')
    const id = this.nextId++
    const worker = this.workers[this.turn++ % this.workers.length]
    if (worker === undefined) throw new Error('hash pool is closed')
    return await new Promise<ChunkHashes & { decoded?: Uint8Array }>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject })
      const tasks = this.tasks.get(worker) ?? 0
      if (tasks === 0) worker.ref()
      this.tasks.set(worker, tasks + 1)
      worker.postMessage({ id, buffer: view.buffer, offset: view.byteOffset, length: view.byteLength, blockSize, ...(coldId !== undefined ? { coldId } : {}), ...(into !== undefined ? { into } : {}) })
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
