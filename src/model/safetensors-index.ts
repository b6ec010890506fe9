/**
 * Sharded safetensors index (`model.safetensors.index.json`, `*.safetensors.index.json`):
 * `{ "metadata"?: { "total_size": n, ... }, "weight_map": { "<tensor>": "<shard file>" } }`.
 *
 * MUST hold, or `MalformedModelError`: the file is at most `MAX_SAFETENSORS_INDEX_BYTES`, UTF-8
 * JSON, an object whose `weight_map` maps at most `MAX_TENSOR_COUNT` tensors to shard paths that
 * are relative, without `..` segments, NUL or invisible format characters (see
 * `checkRelativePath`); every other top-level member is at most `MAX_SAFETENSORS_INDEX_MEMBER_BYTES`
 * of JSON; no key appears twice. Like the safetensors header, the file is scanned and read member
 * by member (`model/json-object.ts`), never parsed whole.
 *
 * Returns no tensors (they live in the shards, which are read on their own); `shards` lists the
 * distinct shard paths, sorted; `metadata` keeps scalar values as they are and JSON-encodes
 * nested ones. The whole file is metadata, so `headerLength` is the file size.
 */
import { checkRelativePath, malformed, setOwn } from './cursor.js'
import { breather, scanObject } from './json-object.js'
import { MAX_JSON_DEPTH, MAX_SAFETENSORS_INDEX_BYTES, MAX_SAFETENSORS_INDEX_MEMBER_BYTES, MAX_TENSOR_COUNT } from './limits.js'
import type { ByteSource, FileStructure, MetaValue } from './types.js'

/** Most top-level members of an index: `metadata`, `weight_map` and a few a writer may add. @default 1024 */
const MAX_INDEX_TOP_MEMBERS = 1024
/** Most distinct shard files an index may name (a version holds at most `MAX_FILES` files anyway). @default 100_000 */
const MAX_INDEX_SHARDS = 100_000

/** True for names the index reader handles. */
export function isSafetensorsIndexName (path: string): boolean {
  return /(^|[/\\])([^/\\]*\.)?safetensors\.index\.json$/.test(path)
}

export async function readSafetensorsIndex (src: ByteSource, file = '<safetensors index>'): Promise<FileStructure> {
  if (src.size > MAX_SAFETENSORS_INDEX_BYTES) {
    throw malformed(file, `safetensors index is ${src.size} bytes, over the limit of ${MAX_SAFETENSORS_INDEX_BYTES} bytes`)
  }
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(await src.read(0, src.size))
  } catch (err) {
    if (err instanceof TypeError) throw malformed(file, 'safetensors index is not valid UTF-8 JSON: it is not valid UTF-8')
    throw err
  }
  const top = await scanObject(text, 0, text.length, { file, what: 'safetensors index', maxMembers: MAX_INDEX_TOP_MEMBERS, maxDepth: MAX_JSON_DEPTH })
  let weightMap: number | undefined
  const metadata: Record<string, MetaValue> = {}
  for (let i = 0; i < top.count; i++) {
    const key = top.key(i)
    if (key === 'weight_map') { weightMap = i; continue }
    const length = top.valueLength(i)
    if (length > MAX_SAFETENSORS_INDEX_MEMBER_BYTES) {
      throw malformed(file, `safetensors index member ${JSON.stringify(key)} is ${length} characters of JSON, over the limit of ${MAX_SAFETENSORS_INDEX_MEMBER_BYTES}`)
    }
    const value = top.value(i)
    if (key !== 'metadata' || value === null) continue
    if (typeof value !== 'object' || Array.isArray(value)) throw malformed(file, '"metadata" is not an object')
    for (const [k, v] of Object.entries(value)) {
      setOwn(metadata, k, typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' ? v : JSON.stringify(v))
    }
  }
  if (weightMap === undefined || top.valueStart(weightMap) !== '{') {
    if (weightMap !== undefined) top.value(weightMap) // invalid JSON is named as such
    throw malformed(file, 'safetensors index has no "weight_map" object')
  }
  const map = await top.object(weightMap, { file, what: 'safetensors index weight_map', maxMembers: MAX_TENSOR_COUNT, maxDepth: MAX_JSON_DEPTH })
  const shards = new Set<string>()
  const pause = breather()
  for (let i = 0; i < map.count; i++) {
    const tensor = map.key(i)
    if (map.valueStart(i) !== '"') throw malformed(file, `weight_map entry for ${JSON.stringify(tensor)} is not a file name`)
    const shard = map.value(i) as string
    if (!shards.has(shard)) {
      checkRelativePath(file, shard, `shard for tensor ${JSON.stringify(tensor)}`)
      if (shards.size >= MAX_INDEX_SHARDS) throw malformed(file, `weight_map names more than ${MAX_INDEX_SHARDS} shard files, over the limit of ${MAX_INDEX_SHARDS}`)
    }
    shards.add(shard)
    await pause()
  }

  return {
    format: 'safetensors-index',
    headerLength: src.size,
    tensors: [],
    parameterCount: 0,
    dtypes: [],
    metadata,
    shards: [...shards].sort()
  }
}
