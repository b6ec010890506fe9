/**
 * Fuzzing the bulk channel with what a hostile server or client can send:
 * - `FrameReader` (the receiver's parser) fed random bytes, valid frame streams (encrypted and in
 *   clear) and mutations of them, split at random and read the way the socket reads (into the
 *   buffer the reader names, straight into pooled buffers for large data): whole frames within the
 *   caps or a `MalformedDataError`, never another error; an encrypted frame is handed on only
 *   as it was sent; no pooled buffer is lost.
 * - a real receiver over loopback TCP, after a valid answer, fed random bytes in random writes:
 *   frames or a typed close, nothing thrown, no unhandled rejection.
 * - a real listener fed random hellos (random bytes, prefixes of the magic, valid tokens followed
 *   by junk): sockets are accepted, refused or timed out; nothing is left pending.
 */
import fc from 'fast-check'
import { createSecretKey, randomBytes } from 'node:crypto'
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BufferPool } from '../../src/core/buffer-pool.js'
import {
  HELLO_BYTES, HELLO_MAGIC, HelloAnswer, bulkService, connectBulk, type BulkFrame, type BulkService
} from '../../src/protocol/bulk/index.js'
import { FrameReader } from '../../src/protocol/bulk/reader.js'
import { encodeHello, sealFrame } from '../../src/protocol/bulk/wire.js'
import { until } from '../helpers/http-raw.js'
import { expectTypedOutcome, fuzzParams, FUZZ_RUNS, mutated } from './fuzz.js'

/** Small caps, so frames over them are cheap to make. */
const MAX_DATA = 96 * 1024
const MAX_PROOF = 256
const KEY = createSecretKey(randomBytes(32))

class CountingPool extends BufferPool {
  held = 0
  override take (length: number): Uint8Array {
    this.held++
    return super.take(length)
  }

  override give (view: Uint8Array): void {
    this.held--
    super.give(view)
  }
}

interface Sent { reqId: number, index: number, proof: Uint8Array, data: Uint8Array }

const sentFrame: fc.Arbitrary<Sent> = fc.record({
  reqId: fc.nat({ max: 0xffff_ffff }),
  index: fc.nat({ max: 0xffff_ffff }),
  proof: fc.nat({ max: MAX_PROOF / 32 }).map(k => new Uint8Array(k * 32).fill(k)),
  data: fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.integer({ min: 0, max: MAX_DATA }).map(n => new Uint8Array(n).fill(n & 0xff)))
})

function stream (frames: Sent[], encrypted: boolean): Uint8Array {
  const bytes: Uint8Array[] = []
  frames.forEach((f, i) => {
    const sealed = sealFrame(f, f.proof, [f.data], encrypted ? KEY : undefined, i)
    bytes.push(sealed.head, ...sealed.parts, ...(sealed.tag !== undefined ? [sealed.tag] : []))
  })
  return Buffer.concat(bytes)
}

/** A header with any lengths (within or over the caps), then whatever follows. */
const rawHeader = fc.tuple(fc.nat({ max: 0xffff_ffff }), fc.nat({ max: 0xffff }), fc.nat({ max: 0xffff_ffff }), fc.uint8Array({ maxLength: 300 })).map(([id, proofLen, dataLen, rest]) => {
  const out = Buffer.alloc(14 + rest.byteLength)
  out.writeUInt32BE(id, 0)
  out.writeUInt32BE((id ^ 0x5555) >>> 0, 4)
  out.writeUInt16BE(proofLen, 8)
  out.writeUInt32BE(dataLen, 10)
  out.set(rest, 14)
  return new Uint8Array(out)
})

/** Feeds `bytes` to `reader` as a socket would: each read fills part of the buffer the reader names. */
function feed (reader: FrameReader, bytes: Uint8Array, sizes: number[], viaPush: boolean): void {
  let at = 0
  let i = 0
  while (at < bytes.byteLength) {
    const want = Math.max(1, sizes[i++ % Math.max(1, sizes.length)] ?? bytes.byteLength)
    if (viaPush) {
      const n = Math.min(want, bytes.byteLength - at)
      reader.push(bytes.subarray(at, at + n))
      at += n
      continue
    }
    const into = reader.readBuffer()
    const n = Math.min(want, into.byteLength, bytes.byteLength - at)
    into.set(bytes.subarray(at, at + n))
    reader.read(n)
    at += n
  }
}

interface Case { bytes: Uint8Array, encrypted: boolean, sent?: Sent[] }

const cases: fc.Arbitrary<Case> = fc.oneof(
  fc.record({ bytes: fc.uint8Array({ maxLength: 2048 }), encrypted: fc.boolean() }),
  fc.record({ bytes: rawHeader, encrypted: fc.boolean() }),
  fc.tuple(fc.array(sentFrame, { maxLength: 4 }), fc.boolean()).map(([sent, encrypted]) => ({ bytes: stream(sent, encrypted), encrypted, sent })),
  fc.tuple(fc.array(sentFrame, { minLength: 1, maxLength: 3 }), fc.boolean()).chain(([sent, encrypted]) => mutated(stream(sent, encrypted)).map(bytes => ({ bytes, encrypted, sent })))
)

describe('fuzz: bulk channel', () => {
  it('FrameReader: any bytes, split anywhere, give whole frames within the caps or MalformedDataError; encrypted frames only as sent; no buffer lost', async () => {
    await fc.assert(fc.asyncProperty(cases, fc.array(fc.integer({ min: 1, max: 70_000 }), { maxLength: 8 }), fc.boolean(), async (c, sizes, viaPush) => {
      const pool = new CountingPool(MAX_DATA)
      const frames: BulkFrame[] = []
      const reader = new FrameReader({ pool, maxDataBytes: MAX_DATA, maxProofBytes: MAX_PROOF, onFrame: f => frames.push(f), ...(c.encrypted ? { key: KEY } : {}) })
      await expectTypedOutcome(() => { feed(reader, c.bytes, sizes, viaPush) }, { maxMs: 2_000 })
      reader.close()
      for (const f of frames) {
        expect(f.data.byteLength).toBeLessThanOrEqual(MAX_DATA)
        expect(f.proof.byteLength).toBeLessThanOrEqual(MAX_PROOF)
      }
      if (c.encrypted && c.sent !== undefined) {
        // Authenticated: frame k is the k-th frame sent, exactly, or not there at all.
        frames.forEach((f, k) => {
          const s = c.sent![k]!
          expect(s).toBeDefined()
          expect([f.reqId, f.index]).toEqual([s.reqId, s.index])
          expect(Buffer.from(f.proof).equals(s.proof)).toBe(true)
          expect(Buffer.from(f.data).equals(s.data)).toBe(true)
        })
      }
      if (c.sent !== undefined && c.bytes.byteLength === stream(c.sent, c.encrypted).byteLength && Buffer.from(c.bytes).equals(stream(c.sent, c.encrypted))) {
        expect(frames).toHaveLength(c.sent.length) // an untouched stream arrives whole
      }
      for (const f of frames) if (f.data.byteLength > 0) pool.give(f.data)
      expect(pool.held).toBe(0)
    }), fuzzParams())
  })

  describe('over loopback TCP', () => {
    let fake: Server
    let fakePort = 0
    let next: Uint8Array[] = []
    let service: BulkService
    const sockets = new Set<Socket>()

    beforeAll(async () => {
      fake = createServer(socket => {
        sockets.add(socket)
        socket.on('error', () => {})
        socket.on('close', () => sockets.delete(socket))
        const writes = next
        let got = 0
        socket.on('data', chunk => {
          got += chunk.byteLength
          if (got !== HELLO_BYTES) return
          socket.write(Uint8Array.of(HelloAnswer.ACCEPTED))
          for (const w of writes) socket.write(w)
          socket.end()
        })
      })
      await new Promise<void>(resolve => fake.listen(0, '127.0.0.1', resolve))
      fakePort = (fake.address() as { port: number }).port
      service = bulkService({ host: '127.0.0.1', port: 0, pool: new BufferPool(MAX_DATA), maxDataBytes: MAX_DATA, maxProofBytes: MAX_PROOF, helloTimeoutMs: 100 })
      await service.start()
    })

    afterAll(async () => {
      for (const s of sockets) s.destroy()
      await new Promise(resolve => fake.close(resolve))
      await service.stop()
    })

    it('a receiver fed random bytes in random writes after a valid answer hands on frames or closes with a typed error', async () => {
      await fc.assert(fc.asyncProperty(cases, fc.array(fc.integer({ min: 1, max: 4096 }), { maxLength: 6 }), async (c, cuts) => {
        const writes: Uint8Array[] = []
        let at = 0
        for (const cut of cuts) {
          if (at >= c.bytes.byteLength) break
          writes.push(c.bytes.subarray(at, at + cut))
          at += cut
        }
        writes.push(c.bytes.subarray(at))
        next = writes
        const pool = new CountingPool(MAX_DATA)
        const frames: BulkFrame[] = []
        await expectTypedOutcome(async () => {
          const receiver = await connectBulk('127.0.0.1', fakePort, new Uint8Array(32), c.encrypted ? KEY.export() : undefined, { pool, maxDataBytes: MAX_DATA, maxProofBytes: MAX_PROOF, onFrame: f => frames.push(f), timeoutMs: 10_000 })
          const err = await new Promise<Error | undefined>(resolve => receiver.onClose(resolve))
          if (err !== undefined) throw err
        }, { maxMs: 10_000 })
        for (const f of frames) if (f.data.byteLength > 0) pool.give(f.data)
        expect(pool.held).toBe(0)
      }), fuzzParams(Math.max(50, Math.floor(FUZZ_RUNS / 4))))
    })

    it('a listener fed random hellos accepts, refuses or times out each socket and keeps nothing pending', async () => {
      const hello = fc.oneof(
        fc.uint8Array({ maxLength: 100 }),
        fc.uint8Array({ maxLength: 40 }).map(rest => Buffer.concat([HELLO_MAGIC.subarray(0, 1 + (rest.byteLength % 4)), rest])),
        fc.tuple(fc.boolean(), fc.uint8Array({ maxLength: 8 })).map(([offered, junk]) => ({ offered, junk }))
      )
      await fc.assert(fc.asyncProperty(hello, fc.nat({ max: 40 }), async (h, split) => {
        const withdraw = new AbortController()
        let bytes: Uint8Array
        let offered: ReturnType<BulkService['offer']> | undefined
        if (h instanceof Uint8Array) {
          bytes = h
        } else {
          offered = h.offered ? service.offer('fuzz', { signal: withdraw.signal }) : undefined
          bytes = Buffer.concat([encodeHello(offered?.token ?? randomBytes(32)), h.junk])
        }
        const socket = netConnect({ host: '127.0.0.1', port: service.port })
        socket.on('error', () => {})
        const closed = new Promise<void>(resolve => socket.once('close', () => resolve()))
        const answered = new Promise<void>(resolve => socket.once('data', () => resolve()))
        await new Promise<void>(resolve => socket.once('connect', resolve))
        socket.write(bytes.subarray(0, split))
        socket.write(bytes.subarray(split))
        // The listener answers (accepted or refused), closes, or times the hello out.
        await Promise.race([closed, answered])
        socket.destroy()
        await closed
        withdraw.abort()
        const sender = await offered?.connected
        if (sender !== undefined) await new Promise(resolve => sender.onClose(resolve))
      }), fuzzParams(Math.max(50, Math.floor(FUZZ_RUNS / 4))))
      await until('no socket is left pending', () => service.stats().pending === 0 && service.stats().connections === 0)
      expect(service.stats().offers).toBeLessThanOrEqual(256)
    })
  })
})
