/**
 * `add`: turns a folder (or one file) into a stored, immutable version.
 *
 * Order, so that a refused add costs little and changes nothing:
 * 1. everything that needs no file: the name, the label, the origin URL, the metadata given as
 *    options and the `--meta` file (at most `MAX_METADATA_FILE_BYTES`, a regular file);
 * 2. the walk (`ingest/walk.ts`), then `shoal.json` from the folder;
 * 3. every file's structure, read without loading weights (`model/`), each one a record the
 *    manifest can hold, with the tensors of all files at most `MAX_TENSOR_COUNT` and a lower bound
 *    of the manifest's size within `MAX_MANIFEST_BYTES`;
 * 4. only then data: per file, plan its chunks — for safetensors, GGUF, ONNX and ONNX external data,
 *    tensor pieces for each tensor and content-defined cuts (`STRUCTURE_CDC`) for the structure
 *    around them, found in a first pass over those regions' bytes (a file without tensors is cut by
 *    content as it streams); content-defined (FastCDC) for everything else — and stream it into a
 *    `BlobWriter`, which hashes and writes it, and computes the block tree of every chunk of more
 *    than one block in the same task (roots for the manifest, leaf layers for the index, recorded
 *    with the file's blob). When every file is stored the manifest (schema 2) is committed;
 *    until then nothing of the version is visible, and a failure (bad header, disk full, abort)
 *    removes what this add wrote.
 * Every file is opened through `openListed`, which refuses anything but the file the walk saw.
 *
 * Reading, hashing and writing overlap: while one window is hashed, the next is read and the
 * previous one written (`WINDOW_BUFFERS` reused buffers of `WINDOW_SIZE`, read into directly).
 */
import { constants } from 'node:fs'
import { open } from 'node:fs/promises'
import { pipe } from 'it-pipe'
import { FastCdc, type FastCdcOptions } from '../core/cdc.js'
import { MAX_CHUNK_SIZE, MIN_ANCHORED_TENSOR_BYTES, STRUCTURE_CDC, fixedChunks, modelRegions, planModelChunks, type ChunkRegion, type TensorRange } from '../core/chunking.js'
import { AbortedError, InvalidInputError, MalformedModelError } from '../core/errors.js'
import type { FileDigest } from '../core/digest.js'
import { checkBlockSize, DEFAULT_BLOCK_SIZE, fileStructureSchema, MANIFEST_SCHEMA, MAX_MANIFEST_BYTES, type ChunkRef, type FileStructureRecord, type JsonValue, type ManifestFile, type ModelSummary } from '../core/manifest.js'
import { MAX_METADATA_FILE_BYTES, METADATA_FILE, mergeMetadata, parseMetadata, parseMetadataFile, type Metadata } from '../core/metadata.js'
import { checkLabel, checkModelName, escapeUnsafe } from '../core/names.js'
import { readStructure } from '../model/index.js'
import { MAX_TENSOR_COUNT } from '../model/limits.js'
import type { FileSource } from '../model/source.js'
import type { FileStructure, MetaValue, TensorInfo } from '../model/types.js'
import type { BlobWriter } from '../store/blob-writer.js'
import type { BlobSink, Catalogue } from '../store/api.js'
import type { ResolvedVersion } from '../store/store.js'
import { readAhead, type ReadDone } from '../util/read-ahead.js'
import { listSourceFiles, openListed, type SourceFile } from './walk.js'

/** What an add needs of the store: a sink for the files' bytes, and the catalogue to commit the version to. */
export type AddTarget = Pick<BlobSink, 'withShared' | 'createBlobWriter' | 'indexBlob'> & Pick<Catalogue, 'commitVersion'>

/** Bytes read and written per step; holds whole chunks, so at least `MAX_CHUNK_SIZE`. @default 8 MiB */
export const WINDOW_SIZE = 8 * 1024 * 1024

/**
 * Window buffers per file copy: one being read, one being hashed, one still being written.
 * Memory per add is `WINDOW_BUFFERS * WINDOW_SIZE`.
 * @default 3
 */
export const WINDOW_BUFFERS = 3

export interface AddOptions {
  name: string
  label?: string
  /** Metadata from flags; merged over `shoal.json` in the folder and `metaFile`. */
  metadata?: Metadata
  metaFile?: string
  /**
   * Base URL of an HTTP(S) origin serving the same files (a web seed): each file lists
   * `<origin>/<path>` so pullers can fetch what no peer has.
   */
  origin?: string
  /** Pin the new version so GC keeps it. @default true */
  pin?: boolean
  /** Bytes per block of the new manifest (a power of two, 16 KiB to 4 MiB). @default DEFAULT_BLOCK_SIZE */
  blockSize?: number
  signal?: AbortSignal
  onProgress?: (progress: AddProgress) => void
}

export interface AddProgress {
  file: string
  fileBytes: number
  fileSize: number
  bytes: number
  totalBytes: number
  files: number
  totalFiles: number
}

/**
 * Checks everything about an add that needs no file — name, label, origin, metadata options — and
 * throws `InvalidInputError` saying what is wrong. `addPath` calls it first; a caller that applies
 * part of the request itself (a label published as a head) calls it before `addPath` too.
 */
export function checkAddOptions (options: Pick<AddOptions, 'name' | 'label' | 'origin' | 'metadata' | 'blockSize'>): void {
  checkModelName(options.name)
  if (options.blockSize !== undefined) checkBlockSize(options.blockSize)
  if (options.label !== undefined) checkLabel(options.label)
  if (options.origin !== undefined) originBase(options.origin)
  if (options.metadata !== undefined) parseMetadata(options.metadata, 'metadata options')
}

export async function addPath (store: AddTarget, input: string, options: AddOptions): Promise<ResolvedVersion> {
  checkAddOptions(options)
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE
  const metaFile = options.metaFile === undefined ? undefined : await readMetaFile(options.metaFile)
  const { files, single } = await listSourceFiles(input)
  const own = single ? undefined : files.find(f => f.path === METADATA_FILE)
  const metadata = mergeMetadata(
    own === undefined ? undefined : await readListedMetadata(own),
    metaFile,
    options.metadata
  )
  const structures = await readStructures(files, blockSize, options.signal)
  const external = externalDataAnchors(files, structures)
  const totalBytes = files.reduce((n, f) => n + f.size, 0)
  let bytes = 0

  return await store.withShared(async hold => {
    const entries: ManifestFile[] = []
    for (const [i, file] of files.entries()) {
      if (options.signal?.aborted === true) throw new AbortedError('add was cancelled')
      const structure = structures.get(file.path)
      const anchors = external.get(file.path)
      // Tensor ranges make a model file; a file without structure is opaque.
      const tensors = anchors ?? (structure !== undefined && structure.format !== 'other' ? structure.tensors.filter(t => t.file === undefined) : undefined)
      const base = bytes
      const blob = await storeFile(store, file, tensors, blockSize, options.signal, done => {
        options.onProgress?.({ file: file.path, fileBytes: done, fileSize: file.size, bytes: base + done, totalBytes, files: i, totalFiles: files.length })
      })
      bytes += file.size
      hold(blob.digest)
      await store.indexBlob(blob)
      entries.push({
        path: file.path, size: file.size, digest: blob.digest, chunks: blob.chunks.map(chunkRef),
        ...(options.origin !== undefined ? { origins: [originUrl(options.origin, file.path)] } : {}),
        format: anchors !== undefined ? 'onnx-data' : structure?.format ?? 'other',
        // A plain file keeps a structure only when it has metadata to say (a Hugging Face config).
        ...(structure !== undefined && (structure.format !== 'other' || Object.keys(structure.metadata).length > 0) ? { structure: toRecord(structure) } : {})
      })
    }
    return await store.commitVersion(
      { schema: MANIFEST_SCHEMA, blockSize, name: options.name, files: entries, metadata, structure: summarize(entries) },
      { ...(options.label !== undefined ? { label: options.label } : {}), pin: options.pin ?? true }
    )
  })
}

/** A written chunk as its manifest lists it: id, size and, for more than one block, its root. */
function chunkRef (c: ChunkRef): ChunkRef {
  return c.root === undefined ? { id: c.id, size: c.size } : { id: c.id, size: c.size, root: c.root }
}

async function storeFile (store: AddTarget, file: SourceFile, tensors: readonly TensorRange[] | undefined, blockSize: number, signal: AbortSignal | undefined, progress: (bytes: number) => void): Promise<{ digest: FileDigest } & Awaited<ReturnType<BlobWriter['commit']>>> {
  const src = await openListed(file)
  let writer: BlobWriter
  try {
    writer = await store.createBlobWriter({ blockSize })
  } catch (err) {
    await src.close()
    throw err
  }
  try {
    const cutting = tensors === undefined ? { cdc: {} } : await cutModel(src, tensors, signal)
    if ('plan' in cutting) await copyPlanned(src, writer, cutting.plan, signal, progress)
    else await copyCdc(src, writer, cutting.cdc, signal, progress)
    return await writer.commit()
  } catch (err) {
    await writer.abort()
    throw err
  } finally {
    await src.close()
  }
}

/**
 * How a model file is cut (`core/chunking.ts`): a plan of tensor pieces and content-defined cuts
 * of the structure between them, found by reading only the structure regions; or, when no tensor
 * is large enough to anchor a chunk, by content from end to end as the bytes stream through.
 */
async function cutModel (src: FileSource, tensors: readonly TensorRange[], signal: AbortSignal | undefined): Promise<{ plan: number[] } | { cdc: FastCdcOptions }> {
  const regions = modelRegions(src.size, tensors)
  if (!regions.some(r => r.kind === 'tensor')) return { cdc: STRUCTURE_CDC }
  const starts = new Map<number, number[]>()
  for (const region of regions) {
    if (region.kind === 'structure') starts.set(region.offset, await structureStarts(src, region, signal))
  }
  return { plan: planModelChunks(regions, r => starts.get(r.offset) ?? []) }
}

/** Content-defined chunk starts of one structure region, relative to it; a region below the minimum chunk is one chunk, unread. */
async function structureStarts (src: FileSource, region: ChunkRegion, signal: AbortSignal | undefined): Promise<number[]> {
  if (region.length <= STRUCTURE_CDC.min) return [0]
  const cdc = new FastCdc(STRUCTURE_CDC)
  const buf = Buffer.allocUnsafe(Math.min(WINDOW_SIZE, region.length))
  const ends: number[] = []
  for (let at = 0; at < region.length; at += buf.length) {
    if (signal?.aborted === true) throw new AbortedError('add was cancelled')
    const piece = buf.subarray(0, Math.min(buf.length, region.length - at))
    await src.readInto(piece, region.offset + at)
    ends.push(...cdc.push(piece))
  }
  ends.push(...cdc.finish())
  return [0, ...ends.slice(0, -1)]
}

/** One step of a copy: `length` bytes at `offset`; `ends` are its chunk ends when already known. */
interface Window { offset: number, length: number, ends?: number[] }

/** Windows made of whole planned chunks (a chunk never spans two windows). */
function * plannedWindows (size: number, plan: number[]): Generator<Window> {
  const starts = plan.length > 0 ? plan : fixedChunks(size)
  let i = 0
  while (i < starts.length) {
    const offset = starts[i] ?? 0
    const ends: number[] = []
    let j = i
    while (j < starts.length) {
      const end = starts[j + 1] ?? size
      if (end - offset > WINDOW_SIZE && ends.length > 0) break
      ends.push(end - offset)
      j++
    }
    yield { offset, length: ends[ends.length - 1] ?? 0, ends }
    i = j
  }
}

/** Back-to-back windows of `WINDOW_SIZE`; their cut points are found once the bytes are read. */
function * fixedWindows (size: number): Generator<Window> {
  for (let offset = 0; offset < size; offset += WINDOW_SIZE) yield { offset, length: Math.min(WINDOW_SIZE, size - offset) }
}

/** Copies in windows made of whole planned chunks. */
async function copyPlanned (src: FileSource, writer: BlobWriter, plan: number[], signal: AbortSignal | undefined, progress: (bytes: number) => void): Promise<void> {
  await copyWindows(src, writer, plannedWindows(src.size, plan), (_, w) => w.ends ?? [], signal, progress)
}

/** Copies with content-defined cut points, found as the bytes stream through. */
async function copyCdc (src: FileSource, writer: BlobWriter, options: FastCdcOptions, signal: AbortSignal | undefined, progress: (bytes: number) => void): Promise<void> {
  const cdc = new FastCdc(options)
  await copyWindows(src, writer, fixedWindows(src.size), (buf, w) => {
    const cuts = cdc.push(buf).map(c => c - w.offset)
    if (w.offset + w.length === src.size) cuts.push(...cdc.finish().map(c => c - w.offset))
    return cuts
  }, signal, progress)
}

/**
 * The copy pipeline: read → cut → hash and write. While window i is cut, hashed and its write
 * started by `writer.append`, window i+1 is being read and window i-1 may still be being written:
 * `WINDOW_BUFFERS` (3) rotating buffers, as `BlobWriter.append`'s contract allows (`readAhead`).
 */
async function copyWindows (src: FileSource, writer: BlobWriter, windows: Iterator<Window>, endsOf: (buf: Buffer, window: Window) => number[], signal: AbortSignal | undefined, progress: (bytes: number) => void): Promise<void> {
  // Shared memory, so the store can hash whole chunks on its worker threads without copying.
  const buffers = Array.from({ length: WINDOW_BUFFERS }, () => Buffer.from(new SharedArrayBuffer(WINDOW_SIZE)))
  const sized = mapIterator(windows, w => ({ ...w, size: w.length }))
  await pipe(
    readAhead(sized, buffers, async (w, into) => { await src.readInto(into, w.offset) }, () => {
      if (signal?.aborted === true) throw new AbortedError('add was cancelled')
    }),
    async function * cut (source: AsyncIterable<ReadDone<Window, void>>) {
      for await (const { item, buf } of source) yield { window: item, buf, ends: endsOf(buf, item) }
    },
    async (source: AsyncIterable<{ window: Window, buf: Buffer, ends: number[] }>) => {
      for await (const { window, buf, ends } of source) {
        await writer.append(buf, ends)
        progress(window.offset + window.length)
      }
    }
  )
}

function * mapIterator<T, U> (items: Iterator<T>, f: (item: T) => U): Generator<U> {
  for (let next = items.next(); next.done !== true; next = items.next()) yield f(next.value)
}

/**
 * Reads every file's structure. Across files, the tensors may number at most `MAX_TENSOR_COUNT`,
 * and a lower bound of the manifest they make (tensor records, kept metadata, the fewest chunk
 * records the files can be cut into, `leastChunkRecordBytes`) must fit `MAX_MANIFEST_BYTES`: a
 * model the store could not commit is refused before any data is copied.
 */
async function readStructures (files: SourceFile[], blockSize: number, signal: AbortSignal | undefined): Promise<Map<string, FileStructure>> {
  const out = new Map<string, FileStructure>()
  let tensors = 0
  let manifestBytes = 0
  for (const file of files) {
    if (signal?.aborted === true) throw new AbortedError('add was cancelled')
    const src = await openListed(file)
    try {
      const structure = await readStructure(file.path, src, signal)
      manifestBytes += leastChunkRecordBytes(file.size, structure, blockSize)
      tensors += structure.tensors.length
      if (tensors > MAX_TENSOR_COUNT) {
        throw new InvalidInputError(`the model's files declare more than ${MAX_TENSOR_COUNT} tensors in all (${file.path} brings them to ${tensors}), over the limit of ${MAX_TENSOR_COUNT} per version; nothing was added`)
      }
      checkRecord(file.path, structure)
      manifestBytes += structureBytes(structure)
      if (manifestBytes > MAX_MANIFEST_BYTES) {
        throw new InvalidInputError(`the manifest of this model would take more than ${MAX_MANIFEST_BYTES} bytes (the limit) with ${file.path}: too many files, tensors or embedded metadata for one version; nothing was added`)
      }
      out.set(file.path, structure)
    } catch (err) {
      if (err instanceof MalformedModelError) {
        // Readers already name the file (by the path given to `readStructure`); say it once.
        const bare = err.message.replace(file.absolute, '').replace(/^:\s*/, '')
        const detail = bare.startsWith(`${file.path}: `) ? bare.slice(file.path.length + 2) : bare
        // A limit says itself what is wrong; anything else is a broken file.
        const advice = /over the limit of/.test(detail) ? 'no real model needs that much' : 'the file looks damaged or incomplete'
        throw new MalformedModelError(`${file.path}: ${detail} — ${advice}; nothing was added`, { cause: err })
      }
      throw err
    } finally {
      await src.close()
    }
  }
  return out
}

/**
 * The bytes of the fewest chunk records a file can be cut into: tensor pieces are at most
 * `MAX_CHUNK_SIZE`, and so is any chunk of a file no reader understands; structure chunks of a
 * model file at most `STRUCTURE_CDC.max`. A chunk of that size carries a root when it is more than
 * one block.
 */
function leastChunkRecordBytes (size: number, structure: FileStructure, blockSize: number): number {
  const records = (bytes: number, chunkSize: number): number =>
    Math.ceil(bytes / chunkSize) * (MIN_CHUNK_RECORD_BYTES + (blockSize < chunkSize ? ROOT_RECORD_BYTES : 0))
  if (structure.format === 'other') return records(size, MAX_CHUNK_SIZE)
  const anchored = structure.tensors.reduce((n, t) => n + (t.file === undefined && t.length >= MIN_ANCHORED_TENSOR_BYTES ? t.length : 0), 0)
  return records(anchored, MAX_CHUNK_SIZE) + records(Math.max(0, size - anchored), STRUCTURE_CDC.max)
}

/**
 * Refuses, as a bad file, a structure the manifest could not hold (a name, producer or list longer
 * than its record allows): found now, before any data is copied, rather than at the commit.
 */
function checkRecord (path: string, structure: FileStructure): void {
  const checked = fileStructureSchema.safeParse(toRecord(structure))
  if (checked.success) return
  const issue = checked.error.issues[0]
  throw new MalformedModelError(`${path}: ${issue?.path.join('.') ?? 'its structure'} does not fit a version's manifest (${issue?.message ?? 'invalid'})`)
}

/** Bytes a chunk record takes in a manifest at least: a CID link of 36 bytes and a size. @default 40 */
const MIN_CHUNK_RECORD_BYTES = 40
/** Bytes a block-tree root adds to a chunk record: 32 and its byte-string header. @default 34 */
const ROOT_RECORD_BYTES = 34

/** A lower bound of the bytes a structure takes in a manifest: its tensors' names and fields, its metadata's keys and strings. */
function structureBytes (s: FileStructure): number {
  let n = 0
  for (const t of s.tensors) n += t.name.length + t.dtype.length + t.shape.length + 4
  for (const [k, v] of Object.entries(s.metadata)) n += k.length + (typeof v === 'string' ? v.length : 1)
  return n
}

/** Tensor ranges that ONNX models place in external data files, by the data file's path. */
function externalDataAnchors (files: SourceFile[], structures: Map<string, FileStructure>): Map<string, TensorInfo[]> {
  const paths = new Set(files.map(f => f.path))
  const out = new Map<string, TensorInfo[]>()
  for (const [path, structure] of structures) {
    const dir = path.includes('/') ? path.slice(0, path.lastIndexOf('/') + 1) : ''
    for (const tensor of structure.tensors) {
      if (tensor.file === undefined) continue
      const target = normalize(dir + tensor.file)
      if (target === undefined || !paths.has(target)) {
        throw new InvalidInputError(`${path} keeps tensor ${tensor.name} in ${tensor.file}, which is not in the folder being added`)
      }
      const size = files.find(f => f.path === target)?.size ?? 0
      if (tensor.offset + tensor.length > size) {
        throw new MalformedModelError(`${path}: tensor ${tensor.name} lies past the end of ${tensor.file} (${size} bytes)`)
      }
      out.set(target, [...(out.get(target) ?? []), tensor])
    }
  }
  for (const [path, tensors] of out) out.set(path, dropOverlaps(tensors))
  return out
}

/** Several models may share one data file; keep a consistent, non-overlapping set of anchors. */
function dropOverlaps (tensors: TensorInfo[]): TensorInfo[] {
  const sorted = [...tensors].sort((a, b) => a.offset - b.offset)
  const out: TensorInfo[] = []
  let end = 0
  for (const t of sorted) {
    if (t.offset >= end) {
      out.push(t)
      end = t.offset + t.length
    }
  }
  return out
}

function normalize (path: string): string | undefined {
  const parts: string[] = []
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue
    if (part === '..') {
      if (parts.length === 0) return undefined
      parts.pop()
    } else parts.push(part)
  }
  return parts.join('/')
}

function toRecord (s: FileStructure): FileStructureRecord {
  return {
    headerLength: s.headerLength,
    tensors: s.tensors.map(t => ({ name: t.name, dtype: t.dtype, shape: t.shape, offset: t.offset, length: t.length, ...(t.file !== undefined ? { file: t.file } : {}) })),
    parameterCount: s.parameterCount,
    dtypes: s.dtypes,
    ...(s.architecture !== undefined ? { architecture: s.architecture } : {}),
    ...(s.architectureFrom !== undefined ? { architectureFrom: s.architectureFrom } : {}),
    metadata: Object.fromEntries(Object.entries(s.metadata).map(([k, v]) => [k, toJson(v)])),
    ...(s.shards !== undefined ? { shards: s.shards } : {}),
    ...(s.graph !== undefined ? { graph: dropUndefined(s.graph) } : {})
  }
}

function dropUndefined<T extends object> (value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T
}

function toJson (v: MetaValue): JsonValue {
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString()
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v)
  if (Array.isArray(v)) return v.map(toJson)
  return v
}

function summarize (files: ManifestFile[]): ModelSummary {
  const formats = [...new Set(files.map(f => f.format))].sort()
  const dtypes = new Set<string>()
  let parameterCount = 0
  let tensorCount = 0
  let architecture: string | undefined
  for (const f of files) {
    const s = f.structure
    if (s === undefined) continue
    parameterCount += s.parameterCount
    tensorCount += s.tensors.length
    for (const d of s.dtypes) dtypes.add(d)
    if (s.architecture !== undefined && (architecture === undefined || s.architectureFrom === 'metadata')) architecture = s.architecture
  }
  return {
    formats, parameterCount, tensorCount, dtypes: [...dtypes].sort(),
    totalSize: files.reduce((n, f) => n + f.size, 0),
    ...(architecture !== undefined ? { architecture } : {})
  }
}

/** The origin as a base URL (with a trailing `/`), or `InvalidInputError`. */
function originBase (base: string): URL {
  let url: URL
  try {
    url = new URL(base.endsWith('/') ? base : `${base}/`)
  } catch {
    throw new InvalidInputError(`origin ${escapeUnsafe(base)} is not a URL`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new InvalidInputError(`origin ${escapeUnsafe(base)} must be an http or https URL`)
  return url
}

function originUrl (base: string, path: string): string {
  return new URL(path.split('/').map(encodeURIComponent).join('/'), originBase(base)).toString()
}

/** `shoal.json` from the folder, opened as the walk saw it. */
async function readListedMetadata (file: SourceFile): Promise<Metadata> {
  const label = `${METADATA_FILE} in the model folder`
  checkMetadataSize(label, file.size)
  const src = await openListed(file)
  try {
    return parseMetadataFile(await src.read(0, src.size), label)
  } finally {
    await src.close()
  }
}

/** The `--meta` file: a regular file (a FIFO or a device is refused without waiting on it), at most `MAX_METADATA_FILE_BYTES`. */
async function readMetaFile (path: string): Promise<Metadata> {
  const label = escapeUnsafe(path)
  let handle
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK)
  } catch (err) {
    throw new InvalidInputError(`cannot read metadata file ${label}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : 'no permission or not readable'}`)
  }
  try {
    const info = await handle.stat()
    if (!info.isFile()) throw new InvalidInputError(`metadata file ${label} is not a regular file`)
    checkMetadataSize(label, info.size)
    const bytes = new Uint8Array(info.size)
    const { bytesRead } = await handle.read(bytes, 0, info.size, 0)
    return parseMetadataFile(bytes.subarray(0, bytesRead), label)
  } finally {
    await handle.close()
  }
}

function checkMetadataSize (label: string, size: number): void {
  if (size > MAX_METADATA_FILE_BYTES) {
    throw new InvalidInputError(`${label} is ${size} bytes, over the limit of ${MAX_METADATA_FILE_BYTES} bytes for a metadata file`)
  }
}
