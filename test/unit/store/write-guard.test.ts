/**
 * What the store does after a write the disk refused (`store/write-guard.ts`): the failing write
 * says what was kept, every later write is refused fast until the index has been reopened with
 * room, the reopen repairs a corrupt index, and no answer claims a write that did not happen.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { addPath } from '../../../src/ingest/ingest.js'
import { IndexDb } from '../../../src/store/index-db.js'
import type { ChunkId } from '../../../src/core/digest.js'
import { PullTarget } from '../../../src/store/pull-target.js'
import { Store, type ResolvedVersion } from '../../../src/store/store.js'
import { WriteGuard } from '../../../src/store/write-guard.js'
import { llamaTensors, writeSafetensors } from '../../../scripts/lib/synth.js'
import { rejection } from '../../helpers/assert.js'
import { FaultyLevel, levelError } from '../../helpers/faulty-level.js'
import { memoryStore, tempDir } from '../../helpers/tmp.js'
import { internals } from '../../helpers/store-internals.js'

const silent = { info () {}, warn () {}, debug () {} }
const GiB = 1024 ** 3
/** Keys of a batch that moves a label (the `labels` sublevel). */
const movesLabel = (keys: string[]): boolean => keys.some(k => k.startsWith('!labels!'))

describe('write guard', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let db: FaultyLevel
  let store: Store
  /** What the store's disk has free, as its statfs would say. */
  let free: number
  let v1: ResolvedVersion
  let v2: ResolvedVersion

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir())
    db = new FaultyLevel()
    free = GiB
    store = await Store.open(join(dir, 'home'), { db: db.db, freeBytes: async () => free })
    const model = join(dir, 'model')
    await mkdir(model)
    await writeSafetensors(join(model, 'model.safetensors'), llamaTensors(1 << 20, { hidden: 128, vocab: 256 }))
    await writeFile(join(model, 'config.json'), '{"architectures":["LlamaForCausalLM"]}')
    v1 = await addPath(store, model, { name: 'org/tiny', label: 'prod' })
    await writeFile(join(model, 'config.json'), '{"architectures":["LlamaForCausalLM"],"v":2}')
    v2 = await addPath(store, model, { name: 'org/tiny', pin: false })
  })

  afterEach(async () => {
    await store.close().catch(() => {})
    await cleanup()
  })

  it('a failed index write says what was kept, and every later write is refused without reaching the index until it is reopened with room', async () => {
    db.failBatches = { error: levelError() }
    free = 0
    const first = await rejection(store.pin('org/tiny', v2.version))
    expect(first.name).toBe('DiskFullError')
    expect(first.message).toMatch(/^disk full while pinning org\/tiny@\w+ \(IO error: \/home\/index\/000003\.log: No space left on device\): the pin was not recorded; free some space/)

    // The disk took writes again (LevelDB's did), but the index is not trusted until reopened.
    db.failBatches = undefined
    const batches = db.batches
    const refused = await rejection(store.setLabel('org/tiny', 'prod', v2.version))
    expect(refused.name).toBe('DiskFullError')
    expect(refused.message).toMatch(/disk full while moving org\/tiny@prod to \w+ \(not attempted\): the label was not moved \(it still points at \w+\)/)
    expect(refused.message).toMatch(/the store has taken no writes since pinning org\/tiny@\w+ failed at .* \(IO error: .*No space left on device\), and takes them again once 16\.0 MiB are free on its disk \(0\.0 MiB now\)/)
    expect(db.batches, 'a refused write reaches the index').toBe(batches)
    expect((await readFile(internals(store).layout.ref('org/tiny', 'prod'), 'utf8')).trim()).toBe(v1.version)
    await expect(store.createBlobWriter()).rejects.toMatchObject({ name: 'DiskFullError' })
    expect(db.closes).toBe(0)

    free = GiB
    await store.pin('org/tiny', v2.version)
    expect(db.closes, 'the index was reopened before the write').toBe(1)
    expect((await store.resolve(`org/tiny@${v2.version}`)).pinned).toBe(true)
    await store.setLabel('org/tiny', 'prod', v2.version)
    expect((await readFile(internals(store).layout.ref('org/tiny', 'prod'), 'utf8')).trim()).toBe(v2.version)
  })

  it('commits run one at a time: a batch queued behind one that fails is refused, never written after it', async () => {
    free = 0
    db.failBatches = { error: levelError(), when: keys => keys.some(k => k.startsWith('!pins!')) }
    const [pin, label] = await Promise.allSettled([store.pin('org/tiny', v2.version), store.pinLabel('org/tiny', 'prod')])
    expect(pin).toMatchObject({ status: 'rejected', reason: { name: 'DiskFullError' } })
    expect(label).toMatchObject({ status: 'rejected', reason: { name: 'DiskFullError', message: expect.stringMatching(/has taken no writes since pinning/) } })
    expect(await store.isLabelPinned('org/tiny', 'prod')).toBe(false)
  })

  it('a label move the index refuses leaves refs/ as the index says', async () => {
    db.failBatches = { error: levelError(), when: movesLabel }
    await expect(store.setLabel('org/tiny', 'prod', v2.version)).rejects.toMatchObject({ name: 'DiskFullError' })
    expect((await readFile(internals(store).layout.ref('org/tiny', 'prod'), 'utf8')).trim()).toBe(v1.version)
    expect((await store.labelRecord('org/tiny', 'prod'))?.version).toBe(v1.version)
  })

  it('a failed add leaves no snapshot of the version it did not record', async () => {
    db.failBatches = { error: levelError(), when: keys => keys.some(k => k.startsWith('!versions!')) }
    const model = join(dir, 'model')
    await writeFile(join(model, 'config.json'), '{"architectures":["LlamaForCausalLM"],"v":3}')
    const err = await rejection(addPath(store, model, { name: 'org/tiny' }))
    expect(err.message).toMatch(/^disk full while recording org\/tiny@\w+ \(IO error: .*\): the version was not added and nothing partial was kept/)
    const snapshots = (await import('node:fs/promises')).readdir(internals(store).layout.snapshots('org/tiny'))
    expect((await snapshots).sort()).toEqual([v1.version, v2.version].sort())
  })

  it('once there is room the store reopens by itself and tells its listeners', async () => {
    db.failBatches = { error: levelError() }
    free = 0
    await expect(store.pin('org/tiny', v2.version)).rejects.toMatchObject({ name: 'DiskFullError' })
    db.failBatches = undefined
    let told = 0
    store.onWritable(() => { told++ })
    free = GiB
    await store.writable({ doing: 'checking', kept: 'nothing' })
    expect(told).toBe(1)
    expect(db.closes).toBe(1)
    await store.pin('org/tiny', v2.version)
    expect(db.closes).toBe(1)
  })
})

describe('index reopen', () => {
  it('reads made while the index reopens wait for it, and an iterator open across it finishes first', async () => {
    const db = new FaultyLevel()
    const index = new IndexDb(db.db, { guard: new WriteGuard(async () => GiB, silent), log: silent })
    await index.open()
    await index.commit(Array.from({ length: 50 }, (_, i) => ({ type: 'put' as const, sublevel: index.versions, key: `v${String(i).padStart(2, '0')}`, value: { name: 'm', created: i, addedAt: i } })))
    db.failBatches = { error: levelError() }
    await expect(index.commit([{ type: 'put', sublevel: index.meta, key: 'a', value: 1 }])).rejects.toMatchObject({ name: 'DiskFullError' })
    db.failBatches = undefined
    db.openDelayMs = 50

    // An iterator open when the reopen starts: the reopen waits for it to be read to the end.
    const iterated = (async () => {
      const keys: string[] = []
      for await (const [key] of index.versions.iterator()) {
        keys.push(key)
        await new Promise(resolve => setImmediate(resolve))
      }
      return keys
    })()
    const reopened = index.commit([{ type: 'put', sublevel: index.meta, key: 'b', value: 2 }])
    // Reads made while it reopens (LevelDB closed, then opening for 50 ms).
    const reads: Array<Promise<unknown>> = []
    for (let i = 0; i < 20; i++) {
      reads.push(index.versions.get(`v${String(i).padStart(2, '0')}`))
      reads.push(index.versions.keys({ limit: 3 }).all())
      reads.push((async () => { const out = []; for await (const v of index.versions.values({ limit: 2 })) out.push(v); return out })())
      await new Promise(resolve => setTimeout(resolve, 5))
    }
    await reopened
    expect(db.closes).toBe(1)
    expect(await iterated).toHaveLength(50)
    const settled = await Promise.allSettled(reads)
    expect(settled.filter(r => r.status === 'rejected')).toEqual([])
    expect(await index.meta.get('b')).toBe(2)
    await index.close()
  })

  it('repairs an index that reports corruption when reopened, and says so when it cannot', async () => {
    const db = new FaultyLevel()
    let repairs = 0
    const index = new IndexDb(db.db, { guard: new WriteGuard(async () => GiB, silent), repair: async () => { repairs++ }, log: silent })
    await index.open()
    const put = (key: string): Promise<void> => index.commit([{ type: 'put', sublevel: index.meta, key, value: 1 }])
    db.failBatches = { error: levelError('LEVEL_IO_ERROR', 'IO error: /home/index/000005.log: Input/output error') }
    expect(await rejection(put('a'))).toMatchObject({ name: 'StorageIoError', message: expect.stringMatching(/^I\/O error while updating the index \(IO error: .*Input\/output error\): the change was not recorded/) })
    db.failBatches = undefined
    db.failOpens.push(levelError('LEVEL_CORRUPTION', 'Corruption: checksum mismatch'))
    await put('b')
    expect(repairs).toBe(1)
    expect(await index.meta.get('b')).toBe(1)

    db.failBatches = { error: levelError() }
    await expect(put('c')).rejects.toMatchObject({ name: 'DiskFullError' })
    db.failBatches = undefined
    db.failOpens.push(levelError('LEVEL_CORRUPTION', 'Corruption: bad record'), levelError('LEVEL_CORRUPTION', 'Corruption: still bad'))
    const err = await rejection(put('d'))
    expect(err.name).toBe('StorageIoError')
    expect(err.message).toMatch(/the index .* is corrupt and could not be repaired .*restore it from a backup/)
    await index.close().catch(() => {})
  })
})

describe('pull target after a failed index write', () => {
  it('keeps chunks whose recording failed for the next flush instead of dropping them, and says the pull keeps what it verified', async () => {
    const { dir, cleanup } = await tempDir()
    const { store: source } = await memoryStore(join(dir, 'source'))
    const db = new FaultyLevel()
    let free = GiB
    const dest = await Store.open(join(dir, 'dest'), { db: db.db, freeBytes: async () => free })
    try {
      const model = join(dir, 'model')
      await mkdir(model)
      await writeSafetensors(join(model, 'model.safetensors'), llamaTensors(2 << 20, { hidden: 128, vocab: 512 }))
      const v = await addPath(source, model, { name: 'org/pulled' })
      const target = await PullTarget.open(dest, v.version, (await source.heads.manifest(v.version))!)
      const ids = target.needed()
      const chunk = async (id: ChunkId): Promise<Uint8Array> => (await source.readChunk(id))!
      for (const id of ids.slice(0, 2)) await target.put(id, await chunk(id))
      db.failBatches = { error: levelError(), when: keys => keys.some(k => k.startsWith('!chunks!')) }
      free = 0
      const err = await rejection(target.flush())
      expect(err.name).toBe('DiskFullError')
      expect(err.message).toMatch(/^disk full while recording chunks of org\/pulled@\w+ \(IO error: .*\): the chunks verified so far are kept in partial\/, and the pull resumes from them/)
      const refused = await rejection(target.put(ids[2]!, await chunk(ids[2]!)))
      expect(refused.message).toMatch(/^disk full while writing chunk \w+ of org\/pulled@\w+ \(not attempted\): the chunks verified so far are kept in partial\//)

      db.failBatches = undefined
      free = GiB
      for (const id of target.needed()) await target.put(id, await chunk(id))
      const done = await target.completed()
      expect(done.missing).toEqual([])
      // Every chunk of the pulled file is recorded where it lives, the two whose first flush failed too.
      const locations = await internals(dest).index.chunks.getMany(ids.slice(0, 2))
      for (const l of locations) expect(l?.some(([digest]) => digest === v.manifest.files[0]?.digest)).toBe(true)
      await target.close()
    } finally {
      await dest.close()
      await source.close()
      await cleanup()
    }
  })
})
