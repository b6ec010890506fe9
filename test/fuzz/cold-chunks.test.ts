/**
 * Cold chunk files under fuzzing: well-formed files of bf16, fp32 and random chunks, mutated, and
 * random bytes behind a valid magic. A file on disk can be damaged or planted; reading it returns
 * the chunk's bytes (hashing to its id) or throws a typed error, fast, and never decodes past the
 * chunk.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { chunkIdOf } from '../../src/core/digest.js'
import { decodeColdChunk, encodeColdChunk } from '../../src/store/cold-chunks.js'
import { testData } from '../../scripts/lib/weights.js'
import { expectTypedOutcome, fuzzParams, mutated } from './fuzz.js'

const KiB = 1024
const chunks = [
  { bytes: testData('BF16', 40 * KiB + 2, 1), dtype: 'BF16' },
  { bytes: testData('F32', 33 * KiB, 2), dtype: 'F32' },
  { bytes: testData('random', 20 * KiB + 5, 3), dtype: undefined }
].map(c => ({ id: chunkIdOf(c.bytes), file: encodeColdChunk(c.bytes, 16 * KiB, c.dtype), bytes: c.bytes }))

describe('fuzz: cold chunk files', () => {
  it('mutated files decode to the chunk or fail typed', async () => {
    await fc.assert(fc.asyncProperty(fc.constantFrom(...chunks).chain(c => mutated(c.file).map(file => ({ ...c, file }))), async c => {
      await expectTypedOutcome(() => decodeColdChunk(c.file, c.id), {
        maxMs: 500,
        check: out => { expect(Buffer.from(out).equals(Buffer.from(c.bytes))).toBe(true) }
      })
    }), fuzzParams())
  })

  it('random bytes behind the magic fail typed', async () => {
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 2048 }), async body => {
      const file = new Uint8Array(5 + body.length)
      file.set([0x53, 0x48, 0x43, 0x43, 1])
      file.set(body, 5)
      await expectTypedOutcome(() => decodeColdChunk(file, chunks[0]!.id), { maxMs: 500 })
    }), fuzzParams())
  })
})
