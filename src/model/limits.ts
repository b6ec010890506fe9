/**
 * Size caps for model-format headers. Every length, count or depth a reader takes from a file is
 * checked against one of these before it allocates or loops, so a hostile header costs at most
 * these bounds in memory and time, never an amount the file chooses.
 *
 * The caps are generous for real models (a 405B-parameter llama has ~1k tensors, a 256k-token
 * vocabulary is one GGUF array) and refuse only what no real file needs.
 */

const MiB = 1024 * 1024

/**
 * Largest safetensors JSON header, the same cap the reference `safetensors` crate applies.
 * @default 100_000_000
 */
export const MAX_SAFETENSORS_HEADER_BYTES = 100_000_000

/**
 * Largest `*.safetensors.index.json` file read into memory.
 * @default 64 MiB
 */
export const MAX_SAFETENSORS_INDEX_BYTES = 64 * MiB

/**
 * Most tensors one file may declare (GGUF `tensor_count`, safetensors entries, ONNX initializers).
 * @default 1_000_000
 */
export const MAX_TENSOR_COUNT = 1_000_000

/**
 * Most dimensions a tensor shape may have. GGUF has its own, smaller limit ({@link MAX_GGUF_DIMS}).
 * @default 8
 */
export const MAX_DIMS = 8

/**
 * Most dimensions of a GGUF tensor (`GGML_MAX_DIMS`).
 * @default 4
 */
export const MAX_GGUF_DIMS = 4

/**
 * Most GGUF key/value pairs.
 * @default 65_536
 */
export const MAX_GGUF_KV_COUNT = 65_536

/**
 * Longest GGUF string (keys, tensor names, values such as a chat template), in bytes.
 * @default 16 MiB
 */
export const MAX_GGUF_STRING_BYTES = 16 * MiB

/**
 * Most bytes of GGUF metadata values kept in memory in total (strings, small arrays); summarised
 * arrays count only their summary.
 * @default 64 MiB
 */
export const MAX_GGUF_METADATA_BYTES = 64 * MiB

/**
 * Most elements in one GGUF array. Arrays are walked, not stored, so this bounds time, not memory.
 * @default 16_777_216
 */
export const MAX_GGUF_ARRAY_LENGTH = 16_777_216

/**
 * Deepest nesting of GGUF arrays of arrays.
 * @default 4
 */
export const MAX_GGUF_ARRAY_DEPTH = 4

/**
 * Arrays with at most this many elements (counted across nested arrays) are copied into
 * metadata; longer ones are summarised as `[array <type> × <length>]`.
 * @default 64
 */
export const MAX_INLINE_ARRAY_LENGTH = 64

/**
 * Strings inside arrays longer than this are not copied into metadata (the array is summarised).
 * @default 1024
 */
export const MAX_INLINE_ARRAY_STRING_BYTES = 1024

/**
 * Most bytes an ONNX reader fetches from the file in total while walking the protobuf structure.
 * Weights are skipped, not fetched, so this bounds the cost of huge graphs (many nodes).
 * @default 256 MiB
 */
export const MAX_ONNX_BYTES_SCANNED = 256 * MiB

/**
 * Longest ONNX string field (names, producer, metadata values) copied into memory. Longer
 * `doc_string`s are skipped and summarised; longer names are an error.
 * @default 1 MiB
 */
export const MAX_ONNX_STRING_BYTES = 1 * MiB

/**
 * Window of the buffered header cursor: the most bytes fetched by one read-ahead. Read-ahead
 * starts at {@link MIN_READ_WINDOW_BYTES} after every seek and doubles while reads stay sequential.
 * @default 1 MiB
 */
export const MAX_READ_WINDOW_BYTES = 1 * MiB

/**
 * Read-ahead of the header cursor right after a seek (skipping weights).
 * @default 16 KiB
 */
export const MIN_READ_WINDOW_BYTES = 16 * 1024
