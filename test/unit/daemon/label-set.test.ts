/**
 * `label set` answers with what reached the disk: the local switch happens after the head is
 * published (in the activator), and a switch the disk refuses fails the command with what was and
 * was not done, instead of being logged while the command exits 0.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { TrustPolicy } from '../../../src/core/trust.js'
import { EventBus } from '../../../src/daemon/events.js'
import { HeadsService } from '../../../src/daemon/heads-service.js'
import { Activator, FollowRules } from '../../../src/heads/activator.js'
import { HeadBook } from '../../../src/heads/book.js'
import { KeyRing, TrustFile } from '../../../src/heads/keyring.js'
import { addPath } from '../../../src/ingest/ingest.js'
import { Store } from '../../../src/store/store.js'
import { rejection } from '../../helpers/assert.js'
import { FaultyLevel, levelError } from '../../helpers/faulty-level.js'
import { tempDir } from '../../helpers/tmp.js'
import { internals } from '../../helpers/store-internals.js'

const silent = { info () {}, warn () {}, debug () {} }
const GiB = 1024 ** 3
/** Keys of a batch that moves a label (the `labels` sublevel). */
const movesLabel = (keys: string[]): boolean => keys.some(k => k.startsWith('!labels!'))

describe('label set when the local label cannot be written', () => {
  let dir: string
  let cleanup: () => Promise<void>

  beforeEach(async () => { ({ dir, cleanup } = await tempDir()) })
  afterEach(async () => { await cleanup() })

  it('fails with DISK_FULL and says the head went out but the label here did not move; a later switch applies it', async () => {
    const home = join(dir, 'home')
    const db = new FaultyLevel()
    let free = GiB
    const store = await Store.open(home, { db: db.db, freeBytes: async () => free })
    const model = join(dir, 'model')
    await mkdir(model)
    await writeFile(join(model, 'weights.bin'), Buffer.alloc(300_000, 1))
    const v1 = await addPath(store, model, { name: 'org/tiny' })
    await writeFile(join(model, 'weights.bin'), Buffer.alloc(300_000, 2))
    const v2 = await addPath(store, model, { name: 'org/tiny' })
    const keys = await KeyRing.open(home)
    const trustFile = await TrustFile.open(home)
    const policy = new TrustPolicy(HeadsService.rules(keys, [], trustFile))
    const book = await HeadBook.open(store.heads, policy, { log: silent })
    const events = new EventBus()
    const activator = new Activator({
      book,
      labels: {
        current: async (m, l) => (await store.labelRecord(m, l))?.version,
        set: async (m, l, v) => { await store.setLabel(m, l, v) },
        remove: async (m, l) => { await store.removeLabel(m, l) },
        isComplete: async v => await store.isComplete(v)
      },
      puller: { pull: async () => {} },
      events,
      follows: new FollowRules([]),
      nodeId: 'node',
      log: silent
    })
    await activator.start()
    const heads = new HeadsService({ store, book, activator, keys, trustFile, configTrust: [], policy, events })
    try {
      await heads.setLabel({ name: 'org/tiny', label: 'prod', version: v1.version })
      db.failBatches = { error: levelError(), when: movesLabel }
      free = 0
      const err = await rejection(heads.setLabel({ name: 'org/tiny', label: 'prod', version: v2.version }))
      expect(err.name).toBe('DiskFullError')
      expect(err.message).toMatch(new RegExp(`^published the head moving org/tiny@prod to ${v2.version} \\(nodes that follow the label act on it\\), but this node's own label was not changed: disk full while moving org/tiny@prod to ${v2.version} \\((IO error|not attempted)[^)]*\\): the label was not moved \\(it still points at ${v1.version}\\)`))
      expect(err.message).toMatch(/applies the head by itself once its store takes writes again/)
      expect(book.get('org/tiny', 'prod')?.head.version).toBe(v2.version)
      expect((await store.labelRecord('org/tiny', 'prod'))?.version).toBe(v1.version)

      // Nothing is published while the store takes no writes.
      const stamp = book.get('org/tiny', 'prod')?.head.stamp
      await expect(heads.setLabel({ name: 'org/tiny', label: 'prod', version: v1.version })).rejects.toMatchObject({ name: 'DiskFullError', message: expect.stringMatching(/^disk full while publishing a head for org\/tiny@prod \(not attempted\): nothing was published/) })
      expect(book.get('org/tiny', 'prod')?.head.stamp).toEqual(stamp)

      db.failBatches = undefined
      free = GiB
      await store.writable({ doing: 'checking', kept: 'nothing' })
      await activator.reconcile('org/tiny', 'prod')
      expect((await store.labelRecord('org/tiny', 'prod'))?.version).toBe(v2.version)
      expect((await readFile(internals(store).layout.ref('org/tiny', 'prod'), 'utf8')).trim()).toBe(v2.version)
    } finally {
      activator.stop()
      await store.close()
    }
  })
})
