/**
 * Small tmpfs mounts for disk-full tests (Linux, root or CAP_SYS_ADMIN): mount one, fill it to an
 * exact number of free bytes with a filler file, and give the room back.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { open, rm, statfs, truncate } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** Why a tmpfs cannot be mounted here, or undefined when it can. */
export function tmpfsUnavailable (): string | undefined {
  if (process.platform !== 'linux') return 'tmpfs mounts need Linux'
  const dir = mkdtempSync(join(tmpdir(), 'shoal-faults-tmpfs-probe-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { stdio: 'pipe' })
    execFileSync('umount', [dir], { stdio: 'pipe' })
    return undefined
  } catch (err) {
    const text = (err as { stderr?: Buffer }).stderr?.toString().trim() ?? (err as Error).message
    return `mounting a tmpfs is not permitted here (${text}); run as root or with CAP_SYS_ADMIN`
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

export function mountTmpfs (dir: string, bytes: number): void {
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir], { stdio: 'pipe' })
}

/** Gives a mounted tmpfs a new size. */
export function remount (dir: string, bytes: number): void {
  execFileSync('mount', ['-o', `remount,size=${bytes}`, dir], { stdio: 'pipe' })
}

export function unmount (dir: string): void {
  execFileSync('umount', [dir], { stdio: 'pipe' })
}

export async function freeBytes (dir: string): Promise<number> {
  const s = await statfs(dir)
  return s.bavail * s.bsize
}

/**
 * Fills the file system of `dir` with `<dir>/filler` until a write fails with ENOSPC, then gives
 * back `leave` bytes (whole pages: tmpfs frees by the page). Returns the bytes free after.
 */
export async function fill (dir: string, leave: number): Promise<number> {
  const path = join(dir, 'filler')
  await rm(path, { force: true })
  const fh = await open(path, 'w')
  let size = 0
  try {
    for (const step of [1 << 20, 4096, 1]) {
      const buf = Buffer.alloc(step, 0x5a)
      for (;;) {
        try {
          size += (await fh.write(buf, 0, step, size)).bytesWritten
        } catch (err) {
          if ((err as { code?: string }).code !== 'ENOSPC') throw err
          break
        }
      }
    }
  } finally {
    await fh.close()
  }
  if (leave > 0) await truncate(path, Math.max(0, size - leave))
  return await freeBytes(dir)
}

/** Removes the filler: the room is back. */
export async function unfill (dir: string): Promise<void> {
  await rm(join(dir, 'filler'), { force: true })
}
