import { describe, it, expect } from 'vitest'
import { readGguf } from '../../../src/model/gguf.js'
import { bufferSource } from '../../../src/model/source.js'
import { concat, expectMalformed, gguf, u32, u64 } from './build.js'

const read = async (bytes: Uint8Array): Promise<ReturnType<typeof readGguf>> => await readGguf(bufferSource(bytes), 'm.gguf')

/** A GGUF file: header, kvs, tensor infos, padding, then `dataLength` zero bytes. */
function file (kvs: Uint8Array[], tensors: Uint8Array[], dataLength: number, opts: { alignment?: number, version?: number } = {}): Uint8Array {
  const head = concat(gguf.header(tensors.length, kvs.length, opts.version), ...kvs, ...tensors)
  return concat(gguf.align(head, opts.alignment), new Uint8Array(dataLength))
}

describe('readGguf', () => {
  it('reads kvs, tensors (ggml block sizes) and the aligned data start', async () => {
    const bytes = file([
      gguf.kvString('general.architecture', 'llama'),
      gguf.kvU32('llama.block_count', 2),
      concat(gguf.str('general.big'), u32(10), u64(2n ** 60n)),
      concat(gguf.str('general.flag'), u32(7), new Uint8Array([1])),
      concat(gguf.str('small'), u32(9), u32(5), u64(3), u32(1), u32(2), u32(3)),
      concat(gguf.str('vocab'), u32(9), u32(8), u64(100), ...Array.from({ length: 100 }, (_, i) => gguf.str(`t${i}`)))
    ], [
      gguf.tensor('b', [256, 2], 12, 96), // Q4_K: 2 blocks × 144 bytes
      gguf.tensor('a', [32, 2], 8, 0) // Q8_0: 2 blocks × 34 bytes
    ], 96 + 288)
    const s = await read(bytes)
    expect(s.format).toBe('gguf')
    expect(s.architecture).toBe('llama')
    expect(s.headerLength % 32).toBe(0)
    expect(s.tensors).toEqual([
      { name: 'a', dtype: 'Q8_0', shape: [32, 2], offset: s.headerLength, length: 68 },
      { name: 'b', dtype: 'Q4_K', shape: [256, 2], offset: s.headerLength + 96, length: 288 }
    ])
    expect(s.parameterCount).toBe(64 + 512)
    expect(s.dtypes).toEqual(['Q4_K', 'Q8_0'])
    expect(s.metadata).toMatchObject({
      'llama.block_count': 2, 'general.big': 2n ** 60n, 'general.flag': true, small: [1, 2, 3], vocab: '[array string × 100]'
    })
  })

  it('honours general.alignment and accepts v2', async () => {
    const bytes = file([gguf.kvU32('general.alignment', 64)], [gguf.tensor('x', [4], 0, 0)], 16, { alignment: 64, version: 2 })
    const s = await read(bytes)
    expect(s.headerLength % 64).toBe(0)
    expect(s.tensors[0]).toMatchObject({ offset: s.headerLength, length: 16, dtype: 'F32' })
  })

  it('summarises nested arrays by their total element count', async () => {
    const inner = concat(u32(0), u64(10), new Uint8Array(10))
    const outer = concat(gguf.str('grid'), u32(9), u32(9), u64(10), ...Array.from({ length: 10 }, () => inner))
    const s = await read(file([outer, concat(gguf.str('pair'), u32(9), u32(9), u64(2), inner, inner)], [], 0))
    expect(s.metadata.grid).toBe('[array array × 10]')
    expect(s.metadata.pair).toEqual([Array(10).fill(0), Array(10).fill(0)])
  })

  it('keeps hostile keys as own properties', async () => {
    const s = await read(file([gguf.kvString('__proto__', 'x')], [], 0))
    expect(Object.getPrototypeOf(s.metadata)).toBe(Object.prototype)
    expect(Object.hasOwn(s.metadata, '__proto__')).toBe(true)
  })

  describe('refuses malformed files', () => {
    it('duplicate keys', async () => {
      await expectMalformed(read(file([gguf.kvU32('a', 1), gguf.kvU32('a', 2)], [], 0)), /key "a" appears twice/)
    })

    it('bad magic', async () => {
      await expectMalformed(read(concat(new TextEncoder().encode('GGML'), new Uint8Array(40))), /bad magic/, /not a GGUF file/)
    })
    it('GGUF v1, with advice', async () => {
      await expectMalformed(read(file([], [], 0, { version: 1 })), /version 1 is not supported/, /re-convert/)
    })
    it('unknown version and big-endian files', async () => {
      await expectMalformed(read(file([], [], 0, { version: 4 })), /unsupported GGUF version 4/)
      await expectMalformed(read(file([], [], 0, { version: 0x03000000 })), /big-endian/)
    })
    it('truncated header', async () => {
      const bytes = file([gguf.kvString('general.name', 'x'.repeat(100))], [], 0)
      await expectMalformed(read(bytes.subarray(0, 60)), /value of "general.name"/, /file ends at 60/)
    })
    it('absurd tensor count and kv count', async () => {
      await expectMalformed(read(concat(gguf.header(2n ** 60n, 0), new Uint8Array(16))), /tensor_count 1152921504606846976 exceeds/)
      await expectMalformed(read(concat(gguf.header(0, 2n ** 40n), new Uint8Array(16))), /kv_count 1099511627776 exceeds/)
      await expectMalformed(read(concat(gguf.header(1000, 1000), new Uint8Array(16))), /cannot fit in a 40-byte file/)
    })
    it('absurd string length', async () => {
      const bytes = concat(gguf.header(0, 1), u64(2n ** 62n), new Uint8Array(32))
      await expectMalformed(read(bytes), /key 0 length is 4611686018427387904/)
      const limit = concat(gguf.header(0, 1), u64(2 ** 30), new Uint8Array(32))
      await expectMalformed(read(limit), /key 0 is 1073741824 bytes, over the limit of 1024 bytes/)
    })
    it('absurd array length and nesting', async () => {
      await expectMalformed(read(concat(gguf.header(0, 1), gguf.str('a'), u32(9), u32(0), u64(2n ** 40n), new Uint8Array(16))), /has 1099511627776 elements, over the limit of 16777216/)
      const nest = (depth: number): Uint8Array => depth === 0 ? concat(u32(0), u64(0)) : concat(u32(9), u64(1), nest(depth - 1))
      await expectMalformed(read(concat(gguf.header(0, 1), gguf.str('a'), u32(9), nest(6), new Uint8Array(16))), /nests arrays deeper than 4/)
      await expectMalformed(read(concat(gguf.header(0, 1), gguf.str('a'), u32(9), u32(0), u64(1000), new Uint8Array(16))), /value of "a" at offset \d+ is 1000 bytes long but only 16 remain/)
    })
    it('unknown value type and bad bool', async () => {
      await expectMalformed(read(concat(gguf.header(0, 1), gguf.str('a'), u32(42), new Uint8Array(16))), /value of "a" has unknown value type 42/)
      await expectMalformed(read(concat(gguf.header(0, 1), gguf.str('a'), u32(7), new Uint8Array([2]), new Uint8Array(16))), /bool with byte value 2/)
    })
    it('unknown and removed ggml types', async () => {
      await expectMalformed(read(file([], [gguf.tensor('x', [4], 99, 0)], 32)), /tensor "x" has unknown ggml type 99/)
      await expectMalformed(read(file([], [gguf.tensor('x', [32], 31, 0)], 32)), /Q4_0_4_4.*removed/)
    })
    it('too many dimensions, overflowing shapes, partial blocks', async () => {
      await expectMalformed(read(file([], [gguf.tensor('x', [1, 1, 1, 1, 1], 0, 0)], 32)), /5 dimensions, more than 4/)
      await expectMalformed(read(file([], [gguf.tensor('x', [2n ** 63n], 0, 0)], 32)), /dimension 0 is 9223372036854775808/)
      await expectMalformed(read(file([], [gguf.tensor('x', [2 ** 40, 2 ** 40], 0, 0)], 32)), /too many/)
      await expectMalformed(read(file([], [gguf.tensor('x', [33], 8, 0)], 64)), /not a multiple of the Q8_0 block size 32/)
    })
    it('offsets out of range, unaligned or overlapping; duplicate names', async () => {
      await expectMalformed(read(file([], [gguf.tensor('x', [8], 0, 0)], 16)), /tensor "x" data .* runs past the end of the file/)
      await expectMalformed(read(file([], [gguf.tensor('x', [4], 0, 2n ** 62n)], 16)), /tensor "x" offset is 4611686018427387904, outside/)
      await expectMalformed(read(file([], [gguf.tensor('x', [4], 0, 8)], 64)), /offset 8 is not a multiple of the alignment 32/)
      await expectMalformed(read(file([], [gguf.tensor('x', [16], 0, 0), gguf.tensor('y', [4], 0, 32)], 96)), /"x" and "y" overlap/)
      await expectMalformed(read(file([], [gguf.tensor('x', [4], 0, 0), gguf.tensor('x', [4], 0, 32)], 64)), /declared twice/)
    })
    it('a bad alignment', async () => {
      await expectMalformed(read(file([gguf.kvU32('general.alignment', 24)], [], 0)), /general.alignment 24 is not a positive power of two/)
    })
  })
})
