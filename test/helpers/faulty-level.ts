/**
 * An in-memory index (memory-level) whose writes and opens fail on demand, the way LevelDB's do on
 * a full or failing disk: for unit tests of what the store does after a failed index write.
 */
import { MemoryLevel } from 'memory-level'
import type { Db } from '../../src/store/index-db.js'

/** An error shaped like classic-level's (code and message) for a LevelDB status. */
export function levelError (code: 'LEVEL_IO_ERROR' | 'LEVEL_CORRUPTION' = 'LEVEL_IO_ERROR', message = 'IO error: /home/index/000003.log: No space left on device'): Error {
  return Object.assign(new Error(message), { code })
}

interface BatchOp { type: 'put' | 'del', key: unknown }

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const base = MemoryLevel.prototype as any

export class FaultyLevel extends MemoryLevel<string, unknown> {
  /** Batches that reached the store (failed or not), opens and closes. */
  batches = 0
  opens = 0
  closes = 0
  /** While set, batches that `when` matches (every batch without it) fail with `error`. */
  failBatches?: { error: Error, when?: (keys: string[]) => boolean }
  /** Errors the next opens throw, in order. */
  readonly failOpens: Error[] = []
  /** How long an open takes (ms): a reopen that readers can run into. */
  openDelayMs = 0

  get db (): Db {
    return this as unknown as Db
  }

  async _batch (ops: BatchOp[], options: unknown): Promise<void> {
    this.batches++
    const fail = this.failBatches
    if (fail !== undefined && (fail.when === undefined || fail.when(ops.map(op => typeof op.key === 'string' ? op.key : Buffer.from(op.key as Uint8Array).toString('utf8'))))) throw fail.error
    await base._batch.call(this, ops, options)
  }

  async _open (options: unknown): Promise<void> {
    this.opens++
    if (this.openDelayMs > 0) await new Promise(resolve => setTimeout(resolve, this.openDelayMs))
    const error = this.failOpens.shift()
    if (error !== undefined) throw error
    await base._open.call(this, options)
  }

  async _close (): Promise<void> {
    this.closes++
    await base._close.call(this)
  }
}
