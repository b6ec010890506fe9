/**
 * Chunk plans: where a file is cut into chunks, the unit that is hashed, stored, deduplicated and
 * transferred. Pure arithmetic over offsets; the caller supplies the structure (from `model/`) and
 * the content-defined cut points of the bytes (from `core/cdc.ts`).
 *
 * A plan is the sorted list of chunk START offsets: chunk i spans `[starts[i], starts[i+1])`, the
 * last one ends at the file size. A non-empty file's plan starts with 0; an empty file has no
 * chunks (`[]`). No chunk is longer than {@link MAX_CHUNK_SIZE}, whatever planner made it.
 *
 * A model file (one a reader found structure in) is split into regions ({@link modelRegions}):
 * - a TENSOR region is the data of one tensor of at least {@link MIN_ANCHORED_TENSOR_BYTES}; it
 *   starts a chunk, and one longer than {@link TENSOR_PIECE_SIZE} is cut at
 *   `offset + k * TENSOR_PIECE_SIZE`, so its pieces hold its bytes only;
 * - a STRUCTURE region is everything between them: a header (GGUF key/values and tensor infos, a
 *   safetensors JSON header, ONNX graph structure), alignment padding, trailing bytes, anything a
 *   reader could not place, and tensors too small to be worth a chunk of their own. Each one is
 *   cut by content ({@link STRUCTURE_CDC}), restarted at the region's start, so editing one
 *   metadata value or a chat template re-ships the chunks around the edit, not the whole header.
 * A model file without a tensor region is one structure region: content-defined from end to end.
 * Files no reader understands are cut by content with the opaque sizes (`CDC_*_SIZE`).
 *
 * The point of the rule: a tensor whose bytes did not change yields the same chunks (the same byte
 * ranges relative to its start, hence the same chunk ids) whatever its absolute offset, the header's
 * length or its neighbours' padding; and a structure region's chunks depend only on its own bytes.
 * That is what lets a fine-tune or a re-export with an edited header share every untouched tensor
 * (and most of the header) with the version before it.
 *
 * Not a goal: deduplicating inside a tensor whose bytes shifted (content-defined chunking is for
 * the bytes around tensors), or giving each tiny tensor its own chunk (a scalar `Constant` would
 * cost a chunk record larger than itself).
 */
import { InvalidInputError } from './errors.js'

/**
 * Large tensors are split into pieces of this size, aligned to the tensor's start. MUST NOT exceed
 * {@link MAX_CHUNK_SIZE}. Part of the chunk format: another size would cut every larger tensor
 * elsewhere, and its pieces would share no chunk with versions added before.
 * why: docs/decisions/0004-block-and-piece-sizes.md
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

/**
 * Content-defined chunking of structure regions of model files: smaller than for opaque files,
 * because an edit there (a metadata value, a chat template, a tokenizer entry) should re-ship
 * little, and structure is a small part of a model. Same gear table as `core/cdc.ts`.
 * @default { min: 64 KiB, avg: 256 KiB, max: 1 MiB }
 */
export const STRUCTURE_CDC = { min: 64 * 1024, avg: 256 * 1024, max: 1024 * 1024 } as const

/**
 * Tensors shorter than this do not start a chunk: their bytes belong to the structure region
 * around them. A chunk record costs ~50–80 bytes in the manifest and a request on the wire; a
 * tensor this small gains nothing from its own chunk (norms of a 512-wide model are 2 KiB, shape
 * constants a few bytes).
 * @default 1 KiB
 */
export const MIN_ANCHORED_TENSOR_BYTES = 1024

/** The byte range of one tensor's data, absolute in its file. */
export interface TensorRange {
  offset: number
  length: number
}

/** A region of a model file: one tensor's data, or the structure between tensors. */
export interface ChunkRegion {
  offset: number
  length: number
  kind: 'tensor' | 'structure'
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
 * Splits a model file into tensor and structure regions (see the module doc), in file order,
 * covering `[0, fileSize)` without gaps; no region is empty.
 *
 * `tensors` may come in any order. Throws `InvalidInputError` when a size or offset is not a
 * non-negative integer, when a tensor lies outside the file, or when two non-empty tensors overlap.
 */
export function modelRegions (fileSize: number, tensors: ReadonlyArray<TensorRange>): ChunkRegion[] {
  checkOffset('file size', fileSize)
  const anchors = checkTensors(fileSize, tensors).filter(t => t.length >= MIN_ANCHORED_TENSOR_BYTES)
  const regions: ChunkRegion[] = []
  let at = 0
  for (const t of anchors) {
    if (t.offset > at) regions.push({ offset: at, length: t.offset - at, kind: 'structure' })
    regions.push({ offset: t.offset, length: t.length, kind: 'tensor' })
    at = t.offset + t.length
  }
  if (fileSize > at) regions.push({ offset: at, length: fileSize - at, kind: 'structure' })
  return regions
}

/**
 * The chunk plan of a model file from its regions: tensor regions in pieces of
 * {@link TENSOR_PIECE_SIZE} from their start, structure regions where `structureStarts` says
 * (chunk starts relative to the region, beginning with 0, as `cdcChunks` returns them).
 * Throws `InvalidInputError` when those starts are not ascending from 0 within the region or
 * make a chunk over {@link MAX_CHUNK_SIZE}.
 */
export function planModelChunks (regions: ReadonlyArray<ChunkRegion>, structureStarts: (region: ChunkRegion) => readonly number[]): number[] {
  const starts: number[] = []
  for (const region of regions) {
    const { offset, length } = region
    if (region.kind === 'tensor') {
      for (let at = 0; at < length; at += TENSOR_PIECE_SIZE) starts.push(offset + at)
      continue
    }
    const cuts = structureStarts(region)
    for (let i = 0; i < cuts.length; i++) {
      const start = cuts[i] as number
      const end = cuts[i + 1] ?? length
      if (!Number.isSafeInteger(start) || (i === 0 && start !== 0) || end <= start || end > length || end - start > MAX_CHUNK_SIZE) {
        throw new InvalidInputError(`structure chunk starts [${cuts.slice(0, 8).join(', ')}${cuts.length > 8 ? ', …' : ''}] do not cut the ${length}-byte region at ${offset} into ascending chunks of at most ${MAX_CHUNK_SIZE} bytes from 0`)
      }
      starts.push(offset + start)
    }
    if (cuts.length === 0) throw new InvalidInputError(`no chunk starts for the ${length}-byte structure region at ${offset}`)
  }
  return starts
}

/** Range-checks every tensor; returns the non-empty ones sorted by offset, refusing overlaps. */
function checkTensors (fileSize: number, tensors: ReadonlyArray<TensorRange>): TensorRange[] {
  const nonEmpty: TensorRange[] = []
  for (const { offset, length } of tensors) {
    checkOffset('tensor offset', offset)
    checkOffset('tensor length', length)
    if (offset + length > fileSize) {
      throw new InvalidInputError(`tensor [${offset}, ${offset + length}) lies outside the file [0, ${fileSize})`)
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
