/**
 * safetensors headers under fuzzing: random bytes, mutations of real files, generated headers with
 * random entries, and huge declared lengths. The reader gives a valid structure or a
 * `MalformedModelError` with a message, in bounded time, never asking for more than
 * `MAX_ONE_READ` bytes at once. The header scanner (`model/json-object.ts`) is also held to
 * `JSON.parse`: on any text, it accepts the same objects, with the same keys and values.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { ShoalError } from '../../src/core/errors.js'
import { scanObject } from '../../src/model/json-object.js'
import { MAX_SAFETENSORS_HEADER_BYTES } from '../../src/model/limits.js'
import { readSafetensors, SAFETENSORS_DTYPE_BITS } from '../../src/model/safetensors.js'
import type { FileStructure } from '../../src/model/types.js'
import { ROOT } from '../../scripts/lib/daemon-proc.js'
import { concat, guardedSource, safetensors, u64, utf8 } from '../unit/model/build.js'
import { expectTypedOutcome, fuzzParams, mutated } from './fuzz.js'

const FIXTURE = join(ROOT, 'test', 'fixtures', 'models', 'tiny-llama.safetensors')

/** What every accepted structure satisfies: sorted, non-overlapping ranges inside the file. */
function checkStructure (s: FileStructure, size: number): void {
  expect(s.format).toBe('safetensors')
  expect(s.headerLength).toBeLessThanOrEqual(size)
  let end = s.headerLength
  for (const t of s.tensors) {
    expect(t.offset).toBeGreaterThanOrEqual(end)
    expect(t.offset + t.length).toBeLessThanOrEqual(size)
    end = t.offset + t.length
  }
}

const read = async (bytes: Uint8Array, size?: number): Promise<void> => {
  await expectTypedOutcome(async () => await readSafetensors(guardedSource(bytes, size), 'f.safetensors'), { check: s => checkStructure(s, size ?? bytes.byteLength) })
}

const DTYPES = Object.keys(SAFETENSORS_DTYPE_BITS)

/** A header of random entries, mostly plausible: dtypes, shapes and offsets near the right ones. */
const header = fc.record({
  entries: fc.array(fc.record({
    name: fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('__metadata__', '__proto__', 'constructor', 'a', 'a')),
    dtype: fc.oneof(fc.constantFrom(...DTYPES), fc.string({ maxLength: 4 })),
    shape: fc.array(fc.oneof(fc.nat({ max: 8 }), fc.integer(), fc.double()), { maxLength: 10 }),
    begin: fc.oneof(fc.nat({ max: 64 }), fc.integer()),
    length: fc.oneof(fc.nat({ max: 64 }), fc.integer()),
    extra: fc.option(fc.jsonValue({ maxDepth: 3 }), { nil: undefined })
  }), { maxLength: 8 }),
  metadata: fc.option(fc.dictionary(fc.string({ maxLength: 6 }), fc.oneof(fc.string({ maxLength: 8 }), fc.integer())), { nil: undefined }),
  data: fc.nat({ max: 256 }),
  space: fc.constantFrom('', ' ', '\n', '  \t')
}).map(({ entries, metadata, data, space }) => {
  const parts = entries.map(e => `${JSON.stringify(e.name)}:${space}${JSON.stringify({ dtype: e.dtype, shape: e.shape, data_offsets: [e.begin, e.begin + e.length], ...(e.extra !== undefined ? { extra: e.extra } : {}) })}`)
  if (metadata !== undefined) parts.push(`"__metadata__":${JSON.stringify(metadata)}`)
  return safetensors(`{${space}${parts.join(`,${space}`)}${space}}`, data)
})

describe('fuzz: safetensors', () => {
  it('random bytes', async () => {
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 512 }), async b => { await read(b) }), fuzzParams())
  })

  it('mutations of a real file', async () => {
    const seed = new Uint8Array(await readFile(FIXTURE))
    await fc.assert(fc.asyncProperty(mutated(seed), async b => { await read(b) }), fuzzParams())
  })

  it('generated headers with random entries', async () => {
    await fc.assert(fc.asyncProperty(header, async b => { await read(b) }), fuzzParams())
  })

  it('huge declared header lengths and file sizes, without reading what is declared', async () => {
    const lengths = fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.constantFrom(BigInt(MAX_SAFETENSORS_HEADER_BYTES), BigInt(MAX_SAFETENSORS_HEADER_BYTES + 1), 2n ** 53n, 2n ** 63n))
    const sizes = fc.oneof(fc.nat({ max: 1 << 20 }), fc.constantFrom(2 ** 40, Number.MAX_SAFE_INTEGER))
    await fc.assert(fc.asyncProperty(lengths, sizes, fc.string({ maxLength: 64 }), async (n, size, text) => {
      const head = concat(u64(n), utf8(text))
      await read(head, Math.max(size, head.byteLength))
    }), fuzzParams())
  })
})

/** Text that is sometimes JSON, sometimes JSON broken by a small edit. */
const jsonText = fc.oneof(
  fc.json({ maxDepth: 4 }),
  fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 3 })).map(o => JSON.stringify(o, null, 1)),
  fc.tuple(fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 2 })).map(o => JSON.stringify(o)), fc.nat(), fc.string({ maxLength: 3 }))
    .map(([text, at, ins]) => text.slice(0, at % (text.length + 1)) + ins + text.slice(at % (text.length + 1)))
)

describe('fuzz: the header scanner agrees with JSON.parse', () => {
  it('accepts exactly the objects JSON.parse accepts, member for member', async () => {
    await fc.assert(fc.asyncProperty(jsonText, async text => {
      let expected: unknown
      let parses = true
      try { expected = JSON.parse(text) } catch { parses = false }
      const isObject = parses && typeof expected === 'object' && expected !== null && !Array.isArray(expected)
      let scanned: Awaited<ReturnType<typeof scanObject>> | undefined
      let error: unknown
      try {
        scanned = await scanObject(text, 0, text.length, { file: 'f', what: 'header', maxMembers: 1000, maxDepth: 32 })
        for (let i = 0; i < scanned.count; i++) scanned.value(i)
      } catch (err) {
        error = err
      }
      if (error !== undefined) {
        expect(error, String(error)).toBeInstanceOf(ShoalError)
        // Refused although JSON.parse takes it: only for a key given twice (JSON.parse keeps the last).
        if (isObject) expect((error as Error).message).toMatch(/twice/)
        return
      }
      expect(isObject, `scanned ${JSON.stringify(text)}, which JSON.parse does not take as an object`).toBe(true)
      // JSON.parse puts integer-like keys first; the scan keeps the text's order.
      const byKey = (a: [string, unknown], b: [string, unknown]): number => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0
      const members = Array.from({ length: scanned!.count }, (_, i): [string, unknown] => [scanned!.key(i), scanned!.value(i)])
      expect(members.sort(byKey)).toEqual(Object.entries(expected as object).sort(byKey))
    }), fuzzParams())
  })
})
