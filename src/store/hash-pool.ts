/**
 * sha2-256 on worker threads, so hashing runs beside the event loop (and beside the file reads and
 * writes on the libuv pool) instead of on it. Works on memory the caller shares
 * (`SharedArrayBuffer`): nothing is copied to the worker. Used by `BlobWriter` for whole chunks in
 * shared window buffers and by `Store.chunkMatches` for pulled chunks in pooled receive buffers;
 * everything else hashes on the calling thread.
 */
import { Worker } from 'node:worker_threads'

/** @default 2 — one per core on the machines shoal targets; hashing is the add path's main CPU cost */
export const HASH_WORKERS = 2

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
parentPort.on('message', ({ id, buffer, offset, length }) => {
  parentPort.postMessage({ id, digest: createHash('sha256').update(new Uint8Array(buffer, offset, length)).digest() })
})
`

export class HashPool {
  private readonly workers: Worker[] = []
  private readonly waiting = new Map<number, { resolve: (d: Uint8Array) => void, reject: (e: Error) => void }>()
  private nextId = 0
  private turn = 0

  constructor (size = HASH_WORKERS) {
    for (let i = 0; i < size; i++) {
      const worker = new Worker(WORKER_SOURCE, { eval: true })
      worker.unref()
      worker.on('message', ({ id, digest }: { id: number, digest: Uint8Array }) => {
        const w = this.waiting.get(id)
        this.waiting.delete(id)
        w?.resolve(digest)
      })
      worker.on('error', err => { for (const w of this.waiting.values()) w.reject(err); this.waiting.clear() })
      this.workers.push(worker)
    }
  }

  /** The sha2-256 digest of `view`, which MUST be backed by a SharedArrayBuffer and stay unchanged until this resolves. */
  async sha256 (view: Uint8Array): Promise<Uint8Array> {
    if (!(view.buffer instanceof SharedArrayBuffer)) throw new TypeError('HashPool hashes shared memory only')
    const id = this.nextId++
    const worker = this.workers[this.turn++ % this.workers.length]
    if (worker === undefined) throw new Error('hash pool is closed')
    return await new Promise<Uint8Array>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject })
      worker.postMessage({ id, buffer: view.buffer, offset: view.byteOffset, length: view.byteLength })
    })
  }

  async close (): Promise<void> {
    const workers = this.workers.splice(0)
    await Promise.all(workers.map(async w => await w.terminate()))
  }
}
