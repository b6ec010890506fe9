import { describe, expect, it } from 'vitest'
import { createHash } from 'node:crypto'
import { CID } from 'multiformats/cid'
import { ChunkHasher, chunkIdOf, chunkMatches, fileDigest, isCid, parseCid, RAW_CODEC, SHA2_256 } from '../../../src/core/digest.js'

describe('content ids', () => {
  it('names chunks by a raw CIDv1 over sha2-256 of their bytes', () => {
    const bytes = Buffer.from('hello shoal')
    const id = chunkIdOf(bytes)
    const cid = CID.parse(id)
    expect(cid.version).toBe(1)
    expect(cid.code).toBe(RAW_CODEC)
    expect(cid.multihash.code).toBe(SHA2_256)
    expect(Buffer.from(cid.multihash.digest).equals(createHash('sha256').update(bytes).digest())).toBe(true)
    expect(id.startsWith('bafkrei')).toBe(true)
  })

  it('hashes incrementally the same as at once, and resets after each digest', () => {
    const h = new ChunkHasher()
    h.update(Buffer.from('hello '))
    h.update(Buffer.from('shoal'))
    expect(h.digest()).toBe(chunkIdOf(Buffer.from('hello shoal')))
    h.update(Buffer.from('x'))
    expect(h.digest()).toBe(chunkIdOf(Buffer.from('x')))
  })

  it('verifies chunks against their id and refuses others', () => {
    const bytes = Buffer.from('payload')
    const id = chunkIdOf(bytes)
    expect(chunkMatches(bytes, id)).toBe(true)
    expect(chunkMatches(Buffer.from('payloaD'), id)).toBe(false)
  })

  it('file digest depends on chunk ids, sizes and order', () => {
    const a = { id: chunkIdOf(Buffer.from('a')), size: 1 }
    const b = { id: chunkIdOf(Buffer.from('b')), size: 1 }
    expect(fileDigest([a, b])).toBe(fileDigest([a, b]))
    expect(fileDigest([a, b])).not.toBe(fileDigest([b, a]))
    expect(fileDigest([a])).not.toBe(fileDigest([{ ...a, size: 2 }]))
    expect(fileDigest([]).startsWith('bafyrei')).toBe(true)
  })

  it('refuses malformed ids and unsupported hashes with InvalidInputError', () => {
    expect(() => parseCid('not-a-cid')).toThrow(expect.objectContaining({ name: 'InvalidInputError' }))
    // identity multihash (0x00): valid CID, but not a hash this build verifies
    const identity = CID.createV1(RAW_CODEC, { code: 0x00, size: 1, digest: new Uint8Array([1]), bytes: new Uint8Array([0, 1, 1]) })
    expect(() => parseCid(identity.toString())).toThrow(/cannot verify/)
    expect(isCid('bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku')).toBe(true)
    expect(isCid('prod')).toBe(false)
  })
})
