/**
 * The store's guard against writing on after the disk failed a write.
 *
 * Why: LevelDB's state after a failed write is not to be trusted. A log record cut short by ENOSPC
 * leaves a hole, and at the next open recovery drops the rest of that 32 KiB log block
 * ("Corruption: checksum mismatch" in its LOG) — including any record written after the hole, so a
 * write acknowledged after the error is lost at the next restart. A failed sync makes LevelDB
 * refuse every later write until it is reopened. And once one write found the disk full, the next
 * one is likely to cut a record short too.
 *
 * MUST hold:
 * - the first disk failure of a store write (ENOSPC, EDQUOT, EIO, EROFS, or LevelDB reporting an I/O
 *   error or corruption), in the index or in a file the store writes (blobs, partial files,
 *   snapshots, `refs/`), trips the guard, and that write fails with `DiskFullError` or
 *   `StorageIoError` saying what it was doing and what its operation kept;
 * - while tripped, every write fails fast (before touching the disk) with one message naming the
 *   first failure, and nothing is acknowledged;
 * - the guard is cleared only by a clean reopen of the index (close, open — repaired when it
 *   reports corruption), tried at the next write, or by the store's periodic check
 *   (`WRITABLE_CHECK_MS`), once the store's file system has `REOPEN_MIN_FREE_BYTES` free.
 * The index runs the reopen (it owns LevelDB); this class holds the state and the words.
 *
 * Not a goal: guessing how much room an operation needs. A full quota (EDQUOT) is not seen by
 * statfs, so there each write reopens the index and fails again, rather than failing fast.
 */
import { statfs } from 'node:fs/promises'
import type { ShoalError } from '../core/errors.js'
import { diskError, diskFailure, failureDetail, type WriteContext } from '../util/fsutil.js'

/**
 * Free bytes the store's file system needs before a tripped store reopens its index and takes
 * writes again: LevelDB's recovery writes the log it replays (up to its 4 MiB write buffer) as a
 * table, a new log and a new manifest, and the write that follows needs room of its own.
 * @default 16 MiB
 */
export const REOPEN_MIN_FREE_BYTES = 16 * 1024 * 1024

/** The first failure since the index was last opened cleanly. */
export interface WriteFailure {
  kind: 'full' | 'io'
  /** What the failed write was doing. */
  doing: string
  /** The system or LevelDB error, in its words. */
  detail: string
  at: number
}

export interface GuardLogger {
  warn: (obj: object, msg?: string) => void
  info: (obj: object, msg?: string) => void
}

export class WriteGuard {
  private failure?: WriteFailure
  private readonly clearedListeners: Array<() => void> = []
  /** Errors this guard made, passed on unchanged when they come back through `fail`. */
  private readonly made = new WeakSet<object>()

  constructor (
    private readonly freeBytes: () => Promise<number>,
    private readonly log: GuardLogger,
    readonly minFreeBytes = REOPEN_MIN_FREE_BYTES
  ) {}

  /** Free bytes of the file system at `dir` (for the constructor). */
  static freeBytesAt (dir: string): () => Promise<number> {
    return async () => {
      const s = await statfs(dir)
      return s.bavail * s.bsize
    }
  }

  get tripped (): WriteFailure | undefined {
    return this.failure
  }

  /**
   * Maps the error of a store write that failed: a disk failure trips the guard (the first one is
   * remembered) and becomes `DiskFullError` / `StorageIoError` with `what`; anything else is
   * returned unchanged and leaves the guard as it was.
   */
  fail (err: unknown, what: WriteContext): unknown {
    const kind = diskFailure(err)
    if (kind === undefined) return err
    if (this.failure === undefined) {
      this.failure = { kind, doing: what.doing, detail: failureDetail(err), at: Date.now() }
      this.log.warn({ doing: what.doing, err: this.failure.detail }, 'a store write failed: taking no more writes until the index is reopened with room to spare')
    }
    if (typeof err === 'object' && err !== null && this.made.has(err)) return err
    return this.mark(diskError(kind, what, err))
  }

  /** Calls `listener` each time the guard is cleared (the index was reopened cleanly). */
  onCleared (listener: () => void): void {
    this.clearedListeners.push(listener)
  }

  /**
   * Free bytes now when the guard is tripped and there is room to reopen; throws the refusal when
   * there is not. Undefined when not tripped.
   */
  async roomToReopen (what: WriteContext): Promise<number | undefined> {
    const failure = this.failure
    if (failure === undefined) return undefined
    const free = await this.freeBytes().catch(() => 0)
    if (free < this.minFreeBytes) throw this.refusal(failure, what, free)
    return free
  }

  /** Called by the index once it has been reopened cleanly. */
  cleared (free: number): void {
    const failure = this.failure
    if (failure === undefined) return
    this.failure = undefined
    this.log.info({ failedAt: new Date(failure.at).toISOString(), doing: failure.doing, free }, 'index reopened cleanly: the store takes writes again')
    for (const listener of this.clearedListeners) listener()
  }

  /** The error a write gets while the guard is tripped and there is no room yet. */
  refusal (failure: WriteFailure, what: WriteContext, free: number): ShoalError {
    const since = `the store has taken no writes since ${failure.doing} failed at ${new Date(failure.at).toISOString()} (${failure.detail})`
    const advice = failure.kind === 'full'
      ? `${since}, and takes them again once ${mib(this.minFreeBytes)} are free on its disk (${mib(free)} now): remove files to make room and retry`
      : `${since}; check the disk (dmesg), and once ${mib(this.minFreeBytes)} are free on it the store reopens its index and takes writes again`
    return this.mark(diskError(failure.kind, what, new Error('not attempted'), advice))
  }

  private mark (err: ShoalError): ShoalError {
    this.made.add(err)
    return err
  }
}

function mib (bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`
}
