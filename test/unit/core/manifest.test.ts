import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import * as dagCbor from '@ipld/dag-cbor'
import { encode as cborEncode } from 'cborg'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { MAX_CHUNK_SIZE } from '../../../src/core/chunking.js'
import { chunkIdOf, encodeBlock, fileDigest, RAW_CODEC } from '../../../src/core/digest.js'
import { blockSizeOf, chunkRefOf, chunkRootOf, cidText, decodeManifest, DEFAULT_BLOCK_SIZE, encodeManifest, encodeSchema1Manifest, MAX_MANIFEST_BYTES, type ChunkRef, type Manifest, type ManifestFile } from '../../../src/core/manifest.js'
import { blockCount, blockMatches, blockRange, leafHash, proofOf, rootOf } from '../../../src/core/tree.js'
import { seededBytes } from '../../helpers/random.js'

const KiB = 1024

function sampleManifest (): Manifest {
  const chunks = [Buffer.from('header'), Buffer.from('tensor-a'), Buffer.from('tensor-b')].map(b => ({ id: chunkIdOf(b), size: b.length }))
  return {
    schema: 2,
    blockSize: DEFAULT_BLOCK_SIZE,
    name: 'org/model',
    created: 1_790_000_000_000,
    parent: null,
    files: [
      { path: 'config.json', size: 0, digest: fileDigest([]), format: 'other', chunks: [] },
      {
        path: 'model.safetensors', size: 22, digest: fileDigest(chunks), format: 'safetensors', chunks,
        structure: { headerLength: 6, tensors: [{ name: 'a', dtype: 'F32', shape: [2], offset: 6, length: 8 }], parameterCount: 2, dtypes: ['F32'], metadata: { format: 'pt' } }
      }
    ],
    metadata: { description: 'test', hyperparameters: { lr: 0.001 }, tags: { task: 'ner' } },
    structure: { formats: ['other', 'safetensors'], parameterCount: 2, dtypes: ['F32'], tensorCount: 1, totalSize: 22 }
  }
}

describe('manifest', () => {
  it('encodes canonically: same content, same bytes, same id, whatever the key order', () => {
    const a = encodeManifest(sampleManifest())
    const shuffled = Object.fromEntries(Object.entries(sampleManifest()).reverse()) as unknown as Manifest
    const b = encodeManifest(shuffled)
    expect(Buffer.from(a.bytes).equals(Buffer.from(b.bytes))).toBe(true)
    expect(a.id).toBe(b.id)
    expect(a.id.startsWith('bafyrei')).toBe(true)
  })

  it('round-trips and checks the id', () => {
    const { bytes, id } = encodeManifest(sampleManifest())
    expect(decodeManifest(bytes, id)).toEqual(sampleManifest())
    const other = encodeManifest({ ...sampleManifest(), created: 1 })
    expect(() => decodeManifest(other.bytes, id)).toThrow(expect.objectContaining({ name: 'MalformedDataError' }))
  })

  it.each([
    ['a path escaping the version', (m: Manifest) => { m.files[0]!.path = '../evil' }, /'\.\.' components/],
    ['unsorted files', (m: Manifest) => { m.files.reverse() }, /not sorted/],
    ['chunks not adding up to the size', (m: Manifest) => { m.files[1]!.size = 23 }, /add up to/],
    ['a digest that does not match the chunks', (m: Manifest) => { m.files[1]!.digest = fileDigest([]) }, /does not match/],
    ['an unknown field', (m: Manifest) => { (m as unknown as Record<string, unknown>).extra = 1 }, /Unrecognized/],
    ['a bad model name', (m: Manifest) => { m.name = 'a--b' }, /invalid model name/],
    ['a file that is also a folder', (m: Manifest) => { m.files.splice(1, 0, { ...m.files[0]!, path: 'config.json/x' }) }, /both a file and a folder/]
  ])('refuses %s', (_what, mutate, message) => {
    const m = sampleManifest()
    mutate(m)
    expect(() => encodeManifest(m)).toThrow(message)
  })

  it('refuses bytes that are not dag-cbor, or a wrong shape, as MalformedDataError', () => {
    expect(() => decodeManifest(new Uint8Array([0xff, 0x00]))).toThrow(expect.objectContaining({ name: 'MalformedDataError' }))
    expect(() => decodeManifest(dagCbor.encode({ schema: 1, name: 'x' }))).toThrow(/manifest is invalid/)
    expect(() => decodeManifest(dagCbor.encode({ ...sampleManifest(), files: [{ path: 'a', chunks: [[1, 2]] }] }))).toThrow(expect.objectContaining({ name: 'MalformedDataError' }))
  })

  it('refuses one chunk id listed with two sizes, naming the chunk and both sizes', () => {
    // The attack: id X is 100 bytes; one file lists it as 100, another as 200 (padded to add up).
    const x = Buffer.alloc(100, 7)
    const id = chunkIdOf(x)
    const a = [{ id, size: 100 }]
    const b = [{ id, size: 200 }]
    const m = sampleManifest()
    m.files = [
      { path: 'a.bin', size: 100, digest: fileDigest(a), format: 'other', chunks: a },
      { path: 'b.bin', size: 200, digest: fileDigest(b), format: 'other', chunks: b }
    ]
    expect(() => encodeManifest(m)).toThrow(`chunk ${id} is listed with two sizes, 100 bytes (in a.bin) and 200 bytes (in b.bin)`)
    // The same from bytes a peer could send (encoded without validation), with the id they hash to.
    const { bytes, cid } = encodeBlock(toCbor(m))
    expect(() => decodeManifest(bytes, cid)).toThrow(expect.objectContaining({ name: 'MalformedDataError', message: expect.stringContaining('listed with two sizes, 100 bytes (in a.bin) and 200 bytes (in b.bin)') }))
    // Within one file, too.
    const c = [{ id, size: 100 }, { id, size: 200 }]
    m.files = [{ path: 'c.bin', size: 300, digest: fileDigest(c), format: 'other', chunks: c }]
    expect(() => decodeManifest(encodeBlock(toCbor(m)).bytes)).toThrow('listed with two sizes, 100 bytes (in c.bin) and 200 bytes (in c.bin)')
  })

  it('with limits, refuses too many chunks or bytes before the schema is checked (TooLargeError)', () => {
    const m = sampleManifest()
    const { bytes, id } = encodeManifest(m)
    expect(decodeManifest(bytes, id, { maxChunks: 3, maxVersionBytes: 22 }).files).toHaveLength(2)
    expect(() => decodeManifest(bytes, id, { maxChunks: 2, maxVersionBytes: 1e12 })).toThrow(expect.objectContaining({ name: 'TooLargeError', limit: 'chunks', message: 'manifest lists 3 chunks, over the limit of 2' }))
    expect(() => decodeManifest(bytes, id, { maxChunks: 100, maxVersionBytes: 21 })).toThrow(expect.objectContaining({ name: 'TooLargeError', limit: 'size', message: 'manifest declares 22 bytes, over the limit of 21 bytes for one version' }))
    // Counted on the decoded value: a manifest invalid in every other way is still refused for its size.
    const junk = dagCbor.encode({ files: [{ chunks: new Array(10).fill(0), size: 5 }] })
    expect(() => decodeManifest(junk, undefined, { maxChunks: 9, maxVersionBytes: 1e12 })).toThrow(expect.objectContaining({ name: 'TooLargeError', limit: 'chunks' }))
  })

  it('refuses bytes that hash to the id but are not the canonical encoding', () => {
    const m = sampleManifest()
    // Same content, map keys in reverse order: another byte string, so another id.
    const reversed = cborEncode(toCbor(m), { ...dagCbor.encodeOptions, mapSorter: (a: unknown[], b: unknown[]) => String((b[0] as { value?: unknown }).value).localeCompare(String((a[0] as { value?: unknown }).value)) })
    expect(Buffer.from(reversed).equals(Buffer.from(encodeManifest(m).bytes))).toBe(false)
    const id = CID.create(1, dagCbor.code, Digest.create(0x12, createHash('sha256').update(reversed).digest())).toString()
    expect(() => decodeManifest(reversed, id)).toThrow(expect.objectContaining({ name: 'MalformedDataError', message: expect.stringMatching(/canonical/) }))
  })

  it('refuses a chunk id that is not raw, or whose sha2-256 digest is not 32 bytes', () => {
    const m = sampleManifest()
    const short = CID.create(1, RAW_CODEC, Digest.create(0x12, new Uint8Array(5)))
    const raw = toCbor(m) as { files: Array<{ chunks: unknown[][] }> }
    raw.files[1]!.chunks[0]![0] = short
    expect(() => decodeManifest(dagCbor.encode(raw))).toThrow('chunk 0 of model.safetensors has a 5-byte sha2-256 digest, not 32')
    raw.files[1]!.chunks[0]![0] = CID.parse(fileDigest([]))
    expect(() => decodeManifest(dagCbor.encode(raw))).toThrow('chunk 0 of model.safetensors is not a raw-codec CIDv1')
  })

  it('cidText writes a CIDv1 exactly as CID.toString does', () => {
    for (let i = 0; i < 200; i++) {
      const bytes = createHash('sha256').update(String(i)).digest().subarray(0, 1 + (i % 32))
      const cid = CID.parse(chunkIdOf(bytes))
      expect(cidText(cid)).toBe(cid.toString())
      const other = CID.create(1, dagCbor.code, Digest.create(0x12, createHash('sha256').update(bytes).digest()))
      expect(cidText(other)).toBe(other.toString())
    }
  })
})

/** A manifest in the dag-cbor data model, encoded without any check (what a hostile peer can send). */
function toCbor (m: Manifest): unknown {
  return { ...m, files: m.files.map(f => ({ ...f, chunks: f.chunks.map(c => c.root === undefined ? [CID.parse(c.id), c.size] : [CID.parse(c.id), c.size, c.root]) })) }
}

/** A file of `pieces` (one chunk each) at `blockSize`, roots computed. */
function fileOf (path: string, pieces: Uint8Array[], blockSize: number): ManifestFile {
  const chunks = pieces.map(p => chunkRefOf(p, blockSize))
  return { path, size: chunks.reduce((n, c) => n + c.size, 0), digest: fileDigest(chunks), format: 'other', chunks }
}

/** A schema-2 manifest at 16 KiB blocks: a chunk of 3 blocks (short last), one of exactly 2, one of 1. */
function blockManifest (): Manifest {
  const pieces = [seededBytes(40 * KiB + 5, 1), seededBytes(32 * KiB, 2), seededBytes(100, 3)]
  return { ...sampleManifest(), blockSize: 16 * KiB, files: [fileOf('weights.bin', pieces, 16 * KiB)], structure: { ...sampleManifest().structure, formats: ['other'], totalSize: 72 * KiB + 105 } }
}

/** Bytes of `blockManifest` with `mutate` applied to its data model, encoded without any check. */
function forged (mutate: (raw: { blockSize?: unknown, schema?: unknown, files: Array<{ chunks: unknown[][] }> }) => void): Uint8Array {
  const raw = toCbor(blockManifest()) as { files: Array<{ chunks: unknown[][] }> }
  mutate(raw)
  return dagCbor.encode(raw)
}

describe('manifest schema 2: block trees', () => {
  it('a chunk of more than one block carries the root of its blocks\' tree; one of one block has none', () => {
    const m = blockManifest()
    const [three, two, one] = m.files[0]!.chunks as [ChunkRef, ChunkRef, ChunkRef]
    const bytes = seededBytes(40 * KiB + 5, 1)
    const leaves = [0, 1, 2].map(i => { const [at, n] = blockRange(bytes.byteLength, 16 * KiB, i); return leafHash(bytes.subarray(at, at + n)) })
    expect(Buffer.from(chunkRootOf(three)!).equals(Buffer.from(rootOf(leaves)))).toBe(true)
    expect(chunkRootOf(two)).toHaveLength(32)
    expect(chunkRootOf(one)).toBeUndefined()
    // Every block of the chunk, with its proof, folds to the root the manifest carries.
    for (let i = 0; i < 3; i++) {
      const [at, n] = blockRange(bytes.byteLength, 16 * KiB, i)
      expect(blockMatches(bytes.subarray(at, at + n), i, 3, proofOf(leaves, i), chunkRootOf(three)!)).toBe(true)
    }
  })

  it('round-trips with the block size and the roots, as canonical dag-cbor with the roots as bytes', () => {
    const m = blockManifest()
    const { bytes, id } = encodeManifest(m)
    const back = decodeManifest(bytes, id)
    expect(back).toEqual(m)
    expect(blockSizeOf(back)).toBe(16 * KiB)
    const raw = dagCbor.decode(bytes) as { schema: number, blockSize: number, files: Array<{ chunks: unknown[][] }> }
    expect(raw.schema).toBe(2)
    expect(raw.blockSize).toBe(16 * KiB)
    expect(raw.files[0]!.chunks.map(c => c.length)).toEqual([3, 3, 2])
    expect(raw.files[0]!.chunks[0]![2]).toBeInstanceOf(Uint8Array)
  })

  it('a file\'s digest is the same with or without roots, so its blob is shared across schemas and block sizes', () => {
    const pieces = [seededBytes(40 * KiB + 5, 1), seededBytes(100, 3)]
    const at16 = fileOf('w.bin', pieces, 16 * KiB)
    const at32 = fileOf('w.bin', pieces, 32 * KiB)
    const flat = pieces.map(p => ({ id: chunkIdOf(p), size: p.byteLength }))
    expect(at16.digest).toBe(fileDigest(flat))
    expect(at32.digest).toBe(at16.digest)
    expect(Buffer.from(at16.chunks[0]!.root!).equals(Buffer.from(at32.chunks[0]!.root!))).toBe(false)
  })

  it.each([
    ['a root of 31 bytes', (raw: Parameters<Parameters<typeof forged>[0]>[0]) => { raw.files[0]!.chunks[0]![2] = new Uint8Array(31) }, 'chunk 0 of weights.bin has a root of 31 bytes, not 32 bytes'],
    ['a root that is not bytes', (raw: Parameters<Parameters<typeof forged>[0]>[0]) => { raw.files[0]!.chunks[0]![2] = 'abc' }, 'chunk 0 of weights.bin has a root of string, not 32 bytes'],
    ['a root on a one-block chunk', (raw: Parameters<Parameters<typeof forged>[0]>[0]) => { raw.files[0]!.chunks[2]!.push(new Uint8Array(32)) }, 'chunk 2 of weights.bin has a block-tree root, but at 100 bytes it is one block of 16384, verified by its id'],
    ['a multi-block chunk without its root', (raw: Parameters<Parameters<typeof forged>[0]>[0]) => { raw.files[0]!.chunks[1]!.pop() }, 'chunk 1 of weights.bin has 2 blocks of 16384 bytes but no block-tree root'],
    ['a block size that is not a power of two', (raw: Parameters<Parameters<typeof forged>[0]>[0]) => { raw.blockSize = 20_000 }, 'manifest is invalid at blockSize: 20000 is not a power of two from 16384 to 4194304 bytes'],
    ['a block size below 16 KiB', (raw: Parameters<Parameters<typeof forged>[0]>[0]) => { raw.blockSize = 8 * KiB }, 'manifest is invalid at blockSize: 8192 is not a power of two from 16384 to 4194304 bytes'],
    ['a block size above 4 MiB', (raw: Parameters<Parameters<typeof forged>[0]>[0]) => { raw.blockSize = 8 * 1024 * KiB }, 'manifest is invalid at blockSize: 8388608 is not a power of two from 16384 to 4194304 bytes'],
    ['a block size that is not a number', (raw: Parameters<Parameters<typeof forged>[0]>[0]) => { raw.blockSize = '16384' }, 'manifest is invalid at blockSize: string is not a power of two'],
    ['a schema-2 manifest without a block size', (raw: Parameters<Parameters<typeof forged>[0]>[0]) => { delete raw.blockSize }, 'manifest is invalid at blockSize: a schema-2 manifest declares its block size'],
    ['a schema-1 manifest with a block size', (raw: Parameters<Parameters<typeof forged>[0]>[0]) => { raw.schema = 1 }, 'manifest is invalid at blockSize: a schema-1 manifest has no block size'],
    ['a schema-1 manifest with roots', (raw: Parameters<Parameters<typeof forged>[0]>[0]) => { raw.schema = 1; delete raw.blockSize }, 'chunk 0 of weights.bin has a block-tree root, but every chunk of this manifest is one block, verified by its id'],
    ['a chunk entry of four elements', (raw: Parameters<Parameters<typeof forged>[0]>[0]) => { raw.files[0]!.chunks[0]!.push(1) }, 'chunk 0 of weights.bin is not an [id, size] pair or an [id, size, root] triple'],
    ['an unknown schema', (raw: Parameters<Parameters<typeof forged>[0]>[0]) => { raw.schema = 3 }, 'manifest is invalid at schema']
  ])('refuses %s, saying what is wrong (MalformedDataError)', (_what, mutate, message) => {
    const bytes = forged(mutate)
    expect(() => decodeManifest(bytes)).toThrow(expect.objectContaining({ name: 'MalformedDataError', message: expect.stringContaining(message) }))
  })

  it('refuses one chunk id listed with two roots, naming the chunk, both roots and the files', () => {
    const bytes = seededBytes(40 * KiB, 9)
    const good = chunkRefOf(bytes, 16 * KiB)
    const foreign = { ...good, root: new Uint8Array(32).fill(0xab) }
    const m = blockManifest()
    m.files = [
      { path: 'a.bin', size: good.size, digest: fileDigest([good]), format: 'other', chunks: [good] },
      { path: 'b.bin', size: good.size, digest: fileDigest([foreign]), format: 'other', chunks: [foreign] }
    ]
    const message = `chunk ${good.id} is listed with two block-tree roots, ${Buffer.from(good.root!).toString('hex')} (in a.bin) and ${'ab'.repeat(32)} (in b.bin)`
    expect(() => encodeManifest(m)).toThrow(message)
    const raw = encodeBlock(toCbor(m))
    expect(() => decodeManifest(raw.bytes, raw.cid)).toThrow(expect.objectContaining({ name: 'MalformedDataError', message: expect.stringContaining(message) }))
  })

  it('new manifests are schema 2: encodeManifest refuses schema 1, which only encodeSchema1Manifest writes', () => {
    const old = { ...sampleManifest(), schema: 1 as const, blockSize: undefined }
    expect(() => encodeManifest(old)).toThrow(expect.objectContaining({ name: 'InvalidInputError', message: 'new manifests are written in schema 2, not 1' }))
    expect(() => encodeSchema1Manifest(sampleManifest())).toThrow(expect.objectContaining({ name: 'InvalidInputError' }))
    expect(decodeManifest(encodeSchema1Manifest(old).bytes).schema).toBe(1)
  })

  it('schema 1 still decodes, with the same version id as before block trees, as one block per chunk', () => {
    // Built and encoded by the build before schema 2; its id must not change.
    const pieces = [Buffer.from('header'), Buffer.alloc(5000, 1), Buffer.alloc(70_000, 2)]
    const chunks = pieces.map(b => ({ id: chunkIdOf(b), size: b.length }))
    const old: Manifest = {
      schema: 1, name: 'org/old', created: 1_780_000_000_000, parent: null,
      files: [{ path: 'weights.bin', size: 75006, digest: fileDigest(chunks), format: 'other', chunks }],
      metadata: { description: 'made before block trees' },
      structure: { formats: ['other'], parameterCount: 0, dtypes: [], tensorCount: 0, totalSize: 75006 }
    }
    const { bytes, id } = encodeSchema1Manifest(old)
    expect(id).toBe('bafyreifhzhc2jwzlk47yfaw47bhyz4nkf4rjhuo4utw724h26sqw567il4')
    expect(bytes).toHaveLength(430)
    const back = decodeManifest(bytes, id)
    expect(back).toEqual(old)
    expect(blockSizeOf(back)).toBe(MAX_CHUNK_SIZE)
    for (const c of back.files[0]!.chunks) {
      expect(chunkRootOf(c)).toBeUndefined()
      expect(blockCount(c.size, blockSizeOf(back))).toBe(1)
    }
  })

  it('a 1 TiB model at the default block size fits the byte cap and the chunk limit', () => {
    // 262,144 chunks of 4 MiB, each with a root, in 64 files of 16 GiB with 31 tensor records each:
    // one file is encoded, and the manifest is 64 of them (the rest is a few hundred bytes).
    const root = new Uint8Array(32).fill(7)
    const digests = seededBytes(32 * 4096, 11)
    const chunks = Array.from({ length: 4096 }, (_, i) => [CID.create(1, RAW_CODEC, Digest.create(0x12, digests.subarray(32 * i, 32 * i + 32))), MAX_CHUNK_SIZE, root])
    const tensors = Array.from({ length: 31 }, (_, t) => ({ name: `model.layers.10.mlp.experts.${t}.down_proj.weight`, dtype: 'BF16', shape: [7168, 2048], offset: t * 29_360_128, length: 29_360_128 }))
    const file = { path: 'model-00010-of-00064.safetensors', size: 4096 * MAX_CHUNK_SIZE, digest: CID.parse(fileDigest([])), format: 'safetensors', chunks, structure: { headerLength: 1, tensors, parameterCount: 1, dtypes: ['BF16'], metadata: {} } }
    const perFile = dagCbor.encode(file).byteLength
    const rootless = dagCbor.encode({ ...file, chunks: chunks.map(c => c.slice(0, 2)) }).byteLength
    // A root adds 34 bytes to an entry of about 47.
    expect((perFile - rootless) / 4096).toBe(34)
    expect(64 * 4096).toBeLessThan(500_000)
    expect(64 * perFile + dagCbor.encode(sampleManifest()).byteLength).toBeLessThan(MAX_MANIFEST_BYTES * 0.7)
  })
})
