/**
 * Cold versions: versions nothing will load soon, kept compressed in chunk form
 * (`docs/ARCHITECTURE.md`, "Cold versions").
 *
 * `compressVersion` moves an eligible version to cold form: each of its chunks that no hot
 * (materialized) version's blob holds goes to `cold/<chunk id>` (`store/cold-chunks.ts`, one file
 * shared by every cold version that holds the chunk), then its snapshot and the blobs only it needed
 * go. `rematerializeVersion` brings it back: each missing blob assembled from its chunks (blobs or
 * cold files), every chunk re-hashed, temporary file, fsync, rename; then its snapshot.
 *
 * MUST hold:
 * - eligible means: no label points at the version, it is not among the last `keepLast` targets of
 *   any label (the rollback window), no lease holds it and no pull writes it; otherwise
 *   `ConflictError` saying which, and nothing changes;
 * - every chunk of a cold version stays held: in a hot blob, or in a cold file written (and
 *   re-hashed) before the batch that removes the blobs. GC keeps that true when it removes a hot
 *   blob (`coldChunksToKeep`);
 * - order: cold files durable → one synced batch (the `cold` record, `coldChunks` records, blob
 *   records and chunk locations removed, the index schema moved to `COLD_SCHEMA`) → snapshot folder
 *   removed → blob files removed. A crash before the batch leaves the version as it was (start-up
 *   removes cold files no record names); after it, start-up removes the orphan blobs and the cold
 *   version's snapshot;
 * - re-materializing never shows a partial file: blobs are renamed into `blobs/` whole and indexed,
 *   then the snapshot is built (temporary folder, rename), then the `cold` record goes.
 *
 * Runs under the store's exclusive lock (compressing removes blobs) or shared lock
 * (re-materializing adds them, registered with `hold` so GC leaves them alone).
 */
import { chmod, open, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { dtypesByChunk } from '../core/codec.js'
import { chunkMatches, type ChunkId, type FileDigest, type VersionId } from '../core/digest.js'
import { ConflictError, DigestMismatchError, MalformedDataError, NotFoundError, ShoalError } from '../core/errors.js'
import { blockSizeOf, decodeManifest, type Manifest } from '../core/manifest.js'
import { maxColdFileBytes, parseColdChunk, readColdFile, writeColdChunk } from './cold-chunks.js'
import { DirectWrites } from './direct-io.js'
import { BufferPool } from '../core/buffer-pool.js'
import { fsyncDir, tmpName, writeFully } from '../util/fsutil.js'
import { partsOf } from './internal.js'
import type { Store } from './store.js'

export interface ColdReport {
  name: string
  version: VersionId
  /** Bytes of the blobs removed. */
  rawBytes: number
  /** Bytes of the cold chunk files written. */
  storedBytes: number
  /** Chunks written to `cold/`. */
  chunks: number
  /** Blobs removed (their chunks are in `cold/`, or in blobs hot versions keep). */
  blobs: number
}

export interface CompressOptions {
  /** Versions kept ready per label: its target and the ones before it (`labels.keep`). */
  keepLast: number
  signal?: AbortSignal
}

/** Where each chunk of a manifest sits: its dtype (for the codec) and the version's block size. */
export function chunkPlacement (manifest: Manifest): Map<ChunkId, { dtype: string | undefined, blockSize: number }> {
  const blockSize = blockSizeOf(manifest)
  const out = new Map<ChunkId, { dtype: string | undefined, blockSize: number }>()
  for (const [id, dtype] of dtypesByChunk(manifest.files)) out.set(id, { dtype, blockSize })
  return out
}

/** Why `version` may not go cold, or undefined when it may. */
async function ineligible (store: Store, name: string, version: VersionId, keepLast: number): Promise<string | undefined> {
  const { index } = partsOf(store)
  for await (const { model, label, record } of index.labelEntries()) {
    if (record.version === version) return `${model}@${label} points at it; move the label first`
    if (record.history.slice(0, keepLast - 1).some(h => h.version === version)) {
      return `it is among the last ${keepLast} versions of ${model}@${label} (labels.keep), kept ready for a rollback`
    }
  }
  for await (const lease of index.leaseRecords()) {
    if (lease.version === version) return `a lease of ${lease.holder} holds it`
  }
  if (await index.pull(version) !== undefined) return `it is being pulled into ${name}`
  return undefined
}

/**
 * Moves `name@version` to cold form (see the module doc).
 * @throws NotFoundError when the store does not hold it
 * @throws ConflictError when it is not eligible (the message says why) or already cold
 */
export async function compressVersion (store: Store, version: VersionId, options: CompressOptions): Promise<ColdReport> {
  const { index, layout, reads } = partsOf(store)
  return await store.withExclusive(async () => {
    const record = await index.version(version)
    const manifest = await store.manifestOf(version)
    if (record === undefined || manifest === undefined) throw new NotFoundError(`version ${version} is not in this store`)
    const name = record.name
    if (await index.coldVersion(version) !== undefined) throw new ConflictError(`${name}@${version} is already compressed`)
    const why = await ineligible(store, name, version, Math.max(1, options.keepLast))
    if (why !== undefined) throw new ConflictError(`${name}@${version} cannot be compressed: ${why}`)
    const missing = await store.missingFiles(manifest, version)
    if (missing.length > 0) throw new ConflictError(`${name}@${version} is damaged (missing ${missing.join(', ')}); re-add or pull it before compressing it`)

    // Blobs hot versions (and pulls) still need stay.
    const hot = new Set<FileDigest>()
    for await (const other of index.versionIds()) {
      if (other === version || await index.coldVersion(other) !== undefined) continue
      for (const f of (await store.manifestOf(other))?.files ?? []) hot.add(f.digest)
    }
    for await (const pulled of index.pullVersions()) {
      const bytes = await index.manifestBytes(pulled)
      for (const f of bytes === undefined ? [] : decodeManifest(bytes).files) hot.add(f.digest)
    }
    const dropped = new Map<FileDigest, { size: number, chunks: Array<[ChunkId, number]> }>()
    for (const file of manifest.files) {
      if (hot.has(file.digest) || store.isHeld(file.digest) || dropped.has(file.digest)) continue
      const blob = await index.blob(file.digest)
      if (blob !== undefined) dropped.set(file.digest, blob)
    }

    const what = { doing: `compressing ${name}@${version}`, kept: `${name}@${version} was not compressed (cold files already written are removed at the next start)` }
    await store.writable(what)
    const placement = chunkPlacement(manifest)
    const batch = index.batch()
    const ids = [...new Set([...dropped.values()].flatMap(b => b.chunks.map(([id]) => id)))]
    const locations = await index.locationsMany(ids)
    const already = await index.coldChunkMany(ids)
    // Only a blob that stays counts as holding a chunk: a partial file can be dropped with its pull.
    const holders = [...new Set(locations.flatMap(l => (l ?? []).map(([d]) => d)))].filter(d => !dropped.has(d))
    const blobRecords = await index.blobMany(holders)
    const staying = new Set(holders.filter((_, i) => blobRecords[i] !== undefined))
    let storedBytes = 0
    let written = 0
    for (let i = 0; i < ids.length; i++) {
      options.signal?.throwIfAborted()
      const id = ids[i]!
      const rest = (locations[i] ?? []).filter(([d]) => !dropped.has(d))
      batch.setLocations(id, rest)
      if (rest.some(([d]) => staying.has(d)) || already[i] !== undefined) continue
      const bytes = await store.readChunk(id)
      if (bytes === undefined) throw new NotFoundError(`chunk ${id} of ${name}@${version} is not readable; run shoal verify`)
      const where = placement.get(id)
      let stored: number
      try {
        stored = await writeColdChunk(layout.cold, layout.tmp, id, bytes, { blockSize: where?.blockSize ?? blockSizeOf(manifest), ...(where?.dtype !== undefined ? { dtype: where.dtype } : {}), ...(options.signal !== undefined ? { signal: options.signal } : {}) })
      } catch (err) {
        throw err instanceof ShoalError ? err : store.failedWrite(err, what)
      }
      batch.putColdChunk(id, { size: bytes.length, stored })
      storedBytes += stored
      written++
    }
    const rawBytes = [...dropped.values()].reduce((n, b) => n + b.size, 0)
    for (const digest of dropped.keys()) batch.dropBlob(digest)
    batch.putColdVersion(version, { at: Date.now(), rawBytes, storedBytes })
    await batch.commit(what)
    await rm(layout.snapshot(name, version), { recursive: true, force: true })
    for (const digest of dropped.keys()) {
      reads.forget(layout.blob(digest))
      await chmod(layout.blob(digest), 0o644).catch(() => {})
      await rm(layout.blob(digest), { force: true })
    }
    return { name, version, rawBytes, storedBytes, chunks: written, blobs: dropped.size }
  })
}

/**
 * Brings a cold version back (see the module doc); a version that is not cold is left as it is.
 * @throws DigestMismatchError when a chunk's stored bytes are damaged (nothing is renamed into place)
 */
export async function rematerializeVersion (store: Store, version: VersionId, options: { signal?: AbortSignal } = {}): Promise<void> {
  const { index, layout } = partsOf(store)
  await store.withShared(async hold => {
    const cold = await index.coldVersion(version)
    const record = await index.version(version)
    const manifest = await store.manifestOf(version)
    if (cold === undefined) return
    if (record === undefined || manifest === undefined) throw new NotFoundError(`version ${version} is not in this store`)
    const what = { doing: `re-materializing ${record.name}@${version}`, kept: `${record.name}@${version} stays compressed; nothing partial is visible` }
    const done = new Set<FileDigest>()
    // Cold files and decoded chunks in reused shared buffers: fresh memory for every chunk cost as
    // much as the decoding here.
    const buffers = new BufferPool(maxColdFileBytes, { maxPooled: 2 * REMATERIALIZE_AHEAD + 2 })
    for (const file of manifest.files) {
      if (done.has(file.digest) || await index.blob(file.digest) !== undefined) continue
      done.add(file.digest)
      hold(file.digest)
      const tmp = join(layout.tmp, tmpName('blob'))
      try {
        const fh = await open(tmp, 'wx', 0o644)
        // Past the page cache where the file system allows it, as a pull writes (a fresh page per
        // 4 KiB is most of a buffered write's cost here); the head and tail of each chunk buffered.
        const opened = await DirectWrites.open(tmp).catch(async (err: unknown) => { await fh.close(); throw err })
        // Dropped (not closed: another write may be using it) when the file system refuses a
        // direct write; closed once every write is done.
        let direct = opened
        try {
          // Chunks are read, decoded and re-hashed (on the worker pool) up to REMATERIALIZE_AHEAD
          // ahead of the write, so decoding runs on every core while this thread reads and writes;
          // up to REMATERIALIZE_WRITES chunks are written at once, so the next chunk is awaited
          // while the last one goes to disk.
          let offset = 0
          const ahead: Array<Promise<Uint8Array | undefined>> = []
          const writing: Array<Promise<void>> = []
          let next = 0
          const fill = (): void => {
            while (ahead.length < REMATERIALIZE_AHEAD && next < file.chunks.length) {
              const reading = verifiedChunk(store, file.chunks[next++]!.id, buffers)
              reading.catch(() => {})
              ahead.push(reading)
            }
          }
          const write = async (bytes: Uint8Array, at: number): Promise<void> => {
            try {
              const how = direct === undefined ? 'short' : await direct.write(fh, bytes, bytes.length, at)
              if (how === 'refused') direct = undefined
              if (how !== 'written') await writeFully(fh, bytes, 0, bytes.length, at)
            } finally {
              buffers.give(bytes)
            }
          }
          try {
            for (const chunk of file.chunks) {
              options.signal?.throwIfAborted()
              fill()
              const bytes = await ahead.shift()!
              if (bytes === undefined) throw new NotFoundError(`chunk ${chunk.id} of ${file.path} is in no blob and no cold file; run shoal verify`)
              fill()
              const written = write(bytes, offset)
              written.catch(() => {})
              writing.push(written)
              offset += bytes.length
              if (writing.length >= REMATERIALIZE_WRITES) await writing.shift()
            }
            while (writing.length > 0) await writing.shift()
          } finally {
            await Promise.allSettled(writing)
            for (const settled of await Promise.allSettled(ahead)) if (settled.status === 'fulfilled' && settled.value !== undefined) buffers.give(settled.value)
          }
          await fh.sync()
        } finally {
          await opened?.close()
          await fh.close()
        }
        await chmod(tmp, 0o444)
        await rename(tmp, layout.blob(file.digest))
        await fsyncDir(layout.blobs)
      } catch (err) {
        await rm(tmp, { force: true })
        throw err instanceof DigestMismatchError || err instanceof NotFoundError ? err : store.failedWrite(err, what)
      }
      await store.indexBlob({ digest: file.digest, size: file.size, chunks: file.chunks.map(c => ({ id: c.id, size: c.size })), blockSize: 0, created: true })
    }
    try {
      await store.materialize(record.name, version, manifest)
    } catch (err) {
      throw store.failedWrite(err, what)
    }
    await index.batch().dropColdVersion(version).commit(what)
  })
}

/** @default 8 — chunks read, decoded and re-hashed ahead of the one being written when a version is re-materialized (at most 4 MiB each) */
export const REMATERIALIZE_AHEAD = 8
/** @default 2 — chunks being written at once when a version is re-materialized */
export const REMATERIALIZE_WRITES = 2

/**
 * A chunk's bytes from a blob or its cold file, re-hashed against its id (a cold chunk decoded and
 * re-hashed on the store's worker pool); undefined when neither holds it.
 * @throws DigestMismatchError when the stored bytes are damaged
 */
async function verifiedChunk (store: Store, id: ChunkId, buffers: BufferPool): Promise<Uint8Array | undefined> {
  const { index, layout } = partsOf(store)
  if (await index.locations(id) !== undefined) {
    const bytes = await store.readChunk(id)
    if (bytes !== undefined) {
      if (!chunkMatches(bytes, id)) throw new DigestMismatchError(`stored bytes of chunk ${id} are damaged; run shoal verify`)
      return bytes
    }
  }
  if (await index.coldChunk(id) === undefined) return undefined
  const file = await readColdFile(layout.coldChunk(id), id, { take: size => buffers.take(size) })
  try {
    const into = buffers.take(parseColdChunk(file, id).size)
    try {
      return await store.decodeCold(file, id, into)
    } catch (err) {
      buffers.give(into)
      throw err
    }
  } catch (err) {
    if (err instanceof MalformedDataError) throw new DigestMismatchError(`cold chunk ${id} does not decode (${err.message}): the file is damaged; run shoal verify`, { cause: err })
    if (err instanceof DigestMismatchError) throw new DigestMismatchError(`cold chunk ${id} decodes to bytes that do not hash to its id: the file is damaged; run shoal verify`, { cause: err })
    throw err
  } finally {
    buffers.give(file)
  }
}

/**
 * Versions nothing has needed for `idleMs` at `now`, least recently used first: no label points at
 * them, and the last time one did (else when they arrived) is that long ago; cold ones left out.
 * `compressVersion` still checks the rest (rollback window, leases, pulls).
 */
export async function coldCandidates (store: Store, options: { idleMs: number, now?: number }): Promise<VersionId[]> {
  const now = options.now ?? Date.now()
  const targets = new Set<string>()
  const lastUsed = new Map<string, number>()
  const { index } = partsOf(store)
  for await (const { record } of index.labelEntries()) {
    targets.add(record.version)
    for (const h of record.history) lastUsed.set(h.version, Math.max(lastUsed.get(h.version) ?? 0, h.until))
  }
  const out: Array<{ version: VersionId, used: number }> = []
  for await (const [version, record] of index.versionEntries()) {
    if (targets.has(version) || await index.coldVersion(version) !== undefined) continue
    const used = Math.max(record.addedAt, lastUsed.get(version) ?? 0)
    if (now - used >= options.idleMs) out.push({ version, used })
  }
  return out.sort((a, b) => a.used - b.used).map(c => c.version)
}

/**
 * For GC: of `losing` (chunks no blob that stays will hold), those kept cold versions need and no
 * cold file holds yet, with where each sits (they MUST be written to `cold/` before their blobs
 * go); and the cold chunk files no kept cold version needs (they go).
 */
export async function coldChunksToKeep (store: Store, keptCold: readonly VersionId[], losing: ReadonlySet<ChunkId>): Promise<{ write: Map<ChunkId, { dtype: string | undefined, blockSize: number }>, drop: ChunkId[] }> {
  const needed = new Map<ChunkId, { dtype: string | undefined, blockSize: number }>()
  for (const version of keptCold) {
    const manifest = await store.manifestOf(version)
    if (manifest === undefined) continue
    for (const [id, where] of chunkPlacement(manifest)) if (!needed.has(id)) needed.set(id, where)
  }
  const write = new Map<ChunkId, { dtype: string | undefined, blockSize: number }>()
  const candidates = [...losing].filter(id => needed.has(id))
  const { index } = partsOf(store)
  const have = await index.coldChunkMany(candidates)
  candidates.forEach((id, i) => { if (have[i] === undefined) write.set(id, needed.get(id)!) })
  const drop: ChunkId[] = []
  for await (const id of index.coldChunkIds()) if (!needed.has(id)) drop.push(id)
  return { write, drop }
}
