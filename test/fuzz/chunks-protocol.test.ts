/**
 * Fuzzing `/shoal/chunks/2.0.0` and the framing under it with what a hostile peer can send:
 * - `FrameDecoder`: any bytes, split anywhere, give frames within the cap or a `MalformedDataError`
 *   (never another error, never a frame over the cap), and well-formed streams decode to exactly the
 *   frames sent, however they are split;
 * - `decodeBlock` (the hand-written BLOCK parser) reads every BLOCK frame as protobuf does, and
 *   says "not a block" for every other type;
 * - a serving `ServerSession` and a requesting `PeerChannel`, each fed random and mutated frames
 *   (valid messages of every type with random fields — spans, block sizes, proofs, ranges, bulk
 *   offers — in any order, and random bytes): nothing escapes the stream's event handler, no
 *   promise rejects unhandled, and the session either answers, ignores, or aborts the stream with
 *   a typed error;
 * - any WANT gets exactly its span's blocks, in order, each proven against the chunk's root, or
 *   one refusal (BAD_REQUEST when the span is malformed, DONT_HAVE when it runs past the chunk).
 */
import type { Stream } from '@libp2p/interface'
import fc from 'fast-check'
import { CID } from 'multiformats/cid'
import * as varint from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BufferPool } from '../../src/core/buffer-pool.js'
import { chunkIdOf, encodeBlock as encodeCbor, type VersionId } from '../../src/core/digest.js'
import { MalformedDataError, ShoalError } from '../../src/core/errors.js'
import { MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, blockCount, blockMatches, isBlockSize, joinHashes, leafHash, proofOf, rootOf, splitHashes } from '../../src/core/tree.js'
import { Slots } from '../../src/fetcher/bandwidth.js'
import { BulkUnavailableError } from '../../src/protocol/bulk/errors.js'
import { decodeBlock, encodeBlock } from '../../src/protocol/chunks/block.js'
import { PeerChannel, type BulkDialer } from '../../src/protocol/chunks/client.js'
import { MAX_FRAME_BYTES, MAX_REQUEST_FRAME_BYTES, MAX_SPAN_BLOCKS, POOLED_FRAME_MIN_BYTES } from '../../src/protocol/chunks/constants.js'
import { ChunkRequest, ChunkResponse } from '../../src/protocol/chunks/pb/chunks.js'
import { RecentSends, ServerSession, type BulkOfferer, type ChunkSource, type Span, type UploadLimiter } from '../../src/protocol/chunks/server.js'
import { FrameDecoder } from '../../src/protocol/framing.js'
import { seededBytes } from '../helpers/random.js'
import { fuzzParams, mutated } from './fuzz.js'

/** A stream the test drives: `deliver` raises `message` events, what the session sends is kept. */
class ScriptedStream {
  maxReadBufferLength = 0
  writeBufferLength = 0
  aborted?: Error
  closed = false
  readonly sent: Uint8ArrayList[] = []
  private readonly listeners = new Map<string, Array<(evt: unknown) => void>>()

  addEventListener (type: string, fn: (evt: unknown) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn])
  }

  deliver (data: Uint8Array): void {
    for (const fn of this.listeners.get('message') ?? []) fn({ data: new Uint8ArrayList(data) })
  }

  send (data: Uint8ArrayList): boolean {
    if (this.aborted !== undefined) throw new Error('stream is aborted')
    this.sent.push(data)
    return true
  }

  async onDrain (): Promise<void> {}

  abort (err: Error): void {
    if (this.aborted !== undefined) return
    this.aborted = err
    for (const fn of this.listeners.get('close') ?? []) fn({ error: err })
  }

  async close (): Promise<void> {
    this.closed = true
    for (const fn of this.listeners.get('close') ?? []) fn({})
  }
}

const BS = MIN_BLOCK_SIZE
/** Five blocks of `BS`, the last one short; one block at 128 KiB and up. */
const CHUNK = seededBytes(4 * BS + 4_464, 7)
const CHUNK_ID = chunkIdOf(CHUNK)
const VERSION: VersionId = encodeCbor({ fuzz: true }).cid

/** Blocks `[first, first + count)` of `CHUNK` in `blockSize` geometry with their proofs; undefined past its end. */
function spanOf (blockSize: number, first: number, count: number): Span | undefined {
  const n = blockCount(CHUNK.byteLength, blockSize)
  if (first + count > n) return undefined
  const data = CHUNK.subarray(first * blockSize, Math.min(CHUNK.byteLength, (first + count) * blockSize))
  if (n === 1) return { data, proofs: [new Uint8Array(0)] }
  const leaves = Array.from({ length: n }, (_, i) => leafHash(CHUNK.subarray(i * blockSize, Math.min(CHUNK.byteLength, (i + 1) * blockSize))))
  return { data, proofs: Array.from({ length: count }, (_, i) => joinHashes(proofOf(leaves, first + i))) }
}

const source: ChunkSource = {
  readSpan: async (id, blockSize, first, count) => id === CHUNK_ID ? spanOf(blockSize, first, count) : undefined,
  have: async version => version === VERSION ? { complete: false, bits: new Uint8Array([0x80]), ranges: [{ chunk: 1, first: 0, count: 2 }] } : undefined,
  watch: () => () => {},
  release: () => {}
}

/** Offers that nobody ever takes up (the connection never comes), or refusals, alternately. */
function offerer (): BulkOfferer {
  let n = 0
  return () => {
    if (n++ % 2 === 1) throw new BulkUnavailableError('peer fuzzer already has 4 bulk connections')
    return { port: 4078, token: new Uint8Array(32).fill(1), key: new Uint8Array(32).fill(2), connected: Promise.resolve(undefined) }
  }
}

function limiter (): UploadLimiter {
  const slots = new Slots(2)
  return { slot: async signal => await slots.acquire(signal), bandwidth: async () => {}, slotWouldWait: () => slots.full, load: () => slots.inUse + slots.waiting }
}

const framed = (frame: Uint8Array): Uint8Array => Buffer.concat([varint.encode(frame.byteLength), frame])

/** A frame the session sent, without its length prefix. */
function unframed (sent: Uint8ArrayList): Uint8ArrayList {
  const length = varint.decode(sent.subarray(0, Math.min(10, sent.byteLength)))
  expect(sent.byteLength).toBe(varint.encodingLength(length) + length)
  return sent.sublist(varint.encodingLength(length))
}

/** Lets served WANTs run (reads, slots, sends) to completion. */
async function settle (): Promise<void> {
  for (let i = 0; i < 8; i++) await new Promise(resolve => setImmediate(resolve))
}

/** Waits (turn by turn of the event loop, at most `turns`) until `done` holds. */
async function until (done: () => boolean, turns = 10_000): Promise<void> {
  for (let i = 0; i < turns && !done(); i++) await new Promise(resolve => setImmediate(resolve))
  expect(done()).toBe(true)
}

/** CIDs a peer might name: the served chunk, the version, a CID of the wrong codec, garbage. */
const cidBytes = fc.oneof(
  fc.constant(CID.parse(CHUNK_ID).bytes),
  fc.constant(CID.parse(VERSION).bytes),
  fc.uint8Array({ maxLength: 40 }),
  fc.constant(new Uint8Array(0))
)

/** Block sizes a peer might name: mostly ones that cut CHUNK in several blocks, every valid one, and numbers that are not. */
const blockSize = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(BS, 2 * BS, 4 * BS) },
  { weight: 1, arbitrary: fc.integer({ min: 14, max: 22 }).map(k => 2 ** k) },
  { weight: 1, arbitrary: fc.nat({ max: 0xffff_ffff }) },
  { weight: 1, arbitrary: fc.constantFrom(0, BS - 1, BS + 1, 3 * BS, MAX_BLOCK_SIZE * 2) }
)

/** Spans a peer might ask for: mostly inside or just past CHUNK, sometimes far out. */
const first = fc.oneof({ weight: 3, arbitrary: fc.nat({ max: 6 }) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff_ffff }) })
const count = fc.oneof({ weight: 3, arbitrary: fc.nat({ max: 6 }) }, { weight: 1, arbitrary: fc.integer({ min: MAX_SPAN_BLOCKS - 1, max: MAX_SPAN_BLOCKS + 2 }) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff_ffff }) })

const { WANT, CANCEL, INTEREST, UNINTEREST, RECEIVED, BULK } = ChunkRequest.Type
const requestType = fc.constantFrom(WANT, CANCEL, INTEREST, UNINTEREST, RECEIVED, BULK)
const R = ChunkResponse.Type
const responseType = fc.constantFrom(R.BLOCK, R.DONT_HAVE, R.ERROR, R.HAVE, R.HAVE_UPDATE, R.QUEUED, R.BULK)

/** A message whose `type` (field 1) is a number the enum does not have, which protons will not encode. */
const unknownType = (max: number): fc.Arbitrary<Uint8Array> => fc.tuple(fc.integer({ min: max + 1, max: 300 }), fc.nat({ max: 0xffff })).map(([type, id]) => Uint8Array.from([0x08, ...varint.encode(type), 0x10, ...varint.encode(id)]))

const request = fc.record({ type: requestType, id: fc.nat({ max: 0xffff_ffff }), cid: cidBytes, urgent: fc.boolean(), first, count, blockSize })

const requestFrame: fc.Arbitrary<Uint8Array> = fc.oneof(
  request.map(r => ChunkRequest.encode(r)),
  request.chain(r => mutated(ChunkRequest.encode(r))),
  unknownType(5),
  fc.uint8Array({ maxLength: 64 })
)

const ranges = fc.array(fc.record({ chunk: fc.nat(), first: fc.nat(), count: fc.nat() }), { maxLength: 8 })

const response = fc.record({
  type: responseType, id: fc.integer({ min: 0, max: 8 }), data: fc.uint8Array({ maxLength: 32 }), version: cidBytes,
  indices: fc.array(fc.nat(), { maxLength: 8 }), complete: fc.boolean(), code: fc.constantFrom('', 'BUSY', 'DUPLICATE', 'INTERNAL', 'BULK_OFF', 'X'),
  message: fc.string({ maxLength: 16 }), load: fc.nat(), holder: fc.string({ maxLength: 16 }), index: fc.nat({ max: 8 }),
  proof: fc.uint8Array({ maxLength: 200 }), ranges, port: fc.nat({ max: 70_000 }), token: fc.uint8Array({ maxLength: 40 }), key: fc.uint8Array({ maxLength: 40 })
})

/** BLOCK frames as a server writes them: real blocks of `CHUNK` with their proofs, or anything. */
const blockResponse: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.tuple(fc.integer({ min: 0, max: 8 }), fc.nat({ max: 4 })).map(([id, index]) => {
    const span = spanOf(BS, index, 1)!
    return encodeBlock(id, 0, index, span.proofs[0]!, span.data).subarray()
  }),
  fc.tuple(fc.integer({ min: 0, max: 8 }), fc.nat(), fc.nat({ max: 8 }), fc.uint8Array({ maxLength: 200 }), fc.integer({ min: 0, max: 2 * POOLED_FRAME_MIN_BYTES }))
    .map(([id, load, index, proof, size]) => encodeBlock(id, load, index, proof, new Uint8Array(size)).subarray())
)

const responseFrame: fc.Arbitrary<Uint8Array> = fc.oneof(
  response.map(r => ChunkResponse.encode(r)),
  response.chain(r => mutated(ChunkResponse.encode(r))),
  blockResponse,
  unknownType(6),
  fc.uint8Array({ maxLength: 64 })
)

/** Concatenated frames (some with a corrupted length prefix) cut into random pieces. */
function wire (frame: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array[]> {
  return fc.tuple(
    fc.array(fc.oneof({ weight: 9, arbitrary: frame.map(framed) }, { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 12 }) }), { maxLength: 24 }),
    fc.array(fc.nat(), { maxLength: 8 })
  ).map(([frames, cuts]) => {
    const bytes = Buffer.concat(frames)
    const points = [...new Set(cuts.map(c => bytes.byteLength === 0 ? 0 : c % bytes.byteLength))].sort((a, b) => a - b)
    const parts: Uint8Array[] = []
    let at = 0
    for (const p of [...points, bytes.byteLength]) { if (p > at) parts.push(bytes.subarray(at, p)); at = p }
    return parts
  })
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')

describe('fuzz: chunk protocol', () => {
  const unhandled: unknown[] = []
  const onUnhandled = (reason: unknown): void => { unhandled.push(reason) }
  beforeAll(() => { process.on('unhandledRejection', onUnhandled) })
  afterAll(() => { process.off('unhandledRejection', onUnhandled) })

  it('FrameDecoder: any bytes give frames within the cap or MalformedDataError', () => {
    fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 256 }), { maxLength: 16 }), fc.integer({ min: 1, max: 200 }), (parts, cap) => {
      const decoder = new FrameDecoder({ maxFrameBytes: cap, maxBufferBytes: cap * 4 })
      try {
        for (const part of parts) for (const frame of decoder.decode(part)) expect(frame.byteLength).toBeLessThanOrEqual(cap)
      } catch (err) {
        expect(err).toBeInstanceOf(MalformedDataError)
      }
    }), fuzzParams())
  })

  it('FrameDecoder: frames sent are the frames received, however the bytes are split (pooled or not)', () => {
    const pool = new BufferPool(1024)
    fc.assert(fc.property(fc.array(fc.uint8Array({ minLength: 1, maxLength: 1024 }), { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 12 }), fc.boolean(), (frames, cuts, pooled) => {
      const bytes = Buffer.concat(frames.map(framed))
      const decoder = new FrameDecoder({ maxFrameBytes: 1024, maxBufferBytes: 8192, ...(pooled ? { assemble: { pool, minBytes: 100 } } : {}) })
      const points = [...new Set(cuts.map(c => bytes.byteLength === 0 ? 0 : c % bytes.byteLength))].sort((a, b) => a - b)
      const out: Uint8Array[] = []
      let at = 0
      for (const p of [...points, bytes.byteLength]) {
        for (const f of decoder.decode(bytes.subarray(at, p))) out.push(f.subarray())
        at = p
      }
      expect(out.map(hex)).toEqual(frames.map(hex))
    }), fuzzParams())
  })

  it('decodeBlock reads every BLOCK as protobuf does (from protons or the zero-copy encoder), and no other type as a BLOCK', () => {
    fc.assert(fc.property(response, fc.boolean(), (r, zeroCopy) => {
      const bytes = zeroCopy ? encodeBlock(r.id, r.load, r.index, r.proof, r.data).subarray() : ChunkResponse.encode(r)
      const expected = ChunkResponse.decode(bytes)
      const got = decodeBlock(new Uint8ArrayList(bytes))
      if (expected.type !== ChunkResponse.Type.BLOCK) {
        expect(got).toBeUndefined()
        return
      }
      expect(got).toBeDefined()
      expect({ id: got!.id, load: got!.load, index: got!.index, proof: hex(got!.proof), data: hex(Buffer.concat(got!.data)) })
        .toEqual({ id: expected.id, load: expected.load, index: expected.index, proof: hex(expected.proof), data: hex(expected.data) })
    }), fuzzParams())
  })

  it('the scripted stream works: a WANT for a span gets its proven BLOCKs, a garbage frame aborts the stream', async () => {
    const stream = new ScriptedStream()
    const session = new ServerSession(stream as unknown as Stream, 'fuzzer', source, limiter(), new RecentSends(), { debug () {} })
    expect(session).toBeDefined()
    stream.deliver(framed(ChunkRequest.encode({ type: ChunkRequest.Type.WANT, id: 9, cid: CID.parse(CHUNK_ID).bytes, urgent: true, first: 1, count: 3, blockSize: BS })))
    await settle()
    const blocks = stream.sent.map(f => decodeBlock(unframed(f)))
    expect(blocks.map(b => [b?.id, b?.index])).toEqual([[9, 1], [9, 2], [9, 3]])
    stream.deliver(framed(Uint8Array.from([0xff, 0xff, 0xff])))
    expect(stream.aborted).toBeInstanceOf(MalformedDataError)
    expect(stream.aborted?.message).toMatch(/^undecodable request: /)
  })

  it('ServerSession: any WANT gets exactly its span\'s blocks in order, each proven against the chunk\'s root, or one refusal', async () => {
    await fc.assert(fc.asyncProperty(first, count, blockSize, fc.boolean(), async (f, c, bs, urgent) => {
      const stream = new ScriptedStream()
      const slots = limiter()
      new ServerSession(stream as unknown as Stream, 'fuzzer', source, slots, new RecentSends(), { debug () {} })
      stream.deliver(framed(ChunkRequest.encode({ type: ChunkRequest.Type.WANT, id: 5, cid: CID.parse(CHUNK_ID).bytes, urgent, first: f, count: c, blockSize: bs })))
      // Answered (a refusal needs no slot; a served span gives its slot back after its last block).
      await until(() => stream.sent.length > 0 && slots.load() === 0)
      expect(stream.aborted).toBeUndefined()
      const frames = stream.sent.map(unframed)
      const valid = c >= 1 && c <= MAX_SPAN_BLOCKS && isBlockSize(bs) && f <= 0xffff
      if (!valid) {
        expect(frames.map(fr => ChunkResponse.decode(fr)).map(r => [r.type, r.id, r.code])).toEqual([[ChunkResponse.Type.ERROR, 5, 'BAD_REQUEST']])
        return
      }
      const n = blockCount(CHUNK.byteLength, bs)
      if (f + c > n) {
        expect(frames.map(fr => ChunkResponse.decode(fr)).map(r => [r.type, r.id])).toEqual([[ChunkResponse.Type.DONT_HAVE, 5]])
        return
      }
      const blocks = frames.map(fr => decodeBlock(fr))
      expect(blocks.map(b => [b?.id, b?.index])).toEqual(Array.from({ length: c }, (_, i) => [5, f + i]))
      const leaves = Array.from({ length: n }, (_, i) => leafHash(CHUNK.subarray(i * bs, Math.min(CHUNK.byteLength, (i + 1) * bs))))
      const root = rootOf(leaves)
      for (const b of blocks) {
        if (n === 1) expect(chunkIdOf(Buffer.concat(b!.data))).toBe(CHUNK_ID)
        else expect(blockMatches(b!.data, b!.index, n, splitHashes(b!.proof), root)).toBe(true)
      }
      expect(unhandled).toEqual([])
    }), fuzzParams())
  })

  it('ServerSession: any request frames in any order are answered, ignored or refused with a typed error', async () => {
    await fc.assert(fc.asyncProperty(wire(requestFrame), fc.boolean(), async (parts, withBulk) => {
      const stream = new ScriptedStream()
      const session = new ServerSession(stream as unknown as Stream, 'fuzzer', source, limiter(), new RecentSends(), { debug () {} }, withBulk ? { bulk: offerer() } : {})
      expect(session).toBeDefined()
      for (const part of parts) stream.deliver(part)
      await settle()
      if (stream.aborted !== undefined) {
        expect(stream.aborted).toBeInstanceOf(ShoalError)
        expect(stream.aborted.message).not.toBe('')
      }
      for (const frame of stream.sent) expect(frame.byteLength).toBeLessThanOrEqual(MAX_FRAME_BYTES + 8)
      await stream.close()
      expect(unhandled).toEqual([])
    }), fuzzParams())
  })

  it('PeerChannel: well-formed answers in any order: each request gets its blocks once each, or a typed error; only a block it did not ask for (or for a request never made) breaks the stream', async () => {
    const spans = fc.array(fc.record({ first: fc.nat({ max: 4 }), count: fc.integer({ min: 1, max: 3 }) }), { minLength: 1, maxLength: 4 })
    // Real blocks of CHUNK for the requests' ids (1, 2, …): mostly ones they asked for, sometimes
    // any; and every other answer a server gives.
    const blockFrame = (id: number, index: number): Uint8Array => {
      const span = spanOf(BS, index, 1)!
      return encodeBlock(id, 0, index, span.proofs[0]!, span.data).subarray()
    }
    const other = response.filter(r => r.type !== R.BLOCK).map(r => ChunkResponse.encode({ ...r, id: r.id % 6 }))
    const scenario = spans.chain(wants => fc.tuple(
      fc.constant(wants),
      fc.array(fc.oneof(
        { weight: 8, arbitrary: fc.nat({ max: wants.length - 1 }).chain(i => fc.integer({ min: wants[i]!.first, max: Math.min(4, wants[i]!.first + wants[i]!.count - 1) }).map(index => blockFrame(i + 1, index))) },
        { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 1, max: 4 }), fc.nat({ max: 4 })).map(([id, index]) => blockFrame(id, index)) },
        { weight: 1, arbitrary: other }
      ), { maxLength: 30 })
    ))
    await fc.assert(fc.asyncProperty(scenario, fc.array(fc.nat(), { maxLength: 6 }), async ([wants, frames], cuts) => {
      const stream = new ScriptedStream()
      const channel = new PeerChannel(stream as unknown as Stream, 16 * 1024 * 1024)
      const results = wants.map(span => {
        const delivered: number[] = []
        const done = channel.want({ chunk: CHUNK_ID, blockSize: BS, ...span }, { onBlock: b => { delivered.push(b.index) } })
          .then(() => undefined, (err: unknown) => err as Error)
        return { span, delivered, done }
      })
      const bytes = Buffer.concat(frames.map(framed))
      let at = 0
      for (const p of [...new Set(cuts.map(c => bytes.byteLength === 0 ? 0 : c % bytes.byteLength))].sort((a, b) => a - b).concat(bytes.byteLength)) {
        if (p > at) stream.deliver(bytes.subarray(at, p))
        at = Math.max(at, p)
      }
      if (stream.aborted !== undefined) {
        expect(stream.aborted).toBeInstanceOf(MalformedDataError)
        expect(stream.aborted.message).toMatch(/^peer sent block \d+ for request \d+, which (?:did not ask for it|was never made)$/)
      }
      await stream.close()
      for (const { span, delivered, done } of results) {
        const err = await done
        const asked = Array.from({ length: span.count }, (_, i) => span.first + i)
        // Each block at most once, and only blocks of the span.
        expect(new Set(delivered).size).toBe(delivered.length)
        for (const i of delivered) expect(asked).toContain(i)
        if (err === undefined) expect([...delivered].sort((a, b) => a - b)).toEqual(asked)
        else expect(err).toBeInstanceOf(ShoalError)
      }
      expect(unhandled).toEqual([])
    }), fuzzParams())
  })

  it('PeerChannel: any response frames, expected or not, are delivered, dropped, or abort the stream with a typed error', async () => {
    const pool = new BufferPool(MAX_FRAME_BYTES)
    const spans = fc.array(fc.record({ first: fc.nat({ max: 4 }), count: fc.integer({ min: 1, max: 4 }), blockSize: fc.constantFrom(BS, MAX_BLOCK_SIZE) }), { maxLength: 4 })
    await fc.assert(fc.asyncProperty(wire(responseFrame), spans, fc.boolean(), async (parts, wants, askBulk) => {
      const stream = new ScriptedStream()
      const channel = new PeerChannel(stream as unknown as Stream, 8 * MAX_REQUEST_FRAME_BYTES + 1024 * 1024, pool)
      const outcomes: Array<Promise<unknown>> = []
      await channel.watch(VERSION, { onHave: () => {}, onUpdate: () => {} }).catch(() => {})
      const dialled: Array<{ port: number, token: Uint8Array, key: Uint8Array | undefined }> = []
      const dial: BulkDialer = async offer => { dialled.push(offer); return undefined }
      const bulk = askBulk ? channel.openBulk(dial, AbortSignal.timeout(60_000)) : Promise.resolve(false)
      for (const span of wants) {
        const delivered: number[] = []
        outcomes.push(channel.want({ chunk: CHUNK_ID, ...span }, {
          onBlock: b => { delivered.push(b.index); channel.release(b.data) },
          onLate: b => { channel.release(b.data) }
        }).then(
          // Resolved: every block of the span came, once each.
          () => { expect([...delivered].sort((a, b) => a - b)).toEqual(Array.from({ length: span.count }, (_, i) => span.first + i)) },
          (err: unknown) => { expect(err).toBeInstanceOf(ShoalError) }
        ))
      }
      for (const part of parts) stream.deliver(part)
      if (stream.aborted !== undefined) expect(stream.aborted).toBeInstanceOf(ShoalError)
      await stream.close()
      await Promise.all(outcomes)
      expect(await bulk).toBe(false)
      expect(channel.bulkOpen).toBe(false)
      expect(unhandled).toEqual([])
    }), fuzzParams())
  })
})
