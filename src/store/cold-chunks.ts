/**
 * Cold chunk files: one chunk's bytes kept compressed, block by block, for versions kept in cold
 * form (`docs/ARCHITECTURE.md`, "Cold versions"). A file is named by its chunk id and holds:
 *
 *   "SHCC" | format (u8, `COLD_FORMAT`) | block size (u32) | chunk size (u32) | block count n (u32)
 *          | n × encoded length (u32) | n encoded blocks (`core/codec.ts`: header ‖ body)
 *
 * integers little-endian, blocks cut at the block size from the chunk's start (the last may be
 * short), so a span of blocks can be decoded without the rest.
 *
 * MUST hold:
 * - only bytes that hash to the chunk id are written (`writeColdChunk` checks before encoding), by
 *   temporary file, fsync, rename and fsync of the folder: a file under its final name is whole;
 * - reading bounds everything before allocating: the file's size (`maxColdFileBytes`), the magic
 *   and format, a block size a manifest may declare, a chunk size up to `MAX_CHUNK_SIZE`, the block
 *   count the sizes imply, encoded lengths that add up to the file, and each block decoded with its
 *   own length as the bound (`decodeBlock`'s `maxSize`);
 * - a whole chunk read back (`readColdChunk`, `decodeColdChunk`) is re-hashed: bytes that do not
 *   hash to the id are `DigestMismatchError`, never returned. `decodeColdBlocks` returns blocks
 *   unhashed, for serving with proofs that the receiver checks (as blocks read from a blob).
 *
 * Not a goal: appending to or rewriting a file in place (a chunk's file is written once).
 */
import { open, rename, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { MAX_CHUNK_SIZE } from '../core/chunking.js'
import { CODEC_HEADER_BYTES, chooseCodec, decodeBlock, encodeBlock } from '../core/codec.js'
import { chunkMatches, type ChunkId } from '../core/digest.js'
import { AbortedError, DigestMismatchError, InvalidInputError, MalformedDataError, TruncatedDataError } from '../core/errors.js'
import { isBlockSize, MIN_BLOCK_SIZE } from '../core/tree.js'
import { fsyncDir, tmpName } from '../util/fsutil.js'

const MAGIC = [0x53, 0x48, 0x43, 0x43] // "SHCC"
/** The format number written in every file; a file of another format is refused. */
export const COLD_FORMAT = 1
/** Bytes before the block lengths. */
const FIXED_HEADER_BYTES = 4 + 1 + 4 + 4 + 4
const MAX_BLOCKS = MAX_CHUNK_SIZE / MIN_BLOCK_SIZE

/** The largest cold file there can be: a chunk of `MAX_CHUNK_SIZE` in blocks of `MIN_BLOCK_SIZE`, each raw. */
export const maxColdFileBytes = FIXED_HEADER_BYTES + MAX_BLOCKS * (4 + CODEC_HEADER_BYTES) + MAX_CHUNK_SIZE

/** A parsed cold file: where each encoded block is. */
export interface ColdChunkView {
  blockSize: number
  size: number
  /** Start and length of each encoded block in `file`. */
  blocks: Array<[number, number]>
  file: Uint8Array
}

/**
 * The cold file of a chunk's `bytes`, cut at `blockSize`, encoded with the codec `chooseCodec`
 * picks for `dtype` on the first block. The caller MUST have checked that `bytes` hash to the id
 * the file will be named by (`writeColdChunk` does).
 */
export function encodeColdChunk (bytes: Uint8Array, blockSize: number, dtype: string | undefined): Uint8Array {
  if (!isBlockSize(blockSize)) throw new InvalidInputError(`a cold chunk's block size must be a power of two from ${MIN_BLOCK_SIZE} to ${MAX_CHUNK_SIZE}, not ${blockSize}`)
  if (bytes.length < 1 || bytes.length > MAX_CHUNK_SIZE) throw new InvalidInputError(`a chunk has 1 to ${MAX_CHUNK_SIZE} bytes, not ${bytes.length}`)
  const codec = chooseCodec(dtype, bytes.subarray(0, blockSize))
  const encoded: Uint8Array[] = []
  for (let at = 0; at < bytes.length; at += blockSize) encoded.push(encodeBlock(bytes.subarray(at, Math.min(bytes.length, at + blockSize)), codec))
  const headerBytes = FIXED_HEADER_BYTES + 4 * encoded.length
  const out = new Uint8Array(headerBytes + encoded.reduce((n, e) => n + e.length, 0))
  const view = new DataView(out.buffer)
  out.set(MAGIC, 0)
  out[4] = COLD_FORMAT
  view.setUint32(5, blockSize, true)
  view.setUint32(9, bytes.length, true)
  view.setUint32(13, encoded.length, true)
  let at = headerBytes
  encoded.forEach((e, i) => {
    view.setUint32(FIXED_HEADER_BYTES + 4 * i, e.length, true)
    out.set(e, at)
    at += e.length
  })
  return out
}

/** Checks a cold file's header against its size; `what` names it in errors (its path or id). */
export function parseColdChunk (file: Uint8Array, what: string): ColdChunkView {
  if (file.length > maxColdFileBytes) throw new MalformedDataError(`cold chunk ${what} is ${file.length} bytes, more than any chunk's cold file can be (${maxColdFileBytes})`)
  if (file.length < FIXED_HEADER_BYTES) throw new TruncatedDataError(`cold chunk ${what} is ${file.length} bytes, shorter than its ${FIXED_HEADER_BYTES}-byte header`)
  if (MAGIC.some((b, i) => file[i] !== b)) throw new MalformedDataError(`cold chunk ${what} does not start with "SHCC": not a cold chunk file`)
  if (file[4] !== COLD_FORMAT) throw new MalformedDataError(`cold chunk ${what} is in format ${file[4]}; this build reads format ${COLD_FORMAT} (upgrade shoal)`)
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength)
  const blockSize = view.getUint32(5, true)
  const size = view.getUint32(9, true)
  const count = view.getUint32(13, true)
  if (!isBlockSize(blockSize)) throw new MalformedDataError(`cold chunk ${what} declares blocks of ${blockSize} bytes, not a power of two from ${MIN_BLOCK_SIZE} to ${MAX_CHUNK_SIZE}`)
  if (size < 1 || size > MAX_CHUNK_SIZE) throw new MalformedDataError(`cold chunk ${what} declares ${size} bytes; a chunk has 1 to ${MAX_CHUNK_SIZE}`)
  const expected = Math.ceil(size / blockSize)
  if (count !== expected) throw new MalformedDataError(`cold chunk ${what} declares ${count} blocks; ${size} bytes in blocks of ${blockSize} make ${expected}`)
  let at = FIXED_HEADER_BYTES + 4 * count
  if (at > file.length) throw new TruncatedDataError(`cold chunk ${what} ends inside its block lengths`)
  const blocks: Array<[number, number]> = []
  for (let i = 0; i < count; i++) {
    const length = view.getUint32(FIXED_HEADER_BYTES + 4 * i, true)
    if (length > file.length - at) throw new TruncatedDataError(`cold chunk ${what}: block ${i} of ${length} bytes runs past the end of the file`)
    blocks.push([at, length])
    at += length
  }
  if (at !== file.length) throw new MalformedDataError(`cold chunk ${what}: ${file.length - at} bytes follow the last block`)
  return { blockSize, size, blocks, file }
}

/**
 * Blocks `[first, first + count)` of a parsed cold file, decoded back to back into `into` (it must
 * hold them), not re-hashed. Each block must decode to exactly its length in the chunk.
 */
export function decodeColdBlocks (chunk: ColdChunkView, first: number, count: number, into: Uint8Array, what: string): Uint8Array {
  if (!Number.isInteger(first) || !Number.isInteger(count) || first < 0 || count < 0 || first + count > chunk.blocks.length) {
    throw new InvalidInputError(`blocks ${first} + ${count} are outside cold chunk ${what} (${chunk.blocks.length} blocks)`)
  }
  let out = 0
  for (let i = first; i < first + count; i++) {
    const expected = Math.min(chunk.blockSize, chunk.size - i * chunk.blockSize)
    const [start, length] = chunk.blocks[i]!
    if (into.length - out < expected) throw new InvalidInputError(`decoding cold chunk ${what}: the output holds ${into.length} bytes, the blocks need more`)
    const decoded = decodeBlock(chunk.file.subarray(start, start + length), { maxSize: expected, into: into.subarray(out) })
    if (decoded.length !== expected) throw new MalformedDataError(`cold chunk ${what}: block ${i} decodes to ${decoded.length} bytes, not ${expected}`)
    out += expected
  }
  return into.subarray(0, out)
}

/** The whole chunk of a cold file, decoded and re-hashed against `id`. */
export function decodeColdChunk (file: Uint8Array, id: ChunkId, into?: Uint8Array): Uint8Array {
  const chunk = parseColdChunk(file, id)
  const bytes = decodeColdBlocks(chunk, 0, chunk.blocks.length, into ?? new Uint8Array(chunk.size), id)
  if (!chunkMatches(bytes, id)) throw new DigestMismatchError(`cold chunk ${id} decodes to bytes that do not hash to its id: the file is damaged`)
  return bytes
}

/**
 * Writes the cold file of chunk `id` as `<dir>/<id>`, by way of `tmpDir` (same file system):
 * temporary file, fsync, rename, fsync of `dir`. Refuses bytes that do not hash to `id`. Returns
 * the file's size. Idempotent: writing the same chunk again replaces the file with an equal one.
 * @throws DigestMismatchError when `bytes` do not hash to `id`
 * @throws AbortedError when `signal` aborts before the rename
 */
export async function writeColdChunk (dir: string, tmpDir: string, id: ChunkId, bytes: Uint8Array, options: { blockSize: number, dtype?: string, signal?: AbortSignal }): Promise<number> {
  if (!chunkMatches(bytes, id)) throw new DigestMismatchError(`refusing to keep bytes as cold chunk ${id}: they do not hash to it`)
  const file = encodeColdChunk(bytes, options.blockSize, options.dtype)
  const tmp = join(tmpDir, tmpName('cold'))
  try {
    await writeFile(tmp, file, { mode: 0o444, flush: true, ...(options.signal !== undefined ? { signal: options.signal } : {}) })
    if (options.signal?.aborted === true) throw new AbortedError(`writing cold chunk ${id} was aborted`)
    const final = join(dir, id)
    await rename(tmp, final)
    await fsyncDir(dirname(final))
  } catch (err) {
    await rm(tmp, { force: true })
    if ((err as { name?: string }).name === 'AbortError') throw new AbortedError(`writing cold chunk ${id} was aborted`, { cause: err })
    throw err
  }
  return file.length
}

/**
 * Reads the cold file at `path` and returns chunk `id`'s bytes, decoded and re-hashed. The file's
 * size is checked before it is read.
 * @throws MalformedDataError (or `TruncatedDataError`) for a file that is not a well-formed cold chunk
 * @throws DigestMismatchError when it decodes to other bytes
 */
export async function readColdChunk (path: string, id: ChunkId, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
  return decodeColdChunk(await readColdFile(path, id, options), id)
}

/**
 * The bytes of the cold file at `path` (chunk `id`'s), not yet parsed or decoded (in a buffer of
 * `take`, e.g. a pooled shared one for a worker to decode); its size is checked before it is read.
 * @throws MalformedDataError for a file larger than any chunk's cold file can be
 */
export async function readColdFile (path: string, id: ChunkId, options: { signal?: AbortSignal, take?: (size: number) => Uint8Array } = {}): Promise<Uint8Array> {
  const fh = await open(path, 'r')
  try {
    const { size } = await fh.stat()
    if (size > maxColdFileBytes) throw new MalformedDataError(`cold chunk ${id} is ${size} bytes, more than any chunk's cold file can be (${maxColdFileBytes})`)
    const file = options.take?.(size) ?? new Uint8Array(size)
    let at = 0
    while (at < size) {
      if (options.signal?.aborted === true) throw new AbortedError(`reading cold chunk ${id} was aborted`)
      const { bytesRead } = await fh.read(file, at, size - at, at)
      if (bytesRead === 0) throw new TruncatedDataError(`cold chunk ${id} ended at ${at} of ${size} bytes while being read`)
      at += bytesRead
    }
    return file
  } finally {
    await fh.close()
  }
}
