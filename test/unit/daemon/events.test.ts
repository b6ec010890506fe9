import { afterEach, describe, expect, it, vi } from 'vitest'
import type { DaemonEvent, EventPayloads } from '../../../src/core/events.js'
import { EVENT_HISTORY, EventBus } from '../../../src/daemon/events.js'

const moved: EventPayloads['label.moved'] = { model: 'm', label: 'prod', version: 'v2', previous: 'v1', stamp: '1.0' }
const progress: EventPayloads['pull.progress'] = { model: 'm', version: 'v2', bytes: 0, totalBytes: 10, peers: 1 }

describe('EventBus', () => {
  afterEach(() => { vi.useRealTimers() })

  it('numbers events <boot>-<seq> from 1, stamps them, and tells subscribers until they unsubscribe', () => {
    vi.useFakeTimers({ now: 1_790_000_000_000 })
    const bus = new EventBus()
    const heard: DaemonEvent[] = []
    const off = bus.subscribe(e => heard.push(e))
    const a = bus.emit('label.moved', moved)
    const b = bus.emit('pull.started', { model: 'm', version: null, via: 'request' })
    off()
    bus.emit('pull.completed', { model: 'm', version: 'v2', via: 'request', ms: 5 })
    expect(bus.boot).toMatch(/^[0-9a-f]{8}$/)
    expect([a.id, b.id]).toEqual([`${bus.boot}-1`, `${bus.boot}-2`])
    expect([a.seq, b.seq]).toEqual([1, 2])
    expect(a).toMatchObject({ type: 'label.moved', time: 1_790_000_000_000, data: { model: 'm', label: 'prod' } })
    expect(heard.map(e => e.id)).toEqual([a.id, b.id])
    expect(new EventBus().boot).not.toBe(bus.boot)
  })

  it('since() replays what came after an id, oldest first, and nothing after the last one', () => {
    const bus = new EventBus()
    const ids = [
      bus.emit('label.moved', moved).id,
      bus.emit('version.staged', { model: 'm', label: 'prod', version: 'v3', current: 'v2', activateAt: null }).id,
      bus.emit('pull.failed', { model: 'm', label: 'prod', version: 'v3', outcome: 'failed', ms: 5, error: 'no peer has it' }).id,
      bus.emit('head.accepted', { model: 'm', label: 'prod', version: 'v3', via: 'gossip' }).id
    ]
    expect(bus.since(ids[1]!)?.map(e => e.id)).toEqual(ids.slice(2))
    expect(bus.since(ids[3]!)).toEqual([])
    expect(bus.since(`${bus.boot}-0`)?.map(e => e.id)).toEqual(ids)
    expect(new EventBus().since(`${new EventBus().boot}-0`)).toBeUndefined()
  })

  it('answers gone (undefined) for another boot, an id from the future, garbage, or compacted history', () => {
    const bus = new EventBus(3)
    for (let i = 0; i < 5; i++) bus.emit('pull.progress', { ...progress, bytes: i })
    expect(bus.since('deadbeef-4')).toBeUndefined()
    expect(bus.since(`${bus.boot}-6`)).toBeUndefined()
    expect(bus.since(`${bus.boot}-x`)).toBeUndefined()
    expect(bus.since('')).toBeUndefined()
    // Kept: 3, 4, 5. After 2 is still complete; after 1 would miss event 2.
    expect(bus.since(`${bus.boot}-2`)?.map(e => e.seq)).toEqual([3, 4, 5])
    expect(bus.since(`${bus.boot}-1`)).toBeUndefined()
    expect(bus.recent(2).map(e => e.seq)).toEqual([4, 5])
    expect(bus.recent().map(e => e.seq)).toEqual([3, 4, 5])
  })

  it('keeps EVENT_HISTORY events by default', () => {
    const bus = new EventBus()
    for (let i = 0; i < EVENT_HISTORY + 5; i++) bus.emit('pull.progress', progress)
    expect(bus.recent(EVENT_HISTORY + 10)).toHaveLength(EVENT_HISTORY)
    expect(bus.since(`${bus.boot}-5`)).toHaveLength(EVENT_HISTORY)
    expect(bus.since(`${bus.boot}-4`)).toBeUndefined()
  })
})
