/**
 * GGUF reader (versions 2 and 3, little-endian): magic `GGUF`, u32 version, u64 tensor_count,
 * u64 kv_count, the key/value pairs, the tensor infos, then padding to `general.alignment`
 * (default {@link GGUF_DEFAULT_ALIGNMENT}) and the data section.
 *
 * MUST hold, or `MalformedModelError`: counts, string lengths, array lengths and nesting within
 * `model/limits.ts`, and so are the file's totals, each checked as it grows and before the bytes
 * it counts are read: key and kept value bytes (`MAX_GGUF_METADATA_BYTES`), tensor-name bytes
 * (`MAX_GGUF_TENSOR_NAME_BYTES`), array elements walked (`MAX_GGUF_ARRAY_ELEMENTS`) and the end
 * of the header (`MAX_GGUF_HEADER_BYTES`); keys and tensor names are at most
 * `MAX_GGUF_NAME_BYTES` each; every u64 we use as a number is a safe integer; value and ggml types are
 * known (types removed from ggml are refused, as ggml refuses them); shapes have at most
 * `MAX_GGUF_DIMS` dimensions, their element count does not overflow and the first dimension is a
 * multiple of the type's block size; offsets are aligned, inside the file and do not overlap;
 * tensor names and keys are unique.
 *
 * The header is walked through a buffered cursor and never held whole: arrays longer than
 * `MAX_INLINE_ARRAY_LENGTH` (tokenizer vocabularies) are skipped and summarised in metadata as
 * `[array <type> × <length>]`, and strings longer than `MAX_METADATA_VALUE_BYTES` (an embedded
 * `tokenizer.huggingface.json`) as `[string × <bytes> bytes]`.
 * Shapes are reported in GGUF order (`ne[0]`, the innermost, first). Tensor byte lengths come
 * from the ggml block table: `elements / block × block bytes`.
 */
import { Cursor, elementCount, malformed, parameterCount, setOwn } from './cursor.js'
import {
  MAX_GGUF_ARRAY_DEPTH, MAX_GGUF_ARRAY_ELEMENTS, MAX_GGUF_ARRAY_LENGTH, MAX_GGUF_DIMS, MAX_GGUF_HEADER_BYTES, MAX_GGUF_KV_COUNT,
  MAX_GGUF_METADATA_BYTES, MAX_GGUF_NAME_BYTES, MAX_GGUF_STRING_BYTES, MAX_METADATA_VALUE_BYTES, MAX_GGUF_TENSOR_NAME_BYTES, MAX_INLINE_ARRAY_LENGTH,
  MAX_INLINE_ARRAY_STRING_BYTES, MAX_TENSOR_COUNT
} from './limits.js'
import type { ByteSource, FileStructure, MetaValue, TensorInfo } from './types.js'

/** Used when `general.alignment` is absent. */
export const GGUF_DEFAULT_ALIGNMENT = 32

export interface GgmlType { name: string, blockSize: number, typeSize: number }

/** ggml types by id: elements per block and bytes per block (ggml `type_traits`). */
export const GGML_TYPES: ReadonlyMap<number, GgmlType> = new Map(([
  [0, 'F32', 1, 4], [1, 'F16', 1, 2], [2, 'Q4_0', 32, 18], [3, 'Q4_1', 32, 20],
  [6, 'Q5_0', 32, 22], [7, 'Q5_1', 32, 24], [8, 'Q8_0', 32, 34], [9, 'Q8_1', 32, 36],
  [10, 'Q2_K', 256, 84], [11, 'Q3_K', 256, 110], [12, 'Q4_K', 256, 144], [13, 'Q5_K', 256, 176],
  [14, 'Q6_K', 256, 210], [15, 'Q8_K', 256, 292], [16, 'IQ2_XXS', 256, 66], [17, 'IQ2_XS', 256, 74],
  [18, 'IQ3_XXS', 256, 98], [19, 'IQ1_S', 256, 50], [20, 'IQ4_NL', 32, 18], [21, 'IQ3_S', 256, 110],
  [22, 'IQ2_S', 256, 82], [23, 'IQ4_XS', 256, 136], [24, 'I8', 1, 1], [25, 'I16', 1, 2],
  [26, 'I32', 1, 4], [27, 'I64', 1, 8], [28, 'F64', 1, 8], [29, 'IQ1_M', 256, 56],
  [30, 'BF16', 1, 2], [34, 'TQ1_0', 256, 54], [35, 'TQ2_0', 256, 66], [39, 'MXFP4', 32, 17]
] as const).map(([id, name, blockSize, typeSize]) => [id, { name, blockSize, typeSize }]))

/** Ids ggml once used and has removed; files using them must be re-converted. */
const REMOVED_GGML_TYPES: Readonly<Record<number, string>> = {
  4: 'Q4_2', 5: 'Q4_3', 31: 'Q4_0_4_4', 32: 'Q4_0_4_8', 33: 'Q4_0_8_8', 36: 'IQ4_NL_4_4', 37: 'IQ4_NL_4_8', 38: 'IQ4_NL_8_8'
}

const VALUE_TYPES = ['uint8', 'int8', 'uint16', 'int16', 'uint32', 'int32', 'float32', 'bool', 'string', 'array', 'uint64', 'int64', 'float64'] as const
const T_BOOL = 7
const T_STRING = 8
const T_ARRAY = 9
/** Byte width of each fixed-size value type. */
const WIDTH: Readonly<Record<number, number>> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 }
const MAGIC = 0x46554747 // "GGUF" read as a little-endian u32
/** Smallest possible encodings, to refuse counts the rest of the file cannot hold. */
const MIN_KV_BYTES = 8 + 4 + 1
const MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8

const utf8 = new TextDecoder('utf-8')

/** What one file has used of the totals in `model/limits.ts`, checked as each grows. */
interface Totals {
  /** Bytes of keys and kept values (`MAX_GGUF_METADATA_BYTES`). */
  kept: number
  /** Bytes of tensor names (`MAX_GGUF_TENSOR_NAME_BYTES`). */
  names: number
  /** Array elements walked (`MAX_GGUF_ARRAY_ELEMENTS`). */
  elements: number
}

/** Throws unless the header still ends within `MAX_GGUF_HEADER_BYTES`. */
function checkHeaderEnd (c: Cursor, what: string): void {
  if (c.pos > MAX_GGUF_HEADER_BYTES) {
    throw malformed(c.file, `the header reaches offset ${c.pos} at ${what}, over the limit of ${MAX_GGUF_HEADER_BYTES} bytes for key/values and tensor infos`)
  }
}

/**
 * Reads a string of at most `max` bytes. With `total`, its length is first added to that running
 * total, which must stay within `limit`: checked before the bytes are read.
 */
async function readString (c: Cursor, what: string, max: number, total?: { add: (n: number) => void }): Promise<string> {
  const len = await c.u64n(`${what} length`)
  if (len > max) throw malformed(c.file, `${what} is ${len} bytes, over the limit of ${max} bytes`)
  total?.add(len)
  return utf8.decode(await c.bytes(len, what))
}

/**
 * A string value: kept up to `MAX_METADATA_VALUE_BYTES`, summarised (skipped, never read) when it
 * is longer, up to `MAX_GGUF_STRING_BYTES`; refused beyond.
 */
async function readValueString (c: Cursor, what: string, kept: { add: (n: number) => void }): Promise<string> {
  const len = await c.u64n(`${what} length`)
  if (len > MAX_GGUF_STRING_BYTES) throw malformed(c.file, `${what} is ${len} bytes, over the limit of ${MAX_GGUF_STRING_BYTES} bytes`)
  if (len <= MAX_METADATA_VALUE_BYTES) {
    kept.add(len)
    return utf8.decode(await c.bytes(len, what))
  }
  c.skip(len, what)
  const summary = `[string × ${len} bytes]`
  kept.add(summary.length)
  return summary
}

function safeOrBig (v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v
}

async function readScalar (c: Cursor, type: number, what: string, kept: { add: (n: number) => void }): Promise<MetaValue> {
  switch (type) {
    case 0: return await c.u8(what)
    case 1: return await c.scalar('Int8', what)
    case 2: return await c.scalar('Uint16', what)
    case 3: return await c.scalar('Int16', what)
    case 4: return await c.u32(what)
    case 5: return await c.scalar('Int32', what)
    case 6: return await c.scalar('Float32', what)
    case T_BOOL: {
      const b = await c.u8(what)
      if (b > 1) throw malformed(c.file, `${what} is a bool with byte value ${b} (must be 0 or 1)`)
      return b === 1
    }
    case T_STRING: return await readValueString(c, what, kept)
    case 10: return safeOrBig(await c.u64(what))
    case 11: return safeOrBig(await c.scalar('BigInt64', what) as bigint)
    case 12: return await c.scalar('Float64', what)
    default: throw malformed(c.file, `${what} has unknown value type ${type} (known: 0..${VALUE_TYPES.length - 1})`)
  }
}

/**
 * Walks an array. Its values are kept only while the whole top-level array stays within
 * `MAX_INLINE_ARRAY_LENGTH` elements (counted across nesting, via `budget`) and strings of at most
 * `MAX_INLINE_ARRAY_STRING_BYTES`; otherwise `values` is undefined and the caller keeps the
 * summary. Strings that are not kept are skipped, never read.
 */
async function walkArray (c: Cursor, what: string, depth: number, budget: { left: number }, totals: Totals, kept: { add: (n: number) => void }): Promise<{ values?: MetaValue[], summary: string }> {
  if (depth > MAX_GGUF_ARRAY_DEPTH) throw malformed(c.file, `${what} nests arrays deeper than ${MAX_GGUF_ARRAY_DEPTH}`)
  const type = await c.u32(`${what} element type`)
  if (type >= VALUE_TYPES.length) throw malformed(c.file, `${what} has unknown element type ${type}`)
  const n = await c.u64n(`${what} length`)
  if (n > MAX_GGUF_ARRAY_LENGTH) throw malformed(c.file, `${what} has ${n} elements, over the limit of ${MAX_GGUF_ARRAY_LENGTH}`)
  const summary = `[array ${VALUE_TYPES[type] ?? type} × ${n}]`
  let values: MetaValue[] | undefined = n <= budget.left ? [] : undefined
  budget.left -= n
  const width = WIDTH[type]
  if (values === undefined && width !== undefined) {
    c.skip(n * width, what)
    checkHeaderEnd(c, what)
    return { summary }
  }
  // Only arrays walked element by element cost time per element.
  totals.elements += n
  if (totals.elements > MAX_GGUF_ARRAY_ELEMENTS) {
    throw malformed(c.file, `${what} brings the arrays walked to ${totals.elements} elements, over the limit of ${MAX_GGUF_ARRAY_ELEMENTS} in one file`)
  }
  for (let i = 0; i < n; i++) {
    if (type === T_STRING && values === undefined && skipBufferedString(c)) continue
    const item = `${what}[${i}]`
    if (type === T_STRING) {
      const len = await c.u64n(`${item} length`)
      if (len > MAX_GGUF_STRING_BYTES) throw malformed(c.file, `${item} is ${len} bytes, over the limit of ${MAX_GGUF_STRING_BYTES} bytes`)
      if (len > MAX_INLINE_ARRAY_STRING_BYTES) values = undefined
      if (values === undefined) {
        c.skip(len, item)
      } else {
        kept.add(len)
        values.push(utf8.decode(await c.bytes(len, item)))
      }
    } else if (type === T_ARRAY) {
      const inner = await walkArray(c, item, depth + 1, budget, totals, kept)
      if (inner.values === undefined) values = undefined
      values?.push(inner.values ?? [])
    } else {
      const v = await readScalar(c, type, item, kept)
      if (values !== undefined) {
        if (type !== T_STRING) kept.add(8)
        values.push(v)
      }
    }
    checkHeaderEnd(c, item)
  }
  return values !== undefined ? { values, summary } : { summary }
}

/**
 * Skips one string of a summarised array when its length is already buffered and plainly within
 * the limits; false (nothing consumed) sends the caller the slow way, which reads and checks it.
 * Skipping vocabularies is most of a GGUF header walk.
 */
function skipBufferedString (c: Cursor): boolean {
  const b = c.buffered(8)
  if (b.length < 8 || (b[4] as number) !== 0 || (b[5] as number) !== 0 || (b[6] as number) !== 0 || (b[7] as number) !== 0) return false
  const len = (b[0] as number) + (b[1] as number) * 0x100 + (b[2] as number) * 0x10000 + (b[3] as number) * 0x1000000
  if (len > MAX_GGUF_STRING_BYTES || 8 + len > c.limit - c.pos || c.pos + 8 + len > MAX_GGUF_HEADER_BYTES) return false
  c.pos += 8 + len
  return true
}

function fail (c: Cursor, problem: string): never {
  throw malformed(c.file, problem)
}

export async function readGguf (src: ByteSource, file = '<gguf>'): Promise<FileStructure> {
  const c = new Cursor(src, file)
  if (src.size < 24) fail(c, `file is ${src.size} bytes, too small for a GGUF header (24 bytes)`)
  const magic = await c.u32('magic')
  if (magic !== MAGIC) fail(c, `bad magic 0x${magic.toString(16).padStart(8, '0')}: not a GGUF file (expected "GGUF")`)
  const version = await c.u32('version')
  if (version === 1) fail(c, 'GGUF version 1 is not supported (it used 32-bit counts); re-convert the model with a current llama.cpp')
  if (version === 0x02000000 || version === 0x03000000) fail(c, 'big-endian GGUF is not supported')
  if (version !== 2 && version !== 3) fail(c, `unsupported GGUF version ${version} (supported: 2, 3)`)

  const tensorCount = await c.u64('tensor_count')
  if (tensorCount > BigInt(MAX_TENSOR_COUNT)) fail(c, `tensor_count ${tensorCount} exceeds the limit of ${MAX_TENSOR_COUNT}`)
  const kvCount = await c.u64('kv_count')
  if (kvCount > BigInt(MAX_GGUF_KV_COUNT)) fail(c, `kv_count ${kvCount} exceeds the limit of ${MAX_GGUF_KV_COUNT}`)
  const minBytes = kvCount * BigInt(MIN_KV_BYTES) + tensorCount * BigInt(MIN_TENSOR_INFO_BYTES)
  if (minBytes > BigInt(src.size - c.pos)) fail(c, `kv_count ${kvCount} and tensor_count ${tensorCount} cannot fit in a ${src.size}-byte file`)

  const metadata: Record<string, MetaValue> = {}
  const totals: Totals = { kept: 0, names: 0, elements: 0 }
  const kept = {
    add: (n: number): void => {
      totals.kept += n
      if (totals.kept > MAX_GGUF_METADATA_BYTES) fail(c, `key/value metadata reaches ${totals.kept} bytes at offset ${c.pos}, over the limit of ${MAX_GGUF_METADATA_BYTES} bytes kept in memory`)
    }
  }
  for (let i = 0; i < kvCount; i++) {
    const key = await readString(c, `key ${i}`, MAX_GGUF_NAME_BYTES, kept)
    if (Object.hasOwn(metadata, key)) fail(c, `key ${JSON.stringify(key)} appears twice`)
    const what = `value of ${JSON.stringify(key)}`
    const type = await c.u32(`${what} type`)
    let value: MetaValue
    if (type === T_ARRAY) {
      const array = await walkArray(c, what, 1, { left: MAX_INLINE_ARRAY_LENGTH }, totals, kept)
      value = array.values ?? array.summary
      if (array.values === undefined) kept.add(array.summary.length)
    } else {
      value = await readScalar(c, type, what, kept)
      if (type !== T_STRING) kept.add(8)
    }
    checkHeaderEnd(c, what)
    setOwn(metadata, key, value)
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT
  const declared = metadata['general.alignment']
  if (declared !== undefined) {
    if (typeof declared !== 'number' || !Number.isSafeInteger(declared) || declared <= 0 || (declared & (declared - 1)) !== 0) {
      fail(c, `general.alignment ${String(declared)} is not a positive power of two`)
    }
    alignment = declared
  }

  const infos: Array<TensorInfo & { rel: number }> = []
  const names = new Set<string>()
  const nameBytes = {
    add: (n: number): void => {
      totals.names += n
      if (totals.names > MAX_GGUF_TENSOR_NAME_BYTES) fail(c, `tensor names reach ${totals.names} bytes at offset ${c.pos}, over the limit of ${MAX_GGUF_TENSOR_NAME_BYTES} bytes in all`)
    }
  }
  for (let i = 0; i < tensorCount; i++) {
    infos.push(await readTensorInfo(c, i, alignment, names, nameBytes))
    checkHeaderEnd(c, `tensor ${i}`)
  }

  const dataStart = Math.ceil(c.pos / alignment) * alignment
  const tensors: TensorInfo[] = infos.map(({ rel, ...t }) => {
    const offset = dataStart + rel
    if (offset + t.length > src.size) {
      fail(c, `tensor ${JSON.stringify(t.name)} data [${offset}, ${offset + t.length}) runs past the end of the file (${src.size} bytes; truncated?)`)
    }
    return { ...t, offset }
  }).sort((a, b) => a.offset - b.offset || a.length - b.length)
  for (let i = 1; i < tensors.length; i++) {
    const prev = tensors[i - 1] as TensorInfo
    const t = tensors[i] as TensorInfo
    if (t.offset < prev.offset + prev.length) fail(c, `tensors ${JSON.stringify(prev.name)} and ${JSON.stringify(t.name)} overlap`)
  }

  const arch = metadata['general.architecture']
  return {
    format: 'gguf',
    headerLength: Math.min(dataStart, src.size),
    tensors,
    parameterCount: parameterCount(tensors),
    dtypes: [...new Set(tensors.map(t => t.dtype))].sort(),
    ...(typeof arch === 'string' ? { architecture: arch, architectureFrom: 'metadata' as const } : {}),
    metadata
  }
}

async function readTensorInfo (c: Cursor, i: number, alignment: number, names: Set<string>, nameBytes: { add: (n: number) => void }): Promise<TensorInfo & { rel: number }> {
  const name = await readString(c, `tensor ${i} name`, MAX_GGUF_NAME_BYTES, nameBytes)
  const what = `tensor ${JSON.stringify(name)}`
  if (names.has(name)) fail(c, `${what} is declared twice`)
  names.add(name)
  const nDims = await c.u32(`${what} n_dims`)
  if (nDims > MAX_GGUF_DIMS) fail(c, `${what} has ${nDims} dimensions, more than ${MAX_GGUF_DIMS}`)
  const shape: number[] = []
  for (let d = 0; d < nDims; d++) shape.push(await c.u64n(`${what} dimension ${d}`))
  const typeId = await c.u32(`${what} type`)
  const type = GGML_TYPES.get(typeId)
  if (type === undefined) {
    const removed = REMOVED_GGML_TYPES[typeId]
    fail(c, removed !== undefined
      ? `${what} uses ggml type ${typeId} (${removed}), which ggml has removed; re-convert the model`
      : `${what} has unknown ggml type ${typeId}`)
  }
  const rel = await c.u64n(`${what} offset`)
  if (rel % alignment !== 0) fail(c, `${what} offset ${rel} is not a multiple of the alignment ${alignment}`)
  const elements = elementCount(shape)
  if (elements > BigInt(Number.MAX_SAFE_INTEGER)) fail(c, `${what} shape [${shape.join(', ')}] has ${elements} elements, too many`)
  if ((shape[0] ?? 1) % type.blockSize !== 0) {
    fail(c, `${what} first dimension ${shape[0] ?? 1} is not a multiple of the ${type.name} block size ${type.blockSize}`)
  }
  const length = elements / BigInt(type.blockSize) * BigInt(type.typeSize)
  if (length > BigInt(Number.MAX_SAFE_INTEGER)) fail(c, `${what} needs ${length} bytes, too many`)
  return { name, dtype: type.name, shape, offset: 0, length: Number(length), rel }
}
