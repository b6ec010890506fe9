/**
 * Sharded safetensors index (`model.safetensors.index.json`, `*.safetensors.index.json`):
 * `{ "metadata"?: { "total_size": n, ... }, "weight_map": { "<tensor>": "<shard file>" } }`.
 *
 * MUST hold, or `MalformedModelError`: the file is at most `MAX_SAFETENSORS_INDEX_BYTES`, UTF-8
 * JSON, an object whose `weight_map` maps strings to shard paths that are relative, without `..`
 * segments and without NUL (see `checkRelativePath`).
 *
 * Returns no tensors (they live in the shards, which are read on their own); `shards` lists the
 * distinct shard paths, sorted; `metadata` keeps scalar values as they are and JSON-encodes
 * nested ones. The whole file is metadata, so `headerLength` is the file size.
 */
import { checkRelativePath, malformed, setOwn } from './cursor.js'
import { MAX_SAFETENSORS_INDEX_BYTES, MAX_TENSOR_COUNT } from './limits.js'
import type { ByteSource, FileStructure, MetaValue } from './types.js'

/** True for names the index reader handles. */
export function isSafetensorsIndexName (path: string): boolean {
  return /(^|[/\\])([^/\\]*\.)?safetensors\.index\.json$/.test(path)
}

export async function readSafetensorsIndex (src: ByteSource, file = '<safetensors index>'): Promise<FileStructure> {
  if (src.size > MAX_SAFETENSORS_INDEX_BYTES) {
    throw malformed(file, `safetensors index is ${src.size} bytes, over the ${MAX_SAFETENSORS_INDEX_BYTES}-byte limit`)
  }
  let json: unknown
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(await src.read(0, src.size)))
  } catch (err) {
    throw malformed(file, `safetensors index is not valid UTF-8 JSON: ${(err as Error).message}`)
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw malformed(file, 'safetensors index is not a JSON object')
  const { weight_map: weightMap, metadata: meta } = json as Record<string, unknown>
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw malformed(file, 'safetensors index has no "weight_map" object')
  }
  const entries = Object.entries(weightMap)
  if (entries.length > MAX_TENSOR_COUNT) throw malformed(file, `weight_map names ${entries.length} tensors, over the ${MAX_TENSOR_COUNT} limit`)
  const shards = new Set<string>()
  for (const [tensor, shard] of entries) {
    if (typeof shard !== 'string') throw malformed(file, `weight_map entry for ${JSON.stringify(tensor)} is not a file name`)
    if (!shards.has(shard)) checkRelativePath(file, shard, `shard for tensor ${JSON.stringify(tensor)}`)
    shards.add(shard)
  }

  const metadata: Record<string, MetaValue> = {}
  if (meta !== undefined && meta !== null) {
    if (typeof meta !== 'object' || Array.isArray(meta)) throw malformed(file, '"metadata" is not an object')
    for (const [k, v] of Object.entries(meta)) {
      setOwn(metadata, k, typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' ? v : JSON.stringify(v))
    }
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
