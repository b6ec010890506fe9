import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { createPublicKey, generateKeyPairSync } from 'node:crypto'
import { MemoryLevel } from 'memory-level'
import { encodeBlock, type VersionId } from '../../../src/core/digest.js'
import { jitterOffset, publisherKeyOf, type Activation, type SignedHead } from '../../../src/core/heads.js'
import { TrustPolicy } from '../../../src/core/trust.js'
import type { DaemonEvent } from '../../../src/core/events.js'
import { EventBus } from '../../../src/daemon/events.js'
import { Activator, FollowRules, PULL_RETRY_MAX_MS, PULL_RETRY_MS, type LabelTarget, type VersionPuller } from '../../../src/heads/activator.js'
import { PullCancelledError, PullGivenUpError } from '../../../src/core/errors.js'
import { HeadBook } from '../../../src/heads/book.js'
import { HeadStore } from '../../../src/store/heads.js'
import { IndexDb, type Db } from '../../../src/store/index-db.js'
import { rejection } from '../../helpers/assert.js'

const version = (n: number): VersionId => encodeBlock(`version ${n}`).cid
const silent = { info () {}, warn () {}, debug () {} }
const NODE = 'node-under-test'
const MODEL = 'org/llama'

/** Local labels and complete versions, as the store would hold them. */
class FakeLabels implements LabelTarget {
  readonly refs = new Map<string, VersionId>()
  readonly complete = new Set<VersionId>()
  readonly calls: string[] = []

  async current (model: string, label: string): Promise<VersionId | undefined> {
    return this.refs.get(`${model}@${label}`)
  }

  async set (model: string, label: string, v: VersionId): Promise<void> {
    // The activator's one MUST: never point a label at a version that is not complete.
    if (!this.complete.has(v)) throw new Error(`label set to incomplete version ${v}`)
    this.calls.push(`set ${model}@${label} ${v}`)
    this.refs.set(`${model}@${label}`, v)
  }

  async remove (model: string, label: string): Promise<void> {
    this.calls.push(`remove ${model}@${label}`)
    this.refs.delete(`${model}@${label}`)
  }

  async isComplete (v: VersionId): Promise<boolean> {
    return this.complete.has(v)
  }
}

/** A puller whose pulls finish when the test says so. */
class FakePuller implements VersionPuller {
  readonly pulls: Array<{ model: string, label: string, version: VersionId, resolve: () => void, reject: (err: Error) => void }> = []

  async pull (model: string, label: string, v: VersionId): Promise<void> {
    await new Promise<void>((resolve, reject) => { this.pulls.push({ model, label, version: v, resolve, reject }) })
  }
}

/** Lets pending promise chains (book, activator, store) run to the end. */
async function settle (): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise(resolve => setImmediate(resolve))
}

describe('Activator', () => {
  const { privateKey: key } = generateKeyPairSync('ed25519')
  let index: IndexDb
  let book: HeadBook
  let labels: FakeLabels
  let puller: FakePuller
  let events: EventBus
  let heard: DaemonEvent[]
  let activator: Activator

  async function start (follow: string[] = ['org/*@prod']): Promise<void> {
    activator = new Activator({ book, labels, puller, events, follows: new FollowRules(follow), nodeId: NODE, log: silent, clock: () => Date.now() })
    await activator.start()
  }

  async function publish (label: string, v: VersionId | null, activation?: Activation): Promise<SignedHead> {
    const head = await book.publish({ model: MODEL, label, version: v, key, ...(activation !== undefined ? { activation } : {}) })
    await settle()
    await activator.reconcile(MODEL, label)
    return head
  }

  const types = (...only: string[]): string[] => heard.filter(e => only.length === 0 || only.includes(e.type)).map(e => e.type)

  beforeEach(async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'], now: 1_790_000_000_000 })
    index = new IndexDb(new MemoryLevel() as unknown as Db)
    await index.open()
    const trust = new TrustPolicy([{ key: publisherKeyOf(createPublicKey(key)), models: '*' }])
    book = await HeadBook.open(new HeadStore(index), trust, { clock: () => Date.now(), log: silent })
    labels = new FakeLabels()
    puller = new FakePuller()
    events = new EventBus()
    heard = []
    events.subscribe(e => heard.push(e))
  })

  afterEach(async () => {
    activator?.stop()
    vi.useRealTimers()
    await index.close()
  })

  it('hot: pulls a followed version, and moves the label only once it is complete', async () => {
    await start()
    await publish('prod', version(1))
    expect(puller.pulls.map(p => [p.model, p.label, p.version])).toEqual([[MODEL, 'prod', version(1)]])
    expect(activator.slot(MODEL, 'prod')?.state).toBe('pulling')
    expect(labels.calls).toEqual([])
    // Reconciling again while the pull runs does not start a second one.
    await activator.reconcile(MODEL, 'prod')
    expect(puller.pulls).toHaveLength(1)

    labels.complete.add(version(1))
    puller.pulls[0]!.resolve()
    await settle()
    await activator.reconcile(MODEL, 'prod')
    expect(labels.calls).toEqual([`set ${MODEL}@prod ${version(1)}`])
    expect(activator.slot(MODEL, 'prod')).toMatchObject({ state: 'active', local: version(1) })
    // The pull's own events are its puller's (`daemon/pull-events.ts`); the activator moves the label.
    expect(types('pull.started', 'pull.completed', 'label.moved')).toEqual(['label.moved'])
    expect(heard.find(e => e.type === 'label.moved')?.data).toMatchObject({ model: MODEL, label: 'prod', version: version(1), previous: null })
    expect(types()[0]).toBe('head.accepted')
  })

  it('hot with jitter: waits this node\'s offset after completion, then moves', async () => {
    await start()
    labels.refs.set(`${MODEL}@prod`, version(0))
    labels.complete.add(version(0)).add(version(1))
    const head = await publish('prod', version(1), { mode: 'hot', jitterMs: 60_000 })
    const offset = jitterOffset(head, NODE)
    expect(offset).toBeGreaterThan(0)
    expect(activator.slot(MODEL, 'prod')).toMatchObject({ state: 'waiting', activateAt: Date.now() + offset })
    await vi.advanceTimersByTimeAsync(offset - 1)
    await settle()
    expect(labels.calls).toEqual([])
    await vi.advanceTimersByTimeAsync(1)
    await settle()
    expect(labels.calls).toEqual([`set ${MODEL}@prod ${version(1)}`])
    expect(types('version.staged')).toEqual([])
  })

  it('a label this node does not follow and does not hold stays remote: no pull, no move', async () => {
    await start(['other/*'])
    await publish('prod', version(1))
    expect(activator.slot(MODEL, 'prod')?.state).toBe('remote')
    expect(activator.follows(MODEL, 'prod')).toBe(false)
    expect(puller.pulls).toEqual([])
    expect(labels.calls).toEqual([])
    expect(types('label.moved')).toEqual([])
  })

  it('a label this node does not follow still moves when the version is complete here', async () => {
    await start([])
    labels.complete.add(version(2))
    await publish('prod', version(2))
    expect(labels.calls).toEqual([`set ${MODEL}@prod ${version(2)}`])
    expect(puller.pulls).toEqual([])
    expect(activator.slot(MODEL, 'prod')?.state).toBe('active')
  })

  it('cold with `at`: stages (version.staged once), then moves at `at` plus jitter', async () => {
    await start()
    labels.refs.set(`${MODEL}@prod`, version(1))
    labels.complete.add(version(1)).add(version(2))
    const at = Date.now() + 3_600_000
    const head = await publish('prod', version(2), { mode: 'cold', at, jitterMs: 30_000 })
    const due = at + jitterOffset(head, NODE)
    expect(activator.slot(MODEL, 'prod')).toMatchObject({ state: 'staged', activateAt: due, local: version(1) })
    await activator.reconcile(MODEL, 'prod')
    expect(heard.filter(e => e.type === 'version.staged').map(e => e.data)).toEqual([{ model: MODEL, label: 'prod', version: version(2), current: version(1), activateAt: due }])
    await vi.advanceTimersByTimeAsync(due - Date.now() - 1)
    await settle()
    expect(labels.calls).toEqual([])
    await vi.advanceTimersByTimeAsync(1)
    await settle()
    expect(labels.calls).toEqual([`set ${MODEL}@prod ${version(2)}`])
    expect(activator.slot(MODEL, 'prod')?.state).toBe('active')
    expect(heard.find(e => e.type === 'label.moved')?.data).toMatchObject({ version: version(2), previous: version(1) })
    expect(types('version.staged')).toHaveLength(1)
  })

  it('cold without `at`: stays staged until activate()', async () => {
    await start()
    labels.refs.set(`${MODEL}@prod`, version(1))
    labels.complete.add(version(1)).add(version(2))
    await publish('prod', version(2), { mode: 'cold' })
    expect(activator.slot(MODEL, 'prod')?.state).toBe('staged')
    await vi.advanceTimersByTimeAsync(7 * 24 * 3600 * 1000)
    await settle()
    expect(labels.calls).toEqual([])
    expect(types('version.staged')).toHaveLength(1)
    expect(await activator.activate(MODEL, 'prod')).toEqual({ version: version(2), previous: version(1) })
    expect(labels.calls).toEqual([`set ${MODEL}@prod ${version(2)}`])
    expect(activator.slot(MODEL, 'prod')?.state).toBe('active')
    // Activating again is a no-op that says where the label is.
    expect(await activator.activate(MODEL, 'prod')).toEqual({ version: version(2), previous: version(2) })
    expect(labels.calls).toHaveLength(1)
  })

  it('a label not set here yet takes its first version once complete, whatever the activation says', async () => {
    await start()
    await publish('prod', version(1), { mode: 'cold' })
    await publish('canary', version(2), { mode: 'hot', jitterMs: 3_600_000 })
    expect(labels.calls).toEqual([])
    labels.complete.add(version(1)).add(version(2))
    for (const p of puller.pulls) p.resolve()
    await settle()
    await activator.reconcile(MODEL, 'prod')
    await activator.reconcile(MODEL, 'canary')
    expect(labels.calls.sort()).toEqual([`set ${MODEL}@canary ${version(2)}`, `set ${MODEL}@prod ${version(1)}`])
    expect(types('version.staged')).toEqual([])
  })

  it('activate() refuses a version that is not complete (ConflictError) and an unknown label (NotFoundError)', async () => {
    await start([])
    await publish('prod', version(3), { mode: 'cold' })
    expect(await rejection(activator.activate(MODEL, 'prod'))).toMatchObject({ name: 'ConflictError' })
    expect(await rejection(activator.activate(MODEL, 'nope'))).toMatchObject({ name: 'NotFoundError' })
    expect(labels.calls).toEqual([])
  })

  it('a removal head removes the local label', async () => {
    await start()
    labels.complete.add(version(1))
    await publish('prod', version(1))
    expect(labels.refs.get(`${MODEL}@prod`)).toBe(version(1))
    await publish('prod', null)
    expect(labels.calls).toEqual([`set ${MODEL}@prod ${version(1)}`, `remove ${MODEL}@prod`])
    expect(labels.refs.has(`${MODEL}@prod`)).toBe(false)
    expect(heard.filter(e => e.type === 'label.moved').map(e => [e.data.version, e.data.previous])).toEqual([[version(1), null], [null, version(1)]])
    expect(activator.slot(MODEL, 'prod')?.state).toBe('active')
  })

  it('a newer head arriving during a pull supersedes it: the old pull finishing does not move the label', async () => {
    await start()
    await publish('prod', version(1))
    await publish('prod', version(2))
    expect(puller.pulls.map(p => p.version)).toEqual([version(1), version(2)])
    expect(activator.slot(MODEL, 'prod')?.head.head.version).toBe(version(2))

    labels.complete.add(version(1))
    puller.pulls[0]!.resolve()
    await settle()
    await activator.reconcile(MODEL, 'prod')
    expect(labels.calls).toEqual([])
    expect(activator.slot(MODEL, 'prod')?.state).toBe('pulling')

    labels.complete.add(version(2))
    puller.pulls[1]!.resolve()
    await settle()
    await activator.reconcile(MODEL, 'prod')
    expect(labels.calls).toEqual([`set ${MODEL}@prod ${version(2)}`])
    // The superseded pull's failure, had it failed, would not have marked the new slot either.
  })

  it('a superseded pull that fails does not mark the newer head failed', async () => {
    await start()
    await publish('prod', version(1))
    await publish('prod', version(2))
    puller.pulls[0]!.reject(new Error('peer gone'))
    await settle()
    expect(activator.slot(MODEL, 'prod')?.state).toBe('pulling')
  })

  it('a failed pull marks the label failed, then is retried after PULL_RETRY_MS', async () => {
    await start()
    await publish('prod', version(1))
    puller.pulls[0]!.reject(new Error('no peer has it'))
    await settle()
    expect(activator.slot(MODEL, 'prod')).toMatchObject({ state: 'failed', error: 'no peer has it' })
    await vi.advanceTimersByTimeAsync(PULL_RETRY_MS - 1)
    await settle()
    expect(puller.pulls).toHaveLength(1)
    await vi.advanceTimersByTimeAsync(1)
    await settle()
    expect(puller.pulls).toHaveLength(2)
    expect(activator.slot(MODEL, 'prod')?.state).toBe('pulling')
    labels.complete.add(version(1))
    puller.pulls[1]!.resolve()
    await settle()
    await activator.reconcile(MODEL, 'prod')
    expect(labels.calls).toEqual([`set ${MODEL}@prod ${version(1)}`])
  })

  it('retries a head whose pull keeps failing after waits that double, up to PULL_RETRY_MAX_MS', async () => {
    await start()
    await publish('prod', version(1))
    const waits: number[] = []
    for (let i = 0; i < 9; i++) {
      puller.pulls[i]!.reject(new Error('no peer has it'))
      await settle()
      let waited = 0
      while (puller.pulls.length === i + 1 && waited < 2 * PULL_RETRY_MAX_MS) {
        await vi.advanceTimersByTimeAsync(1_000)
        await settle()
        waited += 1_000
      }
      waits.push(waited)
    }
    expect(waits).toEqual([5, 10, 20, 40, 80, 160, 300, 300, 300].map(s => s * 1000))
  })

  it('does not retry a pull that was given up or cancelled, and says how to try again', async () => {
    await start(['org/*'])
    await publish('prod', version(1))
    await publish('canary', version(2))
    const byVersion = (v: VersionId): FakePuller['pulls'][number] => puller.pulls.find(p => p.version === v)!
    byVersion(version(1)).reject(new PullGivenUpError(`gave up pulling ${MODEL}@${version(1)} after 10 failed attempts (last: stalled); its partial data was removed. To try again: shoal pull ${MODEL}@${version(1)}`))
    byVersion(version(2)).reject(new PullCancelledError(`the pull of ${MODEL}@${version(2)} was cancelled; its partial data was removed`))
    await settle()
    const before = puller.pulls.length
    await vi.advanceTimersByTimeAsync(2 * PULL_RETRY_MAX_MS)
    await settle()
    expect(puller.pulls).toHaveLength(before)
    expect(activator.slot(MODEL, 'prod')).toMatchObject({ state: 'failed', error: expect.stringContaining(`To try again: shoal pull ${MODEL}@${version(1)} (to pull it and move the label: shoal resolve --ensure ${MODEL}@prod)`) })
    expect(activator.slot(MODEL, 'canary')).toMatchObject({ state: 'failed', error: expect.stringContaining('was cancelled') })
    // A new head for the label tries again.
    await publish('prod', version(3))
    expect(puller.pulls.at(-1)?.version).toBe(version(3))
  })

  it('a pull that finishes without the version complete (e.g. removed meanwhile) is not left pulling forever', async () => {
    await start()
    await publish('prod', version(1))
    puller.pulls[0]!.resolve()
    await settle()
    expect(activator.slot(MODEL, 'prod')?.state).toBe('failed')
    expect(labels.calls).toEqual([])
    await vi.advanceTimersByTimeAsync(PULL_RETRY_MS)
    await settle()
    expect(puller.pulls).toHaveLength(2)
    expect(activator.slot(MODEL, 'prod')?.state).toBe('pulling')
  })

  it('a head from a peer is applied as it is accepted; one published here is left to its publisher, which applies it once', async () => {
    await start(['org/*'])
    // Published on another node, offered here as gossip.
    const elsewhere = await HeadBook.open(new HeadStore(new IndexDb(new MemoryLevel() as unknown as Db)), new TrustPolicy([{ key: publisherKeyOf(createPublicKey(key)), models: '*' }]), { clock: () => Date.now(), log: silent })
    const remote = await elsewhere.publish({ model: MODEL, label: 'prod', version: version(1), key })
    await book.offer(remote.bytes, { from: 'peer-a', via: 'gossip' })
    await settle()
    expect(puller.pulls.map(p => [p.label, p.version])).toEqual([['prod', version(1)]])
    await book.publish({ model: MODEL, label: 'canary', version: version(2), key })
    await settle()
    expect(activator.slot(MODEL, 'canary')).toBeUndefined()
    await activator.reconcileNow(MODEL, 'canary')
    expect(puller.pulls.map(p => [p.label, p.version])).toEqual([['prod', version(1)], ['canary', version(2)]])
  })

  it('reconcileAll steps every label the book holds; a pass asked for while one runs is dropped', async () => {
    await start(['org/*'])
    labels.complete.add(version(1))
    labels.complete.add(version(2))
    await book.publish({ model: MODEL, label: 'prod', version: version(1), key })
    await book.publish({ model: MODEL, label: 'canary', version: version(2), key })
    await settle()
    expect(labels.calls).toEqual([])
    const current = vi.spyOn(labels, 'current')
    await Promise.all([activator.reconcileAll(), activator.reconcileAll()])
    expect([...labels.calls].sort()).toEqual([`set ${MODEL}@canary ${version(2)}`, `set ${MODEL}@prod ${version(1)}`])
    expect(current).toHaveBeenCalledTimes(2)
  })

  it('at start, brings every label the book holds to its head', async () => {
    labels.complete.add(version(4))
    await book.publish({ model: MODEL, label: 'prod', version: version(4), key })
    await book.publish({ model: MODEL, label: 'canary', version: version(5), key })
    await start(['org/*@canary'])
    await settle()
    expect(labels.calls).toEqual([`set ${MODEL}@prod ${version(4)}`])
    expect(puller.pulls.map(p => p.version)).toEqual([version(5)])
  })

  it('FollowRules match name@label patterns, with a bare name meaning every label', () => {
    const rules = new FollowRules(['org/*@prod', 'llama', '*@canary'])
    expect(rules.follows('org/x', 'prod')).toBe(true)
    expect(rules.follows('org/x', 'dev')).toBe(false)
    expect(rules.follows('llama', 'dev')).toBe(true)
    expect(rules.follows('llama2', 'dev')).toBe(false)
    expect(rules.follows('any/thing', 'canary')).toBe(true)
    expect(rules.list()).toEqual(['org/*@prod', 'llama@*', '*@canary'])
  })
})
