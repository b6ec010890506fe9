import { describe, expect, it } from 'vitest'
import * as dagCbor from '@ipld/dag-cbor'
import { chunkIdOf, fileDigest } from '../../../src/core/digest.js'
import { decodeManifest, encodeManifest, type Manifest } from '../../../src/core/manifest.js'

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
})
