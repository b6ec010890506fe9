/**
 * A byte-oriented canonical Huffman coder, made for the exponent planes of float tensors
 * (`core/codec.ts`): a plane of one byte per value whose values carry 2–6 bits of entropy and have
 * no repeats for an LZ stage to find. Deflate in Huffman-only mode gets the same ratio; this one
 * decodes several symbols per table lookup, which is what makes a block decode faster than it
 * arrives (measured in `bench:compress`).
 *
 * Stream: `CODE_LENGTHS_BYTES` bytes of code lengths (256 four-bit lengths, symbol 2k in the low
 * nibble of byte k, 0 = symbol absent), then the codes of the symbols, least significant bit first
 * (as deflate packs them), zero bits to the end of the last byte. Codes are canonical: assigned in
 * order of (length, symbol), so the lengths alone define them.
 *
 * Contract:
 * - `huffmanEncode` codes any bytes; a plane of one distinct value still gets a complete code (two
 *   symbols of one bit each).
 * - `huffmanDecode` decodes exactly `count` symbols into `out` and never writes past `count`. It
 *   refuses, with `MalformedDataError`, lengths over `MAX_CODE_BITS` or that do not make a complete
 *   prefix code, and a stream that ends before `count` symbols (`TruncatedDataError`) or goes on
 *   after them. So every 12-bit pattern decodes to a symbol: the hot loop has no invalid case.
 * - Memory is bounded by the caller: the output is the caller's; the tables are `2^TABLE_BITS`
 *   entries, reused across calls (this module is synchronous, so never re-entered).
 *
 * Not a goal: adaptive or context modelling (a plane of independent draws gains nothing from it),
 * streams over 2^31 bytes.
 */
import { MalformedDataError, TruncatedDataError } from './errors.js'

/** Longest code. Also the width of the decoding table's index, so one lookup always decodes at least one symbol. */
export const MAX_CODE_BITS = 12
/** Bytes of the code-length table that opens every stream. */
export const CODE_LENGTHS_BYTES = 128
const TABLE_BITS = MAX_CODE_BITS
const TABLE_SIZE = 1 << TABLE_BITS
const TABLE_MASK = TABLE_SIZE - 1
/** Symbols one lookup of the multi-symbol table gives at most (they are written as one 32-bit store). */
const SYMBOLS_PER_LOOKUP = 4

/** Code lengths for `counts` (256 entries), none over `MAX_CODE_BITS`, forming a complete prefix code. */
export function codeLengths (counts: ArrayLike<number>): Uint8Array {
  let weights = Array.from({ length: 256 }, (_, s) => counts[s] ?? 0)
  const used = weights.reduce((n, w) => n + (w > 0 ? 1 : 0), 0)
  const lengths = new Uint8Array(256)
  if (used <= 1) {
    // One symbol (or none): give it and a neighbour one bit each, so the code is complete.
    const s = Math.max(0, weights.findIndex(w => w > 0))
    lengths[s] = 1
    lengths[(s + 1) & 0xff] = 1
    return lengths
  }
  for (;;) {
    huffmanLengths(weights, lengths)
    if (lengths.every(l => l <= MAX_CODE_BITS)) return lengths
    // Too deep: flatten the distribution and build again. Halving (rounded up, so nothing used
    // drops out) brings rare symbols closer to common ones; at the limit all weights are 1 and the
    // tree has depth ⌈log2 used⌉ ≤ 8.
    weights = weights.map(w => (w === 0 ? 0 : Math.ceil(w / 2)))
  }
}

/** Plain Huffman code lengths by the two-queue method over weights sorted once. */
function huffmanLengths (weights: number[], lengths: Uint8Array): void {
  lengths.fill(0)
  const leaves = weights.map((w, s) => ({ w, s })).filter(l => l.w > 0).sort((a, b) => a.w - b.w || a.s - b.s)
  const n = leaves.length
  // Nodes 0..n-1 are leaves in weight order, n..2n-2 internal nodes in creation order.
  const weight = new Float64Array(2 * n - 1)
  const parent = new Int32Array(2 * n - 1)
  for (let i = 0; i < n; i++) weight[i] = leaves[i]!.w
  let leaf = 0
  let inner = n
  const take = (next: number): number => {
    if (leaf < n && (inner >= next || weight[leaf]! <= weight[inner]!)) return leaf++
    return inner++
  }
  for (let next = n; next < 2 * n - 1; next++) {
    const a = take(next)
    const b = take(next)
    weight[next] = weight[a]! + weight[b]!
    parent[a] = next
    parent[b] = next
  }
  const depth = new Uint8Array(2 * n - 1)
  for (let i = 2 * n - 3; i >= 0; i--) depth[i] = depth[parent[i]!]! + 1
  for (let i = 0; i < n; i++) lengths[leaves[i]!.s] = depth[i]!
}

/** Canonical codes for `lengths`, bit-reversed so they can be written least significant bit first. */
function canonicalCodes (lengths: Uint8Array, codes: Uint16Array): void {
  let next = 0
  for (let len = 1; len <= MAX_CODE_BITS; len++) {
    for (let s = 0; s < 256; s++) {
      if (lengths[s] !== len) continue
      let reversed = 0
      for (let k = 0; k < len; k++) reversed |= ((next >>> k) & 1) << (len - 1 - k)
      codes[s] = reversed
      next++
    }
    next <<= 1
  }
}

/**
 * The byte histogram of `bytes`. Four tables counted in turn and added up: a run of one value
 * (common in an exponent plane) would otherwise make each increment wait for the one before.
 */
export function histogram (bytes: Uint8Array): Int32Array {
  const c0 = new Int32Array(256)
  const c1 = new Int32Array(256)
  const c2 = new Int32Array(256)
  const c3 = new Int32Array(256)
  const whole = bytes.length - (bytes.length % 4)
  for (let i = 0; i < whole; i += 4) {
    c0[bytes[i]!]!++
    c1[bytes[i + 1]!]!++
    c2[bytes[i + 2]!]!++
    c3[bytes[i + 3]!]!++
  }
  for (let i = whole; i < bytes.length; i++) c0[bytes[i]!]!++
  for (let s = 0; s < 256; s++) c0[s] = c0[s]! + c1[s]! + c2[s]! + c3[s]!
  return c0
}

/** A plane's code lengths and the bytes its stream takes (table included). */
export interface HuffmanPlan { lengths: Uint8Array, bytes: number }

export function huffmanPlan (plane: Uint8Array): HuffmanPlan {
  const counts = histogram(plane)
  const lengths = codeLengths(counts)
  let bits = 0
  for (let s = 0; s < 256; s++) bits += counts[s]! * lengths[s]!
  return { lengths, bytes: CODE_LENGTHS_BYTES + Math.ceil(bits / 8) }
}

/** `plane` coded as a stream (see the module doc), with the code `plan` gives. */
export function huffmanEncode (plane: Uint8Array, plan: HuffmanPlan = huffmanPlan(plane)): Uint8Array {
  const { lengths } = plan
  const codes = new Uint16Array(256)
  canonicalCodes(lengths, codes)
  // Code and length of each symbol in one entry: one load per value.
  const entries = new Int32Array(256)
  for (let s = 0; s < 256; s++) entries[s] = codes[s]! | (lengths[s]! << 16)
  const out = new Uint8Array(plan.bytes)
  for (let s = 0; s < 256; s += 2) out[s >>> 1] = lengths[s]! | (lengths[s + 1]! << 4)
  let at = CODE_LENGTHS_BYTES
  let buf = 0
  let bits = 0
  for (let i = 0; i < plane.length; i++) {
    const e = entries[plane[i]!]!
    buf |= (e & 0xffff) << bits
    bits += e >>> 16
    if (bits >= 16) {
      out[at++] = buf & 0xff
      out[at++] = (buf >>> 8) & 0xff
      buf >>>= 16
      bits -= 16
    }
  }
  while (bits > 0) {
    out[at++] = buf & 0xff
    buf >>>= 8
    bits -= 8
  }
  return out
}

// Decoding tables, reused: `single` maps 12 bits to (symbol | length << 8); `multi` packs up to
// four symbols decoded greedily from 12 bits, `meta` their count | total length << 3.
const single = new Int32Array(TABLE_SIZE)
const multi = new Int32Array(TABLE_SIZE)
const meta = new Uint8Array(TABLE_SIZE)
const lengthsScratch = new Uint8Array(256)
const codesScratch = new Uint16Array(256)

function buildTables (stream: Uint8Array, what: string): void {
  const lengths = lengthsScratch
  let kraft = 0
  for (let s = 0; s < 256; s += 2) {
    const b = stream[s >>> 1]!
    lengths[s] = b & 0x0f
    lengths[s + 1] = b >>> 4
  }
  for (let s = 0; s < 256; s++) {
    const len = lengths[s]!
    if (len > MAX_CODE_BITS) throw new MalformedDataError(`${what}: a Huffman code of ${len} bits is longer than ${MAX_CODE_BITS}`)
    if (len > 0) kraft += 1 << (MAX_CODE_BITS - len)
  }
  if (kraft !== TABLE_SIZE) {
    throw new MalformedDataError(`${what}: the Huffman code lengths do not form a complete prefix code (${kraft < TABLE_SIZE ? 'some bit patterns decode to nothing' : 'codes overlap'})`)
  }
  canonicalCodes(lengths, codesScratch)
  for (let s = 0; s < 256; s++) {
    const len = lengths[s]!
    if (len === 0) continue
    const entry = s | (len << 8)
    for (let i = codesScratch[s]!; i < TABLE_SIZE; i += 1 << len) single[i] = entry
  }
  for (let i = 0; i < TABLE_SIZE; i++) {
    const first = single[i]!
    let used = first >>> 8
    let packed = first & 0xff
    let n = 1
    while (n < SYMBOLS_PER_LOOKUP) {
      // The bits above `used` are a prefix of what follows; a code that fits in them is decoded
      // by the same lookup (the table entry depends only on a code's own bits).
      const next = single[i >>> used]!
      const len = next >>> 8
      if (used + len > TABLE_BITS) break
      packed |= (next & 0xff) << (8 * n)
      used += len
      n++
    }
    multi[i] = packed
    meta[i] = n | (used << 3)
  }
}

/**
 * Decodes a stream into exactly `count` symbols at `out[offset…]`. `what` names the data in error
 * messages. `out` must hold `offset + count` bytes.
 */
export function huffmanDecode (stream: Uint8Array, count: number, out: Uint8Array, offset: number, what: string): void {
  if (stream.length < CODE_LENGTHS_BYTES) throw new TruncatedDataError(`${what}: ${stream.length} bytes, shorter than the ${CODE_LENGTHS_BYTES}-byte Huffman table`)
  buildTables(stream, what)
  const end = stream.length
  const view = new DataView(out.buffer, out.byteOffset + offset, count)
  let at = CODE_LENGTHS_BYTES
  let buf = 0
  let bits = 0
  let op = 0
  // Fast path: at least 16 bits in hand (12 needed), four bytes of room in the output. `buf` stays
  // below 2^31 (at most 31 bits), so it remains a small integer for the JIT.
  while (op + SYMBOLS_PER_LOOKUP <= count) {
    if (bits < 16) {
      if (at + 2 > end) break
      buf |= (stream[at]! | (stream[at + 1]! << 8)) << bits
      at += 2
      bits += 16
    }
    const idx = buf & TABLE_MASK
    const m = meta[idx]!
    view.setInt32(op, multi[idx]!, true)
    op += m & 7
    const len = m >>> 3
    buf >>>= len
    bits -= len
  }
  // The rest one symbol at a time, with every length checked against the bits that are left.
  while (op < count) {
    while (bits <= 23 && at < end) {
      buf |= stream[at++]! << bits
      bits += 8
    }
    const entry = single[buf & TABLE_MASK]!
    const len = entry >>> 8
    if (len > bits) throw new TruncatedDataError(`${what}: the Huffman stream ends after ${op} of ${count} values`)
    out[offset + op++] = entry & 0xff
    buf >>>= len
    bits -= len
  }
  const consumedBits = (at - CODE_LENGTHS_BYTES) * 8 - bits
  if (Math.ceil(consumedBits / 8) !== end - CODE_LENGTHS_BYTES) {
    throw new MalformedDataError(`${what}: ${end - CODE_LENGTHS_BYTES - Math.ceil(consumedBits / 8)} bytes follow the last of ${count} values`)
  }
}
