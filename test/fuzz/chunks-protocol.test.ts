/**
 * Fuzzing `/shoal/chunks/1.0.0` and the framing under it with what a hostile peer can send:
 * - `FrameDecoder`: any bytes, split anywhere, give frames within the cap or a `MalformedDataError`
 *   (never another error, never a frame over the cap), and well-formed streams decode to exactly the
 *   frames sent, however they are split;
 * - a serving `ServerSession` and a requesting `PeerChannel`, each fed random and mutated frames
 *   (valid messages with random fields, every type in any order, random bytes): nothing escapes
 *   the stream's event handler, no promise rejects unhandled, and the session either answers,
 *   ignores, or aborts the stream with a typed error.
 */
import type { Stream } from '@libp2p/interface'
import fc from 'fast-check'
import { CID } from 'multiformats/cid'
import * as varint from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BufferPool } from '../../src/core/buffer-pool.js'
import { chunkIdOf, encodeBlock as encodeCbor, type ChunkId, type VersionId } from '../../src/core/digest.js'
import { MalformedDataError, ShoalError } from '../../src/core/errors.js'
import { Slots } from '../../src/fetcher/bandwidth.js'
import { encodeBlock } from '../../src/protocol/chunks/block.js'
import { PeerChannel } from '../../src/protocol/chunks/client.js'
import { MAX_FRAME_BYTES, MAX_REQUEST_FRAME_BYTES, POOLED_FRAME_MIN_BYTES } from '../../src/protocol/chunks/constants.js'
import { ChunkRequest, ChunkResponse } from '../../src/protocol/chunks/pb/chunks.js'
import { RecentSends, ServerSession, type ChunkSource, type UploadLimiter } from '../../src/protocol/chunks/server.js'
import { FrameDecoder } from '../../src/protocol/framing.js'
import { fuzzParams } from './fuzz.js'

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

const CHUNK = new Uint8Array(70_000).fill(7)
const CHUNK_ID = chunkIdOf(CHUNK)
const VERSION: VersionId = encodeCbor({ fuzz: true }).cid

const source: ChunkSource = {
  readChunk: async id => id === CHUNK_ID ? CHUNK : undefined,
  have: async version => version === VERSION ? { complete: false, bits: new Uint8Array([0x80]) } : undefined,
  watch: () => () => {},
  release: () => {}
}

function limiter (): UploadLimiter {
  const slots = new Slots(2)
  return { slot: async signal => await slots.acquire(signal), bandwidth: async () => {}, slotWouldWait: () => slots.full, load: () => slots.inUse + slots.waiting }
}

const framed = (frame: Uint8Array): Uint8Array => Buffer.concat([varint.encode(frame.byteLength), frame])

/** CIDs a peer might name: the served chunk, the version, a CID of the wrong codec, garbage. */
const cidBytes = fc.oneof(
  fc.constant(CID.parse(CHUNK_ID).bytes),
  fc.constant(CID.parse(VERSION).bytes),
  fc.uint8Array({ maxLength: 40 }),
  fc.constant(new Uint8Array(0))
)

/** A message whose `type` (field 1) is a number the enum does not have, which protons will not encode. */
const unknownType = fc.tuple(fc.integer({ min: 6, max: 300 }), fc.nat({ max: 0xffff })).map(([type, id]) => Uint8Array.from([0x08, ...varint.encode(type), 0x10, ...varint.encode(id)]))

const requestFrame: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.record({ type: fc.integer({ min: 0, max: 4 }), id: fc.nat({ max: 0xffff_ffff }), cid: cidBytes, urgent: fc.boolean() })
    .map(r => ChunkRequest.encode(r as unknown as ChunkRequest)),
  unknownType,
  fc.uint8Array({ maxLength: 64 })
)

const responseFrame: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.record({
    type: fc.integer({ min: 0, max: 5 }), id: fc.integer({ min: 0, max: 8 }), data: fc.uint8Array({ maxLength: 32 }), version: cidBytes,
    indices: fc.array(fc.nat(), { maxLength: 8 }), complete: fc.boolean(), code: fc.constantFrom('', 'BUSY', 'DUPLICATE', 'INTERNAL', 'X'),
    message: fc.string({ maxLength: 16 }), load: fc.nat(), holder: fc.string({ maxLength: 16 })
  }).map(r => ChunkResponse.encode(r as unknown as ChunkResponse)),
  fc.tuple(fc.integer({ min: 0, max: 8 }), fc.nat(), fc.integer({ min: 0, max: 2 * POOLED_FRAME_MIN_BYTES })).map(([id, load, size]) => encodeBlock(id, load, new Uint8Array(size)).subarray()),
  unknownType,
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
      expect(out.map(f => Buffer.from(f).toString('hex'))).toEqual(frames.map(f => Buffer.from(f).toString('hex')))
    }), fuzzParams())
  })

  it('the scripted stream works: a WANT for the served chunk gets its BLOCK, a garbage frame aborts the stream', async () => {
    const stream = new ScriptedStream()
    const session = new ServerSession(stream as unknown as Stream, 'fuzzer', source, limiter(), new RecentSends(), { debug () {} })
    expect(session).toBeDefined()
    stream.deliver(framed(ChunkRequest.encode({ type: ChunkRequest.Type.WANT, id: 9, cid: CID.parse(CHUNK_ID).bytes, urgent: true })))
    for (let i = 0; i < 5; i++) await new Promise(resolve => setImmediate(resolve))
    expect(stream.sent.some(f => f.byteLength > CHUNK.byteLength)).toBe(true)
    stream.deliver(framed(Uint8Array.from([0xff, 0xff, 0xff])))
    expect(stream.aborted).toBeInstanceOf(MalformedDataError)
    expect(stream.aborted?.message).toMatch(/^undecodable request: /)
  })

  it('ServerSession: any request frames in any order are answered, ignored or refused with a typed error', async () => {
    await fc.assert(fc.asyncProperty(wire(requestFrame), async parts => {
      const stream = new ScriptedStream()
      const session = new ServerSession(stream as unknown as Stream, 'fuzzer', source, limiter(), new RecentSends(), { debug () {} })
      expect(session).toBeDefined()
      for (const part of parts) stream.deliver(part)
      // Let the served WANTs run (reads, slots, sends) to completion.
      for (let i = 0; i < 5; i++) await new Promise(resolve => setImmediate(resolve))
      if (stream.aborted !== undefined) expect(stream.aborted.message).not.toBe('')
      for (const frame of stream.sent) expect(frame.byteLength).toBeLessThanOrEqual(MAX_FRAME_BYTES + 8)
      await stream.close()
      expect(unhandled).toEqual([])
    }), fuzzParams())
  })

  it('PeerChannel: any response frames, expected or not, are delivered, dropped, or abort the stream with a typed error', async () => {
    const pool = new BufferPool(MAX_FRAME_BYTES)
    await fc.assert(fc.asyncProperty(wire(responseFrame), fc.integer({ min: 0, max: 4 }), async (parts, wants) => {
      const stream = new ScriptedStream()
      const channel = new PeerChannel(stream as unknown as Stream, 8 * MAX_REQUEST_FRAME_BYTES + 1024 * 1024, pool)
      const outcomes: Array<Promise<unknown>> = []
      await channel.watch(VERSION, { onHave: () => {}, onUpdate: () => {} }).catch(() => {})
      for (let i = 0; i < wants; i++) {
        outcomes.push(channel.want(CHUNK_ID as ChunkId, undefined, false, () => {}, bytes => channel.release(bytes)).then(
          bytes => { channel.release(Array.isArray(bytes) ? bytes : [bytes]) },
          (err: unknown) => { expect(err).toBeInstanceOf(ShoalError) }
        ))
      }
      for (const part of parts) stream.deliver(part)
      if (stream.aborted !== undefined) expect(stream.aborted).toBeInstanceOf(ShoalError)
      await stream.close()
      await Promise.all(outcomes)
      expect(unhandled).toEqual([])
    }), fuzzParams())
  })
})
