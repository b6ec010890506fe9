import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { readdir, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { addPath } from '../../../src/ingest/ingest.js'
import { collectGarbage } from '../../../src/store/gc.js'
import { IndexDb } from '../../../src/store/index-db.js'
import type { Store } from '../../../src/store/store.js'
import type { VersionId } from '../../../src/core/digest.js'
import { memoryStore, tempDir } from '../../helpers/tmp.js'
import { seededBytes } from '../../helpers/random.js'
import { internals } from '../../helpers/store-internals.js'

const T0 = 1_790_000_000_000

describe('label pins and GC of label history and quota', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let store: Store
  let n = 0

  /** A new unpinned version of `name` holding one file of `size` bytes nothing else holds. */
  async function version (name = 'm', size = 10_000): Promise<VersionId> {
    const file = join(dir, `weights-${++n}.bin`)
    await writeFile(file, seededBytes(size, n))
    return (await addPath(store, file, { name, pin: false })).version
  }

  /** Moves the clock, so `addedAt` and label history times differ and order. */
  const at = (offset: number): void => { vi.setSystemTime(T0 + offset) }

  const pins = async (): Promise<Array<[string, string | undefined]>> => {
    const out: Array<[string, string | undefined]> = []
    for await (const [key, pin] of internals(store).index.pins.iterator()) out.push([IndexDb.splitKey(key)[1]!, pin.via])
    return out
  }

  const listed = async (name = 'm'): Promise<VersionId[]> => (await store.versions(name).catch(() => [])).map(v => v.version)

  beforeEach(async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: T0 })
    ;({ dir, cleanup } = await tempDir())
    ;({ store } = await memoryStore(join(dir, 'home')))
  })

  afterEach(async () => {
    vi.useRealTimers()
    await store.close().catch(() => {})
    await cleanup()
  })

  it('pinLabel pins the current target and every later one (via the label); unpinLabel drops only those', async () => {
    const [a, b, c, d] = [await version(), await version(), await version(), await version()]
    await store.setLabel('m', 'prod', a)
    expect(await store.pinLabel('m', 'prod')).toBe(a)
    expect(await store.isLabelPinned('m', 'prod')).toBe(true)
    expect(await pins()).toEqual([[a, 'prod']].sort())
    await store.setLabel('m', 'prod', b)
    // A version pinned by hand keeps its own pin when the label reaches it.
    await store.pin('m', c)
    await store.setLabel('m', 'prod', c)
    // Another label's pins are its own.
    await store.pinLabel('m', 'canary')
    await store.setLabel('m', 'canary', d)
    const sorted = (xs: Array<[string, string | undefined]>): Array<[string, string | undefined]> => [...xs].sort((x, y) => x[0] < y[0] ? -1 : 1)
    expect(sorted(await pins())).toEqual(sorted([[a, 'prod'], [b, 'prod'], [c, undefined], [d, 'canary']]))
    expect((await store.resolve(`m@${b}`)).pinned).toBe(true)

    expect(await store.unpinLabel('m', 'prod')).toBe(true)
    expect(await store.isLabelPinned('m', 'prod')).toBe(false)
    expect(sorted(await pins())).toEqual(sorted([[c, undefined], [d, 'canary']]))
    expect(await store.unpinLabel('m', 'prod')).toBe(false)
    // Later moves of an unpinned label pin nothing.
    await store.setLabel('m', 'prod', a)
    expect((await store.resolve(`m@${a}`)).pinned).toBe(false)
  })

  it('pinLabel on a label not set yet pins the first version it is set to; bad names are refused', async () => {
    const a = await version()
    expect(await store.pinLabel('m', 'prod')).toBeUndefined()
    await store.setLabel('m', 'prod', a)
    expect(await pins()).toEqual([[a, 'prod']])
    await expect(store.pinLabel('m', 'Prod')).rejects.toMatchObject({ name: 'InvalidInputError' })
    await expect(store.pinLabel('../m', 'prod')).rejects.toMatchObject({ name: 'InvalidInputError' })
  })

  it('a label pin protects from GC every version it pinned, beyond keepLast', async () => {
    const vs = [await version(), await version(), await version()]
    await store.pinLabel('m', 'prod')
    for (const v of vs) await store.setLabel('m', 'prod', v)
    expect((await collectGarbage(store, { keepLast: 1 })).versions).toEqual([])
    await store.unpinLabel('m', 'prod')
    expect((await collectGarbage(store, { keepLast: 1 })).versions.map(v => v.version).sort()).toEqual(vs.slice(0, 2).sort())
  })

  it('keeps the last keepLast versions of a label (target and history), removes older ones', async () => {
    const vs: VersionId[] = []
    for (let i = 0; i < 5; i++) vs.push(await version())
    for (const [i, v] of vs.entries()) {
      at(1_000 * (i + 1))
      await store.setLabel('m', 'prod', v)
    }
    const dry = await collectGarbage(store, { keepLast: 3, dryRun: true })
    expect(dry.versions.map(v => v.version).sort()).toEqual(vs.slice(0, 2).sort())
    // The default keeps three too.
    expect((await collectGarbage(store, { dryRun: true })).versions.map(v => v.version).sort()).toEqual(vs.slice(0, 2).sort())
    const report = await collectGarbage(store, { keepLast: 3 })
    expect(report.versions.map(v => v.version).sort()).toEqual(vs.slice(0, 2).sort())
    expect(report.blobs).toHaveLength(2)
    expect((await listed()).sort()).toEqual(vs.slice(2).sort())
    await expect(stat(internals(store).layout.snapshot('m', vs[0]!))).rejects.toMatchObject({ code: 'ENOENT' })
    // keepLast 1: only the target.
    expect((await collectGarbage(store, { keepLast: 1 })).versions.map(v => v.version).sort()).toEqual(vs.slice(2, 4).sort())
    expect(await listed()).toEqual([vs[4]])
    expect((await store.resolve('m@prod')).missing).toEqual([])
  })

  it('quota: removes least recently used unprotected versions only until under the quota', async () => {
    at(0)
    const old = await version('m', 10_000)
    at(1_000)
    const middle = await version('m', 10_000)
    at(2_000)
    const recent = await version('m', 10_000)
    const before = (await collectGarbage(store, { dryRun: true, quotaBytes: 1e12 })).quota?.before
    expect(before).toBe(30_000)
    const report = await collectGarbage(store, { quotaBytes: 25_000 })
    expect(report.versions.map(v => v.version)).toEqual([old])
    expect(report.quota).toEqual({ limit: 25_000, before: 30_000, after: 20_000 })
    expect((await listed()).sort()).toEqual([middle, recent].sort())
    // Already under the quota: nothing to do.
    expect((await collectGarbage(store, { quotaBytes: 25_000 })).versions).toEqual([])
  })

  it('quota: recent use as a label target counts, not only arrival', async () => {
    at(0)
    const first = await version()
    at(1_000)
    const second = await version()
    at(2_000)
    const third = await version()
    // `first` was prod's target until t=5000; with keepLast 1 it is not protected, but recently used.
    at(3_000)
    await store.setLabel('m', 'prod', first)
    at(5_000)
    await store.setLabel('m', 'prod', third)
    const report = await collectGarbage(store, { quotaBytes: 15_000, keepLast: 1 })
    expect(report.versions.map(v => v.version)).toEqual([second, first])
    expect(await listed()).toEqual([third])
  })

  it('quota never removes pinned, labelled or history-protected versions, even when it cannot be met', async () => {
    at(0)
    const pinned = await version()
    await store.pin('m', pinned)
    const history = await version()
    const labelled = await version()
    await store.setLabel('m', 'prod', history)
    await store.setLabel('m', 'prod', labelled)
    const other = await version('other')
    await store.setLabel('other', 'dev', other)
    at(1_000)
    const free = await version()
    const report = await collectGarbage(store, { quotaBytes: 0, keepLast: 2 })
    expect(report.versions.map(v => v.version)).toEqual([free])
    expect(report.quota).toEqual({ limit: 0, before: 50_000, after: 40_000 })
    expect((await listed()).sort()).toEqual([pinned, history, labelled].sort())
    expect(await listed('other')).toEqual([other])
  })

  it('quota counts a blob shared with a kept version as not freed', async () => {
    const file = join(dir, 'shared.bin')
    await writeFile(file, seededBytes(20_000, 99))
    at(0)
    const a = (await addPath(store, file, { name: 'm', pin: false })).version
    at(1_000)
    const b = (await addPath(store, file, { name: 'm', pin: false, metadata: { description: 'b' } })).version
    await store.setLabel('m', 'prod', b)
    at(2_000)
    const c = await version('m', 5_000)
    // Removing `a` frees nothing (its blob is b's); only `c` brings the blobs under 21 000 bytes.
    const report = await collectGarbage(store, { quotaBytes: 21_000, keepLast: 1 })
    expect(report.versions.map(v => v.version)).toEqual([a, c])
    expect(report.quota?.after).toBe(20_000)
    expect(await listed()).toEqual([b])
  })

  it('dryRun reports the plan and changes nothing', async () => {
    // `a` arrives first, so the quota takes it (with equal times the order was the version ids').
    at(0)
    const a = await version()
    at(500)
    const b = await version()
    at(1_000)
    const blobsBefore = (await readdir(internals(store).layout.blobs)).sort()
    const dry = await collectGarbage(store, { quotaBytes: 10_000, dryRun: true })
    expect(dry).toMatchObject({ dryRun: true, versions: [{ version: a }], quota: { before: 20_000, after: 10_000 } })
    expect((await listed()).sort()).toEqual([a, b].sort())
    expect((await readdir(internals(store).layout.blobs)).sort()).toEqual(blobsBefore)
    await stat(internals(store).layout.snapshot('m', a))
    const real = await collectGarbage(store, { quotaBytes: 10_000 })
    expect({ ...real, dryRun: true }).toEqual(dry)
  })
})
