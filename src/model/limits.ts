/**
 * Size caps for model-format headers. Every length, count or depth a reader takes from a file is
 * checked against one of these before it allocates or loops, and every total (bytes kept, names,
 * elements walked, fields visited) is checked as it grows, so a hostile header costs at most these
 * bounds in memory and time, never an amount the file chooses.
 *
 * The caps are generous for real models (a 405B-parameter llama has ~1k tensors, the largest
 * mixture-of-experts checkpoints ~150k across all their shards, a 256k-token vocabulary is one
 * GGUF array of a few MiB) and refuse only what no real file needs. A version's manifest holds at
 * most 32 MiB (`MAX_MANIFEST_BYTES`), about 300k tensor records, so a file with more tensors than
 * {@link MAX_TENSOR_COUNT} could not be stored anyway.
 */

const MiB = 1024 * 1024

/**
 * Largest safetensors JSON header. The reference `safetensors` crate allows 100 MB; a header that
 * large of tiny entries took two minutes and 2.3 GiB to parse, and the largest real headers are a
 * few MiB (~100 bytes per tensor).
 * @default 16 MiB
 */
export const MAX_SAFETENSORS_HEADER_BYTES = 16 * MiB

/**
 * Largest JSON text of one safetensors tensor entry (`{"dtype", "shape", "data_offsets"}`, about
 * 100 bytes in real files), so no single entry is a large parse.
 * @default 64 KiB
 */
export const MAX_SAFETENSORS_ENTRY_BYTES = 64 * 1024

/**
 * Most keys in a safetensors `__metadata__` object (real files carry a few dozen).
 * @default 65_536
 */
export const MAX_SAFETENSORS_METADATA_KEYS = 65_536

/**
 * Largest `*.safetensors.index.json` file read into memory (a 150k-tensor index is about 12 MiB).
 * @default 32 MiB
 */
export const MAX_SAFETENSORS_INDEX_BYTES = 32 * MiB

/**
 * Largest JSON text of the index's `metadata` object and of any other top-level member except
 * `weight_map`.
 * @default 1 MiB
 */
export const MAX_SAFETENSORS_INDEX_MEMBER_BYTES = 1 * MiB

/**
 * Deepest nesting of arrays and objects in a JSON header or index (a valid safetensors header
 * nests 3 deep).
 * @default 32
 */
export const MAX_JSON_DEPTH = 32

/**
 * Characters of JSON scanned, and members parsed ({@link JSON_YIELD_MEMBERS}), between two turns
 * given to the event loop, so reading a large header never holds the daemon's RPC for long.
 * @default 1_048_576
 */
export const JSON_YIELD_CHARS = 1 << 20

/** @default 2048 — members parsed between two turns given to the event loop */
export const JSON_YIELD_MEMBERS = 2048

/**
 * Most tensors one file may declare (GGUF `tensor_count`, safetensors entries, ONNX initializers,
 * sharded index `weight_map` entries), and most tensors one `add` reads across all its files.
 * @default 262_144
 */
export const MAX_TENSOR_COUNT = 262_144

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
 * Longest GGUF string value (a chat template, an embedded tokenizer), in bytes.
 * @default 16 MiB
 */
export const MAX_GGUF_STRING_BYTES = 16 * MiB

/**
 * Longest GGUF key or tensor name, in bytes (ggml itself refuses tensor names of 64 bytes or more).
 * @default 1024
 */
export const MAX_GGUF_NAME_BYTES = 1024

/**
 * Most bytes of GGUF tensor names in one file, in total.
 * @default 16 MiB
 */
export const MAX_GGUF_TENSOR_NAME_BYTES = 16 * MiB

/**
 * Most bytes of GGUF metadata kept in memory in total: keys, and values (strings, small arrays);
 * summarised arrays count only their summary. Checked before each string is read.
 * @default 16 MiB
 */
export const MAX_GGUF_METADATA_BYTES = 16 * MiB

/**
 * Most elements in one GGUF array. Arrays are walked, not stored, so this bounds time, not memory.
 * @default 16_777_216
 */
export const MAX_GGUF_ARRAY_LENGTH = 16_777_216

/**
 * Most array elements walked one by one in one GGUF file, over all its arrays: strings, nested
 * arrays and kept values (summarised arrays of numbers are skipped whole and cost nothing). A
 * 256k-token vocabulary with its merges is about 500k.
 * @default 4_194_304
 */
export const MAX_GGUF_ARRAY_ELEMENTS = 4_194_304

/**
 * Largest GGUF header: key/values and tensor infos must end within this many bytes of the start
 * (real vocabularies make headers of 5–20 MiB).
 * @default 128 MiB
 */
export const MAX_GGUF_HEADER_BYTES = 128 * MiB

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
 * Longest metadata string value kept in a file's structure (GGUF string values, safetensors
 * `__metadata__` values, ONNX `metadata_props` values): a version's manifest holds strings of at
 * most 64 KiB, so a longer one (an embedded `tokenizer.huggingface.json`, a very long chat
 * template) is skipped and summarised as `[string × <bytes> bytes]`, and the file is still added.
 * @default 64 KiB
 */
export const MAX_METADATA_VALUE_BYTES = 64 * 1024

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
 * Most bytes of ONNX strings kept in memory in total (initializer and input/output names,
 * metadata_props, producer, opset domains).
 * @default 16 MiB
 */
export const MAX_ONNX_KEPT_BYTES = 16 * MiB

/**
 * Most protobuf fields an ONNX reader visits in one file (every field of every node and attribute,
 * initializer field, dim and metadata entry is one; skipped fields count too). A large language
 * model graph has ~100k nodes of about ten fields each; this bounds the time a file of millions of
 * tiny fields can cost.
 * @default 4_194_304
 */
export const MAX_ONNX_FIELDS = 4_194_304

/**
 * Deepest nesting of ONNX subgraphs: graphs held by node attributes (`If` branches, `Loop` and
 * `Scan` bodies), each of which may hold more. Real exports nest a few levels; each level is a
 * frame of the reader's recursion, so this bounds its stack.
 * @default 16
 */
export const MAX_ONNX_GRAPH_DEPTH = 16

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
