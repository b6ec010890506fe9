/**
 * Bringing the home's files in line with the index: at start-up after a crash (`recoverStore`),
 * and after the index was reopened following a failed write (`afterReopen`). See `store/store.ts`
 * for what MUST hold afterwards.
 *
 * On a full (or failing) disk the repairs that need to write are left for later: the write guard
 * trips, the store opens read-only, and the next start-up (or, for `refs/`, the index's reopen)
 * finishes them.
 */
import { chmod, mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { decodeManifest } from '../core/manifest.js'
import { diskFailure, pathExists, readdirSafe } from '../util/fsutil.js'
import { partsOf } from './internal.js'
import type { Logger, Store } from './store.js'

/** Start-up repair after a crash (see `store/store.ts`, and the module doc for a full disk). */
export async function recoverStore (store: Store, log: Logger): Promise<void> {
  const { index, layout } = partsOf(store)
  const repairing = async (fn: () => Promise<void>, doing: string): Promise<void> => { await repairStep(store, log, fn, doing) }
  await rm(layout.tmp, { recursive: true, force: true })
  await repairing(async () => { await mkdir(layout.tmp, { recursive: true }) }, 'creating tmp/')
  const known = new Map<string, string>()
  for await (const [version, record] of index.versionEntries()) known.set(version, record.name)
  // Orphan snapshots (a crash after the rename, before the index batch) go; missing ones are rebuilt.
  for (const dir of await readdirSafe(layout.models)) {
    for (const version of await readdirSafe(join(layout.models, dir, 'snapshots'))) {
      const name = known.get(version)
      if (name === undefined || layout.model(name) !== join(layout.models, dir)) {
        log.warn({ version }, 'removing a snapshot no version names (interrupted add)')
        await rm(join(layout.models, dir, 'snapshots', version), { recursive: true, force: true })
      }
    }
  }
  const cold = new Set<string>()
  for await (const version of index.coldVersionIds()) cold.add(version)
  for (const [version, name] of known) {
    const path = layout.snapshot(name, version)
    if (cold.has(version)) {
      // A crash after a compression's batch, before its snapshot went (or while re-materializing).
      if (await pathExists(path)) await repairing(async () => { await rm(path, { recursive: true, force: true }) }, `removing the snapshot of the compressed ${name}@${version}`)
      continue
    }
    if (await pathExists(path)) continue
    const bytes = await index.manifestBytes(version)
    if (bytes !== undefined) await repairing(async () => { await store.materialize(name, version, decodeManifest(bytes, version)) }, `rebuilding the snapshot of ${name}@${version}`)
  }
  // Blobs without a record (a crash between their rename and the index batch) are complete but
  // unreferenced: drop them, a retried add writes them again.
  for (const digest of await readdirSafe(layout.blobs)) {
    const partial = await index.partial(digest)
    if (await index.blob(digest) === undefined && partial !== undefined) {
      // A pulled file is renamed into blobs/ only once complete and fsynced: finish its promotion.
      await repairing(async () => {
        await index.batch().putBlob(digest, { size: partial.size, chunks: partial.chunks, verifiedAt: Date.now() }).dropPartial(digest).commit()
      }, `recording the pulled blob ${digest}`)
      continue
    }
    if (await index.blob(digest) === undefined) {
      log.warn({ blob: digest }, 'removing a blob no index record names (interrupted add)')
      await chmod(layout.blob(digest), 0o644).catch(() => {})
      await rm(layout.blob(digest), { force: true })
    }
  }
  // Cold chunk files without a record (a compression interrupted before its batch) go.
  for (const id of await readdirSafe(layout.cold)) {
    if (await index.coldChunk(id) === undefined) await rm(layout.coldChunk(id), { force: true })
  }
  // Partial files without a record (a crash before the record was written) go.
  for (const digest of await readdirSafe(layout.partial)) {
    if (await index.partial(digest) === undefined) await rm(layout.partialBlob(digest), { force: true })
  }
  await repairing(async () => { await store.syncRefs() }, 'syncing refs/ with the index')
}

/**
 * Runs one start-up repair; a disk failure trips the write guard and is logged instead of
 * stopping the start, so a node on a full disk still serves what it holds.
 */
async function repairStep (store: Store, log: Logger, fn: () => Promise<void>, doing: string): Promise<void> {
  try {
    await fn()
  } catch (err) {
    if (diskFailure(err) === undefined) throw err
    const mapped = store.failedWrite(err, { doing, kept: 'left for when there is room' })
    log.warn({ err: (mapped as Error).message }, 'start-up repair skipped: the store is read-only until there is room on its disk')
  }
}

/**
 * After the index was reopened: a write that failed may have reached LevelDB's log after all (a
 * failed sync), so a version can be recorded without its snapshot, and a ref file can be ahead of
 * the index (see `setLabel`). Both follow the index again.
 */
export async function afterReopen (store: Store): Promise<void> {
  const { index, layout } = partsOf(store)
  for await (const [version, record] of index.versionEntries()) {
    if (await index.coldVersion(version) !== undefined) continue
    if (await pathExists(layout.snapshot(record.name, version))) continue
    const bytes = await index.manifestBytes(version)
    if (bytes !== undefined) await store.repairSnapshot(record.name, version, decodeManifest(bytes, version))
  }
  await store.syncRefs()
}
