/**
 * The store's index: typed records over one LevelDB (or, in unit tests, memory-level).
 *
 * Read through named methods (`blob`, `locationsMany`, `versionEntries`, `label`, `pinsOf`, …) and
 * changed through a named batch (`batch().putVersion(…).putPin(…).commit(what)`): the store and its
 * modules never name a sublevel. (`store/heads.ts`, `store/search-index.ts` and
 * `store/leaf-store.ts` each keep the sublevels they own.) Nothing outside `src/store/` imports this
 * module (`eslint.config.js`).
 *
 * Sublevels and their records:
 * - `chunks`    chunk id → `[[file digest, offset, size], …]`: where verified bytes of a chunk live
 * - `blobs`     file digest → {@link BlobRecord}
 * - `manifests` version id → canonical manifest bytes
 * - `versions`  version id → {@link VersionRecord}
 * - `byModel`   `<name>\0<created, 16 digits>\0<version id>` → `''` (versions by timestamp)
 * - `labels`    `<name>\0<label>` → {@link LabelRecord}
 * - `pins`      `<name>\0<version id>` → {@link PinRecord}
 * - `partials`  file digest → {@link PartialRecord}: a file being pulled into `partial/`
 * - `pulls`     version id → {@link PullRecord}: pulls to resume after a restart
 * - `heads`     `<name>\0<label>` → {@link HeadRecord}: the winning signed head of each label
 * - `headLog`   `<name>\0<label>\0<wall, 16 digits>\0<counter, 10 digits>` → {@link HeadRecord}:
 *               every head that won in turn (label history), newest last, capped
 * - `known`     version id → canonical manifest bytes of versions named by heads but not stored
 * - `labelPins` `<name>\0<label>` → {@link PinRecord}: every version the label points at is pinned
 * - `search`    version id → `SearchDoc` (`core/search-doc.ts`): derived search records (`store/search-index.ts`)
 * - `leases`    lease id → lease record (see `daemon/leases.ts`): versions serving processes hold
 * - `leaves`    `<chunk id>\0<block size>` → the leaf hashes of the chunk's blocks at that size,
 *               concatenated (n × 32 bytes; `store/leaves.ts`): what proofs are served from. Written
 *               with the chunk's location (add, pull) or when first needed; kept while some blob or
 *               partial file holds the chunk
 * - `cold`      version id → {@link ColdRecord}: a version kept compressed (`store/cold.ts`)
 * - `coldChunks` chunk id → {@link ColdChunkRecord}: a chunk kept in `cold/<chunk id>`
 * - `meta`      `clock` → last `created` handed out; `schema` → index schema number
 *
 * Schema history (`meta` `schema`, upgraded at `open`): 1 → 2 added `leaves`; an index of schema 1
 * has none, and layers are computed when first needed, so the upgrade only writes the number.
 * 3 (`COLD_SCHEMA`) is written by the first compression, in its batch: an index that holds cold
 * versions must not be opened by a build that would take them for damaged ones. An index of a
 * newer schema is refused (the build that wrote it knows records this one does not).
 *
 * MUST hold:
 * - every change is one atomic batch written with `sync: true` through `commit` (nothing writes to
 *   a sublevel directly), made only after the bytes it points at are durable, and answered only
 *   once LevelDB has synced it;
 * - commits run one at a time: a batch never reaches LevelDB after one that failed before the
 *   write guard (`store/write-guard.ts`) has seen that failure;
 * - after a disk failure no batch is written until the index has been closed and opened again
 *   (repaired first if LevelDB reports corruption), with room on the disk: LevelDB's state after a
 *   failed write is not trusted. A reopen first waits (up to `REOPEN_DRAIN_MS`) for the reads in
 *   flight and the iterators open to finish; reads made meanwhile wait for the reopen, so no
 *   reader sees the index closed (an iterator still open at the deadline is closed under it).
 */
import type { AbstractLevel, AbstractSublevel } from 'abstract-level'
import type { ChunkId, FileDigest, VersionId } from '../core/digest.js'
import { StorageIoError } from '../core/errors.js'
import { failureDetail, type WriteContext } from '../util/fsutil.js'
import { WriteGuard } from './write-guard.js'
import { checkLayer, leavesKey } from './leaves.js'

export const INDEX_SCHEMA = 2
/** The schema of an index that holds cold versions (`cold`, `coldChunks`). */
export const COLD_SCHEMA = 3

/** `[file digest, offset, size]`: a verified copy of a chunk inside a blob or partial file. */
export type ChunkLocation = [FileDigest, number, number]

export interface BlobRecord {
  size: number
  /** `[chunk id, size]` in file order. */
  chunks: Array<[ChunkId, number]>
  /** When the bytes were written or last verified (ms). */
  verifiedAt: number
}

export interface VersionRecord {
  name: string
  created: number
  /** When this store got it (ms); differs from `created` for pulled versions. */
  addedAt: number
  /** Made by `add` on this node: the origins its manifest lists are the operator's own. */
  local?: boolean
}

export interface LabelRecord {
  version: VersionId
  updatedAt: number
  /** Earlier targets, newest first, capped at `MAX_LABEL_HISTORY`. */
  history: Array<{ version: VersionId, until: number }>
}

export interface PinRecord {
  pinnedAt: number
  /** Set when the pin was made by a label pin (`shoal pin name@label`); `unpin` of the label drops it. */
  via?: string
}

export interface HeadRecord {
  /** The signed head, base64 (see `core/heads.ts`). */
  head: string
  receivedAt: number
  /** Peer id it came from; absent when published here. */
  from?: string
}

export interface PartialRecord {
  size: number
  chunks: Array<[ChunkId, number]>
  startedAt: number
}

export interface PullRecord {
  name: string
  startedAt: number
  pin: boolean
  /** Attempts that failed so far; the pull is given up at `transfer.maxPullAttempts`. */
  attempts?: number
}

/** A version a serving process holds (`daemon/leases.ts`): GC keeps it until `expiresAt`. */
export interface LeaseRecord {
  id: string
  /** Who holds it: free text from the client (e.g. "inference-7 pid 1234"). */
  holder: string
  model: string
  version: VersionId
  path: string
  createdAt: number
  expiresAt: number
}

/** A version kept compressed: its snapshot and the blobs only it needed are gone. */
export interface ColdRecord {
  /** When it was compressed (ms). */
  at: number
  /** Bytes of the blobs removed. */
  rawBytes: number
  /** Bytes of the cold chunk files written for it (chunks other cold versions had written are not counted again). */
  storedBytes: number
}

/** A chunk kept in `cold/<chunk id>`. */
export interface ColdChunkRecord {
  size: number
  /** Bytes of its file. */
  stored: number
}

/** @default 100 */
export const MAX_LABEL_HISTORY = 100

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Db = AbstractLevel<any, string, any>
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Sub<V> = AbstractSublevel<Db, any, string, V>

export type IndexOp =
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  | { type: 'put', sublevel: Sub<any>, key: string, value: unknown }
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  | { type: 'del', sublevel: Sub<any>, key: string }

/**
 * How long a reopen waits for reads in flight and open iterators before it closes LevelDB anyway.
 * @default 5 s
 */
export const REOPEN_DRAIN_MS = 5_000

/** What an index write does and keeps when the caller does not say. */
export const INDEX_WRITE: WriteContext = { doing: 'updating the index', kept: 'the change was not recorded' }

export interface IndexOptions {
  /** The write guard; default: one that never finds room (unit tests of the index alone). */
  guard?: WriteGuard
  /** Repairs the LevelDB files when opening reports corruption (`ClassicLevel.repair`). */
  repair?: () => Promise<void>
  log?: { warn: (obj: object, msg?: string) => void, info: (obj: object, msg?: string) => void }
}

const silent = { warn () {}, info () {} }

export class IndexDb {
  readonly chunks: Sub<ChunkLocation[]>
  readonly blobs: Sub<BlobRecord>
  readonly manifests: Sub<Uint8Array>
  readonly versions: Sub<VersionRecord>
  readonly byModel: Sub<string>
  readonly labels: Sub<LabelRecord>
  readonly pins: Sub<PinRecord>
  readonly partials: Sub<PartialRecord>
  readonly pulls: Sub<PullRecord>
  readonly meta: Sub<unknown>
  readonly heads: Sub<HeadRecord>
  readonly headLog: Sub<HeadRecord>
  readonly known: Sub<Uint8Array>
  readonly labelPins: Sub<PinRecord>
  readonly search: Sub<import('../core/search-doc.js').SearchDoc>
  readonly leases: Sub<LeaseRecord>
  readonly leaves: Sub<Uint8Array>
  readonly cold: Sub<ColdRecord>
  readonly coldChunks: Sub<ColdChunkRecord>
  readonly guard: WriteGuard
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  private readonly sublevels: Array<Sub<any>>
  /** The commit (or reopen) in progress; the next one waits for it. */
  private writing: Promise<unknown> = Promise.resolve()
  /** Set while the index is being reopened: reads wait for it. */
  private reopening?: Promise<void>
  /** Reads in flight and iterators open; a reopen waits for them. */
  private reads = 0
  private drained?: () => void

  constructor (readonly db: Db, private readonly options: IndexOptions = {}) {
    this.guard = options.guard ?? new WriteGuard(async () => 0, options.log ?? silent)
    this.chunks = db.sublevel('chunks', { valueEncoding: 'json' })
    this.blobs = db.sublevel('blobs', { valueEncoding: 'json' })
    this.manifests = db.sublevel('manifests', { valueEncoding: 'view' })
    this.versions = db.sublevel('versions', { valueEncoding: 'json' })
    this.byModel = db.sublevel('byModel', { valueEncoding: 'utf8' })
    this.labels = db.sublevel('labels', { valueEncoding: 'json' })
    this.pins = db.sublevel('pins', { valueEncoding: 'json' })
    this.partials = db.sublevel('partials', { valueEncoding: 'json' })
    this.pulls = db.sublevel('pulls', { valueEncoding: 'json' })
    this.meta = db.sublevel('meta', { valueEncoding: 'json' })
    this.heads = db.sublevel('heads', { valueEncoding: 'json' })
    this.headLog = db.sublevel('headLog', { valueEncoding: 'json' })
    this.known = db.sublevel('known', { valueEncoding: 'view' })
    this.labelPins = db.sublevel('labelPins', { valueEncoding: 'json' })
    this.search = db.sublevel('search', { valueEncoding: 'json' })
    this.leases = db.sublevel('leases', { valueEncoding: 'json' })
    this.leaves = db.sublevel('leaves', { valueEncoding: 'view' })
    this.cold = db.sublevel('cold', { valueEncoding: 'json' })
    this.coldChunks = db.sublevel('coldChunks', { valueEncoding: 'json' })
    this.sublevels = [this.chunks, this.blobs, this.manifests, this.versions, this.byModel, this.labels, this.pins, this.partials, this.pulls, this.meta, this.heads, this.headLog, this.known, this.labelPins, this.search, this.leases, this.leaves, this.cold, this.coldChunks]
    for (const sub of this.sublevels) this.gateReads(sub)
  }

  async open (): Promise<void> {
    await this.openDb()
    const schema = await this.meta.get('schema')
    if (schema === undefined) await this.commit([{ type: 'put', sublevel: this.meta, key: 'schema', value: INDEX_SCHEMA }], { doing: 'creating the index', kept: 'the store was not created' })
    else if (schema === 1) {
      // 1 → 2: the `leaves` sublevel is new and starts empty (layers are computed when needed).
      await this.commit([{ type: 'put', sublevel: this.meta, key: 'schema', value: INDEX_SCHEMA }], { doing: 'upgrading the index to schema 2', kept: 'the index stays at schema 1; the next start tries again' })
      this.options.log?.info({ from: 1, to: INDEX_SCHEMA }, 'index upgraded')
    } else if (schema !== INDEX_SCHEMA && schema !== COLD_SCHEMA) {
      throw new StorageIoError(`the index has schema ${String(schema)}, which this build does not read (it reads schemas ${INDEX_SCHEMA} and ${COLD_SCHEMA} and upgrades 1): run the shoal release that wrote it, or a newer one`)
    }
  }

  async close (): Promise<void> {
    await this.serial(async () => { await this.db.close() })
  }

  /**
   * Writes `ops` as one synced batch, after the commits before it. `what` goes into the error when
   * the disk fails it (or failed an earlier write and the index could not be reopened yet).
   */
  async commit (ops: IndexOp[], what: WriteContext = INDEX_WRITE): Promise<void> {
    if (ops.length === 0) return
    await this.serial(async () => {
      await this.reopenIfTripped(what)
      try {
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        await this.db.batch(ops as any, { sync: true } as any)
      } catch (err) {
        throw this.guard.fail(err, what)
      }
    })
  }

  /**
   * Resolves when the store may write: at once when no write has failed; otherwise once the index
   * has been reopened cleanly (see the module doc). Throws the guard's refusal while there is no
   * room. Writers of files call it before they start.
   */
  async writable (what: WriteContext): Promise<void> {
    if (this.guard.tripped === undefined) return
    await this.serial(async () => { await this.reopenIfTripped(what) })
  }

  private async reopenIfTripped (what: WriteContext): Promise<void> {
    const free = await this.guard.roomToReopen(what)
    if (free === undefined) return
    let release = (): void => {}
    this.reopening = new Promise(resolve => { release = resolve })
    try {
      await this.drain()
      await this.db.close()
      await this.openDb()
      for (const sub of this.sublevels) await sub.open()
    } catch (err) {
      const mapped = this.guard.fail(err, { doing: 'reopening the index after a failed write', kept: what.kept })
      throw err instanceof StorageIoError ? err : mapped
    } finally {
      this.reopening = undefined
      release()
    }
    this.guard.cleared(free)
  }

  /** Resolves once no read is in flight and no iterator open, or after `REOPEN_DRAIN_MS`. */
  private async drain (): Promise<void> {
    if (this.reads === 0) return
    await new Promise<void>(resolve => {
      const timer = setTimeout(resolve, REOPEN_DRAIN_MS)
      this.drained = () => { clearTimeout(timer); resolve() }
    })
    this.drained = undefined
  }

  private readDone (): void {
    if (--this.reads === 0) this.drained?.()
  }

  /**
   * Makes `sub`'s reads count as in flight, and wait while the index reopens: `get`, `getMany`,
   * `has` and `hasMany` wait; `iterator`, `keys` and `values` called meanwhile return iterators
   * that open once it is done.
   */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  private gateReads (sub: Sub<any>): void {
    const target = sub as unknown as Record<string, AnyFn>
    const settled = async (): Promise<void> => { while (this.reopening !== undefined) await this.reopening }
    for (const name of ['get', 'getMany', 'has', 'hasMany']) {
      const read = (target[name] as AnyFn).bind(sub)
      target[name] = async (...args: unknown[]) => {
        await settled()
        this.reads++
        try {
          return await read(...args)
        } finally {
          this.readDone()
        }
      }
    }
    for (const name of ['iterator', 'keys', 'values']) {
      const open = (target[name] as AnyFn).bind(sub)
      target[name] = (...args: unknown[]) => this.reopening === undefined
        ? this.counted(open(...args))
        : new LateIterator(async () => { await settled(); return this.counted(open(...args)) })
    }
  }

  /** Counts `iterator` as a read until it is closed (as `for await` and `all()` do). */
  private counted (iterator: IteratorLike): IteratorLike {
    this.reads++
    const close = iterator.close.bind(iterator)
    let open = true
    iterator.close = async () => {
      if (open) {
        open = false
        this.readDone()
      }
      await close()
    }
    return iterator
  }

  /** Opens LevelDB; when it reports corruption and a repair is available, repairs and opens again. */
  private async openDb (): Promise<void> {
    try {
      await this.db.open()
    } catch (err) {
      const repair = this.options.repair
      if (repair === undefined || !isCorruption(err)) throw err
      this.options.log?.warn({ err: failureDetail(err) }, 'the index reports corruption: repairing it (LevelDB repair keeps every record it can read)')
      try {
        await repair()
        await this.db.open()
      } catch (again) {
        throw new StorageIoError(`the index at its home is corrupt and could not be repaired (${failureDetail(again)}): restore it from a backup, or move index/ away and re-add or pull the models`, { cause: again })
      }
    }
  }

  private async serial<T> (fn: () => Promise<T>): Promise<T> {
    const run = this.writing.then(fn)
    this.writing = run.catch(() => {})
    return await run
  }

  // ---- named reads (what the store's modules ask of the index) --------------------------------

  /** A new batch of named changes, written by its `commit` as one synced batch. */
  batch (): IndexBatch {
    return new IndexBatch(this)
  }

  async blob (digest: FileDigest): Promise<BlobRecord | undefined> {
    return await this.blobs.get(digest)
  }

  async blobMany (digests: readonly FileDigest[]): Promise<Array<BlobRecord | undefined>> {
    return digests.length === 0 ? [] : await this.blobs.getMany([...digests])
  }

  /** Every blob record, in digest order. */
  blobEntries (): AsyncIterable<[FileDigest, BlobRecord]> {
    return this.blobs.iterator() as AsyncIterable<[FileDigest, BlobRecord]>
  }

  /** Where verified copies of chunk `id` live in blobs and partial files (undefined: none). */
  async locations (id: ChunkId): Promise<ChunkLocation[] | undefined> {
    return await this.chunks.get(id)
  }

  async locationsMany (ids: readonly ChunkId[]): Promise<Array<ChunkLocation[] | undefined>> {
    return ids.length === 0 ? [] : await this.chunks.getMany([...ids])
  }

  async version (version: VersionId): Promise<VersionRecord | undefined> {
    return await this.versions.get(version)
  }

  versionEntries (): AsyncIterable<[VersionId, VersionRecord]> {
    return this.versions.iterator() as AsyncIterable<[VersionId, VersionRecord]>
  }

  versionIds (): AsyncIterable<VersionId> {
    return this.versions.keys() as AsyncIterable<VersionId>
  }

  /** Manifest bytes of a stored version or of a version being pulled. */
  async manifestBytes (version: VersionId): Promise<Uint8Array | undefined> {
    return await this.manifests.get(version)
  }

  async pin (name: string, version: VersionId): Promise<PinRecord | undefined> {
    return await this.pins.get(IndexDb.pairKey(name, version))
  }

  /** Every pinned version with the model it is pinned in. */
  async * pinEntries (): AsyncGenerator<{ name: string, version: VersionId, record: PinRecord }> {
    for await (const [key, record] of this.pins.iterator()) {
      const [name, version] = IndexDb.splitKey(key)
      if (name !== undefined && version !== undefined) yield { name, version, record }
    }
  }

  /** Every label with its record. */
  async * labelEntries (): AsyncGenerator<{ model: string, label: string, record: LabelRecord }> {
    for await (const [key, record] of this.labels.iterator()) {
      const [model, label] = IndexDb.splitKey(key)
      if (model !== undefined && label !== undefined) yield { model, label, record }
    }
  }

  async label (name: string, label: string): Promise<LabelRecord | undefined> {
    return await this.labels.get(IndexDb.pairKey(name, label))
  }

  /** The labels of model `name`, in label order. */
  async * labelsOf (name: string): AsyncGenerator<{ label: string, record: LabelRecord }> {
    for await (const [key, record] of this.labels.iterator(IndexDb.range(name))) yield { label: IndexDb.splitKey(key)[1] ?? '', record }
  }

  async labelPin (name: string, label: string): Promise<PinRecord | undefined> {
    return await this.labelPins.get(IndexDb.pairKey(name, label))
  }

  /** The pinned versions of model `name`. */
  async * pinsOf (name: string): AsyncGenerator<{ version: VersionId, record: PinRecord }> {
    for await (const [key, record] of this.pins.iterator(IndexDb.range(name))) yield { version: IndexDb.splitKey(key)[1] ?? '', record }
  }

  /** The versions of model `name`, oldest first (by `created`). */
  async versionsOf (name: string): Promise<VersionId[]> {
    return (await this.keysOf(this.byModel, name)).map(key => IndexDb.splitKey(key)[2] ?? '')
  }

  /** The newest version of model `name` (by `created`). */
  async newestOf (name: string): Promise<VersionId | undefined> {
    const keys = await this.byModel.keys({ ...IndexDb.range(name), reverse: true, limit: 1 }).all()
    return keys[0] === undefined ? undefined : IndexDb.splitKey(keys[0])[2]
  }

  /** Every stored version with its model, by model and then `created`. */
  async * modelVersions (): AsyncGenerator<{ name: string, version: VersionId }> {
    for await (const key of this.byModel.keys()) {
      const [name, , version] = IndexDb.splitKey(key)
      if (name !== undefined && version !== undefined) yield { name, version }
    }
  }

  /** The last `created` handed out (`meta` `clock`). */
  async clock (): Promise<number | undefined> {
    return await this.meta.get('clock') as number | undefined
  }

  async partial (digest: FileDigest): Promise<PartialRecord | undefined> {
    return await this.partials.get(digest)
  }

  async partialDigests (): Promise<FileDigest[]> {
    return await this.partials.keys().all()
  }

  async pull (version: VersionId): Promise<PullRecord | undefined> {
    return await this.pulls.get(version)
  }

  pullEntries (): AsyncIterable<[VersionId, PullRecord]> {
    return this.pulls.iterator() as AsyncIterable<[VersionId, PullRecord]>
  }

  pullVersions (): AsyncIterable<VersionId> {
    return this.pulls.keys() as AsyncIterable<VersionId>
  }

  leaseRecords (): AsyncIterable<LeaseRecord> {
    return this.leases.values() as AsyncIterable<LeaseRecord>
  }

  /** Keys of every recorded leaf layer (`<chunk id>\0<block size>`, see `store/leaves.ts`). */
  leafKeys (): AsyncIterable<string> {
    return this.leaves.keys() as AsyncIterable<string>
  }

  async leafLayer (id: ChunkId, blockSize: number): Promise<Uint8Array | undefined> {
    return await this.leaves.get(leavesKey(id, blockSize))
  }

  async leafLayersMany (id: ChunkId, blockSizes: readonly number[]): Promise<Array<Uint8Array | undefined>> {
    return blockSizes.length === 0 ? [] : await this.leaves.getMany(blockSizes.map(size => leavesKey(id, size)))
  }

  async coldVersion (version: VersionId): Promise<ColdRecord | undefined> {
    return await this.cold.get(version)
  }

  coldVersionIds (): AsyncIterable<VersionId> {
    return this.cold.keys() as AsyncIterable<VersionId>
  }

  async coldChunk (id: ChunkId): Promise<ColdChunkRecord | undefined> {
    return await this.coldChunks.get(id)
  }

  async coldChunkMany (ids: readonly ChunkId[]): Promise<Array<ColdChunkRecord | undefined>> {
    return ids.length === 0 ? [] : await this.coldChunks.getMany([...ids])
  }

  coldChunkIds (): AsyncIterable<ChunkId> {
    return this.coldChunks.keys() as AsyncIterable<ChunkId>
  }

  static modelKey (name: string, created: number, version: VersionId): string {
    return `${name}\0${String(created).padStart(16, '0')}\0${version}`
  }

  static pairKey (name: string, second: string): string {
    return `${name}\0${second}`
  }

  static splitKey (key: string): string[] {
    return key.split('\0')
  }

  /** Keys of `sub` that start with `<name>\0`, in order. */
  async keysOf<V> (sub: Sub<V>, name: string): Promise<string[]> {
    return await sub.keys(IndexDb.range(name)).all()
  }

  /** The key range of records of model `name` (keys `<name>\0…`). */
  static range (name: string): { gt: string, lt: string } {
    return { gt: `${name}\0`, lt: `${name}\u0001` }
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyFn = (...args: any[]) => any

/** What callers use of a LevelDB iterator. */
interface IteratorLike {
  next: () => Promise<unknown>
  all: () => Promise<unknown[]>
  close: () => Promise<void>
  [Symbol.asyncIterator]: () => AsyncIterator<unknown>
}

/** An iterator asked for while the index reopens: the real one is opened after. */
class LateIterator implements IteratorLike {
  private real?: Promise<IteratorLike>

  constructor (private readonly open: () => Promise<IteratorLike>) {}

  private async iterator (): Promise<IteratorLike> {
    return await (this.real ??= this.open())
  }

  async next (): Promise<unknown> {
    return await (await this.iterator()).next()
  }

  async all (): Promise<unknown[]> {
    return await (await this.iterator()).all()
  }

  async close (): Promise<void> {
    await (await this.real)?.close()
  }

  async * [Symbol.asyncIterator] (): AsyncGenerator<unknown> {
    // The real iterator's own generator closes it when the loop ends.
    const real = await this.iterator()
    yield * { [Symbol.asyncIterator]: () => real[Symbol.asyncIterator]() }
  }
}

function isCorruption (err: unknown): boolean {
  for (let at = err as { code?: unknown, cause?: unknown } | undefined; at !== undefined && at !== null; at = at.cause as typeof at) {
    if (at.code === 'LEVEL_CORRUPTION') return true
  }
  return false
}

/**
 * Named changes to the index, collected and then written by `commit` as one synced batch (see
 * `IndexDb.commit`). Each method adds one or a few records' changes; nothing is written before
 * `commit`.
 */
export class IndexBatch {
  private readonly ops: IndexOp[] = []

  constructor (private readonly index: IndexDb) {}

  /** Changes collected so far. */
  get size (): number {
    return this.ops.length
  }

  async commit (what: WriteContext = INDEX_WRITE): Promise<void> {
    await this.index.commit(this.ops.splice(0), what)
  }

  putBlob (digest: FileDigest, record: BlobRecord): this {
    return this.put(this.index.blobs, digest, record)
  }

  dropBlob (digest: FileDigest): this {
    return this.del(this.index.blobs, digest)
  }

  /** Sets where chunk `id` lives; an empty list drops its record. */
  setLocations (id: ChunkId, locations: ChunkLocation[]): this {
    return locations.length === 0 ? this.del(this.index.chunks, id) : this.put(this.index.chunks, id, locations)
  }

  /** Records a version: its manifest bytes, its record, and its place among its model's versions. */
  putVersion (version: VersionId, bytes: Uint8Array, record: VersionRecord): this {
    return this.put(this.index.manifests, version, bytes).put(this.index.versions, version, record).put(this.index.byModel, IndexDb.modelKey(record.name, record.created, version), '')
  }

  putPin (name: string, version: VersionId, record: PinRecord): this {
    return this.put(this.index.pins, IndexDb.pairKey(name, version), record)
  }

  dropPin (name: string, version: VersionId): this {
    return this.del(this.index.pins, IndexDb.pairKey(name, version))
  }

  putLabel (name: string, label: string, record: LabelRecord): this {
    return this.put(this.index.labels, IndexDb.pairKey(name, label), record)
  }

  dropLabel (name: string, label: string): this {
    return this.del(this.index.labels, IndexDb.pairKey(name, label))
  }

  putLabelPin (name: string, label: string, record: PinRecord): this {
    return this.put(this.index.labelPins, IndexDb.pairKey(name, label), record)
  }

  dropLabelPin (name: string, label: string): this {
    return this.del(this.index.labelPins, IndexDb.pairKey(name, label))
  }

  /** Records the last `created` handed out. */
  putClock (created: number): this {
    return this.put(this.index.meta, 'clock', created)
  }

  /** Drops a version's manifest and records (not its pins, labels or cold record). */
  dropVersion (name: string, created: number, version: VersionId): this {
    return this.del(this.index.manifests, version).del(this.index.versions, version).del(this.index.byModel, IndexDb.modelKey(name, created, version))
  }

  putManifest (version: VersionId, bytes: Uint8Array): this {
    return this.put(this.index.manifests, version, bytes)
  }

  dropManifest (version: VersionId): this {
    return this.del(this.index.manifests, version)
  }

  /** Records a version kept compressed, and the schema that says the index holds such versions. */
  putColdVersion (version: VersionId, record: ColdRecord): this {
    return this.put(this.index.cold, version, record).put(this.index.meta, 'schema', COLD_SCHEMA)
  }

  dropColdVersion (version: VersionId): this {
    return this.del(this.index.cold, version)
  }

  putColdChunk (id: ChunkId, record: ColdChunkRecord): this {
    return this.put(this.index.coldChunks, id, record)
  }

  dropColdChunk (id: ChunkId): this {
    return this.del(this.index.coldChunks, id)
  }

  /**
   * Records chunk `id`'s leaf layer at `blockSize`; `leaves` MUST come from bytes that hash to
   * `id`. Checked for shape (`checkLayer`; `chunkSize`, when given, fixes the leaf count).
   * @throws InvalidInputError for a block size or a layer of the wrong shape
   */
  putLeaves (id: ChunkId, blockSize: number, leaves: Uint8Array, chunkSize?: number): this {
    return this.put(this.index.leaves, leavesKey(id, blockSize), checkLayer(id, blockSize, leaves, chunkSize))
  }

  /** Drops one leaf layer by its key (`leafKeys`). */
  dropLeaves (key: string): this {
    return this.del(this.index.leaves, key)
  }

  putPartial (digest: FileDigest, record: PartialRecord): this {
    return this.put(this.index.partials, digest, record)
  }

  dropPartial (digest: FileDigest): this {
    return this.del(this.index.partials, digest)
  }

  putPull (version: VersionId, record: PullRecord): this {
    return this.put(this.index.pulls, version, record)
  }

  dropPull (version: VersionId): this {
    return this.del(this.index.pulls, version)
  }

  putLease (lease: LeaseRecord): this {
    return this.put(this.index.leases, lease.id, lease)
  }

  dropLease (id: string): this {
    return this.del(this.index.leases, id)
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  private put (sublevel: Sub<any>, key: string, value: unknown): this {
    this.ops.push({ type: 'put', sublevel, key, value })
    return this
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  private del (sublevel: Sub<any>, key: string): this {
    this.ops.push({ type: 'del', sublevel, key })
    return this
  }
}
