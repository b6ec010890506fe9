import { describe, expect, it } from 'vitest'
import * as varint from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import { BufferPool } from '../../../src/core/buffer-pool.js'
import type { Stream } from '@libp2p/interface'
import { FrameDecoder, FramedStream, readPrefix, SendStalledError } from '../../../src/protocol/framing.js'
import { rejection } from '../../helpers/assert.js'
import { seededBytes } from '../../helpers/random.js'

const framed = (...frames: Uint8Array[]): Uint8Array => Buffer.concat(frames.flatMap(f => [varint.encode(f.byteLength), f]))

/** Feeds `bytes` in pieces of `step` bytes; returns the frames, each joined. */
function feed (decoder: FrameDecoder, bytes: Uint8Array, step: number): Uint8ArrayList[] {
  const out: Uint8ArrayList[] = []
  for (let at = 0; at < bytes.byteLength; at += step) {
    // Pieces arrive as lists of small buffers, as from the transport.
    const piece = bytes.subarray(at, Math.min(at + step, bytes.byteLength))
    const list = new Uint8ArrayList(piece.subarray(0, piece.byteLength >> 1), piece.subarray(piece.byteLength >> 1))
    out.push(...decoder.decode(list))
  }
  return out
}

describe('FrameDecoder', () => {
  it('splits frames however the bytes arrive; large ones land whole in one pooled buffer', () => {
    const pool = new BufferPool(4096)
    const small = seededBytes(100, 1)
    const large = seededBytes(3000, 2)
    const bytes = framed(small, large, small, large)
    for (const step of [1, 7, 333, 5000, bytes.byteLength]) {
      const decoder = new FrameDecoder({ maxFrameBytes: 4096, maxBufferBytes: 8192, assemble: { pool, minBytes: 1000 } })
      const frames = feed(decoder, bytes, step)
      expect(frames.map(f => f.byteLength)).toEqual([100, 3000, 100, 3000])
      expect(frames.map(f => Buffer.from(f.subarray()))).toEqual([small, large, small, large].map(b => Buffer.from(b)))
      const assembled = frames[1]!
      expect([...assembled]).toHaveLength(1)
      expect([...assembled][0]!.buffer).toBeInstanceOf(SharedArrayBuffer)
      for (const f of frames) for (const part of f) pool.give(part)
    }
  })

  it('counts the bytes of large frames as they arrive, and not small frames', () => {
    const pool = new BufferPool(4096)
    const decoder = new FrameDecoder({ maxFrameBytes: 4096, maxBufferBytes: 8192, assemble: { pool, minBytes: 1000 } })
    const small = framed(seededBytes(100, 3))
    const large = framed(seededBytes(3000, 4))
    expect([...decoder.decode(small)]).toHaveLength(1)
    expect(decoder.largeFrameBytes).toBe(0)
    expect([...decoder.decode(large.subarray(0, 1002))]).toHaveLength(0) // 2-byte prefix, 1000 bytes of the frame
    expect(decoder.largeFrameBytes).toBe(1000)
    expect([...decoder.decode(large.subarray(1002))]).toHaveLength(1)
    expect(decoder.largeFrameBytes).toBe(3000)
    expect([...decoder.decode(small)]).toHaveLength(1)
    expect(decoder.largeFrameBytes).toBe(3000)
  })

  it('refuses a length over the cap before buffering the frame', () => {
    const decoder = new FrameDecoder({ maxFrameBytes: 100, maxBufferBytes: 1000 })
    expect(() => [...decoder.decode(varint.encode(101))]).toThrow(/cap/)
  })

  it('refuses a read buffer over its cap', () => {
    const decoder = new FrameDecoder({ maxFrameBytes: 1000, maxBufferBytes: 100 })
    expect(() => [...decoder.decode(framed(seededBytes(200, 3)).subarray(0, 150))]).toThrow(/read buffer/)
  })

  it('hands a half-assembled buffer back to the pool on close', () => {
    const pool = new BufferPool(4096)
    const decoder = new FrameDecoder({ maxFrameBytes: 4096, maxBufferBytes: 8192, assemble: { pool, minBytes: 1000 } })
    expect([...decoder.decode(framed(seededBytes(2000, 4)).subarray(0, 500))]).toEqual([])
    decoder.close()
    const reused = pool.take(10)
    const fresh = pool.take(10)
    expect(reused.buffer).not.toBe(fresh.buffer)
  })
})

describe('BufferPool', () => {
  it('reuses buffers given back, ignores foreign and repeated gives, keeps at most `maxPooled`', () => {
    const pool = new BufferPool(64, { maxPooled: 1 })
    const a = pool.take(64)
    expect(a.buffer).toBeInstanceOf(SharedArrayBuffer)
    const b = pool.take(10)
    expect(a.buffer).not.toBe(b.buffer)
    pool.give(a.subarray(5))
    pool.give(a) // already back: ignored
    pool.give(new Uint8Array(new SharedArrayBuffer(64)))
    pool.give(b) // over maxPooled: dropped
    const c = pool.take(20)
    expect(c.buffer).toBe(a.buffer)
    expect(c.byteLength).toBe(20)
    expect(pool.take(1).buffer).not.toBe(b.buffer)
    expect(() => pool.take(65)).toThrow(RangeError)
  })

  it('hands out ordinary ArrayBuffers when not shared, and reuses them the same way', () => {
    const pool = new BufferPool(64, { shared: false })
    const a = pool.take(32)
    expect(a.buffer).toBeInstanceOf(ArrayBuffer)
    expect(a.buffer).not.toBeInstanceOf(SharedArrayBuffer)
    pool.give(a)
    pool.give(new Uint8Array(64)) // not from this pool: ignored
    const b = pool.take(64)
    expect(b.buffer).toBe(a.buffer)
    expect(pool.take(64).buffer).not.toBe(a.buffer)
  })
})

/**
 * A stream whose peer reads only when told: every send needs a drain, which comes once
 * `writeBufferLength` reaches 0; `read(n)` takes n bytes of it.
 */
class BackedUpStream {
  maxReadBufferLength = 0
  writeBufferLength = 0
  aborted?: Error
  private drain?: () => void
  private readonly listeners = new Map<string, Array<(evt: unknown) => void>>()

  addEventListener (type: string, fn: (evt: unknown) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn])
  }

  send (data: Uint8ArrayList): boolean {
    this.writeBufferLength += data.byteLength
    return false
  }

  async onDrain (options?: { signal?: AbortSignal }): Promise<void> {
    if (this.writeBufferLength === 0) return
    await new Promise<void>((resolve, reject) => {
      this.drain = resolve
      options?.signal?.addEventListener('abort', () => reject(options.signal?.reason), { once: true })
    })
  }

  read (n: number): void {
    this.writeBufferLength = Math.max(0, this.writeBufferLength - n)
    if (this.writeBufferLength === 0) this.drain?.()
  }

  abort (err: Error): void {
    this.aborted = err
    for (const fn of this.listeners.get('close') ?? []) fn({ error: err })
  }
}

describe('FramedStream sends', () => {
  it('aborts the stream with SendStalledError when the peer reads nothing for sendStallMs', async () => {
    const stream = new BackedUpStream()
    let closedWith: Error | undefined
    const framed = new FramedStream(stream as unknown as Stream, { maxFrameBytes: 1024, maxBufferBytes: 4096, onFrame: () => {}, onClose: err => { closedWith = err }, sendStallMs: 300 })
    const started = Date.now()
    const err = await rejection(framed.send(new Uint8Array(10_000)))
    expect(err).toBeInstanceOf(SendStalledError)
    expect(err.message).toBe('the peer read nothing of 10002 bytes waiting to be sent for 0.3 s (it stopped reading)')
    expect(Date.now() - started).toBeGreaterThanOrEqual(300)
    expect(stream.aborted).toBe(err)
    expect(closedWith).toBe(err)
    expect(framed.isOpen).toBe(false)
  })

  it('keeps waiting for a slow peer that reads a little at a time, however long the whole send takes', async () => {
    const stream = new BackedUpStream()
    const framed = new FramedStream(stream as unknown as Stream, { maxFrameBytes: 1024, maxBufferBytes: 4096, onFrame: () => {}, onClose: () => {}, sendStallMs: 750 })
    // 5 reads of 2,000 bytes, 300 ms apart: 1.5 s in all, never 0.75 s without progress.
    const reader = setInterval(() => stream.read(2_000), 300)
    try {
      await framed.send(new Uint8Array(10_000))
    } finally {
      clearInterval(reader)
    }
    expect(stream.aborted).toBeUndefined()
    expect(framed.isOpen).toBe(true)
  })
})

describe('readPrefix', () => {
  it('reads a varint length prefix across parts, says when it has not fully arrived, and refuses one past 8 bytes', () => {
    for (const n of [0, 1, 127, 128, 300, 16_383, 16_384, 4 * 1024 * 1024 + 65_536, 2 ** 40]) {
      const bytes = varint.encode(n)
      const parts = new Uint8ArrayList(...Array.from(bytes, b => Uint8Array.of(b)), Uint8Array.of(9, 9))
      expect(readPrefix(parts)).toEqual({ length: n, prefix: bytes.byteLength })
      expect(readPrefix(new Uint8ArrayList(bytes.subarray(0, bytes.byteLength - 1)))).toBeUndefined()
    }
    // A non-minimal prefix is read as sent: its length counts all its bytes.
    expect(readPrefix(new Uint8ArrayList(Uint8Array.of(0x80, 0x00)))).toEqual({ length: 0, prefix: 2 })
    expect(() => readPrefix(new Uint8ArrayList(new Uint8Array(9).fill(0x80)))).toThrow('a length prefix of more than 8 bytes')
  })
})
