/**
 * `/shoal/heads/1.0.0` between two services in one process: the registrar and connection manager
 * are stand-ins that join the two sides with an in-memory stream pair, and each side's
 * `HeadSource` is a head book over memory-level, shaped as the daemon shapes it.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { createPublicKey, generateKeyPairSync } from 'node:crypto'
import type { PeerId, Stream } from '@libp2p/interface'
import type { ConnectionManager, Registrar } from '@libp2p/interface-internal'
import { streamPair } from '@libp2p/utils'
import { MemoryLevel } from 'memory-level'
import * as varint from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import { encodeBlock, type VersionId } from '../../../src/core/digest.js'
import { publisherKeyOf, signHead, type Head, type SignedHead } from '../../../src/core/heads.js'
import { TrustPolicy } from '../../../src/core/trust.js'
import { HeadBook } from '../../../src/heads/book.js'
import { HEADS_PROTOCOL, MAX_SYNC_ENTRIES, MAX_SYNC_FRAME_BYTES, MAX_SYNC_HEADS, MAX_SYNC_WANTS, decodeSyncFrame, headSync, type HeadSource, type HeadSync } from '../../../src/protocol/heads/index.js'
import { SyncMessage } from '../../../src/protocol/heads/pb/heads.js'
import { HeadStore } from '../../../src/store/heads.js'
import { IndexDb, type Db } from '../../../src/store/index-db.js'
import { rejection } from '../../helpers/assert.js'

type Handler = (stream: Stream, connection: { remotePeer: PeerId, id: string }) => void | Promise<void>

const peer = (name: string): PeerId => ({ toString: () => name }) as unknown as PeerId
const version = (n: number): VersionId => encodeBlock(`version ${n}`).cid
const silent = { info () {}, warn () {}, debug () {} }
const T0 = 1_790_000_000_000

/** Handlers by `<node>|<protocol>`, and the streams opened between nodes. */
class FakeNetwork {
  readonly handlers = new Map<string, Handler>()
  readonly streams: Stream[] = []

  components (self: string): { registrar: Registrar, connectionManager: ConnectionManager } {
    const registrar = {
      handle: async (protocol: string, handler: Handler) => { this.handlers.set(`${self}|${protocol}`, handler) },
      unhandle: async (protocol: string) => { this.handlers.delete(`${self}|${protocol}`) }
    }
    const connectionManager = {
      openStream: async (to: PeerId, protocol: string) => {
        const handler = this.handlers.get(`${to.toString()}|${protocol}`)
        if (handler === undefined) throw new Error(`${to.toString()} does not handle ${protocol}`)
        const [outbound, inbound] = await streamPair({ delay: 0 })
        this.streams.push(outbound, inbound)
        void handler(inbound, { remotePeer: peer(self), id: `${self}-${to.toString()}` })
        return outbound
      }
    }
    return { registrar: registrar as unknown as Registrar, connectionManager: connectionManager as unknown as ConnectionManager }
  }
}

interface Side { book: HeadBook, index: IndexDb, offers: string[], trust: TrustPolicy, admit: { open: boolean }, service: HeadSync & { start: () => Promise<void>, stop: () => Promise<void> } }

describe('head anti-entropy (/shoal/heads/1.0.0)', () => {
  const { privateKey: key } = generateKeyPairSync('ed25519')
  const publisher = publisherKeyOf(createPublicKey(key))
  let net: FakeNetwork
  let a: Side
  let b: Side

  const head = (over: Partial<Head>): SignedHead => signHead({
    model: 'org/llama', label: 'prod', version: version(1), previous: null,
    stamp: { wall: T0, counter: 0 }, activation: { mode: 'hot' }, publisher, ...over
  }, key)

  async function side (name: string, rules = [{ key: publisher, models: '*' }]): Promise<Side> {
    const index = new IndexDb(new MemoryLevel() as unknown as Db)
    await index.open()
    const trust = new TrustPolicy(rules)
    const admit = { open: true }
    const book = await HeadBook.open(new HeadStore(index), trust, { clock: () => T0 + 60_000, log: silent })
    const offers: string[] = []
    const source: HeadSource = {
      digest: () => book.digest(),
      entries: () => book.list().map(h => ({ model: h.head.model, label: h.head.label, wall: h.head.stamp.wall, counter: h.head.stamp.counter, id: h.id })),
      signed: (model, label) => book.get(model, label)?.bytes,
      offer: async (bytes, from) => {
        offers.push(from)
        const outcome = await book.offer(bytes, { from, via: 'sync' })
        return outcome.status === 'future' ? 'later' : 'settled'
      },
      admit: () => admit.open,
      epoch: () => trust.epoch
    }
    const service = headSync(source)(net.components(name)) as Side['service']
    await service.start()
    return { book, index, offers, trust, admit, service }
  }

  /** Sends raw frames to `to` as peer `from` and waits for the handler to finish; returns the inbound end. */
  async function rawExchange (to: string, from: string, frames: Uint8Array[]): Promise<Stream> {
    const handler = net.handlers.get(`${to}|${HEADS_PROTOCOL}`)!
    const [outbound, inbound] = await streamPair({ delay: 0 })
    net.streams.push(outbound, inbound)
    const done = handler(inbound, { remotePeer: peer(from), id: `${from}-${to}` })
    for (const f of frames) outbound.send(new Uint8ArrayList(varint.encode(f.byteLength), f))
    await done
    return inbound
  }

  const frame = (m: Partial<SyncMessage>): Uint8Array => SyncMessage.encode({ digest: new Uint8Array(0), match: false, entries: [], heads: [], want: [], ...m })

  const ids = (s: Side): string[] => s.book.list().map(h => h.id).sort()

  beforeEach(async () => {
    net = new FakeNetwork()
    a = await side('a')
    b = await side('b')
  })

  afterEach(async () => {
    for (const s of net.streams) if (s.status === 'open') s.abort(new Error('test over'))
    for (const s of [a, b]) {
      await s.service.stop()
      await s.index.close()
    }
  })

  it('equal sets: one round trip that answers match, and nothing is offered', async () => {
    const h = head({})
    await a.book.offer(h.bytes, { via: 'local' })
    await b.book.offer(h.bytes, { via: 'local' })
    expect(await a.service.sync(peer('b'))).toEqual({ sent: 0, received: 0, matched: true })
    expect(await b.service.sync(peer('a'))).toEqual({ sent: 0, received: 0, matched: true })
    expect([...a.offers, ...b.offers]).toEqual([])
    // Two empty sets match too.
    const c = await side('c')
    const d = await side('d')
    expect(await c.service.sync(peer('d'))).toMatchObject({ matched: true })
    for (const s of [c, d]) { await s.service.stop(); await s.index.close() }
  })

  it('different sets converge both ways in one exchange; the next exchange matches', async () => {
    const onlyA = head({ label: 'a-only' })
    const onlyB = head({ label: 'b-only', version: version(2) })
    const newerOnA = head({ label: 'shared', stamp: { wall: T0, counter: 5 }, version: version(5) })
    const olderOnB = head({ label: 'shared', stamp: { wall: T0, counter: 1 }, version: version(4) })
    const newerOnB = head({ label: 'other', stamp: { wall: T0 + 10, counter: 0 }, version: version(7) })
    const olderOnA = head({ label: 'other', stamp: { wall: T0, counter: 0 }, version: version(6) })
    for (const h of [onlyA, newerOnA, olderOnA]) await a.book.offer(h.bytes, { via: 'local' })
    for (const h of [onlyB, olderOnB, newerOnB]) await b.book.offer(h.bytes, { via: 'local' })

    const result = await a.service.sync(peer('b'))
    expect(result).toEqual({ sent: 2, received: 2, matched: false })
    const expected = [onlyA, onlyB, newerOnA, newerOnB].map(h => h.id).sort()
    await vi.waitFor(() => { expect(ids(b)).toEqual(expected) })
    expect(ids(a)).toEqual(expected)
    expect(b.offers).toEqual(['a', 'a'])
    expect(a.offers).toEqual(['b', 'b'])
    expect(await b.service.sync(peer('a'))).toMatchObject({ matched: true })
    expect(await a.service.sync(peer('b'))).toMatchObject({ matched: true })
  })

  it('two distinct heads with the same stamp end in the same winner on both sides', async () => {
    const x = head({ version: version(1) })
    const y = head({ version: version(1), activation: { mode: 'cold' } })
    await a.book.offer(x.bytes, { via: 'local' })
    await b.book.offer(y.bytes, { via: 'local' })
    await a.service.sync(peer('b'))
    await vi.waitFor(() => { expect(ids(a)).toEqual(ids(b)) })
    expect(await a.service.sync(peer('b'))).toMatchObject({ matched: true })
  })

  it('the responder aborts on a malformed frame and offers nothing', async () => {
    const handler = net.handlers.get(`b|${HEADS_PROTOCOL}`)!
    for (const frame of [
      Uint8Array.from([0x03, 0xff, 0xff, 0xff]),
      new Uint8Array(varint.encode(MAX_SYNC_FRAME_BYTES + 1))
    ]) {
      const [outbound, inbound] = await streamPair({ delay: 0 })
      net.streams.push(outbound, inbound)
      const done = handler(inbound, { remotePeer: peer('evil'), id: 'evil-b' })
      outbound.send(new Uint8ArrayList(frame))
      await done
      expect(inbound.status).toBe('aborted')
    }
    expect(b.offers).toEqual([])
  })

  it('the opener fails on a malformed answer, and checks every head it is sent', async () => {
    await a.book.offer(head({}).bytes, { via: 'local' })
    // A responder that answers garbage.
    net.handlers.set(`evil|${HEADS_PROTOCOL}`, stream => { stream.send(new Uint8ArrayList(Uint8Array.from([0x02, 0xff, 0xff]))) })
    expect(await rejection(a.service.sync(peer('evil')))).toBeInstanceOf(Error)
    expect(a.offers).toEqual([])

    // A responder that lists a head and then sends junk in its place: offered, refused, nothing breaks.
    net.handlers.set(`liar|${HEADS_PROTOCOL}`, async stream => {
      const send = (m: Partial<SyncMessage>): void => {
        const bytes = SyncMessage.encode({ digest: new Uint8Array(0), match: false, entries: [], heads: [], want: [], ...m })
        stream.send(new Uint8ArrayList(varint.encode(bytes.byteLength), bytes))
      }
      send({ entries: [{ model: 'org/llama', label: 'canary', wall: BigInt(T0), counter: 0, id: new Uint8Array(32) }] })
      await new Promise(resolve => setTimeout(resolve, 20))
      send({ heads: [Uint8Array.from([1, 2, 3])] })
    })
    const before = ids(a)
    expect(await a.service.sync(peer('liar'))).toMatchObject({ matched: false, received: 1 })
    expect(a.offers).toEqual(['liar'])
    expect(a.book.counters.rejected.malformed).toBe(1)
    expect(ids(a)).toEqual(before)
  })
  it('two sides that trust different publishers: what differs is offered once, then exchanges answer match', async () => {
    const { privateKey: otherKey } = generateKeyPairSync('ed25519')
    const other = publisherKeyOf(createPublicKey(otherKey))
    // c trusts both publishers, d only the first.
    const c = await side('c', [{ key: publisher, models: '*' }, { key: other, models: '*' }])
    const d = await side('d')
    const foreign = signHead({ model: 'org/other', label: 'prod', version: version(3), previous: null, stamp: { wall: T0, counter: 0 }, activation: { mode: 'hot' }, publisher: other }, otherKey)
    await c.book.offer(foreign.bytes, { via: 'local' })
    await c.book.offer(head({}).bytes, { via: 'local' })
    await d.book.offer(head({}).bytes, { via: 'local' })
    // Each way once: c gives the foreign head, d wants it; d refuses it as untrusted both times.
    expect(await c.service.sync(peer('d'))).toMatchObject({ matched: false, sent: 1 })
    expect(await d.service.sync(peer('c'))).toMatchObject({ matched: false, received: 1 })
    expect(d.book.counters.rejected.untrusted).toBe(2)
    for (let i = 0; i < 3; i++) {
      expect(await c.service.sync(peer('d'))).toEqual({ sent: 0, received: 0, matched: true })
      expect(await d.service.sync(peer('c'))).toEqual({ sent: 0, received: 0, matched: true })
    }
    expect(d.book.counters.rejected.untrusted).toBe(2)
    // A change on either side, or d's trust rules, opens a full exchange again.
    d.trust.replace([{ key: publisher, models: '*' }, { key: other, models: 'org/*' }])
    expect(await d.service.sync(peer('c'))).toMatchObject({ matched: false, received: 1 })
    expect(d.book.get('org/other', 'prod')?.id).toBe(foreign.id)
    for (const x of [c, d]) { await x.service.stop(); await x.index.close() }
  })

  it('a list longer than MAX_SYNC_HEADS is carried by successive exchanges, each within the cap', async () => {
    const heads = Array.from({ length: MAX_SYNC_HEADS + 40 }, (_, i) => head({ label: `l${i}` }))
    for (const h of heads) await a.book.offer(h.bytes, { via: 'local' })
    const first = await a.service.sync(peer('b'))
    expect(first.sent).toBe(MAX_SYNC_HEADS)
    await vi.waitFor(() => { expect(ids(b)).toHaveLength(MAX_SYNC_HEADS) })
    // The cut list is not taken as settled: the next exchange is a full one and carries the rest.
    const second = await a.service.sync(peer('b'))
    expect(second).toMatchObject({ matched: false, sent: 40 })
    await vi.waitFor(() => { expect(ids(b)).toEqual(ids(a)) })
    expect(await a.service.sync(peer('b'))).toMatchObject({ matched: true })
  }, 60_000)

  it('the responder refuses frames over the limits before it offers anything', async () => {
    const one = head({}).bytes as Uint8Array<ArrayBuffer>
    const tooMany = frame({ heads: Array.from({ length: MAX_SYNC_HEADS + 1 }, () => one) })
    const badId = frame({ entries: [{ model: 'm', label: 'prod', wall: BigInt(T0), counter: 0, id: new Uint8Array(5) }] })
    for (const f of [tooMany, badId]) {
      const inbound = await rawExchange('b', 'evil', [frame({ digest: new Uint8Array(32) }), f])
      expect(inbound.status).toBe('aborted')
    }
    expect(b.offers).toEqual([])
  })

  it('resets an exchange from a peer over its budget, offering nothing', async () => {
    await a.book.offer(head({}).bytes, { via: 'local' })
    b.admit.open = false
    expect(await rejection(a.service.sync(peer('b')))).toBeInstanceOf(Error)
    expect(b.offers).toEqual([])
    expect(b.book.list()).toEqual([])
  })

  it('fails with SyncUnansweredError when the first answer takes longer than answerWithinMs', async () => {
    net.handlers.set(`mute|${HEADS_PROTOCOL}`, () => {})
    const err = await rejection(a.service.sync(peer('mute'), { answerWithinMs: 50 }))
    expect(err).toMatchObject({ name: 'SyncUnansweredError', message: 'mute did not answer a head sync within 50 ms' })
  })
})

describe('decodeSyncFrame', () => {
  it('refuses, with a MalformedDataError saying why, frames over the count and size limits', () => {
    const entry = { model: 'm', label: 'prod', wall: BigInt(T0), counter: 0, id: new Uint8Array(32) }
    const encode = (m: Partial<SyncMessage>): Uint8Array => SyncMessage.encode({ digest: new Uint8Array(0), match: false, entries: [], heads: [], want: [], ...m })
    const cases: Array<[Uint8Array, RegExp]> = [
      [encode({ want: Array.from({ length: MAX_SYNC_WANTS + 1 }, () => entry) }), /does not decode: .*"want" had too many elements/],
      [encode({ entries: Array.from({ length: MAX_SYNC_ENTRIES + 1 }, () => entry) }), /does not decode: .*"entries" had too many elements/],
      [encode({ digest: new Uint8Array(7) }), /digest of 7 bytes/],
      [encode({ entries: [{ ...entry, label: 'x'.repeat(65) }] }), /over the length limits/],
      [encode({ want: [{ ...entry, wall: 2n ** 60n }] }), /stamp past the limits/],
      [new Uint8Array(MAX_SYNC_FRAME_BYTES + 1), /over the \d+-byte limit/],
      [Uint8Array.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), /does not decode/]
    ]
    for (const [bytes, message] of cases) expect(() => decodeSyncFrame(bytes)).toThrow(expect.objectContaining({ name: 'MalformedDataError', message: expect.stringMatching(message) }))
    expect(decodeSyncFrame(encode({ entries: [entry], digest: new Uint8Array(32) })).entries).toHaveLength(1)
  })
})
