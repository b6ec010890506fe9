/**
 * What a format reader learns about one file without loading its weights.
 *
 * Contract for every reader:
 * - reads only headers, through a {@link ByteSource}, with memory bounded by the header-size caps in
 *   `model/limits.ts` (never proportional to the weights);
 * - validates everything it reads against the file size: a truncated or lying header
 *   (length beyond the file, absurd counts or shapes, u64 overflow, offsets out of range or
 *   overlapping) throws `MalformedModelError` with a message that names the file and the problem;
 * - returns tensor data ranges as absolute byte offsets in the file, sorted by offset, so the
 *   chunker can start a new chunk at each tensor.
 */

/** Positioned reads over one file. Implementations: a file handle (`model/source.ts`), a buffer (tests). */
export interface ByteSource {
  readonly size: number
  /** Reads exactly `length` bytes at `offset`, or throws if the range is past the end. */
  read (offset: number, length: number): Promise<Uint8Array>
}

export type ModelFormat = 'safetensors' | 'safetensors-index' | 'gguf' | 'onnx' | 'onnx-data' | 'other'

export interface TensorInfo {
  name: string
  /** Format-native dtype name, upper-case for safetensors (`F32`, `BF16`), GGML type name for GGUF (`F16`, `Q4_K`), ONNX `TensorProto.DataType` name (`FLOAT`). */
  dtype: string
  shape: number[]
  /** Absolute offset of the tensor's data in the file that holds it. */
  offset: number
  /** Byte length of the tensor's data. */
  length: number
  /** When the data lives in another file (ONNX external data): its path relative to this file's folder. */
  file?: string
}

/** Scalar or list metadata values a format embeds (GGUF key/values, safetensors `__metadata__`, ONNX metadata_props). */
export type MetaValue = string | number | boolean | bigint | MetaValue[]

export interface FileStructure {
  format: ModelFormat
  /** Bytes [0, headerLength) are the header (metadata region); tensor data follows. 0 when not applicable. */
  headerLength: number
  /** Sorted by `offset`, non-overlapping, within the file (or within `file` for external data). */
  tensors: TensorInfo[]
  /** Sum over tensors of the product of their shapes. */
  parameterCount: number
  /** Distinct dtypes, sorted. */
  dtypes: string[]
  /** e.g. `llama` from GGUF `general.architecture`, ONNX producer/domain hints, safetensors heuristics. */
  architecture?: string
  /** Where `architecture` came from: declared in the file's metadata, or a heuristic guess from tensor names (a hint only). */
  architectureFrom?: 'metadata' | 'tensor-names'
  /** Embedded metadata, keys as in the file. Large arrays (e.g. GGUF tokenizer vocabularies) are summarised, not copied. */
  metadata: Record<string, MetaValue>
  /** For safetensors-index: the shard files it names (relative paths). */
  shards?: string[]
  /** ONNX only: graph summary. */
  graph?: OnnxGraphSummary
}

export interface OnnxGraphSummary {
  inputs: IoInfo[]
  outputs: IoInfo[]
  /** Operator-set versions by domain; the default domain `""` is reported as `ai.onnx`. */
  opsets: Record<string, number>
  producer?: string
  producerVersion?: string
  irVersion?: number
  modelVersion?: number
  domain?: string
  name?: string
  nodeCount: number
}

/** Model-level view merged from the structures of its files (`model/index.ts` `summarize`). */
export interface ModelSummary {
  /** Distinct formats present, sorted, `other` excluded. */
  formats: ModelFormat[]
  parameterCount: number
  dtypes: string[]
  architecture?: string
  tensorCount: number
}

export interface IoInfo { name: string, dtype: string, shape: Array<number | string> }
