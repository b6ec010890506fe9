/**
 * A byte-oriented canonical Huffman coder, made for the exponent planes of float tensors
 * (`core/codec.ts`): a plane of one byte per value whose values carry 2–6 bits of entropy and have
 * no repeats for an LZ stage to find. Deflate in Huffman-only mode gets the same ratio; this one
 * decodes up to four symbols per table lookup, two lookups per 32-bit load and four streams at
 * once, faster than zlib's inflate of the same planes. why: docs/decisions/0001-block-codecs.md
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

/** Each 12-bit pattern with its bits in reverse order. */
const REVERSED = Uint16Array.from({ length: 1 << MAX_CODE_BITS }, (_, i) => {
  let r = 0
  for (let k = 0; k < MAX_CODE_BITS; k++) r |= ((i >>> k) & 1) << (MAX_CODE_BITS - 1 - k)
  return r
})
const lengthCounts = new Int32Array(MAX_CODE_BITS + 1)
const nextCode = new Int32Array(MAX_CODE_BITS + 1)

/**
 * Canonical codes for `lengths`, bit-reversed so they can be written least significant bit first:
 * the first code of each length from the counts of shorter ones (as deflate does), then each
 * symbol in order takes the next code of its length.
 */
function canonicalCodes (lengths: Uint8Array, codes: Uint16Array): void {
  lengthCounts.fill(0)
  for (let s = 0; s < 256; s++) lengthCounts[lengths[s]!]!++
  nextCode[1] = 0
  for (let len = 2; len <= MAX_CODE_BITS; len++) nextCode[len] = (nextCode[len - 1]! + lengthCounts[len - 1]!) << 1
  for (let s = 0; s < 256; s++) {
    const len = lengths[s]!
    if (len === 0) continue
    const code = nextCode[len]!++
    codes[s] = REVERSED[code]! >>> (MAX_CODE_BITS - len)
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
  // The four runs side by side while all have values (four independent chains, as the decoder
  // does), then the rest of each run. A cursor flushes 16 bits at a time: at most 15 are pending
  // before a code of at most 12 is added, so `buf` stays under 2^27.
  const run = runLength(plane.length)
  const whole = Math.max(0, Math.min(run, plane.length - (STREAMS - 1) * run))
  const starts = [STREAM_HEADER_BYTES]
  for (let k = 1; k < STREAMS; k++) starts.push(starts[k - 1]! + plan.streams[k - 1]!)
  let a0 = starts[0]!; let a1 = starts[1]!; let a2 = starts[2]!; let a3 = starts[3]!
  let b0 = 0; let b1 = 0; let b2 = 0; let b3 = 0
  let n0 = 0; let n1 = 0; let n2 = 0; let n3 = 0
  for (let i = 0; i < whole; i++) {
    const e0 = entries[plane[i]!]!
    const e1 = entries[plane[i + run]!]!
    const e2 = entries[plane[i + 2 * run]!]!
    const e3 = entries[plane[i + 3 * run]!]!
    b0 |= (e0 & 0xffff) << n0; n0 += e0 >>> 16
    b1 |= (e1 & 0xffff) << n1; n1 += e1 >>> 16
    b2 |= (e2 & 0xffff) << n2; n2 += e2 >>> 16
    b3 |= (e3 & 0xffff) << n3; n3 += e3 >>> 16
    if (n0 >= 16) { view.setUint16(a0, b0, true); a0 += 2; b0 >>>= 16; n0 -= 16 }
    if (n1 >= 16) { view.setUint16(a1, b1, true); a1 += 2; b1 >>>= 16; n1 -= 16 }
    if (n2 >= 16) { view.setUint16(a2, b2, true); a2 += 2; b2 >>>= 16; n2 -= 16 }
    if (n3 >= 16) { view.setUint16(a3, b3, true); a3 += 2; b3 >>>= 16; n3 -= 16 }
  }
  const cursors = [[a0, b0, n0], [a1, b1, n1], [a2, b2, n2], [a3, b3, n3]] as const
  for (let k = 0; k < STREAMS; k++) {
    let [at, buf, bits] = cursors[k]!
    const stop = Math.min(plane.length, (k + 1) * run)
    for (let i = k * run + whole; i < stop; i++) {
      const e = entries[plane[i]!]!
      buf |= (e & 0xffff) << bits
      bits += e >>> 16
      if (bits >= 16) {
        view.setUint16(at, buf, true)
        at += 2
        buf >>>= 16
        bits -= 16
      }
    }
    while (bits > 0) {
      out[at++] = buf & 0xff
      buf >>>= 8
      bits -= 8
    }
  }
  return out
}

/**
 * Shannon entropy, in bits a value, of `samples` values taken at an even stride through `plane`
 * (all of them when it is shorter): a cheap first look that tells a plane of near-random bytes
 * (mantissa bytes, ~7.97 bits) from one worth a full histogram. A sample underestimates entropy
 * slightly (by about 255 / (2 · samples · ln 2) bits for a full alphabet).
 */
export function sampledEntropy (plane: Uint8Array, samples = 4096): number {
  const counts = new Int32Array(256)
  const stride = Math.max(1, Math.floor(plane.length / samples))
  let n = 0
  for (let i = 0; i < plane.length && n < samples; i += stride, n++) counts[plane[i]!]!++
  let bits = 0
  for (let s = 0; s < 256; s++) {
    const c = counts[s]!
    if (c > 0) bits += c * Math.log2(n / c)
  }
  return n === 0 ? 0 : bits / n
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
 */
export function huffmanDecode (stream: Uint8Array, count: number, out: Uint8Array, offset: number, what: string): void {
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
  const view = new DataView(out.buffer, out.byteOffset + offset, count)
  fourStreams(head, view, cursors as [Cursor, Cursor, Cursor, Cursor])
  cursors.forEach((c, k) => {
    oneStream(stream, view, c)
    tail(stream, out, offset, c, k, what)
  })
  // Each stream must end exactly where its run does: bytes left over are not padding.
  let start = STREAM_HEADER_BYTES
  cursors.forEach((c, k) => {
    const used = Math.ceil((c.at * 8 - c.bits - start * 8) / 8)
    const length = c.end - start
    if (used !== length) throw new MalformedDataError(`${what}: ${length - used} bytes follow the last value of Huffman stream ${k}`)
    start = c.end
  })
}

/** The last bit position from which a stream's fast loop may load four bytes, all inside the stream. */
function lastLoad (c: Cursor): number {
  return (c.end - 4) * 8 + 7
}

/**
 * Leaves a cursor at bit position `p` (output `op`) for the byte-wise loops: whole bytes in `at`,
 * the bits left of a partly used byte in `buf`.
 */
function park (stream: DataView, c: Cursor, p: number, op: number): void {
  const used = p & 7
  c.op = op
  if (used === 0) {
    c.at = p >>> 3; c.buf = 0; c.bits = 0
  } else {
    c.buf = stream.getUint8(p >>> 3) >>> used; c.bits = 8 - used; c.at = (p >>> 3) + 1
  }
}

/**
 * The four streams side by side while each has four input bytes and eight symbols of output
 * room: the same steps as `oneStream`, four independent chains at once. Each pass loads 32 bits
 * at every stream's bit position (at least 25 of them ahead of it, as zstd's decoders do) and
 * decodes two lookups from them: no refill branch.
 */
function fourStreams (stream: DataView, view: DataView, [c0, c1, c2, c3]: [Cursor, Cursor, Cursor, Cursor]): void {
  let p0 = c0.at * 8; let p1 = c1.at * 8; let p2 = c2.at * 8; let p3 = c3.at * 8
  let o0 = c0.op; let o1 = c1.op; let o2 = c2.op; let o3 = c3.op
  const e0 = lastLoad(c0); const e1 = lastLoad(c1); const e2 = lastLoad(c2); const e3 = lastLoad(c3)
  const s0 = c0.stop - 2 * SYMBOLS_PER_LOOKUP; const s1 = c1.stop - 2 * SYMBOLS_PER_LOOKUP; const s2 = c2.stop - 2 * SYMBOLS_PER_LOOKUP; const s3 = c3.stop - 2 * SYMBOLS_PER_LOOKUP
  while (o0 <= s0 && o1 <= s1 && o2 <= s2 && o3 <= s3 && p0 <= e0 && p1 <= e1 && p2 <= e2 && p3 <= e3) {
    let w0 = stream.getUint32(p0 >>> 3, true) >>> (p0 & 7)
    let w1 = stream.getUint32(p1 >>> 3, true) >>> (p1 & 7)
    let w2 = stream.getUint32(p2 >>> 3, true) >>> (p2 & 7)
    let w3 = stream.getUint32(p3 >>> 3, true) >>> (p3 & 7)
    let i0 = w0 & TABLE_MASK; let i1 = w1 & TABLE_MASK; let i2 = w2 & TABLE_MASK; let i3 = w3 & TABLE_MASK
    let m0 = meta[i0]!; let m1 = meta[i1]!; let m2 = meta[i2]!; let m3 = meta[i3]!
    view.setInt32(o0, multi[i0]!, true)
    view.setInt32(o1, multi[i1]!, true)
    view.setInt32(o2, multi[i2]!, true)
    view.setInt32(o3, multi[i3]!, true)
    o0 += m0 & 7; o1 += m1 & 7; o2 += m2 & 7; o3 += m3 & 7
    w0 >>>= m0 >>> 3; w1 >>>= m1 >>> 3; w2 >>>= m2 >>> 3; w3 >>>= m3 >>> 3
    p0 += m0 >>> 3; p1 += m1 >>> 3; p2 += m2 >>> 3; p3 += m3 >>> 3
    i0 = w0 & TABLE_MASK; i1 = w1 & TABLE_MASK; i2 = w2 & TABLE_MASK; i3 = w3 & TABLE_MASK
    m0 = meta[i0]!; m1 = meta[i1]!; m2 = meta[i2]!; m3 = meta[i3]!
    view.setInt32(o0, multi[i0]!, true)
    view.setInt32(o1, multi[i1]!, true)
    view.setInt32(o2, multi[i2]!, true)
    view.setInt32(o3, multi[i3]!, true)
    o0 += m0 & 7; o1 += m1 & 7; o2 += m2 & 7; o3 += m3 & 7
    p0 += m0 >>> 3; p1 += m1 >>> 3; p2 += m2 >>> 3; p3 += m3 >>> 3
  }
  park(stream, c0, p0, o0); park(stream, c1, p1, o1); park(stream, c2, p2, o2); park(stream, c3, p3, o3)
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
