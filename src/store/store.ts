/**
 * The content-addressed store: blobs (one copy of each file's bytes), chunk locations, manifests,
 * versions, labels and pins, behind the narrow interfaces of `store/api.ts`. Daemon components use
 * those; nothing else touches the index or the home's files (`store/internal.ts` hands them to the
 * store's own modules). Chunk reads are `store/chunk-reads.ts`.
 *
 * MUST hold:
 * - bytes are named by what they hash to: `BlobWriter` and `PullTarget` hash every chunk before
 *   writing it, so what the index (or a pull's `chunkWritten`) names was verified once. `readChunk` and
 *   `readSpan` trust that and do not re-hash: integrity at rest (disk rot, tampering) is `verify`'s
 *   job, and every receiver verifies what it gets anyway, so damaged bytes are refused by the next
 *   hop (which penalises this node as corrupt) and never used;
 * - a chunk's leaf layer (`leaves` sublevel, `store/leaves.ts`) is only ever made from bytes that
 *   hash to its id, and is recorded in the same batch as the chunk's location when `add` or a pull
 *   made it; one missing is computed when first served (`store/leaf-store.ts`);
 * - an index record is committed only after the bytes it names are durable (fsync + rename +
 *   fsync of the folder), in one atomic `sync` batch;
 * - a version becomes visible (listed, resolvable) only when every file's blob is stored and its
 *   snapshot folder is complete: the index batch that adds it is the last step of `commitVersion`;
 * - after a crash, `open` removes what no index record names (temporary files, orphan blobs and
 *   snapshots, cold chunk files) and rebuilds missing snapshot links (a cold version has none: its
 *   snapshot is removed instead), so the store is consistent again (`store/recover.ts`);
 * - a cold (compressed) version is complete: every chunk of it is in a blob that stays or in
 *   `cold/` (`store/cold.ts`), and reads fall back to `cold/` (`readChunk`, `readSpan`); a label
 *   only ever points at a materialized version (`setLabel` re-materializes first);
 * - a write is acknowledged only once it is on disk. The first disk failure of any write (index or
 *   file) trips the write guard (`store/write-guard.ts`): that operation fails with `DiskFullError`
 *   or `StorageIoError` saying what it kept, every later write fails fast, and writes resume only
 *   after the index has been reopened cleanly with room on the disk (then `refs/` files are synced
 *   to the index again). On a full disk at start-up the store opens read-only in the same way.
 *
 * Concurrency: one process (LevelDB's lock). Operations that add hold a shared lock; `gc` and
 * removals hold it exclusively, so GC never sees an add half done.
 */
import { mkdir, readFile, rm, rename, symlink, readlink } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import createMortice, { type Mortice } from 'mortice'
import { randomBytes } from 'node:crypto'
import type { ChunkId, FileDigest, VersionId } from '../core/digest.js'
import { chunkIdFromSha256, chunkMatches, isCid, parseCid, RAW_CODEC, SHA2_256 } from '../core/digest.js'
import { ConflictError, DiskFullError, InvalidInputError, LockedError, NotFoundError, StorageIoError } from '../core/errors.js'
import { decodeManifest, encodeManifest, type Manifest } from '../core/manifest.js'
import { checkLabel, checkModelName, parseRef } from '../core/names.js'
import { leafHash } from '../core/tree.js'
import { BlobWriter, type WrittenBlob } from './blob-writer.js'
import { ChunkReader } from './chunk-reads.js'
import { afterReopen, recoverStore } from './recover.js'
import { diskError, diskFailure, fsyncDir, NOTHING_KEPT, pathExists, readdirSafe, tmpName, writeFileAtomic, type WriteContext } from '../util/fsutil.js'

/** @default 64 — versions of the model an add compares its content with (newest first) */
export const MAX_SAME_CONTENT_CHECKS = 64
/** @default 32 — bytes two manifests of the same content may differ by (their created and parent fields) */
const SAME_CONTENT_SLACK_BYTES = 32

export { pathExists, readdirSafe, type WriteContext }
import { IndexDb, MAX_LABEL_HISTORY, type ColdRecord, type Db, type IndexBatch, type LabelRecord, type LeaseRecord, type PullRecord, type VersionRecord } from './index-db.js'
import type { BlobSink, Catalogue, ChunkReads, HeadRecords, Leases, PullRecords } from './api.js'
import { WriteGuard } from './write-guard.js'
import { rematerializeVersion } from './cold.js'
import { Layout } from './layout.js'
import { ReadCache } from './read-cache.js'
import { HeadStore } from './heads.js'
import { HashPool } from './hash-pool.js'
import { attachParts } from './internal.js'

export interface Logger {
  info: (obj: object, msg?: string) => void
  warn: (obj: object, msg?: string) => void
  debug: (obj: object, msg?: string) => void
}


const silent: Logger = { info () {}, warn () {}, debug () {} }

export interface VersionInfo {
  name: string
  version: VersionId
  created: number
  addedAt: number
  labels: string[]
  pinned: boolean
  size: number
  files: number
  /** False when a file's bytes were lost (quarantined by verify); such a version is not served. */
  complete: boolean
  /** Kept compressed (`store/cold.ts`): no snapshot until something re-materializes it. */
  cold?: { at: number, savedBytes: number }
}

export interface ResolvedVersion {
  name: string
  version: VersionId
  manifest: Manifest
  /** The snapshot folder: `<home>/models/models--…/snapshots/<version>`. */
  path: string
  labels: string[]
  pinned: boolean
  /** Files whose bytes are not in the store (see `VersionInfo.complete`). */
  missing: string[]
  /** Kept compressed: `path` does not exist until `rematerialize` (see `store/cold.ts`). */
  cold: boolean
  /** Set by `commitVersion` when the draft was the same content as this version, already here. */
  existing?: boolean
}

export interface CommitOptions {
  label?: string
  pin?: boolean
}

export interface StoreOptions {
  /** The index; default LevelDB at `<home>/index`. */
  db?: Db
  log?: Logger
  /** Free bytes on the store's disk (see `WriteGuard`); default statfs of `home`. */
  freeBytes?: () => Promise<number>
  /** @default REOPEN_MIN_FREE_BYTES */
  minFreeBytes?: number
}

/**
 * How often a store that stopped taking writes (see `WriteGuard`) looks for room to reopen its
 * index, so it takes writes again (and `onWritable` listeners run) without waiting for a write.
 * @default 5 s
 */
export const WRITABLE_CHECK_MS = 5_000

/** What an add keeps when one of its writes fails. */
const ADD_KEPT = `the version was not added and ${NOTHING_KEPT}`

/** @default 256 — decoded manifests kept in memory (`resolve` is on serving processes' hot path) */
export const MANIFEST_CACHE_ENTRIES = 256

export type ManifestDraft = Omit<Manifest, 'created' | 'parent'> & { parent?: VersionId | null }

/** Blocks of one chunk read to be served (`Store.readSpan`). */
export interface Span {
  /** The blocks' bytes, back to back (the last block of the chunk may be short). */
  data: Uint8Array
  /** One joined audit path per block (`count` of them), empty for a chunk of one block. */
  proofs: Uint8Array[]
  /**
   * Per block, the encoded form it is kept in on disk (a cold chunk cut at the span's block size:
   * `core/codec.ts` header ‖ body), so a server sends it as it is to a peer that offered its codec
   * instead of encoding the block again. Absent for blocks kept raw.
   */
  encoded?: ReadonlyArray<Uint8Array | undefined>
}

/** Where verified bytes of a chunk live: a blob or partial file, the offset in it, the chunk's size. */
export interface ChunkPlace { digest: FileDigest, offset: number, size: number }

/** A chunk written into a partial file, to record (`Store.recordChunks`). */
export interface RecordedChunk extends ChunkPlace {
  id: ChunkId
  /** The leaf layer it was verified with (joined leaf hashes), for a chunk of several blocks. */
  leaves?: { blockSize: number, layer: Uint8Array }
}

export class Store implements Catalogue, ChunkReads, BlobSink, Leases, PullRecords {
  private readonly layout: Layout
  private readonly index: IndexDb
  /** Signed heads and the manifests they name (see `store/heads.ts`). */
  readonly heads: HeadRecords
  private readonly lock: Mortice
  /** Blobs written by operations still in progress; GC leaves them alone. */
  private readonly inflight = new Map<FileDigest, number>()
  /** Worker threads for hashing whole chunks in shared buffers (created on first use). */
  private hashPool?: HashPool
  /** Handles kept open for serving chunks. */
  private readonly reads = new ReadCache()
  /** Chunk reads, and the chunks a pull wrote before they are recorded (`store/chunk-reads.ts`). */
  private readonly chunks: ChunkReader
  /** Decoded manifests by version id (immutable, so never stale); bounded, oldest dropped first. */
  private readonly decoded = new Map<VersionId, Manifest>()
  /** Label changes and the sync of `refs/` files with the index, one at a time. */
  private labelQueue: Promise<unknown> = Promise.resolve()
  private writableCheck?: NodeJS.Timeout

  private constructor (home: string, db: Db, private readonly log: Logger, options: StoreOptions & { repair?: () => Promise<void> }) {
    this.layout = new Layout(home)
    const guard = new WriteGuard(options.freeBytes ?? WriteGuard.freeBytesAt(home), log, options.minFreeBytes)
    this.index = new IndexDb(db, { guard, log, ...(options.repair !== undefined ? { repair: options.repair } : {}) })
    guard.onCleared(() => { void afterReopen(this).catch(err => { this.log.warn({ err: (err as Error).message }, 'bringing files in line with the reopened index failed') }) })
    this.heads = new HeadStore(this.index)
    this.chunks = new ChunkReader({ index: this.index, layout: this.layout, reads: this.reads, hashPool: () => (this.hashPool ??= new HashPool()), log })
    this.lock = createMortice({ name: `shoal-store-${randomBytes(8).toString('hex')}`, singleProcess: true })
    attachParts(this, { index: this.index, layout: this.layout, reads: this.reads })
  }

  /** Calls `listener` whenever the store takes writes again after a disk failure. */
  onWritable (listener: () => void): void {
    this.index.guard.onCleared(listener)
  }

  /** Opens (creating if needed) the store in `home`. `db` defaults to LevelDB at `<home>/index`. */
  static async open (home: string, options: StoreOptions = {}): Promise<Store> {
    const layout = new Layout(home)
    try {
      for (const dir of [home, layout.blobs, layout.models, layout.tmp, layout.quarantine, layout.partial, layout.cold]) await mkdir(dir, { recursive: true })
    } catch (err) {
      const kind = diskFailure(err)
      if (kind !== undefined) throw diskError(kind, { doing: `creating the store's folders in ${home}`, kept: 'the daemon did not start' }, err)
      throw err
    }
    let repair: (() => Promise<void>) | undefined
    let db = options.db
    if (db === undefined) {
      const { Level } = await import('level')
      db = new Level<string, unknown>(layout.index) as unknown as Db
      // `level` is classic-level on Node; its typings leave out the static `repair`.
      repair = async () => { await (Level as unknown as { repair: (location: string) => Promise<void> }).repair(layout.index) }
    }
    const store = new Store(home, db, options.log ?? silent, { ...options, ...(repair !== undefined ? { repair } : {}) })
    try {
      await store.index.open()
    } catch (err) {
      const code = (err as { code?: string, cause?: { code?: string } }).cause?.code ?? (err as { code?: string }).code
      if (code === 'LEVEL_LOCKED') {
        throw new LockedError(`the store at ${home} is in use by another shoal daemon; stop it, or use another SHOAL_HOME`, { cause: err })
      }
      const kind = diskFailure(err)
      if (kind !== undefined && !(err instanceof DiskFullError || err instanceof StorageIoError)) {
        throw diskError(kind, { doing: `opening the index in ${layout.index}`, kept: 'the daemon did not start (LevelDB replays its log into a new table when it opens, and that needs room)' }, err)
      }
      throw err
    }
    await recoverStore(store, store.log)
    store.writableCheck = setInterval(() => {
      if (store.index.guard.tripped !== undefined) void store.writable({ doing: 'looking for room to reopen the index', kept: 'nothing' }).catch(() => {})
    }, WRITABLE_CHECK_MS)
    store.writableCheck.unref()
    return store
  }

  /**
   * Resolves when the store takes writes (see `WriteGuard`); otherwise throws `DiskFullError` or
   * `StorageIoError` with `what`. For operations that check before they change anything.
   */
  async writable (what: WriteContext): Promise<void> {
    await this.index.writable(what)
  }

  /**
   * Maps the error of a failed write made on the store's behalf (a pull's partial files): a disk
   * failure trips the write guard and becomes a typed error with `what`; others pass through.
   */
  failedWrite (err: unknown, what: WriteContext): unknown {
    return this.index.guard.fail(err, what)
  }

  private async labelSerial<T> (fn: () => Promise<T>): Promise<T> {
    const run = this.labelQueue.then(fn)
    this.labelQueue = run.catch(() => {})
    return await run
  }

  /** Waits for operations in progress to finish (or abort), then closes the index. */
  async close (): Promise<void> {
    clearInterval(this.writableCheck)
    await this.withExclusive(async () => {
      this.reads.close()
      await this.hashPool?.close()
      await this.index.close()
    })
  }

  // ---- writing -------------------------------------------------------------------------------

  /**
   * A writer for one file's bytes; `indexBlob` makes it known once committed. With `blockSize`, it
   * also computes the block trees of the chunks (roots for the manifest, layers for the index).
   */
  async createBlobWriter (options: { blockSize?: number } = {}): Promise<BlobWriter> {
    const what = { doing: 'writing a blob', kept: ADD_KEPT }
    await this.writable(what)
    this.hashPool ??= new HashPool()
    return await BlobWriter.create(this.layout, this.hashPool, {
      ...(options.blockSize !== undefined ? { blockSize: options.blockSize } : {}),
      onFailure: (err, doing) => this.failedWrite(err, { doing, kept: ADD_KEPT })
    })
  }

  /**
   * True when `bytes` (whole or in parts) hash to chunk `id`. A sha2-256 chunk in one part of
   * shared memory is hashed on the worker pool, beside the event loop; anything else on this
   * thread. The bytes MUST stay unchanged until this resolves.
   */
  async chunkMatches (bytes: Uint8Array | readonly Uint8Array[], id: ChunkId): Promise<boolean> {
    const whole = bytes instanceof Uint8Array ? bytes : bytes.length === 1 ? bytes[0] : undefined
    if (whole === undefined || !(whole.buffer instanceof SharedArrayBuffer)) return chunkMatches(bytes, id)
    const cid = parseCid(id)
    if (cid.code !== RAW_CODEC || cid.multihash.code !== SHA2_256) return chunkMatches(bytes, id)
    this.hashPool ??= new HashPool()
    return chunkIdFromSha256(await this.hashPool.sha256(whole)) === id
  }

  /**
   * Chunk `id` decoded from its cold file's bytes (in shared memory) and re-hashed, on the worker
   * pool (`HashPool.decodeCold`), into `into` when given. The bytes MUST stay unchanged until this
   * resolves.
   * @throws MalformedDataError, DigestMismatchError as `decodeColdChunk`
   */
  async decodeCold (file: Uint8Array, id: ChunkId, into?: Uint8Array): Promise<Uint8Array> {
    this.hashPool ??= new HashPool()
    return await this.hashPool.decodeCold(file, id, into)
  }

  /**
   * The leaf hash (`core/tree.ts`) of one received block: on the worker pool when the block is one
   * view of shared memory, else on this thread. The bytes MUST stay unchanged until this resolves.
   */
  async leafHash (block: Uint8Array | readonly Uint8Array[]): Promise<Uint8Array> {
    const view = block instanceof Uint8Array ? block : block.length === 1 ? block[0] : undefined
    if (view === undefined || !(view.buffer instanceof SharedArrayBuffer)) return leafHash(block)
    this.hashPool ??= new HashPool()
    return await this.hashPool.leaf(view)
  }

  /**
   * Runs `fn` under the shared lock; blobs it registers with `hold` are protected from GC until
   * `fn` settles (the version that references them is committed by then, or the add failed).
   */
  async withShared<T> (fn: (hold: (digest: FileDigest) => void) => Promise<T>): Promise<T> {
    const release = await this.lock.readLock()
    const held: FileDigest[] = []
    try {
      return await fn(digest => {
        held.push(digest)
        this.inflight.set(digest, (this.inflight.get(digest) ?? 0) + 1)
      })
    } finally {
      for (const d of held) {
        const n = (this.inflight.get(d) ?? 1) - 1
        if (n <= 0) this.inflight.delete(d)
        else this.inflight.set(d, n)
      }
      release()
    }
  }

  async withExclusive<T> (fn: () => Promise<T>): Promise<T> {
    const release = await this.lock.writeLock()
    try {
      return await fn()
    } finally {
      release()
    }
  }

  isHeld (digest: FileDigest): boolean {
    return this.inflight.has(digest)
  }

  /**
   * Records a committed blob, where each of its chunks lives (after its bytes are durable) and the
   * leaf layers the writer computed, in one batch.
   */
  async indexBlob (blob: WrittenBlob): Promise<void> {
    const batch = this.index.batch().putBlob(blob.digest, { size: blob.size, chunks: blob.chunks.map(c => [c.id, c.size]), verifiedAt: Date.now() })
    const ids = [...new Set(blob.chunks.map(c => c.id))]
    const existing = await this.index.locationsMany(ids)
    const offsets = new Map<ChunkId, [number, number]>()
    let offset = 0
    for (const c of blob.chunks) {
      if (!offsets.has(c.id)) offsets.set(c.id, [offset, c.size])
      offset += c.size
    }
    ids.forEach((id, i) => {
      const locations = (existing[i] ?? []).filter(([d]) => d !== blob.digest)
      const [at, size] = offsets.get(id) ?? [0, 0]
      locations.push([blob.digest, at, size])
      batch.setLocations(id, locations)
    })
    const layered = new Set<ChunkId>()
    for (const c of blob.chunks) {
      if (c.leaves === undefined || layered.has(c.id)) continue
      layered.add(c.id)
      batch.putLeaves(c.id, blob.blockSize, c.leaves, c.size)
    }
    await batch.commit({ doing: `indexing blob ${blob.digest}`, kept: ADD_KEPT })
  }

  /** Records chunk `id`'s leaf layer on its own (checked as `IndexBatch.putLeaves`) and keeps it in memory for serving. */
  async recordLeaves (id: ChunkId, blockSize: number, leaves: Uint8Array, options: { chunkSize?: number, kept?: string } = {}): Promise<void> {
    await this.index.batch().putLeaves(id, blockSize, leaves, options.chunkSize).commit({ doing: `recording the leaf layer of chunk ${id}`, kept: options.kept ?? 'the layer is computed again when needed' })
    this.chunks.leafLayers.remember(id, blockSize, leaves)
  }

  /** Forgets the cached leaf layers of chunk `id` (its index records were replaced or dropped). */
  forgetLeaves (id: ChunkId): void {
    this.chunks.leafLayers.forget(id)
  }

  /**
   * A version of `draft.name` whose manifest is `draft` with its own `created` and `parent`: the
   * same files, metadata and block size. The newest `MAX_SAME_CONTENT_CHECKS` versions are looked
   * at; a manifest whose length differs from the draft's by more than a timestamp could is not decoded.
   */
  private async sameContent (draft: ManifestDraft): Promise<VersionId | undefined> {
    const probe = encodeManifest({ ...draft, created: 0, parent: null }).bytes.length
    const versions = (await this.index.versionsOf(draft.name)).reverse().slice(0, MAX_SAME_CONTENT_CHECKS)
    for (const version of versions) {
      const bytes = await this.index.manifestBytes(version)
      if (bytes === undefined || Math.abs(bytes.length - probe) > SAME_CONTENT_SLACK_BYTES) continue
      const m = decodeManifest(bytes)
      if (m.schema !== draft.schema) continue
      if (encodeManifest({ ...draft, created: m.created, parent: m.parent }).id === version) return version
    }
    return undefined
  }

  /**
   * Makes a version visible: stamps `created` (strictly increasing in this store), sets the parent
   * (the label's current target, else the model's newest version), encodes the manifest, builds the
   * snapshot folder, and commits the index in one batch. Every file's blob MUST already be indexed.
   */
  async commitVersion (draft: ManifestDraft, options: CommitOptions = {}): Promise<ResolvedVersion> {
    checkModelName(draft.name)
    if (options.label !== undefined) checkLabel(options.label)
    for (const file of draft.files) {
      if (await this.index.blob(file.digest) === undefined) throw new NotFoundError(`blob ${file.digest} for ${file.path} is not in the store`)
    }
    const same = draft.parent === undefined ? await this.sameContent(draft) : undefined
    if (same !== undefined) {
      // The same content (files, metadata, block size) as a version already here: that version,
      // with its `created` unchanged, as docker and ollama give the same digest.
      if (options.pin === true && await this.index.pin(draft.name, same) === undefined) {
        await this.index.batch().putPin(draft.name, same, { pinnedAt: Date.now() }).commit({ doing: `pinning ${draft.name}@${same}`, kept: 'the version, unpinned' })
      }
      if (options.label !== undefined) await this.setLabel(draft.name, options.label, same)
      return { ...await this.resolve(`${draft.name}@${same}`), existing: true }
    }
    let parent = draft.parent
    if (parent === undefined) {
      const labelled = options.label !== undefined ? await this.index.label(draft.name, options.label) : undefined
      parent = labelled?.version ?? (await this.newest(draft.name))?.version ?? null
    }
    const created = await this.nextTimestamp({ doing: `recording a version of ${draft.name}`, kept: ADD_KEPT })
    const manifest: Manifest = { ...draft, created, parent }
    const { bytes, id } = encodeManifest(manifest)
    if (await this.index.version(id) === undefined) {
      const batch = this.index.batch().putVersion(id, bytes, { name: draft.name, created, addedAt: Date.now(), local: true })
      if (options.pin === true) batch.putPin(draft.name, id, { pinnedAt: Date.now() })
      await this.recordVersion(draft.name, id, manifest, batch, { doing: `recording ${draft.name}@${id}`, kept: ADD_KEPT })
    }
    if (options.label !== undefined) await this.setLabel(draft.name, options.label, id)
    return await this.resolve(`${draft.name}@${id}`)
  }

  /**
   * Points `name@label` at `version`. With `expect`, refuses unless the label currently points
   * there. Resolves only once both the ref file and the index say so.
   */
  async setLabel (name: string, label: string, version: VersionId, expect?: VersionId | null): Promise<LabelRecord> {
    checkLabel(label)
    // A label only points at a materialized version: a cold one comes back first.
    if (await this.index.coldVersion(version) !== undefined) await this.rematerialize(version)
    return await this.labelSerial(async () => {
      const record = await this.index.version(version)
      if (record === undefined || record.name !== name) throw new NotFoundError(`version ${version} of ${name} is not in this store`)
      const current = await this.index.label(name, label)
      if (expect !== undefined && (current?.version ?? null) !== expect) {
        throw new ConflictError(`${name}@${label} points at ${current?.version ?? 'nothing'}, not ${expect ?? 'nothing'}`)
      }
      if (current?.version === version) return current
      const what = { doing: `moving ${name}@${label} to ${version}`, kept: `the label was not moved (it still points at ${current?.version ?? 'nothing'})` }
      await this.writable(what)
      const now = Date.now()
      const history = current === undefined ? [] : [{ version: current.version, until: now }, ...current.history].slice(0, MAX_LABEL_HISTORY)
      const next: LabelRecord = { version, updatedAt: now, history }
      const batch = this.index.batch().putLabel(name, label, next)
      if (await this.index.labelPin(name, label) !== undefined && await this.index.pin(name, version) === undefined) {
        batch.putPin(name, version, { pinnedAt: now, via: label })
      }
      // The ref file first: a crash before the index batch leaves the old target in the index, and
      // start-up rewrites the file from the index. Either way one whole version id is visible.
      await this.writeRef(name, label, version, what)
      try {
        await batch.commit(what)
      } catch (err) {
        // The ref file is ahead of the index: put it back (if that fails too, the sync that
        // follows the index's reopen does it, or the next start-up).
        await this.restoreRef(name, label, current?.version)
        throw err
      }
      return next
    })
  }

  /** Replaces `refs/<label>`; a disk failure trips the write guard. */
  private async writeRef (name: string, label: string, version: VersionId, what: WriteContext): Promise<void> {
    try {
      await writeFileAtomic(this.layout.ref(name, label), `${version}\n`)
    } catch (err) {
      throw this.failedWrite(err, what)
    }
  }

  /** Best effort: `refs/<label>` back to `version` (or gone), after the index refused a change. */
  private async restoreRef (name: string, label: string, version: VersionId | undefined): Promise<void> {
    try {
      if (version === undefined) await rm(this.layout.ref(name, label), { force: true })
      else await writeFileAtomic(this.layout.ref(name, label), `${version}\n`)
    } catch (err) {
      this.log.warn({ model: name, label, err: (err as Error).message }, 'could not put a ref file back after a failed label change; it is synced with the index once writes resume')
    }
  }

  /** Pins `name@label`: the version it points at now, and every one it points at later. */
  async pinLabel (name: string, label: string): Promise<VersionId | undefined> {
    checkModelName(name)
    checkLabel(label)
    const current = await this.index.label(name, label)
    const now = Date.now()
    const batch = this.index.batch().putLabelPin(name, label, { pinnedAt: now })
    if (current !== undefined && await this.index.pin(name, current.version) === undefined) {
      batch.putPin(name, current.version, { pinnedAt: now, via: label })
    }
    await batch.commit({ doing: `pinning ${name}@${label}`, kept: 'the pin was not recorded' })
    return current?.version
  }

  /** Drops a label pin and the version pins it made. Returns whether the label was pinned. */
  async unpinLabel (name: string, label: string): Promise<boolean> {
    checkModelName(name)
    checkLabel(label)
    const had = await this.index.labelPin(name, label) !== undefined
    const batch = this.index.batch().dropLabelPin(name, label)
    for await (const { version, record } of this.index.pinsOf(name)) {
      if (record.via === label) batch.dropPin(name, version)
    }
    await batch.commit({ doing: `unpinning ${name}@${label}`, kept: 'the pin was kept' })
    return had
  }

  async isLabelPinned (name: string, label: string): Promise<boolean> {
    return await this.index.labelPin(name, label) !== undefined
  }

  /** True when the version is recorded and every file's bytes are in the store (a cold version's are). */
  async isComplete (version: VersionId): Promise<boolean> {
    const manifest = await this.manifestOf(version)
    if (manifest === undefined || await this.index.version(version) === undefined) return false
    return (await this.missingFiles(manifest, version)).length === 0
  }

  /** Brings a cold version back to files and a snapshot (`store/cold.ts`); others are left as they are. */
  async rematerialize (version: VersionId, options: { signal?: AbortSignal } = {}): Promise<void> {
    await rematerializeVersion(this, version, options)
  }

  async removeLabel (name: string, label: string): Promise<void> {
    checkLabel(label)
    await this.labelSerial(async () => {
      const current = await this.index.label(name, label)
      const what = { doing: `removing ${name}@${label}`, kept: `the label was not removed${current !== undefined ? ` (it still points at ${current.version})` : ''}` }
      await this.writable(what)
      await rm(this.layout.ref(name, label), { force: true })
      try {
        await this.index.batch().dropLabel(name, label).commit(what)
      } catch (err) {
        await this.restoreRef(name, label, current?.version)
        throw err
      }
    })
  }

  async pin (name: string, version: VersionId): Promise<void> {
    const record = await this.index.version(version)
    if (record === undefined || record.name !== name) throw new NotFoundError(`version ${version} of ${name} is not in this store`)
    await this.index.batch().putPin(name, version, { pinnedAt: Date.now() }).commit({ doing: `pinning ${name}@${version}`, kept: 'the pin was not recorded' })
  }

  async unpin (name: string, version: VersionId): Promise<boolean> {
    const had = await this.index.pin(name, version) !== undefined
    await this.index.batch().dropPin(name, version).commit({ doing: `unpinning ${name}@${version}`, kept: 'the pin was kept' })
    return had
  }

  // ---- reading -------------------------------------------------------------------------------

  async models (): Promise<Array<{ name: string, versions: number, labels: Record<string, VersionId>, newest: VersionInfo }>> {
    const names = new Map<string, number>()
    for await (const { name } of this.index.modelVersions()) names.set(name, (names.get(name) ?? 0) + 1)
    const out = []
    for (const [name, versions] of names) {
      const newest = await this.newest(name)
      if (newest === undefined) continue
      out.push({ name, versions, labels: await this.labels(name), newest })
    }
    return out
  }

  /** Versions of `name`, oldest first (versions by timestamp). */
  async versions (name: string): Promise<VersionInfo[]> {
    checkModelName(name)
    const labels = await this.labels(name)
    const byVersion = new Map<string, string[]>()
    for (const [label, v] of Object.entries(labels)) byVersion.set(v, [...(byVersion.get(v) ?? []), label])
    const out: VersionInfo[] = []
    for (const version of await this.index.versionsOf(name)) {
      out.push(await this.info(name, version, byVersion.get(version) ?? []))
    }
    if (out.length === 0) throw new NotFoundError(`no model named ${name} in this store`)
    return out
  }

  async labels (name: string): Promise<Record<string, VersionId>> {
    const out: Record<string, VersionId> = {}
    for await (const { label, record } of this.index.labelsOf(name)) out[label] = record.version
    return out
  }

  /** Every local label and the version it points at (one read of the labels; for metrics). */
  async allLabels (): Promise<Array<{ model: string, label: string, version: VersionId }>> {
    const out: Array<{ model: string, label: string, version: VersionId }> = []
    for await (const { model, label, record } of this.index.labelEntries()) out.push({ model, label, version: record.version })
    return out
  }

  async labelRecord (name: string, label: string): Promise<LabelRecord | undefined> {
    return await this.index.label(checkModelName(name), checkLabel(label))
  }

  async newest (name: string): Promise<VersionInfo | undefined> {
    const version = await this.index.newestOf(name)
    return version === undefined ? undefined : await this.info(name, version)
  }

  /**
   * Resolves `name`, `name@label`, `name@<version id>` or `name@<unique version id prefix>` (at
   * least 8 characters). A bare name means the label `latest` if set, else the newest version.
   */
  async resolve (ref: string): Promise<ResolvedVersion> {
    const { name, selector } = parseRef(ref)
    const version = await this.resolveVersion(name, selector)
    const manifest = await this.manifestOf(version)
    if (manifest === undefined) throw new NotFoundError(`manifest of ${name}@${version} is missing; run shoal verify`)
    const labels = Object.entries(await this.labels(name)).filter(([, v]) => v === version).map(([l]) => l)
    return {
      name, version, manifest, labels,
      path: this.layout.snapshot(name, version),
      missing: await this.missingFiles(manifest, version),
      pinned: await this.index.pin(name, version) !== undefined,
      cold: await this.index.coldVersion(version) !== undefined
    }
  }

  /** Models, versions, blobs and blob bytes in the store (walks the index). */
  async totals (): Promise<{ models: number, versions: number, blobs: number, bytes: number }> {
    let versions = 0
    let blobs = 0
    let bytes = 0
    const models = new Set<string>()
    for await (const [, record] of this.index.versionEntries()) { versions++; models.add(record.name) }
    for await (const [, blob] of this.index.blobEntries()) { blobs++; bytes += blob.size }
    return { models: models.size, versions, blobs, bytes }
  }

  /** The decoded manifest of a stored version (validated once, then cached: versions are immutable). */
  async manifestOf (version: VersionId): Promise<Manifest | undefined> {
    const cached = this.decoded.get(version)
    if (cached !== undefined) return cached
    const bytes = await this.index.manifestBytes(version)
    if (bytes === undefined) return undefined
    const manifest = decodeManifest(bytes, version)
    this.decoded.set(version, manifest)
    if (this.decoded.size > MANIFEST_CACHE_ENTRIES) this.decoded.delete(this.decoded.keys().next().value as VersionId)
    return manifest
  }

  // ---- chunks (`store/chunk-reads.ts`) -------------------------------------------------------

  async readChunk (id: ChunkId, options: { pooled?: boolean } = {}): Promise<Uint8Array | undefined> {
    return await this.chunks.readChunk(id, options)
  }

  async readChunkRange (id: ChunkId, start: number, length: number, options: { pooled?: boolean } = {}): Promise<Uint8Array | undefined> {
    return await this.chunks.readChunkRange(id, start, length, options)
  }

  async readSpan (id: ChunkId, blockSize: number, first: number, count: number, options: { pooled?: boolean, signal?: AbortSignal } = {}): Promise<Span | undefined> {
    return await this.chunks.readSpan(id, blockSize, first, count, options)
  }

  releaseChunk (bytes: Uint8Array): void {
    this.chunks.releaseChunk(bytes)
  }

  async heldChunks (ids: readonly ChunkId[]): Promise<Set<ChunkId>> {
    return await this.chunks.heldChunks(ids)
  }

  chunkWritten (id: ChunkId, at: ChunkPlace): void {
    this.chunks.chunkWritten(id, at)
  }

  async recordChunks (chunks: readonly RecordedChunk[], what: WriteContext): Promise<void> {
    await this.chunks.recordChunks(chunks, what)
  }

  chunksDropped (ids: Iterable<ChunkId>): void {
    this.chunks.chunksDropped(ids)
  }

  /**
   * Makes a version received from elsewhere visible, with its own manifest (creation time and
   * parent as published). Every file's blob MUST already be indexed. Idempotent.
   */
  async importVersion (version: VersionId, bytes: Uint8Array, options: { pin?: boolean, kept?: string } = {}): Promise<ResolvedVersion> {
    const manifest = decodeManifest(bytes, version)
    const missing = await this.missingFiles(manifest)
    if (missing.length > 0) throw new NotFoundError(`cannot import ${manifest.name}@${version}: missing ${missing.join(', ')}`)
    if (await this.index.version(version) === undefined) {
      const batch = this.index.batch().putVersion(version, bytes, { name: manifest.name, created: manifest.created, addedAt: Date.now() })
      if (options.pin === true) batch.putPin(manifest.name, version, { pinnedAt: Date.now() })
      await this.recordVersion(manifest.name, version, manifest, batch, {
        doing: `recording ${manifest.name}@${version}`,
        kept: options.kept ?? 'every file is stored, but the version was not added'
      })
    }
    return await this.resolve(`${manifest.name}@${version}`)
  }

  /** True when every file of the version is stored and the version is recorded. */
  async hasVersion (version: VersionId): Promise<boolean> {
    return await this.index.version(version) !== undefined
  }

  async versionRecord (version: VersionId): Promise<VersionRecord | undefined> {
    return await this.index.version(version)
  }

  versionIds (): AsyncIterable<VersionId> {
    return this.index.versionIds()
  }

  snapshotPath (name: string, version: VersionId): string {
    return this.layout.snapshot(name, version)
  }

  async coldRecord (version: VersionId): Promise<ColdRecord | undefined> {
    return await this.index.coldVersion(version)
  }

  // ---- leases and pull records ---------------------------------------------------------------

  leaseRecords (): AsyncIterable<LeaseRecord> {
    return this.index.leaseRecords()
  }

  async putLease (lease: LeaseRecord, what: WriteContext): Promise<void> {
    await this.index.batch().putLease(lease).commit(what)
  }

  async dropLease (id: string, what: WriteContext): Promise<void> {
    await this.index.batch().dropLease(id).commit(what)
  }

  pullRecords (): AsyncIterable<[VersionId, PullRecord]> {
    return this.index.pullEntries()
  }

  async pullRecord (version: VersionId): Promise<PullRecord | undefined> {
    return await this.index.pull(version)
  }

  async updatePullRecord (version: VersionId, record: PullRecord, what: WriteContext): Promise<void> {
    await this.index.batch().putPull(version, record).commit(what)
  }

  private async resolveVersion (name: string, selector: string | undefined): Promise<VersionId> {
    if (selector === undefined) {
      const latest = await this.index.label(name, 'latest')
      if (latest !== undefined) return latest.version
      const newest = await this.newest(name)
      if (newest === undefined) throw new NotFoundError(`no model named ${name} in this store`)
      return newest.version
    }
    if (isCid(selector)) {
      const record = await this.index.version(selector)
      if (record?.name !== name) throw new NotFoundError(`version ${selector} of ${name} is not in this store`)
      return selector
    }
    const label = await this.index.label(name, selector)
    if (label !== undefined) return label.version
    if (selector.length >= 8) {
      const matches = (await this.index.versionsOf(name)).filter(v => v.startsWith(selector))
      if (matches.length === 1 && matches[0] !== undefined) return matches[0]
      if (matches.length > 1) throw new InvalidInputError(`version prefix ${selector} of ${name} is ambiguous (${matches.length} versions); give more characters`)
    }
    throw new NotFoundError(`${name}@${selector} is neither a label nor a version in this store`)
  }

  private async info (name: string, version: VersionId, labels?: string[]): Promise<VersionInfo> {
    const record = await this.index.version(version)
    const manifest = await this.manifestOf(version)
    if (record === undefined || manifest === undefined) throw new NotFoundError(`version ${version} is missing from the index`)
    const allLabels = labels ?? Object.entries(await this.labels(name)).filter(([, v]) => v === version).map(([l]) => l)
    const cold = await this.index.coldVersion(version)
    return {
      name, version, created: record.created, addedAt: record.addedAt, labels: allLabels,
      pinned: await this.index.pin(name, version) !== undefined,
      size: manifest.files.reduce((n, f) => n + f.size, 0),
      files: manifest.files.length,
      complete: (await this.missingFiles(manifest, version)).length === 0,
      ...(cold !== undefined ? { cold: { at: cold.at, savedBytes: cold.rawBytes - cold.storedBytes } } : {})
    }
  }

  private async nextTimestamp (what: WriteContext): Promise<number> {
    const last = await this.index.clock() ?? 0
    const next = Math.max(Date.now(), last + 1)
    await this.index.batch().putClock(next).commit(what)
    return next
  }

  /**
   * Builds the version's snapshot, then commits `batch` (the records that make it visible). When
   * either fails, a snapshot this call made is removed again, so nothing of the version shows.
   */
  private async recordVersion (name: string, version: VersionId, manifest: Manifest, batch: IndexBatch, what: WriteContext): Promise<void> {
    await this.writable(what)
    const existed = await pathExists(this.layout.snapshot(name, version))
    try {
      await this.materialize(name, version, manifest)
      await batch.commit(what)
    } catch (err) {
      if (!existed) await rm(this.layout.snapshot(name, version), { recursive: true, force: true }).catch(() => {})
      throw this.failedWrite(err, what)
    }
  }

  // ---- snapshots and recovery ----------------------------------------------------------------

  /**
   * Builds `snapshots/<version>` in `tmp/`, fsyncs it, renames it into place. Idempotent. On a
   * failure nothing of it is left in `tmp/`; the error is the file system's (callers map it).
   */
  async materialize (name: string, version: VersionId, manifest: Manifest): Promise<string> {
    const final = this.layout.snapshot(name, version)
    if (await pathExists(final)) return final
    const tmp = join(this.layout.tmp, tmpName('snap'))
    try {
      const dirs = new Set<string>([tmp])
      for (const file of manifest.files) {
        const at = join(tmp, file.path)
        await mkdir(dirname(at), { recursive: true })
        dirs.add(dirname(at))
        // Link target computed as if the file were already at its final place.
        await symlink(this.layout.linkTarget(join(final, file.path), file.digest), at)
      }
      for (const dir of dirs) await fsyncDir(dir)
      await mkdir(dirname(final), { recursive: true })
      await rename(tmp, final)
      await fsyncDir(dirname(final))
      return final
    } catch (err) {
      await rm(tmp, { recursive: true, force: true })
      throw err
    }
  }

  /** Rewrites every `refs/<label>` file that does not say what the index says. */
  async syncRefs (): Promise<void> {
    await this.labelSerial(async () => {
      for await (const { model: name, label, record } of this.index.labelEntries()) {
        const path = this.layout.ref(name, label)
        const current = await readTextSafe(path)
        if (current?.trim() !== record.version) await this.writeRef(name, label, record.version, { doing: `syncing refs/${label} of ${name} with the index`, kept: 'the index still holds the label' })
      }
    })
  }

  /** Rebuilds a version's snapshot folder from its manifest. */
  async repairSnapshot (name: string, version: VersionId, manifest: Manifest): Promise<void> {
    const what = { doing: `rebuilding the snapshot of ${name}@${version}`, kept: 'the snapshot was not rebuilt' }
    await this.writable(what)
    await rm(this.layout.snapshot(name, version), { recursive: true, force: true })
    try {
      await this.materialize(name, version, manifest)
    } catch (err) {
      throw this.failedWrite(err, what)
    }
  }

  /**
   * Files of a manifest whose blobs are not (or no longer) in the store. Given the version: none for
   * a cold version (its chunks are held; `rematerialize` brings its files back).
   */
  async missingFiles (manifest: Manifest, version?: VersionId): Promise<string[]> {
    if (version !== undefined && await this.index.coldVersion(version) !== undefined) return []
    const records = await this.index.blobMany(manifest.files.map(f => f.digest))
    return manifest.files.filter((_, i) => records[i] === undefined).map(f => f.path)
  }

  /** Checks a snapshot entry is the expected link (used by verify). */
  async snapshotLinkOk (name: string, version: VersionId, path: string, digest: FileDigest): Promise<boolean> {
    const at = join(this.layout.snapshot(name, version), path)
    try {
      return (await readlink(at)) === this.layout.linkTarget(at, digest)
    } catch {
      return false
    }
  }
}

async function readTextSafe (path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8')
  } catch {
    return undefined
  }
}
