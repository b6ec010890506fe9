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
 * - Byte routes (file reads) answer the bytes a `ByteAnswer` yields. Its status and headers go out
 *   with its first bytes, so a failure before them is an ordinary `{ code, message }` answer.
 *   A failure after them cannot change the status: with `Content-Length` (the default) the
 *   connection is cut, so every HTTP client sees a short, failed body and never takes it for the
 *   whole; a client that sent `TE: trailers` gets a chunked body whose `X-Shoal-Error` trailer
 *   carries `{ code, message }` (URI-encoded JSON) instead.
 * - A route path may hold parameters (`/v1/versions/{id}/files/{path}`): `{name}` takes one
 *   percent-encoded segment, a last `{path}` the rest of the path; they reach the handler decoded.
 * - Optionally also HTTP on a loopback TCP port; every request there must carry
 *   `Authorization: Bearer <token>` (compared in constant time), else 401.
 * - The server calls the injected handlers only; it never touches storage itself.
 *
 * MUST hold, whatever a local client sends:
 * - every request the server can read gets one answer, `{ code, message }` with a 4xx/5xx status
 *   when it failed (a request target that is not a path, bytes that are not HTTP, a handler that
 *   throws anything, a bug here: 500 `INTERNAL`, logged with its stack). A failure never leaves
 *   a promise rejected unhandled, so no request can end the process;
 * - every input is bounded before it is acted on (`rpc/limits.ts`): header bytes and count, the
 *   time to send headers and body, the body size, connections, short requests and streams of each
 *   kind at once, and the bytes an answer may keep waiting for a client that does not read.
 *   Past a bound the client gets 408, 413, 431 or 503 `BUSY` (connections past `DROP_FACTOR`
 *   times the bound are dropped at accept); refusals are logged, at most once per `REFUSAL_LOG_MS` with counts.
 *
 * Not a goal: fairness between local clients (one client may use every slot), HTTP/2, upgrades.
 */
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { timingSafeEqual } from 'node:crypto'
import { chmod, rm } from 'node:fs/promises'
import type { z } from 'zod'
import { InvalidInputError, type ShoalError } from '../core/errors.js'
import { BadRequestError, BusyError, HeadersTooLargeError, PayloadTooLargeError, RequestTimeoutError, statusOf, toWireError, type WireError } from './errors.js'
import { DROP_FACTOR, rpcLimits, type RpcLimits, type RpcLimitsInit, type StreamKind } from './limits.js'
import { MAX_BODY_BYTES } from './schemas.js'

/** @default 15 s — SSE comment lines keep idle proxies and clients from timing out */
export const SSE_KEEPALIVE_MS = 15_000
/** @default 10 s — refusals (busy, timeouts) are logged at most this often, with counts */
export const REFUSAL_LOG_MS = 10_000
/** @default 1 s — after a connection's last answer, how long it may read it before it is destroyed */
const CLOSE_GRACE_MS = 1_000

export interface SseEvent { id?: string, event: string, data: unknown }

export interface RouteContext {
  query: URLSearchParams
  /** Path parameters of a route with `{name}` segments, percent-decoded. */
  params: Record<string, string>
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
  /**
   * What the route holds while it runs (long-running routes): requests past that kind's bound
   * (`RpcLimits.streams`) are answered 503 `BUSY`. SSE routes hold `watch` unless they say
   * otherwise; a route that holds nothing counts among short requests.
   */
  holds?: StreamKind
  /** Checks the query and headers before an SSE stream opens: a throw answers 4xx `{ code, message }`. */
  check?: (ctx: RouteContext) => void
  /** The handler returns `{ contentType, body }` sent as is (e.g. Prometheus text). */
  raw?: boolean
  /** The handler returns a `ByteAnswer`: bytes streamed as they come (file reads). */
  bytes?: boolean
  handler: (body: z.infer<S>, ctx: RouteContext) => Promise<unknown>
}

/** What a byte route answers: a status, headers, and its bytes as they become ready. */
export interface ByteAnswer {
  status: 200 | 206
  headers: Record<string, string | number>
  /** Bytes the body holds (`Content-Length`, or `X-Shoal-Length` on a chunked answer). */
  length: number
  /** The bytes, in order, exactly `length` of them; it throws when they cannot all be given. */
  body: AsyncIterable<Uint8Array>
}

/** The trailer that carries a byte answer's failure to a client that accepts trailers (`TE: trailers`). */
export const ERROR_TRAILER = 'x-shoal-error'

export function route<S extends z.ZodType> (r: Route<S>): Route {
  return r as unknown as Route
}

export interface RpcLog {
  warn: (obj: object, msg?: string) => void
  debug: (obj: object, msg?: string) => void
  /** Failures that are bugs (a throw the handlers did not turn into an answer); else `warn`. */
  error?: (obj: object, msg?: string) => void
}

export interface RpcServerOptions {
  socket: string
  mode: number
  routes: Route[]
  /** Also listen on loopback TCP; every request must carry the bearer token. */
  tcp?: { host: string, port: number, token: string }
  /** Bounds on what clients may send and hold; unset ones take their defaults (`rpc/limits.ts`). */
  limits?: RpcLimitsInit
  log: RpcLog
  /**
   * Told of every request routed by `handle` once its answer is done or abandoned: the route
   * (`GET /v1/show`; `other` for a path no route has, so the label set stays bounded) and the status.
   */
  onAnswered?: (route: string, status: number) => void
}

/** One connection: the answers in progress on it, and a client error waiting for them. */
interface Conn {
  /** Within the listener's `maxConnections`; requests on other connections are answered 503. */
  admitted: boolean
  responses: Set<ServerResponse>
  /** Bodies being read on this connection: a client error there is their failure. */
  bodyReaders: Set<(err: ShoalError) => void>
  /** A client error (bad bytes, timeout) answered once the answers in progress are sent. */
  failure?: WireError
  failureAnswered: boolean
  closing: boolean
  /** The client sent its FIN: a stream starting now has nobody to go to. */
  ended: boolean
}

export class RpcServer {
  private server?: Server
  private tcpServer?: Server
  private readonly routes = new Map<string, Route>()
  /** Routes with `{name}` parameters in their path, matched in order. */
  private readonly patterns: Array<{ route: Route, regex: RegExp, names: string[] }> = []
  private readonly sockets = new Set<Socket>()
  private readonly conns = new WeakMap<Duplex, Conn>()
  /** Answers that are NDJSON or SSE streams: their operation ends when the client does. */
  private readonly streaming = new WeakSet<ServerResponse>()
  private readonly limits: RpcLimits
  private readonly streams: Record<StreamKind, number> = { watch: 0, disk: 0, transfer: 0, read: 0 }
  /** Requests waiting for a place among their kind (`disk`, `transfer`), oldest first. */
  private readonly queues: Record<StreamKind, Array<() => void>> = { watch: [], disk: [], transfer: [], read: [] }
  private requests = 0
  private readonly refusals: RefusalLog

  constructor (private readonly options: RpcServerOptions) {
    for (const r of options.routes) {
      if (r.path.includes('{')) this.patterns.push({ route: r, ...pathPattern(r.path) })
      else this.routes.set(`${r.method} ${r.path}`, r)
    }
    this.limits = rpcLimits(options.limits)
    this.refusals = new RefusalLog(options.log)
  }

  async start (): Promise<void> {
    await rm(this.options.socket, { force: true })
    const server = this.httpServer('socket')
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen({ path: this.options.socket, backlog: this.limits.maxConnections * DROP_FACTOR }, () => { server.off('error', reject); resolve() })
    })
    await chmod(this.options.socket, this.options.mode)
    this.server = server
    const tcp = this.options.tcp
    if (tcp !== undefined) {
      const expected = Buffer.from(`Bearer ${tcp.token}`)
      const tcpServer = this.httpServer('tcp', req => {
        const given = Buffer.from(req.headers.authorization ?? '')
        return given.length === expected.length && timingSafeEqual(given, expected)
      })
      await new Promise<void>((resolve, reject) => {
        tcpServer.once('error', reject)
        tcpServer.listen({ port: tcp.port, host: tcp.host, backlog: this.limits.maxConnections * DROP_FACTOR }, () => { tcpServer.off('error', reject); resolve() })
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
    this.refusals.flush()
    await rm(this.options.socket, { force: true })
  }

  /** An HTTP server with the bounds of `rpc/limits.ts`, answering every failure as `{ code, message }`. */
  private httpServer (listener: 'socket' | 'tcp', authorized?: (req: IncomingMessage) => boolean): Server {
    const l = this.limits
    const server = createServer({
      headersTimeout: l.headersTimeoutMs,
      requestTimeout: l.requestTimeoutMs,
      keepAliveTimeout: l.keepAliveTimeoutMs,
      connectionsCheckingInterval: l.checkIntervalMs,
      maxHeaderSize: l.maxHeaderBytes,
      // The Host header means nothing on a unix socket or a loopback port, and Node's refusal of
      // requests without one is an empty 400.
      requireHostHeader: false
    }, (req, res) => {
      const conn = this.track(req, res)
      const coding = req.headers['transfer-encoding']
      if (coding !== undefined && !/(?:^|,)[ \t]*chunked[ \t]*$/i.test(coding)) {
        // RFC 9112 §6.3: without chunked as the last coding the body runs to the end of the
        // connection, which a client that keeps it open never reaches.
        this.refusals.note('Transfer-Encoding without chunked last')
        sendJson(res, 400, { code: 'BAD_REQUEST', message: `Transfer-Encoding: ${clip(coding, 64)} does not end in chunked, so the body's length cannot be known; send Content-Length or Transfer-Encoding: chunked` }, true)
        return
      }
      if (authorized !== undefined && !authorized(req)) {
        req.resume()
        this.refusals.note('unauthorized (TCP without the token)')
        sendJson(res, 401, { code: 'UNAUTHORIZED', message: 'this port needs Authorization: Bearer <token> (the token is in <home>/rpc.token)' }, true)
        return
      }
      if (!conn.admitted) {
        req.resume()
        this.refusals.note(`connections over rpc.maxConnections (${l.maxConnections})`)
        sendJson(res, 503, toWireError(new BusyError(`the daemon is serving ${l.maxConnections} connections on this ${listener === 'tcp' ? 'port' : 'socket'}, its most (rpc.maxConnections); retry in a moment`)), true)
        return
      }
      this.handle(req, res, conn).catch(err => { this.unexpected(req, res, err) })
    })
    server.maxHeadersCount = l.maxHeaderCount
    // Past this many the kernel's connection is accepted and closed at once ('drop').
    server.maxConnections = l.maxConnections * DROP_FACTOR
    // A connection where nothing moves for this long is looked at (`stalled`); the keep-alive
    // timeout, which uses the same timer, comes there too.
    server.setTimeout(l.stallTimeoutMs)
    // Answer a client that half-closes after its request instead of closing on it (Node's
    // default ends the connection at the client's FIN, before an asynchronous answer is written).
    // A stream in progress still ends at the FIN: its client has gone (see 'end' below).
    ;(server as Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true
    const admitted = new Set<Socket>()
    server.on('connection', (socket: Socket) => {
      const conn: Conn = { admitted: admitted.size < l.maxConnections, responses: new Set(), bodyReaders: new Set(), failureAnswered: false, closing: false, ended: false }
      if (conn.admitted) admitted.add(socket)
      this.conns.set(socket, conn)
      this.sockets.add(socket)
      socket.on('end', () => {
        conn.ended = true
        for (const res of conn.responses) if (this.streaming.has(res)) res.destroy()
      })
      socket.on('close', () => {
        admitted.delete(socket)
        this.sockets.delete(socket)
      })
    })
    server.on('drop', () => { this.refusals.note(`connections dropped at accept: over ${DROP_FACTOR} times rpc.maxConnections (${l.maxConnections * DROP_FACTOR})`) })
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => { this.clientError(err, socket) })
    server.on('timeout', (socket: Socket) => { this.stalled(socket) })
    // CONNECT and `Expect:` other than 100-continue get Node's bare answers (or none) otherwise.
    server.on('connect', (req: IncomingMessage, socket: Duplex) => {
      this.refusals.note('CONNECT requests')
      endWith(socket, { code: 'METHOD_NOT_ALLOWED', message: `CONNECT is not allowed: this is shoal's RPC (${req.url?.slice(0, 64) ?? ''})` })
    })
    server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
      this.track(req, res)
      req.resume()
      sendJson(res, 417, { code: 'EXPECTATION_FAILED', message: `Expect: ${String(req.headers.expect).slice(0, 64)} is not supported (only 100-continue)` }, true)
    })
    return server
  }

  /** Registers an answer in progress on its connection until it closes. */
  private track (req: IncomingMessage, res: ServerResponse): Conn {
    const socket = req.socket
    let conn = this.conns.get(socket)
    if (conn === undefined) {
      conn = { admitted: true, responses: new Set(), bodyReaders: new Set(), failureAnswered: false, closing: false, ended: false }
      this.conns.set(socket, conn)
    }
    const c = conn
    c.responses.add(res)
    // A write after the client went must never become an unhandled 'error' event.
    res.on('error', err => { this.options.log.debug({ err: err.message }, 'answer not delivered') })
    // The failure goes right after the last answer, before Node may end a half-closed connection.
    res.prependOnceListener('finish', () => { if (c.failure !== undefined && c.responses.size === 1) this.close(socket, c) })
    res.once('close', () => {
      c.responses.delete(res)
      if (c.responses.size === 0 && c.failure !== undefined) this.close(socket, c)
    })
    return c
  }

  /**
   * Bytes that are not HTTP, headers over the bounds, a request not received in time. Answered
   * `{ code, message }` once the answers already in progress on the connection are sent (a body
   * being read takes the failure as its own answer), then the connection is closed.
   */
  private clientError (err: NodeJS.ErrnoException, socket: Duplex): void {
    const conn = this.conns.get(socket)
    if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || !socket.writable || conn === undefined) {
      socket.destroy()
      return
    }
    if (conn.failure !== undefined) return
    // A body still being read out after its answer will not end now.
    for (const res of conn.responses) lingering.get(res.req)?.()
    const failure = clientFailure(err, this.limits)
    conn.failure = toWireError(failure)
    this.refusals.note(conn.failure.code === 'BAD_REQUEST' ? 'malformed HTTP' : conn.failure.code)
    if (conn.bodyReaders.size > 0) {
      conn.failureAnswered = true
      for (const reader of conn.bodyReaders) reader(failure)
    }
    if (conn.responses.size === 0) this.close(socket, conn)
  }

  /** Ends a connection that failed: its failure as the last answer (unless a request answered it). */
  private close (socket: Duplex, conn: Conn): void {
    if (conn.closing) return
    conn.closing = true
    if (!conn.failureAnswered && conn.failure !== undefined && socket.writable) endWith(socket, conn.failure)
    else endWith(socket)
  }

  /**
   * Nothing moved on a connection for `stallTimeoutMs` (or its keep-alive time ran out). Idle, or
   * an answer waits for a client that does not read: closed. A quiet stream or a long operation
   * whose client has read everything: looked at again later.
   */
  private stalled (socket: Socket): void {
    const conn = this.conns.get(socket)
    if (conn === undefined || conn.responses.size === 0) {
      socket.destroy()
      return
    }
    if (socket.writableLength > 0 || [...conn.responses].some(r => r.writableLength > 0)) {
      this.refusals.note(`clients that stopped reading their answer for ${this.limits.stallTimeoutMs} ms`)
      socket.destroy()
      return
    }
    socket.setTimeout(this.limits.stallTimeoutMs)
  }

  /** A throw that escaped every handler's own catch: a bug here. Answered 500, logged with its stack. */
  private unexpected (req: IncomingMessage, res: ServerResponse, err: unknown): void {
    const wire = toWireError(err)
    try {
      const fields = { err: err instanceof Error ? err : wire, method: req.method, url: clip(req.url) }
      // Called as methods: a pino logger needs its `this`.
      if (this.options.log.error !== undefined) this.options.log.error(fields, 'RPC request handling failed')
      else this.options.log.warn(fields, 'RPC request handling failed')
    } catch {
      // A failure that cannot even be logged is still answered below.
    }
    try {
      sendJson(res, 500, { code: 'INTERNAL', message: wire.message })
    } catch {
      res.destroy()
    }
  }

  private async handle (req: IncomingMessage, res: ServerResponse, conn: Conn): Promise<void> {
    let routeName = 'other'
    res.once('close', () => { this.options.onAnswered?.(routeName, res.statusCode) })
    let target: { path: string, query: URLSearchParams }
    try {
      target = requestTarget(req.url)
    } catch (err) {
      req.resume()
      return this.fail(req, res, err)
    }
    let params: Record<string, string> = {}
    let r = this.routes.get(`${req.method ?? ''} ${target.path}`)
    if (r === undefined) {
      try {
        const matched = this.matchPattern(req.method ?? '', target.path)
        r = matched?.route
        params = matched?.params ?? {}
      } catch (err) {
        req.resume()
        return this.fail(req, res, err)
      }
    }
    if (r !== undefined) routeName = `${r.method} ${r.path}`
    if (r === undefined) {
      const known = [...this.routes.values()].some(x => x.path === target.path) || this.patterns.some(p => p.regex.test(target.path))
      req.resume()
      return sendJson(res, known ? 405 : 404, {
        code: known ? 'METHOD_NOT_ALLOWED' : 'NOT_FOUND',
        message: known ? `${req.method ?? ''} is not allowed on ${target.path}` : `no such endpoint: ${req.method ?? ''} ${clip(target.path, 100)} (this daemon speaks /v1)`
      })
    }
    const ticket = this.admit(r)
    if (typeof ticket === 'string') {
      req.resume()
      this.refusals.note(ticket)
      return sendJson(res, 503, toWireError(new BusyError(ticket)))
    }
    res.once('close', ticket.release)
    const aborter = new AbortController()
    res.on('close', () => { if (!res.writableFinished) aborter.abort() })
    let body: unknown
    try {
      body = r.body === undefined ? (req.resume(), undefined) : parseBody(r.body, await readBody(req, conn))
    } catch (err) {
      return this.fail(req, res, err)
    }
    const base = { query: target.query, params, headers: req.headers, signal: aborter.signal, progress: () => {}, event: () => {} }
    if (r.sse === true) return await this.sse(r, req, res, body, base)
    if (r.bytes === true) return await this.bytes(r, req, res, body, base)
    if (ticket.queued !== undefined && r.stream === true) return await this.ndjson(r, req, res, body, base, ticket.queued)
    if (ticket.queued !== undefined) await ticket.queued.ready
    if (r.raw === true) {
      try {
        const out = await r.handler(body, base) as { contentType: string, body: string }
        res.writeHead(200, { 'content-type': out.contentType, 'content-length': Buffer.byteLength(out.body), 'cache-control': 'no-store' })
        res.end(out.body)
      } catch (err) {
        this.fail(req, res, err)
      }
      return
    }
    if (r.stream === true) return await this.ndjson(r, req, res, body, base)
    try {
      const result = await r.handler(body, base)
      sendJson(res, 200, result ?? {})
    } catch (err) {
      this.fail(req, res, err)
    }
  }

  /**
   * Takes a place for a request: among its route's kind of stream, or among short requests.
   * Returns the release, or the message of the refusal when that bound is reached. An `add` or a
   * `pull` past its kind's bound waits in line (`queued` resolves when it may start), up to
   * `QUEUE_FACTOR` times the bound waiting; only past that is it refused. Event streams are not
   * queued: a watcher past `rpc.maxWatchers` is refused at once.
   */
  private admit (r: Route): { release: () => void, queued?: { ahead: number, ready: Promise<void> } } | string {
    const kind = r.holds ?? (r.sse === true ? 'watch' : r.bytes === true ? 'read' : undefined)
    if (kind === undefined) {
      if (this.requests >= this.limits.maxRequests) return `the daemon is handling ${this.limits.maxRequests} requests at once, its most; retry in a moment`
      this.requests++
      return { release: once(() => { this.requests-- }) }
    }
    const most = this.limits.streams[kind]
    const start = (): () => void => {
      this.streams[kind]++
      return once(() => {
        this.streams[kind]--
        this.queues[kind].shift()?.()
      })
    }
    if (this.streams[kind] < most && this.queues[kind].length === 0) return { release: start() }
    const queue = this.queues[kind]
    if (kind === 'watch' || kind === 'read' || queue.length >= most * QUEUE_FACTOR) return STREAM_BUSY[kind](most, queue.length)
    let release = (): void => {}
    let started = false
    let entry = (): void => {}
    const ready = new Promise<void>(resolve => {
      entry = () => { started = true; release = start(); resolve() }
      queue.push(entry)
    })
    const ahead = queue.length - 1
    // Gone before its turn: out of the line; after: its place passes on.
    return { release: once(() => { if (started) release(); else queue.splice(queue.indexOf(entry), 1) }), queued: { ahead, ready } }
  }

  private async sse (r: Route, req: IncomingMessage, res: ServerResponse, body: unknown, base: RouteContext): Promise<void> {
    try {
      r.check?.(base)
    } catch (err) {
      return this.fail(req, res, err)
    }
    if (this.clientGone(req, res)) return
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' })
    res.flushHeaders()
    // A client that does not read: past the backlog the stream is closed, and the client's
    // reconnect with Last-Event-ID replays what it missed (or says `gone`).
    const send = (text: string): void => {
      if (res.writableEnded || res.destroyed) return
      if (res.writableLength > this.limits.streamBacklogBytes) {
        this.refusals.note(`event streams closed: client over ${this.limits.streamBacklogBytes} bytes behind`)
        res.destroy()
        return
      }
      res.write(text)
    }
    const keepalive = setInterval(() => { send(': keepalive\n\n') }, SSE_KEEPALIVE_MS)
    const event = (e: SseEvent): void => {
      send(`${e.id !== undefined ? `id: ${e.id}\n` : ''}event: ${e.event}\ndata: ${JSON.stringify(e.data, replacer)}\n\n`)
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
  }

  /** A route's match for a path with parameters, decoded; undefined when none matches. */
  private matchPattern (method: string, path: string): { route: Route, params: Record<string, string> } | undefined {
    for (const p of this.patterns) {
      if (p.route.method !== method) continue
      const m = p.regex.exec(path)
      if (m === null) continue
      const params: Record<string, string> = {}
      p.names.forEach((name, i) => {
        const raw = m[i + 1] ?? ''
        try {
          params[name] = decodeURIComponent(raw)
        } catch {
          throw new InvalidInputError(`the ${name} in the path, ${JSON.stringify(clip(raw, 100))}, is not valid percent-encoding`)
        }
      })
      return { route: p.route, params }
    }
    return undefined
  }

  /**
   * A byte answer: headers with its first bytes, then the rest with backpressure. A failure
   * before the first bytes is an ordinary answer; after them it cuts the connection, or with
   * `TE: trailers` ends the body with the failure in `ERROR_TRAILER`.
   */
  private async bytes (r: Route, req: IncomingMessage, res: ServerResponse, body: unknown, base: RouteContext): Promise<void> {
    if (this.clientGone(req, res)) return
    let iterator: AsyncIterator<Uint8Array> | undefined
    let next: IteratorResult<Uint8Array>
    let answer: ByteAnswer
    try {
      answer = await r.handler(body, base) as ByteAnswer
      iterator = answer.body[Symbol.asyncIterator]()
      next = await iterator.next()
    } catch (err) {
      await iterator?.return?.().catch(() => {})
      return this.fail(req, res, err)
    }
    const trailers = /(?:^|,)[ \t]*trailers[ \t]*(?:;|,|$)/i.test(String(req.headers.te ?? ''))
    const headers: Record<string, string | number> = { ...answer.headers, 'cache-control': 'no-store' }
    if (trailers) {
      headers.trailer = 'X-Shoal-Error'
      headers['x-shoal-length'] = answer.length
    } else headers['content-length'] = answer.length
    try {
      res.writeHead(answer.status, headers)
      while (next.done !== true) {
        if (res.destroyed) break
        if (!res.write(next.value)) await writable(res)
        if (res.destroyed) break
        next = await iterator.next()
      }
    } catch (err) {
      this.logFailure(req, err)
      if (trailers && !res.destroyed) {
        res.addTrailers({ [ERROR_TRAILER]: encodeURIComponent(JSON.stringify(toWireError(err), replacer)) })
        res.end()
      } else {
        // Cut after what was written: the client sees the body end short of Content-Length.
        endWith(req.socket)
      }
      return
    } finally {
      if (next.done !== true) await iterator.return?.().catch(() => {})
    }
    res.end()
  }

  private async ndjson (r: Route, req: IncomingMessage, res: ServerResponse, body: unknown, base: RouteContext, queued?: { ahead: number, ready: Promise<void> }): Promise<void> {
    if (this.clientGone(req, res)) return
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' })
    const write = (obj: object): void => { if (!res.writableEnded && !res.destroyed) res.write(`${JSON.stringify(obj, replacer)}\n`) }
    // Progress is a running report: a line a slow client has not taken yet is superseded by the
    // next, so past the backlog lines are dropped rather than buffered.
    const progress = (e: object): void => { if (res.writableLength <= this.limits.streamBacklogBytes) write({ type: 'progress', ...e }) }
    if (queued !== undefined) {
      // Waits in line, telling its client so; a client that goes meanwhile leaves the line.
      progress({ phase: 'queued', ahead: queued.ahead })
      await Promise.race([queued.ready, new Promise<void>(resolve => { base.signal.addEventListener('abort', () => resolve(), { once: true }) })])
      if (base.signal.aborted) { res.end(); return }
    }
    try {
      const result = await r.handler(body, { ...base, progress })
      write({ type: 'result', result })
    } catch (err) {
      this.logFailure(req, err)
      write({ type: 'error', ...toWireError(err) })
    }
    res.end()
  }

  /**
   * Marks `res` as a stream, which ends when its client does; true (and `res` destroyed) when the
   * client already sent its FIN, so the operation is not started for nobody.
   */
  private clientGone (req: IncomingMessage, res: ServerResponse): boolean {
    this.streaming.add(res)
    if (this.conns.get(req.socket)?.ended !== true) return false
    res.destroy()
    return true
  }

  /** Answers a failure as `{ code, message }` with its status. */
  private fail (req: IncomingMessage, res: ServerResponse, err: unknown): void {
    this.logFailure(req, err)
    const wire = toWireError(err)
    // A connection whose bytes failed (a deadline, bad framing) ends after this answer; a request
    // refused on its own (too large, bad JSON) lets its body be read out first (see `sendJson`).
    sendJson(res, statusOf(wire.code), wire, this.conns.get(req.socket)?.failure !== undefined)
  }

  private logFailure (req: IncomingMessage, err: unknown): void {
    const wire = toWireError(err)
    if (wire.code === 'INTERNAL') this.options.log.warn({ err, url: clip(req.url) }, 'request failed')
    else this.options.log.debug({ code: wire.code, url: clip(req.url) }, wire.message)
  }
}

/** @default 16 — requests that may wait in line for a place of their kind, as a multiple of the kind's bound */
export const QUEUE_FACTOR = 16

const STREAM_BUSY: Record<StreamKind, (most: number, waiting: number) => string> = {
  watch: most => `${most} event streams are open, the most (rpc.maxWatchers); close one or raise rpc.maxWatchers`,
  disk: (most, waiting) => `${most} add, verify and export operations are running and ${waiting} wait for a place, the most at once; retry when one finishes`,
  transfer: (most, waiting) => `${most} pulls are running for RPC clients and ${waiting} wait for a place, the most at once; retry when one finishes`,
  read: most => `${most} file reads are open, the most at once (rpc.maxReads); retry when one finishes, or raise rpc.maxReads`
}

/** A route path's matcher: `{name}` is one segment, a last `{path}` the rest of the path. */
function pathPattern (path: string): { regex: RegExp, names: string[] } {
  const names: string[] = []
  const parts = path.split(/(\{[a-z]+\})/i).map((part, i, all) => {
    const m = /^\{([a-z]+)\}$/i.exec(part)
    if (m === null) return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
    names.push(m[1] ?? '')
    return i === all.length - 2 && all[all.length - 1] === '' ? '(.+)' : '([^/]+)'
  })
  return { regex: new RegExp(`^${parts.join('')}$`), names }
}

/** Resolves when `res` can take more bytes, or is closed. */
async function writable (res: ServerResponse): Promise<void> {
  await new Promise<void>(resolve => {
    const done = (): void => { res.off('drain', done); res.off('close', done); resolve() }
    res.on('drain', done)
    res.on('close', done)
  })
}

/**
 * The path and query of a request target. Only origin-form (`/v1/…?…`) is served: an absolute URL,
 * an authority or `*` is refused with 400, never parsed into something else.
 */
export function requestTarget (raw: string | undefined): { path: string, query: URLSearchParams } {
  const text = raw ?? ''
  if (!text.startsWith('/') || text.startsWith('//')) {
    throw new InvalidInputError(`the request target ${JSON.stringify(clip(text, 100))} is not a path; send one such as /v1/status`)
  }
  let url: URL
  try {
    url = new URL(text, 'http://shoal')
  } catch {
    throw new InvalidInputError(`the request target ${JSON.stringify(clip(text, 100))} is not a valid path; send one such as /v1/status`)
  }
  return { path: url.pathname, query: url.searchParams }
}

/** The typed failure of an HTTP-level client error (Node's parser, header and request deadlines). */
function clientFailure (err: NodeJS.ErrnoException, limits: RpcLimits): ShoalError {
  switch (err.code) {
    case 'HPE_HEADER_OVERFLOW':
      return new HeadersTooLargeError(`the request line and headers are over ${limits.maxHeaderBytes} bytes (or ${limits.maxHeaderCount} lines)`)
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return new PayloadTooLargeError('the chunk extensions of the request body are too large')
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new RequestTimeoutError(`the request was not received in time: headers within ${limits.headersTimeoutMs} ms, the whole request within ${limits.requestTimeoutMs} ms`)
    default:
      return new BadRequestError(`malformed HTTP request (${String(err.code ?? 'parse error')}: ${clip(err.message, 120)}); send HTTP/1.1 such as GET /v1/status`)
  }
}

async function readBody (req: IncomingMessage, conn: Conn): Promise<string> {
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
    // A client error while the body arrives (a timeout, bad chunked framing) is this request's answer.
    const failed = (err: ShoalError): void => { done(); reject(err) }
    const done = (): void => { conn.bodyReaders.delete(failed) }
    conn.bodyReaders.add(failed)
    req.on('data', (part: Buffer) => {
      if (over) return
      size += part.length
      if (size > MAX_BODY_BYTES) {
        over = true
        parts.length = 0
        done()
        reject(new PayloadTooLargeError(`request body is over the ${MAX_BODY_BYTES}-byte limit`))
        return
      }
      parts.push(part)
    })
    req.on('end', () => { done(); resolve(Buffer.concat(parts).toString('utf8')) })
    req.on('error', err => { done(); reject(new BadRequestError(`the request body could not be read: ${err.message}`)) })
    req.on('close', () => { done(); reject(new InvalidInputError('the request body ended early (client disconnected)')) })
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

/**
 * One JSON answer. `close` (or a body the client is still sending) ends the connection after it,
 * so unread body bytes are never read as the next request.
 */
function sendJson (res: ServerResponse, status: number, body: unknown | WireError, close = false): void {
  if (res.headersSent || res.writableEnded || res.destroyed) {
    if (!res.writableEnded) res.destroy()
    return
  }
  let text: string
  try {
    text = JSON.stringify(body, replacer)
  } catch (err) {
    status = 500
    text = JSON.stringify({ code: 'INTERNAL', message: `internal error: the answer could not be encoded (${(err as Error).message})` })
  }
  const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' }
  if (status === 503) headers['retry-after'] = 1
  if (close) headers.connection = 'close'
  res.writeHead(status, headers)
  if (close || !bodyPending(res.req)) {
    res.end(text)
    return
  }
  // Refused before its body was read: the answer goes out whole at once (its length is set, so the
  // client can read it), but the response ends only once the rest of the body has been read and
  // dropped. Ending it earlier lets Node close the connection under a client still sending (a
  // client that asked for `Connection: close` does), which then sees a reset instead of the answer.
  // Past `LINGER_MAX_BYTES` more, the connection is cut off.
  res.write(text)
  linger(res.req, () => res.end())
}

/** @default 8 MiB — body bytes a refused request may still send, read and dropped, before its connection is closed */
const LINGER_MAX_BYTES = 8 * 1024 * 1024

/** Ends each lingering answer whose body will never end (its connection failed): see `clientError`. */
const lingering = new WeakMap<IncomingMessage, () => void>()

function linger (req: IncomingMessage, end: () => void): void {
  const done = once(() => { lingering.delete(req); end() })
  lingering.set(req, done)
  let drained = 0
  req.on('data', (part: Buffer) => {
    drained += part.byteLength
    if (drained > LINGER_MAX_BYTES) req.socket.destroy()
  })
  req.once('end', done)
  req.once('close', done)
  req.resume()
}

/** A request whose body has not been read to its end (a refusal answered before reading it). */
function bodyPending (req: IncomingMessage): boolean {
  if (req.complete) return false
  const length = req.headers['content-length']
  return (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined
}

/** Writes a last raw answer (when given) and ends the connection; destroyed if it lingers. */
function endWith (socket: Duplex, wire?: WireError): void {
  if (wire !== undefined) {
    const text = JSON.stringify(wire)
    const status = statusOf(wire.code)
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n${text}`)
  } else {
    socket.end()
  }
  setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref()
}

/**
 * Refusals (busy, timeouts, bad bytes) logged without flooding: the first of a quiet spell at
 * once, then one line per `REFUSAL_LOG_MS` with how many of each kind there were.
 */
class RefusalLog {
  private readonly counts = new Map<string, number>()
  private timer?: NodeJS.Timeout

  constructor (private readonly log: RpcLog) {}

  note (what: string): void {
    if (this.timer === undefined) {
      this.log.warn({ refused: what }, `RPC refused: ${what}`)
      this.timer = setTimeout(() => { this.flush() }, REFUSAL_LOG_MS)
      this.timer.unref()
      return
    }
    this.counts.set(what, (this.counts.get(what) ?? 0) + 1)
  }

  flush (): void {
    clearTimeout(this.timer)
    this.timer = undefined
    if (this.counts.size === 0) return
    const refused = Object.fromEntries(this.counts)
    this.counts.clear()
    this.log.warn({ refused }, `RPC refused more in the last ${REFUSAL_LOG_MS / 1000} s`)
  }
}

function once (f: () => void): () => void {
  let done = false
  return () => {
    if (done) return
    done = true
    f()
  }
}

function clip (text: string | undefined, max = 200): string {
  const t = text ?? ''
  return t.length > max ? `${t.slice(0, max)}…` : t
}

function replacer (_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value
}
