/**
 * Test data that looks like what shoal moves: tensors drawn like trained weights, quantized GGUF
 * blocks, and random bytes. Used by the codec tests and by `bench:compress`, so that compression
 * ratios are measured on bytes with the statistics of real models, not on zeros or on noise.
 *
 * Contract: every generator is deterministic in its arguments: the same seed gives the same bytes.
 * The PRNG is 32-bit integer arithmetic; the normal draw uses `Math.log`, `Math.sqrt`, `Math.cos`
 * and `Math.sin`, which V8 computes with its own ports of fdlibm, the same on every platform.
 *
 * How weights are drawn (`drawWeights`): each tensor has its own scale, log-uniform between
 * `SCALE_MIN` and `SCALE_MAX` (linear layers of trained transformers sit around 0.01–0.1), a small
 * mean, normal values, and a few outliers (`OUTLIER_RATE` of the values, `OUTLIER_MIN`–`OUTLIER_MAX`
 * times the scale), as trained weights have. Values are rounded to the dtype with round-to-nearest-
 * even, as `torch.Tensor.to` does.
 *
 * Not a goal: the correlations of real weights between neighbouring values (rows, channels). The
 * draws are independent, so the measured ratios are what the value distribution alone allows;
 * real models may compress a little better.
 */

/** @default 0.005 — smallest per-tensor standard deviation */
export const SCALE_MIN = 0.005
/** @default 0.08 — largest per-tensor standard deviation */
export const SCALE_MAX = 0.08
/** @default 0.001 — fraction of values that are outliers */
export const OUTLIER_RATE = 0.001
/** @default 4 — an outlier is at least this many scales away from zero */
export const OUTLIER_MIN = 4
/** @default 20 — and at most this many */
export const OUTLIER_MAX = 20

/** Values per GGUF Q4_0 / Q8_0 block. */
export const QK = 32
/** Bytes of one Q4_0 block: an fp16 scale and 32 four-bit values. */
export const Q4_0_BLOCK_BYTES = 2 + QK / 2
/** Bytes of one Q8_0 block: an fp16 scale and 32 int8 values. */
export const Q8_0_BLOCK_BYTES = 2 + QK

export type WeightDtype = 'BF16' | 'F16' | 'F32'
export type TestDataKind = WeightDtype | 'Q4_0' | 'Q8_0' | 'random'

/** A seeded PRNG (sfc32, seeded by splitmix32 from `seed`): 32-bit unsigned integers. */
export function prng (seed: number): () => number {
  let s = seed >>> 0
  const split = (): number => {
    s = (s + 0x9e3779b9) >>> 0
    let z = s
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    return (z ^ (z >>> 16)) >>> 0
  }
  let a = split(); let b = split(); let c = split(); let d = split()
  return () => {
    const t = (((a + b) >>> 0) + d) >>> 0
    d = (d + 1) >>> 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) >>> 0
    c = ((c << 21) | (c >>> 11)) >>> 0
    c = (c + t) >>> 0
    return t
  }
}

/** Uniform in (0, 1), never 0 (so `Math.log` of it is finite). */
function unit (next: () => number): number {
  return (next() + 0.5) / 4294967296
}

/** The statistics one tensor's values are drawn with. */
export interface TensorScale { scale: number, mean: number }

/** A per-tensor scale and mean, drawn from the seed. */
export function tensorScale (seed: number): TensorScale {
  const next = prng(seed ^ 0x5ca1ab1e)
  const scale = SCALE_MIN * Math.pow(SCALE_MAX / SCALE_MIN, unit(next))
  const mean = (unit(next) - 0.5) * 0.02 * scale
  return { scale, mean }
}

/** `count` values drawn like one trained tensor's weights (see the module doc), as float32. */
export function drawWeights (count: number, seed: number, stats: TensorScale = tensorScale(seed)): Float32Array {
  const next = prng(seed)
  const out = new Float32Array(count)
  for (let i = 0; i < count; i += 2) {
    // Box–Muller: two independent normals from two uniforms.
    const r = Math.sqrt(-2 * Math.log(unit(next)))
    const theta = 2 * Math.PI * unit(next)
    out[i] = stats.mean + stats.scale * r * Math.cos(theta)
    if (i + 1 < count) out[i + 1] = stats.mean + stats.scale * r * Math.sin(theta)
  }
  const outliers = Math.round(count * OUTLIER_RATE)
  for (let k = 0; k < outliers; k++) {
    const at = next() % count
    const size = OUTLIER_MIN + (OUTLIER_MAX - OUTLIER_MIN) * unit(next)
    out[at] = (next() & 1) === 0 ? size * stats.scale : -size * stats.scale
  }
  return out
}

/** float32 bits → bfloat16 bits, round to nearest even (finite inputs). */
export function f32BitsToBf16 (bits: number): number {
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff
}

/** float32 bits → IEEE half bits, round to nearest even, subnormals kept, overflow to infinity. */
export function f32BitsToF16 (bits: number): number {
  const sign = (bits >>> 16) & 0x8000
  const exp = ((bits >>> 23) & 0xff) - 127 + 15
  let mant = bits & 0x7fffff
  if (exp >= 31) return sign | 0x7c00
  if (exp <= 0) {
    if (exp < -10) return sign
    mant |= 0x800000
    const shift = 14 - exp
    let half = mant >>> shift
    const rem = mant & ((1 << shift) - 1)
    const halfway = 1 << (shift - 1)
    if (rem > halfway || (rem === halfway && (half & 1) === 1)) half++
    return sign | half
  }
  let half = (exp << 10) | (mant >>> 13)
  const rem = mant & 0x1fff
  // A carry out of the mantissa moves into the exponent, which is the correct rounding (up to infinity).
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) === 1)) half++
  return sign | half
}

/** The bytes of `values` stored as `dtype`, little-endian. */
export function encodeWeights (values: Float32Array, dtype: WeightDtype): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength))
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length)
  const out = new Uint16Array(values.length)
  const convert = dtype === 'BF16' ? f32BitsToBf16 : f32BitsToF16
  for (let i = 0; i < bits.length; i++) out[i] = convert(bits[i]!)
  return new Uint8Array(out.buffer)
}

/**
 * One tensor of `bytes` bytes of `dtype` (rounded down to whole values), drawn like trained
 * weights from `seed`.
 */
export function weightTensor (dtype: WeightDtype, bytes: number, seed: number): Uint8Array {
  const width = dtype === 'F32' ? 4 : 2
  return encodeWeights(drawWeights(Math.floor(bytes / width), seed), dtype)
}

/**
 * GGUF-shaped quantized blocks (`ggml`'s reference quantizers): Q8_0 is an fp16 scale
 * `d = max|x| / 127` and 32 int8 values `round(x / d)`; Q4_0 is an fp16 scale `d = m / -8`, `m` the
 * value of largest magnitude, and 32 values `min(15, trunc(x / d + 8.5))` packed two per byte (value
 * j in the low nibble of byte j, value j + 16 in its high nibble). `bytes` is rounded down to whole
 * blocks.
 */
export function quantizedBlocks (kind: 'Q4_0' | 'Q8_0', bytes: number, seed: number): Uint8Array {
  const blockBytes = kind === 'Q4_0' ? Q4_0_BLOCK_BYTES : Q8_0_BLOCK_BYTES
  const blocks = Math.floor(bytes / blockBytes)
  const x = drawWeights(blocks * QK, seed)
  const out = new Uint8Array(blocks * blockBytes)
  const f32 = new Float32Array(1)
  const f32Bits = new Uint32Array(f32.buffer)
  for (let b = 0; b < blocks; b++) {
    const base = b * QK
    const at = b * blockBytes
    let amax = 0
    let max = 0
    for (let j = 0; j < QK; j++) {
      const v = x[base + j]!
      if (Math.abs(v) > amax) { amax = Math.abs(v); max = v }
    }
    const d = kind === 'Q8_0' ? amax / 127 : max / -8
    const id = d !== 0 ? 1 / d : 0
    f32[0] = d
    const half = f32BitsToF16(f32Bits[0]!)
    out[at] = half & 0xff
    out[at + 1] = half >>> 8
    if (kind === 'Q8_0') {
      for (let j = 0; j < QK; j++) out[at + 2 + j] = Math.round(x[base + j]! * id) & 0xff
    } else {
      for (let j = 0; j < QK / 2; j++) {
        const lo = Math.min(15, Math.trunc(x[base + j]! * id + 8.5))
        const hi = Math.min(15, Math.trunc(x[base + j + QK / 2]! * id + 8.5))
        out[at + 2 + j] = lo | (hi << 4)
      }
    }
  }
  return out
}

/** Uniformly random bytes (what encrypted or already-compressed files look like). */
export function randomBytes (bytes: number, seed: number): Uint8Array {
  const next = prng(seed)
  const out = new Uint8Array(bytes)
  const words = new Uint32Array(out.buffer, 0, bytes >>> 2)
  for (let i = 0; i < words.length; i++) words[i] = next()
  for (let i = words.length * 4; i < bytes; i++) out[i] = next() & 0xff
  return out
}

/** `bytes` bytes (rounded down to whole values or blocks) of test data of `kind`. */
export function testData (kind: TestDataKind, bytes: number, seed: number): Uint8Array {
  switch (kind) {
    case 'BF16': case 'F16': case 'F32': return weightTensor(kind, bytes, seed)
    case 'Q4_0': case 'Q8_0': return quantizedBlocks(kind, bytes, seed)
    case 'random': return randomBytes(bytes, seed)
  }
}

/** One tensor of a generated safetensors file: `bytes` of `kind` drawn from `seed`. */
export interface WeightTensorSpec { name: string, dtype: WeightDtype, bytes: number, seed: number }

/**
 * The bytes of a safetensors file holding `tensors` drawn like trained weights (in order, no
 * padding between them; the header padded with spaces to 8 bytes, as writers do).
 */
export function weightSafetensors (tensors: readonly WeightTensorSpec[]): Uint8Array {
  const header: Record<string, unknown> = {}
  const data: Uint8Array[] = []
  let offset = 0
  for (const t of tensors) {
    const bytes = weightTensor(t.dtype, t.bytes, t.seed)
    const width = t.dtype === 'F32' ? 4 : 2
    header[t.name] = { dtype: t.dtype, shape: [bytes.length / width], data_offsets: [offset, offset + bytes.length] }
    data.push(bytes)
    offset += bytes.length
  }
  let json = JSON.stringify(header)
  json += ' '.repeat((8 - (json.length % 8)) % 8)
  const out = new Uint8Array(8 + json.length + offset)
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true)
  out.set(new TextEncoder().encode(json), 8)
  let at = 8 + json.length
  for (const d of data) { out.set(d, at); at += d.length }
  return out
}
