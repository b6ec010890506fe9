/**
 * `decodeManifest` on bytes a peer controls: mutations of valid manifests (bit flips, truncation,
 * insertion, duplication, overwrite), random dag-cbor values, and random values shaped like a
 * manifest (so the schema and the invariants behind it are reached, not only the decoder). Each
 * case ends in a valid manifest or a typed error with a message, within the time bound; with the
 * seed's id, a mutation that changed the bytes is always refused.
 */
import { randomBytes } from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import fc from 'fast-check'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { describe, expect, it } from 'vitest'
import { chunkIdOf, fileDigest, RAW_CODEC } from '../../src/core/digest.js'
import { decodeManifest, encodeManifest, type Manifest, type ManifestFile } from '../../src/core/manifest.js'
import { expectTypedOutcome, fuzzParams, mutated } from './fuzz.js'

const LIMITS = { maxChunks: 64, maxVersionBytes: 1024 * 1024 * 1024 }

function file (path: string, pieces: Uint8Array[], extra: Partial<ManifestFile> = {}): ManifestFile {
  const chunks = pieces.map(p => ({ id: chunkIdOf(p), size: p.byteLength }))
  return { path, size: chunks.reduce((n, c) => n + c.size, 0), digest: fileDigest(chunks), format: 'other', chunks, ...extra }
}

function manifest (files: ManifestFile[], extra: Partial<Manifest> = {}): Manifest {
  return {
    schema: 1, name: 'org/fuzz', created: 1_790_000_000_000, parent: null, files, metadata: {},
    structure: { formats: ['other'], parameterCount: 0, dtypes: [], tensorCount: 0, totalSize: files.reduce((n, f) => n + f.size, 0) },
    ...extra
  }
}

const a = randomBytes(300)
const b = randomBytes(7)
const SEEDS = [
  manifest([]),
  manifest([file('weights.bin', [a, b, a])]),
  manifest([
    file('config.json', []),
    file('model.safetensors', [b, a], {
      format: 'safetensors',
      structure: { headerLength: 7, tensors: [{ name: 'w', dtype: 'F32', shape: [75], offset: 7, length: 300 }], parameterCount: 75, dtypes: ['F32'], metadata: { format: 'pt', n: 3 } }
    }),
    file('sub/data.bin', [a], { origins: ['https://models.example.com/org/fuzz/sub/data.bin'] })
  ], { metadata: { description: 'fuzz', tags: { k: 'v' } }, parent: fileDigest([]) as string })
].map(m => encodeManifest(m))

/** Any dag-cbor value: scalars, byte strings, CIDs (raw and dag-cbor), lists and string-keyed maps. */
const cid = fc.tuple(fc.constantFrom(RAW_CODEC, dagCbor.code, 0x70), fc.uint8Array({ minLength: 0, maxLength: 40 }))
  .map(([code, digest]) => CID.create(1, code, Digest.create(0x12, digest)))
const { value: cborValue } = fc.letrec<{ value: unknown }>(tie => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.string(), fc.integer(), fc.maxSafeInteger(), fc.boolean(), fc.constant(null), fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.uint8Array({ maxLength: 16 }), cid,
    fc.array(tie('value'), { maxLength: 6 }),
    fc.dictionary(fc.string({ maxLength: 12 }), tie('value'), { maxKeys: 6 })
  )
}))

/** Values shaped like a manifest, with any field possibly replaced by something else. */
const maybe = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<unknown> => fc.oneof({ weight: 4, arbitrary: arb }, { weight: 1, arbitrary: cborValue })
const chunkEntry = maybe(fc.tuple(maybe(cid), maybe(fc.integer({ min: -1, max: 5 * 1024 * 1024 }))))
const fileShaped = fc.record({
  path: maybe(fc.constantFrom('a', 'b/c', '../x', 'a/b', '', 'z')),
  size: maybe(fc.integer({ min: -1, max: 1 << 30 })),
  digest: maybe(fc.constant(fileDigest([]))),
  format: maybe(fc.constantFrom('other', 'gguf', 'nope')),
  chunks: maybe(fc.array(chunkEntry, { maxLength: 8 }))
})
const manifestShaped = fc.record({
  schema: maybe(fc.constant(1)),
  name: maybe(fc.constantFrom('org/m', 'a--b', 'x')),
  created: maybe(fc.nat()),
  parent: maybe(fc.constant(null)),
  files: maybe(fc.array(fileShaped, { maxLength: 6 })),
  metadata: maybe(fc.constant({})),
  structure: maybe(fc.constant({ formats: [], parameterCount: 0, dtypes: [], tensorCount: 0, totalSize: 0 }))
}, { requiredKeys: [] })

function encodable (value: unknown): Uint8Array | undefined {
  try {
    return dagCbor.encode(value)
  } catch {
    return undefined // a value dag-cbor itself cannot encode (e.g. -0 is fine, but not every double)
  }
}

describe('fuzz: decodeManifest', () => {
  it('the seeds decode', () => {
    for (const s of SEEDS) expect(decodeManifest(s.bytes, s.id, LIMITS).name).toBe('org/fuzz')
  })

  for (const [i, seed] of SEEDS.entries()) {
    it(`mutations of valid manifest ${i}: a manifest or a typed error, and never accepted under the seed's id unless unchanged`, async () => {
      await fc.assert(fc.asyncProperty(mutated(seed.bytes), async bytes => {
        const same = Buffer.from(bytes).equals(Buffer.from(seed.bytes))
        await expectTypedOutcome(() => decodeManifest(bytes, undefined, LIMITS))
        await expectTypedOutcome(() => decodeManifest(bytes, seed.id, LIMITS), {
          check: m => { if (!same) throw new Error(`accepted changed bytes under ${seed.id} (${m.files.length} files)`) }
        })
      }), fuzzParams())
    })
  }

  it('random dag-cbor values: a typed error (or, by chance, a manifest)', async () => {
    await fc.assert(fc.asyncProperty(cborValue, async value => {
      const bytes = encodable(value)
      if (bytes === undefined) return
      await expectTypedOutcome(() => decodeManifest(bytes, undefined, LIMITS))
    }), fuzzParams())
  })

  it('random values shaped like a manifest reach the schema and the invariants: a manifest or a typed error', async () => {
    await fc.assert(fc.asyncProperty(manifestShaped, async value => {
      const bytes = encodable(value)
      if (bytes === undefined) return
      await expectTypedOutcome(() => decodeManifest(bytes), {
        // Whatever is accepted must encode back to the same bytes (one content, one id).
        check: m => { expect(Buffer.from(encodeManifest(m).bytes).equals(Buffer.from(bytes))).toBe(true) }
      })
      await expectTypedOutcome(() => decodeManifest(bytes, undefined, LIMITS))
    }), fuzzParams())
  })
})
