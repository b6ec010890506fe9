import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { codeLengths, huffmanDecode, huffmanEncode, huffmanPlan, MAX_CODE_BITS, sampledEntropy, STREAM_HEADER_BYTES, STREAMS } from '../../../src/core/huffman.js'
import { MalformedDataError, TruncatedDataError } from '../../../src/core/errors.js'

const kraft = (lengths: Uint8Array): number => lengths.reduce((sum, l) => sum + (l > 0 ? 2 ** -l : 0), 0)

describe('huffman', () => {
  it('gives complete prefix codes no deeper than MAX_CODE_BITS for any histogram', () => {
    const skewed = Array.from({ length: 256 }, (_, s) => (s < 40 ? Math.floor(2 ** (40 - s) / 2 ** 10) + 1 : 0))
    fc.assert(fc.property(fc.oneof(fc.array(fc.nat(), { minLength: 256, maxLength: 256 }), fc.constant(skewed), fc.constant(new Array<number>(256).fill(0))), counts => {
      const lengths = codeLengths(counts)
      expect(Math.max(...lengths)).toBeLessThanOrEqual(MAX_CODE_BITS)
      expect(kraft(lengths)).toBe(1)
      counts.forEach((c, s) => { if (c > 0) expect(lengths[s]).toBeGreaterThan(0) })
    }), { numRuns: 100 })
    expect(Math.max(...codeLengths(skewed))).toBe(MAX_CODE_BITS)
  })

  it('round-trips any bytes, and refuses a stream cut before the last value', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 2000 }), plane => {
      const stream = huffmanEncode(plane)
      const out = new Uint8Array(plane.length + 3)
      huffmanDecode(stream, plane.length, out, 3, 'test')
      expect(Buffer.from(out.subarray(3)).equals(Buffer.from(plane))).toBe(true)
    }), { numRuns: 100 })
    const plane = Uint8Array.from({ length: 1000 }, (_, i) => (i * 37) & 0xff)
    const stream = huffmanEncode(plane)
    // The last stream holds the last run: cut one byte and its last value is missing.
    expect(() => huffmanDecode(stream.subarray(0, stream.length - 1), plane.length, new Uint8Array(1000), 0, 'plane x')).toThrow(new TruncatedDataError('plane x: Huffman stream 3 ends before value 999 (its run ends at 1000)'))
    expect(() => huffmanDecode(stream.subarray(0, 100), 0, new Uint8Array(0), 0, 'plane x')).toThrow(`plane x: 100 bytes, shorter than the ${STREAM_HEADER_BYTES}-byte Huffman header`)
    // A stream length that runs past the end, and bytes after a stream's last value.
    const lying = Uint8Array.from(stream)
    new DataView(lying.buffer).setUint32(128, stream.length, true)
    expect(() => huffmanDecode(lying, plane.length, new Uint8Array(1000), 0, 'plane x')).toThrow(`plane x: Huffman stream 0 of ${stream.length} bytes runs past the end`)
    const padded = new Uint8Array(stream.length + 2)
    padded.set(stream)
    expect(() => huffmanDecode(padded, plane.length, new Uint8Array(1000), 0, 'plane x')).toThrow('plane x: 2 bytes follow the last value of Huffman stream 3')
  })

  it('decodes long low-entropy planes (the four-stream loop) at any offset, and damaged ones only into their own range or not at all', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 20000 }), fc.nat({ max: 255 }), fc.integer({ min: 0, max: 7 }), fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { maxLength: 4 }), (length, salt, offset, damage) => {
      // Exponent-like bytes: a few common values, rare outliers, a run of one value in places.
      const plane = Uint8Array.from({ length }, (_, i) => (i % 997 < 40 ? salt : 120 + ((Math.imul(i + salt, 2654435761) >>> 29) & 3) + (i % 500 === 0 ? 60 : 0)))
      const stream = huffmanEncode(plane)
      const out = new Uint8Array(offset + length + 8).fill(0xaa)
      huffmanDecode(stream, length, out, offset, 'test')
      expect(Buffer.from(out.subarray(offset, offset + length)).equals(Buffer.from(plane))).toBe(true)
      const bad = Uint8Array.from(stream)
      for (const [at, value] of damage) {
        const i = STREAM_HEADER_BYTES + (at % Math.max(1, bad.length - STREAM_HEADER_BYTES))
        if (i < bad.length) bad[i] = bad[i]! ^ (value | 1)
      }
      out.fill(0xaa)
      try {
        huffmanDecode(bad, length, out, offset, 'test')
      } catch (err) {
        expect(err).toBeInstanceOf(MalformedDataError)
      }
      expect(out.subarray(0, offset).every(b => b === 0xaa) && out.subarray(offset + length).every(b => b === 0xaa)).toBe(true)
    }), { numRuns: 200 })
  })

  it('samples a plane\'s entropy: near 8 bits for random bytes, near 0 for one value, the exact figure for a plane no longer than the sample', () => {
    const noise = Uint8Array.from({ length: 1 << 18 }, (_, i) => (Math.imul(i, 2654435761) >>> 13) & 0xff)
    expect(sampledEntropy(noise)).toBeGreaterThan(7.9)
    expect(sampledEntropy(new Uint8Array(1 << 18).fill(60))).toBe(0)
    expect(sampledEntropy(Uint8Array.from({ length: 4096 }, (_, i) => i & 3))).toBeCloseTo(2, 10)
    expect(sampledEntropy(new Uint8Array(0))).toBe(0)
  })

  it('plans the exact size of a stream before writing it', () => {
    const noise = Uint8Array.from({ length: 4096 }, (_, i) => (Math.imul(i, 2654435761) >>> 24) & 0xff)
    expect(huffmanPlan(noise).bytes).toBeGreaterThanOrEqual(noise.length)
    // One value: one bit each, 1,024 values a stream.
    expect(huffmanPlan(new Uint8Array(4096)).bytes).toBe(STREAM_HEADER_BYTES + STREAMS * 128)
    for (const plane of [noise, new Uint8Array(4096), Uint8Array.from({ length: 999 }, (_, i) => i % 3), Uint8Array.of(7), new Uint8Array(0), Uint8Array.of(1, 2, 3, 4, 5, 6)]) {
      expect(huffmanEncode(plane).length).toBe(huffmanPlan(plane).bytes)
    }
  })
})
