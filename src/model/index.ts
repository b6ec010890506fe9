/**
 * Model-format readers: structure and metadata of safetensors, sharded-safetensors indexes, GGUF
 * and ONNX files, read from headers only (see the contract in `model/types.ts`).
 *
 * `readStructure` picks a reader by name and magic (`detectFormat`); anything else is `other`,
 * with no tensors (a top-level Hugging Face `config.json` / `generation_config.json` with the
 * metadata `hf-config.ts` keeps), and is chunked as plain bytes by the caller. ONNX external-data files are
 * `other` here: the ONNX model that references them carries their tensor ranges (`TensorInfo.file`).
 * Readers never throw anything but `MalformedModelError` for bad input; I/O errors pass through;
 * an aborted read is an `AbortedError`.
 */
import { AbortedError } from '../core/errors.js'
import { readGguf } from './gguf.js'
import { isHfConfigName, readHfConfig } from './hf-config.js'
import { readOnnx } from './onnx.js'
import { isSafetensorsIndexName, readSafetensorsIndex } from './safetensors-index.js'
import { readSafetensors } from './safetensors.js'
import type { ByteSource, FileStructure, ModelFormat, ModelSummary } from './types.js'

export type * from './types.js'
export { openFileSource, bufferSource, type FileSource } from './source.js'
export { readSafetensors, readSafetensorsIndex, readGguf, readOnnx }
export { parameterCount } from './cursor.js'

/** How many leading bytes `detectFormat` looks at. */
export const SNIFF_BYTES = 4

const GGUF_MAGIC = [0x47, 0x47, 0x55, 0x46] // "GGUF"

/** Picks a format from the file name, and for GGUF also from its magic bytes. */
export function detectFormat (path: string, firstBytes: Uint8Array): ModelFormat {
  const lower = path.toLowerCase()
  if (isSafetensorsIndexName(lower)) return 'safetensors-index'
  if (lower.endsWith('.gguf') || GGUF_MAGIC.every((b, i) => firstBytes[i] === b)) return 'gguf'
  if (lower.endsWith('.safetensors')) return 'safetensors'
  if (lower.endsWith('.onnx')) return 'onnx'
  return 'other'
}

/**
 * Reads the structure of one file; `relPath` names it in errors and picks the reader. With a
 * `signal`, every read from the file first checks it and throws `AbortedError` once it is aborted.
 */
export async function readStructure (relPath: string, source: ByteSource, signal?: AbortSignal): Promise<FileStructure> {
  const src: ByteSource = signal === undefined
    ? source
    : {
        size: source.size,
        async read (offset, length) {
          if (signal.aborted) throw new AbortedError(`reading ${relPath} was cancelled`)
          return await source.read(offset, length)
        }
      }
  const first = await src.read(0, Math.min(SNIFF_BYTES, src.size))
  switch (detectFormat(relPath, first)) {
    case 'safetensors': return await readSafetensors(src, relPath)
    case 'safetensors-index': return await readSafetensorsIndex(src, relPath)
    case 'gguf': return await readGguf(src, relPath)
    case 'onnx': return await readOnnx(src, relPath)
    default: return isHfConfigName(relPath) ? await readHfConfig(src, relPath) : { format: 'other', headerLength: 0, tensors: [], parameterCount: 0, dtypes: [], metadata: {} }
  }
}


/**
 * Merges per-file structures into a model-level view. The architecture is the first one declared
 * in metadata, else the first heuristic guess.
 */
export function summarize (structures: Iterable<FileStructure>): ModelSummary {
  const formats = new Set<ModelFormat>()
  const dtypes = new Set<string>()
  let params = 0
  let tensorCount = 0
  let declared: string | undefined
  let guessed: string | undefined
  for (const s of structures) {
    if (s.format !== 'other') formats.add(s.format)
    for (const d of s.dtypes) dtypes.add(d)
    params += s.parameterCount
    tensorCount += s.tensors.length
    if (s.architecture !== undefined) {
      if (s.architectureFrom === 'tensor-names') guessed ??= s.architecture
      else declared ??= s.architecture
    }
  }
  const architecture = declared ?? guessed
  return {
    formats: [...formats].sort(),
    parameterCount: params,
    dtypes: [...dtypes].sort(),
    ...(architecture !== undefined ? { architecture } : {}),
    tensorCount
  }
}
