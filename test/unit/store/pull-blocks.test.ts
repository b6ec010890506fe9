/**
 * A pull's blocks (manifest schema 2): each block verified on its own against its chunk's tree
 * root before it is kept, served (cut-through) or counted; a chunk whose blocks are all here is
 * written like any whole chunk, and its leaf layer reaches the index with its location.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { ChunkId } from '../../../src/core/digest.js'
import { blockSizeOf, chunkRootOf, type ChunkRef } from '../../../src/core/manifest.js'
import { blockCount, blockMatches, splitHashes } from '../../../src/core/tree.js'
import { addPath } from '../../../src/ingest/ingest.js'
import type { Db } from '../../../src/store/index-db.js'
import { leavesKey } from '../../../src/store/leaves.js'
import { PullTarget } from '../../../src/store/pull-target.js'
import type { ResolvedVersion, Store } from '../../../src/store/store.js'
import { writeSafetensors, type SynthTensor } from '../../../scripts/lib/synth.js'
import { sameBytes } from '../../helpers/random.js'
import { memoryStore, tempDir } from '../../helpers/tmp.js'
import { internals } from '../../helpers/store-internals.js'

describe('PullTarget blocks', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let source: Store
  let dest: Store
  let destDb: Db
  let v: ResolvedVersion
  let manifestBytes: Uint8Array
  let blockSize: number
  /** The chunks of more than one block, with their entries. */
  let multi: ChunkRef[]
  const targets: PullTarget[] = []

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir())
    ;({ store: source } = await memoryStore(join(dir, 'source')))
    ;({ store: dest, db: destDb } = await memoryStore(join(dir, 'dest')))
    await mkdir(join(dir, 'model'))
    // Two tensors of 1 MiB and one that is not a whole number of blocks: chunks of several blocks, the last one short.
    const tensors: SynthTensor[] = [
      { name: 'a', dtype: 'BF16', shape: [512, 1024], seed: 'a' },
      { name: 'b', dtype: 'BF16', shape: [512, 1024], seed: 'b' },
      { name: 'c', dtype: 'F32', shape: [100_000], seed: 'c' }
    ]
    await writeSafetensors(join(dir, 'model', 'model.safetensors'), tensors)
    await writeFile(join(dir, 'model', 'config.json'), '{}')
    v = await addPath(source, join(dir, 'model'), { name: 'blocks' })
    manifestBytes = (await source.heads.manifest(v.version))!
    blockSize = blockSizeOf(v.manifest)
    multi = v.manifest.files.flatMap(f => f.chunks).filter(c => blockCount(c.size, blockSize) > 1)
  })

  afterEach(async () => {
    for (const target of targets.splice(0)) await target.close()
    await source.close().catch(() => {})
    await dest.close().catch(() => {})
    await cleanup()
  })

  const open = async (): Promise<PullTarget> => {
    const target = await PullTarget.open(dest, v.version, manifestBytes)
    targets.push(target)
    return target
  }

  /** Block `index` of `id` as the source serves it: bytes and joined proof. */
  const blockOf = async (id: ChunkId, index: number): Promise<{ data: Uint8Array, proof: Uint8Array }> => {
    const span = await source.readSpan(id, blockSize, index, 1)
    if (span === undefined) throw new Error(`source lacks ${id}`)
    return { data: Uint8Array.from(span.data), proof: span.proofs[0]! }
  }

  it('has chunks of several blocks to test with (schema 2)', () => {
    expect(v.manifest.schema).toBe(2)
    expect(multi.length).toBeGreaterThanOrEqual(2)
    expect(multi.some(c => c.size % blockSize !== 0)).toBe(true)
  })

  it('takes blocks in any order, serves each verified one before the chunk is whole, and completes byte-identical', async () => {
    const target = await open()
    const backlogAtCheck: number[] = []
    const chunkMatches = dest.chunkMatches.bind(dest)
    vi.spyOn(dest, 'chunkMatches').mockImplementation(async (bytes, id) => {
      backlogAtCheck.push(target.writeBacklogBytes)
      return await chunkMatches(bytes, id)
    })
    const announced: Array<{ chunk: number, first: number, count: number }> = []
    target.on('blocks', ranges => { announced.push(...ranges) })
    for (const c of multi) {
      const n = blockCount(c.size, blockSize)
      const order = Array.from({ length: n }, (_, i) => (i * 7 + 3) % n)
      expect(new Set(order).size).toBe(n)
      for (const [k, index] of order.entries()) {
        const b = await blockOf(c.id, index)
        expect(await target.putBlock(c.id, index, b.data, b.proof)).toBe(true)
        if (k === n - 1) {
          // The whole chunk counted as waiting to be written while it was hashed and written, no longer.
          expect(backlogAtCheck.at(-1)).toBe(c.size)
          expect(target.writeBacklogBytes).toBe(0)
          break
        }
        // Not whole yet: the verified block is served with a proof that checks against the root.
        expect(target.isAssembling(c.id)).toBe(true)
        const served = target.readBlocks(c.id, index, 1)!
        expect(sameBytes(served.data, b.data)).toBe(true)
        expect(blockMatches(served.data, index, n, splitHashes(served.proofs[0]!), chunkRootOf(c)!)).toBe(true)
        // A block not yet here is not served.
        expect(target.readBlocks(c.id, order[k + 1]!, 1)).toBeUndefined()
      }
      expect(target.isAssembling(c.id)).toBe(false)
    }
    expect(announced.length).toBeGreaterThan(0)
    for (const id of target.needed()) {
      const bytes = await source.readChunk(id)
      expect(await target.put(id, bytes!)).toBe(true)
    }
    const resolved = await target.completed()
    for (const f of v.manifest.files) expect(sameBytes(await readFile(join(resolved.path, f.path)), await readFile(join(v.path, f.path)))).toBe(true)
  })

  it('refuses a block that does not match its proof or the root, keeps the good ones, and takes the right block after', async () => {
    const target = await open()
    const c = multi[0]!
    const n = blockCount(c.size, blockSize)
    const good = await blockOf(c.id, 0)
    expect(await target.putBlock(c.id, 0, good.data, good.proof)).toBe(true)
    const one = await blockOf(c.id, 1)
    const flipped = Uint8Array.from(one.data)
    flipped[100]! ^= 1
    await expect(target.putBlock(c.id, 1, flipped, one.proof)).rejects.toMatchObject({ name: 'DigestMismatchError', message: `block 1 of chunk ${c.id} does not match the chunk's tree` })
    // The proof of another block: refused too.
    await expect(target.putBlock(c.id, 1, one.data, good.proof)).rejects.toMatchObject({ name: 'DigestMismatchError' })
    await expect(target.putBlock(c.id, n, one.data, one.proof)).rejects.toMatchObject({ name: 'DigestMismatchError', message: `block ${n} of chunk ${c.id} does not exist (it has ${n})` })
    expect(target.readBlocks(c.id, 1, 1)).toBeUndefined()
    expect(target.readBlocks(c.id, 0, 1)).toBeDefined()
    for (let i = 1; i < n; i++) {
      const b = await blockOf(c.id, i)
      expect(await target.putBlock(c.id, i, b.data, b.proof)).toBe(true)
    }
    expect(target.isAssembling(c.id)).toBe(false)
    expect(target.needed()).not.toContain(c.id)
  })

  it('records the leaf layer of each assembled chunk with its location, so serving it needs no second pass', async () => {
    const target = await open()
    const c = multi[0]!
    const n = blockCount(c.size, blockSize)
    for (let i = 0; i < n; i++) {
      const b = await blockOf(c.id, i)
      await target.putBlock(c.id, i, b.data, b.proof)
    }
    expect(target.leavesOf(c.id)).toHaveLength(n)
    await target.flush()
    expect(target.leavesOf(c.id)).toBeUndefined()
    const stored = await internals(dest).index.leaves.get(leavesKey(c.id, blockSize))
    expect(stored?.byteLength).toBe(n * 32)
    const span = await dest.readSpan(c.id, blockSize, 0, n)
    expect(span).toBeDefined()
    for (let i = 0; i < n; i++) {
      const data = span!.data.subarray(i * blockSize, Math.min(c.size, (i + 1) * blockSize))
      expect(blockMatches(data, i, n, splitHashes(span!.proofs[i]!), chunkRootOf(c)!)).toBe(true)
    }
  })

  it('resumes after a restart: chunks assembled from blocks and flushed are kept, only the rest is needed', async () => {
    const first = await open()
    const needed = first.needed()
    for (const c of multi) {
      for (let i = 0; i < blockCount(c.size, blockSize); i++) {
        const b = await blockOf(c.id, i)
        await first.putBlock(c.id, i, b.data, b.proof)
      }
    }
    await first.flush()
    await first.close()
    await dest.close()
    ;({ store: dest } = await memoryStore(join(dir, 'dest'), destDb))
    const again = await open()
    const ids = new Set(multi.map(c => c.id))
    expect(new Set(again.needed())).toEqual(new Set(needed.filter(id => !ids.has(id))))
  })
})
