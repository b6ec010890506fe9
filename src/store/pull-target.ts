/**
 * The receiving end of a pull: verifies blocks as they arrive, assembles them into chunks, writes
 * verified chunks of one version into `partial/` files and turns them into blobs, then into a
 * visible version.
 *
 * Blocks (`putBlock`): a chunk of several blocks is assembled in memory, in one pooled buffer per
 * chunk in progress (a few at once: the scheduler finishes chunks it
 * started). Each block is checked against the chunk's tree root from the manifest by its proof
 * (`core/tree.ts`, the leaf hashed on the store's worker pool) before it counts, and from then on it is
 * servable to peers with its proof (cut-through: `readBlocks`, announced by the `blocks` event).
 * When the last block is in, the whole chunk is hashed once more and must match its id — so the
 * store never indexes bytes under an id they do not have, whatever root a manifest claims — then
 * it is written like a chunk that came whole. A chunk of one block is verified by its id alone.
 * A crash loses the chunks being assembled; whole chunks resume.
 *
 * MUST hold:
 * - `put` and `putBlock` verify the bytes before anything is written or counted (verify on put),
 *   and a chunk is written only where the manifest lists that id with exactly that many bytes;
 * - a chunk is servable (`Store.readChunk`) as soon as it is written and verified; it is indexed
 *   (and so survives a crash) after the file's data is fdatasync'ed, in batches (`flush`);
 * - after a crash, verified chunks that were indexed are kept and the pull resumes from them;
 *   anything not indexed is fetched again;
 * - a file becomes a blob (fsync, rename into `blobs/`) only when it is proven whole (below), and
 *   the version becomes visible (`importVersion`) only when all its files are blobs;
 * - nothing is written before the pull is accepted: `open` checks the free space in `partial/`
 *   against what the pull still needs (`DiskFullError` saying both) before any record or file.
 *   Partial files are never preallocated or extended to their size: they grow as chunks land
 *   (a manifest may declare any size: a file holds only what arrived).
 *
 * Whole, proven structurally rather than by re-hashing: the manifest's chunk sizes add up to the
 * file size and one id has one size (`core/manifest.ts`), so the chunk positions tile the file
 * exactly; a position is marked present only after bytes that hashed to its id, of exactly its
 * size, were written there (or, on resume, when the index says so with that size); a file is
 * promoted only when every position is present and its length on disk is its size. Re-hashing
 * each file before promotion would prove the same at the cost of reading every pulled byte again.
 *
 * Chunk positions: the same chunk id may occur several times in a version (padding, repeated
 * tensors); one `put` fills every position. Chunks the store already holds elsewhere are copied
 * locally (`copyLocal`), never fetched.
 *
 * `discard` removes a pull that will not be resumed (cancelled, given up): its record, its partial
 * files and their chunk locations. `gc` reclaims what a pull left without a record.
 */
import { EventEmitter } from 'node:events'
import { constants } from 'node:fs'
import { open, chmod, rename, rm, stat, statfs, type FileHandle } from 'node:fs/promises'
import { BufferPool } from '../core/buffer-pool.js'
import { MAX_CHUNK_SIZE } from '../core/chunking.js'
import { byteLength, type ChunkId, type FileDigest, type VersionId } from '../core/digest.js'
import { DigestMismatchError, DiskFullError, MalformedDataError } from '../core/errors.js'
import { blockSizeOf, chunkRootOf, decodeManifest, type Manifest } from '../core/manifest.js'
import { blockCount, blockRange, equalBytes, joinHashes, proofOf, rootFromProof, splitHashes } from '../core/tree.js'
import { DirectWrites } from './direct-io.js'
import { fsyncDir, isErrno, writeAt, type WriteContext } from '../util/fsutil.js'
import type { IndexBatch } from './index-db.js'
import { partsOf } from './internal.js'
import type { RecordedChunk, ResolvedVersion, Store } from './store.js'

/** Indexed (durable) progress is written at least this often. @default 500 ms */
export const FLUSH_INTERVAL_MS = 500
/** ...or after this many unflushed bytes. @default 64 MiB */
export const FLUSH_BYTES = 64 * 1024 * 1024

/**
 * Assembly buffers (one of `MAX_CHUNK_SIZE` per chunk being assembled) kept for reuse. How many
 * chunks are assembled at once is not bounded here: the scheduler asks for pieces of chunks it
 * started before new ones, which keeps it to a few.
 * why: docs/decisions/0011-buffer-pools.md, docs/decisions/0012-started-chunks-first.md @default 8
 */
export const MAX_ASSEMBLING = 8

/** Assembly buffers, shared by every pull of the process (`SharedArrayBuffer`s: hashed on workers). */
const assemblyPool = new BufferPool(MAX_CHUNK_SIZE, { maxPooled: MAX_ASSEMBLING })

/** A chunk being assembled from its blocks. */
interface Assembly {
  buffer: Uint8Array
  /** Per block: verified and in the buffer. */
  present: Uint8Array
  count: number
  /** Per block: its leaf hash and proof, once verified. */
  leaves: Array<Uint8Array | undefined>
  proofs: Array<Uint8Array | undefined>
  /** Blocks being verified now: a second copy waits for the first's outcome. */
  verifying: Map<number, Promise<boolean>>
}

/** What a pull keeps when a write fails: part of its disk-full message. */
export const PULL_KEPT = 'the chunks verified so far are kept in partial/, and the pull resumes from them when it is run again (or when the daemon restarts)'

/** Where a chunk goes: file, index in the file's list, index in the version, byte offset, and its size there. */
interface Position { file: number, chunk: number, global: number, offset: number, size: number }

export interface PullTargetOptions {
  /** Pin the version once complete. @default true */
  pin?: boolean
  /** `decodeManifest(manifestBytes, version)`, when the caller has it already (a large manifest costs seconds to decode). */
  manifest?: Manifest
  /** Which origin URLs of the manifest may be used (`originOf`). @default none */
  origins?: (url: string) => boolean
  /** Free bytes in `dir`. @default the file system's count for unprivileged users (statfs) */
  freeBytes?: (dir: string) => Promise<number>
}

/** Files of pulls open in this process, per store: `gc` leaves them alone. */
const openFiles = new WeakMap<Store, Map<FileDigest, number>>()

/** Digests of files that pulls open in this process are writing (their partials are live). */
export function pullingFiles (store: Store): ReadonlySet<FileDigest> {
  return new Set(openFiles.get(store)?.keys())
}

interface FileState {
  digest: FileDigest
  path: string
  size: number
  /** Per chunk of the file: present (written and verified). */
  present: Uint8Array
  remaining: number
  /** Bytes of the chunks present: the file's size once whole. */
  presentBytes: number
  /** `partial/` was fsynced since this file was created (by its first write). */
  dirSynced?: boolean
  complete: boolean
  fh?: FileHandle
  /** The pending open of `fh`, shared by concurrent puts so the file is opened once. */
  opening?: Promise<FileHandle>
  /** The file's O_DIRECT handle (see `direct-io.ts`); null where direct writes are not available. */
  direct?: Promise<DirectWrites | null>
  dirty: boolean
}

export interface PullTargetEvents {
  /** Chunks now whole and written, by global index. */
  have: [indices: number[]]
  /** Blocks now verified (servable) of a chunk in progress, at each global index of the chunk. */
  blocks: [ranges: Array<{ chunk: number, first: number, count: number }>]
  file: [path: string]
  /** A flush recorded `chunks` chunks (`bytes` bytes) in the index: they survive a crash from now on. */
  recorded: [chunks: number, bytes: number]
  complete: []
}

export class PullTarget extends EventEmitter<PullTargetEvents> {
  readonly manifest: Manifest
  /** Global chunk index → present. */
  readonly bits: Uint8Array
  readonly totalChunks: number
  readonly totalBytes: number
  private readonly files: FileState[] = []
  private readonly positions = new Map<ChunkId, Position[]>()
  private readonly sizes = new Map<ChunkId, number>()
  private readonly missing = new Set<ChunkId>()
  /** Global chunk index → chunk id. */
  private readonly ids: ChunkId[] = []
  private unflushed: Array<{ id: ChunkId, position: Position }> = []
  private unflushedBytes = 0
  private timer?: NodeJS.Timeout
  private flushing: Promise<void> = Promise.resolve()
  private flushQueued = false
  private presentBytes = 0
  private closed = false
  /** Puts writing their bytes now. */
  private readonly writing = new Set<Promise<void>>()
  /** The version's block size. */
  readonly blockSize: number
  private readonly roots = new Map<ChunkId, Uint8Array>()
  private readonly assembling = new Map<ChunkId, Assembly>()
  /** Leaf layers of chunks assembled by this pull (for proofs when serving them). */
  private readonly leafLayers = new Map<ChunkId, Uint8Array[]>()
  /** Bytes of whole chunks between their last block (or `put`) and the end of their write. */
  private backlog = 0

  private constructor (private readonly store: Store, readonly version: VersionId, readonly manifestBytes: Uint8Array, manifest: Manifest, private readonly originAllowed: (url: string) => boolean) {
    super()
    this.manifest = manifest
    let global = 0
    let bytes = 0
    for (const [fi, file] of this.manifest.files.entries()) {
      let offset = 0
      for (const [ci, c] of file.chunks.entries()) {
        const list = this.positions.get(c.id) ?? []
        list.push({ file: fi, chunk: ci, global, offset, size: c.size })
        this.positions.set(c.id, list)
        this.sizes.set(c.id, c.size)
        const root = chunkRootOf(c)
        if (root !== undefined) this.roots.set(c.id, root)
        this.ids.push(c.id)
        offset += c.size
        global++
      }
      bytes += file.size
    }
    this.totalChunks = global
    this.totalBytes = bytes
    this.bits = new Uint8Array(Math.ceil(global / 8))
    this.blockSize = blockSizeOf(manifest)
    const files = openFiles.get(store) ?? new Map<FileDigest, number>()
    openFiles.set(store, files)
    for (const f of this.manifest.files) files.set(f.digest, (files.get(f.digest) ?? 0) + 1)
  }

  /**
   * Opens (or resumes) the pull of `version`. The manifest bytes MUST hash to `version`.
   *
   * @throws DiskFullError when `partial/` has less free space than the pull still needs; nothing is written then
   */
  static async open (store: Store, version: VersionId, manifestBytes: Uint8Array, options: PullTargetOptions = {}): Promise<PullTarget> {
    const manifest = options.manifest ?? decodeManifest(manifestBytes, version)
    await checkSpace(store, version, manifest, options.freeBytes ?? freeBytes)
    const target = new PullTarget(store, version, manifestBytes, manifest, options.origins ?? (() => false))
    try {
      await target.init(options.pin ?? true)
    } catch (err) {
      await target.close()
      throw err
    }
    return target
  }

  /**
   * Removes a pull that will not be resumed: its record, the partial files no other recorded pull
   * needs, their chunk locations, and its manifest unless the version is stored. Call it only
   * once the pull's target is closed. Idempotent.
   */
  static async discard (store: Store, version: VersionId): Promise<{ files: number, bytes: number }> {
    const { index } = partsOf(store)
    const bytes = await index.manifestBytes(version)
    const manifest = bytes === undefined ? undefined : decodeManifest(bytes, version)
    const batch = index.batch().dropPull(version)
    if (await index.version(version) === undefined) batch.dropManifest(version)
    // Files another recorded pull also needs stay.
    const shared = new Set<FileDigest>()
    for await (const other of index.pullVersions()) {
      if (other === version) continue
      const b = await index.manifestBytes(other)
      if (b !== undefined) for (const f of decodeManifest(b, other).files) shared.add(f.digest)
    }
    const live = pullingFiles(store)
    const drop = [...new Set((manifest?.files ?? []).map(f => f.digest))].filter(d => !shared.has(d) && !live.has(d))
    const freed = await dropPartials(store, drop, batch)
    return { files: freed.length, bytes: freed.reduce((n, f) => n + f.bytes, 0) }
  }

  /** Nothing is left to fetch (the last chunks may still be being written: see `allPresent`). */
  get done (): boolean {
    return this.missing.size === 0
  }

  /** Every chunk is written and servable: only now may this node tell peers it has the whole version. */
  get allPresent (): boolean {
    return this.presentBytes === this.totalBytes
  }

  get bytesPresent (): number {
    return this.presentBytes
  }

  /** Chunk ids still needed, each once. */
  needed (): ChunkId[] {
    return [...this.missing]
  }

  isMissing (id: ChunkId): boolean {
    return this.missing.has(id)
  }

  sizeOf (id: ChunkId): number {
    return this.sizes.get(id) ?? 0
  }

  /** Global indices where `id` occurs. */
  indicesOf (id: ChunkId): number[] {
    return (this.positions.get(id) ?? []).map(p => p.global)
  }

  chunkAt (index: number): ChunkId | undefined {
    return this.ids[index]
  }

  /** The first allowed origin URL of a file holding `id` (`PullTargetOptions.origins`), with the chunk's offset in it. */
  originOf (id: ChunkId): { url: string, offset: number } | undefined {
    for (const p of this.positions.get(id) ?? []) {
      const url = this.manifest.files[p.file]?.origins?.find(u => this.originAllowed(u))
      if (url !== undefined) return { url, offset: p.offset }
    }
    return undefined
  }

  /** Whether block `index` of `id` still has to be fetched (not verified here). */
  blockMissing (id: ChunkId, index: number): boolean {
    if (!this.missing.has(id)) return false
    return this.assembling.get(id)?.present[index] !== 1
  }

  /** Whether the chunk at global index `index` is written and verified here (servable, readable). */
  hasChunkAt (index: number): boolean {
    return ((this.bits[index >> 3] ?? 0) & (0x80 >> (index & 7))) !== 0
  }

  /** Whether chunk `id` is being assembled (some of its blocks are here). */
  isAssembling (id: ChunkId): boolean {
    return this.assembling.has(id)
  }

  /**
   * Verified blocks `[first, first + count)` of a chunk in progress, copied out, with their proofs
   * (joined); undefined unless every one of them is here. For serving before the chunk is whole.
   */
  readBlocks (id: ChunkId, first: number, count: number): { data: Uint8Array, proofs: Uint8Array[] } | undefined {
    const a = this.assembling.get(id)
    if (a === undefined || first + count > a.present.length) return undefined
    for (let i = first; i < first + count; i++) if (a.present[i] !== 1) return undefined
    const size = this.sizeOf(id)
    const start = first * this.blockSize
    const end = Math.min(size, (first + count) * this.blockSize)
    return { data: a.buffer.slice(start, end), proofs: a.proofs.slice(first, first + count).map(p => p ?? new Uint8Array(0)) }
  }

  /** The verified blocks of the chunks being assembled, as ranges at every global index of each chunk (for HAVE). */
  blockRanges (): Array<{ chunk: number, first: number, count: number }> {
    const out: Array<{ chunk: number, first: number, count: number }> = []
    for (const [id, a] of this.assembling) {
      for (const p of this.positions.get(id) ?? []) {
        let start = -1
        for (let i = 0; i <= a.present.length; i++) {
          const here = i < a.present.length && a.present[i] === 1
          if (here && start < 0) start = i
          if (!here && start >= 0) { out.push({ chunk: p.global, first: start, count: i - start }); start = -1 }
        }
      }
    }
    return out
  }

  /** The leaf layer of a chunk this pull assembled and has not yet recorded in the index (undefined for others: the store has those). */
  leavesOf (id: ChunkId): Uint8Array[] | undefined {
    return this.leafLayers.get(id)
  }

  /**
   * Verifies one block against its chunk's tree and keeps it; once every block of the chunk is in
   * and the whole chunk matches its id, writes the chunk (`put`). A chunk of one block is `put`
   * directly. Returns false when the block was not needed. Throws `DigestMismatchError` when the
   * bytes are not the block (or, with the last block, when the whole chunk does not match its id:
   * the manifest bound this id to another chunk's tree).
   */
  async putBlock (id: ChunkId, index: number, bytes: Uint8Array | readonly Uint8Array[], proof: Uint8Array): Promise<boolean> {
    if (!this.missing.has(id)) return false
    const size = this.sizes.get(id) ?? 0
    const n = blockCount(size, this.blockSize)
    if (n <= 1) return await this.put(id, bytes)
    const root = this.roots.get(id)
    if (root === undefined) throw new MalformedDataError(`chunk ${id} has ${n} blocks but the manifest gives no tree root for it`)
    if (!Number.isInteger(index) || index < 0 || index >= n) throw new DigestMismatchError(`block ${index} of chunk ${id} does not exist (it has ${n})`)
    const [offset, length] = blockRange(size, this.blockSize, index)
    if (byteLength(bytes) !== length) throw new DigestMismatchError(`block ${index} of chunk ${id} is ${length} bytes, not ${byteLength(bytes)}`)
    let a = this.assembling.get(id)
    if (a === undefined) {
      a = { buffer: assemblyPool.take(size), present: new Uint8Array(n), count: 0, leaves: new Array(n), proofs: new Array(n), verifying: new Map() }
      this.assembling.set(id, a)
    }
    const assembly = a
    // A copy of this block already being verified: its outcome decides (two copies must never
    // share the buffer's bytes while one is checked).
    while (assembly.verifying.has(index)) await assembly.verifying.get(index)
    if (assembly.present[index] === 1 || this.assembling.get(id) !== assembly) return false
    const verifying = (async (): Promise<boolean> => {
      const view = assembly.buffer.subarray(offset, offset + length)
      copyParts(bytes, view)
      const leaf = await this.store.leafHash(view)
      let path: Uint8Array[]
      try {
        path = splitHashes(proof)
      } catch {
        return false
      }
      const got = rootFromProof(leaf, index, n, path)
      if (got === undefined || !equalBytes(got, root)) return false
      assembly.present[index] = 1
      assembly.count++
      assembly.leaves[index] = leaf
      assembly.proofs[index] = new Uint8Array(proof)
      return true
    })()
    assembly.verifying.set(index, verifying)
    let ok: boolean
    try {
      ok = await verifying
    } finally {
      assembly.verifying.delete(index)
    }
    if (!ok) {
      if (assembly.count === 0 && assembly.verifying.size === 0) this.dropAssembly(id)
      throw new DigestMismatchError(`block ${index} of chunk ${id} does not match the chunk's tree`)
    }
    this.emit('blocks', (this.positions.get(id) ?? []).map(p => ({ chunk: p.global, first: index, count: 1 })))
    if (assembly.count < n) return true
    // Whole: it must be the chunk its id names, then it is written like any whole chunk.
    const whole = assembly.buffer.subarray(0, size)
    this.backlog += size
    try {
      if (!await this.store.chunkMatches(whole, id)) {
        throw new MalformedDataError(`chunk ${id} assembled from blocks that match the manifest's tree root does not match its own id: the manifest of ${this.manifest.name}@${this.version} binds the id to another chunk's tree`)
      }
      this.leafLayers.set(id, assembly.leaves as Uint8Array[])
      await this.store.writable(this.what(`writing chunk ${id} of ${this.manifest.name}@${this.version}`))
      await this.storeChunk(id, whole, size)
    } finally {
      this.backlog -= size
      this.dropAssembly(id)
    }
    return true
  }

  /** Bytes of whole chunks received and not yet written: being hashed, or waiting for the disk. */
  get writeBacklogBytes (): number {
    return this.backlog
  }

  private dropAssembly (id: ChunkId): void {
    const a = this.assembling.get(id)
    if (a === undefined) return
    this.assembling.delete(id)
    assemblyPool.give(a.buffer)
  }

  /** Per-file progress, for display. */
  fileProgress (): Array<{ path: string, size: number, bytes: number }> {
    return this.manifest.files.map((f, i) => {
      const state = this.files[i]
      let bytes = 0
      f.chunks.forEach((c, ci) => { if (state?.present[ci] === 1) bytes += c.size })
      return { path: f.path, size: f.size, bytes }
    })
  }

  /**
   * Verifies and stores one chunk at every position it occupies. Returns false when it was not
   * needed (already present). Throws `DigestMismatchError` when the bytes are not the chunk.
   */
  async put (id: ChunkId, bytes: Uint8Array | readonly Uint8Array[]): Promise<boolean> {
    if (!this.missing.has(id)) return false
    const size = byteLength(bytes)
    if (size !== this.sizes.get(id)) throw new DigestMismatchError(`received bytes do not match chunk ${id}`)
    this.backlog += size
    try {
      if (!await this.store.chunkMatches(bytes, id)) throw new DigestMismatchError(`received bytes do not match chunk ${id}`)
      await this.store.writable(this.what(`writing chunk ${id} of ${this.manifest.name}@${this.version}`))
      const stored = await this.storeChunk(id, bytes, size)
      if (stored) this.dropAssembly(id)
      return stored
    } finally {
      this.backlog -= size
    }
  }


  /** Writes verified bytes of chunk `id` at every position it occupies. */
  private async storeChunk (id: ChunkId, bytes: Uint8Array | readonly Uint8Array[], size: number): Promise<boolean> {
    if (!this.missing.delete(id)) return false
    const positions = this.positions.get(id) ?? []
    // One id, one size (the manifest was checked so); a position of another size is never written.
    if (positions.some(p => p.size !== size)) {
      this.missing.add(id)
      throw new DigestMismatchError(`chunk ${id} is ${size} bytes, but the manifest lists it with another size`)
    }
    // `finish` waits for writes in progress: the last chunk to arrive is not always the last to be written.
    const writing = this.write(positions, bytes, size)
    this.writing.add(writing)
    try {
      await writing
    } catch (err) {
      this.missing.add(id)
      throw this.failed(err, `writing chunk ${id} of ${this.manifest.name}@${this.version}`)
    } finally {
      this.writing.delete(writing)
    }
    const first = positions[0]
    if (first !== undefined) {
      const file = this.files[first.file]
      if (file !== undefined) this.store.chunkWritten(id, { digest: file.digest, offset: first.offset, size })
    }
    const indices: number[] = []
    for (const p of positions) {
      this.markPresent(p)
      indices.push(p.global)
      this.unflushed.push({ id, position: p })
    }
    this.unflushedBytes += size
    this.emit('have', indices)
    // Durability is batched and off the hot path: a crash loses at most the unflushed chunks,
    // which are fetched again.
    if (this.unflushedBytes >= FLUSH_BYTES && !this.flushQueued) {
      this.flushQueued = true
      void this.flush().catch(() => {}).finally(() => { this.flushQueued = false })
    }
    else this.timer ??= setTimeout(() => { void this.flush().catch(() => {}) }, FLUSH_INTERVAL_MS)
    if (this.missing.size === 0) await this.finish()
    return true
  }

  /** Writes one chunk's bytes at each of its positions. */
  private async write (positions: Position[], bytes: Uint8Array | readonly Uint8Array[], size: number): Promise<void> {
    for (const p of positions) {
      const file = this.files[p.file]
      if (file === undefined || file.complete) continue
      const fh = file.fh ?? await (file.opening ??= open(file.path, constants.O_RDWR | constants.O_CREAT, 0o644).then(
        h => { file.fh = h; return h },
        (err: unknown) => { file.opening = undefined; throw err }
      ))
      file.dirty = true
      const direct = await (file.direct ??= DirectWrites.open(file.path).then(d => d ?? null))
      const how = direct === null ? 'refused' : await direct.write(fh, bytes, size, p.offset)
      if (how === 'written') continue
      if (how === 'refused') file.direct = Promise.resolve(null)
      await writeAt(fh, bytes, p.offset)
    }
  }

  /** Fills needed chunks from other blobs of this store. Returns how many bytes were copied. */
  async copyLocal (signal?: AbortSignal): Promise<number> {
    let copied = 0
    const held = await this.store.heldChunks([...this.missing])
    for (const id of held) {
      signal?.throwIfAborted()
      if (!this.missing.has(id)) continue
      const bytes = await this.store.readChunk(id)
      if (bytes !== undefined && await this.put(id, bytes)) copied += bytes.byteLength
    }
    return copied
  }

  /** Makes written chunks durable and indexes them (group commit). */
  async flush (): Promise<void> {
    const run = this.flushing.then(async () => {
      clearTimeout(this.timer)
      this.timer = undefined
      const batch = this.unflushed
      if (batch.length === 0) return
      this.unflushed = []
      const bytes = this.unflushedBytes
      this.unflushedBytes = 0
      let created = false
      try {
        for (const file of this.files) {
          if (file.dirty && file.fh !== undefined) {
            file.dirty = false
            await file.fh.datasync()
            created ||= file.dirSynced !== true
            file.dirSynced = true
          }
        }
        // A partial file is created by its first write: its name must be durable before any
        // location inside it is indexed.
        if (created) await fsyncDir(partsOf(this.store).layout.partial)
        const chunks: RecordedChunk[] = []
        const layered = new Set<ChunkId>()
        for (const { id, position } of batch) {
          const digest = this.files[position.file]?.digest
          if (digest === undefined) continue
          // The leaf layer the chunk was verified with, beside its location: serving it later
          // needs no second pass over its bytes.
          const leaves = layered.has(id) ? undefined : this.leafLayers.get(id)
          layered.add(id)
          chunks.push({ id, digest, offset: position.offset, size: this.sizeOf(id), ...(leaves !== undefined && leaves.length > 1 ? { leaves: { blockSize: this.blockSize, layer: joinHashes(leaves) } } : {}) })
        }
        await this.store.recordChunks(chunks, this.what(`recording chunks of ${this.manifest.name}@${this.version}`))
        for (const id of layered) this.leafLayers.delete(id)
        this.emit('recorded', batch.length, bytes)
      } catch (err) {
        // Not indexed: kept for the next flush, so `finish` cannot promote a file whose chunks
        // were never recorded, and fails the pull while the disk refuses.
        this.unflushed = [...batch, ...this.unflushed]
        this.unflushedBytes += bytes
        for (const file of this.files) if (file.fh !== undefined && !file.complete) file.dirty = true
        throw this.failed(err, `recording chunks of ${this.manifest.name}@${this.version}`)
      }
    })
    this.flushing = run.catch(() => {})
    await run
  }

  /** The context of a failed write of this pull (see `PULL_KEPT`). */
  private what (doing: string): WriteContext {
    return { doing, kept: PULL_KEPT }
  }

  /** Maps a failed write: a disk failure trips the store's write guard and says what was kept. */
  private failed (err: unknown, doing: string): unknown {
    return this.store.failedWrite(err, this.what(doing))
  }

  /** Flushes and releases file handles; the pull can be resumed by `open` later. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const id of [...this.assembling.keys()]) this.dropAssembly(id)
    const files = openFiles.get(this.store)
    for (const f of this.manifest.files) {
      const n = (files?.get(f.digest) ?? 1) - 1
      if (n <= 0) files?.delete(f.digest)
      else files?.set(f.digest, n)
    }
    await this.flush().catch(() => {})
    for (const f of this.files) {
      await f.fh?.close().catch(() => {})
      await closeDirect(f)
    }
  }

  /** Bytes that hashed to the chunk at `p`, of exactly its size, are written there. */
  private markPresent (p: Pick<Position, 'file' | 'chunk' | 'global'>): void {
    const file = this.files[p.file]
    if (file === undefined || file.present[p.chunk] === 1) return
    file.present[p.chunk] = 1
    file.remaining--
    const size = this.manifest.files[p.file]?.chunks[p.chunk]?.size ?? 0
    file.presentBytes += size
    this.bits[p.global >> 3]! |= 0x80 >> (p.global & 7)
    this.presentBytes += size
  }

  private async init (pin: boolean): Promise<void> {
    const { index, layout } = partsOf(this.store)
    const what = { doing: `starting the pull of ${this.manifest.name}@${this.version}`, kept: 'nothing new was fetched (chunks verified by an earlier try stay in partial/ for the next one)' }
    await this.store.writable(what)
    // The manifest is kept with the pull record so a restart can resume, and GC knows its blobs.
    // A resumed pull keeps its record (when it started, the attempts that failed).
    const record = await index.pull(this.version)
    const batch = index.batch()
      .putPull(this.version, { ...record, name: this.manifest.name, startedAt: record?.startedAt ?? Date.now(), pin })
      .putManifest(this.version, this.manifestBytes)
    let base = 0
    for (const [fi, file] of this.manifest.files.entries()) {
      const first = base
      const at = (chunk: number): Pick<Position, 'file' | 'chunk' | 'global'> => ({ file: fi, chunk, global: first + chunk })
      base += file.chunks.length
      const present = new Uint8Array(file.chunks.length)
      const state: FileState = { digest: file.digest, path: layout.partialBlob(file.digest), size: file.size, present, remaining: file.chunks.length, presentBytes: 0, complete: false, dirty: false }
      this.files.push(state)
      if (await index.blob(file.digest) !== undefined) {
        state.complete = true
        file.chunks.forEach((_, ci) => this.markPresent(at(ci)))
        continue
      }
      const partial = await index.partial(file.digest)
      // A partial file grows as chunks land; one longer than the file is not ours to resume.
      const length = await stat(state.path).then(s => s.size, () => undefined)
      if (partial === undefined || length === undefined || length > file.size) {
        await rm(state.path, { force: true })
        batch.putPartial(file.digest, { size: file.size, chunks: file.chunks.map(c => [c.id, c.size]), startedAt: Date.now() })
        // Locations into a partial file that is gone (or not ours) name bytes that are not there.
        const ids = [...new Set(file.chunks.map(c => c.id))]
        const locations = await index.locationsMany(ids)
        ids.forEach((id, i) => {
          const all = locations[i]
          const rest = all?.filter(([d]) => d !== file.digest)
          if (all === undefined || rest === undefined || rest.length === all.length) return
          batch.setLocations(id, rest)
        })
      } else {
        // Resume: a chunk indexed at this file's offset, with its size, was verified and made durable before.
        const locations = await index.locationsMany(file.chunks.map(c => c.id))
        let offset = 0
        file.chunks.forEach((c, ci) => {
          if ((locations[ci] ?? []).some(([d, o, size]) => d === file.digest && o === offset && size === c.size)) this.markPresent(at(ci))
          offset += c.size
        })
      }
    }
    await batch.commit(what)
    for (const [id, positions] of this.positions) {
      if (positions.some(p => this.files[p.file]?.present[p.chunk] !== 1)) this.missing.add(id)
    }
    // A chunk present at one position but missing at another (partly resumed): fill the rest.
    for (const id of [...this.missing]) {
      if (!(this.positions.get(id) ?? []).some(p => this.files[p.file]?.present[p.chunk] === 1)) continue
      const bytes = await this.store.readChunk(id)
      if (bytes !== undefined) await this.put(id, bytes).catch(() => {})
    }
    for (const [fi, f] of this.files.entries()) if (!f.complete && f.remaining === 0) await this.finishFile(fi)
    if (this.missing.size === 0 && this.files.every(f => f.complete)) await this.finish()
  }

  private finished?: Promise<ResolvedVersion>

  /** When every chunk is present: flush, promote files to blobs, import the version. */
  private async finish (): Promise<ResolvedVersion> {
    this.finished ??= (async () => {
      while (this.writing.size > 0) await Promise.allSettled([...this.writing])
      if (this.missing.size > 0) {
        this.finished = undefined
        throw new Error(`${this.missing.size} chunk(s) of ${this.version} failed to be written; the pull is not complete`)
      }
      await this.flush()
      for (const [fi, f] of this.files.entries()) if (!f.complete) await this.finishFile(fi)
      const unproven = this.files.find(f => !f.complete)
      if (unproven !== undefined) throw new Error(`${unproven.path} of ${this.version} is not whole; the version is not made visible`)
      const { index } = partsOf(this.store)
      const pull = await index.pull(this.version)
      const v = await this.store.importVersion(this.version, this.manifestBytes, { pin: pull?.pin ?? true, kept: 'every file is stored, and the version is added when the pull is run again (or when the daemon restarts)' })
      await index.batch().dropPull(this.version).commit({
        doing: `closing the pull of ${this.manifest.name}@${this.version}`,
        kept: 'the version was added; its pull record is dropped when the pull is run again (or when the daemon restarts)'
      })
      this.emit('complete')
      return v
    })()
    return await this.finished
  }

  /** Resolves with the imported version once the pull is complete. */
  async completed (): Promise<ResolvedVersion> {
    if (this.missing.size === 0) return await this.finish()
    return await new Promise<ResolvedVersion>((resolve, reject) => {
      this.once('complete', () => { void this.finish().then(resolve, reject) })
    })
  }

  private async finishFile (fi: number): Promise<void> {
    const f = this.files[fi]
    if (f === undefined || f.complete) return
    const { index, layout } = partsOf(this.store)
    // Whole: every position holds verified bytes of exactly its size, and they tile the file.
    if (f.remaining !== 0 || f.presentBytes !== f.size || f.present.some(b => b !== 1)) {
      throw new DigestMismatchError(`${f.digest} is not whole (${f.presentBytes} of ${f.size} bytes verified); it stays partial`)
    }
    try {
      const fh = f.fh ?? await open(f.path, constants.O_RDWR | constants.O_CREAT, 0o644)
      const length = (await fh.stat()).size
      if (length !== f.size) {
        if (f.fh === undefined) await fh.close()
        throw new DigestMismatchError(`${f.path} is ${length} bytes on disk, not ${f.size}; it stays partial`)
      }
      await fh.sync()
      await fh.close()
      await closeDirect(f)
      f.fh = undefined
      f.opening = undefined
      await chmod(f.path, 0o444)
      await rename(f.path, layout.blob(f.digest))
      await fsyncDir(layout.blobs)
    } catch (err) {
      if (err instanceof DigestMismatchError) throw err
      if (!isErrno(err, 'ENOENT') || await index.blob(f.digest) === undefined) throw this.failed(err, `completing ${f.path} of ${this.manifest.name}@${this.version}`)
    }
    const file = this.manifest.files[fi]
    if (file === undefined) return
    await index.batch()
      .putBlob(f.digest, { size: f.size, chunks: file.chunks.map(c => [c.id, c.size]), verifiedAt: Date.now() })
      .dropPartial(f.digest)
      .commit(this.what(`recording ${f.path} of ${this.manifest.name}@${this.version}`))
    f.complete = true
    this.emit('file', file.path)
  }
}

/** A new sparse partial file of `size` bytes, durable with its folder entry. */
async function closeDirect (file: FileState): Promise<void> {
  const direct = await file.direct?.catch(() => null)
  file.direct = undefined
  await direct?.close().catch(() => {})
}

/**
 * Removes partial files, their records and the chunk locations that point into them, then commits
 * `batch` with those removals. Digests that are blobs are left alone (their locations are the blob's).
 */
export async function dropPartials (store: Store, digests: readonly FileDigest[], batch?: IndexBatch): Promise<Array<{ digest: FileDigest, bytes: number }>> {
  const { index, layout, reads } = partsOf(store)
  const ops = batch ?? index.batch()
  const dropped: Array<{ digest: FileDigest, bytes: number }> = []
  const chunkIds = new Set<ChunkId>()
  for (const digest of digests) {
    if (await index.blob(digest) !== undefined) continue
    const record = await index.partial(digest)
    const on = await stat(layout.partialBlob(digest)).then(s => s.blocks * 512, () => undefined)
    if (record === undefined && on === undefined) continue
    for (const [id] of record?.chunks ?? []) chunkIds.add(id)
    ops.dropPartial(digest)
    dropped.push({ digest, bytes: on ?? 0 })
  }
  const gone = new Set(dropped.map(d => d.digest))
  const ids = [...chunkIds]
  const locations = await index.locationsMany(ids)
  const unheld: ChunkId[] = []
  ids.forEach((id, i) => {
    const all = locations[i]
    if (all === undefined) return
    const rest = all.filter(([d]) => !gone.has(d))
    if (rest.length === all.length) return
    ops.setLocations(id, rest)
    if (rest.length === 0) unheld.push(id)
  })
  store.chunksDropped(unheld)
  // Records first: a crash after this leaves files without records, which start-up removes.
  await ops.commit()
  for (const { digest } of dropped) {
    reads.forget(layout.partialBlob(digest))
    await rm(layout.partialBlob(digest), { force: true })
  }
  return dropped
}

/** Refuses a pull whose missing files need more bytes than `partial/` has free. */
async function checkSpace (store: Store, version: VersionId, manifest: Manifest, free: (dir: string) => Promise<number>): Promise<void> {
  const { index, layout } = partsOf(store)
  let needed = 0
  const seen = new Set<FileDigest>()
  for (const f of manifest.files) {
    if (seen.has(f.digest)) continue
    seen.add(f.digest)
    if (await index.blob(f.digest) !== undefined) continue
    // What a resumed partial file holds already is on disk.
    const held = await index.partial(f.digest) === undefined ? 0 : await stat(layout.partialBlob(f.digest)).then(s => Math.min(f.size, s.blocks * 512), () => 0)
    needed += f.size - held
  }
  if (needed === 0) return
  const available = await free(layout.partial)
  if (needed > available) {
    throw new DiskFullError(`disk full for the pull of ${manifest.name}@${version}: it needs ${formatBytes(needed)} more in ${layout.partial}, but only ${formatBytes(available)} is free; nothing new was fetched (chunks verified by an earlier try stay in partial/ for the next one); free some space (shoal gc removes unused versions) and pull again`)
  }
}

async function freeBytes (dir: string): Promise<number> {
  const s = await statfs(dir)
  return s.bavail * s.bsize
}

function formatBytes (n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let v = n
  let u = 0
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++ }
  return u === 0 ? `${n} bytes` : `${v.toFixed(1)} ${units[u]} (${n} bytes)`
}


/** Copies `parts` (in order) into `target`, which is exactly as long. */
function copyParts (parts: Uint8Array | readonly Uint8Array[], target: Uint8Array): void {
  if (parts instanceof Uint8Array) { target.set(parts); return }
  let at = 0
  for (const part of parts) { target.set(part, at); at += part.byteLength }
}

/** Proofs of every block of a chunk from its leaf layer (for serving a chunk this pull assembled). */
export function proofsFrom (leaves: readonly Uint8Array[], first: number, count: number): Uint8Array[] {
  const out: Uint8Array[] = []
  for (let i = first; i < first + count; i++) out.push(joinHashes(proofOf(leaves, i)))
  return out
}

