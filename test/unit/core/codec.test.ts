import fc from 'fast-check'
import { deflateRawSync } from 'node:zlib'
import { describe, expect, it } from 'vitest'
import {
  chooseCodec, chunkDtypes, CODEC_HEADER_BYTES, CODEC_NAMES, CODECS, codecForDtype, decodeBlock, encodeBlock, joinPlanes,
  readCodecHeader, splitPlanes, tensorsByFile, type CodecName
} from '../../../src/core/codec.js'
import { DecodedTooLargeError, InvalidInputError, MalformedDataError, TruncatedDataError, UnknownCodecError } from '../../../src/core/errors.js'
import { testData, type TestDataKind } from '../../../scripts/lib/weights.js'

const BLOCK = 256 * 1024
const KINDS: TestDataKind[] = ['BF16', 'F16', 'F32', 'Q4_0', 'Q8_0', 'random']
const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))

/** An encoded block with the given header and body. */
function block (id: number, version: number, size: number, body: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(CODEC_HEADER_BYTES + body.length)
  out[0] = id
  out[1] = version
  new DataView(out.buffer).setUint32(2, size, true)
  out.set(body, CODEC_HEADER_BYTES)
  return out
}

function refusal (fn: () => unknown): Error {
  try {
    fn()
  } catch (err) {
    return err as Error
  }
  throw new Error('expected a refusal')
}

describe('block codecs', () => {
  it('every codec round-trips every kind of data at every length (empty, one byte, odd lengths), never more than a header larger', () => {
    fc.assert(fc.property(
      fc.constantFrom(...CODEC_NAMES),
      fc.constantFrom(...KINDS),
      fc.oneof(fc.constantFrom(0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 17), fc.integer({ min: 0, max: 70_000 })),
      fc.nat(),
      (codec, kind, length, seed) => {
        // Generators round down to whole values or blocks; pad with a few more bytes to reach odd lengths.
        const data = new Uint8Array(length)
        data.set(testData(kind, length, seed).subarray(0, length))
        const encoded = encodeBlock(data, codec)
        expect(encoded.length).toBeLessThanOrEqual(length + CODEC_HEADER_BYTES)
        expect(same(decodeBlock(encoded, { maxSize: length }), data)).toBe(true)
      }
    ), { numRuns: 150 })
  })

  it('round-trips arbitrary bytes with every codec', () => {
    fc.assert(fc.property(fc.constantFrom(...CODEC_NAMES), fc.uint8Array({ maxLength: 3000 }), (codec, data) => {
      const encoded = encodeBlock(data, codec)
      expect(encoded.length).toBeLessThanOrEqual(data.length + CODEC_HEADER_BYTES)
      expect(same(decodeBlock(encoded, { maxSize: data.length }), data)).toBe(true)
    }), { numRuns: 200 })
  })

  it('round-trips planes of one value, of every byte value, and of rare outliers (deep Huffman trees limited to 12 bits)', () => {
    const cases: Uint8Array[] = [
      new Uint8Array(10_000), // one value in every plane
      Uint8Array.from({ length: 65_536 }, (_, i) => i & 0xff),
      // Weights falling off geometrically (Fibonacci-like), so an unlimited Huffman tree would be ~25 deep.
      Uint8Array.from({ length: 1 << 17 }, (_, i) => {
        let s = 0
        for (let x = i + 1; (x & 1) === 0 && s < 30; x >>= 1) s++
        return (s << 1) | (i & 1 ? 1 : 0)
      })
    ]
    for (const data of cases) {
      for (const codec of ['planes2', 'planes4'] as const) {
        const encoded = encodeBlock(data, codec)
        expect(same(decodeBlock(encoded, { maxSize: data.length }), data)).toBe(true)
      }
    }
  })

  it('decodes into a caller buffer (a pooled block), returning a view of it', () => {
    const data = testData('BF16', 10_001, 3)
    const into = new Uint8Array(BLOCK).fill(0xee)
    const out = decodeBlock(encodeBlock(data, 'planes2'), { maxSize: BLOCK, into })
    expect(out.buffer).toBe(into.buffer)
    expect(same(out, data)).toBe(true)
    expect(into[data.length]).toBe(0xee)
    const err = refusal(() => decodeBlock(encodeBlock(data, 'planes2'), { maxSize: BLOCK, into: new Uint8Array(100) }))
    expect(err).toBeInstanceOf(InvalidInputError)
    expect(err.message).toBe('decodeBlock: the output buffer holds 100 bytes, the block declares 10000')
  })

  it('compresses float weights the way their entropy allows, and leaves quantized and random bytes raw', () => {
    const ratio = (kind: TestDataKind, dtype: string): { codec: CodecName, ratio: number, extra: number } => {
      const data = testData(kind, BLOCK, 11)
      const codec = chooseCodec(dtype, data)
      const encoded = encodeBlock(data, codec)
      return { codec, ratio: encoded.length / data.length, extra: encoded.length - data.length }
    }
    // Entropy bounds of these draws: bf16 0.66, fp16 0.84, fp32 0.83 (two bytes of 8 bits per value
    // or four, and the sign-and-exponent byte's 2.7 bits, or fp16's 5.5).
    const bf16 = ratio('BF16', 'BF16')
    expect(bf16.codec).toBe('planes2')
    expect(bf16.ratio).toBeLessThan(0.68)
    const f16 = ratio('F16', 'F16')
    expect(f16.codec).toBe('planes2')
    // Mantissa planes are stored (mode 0), sign-and-exponent planes Huffman-coded (mode 1).
    for (const kind of ['F16', 'BF16'] as const) {
      const encoded = encodeBlock(testData(kind, BLOCK, 11), 'planes2')
      expect(encoded[CODEC_HEADER_BYTES]).toBe(0)
      expect(encoded[CODEC_HEADER_BYTES + 1 + BLOCK / 2]).toBe(1)
    }
    expect(f16.ratio).toBeLessThan(0.86)
    const f32 = ratio('F32', 'F32')
    expect(f32.codec).toBe('planes4')
    expect(f32.ratio).toBeLessThan(0.85)
    for (const [kind, dtype] of [['Q4_0', 'Q4_0'], ['Q8_0', 'Q8_0'], ['random', 'U8'], ['random', 'BF16'], ['random', 'F32']] as const) {
      const r = ratio(kind, dtype)
      expect(r.codec, `${kind} as ${dtype}`).toBe('raw')
      expect(r.extra).toBe(CODEC_HEADER_BYTES)
    }
  })

  it('names a candidate codec from each format\'s dtype names', () => {
    for (const d of ['BF16', 'F16', 'BFLOAT16', 'FLOAT16', 'bf16']) expect(codecForDtype(d)).toBe('planes2')
    for (const d of ['F32', 'FLOAT']) expect(codecForDtype(d)).toBe('planes4')
    for (const d of ['Q4_0', 'Q8_0', 'Q4_K', 'IQ2_XS', 'TQ1_0', 'MXFP4']) expect(codecForDtype(d)).toBe('raw')
    for (const d of [undefined, 'I8', 'INT64', 'F64', 'BOOL']) expect(codecForDtype(d)).toBe('deflate')
  })

  it('keeps deflate for text outside tensors only where it pays', () => {
    const json = new TextEncoder().encode(JSON.stringify({ vocab: Array.from({ length: 3000 }, (_, i) => `token_${i}`) }))
    expect(chooseCodec(undefined, json)).toBe('deflate')
    expect(chooseCodec(undefined, testData('random', 50_000, 1))).toBe('raw')
    expect(chooseCodec('BF16', new Uint8Array(0))).toBe('raw')
  })

  it('falls back to raw for a block the codec does not shrink, and says so in the header', () => {
    const noise = testData('random', 4096, 2)
    for (const codec of CODEC_NAMES) {
      const encoded = encodeBlock(noise, codec)
      expect(encoded[0]).toBe(CODECS.raw.id)
      expect(encoded.length).toBe(noise.length + CODEC_HEADER_BYTES)
    }
  })

  it('split and join are inverse transposes, with the tail values done byte by byte', () => {
    for (const width of [2, 4] as const) {
      for (const count of [0, 1, 3, 4, 5, 8, 1001]) {
        const data = testData('random', count * width, count)
        const planes = Array.from({ length: width }, () => new Uint8Array(count))
        splitPlanes(data, width, count, planes)
        for (let i = 0; i < count; i++) for (let k = 0; k < width; k++) expect(planes[k]![i]).toBe(data[i * width + k])
        const out = new Uint8Array(count * width)
        joinPlanes(planes, width, count, out)
        expect(same(out, data)).toBe(true)
      }
    }
  })
})

describe('block codecs refuse bad input with a typed error that says what was wrong', () => {
  it('refuses a declared length over the block size before decoding or allocating anything', () => {
    const err = refusal(() => decodeBlock(block(CODECS.raw.id, 1, 0xffffffff), { maxSize: BLOCK }))
    expect(err).toBeInstanceOf(DecodedTooLargeError)
    expect(err).toBeInstanceOf(MalformedDataError)
    expect(err.message).toBe('an encoded block declares 4294967295 bytes, more than the 262144-byte block it can be; refused without decoding')
    expect(() => readCodecHeader(block(CODECS.planes2.id, 1, BLOCK + 1), BLOCK)).toThrow(DecodedTooLargeError)
  })

  it('refuses a deflate bomb: a stream that inflates past its declared length', () => {
    const bomb = deflateRawSync(new Uint8Array(16 * 1024 * 1024))
    expect(bomb.length).toBeLessThan(20_000)
    const err = refusal(() => decodeBlock(block(CODECS.deflate.id, 1, BLOCK, bomb), { maxSize: BLOCK }))
    expect(err).toBeInstanceOf(DecodedTooLargeError)
    expect(err.message).toBe('a deflate block inflates past its declared 262144 bytes')
    // A byte plane has no deflate mode: its values are counted, never inflated.
    const plane0 = new Uint8Array(1 + 500)
    const plane1 = new Uint8Array(5 + bomb.length)
    plane1[0] = 2
    new DataView(plane1.buffer).setUint32(1, bomb.length, true)
    plane1.set(bomb, 5)
    const inPlane = refusal(() => decodeBlock(block(CODECS.planes2.id, 1, 1000, Buffer.concat([plane0, plane1])), { maxSize: BLOCK }))
    expect(inPlane).toBeInstanceOf(MalformedDataError)
    expect(inPlane.message).toBe('plane 1 of a planes2 block: unknown plane mode 2')
    const short = refusal(() => decodeBlock(block(CODECS.deflate.id, 1, 1000, deflateRawSync(new Uint8Array(999))), { maxSize: BLOCK }))
    expect(short).toBeInstanceOf(TruncatedDataError)
    expect(short.message).toBe('a deflate block inflates to 999 bytes, not the 1000 it declares')
    const garbage = refusal(() => decodeBlock(block(CODECS.deflate.id, 1, 1000, Uint8Array.of(0xff, 0xff, 0xff)), { maxSize: BLOCK }))
    expect(garbage).toBeInstanceOf(MalformedDataError)
    expect(garbage.message).toMatch(/^a deflate block does not inflate: /)
  })

  it('refuses a codec id it does not know, one it did not offer, and a version it cannot read', () => {
    const unknown = refusal(() => decodeBlock(block(9, 1, 0), { maxSize: BLOCK }))
    expect(unknown).toBeInstanceOf(UnknownCodecError)
    expect(unknown.message).toBe('an encoded block names codec 9, which this build does not know (it knows raw 0, planes2 1, planes4 2, deflate 3); the sender runs a newer shoal or is broken')
    const notOffered = refusal(() => decodeBlock(encodeBlock(new Uint8Array(1000), 'deflate'), { maxSize: BLOCK, accept: ['raw', 'planes2'] }))
    expect(notOffered).toBeInstanceOf(UnknownCodecError)
    expect(notOffered.message).toBe('an encoded block uses codec deflate, which this node did not offer (it accepts raw, planes2)')
    const version = refusal(() => decodeBlock(block(CODECS.planes2.id, 2, 0), { maxSize: BLOCK }))
    expect(version).toBeInstanceOf(UnknownCodecError)
    expect(version.message).toBe('an encoded block uses codec planes2 version 2; this build reads version 1 only (upgrade the older side)')
  })

  it('refuses truncated input at every cut, with a typed error', () => {
    const data = testData('BF16', 20_000, 5)
    for (const codec of ['raw', 'planes2', 'deflate'] as const) {
      const encoded = encodeBlock(data, codec)
      expect(encoded[0]).toBe(CODECS[codec].id)
      for (let cut = 0; cut < encoded.length; cut += cut < 300 ? 1 : 997) {
        const err = refusal(() => decodeBlock(encoded.subarray(0, cut), { maxSize: BLOCK }))
        expect(err, `${codec} cut at ${cut}`).toBeInstanceOf(MalformedDataError)
      }
    }
    const header = refusal(() => decodeBlock(Uint8Array.of(1, 1, 0), { maxSize: BLOCK }))
    expect(header).toBeInstanceOf(TruncatedDataError)
    expect(header.message).toBe('an encoded block is 3 bytes, shorter than its 6-byte header')
    const raw = refusal(() => decodeBlock(block(CODECS.raw.id, 1, 10, new Uint8Array(4)), { maxSize: BLOCK }))
    expect(raw).toBeInstanceOf(TruncatedDataError)
    expect(raw.message).toBe('a raw block declares 10 bytes but holds 4')
    const huff = refusal(() => decodeBlock(encodeBlock(data, 'planes2').subarray(0, 12_000), { maxSize: BLOCK }))
    expect(huff).toBeInstanceOf(TruncatedDataError)
    expect(huff.message).toMatch(/^plane 1 of a planes2 block: a \d+-byte stream declared, \d+ bytes left$/)
  })

  it('refuses bytes after the end and a Huffman table that is not a complete code', () => {
    const data = testData('BF16', 20_000, 6)
    const encoded = encodeBlock(data, 'planes2')
    const longer = new Uint8Array(encoded.length + 1)
    longer.set(encoded)
    const trailing = refusal(() => decodeBlock(longer, { maxSize: BLOCK }))
    expect(trailing).toBeInstanceOf(MalformedDataError)
    expect(trailing.message).toBe('a planes2 block has 1 bytes after its planes, not the 0 its length leaves')
    // Plane 0 (mantissas) is stored; plane 1 (sign and exponent) is coded: its table starts after
    // the header, plane 0's mode byte and bytes, plane 1's mode byte and length.
    const table = CODEC_HEADER_BYTES + 1 + 10_000 + 1 + 4
    expect(encoded[table - 5]).toBe(1)
    const incomplete = Uint8Array.from(encoded)
    incomplete.fill(0, table, table + 128)
    incomplete[table] = 0x22 // symbols 0 and 1 with 2 bits each: half the patterns decode to nothing
    const err = refusal(() => decodeBlock(incomplete, { maxSize: BLOCK }))
    expect(err).toBeInstanceOf(MalformedDataError)
    expect(err.message).toBe('plane 1 of a planes2 block: the Huffman code lengths do not form a complete prefix code (some bit patterns decode to nothing)')
    const overlap = Uint8Array.from(encoded)
    overlap.fill(0x11, table, table + 2) // four symbols of one bit
    expect(refusal(() => decodeBlock(overlap, { maxSize: BLOCK })).message).toMatch(/codes overlap\)$/)
  })
})

describe('which dtype each chunk holds', () => {
  it('maps chunks to the tensor that holds all their bytes; header, padding and straddling chunks to none', () => {
    const files = [
      { path: 'model.onnx', structure: { tensors: [{ name: 'w', dtype: 'FLOAT', shape: [4], offset: 0, length: 300, file: 'weights.bin' }] } },
      { path: 'a.safetensors', structure: { tensors: [{ name: 'x', dtype: 'F32', shape: [50], offset: 300, length: 200 }, { name: 'y', dtype: 'BF16', shape: [100], offset: 100, length: 200 }] } }
    ] as unknown as Parameters<typeof tensorsByFile>[0]
    const byFile = tensorsByFile(files)
    expect(byFile.get('weights.bin')).toEqual([{ dtype: 'FLOAT', offset: 0, length: 300 }])
    const chunks = [100, 150, 50, 100, 100, 50].map(size => ({ size })) as unknown as Parameters<typeof chunkDtypes>[0]['chunks']
    // [0,100) header, [100,250) y, [250,300) y, [300,400) x, [400,500) x, [500,550) after the tensors
    expect(chunkDtypes({ chunks }, byFile.get('a.safetensors')!)).toEqual([undefined, 'BF16', 'BF16', 'F32', 'F32', undefined])
    const straddling = [150, 200, 200].map(size => ({ size })) as typeof chunks
    expect(chunkDtypes({ chunks: straddling }, byFile.get('a.safetensors')!)).toEqual([undefined, undefined, undefined])
  })
})
