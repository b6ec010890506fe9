/**
 * The store's index: typed records over one LevelDB (or, in unit tests, memory-level).
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
 * - `meta`      `clock` → last `created` handed out; `schema` → index schema number
 *
 * Every multi-record change is one atomic batch written with `sync: true`, and is made only after
 * the bytes it points at are durable.
 */
import type { AbstractLevel, AbstractSublevel } from 'abstract-level'
import type { ChunkId, FileDigest, VersionId } from '../core/digest.js'

export const INDEX_SCHEMA = 1

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
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly leases: Sub<any>

  constructor (readonly db: Db) {
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
  }

  async open (): Promise<void> {
    await this.db.open()
    const schema = await this.meta.get('schema')
    if (schema === undefined) await this.meta.put('schema', INDEX_SCHEMA)
    else if (schema !== INDEX_SCHEMA) throw new Error(`index schema ${String(schema)} is not supported by this build (expects ${INDEX_SCHEMA})`)
  }

  async close (): Promise<void> {
    await this.db.close()
  }

  async commit (ops: IndexOp[]): Promise<void> {
    if (ops.length === 0) return
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    await this.db.batch(ops as any, { sync: true } as any)
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
    return await sub.keys({ gt: `${name}\0`, lt: `${name}\u0001` }).all()
  }
}
