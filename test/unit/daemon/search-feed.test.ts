/**
 * `SearchFeed`, the one owner of search index updates, over the real event bus and an index that
 * records what it is asked to refresh.
 */
import { describe, expect, it } from 'vitest'
import { pino } from 'pino'
import type { AcceptedHead } from '../../../src/heads/book.js'
import { EventBus } from '../../../src/daemon/events.js'
import { SearchFeed } from '../../../src/daemon/search-feed.js'

function setup (learn: (version: string, peer: string) => Promise<boolean> = async () => false): {
  feed: SearchFeed, events: EventBus, calls: string[], accept: (a: AcceptedHead) => void, fail: Set<string>, logged: string[], finish: () => void
} {
  const calls: string[] = []
  const fail = new Set<string>()
  const logged: string[] = []
  let open: Array<() => void> = []
  const gate = async (): Promise<void> => { await new Promise<void>(resolve => { open.push(resolve) }) }
  const listeners: Array<(a: AcceptedHead) => void> = []
  const events = new EventBus()
  const feed = new SearchFeed({
    search: {
      refresh: async version => { calls.push(`v:${version}`); await gate(); if (fail.has(version)) throw new Error('disk gone'); return undefined },
      refreshLabels: async model => { calls.push(`m:${model}`); return 0 }
    },
    events,
    book: { onAccepted: l => { listeners.push(l); return () => { listeners.splice(listeners.indexOf(l), 1) } } },
    manifests: { learn },
    log: pino({ level: 'warn' }, { write: (line: string) => { logged.push(line) } })
  })
  feed.start()
  return { feed, events, calls, fail, logged, accept: a => { for (const l of listeners) l(a) }, finish: () => { for (const o of open.splice(0)) o(); open = [] } }
}

describe('SearchFeed', () => {
  it('a pull request and its pull.completed event run one refresh, which both wait for', async () => {
    const { feed, events, calls, finish } = setup()
    events.emit('pull.completed', { model: 'm', version: 'bafyv1', via: 'request', ms: 5 })
    let answered = false
    const asked = feed.refresh('bafyv1').then(() => { answered = true })
    await expect.poll(() => calls).toEqual(['v:bafyv1'])
    expect(answered).toBe(false)
    finish()
    await asked
    expect(calls).toEqual(['v:bafyv1'])
  })

  it('a refresh asked for while one runs runs after it, so it sees the change that prompted it', async () => {
    const { feed, events, calls, finish } = setup()
    const first = feed.refresh('bafyv1')
    await expect.poll(() => calls).toHaveLength(1)
    events.emit('version.removed', { model: 'm', version: 'bafyv1', via: 'rm' })
    const second = feed.refresh('bafyv1')
    finish()
    await first
    await expect.poll(() => calls).toHaveLength(2)
    finish()
    await second
    expect(calls).toEqual(['v:bafyv1', 'v:bafyv1'])
  })

  it('label moves and accepted heads refresh the model’s labels; a failed refresh is logged and never fails its caller', async () => {
    const { feed, events, calls, fail, logged, finish } = setup()
    events.emit('label.moved', { model: 'org/m', label: 'prod', version: 'bafyv1', previous: null, stamp: '1-0' })
    await expect.poll(() => calls).toEqual(['m:org/m'])
    fail.add('bafybad')
    const failing = feed.refresh('bafybad')
    await expect.poll(() => calls).toContain('v:bafybad')
    finish()
    await failing
    expect(logged.map(l => JSON.parse(l) as { msg: string, version: string, err: string })).toMatchObject([{ msg: 'search index update failed; it is rebuilt at the next start', version: 'bafybad', err: 'disk gone' }])
  })

  it('the manifest a head from a peer names is learnt from that peer, then its version is refreshed; nothing after stop', async () => {
    const learnt: string[] = []
    const { feed, accept, calls, finish } = setup(async (version, peer) => { learnt.push(`${version} from ${peer}`); return version === 'bafynew' })
    const head = (version: string | null, from?: string): AcceptedHead => ({ head: { head: { version } }, ...(from !== undefined ? { from } : {}) }) as unknown as AcceptedHead
    accept(head('bafynew', 'peer-a'))
    accept(head('bafyknown', 'peer-b'))
    accept(head(null, 'peer-c'))
    accept(head('bafylocal'))
    await expect.poll(() => calls).toEqual(['v:bafynew'])
    finish()
    expect(learnt).toEqual(['bafynew from peer-a', 'bafyknown from peer-b'])
    feed.stop()
    accept(head('bafynew', 'peer-a'))
    expect(learnt).toHaveLength(2)
  })
})
