/**
 * The store's side of blocks: `add` records leaf layers whose roots are the manifest's, `readSpan`
 * serves blocks with proofs that verify against those roots (from the cache, the index, or
 * computed from the chunk once), `verify` repairs a wrong layer and `gc` drops unused ones.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { MemoryLevel } from 'memory-level'
import { MAX_CHUNK_SIZE } from '../../../src/core/chunking.js'
import { chunkMatches, type ChunkId } from '../../../src/core/digest.js'
import { chunkRefOf, DEFAULT_BLOCK_SIZE, type ChunkRef, type Manifest } from '../../../src/core/manifest.js'
import { blockCount, blockMatches, blockRange, splitHashes } from '../../../src/core/tree.js'
import { addPath } from '../../../src/ingest/ingest.js'
import { BlobWriter } from '../../../src/store/blob-writer.js'
import { collectGarbage } from '../../../src/store/gc.js'
import { HashPool } from '../../../src/store/hash-pool.js'
import type { Db } from '../../../src/store/index-db.js'
import { layerRoot, leavesKey } from '../../../src/store/leaves.js'
import { Store } from '../../../src/store/store.js'
import { verifyStore } from '../../../src/store/verify.js'
import { writeSafetensors, type SynthTensor } from '../../../scripts/lib/synth.js'
import { sameBytes, seededBytes } from '../../helpers/random.js'
import { tempDir } from '../../helpers/tmp.js'
import { internals } from '../../helpers/store-internals.js'

const KiB = 1024
const BLOCK = 16 * KiB

/** Tensors whose chunks have 1 block, exactly 1 block, 2 (the last 2 bytes), 3 (short last), 256 and 64 blocks of 16 KiB. */
const TENSORS: SynthTensor[] = [
  { name: 'a', dtype: 'BF16', shape: [5], seed: 'a' },
  { name: 'b', dtype: 'BF16', shape: [8192], seed: 'b' },
  { name: 'c', dtype: 'BF16', shape: [8193], seed: 'c' },
  { name: 'd', dtype: 'BF16', shape: [20482], seed: 'd' },
  { name: 'e', dtype: 'BF16', shape: [2621440], seed: 'e' }
]

interface Chunk { ref: ChunkRef, bytes: Uint8Array }

describe('store: blocks, leaf layers, readSpan', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let db: Db
  let store: Store
  let model: string
  const warnings: string[] = []
  const log = { info () {}, debug () {}, warn (_o: object, msg?: string) { warnings.push(msg ?? '') } }
  const open = async (): Promise<Store> => await Store.open(join(dir, 'home'), { db, log })

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir())
    db = new MemoryLevel() as unknown as Db
    store = await open()
    model = join(dir, 'model')
    await mkdir(model)
    await writeSafetensors(join(model, 'model.safetensors'), TENSORS)
    await writeFile(join(model, 'tokenizer.bin'), seededBytes(700 * KiB, 7))
    warnings.length = 0
  })

  afterEach(async () => {
    vi.restoreAllMocks()
    await store.close().catch(() => {})
    await cleanup()
  })

  /** Every chunk of the version with its bytes, read from the source files. */
  async function chunksOf (manifest: Manifest): Promise<Chunk[]> {
    const out: Chunk[] = []
    for (const f of manifest.files) {
      const bytes = await readFile(join(model, f.path))
      let at = 0
      for (const ref of f.chunks) {
        out.push({ ref, bytes: bytes.subarray(at, at + ref.size) })
        at += ref.size
      }
    }
    return out
  }

  const layerOf = async (id: ChunkId, blockSize = BLOCK): Promise<Uint8Array | undefined> => await internals(store).index.leaves.get(leavesKey(id, blockSize))

  it('add writes schema 2 with roots exactly on multi-block chunks, and records their leaf layers', async () => {
    const v = await addPath(store, model, { name: 'org/blocks', blockSize: BLOCK })
    expect(v.manifest.schema).toBe(2)
    expect(v.manifest.blockSize).toBe(BLOCK)
    const chunks = await chunksOf(v.manifest)
    const sizes = chunks.map(c => blockCount(c.ref.size, BLOCK))
    for (const n of [1, 2, 3, 64, 256]) expect(sizes).toContain(n)
    for (const { ref, bytes } of chunks) {
      // The manifest's entry is what the bytes give, and the recorded layer has that root.
      expect(ref).toEqual(chunkRefOf(bytes, BLOCK))
      const layer = await layerOf(ref.id)
      if (ref.size <= BLOCK) {
        expect(ref.root).toBeUndefined()
        expect(layer).toBeUndefined()
      } else {
        expect(layer?.byteLength).toBe(32 * blockCount(ref.size, BLOCK))
        expect(sameBytes(layerRoot(layer!), ref.root)).toBe(true)
      }
    }
  })

  it('a BlobWriter hashing on the calling thread (chunks split across appends) gives the same ids, roots and layers', async () => {
    const bytes = seededBytes(3 * 1024 * KiB, 5)
    const ends = [10, 16 * KiB, 16 * KiB + 1, 100 * KiB, 2 * 1024 * KiB + 7, bytes.byteLength]
    const writer = await BlobWriter.create(internals(store).layout, undefined, { blockSize: BLOCK })
    // Appends of 50,000 bytes: chunk ends fall inside them, and chunks span several.
    for (let at = 0; at < bytes.byteLength; at += 50_000) {
      const piece = bytes.subarray(at, Math.min(bytes.byteLength, at + 50_000))
      await writer.append(piece, ends.filter(e => e > at && e <= at + piece.byteLength).map(e => e - at))
    }
    const blob = await writer.commit()
    expect(blob.blockSize).toBe(BLOCK)
    let from = 0
    blob.chunks.forEach((c, i) => {
      const chunk = bytes.subarray(from, ends[i])
      from = ends[i]!
      const { id, size, root } = c
      expect({ id, size, root }).toEqual(chunkRefOf(chunk, BLOCK))
      if (root !== undefined) expect(sameBytes(layerRoot(c.leaves!), root)).toBe(true)
      else expect(c.leaves).toBeUndefined()
    })
    expect(blob.chunks).toHaveLength(ends.length)
  })

  it('add at the default block size records layers under it', async () => {
    const v = await addPath(store, model, { name: 'org/blocks' })
    expect(v.manifest.blockSize).toBe(DEFAULT_BLOCK_SIZE)
    const big = (await chunksOf(v.manifest)).filter(c => c.ref.size > DEFAULT_BLOCK_SIZE)
    expect(big.length).toBeGreaterThan(0)
    for (const { ref } of big) expect(sameBytes(layerRoot((await layerOf(ref.id, DEFAULT_BLOCK_SIZE))!), ref.root)).toBe(true)
  })

  it('readSpan returns each block\'s bytes with a proof blockMatches accepts against the manifest\'s root, for chunks of every shape', async () => {
    const v = await addPath(store, model, { name: 'org/blocks', blockSize: BLOCK })
    for (const { ref, bytes } of await chunksOf(v.manifest)) {
      const n = blockCount(ref.size, BLOCK)
      // Whole chunk in one span, and every block on its own.
      const whole = await store.readSpan(ref.id, BLOCK, 0, n)
      expect(sameBytes(whole?.data, bytes)).toBe(true)
      expect(whole?.proofs).toHaveLength(n)
      for (let i = 0; i < n; i++) {
        const [at, length] = blockRange(ref.size, BLOCK, i)
        const block = bytes.subarray(at, at + length)
        const one = await store.readSpan(ref.id, BLOCK, i, 1)
        expect(sameBytes(one?.data, block), `block ${i} of ${n}`).toBe(true)
        expect(sameBytes(one?.proofs[0], whole?.proofs[i])).toBe(true)
        if (n === 1) {
          expect(one?.proofs[0]?.byteLength).toBe(0)
          expect(chunkMatches(one!.data, ref.id)).toBe(true)
        } else {
          expect(blockMatches(one!.data, i, n, splitHashes(one!.proofs[0]!), ref.root!), `block ${i} of ${n}`).toBe(true)
          // Not under another position.
          expect(blockMatches(one!.data, (i + 1) % n, n, splitHashes(one!.proofs[0]!), ref.root!)).toBe(false)
        }
      }
      // A span in the middle.
      if (n >= 3) {
        const mid = await store.readSpan(ref.id, BLOCK, 1, n - 2)
        expect(sameBytes(mid?.data, bytes.subarray(BLOCK, (n - 1) * BLOCK))).toBe(true)
        expect(mid?.proofs).toHaveLength(n - 2)
      }
    }
  })

  it('at schema-1 geometry (one block of MAX_CHUNK_SIZE) a span is the whole chunk with an empty proof, and needs no layer', async () => {
    const v = await addPath(store, model, { name: 'org/blocks', blockSize: BLOCK })
    const spy = vi.spyOn(HashPool.prototype, 'hashChunk')
    for (const { ref, bytes } of await chunksOf(v.manifest)) {
      const span = await store.readSpan(ref.id, MAX_CHUNK_SIZE, 0, 1)
      expect(sameBytes(span?.data, bytes)).toBe(true)
      expect(span?.proofs.map(p => p.byteLength)).toEqual([0])
    }
    expect(spy).not.toHaveBeenCalled()
    expect(await internals(store).index.leaves.get(leavesKey(v.manifest.files[0]!.chunks[0]!.id, MAX_CHUNK_SIZE))).toBeUndefined()
  })

  it('a chunk without a layer (stored before v2, or another block size) gets one computed once from its bytes, then kept', async () => {
    const v = await addPath(store, model, { name: 'org/blocks', blockSize: BLOCK })
    const chunks = (await chunksOf(v.manifest)).filter(c => c.ref.size > 64 * KiB)
    // As a store from before layers: none recorded, and a restart empties the cache.
    const keys = await internals(store).index.leaves.keys().all()
    await internals(store).index.commit(keys.map(key => ({ type: 'del', sublevel: internals(store).index.leaves, key })))
    await store.close()
    store = await open()
    const spy = vi.spyOn(HashPool.prototype, 'hashChunk')
    for (const blockSize of [BLOCK, 64 * KiB]) {
      for (const { ref, bytes } of chunks) {
        const root = chunkRefOf(bytes, blockSize).root!
        const n = blockCount(ref.size, blockSize)
        // Many requests at once for the same missing layer: one computation.
        const spans = await Promise.all(Array.from({ length: 8 }, async (_, i) => await store.readSpan(ref.id, blockSize, i % n, 1)))
        spans.forEach((span, i) => {
          expect(blockMatches(span!.data, i % n, n, splitHashes(span!.proofs[0]!), root)).toBe(true)
        })
        expect(sameBytes(layerRoot((await layerOf(ref.id, blockSize))!), root)).toBe(true)
      }
    }
    expect(spy).toHaveBeenCalledTimes(2 * chunks.length)
    // Recorded: after a restart, served from the index without hashing again.
    await store.close()
    store = await open()
    const again = vi.spyOn(HashPool.prototype, 'hashChunk')
    again.mockClear()
    for (const { ref } of chunks) expect(await store.readSpan(ref.id, BLOCK, 0, 1)).toBeDefined()
    expect(again).not.toHaveBeenCalled()
  })

  it('does not serve, nor record a layer for, a chunk whose stored bytes no longer hash to its id', async () => {
    const v = await addPath(store, model, { name: 'org/blocks', blockSize: BLOCK })
    const file = v.manifest.files.find(f => f.path === 'tokenizer.bin')!
    const first = file.chunks[0]!
    await internals(store).index.commit([{ type: 'del', sublevel: internals(store).index.leaves, key: leavesKey(first.id, BLOCK) }])
    const blob = internals(store).layout.blob(file.digest)
    await chmod(blob, 0o644)
    const bytes = await readFile(blob)
    bytes[10] = bytes[10]! ^ 0xff
    await writeFile(blob, bytes)
    internals(store).reads.forget(blob)
    expect(await store.readSpan(first.id, BLOCK, 0, 1)).toBeUndefined()
    expect(warnings).toContain('stored bytes of a chunk no longer hash to its id; it is not served (run shoal verify)')
    expect(await layerOf(first.id)).toBeUndefined()
  })

  it('pooled spans use the read buffers readChunk uses, handed back with releaseChunk', async () => {
    const v = await addPath(store, model, { name: 'org/blocks', blockSize: BLOCK })
    const { ref, bytes } = (await chunksOf(v.manifest)).find(c => c.ref.size === MAX_CHUNK_SIZE)!
    const a = await store.readSpan(ref.id, BLOCK, 3, 5, { pooled: true })
    expect(sameBytes(a?.data, bytes.subarray(3 * BLOCK, 8 * BLOCK))).toBe(true)
    store.releaseChunk(a!.data)
    const b = await store.readSpan(ref.id, BLOCK, 3, 5, { pooled: true })
    expect(b!.data.buffer).toBe(a!.data.buffer)
    store.releaseChunk(b!.data)
  })

  it('refuses spans that are not spans of the chunk, and bad block sizes, saying what is wrong; an unknown chunk is undefined', async () => {
    const v = await addPath(store, model, { name: 'org/blocks', blockSize: BLOCK })
    const { ref } = (await chunksOf(v.manifest)).find(c => blockCount(c.ref.size, BLOCK) === 3)!
    await expect(store.readSpan(ref.id, BLOCK, 2, 2)).rejects.toMatchObject({ name: 'InvalidInputError', message: `blocks 2 to 3 of chunk ${ref.id} are outside it: at ${ref.size} bytes it has 3 blocks of ${BLOCK}` })
    await expect(store.readSpan(ref.id, BLOCK, 0, 0)).rejects.toMatchObject({ name: 'InvalidInputError', message: `blocks 0 + 0 of chunk ${ref.id} are not a span: the first block is 0 or more, the count 1 or more` })
    await expect(store.readSpan(ref.id, BLOCK, -1, 1)).rejects.toMatchObject({ name: 'InvalidInputError' })
    await expect(store.readSpan(ref.id, 20_000, 0, 1)).rejects.toMatchObject({ name: 'InvalidInputError', message: 'block size 20000 is not a power of two from 16384 to 4194304 bytes' })
    await expect(store.readSpan(ref.id, 8 * KiB, 0, 1)).rejects.toMatchObject({ name: 'InvalidInputError' })
    expect(await store.readSpan(chunkRefOf(Uint8Array.of(1, 2, 3), BLOCK).id, BLOCK, 0, 1)).toBeUndefined()
  })

  it('an aborted request stops waiting for a layer being computed; the computation finishes for the others', async () => {
    const v = await addPath(store, model, { name: 'org/blocks', blockSize: BLOCK })
    const { ref, bytes } = (await chunksOf(v.manifest)).find(c => c.ref.size === MAX_CHUNK_SIZE)!
    const controller = new AbortController()
    const aborted = store.readSpan(ref.id, 32 * KiB, 0, 1, { signal: controller.signal })
    const other = store.readSpan(ref.id, 32 * KiB, 1, 1)
    controller.abort()
    await expect(aborted).rejects.toMatchObject({ name: 'AbortedError' })
    const span = await other
    expect(blockMatches(span!.data, 1, 128, splitHashes(span!.proofs[0]!), chunkRefOf(bytes, 32 * KiB).root!)).toBe(true)
  })

  it('recordLeaves and a batch\'s putLeaves check the layer, and what they record is served', async () => {
    const v = await addPath(store, model, { name: 'org/blocks', blockSize: BLOCK })
    const { ref, bytes } = (await chunksOf(v.manifest)).find(c => blockCount(c.ref.size, BLOCK) === 3)!
    expect(() => internals(store).index.batch().putLeaves(ref.id, BLOCK, new Uint8Array(64), ref.size)).toThrow(`the leaf layer of chunk ${ref.id} has 2 leaves, but the chunk has 3 blocks of ${BLOCK} bytes`)
    const at32 = await store.readSpan(ref.id, 32 * KiB, 0, 2)
    await internals(store).index.commit([{ type: 'del', sublevel: internals(store).index.leaves, key: leavesKey(ref.id, 32 * KiB) }])
    const layer = new Uint8Array(64)
    layer.set(splitHashes(at32!.proofs[1]!)[0]!, 0) // leaf 0 is leaf 1's sibling
    layer.set(splitHashes(at32!.proofs[0]!)[0]!, 32)
    await store.recordLeaves(ref.id, 32 * KiB, layer, { chunkSize: ref.size })
    expect(sameBytes(await layerOf(ref.id, 32 * KiB), layer)).toBe(true)
    expect(sameBytes(layerRoot(layer), chunkRefOf(bytes, 32 * KiB).root)).toBe(true)
    expect(internals(store).index.batch().putLeaves(ref.id, 32 * KiB, layer, ref.size).size).toBe(1)
  })

  it('verify rewrites a layer that does not match the chunk\'s bytes, removes impossible ones, and a second run is clean', async () => {
    const v = await addPath(store, model, { name: 'org/blocks', blockSize: BLOCK })
    const chunks = await chunksOf(v.manifest)
    const { ref, bytes } = chunks.find(c => blockCount(c.ref.size, BLOCK) === 3)!
    const small = chunks.find(c => c.ref.size <= BLOCK)!.ref
    const good = (await layerOf(ref.id))!
    const bad = Uint8Array.from(good)
    bad[40] = bad[40]! ^ 1
    // Served once, so the cache holds the right layer; then the index gets a wrong one.
    await store.readSpan(ref.id, BLOCK, 0, 1)
    await internals(store).index.commit([
      { type: 'put', sublevel: internals(store).index.leaves, key: leavesKey(ref.id, BLOCK), value: bad },
      { type: 'put', sublevel: internals(store).index.leaves, key: leavesKey(small.id, BLOCK), value: new Uint8Array(64) },
      { type: 'put', sublevel: internals(store).index.leaves, key: leavesKey(ref.id, 20_000), value: new Uint8Array(64) }
    ])
    const report = await verifyStore(store)
    expect(report.problems).toEqual(expect.arrayContaining([
      { kind: 'leaves-mismatch', subject: ref.id, detail: `the leaf layer at ${BLOCK}-byte blocks does not match the chunk's bytes; it was rewritten from them` },
      { kind: 'leaves-mismatch', subject: small.id, detail: `a leaf layer is recorded at ${BLOCK}-byte blocks, but the chunk is one block at that size; it was removed` },
      { kind: 'leaves-mismatch', subject: ref.id, detail: 'a leaf layer is recorded at 20000-byte blocks, which no manifest may declare; it was removed' }
    ]))
    expect(report.problems).toHaveLength(3)
    expect(report.quarantined).toEqual([])
    expect(sameBytes(await layerOf(ref.id), good)).toBe(true)
    expect(await layerOf(small.id)).toBeUndefined()
    expect(await internals(store).index.leaves.get(leavesKey(ref.id, 20_000))).toBeUndefined()
    expect((await verifyStore(store)).problems).toEqual([])
    // What is served after a restart proves the blocks again.
    await store.close()
    store = await open()
    const span = await store.readSpan(ref.id, BLOCK, 1, 1)
    expect(blockMatches(span!.data, 1, 3, splitHashes(span!.proofs[0]!), chunkRefOf(bytes, BLOCK).root!)).toBe(true)
  })

  it('verify drops the layers of a quarantined blob\'s chunks that nothing else holds', async () => {
    const v = await addPath(store, model, { name: 'org/blocks', blockSize: BLOCK })
    const file = v.manifest.files.find(f => f.path === 'tokenizer.bin')!
    const blob = internals(store).layout.blob(file.digest)
    await chmod(blob, 0o644)
    const bytes = await readFile(blob)
    bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0xff
    await writeFile(blob, bytes)
    const report = await verifyStore(store)
    expect(report.quarantined).toEqual([file.digest])
    for (const c of file.chunks) expect(await layerOf(c.id)).toBeUndefined()
    const other = v.manifest.files.find(f => f.path === 'model.safetensors')!.chunks.find(c => c.size > BLOCK)!
    expect(await layerOf(other.id)).toBeDefined()
  })

  it('gc drops the layers of chunks no blob holds any more, and layers of chunks the store never held; shared chunks keep theirs', async () => {
    const kept = await addPath(store, join(model, 'model.safetensors'), { name: 'org/kept', blockSize: BLOCK })
    const doomed = await addPath(store, model, { name: 'org/doomed', blockSize: BLOCK, pin: false })
    const stranger = chunkRefOf(seededBytes(50 * KiB, 99), BLOCK)
    await internals(store).index.batch().putLeaves(stranger.id, BLOCK, new Uint8Array(4 * 32)).commit()
    const gone = doomed.manifest.files.find(f => f.path === 'tokenizer.bin')!.chunks.filter(c => c.size > BLOCK)
    expect(gone.length).toBeGreaterThan(0)
    for (const c of gone) expect(await layerOf(c.id)).toBeDefined()

    const dry = await collectGarbage(store, { dryRun: true })
    expect(dry.versions.map(x => x.version)).toEqual([doomed.version])
    for (const c of gone) expect(await layerOf(c.id)).toBeDefined()

    await collectGarbage(store)
    for (const c of gone) expect(await layerOf(c.id)).toBeUndefined()
    expect(await layerOf(stranger.id)).toBeUndefined()
    for (const c of kept.manifest.files[0]!.chunks.filter(c => c.size > BLOCK)) {
      expect(sameBytes(layerRoot((await layerOf(c.id))!), c.root)).toBe(true)
    }
  })
})

describe('index schema', () => {
  it('an index of schema 1 (before leaf layers) is upgraded to 2 at open; a newer one is refused, saying what to run', async () => {
    const { dir, cleanup } = await tempDir()
    try {
      const db = new MemoryLevel() as unknown as Db
      await db.sublevel<string, unknown>('meta', { valueEncoding: 'json' }).put('schema', 1)
      const store = await Store.open(join(dir, 'a'), { db })
      expect(await internals(store).index.meta.get('schema')).toBe(2)
      await store.close()
      const newer = new MemoryLevel() as unknown as Db
      await newer.sublevel<string, unknown>('meta', { valueEncoding: 'json' }).put('schema', 4)
      await expect(Store.open(join(dir, 'b'), { db: newer })).rejects.toMatchObject({
        name: 'StorageIoError',
        message: 'the index has schema 4, which this build does not read (it reads schemas 2 and 3 and upgrades 1): run the shoal release that wrote it, or a newer one'
      })
    } finally {
      await cleanup()
    }
  })
})
