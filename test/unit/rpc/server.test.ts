/**
 * The RPC server's promises to a hostile local client, on a real unix socket with in-memory
 * handlers: every request it can read gets a `{ code, message }` answer, and every bound of
 * `rpc/limits.ts` holds (short limits here, so each test takes a moment) while other clients are
 * served.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { request } from 'node:http'
import { pino } from 'pino'
import { z } from 'zod'
import { InvalidInputError } from '../../../src/core/errors.js'
import { QUEUE_FACTOR, RpcServer, route, type Route, type RpcLog } from '../../../src/rpc/server.js'
import type { RpcLimitsInit } from '../../../src/rpc/limits.js'
import { exchange, open, parseResponses, until, type RawResponse } from '../../helpers/http-raw.js'
import { tempDir } from '../../helpers/tmp.js'

interface Logged { level: string, msg: string, obj: object }

let cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.reverse()) await c()
  cleanups = []
})

async function serve (routes: Route[], limits: RpcLimitsInit = {}): Promise<{ server: RpcServer, socketPath: string, logged: Logged[] }> {
  const tmp = await tempDir('shoal-rpc-')
  const socketPath = join(tmp.dir, 'rpc.sock')
  const logged: Logged[] = []
  const log: RpcLog = {
    warn: (obj, msg) => logged.push({ level: 'warn', msg: msg ?? '', obj }),
    debug: (obj, msg) => logged.push({ level: 'debug', msg: msg ?? '', obj }),
    error: (obj, msg) => logged.push({ level: 'error', msg: msg ?? '', obj })
  }
  const server = new RpcServer({ socket: socketPath, mode: 0o600, routes: [version, ...routes], limits, log })
  await server.start()
  cleanups.push(async () => { await server.stop(); await tmp.cleanup() })
  return { server, socketPath, logged }
}

const version = route({ method: 'GET', path: '/v1/version', handler: async () => ({ version: 'test' }) })

/** One exchange; the responses in it. */
async function answers (socketPath: string, payload: string | string[], options: { end?: boolean, timeoutMs?: number, everyMs?: number } = {}): Promise<RawResponse[]> {
  const x = await exchange({ socketPath }, payload, options)
  return parseResponses(x.bytes).responses
}

/** A normal request through Node's client: the server still serves. */
async function stillServes (socketPath: string): Promise<void> {
  const text = await new Promise<string>((resolve, reject) => {
    request({ socketPath, path: '/v1/version', agent: false }, res => {
      let t = ''
      res.on('data', (d: Buffer) => { t += d.toString() })
      res.on('end', () => resolve(t))
    }).on('error', reject).end()
  })
  expect(JSON.parse(text)).toEqual({ version: 'test' })
}

function wire (r: RawResponse | undefined): { code: string, message: string } {
  expect(r, 'an answer').toBeDefined()
  expect(r!.headers['content-type']).toBe('application/json')
  return r!.json as { code: string, message: string }
}

describe('RPC server: every request gets an answer', () => {
  it.each([
    ['//[/', 'the request target "//[/" is not a path; send one such as /v1/status'],
    ['http://[/', 'the request target "http://[/" is not a path; send one such as /v1/status'],
    ['http://a:b/v1/version', 'the request target "http://a:b/v1/version" is not a path; send one such as /v1/status'],
    ['*', 'the request target "*" is not a path; send one such as /v1/status']
  ])('a request target %j answers 400 saying it is not a path, and the server goes on', async (target, message) => {
    const { socketPath } = await serve([])
    const [r] = await answers(socketPath, `GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`)
    expect(r?.status).toBe(400)
    expect(wire(r)).toEqual({ code: 'INVALID_INPUT', message })
    await stillServes(socketPath)
  })

  it('a handler that throws anything, even a value that cannot be described, answers 500 INTERNAL', async () => {
    const hostile = { get message (): string { throw new Error('no message for you') } }
    const { socketPath, logged } = await serve([
      route({ method: 'GET', path: '/v1/null', handler: async () => { throw null } }),
      route({ method: 'GET', path: '/v1/hostile', handler: async () => { throw hostile } }),
      route({ method: 'GET', path: '/v1/circular', handler: async () => { const a: Record<string, unknown> = {}; a.a = a; return a } })
    ])
    const [n] = await answers(socketPath, 'GET /v1/null HTTP/1.1\r\n\r\n')
    expect(n?.status).toBe(500)
    expect(wire(n)).toEqual({ code: 'INTERNAL', message: 'internal error: null' })
    const [h] = await answers(socketPath, 'GET /v1/hostile HTTP/1.1\r\n\r\n')
    expect(h?.status).toBe(500)
    expect(wire(h)).toEqual({ code: 'INTERNAL', message: 'internal error (the failure could not be described)' })
    const [c] = await answers(socketPath, 'GET /v1/circular HTTP/1.1\r\n\r\n')
    expect(c?.status).toBe(500)
    expect(wire(c).message).toMatch(/^internal error: .*circular/i)
    expect(logged.some(l => l.level === 'error' || l.level === 'warn')).toBe(true)
    await stillServes(socketPath)
  })

  it('a throw outside every handler (a bug in the server itself) is answered 500 and logged at error with its stack', async () => {
    const lines: string[] = []
    const log = pino({ level: 'debug' }, { write: (line: string) => { lines.push(line) } })
    const broken = { ...route({ method: 'GET', path: '/v1/broken', handler: async () => ({}) }), get holds (): undefined { throw new Error('route table is broken') } }
    const tmp = await tempDir('shoal-rpc-')
    const server = new RpcServer({ socket: join(tmp.dir, 'rpc.sock'), mode: 0o600, routes: [version, broken], log })
    await server.start()
    cleanups.push(async () => { await server.stop(); await tmp.cleanup() })
    const [r] = await answers(join(tmp.dir, 'rpc.sock'), 'GET /v1/broken HTTP/1.1\r\n\r\n')
    expect(r?.status).toBe(500)
    expect(wire(r)).toEqual({ code: 'INTERNAL', message: 'internal error: route table is broken' })
    const logged = lines.map(l => JSON.parse(l) as { level: number, msg: string, err?: { stack?: string } }).find(l => l.msg === 'RPC request handling failed')
    expect(logged?.level).toBe(50)
    expect(logged?.err?.stack).toContain('route table is broken')
    await stillServes(join(tmp.dir, 'rpc.sock'))
  })

  it('bytes that are not HTTP, CONNECT, an unknown Expect and HTTP/2 prefaces answer JSON, not Node bare pages', async () => {
    const echo = route({ method: 'POST', path: '/v1/echo', body: z.strictObject({}).passthrough(), handler: async body => body })
    const { socketPath } = await serve([echo])
    const cases: Array<[string, number, string, RegExp]> = [
      ['GARBAGE\r\n\r\n', 400, 'BAD_REQUEST', /^malformed HTTP request \(HPE_INVALID_METHOD: .*\); send HTTP\/1\.1 such as GET \/v1\/status$/],
      ['CONNECT example.com:443 HTTP/1.1\r\n\r\n', 405, 'METHOD_NOT_ALLOWED', /^CONNECT is not allowed: this is shoal's RPC/],
      ['GET /v1/version HTTP/1.1\r\nExpect: tea\r\n\r\n', 417, 'EXPECTATION_FAILED', /^Expect: tea is not supported \(only 100-continue\)$/],
      ['PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 400, 'BAD_REQUEST', /^malformed HTTP request \(HPE_PAUSED_H2_UPGRADE/],
      ['POST /v1/echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 400, 'BAD_REQUEST', /^malformed HTTP request \(HPE_INVALID_CHUNK_SIZE/]
    ]
    for (const [payload, status, code, message] of cases) {
      const [r] = await answers(socketPath, payload)
      expect(r?.status, payload).toBe(status)
      expect(wire(r).code).toBe(code)
      expect(wire(r).message).toMatch(message)
    }
    // HTTP/1.1 without Host is served (the header means nothing on a socket).
    const [noHost] = await answers(socketPath, 'GET /v1/version HTTP/1.1\r\n\r\n')
    expect(noHost?.json).toEqual({ version: 'test' })
    await stillServes(socketPath)
  })

  it('a request pipelined before bad bytes is answered, then the bad bytes, then the connection closes', async () => {
    const slow = route({ method: 'GET', path: '/v1/slow', handler: async () => { await new Promise(resolve => setTimeout(resolve, 50)); return { slow: true } } })
    const { socketPath } = await serve([slow])
    const x = await exchange({ socketPath }, 'GET /v1/slow HTTP/1.1\r\n\r\nGET /v1/version HTTP/1.1\r\n\r\nNOT HTTP\r\n\r\n')
    const { responses, rest } = parseResponses(x.bytes)
    expect(responses.map(r => r.status)).toEqual([200, 200, 400])
    expect(responses[0]?.json).toEqual({ slow: true })
    expect(wire(responses[2]).code).toBe('BAD_REQUEST')
    expect(rest.length).toBe(0)
    expect(x.closed).toBe(true)
  })

  it('headers over the size bound answer 431 saying the bound', async () => {
    const { socketPath } = await serve([], { maxHeaderBytes: 4096 })
    const [r] = await answers(socketPath, `GET /v1/version HTTP/1.1\r\nX-Big: ${'a'.repeat(8000)}\r\n\r\n`)
    expect(r?.status).toBe(431)
    expect(wire(r)).toEqual({ code: 'HEADERS_TOO_LARGE', message: 'the request line and headers are over 4096 bytes (or 64 lines)' })
  })
})

describe('RPC server: slow and greedy clients', () => {
  const fast: RpcLimitsInit = { headersTimeoutMs: 600, requestTimeoutMs: 1200, checkIntervalMs: 100, stallTimeoutMs: 800, keepAliveTimeoutMs: 500 }
  const timedOut = 'the request was not received in time: headers within 600 ms, the whole request within 1200 ms'

  it('headers sent a byte at a time, and a connection that sends nothing, are answered 408 and closed, while others are served', async () => {
    const { socketPath } = await serve([], fast)
    const request = 'GET /v1/version HTTP/1.1\r\nHost: x\r\n\r\n'
    const drips = Array.from({ length: 20 }, async () => await exchange({ socketPath }, [...request], { everyMs: 100, end: false, timeoutMs: 10_000 }))
    const silent = exchange({ socketPath }, '', { end: false, timeoutMs: 10_000 })
    await stillServes(socketPath)
    for (const x of [...await Promise.all(drips), await silent]) {
      expect(x.closed).toBe(true)
      const [r] = parseResponses(x.bytes).responses
      expect(r?.status).toBe(408)
      expect(wire(r)).toEqual({ code: 'REQUEST_TIMEOUT', message: timedOut })
    }
  })

  it('a body that trickles in is answered 408 when the request deadline passes', async () => {
    const echo = route({ method: 'POST', path: '/v1/echo', body: z.strictObject({ text: z.string() }), handler: async body => body })
    const { socketPath } = await serve([echo], fast)
    const body = JSON.stringify({ text: 'x'.repeat(100) })
    const x = await exchange({ socketPath }, [`POST /v1/echo HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`, ...body], { everyMs: 50, end: false, timeoutMs: 10_000 })
    expect(x.closed).toBe(true)
    const { responses } = parseResponses(x.bytes)
    expect(responses.map(r => r.status)).toEqual([408])
    expect(wire(responses[0])).toEqual({ code: 'REQUEST_TIMEOUT', message: timedOut })
    // The same body sent at once is fine.
    const [ok] = await answers(socketPath, `POST /v1/echo HTTP/1.1\r\nContent-Length: ${body.length}\r\n\r\n${body}`)
    expect(ok?.json).toEqual({ text: 'x'.repeat(100) })
  })

  it('a client that never reads a large answer is disconnected once nothing moves, while others are served', async () => {
    const big = route({ method: 'GET', path: '/v1/big', handler: async () => ({ rows: 'r'.repeat(16 * 1024 * 1024) }) })
    const { socketPath, logged } = await serve([big], fast)
    const reader = open({ socketPath })
    reader.pause() // reads nothing until told
    let received = 0
    reader.on('data', (d: Buffer) => { received += d.length })
    const closed = new Promise<void>(resolve => reader.once('close', () => resolve()))
    reader.on('error', () => {})
    reader.write('GET /v1/big HTTP/1.1\r\n\r\n')
    await stillServes(socketPath)
    await until('the server gave up on the reader', () => logged.some(l => JSON.stringify(l.obj).includes('stopped reading their answer')))
    await stillServes(socketPath)
    // What was in flight arrives, then the end: never the whole 16 MiB answer.
    reader.resume()
    await closed
    expect(received).toBeGreaterThan(0)
    expect(received).toBeLessThan(16 * 1024 * 1024)
  })

  it('an idle keep-alive connection is closed after the keep-alive time', async () => {
    const { socketPath } = await serve([], fast)
    const x = await exchange({ socketPath }, 'GET /v1/version HTTP/1.1\r\n\r\n', { end: false, timeoutMs: 10_000 })
    expect(x.closed).toBe(true)
    expect(parseResponses(x.bytes).responses.map(r => r.status)).toEqual([200])
  })

  it('connections past maxConnections are answered 503 BUSY and closed; once others close, new ones are served', async () => {
    const { socketPath, logged } = await serve([], { maxConnections: 3 })
    const held = [open({ socketPath }), open({ socketPath }), open({ socketPath })]
    for (const s of held) s.on('error', () => {})
    await Promise.all(held.map(async s => { await new Promise(resolve => s.once('connect', resolve)) }))
    await until('the server has seen the three connections', async () => {
      const x = await exchange({ socketPath }, 'GET /v1/version HTTP/1.1\r\n\r\n')
      return parseResponses(x.bytes).responses[0]?.status === 503
    })
    const x = await exchange({ socketPath }, 'GET /v1/version HTTP/1.1\r\n\r\n')
    expect(x.closed).toBe(true)
    const [busy] = parseResponses(x.bytes).responses
    expect(busy?.status).toBe(503)
    expect(busy?.headers['retry-after']).toBe('1')
    expect(wire(busy)).toEqual({ code: 'BUSY', message: 'the daemon is serving 3 connections on this socket, its most (rpc.maxConnections); retry in a moment' })
    expect(logged.some(l => l.level === 'warn' && l.msg.startsWith('RPC refused'))).toBe(true)
    for (const s of held) s.destroy()
    await until('a new connection is served', async () => {
      const y = await exchange({ socketPath }, 'GET /v1/version HTTP/1.1\r\n\r\n')
      return parseResponses(y.bytes).responses[0]?.status === 200
    })
  })

  it('short requests past maxRequests at once are answered 503 BUSY; later ones are served', async () => {
    let release!: () => void
    const gate = new Promise<void>(resolve => { release = resolve })
    const wait = route({ method: 'GET', path: '/v1/wait', handler: async () => { await gate; return { waited: true } } })
    const { socketPath } = await serve([wait], { maxRequests: 2 })
    const waiting = [exchange({ socketPath }, 'GET /v1/wait HTTP/1.1\r\n\r\n'), exchange({ socketPath }, 'GET /v1/wait HTTP/1.1\r\n\r\n')]
    let third: RawResponse | undefined
    await until('a third request is refused', async () => {
      third = (await answers(socketPath, 'GET /v1/version HTTP/1.1\r\n\r\n'))[0]
      return third?.status === 503
    })
    expect(wire(third)).toEqual({ code: 'BUSY', message: 'the daemon is handling 2 requests at once, its most; retry in a moment' })
    release()
    for (const x of await Promise.all(waiting)) expect(parseResponses(x.bytes).responses[0]?.json).toEqual({ waited: true })
    await stillServes(socketPath)
  })

  it('long operations past their kind\'s bound wait in line, told so; past the line they are answered 503 BUSY saying which', async () => {
    let release!: () => void
    const gate = new Promise<void>(resolve => { release = resolve })
    let started = 0
    const op = (path: string, holds: 'disk' | 'transfer'): Route => route({ method: 'POST', path, body: z.strictObject({}), stream: true, holds, handler: async () => { started++; await gate; return { done: path } } })
    const { socketPath } = await serve([op('/v1/add', 'disk'), op('/v1/pull', 'transfer')], { streams: { disk: 1, transfer: 1 } })
    // A stream's client keeps its side open (a FIN would end the stream); the server closes after the answer.
    const post = (path: string): string => `POST ${path} HTTP/1.1\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}`
    const first = exchange({ socketPath }, post('/v1/add'), { end: false })
    const pull = exchange({ socketPath }, post('/v1/pull'), { end: false })
    await until('the first add and the pull to start', async () => started === 2)
    // One running and QUEUE_FACTOR (16) in line per place; the next is refused.
    const waiting = Array.from({ length: QUEUE_FACTOR }, () => exchange({ socketPath }, post('/v1/add'), { end: false }))
    let refused: RawResponse | undefined
    await until('an add past the line is refused', async () => {
      refused = (await answers(socketPath, post('/v1/add'), { end: false }))[0]
      return refused?.status === 503
    })
    expect(wire(refused)).toEqual({ code: 'BUSY', message: `1 add, verify and export operations are running and ${QUEUE_FACTOR} wait for a place, the most at once; retry when one finishes` })
    expect(started).toBe(2)
    release()
    const lines = (x: { bytes: Buffer }): unknown[] => parseResponses(x.bytes).responses[0]!.body.toString().trim().split('\n').map(l => JSON.parse(l) as unknown)
    expect(lines(await first)).toEqual([{ type: 'result', result: { done: '/v1/add' } }])
    expect(lines(await pull)).toEqual([{ type: 'result', result: { done: '/v1/pull' } }])
    const queued = await Promise.all(waiting)
    queued.forEach((x, i) => expect(lines(x)).toEqual([{ type: 'progress', phase: 'queued', ahead: i }, { type: 'result', result: { done: '/v1/add' } }]))
    expect(started).toBe(2 + QUEUE_FACTOR)
    const again = parseResponses((await exchange({ socketPath }, post('/v1/add'), { end: false })).bytes).responses[0]
    expect(again?.status).toBe(200)
  })

  it('a queued request whose client goes leaves the line; the ones behind it move up', async () => {
    let release!: () => void
    const gate = new Promise<void>(resolve => { release = resolve })
    let started = 0
    const add = route({ method: 'POST', path: '/v1/add', body: z.strictObject({}), stream: true, holds: 'disk', handler: async () => { started++; await gate; return { n: started } } })
    const { socketPath } = await serve([add], { streams: { disk: 1 } })
    const post = `POST /v1/add HTTP/1.1\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}`
    const first = exchange({ socketPath }, post, { end: false })
    await until('the first add to start', async () => started === 1)
    const leaver = open({ socketPath })
    leaver.on('error', () => {})
    leaver.write(post)
    await until('the leaver to be told it is queued', async () => leaver.bytesRead > 0)
    const behind = open({ socketPath })
    behind.on('error', () => {})
    const behindBytes: Buffer[] = []
    behind.on('data', (b: Buffer) => behindBytes.push(b))
    behind.write(post)
    await until('the one behind to be told it is queued', async () => behindBytes.length > 0)
    leaver.destroy()
    await until('the leaver\'s connection to be gone', async () => leaver.closed)
    // The line shrank: a newcomer has only the one behind ahead of it.
    const client = (): { socket: ReturnType<typeof open>, bytes: () => Buffer } => {
      const socket = open({ socketPath })
      const parts: Buffer[] = []
      socket.on('error', () => {})
      socket.on('data', (b: Buffer) => parts.push(b))
      socket.write(post)
      return { socket, bytes: () => Buffer.concat(parts) }
    }
    const lineOf = (bytes: Buffer): unknown[] => parseResponses(bytes).responses[0]!.body.toString().trim().split('\n').map(l => JSON.parse(l) as unknown)
    let last = client()
    await until('the newcomer to be told its place', async () => last.bytes().includes('"queued"'))
    if (last.bytes().includes('"ahead":2')) {
      // The server had not yet seen the leaver go when the newcomer arrived: ask again.
      last.socket.destroy()
      await until('the newcomer\'s first connection to be gone', async () => last.socket.closed)
      last = client()
      await until('the newcomer to be told its place', async () => last.bytes().includes('"queued"'))
    }
    release()
    await first
    await until('the newcomer to finish', async () => last.bytes().includes('"result"'))
    expect(lineOf(last.bytes())).toEqual([{ type: 'progress', phase: 'queued', ahead: 1 }, { type: 'result', result: { n: 3 } }])
    last.socket.destroy()
    await until('the one behind to finish', async () => Buffer.concat(behindBytes).includes('"result"'))
    expect(lineOf(Buffer.concat(behindBytes))).toEqual([{ type: 'progress', phase: 'queued', ahead: 1 }, { type: 'result', result: { n: 2 } }])
    behind.destroy()
    expect(started).toBe(3)
  })

  it('an event stream whose client stops reading is closed past the backlog, and its handler is aborted', async () => {
    let aborted = false
    const firehose = route({
      method: 'GET', path: '/v1/watch', sse: true,
      handler: async (_b, ctx) => {
        const line = { data: 'e'.repeat(4096) }
        while (!ctx.signal.aborted) {
          ctx.event({ event: 'tick', data: line })
          await new Promise(resolve => setImmediate(resolve))
        }
        aborted = true
      }
    })
    const { socketPath, logged } = await serve([firehose], { streamBacklogBytes: 64 * 1024 })
    const watcher = open({ socketPath })
    watcher.on('error', () => {})
    watcher.write('GET /v1/watch HTTP/1.1\r\n\r\n')
    watcher.pause()
    await until('the stream was closed and its handler aborted', () => aborted)
    expect(logged.some(l => JSON.stringify(l.obj).includes('event streams closed'))).toBe(true)
    watcher.destroy()
    await stillServes(socketPath)
  })

  it('NDJSON progress a client does not read is dropped past the backlog; the result line always arrives', async () => {
    const chatty = route({
      method: 'POST', path: '/v1/verify', body: z.strictObject({}), stream: true, holds: 'disk',
      handler: async (_b, ctx) => {
        for (let i = 0; i < 5000; i++) ctx.progress({ i, pad: 'p'.repeat(1024) })
        return { checked: 5000 }
      }
    })
    const { socketPath } = await serve([chatty], { streamBacklogBytes: 64 * 1024 })
    const x = await exchange({ socketPath }, 'POST /v1/verify HTTP/1.1\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}', { end: false })
    const lines = parseResponses(x.bytes).responses[0]!.body.toString().trim().split('\n').map(l => JSON.parse(l) as { type: string, i?: number })
    const progress = lines.filter(l => l.type === 'progress')
    expect(progress.length).toBeGreaterThan(0)
    expect(progress.length).toBeLessThan(5000)
    expect(lines.at(-1)).toEqual({ type: 'result', result: { checked: 5000 } })
  })

  it('a client that half-closes after a short request gets its answer; a stream ends when its client goes', async () => {
    const aborted: string[] = []
    const slow = route({ method: 'GET', path: '/v1/slow', handler: async () => { await new Promise(resolve => setTimeout(resolve, 50)); return { slow: true } } })
    const op = route({
      method: 'POST', path: '/v1/pull', body: z.strictObject({}), stream: true, holds: 'transfer',
      handler: async (_b, ctx) => {
        ctx.progress({ started: true })
        await new Promise(resolve => ctx.signal.addEventListener('abort', resolve))
        aborted.push('pull')
        return {}
      }
    })
    const { socketPath } = await serve([slow, op])
    const [r] = await answers(socketPath, 'GET /v1/slow HTTP/1.1\r\n\r\n', { end: true })
    expect(r?.json).toEqual({ slow: true })
    for (const how of ['fin', 'destroy'] as const) {
      const s = open({ socketPath })
      s.on('error', () => {})
      const started = new Promise(resolve => s.once('data', resolve))
      s.write('POST /v1/pull HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}')
      await started
      if (how === 'fin') s.end()
      else s.destroy()
      await until(`the operation was aborted (${how})`, () => aborted.length === (how === 'fin' ? 1 : 2))
      s.destroy()
    }
  })

  it('an SSE check that refuses answers 400 with its message before the stream opens', async () => {
    const watch = route({ method: 'GET', path: '/v1/watch', sse: true, check: () => { throw new InvalidInputError('since must be an event id') }, handler: async () => {} })
    const { socketPath } = await serve([watch])
    const [r] = await answers(socketPath, 'GET /v1/watch?since=x HTTP/1.1\r\n\r\n')
    expect(r?.status).toBe(400)
    expect(wire(r)).toEqual({ code: 'INVALID_INPUT', message: 'since must be an event id' })
  })
})
