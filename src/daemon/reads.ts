/**
 * File reads for serving processes: `GET /v1/versions/{id}/files/{path}`, with HTTP `Range`.
 *
 * Where the bytes come from:
 * - a complete version: its snapshot file (a compressed one is re-materialized first);
 * - a version being pulled: the pull's verified chunks and blocks as they arrive
 *   (`store/verified-read.ts`); a range not here yet waits for it, and the pull fetches what
 *   readers wait for first, then the file in load order (`fetcher/priority.ts`);
 * - a version neither here nor being pulled: a pull is started, as `docker run` and `ollama run`
 *   pull what they lack (a label: its local target when complete here, else the version of the
 *   head this node holds); a ref this node cannot place (no such model or label, no head) is
 *   refused with NOT_FOUND.
 *
 * MUST hold:
 * - only verified bytes are served; a range that never arrives ends in an error naming it, never
 *   in other or zero bytes;
 * - the client's path is looked up among the version's manifest paths, exactly; it never reaches
 *   the file system (the snapshot path is built from the manifest's entry, already validated);
 * - the snapshot (`resolve`) still only ever points at a complete, verified version: a read is a
 *   second way in, never a weaker guarantee.
 */
import { createReadStream } from 'node:fs'
import { join } from 'node:path'
import type { VersionId } from '../core/digest.js'
import { isCid } from '../core/digest.js'
import { AbortedError, InvalidInputError, NotFoundError, StorageIoError } from '../core/errors.js'
import { loadOrder } from '../core/load-order.js'
import type { Manifest } from '../core/manifest.js'
import { MAX_PATH_BYTES, parseRef, printable } from '../core/names.js'
import type { HeadBook } from '../heads/book.js'
import { parseRange, contentRange } from '../rpc/range.js'
import type { ByteAnswer } from '../rpc/server.js'
import type { Store } from '../store/store.js'
import { readVerified, READ_PIECE_BYTES } from '../store/verified-read.js'
import type { PullManager, ReadablePull } from './pulls.js'

/** @default 20 — file paths named in the refusal of a path that is not in the version */
export const MAX_PATHS_NAMED = 20

export interface ReadRequest {
  /** A version id, or a ref (`name`, `name@label`, `name@<version id>`). */
  id: string
  /** The file's path in the version, as its manifest lists it. */
  path: string
  /** The `Range` header, if any. */
  range?: string | string[]
  signal?: AbortSignal
}

export class ReadService {
  constructor (private readonly deps: { store: Store, pulls: PullManager, book: HeadBook }) {}

  async open (req: ReadRequest): Promise<ByteAnswer> {
    if (Buffer.byteLength(req.path) > MAX_PATH_BYTES) throw new InvalidInputError(`the file path is longer than ${MAX_PATH_BYTES} bytes`)
    const found = await this.locate(req.id, req.signal)
    const { name, version, manifest } = found
    const fileIndex = manifest.files.findIndex(f => f.path === req.path)
    const file = manifest.files[fileIndex]
    if (file === undefined) {
      const paths = manifest.files.map(f => f.path)
      const listed = paths.slice(0, MAX_PATHS_NAMED).join(', ') + (paths.length > MAX_PATHS_NAMED ? `, … (${paths.length} in all)` : '')
      throw new NotFoundError(`"${printable(req.path)}" is not a file of ${name}@${version}; its files are ${listed}`)
    }
    const span = parseRange(req.range, file.size)
    const length = span.end - span.start
    const headers: Record<string, string | number> = {
      'content-type': 'application/octet-stream',
      'accept-ranges': 'bytes',
      etag: `"${file.digest}"`,
      'x-shoal-model': name,
      'x-shoal-version': version,
      'x-shoal-source': found.pull === undefined ? 'snapshot' : 'pull',
      ...(span.partial ? { 'content-range': contentRange(span, file.size) } : {})
    }
    const what = `bytes ${span.start}-${span.end - 1} of ${file.path} in ${name}@${version}`
    const body = found.pull === undefined
      ? snapshotBytes(join(found.path, file.path), span.start, span.end, what, req.signal)
      : pulledBytes(this.deps.store, found.pull, manifest, fileIndex, span.start, span.end, req.signal)
    return { status: span.partial ? 206 : 200, headers, length, body }
  }

  /** The version `id` names, and where its bytes are: its snapshot, or a pull (started if need be). */
  private async locate (id: string, signal?: AbortSignal): Promise<{ name: string, version: VersionId, manifest: Manifest, path: string, pull?: ReadablePull }> {
    const { store, pulls, book } = this.deps
    let name: string
    let version: VersionId | undefined
    if (isCid(id)) {
      version = id as VersionId
      const known = (await store.versionRecord(version))?.name ?? pulls.reading(version)?.target.manifest.name
      if (known === undefined) throw new NotFoundError(`version ${id} is neither here nor being pulled; give name@${id} to pull it`)
      name = known
    } else {
      const ref = parseRef(id)
      name = ref.name
      const here = await store.resolve(id).catch(() => undefined)
      if (here !== undefined && here.missing.length === 0) {
        if (here.cold) await store.rematerialize(here.version, signal !== undefined ? { signal } : {})
        return { name, version: here.version, manifest: here.manifest, path: here.path }
      }
      if (ref.selector !== undefined && isCid(ref.selector)) version = ref.selector as VersionId
      else if (ref.selector !== undefined) version = book.get(name, ref.selector)?.head.version ?? here?.version
      else version = here?.version
      if (version === undefined) throw new NotFoundError(`${id} is neither here nor named by any head this node holds; check the name and label (shoal ls, shoal heads), or give name@<version id>`)
    }
    const here = await store.resolve(`${name}@${version}`).catch(() => undefined)
    if (here !== undefined && here.missing.length === 0) {
      if (here.cold) await store.rematerialize(version, signal !== undefined ? { signal } : {})
      return { name, version, manifest: here.manifest, path: here.path }
    }
    const pull = pulls.reading(version) ?? await pulls.startReading(name, version, signal)
    if (pull === undefined) return await this.locate(`${name}@${version}`, signal)
    return { name, version, manifest: pull.target.manifest, path: store.snapshotPath(name, version), pull }
  }
}

/** A range of a complete version's snapshot file; a file shorter than its manifest says is an I/O error, never a short answer. */
async function * snapshotBytes (path: string, start: number, end: number, what: string, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  if (end <= start) return
  let given = 0
  const stream = createReadStream(path, { start, end: end - 1, highWaterMark: READ_PIECE_BYTES, ...(signal !== undefined ? { signal } : {}) })
  try {
    for await (const part of stream) {
      given += (part as Buffer).byteLength
      yield part as Buffer
    }
  } catch (err) {
    if (signal?.aborted === true) throw new AbortedError('the reader went away', { cause: err })
    throw new StorageIoError(`reading ${what} from its snapshot failed: ${(err as Error).message}; run shoal verify`, { cause: err })
  } finally {
    stream.destroy()
  }
  if (given !== end - start) throw new StorageIoError(`${what}: the snapshot file ended after ${given} of ${end - start} bytes; run shoal verify`)
}

/** A range of a version being pulled, as it is verified; the file's chunks go first in load order while it is read. */
async function * pulledBytes (store: Store, pull: ReadablePull, manifest: Manifest, fileIndex: number, start: number, end: number, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  const release = pull.priority.read(loadOrder(manifest, fileIndex))
  try {
    yield * readVerified(store, manifest, fileIndex, start, end, { pull, ...(signal !== undefined ? { signal } : {}) })
  } finally {
    release()
  }
}
