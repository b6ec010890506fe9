/**
 * The manifest: the immutable description of one version of a model.
 *
 * - Encoded as canonical dag-cbor (sorted map keys, shortest integers, no undefined, no floats
 *   where integers fit): the same content always gives the same bytes, and the version id is the
 *   CID of those bytes (`encodeManifest`).
 * - Every decode validates the schema and the invariants below (`decodeManifest`); a manifest
 *   from disk or from a peer is never trusted as it stands.
 *
 * Invariants: files sorted by path, paths unique and safe (`checkRelativePath`), no path both a
 * file and a folder; each file's chunk sizes are positive, at most `MAX_CHUNK_SIZE`, and add up to
 * its size; its digest is `fileDigest(chunks)`; chunk ids are raw CIDs of a supported hash.
 */
import { CID } from 'multiformats/cid'
import { z } from 'zod'
import { MAX_CHUNK_SIZE } from './chunking.js'
import { type ChunkId, type FileDigest, type VersionId, RAW_CODEC, encodeBlock, fileDigest, parseCid, blockMatches } from './digest.js'
import { MalformedDataError } from './errors.js'
import { metadataSchema, type Metadata } from './metadata.js'
import { checkModelName, checkRelativePath } from './names.js'
import * as dagCbor from '@ipld/dag-cbor'

export const MANIFEST_SCHEMA = 1
/** @default 32 MiB — a 100 GB model at 4 MiB chunks needs about 1 MiB */
export const MAX_MANIFEST_BYTES = 32 * 1024 * 1024
/** @default 100_000 files in one version */
export const MAX_FILES = 100_000

export interface ChunkRef { id: ChunkId, size: number }

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
  chunks: z.array(z.strictObject({ id: z.string(), size: z.number().int().positive().max(MAX_CHUNK_SIZE) })),
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
  schema: z.literal(MANIFEST_SCHEMA),
  name: z.string(),
  /** Milliseconds since the epoch; strictly increasing per store (`versions by timestamp`). */
  created: z.number().int().nonnegative(),
  parent: z.string().nullable(),
  files: z.array(fileSchema).max(MAX_FILES),
  metadata: metadataSchema,
  structure: summarySchema
})

export type ManifestFile = z.infer<typeof fileSchema> & { digest: FileDigest, chunks: ChunkRef[] }
export type Manifest = Omit<z.infer<typeof manifestSchema>, 'files' | 'parent' | 'metadata'> & {
  parent: VersionId | null
  files: ManifestFile[]
  metadata: Metadata
}

/** Canonical bytes and version id of a manifest. Validates first: an invalid manifest has no id. */
export function encodeManifest (manifest: Manifest): { bytes: Uint8Array, id: VersionId } {
  const valid = validateManifest(manifest)
  const { bytes, cid } = encodeBlock(toCbor(valid))
  if (bytes.length > MAX_MANIFEST_BYTES) throw new MalformedDataError(`manifest is ${bytes.length} bytes, over the ${MAX_MANIFEST_BYTES}-byte cap`)
  return { bytes, id: cid }
}

/**
 * Decodes and validates manifest bytes. With `expectedId`, also checks that the bytes hash to it
 * and are canonical (re-encoding gives the same bytes), so a peer cannot pass off other content.
 */
export function decodeManifest (bytes: Uint8Array, expectedId?: VersionId): Manifest {
  if (bytes.length > MAX_MANIFEST_BYTES) throw new MalformedDataError(`manifest is ${bytes.length} bytes, over the ${MAX_MANIFEST_BYTES}-byte cap`)
  if (expectedId !== undefined && !blockMatches(bytes, expectedId)) {
    throw new MalformedDataError(`manifest bytes do not hash to version id ${expectedId}`)
  }
  let raw: unknown
  try {
    raw = dagCbor.decode(bytes)
  } catch (err) {
    throw new MalformedDataError(`manifest is not valid dag-cbor: ${(err as Error).message}`)
  }
  const manifest = validateManifest(fromCbor(raw))
  if (expectedId !== undefined && encodeBlock(toCbor(manifest)).cid !== expectedId) {
    throw new MalformedDataError('manifest is not canonically encoded')
  }
  return manifest
}

export function validateManifest (value: unknown): Manifest {
  const parsed = manifestSchema.safeParse(value)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new MalformedDataError(`manifest is invalid at ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'unknown problem'}`)
  }
  const m = parsed.data as Manifest
  guard(() => checkModelName(m.name))
  if (m.parent !== null) guard(() => parseCid(m.parent as string))
  const seen = new Set<string>()
  let previous = ''
  for (const file of m.files) {
    guard(() => checkRelativePath(file.path))
    if (file.path <= previous) throw new MalformedDataError(`manifest files are not sorted by path, or "${file.path}" repeats`)
    previous = file.path
    seen.add(file.path)
    let total = 0
    for (const chunk of file.chunks) {
      const cid = guard(() => parseCid(chunk.id))
      if (cid.code !== RAW_CODEC) throw new MalformedDataError(`chunk ${chunk.id} of ${file.path} is not a raw-codec id`)
      total += chunk.size
    }
    if (total !== file.size) throw new MalformedDataError(`chunks of ${file.path} add up to ${total} bytes, but its size is ${file.size}`)
    if (fileDigest(file.chunks) !== file.digest) throw new MalformedDataError(`digest of ${file.path} does not match its chunk list`)
  }
  for (const path of seen) {
    for (let i = path.indexOf('/'); i > 0; i = path.indexOf('/', i + 1)) {
      if (seen.has(path.slice(0, i))) throw new MalformedDataError(`"${path.slice(0, i)}" is both a file and a folder`)
    }
  }
  return m
}

/** Manifest → dag-cbor data model: chunk ids become CID links, empty optionals are dropped. */
function toCbor (m: Manifest): unknown {
  return dropUndefined({
    ...m,
    files: m.files.map(f => ({ ...f, chunks: f.chunks.map(c => [CID.parse(c.id), c.size]) }))
  })
}

function fromCbor (raw: unknown): unknown {
  if (typeof raw !== 'object' || raw === null || !Array.isArray((raw as { files?: unknown }).files)) return raw
  const m = raw as { files: Array<{ chunks?: unknown }> }
  return {
    ...m,
    files: m.files.map(f => {
      if (typeof f !== 'object' || f === null || !Array.isArray(f.chunks)) return f
      return {
        ...f,
        chunks: f.chunks.map((c: unknown) => Array.isArray(c) && c.length === 2 && c[0] instanceof CID
          ? { id: c[0].toString(), size: c[1] }
          : { id: null, size: null })
      }
    })
  }
}

function dropUndefined (value: unknown): unknown {
  if (Array.isArray(value)) return value.map(dropUndefined)
  if (value instanceof CID || value instanceof Uint8Array) return value
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined).map(([k, v]) => [k, dropUndefined(v)]))
  }
  return value
}

function guard<T> (fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    throw new MalformedDataError(`manifest is invalid: ${(err as Error).message}`, { cause: err })
  }
}
