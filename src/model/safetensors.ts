/**
 * safetensors reader: `u64 LE N`, then an N-byte JSON header, then the data region.
 *
 * Header: `{ "<tensor>": { "dtype", "shape", "data_offsets": [begin, end] }, "__metadata__"?: {string: string} }`,
 * offsets relative to the data region at byte `8 + N`.
 *
 * MUST hold, or `MalformedModelError`: N ≤ `MAX_SAFETENSORS_HEADER_BYTES` and `8 + N` ≤ file size;
 * the header is a UTF-8 JSON object of at most `MAX_TENSOR_COUNT` tensors, each entry at most
 * `MAX_SAFETENSORS_ENTRY_BYTES` of JSON, no key twice; every dtype is one safetensors defines;
 * shapes are non-negative integers (at most `MAX_DIMS`); `elements × dtype bits / 8 == end − begin`,
 * computed in bigint so overflow cannot hide; ranges lie inside the data region and do not overlap.
 * Gaps between tensors are tolerated (the reference crate refuses them; we only need ranges).
 *
 * Bounded before anything is built: the header is never parsed whole; a scan counts its entries
 * (refusing too many) and each entry is then parsed on its own (`model/json-object.ts`), giving the
 * event loop a turn as it goes, so a daemon reading a 16 MiB header keeps answering.
 *
 * Reads exactly `8 + N` bytes. The architecture is a hint: `__metadata__` `modelspec.architecture`
 * / `architecture` if present, else guessed from tensor names (`architectureFrom` says which).
 */
import { elementCount, malformed, parameterCount, setOwn } from './cursor.js'
import { breather, scanObject, type ObjectScan } from './json-object.js'
import {
  MAX_DIMS, MAX_JSON_DEPTH, MAX_METADATA_VALUE_BYTES, MAX_SAFETENSORS_ENTRY_BYTES, MAX_SAFETENSORS_HEADER_BYTES, MAX_SAFETENSORS_METADATA_KEYS, MAX_TENSOR_COUNT
} from './limits.js'
import type { ByteSource, FileStructure, MetaValue, TensorInfo } from './types.js'

/** Bits per element of every safetensors dtype (sub-byte types pack; the total must be whole bytes). */
export const SAFETENSORS_DTYPE_BITS: Readonly<Record<string, number>> = {
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64
}

const METADATA_KEY = '__metadata__'

/** Architecture hints from tensor-name conventions, most specific first. */
const NAME_HINTS: ReadonlyArray<readonly [RegExp, string]> = [
  [/^model\.diffusion_model\./, 'stable-diffusion-unet'],
  [/^(model\.)?language_model\.model\.layers\.\d+\.self_attn\./, 'llama-like decoder (multimodal)'],
  [/^model\.layers\.\d+\.self_attn\./, 'llama-like decoder'],
  [/^model\.decoder\.layers\.\d+\./, 'opt/bart-like decoder'],
  [/^(transformer\.)?h\.\d+\.attn\./, 'gpt2-like decoder'],
  [/^gpt_neox\.layers\.\d+\./, 'gpt-neox'],
  [/^transformer\.blocks\.\d+\./, 'mpt-like decoder'],
  [/^(bert|roberta)\.|^encoder\.layer\.\d+\.attention\./, 'bert-like encoder'],
  [/^(vision_model|text_model)\.encoder\.layers\.\d+\./, 'clip-like']
]

/** Guesses an architecture from tensor names; undefined when nothing matches. */
export function architectureFromNames (names: Iterable<string>): string | undefined {
  for (const name of names) {
    for (const [re, arch] of NAME_HINTS) if (re.test(name)) return arch
  }
  return undefined
}

function isRecord (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

export async function readSafetensors (src: ByteSource, file = '<safetensors>'): Promise<FileStructure> {
  if (src.size < 8) throw malformed(file, `file is ${src.size} bytes, too small for the 8-byte safetensors header length`)
  const lenBytes = await src.read(0, 8)
  const n = new DataView(lenBytes.buffer, lenBytes.byteOffset, 8).getBigUint64(0, true)
  if (n > BigInt(MAX_SAFETENSORS_HEADER_BYTES)) {
    throw malformed(file, `safetensors header length ${n} is over the limit of ${MAX_SAFETENSORS_HEADER_BYTES} bytes (real headers take about 100 bytes per tensor)`)
  }
  const headerLen = Number(n)
  if (8 + headerLen > src.size) {
    throw malformed(file, `safetensors header length ${headerLen} runs past the end of the file (${src.size} bytes; truncated?)`)
  }
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(await src.read(8, headerLen))
  } catch (err) {
    if (err instanceof TypeError) throw malformed(file, 'safetensors header is not valid UTF-8')
    throw err
  }
  const header = await scanObject(text, 0, text.length, {
    file, what: 'safetensors header', maxMembers: MAX_TENSOR_COUNT + 1, maxDepth: MAX_JSON_DEPTH
  })
  const dataStart = 8 + headerLen
  const dataSize = src.size - dataStart
  const metadata: Record<string, MetaValue> = {}
  const tensors: TensorInfo[] = []
  const pause = breather()

  for (let i = 0; i < header.count; i++) {
    const name = header.key(i)
    if (name === METADATA_KEY) {
      await readMetadata(header, i, file, metadata)
      continue
    }
    if (tensors.length >= MAX_TENSOR_COUNT) throw malformed(file, `safetensors header declares more than ${MAX_TENSOR_COUNT} tensors, over the limit of ${MAX_TENSOR_COUNT}`)
    const length = header.valueLength(i)
    if (length > MAX_SAFETENSORS_ENTRY_BYTES) {
      throw malformed(file, `tensor ${JSON.stringify(name)}: its entry is ${length} characters of JSON, over the limit of ${MAX_SAFETENSORS_ENTRY_BYTES} (a real entry is about 100)`)
    }
    tensors.push(parseEntry(file, name, header.value(i), dataStart, dataSize))
    await pause()
  }

  tensors.sort((a, b) => a.offset - b.offset || a.length - b.length)
  let prev: TensorInfo | undefined
  for (const t of tensors) {
    if (prev !== undefined && t.offset < prev.offset + prev.length) {
      throw malformed(file, `tensors ${JSON.stringify(prev.name)} and ${JSON.stringify(t.name)} overlap in the data region`)
    }
    prev = t
  }

  const declared = metadata['modelspec.architecture'] ?? metadata.architecture
  const guessed = declared === undefined ? architectureFromNames(tensors.map(t => t.name)) : undefined
  const architecture = typeof declared === 'string' ? declared : guessed
  return {
    format: 'safetensors',
    headerLength: dataStart,
    tensors,
    parameterCount: parameterCount(tensors),
    dtypes: [...new Set(tensors.map(t => t.dtype))].sort(),
    ...(architecture !== undefined ? { architecture, architectureFrom: declared !== undefined ? 'metadata' as const : 'tensor-names' as const } : {}),
    metadata
  }
}

/** `__metadata__`: an object of strings, read member by member like the header itself. */
async function readMetadata (header: ObjectScan, i: number, file: string, into: Record<string, MetaValue>): Promise<void> {
  if (header.valueStart(i) !== '{') throw malformed(file, '__metadata__ is not an object of strings')
  const meta = await header.object(i, { file, what: 'safetensors __metadata__', maxMembers: MAX_SAFETENSORS_METADATA_KEYS, maxDepth: MAX_JSON_DEPTH })
  const pause = breather()
  for (let m = 0; m < meta.count; m++) {
    const key = meta.key(m)
    if (meta.valueStart(m) !== '"') throw malformed(file, `__metadata__ value for ${JSON.stringify(key)} is not a string`)
    const value = meta.value(m) as string
    // As GGUF and ONNX: a value longer than a manifest keeps is summarised.
    const bytes = value.length > MAX_METADATA_VALUE_BYTES / 3 ? Buffer.byteLength(value) : value.length
    setOwn(into, key, bytes > MAX_METADATA_VALUE_BYTES ? `[string × ${bytes} bytes]` : value)
    await pause()
  }
}

function parseEntry (file: string, name: string, entry: unknown, dataStart: number, dataSize: number): TensorInfo {
  const bad = (why: string): never => { throw malformed(file, `tensor ${JSON.stringify(name)}: ${why}`) }
  if (!isRecord(entry)) bad('entry is not an object')
  const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>
  if (typeof dtype !== 'string') return bad('dtype is missing or not a string')
  const bits = SAFETENSORS_DTYPE_BITS[dtype]
  if (bits === undefined) bad(`unknown dtype ${JSON.stringify(dtype)}`)
  if (!Array.isArray(shape)) return bad('shape is missing or not an array')
  if (shape.length > MAX_DIMS) bad(`shape has ${shape.length} dimensions, more than ${MAX_DIMS}`)
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) bad(`shape ${JSON.stringify(shape)} has a dimension that is not a non-negative integer`)
  }
  if (!Array.isArray(offsets) || offsets.length !== 2) return bad('data_offsets is not a [begin, end] pair')
  const [begin, end] = offsets as unknown[]
  if (typeof begin !== 'number' || typeof end !== 'number' || !Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0 || end < begin) {
    return bad(`data_offsets ${JSON.stringify(offsets)} are not non-negative integers with begin <= end`)
  }
  if (end > dataSize) bad(`data_offsets [${begin}, ${end}] run past the data region (${dataSize} bytes; truncated file?)`)
  const elements = elementCount(shape as number[])
  const totalBits = elements * BigInt(bits as number)
  if (elements > BigInt(Number.MAX_SAFE_INTEGER) || totalBits % 8n !== 0n || totalBits / 8n !== BigInt(end - begin)) {
    bad(`shape ${JSON.stringify(shape)} of ${dtype} needs ${totalBits / 8n} bytes but data_offsets span ${end - begin}`)
  }
  return { name, dtype, shape: shape as number[], offset: dataStart + begin, length: end - begin }
}
