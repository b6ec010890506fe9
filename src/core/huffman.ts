/**
 * A byte-oriented canonical Huffman coder, made for the exponent planes of float tensors
 * (`core/codec.ts`): a plane of one byte per value whose values carry 2–6 bits of entropy and have
 * no repeats for an LZ stage to find. Deflate in Huffman-only mode gets the same ratio; this one
 * decodes up to four symbols per table lookup and four streams at once, faster than zlib's inflate
 * of the same planes. why: docs/decisions/0001-block-codecs.md
 *
 * Stream: `CODE_LENGTHS_BYTES` bytes of code lengths (256 four-bit lengths, symbol 2k in the low
 * nibble of byte k, 0 = symbol absent), then the byte lengths of the first `STREAMS - 1` bit
 * streams (u32 little-endian each), then `STREAMS` bit streams back to back, the last taking the
 * rest. The values are cut into `STREAMS` runs of ⌈count / STREAMS⌉ (the last may be shorter); run
 * k is coded, least significant bit first (as deflate packs codes), in stream k, zero bits to the
 * end of its last byte. Codes are canonical: assigned in order of (length, symbol), so the lengths
 * alone define them. Four streams decoded in one loop keep four independent chains of loads and
 * shifts in flight: about twice the speed of one stream here (zstd's Huffman does the same).
 *
 * Contract:
 * - `huffmanEncode` codes any bytes; a plane of one distinct value still gets a complete code (two
 *   symbols of one bit each).
 * - `huffmanDecode` decodes exactly `count` symbols into `out` and never writes past `count`. It
 *   refuses, with `MalformedDataError`, lengths over `MAX_CODE_BITS` or that do not make a complete
 *   prefix code, stream lengths that do not fit, and a stream that ends before its run of symbols
 *   (`TruncatedDataError`) or goes on after it. Every 12-bit pattern decodes to a symbol: the hot
 *   loops have no invalid case.
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
/** Bit streams a plane is coded in, decoded side by side. */
export const STREAMS = 4
/** Bytes before the first bit stream: the code lengths and the lengths of all streams but the last. */
export const STREAM_HEADER_BYTES = CODE_LENGTHS_BYTES + 4 * (STREAMS - 1)

/** Values in each run (the last run may have fewer). */
function runLength (count: number): number {
  return Math.ceil(count / STREAMS)
}

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
 * The byte histogram of each of the `STREAMS` runs of `bytes`. The runs are counted side by side,
 * into four tables: a run of one value (common in an exponent plane) in one table would make each
 * increment wait for the one before.
 */
function runHistograms (bytes: Uint8Array): Int32Array[] {
  const tables = Array.from({ length: STREAMS }, () => new Int32Array(256))
  const run = runLength(bytes.length)
  const [c0, c1, c2, c3] = tables as [Int32Array, Int32Array, Int32Array, Int32Array]
  // Positions i where all four runs have a value; the rest of each run after.
  const whole = Math.max(0, Math.min(run, bytes.length - (STREAMS - 1) * run))
  for (let i = 0; i < whole; i++) {
    c0[bytes[i]!]!++
    c1[bytes[i + run]!]!++
    c2[bytes[i + 2 * run]!]!++
    c3[bytes[i + 3 * run]!]!++
  }
  for (let k = 0; k < STREAMS; k++) {
    const table = tables[k]!
    for (let i = k * run + whole; i < Math.min(bytes.length, (k + 1) * run); i++) table[bytes[i]!]!++
  }
  return tables
}

/** The byte histogram of `bytes`. */
export function histogram (bytes: Uint8Array): Int32Array {
  const tables = runHistograms(bytes)
  const out = new Int32Array(256)
  for (const t of tables) for (let s = 0; s < 256; s++) out[s] = out[s]! + t[s]!
  return out
}

/** A plane's code lengths, the bytes of each bit stream, and the bytes the whole stream takes. */
export interface HuffmanPlan { lengths: Uint8Array, streams: number[], bytes: number }

export function huffmanPlan (plane: Uint8Array): HuffmanPlan {
  const tables = runHistograms(plane)
  const counts = new Int32Array(256)
  for (const t of tables) for (let s = 0; s < 256; s++) counts[s] = counts[s]! + t[s]!
  const lengths = codeLengths(counts)
  const streams = tables.map(t => {
    let bits = 0
    for (let s = 0; s < 256; s++) bits += t[s]! * lengths[s]!
    return Math.ceil(bits / 8)
  })
  return { lengths, streams, bytes: STREAM_HEADER_BYTES + streams.reduce((n, b) => n + b, 0) }
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
  const view = new DataView(out.buffer)
  for (let s = 0; s < 256; s += 2) out[s >>> 1] = lengths[s]! | (lengths[s + 1]! << 4)
  for (let k = 0; k < STREAMS - 1; k++) view.setUint32(CODE_LENGTHS_BYTES + 4 * k, plan.streams[k]!, true)
  const run = runLength(plane.length)
  let at = STREAM_HEADER_BYTES
  for (let k = 0; k < STREAMS; k++) {
    const end = at + plan.streams[k]!
    let buf = 0
    let bits = 0
    for (let i = k * run; i < Math.min(plane.length, (k + 1) * run); i++) {
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
    at = end
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

/** Where one bit stream's decoding is: input position and end, bit buffer, output position and end. */
interface Cursor { at: number, end: number, buf: number, bits: number, op: number, stop: number }

/**
 * Decodes a stream into exactly `count` symbols at `out[offset…]`. `what` names the data in error
 * messages. `out` must hold `offset + count` bytes.
 *
 * With `low` (a plane of `count` bytes), writes pairs instead: `out[offset + 2i] = low[i]` and
 * `out[offset + 2i + 1]` = symbol i, so a two-byte plane pair is joined as it is decoded (`out`
 * must then hold `offset + 2 · count` bytes).
 */
export function huffmanDecode (stream: Uint8Array, count: number, out: Uint8Array, offset: number, what: string, low?: Uint8Array): void {
  if (stream.length < STREAM_HEADER_BYTES) throw new TruncatedDataError(`${what}: ${stream.length} bytes, shorter than the ${STREAM_HEADER_BYTES}-byte Huffman header`)
  buildTables(stream, what)
  const head = new DataView(stream.buffer, stream.byteOffset, stream.byteLength)
  const run = runLength(count)
  const cursors: Cursor[] = []
  let at = STREAM_HEADER_BYTES
  for (let k = 0; k < STREAMS; k++) {
    const length = k < STREAMS - 1 ? head.getUint32(CODE_LENGTHS_BYTES + 4 * k, true) : stream.length - at
    if (length > stream.length - at) throw new TruncatedDataError(`${what}: Huffman stream ${k} of ${length} bytes runs past the end`)
    cursors.push({ at, end: at + length, buf: 0, bits: 0, op: Math.min(count, k * run), stop: Math.min(count, (k + 1) * run) })
    at += length
  }
  if (low === undefined) {
    const view = new DataView(out.buffer, out.byteOffset + offset, count)
    fourStreams(stream, view, cursors as [Cursor, Cursor, Cursor, Cursor])
    cursors.forEach((c, k) => {
      oneStream(stream, view, c)
      tail(stream, out, offset, c, k, what)
    })
  } else {
    const view = new DataView(out.buffer, out.byteOffset + offset, 2 * count)
    const lows = new DataView(low.buffer, low.byteOffset, count)
    fourStreamPairs(stream, view, lows, cursors as [Cursor, Cursor, Cursor, Cursor])
    cursors.forEach((c, k) => {
      oneStreamPairs(stream, view, lows, c)
      tailPairs(stream, out, offset, low, c, k, what)
    })
  }
  // Each stream must end exactly where its run does: bytes left over are not padding.
  let start = STREAM_HEADER_BYTES
  cursors.forEach((c, k) => {
    const used = Math.ceil((c.at * 8 - c.bits - start * 8) / 8)
    const length = c.end - start
    if (used !== length) throw new MalformedDataError(`${what}: ${length - used} bytes follow the last value of Huffman stream ${k}`)
    start = c.end
  })
}

/**
 * `fourStreams` writing pairs: each lookup's four symbols (some past the ones it decoded, written
 * over by the next lookup) go to the odd bytes of eight output bytes whose even bytes are the
 * next four bytes of `low`: two 32-bit stores.
 */
function fourStreamPairs (stream: Uint8Array, view: DataView, low: DataView, [c0, c1, c2, c3]: [Cursor, Cursor, Cursor, Cursor]): void {
  let a0 = c0.at; let a1 = c1.at; let a2 = c2.at; let a3 = c3.at
  let b0 = 0; let b1 = 0; let b2 = 0; let b3 = 0
  let n0 = 0; let n1 = 0; let n2 = 0; let n3 = 0
  let o0 = c0.op; let o1 = c1.op; let o2 = c2.op; let o3 = c3.op
  const e0 = c0.end - 2; const e1 = c1.end - 2; const e2 = c2.end - 2; const e3 = c3.end - 2
  const s0 = c0.stop - SYMBOLS_PER_LOOKUP; const s1 = c1.stop - SYMBOLS_PER_LOOKUP; const s2 = c2.stop - SYMBOLS_PER_LOOKUP; const s3 = c3.stop - SYMBOLS_PER_LOOKUP
  while (o0 <= s0 && o1 <= s1 && o2 <= s2 && o3 <= s3) {
    if (n0 < 16) { if (a0 > e0) break; b0 |= (stream[a0]! | (stream[a0 + 1]! << 8)) << n0; a0 += 2; n0 += 16 }
    if (n1 < 16) { if (a1 > e1) break; b1 |= (stream[a1]! | (stream[a1 + 1]! << 8)) << n1; a1 += 2; n1 += 16 }
    if (n2 < 16) { if (a2 > e2) break; b2 |= (stream[a2]! | (stream[a2 + 1]! << 8)) << n2; a2 += 2; n2 += 16 }
    if (n3 < 16) { if (a3 > e3) break; b3 |= (stream[a3]! | (stream[a3 + 1]! << 8)) << n3; a3 += 2; n3 += 16 }
    const i0 = b0 & TABLE_MASK; const i1 = b1 & TABLE_MASK; const i2 = b2 & TABLE_MASK; const i3 = b3 & TABLE_MASK
    const m0 = meta[i0]!; const m1 = meta[i1]!; const m2 = meta[i2]!; const m3 = meta[i3]!
    pairs(view, 2 * o0, low.getUint32(o0, true), multi[i0]!)
    pairs(view, 2 * o1, low.getUint32(o1, true), multi[i1]!)
    pairs(view, 2 * o2, low.getUint32(o2, true), multi[i2]!)
    pairs(view, 2 * o3, low.getUint32(o3, true), multi[i3]!)
    o0 += m0 & 7; o1 += m1 & 7; o2 += m2 & 7; o3 += m3 & 7
    b0 >>>= m0 >>> 3; n0 -= m0 >>> 3
    b1 >>>= m1 >>> 3; n1 -= m1 >>> 3
    b2 >>>= m2 >>> 3; n2 -= m2 >>> 3
    b3 >>>= m3 >>> 3; n3 -= m3 >>> 3
  }
  c0.at = a0; c0.buf = b0; c0.bits = n0; c0.op = o0
  c1.at = a1; c1.buf = b1; c1.bits = n1; c1.op = o1
  c2.at = a2; c2.buf = b2; c2.bits = n2; c2.op = o2
  c3.at = a3; c3.buf = b3; c3.bits = n3; c3.op = o3
}

/** Four low bytes `l` and four symbols `h`, interleaved into eight bytes at `at`. */
function pairs (view: DataView, at: number, l: number, h: number): void {
  view.setUint32(at, (l & 0xff) | ((h & 0xff) << 8) | ((l & 0xff00) << 8) | ((h & 0xff00) << 16), true)
  view.setUint32(at + 4, ((l >>> 16) & 0xff) | ((h >>> 8) & 0xff00) | ((l >>> 8) & 0xff0000) | (h & 0xff000000), true)
}

/** `oneStream` writing pairs (see `fourStreamPairs`). */
function oneStreamPairs (stream: Uint8Array, view: DataView, low: DataView, c: Cursor): void {
  let { at, buf, bits, op } = c
  const last = c.end - 2
  const stop = c.stop - SYMBOLS_PER_LOOKUP
  while (op <= stop) {
    if (bits < 16) {
      if (at > last) break
      buf |= (stream[at]! | (stream[at + 1]! << 8)) << bits
      at += 2
      bits += 16
    }
    const idx = buf & TABLE_MASK
    const m = meta[idx]!
    pairs(view, 2 * op, low.getUint32(op, true), multi[idx]!)
    op += m & 7
    const len = m >>> 3
    buf >>>= len
    bits -= len
  }
  c.at = at; c.buf = buf; c.bits = bits; c.op = op
}

/** `tail` writing pairs (`low[i]`, symbol i). */
function tailPairs (stream: Uint8Array, out: Uint8Array, offset: number, low: Uint8Array, c: Cursor, k: number, what: string): void {
  let { at, buf, bits, op } = c
  while (op < c.stop) {
    while (bits <= 23 && at < c.end) {
      buf |= stream[at++]! << bits
      bits += 8
    }
    const entry = single[buf & TABLE_MASK]!
    const len = entry >>> 8
    if (len > bits) throw new TruncatedDataError(`${what}: Huffman stream ${k} ends before value ${op} (its run ends at ${c.stop})`)
    out[offset + 2 * op] = low[op]!
    out[offset + 2 * op + 1] = entry & 0xff
    op++
    buf >>>= len
    bits -= len
  }
  c.at = at; c.buf = buf; c.bits = bits; c.op = op
}

/**
 * The four streams side by side while each has two input bytes and four bytes of output room: the
 * same steps as `oneStream`, four independent chains at once.
 */
function fourStreams (stream: Uint8Array, view: DataView, [c0, c1, c2, c3]: [Cursor, Cursor, Cursor, Cursor]): void {
  let a0 = c0.at; let a1 = c1.at; let a2 = c2.at; let a3 = c3.at
  let b0 = 0; let b1 = 0; let b2 = 0; let b3 = 0
  let n0 = 0; let n1 = 0; let n2 = 0; let n3 = 0
  let o0 = c0.op; let o1 = c1.op; let o2 = c2.op; let o3 = c3.op
  const e0 = c0.end - 2; const e1 = c1.end - 2; const e2 = c2.end - 2; const e3 = c3.end - 2
  const s0 = c0.stop - SYMBOLS_PER_LOOKUP; const s1 = c1.stop - SYMBOLS_PER_LOOKUP; const s2 = c2.stop - SYMBOLS_PER_LOOKUP; const s3 = c3.stop - SYMBOLS_PER_LOOKUP
  while (o0 <= s0 && o1 <= s1 && o2 <= s2 && o3 <= s3) {
    if (n0 < 16) { if (a0 > e0) break; b0 |= (stream[a0]! | (stream[a0 + 1]! << 8)) << n0; a0 += 2; n0 += 16 }
    if (n1 < 16) { if (a1 > e1) break; b1 |= (stream[a1]! | (stream[a1 + 1]! << 8)) << n1; a1 += 2; n1 += 16 }
    if (n2 < 16) { if (a2 > e2) break; b2 |= (stream[a2]! | (stream[a2 + 1]! << 8)) << n2; a2 += 2; n2 += 16 }
    if (n3 < 16) { if (a3 > e3) break; b3 |= (stream[a3]! | (stream[a3 + 1]! << 8)) << n3; a3 += 2; n3 += 16 }
    const i0 = b0 & TABLE_MASK; const i1 = b1 & TABLE_MASK; const i2 = b2 & TABLE_MASK; const i3 = b3 & TABLE_MASK
    const m0 = meta[i0]!; const m1 = meta[i1]!; const m2 = meta[i2]!; const m3 = meta[i3]!
    view.setInt32(o0, multi[i0]!, true)
    view.setInt32(o1, multi[i1]!, true)
    view.setInt32(o2, multi[i2]!, true)
    view.setInt32(o3, multi[i3]!, true)
    o0 += m0 & 7; o1 += m1 & 7; o2 += m2 & 7; o3 += m3 & 7
    b0 >>>= m0 >>> 3; n0 -= m0 >>> 3
    b1 >>>= m1 >>> 3; n1 -= m1 >>> 3
    b2 >>>= m2 >>> 3; n2 -= m2 >>> 3
    b3 >>>= m3 >>> 3; n3 -= m3 >>> 3
  }
  c0.at = a0; c0.buf = b0; c0.bits = n0; c0.op = o0
  c1.at = a1; c1.buf = b1; c1.bits = n1; c1.op = o1
  c2.at = a2; c2.buf = b2; c2.bits = n2; c2.op = o2
  c3.at = a3; c3.buf = b3; c3.bits = n3; c3.op = o3
}

/**
 * One stream, several symbols per lookup, while it has 16 bits in hand (12 needed) and four bytes
 * of output room. `buf` stays below 2^31 (at most 31 bits), so it remains a small integer.
 */
function oneStream (stream: Uint8Array, view: DataView, c: Cursor): void {
  let { at, buf, bits, op } = c
  const last = c.end - 2
  const stop = c.stop - SYMBOLS_PER_LOOKUP
  while (op <= stop) {
    if (bits < 16) {
      if (at > last) break
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
  c.at = at; c.buf = buf; c.bits = bits; c.op = op
}

/** The rest of a stream's run one symbol at a time, every length checked against the bits left. */
function tail (stream: Uint8Array, out: Uint8Array, offset: number, c: Cursor, k: number, what: string): void {
  let { at, buf, bits, op } = c
  while (op < c.stop) {
    while (bits <= 23 && at < c.end) {
      buf |= stream[at++]! << bits
      bits += 8
    }
    const entry = single[buf & TABLE_MASK]!
    const len = entry >>> 8
    if (len > bits) throw new TruncatedDataError(`${what}: Huffman stream ${k} ends before value ${op} (its run ends at ${c.stop})`)
    out[offset + op++] = entry & 0xff
    buf >>>= len
    bits -= len
  }
  c.at = at; c.buf = buf; c.bits = bits; c.op = op
}
