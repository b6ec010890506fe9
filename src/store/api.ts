/**
 * The store's API, as narrow interfaces (the shape of iroh-blobs' store traits): what the rest of
 * the daemon may ask of the store. `Store` implements all of them; a component takes the narrowest
 * one (or the few) it needs, so it cannot reach the index, the home's files or the read handles,
 * which stay private to `src/store/` (`store/internal.ts`).
 *
 * - `Catalogue`: versions, labels, pins and manifests — what a model is, which version a name
 *   means, what is kept.
 * - `ChunkReads`: whether chunks are held, and their bytes (whole, a range, or blocks with proofs)
 *   from wherever verified copies live (blob, partial file, cold file).
 * - `BlobSink`: what writers of bytes go through: `BlobWriter` (an add) and `PullTarget` (a pull).
 *   Hashing on the store's worker pool, the write guard, and the records that make written bytes
 *   known — including the chunks a pull has written but not yet recorded: the store keeps them and
 *   serves them at once (`chunkWritten`), and stops when they are recorded or dropped.
 * - `Leases`: the records of versions serving processes hold (`daemon/leases.ts` keeps the table).
 * - `PullRecords`: the pulls to resume after a restart, and their failed attempts.
 * - `HeadRecords`: signed heads, their history, and manifests known only through heads
 *   (`store/heads.ts`).
 *
 * Contracts: every write is acknowledged only once it is durable (one synced index batch, after
 * the bytes it names), and fails with `DiskFullError` or `StorageIoError` saying what was kept
 * (`WriteContext`). Reads never re-hash: bytes were verified before they were recorded.
 */
import type { ChunkId, FileDigest, VersionId } from '../core/digest.js'
import type { Manifest } from '../core/manifest.js'
import type { WriteContext } from '../util/fsutil.js'
import type { BlobWriter, WrittenBlob } from './blob-writer.js'
import type { HeadStore } from './heads.js'
import type { ColdRecord, LabelRecord, LeaseRecord, PullRecord, VersionRecord } from './index-db.js'
import type { ChunkPlace, CommitOptions, ManifestDraft, RecordedChunk, ResolvedVersion, Span, VersionInfo } from './store.js'

export type { ChunkPlace, ColdRecord, LabelRecord, LeaseRecord, PullRecord, RecordedChunk, VersionRecord }

/** Versions, labels, pins and manifests. */
export interface Catalogue {
  models: () => Promise<Array<{ name: string, versions: number, labels: Record<string, VersionId>, newest: VersionInfo }>>
  /** Versions of `name`, oldest first. @throws NotFoundError when there is none */
  versions: (name: string) => Promise<VersionInfo[]>
  newest: (name: string) => Promise<VersionInfo | undefined>
  /** `name`, `name@label`, `name@<version id>` or `name@<unique prefix>`. @throws NotFoundError */
  resolve: (ref: string) => Promise<ResolvedVersion>
  /** The record of a stored version (its model, when it was made and got here), or undefined. */
  versionRecord: (version: VersionId) => Promise<VersionRecord | undefined>
  /** Every stored version's id. */
  versionIds: () => AsyncIterable<VersionId>
  hasVersion: (version: VersionId) => Promise<boolean>
  isComplete: (version: VersionId) => Promise<boolean>
  /** The decoded manifest of a stored version (or one being pulled). */
  manifestOf: (version: VersionId) => Promise<Manifest | undefined>
  /** Where a version's snapshot folder is (or will be, once it is stored whole). */
  snapshotPath: (name: string, version: VersionId) => string
  /** How a cold (compressed) version is kept, or undefined for one that is not. */
  coldRecord: (version: VersionId) => Promise<ColdRecord | undefined>
  totals: () => Promise<{ models: number, versions: number, blobs: number, bytes: number }>
  labels: (name: string) => Promise<Record<string, VersionId>>
  allLabels: () => Promise<Array<{ model: string, label: string, version: VersionId }>>
  labelRecord: (name: string, label: string) => Promise<LabelRecord | undefined>
  /** Points `name@label` at `version`; with `expect`, only if it points there now. @throws ConflictError */
  setLabel: (name: string, label: string, version: VersionId, expect?: VersionId | null) => Promise<LabelRecord>
  removeLabel: (name: string, label: string) => Promise<void>
  pin: (name: string, version: VersionId) => Promise<void>
  unpin: (name: string, version: VersionId) => Promise<boolean>
  pinLabel: (name: string, label: string) => Promise<VersionId | undefined>
  unpinLabel: (name: string, label: string) => Promise<boolean>
  isLabelPinned: (name: string, label: string) => Promise<boolean>
  /** Makes a version of blobs already stored visible (an add). */
  commitVersion: (draft: ManifestDraft, options?: CommitOptions) => Promise<ResolvedVersion>
  /** Makes a version received from elsewhere visible with its own manifest (a pull). Idempotent. */
  importVersion: (version: VersionId, bytes: Uint8Array, options?: { pin?: boolean, kept?: string }) => Promise<ResolvedVersion>
  /** Brings a cold version back to files and a snapshot. */
  rematerialize: (version: VersionId, options?: { signal?: AbortSignal }) => Promise<void>
}

/** Chunks held, and their verified bytes. */
export interface ChunkReads {
  /** Which of `ids` this store holds (recorded, cold, or written by a pull and not yet recorded). */
  heldChunks: (ids: readonly ChunkId[]) => Promise<Set<ChunkId>>
  /** A whole chunk, or undefined; with `pooled`, in a buffer handed back with `releaseChunk`. */
  readChunk: (id: ChunkId, options?: { pooled?: boolean }) => Promise<Uint8Array | undefined>
  /** Bytes `[start, start + length)` of a chunk, or undefined; with `pooled`, as `readChunk`. */
  readChunkRange: (id: ChunkId, start: number, length: number, options?: { pooled?: boolean }) => Promise<Uint8Array | undefined>
  /** Blocks of a chunk with one proof each, to serve. */
  readSpan: (id: ChunkId, blockSize: number, first: number, count: number, options?: { pooled?: boolean, signal?: AbortSignal }) => Promise<Span | undefined>
  releaseChunk: (bytes: Uint8Array) => void
}

/** What writers of bytes (an add's `BlobWriter`, a pull's `PullTarget`) go through. */
export interface BlobSink {
  /** Resolves when the store takes writes. @throws DiskFullError | StorageIoError */
  writable: (what: WriteContext) => Promise<void>
  /** Maps a failed write made for the store: a disk failure trips its write guard. */
  failedWrite: (err: unknown, what: WriteContext) => unknown
  /** True when `bytes` hash to chunk `id` (on the worker pool when they are in shared memory). */
  chunkMatches: (bytes: Uint8Array | readonly Uint8Array[], id: ChunkId) => Promise<boolean>
  /** The leaf hash of one block. */
  leafHash: (block: Uint8Array | readonly Uint8Array[]) => Promise<Uint8Array>
  /**
   * Runs `fn` under the store's shared lock; blobs it registers with `hold` are kept from GC until
   * `fn` settles (by then the version that names them is committed, or the add failed).
   */
  withShared: <T>(fn: (hold: (digest: FileDigest) => void) => Promise<T>) => Promise<T>
  /** A writer of one file's bytes (an add). */
  createBlobWriter: (options?: { blockSize?: number }) => Promise<BlobWriter>
  /** Records a committed blob, its chunks' locations and their leaf layers. */
  indexBlob: (blob: WrittenBlob) => Promise<void>
  /** A verified chunk was written into a partial file: the store serves it from now on. */
  chunkWritten: (id: ChunkId, at: ChunkPlace) => void
  /** Records chunks written into partial files once their bytes are durable. */
  recordChunks: (chunks: readonly RecordedChunk[], what: WriteContext) => Promise<void>
  /** Chunks whose last copy in a partial file went: no longer served from it. */
  chunksDropped: (ids: Iterable<ChunkId>) => void
}

/** The records of leases (kept across restarts; the table of live ones is `daemon/leases.ts`). */
export interface Leases {
  leaseRecords: () => AsyncIterable<LeaseRecord>
  putLease: (lease: LeaseRecord, what: WriteContext) => Promise<void>
  dropLease: (id: string, what: WriteContext) => Promise<void>
}

/** The records of pulls to resume (`PullTarget` writes and drops them). */
export interface PullRecords {
  pullRecords: () => AsyncIterable<[VersionId, PullRecord]>
  pullRecord: (version: VersionId) => Promise<PullRecord | undefined>
  /** Replaces the record of a pull (e.g. to count a failed attempt). */
  updatePullRecord: (version: VersionId, record: PullRecord, what: WriteContext) => Promise<void>
}

/** Signed heads, their history, and manifests known through heads. */
export type HeadRecords = Pick<HeadStore, 'put' | 'get' | 'all' | 'history' | 'putKnownManifest' | 'manifest'>
