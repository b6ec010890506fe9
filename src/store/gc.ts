/**
 * Garbage collection: removes what nothing keeps.
 *
 * A version is kept when it is pinned (`add` pins by default), a label points at it, or it is in
 * `keep` (the caller's extra roots, e.g. versions leased by serving processes). Every other version
 * is removed — manifest, records, snapshot folder. Then every blob that no kept version references
 * and no operation in progress holds is removed, with its chunk locations. Leftover temporary files
 * go too. `dryRun` reports the same plan and changes nothing.
 *
 * Runs under the store's exclusive lock, so it never races an add.
 */
import { rm, chmod } from 'node:fs/promises'
import { join } from 'node:path'
import type { ChunkId, FileDigest, VersionId } from '../core/digest.js'
import { decodeManifest } from '../core/manifest.js'
import { IndexDb, type IndexOp } from './index-db.js'
import { readdirSafe, type Store } from './store.js'

export interface GcReport {
  dryRun: boolean
  versions: Array<{ name: string, version: VersionId, size: number }>
  blobs: Array<{ digest: FileDigest, size: number }>
  bytes: number
}

export async function collectGarbage (store: Store, options: { dryRun?: boolean, keep?: Iterable<VersionId> } = {}): Promise<GcReport> {
  const dryRun = options.dryRun === true
  return await store.withExclusive(async () => {
    const keep = new Set<string>(options.keep ?? [])
    for await (const key of store.index.pins.keys()) keep.add(IndexDb.splitKey(key)[1] ?? '')
    for await (const record of store.index.labels.values()) keep.add(record.version)

    const referenced = new Set<string>()
    // Pulls in progress (their files may already be blobs) keep what they need.
    for await (const version of store.index.pulls.keys()) {
      const bytes = await store.index.manifests.get(version)
      for (const f of bytes === undefined ? [] : decodeManifest(bytes).files) referenced.add(f.digest)
    }
    const doomed: GcReport['versions'] = []
    const ops: IndexOp[] = []
    for await (const [version, record] of store.index.versions.iterator()) {
      const bytes = await store.index.manifests.get(version)
      const manifest = bytes === undefined ? undefined : decodeManifest(bytes)
      if (keep.has(version)) {
        for (const f of manifest?.files ?? []) referenced.add(f.digest)
        continue
      }
      doomed.push({ name: record.name, version, size: manifest?.files.reduce((n, f) => n + f.size, 0) ?? 0 })
      ops.push(
        { type: 'del', sublevel: store.index.manifests, key: version },
        { type: 'del', sublevel: store.index.versions, key: version },
        { type: 'del', sublevel: store.index.byModel, key: IndexDb.modelKey(record.name, record.created, version) }
      )
    }

    const blobs: GcReport['blobs'] = []
    const chunkDrops = new Map<ChunkId, Set<FileDigest>>()
    for await (const [digest, record] of store.index.blobs.iterator()) {
      if (referenced.has(digest) || store.isHeld(digest)) continue
      blobs.push({ digest, size: record.size })
      ops.push({ type: 'del', sublevel: store.index.blobs, key: digest })
      for (const [id] of record.chunks) chunkDrops.set(id, (chunkDrops.get(id) ?? new Set()).add(digest))
    }
    const ids = [...chunkDrops.keys()]
    const locations = ids.length === 0 ? [] : await store.index.chunks.getMany(ids)
    ids.forEach((id, i) => {
      const gone = chunkDrops.get(id) ?? new Set()
      const rest = (locations[i] ?? []).filter(([d]) => !gone.has(d))
      ops.push(rest.length === 0 ? { type: 'del', sublevel: store.index.chunks, key: id } : { type: 'put', sublevel: store.index.chunks, key: id, value: rest })
    })

    const report: GcReport = { dryRun, versions: doomed, blobs, bytes: blobs.reduce((n, b) => n + b.size, 0) }
    if (dryRun) return report

    // Records go first: a crash after this leaves only unreferenced files, which start-up removes.
    await store.index.commit(ops)
    for (const v of doomed) await rm(store.layout.snapshot(v.name, v.version), { recursive: true, force: true })
    for (const b of blobs) {
      store.reads.forget(store.layout.blob(b.digest))
      await chmod(store.layout.blob(b.digest), 0o644).catch(() => {})
      await rm(store.layout.blob(b.digest), { force: true })
    }
    // Nothing that writes to tmp/ runs while GC holds the exclusive lock.
    for (const entry of await readdirSafe(store.layout.tmp)) await rm(join(store.layout.tmp, entry), { recursive: true, force: true })
    return report
  })
}
