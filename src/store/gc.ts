/**
 * Garbage collection: removes what nothing keeps.
 *
 * A version is kept when it is pinned (`add` pins by default; a pinned label pins each version it
 * points at), a label points at it, it is one of the `keepLast - 1` versions a label pointed at
 * before (so a rollback is instant), it is being pulled, or it is in `keep` (the caller's extra
 * roots, e.g. versions leased by serving processes). Every other version is removed — manifest,
 * records, snapshot folder — or, with `quotaBytes`, only as many of them as it takes to bring the
 * blobs under the quota, least recently used first (last time a label pointed at it, else when it
 * arrived). Then every blob that no kept version references and no operation in progress holds is
 * removed, with its chunk locations. A chunk's leaf layers (`leaves`) go with its last location,
 * and so do layers of chunks no blob or partial file holds any more (a cancelled pull drops its
 * chunks' locations, not their layers). Leftover temporary files go too. `dryRun` reports the same
 * plan and changes nothing.
 *
 * Partial files (`partial/`) of pulls that will not resume go too: those no pull record names
 * (a cancelled or given-up pull whose removal was interrupted, a crash before the record), unless
 * a pull open in this process is writing them (`pullingFiles`). Partials of a recorded pull stay,
 * even while it is not running: it is resumed at the next start or retry.
 *
 * Runs under the store's exclusive lock, so it never races an add. Pulls do not take the lock:
 * the partials are listed before the pull records are read and `pullingFiles` is taken after, and
 * a pull registers its files before it writes its records, so a pull starting meanwhile is seen.
 * A layer a running pull records between gc's reads and its commit may be dropped with an older
 * copy: it is only a cache of the chunk's bytes and is computed again when next served.
 *
 * Cold versions (`store/cold.ts`) are kept or removed by the same rules. Their chunks stay held: a
 * chunk a kept cold version needs that only a blob going now holds is written to `cold/` first
 * (re-hashed), in the same collection; cold chunk files no kept cold version needs go (with their
 * records and leaf layers).
 */
import { rm, chmod, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { ChunkId, FileDigest, VersionId } from '../core/digest.js'
import { decodeManifest } from '../core/manifest.js'
import { DEFAULT_KEEP_LAST } from '../core/retention.js'
import type { IndexBatch } from './index-db.js'
import { partsOf } from './internal.js'
import { splitLeavesKey } from './leaves.js'
import { coldChunksToKeep } from './cold.js'
import { writeColdChunk } from './cold-chunks.js'
import { dropPartials, pullingFiles } from './pull-target.js'
import { readdirSafe, type Store } from './store.js'

export interface GcReport {
  dryRun: boolean
  versions: Array<{ name: string, version: VersionId, size: number }>
  blobs: Array<{ digest: FileDigest, size: number }>
  /** Partial files of pulls that will not resume (`size`: bytes they take on disk). */
  partials: Array<{ digest: FileDigest, size: number }>
  /** Bytes freed: blobs and partial files. */
  bytes: number
  /** With a quota: bytes held by blobs before and after. */
  quota?: { limit: number, before: number, after: number }
  /** Cold chunk files written (chunks kept cold versions need, from blobs going now) and removed. */
  cold?: { written: number, removed: number, removedBytes: number }
}

export interface GcOptions {
  dryRun?: boolean
  keep?: Iterable<VersionId>
  /** Versions kept per label: its target and the ones before it. @default DEFAULT_KEEP_LAST */
  keepLast?: number
  /** Remove only least-recently-used versions, until blobs take at most this many bytes. */
  quotaBytes?: number
  /**
   * Remove exactly these versions (`shoal rm`), whatever pins, labels or rollback history keep;
   * every other version is kept, and a version being pulled is never removed. The caller decides
   * what may go. Blobs go only when no kept version uses them.
   */
  only?: Iterable<VersionId>
}

export async function collectGarbage (store: Store, options: GcOptions = {}): Promise<GcReport> {
  const dryRun = options.dryRun === true
  const keepLast = Math.max(1, options.keepLast ?? DEFAULT_KEEP_LAST)
  const only = options.only === undefined ? undefined : new Set<string>(options.only)
  const { index, layout, reads } = partsOf(store)
  return await store.withExclusive(async () => {
    const keep = new Set<string>(options.keep ?? [])
    const lastUsed = new Map<string, number>()
    for await (const { version } of index.pinEntries()) keep.add(version)
    for await (const { record } of index.labelEntries()) {
      keep.add(record.version)
      for (const h of record.history.slice(0, keepLast - 1)) keep.add(h.version)
      for (const h of record.history) lastUsed.set(h.version, Math.max(lastUsed.get(h.version) ?? 0, h.until))
    }

    // Listed before the pull records are read (see the module doc).
    const partialCandidates = new Set<string>([...await index.partialDigests(), ...await readdirSafe(layout.partial)])
    const referenced = new Set<string>()
    const pulled = new Set<string>()
    const pulling = new Set<string>()
    // Pulls in progress (their files may already be blobs) keep what they need.
    for await (const version of index.pullVersions()) {
      keep.add(version)
      pulling.add(version)
      const bytes = await index.manifestBytes(version)
      for (const f of bytes === undefined ? [] : decodeManifest(bytes).files) {
        referenced.add(f.digest)
        pulled.add(f.digest)
      }
    }
    const live = pullingFiles(store)
    const partials: GcReport['partials'] = []
    for (const digest of partialCandidates) {
      if (pulled.has(digest) || live.has(digest) || await index.blob(digest) !== undefined) continue
      partials.push({ digest, size: await stat(layout.partialBlob(digest)).then(s => s.blocks * 512, () => 0) })
    }
    const candidates: Array<{ name: string, version: VersionId, created: number, size: number, digests: string[], used: number }> = []
    for await (const [version, record] of index.versionEntries()) {
      const bytes = await index.manifestBytes(version)
      const manifest = bytes === undefined ? undefined : decodeManifest(bytes)
      if (only !== undefined ? !only.has(version) || pulling.has(version) : keep.has(version)) {
        for (const f of manifest?.files ?? []) referenced.add(f.digest)
        continue
      }
      candidates.push({
        name: record.name, version, created: record.created,
        size: manifest?.files.reduce((n, f) => n + f.size, 0) ?? 0,
        digests: manifest?.files.map(f => f.digest) ?? [],
        used: Math.max(record.addedAt, lastUsed.get(version) ?? 0)
      })
    }
    let chosen = candidates
    let quota: GcReport['quota']
    if (options.quotaBytes !== undefined) {
      const sizes = new Map<string, number>()
      for await (const [digest, record] of index.blobEntries()) sizes.set(digest, record.size)
      const before = [...sizes.values()].reduce((n, b) => n + b, 0)
      // How many candidate versions still use each blob not held by a kept one.
      const users = new Map<string, number>()
      for (const c of candidates) for (const d of new Set(c.digests)) if (!referenced.has(d)) users.set(d, (users.get(d) ?? 0) + 1)
      let after = before
      chosen = []
      for (const c of [...candidates].sort((a, b) => a.used - b.used)) {
        if (after <= options.quotaBytes) break
        chosen.push(c)
        for (const d of new Set(c.digests)) {
          // A blob a kept version also uses stays, whatever goes.
          if (referenced.has(d)) continue
          const left = (users.get(d) ?? 1) - 1
          users.set(d, left)
          if (left === 0 && !store.isHeld(d)) after -= sizes.get(d) ?? 0
        }
      }
      quota = { limit: options.quotaBytes, before, after }
      const picked = new Set(chosen)
      for (const c of candidates) if (!picked.has(c)) for (const d of c.digests) referenced.add(d)
    }
    const doomed: GcReport['versions'] = []
    const batch = index.batch()
    for (const c of chosen) {
      doomed.push({ name: c.name, version: c.version, size: c.size })
      batch.dropVersion(c.name, c.created, c.version)
    }

    const blobs: GcReport['blobs'] = []
    const chunkDrops = new Map<ChunkId, Set<FileDigest>>()
    const stayingBlobs = new Set<string>()
    for await (const [digest, record] of index.blobEntries()) {
      if (referenced.has(digest) || store.isHeld(digest)) { stayingBlobs.add(digest); continue }
      blobs.push({ digest, size: record.size })
      batch.dropBlob(digest)
      for (const [id] of record.chunks) chunkDrops.set(id, (chunkDrops.get(id) ?? new Set()).add(digest))
    }
    const ids = [...chunkDrops.keys()]
    const locations = await index.locationsMany(ids)
    const unheld = new Set<ChunkId>()
    // Chunks no blob that stays holds (a partial file can go with its pull): cold versions keep theirs.
    const losing = new Set<ChunkId>()
    ids.forEach((id, i) => {
      const gone = chunkDrops.get(id) ?? new Set()
      const rest = (locations[i] ?? []).filter(([d]) => !gone.has(d))
      if (rest.length === 0) unheld.add(id)
      if (!rest.some(([d]) => stayingBlobs.has(d))) losing.add(id)
      batch.setLocations(id, rest)
    })
    // Cold versions that stay keep their chunks (see the module doc).
    const gone = new Set(doomed.map(d => d.version))
    const keptCold: VersionId[] = []
    for await (const version of index.coldVersionIds()) {
      if (gone.has(version)) batch.dropColdVersion(version)
      else keptCold.push(version)
    }
    const cold = await coldChunksToKeep(store, keptCold, losing)
    const dropSizes = await index.coldChunkMany(cold.drop)
    for (const id of cold.drop) batch.dropColdChunk(id)
    for (const id of cold.write.keys()) unheld.delete(id)
    await layersToDrop(store, batch, unheld, new Set(cold.drop))

    const removedBytes = dropSizes.reduce((n, r) => n + (r?.stored ?? 0), 0)
    const freed = blobs.reduce((n, b) => n + b.size, 0) + partials.reduce((n, p) => n + p.size, 0) + removedBytes
    const report: GcReport = {
      dryRun, versions: doomed, blobs, partials, bytes: freed,
      ...(quota !== undefined ? { quota } : {}),
      ...(cold.write.size + cold.drop.length > 0 ? { cold: { written: cold.write.size, removed: cold.drop.length, removedBytes } } : {})
    }
    if (dryRun) return report

    for (const [id, where] of cold.write) {
      // From the blob about to go: re-hashed by the writer, durable before the records change.
      const bytes = await store.readChunk(id)
      if (bytes === undefined) throw new Error(`chunk ${id}, which a compressed version needs, could not be read before its blob is collected; nothing was removed`)
      const stored = await writeColdChunk(layout.cold, layout.tmp, id, bytes, { blockSize: where.blockSize, ...(where.dtype !== undefined ? { dtype: where.dtype } : {}) })
      batch.putColdChunk(id, { size: bytes.length, stored })
    }

    // Records go first: a crash after this leaves only unreferenced files, which start-up removes.
    await batch.commit({ doing: 'removing the records of what gc collects', kept: 'nothing was removed' })
    await dropPartials(store, partials.map(p => p.digest))
    for (const v of doomed) await rm(layout.snapshot(v.name, v.version), { recursive: true, force: true })
    for (const b of blobs) {
      reads.forget(layout.blob(b.digest))
      await chmod(layout.blob(b.digest), 0o644).catch(() => {})
      await rm(layout.blob(b.digest), { force: true })
    }
    for (const id of cold.drop) await rm(layout.coldChunk(id), { force: true })
    // Nothing that writes to tmp/ runs while GC holds the exclusive lock.
    for (const entry of await readdirSafe(layout.tmp)) await rm(join(layout.tmp, entry), { recursive: true, force: true })
    return report
  })
}

/**
 * Adds to `batch` the drop of every leaf layer whose chunk nothing holds once this collection is
 * done: those of `unheld` (their last location goes now) and those with no location at all, unless
 * a cold chunk file that stays (not in `coldDropped`) holds the chunk. One pass over the layers'
 * keys, one index read for the chunks they name.
 */
async function layersToDrop (store: Store, batch: IndexBatch, unheld: ReadonlySet<ChunkId>, coldDropped: ReadonlySet<ChunkId>): Promise<void> {
  const { index } = partsOf(store)
  const byChunk = new Map<ChunkId, string[]>()
  for await (const key of index.leafKeys()) {
    const id = splitLeavesKey(key)?.[0] ?? key
    const keys = byChunk.get(id)
    if (keys === undefined) byChunk.set(id, [key])
    else keys.push(key)
  }
  const others = [...byChunk.keys()].filter(id => !unheld.has(id))
  const held = await index.locationsMany(others)
  const candidates = [...unheld, ...others.filter((_, i) => held[i] === undefined)]
  const cold = await index.coldChunkMany(candidates)
  const doomed = candidates.filter((id, i) => cold[i] === undefined || coldDropped.has(id))
  for (const id of doomed) {
    for (const key of byChunk.get(id) ?? []) batch.dropLeaves(key)
  }
}
