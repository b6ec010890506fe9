import { describe, expect, it } from 'vitest'
import {
  drawWeights, encodeWeights, f32BitsToBf16, f32BitsToF16, OUTLIER_MIN, OUTLIER_RATE, Q4_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES,
  QK, quantizedBlocks, randomBytes, SCALE_MAX, SCALE_MIN, tensorScale, testData
} from '../../../scripts/lib/weights.js'

const bitsOf = (x: number): number => new Uint32Array(Float32Array.of(x).buffer)[0]!

/** IEEE half bits → number. */
function f16ToNumber (h: number): number {
  const sign = (h & 0x8000) !== 0 ? -1 : 1
  const exp = (h >>> 10) & 0x1f
  const mant = h & 0x3ff
  if (exp === 0) return sign * mant * 2 ** -24
  if (exp === 31) return mant === 0 ? sign * Infinity : NaN
  return sign * (1 + mant / 1024) * 2 ** (exp - 15)
}

describe('test data generators', () => {
  it('rounds float32 to bf16 to nearest, ties to even', () => {
    expect(f32BitsToBf16(bitsOf(1))).toBe(0x3f80)
    expect(f32BitsToBf16(bitsOf(-2))).toBe(0xc000)
    expect(f32BitsToBf16(bitsOf(1 + 2 ** -8))).toBe(0x3f80) // tie, down to even
    expect(f32BitsToBf16(bitsOf(1 + 3 * 2 ** -8))).toBe(0x3f82) // tie, up to even
    expect(f32BitsToBf16(bitsOf(1 + 2 ** -8 + 2 ** -20))).toBe(0x3f81) // above the tie
  })

  it('rounds float32 to fp16 to nearest, ties to even, with subnormals and overflow', () => {
    expect(f32BitsToF16(bitsOf(1))).toBe(0x3c00)
    expect(f32BitsToF16(bitsOf(-2))).toBe(0xc000)
    expect(f32BitsToF16(bitsOf(65504))).toBe(0x7bff)
    expect(f32BitsToF16(bitsOf(65520))).toBe(0x7c00) // rounds up to infinity
    expect(f32BitsToF16(bitsOf(1 + 2 ** -11))).toBe(0x3c00)
    expect(f32BitsToF16(bitsOf(1 + 3 * 2 ** -11))).toBe(0x3c02)
    expect(f32BitsToF16(bitsOf(2 ** -24))).toBe(0x0001) // smallest subnormal
    expect(f32BitsToF16(bitsOf(2 ** -25))).toBe(0x0000) // tie, down to even (zero)
    expect(f32BitsToF16(bitsOf(1.5 * 2 ** -25))).toBe(0x0001)
    expect(f32BitsToF16(bitsOf(2 ** -14 - 2 ** -25))).toBe(0x0400) // largest subnormal rounds up to the smallest normal
    // Every fp16 value converts back to itself.
    for (let h = 0; h < 0x7c00; h += 7) expect(f32BitsToF16(bitsOf(f16ToNumber(h)))).toBe(h)
  })

  it('draws weights like a trained tensor: per-tensor scale, near-zero mean, a few outliers', () => {
    const n = 1 << 18
    for (const seed of [1, 2, 3]) {
      const { scale } = tensorScale(seed)
      expect(scale).toBeGreaterThanOrEqual(SCALE_MIN)
      expect(scale).toBeLessThanOrEqual(SCALE_MAX)
      const w = drawWeights(n, seed)
      let sum = 0
      let outliers = 0
      for (const x of w) {
        sum += x
        if (Math.abs(x) >= OUTLIER_MIN * scale) outliers++
      }
      const mean = sum / n
      const sd = Math.sqrt(w.reduce((a, x) => a + (x - mean) ** 2, 0) / n)
      expect(Math.abs(mean)).toBeLessThan(0.02 * scale)
      // The outliers add a little to the spread of the normal draw.
      expect(sd / scale).toBeGreaterThan(0.98)
      expect(sd / scale).toBeLessThan(1.15)
      // A normal draw passes 4 sd in 63 of a million values; the planted outliers dominate.
      expect(outliers).toBeGreaterThan(n * OUTLIER_RATE * 0.8)
      expect(outliers).toBeLessThan(n * OUTLIER_RATE * 1.5)
    }
    expect(tensorScale(1).scale).not.toBe(tensorScale(2).scale)
  })

  it('is deterministic in its seed, and the seed matters', () => {
    for (const kind of ['BF16', 'F16', 'F32', 'Q4_0', 'Q8_0', 'random'] as const) {
      const a = testData(kind, 10_000, 42)
      expect(Buffer.from(testData(kind, 10_000, 42)).equals(Buffer.from(a))).toBe(true)
      expect(Buffer.from(testData(kind, 10_000, 43)).equals(Buffer.from(a))).toBe(false)
    }
  })

  it('stores bf16, fp16 and fp32 as the rounded values, little-endian', () => {
    const w = drawWeights(1000, 7)
    const f32 = new Float32Array(encodeWeights(w, 'F32').buffer)
    expect(Array.from(f32)).toEqual(Array.from(w))
    const bf = new DataView(encodeWeights(w, 'BF16').buffer)
    const f16 = new DataView(encodeWeights(w, 'F16').buffer)
    for (let i = 0; i < w.length; i++) {
      const x = w[i]!
      const back = new Float32Array(new Uint32Array([bf.getUint16(2 * i, true) << 16]).buffer)[0]!
      expect(Math.abs(back - x)).toBeLessThanOrEqual(Math.abs(x) * 2 ** -8)
      expect(Math.abs(f16ToNumber(f16.getUint16(2 * i, true)) - x)).toBeLessThanOrEqual(Math.max(Math.abs(x) * 2 ** -11, 2 ** -25))
    }
  })

  it('quantizes like ggml: Q8_0 and Q4_0 blocks dequantize to within half a step of the weights (Q4_0: a step at the clipped end)', () => {
    const blocks = 64
    const w = drawWeights(blocks * QK, 9)
    const q8 = quantizedBlocks('Q8_0', blocks * Q8_0_BLOCK_BYTES, 9)
    const q4 = quantizedBlocks('Q4_0', blocks * Q4_0_BLOCK_BYTES, 9)
    expect(q8.length).toBe(blocks * Q8_0_BLOCK_BYTES)
    expect(q4.length).toBe(blocks * Q4_0_BLOCK_BYTES)
    const v8 = new DataView(q8.buffer)
    const v4 = new DataView(q4.buffer)
    for (let b = 0; b < blocks; b++) {
      const d8 = f16ToNumber(v8.getUint16(b * Q8_0_BLOCK_BYTES, true))
      const d4 = f16ToNumber(v4.getUint16(b * Q4_0_BLOCK_BYTES, true))
      expect(d8).toBeGreaterThan(0)
      expect(d4).not.toBe(0) // d = m / -8, m the value of largest magnitude (either sign)
      for (let j = 0; j < QK; j++) {
        const x = w[b * QK + j]!
        const q = v8.getInt8(b * Q8_0_BLOCK_BYTES + 2 + j)
        // The stored scale is fp16-rounded, so allow for that rounding too.
        expect(Math.abs(q * d8 - x)).toBeLessThanOrEqual(Math.abs(d8) * 0.51 + Math.abs(x) * 2 ** -10)
        const byte = q4[b * Q4_0_BLOCK_BYTES + 2 + (j % 16)]!
        const nib = j < 16 ? byte & 0x0f : byte >>> 4
        // 15 is the top of the range: a value past 7.5 steps is clipped to it, up to a step away.
        const steps = nib === 15 ? 1.01 : 0.51
        expect(Math.abs((nib - 8) * d4 - x)).toBeLessThanOrEqual(Math.abs(d4) * steps + Math.abs(x) * 2 ** -9)
      }
    }
  })

  it('makes random bytes of any length, evenly spread', () => {
    for (const n of [0, 1, 3, 5, 4097]) expect(randomBytes(n, 1).length).toBe(n)
    const r = randomBytes(1 << 16, 5)
    const counts = new Array<number>(256).fill(0)
    for (const x of r) counts[x]!++
    expect(Math.min(...counts)).toBeGreaterThan(180)
    expect(Math.max(...counts)).toBeLessThan(340)
  })
})
