/**
 * `LocalChunkSource`: what the node serves on the chunk protocol, from real stores (in-memory
 * index, real files) and a real `PullTarget` standing for a running pull.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { ChunkId, VersionId } from '../../../src/core/digest.js'
import { blockSizeOf, chunkRootOf, type ChunkRef } from '../../../src/core/manifest.js'
import { blockCount, blockMatches, splitHashes } from '../../../src/core/tree.js'
import { LocalChunkSource, type RunningPulls } from '../../../src/daemon/chunk-source.js'
import { addPath } from '../../../src/ingest/ingest.js'
import type { HaveUpdate } from '../../../src/protocol/chunks/index.js'
import { PullTarget } from '../../../src/store/pull-target.js'
import type { ResolvedVersion, Store } from '../../../src/store/store.js'
import { writeSafetensors } from '../../../scripts/lib/synth.js'
import { sameBytes } from '../../helpers/random.js'
import { memoryStore, tempDir } from '../../helpers/tmp.js'

/** The running pulls of a test: targets put here by hand, told to the source as they open. */
class Pulls implements RunningPulls {
  readonly running = new Map<string, PullTarget>()
  private readonly listeners: Array<(target: PullTarget) => void> = []
  targets (): Iterable<PullTarget> { return this.running.values() }
  target (version: VersionId): PullTarget | undefined { return this.running.get(version) }
  onOpened (listener: (target: PullTarget) => void): void { this.listeners.push(listener) }
  open (target: PullTarget): void {
    this.running.set(target.version, target)
    for (const l of this.listeners) l(target)
  }
}

describe('LocalChunkSource', () => {
  let cleanup: () => Promise<void>
  let seed: Store
  let puller: Store
  let v: ResolvedVersion
  let blockSize: number
  let multi: ChunkRef
  let seedSource: LocalChunkSource

  /** Block `index` of `id` as the seed serves it. */
  const blockOf = async (id: ChunkId, index: number): Promise<{ data: Uint8Array, proof: Uint8Array }> => {
    const span = await seedSource.readSpan(id, blockSize, index, 1)
    if (span === undefined) throw new Error(`the seed lacks ${id}`)
    return { data: Uint8Array.from(span.data), proof: span.proofs[0]! }
  }

  beforeAll(async () => {
    let dir: string
    ;({ dir, cleanup } = await tempDir())
    ;({ store: seed } = await memoryStore(join(dir, 'seed')))
    ;({ store: puller } = await memoryStore(join(dir, 'puller')))
    await mkdir(join(dir, 'model'))
    await writeSafetensors(join(dir, 'model', 'model.safetensors'), [
      { name: 'a', dtype: 'BF16', shape: [512, 1024], seed: 'a' },
      { name: 'b', dtype: 'F32', shape: [100_000], seed: 'b' }
    ])
    await writeFile(join(dir, 'model', 'config.json'), '{}')
    v = await addPath(seed, join(dir, 'model'), { name: 'org/served' })
    blockSize = blockSizeOf(v.manifest)
    multi = v.manifest.files.flatMap(f => f.chunks).find(c => blockCount(c.size, blockSize) > 2)!
    seedSource = new LocalChunkSource(seed, new Pulls())
  })

  afterAll(async () => {
    await seed.close().catch(() => {})
    await puller.close().catch(() => {})
    await cleanup()
  })

  it('serves the blocks of a stored chunk with proofs that check against its root, and says the version is complete', async () => {
    const n = blockCount(multi.size, blockSize)
    const span = await seedSource.readSpan(multi.id, blockSize, 1, n - 1)
    expect(span?.proofs).toHaveLength(n - 1)
    for (let i = 1; i < n; i++) {
      const data = span!.data.subarray((i - 1) * blockSize, Math.min(multi.size - blockSize, i * blockSize))
      expect(blockMatches(data, i, n, splitHashes(span!.proofs[i - 1]!), chunkRootOf(multi)!)).toBe(true)
    }
    seedSource.release(span!.data)
    expect(await seedSource.have(v.version)).toEqual({ complete: true })
  })

  it('has nothing of a version it does not know, and no bytes of a chunk it lacks', async () => {
    const source = new LocalChunkSource(puller, new Pulls())
    expect(await source.have(v.version)).toBeUndefined()
    expect(await source.readSpan(multi.id, blockSize, 0, 1)).toBeUndefined()
  })

  it('refuses a span outside the chunk and a block size no manifest may declare, saying why', async () => {
    const n = blockCount(multi.size, blockSize)
    await expect(seedSource.readSpan(multi.id, blockSize, n - 1, 2)).rejects.toMatchObject({
      name: 'InvalidInputError',
      message: `blocks ${n - 1} to ${n} of chunk ${multi.id} are outside it: at ${multi.size} bytes it has ${n} blocks of ${blockSize}`
    })
    await expect(seedSource.readSpan(multi.id, 1000, 0, 1)).rejects.toMatchObject({ name: 'InvalidInputError', message: expect.stringContaining('1000') })
  })

  it('serves a running pull as it arrives: its bitfield and verified blocks, each block the moment it is verified, then the whole chunk', async () => {
    const pulls = new Pulls()
    const source = new LocalChunkSource(puller, pulls)
    const updates: HaveUpdate[] = []
    const unwatch = source.watch(v.version, u => { updates.push(u) })
    const target = await PullTarget.open(puller, v.version, (await seed.heads.manifest(v.version))!)
    try {
      pulls.open(target)
      const n = blockCount(multi.size, blockSize)
      const first = await blockOf(multi.id, 0)
      expect(await target.putBlock(multi.id, 0, first.data, first.proof)).toBe(true)
      // Cut-through: block 0 is served with its proof before the chunk is whole; block 1 is not here yet.
      const served = await source.readSpan(multi.id, blockSize, 0, 1)
      expect(sameBytes(served!.data, first.data)).toBe(true)
      expect(blockMatches(served!.data, 0, n, splitHashes(served!.proofs[0]!), chunkRootOf(multi)!)).toBe(true)
      expect(await source.readSpan(multi.id, blockSize, 1, 1)).toBeUndefined()
      const partial = await source.have(v.version)
      expect(partial).toMatchObject({ complete: false })
      expect(partial?.complete === false ? partial.ranges.length : 0).toBeGreaterThan(0)
      expect(updates.flatMap(u => u.ranges).some(r => r.first === 0 && r.count >= 1)).toBe(true)
      for (let i = 1; i < n; i++) {
        const b = await blockOf(multi.id, i)
        await target.putBlock(multi.id, i, b.data, b.proof)
      }
      // Whole now: served from the pull's fresh copy with the leaf layer it built.
      const whole = await source.readSpan(multi.id, blockSize, n - 1, 1)
      expect(blockMatches(whole!.data, n - 1, n, splitHashes(whole!.proofs[0]!), chunkRootOf(multi)!)).toBe(true)
      // Only that block was read, into a buffer of its size, not the whole chunk.
      expect(whole!.data.buffer.byteLength).toBeLessThan(multi.size)
      expect(await source.readSpan(multi.id, blockSize, n - 1, 2)).toBeUndefined()
      source.release(whole!.data)
      expect(updates.some(u => u.chunks.length > 0)).toBe(true)
      // A watcher that left hears nothing more.
      unwatch()
      const heard = updates.length
      const other = v.manifest.files.flatMap(f => f.chunks).find(c => c.id !== multi.id && target.isMissing(c.id))!
      expect(await target.put(other.id, (await seed.readChunk(other.id))!)).toBe(true)
      expect(updates).toHaveLength(heard)
    } finally {
      await target.close()
    }
  })
})
