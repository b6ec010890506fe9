/**
 * GGUF under fuzzing: random bytes, mutations of a real file, generated files with random key/value
 * types, arrays and tensor infos, and huge declared counts and lengths in files of up to terabytes
 * (zeros after the header, never allocated). The reader gives a valid structure or a
 * `MalformedModelError` with a message, in bounded time, never asking for more than
 * `MAX_ONE_READ` bytes at once.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { readGguf } from '../../src/model/gguf.js'
import type { FileStructure } from '../../src/model/types.js'
import { ROOT } from '../../scripts/lib/daemon-proc.js'
import { concat, gguf, guardedSource, joinBytes, u32, u64, utf8 } from '../unit/model/build.js'
import { expectTypedOutcome, fuzzParams, mutated } from './fuzz.js'

const FIXTURE = join(ROOT, 'test', 'fixtures', 'models', 'tiny-llama.gguf')

function checkStructure (s: FileStructure, size: number): void {
  expect(s.format).toBe('gguf')
  let end = s.headerLength
  for (const t of s.tensors) {
    expect(t.offset).toBeGreaterThanOrEqual(end)
    expect(t.offset + t.length).toBeLessThanOrEqual(size)
    end = t.offset + t.length
  }
}

const read = async (bytes: Uint8Array, size?: number): Promise<void> => {
  await expectTypedOutcome(async () => await readGguf(guardedSource(bytes, size), 'f.gguf'), { check: s => checkStructure(s, size ?? bytes.byteLength) })
}

/** A u64 that is sometimes small, sometimes at a limit, sometimes absurd. */
const count = fc.oneof(
  { weight: 4, arbitrary: fc.nat({ max: 8 }).map(BigInt) },
  { weight: 1, arbitrary: fc.constantFrom(1024n, 1025n, 65_536n, 262_145n, 16_777_217n, 2n ** 32n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) }
)

const str = (s: Uint8Array, len?: bigint): Uint8Array => concat(u64(len ?? BigInt(s.byteLength)), s)

/** One value of a given GGUF type, with a declared length that may lie. */
const value: fc.Arbitrary<Uint8Array> = fc.letrec<{ value: Uint8Array }>(tie => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.tuple(fc.constantFrom(0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12), fc.uint8Array({ minLength: 8, maxLength: 8 }).map(b => { b[0] = b[0]! & 1; return b })).map(([t, b]) => concat(u32(t), b.subarray(0, [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8][t] ?? 0))),
    fc.tuple(fc.string({ maxLength: 12 }), fc.option(count, { nil: undefined })).map(([s, len]) => concat(u32(8), str(utf8(s), len))),
    fc.tuple(fc.integer({ min: 0, max: 13 }), count, fc.array(tie('value'), { maxLength: 4 }))
      .map(([type, n, items]) => concat(u32(9), u32(type), u64(n), ...items.map(i => i.subarray(4)))),
    { arbitrary: fc.integer({ min: 13, max: 2 ** 32 - 1 }).map(t => u32(t)), weight: 1 }
  )
})).value

const GGML_TYPES = [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 30, 39]
/** A tensor info: mostly plausible (aligned offsets, known types, small shapes), sometimes anything. */
const tensorInfo = fc.oneof(
  { weight: 3, arbitrary: fc.tuple(fc.string({ maxLength: 8 }), fc.array(fc.constantFrom(0, 1, 2, 32, 64, 256), { maxLength: 4 }), fc.constantFrom(...GGML_TYPES), fc.nat({ max: 8 }))
    .map(([name, dims, type, slot]) => gguf.tensor(name, dims, type, slot * 32)) },
  { weight: 1, arbitrary: fc.tuple(fc.string({ maxLength: 8 }), fc.option(count, { nil: undefined }), fc.array(count, { maxLength: 5 }), fc.nat({ max: 45 }), count)
    .map(([name, len, dims, type, offset]) => concat(str(utf8(name), len), u32(dims.length), ...dims.map(d => u64(d)), u32(type), u64(offset))) }
)

/** A whole file: header with (possibly lying) counts, kvs, tensor infos, padding and data. */
const file = fc.record({
  version: fc.constantFrom(2, 3, 3, 1, 4),
  tensorCount: fc.option(count, { nil: undefined }),
  kvCount: fc.option(count, { nil: undefined }),
  kvs: fc.array(fc.tuple(fc.oneof(fc.string({ maxLength: 10 }), fc.constantFrom('general.alignment', 'general.architecture', '__proto__')), value), { maxLength: 5 }),
  tensors: fc.array(tensorInfo, { maxLength: 4 }),
  data: fc.nat({ max: 4096 }),
  size: fc.option(fc.constantFrom(2 ** 31, 2 ** 40, Number.MAX_SAFE_INTEGER), { nil: undefined })
}).map(f => {
  const head = concat(
    utf8('GGUF'), u32(f.version),
    u64(f.tensorCount ?? BigInt(f.tensors.length)), u64(f.kvCount ?? BigInt(f.kvs.length)),
    ...f.kvs.map(([k, v]) => concat(str(utf8(k)), v)),
    ...f.tensors
  )
  const bytes = concat(head, new Uint8Array(f.data))
  return { bytes, size: f.size === undefined ? undefined : Math.max(f.size, bytes.byteLength) }
})

describe('fuzz: GGUF', () => {
  it('random bytes, with and without the magic', async () => {
    await fc.assert(fc.asyncProperty(fc.boolean(), fc.uint8Array({ maxLength: 512 }), async (magic, bytes) => {
      await read(magic ? concat(utf8('GGUF'), u32(3), bytes) : bytes)
    }), fuzzParams())
  })

  it('mutations of a real file', async () => {
    const seed = new Uint8Array(await readFile(FIXTURE))
    await fc.assert(fc.asyncProperty(mutated(seed), async bytes => { await read(bytes) }), fuzzParams())
  })

  it('generated files: random value types, nested arrays, tensor infos, lying counts and lengths, huge sizes', async () => {
    await fc.assert(fc.asyncProperty(file, async ({ bytes, size }) => { await read(bytes, size) }), fuzzParams())
  })

  it('valid files with every kind of value are read back', async () => {
    const seed = gguf.align(concat(gguf.header(1, 3), gguf.kvString('general.architecture', 'llama'), gguf.kvU32('general.alignment', 32),
      concat(gguf.str('tokens'), u32(9), u32(8), u64(100), joinBytes(Array.from({ length: 100 }, (_, i) => gguf.str(`t${i}`)))),
      gguf.tensor('w', [32], 8, 0)))
    await fc.assert(fc.asyncProperty(fc.nat({ max: 4096 }), async extra => {
      await expectTypedOutcome(async () => await readGguf(guardedSource(concat(seed, new Uint8Array(34 + extra))), 'f.gguf'), {
        check: s => {
          expect(s.tensors).toEqual([{ name: 'w', dtype: 'Q8_0', shape: [32], offset: seed.byteLength, length: 34 }])
          expect(s.metadata.tokens).toBe('[array string × 100]')
        }
      })
    }), fuzzParams(Math.min(100, fuzzParams().numRuns ?? 100)))
  })
})
