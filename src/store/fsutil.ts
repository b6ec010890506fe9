/** Small file-system helpers for durable writes: fsync of folders, atomic replace, error mapping. */
import { lstat, open, readdir, rename, rm, mkdir, writeFile, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import { randomBytes } from 'node:crypto'
import { DiskFullError } from '../core/errors.js'

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
 */
export async function writeAt (fh: FileHandle, bytes: Uint8Array | readonly Uint8Array[], offset: number): Promise<void> {
  const whole = bytes instanceof Uint8Array ? bytes : bytes.length === 1 ? bytes[0] : undefined
  if (whole !== undefined) await fh.write(whole, 0, whole.byteLength, offset)
  else if (bytes.length > 1) await fh.writev(bytes as Uint8Array[], offset)
}

export function tmpName (prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`
}

export function isErrno (err: unknown, ...codes: string[]): boolean {
  return typeof err === 'object' && err !== null && codes.includes((err as { code?: string }).code ?? '')
}

/** Maps ENOSPC/EDQUOT to `DiskFullError`; other errors pass through. */
export function mapFsError (err: unknown, doing: string): unknown {
  if (isErrno(err, 'ENOSPC', 'EDQUOT')) {
    return new DiskFullError(`disk full while ${doing}: free some space (shoal gc, or remove files) and retry; nothing partial was kept`, { cause: err })
  }
  return err
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
