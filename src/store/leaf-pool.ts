/**
 * Block leaf hashes (`core/tree.ts`: sha2-256 of 0x00 and the block) on worker threads, beside the
 * event loop, over memory the caller shares (`SharedArrayBuffer`): nothing is copied to the
 * worker. A pull verifies every block it receives this way; folding the leaf with the block's proof
 * (a handful of 64-byte hashes) is left to the caller.
 */
import { Worker } from 'node:worker_threads'
import { leafHash } from '../core/tree.js'

/** @default 2 — one per core on the machines shoal targets */
export const LEAF_WORKERS = 2

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
const LEAF = Uint8Array.of(0)
parentPort.on('message', ({ id, buffer, offset, length }) => {
  parentPort.postMessage({ id, digest: createHash('sha256').update(LEAF).update(new Uint8Array(buffer, offset, length)).digest() })
})
`

export class LeafPool {
  private readonly workers: Worker[] = []
  private readonly waiting = new Map<number, { resolve: (d: Uint8Array) => void, reject: (e: Error) => void }>()
  private nextId = 0
  private turn = 0

  constructor (size = LEAF_WORKERS) {
    for (let i = 0; i < size; i++) {
      const worker = new Worker(WORKER_SOURCE, { eval: true })
      worker.on('message', ({ id, digest }: { id: number, digest: Uint8Array }) => {
        const w = this.waiting.get(id)
        this.waiting.delete(id)
        w?.resolve(digest)
      })
      worker.on('error', err => { for (const w of this.waiting.values()) w.reject(err); this.waiting.clear() })
      // After the listeners: adding a 'message' listener refs the worker's port again.
      worker.unref()
      this.workers.push(worker)
    }
  }

  /** The leaf hash of `block`; on a worker when it is one view of shared memory, else here. */
  async leaf (block: Uint8Array | readonly Uint8Array[]): Promise<Uint8Array> {
    const view = block instanceof Uint8Array ? block : block.length === 1 ? block[0] : undefined
    if (view === undefined || !(view.buffer instanceof SharedArrayBuffer)) return leafHash(block)
    const id = this.nextId++
    const worker = this.workers[this.turn++ % this.workers.length]
    if (worker === undefined) return leafHash(view)
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
