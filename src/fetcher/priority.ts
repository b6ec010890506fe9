/**
 * Reader priority: what a pull fetches first while local readers stream the version
 * (`GET /v1/versions/{id}/files/{path}` on a version being pulled).
 *
 * 1. chunks a reader is waiting for now (`wait`), oldest wait first: a reader blocked on bytes is
 *    the most urgent thing the pull can serve;
 * 2. then, while a reader streams a file (`read`), that file's chunks in the order a loader reads
 *    them (`core/load-order.ts`), readers in the order they opened;
 * 3. then nothing: the session's own piece order (rarest-first by default) takes the rest.
 *
 * With no reader the source is empty and the session behaves exactly as without it: rarest-first
 * stays the default and the swarm's efficiency is untouched.
 *
 * MUST hold: bounded work per pick. A reader's load order is walked from a cursor that only moves
 * forward over chunks that are no longer needed (never again pending), and the session stops
 * after `MAX_URGENT_SCAN` pieces. Every `wait` and `read` returns its release, which the reader
 * calls when it ends, however it ends.
 *
 * Pure bookkeeping: no I/O, no timers.
 */
import type { ChunkId } from '../core/digest.js'
import type { PrioritySource } from './types.js'

/** @default 512 — pieces the session looks at per pick among urgent chunks before it takes its own order */
export const MAX_URGENT_SCAN = 512

interface Reader { order: readonly ChunkId[], cursor: number }

export class ReadPriority implements PrioritySource {
  private readonly waits = new Map<number, readonly ChunkId[]>()
  private readonly readers = new Map<number, Reader>()
  private readonly listeners = new Set<() => void>()
  private next = 0

  /** Readers streaming, and reads waiting for bytes (for `status` and tests). */
  get size (): { readers: number, waits: number } {
    return { readers: this.readers.size, waits: this.waits.size }
  }

  /** A reader waits for `ids`: they come before anything else until the release. */
  wait (ids: readonly ChunkId[]): () => void {
    const key = this.next++
    this.waits.set(key, ids)
    this.changed()
    return () => { this.waits.delete(key) }
  }

  /** A reader streams a file whose chunks a loader reads in `order`: they come next until the release. */
  read (order: readonly ChunkId[]): () => void {
    const key = this.next++
    this.readers.set(key, { order, cursor: 0 })
    this.changed()
    return () => { this.readers.delete(key) }
  }

  * urgent (pending: (id: ChunkId) => boolean): Iterable<ChunkId> {
    for (const ids of this.waits.values()) {
      for (const id of ids) if (pending(id)) yield id
    }
    for (const reader of this.readers.values()) {
      // Chunks before the cursor are done for good; move it over those that just became so.
      while (reader.cursor < reader.order.length && !pending(reader.order[reader.cursor] as ChunkId)) reader.cursor++
      for (let i = reader.cursor; i < reader.order.length; i++) {
        const id = reader.order[i] as ChunkId
        if (pending(id)) yield id
      }
    }
  }

  onChange (listener: () => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  private changed (): void {
    for (const l of this.listeners) l()
  }
}
