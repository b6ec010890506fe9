/**
 * Content-defined chunking for opaque files and for the structure regions of model files
 * (`core/chunking.ts`, with the smaller `STRUCTURE_CDC` sizes): FastCDC (Xia et al., USENIX ATC
 * 2016; TPDS 2020) with normalized chunking, as a streaming chunker.
 *
 * How a cut is found, per chunk:
 * - the first `min` bytes are skipped without hashing;
 * - every later byte `b` updates a 32-bit gear hash, `h = (h << 1) + GEAR[b]` (mod 2^32), starting
 *   from `h = 0` at byte `min`; since each byte's contribution shifts out after 32 steps, the hash
 *   depends only on the last 32 bytes, and a cut needs no history buffer;
 * - while the chunk is shorter than `avg`, the chunk ends after the current byte when
 *   `(h & MASK_S) === 0`, where MASK_S is the top `log2(avg) + CDC_NORMALIZATION` bits; from `avg` on
 *   the easier MASK_L (top `log2(avg) - CDC_NORMALIZATION` bits) applies; the top bits are the ones
 *   that depend on the most bytes;
 * - a chunk that reaches `max` bytes is cut there; the stream's end cuts the last chunk.
 *
 * Contract (MUST hold):
 * - cut offsets depend only on the bytes and the options, never on how the stream was split into
 *   {@link FastCdc.push} calls;
 * - every chunk is `min`..`max` bytes long, except the stream's last, which may be shorter;
 * - {@link GEAR} is generated from {@link GEAR_SEED} by the generator in {@link makeGearTable}. The
 *   table, the seed, the mask rule and the default sizes are part of the on-disk and wire format:
 *   changing any of them changes every chunk id of every opaque file and every structure region
 *   (with `STRUCTURE_CDC`). Unit tests pin them.
 *
 * Not goals: compatibility with other FastCDC implementations' cut points (their gear tables and
 * cut conventions differ), and a 64-bit hash (too slow in JS; 32 bytes of context is plenty for cut
 * points at ~1 MiB spacing).
 */
import { CDC_AVG_SIZE, CDC_MAX_SIZE, CDC_MIN_SIZE } from './chunking.js'
import { InvalidInputError } from './errors.js'

/**
 * Normalization level: how many mask bits are added before the normal size and removed after it.
 * Level 2 is what the FastCDC paper recommends: chunk sizes cluster around `avg`.
 * @default 2
 */
export const CDC_NORMALIZATION = 2

/**
 * Seed of the gear table generator (ASCII "shoa"). Part of the format; see the module doc.
 * @default 0x73686f61
 */
export const GEAR_SEED = 0x73686f61

export interface FastCdcOptions {
  /** @default CDC_MIN_SIZE */
  min?: number
  /** Power of two. @default CDC_AVG_SIZE */
  avg?: number
  /** @default CDC_MAX_SIZE */
  max?: number
}

/**
 * The gear table generator: a 32-bit SplitMix (a Weyl sequence `x += 0x9e3779b9` mixed by the
 * MurmurHash3 finalizer `fmix32`), one output per entry, starting from `seed`.
 */
export function makeGearTable (seed: number): Uint32Array {
  const table = new Uint32Array(256)
  let x = seed | 0
  for (let i = 0; i < 256; i++) {
    x = (x + 0x9e3779b9) | 0
    let z = x
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    table[i] = z ^ (z >>> 16)
  }
  return table
}

/** The gear table: one pseudo-random 32-bit value per byte value. Part of the format. Chunkers use a private copy. */
export const GEAR: Readonly<Uint32Array> = makeGearTable(GEAR_SEED)

/** The same values as int32, so the hot loop stays in small-integer arithmetic. */
const GEAR_I32 = new Int32Array(GEAR.buffer.slice(0))

/**
 * A streaming FastCDC chunker. Feed the stream with {@link push}, in buffers of any size; each
 * call returns the cut offsets found in that buffer. Call {@link finish} at the end of the stream.
 *
 * Cut offsets are chunk END offsets in stream coordinates (a chunk is `[previousCut, cut)`, the
 * first starting at 0). Memory is constant: the chunker keeps the hash, the current chunk's length
 * and the stream position, never the bytes.
 */
export class FastCdc {
  readonly min: number
  readonly avg: number
  readonly max: number
  readonly #maskS: number
  readonly #maskL: number
  /** Stream offset where the current chunk starts. */
  #chunkStart = 0
  /** Bytes of the current chunk seen so far. */
  #length = 0
  #hash = 0

  constructor (opts: FastCdcOptions = {}) {
    const { min = CDC_MIN_SIZE, avg = CDC_AVG_SIZE, max = CDC_MAX_SIZE } = opts
    const bits = Math.log2(avg)
    if (!Number.isSafeInteger(min) || !Number.isSafeInteger(max) || !Number.isInteger(bits) ||
        min < 1 || min > avg || avg > max ||
        bits - CDC_NORMALIZATION < 1 || bits + CDC_NORMALIZATION > 31) {
      throw new InvalidInputError(`invalid CDC sizes min=${min} avg=${avg} max=${max}: need integers 1 <= min <= avg <= max, avg a power of two in [2^${1 + CDC_NORMALIZATION}, 2^${31 - CDC_NORMALIZATION}]`)
    }
    this.min = min
    this.avg = avg
    this.max = max
    this.#maskS = topBits(bits + CDC_NORMALIZATION)
    this.#maskL = topBits(bits - CDC_NORMALIZATION)
  }

  /** Bytes pushed since construction or the last {@link finish}. */
  get position (): number {
    return this.#chunkStart + this.#length
  }

  /** Consumes `data`; returns the cut offsets (chunk ends) found in it, ascending. */
  push (data: Uint8Array): number[] {
    const cuts: number[] = []
    const gear = GEAR_I32
    const { min, avg, max } = this
    const maskS = this.#maskS
    const maskL = this.#maskL
    const n = data.length
    let h = this.#hash
    let length = this.#length
    let i = 0
    while (i < n) {
      if (length < min) {
        const skip = Math.min(min - length, n - i)
        length += skip
        i += skip
        continue
      }
      let found = false
      const from = i
      if (length < avg) {
        const stop = i + Math.min(avg - length, n - i)
        while (i < stop) {
          h = ((h << 1) + gear[data[i++]!]!) | 0
          if ((h & maskS) === 0) { found = true; break }
        }
        length += i - from
      } else {
        const stop = i + Math.min(max - length, n - i)
        while (i < stop) {
          h = ((h << 1) + gear[data[i++]!]!) | 0
          if ((h & maskL) === 0) { found = true; break }
        }
        length += i - from
        if (length === max) found = true
      }
      if (found) {
        this.#chunkStart += length
        cuts.push(this.#chunkStart)
        length = 0
        h = 0
      }
    }
    this.#hash = h
    this.#length = length
    return cuts
  }

  /**
   * Ends the stream: returns the final cut (the stream's length) if bytes remain after the last
   * cut, else `[]`. The chunker is then reset for a new stream starting at offset 0.
   */
  finish (): number[] {
    const cuts = this.#length > 0 ? [this.#chunkStart + this.#length] : []
    this.#chunkStart = 0
    this.#length = 0
    this.#hash = 0
    return cuts
  }
}

/**
 * Chunks a whole buffer. Returns chunk START offsets, like the planners in `core/chunking.ts`
 * (`[]` for an empty buffer), not the cut offsets {@link FastCdc} emits.
 */
export function cdcChunks (data: Uint8Array, opts?: FastCdcOptions): number[] {
  const chunker = new FastCdc(opts)
  const ends = [...chunker.push(data), ...chunker.finish()]
  return data.length === 0 ? [] : [0, ...ends.slice(0, -1)]
}

/** An int32 mask of the top `count` bits. */
function topBits (count: number): number {
  return (~0 << (32 - count)) | 0
}
