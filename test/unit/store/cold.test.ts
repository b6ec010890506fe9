import { createHash } from 'node:crypto'
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { addPath } from '../../../src/ingest/ingest.js'
import type { VersionId } from '../../../src/core/digest.js'
import { CODEC_HEADER_BYTES, decodeBlock } from '../../../src/core/codec.js'
import { coldCandidates, compressVersion, rematerializeVersion } from '../../../src/store/cold.js'
import { DirectWrites } from '../../../src/store/direct-io.js'
import { maxColdFileBytes, parseColdChunk } from '../../../src/store/cold-chunks.js'
import { exportVersion } from '../../../src/store/export.js'
import { collectGarbage } from '../../../src/store/gc.js'
import type { Db } from '../../../src/store/index-db.js'
import { Store } from '../../../src/store/store.js'
import { verifyStore } from '../../../src/store/verify.js'
import { testData, weightSafetensors } from '../../../scripts/lib/weights.js'
import { memoryStore, tempDir } from '../../helpers/tmp.js'
import { rejection } from '../../helpers/assert.js'
import { internals } from '../../helpers/store-internals.js'

const MiB = 1024 * 1024
const sha = async (path: string): Promise<string> => createHash('sha256').update(await readFile(path)).digest('hex')

/** A safetensors file of bf16 tensors drawn like trained weights, one per seed (1 MiB each). */
async function writeWeights (path: string, seeds: number[]): Promise<void> {
  await writeFile(path, weightSafetensors(seeds.map(seed => ({ name: `t${seed}`, dtype: 'BF16', bytes: MiB, seed }))))
}

describe('cold versions', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let store: Store
  let db: Db
  let home: string
  let model: string

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir())
    home = join(dir, 'home')
    ;({ store, db } = await memoryStore(home))
    model = join(dir, 'model')
    await mkdir(model)
  })

  afterEach(async () => {
    await store.close().catch(() => {})
    await cleanup()
  })

  it('compresses an unlabelled bf16 version to two thirds, serves its chunks, and exports it byte-identical', async () => {
    await writeWeights(join(model, 'model.safetensors'), [1, 2, 3, 4])
    const v = await addPath(store, model, { name: 'w', pin: true })
    const original = await sha(join(v.path, 'model.safetensors'))
    const file = v.manifest.files[0]!
    const report = await compressVersion(store, v.version, { keepLast: 3 })
    expect(report.rawBytes).toBe(file.size)
    expect(report.storedBytes / report.rawBytes).toBeLessThan(0.72)
    expect(report.blobs).toBe(1)
    expect(await readdir(internals(store).layout.blobs)).toEqual([])
    expect(await readdir(internals(store).layout.snapshots('w'))).toEqual([])
    expect(await internals(store).index.meta.get('schema')).toBe(3)

    const resolved = await store.resolve(`w@${v.version}`)
    expect(resolved.cold).toBe(true)
    expect(resolved.missing).toEqual([])
    expect(await store.isComplete(v.version)).toBe(true)
    const [info] = await store.versions('w')
    expect(info!.cold!.savedBytes).toBe(report.rawBytes - report.storedBytes)
    // Peers are served from the cold form: whole chunks and spans of blocks with their proofs.
    const tensorChunk = file.chunks[1]!
    expect((await store.heldChunks(file.chunks.map(c => c.id))).size).toBe(new Set(file.chunks.map(c => c.id)).size)
    const whole = await store.readChunk(tensorChunk.id)
    expect(createHash('sha256').update(whole!).digest('hex')).toBe(createHash('sha256').update(testData('BF16', MiB, 1)).digest('hex'))
    const span = await store.readSpan(tensorChunk.id, 256 * 1024, 1, 2)
    expect(Buffer.from(span!.data).equals(Buffer.from(whole!.subarray(256 * 1024, 768 * 1024)))).toBe(true)
    expect(span!.proofs).toHaveLength(2)
    // At the block size the chunk is kept in, each block comes with its stored encoded form, to be
    // sent as it is; it decodes to the block.
    const stored = parseColdChunk(await readFile(internals(store).layout.coldChunk(tensorChunk.id)), tensorChunk.id)
    expect(stored.blockSize).toBe(256 * 1024)
    expect(span!.encoded?.map(e => Buffer.from(e!).toString('hex'))).toEqual(stored.blocks.slice(1, 3).map(([s, l]) => Buffer.from(stored.file.subarray(s, s + l)).toString('hex')))
    expect(Buffer.from(decodeBlock(span!.encoded![1]!, { maxSize: 256 * 1024 })).equals(Buffer.from(whole!.subarray(512 * 1024, 768 * 1024)))).toBe(true)
    // At another block size the stored blocks are not the span's: none is offered.
    expect((await store.readSpan(tensorChunk.id, 128 * 1024, 2, 2))?.encoded).toBeUndefined()

    const out = join(dir, 'out')
    await exportVersion(store, `w@${v.version}`, out)
    expect(await sha(join(out, 'model.safetensors'))).toBe(original)
    // Exporting brought it back: a materialized version again.
    const back = await store.resolve(`w@${v.version}`)
    expect(back.cold).toBe(false)
    expect(await sha(join(back.path, 'model.safetensors'))).toBe(original)
    expect(await readdir(internals(store).layout.tmp)).toEqual([])
  })

  it('serves the spans of a cold chunk from the file read for the first one, and nothing once the index no longer lists it', async () => {
    await writeWeights(join(model, 'model.safetensors'), [1, 2])
    const v = await addPath(store, model, { name: 'w', pin: true })
    await compressVersion(store, v.version, { keepLast: 3 })
    const chunk = v.manifest.files[0]!.chunks[1]!
    const first = await store.readSpan(chunk.id, 256 * 1024, 0, 1)
    // The file is read once per chunk, not once per span: gone from disk, the next spans still come.
    const path = internals(store).layout.coldChunk(chunk.id)
    const kept = await readFile(path)
    await rm(path)
    const next = await store.readSpan(chunk.id, 256 * 1024, 1, 3)
    expect(next?.data.byteLength).toBe(3 * 256 * 1024)
    expect(Buffer.from(next!.data.subarray(0, 1024)).equals(Buffer.from(testData('BF16', MiB, 1).subarray(256 * 1024, 256 * 1024 + 1024)))).toBe(true)
    expect(first?.encoded).toHaveLength(1)
    // The index decides: a chunk it no longer lists as cold is not served from the parsed file.
    await writeFile(path, kept)
    const record = await internals(store).index.coldChunks.get(chunk.id)
    await internals(store).index.commit([{ type: 'del', sublevel: internals(store).index.coldChunks, key: chunk.id }])
    expect(await store.readSpan(chunk.id, 256 * 1024, 1, 1)).toBeUndefined()
    await internals(store).index.commit([{ type: 'put', sublevel: internals(store).index.coldChunks, key: chunk.id, value: record! }])
  })

  it('answers a span of a cold chunk whose file is larger than any cold file can be as not held, saying why in the log, before reading it', async () => {
    await store.close()
    const warnings: Array<{ obj: object, msg?: string }> = []
    store = await Store.open(home, { db, log: { info () {}, debug () {}, warn (obj, msg) { warnings.push({ obj, ...(msg !== undefined ? { msg } : {}) }) } } })
    await writeWeights(join(model, 'model.safetensors'), [1, 2])
    const v = await addPath(store, model, { name: 'w', pin: true })
    await compressVersion(store, v.version, { keepLast: 3 })
    const chunk = v.manifest.files[0]!.chunks[1]!
    await writeFile(internals(store).layout.coldChunk(chunk.id), new Uint8Array(maxColdFileBytes + 1))
    expect(await store.readSpan(chunk.id, 256 * 1024, 0, 1)).toBeUndefined()
    expect(warnings).toContainEqual({
      obj: { chunk: chunk.id, err: `cold chunk ${chunk.id} is ${maxColdFileBytes + 1} bytes, more than any chunk's cold file can be (${maxColdFileBytes})` },
      msg: 'a cold chunk could not be read back; run shoal verify'
    })
  })

  it('re-materializes byte-identical when the file system refuses direct writes part-way, writing the rest buffered and closing the direct handle', async () => {
    await writeWeights(join(model, 'model.safetensors'), [5, 6, 7, 8, 9, 10])
    const v = await addPath(store, model, { name: 'w', pin: true })
    const original = await sha(join(v.path, 'model.safetensors'))
    await compressVersion(store, v.version, { keepLast: 3 })
    // The second direct write is refused (as a file system without O_DIRECT for that range does);
    // writes already in flight finish, the rest go buffered.
    const directWrite = DirectWrites.prototype.write
    let calls = 0
    const write = vi.spyOn(DirectWrites.prototype, 'write').mockImplementation(async function (this: DirectWrites, ...args: Parameters<DirectWrites['write']>) {
      calls++
      return calls === 2 ? 'refused' : await directWrite.apply(this, args)
    })
    const close = vi.spyOn(DirectWrites.prototype, 'close')
    try {
      await rematerializeVersion(store, v.version)
    } finally {
      write.mockRestore()
    }
    expect(calls).toBeGreaterThanOrEqual(2)
    expect(close).toHaveBeenCalledTimes(1)
    close.mockRestore()
    const back = await store.resolve(`w@${v.version}`)
    expect(back.cold).toBe(false)
    expect(await sha(join(back.path, 'model.safetensors'))).toBe(original)
    expect(await readdir(internals(store).layout.tmp)).toEqual([])
  })

  it('refuses, saying why, a labelled version, one in a label\'s rollback window, one leased, and one already compressed', async () => {
    await writeWeights(join(model, 'model.safetensors'), [5])
    const a = await addPath(store, model, { name: 'w', label: 'prod' })
    const labelled = await rejection(compressVersion(store, a.version, { keepLast: 3 }))
    expect(labelled.name).toBe('ConflictError')
    expect(labelled.message).toBe(`w@${a.version} cannot be compressed: w@prod points at it; move the label first`)
    await writeWeights(join(model, 'model.safetensors'), [6])
    const b = await addPath(store, model, { name: 'w', label: 'prod' })
    expect((await rejection(compressVersion(store, a.version, { keepLast: 3 }))).message)
      .toBe(`w@${a.version} cannot be compressed: it is among the last 3 versions of w@prod (labels.keep), kept ready for a rollback`)
    await internals(store).index.commit([{ type: 'put', sublevel: internals(store).index.leases, key: 'l1', value: { holder: 'server-1', model: 'w', version: a.version, path: '', createdAt: 0, expiresAt: Date.now() + 60_000 } }])
    expect((await rejection(compressVersion(store, a.version, { keepLast: 1 }))).message)
      .toBe(`w@${a.version} cannot be compressed: a lease of server-1 holds it`)
    await internals(store).index.commit([{ type: 'del', sublevel: internals(store).index.leases, key: 'l1' }])
    await compressVersion(store, a.version, { keepLast: 1 })
    expect((await rejection(compressVersion(store, a.version, { keepLast: 1 }))).message).toBe(`w@${a.version} is already compressed`)
    // Nothing of the refusals changed b.
    expect((await store.resolve('w@prod')).version).toBe(b.version)
  })

  it('a cold fine-tune costs only its changed chunks while its base is kept, and keeps them when gc removes the base', async () => {
    await writeWeights(join(model, 'model.safetensors'), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    const base = await addPath(store, model, { name: 'w', label: 'prod', pin: false })
    await writeWeights(join(model, 'model.safetensors'), [1, 2, 3, 4, 5, 6, 7, 8, 9, 99])
    const tune = await addPath(store, model, { name: 'w', pin: false })
    const tuned = await sha(join(tune.path, 'model.safetensors'))
    const report = await compressVersion(store, tune.version, { keepLast: 1 })
    const size = tune.manifest.files[0]!.size
    expect(report.chunks).toBe(2) // the changed tensor and the header
    expect(report.storedBytes / size).toBeLessThan(0.1)
    // The base goes: its blob held nine chunks the cold fine-tune needs; they are kept in cold/ first.
    await store.removeLabel('w', 'prod')
    await store.pin('w', tune.version)
    const gc = await collectGarbage(store, { keepLast: 1 })
    expect(gc.versions.map(x => x.version)).toEqual([base.version])
    expect(gc.cold).toEqual({ written: 9, removed: 0, removedBytes: 0 })
    expect(await readdir(internals(store).layout.blobs)).toEqual([])
    expect((await verifyStore(store)).problems).toEqual([])
    await store.rematerialize(tune.version)
    expect(await sha(join(internals(store).layout.snapshot('w', tune.version), 'model.safetensors'))).toBe(tuned)
    // Nothing cold is needed any more: gc removes the cold files.
    const after = await collectGarbage(store, { keepLast: 1 })
    expect(after.cold).toEqual({ written: 0, removed: 11, removedBytes: expect.any(Number) })
    expect(await readdir(internals(store).layout.cold)).toEqual([])
  })

  it('moving a label to a cold version brings it back first (activation, rollback)', async () => {
    await writeWeights(join(model, 'model.safetensors'), [11, 12])
    const a = await addPath(store, model, { name: 'w', label: 'prod' })
    const original = await sha(join(a.path, 'model.safetensors'))
    await writeWeights(join(model, 'model.safetensors'), [13])
    await addPath(store, model, { name: 'w', label: 'prod' })
    await compressVersion(store, a.version, { keepLast: 1 })
    await store.setLabel('w', 'prod', a.version)
    const v = await store.resolve('w@prod')
    expect(v.version).toBe(a.version)
    expect(v.cold).toBe(false)
    expect(await sha(join(v.path, 'model.safetensors'))).toBe(original)
  })

  it('lists versions nothing has needed for a while, least recently used first, label targets and cold ones left out', async () => {
    await writeWeights(join(model, 'model.safetensors'), [41])
    const a = await addPath(store, model, { name: 'w', label: 'prod' })
    await writeWeights(join(model, 'model.safetensors'), [42])
    const b = await addPath(store, model, { name: 'w' })
    await writeWeights(join(model, 'model.safetensors'), [43])
    const c = await addPath(store, model, { name: 'w', label: 'prod' })
    const now = Date.now()
    // a left prod just now; b arrived before that; c is prod's target.
    expect(await coldCandidates(store, { idleMs: 0, now })).toEqual([b.version, a.version])
    expect(await coldCandidates(store, { idleMs: 3600_000, now })).toEqual([])
    expect(await coldCandidates(store, { idleMs: 3600_000, now: now + 3600_000 })).toEqual([b.version, a.version])
    await compressVersion(store, b.version, { keepLast: 1 })
    expect(await coldCandidates(store, { idleMs: 0, now })).toEqual([a.version])
    expect(c.version).not.toBe(a.version)
  })

  it('does not count on a partial file to hold a cold version\'s chunk (a pull can drop it)', async () => {
    await writeWeights(join(model, 'model.safetensors'), [51, 52])
    const a = await addPath(store, model, { name: 'w' })
    const file = a.manifest.files[0]!
    const shared = file.chunks[1]!
    // The chunk is also being pulled into a partial file (a location without a blob record).
    const partial = 'bafkreipartialpullxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'
    const locations = await internals(store).index.chunks.get(shared.id)
    await internals(store).index.commit([{ type: 'put', sublevel: internals(store).index.chunks, key: shared.id, value: [...locations!, [partial, 0, shared.size]] }])
    const report = await compressVersion(store, a.version, { keepLast: 1 })
    expect(await internals(store).index.coldChunks.get(shared.id)).toMatchObject({ size: shared.size })
    expect(report.chunks).toBe(3)
    // The partial's location stays (its pull still uses it).
    expect(await internals(store).index.chunks.get(shared.id)).toEqual([[partial, 0, shared.size]])
  })

  it('serves a span from cold/ when the blob it looked up was compressed away before the read', async () => {
    await writeWeights(join(model, 'model.safetensors'), [61])
    const a = await addPath(store, model, { name: 'w' })
    const file = a.manifest.files[0]!
    const chunk = file.chunks[1]!
    const before = await store.readSpan(chunk.id, 256 * 1024, 0, 1)
    const stale = await internals(store).index.chunks.get(chunk.id)
    await compressVersion(store, a.version, { keepLast: 1 })
    // The lookup saw the blob (a location read before the compression's batch); the file is gone.
    await internals(store).index.commit([{ type: 'put', sublevel: internals(store).index.chunks, key: chunk.id, value: stale! }])
    const span = await store.readSpan(chunk.id, 256 * 1024, 0, 1)
    expect(span).toBeDefined()
    expect(Buffer.from(span!.data).equals(Buffer.from(before!.data))).toBe(true)
    expect(Buffer.from((await store.readChunk(chunk.id))!).equals(Buffer.from(testData('BF16', MiB, 61)))).toBe(true)
  })

  it('gc writes a cold version\'s chunk to cold/ when the blob going held it and only a partial file holds it besides', async () => {
    await writeWeights(join(model, 'model.safetensors'), [71, 72])
    const base = await addPath(store, model, { name: 'w', label: 'prod', pin: false })
    await writeWeights(join(model, 'model.safetensors'), [71, 73])
    const tune = await addPath(store, model, { name: 'w', pin: true })
    await compressVersion(store, tune.version, { keepLast: 1 })
    const shared = base.manifest.files[0]!.chunks[1]!
    expect(await internals(store).index.coldChunks.get(shared.id)).toBeUndefined()
    const partial = 'bafkreipartialpullxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'
    const locations = await internals(store).index.chunks.get(shared.id)
    await internals(store).index.commit([{ type: 'put', sublevel: internals(store).index.chunks, key: shared.id, value: [...locations!, [partial, 0, shared.size]] }])
    await store.removeLabel('w', 'prod')
    const gc = await collectGarbage(store, { keepLast: 1 })
    expect(gc.versions.map(v => v.version)).toEqual([base.version])
    expect(await internals(store).index.coldChunks.get(shared.id)).toMatchObject({ size: shared.size })
    await internals(store).index.commit([{ type: 'del', sublevel: internals(store).index.chunks, key: shared.id }]) // the pull is cancelled
    await store.rematerialize(tune.version)
    expect((await store.resolve(`w@${tune.version}`)).cold).toBe(false)
  })

  it('start-up removes cold files no record names and the snapshot of a cold version', async () => {
    await writeWeights(join(model, 'model.safetensors'), [21])
    const a = await addPath(store, model, { name: 'w' })
    await compressVersion(store, a.version, { keepLast: 1 })
    await store.close()
    await writeFile(join(home, 'cold', 'bafkreiorphan'), 'x')
    await mkdir(join(home, 'models', 'models--w', 'snapshots', a.version), { recursive: true })
    store = await Store.open(home, { db })
    expect(await readdir(internals(store).layout.cold)).not.toContain('bafkreiorphan')
    expect(await readdir(internals(store).layout.snapshots('w'))).toEqual([])
    expect((await store.resolve(`w@${a.version}`)).cold).toBe(true)
  })

  it('verify decodes every cold chunk; a damaged one is quarantined and its version reported damaged', async () => {
    await writeWeights(join(model, 'model.safetensors'), [31, 32])
    const a = await addPath(store, model, { name: 'w' })
    await compressVersion(store, a.version, { keepLast: 1 })
    expect((await verifyStore(store)).problems).toEqual([])
    const id = a.manifest.files[0]!.chunks[2]!.id
    const path = internals(store).layout.coldChunk(id)
    const bytes = await readFile(path)
    bytes[bytes.length - 100]! ^= 0xff
    await writeFile(path, bytes)
    const report = await verifyStore(store)
    expect(report.problems[0]).toMatchObject({ kind: 'cold-chunk', subject: id })
    expect(report.problems[0]!.detail).toMatch(/moved to quarantine\/$/)
    expect(report.damaged).toEqual([`w@${a.version}`])
    expect(await readdir(internals(store).layout.cold)).not.toContain(id)
    await expect(store.rematerialize(a.version as VersionId)).rejects.toMatchObject({ name: 'NotFoundError' })
    expect(await readdir(internals(store).layout.blobs)).toEqual([])
  })

  it('re-materializing refuses a damaged cold chunk (one that decodes to other bytes, one that does not decode), naming it, and leaves nothing behind: no blob, no temporary file, the version still cold', async () => {
    await writeWeights(join(model, 'model.safetensors'), [41, 42, 43])
    const a = await addPath(store, model, { name: 'w' })
    await compressVersion(store, a.version, { keepLast: 1 })
    const id = a.manifest.files[0]!.chunks[2]!.id
    const path = internals(store).layout.coldChunk(id)
    const good = await readFile(path)
    // A byte of the first block's stored mantissa plane (after its codec header and plane mode), and a byte of a Huffman stream.
    const stored = parseColdChunk(good, id).blocks[0]![0] + CODEC_HEADER_BYTES + 1 + 10
    for (const [at, message] of [[stored, 'decodes to bytes that do not hash to its id'], [good.length - 100, 'does not decode \\(.+\\)']] as const) {
      const bytes = Buffer.from(good)
      bytes[at]! ^= 0xff
      await writeFile(path, bytes)
      const err = await rejection(store.rematerialize(a.version as VersionId))
      expect(err.name).toBe('DigestMismatchError')
      expect(err.message).toMatch(new RegExp(`^cold chunk ${id} ${message}: the file is damaged; run shoal verify$`))
      expect(await readdir(internals(store).layout.blobs)).toEqual([])
      expect(await readdir(internals(store).layout.tmp)).toEqual([])
      expect(await internals(store).index.coldVersion(a.version)).toBeDefined()
    }
  })
})
