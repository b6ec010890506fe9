/**
 * Reader priority (`fetcher/priority.ts`) and the session's use of it: chunks a reader waits for
 * first, then a streamed file's chunks in load order, then the session's own piece order; with
 * no reader, the session asks in exactly the order it would without the source.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { ChunkId } from '../../../src/core/digest.js'
import { ReadPriority } from '../../../src/fetcher/priority.js'
import { FetchSession, type SessionOptions } from '../../../src/fetcher/session.js'
import { PeerScores } from '../../../src/p2p/judge.js'
import { FakePeer, FakeTarget, fakePeers, makeChunks } from '../../helpers/fake-swarm.js'

const ids = (...names: string[]): ChunkId[] => names as ChunkId[]

describe('ReadPriority', () => {
  it('gives waited chunks first (oldest wait first), then readers\' load orders, skipping what is no longer pending', () => {
    const p = new ReadPriority()
    let changes = 0
    const off = p.onChange(() => { changes++ })
    const stopReading = p.read(ids('a', 'b', 'c', 'd'))
    const release1 = p.wait(ids('x'))
    p.wait(ids('y', 'z'))
    expect(changes).toBe(3)
    const done = new Set<string>(['z'])
    expect([...p.urgent(id => !done.has(id))]).toEqual(['x', 'y', 'a', 'b', 'c', 'd'])
    release1()
    done.add('a').add('c')
    expect([...p.urgent(id => !done.has(id))]).toEqual(['y', 'b', 'd'])
    stopReading()
    expect([...p.urgent(id => !done.has(id))]).toEqual(['y'])
    off()
    p.wait(ids('w'))
    expect(changes).toBe(3)
    expect(p.size).toEqual({ readers: 0, waits: 2 })
  })

  it('moves a reader\'s cursor over chunks done for good, so a long order is not walked again', () => {
    const p = new ReadPriority()
    const order = Array.from({ length: 1000 }, (_, i) => `c${i}` as ChunkId)
    p.read(order)
    const done = new Set(order.slice(0, 990))
    let asked = 0
    const pending = (id: ChunkId): boolean => { asked++; return !done.has(id) }
    expect([...p.urgent(pending)]).toHaveLength(10)
    asked = 0
    expect([...p.urgent(pending)]).toHaveLength(10)
    // Only the cursor's chunk and the ten after it are looked at the second time.
    expect(asked).toBe(11)
  })
})

describe('FetchSession with a priority source', () => {
  const live: FakePeer[] = []
  afterEach(() => { for (const p of live.splice(0)) p.dispose() })

  /** One request at a time, so the order of wants is the order of picks. */
  const ONE_AT_A_TIME: Partial<SessionOptions> = {
    requestTimeoutBaseMs: 200, noProgressTimeoutMs: 1_500, initialRateBytesPerSecond: 1e9, superSeedMinBytes: 0, stallMs: 500,
    minWindowBytes: 1, maxWindowBytes: 1, maxRequestsPerPeer: 1, pieceOrder: 'in-order'
  }

  async function wantsOf (chunks: Uint8Array[], priority?: ReadPriority): Promise<{ wants: ChunkId[], target: FakeTarget }> {
    const target = new FakeTarget(chunks)
    const peer = new FakePeer('a', target)
    live.push(peer)
    const session = new FetchSession(target, fakePeers([peer]), new PeerScores(), ONE_AT_A_TIME, priority !== undefined ? { priority } : {})
    const run = session.run()
    session.addPeer('a')
    await run
    return { wants: peer.wants, target }
  }

  it('asks for a waited chunk first, then the streamed file in load order', async () => {
    const chunks = makeChunks(12, 1_000, 2_000)
    const target = new FakeTarget(chunks)
    const priority = new ReadPriority()
    const loadOrder = [...target.ids].reverse()
    priority.read(loadOrder)
    priority.wait([target.ids[5] as ChunkId])
    const { wants } = await wantsOf(chunks, priority)
    expect(wants).toEqual([target.ids[5], ...loadOrder.filter(id => id !== target.ids[5])])
  })

  it('asks in its own order when nobody reads (an empty source changes nothing)', async () => {
    const chunks = makeChunks(12, 1_000, 2_000, 3)
    const without = await wantsOf(chunks)
    const empty = await wantsOf(chunks, new ReadPriority())
    expect(empty.wants).toEqual(without.wants)
    expect(without.wants).toEqual(without.target.ids)
  })

  it('asks at once for a chunk a reader starts waiting for while the pull runs', async () => {
    const chunks = makeChunks(30, 1_000, 2_000, 5)
    const target = new FakeTarget(chunks)
    const priority = new ReadPriority()
    const peer = new FakePeer('a', target)
    live.push(peer)
    const session = new FetchSession(target, fakePeers([peer]), new PeerScores(), ONE_AT_A_TIME, { priority })
    const run = session.run()
    session.addPeer('a')
    const last = target.ids[29] as ChunkId
    // As soon as the first chunk is asked for, a reader waits for the last one.
    await new Promise<void>(resolve => { const t = setInterval(() => { if (peer.wants.length > 0) { clearInterval(t); resolve() } }, 1) })
    const asked = peer.wants.length
    priority.wait([last])
    await run
    // The request in flight then is answered; the next one is the waited chunk.
    expect(peer.wants.indexOf(last)).toBe(asked)
  })

  it('while a reader streams, hands its pieces to every peer in turn, each with a small window', async () => {
    const chunks = makeChunks(24, 1_000, 1_000, 7)
    const target = new FakeTarget(chunks)
    const priority = new ReadPriority()
    priority.read(target.ids)
    const peers = ['a', 'b', 'c'].map(key => new FakePeer(key, target, { delayMs: 30 }))
    live.push(...peers)
    // Without a reader each peer's window would hold the whole version (100 KB); the rate's part of
    // the window (`windowSeconds`) is kept below one piece.
    const session = new FetchSession(target, fakePeers(peers), new PeerScores(), {
      ...ONE_AT_A_TIME, minWindowBytes: 100_000, maxWindowBytes: 100_000, maxRequestsPerPeer: 48, readerWindowBytes: 1_000, windowSeconds: 0.001
    }, { priority })
    const run = session.run()
    for (const p of peers) session.addPeer(p.key)
    await run
    expect(target.done).toBe(true)
    // The reader's first three chunks went one to each peer, and every peer served its share of
    // what came next (the endgame of the last few may differ).
    expect(new Set(peers.map(p => p.wants[0]))).toEqual(new Set(target.ids.slice(0, 3)))
    const early = new Set(target.ids.slice(0, 21))
    for (const p of peers) expect(p.wants.filter(id => early.has(id)).length).toBeGreaterThanOrEqual(5)
  })
})
