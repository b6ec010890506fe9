/**
 * Lists the files of a model folder (or a single file) safely: every name valid UTF-8 and a valid
 * relative path, no special files, no symlink that leaves the folder. A symlink to a file inside
 * the folder is stored as a regular file with the link's path; a symlink to a folder is refused
 * (it could form cycles). Anything refused is an `InvalidInputError` naming the entry.
 */
import { lstat, readdir, realpath, stat } from 'node:fs/promises'
import { basename, join, relative, sep } from 'node:path'
import { InvalidInputError } from '../core/errors.js'
import { MAX_FILES } from '../core/manifest.js'
import { checkRelativePath } from '../core/names.js'

export interface SourceFile {
  /** Path inside the version, `/`-separated. */
  path: string
  /** Absolute path on disk (the link target's real path for symlinks). */
  absolute: string
  size: number
}

export async function listSourceFiles (input: string): Promise<{ root: string, files: SourceFile[], single: boolean }> {
  let info
  try {
    info = await stat(input)
  } catch {
    throw new InvalidInputError(`cannot read ${input}: no such file or folder, or no permission`)
  }
  if (info.isFile()) {
    const path = checkRelativePath(basename(input))
    return { root: input, single: true, files: [{ path, absolute: await realpath(input), size: info.size }] }
  }
  if (!info.isDirectory()) throw new InvalidInputError(`${input} is neither a file nor a folder`)
  const root = await realpath(input)
  const files: SourceFile[] = []
  await walk(root, root, files)
  if (files.length === 0) throw new InvalidInputError(`${input} has no files to add`)
  files.sort((a, b) => a.path < b.path ? -1 : a.path > b.path ? 1 : 0)
  return { root, files, single: false }
}

async function walk (root: string, dir: string, out: SourceFile[]): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true, encoding: 'buffer' })
  for (const entry of entries) {
    const raw = entry.name as unknown as Buffer
    const name = raw.toString('utf8')
    const shown = JSON.stringify(name)
    if (!Buffer.from(name, 'utf8').equals(raw)) {
      throw new InvalidInputError(`the name ${shown} in ${dir} is not valid UTF-8: rename it before adding`)
    }
    const absolute = join(dir, name)
    const path = checkRelativePath(relative(root, absolute).split(sep).join('/'))
    if (entry.isDirectory()) {
      await walk(root, absolute, out)
      continue
    }
    if (entry.isSymbolicLink()) {
      let target: string
      try {
        target = await realpath(absolute)
      } catch {
        throw new InvalidInputError(`${path} is a broken symlink: fix or remove it before adding`)
      }
      if (!target.startsWith(root + sep)) {
        throw new InvalidInputError(`${path} is a symlink to ${target}, outside ${root}: copy the file in instead`)
      }
      const targetInfo = await stat(target)
      if (!targetInfo.isFile()) throw new InvalidInputError(`${path} is a symlink to a folder or special file; only links to files are followed`)
      out.push({ path, absolute: target, size: targetInfo.size })
    } else if (entry.isFile()) {
      out.push({ path, absolute, size: (await lstat(absolute)).size })
    } else {
      throw new InvalidInputError(`${path} is a special file (socket, FIFO or device); only regular files can be added`)
    }
    if (out.length > MAX_FILES) throw new InvalidInputError(`more than ${MAX_FILES} files under ${root}`)
  }
}
