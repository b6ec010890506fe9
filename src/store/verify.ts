/**
 * `verify` (fsck): re-hashes every stored byte and checks every record against the files.
 *
 * Checks: each blob file exists, has its recorded size, and every chunk hashes to its id; each
 * manifest decodes, validates and hashes to its version id; each snapshot entry is the expected
 * link; each version's blobs are recorded. A blob that fails is moved to `quarantine/` and its
 * records removed, so nothing ever serves or exposes its bytes again; the versions that needed it
 * are reported as damaged (their snapshot links then dangle: a loader sees a missing file, never a
 * corrupt one). Re-adding the files, or pulling the version from a peer, repairs them.
 *
 * Leaf layers (`leaves`): when a chunk that has layers is re-hashed and matches its id, each of
 * its layers is computed from the same bytes and compared; a wrong one is rewritten (or deleted,
 * for a block size at which the chunk is one block) and reported. Layers of chunks the store no
 * longer holds (after a quarantine, or a cancelled pull) are dropped without a report: they are
 * unused, not wrong.
 *
 * Cold chunk files (`cold/`): each is decoded and re-hashed; one that fails is moved to
 * `quarantine/` and its record removed, and the cold versions that needed it are reported damaged.
 * A cold version has no snapshot and needs no blob of its own: its chunks must be held (a blob or a
 * cold file), not its files.
 *
 * Idempotent: a second run on a clean store reports nothing.
 */
import { open, rename, chmod, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { chunkMatches, type ChunkId, type FileDigest } from '../core/digest.js'
import { decodeManifest, isBlockSize } from '../core/manifest.js'
import { equalBytes } from '../core/tree.js'
import { isErrno, tmpName } from '../util/fsutil.js'
import { readColdChunk } from './cold-chunks.js'
import type { BlobRecord, IndexBatch } from './index-db.js'
import { partsOf } from './internal.js'
import { LeafHasher, leavesKey, splitLeavesKey } from './leaves.js'
import type { Store } from './store.js'

export interface VerifyProblem {
  kind: 'blob-missing' | 'blob-size' | 'chunk-mismatch' | 'manifest-invalid' | 'snapshot-link' | 'blob-unrecorded' | 'leaves-mismatch' | 'cold-chunk'
  /** The blob, version or path concerned. */
  subject: string
  detail: string
}

export interface VerifyReport {
  blobs: number
  chunks: number
  bytes: number
  versions: number
  problems: VerifyProblem[]
  quarantined: FileDigest[]
  /** Versions that lost a file to quarantine or a missing blob: `name@version`. */
  damaged: string[]
}

export interface VerifyProgress { bytes: number, totalBytes: number, blobs: number, totalBlobs: number }

export async function verifyStore (store: Store, options: { onProgress?: (p: VerifyProgress) => void, signal?: AbortSignal } = {}): Promise<VerifyReport> {
  const { index, layout } = partsOf(store)
  return await store.withExclusive(async () => {
    const report: VerifyReport = { blobs: 0, chunks: 0, bytes: 0, versions: 0, problems: [], quarantined: [], damaged: [] }
    const blobs: Array<[FileDigest, BlobRecord]> = []
    for await (const entry of index.blobEntries()) blobs.push(entry)
    const totalBytes = blobs.reduce((n, [, b]) => n + b.size, 0)
    const bad = new Set<FileDigest>()
    const buf = Buffer.allocUnsafe(4 * 1024 * 1024)
    const layers = await layerSizes(store)
    const layerFixes = index.batch()
    const checkLayers = async (id: ChunkId, bytes: Uint8Array): Promise<void> => {
      const sizes = layers.get(id)
      if (sizes === undefined) return
      layers.delete(id) // once per chunk, from its first good copy
      if (await checkChunkLayers(store, layerFixes, id, bytes, sizes, report)) store.forgetLeaves(id)
    }
    for (const [digest, record] of blobs) {
      options.signal?.throwIfAborted()
      const problem = await checkBlob(layout.blob(digest), record.size, record.chunks, buf, report, checkLayers)
      report.blobs++
      options.onProgress?.({ bytes: report.bytes, totalBytes, blobs: report.blobs, totalBlobs: blobs.length })
      if (problem !== undefined) {
        report.problems.push({ ...problem, subject: digest })
        bad.add(digest)
      }
    }
    await layerFixes.commit({ doing: 'repairing leaf layers', kept: 'the wrong layers stay recorded; the next verify reports them again' })
    for (const digest of bad) {
      await quarantine(store, digest, blobs.find(([d]) => d === digest)?.[1].chunks ?? [])
      report.quarantined.push(digest)
    }
    for await (const id of index.coldChunkIds()) {
      options.signal?.throwIfAborted()
      try {
        const bytes = await readColdChunk(layout.coldChunk(id), id)
        report.chunks++
        report.bytes += bytes.length
        await checkLayers(id, bytes)
      } catch (err) {
        report.problems.push({ kind: 'cold-chunk', subject: id, detail: `${(err as Error).message}; moved to quarantine/` })
        await quarantineCold(store, id)
      }
    }
    await layerFixes.commit({ doing: 'repairing leaf layers', kept: 'the wrong layers stay recorded; the next verify reports them again' })
    await dropUnheldLayers(store)
    for await (const [version, record] of index.versionEntries()) {
      report.versions++
      const bytes = await index.manifestBytes(version)
      let manifest
      try {
        if (bytes === undefined) throw new Error('manifest missing from the index')
        manifest = decodeManifest(bytes, version)
      } catch (err) {
        report.problems.push({ kind: 'manifest-invalid', subject: `${record.name}@${version}`, detail: (err as Error).message })
        report.damaged.push(`${record.name}@${version}`)
        continue
      }
      let damaged = false
      if (await index.coldVersion(version) !== undefined) {
        const ids = [...new Set(manifest.files.flatMap(f => f.chunks.map(c => c.id)))]
        const held = await store.heldChunks(ids)
        const lost = ids.filter(id => !held.has(id))
        if (lost.length > 0) {
          report.problems.push({ kind: 'cold-chunk', subject: `${record.name}@${version}`, detail: `${lost.length} of its chunks are in no blob and no cold file (first: ${lost[0]})` })
          report.damaged.push(`${record.name}@${version}`)
        }
        continue
      }
      for (const file of manifest.files) {
        if (bad.has(file.digest) || await index.blob(file.digest) === undefined) {
          damaged = true
          if (!bad.has(file.digest)) report.problems.push({ kind: 'blob-unrecorded', subject: `${record.name}@${version}/${file.path}`, detail: `blob ${file.digest} is not in the store` })
        } else if (!await store.snapshotLinkOk(record.name, version, file.path, file.digest)) {
          report.problems.push({ kind: 'snapshot-link', subject: `${record.name}@${version}/${file.path}`, detail: 'snapshot entry is missing or points elsewhere; it was rebuilt' })
          await store.repairSnapshot(record.name, version, manifest)
        }
      }
      if (damaged) report.damaged.push(`${record.name}@${version}`)
    }
    return report
  })
}

async function checkBlob (path: string, size: number, chunks: Array<[ChunkId, number]>, buf: Buffer, report: VerifyReport, onGoodChunk: (id: ChunkId, bytes: Uint8Array) => Promise<void>): Promise<Omit<VerifyProblem, 'subject'> | undefined> {
  let fh
  try {
    fh = await open(path, 'r')
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return { kind: 'blob-missing', detail: `${path} is missing` }
    throw err
  }
  try {
    const actual = (await fh.stat()).size
    if (actual !== size) return { kind: 'blob-size', detail: `${path} is ${actual} bytes, expected ${size}` }
    let offset = 0
    for (const [id, length] of chunks) {
      const view = length <= buf.length ? buf.subarray(0, length) : Buffer.allocUnsafe(length)
      let done = 0
      while (done < length) {
        const { bytesRead } = await fh.read(view, done, length - done, offset + done)
        if (bytesRead === 0) break
        done += bytesRead
      }
      report.chunks++
      report.bytes += length
      if (done !== length || !chunkMatches(view, id)) {
        return { kind: 'chunk-mismatch', detail: `chunk ${id} at offset ${offset} of ${path} does not match its id` }
      }
      await onGoodChunk(id, view)
      offset += length
    }
    return undefined
  } finally {
    await fh.close()
  }
}

/** Block sizes of the recorded leaf layers, by chunk. */
async function layerSizes (store: Store): Promise<Map<ChunkId, number[]>> {
  const out = new Map<ChunkId, number[]>()
  for await (const key of partsOf(store).index.leafKeys()) {
    const split = splitLeavesKey(key)
    if (split === undefined) continue
    const [id, size] = split
    const sizes = out.get(id)
    if (sizes === undefined) out.set(id, [size])
    else sizes.push(size)
  }
  return out
}

/**
 * Compares chunk `id`'s recorded layers (at `sizes`) with the layers of `bytes` (which hash to
 * `id`); adds to `fixes` what repairs the wrong ones, reports each, and says whether there were any.
 */
async function checkChunkLayers (store: Store, fixes: IndexBatch, id: ChunkId, bytes: Uint8Array, sizes: number[], report: VerifyReport): Promise<boolean> {
  const before = fixes.size
  const stored = await partsOf(store).index.leafLayersMany(id, sizes)
  sizes.forEach((blockSize, i) => {
    const key = leavesKey(id, blockSize)
    if (!isBlockSize(blockSize)) {
      report.problems.push({ kind: 'leaves-mismatch', subject: id, detail: `a leaf layer is recorded at ${blockSize}-byte blocks, which no manifest may declare; it was removed` })
      fixes.dropLeaves(key)
      return
    }
    const hasher = new LeafHasher(blockSize)
    hasher.update(bytes)
    const expected = hasher.finish()
    const have = stored[i]
    if (have === undefined || (expected !== undefined && equalBytes(have, expected))) return
    if (expected === undefined) {
      report.problems.push({ kind: 'leaves-mismatch', subject: id, detail: `a leaf layer is recorded at ${blockSize}-byte blocks, but the chunk is one block at that size; it was removed` })
      fixes.dropLeaves(key)
    } else {
      report.problems.push({ kind: 'leaves-mismatch', subject: id, detail: `the leaf layer at ${blockSize}-byte blocks does not match the chunk's bytes; it was rewritten from them` })
      fixes.putLeaves(id, blockSize, expected, bytes.byteLength)
    }
  })
  return fixes.size > before
}

/** Drops the layers of chunks that no blob or partial file holds (not reported: unused, not wrong). */
async function dropUnheldLayers (store: Store): Promise<void> {
  const { index } = partsOf(store)
  const keys: string[] = []
  for await (const key of index.leafKeys()) keys.push(key)
  if (keys.length === 0) return
  const ids = keys.map(key => splitLeavesKey(key)?.[0] ?? key)
  const unique = [...new Set(ids)]
  const held = await index.locationsMany(unique)
  const cold = await index.coldChunkMany(unique)
  const heldIds = new Set(unique.filter((_, i) => held[i] !== undefined || cold[i] !== undefined))
  const batch = index.batch()
  keys.forEach((key, i) => { if (!heldIds.has(ids[i] as ChunkId)) batch.dropLeaves(key) })
  await batch.commit({ doing: 'dropping leaf layers of chunks no longer stored', kept: 'those layers stay recorded (unused)' })
}

/** Moves a bad cold chunk file aside and forgets its record. */
async function quarantineCold (store: Store, id: ChunkId): Promise<void> {
  const { index, layout } = partsOf(store)
  try {
    await rename(layout.coldChunk(id), join(layout.quarantine, tmpName(`cold-${id}`)))
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err
  }
  await index.batch().dropColdChunk(id).commit({ doing: `quarantining cold chunk ${id}`, kept: 'the file was moved to quarantine/ but its record remains, so the next verify reports it again' })
}

/** Moves a bad blob aside and forgets its records; chunk locations pointing at it are dropped. */
async function quarantine (store: Store, digest: FileDigest, chunks: Array<[ChunkId, number]>): Promise<void> {
  const { index, layout, reads } = partsOf(store)
  const from = layout.blob(digest)
  reads.forget(from)
  try {
    await stat(from)
    await chmod(from, 0o444).catch(() => {})
    await rename(from, join(layout.quarantine, tmpName(digest)))
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err
  }
  const batch = index.batch().dropBlob(digest)
  const ids = [...new Set(chunks.map(([id]) => id))]
  const locations = await index.locationsMany(ids)
  ids.forEach((id, i) => { batch.setLocations(id, (locations[i] ?? []).filter(([d]) => d !== digest)) })
  await batch.commit({ doing: `quarantining blob ${digest}`, kept: 'the blob was moved to quarantine/ but its records remain, so the next verify reports it missing' })
}
