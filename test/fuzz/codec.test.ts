/**
 * Block decoding under fuzzing: encoded blocks of every codec, mutated (bit flips, cuts,
 * insertions, repeats, overwrites), and bodies of arbitrary bytes behind every header. A peer
 * controls all of it. `decodeBlock` returns at most `maxSize` bytes or throws a typed error, fast,
 * whatever it is given; what it returns for an unmutated block is the block.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { CODEC_HEADER_BYTES, CODECS, decodeBlock, encodeBlock, type CodecName } from '../../src/core/codec.js'
import { testData } from '../../scripts/lib/weights.js'
import { expectTypedOutcome, fuzzParams, mutated } from './fuzz.js'

const MAX = 64 * 1024
const seeds: Array<[CodecName, Uint8Array]> = [
  ['planes2', testData('BF16', 20_001, 1)],
  ['planes2', testData('F16', 4_099, 2)],
  ['planes4', testData('F32', 16_386, 3)],
  ['deflate', new TextEncoder().encode(JSON.stringify({ tokens: Array.from({ length: 900 }, (_, i) => `t${i % 97}`) }))],
  ['raw', testData('random', 1000, 4)]
]
const encoded = seeds.map(([codec, data]) => {
  const e = encodeBlock(data, codec)
  expect(e[0]).toBe(CODECS[codec].id)
  return e
})

function decodes (bytes: Uint8Array, maxSize = MAX): Promise<void> {
  return expectTypedOutcome(() => decodeBlock(bytes, { maxSize }), {
    maxMs: 500,
    check: out => { expect(out.length).toBeLessThanOrEqual(maxSize) }
  })
}

describe('fuzz: block decoding', () => {
  it('decodes each unmutated block to its bytes', () => {
    encoded.forEach((e, i) => expect(Buffer.from(decodeBlock(e, { maxSize: MAX })).equals(Buffer.from(seeds[i]![1]))).toBe(true))
  })

  it('mutated encoded blocks decode within the bound or fail typed', async () => {
    await fc.assert(fc.asyncProperty(fc.constantFrom(...encoded).chain(e => mutated(e)), fc.constantFrom(MAX, 16 * 1024, 100), (bytes, maxSize) => decodes(bytes, maxSize)), fuzzParams())
  })

  it('any body behind any header decodes within the bound or fails typed', async () => {
    const header = fc.tuple(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 2 }), fc.oneof(fc.nat({ max: MAX }), fc.nat()))
    await fc.assert(fc.asyncProperty(header, fc.uint8Array({ maxLength: 4096 }), async ([id, version, size], body) => {
      const bytes = new Uint8Array(CODEC_HEADER_BYTES + body.length)
      bytes[0] = id
      bytes[1] = version
      new DataView(bytes.buffer).setUint32(2, size >>> 0, true)
      bytes.set(body, CODEC_HEADER_BYTES)
      await decodes(bytes)
    }), fuzzParams())
  })

  it('arbitrary bytes decode within the bound or fail typed', async () => {
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 512 }), bytes => decodes(bytes)), fuzzParams())
  })
})
