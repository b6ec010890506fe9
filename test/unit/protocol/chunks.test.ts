import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import type { Stream } from '@libp2p/interface'
import { LengthPrefixedDecoder, streamPair } from '@libp2p/utils'
import { CID } from 'multiformats/cid'
import * as varint from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import { chunkIdOf, encodeBlock, type ChunkId, type VersionId } from '../../../src/core/digest.js'
import { BufferPool } from '../../../src/core/buffer-pool.js'
import { encodeBlock as blockFrame } from '../../../src/protocol/chunks/block.js'
import { PeerChannel } from '../../../src/protocol/chunks/client.js'
import { HAVE_UPDATE_INTERVAL_MS, MAX_FRAME_BYTES, MAX_PENDING_PER_STREAM, MAX_REQUEST_FRAME_BYTES, MAX_UNRECEIVED_PER_STREAM, POOLED_FRAME_MIN_BYTES } from '../../../src/protocol/chunks/constants.js'
import { ChunkRequest, ChunkResponse } from '../../../src/protocol/chunks/pb/chunks.js'
import { RecentSends, ServerSession, type ChunkSource, type HaveState, type UploadLimiter } from '../../../src/protocol/chunks/server.js'
import { Slots } from '../../../src/fetcher/bandwidth.js'
import { sameBytes, seededBytes } from '../../helpers/random.js'
import { rejection } from '../../helpers/assert.js'

/** The received parts of a block, joined for comparison. */
const joined = (parts: Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(parts))

/** A chunk source over a map, with hooks to hold reads and to fire availability. */
class FakeSource implements ChunkSource {
  readonly chunks = new Map<ChunkId, Uint8Array>()
  readonly haves = new Map<VersionId, HaveState>()
  readonly listeners = new Map<VersionId, Set<(indices: number[]) => void>>()
  readonly stopped: VersionId[] = []
  readonly reads: Array<{ id: ChunkId, signal: AbortSignal }> = []
  /** When set, each read waits for this before answering. */
  gate?: (id: ChunkId, signal: AbortSignal) => Promise<void>
  /** Bytes handed back with `release` (the peer said RECEIVED). */
  readonly released: Uint8Array[] = []

  async readChunk (id: ChunkId, signal: AbortSignal): Promise<Uint8Array | undefined> {
    this.reads.push({ id, signal })
    await this.gate?.(id, signal)
    return this.chunks.get(id)
  }

  async have (version: VersionId): Promise<HaveState | undefined> {
    return this.haves.get(version)
  }

  watch (version: VersionId, listener: (indices: number[]) => void): () => void {
    const set = this.listeners.get(version) ?? new Set()
    set.add(listener)
    this.listeners.set(version, set)
    return () => { set.delete(listener); this.stopped.push(version) }
  }

  release (bytes: Uint8Array): void {
    this.released.push(bytes)
  }

  fire (version: VersionId, indices: number[]): void {
    for (const l of this.listeners.get(version) ?? []) l(indices)
  }
}

/** Grants every slot and all bandwidth at once, and counts: `acquired` holds the bytes of each bandwidth grant. */
class CountingLimiter implements UploadLimiter {
  acquired: number[] = []
  active = 0
  released = 0

  async slot (): Promise<() => void> {
    this.active++
    return () => { this.active--; this.released++ }
  }

  async bandwidth (bytes: number): Promise<void> {
    this.acquired.push(bytes)
  }

  load (): number {
    return this.active
  }
}

/** A limiter over `slots` with no rate cap, reporting the slots' load (as the daemon's does). */
function slotsLimiter (slots: Slots): UploadLimiter {
  return {
    slot: async signal => await slots.acquire(signal),
    bandwidth: async () => {},
    slotWouldWait: () => slots.full,
    load: () => slots.inUse + slots.waiting
  }
}

/** Frames arriving on a raw stream (alongside any other listener). */
function frames (stream: Stream): Uint8ArrayList[] {
  const out: Uint8ArrayList[] = []
  const decoder = new LengthPrefixedDecoder({ maxDataLength: 2 * MAX_FRAME_BYTES, maxBufferSize: 4 * MAX_FRAME_BYTES })
  stream.addEventListener('message', evt => { for (const f of decoder.decode(evt.data)) out.push(f) })
  return out
}

function sendRaw (stream: Stream, bytes: Uint8Array, declaredLength = bytes.byteLength): void {
  stream.send(new Uint8ArrayList(varint.encode(declaredLength), bytes))
}


const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

const chunk = (i: number, size = 1_000 + i * 37): { id: ChunkId, bytes: Uint8Array } => {
  const bytes = seededBytes(size, i + 1)
  return { id: chunkIdOf(bytes), bytes }
}

const versionId = (name: string): VersionId => encodeBlock({ name }).cid

describe('/shoal/chunks/1.0.0', () => {
  let outbound: Stream
  let inbound: Stream
  let source: FakeSource
  let limiter: CountingLimiter

  beforeEach(async () => {
    ;[outbound, inbound] = await streamPair({ delay: 0 })
    source = new FakeSource()
    limiter = new CountingLimiter()
  })

  afterEach(() => {
    for (const s of [outbound, inbound]) if (s.status === 'open') s.abort(new Error('test over'))
  })

  const connect = (): PeerChannel => {
    new ServerSession(inbound, 'peer-a', source, limiter, new RecentSends(), { debug () {} })
    return new PeerChannel(outbound, 16 * 1024 * 1024)
  }

  it('WANT → BLOCK with the bytes, through the upload limiter, reporting load', async () => {
    const channel = connect()
    const { id, bytes } = chunk(1)
    source.chunks.set(id, bytes)
    expect(joined(await channel.want(id))).toEqual(bytes)
    expect(limiter.acquired).toEqual([bytes.byteLength])
    expect(channel.load).toBe(1) // the slot was held while the block was sent
    await vi.waitFor(() => { expect(limiter.released).toBe(1) })
  })

  it('with a pool, a large block arrives in one pooled buffer that `release` hands back', async () => {
    new ServerSession(inbound, 'peer-a', source, limiter, new RecentSends(), { debug () {} })
    const pool = new BufferPool(MAX_FRAME_BYTES)
    const channel = new PeerChannel(outbound, 16 * 1024 * 1024, pool)
    const large = chunk(1, 3 * POOLED_FRAME_MIN_BYTES + 5)
    const small = chunk(2, 100)
    for (const c of [large, small]) source.chunks.set(c.id, c.bytes)
    const parts = await channel.want(large.id)
    expect(parts).toHaveLength(1)
    expect(parts[0]!.buffer).toBeInstanceOf(SharedArrayBuffer)
    expect(joined(parts)).toEqual(large.bytes)
    expect(joined(await channel.want(small.id))).toEqual(small.bytes)
    channel.release(parts)
    expect(pool.take(1).buffer).toBe(parts[0]!.buffer)
  })

  it('the requester answers every BLOCK with RECEIVED, and only then does the server hand the bytes back', async () => {
    const requests = frames(inbound)
    const channel = connect()
    const { id, bytes } = chunk(5)
    source.chunks.set(id, bytes)
    expect(joined(await channel.want(id))).toEqual(bytes)
    await vi.waitFor(() => { expect(source.released).toHaveLength(1) })
    expect(source.released[0]).toBe(bytes)
    const types = requests.map(f => ChunkRequest.decode(f).type)
    expect(types).toEqual([ChunkRequest.Type.WANT, ChunkRequest.Type.RECEIVED])
  })

  it('a requester that never says RECEIVED gets its blocks, and the server keeps at most MAX_UNRECEIVED_PER_STREAM of them', async () => {
    new ServerSession(inbound, 'peer-a', source, limiter, new RecentSends(), { debug () {} })
    const received = frames(outbound)
    const ids = Array.from({ length: MAX_UNRECEIVED_PER_STREAM + 3 }, (_, i) => chunk(100 + i, 1000))
    for (const c of ids) {
      source.chunks.set(c.id, c.bytes)
      const want = ChunkRequest.encode({ type: ChunkRequest.Type.WANT, id: ids.indexOf(c) + 1, cid: CID.parse(c.id).bytes, urgent: false })
      sendRaw(outbound, want)
    }
    await vi.waitFor(() => { expect(received).toHaveLength(ids.length) })
    // RECEIVED for the first (let go: over the bound) and the last (kept) request.
    for (const reqId of [1, ids.length]) sendRaw(outbound, ChunkRequest.encode({ type: ChunkRequest.Type.RECEIVED, id: reqId, cid: new Uint8Array(0), urgent: false }))
    await vi.waitFor(() => { expect(source.released).toHaveLength(1) })
    await sleep(20)
    expect(source.released).toEqual([ids.at(-1)!.bytes])
  })

  it('a WANT that waits for an upload slot is answered QUEUED at once, then BLOCK once a slot frees', async () => {
    const slots = new Slots(1)
    const hold = await slots.acquire()
    new ServerSession(inbound, 'peer-a', source, slotsLimiter(slots), new RecentSends(), { debug () {} })
    const channel = new PeerChannel(outbound, 16 * 1024 * 1024)
    const { id, bytes } = chunk(1)
    source.chunks.set(id, bytes)
    const { id: free, bytes: freeBytes } = chunk(2)
    source.chunks.set(free, freeBytes)
    let queued = 0
    let done = false
    const wanted = channel.want(id, undefined, false, () => { queued++ }).then(b => { done = true; return b })
    await vi.waitFor(() => { expect(queued).toBe(1) })
    expect(channel.load).toBe(2) // the held slot and this request
    await sleep(50)
    expect(done).toBe(false)
    hold()
    expect(joined(await wanted)).toEqual(bytes)
    // A request served at once is not told QUEUED.
    let freeQueued = false
    expect(joined(await channel.want(free, undefined, false, () => { freeQueued = true }))).toEqual(freeBytes)
    expect(freeQueued).toBe(false)
    expect(queued).toBe(1)
  })

  it('WANTs waiting for an upload slot hold no bytes: the server reads at most one chunk per slot', async () => {
    const slots = new Slots(2)
    new ServerSession(inbound, 'peer-a', source, slotsLimiter(slots), new RecentSends(), { debug () {} })
    const channel = new PeerChannel(outbound, 64 * 1024 * 1024)
    const all = Array.from({ length: 12 }, (_, i) => chunk(40 + i))
    for (const c of all) source.chunks.set(c.id, c.bytes)
    // Reads are held until released one by one, as a slow disk would.
    let reading = 0
    let mostAtOnce = 0
    const waiting: Array<() => void> = []
    source.gate = async () => {
      reading++
      mostAtOnce = Math.max(mostAtOnce, reading)
      await new Promise<void>(resolve => waiting.push(resolve))
      reading--
    }
    let queued = 0
    const wanted = all.map(async c => joined(await channel.want(c.id, undefined, false, () => { queued++ })))
    await vi.waitFor(() => { expect(queued).toBe(10) })
    expect(source.reads.length).toBe(2)
    while (source.reads.length < all.length || waiting.length > 0) {
      await vi.waitFor(() => { expect(waiting.length).toBeGreaterThan(0) })
      waiting.shift()?.()
    }
    expect((await Promise.all(wanted)).map(b => b.byteLength)).toEqual(all.map(c => c.bytes.byteLength))
    expect(mostAtOnce).toBe(2)
  })

  it('WANT of a chunk the server lacks → DONT_HAVE', async () => {
    const channel = connect()
    const err = await rejection(channel.want(chunk(2).id))
    expect(err.name).toBe('DontHaveError')
    expect(limiter.acquired).toEqual([])
  })

  it('WANT of something that is not a raw chunk CID → ERROR BAD_REQUEST', async () => {
    const channel = connect()
    const err = await rejection(channel.want(versionId('not-a-chunk') as string as ChunkId))
    expect(err).toMatchObject({ name: 'PeerRequestError', wireCode: 'BAD_REQUEST' })
  })

  it('a block that still arrives after its request was cancelled goes to the request\'s onLate; without one it is dropped', async () => {
    const requests = frames(inbound)
    const channel = new PeerChannel(outbound, 16 * 1024 * 1024)
    const a = chunk(1)
    const b = chunk(2)
    const late: Uint8Array[][] = []
    const cancelA = new AbortController()
    const cancelB = new AbortController()
    const wantA = channel.want(a.id, cancelA.signal, false, undefined, bytes => late.push(bytes))
    const wantB = channel.want(b.id, cancelB.signal)
    await vi.waitFor(() => { expect(requests.length).toBeGreaterThanOrEqual(2) })
    const [idA, idB] = requests.slice(0, 2).map(f => ChunkRequest.decode(f).id)
    cancelA.abort()
    cancelB.abort()
    expect((await rejection(wantA)).name).toBe('AbortedError')
    expect((await rejection(wantB)).name).toBe('AbortedError')
    // The server had already begun sending both blocks: they arrive after the CANCELs.
    sendRaw(inbound, blockFrame(idA ?? 0, 0, a.bytes).subarray())
    sendRaw(inbound, blockFrame(idB ?? 0, 0, b.bytes).subarray())
    await vi.waitFor(() => { expect(late).toHaveLength(1) })
    expect(joined(late[0] ?? [])).toEqual(a.bytes)
    await sleep(20)
    expect(late).toHaveLength(1)
    // Each was acknowledged RECEIVED all the same, so the server reuses its buffer.
    const received = requests.map(f => ChunkRequest.decode(f)).filter(r => r.type === ChunkRequest.Type.RECEIVED).map(r => r.id)
    expect(received.sort()).toEqual([idA, idB].sort())
  })

  it('CANCEL aborts the server read and nothing is sent for it', async () => {
    const received = frames(outbound)
    const channel = connect()
    const slow = chunk(3)
    const quick = chunk(4)
    source.chunks.set(slow.id, slow.bytes)
    source.chunks.set(quick.id, quick.bytes)
    // The slow read answers only once cancelled (as if the read raced the CANCEL).
    source.gate = async (id, signal) => {
      if (id !== slow.id) return
      await new Promise<void>(resolve => signal.addEventListener('abort', () => resolve(), { once: true }))
    }
    const controller = new AbortController()
    const cancelled = channel.want(slow.id, controller.signal)
    await vi.waitFor(() => { expect(source.reads).toHaveLength(1) })
    controller.abort()
    expect((await rejection(cancelled)).name).toBe('AbortedError')
    await vi.waitFor(() => { expect(source.reads[0]?.signal.aborted).toBe(true) })
    expect(joined(await channel.want(quick.id))).toEqual(quick.bytes)
    await sleep(20)
    const responses = received.map(f => ChunkResponse.decode(f))
    expect(responses.map(r => r.type)).toEqual([ChunkResponse.Type.BLOCK])
    expect(limiter.acquired).toEqual([quick.bytes.byteLength])
  })

  it('INTEREST → HAVE: complete, a bitfield, or unknown', async () => {
    const channel = connect()
    const [full, part, unknown] = [versionId('full'), versionId('part'), versionId('unknown')]
    source.haves.set(full, { complete: true })
    source.haves.set(part, { complete: false, bits: Uint8Array.of(0b1010_0000, 0b0000_0001) })
    const seen = new Map<string, HaveState | undefined>()
    for (const v of [full, part, unknown]) await channel.watch(v, { onHave: s => seen.set(v, s), onUpdate () {} })
    await vi.waitFor(() => { expect(seen.size).toBe(3) })
    expect(seen.get(full)).toEqual({ complete: true })
    expect(seen.get(part)).toEqual({ complete: false, bits: Uint8Array.of(0b1010_0000, 0b0000_0001) })
    expect(seen.get(unknown)).toBeUndefined()
    expect(seen.has(unknown)).toBe(true)
  })

  it('streams HAVE_UPDATE batches as the source announces chunks, until UNINTEREST', async () => {
    const channel = connect()
    const v = versionId('growing')
    source.haves.set(v, { complete: false, bits: new Uint8Array(2) })
    const updates: number[][] = []
    let have = false
    await channel.watch(v, { onHave: () => { have = true }, onUpdate: i => updates.push(i) })
    await vi.waitFor(() => { expect(have).toBe(true) })
    source.fire(v, [1, 2])
    source.fire(v, [3])
    await vi.waitFor(() => { expect(updates).toHaveLength(1) })
    expect(updates[0]).toEqual([1, 2, 3])
    await sleep(HAVE_UPDATE_INTERVAL_MS * 2)
    expect(updates).toHaveLength(1)
    source.fire(v, [9])
    await vi.waitFor(() => { expect(updates).toHaveLength(2) })
    expect(updates[1]).toEqual([9])
    await channel.unwatch(v)
    await vi.waitFor(() => { expect(source.stopped).toEqual([v]) })
    expect(source.listeners.get(v)?.size ?? 0).toBe(0)
  })

  it(`answers BUSY beyond MAX_PENDING_PER_STREAM pending requests`, async () => {
    const channel = connect()
    source.gate = async (_id, signal) => { await new Promise<void>(resolve => signal.addEventListener('abort', () => resolve(), { once: true })) }
    const controllers = Array.from({ length: MAX_PENDING_PER_STREAM + 1 }, () => new AbortController())
    const wants = controllers.map((c, i) => channel.want(chunk(100 + i, 10).id, c.signal).then(() => undefined, (err: unknown) => err as Error))
    const last = await wants[MAX_PENDING_PER_STREAM]!
    expect(last).toMatchObject({ name: 'PeerRequestError', wireCode: 'BUSY' })
    await vi.waitFor(() => { expect(source.reads).toHaveLength(MAX_PENDING_PER_STREAM) })
    for (const c of controllers) c.abort()
    const rest = await Promise.all(wants.slice(0, MAX_PENDING_PER_STREAM))
    expect(rest.every(e => e?.name === 'AbortedError')).toBe(true)
    await vi.waitFor(() => { expect(source.reads.every(r => r.signal.aborted)).toBe(true) })
  })

  it('pipelines many WANTs that resolve out of order, each with its own bytes', async () => {
    const channel = connect()
    const all = Array.from({ length: 40 }, (_, i) => chunk(200 + i))
    for (const c of all) source.chunks.set(c.id, c.bytes)
    const delay = new Map(all.map((c, i) => [c.id, (all.length - i) * 2]))
    source.gate = async id => { await sleep(delay.get(id) ?? 0) }
    const order: number[] = []
    const results = await Promise.all(all.map(async (c, i) => {
      const bytes = await channel.want(c.id)
      order.push(i)
      return bytes
    }))
    results.forEach((bytes, i) => { expect(sameBytes(joined(bytes), all[i]!.bytes)).toBe(true) })
    expect(order).not.toEqual([...order].sort((a, b) => a - b))
    expect(limiter.released).toBe(all.length)
  })

  it('aborts the stream on an undecodable request frame', async () => {
    new ServerSession(inbound, 'peer-a', source, limiter, new RecentSends(), { debug () {} })
    const v = versionId('x')
    sendRaw(outbound, ChunkRequest.encode({ type: ChunkRequest.Type.INTEREST, id: 0, cid: encodeBlockBytes(v) }))
    await vi.waitFor(() => { expect(source.listeners.get(v)?.size).toBe(1) })
    sendRaw(outbound, Uint8Array.of(0xff, 0xff, 0xff, 0xff))
    await vi.waitFor(() => { expect(inbound.status).toBe('aborted') })
    // The session shut down: its interests were dropped.
    expect(source.stopped).toEqual([v])
    await vi.waitFor(() => { expect(outbound.status).not.toBe('open') })
  })

  it('aborts the stream on a request frame over MAX_REQUEST_FRAME_BYTES, before buffering it', async () => {
    new ServerSession(inbound, 'peer-a', source, limiter, new RecentSends(), { debug () {} })
    sendRaw(outbound, new Uint8Array(16), MAX_REQUEST_FRAME_BYTES + 1)
    await vi.waitFor(() => { expect(inbound.status).toBe('aborted') })
    expect(source.reads).toEqual([])
  })

  it('a response frame over MAX_FRAME_BYTES aborts the requester, failing pending WANTs with PeerGoneError', async () => {
    const channel = new PeerChannel(outbound, 16 * 1024 * 1024)
    let closedWith: Error | undefined
    let closed = false
    channel.onClose(err => { closed = true; closedWith = err })
    // A hand-made server: once asked anything, it announces a frame over the cap.
    inbound.addEventListener('message', () => { sendRaw(inbound, new Uint8Array(64), MAX_FRAME_BYTES + 1) }, { once: true })
    const a = channel.want(chunk(5).id)
    const b = channel.want(chunk(6).id)
    for (const p of [a, b]) expect((await rejection(p)).name).toBe('PeerGoneError')
    expect(closed).toBe(true)
    expect(closedWith?.name).toBe('MalformedDataError')
    expect(channel.isOpen).toBe(false)
    expect(outbound.status).toBe('aborted')
    expect((await rejection(channel.want(chunk(7).id))).name).toBe('PeerGoneError')
  })

  it('a closed server stream fails pending WANTs with PeerGoneError', async () => {
    const channel = connect()
    source.gate = async () => { await sleep(10_000) }
    const pending = channel.want(chunk(8).id)
    await vi.waitFor(() => { expect(source.reads).toHaveLength(1) })
    inbound.abort(new Error('gone'))
    expect((await rejection(pending)).name).toBe('PeerGoneError')
  })
})

function encodeBlockBytes (version: VersionId): Uint8Array<ArrayBuffer> {
  return new Uint8Array(CID.parse(version).bytes)
}

describe('RecentSends (super-seeding)', () => {
  it('holds a chunk for other peers while it is on its way, and for holdMs after the recipient confirmed it', () => {
    const recent = new RecentSends(1000, 16, 60_000)
    const sending = recent.start('c1', 'peer-a', 0)
    expect(recent.heldFor('c1', 'peer-b', 1)).toBe(true)
    expect(recent.heldFor('c1', 'peer-a', 1)).toBe(false)
    sending.done(true)
    // Handed to the stream but not yet RECEIVED: still on its way, however slow the link.
    expect(recent.heldFor('c1', 'peer-b', 30_000)).toBe(true)
    sending.delivered()
    const at = Date.now()
    expect(recent.heldFor('c1', 'peer-b', at + 500)).toBe(true)
    expect(recent.heldFor('c1', 'peer-b', at + 1500)).toBe(false)
  })

  it('a send never confirmed holds the chunk no longer than transitMs past its start', () => {
    const recent = new RecentSends(1000, 16, 5_000)
    recent.start('c1', 'peer-a', 5_000).done(true) // never RECEIVED: a stuck upload, or a peer gone
    expect(recent.heldFor('c1', 'peer-b', 9_900)).toBe(true)
    expect(recent.heldFor('c1', 'peer-b', 10_100)).toBe(false)
  })

  it('a cancelled send holds nothing (the recipient drops the block); a cancel after delivery changes nothing', () => {
    const recent = new RecentSends(1000, 16, 60_000)
    const first = recent.start('c1', 'peer-a')
    first.done(true)
    first.cancelled()
    expect(recent.heldFor('c1', 'peer-b')).toBe(false)
    const second = recent.start('c2', 'peer-a')
    second.done(true)
    second.delivered()
    second.cancelled()
    expect(recent.heldFor('c2', 'peer-b')).toBe(true)
  })

  it('forgets a send that failed, and keeps at most `max` entries', () => {
    const recent = new RecentSends(1000, 2)
    recent.start('c1', 'peer-a').done(false)
    expect(recent.heldFor('c1', 'peer-b')).toBe(false)
    recent.start('c2', 'peer-a')
    recent.start('c3', 'peer-a')
    recent.start('c4', 'peer-a')
    expect(recent.heldFor('c2', 'peer-b')).toBe(false)
    expect(recent.heldFor('c4', 'peer-b')).toBe(true)
  })

  it('a later send of the same chunk replaces the earlier one: the old record no longer counts', () => {
    const recent = new RecentSends(1000, 16, 60_000)
    const old = recent.start('c1', 'peer-a')
    recent.start('c1', 'peer-c')
    old.cancelled()
    expect(recent.heldFor('c1', 'peer-b')).toBe(true)
    expect(recent.heldFor('c1', 'peer-c')).toBe(false)
  })
})

describe('DUPLICATE over the wire', () => {
  /**
   * Two requesters, A and B, each on its own stream to servers sharing one `RecentSends`; the
   * source holds chunk `seed` and serves nothing until `release()`.
   */
  async function twoRequesters (seed: number): Promise<{ recent: RecentSends, c: ReturnType<typeof chunk>, a: PeerChannel, b: PeerChannel, release: () => void, close: () => void }> {
    const recent = new RecentSends()
    const source = new FakeSource()
    const c = chunk(seed)
    source.chunks.set(c.id, c.bytes)
    let release!: () => void
    const gate = new Promise<void>(resolve => { release = resolve })
    source.gate = async () => { await gate }
    const [outA, inA] = await streamPair({ delay: 0 })
    const [outB, inB] = await streamPair({ delay: 0 })
    new ServerSession(inA, 'peer-a', source, new CountingLimiter(), recent, { debug () {} })
    new ServerSession(inB, 'peer-b', source, new CountingLimiter(), recent, { debug () {} })
    const close = (): void => {
      for (const s of [outA, inA, outB, inB]) if (s.status === 'open') s.abort(new Error('test over'))
    }
    return { recent, c, a: new PeerChannel(outA, 16 * 1024 * 1024), b: new PeerChannel(outB, 16 * 1024 * 1024), release, close }
  }

  it('a second peer asking for a chunk being sent elsewhere gets DUPLICATE, unless urgent', async () => {
    const { recent, c, a, b, release, close } = await twoRequesters(7)
    try {
      const first = a.want(c.id)
      await vi.waitFor(() => { expect(recent.heldFor(c.id, 'peer-b')).toBe(true) })
      const refused = await rejection(b.want(c.id))
      // It names the peer the chunk went to.
      expect(refused).toMatchObject({ name: 'PeerRequestError', wireCode: 'DUPLICATE', holder: 'peer-a' })
      const urgent = b.want(c.id, undefined, true)
      release()
      expect(new Uint8Array(Buffer.concat(await first))).toEqual(c.bytes)
      expect(new Uint8Array(Buffer.concat(await urgent))).toEqual(c.bytes)
    } finally {
      close()
    }
  })

  it('once the first recipient cancels, a second peer is served without being urgent', async () => {
    const { recent, c, a, b, release, close } = await twoRequesters(8)
    try {
      const cancel = new AbortController()
      const first = rejection(a.want(c.id, cancel.signal))
      await vi.waitFor(() => { expect(recent.heldFor(c.id, 'peer-b')).toBe(true) })
      cancel.abort()
      await first
      await vi.waitFor(() => { expect(recent.heldFor(c.id, 'peer-b')).toBe(false) })
      const second = b.want(c.id)
      release()
      expect(new Uint8Array(Buffer.concat(await second))).toEqual(c.bytes)
      // B confirmed it: now A (or anyone else) is told DUPLICATE.
      await vi.waitFor(() => { expect(recent.heldFor(c.id, 'peer-a')).toBe(true) })
    } finally {
      close()
    }
  })
})
