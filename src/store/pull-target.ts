/**
 * The receiving end of a pull: writes verified chunks of one version into `partial/` files and
 * turns them into blobs, then into a visible version.
 *
 * MUST hold:
 * - `put` verifies the bytes against the chunk id before writing anything (verify on put);
 * - a chunk is servable (`Store.readChunk`) as soon as it is written and verified; it is indexed
 *   (and so survives a crash) after the file's data is fdatasync'ed, in batches (`flush`);
 * - after a crash, verified chunks that were indexed are kept and the pull resumes from them;
 *   anything not indexed is fetched again;
 * - a file becomes a blob (fsync, rename into `blobs/`) only when all its chunks are present, and
 *   the version becomes visible (`importVersion`) only when all its files are blobs.
 *
 * Chunk positions: the same chunk id may occur several times in a version (padding, repeated
 * tensors); one `put` fills every position. Chunks the store already holds elsewhere are copied
 * locally (`copyLocal`), never fetched.
 */
import { EventEmitter } from 'node:events'
import { open, chmod, rename, rm, stat, type FileHandle } from 'node:fs/promises'
import { byteLength, type ChunkId, type FileDigest, type VersionId } from '../core/digest.js'
import { DigestMismatchError } from '../core/errors.js'
import { decodeManifest, type Manifest } from '../core/manifest.js'
import { DirectWrites } from './direct-io.js'
import { fsyncDir, isErrno, writeAt, type WriteContext } from './fsutil.js'
import type { IndexOp } from './index-db.js'
import type { ResolvedVersion, Store } from './store.js'

/** Indexed (durable) progress is written at least this often. @default 500 ms */
export const FLUSH_INTERVAL_MS = 500
/** ...or after this many unflushed bytes. @default 64 MiB */
export const FLUSH_BYTES = 64 * 1024 * 1024

/** What a pull keeps when a write fails: part of its disk-full message. */
export const PULL_KEPT = 'the chunks verified so far are kept in partial/, and the pull resumes from them when it is run again (or when the daemon restarts)'

interface Position { file: number, chunk: number, global: number, offset: number }

interface FileState {
  digest: FileDigest
  path: string
  size: number
  /** Per chunk of the file: present (written and verified). */
  present: Uint8Array
  remaining: number
  complete: boolean
  fh?: FileHandle
  /** The pending open of `fh`, shared by concurrent puts so the file is opened once. */
  opening?: Promise<FileHandle>
  /** The file's O_DIRECT handle (see `direct-io.ts`); null where direct writes are not available. */
  direct?: Promise<DirectWrites | null>
  dirty: boolean
}

export interface PullTargetEvents { have: [indices: number[]], file: [path: string], complete: [] }

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

  private constructor (private readonly store: Store, readonly version: VersionId, readonly manifestBytes: Uint8Array) {
    super()
    this.manifest = decodeManifest(manifestBytes, version)
    let global = 0
    let bytes = 0
    for (const [fi, file] of this.manifest.files.entries()) {
      let offset = 0
      for (const [ci, c] of file.chunks.entries()) {
        const list = this.positions.get(c.id) ?? []
        list.push({ file: fi, chunk: ci, global, offset })
        this.positions.set(c.id, list)
        this.sizes.set(c.id, c.size)
        this.ids.push(c.id)
        offset += c.size
        global++
      }
      bytes += file.size
    }
    this.totalChunks = global
    this.totalBytes = bytes
    this.bits = new Uint8Array(Math.ceil(global / 8))
  }

  /** Opens (or resumes) the pull of `version`. The manifest bytes MUST hash to `version`. */
  static async open (store: Store, version: VersionId, manifestBytes: Uint8Array, options: { pin?: boolean } = {}): Promise<PullTarget> {
    const target = new PullTarget(store, version, manifestBytes)
    await target.init(options.pin ?? true)
    return target
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

  /** The first origin URL of a file holding `id`, with the chunk's offset in it. */
  originOf (id: ChunkId): { url: string, offset: number } | undefined {
    for (const p of this.positions.get(id) ?? []) {
      const url = this.manifest.files[p.file]?.origins?.[0]
      if (url !== undefined) return { url, offset: p.offset }
    }
    return undefined
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
    if (size !== this.sizes.get(id) || !await this.store.chunkMatches(bytes, id)) {
      throw new DigestMismatchError(`received bytes do not match chunk ${id}`)
    }
    await this.store.writable(this.what(`writing chunk ${id} of ${this.manifest.name}@${this.version}`))
    if (!this.missing.delete(id)) return false
    const positions = this.positions.get(id) ?? []
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
      if (file !== undefined) this.store.markFresh(id, { digest: file.digest, offset: first.offset, size })
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
      const fh = file.fh ?? await (file.opening ??= open(file.path, 'r+').then(
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
      try {
        for (const file of this.files) {
          if (file.dirty && file.fh !== undefined) {
            file.dirty = false
            await file.fh.datasync()
          }
        }
        const ops: IndexOp[] = []
        const byId = new Map<ChunkId, Position[]>()
        for (const { id, position } of batch) byId.set(id, [...(byId.get(id) ?? []), position])
        const ids = [...byId.keys()]
        const existing = await this.store.index.chunks.getMany(ids)
        ids.forEach((id, i) => {
          const locations = existing[i] ?? []
          for (const p of byId.get(id) ?? []) {
            const digest = this.files[p.file]?.digest
            if (digest !== undefined && !locations.some(([d, o]) => d === digest && o === p.offset)) locations.push([digest, p.offset, this.sizeOf(id)])
          }
          ops.push({ type: 'put', sublevel: this.store.index.chunks, key: id, value: locations })
        })
        await this.store.index.commit(ops, this.what(`recording chunks of ${this.manifest.name}@${this.version}`))
        for (const id of ids) this.store.unmarkFresh(id)
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
    await this.flush().catch(() => {})
    for (const f of this.files) {
      await f.fh?.close().catch(() => {})
      await closeDirect(f)
    }
  }

  private markPresent (p: Pick<Position, 'file' | 'chunk' | 'global'>): void {
    const file = this.files[p.file]
    if (file === undefined || file.present[p.chunk] === 1) return
    file.present[p.chunk] = 1
    file.remaining--
    this.bits[p.global >> 3]! |= 0x80 >> (p.global & 7)
    this.presentBytes += this.manifest.files[p.file]?.chunks[p.chunk]?.size ?? 0
  }

  private async init (pin: boolean): Promise<void> {
    const { index, layout } = this.store
    const what = { doing: `starting the pull of ${this.manifest.name}@${this.version}`, kept: 'nothing new was fetched (chunks verified by an earlier try stay in partial/ for the next one)' }
    await this.store.writable(what)
    // The manifest is kept with the pull record so a restart can resume, and GC knows its blobs.
    const ops: IndexOp[] = [
      { type: 'put', sublevel: index.pulls, key: this.version, value: { name: this.manifest.name, startedAt: Date.now(), pin } },
      { type: 'put', sublevel: index.manifests, key: this.version, value: this.manifestBytes }
    ]
    let base = 0
    for (const [fi, file] of this.manifest.files.entries()) {
      const first = base
      const at = (chunk: number): Pick<Position, 'file' | 'chunk' | 'global'> => ({ file: fi, chunk, global: first + chunk })
      base += file.chunks.length
      const present = new Uint8Array(file.chunks.length)
      const state: FileState = { digest: file.digest, path: layout.partialBlob(file.digest), size: file.size, present, remaining: file.chunks.length, complete: false, dirty: false }
      this.files.push(state)
      if (await index.blobs.get(file.digest) !== undefined) {
        state.complete = true
        file.chunks.forEach((_, ci) => this.markPresent(at(ci)))
        continue
      }
      const record = await index.partials.get(file.digest)
      const exists = await stat(state.path).then(s => s.size === file.size, () => false)
      if (record === undefined || !exists) {
        await createPartial(state.path, file.size, layout.partial).catch(err => { throw this.store.failedWrite(err, what) })
        ops.push({ type: 'put', sublevel: index.partials, key: file.digest, value: { size: file.size, chunks: file.chunks.map(c => [c.id, c.size]), startedAt: Date.now() } })
      } else {
        // Resume: a chunk indexed at this file's offset was verified and made durable before.
        const locations = await index.chunks.getMany(file.chunks.map(c => c.id))
        let offset = 0
        file.chunks.forEach((c, ci) => {
          if ((locations[ci] ?? []).some(([d, o]) => d === file.digest && o === offset)) this.markPresent(at(ci))
          offset += c.size
        })
      }
    }
    await index.commit(ops, what)
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
      const pull = await this.store.index.pulls.get(this.version)
      const v = await this.store.importVersion(this.version, this.manifestBytes, { pin: pull?.pin ?? true, kept: 'every file is stored, and the version is added when the pull is run again (or when the daemon restarts)' })
      await this.store.index.commit([{ type: 'del', sublevel: this.store.index.pulls, key: this.version }], {
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
    const { index, layout } = this.store
    try {
      const fh = f.fh ?? await open(f.path, 'r+')
      await fh.sync()
      await fh.close()
      await closeDirect(f)
      f.fh = undefined
      f.opening = undefined
      await chmod(f.path, 0o444)
      await rename(f.path, layout.blob(f.digest))
      await fsyncDir(layout.blobs)
    } catch (err) {
      if (!isErrno(err, 'ENOENT') || await index.blobs.get(f.digest) === undefined) throw this.failed(err, `completing ${f.path} of ${this.manifest.name}@${this.version}`)
    }
    const file = this.manifest.files[fi]
    if (file === undefined) return
    await index.commit([
      { type: 'put', sublevel: index.blobs, key: f.digest, value: { size: f.size, chunks: file.chunks.map(c => [c.id, c.size]), verifiedAt: Date.now() } },
      { type: 'del', sublevel: index.partials, key: f.digest }
    ], this.what(`recording ${f.path} of ${this.manifest.name}@${this.version}`))
    f.complete = true
    this.emit('file', file.path)
  }
}

/** A new sparse partial file of `size` bytes, durable with its folder entry. */
async function createPartial (path: string, size: number, folder: string): Promise<void> {
  await rm(path, { force: true })
  const fh = await open(path, 'w', 0o644)
  await fh.truncate(size)
  await fh.sync()
  await fh.close()
  await fsyncDir(folder)
}

async function closeDirect (file: FileState): Promise<void> {
  const direct = await file.direct?.catch(() => null)
  file.direct = undefined
  await direct?.close().catch(() => {})
}
