import { describe, expect, it } from 'vitest'
import { createHash } from 'node:crypto'
import { blockCount, blockMatches, blockRange, joinHashes, leafHash, proofOf, rootFromProof, rootOf, splitHashes } from '../../../src/core/tree.js'
import { seededBytes } from '../../helpers/random.js'

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')

describe('block trees', () => {
  // RFC 6962's tree as Certificate Transparency's reference implementation tests it: leaves from
  // these eight inputs, and the roots of the first 1..8 of them.
  const inputs = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'].map(h => Buffer.from(h, 'hex'))
  const roots = [
    '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
    'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
    'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
    'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
    '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
    '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
    'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
    '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328'
  ]

  it('gives the RFC 6962 reference roots', () => {
    const leaves = inputs.map(b => leafHash(b))
    for (let n = 1; n <= 8; n++) expect(hex(rootOf(leaves.slice(0, n))), `size ${n}`).toBe(roots[n - 1])
  })

  it('the leaf hash is sha256 of 0x00 and the block, so a one-block tree is not the plain sha256', () => {
    const block = seededBytes(1000, 1)
    expect(hex(leafHash(block))).toBe(createHash('sha256').update(Buffer.concat([Buffer.of(0), block])).digest('hex'))
    expect(hex(leafHash([block.subarray(0, 10), block.subarray(10)]))).toBe(hex(leafHash(block)))
  })

  it('every leaf of trees of 1..70 leaves folds with its proof to the root, and no other leaf or position does', () => {
    for (let n = 1; n <= 70; n++) {
      const leaves = Array.from({ length: n }, (_, i) => leafHash(seededBytes(8, n * 1000 + i)))
      const root = rootOf(leaves)
      for (let i = 0; i < n; i++) {
        const proof = proofOf(leaves, i)
        expect(proof.length).toBeLessThanOrEqual(Math.ceil(Math.log2(n)))
        expect(hex(rootFromProof(leaves[i]!, i, n, proof)!), `leaf ${i} of ${n}`).toBe(hex(root))
        if (n > 1) {
          const other = (i + 1) % n
          expect(rootFromProof(leaves[other]!, i, n, proof)).not.toEqual(root)
          const moved = rootFromProof(leaves[i]!, other, n, proof)
          if (moved !== undefined) expect(hex(moved)).not.toBe(hex(root))
        }
      }
    }
  })

  it('refuses a proof of the wrong length, a hash of the wrong size, or a position outside the tree', () => {
    const leaves = Array.from({ length: 16 }, (_, i) => leafHash(seededBytes(8, i)))
    const proof = proofOf(leaves, 5)
    expect(rootFromProof(leaves[5]!, 5, 16, proof.slice(1))).toBeUndefined()
    expect(rootFromProof(leaves[5]!, 5, 16, [...proof, proof[0]!])).toBeUndefined()
    expect(rootFromProof(leaves[5]!, 5, 16, [proof[0]!.subarray(1), ...proof.slice(1)])).toBeUndefined()
    expect(rootFromProof(leaves[5]!, 16, 16, proof)).toBeUndefined()
    expect(rootFromProof(leaves[5]!, -1, 16, proof)).toBeUndefined()
    expect(() => proofOf(leaves, 16)).toThrow(/leaf 16 is outside a tree of 16/)
  })

  it('blockMatches accepts the block and refuses one flipped bit in it or in its proof', () => {
    const chunk = seededBytes(4 * 65536 + 100, 7)
    const bs = 65536
    const n = blockCount(chunk.byteLength, bs)
    expect(n).toBe(5)
    const blocks = Array.from({ length: n }, (_, i) => { const [o, l] = blockRange(chunk.byteLength, bs, i); return chunk.subarray(o, o + l) })
    expect(blocks[4]!.byteLength).toBe(100)
    const leaves = blocks.map(b => leafHash(b))
    const root = rootOf(leaves)
    for (let i = 0; i < n; i++) {
      const proof = proofOf(leaves, i)
      expect(blockMatches(blocks[i]!, i, n, proof, root)).toBe(true)
      const bad = Uint8Array.from(blocks[i]!)
      bad[bad.length >> 1]! ^= 1
      expect(blockMatches(bad, i, n, proof, root)).toBe(false)
      const wire = joinHashes(proof)
      expect(splitHashes(wire).map(hex)).toEqual(proof.map(hex))
      if (wire.byteLength > 0) {
        wire[0]! ^= 0x80
        expect(blockMatches(blocks[i]!, i, n, splitHashes(wire), root)).toBe(false)
      }
    }
    expect(() => splitHashes(new Uint8Array(33))).toThrow(/33 bytes are not a whole number of 32-byte hashes/)
  })
})
