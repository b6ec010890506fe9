/**
 * Chunk plans: where a file is cut into chunks, the unit that is hashed, stored, deduplicated and
 * transferred. Pure arithmetic over offsets; the caller supplies the structure (from `model/`) or
 * the bytes (to `core/cdc.ts`).
 *
 * A plan is the sorted list of chunk START offsets: chunk i spans `[starts[i], starts[i+1])`, the
 * last one ends at the file size. A non-empty file's plan starts with 0; an empty file has no
 * chunks (`[]`). No chunk is longer than {@link MAX_CHUNK_SIZE}, whatever planner made it.
 *
 * Tensor-aware plans ({@link planTensorChunks}) MUST hold:
 * - the header region is cut from offset 0 in steps of {@link MAX_CHUNK_SIZE};
 * - every non-empty tensor starts a chunk, and a tensor longer than {@link TENSOR_PIECE_SIZE} is cut
 *   at `offset + k * TENSOR_PIECE_SIZE`, so its pieces hold tensor bytes only;
 * - a non-empty gap after a tensor (alignment padding, unused space, trailing bytes) is its own
 *   chunk, cut in steps of {@link MAX_CHUNK_SIZE} from the gap's start;
 * - a gap between the header and the first tensor joins the header's last chunk when that chunk
 *   stays within {@link MAX_CHUNK_SIZE}; otherwise it is cut like any other gap;
 * - zero-length tensors add no boundary; a file with neither a header nor a non-empty tensor gets
 *   the same plan as {@link fixedChunks}.
 *
 * The point of the rule: a tensor whose bytes did not change yields the same chunks (the same byte
 * ranges relative to its start, hence the same chunk ids) whatever its absolute offset, the header's
 * length or its neighbours' padding. That is what lets a fine-tune or a re-export with an edited
 * header share every untouched tensor with the version before it.
 *
 * Not a goal: deduplicating inside a tensor whose bytes shifted (use content-defined chunking,
 * `core/cdc.ts`, for opaque files), or merging small tensors into one chunk (each tiny tensor costs
 * one chunk record; a model's tensor count bounds that).
 */
import { InvalidInputError } from './errors.js'

/**
 * Large tensors are split into pieces of this size, aligned to the tensor's start. MUST NOT exceed
 * {@link MAX_CHUNK_SIZE}.
 * @default 4 MiB
 */
export const TENSOR_PIECE_SIZE = 4 * 1024 * 1024

/**
 * No chunk of any kind is larger than this; it is the unit of storage and transfer.
 * @default 4 MiB
 */
export const MAX_CHUNK_SIZE = 4 * 1024 * 1024

/**
 * Content-defined chunking: no chunk but a stream's last is shorter.
 * @default 256 KiB
 */
export const CDC_MIN_SIZE = 256 * 1024

/**
 * Content-defined chunking: the normal (target) chunk size; MUST be a power of two.
 * @default 1 MiB
 */
export const CDC_AVG_SIZE = 1024 * 1024

/**
 * Content-defined chunking: a chunk is cut here if no content boundary came first. MUST NOT exceed
 * {@link MAX_CHUNK_SIZE}.
 * @default 4 MiB
 */
export const CDC_MAX_SIZE = 4 * 1024 * 1024

/** The byte range of one tensor's data, absolute in its file. */
export interface TensorRange {
  offset: number
  length: number
}

/**
 * Cuts `[0, fileSize)` into chunks of `size` bytes (the last may be shorter).
 * Throws `InvalidInputError` for a negative or non-integer size.
 */
export function fixedChunks (fileSize: number, size: number = MAX_CHUNK_SIZE): number[] {
  checkOffset('file size', fileSize)
  if (!Number.isSafeInteger(size) || size <= 0) {
    throw new InvalidInputError(`chunk size must be a positive integer, got ${size}`)
  }
  const starts: number[] = []
  for (let at = 0; at < fileSize; at += size) starts.push(at)
  return starts
}

/**
 * Plans the chunks of a model file from its structure; see the module doc for the rule.
 *
 * `tensors` may come in any order. Throws `InvalidInputError` when a size or offset is not a
 * non-negative integer, when the header is longer than the file, when a tensor lies outside
 * `[headerLength, fileSize]`, or when two non-empty tensors overlap.
 */
export function planTensorChunks (fileSize: number, headerLength: number, tensors: ReadonlyArray<TensorRange>): number[] {
  checkOffset('file size', fileSize)
  checkOffset('header length', headerLength)
  if (headerLength > fileSize) {
    throw new InvalidInputError(`header length ${headerLength} is beyond the file size ${fileSize}`)
  }
  const sorted = checkTensors(fileSize, headerLength, tensors)

  const starts: number[] = []
  /** Pushes `from`, `from + step`, ... below `to`. */
  const cut = (from: number, to: number, step: number): void => {
    for (let at = from; at < to; at += step) starts.push(at)
  }

  const firstTensor = sorted[0]?.offset ?? fileSize
  cut(0, headerLength, MAX_CHUNK_SIZE)
  // The gap before the first tensor joins the header's last chunk if it fits.
  const lastHeaderChunk = starts.at(-1) ?? 0
  if (firstTensor > headerLength && firstTensor - lastHeaderChunk > MAX_CHUNK_SIZE) {
    cut(headerLength, firstTensor, MAX_CHUNK_SIZE)
  } else if (headerLength === 0 && firstTensor > 0) {
    starts.push(0)
  }

  for (let i = 0; i < sorted.length; i++) {
    const tensor = sorted[i]!
    const end = tensor.offset + tensor.length
    cut(tensor.offset, end, TENSOR_PIECE_SIZE)
    cut(end, sorted[i + 1]?.offset ?? fileSize, MAX_CHUNK_SIZE)
  }
  return starts
}

/** Range-checks every tensor; returns the non-empty ones sorted by offset, refusing overlaps. */
function checkTensors (fileSize: number, headerLength: number, tensors: ReadonlyArray<TensorRange>): TensorRange[] {
  const nonEmpty: TensorRange[] = []
  for (const { offset, length } of tensors) {
    checkOffset('tensor offset', offset)
    checkOffset('tensor length', length)
    if (offset < headerLength || offset + length > fileSize) {
      throw new InvalidInputError(`tensor [${offset}, ${offset + length}) lies outside the data region [${headerLength}, ${fileSize})`)
    }
    if (length > 0) nonEmpty.push({ offset, length })
  }
  nonEmpty.sort((a, b) => a.offset - b.offset)
  for (let i = 1; i < nonEmpty.length; i++) {
    const prev = nonEmpty[i - 1]!
    const next = nonEmpty[i]!
    if (next.offset < prev.offset + prev.length) {
      throw new InvalidInputError(`tensors [${prev.offset}, ${prev.offset + prev.length}) and [${next.offset}, ${next.offset + next.length}) overlap`)
    }
  }
  return nonEmpty
}

function checkOffset (what: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new InvalidInputError(`${what} must be a non-negative integer, got ${value}`)
  }
}
