import { describe, expect, it } from 'vitest'
import { BufferPool, MIN_BUFFER_CLASS } from '../../../src/core/buffer-pool.js'

const KiB = 1024
const MiB = 1024 * KiB

describe('BufferPool', () => {
  it('hands out the smallest power-of-two buffer that holds the request (from 64 KiB up to its size)', () => {
    const pool = new BufferPool(4 * MiB + 64 * KiB)
    expect(pool.take(1).buffer.byteLength).toBe(MIN_BUFFER_CLASS)
    expect(pool.take(64 * KiB).buffer.byteLength).toBe(64 * KiB)
    expect(pool.take(256 * KiB + 40).buffer.byteLength).toBe(512 * KiB)
    expect(pool.take(256 * KiB).buffer.byteLength).toBe(256 * KiB)
    expect(pool.take(4 * MiB + 1).buffer.byteLength).toBe(4 * MiB + 64 * KiB)
    expect(pool.take(100).byteLength).toBe(100)
    expect(() => pool.take(4 * MiB + 64 * KiB + 1)).toThrow(RangeError)
  })

  it('reuses a buffer given back for the next request of its class only, and knows which are out', () => {
    const pool = new BufferPool(4 * MiB)
    const a = pool.take(200 * KiB)
    expect(pool.isOut(a)).toBe(true)
    pool.give(a)
    expect(pool.isOut(a)).toBe(false)
    expect(pool.take(100 * KiB).buffer).not.toBe(a.buffer)
    expect(pool.take(256 * KiB).buffer).toBe(a.buffer)
    // Given back twice, or never handed out: ignored.
    pool.give(a)
    pool.give(a)
    pool.give(new Uint8Array(256 * KiB))
    const b = pool.take(256 * KiB)
    const c = pool.take(256 * KiB)
    expect(b.buffer).toBe(a.buffer)
    expect(c.buffer).not.toBe(a.buffer)
  })

  it('keeps at most maxPooled largest buffers\' worth of bytes, over every class together', () => {
    const pool = new BufferPool(1 * MiB, { maxPooled: 2 })
    const out = Array.from({ length: 12 }, () => pool.take(256 * KiB))
    for (const v of out) pool.give(v)
    // 2 MiB kept: eight of the twelve 256 KiB buffers come back, the rest are new.
    const again = Array.from({ length: 12 }, () => pool.take(256 * KiB))
    const reused = again.filter(v => out.some(o => o.buffer === v.buffer))
    expect(reused).toHaveLength(8)
  })

  it('hands out ordinary ArrayBuffers when not shared', () => {
    expect(new BufferPool(MiB, { shared: false }).take(10).buffer).toBeInstanceOf(ArrayBuffer)
    expect(new BufferPool(MiB).take(10).buffer).toBeInstanceOf(SharedArrayBuffer)
  })
})
