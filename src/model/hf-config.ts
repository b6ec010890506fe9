/**
 * Hugging Face `config.json` and `generation_config.json` at the top of a model folder: what a
 * person asks of a model — its architectures, `model_type`, `torch_dtype`, `num_parameters` and
 * shape hyperparameters where present, and the generation defaults — kept as the file's metadata
 * (`FileStructure.metadata`), with `architectures[0]` as the declared architecture.
 *
 * Such files stay format `other` (chunked as plain bytes). A file over `MAX_HF_CONFIG_BYTES`, not
 * JSON or not an object is not an error: a folder may hold any `config.json`; it is simply not read.
 * Only known keys with scalar values (or short lists of them) are kept, each bounded, so the
 * manifest never carries an arbitrary document.
 */
import type { ByteSource, FileStructure, MetaValue } from './types.js'

/** @default 1 MiB — larger config files are not read (real ones are a few KiB) */
export const MAX_HF_CONFIG_BYTES = 1024 * 1024
/** @default 256 — characters of a string value kept */
const MAX_VALUE_CHARS = 256
/** @default 16 — items of a list value kept (architectures, eos_token_id) */
const MAX_LIST_ITEMS = 16

/** Keys of config.json kept, as the Hugging Face `PretrainedConfig` names them. */
const CONFIG_KEYS = ['architectures', 'model_type', 'torch_dtype', 'num_parameters', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads', 'vocab_size', 'max_position_embeddings', 'rope_theta', 'transformers_version'] as const
/** Keys of generation_config.json kept (`GenerationConfig`). */
const GENERATION_KEYS = ['do_sample', 'temperature', 'top_p', 'top_k', 'max_length', 'max_new_tokens', 'repetition_penalty', 'bos_token_id', 'eos_token_id', 'pad_token_id'] as const

/** Whether `relPath` is a Hugging Face config file this reader reads (top level only). */
export function isHfConfigName (relPath: string): boolean {
  return relPath === 'config.json' || relPath === 'generation_config.json'
}

export async function readHfConfig (src: ByteSource, relPath: string): Promise<FileStructure> {
  const plain: FileStructure = { format: 'other', headerLength: 0, tensors: [], parameterCount: 0, dtypes: [], metadata: {} }
  if (src.size > MAX_HF_CONFIG_BYTES) return plain
  let value: unknown
  try {
    value = JSON.parse(Buffer.from(await src.read(0, src.size)).toString('utf8'))
  } catch {
    return plain
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return plain
  const record = value as Record<string, unknown>
  const metadata: Record<string, MetaValue> = {}
  for (const key of relPath === 'config.json' ? CONFIG_KEYS : GENERATION_KEYS) {
    // architectures is a list of class names; anything else in its place is not kept.
    const kept = key === 'architectures' && !Array.isArray(record[key]) ? undefined : scalarOrList(record[key])
    if (kept !== undefined) metadata[key] = kept
  }
  const architectures = metadata.architectures
  const architecture = Array.isArray(architectures) && typeof architectures[0] === 'string' ? architectures[0] : undefined
  return { ...plain, metadata, ...(architecture !== undefined ? { architecture, architectureFrom: 'metadata' as const } : {}) }
}

function scalarOrList (value: unknown): MetaValue | undefined {
  if (typeof value === 'string') return value.slice(0, MAX_VALUE_CHARS)
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined
  if (typeof value === 'boolean') return value
  if (Array.isArray(value) && value.length <= MAX_LIST_ITEMS && value.every(v => typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v)))) {
    return value.map(v => typeof v === 'string' ? v.slice(0, MAX_VALUE_CHARS) : v) as MetaValue
  }
  return undefined
}
