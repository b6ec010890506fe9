/**
 * Small file-system helpers for durable writes: fsync of folders, atomic replace, error mapping.
 * Neutral: any layer that does file I/O may use them (the store, identity and key files, the RPC
 * token); they import only `core/errors`.
 */
import { lstat, open, readdir, rename, rm, mkdir, writeFile, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import { randomBytes } from 'node:crypto'
import { DiskFullError, ShoalError, StorageIoError } from '../core/errors.js'

export async function fsyncDir (path: string): Promise<void> {
  const fh = await open(path, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

/** Writes `data` to `path` atomically: temporary file beside it, fsync, rename, fsync the folder. */
export async function writeFileAtomic (path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  await mkdir(dirname(path), { recursive: true })
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`
  try {
    await writeFile(tmp, data, { mode, flush: true })
    await rename(tmp, path)
    await fsyncDir(dirname(path))
  } catch (err) {
    await rm(tmp, { force: true })
    throw mapFsError(err, `writing ${path}`)
  }
}

/**
 * Writes `bytes` (one buffer, or parts in order) at `offset`. One contiguous write when they are in
 * one buffer: several times cheaper in the kernel than a vectored write of the same bytes in parts.
 * Every byte is written or the call throws (see `writeFully`).
 */
export async function writeAt (fh: Pick<FileHandle, 'write' | 'writev'>, bytes: Uint8Array | readonly Uint8Array[], offset: number): Promise<void> {
  const whole = bytes instanceof Uint8Array ? bytes : bytes.length === 1 ? bytes[0] : undefined
  if (whole !== undefined) {
    await writeFully(fh, whole, 0, whole.byteLength, offset)
    return
  }
  const parts = bytes as readonly Uint8Array[]
  if (parts.length <= 1) return
  const { bytesWritten } = await fh.writev(parts as Uint8Array[], offset)
  // A short vectored write: the rest goes part by part.
  let at = 0
  for (const part of parts) {
    const skip = Math.min(part.byteLength, Math.max(0, bytesWritten - at))
    if (skip < part.byteLength) await writeFully(fh, part, skip, part.byteLength - skip, offset + at + skip)
    at += part.byteLength
  }
}

/**
 * Writes `length` bytes of `buffer` from `from` at `position`, all of them. A write may write less
 * than asked — a file system about to be full often does, and the next write fails with ENOSPC —
 * and a short count ignored leaves a hole that reads back as zeros: so the rest is written again
 * until it is all written or a write throws.
 */
export async function writeFully (fh: Pick<FileHandle, 'write'>, buffer: Uint8Array, from: number, length: number, position: number): Promise<void> {
  let done = 0
  while (done < length) {
    const { bytesWritten } = await fh.write(buffer, from + done, length - done, position + done)
    if (bytesWritten <= 0) throw Object.assign(new Error(`a write at ${position + done} wrote nothing`), { code: 'EIO' })
    done += bytesWritten
  }
}

export function tmpName (prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`
}

export function isErrno (err: unknown, ...codes: string[]): boolean {
  return typeof err === 'object' && err !== null && codes.includes((err as { code?: string }).code ?? '')
}

/** What an add (or any write that cleans up after itself) keeps when it fails. */
export const NOTHING_KEPT = 'nothing partial was kept'

/** What a failed write was doing and what its operation kept: both go into the error's message. */
export interface WriteContext {
  /** e.g. `writing a blob`, `moving org/m@prod` */
  doing: string
  /** e.g. `nothing partial was kept`, `the label was not moved` */
  kept: string
}

/**
 * How a write failed, when it is the disk's fault: `full` (ENOSPC, EDQUOT, or LevelDB reporting
 * one of them), `io` (EIO, EROFS, another LevelDB I/O error, or LevelDB corruption), or undefined
 * for anything else (a bug, bad input).
 */
export function diskFailure (err: unknown): 'full' | 'io' | undefined {
  if (err instanceof DiskFullError) return 'full'
  if (err instanceof StorageIoError) return 'io'
  if (isErrno(err, 'ENOSPC', 'EDQUOT')) return 'full'
  if (isErrno(err, 'EIO', 'EROFS')) return 'io'
  const code = (err as { code?: unknown } | undefined)?.code
  if (code === 'LEVEL_IO_ERROR' || code === 'LEVEL_CORRUPTION') {
    return /No space left|Disk quota exceeded/i.test((err as Error).message) ? 'full' : 'io'
  }
  const cause = (err as { cause?: unknown } | undefined)?.cause
  return cause !== undefined && cause !== err && !(err instanceof ShoalError) ? diskFailure(cause) : undefined
}

/** The error a write failed with, in the words of the innermost system or LevelDB error. */
export function failureDetail (err: unknown): string {
  let at: unknown = err
  while (at instanceof Error && at.cause instanceof Error) at = at.cause
  return (at as Error | undefined)?.message ?? String(at)
}

/**
 * The typed error for a write that failed with `kind`, saying what was done and kept; `advice`
 * replaces the usual closing words (what to do).
 */
export function diskError (kind: 'full' | 'io', what: WriteContext, cause: unknown, advice?: string): ShoalError {
  return kind === 'full'
    ? new DiskFullError(`disk full while ${what.doing} (${failureDetail(cause)}): ${what.kept}; ${advice ?? 'free some space (shoal gc, or remove files) and retry'}`, { cause })
    : new StorageIoError(`I/O error while ${what.doing} (${failureDetail(cause)}): ${what.kept}; ${advice ?? 'check the disk (dmesg), run shoal verify, and retry'}`, { cause })
}

/**
 * Maps a disk failure (see `diskFailure`) to `DiskFullError` or `StorageIoError`; other errors pass
 * through. `kept` says what the operation kept.
 */
export function mapFsError (err: unknown, doing: string, kept = NOTHING_KEPT): unknown {
  const kind = diskFailure(err)
  if (kind === undefined || err instanceof ShoalError) return err
  return diskError(kind, { doing, kept }, err)
}

export async function pathExists (path: string): Promise<boolean> {
  try {
    await lstat(path)
    return true
  } catch (err) {
    if (isErrno(err, 'ENOENT', 'ENOTDIR')) return false
    throw err
  }
}

/** Entries of a folder, or none when it does not exist. */
export async function readdirSafe (path: string): Promise<string[]> {
  try {
    return await readdir(path)
  } catch (err) {
    if (isErrno(err, 'ENOENT', 'ENOTDIR')) return []
    throw err
  }
}
