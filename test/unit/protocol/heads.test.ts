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
import { HEADS_PROTOCOL, MAX_SYNC_FRAME_BYTES, headSync, type HeadSource, type HeadSync } from '../../../src/protocol/heads/index.js'
import { SyncMessage } from '../../../src/protocol/heads/pb/heads.js'
import { HeadStore } from '../../../src/store/heads.js'
import { IndexDb, type Db } from '../../../src/store/index-db.js'
import { rejection } from '../../helpers/assert.js'

type Handler = (stream: Stream, connection: { remotePeer: PeerId }) => void | Promise<void>

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
        void handler(inbound, { remotePeer: peer(self) })
        return outbound
      }
    }
    return { registrar: registrar as unknown as Registrar, connectionManager: connectionManager as unknown as ConnectionManager }
  }
}

interface Side { book: HeadBook, index: IndexDb, offers: string[], service: HeadSync & { start: () => Promise<void>, stop: () => Promise<void> } }

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

  async function side (name: string): Promise<Side> {
    const index = new IndexDb(new MemoryLevel() as unknown as Db)
    await index.open()
    const book = await HeadBook.open(new HeadStore(index), new TrustPolicy([{ key: publisher, models: '*' }]), { clock: () => T0 + 60_000, log: silent })
    const offers: string[] = []
    const source: HeadSource = {
      digest: () => book.digest(),
      entries: () => book.list().map(h => ({ model: h.head.model, label: h.head.label, wall: h.head.stamp.wall, counter: h.head.stamp.counter, id: h.id })),
      signed: (model, label) => book.get(model, label)?.bytes,
      offer: async (bytes, from) => {
        offers.push(from)
        await book.offer(bytes, { from, via: 'sync' })
      }
    }
    const service = headSync(source)(net.components(name)) as Side['service']
    await service.start()
    return { book, index, offers, service }
  }

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
      const done = handler(inbound, { remotePeer: peer('evil') })
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
})
