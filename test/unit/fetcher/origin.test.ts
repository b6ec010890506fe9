import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { createServer, type Server, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { OriginBudget, OriginClient } from '../../../src/fetcher/origin.js'
import { OriginError } from '../../../src/fetcher/errors.js'
import { startOriginServer, type OriginServer } from '../../helpers/origin-server.js'
import { tempDir } from '../../helpers/tmp.js'
import { rejection } from '../../helpers/assert.js'

const SIZE = 200_003


describe('OriginClient', () => {
  let cleanup: () => Promise<void>
  let server: OriginServer
  let data: Buffer
  let client: OriginClient
  const extra: Array<{ close: () => unknown }> = []

  beforeEach(async () => {
    const tmp = await tempDir()
    cleanup = tmp.cleanup
    data = randomBytes(SIZE)
    await writeFile(join(tmp.dir, 'model.bin'), data)
    server = await startOriginServer(tmp.dir)
    client = new OriginClient({ timeoutMs: 2_000, stallTimeoutMs: 300, retries: 2, retryDelayMs: 5 })
  })

  afterEach(async () => {
    client.close()
    for (const x of extra.splice(0)) await x.close()
    await server.close()
    await cleanup()
  })

  it('fetches exact ranges, including the last partial one and the whole file', async () => {
    const url = server.url('model.bin')
    for (const [offset, length] of [[0, 1], [0, 65_536], [65_536, 65_536], [12_345, 1], [131_072, SIZE - 131_072], [SIZE - 1, 1], [0, SIZE]] as const) {
      const got = await client.fetchRange(url, offset, length)
      expect(got).toBeInstanceOf(Uint8Array)
      expect(Buffer.from(got).equals(data.subarray(offset, offset + length))).toBe(true)
    }
    expect(server.stats.ranges).toContain(`bytes=131072-${SIZE - 1}`)
  })

  it('reuses keep-alive connections, at most maxConnectionsPerOrigin at once', async () => {
    const url = server.url('model.bin')
    for (let i = 0; i < 10; i++) await client.fetchRange(url, i * 1000, 1000)
    expect(server.stats.requests).toBe(10)
    expect(server.stats.connections).toBe(1)

    const narrow = new OriginClient({ maxConnectionsPerOrigin: 2 })
    extra.push(narrow)
    const before = server.stats.connections
    const all = await Promise.all(Array.from({ length: 12 }, (_, i) => narrow.fetchRange(url, i * 4096, 4096)))
    all.forEach((got, i) => { expect(Buffer.from(got).equals(data.subarray(i * 4096, (i + 1) * 4096))).toBe(true) })
    expect(server.stats.connections - before).toBeLessThanOrEqual(2)
  })

  it('turns 404 and 416 into OriginError without retrying', async () => {
    const missing = await rejection(client.fetchRange(server.url('nope.bin'), 0, 10))
    expect(missing).toBeInstanceOf(OriginError)
    expect(missing).toMatchObject({ name: 'OriginError', code: 'ORIGIN_ERROR', reason: 'status', status: 404, retryable: false })
    expect(missing.message).toContain('404')
    expect(missing.message).toContain('/nope.bin')
    expect(server.stats.requests).toBe(1)

    const beyond = await rejection(client.fetchRange(server.url('model.bin'), SIZE, 10))
    expect(beyond).toMatchObject({ name: 'OriginError', reason: 'status', status: 416 })
    expect(server.stats.requests).toBe(2)
  })

  it('refuses a range the server clamps at the end of the file', async () => {
    const err = await rejection(client.fetchRange(server.url('model.bin'), SIZE - 10, 20))
    expect(err).toMatchObject({ name: 'OriginError', reason: 'protocol', status: 206 })
  })

  it('accepts a 200 for a range only when it is exactly the bytes asked for', async () => {
    server.setFaults({ ignoreRange: true })
    const url = server.url('model.bin')
    expect(Buffer.from(await client.fetchRange(url, 0, SIZE)).equals(data)).toBe(true)
    await expect(client.fetchRange(url, 0, 1000)).rejects.toMatchObject({ name: 'OriginError', reason: 'protocol', status: 200 })
    await expect(client.fetchRange(url, 1000, SIZE - 1000)).rejects.toMatchObject({ name: 'OriginError', reason: 'protocol', status: 200 })
    expect(server.stats.requests).toBe(3) // contract violations are not retried
  })

  it('refuses a body longer than the range, without buffering it', async () => {
    server.setFaults({ oversend: 100_000 })
    const err = await rejection(client.fetchRange(server.url('model.bin'), 1000, 500))
    expect(err).toMatchObject({ name: 'OriginError', reason: 'protocol' })
    expect(err.message).toContain('more than the 500 bytes')
  })

  it('returns corrupted bytes as sent: verification is the caller\'s job', async () => {
    server.setFaults({ corrupt: true })
    const got = await client.fetchRange(server.url('model.bin'), 10, 100)
    expect(got[0]).toBe(data[10]! ^ 0xff)
    expect(Buffer.from(got.subarray(1)).equals(data.subarray(11, 110))).toBe(true)
  })

  it('times out a stalled body within the stall deadline, retrying first', async () => {
    server.setFaults({ stallAfterBytes: 100 })
    const started = Date.now()
    const err = await rejection(client.fetchRange(server.url('model.bin'), 0, 10_000))
    const elapsed = Date.now() - started
    expect(err).toMatchObject({ name: 'OriginError', reason: 'timeout', retryable: true })
    expect(err.message).toContain('stalled')
    expect(server.stats.requests).toBe(3)
    // three attempts of ~300 ms each plus tiny backoffs; generous upper bound
    expect(elapsed).toBeGreaterThanOrEqual(3 * 300 - 50)
    expect(elapsed).toBeLessThan(5_000)
  })

  it('times out when no response headers arrive', async () => {
    const sockets = new Set<Socket>()
    const silent: Server = createServer((s) => { sockets.add(s) })
    await new Promise<void>((resolve) => { silent.listen(0, '127.0.0.1', resolve) })
    extra.push({ close: async () => { for (const s of sockets) s.destroy(); await new Promise(resolve => silent.close(resolve)) } })
    const quick = new OriginClient({ timeoutMs: 200, retries: 0 })
    extra.push(quick)
    const started = Date.now()
    const err = await rejection(quick.fetchRange(`http://127.0.0.1:${(silent.address() as AddressInfo).port}/x`, 0, 10))
    expect(err).toMatchObject({ name: 'OriginError', reason: 'timeout' })
    expect(err.message).toContain('no response headers within 200 ms')
    expect(Date.now() - started).toBeLessThan(2_000)
  })

  it('aborts promptly on the signal, before or during a request', async () => {
    const url = server.url('model.bin')
    await expect(client.fetchRange(url, 0, 10, { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortedError', code: 'ABORTED' })
    expect(server.stats.requests).toBe(0)

    server.setFaults({ stallAfterBytes: 0 })
    const slow = new OriginClient({ stallTimeoutMs: 60_000 })
    extra.push(slow)
    const controller = new AbortController()
    const pending = slow.fetchRange(url, 0, 1000, { signal: controller.signal })
    setTimeout(() => { controller.abort() }, 50)
    const started = Date.now()
    await expect(pending).rejects.toMatchObject({ name: 'AbortedError' })
    expect(Date.now() - started).toBeLessThan(1_000)
  })

  it('close() fails requests in flight and later calls', async () => {
    server.setFaults({ stallAfterBytes: 10 })
    const pending = client.fetchRange(server.url('model.bin'), 0, 1000)
    await new Promise(resolve => setTimeout(resolve, 50))
    client.close()
    await expect(pending).rejects.toMatchObject({ name: 'AbortedError' })
    await expect(client.fetchRange(server.url('model.bin'), 0, 1)).rejects.toMatchObject({ name: 'AbortedError' })
  })

  it('retries 5xx with backoff, then succeeds', async () => {
    server.setFaults({ status: 500, statusTimes: 2 })
    const got = await client.fetchRange(server.url('model.bin'), 5, 50)
    expect(Buffer.from(got).equals(data.subarray(5, 55))).toBe(true)
    expect(server.stats.requests).toBe(3)
  })

  it('takes the retry count per call, and reports every request it sends', async () => {
    server.setFaults({ status: 503 })
    const seen: string[] = []
    await expect(client.fetchRange(server.url('model.bin'), 0, 10, { retries: 0, onRequest: url => seen.push(url) })).rejects.toMatchObject({ name: 'OriginError', status: 503 })
    expect(server.stats.requests).toBe(1)
    expect(seen).toEqual([server.url('model.bin')])
  })

  it('gives up on 5xx after the configured retries', async () => {
    server.setFaults({ status: 503 })
    const err = await rejection(client.fetchRange(server.url('model.bin'), 0, 10))
    expect(err).toMatchObject({ name: 'OriginError', reason: 'status', status: 503, retryable: true })
    expect(server.stats.requests).toBe(3)
  })

  it('accepts only http: and https: URLs', async () => {
    for (const url of ['file:///etc/passwd', 'ftp://example.com/x', 'data:,hello', 'not a url', '/relative/path']) {
      await expect(client.fetchRange(url, 0, 10)).rejects.toMatchObject({ name: 'OriginError', reason: 'unsupported-url' })
    }
  })

  it('refuses bad offsets and lengths', async () => {
    const url = server.url('model.bin')
    for (const [offset, length] of [[-1, 10], [0, 0], [0.5, 10], [0, 1 << 30]] as const) {
      await expect(client.fetchRange(url, offset, length)).rejects.toMatchObject({ name: 'InvalidInputError' })
    }
    expect(server.stats.requests).toBe(0)
  })

  describe('redirects', () => {
    let front: OriginServer

    beforeEach(async () => {
      front = await startOriginServer('/nonexistent')
      extra.push(front)
    })

    it('follows a redirect to another http origin', async () => {
      front.setFaults({ redirectTo: server.url('model.bin') })
      const got = await client.fetchRange(front.url('anything'), 100, 100)
      expect(Buffer.from(got).equals(data.subarray(100, 200))).toBe(true)
      expect(server.stats.ranges).toEqual(['bytes=100-199'])
    })

    it('refuses a redirect to a non-http(s) URL', async () => {
      front.setFaults({ redirectTo: 'file:///etc/passwd' })
      await expect(client.fetchRange(front.url('x'), 0, 10)).rejects.toMatchObject({ name: 'OriginError', reason: 'unsupported-url' })
      expect(front.stats.requests).toBe(1)
    })

    it('refuses a redirect the caller does not allow, before requesting it', async () => {
      front.setFaults({ redirectTo: server.url('model.bin') })
      const seen: string[] = []
      const err = await client.fetchRange(front.url('x'), 0, 10, { allowRedirect: () => false, onRequest: url => seen.push(url) }).then(() => undefined, (e: unknown) => e as OriginError)
      expect(err).toMatchObject({ name: 'OriginError', reason: 'not-allowed' })
      expect(err?.message).toContain('which is not an allowed origin')
      expect(server.stats.requests).toBe(0)
      expect(seen).toEqual([front.url('x')])
    })

    it(`gives up after too many redirects`, async () => {
      front.setFaults({ redirectTo: front.url('loop') })
      await expect(client.fetchRange(front.url('loop'), 0, 10)).rejects.toMatchObject({ name: 'OriginError', reason: 'redirect' })
      expect(front.stats.requests).toBe(4) // the first request and three redirects
    })
  })
})

describe('OriginBudget', () => {
  /** A client whose answers the test scripts: each call resolves or rejects when told to. */
  class ScriptedClient {
    readonly calls: Array<{ url: string, resolve: (b: Uint8Array) => void, reject: (e: Error) => void }> = []
    async fetchRange (url: string, _offset: number, _length: number, options: { retries?: number, onRequest?: (url: string) => void } = {}): Promise<Uint8Array> {
      expect(options.retries).toBe(0)
      options.onRequest?.(url)
      return await new Promise((resolve, reject) => { this.calls.push({ url, resolve, reject }) })
    }
  }
  const failure = (url: string): OriginError => new OriginError('origin server error', { reason: 'status', url, status: 500, retryable: true })
  const A = 'http://127.0.0.1:9/internal/a'
  const B = 'http://127.0.0.1:9/internal/b'

  it('asks a new or failing origin one request at a time, several once one succeeded', async () => {
    const client = new ScriptedClient()
    let now = 0
    const budget = new OriginBudget(client, { now: () => now, backoffBaseMs: 1_000 })
    expect(budget.usable(A)).toBe(true)
    const first = budget.fetchRange(A, 0, 1)
    expect(budget.usable(B)).toBe(false) // same origin: one probe at a time
    client.calls[0]!.resolve(new Uint8Array(1))
    await first
    const many = [budget.fetchRange(A, 0, 1), budget.fetchRange(B, 0, 1)]
    expect(budget.usable(A)).toBe(true)
    for (const c of client.calls.slice(1)) c.resolve(new Uint8Array(1))
    await Promise.all(many)
    now = 5
    const failing = budget.fetchRange(A, 0, 1)
    client.calls[3]!.reject(failure(A))
    await expect(failing).rejects.toMatchObject({ reason: 'status' })
    expect(budget.usable(A)).toBe(false)
    now += 1_000
    expect(budget.usable(A)).toBe(true)
    const probe = budget.fetchRange(A, 0, 1)
    expect(budget.usable(B)).toBe(false) // after a failure: one probe again until a success
    client.calls[4]!.resolve(new Uint8Array(1))
    await probe
  })

  it('backs off exponentially per origin (capped), gives it up after maxFailures, and never calls it while it waits', async () => {
    const client = new ScriptedClient()
    let now = 0
    const budget = new OriginBudget(client, { now: () => now, backoffBaseMs: 1_000, backoffMaxMs: 4_000, maxFailures: 5 })
    const waits: number[] = []
    for (let i = 0; i < 5; i++) {
      const call = budget.fetchRange(A, 0, 1)
      client.calls[i]!.reject(failure(A))
      await expect(call).rejects.toMatchObject({ name: 'OriginError' })
      let waited = 0
      while (!budget.usable(A) && waited < 10_000) { now += 10; waited += 10 }
      waits.push(waited)
    }
    expect(client.calls).toHaveLength(5)
    // Jittered to 50-100% of 1, 2, 4, 4 s; the fifth failure gives the origin up for good.
    expect(waits[0]).toBeGreaterThanOrEqual(500); expect(waits[0]).toBeLessThanOrEqual(1_000)
    expect(waits[1]).toBeGreaterThanOrEqual(1_000); expect(waits[1]).toBeLessThanOrEqual(2_000)
    expect(waits[2]).toBeGreaterThanOrEqual(2_000); expect(waits[2]).toBeLessThanOrEqual(4_000)
    expect(waits[3]).toBeGreaterThanOrEqual(2_000); expect(waits[3]).toBeLessThanOrEqual(4_000)
    expect(waits[4]).toBe(10_000)
    await expect(budget.fetchRange(B, 0, 1)).rejects.toMatchObject({ name: 'OriginError', reason: 'backoff', message: expect.stringContaining('origin given up for this pull after 5 failed requests') })
    expect(budget.stats()).toEqual([{ origin: 'http://127.0.0.1:9', requests: 5, failures: 5 }])
  })

  it('counts bytes that did not hash (refused) as a failure, and a cancelled request as none', async () => {
    const client = new ScriptedClient()
    const budget = new OriginBudget(client, { maxFailures: 1 })
    const controller = new AbortController()
    const cancelled = budget.fetchRange(A, 0, 1, { signal: controller.signal })
    controller.abort()
    client.calls[0]!.reject(new Error('aborted'))
    await expect(cancelled).rejects.toThrow()
    expect(budget.usable(A)).toBe(true)
    budget.refused(A)
    expect(budget.usable(A)).toBe(false)
  })
})

