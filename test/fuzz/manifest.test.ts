/**
 * `decodeManifest` on bytes a peer controls: mutations of valid manifests of both schemas (bit
 * flips, truncation, insertion, duplication, overwrite), random dag-cbor values, and random values
 * shaped like a manifest (so the schema and the invariants behind it are reached, not only the
 * decoder): block sizes in and out of range or not powers of two, roots of any length, on chunks of
 * one block or missing from chunks of several, one id with two roots. Each case ends in a valid
 * manifest or a typed error with a message, within the time bound; with the seed's id, a mutation
 * that changed the bytes is always refused.
 */
import { randomBytes } from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import fc from 'fast-check'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { describe, expect, it } from 'vitest'
import { fileDigest, RAW_CODEC } from '../../src/core/digest.js'
import { chunkRefOf, decodeManifest, encodeManifest, encodeSchema1Manifest, MAX_BLOCK_SIZE, type Manifest, type ManifestFile } from '../../src/core/manifest.js'
import { expectTypedOutcome, fuzzParams, mutated } from './fuzz.js'

const LIMITS = { maxChunks: 64, maxVersionBytes: 1024 * 1024 * 1024 }
const KiB = 1024
/** Block size of the schema-2 seeds: the smallest, so small chunks have several blocks. */
const BLOCK = 16 * KiB

function file (path: string, pieces: Uint8Array[], extra: Partial<ManifestFile> = {}, blockSize = BLOCK): ManifestFile {
  const chunks = pieces.map(p => chunkRefOf(p, blockSize))
  return { path, size: chunks.reduce((n, c) => n + c.size, 0), digest: fileDigest(chunks), format: 'other', chunks, ...extra }
}

function manifest (files: ManifestFile[], extra: Partial<Manifest> = {}): Manifest {
  return {
    schema: 2, blockSize: BLOCK, name: 'org/fuzz', created: 1_790_000_000_000, parent: null, files, metadata: {},
    structure: { formats: ['other'], parameterCount: 0, dtypes: [], tensorCount: 0, totalSize: files.reduce((n, f) => n + f.size, 0) },
    ...extra
  }
}

/** The same manifest in schema 1 (one block per chunk, no roots), as stores made before block trees. */
function schema1 (m: Manifest): Manifest {
  const { blockSize: _, ...rest } = m
  return { ...rest, schema: 1, files: m.files.map(f => ({ ...f, chunks: f.chunks.map(c => ({ id: c.id, size: c.size })) })) }
}

/** Encodes a manifest in its own schema. */
function encode (m: Manifest): { bytes: Uint8Array, id: string } {
  return m.schema === 1 ? encodeSchema1Manifest(m) : encodeManifest(m)
}

const a = randomBytes(300)
const b = randomBytes(7)
/** 3 blocks, the last short; exactly 2 blocks. */
const c = randomBytes(2 * BLOCK + 100)
const d = randomBytes(2 * BLOCK)
const withBlocks = manifest([
  file('config.json', []),
  file('model.safetensors', [b, c, a], {
    format: 'safetensors',
    structure: { headerLength: 7, tensors: [{ name: 'w', dtype: 'F32', shape: [8217], offset: 7, length: 32868 }], parameterCount: 8217, dtypes: ['F32'], metadata: { format: 'pt', n: 3 } }
  }),
  file('sub/data.bin', [d, c], { origins: ['https://models.example.com/org/fuzz/sub/data.bin'] })
], { metadata: { description: 'fuzz', tags: { k: 'v' } }, parent: fileDigest([]) as string })
const SEEDS = [
  manifest([]),
  manifest([file('weights.bin', [a, b, a])]),
  withBlocks,
  manifest([file('weights.bin', [c, d], {}, MAX_BLOCK_SIZE)], { blockSize: MAX_BLOCK_SIZE }),
  schema1(manifest([file('weights.bin', [a, b, a])])),
  schema1(withBlocks)
].map(m => encode(m))

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
/** Chunk ids from a small pool, so one id turns up with two sizes or two roots. */
const pooledCid = fc.constantFrom(...[a, b, c, d].map(p => CID.parse(chunkRefOf(p, BLOCK).id)))
/** A root: mostly 32 bytes (a few distinct values, so one id gets two), sometimes another length. */
const root = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(new Uint8Array(32), new Uint8Array(32).fill(1), chunkRefOf(c, BLOCK).root as Uint8Array) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 40 }) }
)
const size = fc.oneof(fc.integer({ min: -1, max: 5 * 1024 * 1024 }), fc.constantFrom(1, BLOCK, BLOCK + 1, 2 * BLOCK + 100, MAX_BLOCK_SIZE, MAX_BLOCK_SIZE + 1))
const chunkEntry = maybe(fc.oneof(
  fc.tuple(maybe(fc.oneof(cid, pooledCid)), maybe(size)),
  fc.tuple(maybe(fc.oneof(cid, pooledCid)), maybe(size), maybe(root))
))
const blockSize = fc.oneof(
  fc.constantFrom(16 * KiB, 32 * KiB, 256 * KiB, MAX_BLOCK_SIZE, 8 * KiB, 8 * 1024 * KiB, 20_000, 0, -16 * KiB),
  fc.integer({ min: -1, max: 16 * 1024 * KiB })
)
const fileShaped = fc.record({
  path: maybe(fc.constantFrom('a', 'b/c', '../x', 'a/b', '', 'z')),
  size: maybe(fc.integer({ min: -1, max: 1 << 30 })),
  digest: maybe(fc.constant(fileDigest([]))),
  format: maybe(fc.constantFrom('other', 'gguf', 'nope')),
  chunks: maybe(fc.array(chunkEntry, { maxLength: 8 }))
})
const manifestShaped = fc.record({
  schema: maybe(fc.constantFrom(1, 2)),
  blockSize: maybe(blockSize),
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
    it(`mutations of valid manifest ${i} (schema ${(dagCbor.decode(seed.bytes) as { schema: number }).schema}): a manifest or a typed error, and never accepted under the seed's id unless unchanged`, async () => {
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

  it('random chunk lists at random block sizes round-trip; a root taken away, added, or listed twice differently is refused', async () => {
    const pieces = fc.array(fc.constantFrom(a, b, c, d, randomBytes(BLOCK + 1), randomBytes(4 * BLOCK)), { minLength: 1, maxLength: 6 })
    const sizes = fc.constantFrom(16 * KiB, 32 * KiB, 64 * KiB, 256 * KiB, MAX_BLOCK_SIZE)
    const change = fc.constantFrom('none', 'drop', 'add', 'other') as fc.Arbitrary<'none' | 'drop' | 'add' | 'other'>
    await fc.assert(fc.asyncProperty(pieces, sizes, change, fc.nat(), async (list, size, what, pick) => {
      const m = manifest([file('w.bin', list, {}, size)], { blockSize: size })
      const { bytes, id } = encodeManifest(m)
      expect(decodeManifest(bytes, id)).toEqual(m)
      const raw = dagCbor.decode(bytes) as { files: Array<{ chunks: unknown[][] }> }
      const entries = raw.files[0]!.chunks
      const rooted = entries.filter(e => e.length === 3)
      const plain = entries.filter(e => e.length === 2)
      if (what === 'drop' && rooted.length > 0) rooted[pick % rooted.length]!.pop()
      else if (what === 'add' && plain.length > 0) plain[pick % plain.length]!.push(new Uint8Array(32))
      else if (what === 'other' && rooted.length > 0) entries.push([rooted[0]![0], rooted[0]![1], new Uint8Array(32).fill(9)])
      else return
      // Sizes and the digest still add up for 'other': only the second root is wrong.
      const f = (raw.files[0] as unknown as { size: number, digest: unknown })
      if (what === 'other') {
        f.size += rooted[0]![1] as number
        f.digest = fileDigest(entries.map(e => ({ id: (e[0] as CID).toString(), size: e[1] as number })))
      }
      const changed = dagCbor.encode(raw)
      await expectTypedOutcome(() => decodeManifest(changed), { check: () => { throw new Error(`accepted a manifest with a root ${what === 'drop' ? 'missing' : what === 'add' ? 'on a one-block chunk' : 'listed twice differently'}`) } })
      expect(() => decodeManifest(changed)).toThrow(what === 'drop' ? /but no block-tree root/ : what === 'add' ? /has a block-tree root, but/ : /listed with two block-tree roots/)
    }), fuzzParams())
  })

  it('random values shaped like a manifest reach the schema and the invariants: a manifest or a typed error', async () => {
    await fc.assert(fc.asyncProperty(manifestShaped, async value => {
      const bytes = encodable(value)
      if (bytes === undefined) return
      await expectTypedOutcome(() => decodeManifest(bytes), {
        // Whatever is accepted must encode back to the same bytes (one content, one id).
        check: m => { expect(Buffer.from(encode(m).bytes).equals(Buffer.from(bytes))).toBe(true) }
      })
      await expectTypedOutcome(() => decodeManifest(bytes, undefined, LIMITS))
    }), fuzzParams())
  })
})
