import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import * as dagCbor from '@ipld/dag-cbor'
import { encode as cborEncode } from 'cborg'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { chunkIdOf, encodeBlock, fileDigest, RAW_CODEC } from '../../../src/core/digest.js'
import { cidText, decodeManifest, encodeManifest, type Manifest } from '../../../src/core/manifest.js'

function sampleManifest (): Manifest {
  const chunks = [Buffer.from('header'), Buffer.from('tensor-a'), Buffer.from('tensor-b')].map(b => ({ id: chunkIdOf(b), size: b.length }))
  return {
    schema: 1,
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
  return { ...m, files: m.files.map(f => ({ ...f, chunks: f.chunks.map(c => [CID.parse(c.id), c.size]) })) }
}
