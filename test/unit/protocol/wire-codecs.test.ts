/**
 * Blocks compressed on the wire (`/shoal/chunks/2.0.0` WANT `codec`, BLOCK `encoded`, the bulk
 * frame's encoded flag): a `ServerSession` with an `EncodedBlocks` encoder answering a `PeerChannel`
 * over an in-memory stream pair, and over a real bulk connection on loopback.
 */
import type { Stream } from '@libp2p/interface'
import { streamPair } from '@libp2p/utils'
import { CID } from 'multiformats/cid'
import * as varint from 'uint8-varint'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { testData } from '../../../scripts/lib/weights.js'
import { BufferPool } from '../../../src/core/buffer-pool.js'
import { CODECS, CODEC_HEADER_BYTES, encodeBlock } from '../../../src/core/codec.js'
import { chunkIdOf, type ChunkId } from '../../../src/core/digest.js'
import { DecodedTooLargeError, UnknownCodecError } from '../../../src/core/errors.js'
import { blockCount, blockMatches, joinHashes, leafHash, proofOf, rootOf, splitHashes } from '../../../src/core/tree.js'
import { bulkService, type BulkService } from '../../../src/protocol/bulk/index.js'
import { decodeHeader, encodeHeader } from '../../../src/protocol/bulk/wire.js'
import { HEADER_BYTES } from '../../../src/protocol/bulk/constants.js'
import { decodeBlock as decodeBlockFrame, encodeBlock as blockFrame } from '../../../src/protocol/chunks/block.js'
import { PeerChannel, type BlockArrival, type Span } from '../../../src/protocol/chunks/client.js'
import { MAX_FRAME_BYTES } from '../../../src/protocol/chunks/constants.js'
import { EncodedBlocks } from '../../../src/protocol/chunks/encoded-blocks.js'
import { ChunkRequest } from '../../../src/protocol/chunks/pb/chunks.js'
import { RecentSends, ServerSession, type ChunkSource, type Span as ServedSpan, type UploadLimiter } from '../../../src/protocol/chunks/server.js'
import { thrown } from '../../helpers/assert.js'
import { sameBytes } from '../../helpers/random.js'

const KiB = 1024
const MiB = 1024 * KiB
const BS = 64 * KiB
const quiet = { debug () {} }

/** Serves chunks from a map, each block with its proof (as an honest node does). */
class MapSource implements ChunkSource {
  readonly chunks = new Map<ChunkId, Uint8Array>()
  async readSpan (id: ChunkId, blockSize: number, first: number, count: number): Promise<ServedSpan | undefined> {
    const bytes = this.chunks.get(id)
    if (bytes === undefined) return undefined
    const n = blockCount(bytes.byteLength, blockSize)
    if (first + count > n) return undefined
    const leaves = Array.from({ length: n }, (_, i) => leafHash(bytes.subarray(i * blockSize, Math.min(bytes.byteLength, (i + 1) * blockSize))))
    return { data: bytes.subarray(first * blockSize, Math.min(bytes.byteLength, (first + count) * blockSize)), proofs: Array.from({ length: count }, (_, i) => joinHashes(proofOf(leaves, first + i))) }
  }

  async have (): Promise<undefined> { return undefined }
  watch (): () => void { return () => {} }
}

class CountingLimiter implements UploadLimiter {
  readonly granted: number[] = []
  async slot (): Promise<() => void> { return () => {} }
  async bandwidth (bytes: number): Promise<void> { this.granted.push(bytes) }
  load (): number { return 0 }
}

interface Got { index: number, proof: Uint8Array, data: Uint8Array, encoded: boolean, wire: number }

/** Asks for `span`, decoding blocks that come encoded (as the fetcher does), and collects them. */
async function fetchSpan (channel: PeerChannel, span: Span): Promise<Got[]> {
  const got: Got[] = []
  await channel.want(span, {
    onBlock: (b: BlockArrival) => {
      const wire = b.data.reduce((n, p) => n + p.byteLength, 0)
      const data = b.encoded === true ? channel.decode(b.data, { maxSize: span.blockSize, accept: ['raw', ...(span.codec !== undefined ? [span.codec] : [])] }) : b.data
      got.push({ index: b.index, proof: Uint8Array.from(b.proof), data: new Uint8Array(Buffer.concat(data)), encoded: b.encoded === true, wire })
      if (data !== b.data) channel.release(data)
      channel.release(b.data)
    }
  })
  return got
}

function expectVerified (got: Got[], bytes: Uint8Array, blockSize: number): void {
  const n = blockCount(bytes.byteLength, blockSize)
  const root = rootOf(Array.from({ length: n }, (_, i) => leafHash(bytes.subarray(i * blockSize, Math.min(bytes.byteLength, (i + 1) * blockSize)))))
  for (const b of got) {
    expect(sameBytes(b.data, bytes.subarray(b.index * blockSize, Math.min(bytes.byteLength, (b.index + 1) * blockSize))), `block ${b.index}`).toBe(true)
    expect(blockMatches(b.data, b.index, n, splitHashes(b.proof), root)).toBe(true)
  }
}

const bf16 = testData('BF16', 4 * BS + 1000, 7)
const bf16Id = chunkIdOf(bf16)
const random = testData('random', 4 * BS, 8)
const randomId = chunkIdOf(random)

describe('blocks compressed on the wire', () => {
  let outbound: Stream
  let inbound: Stream
  let source: MapSource
  let limiter: CountingLimiter
  let encoder: EncodedBlocks
  let sent: Array<{ bytes: number, wire: number }>

  beforeEach(async () => {
    ;[outbound, inbound] = await streamPair({ delay: 0 })
    source = new MapSource()
    source.chunks.set(bf16Id, bf16)
    source.chunks.set(randomId, random)
    limiter = new CountingLimiter()
    encoder = new EncodedBlocks(8 * MiB)
    sent = []
  })

  afterEach(() => {
    for (const s of [outbound, inbound]) if (s.status === 'open') s.abort(new Error('test over'))
  })

  const connect = (peer = 'peer-a', pool = new BufferPool(MAX_FRAME_BYTES)): PeerChannel => {
    new ServerSession(inbound, peer, source, limiter, new RecentSends(), quiet, { encoder, onSent: (_p, bytes, _v, wire) => { sent.push({ bytes, wire }) } })
    return new PeerChannel(outbound, 16 * MiB, pool)
  }

  it('a WANT offering planes2 gets bf16 blocks encoded: fewer bytes on the wire, the same blocks after decoding, proofs over the raw bytes', async () => {
    const channel = connect()
    const got = await fetchSpan(channel, { chunk: bf16Id, first: 0, count: 5, blockSize: BS, codec: 'planes2' })
    expectVerified(got, bf16, BS)
    expect(got.map(b => b.encoded)).toEqual([true, true, true, true, true])
    const wire = got.reduce((n, b) => n + b.wire, 0)
    expect(wire / bf16.byteLength).toBeLessThan(0.75)
    // The upload limiter is charged what crosses the link; the hook reports both figures.
    expect(limiter.granted).toEqual([wire])
    expect(sent).toEqual([{ bytes: bf16.byteLength, wire }])
    expect(encoder.stats).toMatchObject({ encoded: 5, hits: 0 })
  })

  it('a block the node keeps encoded (a cold chunk) goes in its stored form, neither encoded nor cached', async () => {
    const stored = Array.from({ length: blockCount(bf16.byteLength, BS) }, (_, i) => encodeBlock(bf16.subarray(i * BS, Math.min(bf16.byteLength, (i + 1) * BS)), 'planes2'))
    const read = source.readSpan.bind(source)
    source.readSpan = async (id, blockSize, first, count) => {
      const span = await read(id, blockSize, first, count)
      return span === undefined || id !== bf16Id ? span : { ...span, encoded: stored.slice(first, first + count) }
    }
    const channel = connect()
    const got = await fetchSpan(channel, { chunk: bf16Id, first: 1, count: 4, blockSize: BS, codec: 'planes2' })
    expectVerified(got, bf16, BS)
    expect(got.map(b => b.wire)).toEqual(stored.slice(1, 5).map(e => e.byteLength))
    expect(encoder.stats).toMatchObject({ encoded: 0, hits: 0, stored: 4 })
    expect(encoder.heldBytes).toBe(0)
    // Asked in another codec, the stored form is not sent: the block is encoded as asked.
    const other = await fetchSpan(channel, { chunk: bf16Id, first: 0, count: 1, blockSize: BS, codec: 'deflate' })
    expectVerified(other, bf16, BS)
    expect(encoder.stats).toMatchObject({ encoded: 1, stored: 4 })
  })

  it('a block is encoded once: a second peer (or a second ask) gets the cached encoded form', async () => {
    const channel = connect()
    await fetchSpan(channel, { chunk: bf16Id, first: 0, count: 2, blockSize: BS, codec: 'planes2' })
    const again = await fetchSpan(channel, { chunk: bf16Id, first: 0, count: 2, blockSize: BS, codec: 'planes2' })
    expectVerified(again, bf16, BS)
    expect(encoder.stats).toMatchObject({ encoded: 2, hits: 2 })
  })

  it('a WANT without a codec, or naming one this build does not know, gets raw blocks', async () => {
    const channel = connect()
    const plain = await fetchSpan(channel, { chunk: bf16Id, first: 0, count: 2, blockSize: BS })
    expectVerified(plain, bf16, BS)
    expect(plain.map(b => b.encoded)).toEqual([false, false])
    // A raw WANT written by hand, with a codec id from the future.
    const [out2, in2] = await streamPair({ delay: 0 })
    new ServerSession(in2, 'peer-b', source, limiter, new RecentSends(), quiet, { encoder })
    const frames: Uint8Array[] = []
    out2.addEventListener('message', evt => { frames.push(evt.data.subarray()) })
    const want = ChunkRequest.encode({ type: ChunkRequest.Type.WANT, id: 1, cid: CID.parse(bf16Id).bytes, first: 0, count: 1, blockSize: BS, codec: 200 })
    out2.send(Buffer.concat([varint.encode(want.byteLength), want]))
    await expect.poll(() => frames.reduce((n, f) => n + f.byteLength, 0)).toBeGreaterThan(BS)
    expect(encoder.stats.encoded).toBe(0)
    out2.abort(new Error('test over'))
  })

  it('random bytes offered deflate go raw, and the chunk is not tried again (its codec does not pay)', async () => {
    const channel = connect()
    const got = await fetchSpan(channel, { chunk: randomId, first: 0, count: 4, blockSize: BS, codec: 'deflate' })
    expectVerified(got, random, BS)
    expect(got.map(b => b.encoded)).toEqual([false, false, false, false])
    expect(encoder.stats).toMatchObject({ encoded: 1, raw: 4 })
    expect(sent).toEqual([{ bytes: random.byteLength, wire: random.byteLength }])
  })

  it('on an encrypted bulk connection, encoded blocks carry the frame flag and decode the same', async () => {
    const pool = new BufferPool(MAX_FRAME_BYTES)
    const services: BulkService[] = [bulkService({ host: '127.0.0.1', port: 0, pool: new BufferPool(MAX_FRAME_BYTES), encrypt: true }), bulkService({ host: '127.0.0.1', port: 0, pool, encrypt: true })]
    for (const s of services) await s.start()
    try {
      const [server, client] = services as [BulkService, BulkService]
      new ServerSession(inbound, 'peer-a', source, limiter, new RecentSends(), quiet, { encoder, bulk: (peer, signal) => server.offer(peer, { signal }) })
      const channel = new PeerChannel(outbound, 16 * MiB, pool)
      expect(await channel.openBulk(async (offer, signal) => await client.connect('127.0.0.1', offer.port, offer.token, offer.key, { signal }), AbortSignal.timeout(30_000))).toBe(true)
      await expect.poll(() => server.stats().connections).toBe(1)
      const got = await fetchSpan(channel, { chunk: bf16Id, first: 1, count: 4, blockSize: BS, codec: 'planes2' })
      expectVerified(got, bf16, BS)
      expect(got.map(b => b.encoded)).toEqual([true, true, true, true])
    } finally {
      for (const s of services) await s.stop()
    }
  })
})

describe('wire formats of the encoded flag', () => {
  it('a BLOCK frame says encoded, or not', () => {
    const data = Uint8Array.of(1, 2, 3)
    expect(decodeBlockFrame(blockFrame(1, 0, 2, new Uint8Array(0), data, true))).toMatchObject({ id: 1, index: 2, encoded: true })
    expect(decodeBlockFrame(blockFrame(1, 0, 2, new Uint8Array(0), data))).toMatchObject({ encoded: false })
  })

  it('a bulk frame header carries the flag in the top bit of its proof length', () => {
    const head = new Uint8Array(HEADER_BYTES)
    encodeHeader(head, { reqId: 7, index: 3, proofLen: 2048, dataLen: 100, encoded: true })
    expect(decodeHeader(head)).toEqual({ reqId: 7, index: 3, proofLen: 2048, dataLen: 100, encoded: true })
    encodeHeader(head, { reqId: 7, index: 3, proofLen: 2048, dataLen: 100 })
    expect(decodeHeader(head)).toMatchObject({ proofLen: 2048, encoded: false })
    expect(() => { encodeHeader(head, { reqId: 7, index: 3, proofLen: 0x8000, dataLen: 1 }) }).toThrow(/does not fit/)
  })
})

describe('PeerChannel.decode', () => {
  const channel = async (): Promise<{ channel: PeerChannel, pool: BufferPool, close: () => void }> => {
    const [a] = await streamPair({ delay: 0 })
    const pool = new BufferPool(MAX_FRAME_BYTES)
    return { channel: new PeerChannel(a, MiB, pool), pool, close: () => { a.abort(new Error('test over')) } }
  }

  it('refuses a decompression bomb (a declared length over the block size) before allocating, and a codec it did not offer', async () => {
    const { channel: c, close } = await channel()
    try {
      const block = testData('BF16', BS, 3)
      const encoded = encodeBlock(block, 'planes2')
      expect(encoded[0]).toBe(CODECS.planes2.id)
      const bomb = Uint8Array.from(encoded)
      new DataView(bomb.buffer).setUint32(2, 1024 * MiB, true)
      const err = thrown(() => c.decode([bomb], { maxSize: BS, accept: ['raw', 'planes2'] }))
      expect(err).toBeInstanceOf(DecodedTooLargeError)
      expect(err.message).toMatch(/1073741824|1 GiB|over/)
      const notOffered = thrown(() => c.decode([encoded], { maxSize: BS, accept: ['raw', 'deflate'] }))
      expect(notOffered).toBeInstanceOf(UnknownCodecError)
      expect(notOffered.message).toMatch(/planes2/)
      // A good one decodes, from parts too.
      const parts = [encoded.subarray(0, CODEC_HEADER_BYTES + 10), encoded.subarray(CODEC_HEADER_BYTES + 10)]
      expect(sameBytes(Buffer.concat(c.decode(parts, { maxSize: BS, accept: ['raw', 'planes2'] })), block)).toBe(true)
    } finally {
      close()
    }
  })
})

describe('EncodedBlocks', () => {
  const block = (index: number): { chunk: ChunkId, blockSize: number, index: number, bytes: Uint8Array } => ({ chunk: bf16Id, blockSize: BS, index, bytes: bf16.subarray(index * BS, (index + 1) * BS) })

  it('holds at most maxBytes of encoded blocks, least recently used out first', () => {
    const one = encodeBlock(block(0).bytes, 'planes2').byteLength
    const cache = new EncodedBlocks(Math.floor(2.5 * one))
    for (const i of [0, 1, 2]) cache.encode(block(i), 'planes2')
    expect(cache.heldBytes).toBeLessThanOrEqual(Math.floor(2.5 * one))
    cache.encode(block(2), 'planes2')
    expect(cache.stats).toMatchObject({ encoded: 3, hits: 1 })
    cache.encode(block(0), 'planes2') // evicted: encoded again
    expect(cache.stats.encoded).toBe(4)
  })

  it('sends a stored encoded form only when it is in the codec asked for and pays', () => {
    const cache = new EncodedBlocks(MiB)
    const stored = encodeBlock(block(1).bytes, 'planes2')
    expect(cache.encode(block(1), 'planes2', stored)).toBe(stored)
    expect(cache.stats).toMatchObject({ stored: 1, encoded: 0 })
    // A block kept raw (its codec did not pay when it was stored), or kept in another codec: encoded as asked.
    const raw = encodeBlock(block(2).bytes, 'raw')
    expect(raw[0]).toBe(CODECS.raw.id)
    expect(cache.encode(block(2), 'planes2', raw)?.[0]).toBe(CODECS.planes2.id)
    expect(cache.encode(block(3), 'planes2', encodeBlock(block(3).bytes, 'deflate'))?.[0]).toBe(CODECS.planes2.id)
    expect(cache.stats).toMatchObject({ stored: 1, encoded: 2 })
  })

  it('keeps an encoded block received from a peer, and serves it without encoding', () => {
    const cache = new EncodedBlocks(MiB)
    const encoded = encodeBlock(block(1).bytes, 'planes2')
    cache.keep({ chunk: bf16Id, blockSize: BS, index: 1 }, [encoded.subarray(0, 100), encoded.subarray(100)])
    expect(sameBytes(cache.encode(block(1), 'planes2')!, encoded)).toBe(true)
    expect(cache.stats).toMatchObject({ encoded: 0, hits: 1 })
    // Not under another codec, and a raw form is not kept at all.
    cache.keep({ chunk: bf16Id, blockSize: BS, index: 2 }, encodeBlock(random.subarray(0, BS), 'deflate'))
    expect(cache.heldBytes).toBe(encoded.byteLength)
  })
})


