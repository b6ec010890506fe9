import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { CODE_LENGTHS_BYTES, codeLengths, huffmanDecode, huffmanEncode, huffmanPlan, MAX_CODE_BITS } from '../../../src/core/huffman.js'
import { TruncatedDataError } from '../../../src/core/errors.js'

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
    expect(() => huffmanDecode(stream.subarray(0, stream.length - 1), plane.length, new Uint8Array(1000), 0, 'plane x')).toThrow(new TruncatedDataError('plane x: the Huffman stream ends after 999 of 1000 values'))
    expect(() => huffmanDecode(stream.subarray(0, 100), 0, new Uint8Array(0), 0, 'plane x')).toThrow(`plane x: 100 bytes, shorter than the ${CODE_LENGTHS_BYTES}-byte Huffman table`)
  })

  it('plans the exact size of a stream before writing it', () => {
    const noise = Uint8Array.from({ length: 4096 }, (_, i) => (Math.imul(i, 2654435761) >>> 24) & 0xff)
    expect(huffmanPlan(noise).bytes).toBeGreaterThanOrEqual(noise.length)
    expect(huffmanPlan(new Uint8Array(4096)).bytes).toBe(CODE_LENGTHS_BYTES + 512)
    for (const plane of [noise, new Uint8Array(4096), Uint8Array.from({ length: 999 }, (_, i) => i % 3)]) {
      expect(huffmanEncode(plane).length).toBe(huffmanPlan(plane).bytes)
    }
  })
})
