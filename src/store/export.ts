/**
 * `export`: writes a version's files as ordinary files under a folder, byte-identical to what was
 * added. Every chunk is re-hashed on the way out, so damaged bytes are never exported. All or
 * nothing: every file is first written to a temporary name beside its destination and fsynced;
 * only when all are complete are they renamed into place. Existing files are not overwritten unless
 * `overwrite` is set. A version kept compressed is re-materialized first.
 */
import { createHash } from 'node:crypto'
import { mkdir, open, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises'
import { dirname, join, relative, resolve as resolvePath } from 'node:path'
import { pipe } from 'it-pipe'
import { MAX_CHUNK_SIZE } from '../core/chunking.js'
import { chunkMatches, type ChunkId } from '../core/digest.js'
import { ConflictError, DigestMismatchError, NotFoundError } from '../core/errors.js'
import { fsyncDir, mapFsError, pathExists, tmpName, writeFully } from '../util/fsutil.js'
import { readAhead, type ReadDone } from '../util/read-ahead.js'
import type { ManifestFile } from '../core/manifest.js'
import { partsOf } from './internal.js'
import type { ResolvedVersion, Store } from './store.js'

export interface ExportProgress { file: string, bytes: number, totalBytes: number }

export interface ExportOptions {
  overwrite?: boolean
  /**
   * `hf`: write a Hugging Face hub cache entry under `dest` (a hub folder), which `transformers` and
   * `huggingface_hub` load offline: `models--<org>--<name>/blobs/<file digest>` (each distinct file
   * once), `snapshots/<revision>/<path>` as relative symlinks to them, and `refs/main` and
   * `refs/<label>` for each local label of the version holding `<revision>`, 40 hex characters
   * derived from the version id (`hfRevision`). Blobs already there are kept (named by content);
   * a snapshot file that points elsewhere is a conflict unless `overwrite`. @default 'files'
   */
  layout?: 'files' | 'hf'
  onProgress?: (p: ExportProgress) => void
  signal?: AbortSignal
}

/** The hub-cache revision of a version: 40 hex characters (the form of a git commit id), from its id. */
export function hfRevision (version: string): string {
  return createHash('sha1').update(version).digest('hex')
}

export async function exportVersion (store: Store, ref: string, dest: string, options: ExportOptions = {}): Promise<ResolvedVersion & { dest: string }> {
  let version = await store.resolve(ref)
  if (version.cold) {
    await store.rematerialize(version.version, options.signal !== undefined ? { signal: options.signal } : {})
    version = await store.resolve(`${version.name}@${version.version}`)
  }
  if (version.missing.length > 0) {
    throw new NotFoundError(`${version.name}@${version.version} is damaged (missing ${version.missing.join(', ')}); re-add or pull it first`)
  }
  if (options.layout === 'hf') return await exportHf(store, version, resolvePath(dest), options)
  const root = resolvePath(dest)
  await writeFiles(store, version, root, options)
  return { ...version, dest: root }
}

/** Writes the version's files under `root` by their paths: all or nothing (see the module doc). */
async function writeFiles (store: Store, version: ResolvedVersion, root: string, options: ExportOptions): Promise<void> {
  await mkdir(root, { recursive: true })
  const totalBytes = version.manifest.files.reduce((n, f) => n + f.size, 0)
  let bytes = 0
  const staged: Array<{ tmp: string, target: string }> = []
  const buffers = [Buffer.allocUnsafe(MAX_CHUNK_SIZE), Buffer.allocUnsafe(MAX_CHUNK_SIZE)]
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
      const src = await open(partsOf(store).layout.blob(file.digest), 'r')
      const out = await open(tmp, 'wx', 0o644)
      try {
        // read → verify → write, the next chunk read while this one is verified and written.
        // Two buffers: the sink is done with a chunk's bytes when it asks for the next (`readAhead`).
        type Read = ReadDone<{ id: ChunkId, offset: number, size: number }, { bytesRead: number }>
        await pipe(
          readAhead(chunksAt(file), buffers, async (c, into) => await src.read(into, 0, c.size, c.offset), () => options.signal?.throwIfAborted()),
          async function * verify (source: AsyncIterable<Read>) {
            for await (const c of source) {
              if (c.result.bytesRead !== c.item.size || !chunkMatches(c.buf, c.item.id)) {
                throw new DigestMismatchError(`stored bytes of ${file.path} (chunk at offset ${c.item.offset}) are damaged; run shoal verify, then re-add or pull the version`)
              }
              yield c
            }
          },
          async (source: AsyncIterable<Read>) => {
            for await (const { item, buf } of source) {
              await writeFully(out, buf, 0, item.size, item.offset)
              bytes += item.size
              options.onProgress?.({ file: file.path, bytes, totalBytes })
            }
          }
        )
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
}

/** The chunks of `file` with their offsets in its blob, as `readAhead` reads them. */
function * chunksAt (file: ManifestFile): Generator<{ id: ChunkId, offset: number, size: number }> {
  let offset = 0
  for (const chunk of file.chunks) {
    yield { id: chunk.id, offset, size: chunk.size }
    offset += chunk.size
  }
}

async function exportHf (store: Store, version: ResolvedVersion, hub: string, options: ExportOptions): Promise<ResolvedVersion & { dest: string }> {
  const repo = join(hub, `models--${version.name.replace('/', '--')}`)
  const revision = hfRevision(version.version)
  const snapshot = join(repo, 'snapshots', revision)
  const blobs = join(repo, 'blobs')
  const links = version.manifest.files.map(f => ({ path: join(snapshot, f.path), target: relative(dirname(join(snapshot, f.path)), join(blobs, f.digest)) }))
  for (const link of links) {
    const existing = await readlink(link.path).catch(() => undefined)
    if (existing === undefined ? await pathExists(link.path) : existing !== link.target) {
      if (options.overwrite !== true) throw new ConflictError(`${link.path} already exists and is not this version's file; remove it or pass --overwrite`)
    }
  }
  // Each distinct file once, as blobs/<digest>, written and verified like any export.
  const missing = new Map<string, ManifestFile>()
  for (const f of version.manifest.files) if (!missing.has(f.digest) && !await pathExists(join(blobs, f.digest))) missing.set(f.digest, f)
  const asFiles: ResolvedVersion = { ...version, manifest: { ...version.manifest, files: [...missing.values()].map(f => ({ ...f, path: f.digest })) } }
  if (asFiles.manifest.files.length > 0) await writeFiles(store, asFiles, blobs, { overwrite: false, ...(options.onProgress !== undefined ? { onProgress: options.onProgress } : {}), ...(options.signal !== undefined ? { signal: options.signal } : {}) })
  try {
    for (const link of links) {
      await mkdir(dirname(link.path), { recursive: true })
      if (await readlink(link.path).catch(() => undefined) === link.target) continue
      await rm(link.path, { force: true })
      await symlink(link.target, link.path)
    }
    await fsyncDir(snapshot)
    await mkdir(join(repo, 'refs'), { recursive: true })
    for (const ref of new Set(['main', ...version.labels])) {
      const tmp = join(repo, 'refs', `.${tmpName('shoal-ref')}`)
      await writeFile(tmp, revision)
      await rename(tmp, join(repo, 'refs', ref))
    }
    await fsyncDir(join(repo, 'refs'))
  } catch (err) {
    throw mapFsError(err, `exporting ${version.name}@${version.version} as a Hugging Face cache entry`)
  }
  return { ...version, dest: snapshot }
}
