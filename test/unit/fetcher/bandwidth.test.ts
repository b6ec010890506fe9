import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { Slots, TokenBucket, UploadLimits } from '../../../src/fetcher/bandwidth.js'

/** Tracks when a promise settles, for asserting on it under fake timers. */
function track<T> (p: Promise<T>): { done: boolean, error: unknown, value: T | undefined } {
  const state: { done: boolean, error: unknown, value: T | undefined } = { done: false, error: undefined, value: undefined }
  p.then((v) => { state.done = true; state.value = v }, (err: unknown) => { state.done = true; state.error = err })
  return state
}

describe('TokenBucket', () => {
  beforeEach(() => { vi.useFakeTimers() })
  afterEach(() => { vi.useRealTimers() })

  it('passes everything immediately when unlimited', async () => {
    for (const rate of [undefined, 0]) {
      const bucket = new TokenBucket(rate)
      expect(bucket.rate).toBeUndefined()
      const t = track(Promise.all([bucket.take(1e12), bucket.take(1e12), bucket.take(0)]))
      await vi.advanceTimersByTimeAsync(0)
      expect(t.done).toBe(true)
      expect(vi.getTimerCount()).toBe(0)
    }
  })

  it('starts full, then holds the rate', async () => {
    const bucket = new TokenBucket(1000, 1000)
    expect(bucket.rate).toBe(1000)
    const first = track(bucket.take(1000))
    await vi.advanceTimersByTimeAsync(0)
    expect(first.done).toBe(true)

    expect(bucket.wouldWait(500)).toBe(true)
    const second = track(bucket.take(500))
    await vi.advanceTimersByTimeAsync(498)
    expect(second.done).toBe(false)
    await vi.advanceTimersByTimeAsync(3)
    expect(second.done).toBe(true)
    await vi.advanceTimersByTimeAsync(300)
    expect(bucket.wouldWait(250)).toBe(false) // ~300 tokens refilled
    expect(bucket.wouldWait(400)).toBe(true)
    expect(new TokenBucket(undefined).wouldWait(1e12)).toBe(false)
  })

  it('sustains the rate over many takes, sleeping on one timer', async () => {
    const bucket = new TokenBucket(10_000) // burst defaults to one second's worth
    const done: number[] = []
    for (let i = 0; i < 30; i++) void bucket.take(1000).then(() => done.push(i))
    await vi.advanceTimersByTimeAsync(0)
    expect(done.length).toBe(10) // the initial burst
    expect(vi.getTimerCount()).toBe(1)
    await vi.advanceTimersByTimeAsync(1000)
    expect(done.length).toBe(20)
    await vi.advanceTimersByTimeAsync(1000)
    expect(done).toEqual(Array.from({ length: 30 }, (_, i) => i))
    expect(vi.getTimerCount()).toBe(0)
  })

  it('serves a request larger than the burst after a proportional wait', async () => {
    const bucket = new TokenBucket(1000, 100)
    await bucket.take(100)
    const big = track(bucket.take(2000))
    await vi.advanceTimersByTimeAsync(1990)
    expect(big.done).toBe(false)
    await vi.advanceTimersByTimeAsync(20)
    expect(big.done).toBe(true)
    // the bucket was emptied at 2000 ms (10 ms ago): the long-run rate holds
    const next = track(bucket.take(100))
    await vi.advanceTimersByTimeAsync(80)
    expect(next.done).toBe(false)
    await vi.advanceTimersByTimeAsync(20)
    expect(next.done).toBe(true)
  })

  it('is FIFO: a small request does not overtake a large one', async () => {
    const bucket = new TokenBucket(1000, 1000)
    await bucket.take(1000)
    const order: string[] = []
    void bucket.take(800).then(() => order.push('large'))
    void bucket.take(10).then(() => order.push('small'))
    expect(bucket.waiting).toBe(2)
    await vi.advanceTimersByTimeAsync(500) // 500 tokens: enough for 'small', not for 'large'
    expect(order).toEqual([])
    await vi.advanceTimersByTimeAsync(305) // 'large' at 800 ms, 'small' needs 10 ms more
    expect(order).toEqual(['large'])
    await vi.advanceTimersByTimeAsync(10)
    expect(order).toEqual(['large', 'small'])
  })

  it('abort removes a waiter, takes nothing, and lets the next one move up', async () => {
    const bucket = new TokenBucket(1000, 1000)
    await bucket.take(1000)
    const controller = new AbortController()
    const large = track(bucket.take(900, controller.signal))
    const small = track(bucket.take(100))
    await vi.advanceTimersByTimeAsync(50)
    controller.abort()
    await vi.advanceTimersByTimeAsync(0)
    expect(large.error).toMatchObject({ name: 'AbortedError', code: 'ABORTED' })
    expect(bucket.waiting).toBe(1)
    await vi.advanceTimersByTimeAsync(51)
    expect(small.done).toBe(true)
    expect(small.error).toBeUndefined()
    // the aborted request's share stayed in the bucket: 900 more bytes are available at 1000 ms
    const after = track(bucket.take(900))
    await vi.advanceTimersByTimeAsync(898)
    expect(after.done).toBe(false)
    await vi.advanceTimersByTimeAsync(3)
    expect(after.done).toBe(true)
  })

  it('rejects at once on an aborted signal and on bad counts', async () => {
    const bucket = new TokenBucket(1000)
    await expect(bucket.take(1, AbortSignal.abort())).rejects.toMatchObject({ name: 'AbortedError' })
    await expect(new TokenBucket(undefined).take(1, AbortSignal.abort())).rejects.toMatchObject({ name: 'AbortedError' })
    await expect(bucket.take(-1)).rejects.toMatchObject({ name: 'InvalidInputError' })
    await expect(bucket.take(1.5)).rejects.toMatchObject({ name: 'InvalidInputError' })
    expect(() => new TokenBucket(-5)).toThrow(expect.objectContaining({ name: 'InvalidInputError' }))
    expect(() => new TokenBucket(100, 0)).toThrow(expect.objectContaining({ name: 'InvalidInputError' }))
  })

  it('setRate speeds up, slows down, and lifting the limit releases every waiter', async () => {
    const bucket = new TokenBucket(100)
    await bucket.take(100)
    const a = track(bucket.take(1000)) // 10 s at 100 B/s
    await vi.advanceTimersByTimeAsync(1000)
    bucket.setRate(1000) // 900 left at 1000 B/s
    expect(bucket.rate).toBe(1000)
    await vi.advanceTimersByTimeAsync(890)
    expect(a.done).toBe(false)
    await vi.advanceTimersByTimeAsync(20)
    expect(a.done).toBe(true)

    const b = track(bucket.take(1e6))
    const c = track(bucket.take(1e6))
    await vi.advanceTimersByTimeAsync(10)
    expect(b.done || c.done).toBe(false)
    bucket.setRate(undefined)
    await vi.advanceTimersByTimeAsync(0)
    expect(b.done && c.done).toBe(true)
    expect(bucket.waiting).toBe(0)
    expect(vi.getTimerCount()).toBe(0)
  })
})

describe('Slots', () => {
  it('hands out up to max slots, then queues FIFO', async () => {
    const slots = new Slots(2)
    const r1 = await slots.acquire()
    expect(slots.full).toBe(false)
    const r2 = await slots.acquire()
    expect(slots.inUse).toBe(2)
    expect(slots.full).toBe(true)
    const order: number[] = []
    const third = slots.acquire().then((r) => { order.push(3); return r })
    const fourth = slots.acquire().then((r) => { order.push(4); return r })
    expect(slots.waiting).toBe(2)
    await Promise.resolve()
    expect(order).toEqual([])

    r2()
    const r3 = await third
    expect(order).toEqual([3])
    expect(slots.inUse).toBe(2)
    expect(slots.waiting).toBe(1)

    r1()
    const r4 = await fourth
    expect(order).toEqual([3, 4])
    r3()
    r4()
    expect(slots.inUse).toBe(0)
  })

  it('a released slot cannot be released twice', async () => {
    const slots = new Slots(1)
    const release = await slots.acquire()
    const waiting = slots.acquire()
    release()
    release()
    const next = await waiting
    expect(slots.inUse).toBe(1)
    const more = track(slots.acquire())
    await Promise.resolve()
    expect(more.done).toBe(false)
    next()
    await vi.waitFor(() => { expect(more.done).toBe(true) })
  })

  it('abort removes a waiter without consuming a slot', async () => {
    const slots = new Slots(1)
    const release = await slots.acquire()
    const controller = new AbortController()
    const aborted = slots.acquire(controller.signal)
    const behind = slots.acquire()
    controller.abort()
    await expect(aborted).rejects.toMatchObject({ name: 'AbortedError' })
    expect(slots.waiting).toBe(1)
    release()
    const r = await behind
    expect(slots.inUse).toBe(1)
    r()
    expect(slots.inUse).toBe(0)
    await expect(slots.acquire(AbortSignal.abort())).rejects.toMatchObject({ name: 'AbortedError' })
    expect(slots.inUse).toBe(0)
  })

  it('refuses a bad size', () => {
    for (const max of [0, -1, 1.5, Number.NaN]) {
      expect(() => new Slots(max)).toThrow(expect.objectContaining({ name: 'InvalidInputError' }))
    }
  })
})

describe('UploadLimits', () => {
  it('gives one peer at most its share of the slots; other peers still get the rest', async () => {
    const limits = new UploadLimits(4, 2)
    const signal = new AbortController().signal
    const a1 = await limits.slot(signal, 'a')
    await limits.slot(signal, 'a')
    expect(limits.slotWouldWait('a')).toBe(true)
    expect(limits.slotWouldWait('b')).toBe(false)
    let third = false
    const waiting = limits.slot(signal, 'a').then(release => { third = true; return release })
    // b is served at once although a has a request waiting (a waits in its own queue).
    await limits.slot(signal, 'b')
    await limits.slot(signal, 'b')
    expect(third).toBe(false)
    expect(limits.load()).toBe(4)
    expect(limits.slotWouldWait('c')).toBe(true)
    a1()
    await waiting
    expect(third).toBe(true)
  })

  it('forgets a peer once it holds and waits for nothing; an aborted wait holds nothing', async () => {
    const limits = new UploadLimits(1, 1)
    const release = await limits.slot(new AbortController().signal, 'a')
    const controller = new AbortController()
    const waiting = limits.slot(controller.signal, 'b')
    controller.abort()
    await expect(waiting).rejects.toThrow()
    release()
    expect(limits.load()).toBe(0)
    expect(limits.slotWouldWait('a')).toBe(false)
    const again = await limits.slot(new AbortController().signal, 'b')
    again()
  })
})
