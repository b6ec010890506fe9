/**
 * The manifest: the immutable description of one version of a model.
 *
 * - Encoded as canonical dag-cbor (sorted map keys, shortest integers, no undefined, no floats
 *   where integers fit): the same content always gives the same bytes, and the version id is the
 *   CID of those bytes (`encodeManifest`).
 * - Every decode validates the schema and the invariants below (`decodeManifest`); a manifest
 *   from disk or from a peer is never trusted as it stands.
 *
 * Schemas. `add` writes schema 2: a top-level `blockSize` (a power of two from `MIN_BLOCK_SIZE` to
 * `MAX_BLOCK_SIZE`) cuts every chunk into blocks from its start (the last may be short), and a
 * chunk of more than one block carries the root of its block tree (`core/tree.ts`), so each block
 * can be verified on its own. Schema 1 (versions made before block trees) is still read, unchanged,
 * so its version ids stay what they were: its geometry is one block per chunk (`blockSizeOf` is
 * `MAX_CHUNK_SIZE`), verified by the chunk id. Code that moves blocks asks `blockSizeOf` and
 * `chunkRootOf` and never looks at `schema`.
 *
 * Invariants: files sorted by path, paths unique and safe (`checkRelativePath`), no path both a
 * file and a folder; each file's chunk sizes are positive, at most `MAX_CHUNK_SIZE`, and add up to
 * its size; its digest is `fileDigest(chunks)` (ids and sizes only: roots do not change a file's
 * digest, so a file's blob is shared by versions of either schema); chunk ids are raw CIDs of a
 * supported hash; a chunk entry has a 32-byte root exactly when the chunk has more than one block;
 * one chunk id has one size and one root everywhere it occurs in the version (an id names one
 * sequence of bytes: two sizes for one id would make a version that can never complete, or one
 * "complete" with bytes missing from a file; two roots would make honest blocks fail somewhere).
 * A root is not checked against bytes here (there are none): a block that does not fold to it is
 * refused on receipt, and a chunk whose blocks fold to it but whose bytes do not hash to its id is
 * refused whole when it completes.
 *
 * Limits: the encoded bytes are at most `MAX_MANIFEST_BYTES` (checked first, before hashing or
 * decoding). A root adds 34 bytes to a chunk entry of about 47: a 1 TiB model of 4 MiB pieces
 * (262,144 entries, each with a root) encodes to about 21 MB of chunk entries, within the cap with
 * room for its tensor records. A manifest from a peer is decoded with `ManifestLimits` (chunk
 * count, version size, checked on the decoded dag-cbor before the schema is), so an oversized one
 * costs one decode and a walk over its file list, never the schema's work or anything the pull
 * would allocate.
 *
 * Cost: decoding is linear in the chunk count. Chunk ids are read from the CIDs the decoder made
 * (never parsed again from text), file digests are hashed from the decoded chunk lists, and the
 * canonical check re-encodes the decoded value, not a rebuilt one.
 */
import { CID } from 'multiformats/cid'
import { z } from 'zod'
import { MAX_CHUNK_SIZE } from './chunking.js'
import { type ChunkId, type FileDigest, type VersionId, RAW_CODEC, SHA2_256, SUPPORTED_HASHES, chunkIdOf, encodeBlock, fileDigest, parseCid, blockMatches } from './digest.js'
import { InvalidInputError, MalformedDataError, TooLargeError } from './errors.js'
import { TREE_HASH_BYTES, blockCount, blockRange, equalBytes, leafHash, rootOf } from './tree.js'
import { metadataSchema, type Metadata } from './metadata.js'
import { checkModelName, checkRelativePath } from './names.js'
import * as dagCbor from '@ipld/dag-cbor'

/** The schema `add` writes (block trees); `decodeManifest` also reads `SCHEMA_1_MANIFEST`. */
export const MANIFEST_SCHEMA = 2
/** Versions made before block trees: one block per chunk, no roots. */
export const SCHEMA_1_MANIFEST = 1
/** The smallest block size a manifest may declare. @default 16 KiB */
export const MIN_BLOCK_SIZE = 16 * 1024
/** The largest block size a manifest may declare: a whole chunk. @default 4 MiB (`MAX_CHUNK_SIZE`) */
export const MAX_BLOCK_SIZE = MAX_CHUNK_SIZE
/**
 * The block size `add` writes into new manifests; nothing else may assume its value: readers take
 * `blockSizeOf(manifest)`. why: docs/decisions/0004-block-and-piece-sizes.md
 * @default 256 KiB
 */
export const DEFAULT_BLOCK_SIZE = 256 * 1024
/** @default 32 MiB — a 100 GB model at 4 MiB chunks needs about 2 MiB (1 MiB without block-tree roots) */
export const MAX_MANIFEST_BYTES = 32 * 1024 * 1024
/** @default 100_000 files in one version */
export const MAX_FILES = 100_000
/**
 * Chunks a manifest from a peer may list (`transfer.maxManifestChunks`). A 1 TB model is about
 * 262,000 pieces of 4 MiB plus one chunk per small tensor (tens of thousands in the largest
 * published checkpoints).
 * @default 500_000
 */
export const DEFAULT_MAX_MANIFEST_CHUNKS = 500_000
/** Bytes a version from a peer may hold, all files together (`transfer.maxVersionBytes`). @default 2 TiB */
export const DEFAULT_MAX_VERSION_BYTES = 2 * 1024 ** 4

/** What a node accepts from others; local manifests (its own `add`) are not limited. */
export interface ManifestLimits {
  /** Chunk entries over all files (a chunk listed twice counts twice). */
  maxChunks: number
  /** Sum of the file sizes. */
  maxVersionBytes: number
}

export const DEFAULT_MANIFEST_LIMITS: ManifestLimits = { maxChunks: DEFAULT_MAX_MANIFEST_CHUNKS, maxVersionBytes: DEFAULT_MAX_VERSION_BYTES }

/**
 * One chunk of a file. `root`: the root of its block tree (`TREE_HASH_BYTES` bytes), present
 * exactly when the chunk has more than one block of its manifest's `blockSize`.
 */
export interface ChunkRef { id: ChunkId, size: number, root?: Uint8Array }

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue }
const jsonValue: z.ZodType<JsonValue> = z.lazy(() => z.union([
  z.string().max(64 * 1024), z.number().finite(), z.boolean(), z.null(),
  z.array(jsonValue).max(4096), z.record(z.string().max(1024), jsonValue)
]))

const dims = z.array(z.union([z.number().int().nonnegative(), z.string().max(256)])).max(64)
const tensorRecord = z.strictObject({
  name: z.string().max(4096),
  dtype: z.string().max(64),
  shape: z.array(z.number().int().nonnegative()).max(64),
  offset: z.number().int().nonnegative(),
  length: z.number().int().nonnegative(),
  file: z.string().max(4096).optional()
})
const ioRecord = z.strictObject({ name: z.string().max(4096), dtype: z.string().max(64), shape: dims })

export const fileStructureSchema = z.strictObject({
  headerLength: z.number().int().nonnegative(),
  tensors: z.array(tensorRecord).max(1_000_000),
  parameterCount: z.number().int().nonnegative(),
  dtypes: z.array(z.string().max(64)).max(256),
  architecture: z.string().max(256).optional(),
  /** `metadata` when the file declares it, `tensor-names` when guessed from tensor names. */
  architectureFrom: z.enum(['metadata', 'tensor-names']).optional(),
  metadata: z.record(z.string().max(1024), jsonValue),
  shards: z.array(z.string().max(4096)).max(100_000).optional(),
  graph: z.strictObject({
    inputs: z.array(ioRecord).max(4096),
    outputs: z.array(ioRecord).max(4096),
    opsets: z.record(z.string().max(256), z.number().int()),
    producer: z.string().max(256).optional(),
    producerVersion: z.string().max(256).optional(),
    irVersion: z.number().int().optional(),
    modelVersion: z.number().int().optional(),
    domain: z.string().max(256).optional(),
    name: z.string().max(1024).optional(),
    nodeCount: z.number().int().nonnegative()
  }).optional()
})
export type FileStructureRecord = z.infer<typeof fileStructureSchema>

const formatSchema = z.enum(['safetensors', 'safetensors-index', 'gguf', 'onnx', 'onnx-data', 'other'])

const fileSchema = z.strictObject({
  path: z.string(),
  size: z.number().int().nonnegative(),
  digest: z.string(),
  format: formatSchema,
  /** `{ id, size, root? }` each; checked entry by entry in `validate` (`checkChunk`), not by the schema. */
  chunks: z.array(z.unknown()),
  structure: fileStructureSchema.optional(),
  /** HTTP(S) URLs serving this file's bytes with Range support (a web seed). */
  origins: z.array(z.string().url().max(2048)).max(16).optional()
})

export const summarySchema = z.strictObject({
  formats: z.array(formatSchema),
  parameterCount: z.number().int().nonnegative(),
  dtypes: z.array(z.string().max(64)).max(256),
  tensorCount: z.number().int().nonnegative(),
  architecture: z.string().max(256).optional(),
  totalSize: z.number().int().nonnegative()
})
export type ModelSummary = z.infer<typeof summarySchema>

export const manifestSchema = z.strictObject({
  schema: z.union([z.literal(SCHEMA_1_MANIFEST), z.literal(MANIFEST_SCHEMA)]),
  /** Bytes per block (schema 2 only; checked in `validate` with the message it deserves). */
  blockSize: z.unknown().optional(),
  name: z.string(),
  /** Milliseconds since the epoch; strictly increasing per store (`versions by timestamp`). */
  created: z.number().int().nonnegative(),
  parent: z.string().nullable(),
  files: z.array(fileSchema).max(MAX_FILES),
  metadata: metadataSchema,
  structure: summarySchema
})

export type ManifestFile = Omit<z.infer<typeof fileSchema>, 'digest' | 'chunks'> & { digest: FileDigest, chunks: ChunkRef[] }
export type Manifest = Omit<z.infer<typeof manifestSchema>, 'files' | 'parent' | 'metadata' | 'blockSize'> & {
  /** Schema 2: bytes per block, a power of two from `MIN_BLOCK_SIZE` to `MAX_BLOCK_SIZE`. Schema 1: absent. */
  blockSize?: number
  parent: VersionId | null
  files: ManifestFile[]
  metadata: Metadata
}

/**
 * Canonical bytes and version id of a schema-2 manifest. Validates first: an invalid manifest has
 * no id. A schema-1 manifest is refused: nothing new is made in the old schema (see
 * `encodeSchema1Manifest`).
 */
export function encodeManifest (manifest: Manifest): { bytes: Uint8Array, id: VersionId } {
  if (manifest.schema !== MANIFEST_SCHEMA) throw new InvalidInputError(`new manifests are written in schema ${MANIFEST_SCHEMA}, not ${String(manifest.schema)}`)
  return encodeValid(manifest)
}

/**
 * Canonical bytes and version id of a schema-1 manifest, as versions were made before block trees.
 * Only for tests and tools that need such versions (a store or a peer holding old versions);
 * `add` never writes one.
 */
export function encodeSchema1Manifest (manifest: Manifest): { bytes: Uint8Array, id: VersionId } {
  if (manifest.schema !== SCHEMA_1_MANIFEST) throw new InvalidInputError(`encodeSchema1Manifest writes schema ${SCHEMA_1_MANIFEST}, not ${String(manifest.schema)}`)
  return encodeValid(manifest)
}

function encodeValid (manifest: Manifest): { bytes: Uint8Array, id: VersionId } {
  const valid = validateManifest(manifest)
  const { bytes, cid } = encodeBlock(toCbor(valid))
  if (bytes.length > MAX_MANIFEST_BYTES) throw new TooLargeError(`manifest is ${bytes.length} bytes, over the ${MAX_MANIFEST_BYTES}-byte cap`, 'bytes')
  return { bytes, id: cid }
}

/**
 * Bytes per block of `manifest`'s chunks: its `blockSize` (schema 2), or `MAX_CHUNK_SIZE` for
 * schema 1, where every chunk is one block verified by its id.
 */
export function blockSizeOf (manifest: Pick<Manifest, 'schema' | 'blockSize'>): number {
  return manifest.schema === SCHEMA_1_MANIFEST ? MAX_CHUNK_SIZE : manifest.blockSize ?? MAX_CHUNK_SIZE
}

/** The root of a chunk's block tree, or undefined for a one-block chunk (verified by its id). */
export function chunkRootOf (chunk: ChunkRef): Uint8Array | undefined {
  return chunk.root
}

/**
 * The manifest entry of a chunk of `bytes` at `blockSize`: its id, its size and, for more than one
 * block, the root of its block tree. Hashes on the calling thread (`add` hashes on workers); for
 * tools, tests and small chunks.
 */
export function chunkRefOf (bytes: Uint8Array, blockSize: number): ChunkRef {
  const id = chunkIdOf(bytes)
  const n = blockCount(bytes.byteLength, blockSize)
  if (n <= 1) return { id, size: bytes.byteLength }
  const leaves: Uint8Array[] = []
  for (let i = 0; i < n; i++) {
    const [offset, length] = blockRange(bytes.byteLength, blockSize, i)
    leaves.push(leafHash(bytes.subarray(offset, offset + length)))
  }
  const root = rootOf(leaves)
  // A plain Uint8Array, as `decodeManifest` gives (node:crypto's digests are Buffers).
  return { id, size: bytes.byteLength, root: new Uint8Array(root.buffer, root.byteOffset, root.byteLength) }
}

/** Whether `size` is a block size a manifest may declare (a power of two within the bounds). */
export function isBlockSize (size: unknown): size is number {
  return typeof size === 'number' && Number.isInteger(size) && size >= MIN_BLOCK_SIZE && size <= MAX_BLOCK_SIZE && (size & (size - 1)) === 0
}

/** `size` if it is a valid block size, else `InvalidInputError` saying what a block size is. */
export function checkBlockSize (size: unknown): number {
  if (!isBlockSize(size)) throw new InvalidInputError(`block size ${String(size)} is not a power of two from ${MIN_BLOCK_SIZE} to ${MAX_BLOCK_SIZE} bytes`)
  return size
}

/**
 * Decodes and validates manifest bytes. With `expectedId`, also checks that the bytes hash to it
 * and are canonical (re-encoding gives the same bytes), so a peer cannot pass off other content.
 * With `limits` (a manifest from a peer), refuses one over them with `TooLargeError` before the
 * schema is checked.
 *
 * @throws TooLargeError over `MAX_MANIFEST_BYTES` or `limits` (`limit`: `bytes`, `chunks`, `files`, `size`)
 * @throws MalformedDataError for anything else wrong: hash, encoding, schema, invariants
 */
export function decodeManifest (bytes: Uint8Array, expectedId?: VersionId, limits?: ManifestLimits): Manifest {
  if (bytes.length > MAX_MANIFEST_BYTES) throw new TooLargeError(`manifest is ${bytes.length} bytes, over the ${MAX_MANIFEST_BYTES}-byte cap`, 'bytes')
  if (expectedId !== undefined && !blockMatches(bytes, expectedId)) {
    throw new MalformedDataError(`manifest bytes do not hash to version id ${expectedId}`)
  }
  let raw: unknown
  try {
    raw = dagCbor.decode(bytes)
  } catch (err) {
    throw new MalformedDataError(`manifest is not valid dag-cbor: ${(err as Error)?.message ?? String(err)}`)
  }
  checkLimits(raw, limits)
  if (expectedId !== undefined && !sameBytes(reencode(raw), bytes)) throw new MalformedDataError('manifest is not canonically encoded')
  const { value, digests } = fromCbor(raw)
  return validate(value, digests)
}

/** Checks a manifest value (as built by `add`) against the schema and every invariant. */
export function validateManifest (value: unknown): Manifest {
  return validate(value)
}

/**
 * Counts what `raw` (decoded, not yet validated) lists against `limits`: files, chunk entries and
 * declared bytes. Anything of the wrong shape is left to the schema.
 */
function checkLimits (raw: unknown, limits: ManifestLimits | undefined): void {
  if (limits === undefined || typeof raw !== 'object' || raw === null) return
  const files = (raw as { files?: unknown }).files
  if (!Array.isArray(files)) return
  if (files.length > MAX_FILES) throw new TooLargeError(`manifest lists ${files.length} files, over the limit of ${MAX_FILES}`, 'files')
  let chunks = 0
  let size = 0
  for (const f of files as unknown[]) {
    if (typeof f !== 'object' || f === null) continue
    const list = (f as { chunks?: unknown }).chunks
    if (Array.isArray(list)) chunks += list.length
    const declared = (f as { size?: unknown }).size
    if (typeof declared === 'number' && declared > 0) size += declared
  }
  if (chunks > limits.maxChunks) throw new TooLargeError(`manifest lists ${chunks} chunks, over the limit of ${limits.maxChunks}`, 'chunks')
  if (size > limits.maxVersionBytes) throw new TooLargeError(`manifest declares ${size} bytes, over the limit of ${limits.maxVersionBytes} bytes for one version`, 'size')
}

function validate (value: unknown, digests?: ReadonlyArray<FileDigest | undefined>): Manifest {
  const parsed = manifestSchema.safeParse(value)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new MalformedDataError(`manifest is invalid at ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'unknown problem'}`)
  }
  const m = parsed.data as Manifest
  guard(() => checkModelName(m.name))
  if (m.parent !== null) guard(() => parseCid(m.parent as string))
  if (m.schema === SCHEMA_1_MANIFEST) {
    if (m.blockSize !== undefined) throw new MalformedDataError('manifest is invalid at blockSize: a schema-1 manifest has no block size (one block per chunk)')
  } else if (m.blockSize === undefined) {
    throw new MalformedDataError(`manifest is invalid at blockSize: a schema-${MANIFEST_SCHEMA} manifest declares its block size, a power of two from ${MIN_BLOCK_SIZE} to ${MAX_BLOCK_SIZE} bytes`)
  } else if (!isBlockSize(m.blockSize)) {
    throw new MalformedDataError(`manifest is invalid at blockSize: ${typeof m.blockSize === 'number' ? m.blockSize : typeof m.blockSize} is not a power of two from ${MIN_BLOCK_SIZE} to ${MAX_BLOCK_SIZE} bytes`)
  }
  const blockSize = blockSizeOf(m)
  const seen = new Set<string>()
  /** Each chunk id's size, root and the file it was first seen in: one id, one size, one root. */
  const sizes = new Map<ChunkId, { size: number, root: Uint8Array | undefined, path: string }>()
  let previous = ''
  for (const [fi, file] of m.files.entries()) {
    guard(() => checkRelativePath(file.path))
    if (file.path <= previous) throw new MalformedDataError(`manifest files are not sorted by path, or "${file.path}" repeats`)
    previous = file.path
    seen.add(file.path)
    let total = 0
    const chunks = file.chunks as unknown[]
    for (let ci = 0; ci < chunks.length; ci++) {
      // From `decodeManifest` the id was checked on its CID already (`fromCbor`).
      checkChunk(chunks[ci], file.path, ci, digests === undefined, blockSize)
      const { id, size, root } = chunks[ci] as ChunkRef
      const first = sizes.get(id)
      if (first === undefined) sizes.set(id, { size, root, path: file.path })
      else if (first.size !== size) {
        throw new MalformedDataError(`chunk ${id} is listed with two sizes, ${first.size} bytes (in ${first.path}) and ${size} bytes (in ${file.path}); one chunk id names one sequence of bytes`)
      } else if (first.root !== undefined && root !== undefined && !equalBytes(first.root, root)) {
        throw new MalformedDataError(`chunk ${id} is listed with two block-tree roots, ${hex(first.root)} (in ${first.path}) and ${hex(root)} (in ${file.path}); one chunk id names one sequence of bytes, so one tree`)
      }
      total += size
    }
    if (total !== file.size) throw new MalformedDataError(`chunks of ${file.path} add up to ${total} bytes, but its size is ${file.size}`)
    if ((digests?.[fi] ?? fileDigest(file.chunks)) !== file.digest) throw new MalformedDataError(`digest of ${file.path} does not match its chunk list`)
  }
  for (const path of seen) {
    for (let i = path.indexOf('/'); i > 0; i = path.indexOf('/', i + 1)) {
      if (seen.has(path.slice(0, i))) throw new MalformedDataError(`"${path.slice(0, i)}" is both a file and a folder`)
    }
  }
  return m
}

/**
 * One `{ id, size, root? }` entry of a file's chunk list; `parseId`: check the id text too. The
 * root is there exactly when the chunk has more than one block of `blockSize`.
 */
function checkChunk (chunk: unknown, path: string, index: number, parseId: boolean, blockSize: number): void {
  if (typeof chunk !== 'object' || chunk === null) throw new MalformedDataError(`chunk ${index} of ${path} is not an [id, size] pair`)
  const { id, size, root } = chunk as { id?: unknown, size?: unknown, root?: unknown }
  let keys = 0
  for (const key in chunk) if (key !== 'root' || root !== undefined) keys++
  if (keys !== (root === undefined ? 2 : 3)) throw new MalformedDataError(`chunk ${index} of ${path} has fields other than id, size and root`)
  if (typeof id !== 'string') throw new MalformedDataError(`chunk ${index} of ${path} has no chunk id`)
  if (typeof size !== 'number' || !Number.isInteger(size) || size < 1 || size > MAX_CHUNK_SIZE) {
    throw new MalformedDataError(`chunk ${index} of ${path} has size ${String(size)}; a chunk is 1 to ${MAX_CHUNK_SIZE} bytes`)
  }
  if (size > blockSize) {
    if (root === undefined) throw new MalformedDataError(`chunk ${index} of ${path} has ${Math.ceil(size / blockSize)} blocks of ${blockSize} bytes but no block-tree root`)
    if (!(root instanceof Uint8Array) || root.byteLength !== TREE_HASH_BYTES) {
      throw new MalformedDataError(`chunk ${index} of ${path} has a root of ${root instanceof Uint8Array ? `${root.byteLength} bytes` : typeof root}, not ${TREE_HASH_BYTES} bytes`)
    }
  } else if (root !== undefined) {
    throw new MalformedDataError(blockSize === MAX_CHUNK_SIZE
      ? `chunk ${index} of ${path} has a block-tree root, but every chunk of this manifest is one block, verified by its id`
      : `chunk ${index} of ${path} has a block-tree root, but at ${size} bytes it is one block of ${blockSize}, verified by its id`)
  }
  if (parseId) checkChunkCid(guard(() => parseCid(id)), `chunk ${index} of ${path}`)
}

/** A chunk id is a raw-codec CIDv1 of a supported hash, with a digest of that hash's length. */
function checkChunkCid (cid: CID, at: string): void {
  if (cid.version !== 1 || cid.code !== RAW_CODEC) throw new MalformedDataError(`${at} is not a raw-codec CIDv1`)
  if (!SUPPORTED_HASHES.has(cid.multihash.code)) throw new MalformedDataError(`${at} uses hash 0x${cid.multihash.code.toString(16)}, which this build cannot verify`)
  if (cid.multihash.code === SHA2_256 && cid.multihash.size !== 32) throw new MalformedDataError(`${at} has a ${cid.multihash.size}-byte sha2-256 digest, not 32`)
}

/**
 * Manifest → dag-cbor data model: chunk ids become CID links, a chunk with a root is
 * `[CID, size, root bytes]`, empty optionals are dropped.
 */
function toCbor (m: Manifest): unknown {
  return dropUndefined({
    ...m,
    files: m.files.map(f => ({ ...f, chunks: f.chunks.map(c => c.root === undefined ? [CID.parse(c.id), c.size] : [CID.parse(c.id), c.size, c.root]) }))
  })
}

/**
 * dag-cbor data model → manifest value: each `[CID, size]` becomes `{ id, size }` and each
 * `[CID, size, root]` `{ id, size, root }` (the id checked on the CID and written as text without
 * parsing it again), and each file's digest is hashed from its decoded chunk list (ids and sizes).
 * Entries of the wrong shape are left for `validate` to refuse.
 */
function fromCbor (raw: unknown): { value: unknown, digests?: Array<FileDigest | undefined> } {
  if (typeof raw !== 'object' || raw === null || !Array.isArray((raw as { files?: unknown }).files)) return { value: raw }
  const m = raw as { files: unknown[] }
  const digests: Array<FileDigest | undefined> = []
  const files = m.files.map((f, fi) => {
    if (typeof f !== 'object' || f === null || !Array.isArray((f as { chunks?: unknown }).chunks)) return f
    const path = typeof (f as { path?: unknown }).path === 'string' ? (f as { path: string }).path : `file ${fi}`
    const list = (f as { chunks: unknown[] }).chunks
    let rooted = false
    const chunks = list.map((c, ci) => {
      if (!Array.isArray(c) || (c.length !== 2 && c.length !== 3) || !(c[0] instanceof CID)) throw new MalformedDataError(`chunk ${ci} of ${path} is not an [id, size] pair or an [id, size, root] triple`)
      checkChunkCid(c[0], `chunk ${ci} of ${path}`)
      if (c.length === 2) return { id: cidText(c[0]), size: c[1] as unknown }
      rooted = true
      return { id: cidText(c[0]), size: c[1] as unknown, root: c[2] as unknown }
    })
    digests[fi] = encodeBlock(rooted ? list.map(c => (c as unknown[]).length === 3 ? (c as unknown[]).slice(0, 2) : c) : list).cid
    return { ...f, chunks }
  })
  return { value: { ...m, files }, digests }
}

/** Re-encodes a decoded value; a value the encoder refuses was not canonical dag-cbor. */
function reencode (raw: unknown): Uint8Array {
  try {
    return dagCbor.encode(raw)
  } catch (err) {
    throw new MalformedDataError(`manifest is not canonically encoded: ${(err as Error)?.message ?? String(err)}`)
  }
}

function sameBytes (a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

const BASE32 = Array.from('abcdefghijklmnopqrstuvwxyz234567', c => c.charCodeAt(0))

/**
 * `cid.toString()` for a CIDv1 (multibase `b`, RFC 4648 base32, lower case, no padding), several
 * times faster than the general multibase encoder: a large manifest holds hundreds of thousands.
 */
export function cidText (cid: CID): string {
  const bytes = cid.bytes
  const out = new Array<number>(1 + Math.ceil(bytes.length * 8 / 5))
  out[0] = 0x62 // 'b'
  let n = 1
  let value = 0
  let bits = 0
  for (let i = 0; i < bytes.length; i++) {
    value = ((value << 8) | (bytes[i] as number)) & 0xfff
    bits += 8
    while (bits >= 5) {
      bits -= 5
      out[n++] = BASE32[(value >>> bits) & 31] as number
    }
  }
  if (bits > 0) out[n++] = BASE32[(value << (5 - bits)) & 31] as number
  return String.fromCharCode.apply(null, out)
}

function dropUndefined (value: unknown): unknown {
  if (Array.isArray(value)) return value.map(dropUndefined)
  if (value instanceof CID || value instanceof Uint8Array) return value
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined).map(([k, v]) => [k, dropUndefined(v)]))
  }
  return value
}

function hex (bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

function guard<T> (fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    throw new MalformedDataError(`manifest is invalid: ${(err as Error).message}`, { cause: err })
  }
}
