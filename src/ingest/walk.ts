/**
 * Lists the files of a model folder (or a single file) safely, and opens them again later only
 * as the files the listing saw.
 *
 * `listSourceFiles`: every name valid UTF-8 and a valid relative path (`core/names.ts`: no `..`,
 * no control, bidirectional or invisible character), no special files, no symlink that leaves the
 * folder — or, for a cache snapshot (Hugging Face hub or shoal's own), its cache's blob folder
 * (`cacheBlobFolders`). A symlink to a file inside is stored as a regular file with the link's path;
 * a symlink to a folder is refused (it could form cycles). At most `MAX_WALK_ENTRIES` entries are
 * looked at. Anything refused is an `InvalidInputError` naming the entry.
 *
 * `openListed`: a file is opened by its path again after the walk (to read its header, then to
 * copy it), and that path may have been changed meanwhile by whoever controls the folder — a file
 * replaced by a symlink to a secret, a folder on its path replaced by a symlink. So the open MUST
 * find the very file the walk saw, or refuse with a message naming the path:
 * - `O_NOFOLLOW`: a symlink in the last component is not followed (`ELOOP`);
 * - `O_NONBLOCK`: a FIFO swapped in cannot hold the open forever;
 * - the opened descriptor is `fstat`ed: a regular file, with the device and inode the walk
 *   recorded (and the same size);
 * - on Linux, the descriptor's path (`/proc/self/fd/<n>`) is the path the walk resolved, so a
 *   folder on the way that was swapped for a symlink is caught even when it leads to a hard link
 *   of the same file.
 */
import { constants } from 'node:fs'
import { lstat, open, opendir, readlink, realpath, stat, type FileHandle } from 'node:fs/promises'
import { basename, dirname, join, relative, sep } from 'node:path'
import { InvalidInputError } from '../core/errors.js'
import { MAX_FILES } from '../core/manifest.js'
import { checkRelativePath, escapeUnsafe, printable } from '../core/names.js'
import { handleSource, type FileSource } from '../model/source.js'

/**
 * Most entries (files, folders, links) the walk looks at under one folder, so a folder of
 * millions of empty subfolders is refused instead of walked.
 * @default 200_000 (twice `MAX_FILES`)
 */
export const MAX_WALK_ENTRIES = 2 * MAX_FILES

export interface SourceFile {
  /** Path inside the version, `/`-separated. */
  path: string
  /** Absolute path on disk, with no symlink in it (the link target's real path for symlinks). */
  absolute: string
  size: number
  /** Device and inode of the file the walk saw; `openListed` opens only this file. */
  dev: bigint
  ino: bigint
}

const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK

export async function listSourceFiles (input: string): Promise<{ root: string, files: SourceFile[], single: boolean }> {
  let info
  try {
    info = await stat(input)
  } catch {
    throw new InvalidInputError(`cannot read ${escapeUnsafe(input)}: no such file or folder, or no permission`)
  }
  if (info.isFile()) {
    const path = checkRelativePath(basename(input))
    const absolute = await realpath(input)
    const seen = await lstat(absolute, { bigint: true })
    if (!seen.isFile()) throw changedWhileListing(path)
    return { root: input, single: true, files: [{ path, absolute, size: Number(seen.size), dev: seen.dev, ino: seen.ino }] }
  }
  if (!info.isDirectory()) throw new InvalidInputError(`${escapeUnsafe(input)} is neither a file nor a folder`)
  const root = await realpath(input)
  const files: SourceFile[] = []
  await walk(root, root, files, { entries: 0, linkRoots: [root, ...cacheBlobFolders(root)] })
  if (files.length === 0) throw new InvalidInputError(`${escapeUnsafe(input)} has no files to add`)
  files.sort((a, b) => a.path < b.path ? -1 : a.path > b.path ? 1 : 0)
  return { root, files, single: false }
}

/**
 * Where the links of a cache snapshot point, besides the snapshot itself: a folder
 * `…/models--<org>--<name>/snapshots/<rev>` (the Hugging Face hub cache, and shoal's own
 * `$SHOAL_HOME/models/…`) holds symlinks into its cache's blob folder, `<repo>/blobs` for the hub
 * and `$SHOAL_HOME/blobs` for shoal. Only those folders are added to what links may reach; a link
 * anywhere else is still refused.
 */
export function cacheBlobFolders (root: string): string[] {
  const snapshots = dirname(root)
  const repo = dirname(snapshots)
  if (basename(snapshots) !== 'snapshots' || !/^(models|datasets|spaces)--./.test(basename(repo))) return []
  const folders = [join(repo, 'blobs')]
  if (basename(dirname(repo)) === 'models') folders.push(join(dirname(dirname(repo)), 'blobs'))
  return folders
}

function changedWhileListing (path: string): InvalidInputError {
  return new InvalidInputError(`${path} changed while the folder was being listed; add it again once nothing is changing the folder`)
}

async function walk (root: string, dir: string, out: SourceFile[], seen: { entries: number, linkRoots: string[] }): Promise<void> {
  const shownDir = escapeUnsafe(relative(root, dir) === '' ? root : relative(root, dir))
  let entries
  try {
    entries = await opendir(dir, { encoding: 'buffer' as BufferEncoding })
  } catch (err) {
    throw new InvalidInputError(`cannot list ${shownDir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  for await (const entry of entries) {
    if (++seen.entries > MAX_WALK_ENTRIES) {
      throw new InvalidInputError(`more than ${MAX_WALK_ENTRIES} files and folders under ${escapeUnsafe(root)}, over the limit of ${MAX_WALK_ENTRIES}`)
    }
    const raw = entry.name as unknown as Buffer
    const name = raw.toString('utf8')
    if (!Buffer.from(name, 'utf8').equals(raw)) {
      throw new InvalidInputError(`the name "${printable(name)}" in ${shownDir} is not valid UTF-8: rename it before adding`)
    }
    const absolute = join(dir, name)
    const path = checkRelativePath(relative(root, absolute).split(sep).join('/'))
    if (entry.isDirectory()) {
      await walk(root, absolute, out, seen)
      continue
    }
    if (entry.isSymbolicLink()) {
      let target: string
      try {
        target = await realpath(absolute)
      } catch {
        throw new InvalidInputError(`${path} is a broken symlink: fix or remove it before adding`)
      }
      if (!seen.linkRoots.some(r => target.startsWith(r + sep))) {
        const also = seen.linkRoots.length > 1 ? ` and its cache's ${seen.linkRoots.slice(1).map(escapeUnsafe).join(', ')}` : ''
        throw new InvalidInputError(`${path} is a symlink to ${escapeUnsafe(target)}, outside ${escapeUnsafe(root)}${also}: copy the file in instead`)
      }
      // The target's real path has no symlink in it; lstat does not follow one swapped in since.
      const info = await lstat(target, { bigint: true }).catch(() => { throw changedWhileListing(path) })
      if (!info.isFile()) throw new InvalidInputError(`${path} is a symlink to a folder or special file; only links to files are followed`)
      out.push({ path, absolute: target, size: Number(info.size), dev: info.dev, ino: info.ino })
    } else if (entry.isFile()) {
      const info = await lstat(absolute, { bigint: true }).catch(() => { throw changedWhileListing(path) })
      if (!info.isFile()) throw changedWhileListing(path)
      out.push({ path, absolute, size: Number(info.size), dev: info.dev, ino: info.ino })
    } else {
      throw new InvalidInputError(`${path} is a special file (socket, FIFO or device); only regular files can be added`)
    }
    if (out.length > MAX_FILES) throw new InvalidInputError(`more than ${MAX_FILES} files under ${escapeUnsafe(root)}, over the limit of ${MAX_FILES} per version`)
  }
}

/**
 * Opens a file of the listing for reading, refusing anything but the file the walk saw (see the
 * module contract). The caller MUST `close()` the source.
 */
export async function openListed (file: SourceFile): Promise<FileSource> {
  const changed = (how: string): InvalidInputError => new InvalidInputError(
    `${file.path} ${how} after the folder was listed, so it is not what was checked: nothing was added; add it again once nothing is changing the folder`)
  let handle: FileHandle
  try {
    handle = await open(file.absolute, OPEN_FLAGS)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ELOOP') throw changed('was replaced by a symlink')
    if (code === 'ENOENT' || code === 'ENOTDIR') throw changed('was removed or moved')
    throw new InvalidInputError(`cannot open ${file.path}: ${code ?? (err as Error).message}`)
  }
  try {
    const info = await handle.stat({ bigint: true })
    if (!info.isFile()) throw changed('was replaced by something that is not a regular file')
    if (info.dev !== file.dev || info.ino !== file.ino) throw changed('was replaced by another file')
    const where = await descriptorPath(handle)
    if (where !== undefined && where !== file.absolute) throw changed('is now reached through a different folder (a folder on its path was replaced)')
    if (Number(info.size) !== file.size) throw new InvalidInputError(`${file.path} changed size while being added; retry when it is complete`)
    return handleSource(handle, file.size, file.path)
  } catch (err) {
    await handle.close()
    throw err
  }
}

/** The path the kernel holds for an open descriptor (Linux), or undefined where there is no `/proc`. */
async function descriptorPath (handle: FileHandle): Promise<string | undefined> {
  try {
    return await readlink(`/proc/self/fd/${handle.fd}`)
  } catch {
    return undefined
  }
}
