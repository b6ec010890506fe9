/**
 * The recording proxy the e2e harness puts in front of every daemon (`test/helpers/rpc-recorder.ts`),
 * against a plain HTTP server on a unix socket standing in for the daemon: what the tests see
 * through it is what the server sent, as it sent it, and every request is noted.
 */
import { existsSync } from 'node:fs'
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MARK_INVALID, RECORDED_BODY_BYTES, RecordingProxy, type RecordedRequest } from '../../helpers/rpc-recorder.js'
import { tempDir } from '../../helpers/tmp.js'

interface Seen { headers: IncomingMessage['headers'], bodyBytes: number, closedEarly: boolean }

describe('the recording proxy', () => {
  let cleanup: () => Promise<void>
  let upstream: Server
  let proxy: RecordingProxy
  let socket: string
  const recorded: RecordedRequest[] = []
  const seen: Seen[] = []
  /** Lets the event stream send its second event. */
  let release = (): void => {}

  beforeAll(async () => {
    let dir: string
    ({ dir, cleanup } = await tempDir('shoal-recorder-'))
    socket = join(dir, 'shoal.sock')
    const upstreamSocket = join(dir, 'daemon.sock')
    upstream = createServer((req: IncomingMessage, res: ServerResponse) => {
      const s: Seen = { headers: req.headers, bodyBytes: 0, closedEarly: false }
      seen.push(s)
      req.on('data', (d: Buffer) => { s.bodyBytes += d.length })
      res.on('close', () => { if (!res.writableFinished) s.closedEarly = true })
      req.on('end', () => {
        if (req.url === '/events') {
          res.writeHead(200, { 'content-type': 'text/event-stream' })
          res.write('event: ready\ndata: {}\n\n')
          release = () => res.end('event: moved\ndata: {}\n\n')
        } else if (req.url === '/trailers') {
          res.writeHead(200, { 'content-type': 'application/octet-stream', trailer: 'X-Shoal-Error' })
          res.write('abc')
          res.addTrailers({ 'X-Shoal-Error': '%7B%22code%22%3A%22UNAVAILABLE%22%7D' })
          res.end()
        } else if (req.url === '/cut') {
          res.writeHead(200, { 'content-length': 100 })
          res.write('only ten b')
          setImmediate(() => res.destroy())
        } else if (req.url === '/hold') {
          res.writeHead(200, { 'content-type': 'application/x-ndjson' })
          res.write('{"type":"progress"}\n')
        } else {
          res.writeHead(418, { 'content-type': 'application/json', 'x-answer': 'as sent' })
          res.end(JSON.stringify({ bytes: s.bodyBytes }))
        }
      })
    })
    await new Promise<void>(resolve => upstream.listen(upstreamSocket, resolve))
    proxy = await RecordingProxy.listen(socket, upstreamSocket, r => recorded.push(r))
  })

  afterAll(async () => {
    await proxy.close()
    upstream.closeAllConnections()
    await new Promise<void>(resolve => upstream.close(() => resolve()))
    await cleanup()
  })

  /** One request through the proxy: the answer, or the error that ended it. */
  const send = async (path: string, options: { method?: string, headers?: Record<string, string>, body?: Buffer, onResponse?: (res: IncomingMessage) => void } = {}): Promise<{ status: number, headers: IncomingMessage['headers'], body: string, trailers: Record<string, string | undefined> } | Error> =>
    await new Promise(resolve => {
      const req = request({ socketPath: socket, path, method: options.method ?? 'GET', headers: options.headers ?? {}, agent: false }, res => {
        options.onResponse?.(res)
        let body = ''
        res.on('data', (d: Buffer) => { body += d.toString() })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, trailers: res.trailers }))
        res.on('error', err => resolve(err))
      })
      req.on('error', err => resolve(err))
      req.end(options.body)
    })

  it('passes status, headers and body on unchanged, and notes the request without the mark', async () => {
    const body = Buffer.from('{"dryRun": tru')
    const r = await send('/v1/gc?x=1', { method: 'POST', headers: { 'content-type': 'application/json', [MARK_INVALID]: 'not JSON' }, body })
    expect(r).toMatchObject({ status: 418, body: JSON.stringify({ bytes: body.length }), headers: { 'x-answer': 'as sent', 'content-type': 'application/json' } })
    expect(seen.at(-1)?.headers[MARK_INVALID]).toBeUndefined()
    expect(seen.at(-1)?.headers['content-type']).toBe('application/json')
    expect(recorded.at(-1)).toMatchObject({ method: 'POST', url: '/v1/gc?x=1', body, bodyBytes: body.length, status: 418, invalid: 'not JSON', socket })
    expect(recorded.at(-1)?.headers[MARK_INVALID]).toBeUndefined()
  })

  it('streams a large chunked body through whole, keeping only its first RECORDED_BODY_BYTES', async () => {
    const big = Buffer.alloc(RECORDED_BODY_BYTES + 300_000, 0x61)
    const r = await send('/big', { method: 'POST', headers: { 'transfer-encoding': 'chunked' }, body: big })
    expect(r).toMatchObject({ status: 418, body: JSON.stringify({ bytes: big.length }) })
    expect(seen.at(-1)?.headers['transfer-encoding']).toBe('chunked')
    expect(recorded.at(-1)).toMatchObject({ bodyBytes: big.length })
    expect(recorded.at(-1)?.body.length).toBe(RECORDED_BODY_BYTES)
  })

  it('passes each event of a stream on as it comes, before the stream ends', async () => {
    const events: string[] = []
    const r = await send('/events', {
      onResponse: res => res.on('data', (d: Buffer) => {
        events.push(d.toString())
        if (events.length === 1) release()
      })
    })
    expect(events[0]).toBe('event: ready\ndata: {}\n\n')
    expect(r).toMatchObject({ status: 200, body: 'event: ready\ndata: {}\n\nevent: moved\ndata: {}\n\n' })
  })

  it('passes trailers on', async () => {
    const r = await send('/trailers', { headers: { te: 'trailers' } })
    expect(r).toMatchObject({ status: 200, body: 'abc', trailers: { 'x-shoal-error': '%7B%22code%22%3A%22UNAVAILABLE%22%7D' } })
    expect(seen.at(-1)?.headers.te).toBe('trailers')
  })

  it('cuts an answer short when the server does, never ending it as if whole', async () => {
    const r = await send('/cut')
    expect(r).toBeInstanceOf(Error)
    expect((r as Error).message).toMatch(/aborted|socket hang up|ECONNRESET/)
  })

  it('leaves the server when the client leaves, and closes every connection on close', async () => {
    const req = request({ socketPath: socket, path: '/hold', agent: false })
    req.on('error', () => {}) // its own destroy
    req.end()
    await new Promise<void>(resolve => req.on('response', res => res.once('data', () => resolve())))
    const held = seen.at(-1)
    req.destroy()
    await until(() => held?.closedEarly === true)

    const other = await RecordingProxy.listen(join(socket, '..', 'second.sock'), join(socket, '..', 'daemon.sock'), () => {})
    const open = request({ socketPath: other.socket, path: '/hold', agent: false })
    open.on('error', () => {}) // the close
    open.end()
    const ended = new Promise<void>(resolve => open.on('response', res => { res.on('error', () => resolve()); res.on('close', () => resolve()) }))
    await new Promise<void>(resolve => open.on('response', res => res.once('data', () => resolve())))
    await other.close()
    await ended
    expect(existsSync(other.socket)).toBe(false)
  })
})

async function until (probe: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!probe()) {
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}
