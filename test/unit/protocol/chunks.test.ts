/**
 * `/shoal/chunks/2.0.0` over in-memory stream pairs: a `ServerSession` over a fake `ChunkSource`
 * answering a `PeerChannel` (or a hand-made peer on the other end, for answers the real server
 * never gives). Spans of blocks with their proofs, the upload limiter, QUEUED, RECEIVED and buffer
 * hand-back, CANCEL and late blocks, HAVE / HAVE_UPDATE with block ranges, caps, and DUPLICATE.
 * The bulk channel runs for real over loopback TCP (it is a TCP module); the old-peer check runs
 * two libp2p nodes over the memory transport.
 */
import { noise } from '@chainsafe/libp2p-noise'
import { identify } from '@libp2p/identify'
import type { Libp2p, Stream } from '@libp2p/interface'
import { memory } from '@libp2p/memory'
import { tcp } from '@libp2p/tcp'
import { LengthPrefixedDecoder, streamPair } from '@libp2p/utils'
import { yamux } from '@libp2p/yamux'
import { createLibp2p } from 'libp2p'
import { CID } from 'multiformats/cid'
import * as varint from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { BufferPool } from '../../../src/core/buffer-pool.js'
import { chunkIdOf, encodeBlock, type ChunkId, type VersionId } from '../../../src/core/digest.js'
import { MalformedDataError, ShoalError } from '../../../src/core/errors.js'
import { MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, blockCount, blockMatches, joinHashes, leafHash, proofOf, rootOf, splitHashes } from '../../../src/core/tree.js'
import { Slots } from '../../../src/fetcher/bandwidth.js'
import { MAX_BULK_DATA_BYTES, bulkService, type BulkReceiver, type BulkSender, type BulkService } from '../../../src/protocol/bulk/index.js'
import { decodeBlock, encodeBlock as blockFrame } from '../../../src/protocol/chunks/block.js'
import { PeerChannel, type BlockArrival, type BulkDialer, type Span, type WantOptions } from '../../../src/protocol/chunks/client.js'
import {
  MAX_FRAME_BYTES, MAX_HAVE_RANGES, MAX_PENDING_PER_STREAM, MAX_REQUEST_FRAME_BYTES, MAX_SPAN_BLOCKS,
  MAX_UNRECEIVED_PER_STREAM, OLD_CHUNKS_PROTOCOLS, POOLED_FRAME_MIN_BYTES
} from '../../../src/protocol/chunks/constants.js'
import { CHUNKS_PROTOCOL, OldPeerError, chunkExchange, type ChunkExchange } from '../../../src/protocol/chunks/index.js'
import { ChunkRequest, ChunkResponse, type BlockRange } from '../../../src/protocol/chunks/pb/chunks.js'
import { RecentSends, ServerSession, type ChunkSource, type HaveState, type HaveUpdate, type Span as ServedSpan, type UploadLimiter } from '../../../src/protocol/chunks/server.js'
import { rejection } from '../../helpers/assert.js'
import { sameBytes, seededBytes } from '../../helpers/random.js'

const KiB = 1024
const MiB = 1024 * KiB
/** The smallest block size a version may use: chunks of a few blocks stay small. */
const BS = MIN_BLOCK_SIZE

/** The received parts of a block, joined for comparison. */
const joined = (parts: Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(parts))

const chunk = (i: number, size = 1_000 + i * 37): { id: ChunkId, bytes: Uint8Array } => {
  const bytes = seededBytes(size, i + 1)
  return { id: chunkIdOf(bytes), bytes }
}

const versionId = (name: string): VersionId => encodeBlock({ name }).cid

/** Leaves and root of the tree over `bytes` cut in blocks of `blockSize`. */
function treeOf (bytes: Uint8Array, blockSize: number): { n: number, leaves: Uint8Array[], root: Uint8Array } {
  const n = blockCount(bytes.byteLength, blockSize)
  const leaves = Array.from({ length: n }, (_, i) => leafHash(bytes.subarray(i * blockSize, Math.min(bytes.byteLength, (i + 1) * blockSize))))
  return { n, leaves, root: rootOf(leaves) }
}

/** Blocks `[first, first + count)` of `bytes` with their proofs, as an honest node serves them; undefined past the chunk's end. */
function spanOf (bytes: Uint8Array, blockSize: number, first: number, count: number): ServedSpan | undefined {
  const { n, leaves } = treeOf(bytes, blockSize)
  if (first + count > n) return undefined
  const data = bytes.subarray(first * blockSize, Math.min(bytes.byteLength, (first + count) * blockSize))
  if (n === 1) return { data, proofs: [new Uint8Array(0)] }
  return { data, proofs: Array.from({ length: count }, (_, i) => joinHashes(proofOf(leaves, first + i))) }
}

/** Bytes of block `index` of `bytes`. */
const blockOf = (bytes: Uint8Array, blockSize: number, index: number): Uint8Array => bytes.subarray(index * blockSize, Math.min(bytes.byteLength, (index + 1) * blockSize))

/** A chunk source over a map, with hooks to hold reads and to fire availability. */
class FakeSource implements ChunkSource {
  readonly chunks = new Map<ChunkId, Uint8Array>()
  readonly haves = new Map<VersionId, HaveState>()
  readonly listeners = new Map<VersionId, Set<(update: HaveUpdate) => void>>()
  readonly stopped: VersionId[] = []
  readonly reads: Array<{ id: ChunkId, blockSize: number, first: number, count: number, signal: AbortSignal }> = []
  /** The bytes of every span read, in order (to tell which ones come back through `release`). */
  readonly served: Uint8Array[] = []
  /** When set, each read waits for this before answering. */
  gate?: (id: ChunkId, signal: AbortSignal) => Promise<void>
  /** Bytes handed back with `release` (the peer said RECEIVED). */
  readonly released: Uint8Array[] = []

  async readSpan (id: ChunkId, blockSize: number, first: number, count: number, signal: AbortSignal): Promise<ServedSpan | undefined> {
    this.reads.push({ id, blockSize, first, count, signal })
    await this.gate?.(id, signal)
    const bytes = this.chunks.get(id)
    const span = bytes === undefined ? undefined : spanOf(bytes, blockSize, first, count)
    if (span !== undefined) this.served.push(span.data)
    return span
  }

  async have (version: VersionId): Promise<HaveState | undefined> {
    return this.haves.get(version)
  }

  watch (version: VersionId, listener: (update: HaveUpdate) => void): () => void {
    const set = this.listeners.get(version) ?? new Set()
    set.add(listener)
    this.listeners.set(version, set)
    return () => { set.delete(listener); this.stopped.push(version) }
  }

  release (bytes: Uint8Array): void {
    this.released.push(bytes)
  }

  fire (version: VersionId, update: HaveUpdate): void {
    for (const l of this.listeners.get(version) ?? []) l(update)
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

/** A WANT frame as a requester writes it. */
const wantFrame = (id: number, chunkId: ChunkId, first: number, count: number, blockSize: number, urgent = false): Uint8Array =>
  ChunkRequest.encode({ type: ChunkRequest.Type.WANT, id, cid: CID.parse(chunkId).bytes, urgent, first, count, blockSize })

/** The responses among `received` frames that are not BLOCKs, decoded. */
const nonBlocks = (received: Uint8ArrayList[]): ChunkResponse[] => received.filter(f => decodeBlock(f) === undefined).map(f => ChunkResponse.decode(f))

/** A span of one whole chunk, the geometry of versions made before blocks. */
const whole = (id: ChunkId): Span => ({ chunk: id, first: 0, count: 1, blockSize: MAX_BLOCK_SIZE })

interface Got { index: number, proof: Uint8Array, data: Uint8Array }

/** Asks for `span` and collects its blocks (copied; the buffers go back to the channel). */
async function fetchSpan (channel: PeerChannel, span: Span, options: Omit<WantOptions, 'onBlock'> & { onBlock?: (b: BlockArrival) => void } = {}): Promise<Got[]> {
  const got: Got[] = []
  await channel.want(span, {
    ...options,
    onBlock: b => {
      got.push({ index: b.index, proof: Uint8Array.from(b.proof), data: joined(b.data) })
      options.onBlock?.(b)
      channel.release(b.data)
    }
  })
  return got
}

/** Checks that `got` are blocks `[first, first + count)` of `bytes` in order, each proven against the chunk's root. */
function expectVerified (got: Got[], bytes: Uint8Array, blockSize: number, first: number, count: number): void {
  const { n, root } = treeOf(bytes, blockSize)
  expect(got.map(b => b.index)).toEqual(Array.from({ length: count }, (_, i) => first + i))
  for (const b of got) {
    expect(sameBytes(b.data, blockOf(bytes, blockSize, b.index)), `block ${b.index}`).toBe(true)
    if (n === 1) expect(chunkIdOf(b.data)).toBe(chunkIdOf(bytes))
    else expect(blockMatches(b.data, b.index, n, splitHashes(b.proof), root), `proof of block ${b.index}`).toBe(true)
  }
}

/**
 * Waits until the server has handled every frame sent before: a fresh INTEREST is answered with
 * HAVE only after the frames ahead of it on the stream were taken in order.
 */
async function roundTrip (channel: PeerChannel, name: string): Promise<void> {
  let have = false
  await channel.watch(versionId(name), { onHave: () => { have = true }, onUpdate () {} })
  await vi.waitFor(() => { expect(have).toBe(true) })
}

const quiet = { debug () {} }

describe('/shoal/chunks/2.0.0', () => {
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
    new ServerSession(inbound, 'peer-a', source, limiter, new RecentSends(), quiet)
    return new PeerChannel(outbound, 16 * MiB)
  }

  it('WANT of a whole chunk → one BLOCK with the bytes and no proof, through the upload limiter, reporting load', async () => {
    const channel = connect()
    const { id, bytes } = chunk(1)
    source.chunks.set(id, bytes)
    const got = await fetchSpan(channel, whole(id))
    expectVerified(got, bytes, MAX_BLOCK_SIZE, 0, 1)
    expect(got[0]!.proof.byteLength).toBe(0)
    expect(source.reads.map(r => [r.first, r.count, r.blockSize])).toEqual([[0, 1, MAX_BLOCK_SIZE]])
    expect(limiter.acquired).toEqual([bytes.byteLength])
    expect(channel.load).toBe(1) // the slot was held while the block was sent
    await vi.waitFor(() => { expect(limiter.released).toBe(1) })
  })

  it('a span of several blocks arrives as BLOCKs in order, each with a proof that verifies it against the chunk\'s root', async () => {
    const requests = frames(inbound)
    const channel = connect()
    const c = chunk(2, 5 * BS + 1234) // 6 blocks, the last one short
    source.chunks.set(c.id, c.bytes)
    const got = await fetchSpan(channel, { chunk: c.id, first: 1, count: 5, blockSize: BS })
    expectVerified(got, c.bytes, BS, 1, 5)
    expect(got.at(-1)!.data.byteLength).toBe(1234)
    // A proof is its own block's: it does not pass for a neighbour.
    const { n, root } = treeOf(c.bytes, BS)
    expect(blockMatches(got[1]!.data, got[0]!.index, n, splitHashes(got[0]!.proof), root)).toBe(false)
    // The bandwidth is taken for the span at once; the span is acknowledged once.
    expect(limiter.acquired).toEqual([4 * BS + 1234])
    await vi.waitFor(() => { expect(requests.map(f => ChunkRequest.decode(f).type)).toEqual([ChunkRequest.Type.WANT, ChunkRequest.Type.RECEIVED]) })
  })

  it(`a span of MAX_SPAN_BLOCKS (${MAX_SPAN_BLOCKS}) blocks verifies block by block`, async () => {
    const channel = connect()
    const c = chunk(3, MAX_SPAN_BLOCKS * BS + 100) // one block more than the span
    source.chunks.set(c.id, c.bytes)
    expectVerified(await fetchSpan(channel, { chunk: c.id, first: 1, count: MAX_SPAN_BLOCKS, blockSize: BS }), c.bytes, BS, 1, MAX_SPAN_BLOCKS)
    expectVerified(await fetchSpan(channel, { chunk: c.id, first: 0, count: 1, blockSize: BS }), c.bytes, BS, 0, 1)
  })

  it('with a pool, each large block arrives in one pooled buffer that `release` hands back', async () => {
    new ServerSession(inbound, 'peer-a', source, limiter, new RecentSends(), quiet)
    const pool = new BufferPool(MAX_FRAME_BYTES)
    const channel = new PeerChannel(outbound, 16 * MiB, pool)
    const blockSize = 2 * POOLED_FRAME_MIN_BYTES
    const large = chunk(1, 3 * blockSize + 5)
    const small = chunk(2, 100)
    for (const c of [large, small]) source.chunks.set(c.id, c.bytes)
    const arrived: BlockArrival[] = []
    await channel.want({ chunk: large.id, first: 0, count: 4, blockSize }, { onBlock: b => arrived.push(b) })
    expect(arrived.map(b => b.index)).toEqual([0, 1, 2, 3])
    const { n, root } = treeOf(large.bytes, blockSize)
    for (const b of arrived.slice(0, 3)) {
      expect(b.data).toHaveLength(1)
      expect(b.data[0]!.buffer).toBeInstanceOf(SharedArrayBuffer)
      expect(blockMatches(b.data, b.index, n, splitHashes(b.proof), root)).toBe(true)
    }
    expect(joined(arrived.flatMap(b => b.data))).toEqual(large.bytes)
    expectVerified(await fetchSpan(channel, whole(small.id)), small.bytes, MAX_BLOCK_SIZE, 0, 1)
    const first = arrived[0]!.data
    channel.release(first)
    expect(pool.isOut(first[0]!)).toBe(false)
    expect(pool.take(first[0]!.buffer.byteLength).buffer).toBe(first[0]!.buffer)
  })

  it('the requester answers a span with one RECEIVED once all its blocks came, and only then does the server hand the bytes back', async () => {
    const requests = frames(inbound)
    const channel = connect()
    const c = chunk(5, 3 * BS)
    source.chunks.set(c.id, c.bytes)
    let receivedBefore: number | undefined
    const got = await fetchSpan(channel, { chunk: c.id, first: 0, count: 3, blockSize: BS }, {
      onBlock: b => { if (b.index === 2) receivedBefore = requests.filter(f => ChunkRequest.decode(f).type === ChunkRequest.Type.RECEIVED).length }
    })
    expectVerified(got, c.bytes, BS, 0, 3)
    expect(receivedBefore).toBe(0)
    await vi.waitFor(() => { expect(source.released).toHaveLength(1) })
    expect(source.released[0]).toBe(source.served[0])
    expect(requests.map(f => ChunkRequest.decode(f).type)).toEqual([ChunkRequest.Type.WANT, ChunkRequest.Type.RECEIVED])
  })

  it('a requester that never says RECEIVED gets its blocks, and the server keeps at most MAX_UNRECEIVED_PER_STREAM spans for it', async () => {
    new ServerSession(inbound, 'peer-a', source, limiter, new RecentSends(), quiet)
    const received = frames(outbound)
    const all = Array.from({ length: MAX_UNRECEIVED_PER_STREAM + 3 }, (_, i) => chunk(100 + i, 2 * BS))
    all.forEach((c, i) => {
      source.chunks.set(c.id, c.bytes)
      sendRaw(outbound, wantFrame(i + 1, c.id, 0, 2, BS))
    })
    await vi.waitFor(() => { expect(received).toHaveLength(2 * all.length) })
    // RECEIVED for the first (let go: over the bound) and the last (kept) request, then a
    // request whose answer shows both were handled.
    for (const reqId of [1, all.length]) sendRaw(outbound, ChunkRequest.encode({ type: ChunkRequest.Type.RECEIVED, id: reqId }))
    const v = versionId('barrier')
    sendRaw(outbound, ChunkRequest.encode({ type: ChunkRequest.Type.INTEREST, cid: CID.parse(v).bytes }))
    await vi.waitFor(() => { expect(received).toHaveLength(2 * all.length + 1) })
    expect(source.released).toHaveLength(1)
    expect(sameBytes(source.released[0], all.at(-1)!.bytes)).toBe(true)
  })

  it('a WANT that waits for an upload slot is answered QUEUED at once, then its blocks once a slot frees', async () => {
    const slots = new Slots(1)
    const hold = await slots.acquire()
    new ServerSession(inbound, 'peer-a', source, slotsLimiter(slots), new RecentSends(), quiet)
    const channel = new PeerChannel(outbound, 16 * MiB)
    const c = chunk(1, 2 * BS)
    source.chunks.set(c.id, c.bytes)
    const free = chunk(2)
    source.chunks.set(free.id, free.bytes)
    let queued = 0
    let done = false
    const wanted = fetchSpan(channel, { chunk: c.id, first: 0, count: 2, blockSize: BS }, { onQueued: () => { queued++ } }).then(b => { done = true; return b })
    await vi.waitFor(() => { expect(queued).toBe(1) })
    expect(channel.load).toBe(2) // the held slot and this request
    await roundTrip(channel, 'queued')
    expect(done).toBe(false)
    expect(source.reads).toEqual([])
    hold()
    expectVerified(await wanted, c.bytes, BS, 0, 2)
    // A request served at once is not told QUEUED.
    let freeQueued = false
    expectVerified(await fetchSpan(channel, whole(free.id), { onQueued: () => { freeQueued = true } }), free.bytes, MAX_BLOCK_SIZE, 0, 1)
    expect(freeQueued).toBe(false)
    expect(queued).toBe(1)
  })

  it('WANTs waiting for an upload slot hold no bytes: the server reads at most one span per slot', async () => {
    const slots = new Slots(2)
    new ServerSession(inbound, 'peer-a', source, slotsLimiter(slots), new RecentSends(), quiet)
    const channel = new PeerChannel(outbound, 64 * MiB)
    const all = Array.from({ length: 12 }, (_, i) => chunk(40 + i, 3 * BS))
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
    const wanted = all.map(async c => await fetchSpan(channel, { chunk: c.id, first: 0, count: 3, blockSize: BS }, { onQueued: () => { queued++ } }))
    await vi.waitFor(() => { expect(queued).toBe(10) })
    expect(source.reads.length).toBe(2)
    while (source.reads.length < all.length || waiting.length > 0) {
      await vi.waitFor(() => { expect(waiting.length).toBeGreaterThan(0) })
      waiting.shift()?.()
    }
    const results = await Promise.all(wanted)
    results.forEach((got, i) => { expectVerified(got, all[i]!.bytes, BS, 0, 3) })
    expect(mostAtOnce).toBe(2)
  })

  it('WANT of a chunk the server lacks, or of blocks past the end of one it has → DONT_HAVE', async () => {
    const channel = connect()
    const c = chunk(2, 3 * BS)
    source.chunks.set(c.id, c.bytes)
    const unknown = await rejection(channel.want({ chunk: chunk(3).id, first: 0, count: 1, blockSize: BS }, { onBlock () {} }))
    expect(unknown).toMatchObject({ name: 'DontHaveError', message: 'peer does not have every block of the span' })
    const pastEnd = await rejection(channel.want({ chunk: c.id, first: 2, count: 2, blockSize: BS }, { onBlock () {} }))
    expect(pastEnd.name).toBe('DontHaveError')
    expect(limiter.acquired).toEqual([])
  })

  it('WANT of something that is not a raw chunk CID → ERROR BAD_REQUEST', async () => {
    const channel = connect()
    const err = await rejection(channel.want({ chunk: versionId('not-a-chunk') as string as ChunkId, first: 0, count: 1, blockSize: BS }, { onBlock () {} }))
    expect(err).toMatchObject({ name: 'PeerRequestError', wireCode: 'BAD_REQUEST', message: 'peer answered BAD_REQUEST: cid is not a raw-codec CIDv1' })
  })

  it('a WANT with count 0, more than MAX_SPAN_BLOCKS, or a block size that is not a power of two from 16 KiB to 4 MiB → ERROR BAD_REQUEST saying so', async () => {
    new ServerSession(inbound, 'peer-a', source, limiter, new RecentSends(), quiet)
    const received = frames(outbound)
    const c = chunk(4, 4 * BS)
    source.chunks.set(c.id, c.bytes)
    const bad: Array<[first: number, count: number, blockSize: number]> = [
      [0, 0, BS],
      [0, MAX_SPAN_BLOCKS + 1, BS],
      [0, 1, 3 * BS],
      [0, 1, BS / 2],
      [0, 1, 2 * MAX_BLOCK_SIZE],
      [0, 1, 0],
      [0x10000, 1, BS]
    ]
    bad.forEach(([first, count, blockSize], i) => { sendRaw(outbound, wantFrame(i + 1, c.id, first, count, blockSize)) })
    await vi.waitFor(() => { expect(received).toHaveLength(bad.length) })
    const answers = nonBlocks(received)
    expect(answers.map(r => [r.type, r.id, r.code])).toEqual(bad.map((_, i) => [ChunkResponse.Type.ERROR, i + 1, 'BAD_REQUEST']))
    answers.forEach((r, i) => {
      const [first, count, blockSize] = bad[i]!
      expect(r.message).toBe(`a span is 1 to ${MAX_SPAN_BLOCKS} blocks of a power-of-two block size from 16 KiB to 4 MiB (got ${count} blocks from ${first} of ${blockSize} bytes)`)
    })
    expect(source.reads).toEqual([])
    expect(limiter.acquired).toEqual([])
  })

  it('a requester refuses a span of 0 or more than MAX_SPAN_BLOCKS blocks before sending it; a bad block size comes back as PeerRequestError BAD_REQUEST', async () => {
    const requests = frames(inbound)
    const channel = connect()
    const c = chunk(4, 4 * BS)
    source.chunks.set(c.id, c.bytes)
    for (const count of [0, MAX_SPAN_BLOCKS + 1]) {
      const err = await rejection(channel.want({ chunk: c.id, first: 0, count, blockSize: BS }, { onBlock () {} }))
      expect(err.message).toBe(`a span has 1 to ${MAX_SPAN_BLOCKS} blocks, not ${count}`)
    }
    expect(requests).toEqual([])
    const err = await rejection(channel.want({ chunk: c.id, first: 0, count: 1, blockSize: 48 * KiB }, { onBlock () {} }))
    expect(err).toMatchObject({ name: 'PeerRequestError', wireCode: 'BAD_REQUEST' })
    expect(err.message).toMatch(/^peer answered BAD_REQUEST: a span is 1 to \d+ blocks of a power-of-two block size from 16 KiB to 4 MiB \(got 1 blocks from 0 of 49152 bytes\)$/)
  })

  describe('a block the request did not ask for aborts the stream with MalformedDataError', () => {
    const cases: Array<[what: string, indices: number[]]> = [
      ['an index past the span', [2, 4]],
      ['an index before the span', [1]],
      ['a block sent twice', [2, 2]]
    ]
    for (const [what, indices] of cases) {
      it(what, async () => {
        const requests = frames(inbound)
        const channel = new PeerChannel(outbound, 16 * MiB)
        const c = chunk(9, 6 * BS)
        let closedWith: Error | undefined
        channel.onClose(err => { closedWith = err })
        const got: number[] = []
        const pending = channel.want({ chunk: c.id, first: 2, count: 2, blockSize: BS }, { onBlock: b => { got.push(b.index); channel.release(b.data) } })
        await vi.waitFor(() => { expect(requests).toHaveLength(1) })
        const reqId = ChunkRequest.decode(requests[0]!).id
        const span = spanOf(c.bytes, BS, 0, 6)!
        for (const index of indices) sendRaw(inbound, blockFrame(reqId, 0, index, span.proofs[index]!, blockOf(c.bytes, BS, index)).subarray())
        const err = await rejection(pending)
        const bad = indices.at(-1)!
        expect(err.name).toBe('PeerGoneError')
        expect(err.message).toBe(`stream to peer closed: peer sent block ${bad} for request ${reqId}, which did not ask for it`)
        expect(closedWith).toBeInstanceOf(MalformedDataError)
        expect(got).toEqual(indices.slice(0, -1))
        expect(channel.isOpen).toBe(false)
        expect(outbound.status).toBe('aborted')
      })
    }
  })

  it('a block for a request never made aborts the stream with MalformedDataError; a listener added after the close is told why', async () => {
    const channel = new PeerChannel(outbound, 16 * MiB)
    const c = chunk(10, 2 * BS)
    const span = spanOf(c.bytes, BS, 0, 2)!
    sendRaw(inbound, blockFrame(77, 0, 0, span.proofs[0]!, blockOf(c.bytes, BS, 0)).subarray())
    await vi.waitFor(() => { expect(channel.isOpen).toBe(false) })
    let closedWith: Error | undefined
    channel.onClose(err => { closedWith = err })
    expect(closedWith).toBeInstanceOf(MalformedDataError)
    expect(closedWith?.message).toBe('peer sent block 0 for request 77, which was never made')
  })

  /** A requester with two spans of two blocks, A (with `onLate`) and B (without), both cancelled before any block came. */
  async function twoCancelled (): Promise<{ channel: PeerChannel, requests: Uint8ArrayList[], late: Got[], sendA: () => void, sendB: () => void, idA: number, idB: number, a: { id: ChunkId, bytes: Uint8Array } }> {
    const requests = frames(inbound)
    const channel = new PeerChannel(outbound, 16 * MiB)
    const a = chunk(1, 2 * BS)
    const b = chunk(2, 2 * BS)
    const late: Got[] = []
    const cancelA = new AbortController()
    const cancelB = new AbortController()
    const onBlock = (): void => { throw new Error('no block is expected before the cancel') }
    const wantA = channel.want({ chunk: a.id, first: 0, count: 2, blockSize: BS }, { signal: cancelA.signal, onBlock, onLate: x => { late.push({ index: x.index, proof: Uint8Array.from(x.proof), data: joined(x.data) }) } })
    const wantB = channel.want({ chunk: b.id, first: 0, count: 2, blockSize: BS }, { signal: cancelB.signal, onBlock })
    await vi.waitFor(() => { expect(requests.length).toBeGreaterThanOrEqual(2) })
    const [idA, idB] = requests.slice(0, 2).map(f => ChunkRequest.decode(f).id) as [number, number]
    cancelA.abort()
    cancelB.abort()
    expect(await rejection(wantA)).toMatchObject({ name: 'AbortedError', message: 'request cancelled' })
    expect((await rejection(wantB)).name).toBe('AbortedError')
    await vi.waitFor(() => { expect(requests.filter(f => ChunkRequest.decode(f).type === ChunkRequest.Type.CANCEL)).toHaveLength(2) })
    // The server had already begun sending both spans: their blocks arrive after the CANCELs.
    const send = (id: number, bytes: Uint8Array) => (): void => {
      const span = spanOf(bytes, BS, 0, 2)!
      for (const i of [0, 1]) sendRaw(inbound, blockFrame(id, 0, i, span.proofs[i]!, blockOf(bytes, BS, i)).subarray())
    }
    return { channel, requests, late, sendA: send(idA, a.bytes), sendB: send(idB, b.bytes), idA, idB, a }
  }

  const receivedIds = (requests: Uint8ArrayList[]): number[] => requests.map(f => ChunkRequest.decode(f)).filter(r => r.type === ChunkRequest.Type.RECEIVED).map(r => r.id)

  it('blocks that still arrive after their request was cancelled go to the request\'s onLate, then RECEIVED; without one they are dropped', async () => {
    const { channel, requests, late, sendA, sendB, idA, a } = await twoCancelled()
    // B's first, so once A's are in, B's were handled.
    sendB()
    sendA()
    await vi.waitFor(() => { expect(late).toHaveLength(2) })
    expectVerified(late, a.bytes, BS, 0, 2)
    // A's span was acknowledged all the same, so the server reuses its buffer.
    await vi.waitFor(() => { expect(receivedIds(requests)).toContain(idA) })
    expect(channel.isOpen).toBe(true)
  })

  // As in 1.0.0, where every block was acknowledged: the server may reuse the span's buffer.
  it('a span cancelled without onLate whose blocks still arrive is acknowledged RECEIVED', async () => {
    const { requests, sendA, sendB, idB } = await twoCancelled()
    sendB()
    sendA()
    await vi.waitFor(() => { expect(receivedIds(requests)).toContain(idB) })
  })

  it('CANCEL aborts the server read and nothing is sent for it', async () => {
    const received = frames(outbound)
    const channel = connect()
    const slow = chunk(3, 2 * BS)
    const quick = chunk(4, 2 * BS)
    source.chunks.set(slow.id, slow.bytes)
    source.chunks.set(quick.id, quick.bytes)
    // The slow read answers only once cancelled (as if the read raced the CANCEL).
    source.gate = async (id, signal) => {
      if (id !== slow.id) return
      await new Promise<void>(resolve => signal.addEventListener('abort', () => resolve(), { once: true }))
    }
    const controller = new AbortController()
    const cancelled = channel.want({ chunk: slow.id, first: 0, count: 2, blockSize: BS }, { signal: controller.signal, onBlock () {} })
    await vi.waitFor(() => { expect(source.reads).toHaveLength(1) })
    controller.abort()
    expect((await rejection(cancelled)).name).toBe('AbortedError')
    await vi.waitFor(() => { expect(source.reads[0]?.signal.aborted).toBe(true) })
    expectVerified(await fetchSpan(channel, { chunk: quick.id, first: 0, count: 2, blockSize: BS }), quick.bytes, BS, 0, 2)
    // Both serves have ended (their slots are back): all that was sent is on the wire.
    await vi.waitFor(() => { expect(limiter.released).toBe(2) })
    expect(received.map(f => decodeBlock(f)?.id)).toEqual([2, 2])
    expect(limiter.acquired).toEqual([quick.bytes.byteLength])
  })

  it('INTEREST → HAVE: complete, whole chunks and block ranges, block ranges alone, or unknown', async () => {
    const channel = connect()
    const [full, part, blocksOnly, unknown] = [versionId('full'), versionId('part'), versionId('blocks-only'), versionId('unknown')]
    const ranges: BlockRange[] = [{ chunk: 3, first: 2, count: 5 }, { chunk: 11, first: 0, count: 1 }]
    source.haves.set(full, { complete: true })
    source.haves.set(part, { complete: false, bits: Uint8Array.of(0b1010_0000, 0b0000_0001), ranges })
    source.haves.set(blocksOnly, { complete: false, bits: new Uint8Array(0), ranges: ranges.slice(0, 1) })
    const seen = new Map<string, HaveState | undefined>()
    for (const v of [full, part, blocksOnly, unknown]) await channel.watch(v, { onHave: s => seen.set(v, s), onUpdate () {} })
    await vi.waitFor(() => { expect(seen.size).toBe(4) })
    expect(seen.get(full)).toEqual({ complete: true })
    expect(seen.get(part)).toEqual({ complete: false, bits: Uint8Array.of(0b1010_0000, 0b0000_0001), ranges })
    expect(seen.get(blocksOnly)).toEqual({ complete: false, bits: new Uint8Array(0), ranges: ranges.slice(0, 1) })
    expect(seen.get(unknown)).toBeUndefined()
    expect(seen.has(unknown)).toBe(true)
  })

  it('streams HAVE_UPDATE batches of whole chunks (indices) and verified blocks (ranges) as the source announces them, until UNINTEREST', async () => {
    const channel = connect()
    const v = versionId('growing')
    source.haves.set(v, { complete: false, bits: new Uint8Array(2), ranges: [] })
    const updates: HaveUpdate[] = []
    let have = false
    await channel.watch(v, { onHave: () => { have = true }, onUpdate: u => updates.push(u) })
    await vi.waitFor(() => { expect(have).toBe(true) })
    source.fire(v, { chunks: [1, 2], ranges: [] })
    source.fire(v, { chunks: [3], ranges: [{ chunk: 4, first: 0, count: 2 }] })
    source.fire(v, { chunks: [], ranges: [{ chunk: 4, first: 2, count: 1 }] })
    await vi.waitFor(() => { expect(updates).toHaveLength(1) })
    expect(updates[0]).toEqual({ chunks: [1, 2, 3], ranges: [{ chunk: 4, first: 0, count: 2 }, { chunk: 4, first: 2, count: 1 }] })
    // Blocks alone make an update too; nothing is sent between batches.
    source.fire(v, { chunks: [], ranges: [{ chunk: 9, first: 7, count: 3 }] })
    await vi.waitFor(() => { expect(updates).toHaveLength(2) })
    expect(updates).toEqual([updates[0], { chunks: [], ranges: [{ chunk: 9, first: 7, count: 3 }] }])
    await channel.unwatch(v)
    await vi.waitFor(() => { expect(source.stopped).toEqual([v]) })
    expect(source.listeners.get(v)?.size ?? 0).toBe(0)
  })

  it(`more than MAX_HAVE_RANGES (${MAX_HAVE_RANGES}) new block ranges go out in several HAVE_UPDATEs, none over the cap`, async () => {
    const received = frames(outbound)
    const channel = connect()
    const v = versionId('many')
    source.haves.set(v, { complete: false, bits: new Uint8Array(1), ranges: [] })
    const updates: HaveUpdate[] = []
    await channel.watch(v, { onHave () {}, onUpdate: u => updates.push(u) })
    await vi.waitFor(() => { expect(source.listeners.get(v)?.size).toBe(1) })
    const ranges = Array.from({ length: MAX_HAVE_RANGES + 5 }, (_, i) => ({ chunk: i, first: 0, count: 1 }))
    source.fire(v, { chunks: [7], ranges })
    await vi.waitFor(() => { expect(updates.flatMap(u => u.ranges)).toHaveLength(ranges.length) }, { timeout: 10_000 })
    expect(updates.map(u => u.ranges.length)).toEqual([MAX_HAVE_RANGES, 5])
    expect(updates.flatMap(u => u.chunks)).toEqual([7])
    expect(updates.flatMap(u => u.ranges).map(r => r.chunk)).toEqual(ranges.map(r => r.chunk))
    for (const f of received) expect(f.byteLength).toBeLessThanOrEqual(MAX_FRAME_BYTES)
    expect(channel.isOpen).toBe(true)
  })

  it('a HAVE_UPDATE listing more than MAX_HAVE_RANGES ranges aborts the requester with MalformedDataError, before it is acted on', async () => {
    const channel = new PeerChannel(outbound, 16 * MiB)
    const v = versionId('flood')
    const updates: HaveUpdate[] = []
    let closedWith: Error | undefined
    channel.onClose(err => { closedWith = err })
    await channel.watch(v, { onHave () {}, onUpdate: u => updates.push(u) })
    const ranges = Array.from({ length: MAX_HAVE_RANGES + 1 }, (_, i) => ({ chunk: i, first: 0, count: 1 }))
    sendRaw(inbound, ChunkResponse.encode({ type: ChunkResponse.Type.HAVE_UPDATE, version: CID.parse(v).bytes, ranges }))
    await vi.waitFor(() => { expect(channel.isOpen).toBe(false) })
    expect(closedWith).toBeInstanceOf(MalformedDataError)
    expect(closedWith?.message).toMatch(/^undecodable response: .*"ranges" had too many elements/)
    expect(updates).toEqual([])
  })

  it(`answers BUSY beyond MAX_PENDING_PER_STREAM (${MAX_PENDING_PER_STREAM}) pending requests`, async () => {
    const channel = connect()
    source.gate = async (_id, signal) => { await new Promise<void>(resolve => signal.addEventListener('abort', () => resolve(), { once: true })) }
    const controllers = Array.from({ length: MAX_PENDING_PER_STREAM + 1 }, () => new AbortController())
    const wants = controllers.map((c, i) => channel.want({ chunk: chunk(100 + i, 10).id, first: 0, count: 1, blockSize: BS }, { signal: c.signal, onBlock () {} }).then(() => undefined, (err: unknown) => err as Error))
    const last = await wants[MAX_PENDING_PER_STREAM]!
    expect(last).toMatchObject({ name: 'PeerRequestError', wireCode: 'BUSY', message: `peer answered BUSY: more than ${MAX_PENDING_PER_STREAM} requests pending` })
    await vi.waitFor(() => { expect(source.reads).toHaveLength(MAX_PENDING_PER_STREAM) })
    for (const c of controllers) c.abort()
    const rest = await Promise.all(wants.slice(0, MAX_PENDING_PER_STREAM))
    expect(rest.every(e => e?.name === 'AbortedError')).toBe(true)
    await vi.waitFor(() => { expect(source.reads.every(r => r.signal.aborted)).toBe(true) })
  })

  it('pipelines many WANTs that resolve out of order, each with its own verified blocks', async () => {
    const channel = connect()
    const all = Array.from({ length: 40 }, (_, i) => chunk(200 + i, (2 + (i % 3)) * BS + i))
    for (const c of all) source.chunks.set(c.id, c.bytes)
    // Each read ends only after the next request's read has: the last request is read first.
    const readers = new Map<ChunkId, () => void>()
    const turns = new Map(all.map(c => [c.id, new Promise<void>(resolve => readers.set(c.id, resolve))] as const))
    source.gate = async id => {
      const i = all.findIndex(c => c.id === id)
      if (i < all.length - 1) await turns.get(all[i + 1]!.id)
      readers.get(id)?.()
    }
    const order: number[] = []
    const results = await Promise.all(all.map(async (c, i) => {
      const count = blockCount(c.bytes.byteLength, BS)
      const got = await fetchSpan(channel, { chunk: c.id, first: 0, count, blockSize: BS })
      order.push(i)
      return got
    }))
    results.forEach((got, i) => { expectVerified(got, all[i]!.bytes, BS, 0, blockCount(all[i]!.bytes.byteLength, BS)) })
    expect(order).not.toEqual([...order].sort((a, b) => a - b))
    expect(limiter.released).toBe(all.length)
  })

  it('aborts the stream on an undecodable request frame', async () => {
    new ServerSession(inbound, 'peer-a', source, limiter, new RecentSends(), quiet)
    const v = versionId('x')
    sendRaw(outbound, ChunkRequest.encode({ type: ChunkRequest.Type.INTEREST, id: 0, cid: CID.parse(v).bytes }))
    await vi.waitFor(() => { expect(source.listeners.get(v)?.size).toBe(1) })
    sendRaw(outbound, Uint8Array.of(0xff, 0xff, 0xff, 0xff))
    await vi.waitFor(() => { expect(inbound.status).toBe('aborted') })
    // The session shut down: its interests were dropped.
    expect(source.stopped).toEqual([v])
    await vi.waitFor(() => { expect(outbound.status).not.toBe('open') })
  })

  it('aborts the stream on a request frame over MAX_REQUEST_FRAME_BYTES, before buffering it', async () => {
    new ServerSession(inbound, 'peer-a', source, limiter, new RecentSends(), quiet)
    sendRaw(outbound, new Uint8Array(16), MAX_REQUEST_FRAME_BYTES + 1)
    await vi.waitFor(() => { expect(inbound.status).toBe('aborted') })
    expect(source.reads).toEqual([])
  })

  it('a response frame over MAX_FRAME_BYTES aborts the requester, failing pending WANTs with PeerGoneError', async () => {
    const channel = new PeerChannel(outbound, 16 * MiB)
    let closedWith: Error | undefined
    let closed = false
    channel.onClose(err => { closed = true; closedWith = err })
    // A hand-made server: once asked anything, it announces a frame over the cap.
    inbound.addEventListener('message', () => { sendRaw(inbound, new Uint8Array(64), MAX_FRAME_BYTES + 1) }, { once: true })
    const a = channel.want(whole(chunk(5).id), { onBlock () {} })
    const b = channel.want({ chunk: chunk(6).id, first: 0, count: 4, blockSize: BS }, { onBlock () {} })
    for (const p of [a, b]) expect((await rejection(p)).name).toBe('PeerGoneError')
    expect(closed).toBe(true)
    expect(closedWith?.name).toBe('MalformedDataError')
    expect(closedWith?.message).toMatch(/^peer sent a bad frame: /)
    expect(channel.isOpen).toBe(false)
    expect(outbound.status).toBe('aborted')
    expect(await rejection(channel.want(whole(chunk(7).id), { onBlock () {} }))).toMatchObject({ name: 'PeerGoneError', message: 'the stream to this peer is closed' })
  })

  it('a closed server stream fails pending WANTs with PeerGoneError', async () => {
    const channel = connect()
    source.gate = async (_id, signal) => { await new Promise<void>(resolve => signal.addEventListener('abort', () => resolve(), { once: true })) }
    const pending = channel.want({ chunk: chunk(8).id, first: 0, count: 2, blockSize: BS }, { onBlock () {} })
    await vi.waitFor(() => { expect(source.reads).toHaveLength(1) })
    inbound.abort(new Error('gone'))
    const err = await rejection(pending)
    expect(err.name).toBe('PeerGoneError')
    expect(err.message).toMatch(/^stream to peer closed/)
    await vi.waitFor(() => { expect(source.reads[0]!.signal.aborted).toBe(true) })
  })
})

describe('bulk connections for BLOCK payloads', () => {
  let outbound: Stream
  let inbound: Stream
  let source: FakeSource
  let limiter: CountingLimiter
  const cleanups: Array<() => unknown> = []

  beforeEach(async () => {
    ;[outbound, inbound] = await streamPair({ delay: 0 })
    source = new FakeSource()
    limiter = new CountingLimiter()
  })

  afterEach(async () => {
    for (const s of [outbound, inbound]) if (s.status === 'open') s.abort(new Error('test over'))
    for (const fn of cleanups.splice(0).reverse()) await fn()
  })

  async function started (encrypt: boolean, pool = new BufferPool(MAX_BULK_DATA_BYTES)): Promise<BulkService> {
    const service = bulkService({ host: '127.0.0.1', port: 0, pool, encrypt })
    await service.start()
    cleanups.push(async () => { await service.stop() })
    return service
  }

  /**
   * A server session offering bulk connections from a real `BulkService`, and a requester whose
   * dialer connects with another: the test keeps both ends of the bulk connection. With `cutAt`,
   * the server's end is aborted just before it sends that block index (after the blocks before it
   * went out on the connection), as when the connection breaks in the middle of a span.
   */
  async function withBulk (encrypt: boolean, cutAt?: number): Promise<{ channel: PeerChannel, server: BulkService, dial: BulkDialer, ends: { sender?: BulkSender, receiver?: BulkReceiver }, offers: Array<{ port: number, key: Uint8Array | undefined }> }> {
    const pool = new BufferPool(MAX_FRAME_BYTES)
    const server = await started(encrypt)
    const client = await started(true, pool)
    const ends: { sender?: BulkSender, receiver?: BulkReceiver } = {}
    const cutting = (sender: BulkSender): BulkSender => new Proxy(sender, {
      get: (target, prop) => {
        if (prop === 'send') {
          return async (...args: Parameters<BulkSender['send']>) => {
            if (args[0].index === cutAt) target.abort(new Error('the bulk connection broke'))
            await target.send(...args)
          }
        }
        const value: unknown = Reflect.get(target, prop, target)
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
      }
    })
    new ServerSession(inbound, 'peer-a', source, limiter, new RecentSends(), quiet, {
      bulk: (peer, signal) => {
        const offer = server.offer(peer, { signal })
        const connected = offer.connected.then(s => s === undefined || cutAt === undefined ? s : cutting(s))
        void connected.then(s => { ends.sender = s })
        return { ...offer, connected }
      }
    })
    const offers: Array<{ port: number, key: Uint8Array | undefined }> = []
    const dial: BulkDialer = async (offer, signal) => {
      offers.push({ port: offer.port, key: offer.key })
      ends.receiver = await client.connect('127.0.0.1', offer.port, offer.token, offer.key, { signal })
      return ends.receiver
    }
    return { channel: new PeerChannel(outbound, 16 * MiB, pool), server, dial, ends, offers }
  }

  for (const encrypt of [true, false]) {
    it(`BULK ${encrypt ? 'encrypted' : 'in clear'}: once openBulk resolves true, a span's blocks come on the bulk connection, verified the same way`, async () => {
      const received = frames(outbound)
      const { channel, server, dial, ends, offers } = await withBulk(encrypt)
      expect(await channel.openBulk(dial, AbortSignal.timeout(30_000))).toBe(true)
      expect(channel.bulkOpen).toBe(true)
      expect(offers).toHaveLength(1)
      expect(offers[0]!.port).toBe(server.port)
      expect(offers[0]!.key?.byteLength).toBe(encrypt ? 32 : undefined)
      await vi.waitFor(() => { expect(ends.sender).toBeDefined() })
      expect(server.stats()).toMatchObject({ connections: 1, accepted: 1, offers: 0 })
      const c = chunk(11, 7 * BS + 99)
      source.chunks.set(c.id, c.bytes)
      const got = await fetchSpan(channel, { chunk: c.id, first: 0, count: 8, blockSize: BS })
      expectVerified(got, c.bytes, BS, 0, 8)
      expect(ends.receiver!.frames).toBe(8)
      expect(ends.receiver!.bytesReceived).toBeGreaterThan(c.bytes.byteLength)
      expect(ends.sender!.framesSent).toBe(8)
      expect(channel.bytesReceived).toBe(ends.receiver!.bytesReceived)
      // Nothing of the blocks came on the stream: only the offer did.
      expect(received.filter(f => decodeBlock(f) !== undefined)).toEqual([])
      expect(nonBlocks(received).map(r => r.type)).toEqual([ChunkResponse.Type.BULK])
      // A span sent on a bulk connection is handed back once the kernel has it.
      await vi.waitFor(() => { expect(source.released).toEqual([source.served[0]]) })
    })
  }

  it('without a bulk offerer the server answers ERROR BULK_OFF: openBulk resolves false and blocks keep coming on the stream', async () => {
    const received = frames(outbound)
    new ServerSession(inbound, 'peer-a', source, limiter, new RecentSends(), quiet)
    const channel = new PeerChannel(outbound, 16 * MiB)
    let dialled = 0
    expect(await channel.openBulk(async () => { dialled++; return undefined }, AbortSignal.timeout(30_000))).toBe(false)
    expect(dialled).toBe(0)
    expect(channel.bulkOpen).toBe(false)
    const off = nonBlocks(received)
    expect(off.map(r => [r.type, r.code])).toEqual([[ChunkResponse.Type.ERROR, 'BULK_OFF']])
    expect(off[0]!.message).toBe('this node has no bulk channel (transfer.bulk.enabled is false, or its port could not be bound)')
    const c = chunk(12, 3 * BS)
    source.chunks.set(c.id, c.bytes)
    expectVerified(await fetchSpan(channel, { chunk: c.id, first: 0, count: 3, blockSize: BS }), c.bytes, BS, 0, 3)
    expect(received.filter(f => decodeBlock(f) !== undefined)).toHaveLength(3)
  })

  it('an offerer past its caps answers BULK_OFF with its reason; a second BULK on a stream is refused', async () => {
    const received = frames(outbound)
    const server = await started(true)
    await server.stop() // offers now throw BulkUnavailableError
    new ServerSession(inbound, 'peer-a', source, limiter, new RecentSends(), quiet, { bulk: (peer, signal) => server.offer(peer, { signal }) })
    const channel = new PeerChannel(outbound, 16 * MiB)
    expect(await channel.openBulk(async () => undefined, AbortSignal.timeout(30_000))).toBe(false)
    sendRaw(outbound, ChunkRequest.encode({ type: ChunkRequest.Type.BULK }))
    await vi.waitFor(() => { expect(received).toHaveLength(2) })
    expect(nonBlocks(received).map(r => [r.type, r.code, r.message])).toEqual([
      [ChunkResponse.Type.ERROR, 'BULK_OFF', 'the bulk channel is not listening: send blocks on the libp2p stream'],
      [ChunkResponse.Type.ERROR, 'BULK_OFF', 'a bulk connection was already offered on this stream']
    ])
    expect(channel.isOpen).toBe(true)
  })

  it('an offer whose dial fails: openBulk resolves false and blocks come on the stream', async () => {
    const received = frames(outbound)
    const { channel } = await withBulk(true)
    const failing: BulkDialer = async () => { throw new Error('connection refused') }
    expect(await channel.openBulk(failing, AbortSignal.timeout(30_000))).toBe(false)
    expect(channel.bulkOpen).toBe(false)
    const c = chunk(13, 2 * BS)
    source.chunks.set(c.id, c.bytes)
    expectVerified(await fetchSpan(channel, { chunk: c.id, first: 0, count: 2, blockSize: BS }), c.bytes, BS, 0, 2)
    expect(received.filter(f => decodeBlock(f) !== undefined)).toHaveLength(2)
  })

  it('an offer that never comes within the signal: openBulk resolves false and the stream stays the way in', async () => {
    const received = frames(outbound)
    // A hand-made server that reads requests and never answers BULK.
    inbound.addEventListener('message', () => {})
    const channel = new PeerChannel(outbound, 16 * MiB)
    const giveUp = new AbortController()
    const opening = channel.openBulk(async () => { throw new Error('never dialled') }, giveUp.signal)
    await vi.waitFor(() => { expect(received).toEqual([]) })
    giveUp.abort()
    expect(await opening).toBe(false)
    expect(channel.isOpen).toBe(true)
  })

  /**
   * Asks for blocks `[0, count)` of `c` and calls `onBlock` with each; resolves with what came, or
   * the typed error the request failed with. A deadline far past any honest transfer (this one
   * takes milliseconds) turns a hang into a failure that says so.
   */
  async function spanAfterCut (channel: PeerChannel, c: { id: ChunkId, bytes: Uint8Array }, count: number, onBlock?: (b: BlockArrival) => void): Promise<Got[] | Error> {
    const deadline = AbortSignal.timeout(10_000)
    try {
      return await fetchSpan(channel, { chunk: c.id, first: 0, count, blockSize: BS }, { signal: deadline, ...(onBlock !== undefined ? { onBlock } : {}) })
    } catch (err) {
      if (deadline.aborted) throw new Error(`the span in progress when the bulk connection closed was lost: still waiting after 10 s (${(err as Error).message})`)
      return err as Error
    }
  }

  async function laterSpansOnTheStream (channel: PeerChannel, received: Uint8ArrayList[]): Promise<void> {
    await vi.waitFor(() => { expect(channel.bulkOpen).toBe(false) })
    const later = chunk(15, 3 * BS)
    source.chunks.set(later.id, later.bytes)
    const blocksBefore = received.filter(f => decodeBlock(f) !== undefined).length
    expectVerified(await fetchSpan(channel, { chunk: later.id, first: 0, count: 3, blockSize: BS }, { signal: AbortSignal.timeout(10_000) }), later.bytes, BS, 0, 3)
    expect(received.filter(f => decodeBlock(f) !== undefined).length - blocksBefore).toBe(3)
    expect(channel.isOpen).toBe(true)
  }

  // The server sends the rest of a span whose bulk send fails on the stream.
  it('a bulk connection that breaks while the server sends a span: the rest of the span comes on the stream, and later spans too', async () => {
    const received = frames(outbound)
    const { channel, dial, ends } = await withBulk(true, 3)
    expect(await channel.openBulk(dial, AbortSignal.timeout(30_000))).toBe(true)
    await vi.waitFor(() => { expect(ends.sender).toBeDefined() })
    const c = chunk(14, 8 * BS)
    source.chunks.set(c.id, c.bytes)
    const got = await spanAfterCut(channel, c, 8)
    if (got instanceof Error) throw new Error(`the rest of the span should have come on the stream, but the request failed: ${got.name}: ${got.message}`)
    // Blocks on two connections may overtake one another: each counts once, in any order.
    expectVerified(got.sort((a, b) => a.index - b.index), c.bytes, BS, 0, 8)
    expect(ends.receiver!.frames).toBe(3)
    await laterSpansOnTheStream(channel, received)
  }, 30_000)

  // The requester asks again on the stream for what the closed connection lost.
  it('a bulk connection the requester closes mid-span: the span completes or fails with a typed error at once (never hangs), and later spans come on the stream', async () => {
    const received = frames(outbound)
    const { channel, dial, ends } = await withBulk(true)
    expect(await channel.openBulk(dial, AbortSignal.timeout(30_000))).toBe(true)
    await vi.waitFor(() => { expect(ends.sender).toBeDefined() })
    const c = chunk(14, 8 * BS)
    source.chunks.set(c.id, c.bytes)
    // What was on the connection is gone; only the requester can tell, so it may ask again or fail
    // the request (the caller then asks elsewhere), but not wait for blocks that cannot come.
    const got = await spanAfterCut(channel, c, 8, () => { if (ends.receiver!.isOpen) ends.receiver!.close() })
    if (got instanceof Error) expect(got).toBeInstanceOf(ShoalError)
    else expectVerified(got.sort((a, b) => a.index - b.index), c.bytes, BS, 0, 8)
    await laterSpansOnTheStream(channel, received)
  }, 30_000)

  it('a WANT marked stream is served on the stream while a bulk connection is up (the requester has none of its own)', async () => {
    const received = frames(outbound)
    const { channel, dial, ends } = await withBulk(false)
    expect(await channel.openBulk(dial, AbortSignal.timeout(30_000))).toBe(true)
    await vi.waitFor(() => { expect(ends.sender).toBeDefined() })
    const c = chunk(18, 2 * BS)
    source.chunks.set(c.id, c.bytes)
    // Through the channel first (on the bulk connection), so the raw request's id is one it made.
    expectVerified(await fetchSpan(channel, { chunk: c.id, first: 0, count: 2, blockSize: BS }), c.bytes, BS, 0, 2)
    expect(ends.receiver!.frames).toBe(2)
    sendRaw(outbound, ChunkRequest.encode({ type: ChunkRequest.Type.WANT, id: 1, cid: CID.parse(c.id).bytes, urgent: false, first: 0, count: 2, blockSize: BS, stream: true }))
    await vi.waitFor(() => { expect(received.filter(f => decodeBlock(f)?.id === 1)).toHaveLength(2) })
    expect(ends.receiver!.frames).toBe(2)
    expect(channel.isOpen).toBe(true)
  })

  it('a bulk connection closed between spans: the next span comes on the stream', async () => {
    const received = frames(outbound)
    const { channel, dial, ends, server } = await withBulk(false)
    expect(await channel.openBulk(dial, AbortSignal.timeout(30_000))).toBe(true)
    await vi.waitFor(() => { expect(ends.sender).toBeDefined() })
    const a = chunk(16, 2 * BS)
    const b = chunk(17, 2 * BS)
    for (const c of [a, b]) source.chunks.set(c.id, c.bytes)
    expectVerified(await fetchSpan(channel, { chunk: a.id, first: 0, count: 2, blockSize: BS }), a.bytes, BS, 0, 2)
    expect(received.filter(f => decodeBlock(f) !== undefined)).toHaveLength(0)
    ends.receiver!.close()
    await vi.waitFor(() => { expect(server.stats().connections).toBe(0) })
    expect(channel.bulkOpen).toBe(false)
    expectVerified(await fetchSpan(channel, { chunk: b.id, first: 0, count: 2, blockSize: BS }), b.bytes, BS, 0, 2)
    expect(received.filter(f => decodeBlock(f) !== undefined)).toHaveLength(2)
  })
})

describe('ChunkExchange over libp2p', () => {
  const nodes: Libp2p[] = []
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map(async n => { await n.stop() }))
  })

  const source = new FakeSource()
  const limiter = new CountingLimiter()

  it('a peer that speaks only /shoal/chunks/1.0.0 → channel() rejects with OldPeerError naming both versions and saying to upgrade it', async () => {
    const ours = await createLibp2p({
      addresses: { listen: ['/memory/chunks-new'] },
      transports: [memory()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: { identify: identify(), chunks: chunkExchange({ source, limiter, maxInFlightBytes: 16 * MiB }) }
    })
    nodes.push(ours)
    const old = await createLibp2p({
      addresses: { listen: ['/memory/chunks-old'] },
      transports: [memory()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: { identify: identify() }
    })
    nodes.push(old)
    expect(OLD_CHUNKS_PROTOCOLS).toEqual(['/shoal/chunks/1.0.0'])
    await old.handle(OLD_CHUNKS_PROTOCOLS[0]!, stream => { stream.abort(new Error('not in this test')) })
    await ours.dial(old.getMultiaddrs()[0]!, { signal: AbortSignal.timeout(10_000) })
    // What the old peer speaks is known once identify has run.
    await vi.waitFor(async () => {
      expect((await ours.peerStore.get(old.peerId)).protocols).toContain('/shoal/chunks/1.0.0')
    }, { timeout: 10_000 })
    const err = await rejection((ours.services.chunks as ChunkExchange).channel(old.peerId, AbortSignal.timeout(10_000)))
    expect(err).toBeInstanceOf(OldPeerError)
    expect(err.message).toBe(`peer ${old.peerId.toString()} does not speak ${CHUNKS_PROTOCOL} (it speaks /shoal/chunks/1.0.0: it runs an older shoal); upgrade it to exchange chunks with this node`)
    expect(CHUNKS_PROTOCOL).toBe('/shoal/chunks/2.0.0')
  })

  it('two nodes with bulk channels over loopback TCP: a channel opens a bulk connection and a span comes on it', async () => {
    const make = async (bulk: BulkService): Promise<Libp2p<{ chunks: ChunkExchange, identify: unknown }>> => {
      const node = await createLibp2p({
        addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
        transports: [tcp()],
        connectionEncrypters: [noise()],
        streamMuxers: [yamux()],
        services: { identify: identify(), chunks: chunkExchange({ source, limiter, maxInFlightBytes: 16 * MiB, bulk, pool: new BufferPool(MAX_FRAME_BYTES) }) }
      })
      nodes.push(node)
      return node
    }
    const bulks = await Promise.all([0, 1].map(async () => {
      const b = bulkService({ host: '127.0.0.1', port: 0, pool: new BufferPool(MAX_BULK_DATA_BYTES) })
      await b.start()
      return b
    }))
    try {
      const [requester, server] = await Promise.all([make(bulks[0]!), make(bulks[1]!)])
      const c = chunk(21, 5 * BS)
      source.chunks.set(c.id, c.bytes)
      await requester.dial(server.getMultiaddrs()[0]!, { signal: AbortSignal.timeout(10_000) })
      const channel = await requester.services.chunks.channel(server.peerId, AbortSignal.timeout(10_000))
      expect(channel.bulkOpen).toBe(true)
      expect(bulks[1]!.stats()).toMatchObject({ connections: 1 })
      expectVerified(await fetchSpan(channel, { chunk: c.id, first: 0, count: 5, blockSize: BS }, { signal: AbortSignal.timeout(20_000) }), c.bytes, BS, 0, 5)
      expect(channel.bytesReceived).toBeGreaterThan(c.bytes.byteLength)
      // The same channel is handed out while it is open.
      expect(await requester.services.chunks.channel(server.peerId)).toBe(channel)
    } finally {
      await Promise.all(bulks.map(async b => { await b.stop() }))
    }
  })
})

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

describe('DUPLICATE over the wire (per span start)', () => {
  /**
   * Two requesters, A and B, each on its own stream to servers sharing one `RecentSends`; the
   * source holds a chunk of 4 blocks and serves nothing until `release()`.
   */
  async function twoRequesters (seed: number): Promise<{ recent: RecentSends, c: ReturnType<typeof chunk>, a: PeerChannel, b: PeerChannel, release: () => void, close: () => void }> {
    const recent = new RecentSends()
    const source = new FakeSource()
    const c = chunk(seed, 4 * BS)
    source.chunks.set(c.id, c.bytes)
    let release!: () => void
    const gate = new Promise<void>(resolve => { release = resolve })
    source.gate = async () => { await gate }
    const [outA, inA] = await streamPair({ delay: 0 })
    const [outB, inB] = await streamPair({ delay: 0 })
    new ServerSession(inA, 'peer-a', source, new CountingLimiter(), recent, quiet)
    new ServerSession(inB, 'peer-b', source, new CountingLimiter(), recent, quiet)
    const close = (): void => {
      for (const s of [outA, inA, outB, inB]) if (s.status === 'open') s.abort(new Error('test over'))
    }
    return { recent, c, a: new PeerChannel(outA, 16 * MiB), b: new PeerChannel(outB, 16 * MiB), release, close }
  }

  const key = (id: ChunkId, first: number): string => `${id}/${first}`

  it('a second peer asking for a span being sent elsewhere gets DUPLICATE naming the holder, unless urgent; another span of the chunk is served', async () => {
    const { recent, c, a, b, release, close } = await twoRequesters(7)
    try {
      const front = { chunk: c.id, first: 0, count: 2, blockSize: BS }
      const first = fetchSpan(a, front)
      await vi.waitFor(() => { expect(recent.heldFor(key(c.id, 0), 'peer-b')).toBe(true) })
      const refused = await rejection(b.want(front, { onBlock () {} }))
      expect(refused).toMatchObject({ name: 'PeerRequestError', wireCode: 'DUPLICATE', holder: 'peer-a', message: 'peer answered DUPLICATE: just sent to another peer; fetch it there' })
      const back = fetchSpan(b, { chunk: c.id, first: 2, count: 2, blockSize: BS })
      const urgent = fetchSpan(b, front, { urgent: true })
      release()
      expectVerified(await first, c.bytes, BS, 0, 2)
      expectVerified(await back, c.bytes, BS, 2, 2)
      expectVerified(await urgent, c.bytes, BS, 0, 2)
    } finally {
      close()
    }
  })

  it('once the first recipient cancels, a second peer is served without being urgent', async () => {
    const { recent, c, a, b, release, close } = await twoRequesters(8)
    try {
      const span = { chunk: c.id, first: 1, count: 3, blockSize: BS }
      const cancel = new AbortController()
      const first = rejection(a.want(span, { signal: cancel.signal, onBlock () {} }))
      await vi.waitFor(() => { expect(recent.heldFor(key(c.id, 1), 'peer-b')).toBe(true) })
      cancel.abort()
      await first
      await vi.waitFor(() => { expect(recent.heldFor(key(c.id, 1), 'peer-b')).toBe(false) })
      const second = fetchSpan(b, span)
      release()
      expectVerified(await second, c.bytes, BS, 1, 3)
      // B confirmed it: now A (or anyone else) is told DUPLICATE.
      await vi.waitFor(() => { expect(recent.heldFor(key(c.id, 1), 'peer-a')).toBe(true) })
      expect(await rejection(a.want(span, { onBlock () {} }))).toMatchObject({ wireCode: 'DUPLICATE', holder: 'peer-b' })
    } finally {
      close()
    }
  })
})

describe('RecentSends', () => {
  it('forgets what went to a peer that disconnected: it is not named as a holder any more', () => {
    const recent = new RecentSends()
    recent.start('c/0', 'peer-a').delivered()
    recent.start('c/4', 'peer-c')
    expect(recent.holderOf('c/0', 'peer-b')).toBe('peer-a')
    recent.forget('peer-a')
    expect(recent.holderOf('c/0', 'peer-b')).toBeUndefined()
    expect(recent.holderOf('c/4', 'peer-b')).toBe('peer-c')
  })
})

describe('DUPLICATE for a WANT overtaken while it waited for an upload slot', () => {
  it('a non-urgent WANT whose span went to another peer while it was QUEUED is told DUPLICATE naming that peer, and nothing is read for it', async () => {
    const recent = new RecentSends()
    const source = new FakeSource()
    const c = chunk(9, 2 * BS)
    source.chunks.set(c.id, c.bytes)
    const slots = new Slots(1)
    const hold = await slots.acquire()
    const [outA, inA] = await streamPair({ delay: 0 })
    const [outB, inB] = await streamPair({ delay: 0 })
    new ServerSession(inA, 'peer-a', source, slotsLimiter(slots), recent, quiet)
    new ServerSession(inB, 'peer-b', source, new CountingLimiter(), recent, quiet)
    const a = new PeerChannel(outA, 16 * MiB)
    const b = new PeerChannel(outB, 16 * MiB)
    try {
      const span = { chunk: c.id, first: 0, count: 2, blockSize: BS }
      let queued = 0
      const waiting = rejection(a.want(span, { onQueued: () => { queued++ }, onBlock () {} }))
      await vi.waitFor(() => { expect(queued).toBe(1) })
      // B asks urgently meanwhile (its hint aged) and is served at once.
      expectVerified(await fetchSpan(b, span, { urgent: true }), c.bytes, BS, 0, 2)
      expect(source.reads).toHaveLength(1)
      hold()
      expect(await waiting).toMatchObject({ name: 'PeerRequestError', wireCode: 'DUPLICATE', holder: 'peer-b', message: 'peer answered DUPLICATE: sent to another peer while this request waited; fetch it there' })
      expect(source.reads).toHaveLength(1)
      // An urgent WANT that waited is served all the same.
      const again = await slots.acquire()
      const urgent = fetchSpan(a, span, { urgent: true })
      again()
      expectVerified(await urgent, c.bytes, BS, 0, 2)
    } finally {
      for (const s of [outA, inA, outB, inB]) if (s.status === 'open') s.abort(new Error('test over'))
    }
  })
})

describe('test helpers', () => {
  it('spanOf\'s proofs are what the tree module proves, and a flipped byte fails', () => {
    const c = chunk(30, 5 * BS + 7)
    const { n, root } = treeOf(c.bytes, BS)
    const span = spanOf(c.bytes, BS, 0, n)!
    for (let i = 0; i < n; i++) expect(blockMatches(blockOf(c.bytes, BS, i), i, n, splitHashes(span.proofs[i]!), root)).toBe(true)
    const bad = Uint8Array.from(blockOf(c.bytes, BS, 3))
    bad[10]! ^= 1
    expect(blockMatches(bad, 3, n, splitHashes(span.proofs[3]!), root)).toBe(false)
  })
})
