import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import { pathToFileURL } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { blockRange, joinHashes, leafHash, proofOf, rootOf } from '../../../src/core/tree.js'
import { HashPool } from '../../../src/store/hash-pool.js'
import { checkLayer, LeafHasher, LeafLayer, leavesKey, splitLeavesKey } from '../../../src/store/leaves.js'
import { sameBytes, seededBytes } from '../../helpers/random.js'

const KiB = 1024

/** The leaf hashes of `bytes` cut at `blockSize`, by `leafHash` of core/tree.ts. */
function reference (bytes: Uint8Array, blockSize: number): Uint8Array[] {
  const out: Uint8Array[] = []
  for (let i = 0; i * blockSize < bytes.byteLength; i++) {
    const [at, n] = blockRange(bytes.byteLength, blockSize, i)
    out.push(leafHash(bytes.subarray(at, at + n)))
  }
  return out
}

function shared (bytes: Uint8Array): Uint8Array {
  const view = new Uint8Array(new SharedArrayBuffer(bytes.byteLength + 10), 5, bytes.byteLength)
  view.set(bytes)
  return view
}

describe('leaf layers', () => {
  const pool = new HashPool(1)
  afterAll(async () => { await pool.close() })

  it('LeafLayer gives proofOf\'s audit path and rootOf\'s root for every leaf of trees of 1..70 leaves and of 256 (a chunk of the smallest blocks)', () => {
    for (const n of [...Array.from({ length: 70 }, (_, i) => i + 1), 256]) {
      const leaves = Array.from({ length: n }, (_, i) => leafHash(seededBytes(4, n * 1000 + i)))
      const layer = new LeafLayer(joinHashes(leaves))
      expect(sameBytes(layer.root, rootOf(leaves)), `root of ${n}`).toBe(true)
      for (let i = 0; i < n; i++) expect(sameBytes(layer.proof(i), joinHashes(proofOf(leaves, i))), `proof ${i} of ${n}`).toBe(true)
      // 2n − 1 nodes in all: the leaves and n − 1 inner nodes.
      expect(layer.bytes).toBe((2 * n - 1) * 32)
    }
  })

  it('LeafLayer refuses a block outside it, saying so', () => {
    const layer = new LeafLayer(joinHashes([leafHash(Uint8Array.of(1)), leafHash(Uint8Array.of(2))]))
    expect(() => layer.proof(2)).toThrow(expect.objectContaining({ name: 'InvalidInputError', message: 'block 2 is outside a chunk of 2 blocks' }))
  })

  it('LeafHasher gives leafHash of each block whatever pieces the bytes come in, and nothing for one block', () => {
    const bytes = seededBytes(5 * 16 * KiB + 123, 1)
    const expected = joinHashes(reference(bytes, 16 * KiB))
    for (const piece of [1, 1000, 16 * KiB, 16 * KiB + 1, 70_000, bytes.byteLength]) {
      const hasher = new LeafHasher(16 * KiB)
      for (let at = 0; at < bytes.byteLength; at += piece) hasher.update(bytes.subarray(at, at + piece))
      expect(sameBytes(hasher.finish(), expected), `pieces of ${piece}`).toBe(true)
      // It starts over: the next chunk is one block.
      hasher.update(bytes.subarray(0, 16 * KiB))
      expect(hasher.finish()).toBeUndefined()
    }
    const exact = new LeafHasher(16 * KiB)
    exact.update(bytes.subarray(0, 32 * KiB))
    expect(sameBytes(exact.finish(), joinHashes(reference(bytes.subarray(0, 32 * KiB), 16 * KiB)))).toBe(true)
  })

  it('the hash workers compute the chunk\'s sha2-256 and leafHash of its blocks in one task', async () => {
    for (const size of [100, 16 * KiB, 16 * KiB + 1, 3 * 16 * KiB, 4 * 1024 * KiB]) {
      const bytes = seededBytes(size, size)
      const got = await pool.hashChunk(shared(bytes), 16 * KiB)
      expect(sameBytes(got.digest, await pool.sha256(shared(bytes)))).toBe(true)
      if (size <= 16 * KiB) expect(got.leaves).toBeUndefined()
      else expect(sameBytes(got.leaves, joinHashes(reference(bytes, 16 * KiB))), `size ${size}`).toBe(true)
    }
    expect((await pool.hashChunk(shared(seededBytes(40_000, 3)), 0)).leaves).toBeUndefined()
  })

  it('the hash workers give leafHash of one received block, of any size, for the pull to fold with its proof', async () => {
    for (const size of [0, 1, 100, 16 * KiB, 256 * KiB + 7]) {
      const bytes = seededBytes(size, size + 1)
      expect(sameBytes(await pool.leaf(shared(bytes)), leafHash(bytes)), `size ${size}`).toBe(true)
    }
    await expect(pool.leaf(seededBytes(10, 1))).rejects.toThrow('HashPool hashes shared memory only')
  })

  it('keys name the chunk and the block size; checkLayer refuses layers of the wrong shape, saying what is wrong', () => {
    expect(splitLeavesKey(leavesKey('bafkreiabc', 262144))).toEqual(['bafkreiabc', 262144])
    expect(splitLeavesKey('junk')).toBeUndefined()
    const two = new Uint8Array(64)
    expect(checkLayer('c', 16 * KiB, two, 20_000)).toBe(two)
    expect(() => checkLayer('c', 20_000, two)).toThrow('block size 20000 is not a power of two from 16384 to 4194304 bytes')
    expect(() => checkLayer('c', 16 * KiB, new Uint8Array(32))).toThrow('the leaf layer of chunk c is 32 bytes: a layer is 2 to 256 hashes of 32 bytes (a one-block chunk has none)')
    expect(() => checkLayer('c', 16 * KiB, new Uint8Array(70))).toThrow(expect.objectContaining({ name: 'InvalidInputError' }))
    expect(() => checkLayer('c', 16 * KiB, two, 40_000)).toThrow('the leaf layer of chunk c has 2 leaves, but the chunk has 3 blocks of 16384 bytes')
  })
})

describe('HashPool and the process lifetime', () => {
  /** Runs `code` (an ES module importing the pool) in a fresh Node process; its exit code and output. */
  const run = (code: string): { status: number | null, stdout: string, stderr?: string } => {
    const dir = mkdtempSync(join(tmpdir(), 'shoal-hash-pool-'))
    try {
      const file = join(dir, 'script.mts')
      writeFileSync(file, code)
      const r = spawnSync(process.execPath, ['--import', 'tsx', file], { cwd: process.cwd(), encoding: 'utf8', timeout: 60_000 })
      return { status: r.status, stdout: r.stdout, ...(r.status !== 0 ? { stderr: r.stderr.slice(0, 2000) } : {}) }
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  }
  const pool = `import { HashPool } from ${JSON.stringify(pathToFileURL('src/store/hash-pool.ts').href)}`

  it('a hash in hand keeps the process alive until it is done (a script awaiting it is not dropped); an idle pool does not', () => {
    const hashing = run(`${pool}\nconst p = new HashPool(1)\nconst d = await p.sha256(new Uint8Array(new SharedArrayBuffer(64)))\nconsole.log(Buffer.from(d).toString('hex'))`)
    expect(hashing).toEqual({ status: 0, stdout: `${createHash('sha256').update(new Uint8Array(64)).digest('hex')}\n` })
    // Never closed, and nothing else to do: the process ends on its own.
    expect(run(`${pool}\nconst p = new HashPool(2)\nawait p.sha256(new Uint8Array(new SharedArrayBuffer(8)))\nconsole.log('idle')`)).toEqual({ status: 0, stdout: 'idle\n' })
  })
})
