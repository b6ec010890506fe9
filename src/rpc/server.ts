/**
 * The local RPC server: HTTP/1.1 + JSON on a unix socket (mode `SOCKET_MODE`), versioned under
 * `/v1`, in the manner of Docker's API.
 *
 * - Every request body is size-capped (`MAX_BODY_BYTES`), parsed as JSON and validated by the
 *   route's schema; failures answer 4xx with `{ code, message }`.
 * - Long operations stream NDJSON: `{"type":"progress",…}` lines, then one
 *   `{"type":"result","result":…}` or `{"type":"error","code":…,"message":…}` line. A client
 *   that disconnects aborts the operation (its `AbortSignal` fires).
 * - Event routes answer server-sent events (`text/event-stream`): `id:`, `event:`, `data:` per
 *   event, a comment every `SSE_KEEPALIVE_MS`; the handler runs until the client goes.
 * - Optionally also HTTP on a loopback TCP port; every request there must carry
 *   `Authorization: Bearer <token>` (compared in constant time), else 401.
 * - The server calls the injected handlers only; it never touches storage itself.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { timingSafeEqual } from 'node:crypto'
import { chmod, rm } from 'node:fs/promises'
import type { z } from 'zod'
import { InvalidInputError } from '../core/errors.js'
import { PayloadTooLargeError, statusOf, toWireError, type WireError } from './errors.js'
import { MAX_BODY_BYTES } from './schemas.js'

/** @default 15 s — SSE comment lines keep idle proxies and clients from timing out */
export const SSE_KEEPALIVE_MS = 15_000

export interface SseEvent { id?: string, event: string, data: unknown }

export interface RouteContext {
  query: URLSearchParams
  headers: IncomingMessage['headers']
  signal: AbortSignal
  /** Streams a progress event (NDJSON routes only). */
  progress: (event: object) => void
  /** Sends one server-sent event (SSE routes only). */
  event: (e: SseEvent) => void
}

export interface Route<S extends z.ZodType = z.ZodType> {
  method: 'GET' | 'POST' | 'DELETE'
  path: string
  body?: S
  /** NDJSON progress then a result. */
  stream?: boolean
  /** Server-sent events until the client disconnects. */
  sse?: boolean
  /** Checks the query and headers before an SSE stream opens: a throw answers 4xx `{ code, message }`. */
  check?: (ctx: RouteContext) => void
  /** The handler returns `{ contentType, body }` sent as is (e.g. Prometheus text). */
  raw?: boolean
  handler: (body: z.infer<S>, ctx: RouteContext) => Promise<unknown>
}

export function route<S extends z.ZodType> (r: Route<S>): Route {
  return r as unknown as Route
}

export interface RpcServerOptions {
  socket: string
  mode: number
  routes: Route[]
  /** Also listen on loopback TCP; every request must carry the bearer token. */
  tcp?: { host: string, port: number, token: string }
  log: { warn: (obj: object, msg?: string) => void, debug: (obj: object, msg?: string) => void }
}

export class RpcServer {
  private server?: Server
  private tcpServer?: Server
  private readonly routes = new Map<string, Route>()
  private readonly sockets = new Set<import('node:net').Socket>()

  constructor (private readonly options: RpcServerOptions) {
    for (const r of options.routes) this.routes.set(`${r.method} ${r.path}`, r)
  }

  async start (): Promise<void> {
    await rm(this.options.socket, { force: true })
    const server = createServer((req, res) => { void this.handle(req, res) })
    server.on('connection', socket => {
      this.sockets.add(socket)
      socket.on('close', () => this.sockets.delete(socket))
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.options.socket, () => { server.off('error', reject); resolve() })
    })
    await chmod(this.options.socket, this.options.mode)
    this.server = server
    const tcp = this.options.tcp
    if (tcp !== undefined) {
      const expected = Buffer.from(`Bearer ${tcp.token}`)
      const tcpServer = createServer((req, res) => {
        const given = Buffer.from(req.headers.authorization ?? '')
        if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
          req.resume()
          sendJson(res, 401, { code: 'UNAUTHORIZED', message: 'this port needs Authorization: Bearer <token> (the token is in <home>/rpc.token)' })
          return
        }
        void this.handle(req, res)
      })
      tcpServer.on('connection', socket => {
        this.sockets.add(socket)
        socket.on('close', () => this.sockets.delete(socket))
      })
      await new Promise<void>((resolve, reject) => {
        tcpServer.once('error', reject)
        tcpServer.listen(tcp.port, tcp.host, () => { tcpServer.off('error', reject); resolve() })
      })
      this.tcpServer = tcpServer
    }
  }

  /** The TCP port actually bound (when `tcp.port` was 0), if TCP is on. */
  get tcpPort (): number | undefined {
    const address = this.tcpServer?.address()
    return typeof address === 'object' && address !== null ? address.port : undefined
  }

  async stop (): Promise<void> {
    const server = this.server
    if (server === undefined) return
    this.server = undefined
    const servers = [server, ...(this.tcpServer !== undefined ? [this.tcpServer] : [])]
    this.tcpServer = undefined
    const closed = Promise.all(servers.map(async s => { await new Promise<void>(resolve => s.close(() => resolve())) }))
    for (const s of servers) s.closeIdleConnections()
    for (const socket of this.sockets) socket.destroy()
    await closed
    await rm(this.options.socket, { force: true })
  }

  private async handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://shoal')
    const r = this.routes.get(`${req.method ?? ''} ${url.pathname}`)
    if (r === undefined) {
      const known = [...this.routes.values()].some(x => x.path === url.pathname)
      req.resume()
      return sendJson(res, known ? 405 : 404, {
        code: known ? 'METHOD_NOT_ALLOWED' : 'NOT_FOUND',
        message: known ? `${req.method ?? ''} is not allowed on ${url.pathname}` : `no such endpoint: ${req.method ?? ''} ${url.pathname} (this daemon speaks /v1)`
      })
    }
    const aborter = new AbortController()
    res.on('close', () => { if (!res.writableFinished) aborter.abort() })
    let body: unknown
    try {
      body = r.body === undefined ? (req.resume(), undefined) : parseBody(r.body, await readBody(req))
    } catch (err) {
      const wire = toWireError(err)
      return sendJson(res, statusOf(wire.code), wire)
    }
    const base = { query: url.searchParams, headers: req.headers, signal: aborter.signal, progress: () => {}, event: () => {} }
    if (r.sse === true) {
      try {
        r.check?.(base)
      } catch (err) {
        this.logFailure(req, err)
        const wire = toWireError(err)
        return sendJson(res, statusOf(wire.code), wire)
      }
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' })
      res.flushHeaders()
      const keepalive = setInterval(() => { if (!res.writableEnded) res.write(': keepalive\n\n') }, SSE_KEEPALIVE_MS)
      const event = (e: SseEvent): void => {
        if (res.writableEnded) return
        res.write(`${e.id !== undefined ? `id: ${e.id}\n` : ''}event: ${e.event}\ndata: ${JSON.stringify(e.data, replacer)}\n\n`)
      }
      try {
        await r.handler(body, { ...base, event })
      } catch (err) {
        this.logFailure(req, err)
        event({ event: 'error', data: toWireError(err) })
      } finally {
        clearInterval(keepalive)
        res.end()
      }
      return
    }
    if (r.raw === true) {
      try {
        const out = await r.handler(body, base) as { contentType: string, body: string }
        res.writeHead(200, { 'content-type': out.contentType, 'content-length': Buffer.byteLength(out.body), 'cache-control': 'no-store' })
        res.end(out.body)
      } catch (err) {
        this.logFailure(req, err)
        const wire = toWireError(err)
        sendJson(res, statusOf(wire.code), wire)
      }
      return
    }
    if (r.stream === true) {
      res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' })
      const write = (obj: object): void => { if (!res.writableEnded) res.write(`${JSON.stringify(obj, replacer)}\n`) }
      try {
        const result = await r.handler(body, { ...base, progress: e => write({ type: 'progress', ...e }) })
        write({ type: 'result', result })
      } catch (err) {
        this.logFailure(req, err)
        write({ type: 'error', ...toWireError(err) })
      }
      res.end()
      return
    }
    try {
      const result = await r.handler(body, base)
      sendJson(res, 200, result ?? {})
    } catch (err) {
      this.logFailure(req, err)
      const wire = toWireError(err)
      sendJson(res, statusOf(wire.code), wire)
    }
  }

  private logFailure (req: IncomingMessage, err: unknown): void {
    const wire = toWireError(err)
    if (wire.code === 'INTERNAL') this.options.log.warn({ err, url: req.url }, 'request failed')
    else this.options.log.debug({ code: wire.code, url: req.url }, wire.message)
  }
}

async function readBody (req: IncomingMessage): Promise<string> {
  const declared = Number(req.headers['content-length'] ?? 0)
  if (declared > MAX_BODY_BYTES) {
    req.resume()
    throw new PayloadTooLargeError(`request body of ${declared} bytes is over the ${MAX_BODY_BYTES}-byte limit`)
  }
  // Not `for await`: leaving that loop early destroys the request mid-body, which stalls the
  // connection (the next request on it never parses). Past the cap the rest is drained and dropped.
  return await new Promise((resolve, reject) => {
    const parts: Buffer[] = []
    let size = 0
    let over = false
    req.on('data', (part: Buffer) => {
      if (over) return
      size += part.length
      if (size > MAX_BODY_BYTES) {
        over = true
        parts.length = 0
        reject(new PayloadTooLargeError(`request body is over the ${MAX_BODY_BYTES}-byte limit`))
        return
      }
      parts.push(part)
    })
    req.on('end', () => resolve(Buffer.concat(parts).toString('utf8')))
    req.on('error', reject)
    req.on('close', () => reject(new InvalidInputError('the request body ended early (client disconnected)')))
  })
}

function parseBody (schema: z.ZodType, text: string): unknown {
  let value: unknown
  try {
    value = text === '' ? {} : JSON.parse(text)
  } catch (err) {
    throw new InvalidInputError(`request body is not valid JSON: ${(err as Error).message}`)
  }
  const parsed = schema.safeParse(value)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    const where = issue?.path.length ? `${issue.path.join('.')}: ` : ''
    throw new InvalidInputError(`invalid request: ${where}${issue?.message ?? 'does not match the schema'}`)
  }
  return parsed.data
}

function sendJson (res: ServerResponse, status: number, body: unknown | WireError): void {
  const text = JSON.stringify(body, replacer)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' })
  res.end(text)
}

function replacer (_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value
}
