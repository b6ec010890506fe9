/**
 * Disk usage by model and version (`shoal df`, like `docker system df -v` and `hf scan-cache`):
 * for each version its size (the sum of its files), what it shares with other versions (blobs
 * another version also uses) and what is its own (blobs only it uses: what removing it frees).
 * Read-only; one pass over versions and manifests, one over blob records.
 */
import type { VersionId } from '../core/digest.js'
import { decodeManifest } from '../core/manifest.js'
import { partsOf } from './internal.js'
import type { Store } from './store.js'

export interface VersionUsage {
  name: string
  version: VersionId
  created: number
  /** Bytes of its files. */
  size: number
  /** Bytes of stored blobs it uses that other versions use too. */
  shared: number
  /** Bytes of stored blobs only it uses: what removing it frees. */
  unique: number
  labels: string[]
  pinned: boolean
}

export interface DiskUsage {
  versions: VersionUsage[]
  models: Array<{ name: string, versions: number, size: number, unique: number }>
  /** Stored blobs: each distinct file once. */
  blobs: { count: number, bytes: number }
}

export async function diskUsage (store: Store, signal?: AbortSignal): Promise<DiskUsage> {
  const { index } = partsOf(store)
  const sizes = new Map<string, number>()
  for await (const [digest, record] of index.blobEntries()) sizes.set(digest, record.size)
  const users = new Map<string, number>()
  const rows: Array<Omit<VersionUsage, 'shared' | 'unique'> & { digests: Set<string> }> = []
  const labelsOf = new Map<string, Record<string, string>>()
  for await (const [version, record] of index.versionEntries()) {
    signal?.throwIfAborted()
    const bytes = await index.manifestBytes(version)
    if (bytes === undefined) continue
    const files = decodeManifest(bytes).files
    const digests = new Set(files.map(f => f.digest as string))
    for (const d of digests) users.set(d, (users.get(d) ?? 0) + 1)
    let labels = labelsOf.get(record.name)
    if (labels === undefined) labelsOf.set(record.name, labels = await store.labels(record.name))
    rows.push({
      name: record.name, version, created: record.created,
      size: files.reduce((n, f) => n + f.size, 0), digests,
      labels: Object.entries(labels).filter(([, v]) => v === version).map(([l]) => l).sort(),
      pinned: await index.pin(record.name, version) !== undefined
    })
  }
  const versions: VersionUsage[] = rows.map(({ digests, ...row }) => {
    let shared = 0
    let unique = 0
    for (const d of digests) {
      const size = sizes.get(d) ?? 0
      if ((users.get(d) ?? 0) > 1) shared += size
      else unique += size
    }
    return { ...row, shared, unique }
  }).sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : a.created - b.created)
  const models = new Map<string, { name: string, versions: number, size: number, unique: number }>()
  for (const v of versions) {
    const m = models.get(v.name) ?? { name: v.name, versions: 0, size: 0, unique: 0 }
    m.versions++
    m.size += v.size
    m.unique += v.unique
    models.set(v.name, m)
  }
  return { versions, models: [...models.values()], blobs: { count: sizes.size, bytes: [...sizes.values()].reduce((n, b) => n + b, 0) } }
}
