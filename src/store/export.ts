/**
 * `export`: writes a version's files as ordinary files under a folder, byte-identical to what was
 * added. Every chunk is re-hashed on the way out, so damaged bytes are never exported. All or
 * nothing: every file is first written to a temporary name beside its destination and fsynced;
 * only when all are complete are they renamed into place. Existing files are not overwritten unless
 * `overwrite` is set. A version kept compressed is re-materialized first.
 */
import { mkdir, open, rename, rm } from 'node:fs/promises'
import { dirname, join, resolve as resolvePath } from 'node:path'
import { MAX_CHUNK_SIZE } from '../core/chunking.js'
import { chunkMatches } from '../core/digest.js'
import { ConflictError, DigestMismatchError, NotFoundError } from '../core/errors.js'
import { fsyncDir, mapFsError, pathExists, tmpName, writeFully } from './fsutil.js'
import type { ResolvedVersion, Store } from './store.js'

export interface ExportProgress { file: string, bytes: number, totalBytes: number }

export async function exportVersion (store: Store, ref: string, dest: string, options: { overwrite?: boolean, onProgress?: (p: ExportProgress) => void, signal?: AbortSignal } = {}): Promise<ResolvedVersion & { dest: string }> {
  let version = await store.resolve(ref)
  if (version.cold) {
    await store.rematerialize(version.version, options.signal !== undefined ? { signal: options.signal } : {})
    version = await store.resolve(`${version.name}@${version.version}`)
  }
  if (version.missing.length > 0) {
    throw new NotFoundError(`${version.name}@${version.version} is damaged (missing ${version.missing.join(', ')}); re-add or pull it first`)
  }
  const root = resolvePath(dest)
  await mkdir(root, { recursive: true })
  const totalBytes = version.manifest.files.reduce((n, f) => n + f.size, 0)
  let bytes = 0
  const staged: Array<{ tmp: string, target: string }> = []
  const buf = Buffer.allocUnsafe(MAX_CHUNK_SIZE)
  try {
    for (const file of version.manifest.files) {
      const target = join(root, file.path)
      if (options.overwrite !== true && await pathExists(target)) throw new ConflictError(`${target} already exists; remove it or pass --overwrite`)
    }
    for (const file of version.manifest.files) {
      const target = join(root, file.path)
      await mkdir(dirname(target), { recursive: true })
      const tmp = join(dirname(target), `.${tmpName('shoal-export')}`)
      staged.push({ tmp, target })
      const src = await open(store.layout.blob(file.digest), 'r')
      const out = await open(tmp, 'wx', 0o644)
      try {
        let offset = 0
        for (const chunk of file.chunks) {
          options.signal?.throwIfAborted()
          const view = buf.subarray(0, chunk.size)
          const { bytesRead } = await src.read(view, 0, chunk.size, offset)
          if (bytesRead !== chunk.size || !chunkMatches(view, chunk.id)) {
            throw new DigestMismatchError(`stored bytes of ${file.path} (chunk at offset ${offset}) are damaged; run shoal verify, then re-add or pull the version`)
          }
          await writeFully(out, view, 0, chunk.size, offset)
          offset += chunk.size
          bytes += chunk.size
          options.onProgress?.({ file: file.path, bytes, totalBytes })
        }
        await out.sync()
      } finally {
        await out.close().catch(() => {})
        await src.close()
      }
    }
    for (const { tmp, target } of staged) {
      await rename(tmp, target)
      await fsyncDir(dirname(target))
    }
  } catch (err) {
    for (const { tmp } of staged) await rm(tmp, { force: true })
    throw mapFsError(err, `exporting ${version.name}@${version.version}`)
  }
  return { ...version, dest: root }
}
