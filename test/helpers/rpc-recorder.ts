/**
 * A recording proxy for the daemon's RPC socket: a `node:http` server on a unix socket of its own
 * that notes every request (method, target, headers, body) and forwards it to the daemon's socket,
 * streaming the answer back as it comes. The e2e harness puts one in front of every daemon, at the
 * path clients find from the home, so the CLI, in-process clients, examples and raw requests all
 * pass through it; the recorded requests are then checked against the OpenAPI document.
 *
 * MUST hold, so that what the tests see is what the daemon does:
 * - status, headers and body reach the client unchanged and as they come (server-sent events,
 *   NDJSON progress, range reads); trailers (`TE: trailers`, `X-Shoal-Error`) are passed on;
 * - an answer the daemon cuts short is cut short to the client (the connection is destroyed,
 *   never ended as if whole), and a client that leaves makes the proxy leave the daemon too (the
 *   daemon sees its client go: a pull goes on in the background, a watch ends);
 * - the request reaches the daemon as sent (headers, and a body chunked or not as the client
 *   sent it), less the `MARK_INVALID` header, which only the recorder reads; a body of up to
 *   `RECORDED_BODY_BYTES` goes out once whole, a larger one is streamed;
 * - `close` stops accepting and destroys every connection, as the daemon's exit does.
 *
 * Not a goal: recording the loopback TCP listener (`rpc.tcp`), HTTP upgrades, keep-alive towards
 * the daemon (each forwarded request has a connection of its own), passing on bytes that are not
 * HTTP (the proxy drops such a connection; the faults tests send those to the daemon directly).
 */
import { createServer, request, type ClientRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http'
import { rm } from 'node:fs/promises'
import { MAX_HEADER_BYTES } from '../../src/rpc/limits.js'
import { MAX_BODY_BYTES } from '../../src/rpc/schemas.js'

/**
 * A request header that says the sender means the request to break the OpenAPI document, and
 * why (a bad-input test): the recorder notes the reason and removes the header before forwarding.
 */
export const MARK_INVALID = 'x-shoal-test-invalid'

/**
 * @default MAX_BODY_BYTES + 1 — bytes of a body kept: every body the daemon takes fits, and one
 * past the cap shows it was larger.
 */
export const RECORDED_BODY_BYTES = MAX_BODY_BYTES + 1

/** @default 4 × MAX_HEADER_BYTES — the proxy's header bound, above the daemon's */
export const PROXY_HEADER_BYTES = 4 * MAX_HEADER_BYTES

/** Headers that belong to one connection, not passed on in either direction. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', MARK_INVALID])

export interface RecordedRequest {
  method: string
  /** Path and query, as sent. */
  url: string
  /** Every request header, lower-case, repeated ones joined with `, ` (the mark removed). */
  headers: Record<string, string>
  /** The first `RECORDED_BODY_BYTES` of the body. */
  body: Buffer
  /** The whole body's size. */
  bodyBytes: number
  /** The daemon's status, once it answered. */
  status?: number
  /** Why the sender meant the request to be invalid (the `MARK_INVALID` header), when it did. */
  invalid?: string
  /** Where it went: the proxy's socket. */
  socket: string
}

export class RecordingProxy {
  private constructor (private readonly server: Server, readonly socket: string) {}

  /**
   * Listens on `socket` (a stale file there is removed first) and forwards to `upstream`; each
   * request is given to `record` when it arrives, and filled in as its body and answer come.
   */
  static async listen (socket: string, upstream: string, record: (r: RecordedRequest) => void): Promise<RecordingProxy> {
    // Bounds of its own wider than the daemon's, so the daemon's refusals (431, 408) are what
    // a client sees: larger headers, and no time limit on a request.
    const server = createServer({ maxHeaderSize: PROXY_HEADER_BYTES, requestTimeout: 0 }, (req, res) => {
      const headers: Record<string, string> = {}
      const forward: OutgoingHttpHeaders = {}
      for (const [name, value] of Object.entries(req.headers as IncomingHttpHeaders)) {
        if (value === undefined) continue
        const text = Array.isArray(value) ? value.join(', ') : value
        if (name !== MARK_INVALID) headers[name] = text
        if (!HOP_BY_HOP.has(name)) forward[name] = value
      }
      const mark = req.headers[MARK_INVALID]
      const entry: RecordedRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers,
        body: Buffer.alloc(0),
        bodyBytes: 0,
        socket,
        ...(typeof mark === 'string' ? { invalid: mark } : {})
      }
      record(entry)
      // A body of up to RECORDED_BODY_BYTES is held until it is whole and then sent with the
      // request in one go, as the daemon's clients send theirs: streamed piece by piece, a last
      // write could meet a daemon that has already answered and closed (EPIPE), and the answer
      // would be lost. Past that size the body is streamed, with backpressure.
      const held: Buffer[] = []
      let up: ClientRequest | undefined
      const open = (): ClientRequest => {
        const chunked = req.headers['transfer-encoding'] !== undefined ? { 'transfer-encoding': 'chunked' } : {}
        const next = request({ socketPath: upstream, method: req.method, path: req.url, headers: { ...forward, ...chunked }, agent: false })
        forwardAnswer(next, res, entry)
        res.on('close', () => { if (!res.writableFinished) next.destroy() })
        up = next
        return next
      }
      req.on('data', (part: Buffer) => {
        entry.bodyBytes += part.length
        if (entry.body.length < RECORDED_BODY_BYTES) entry.body = Buffer.concat([entry.body, part.subarray(0, RECORDED_BODY_BYTES - entry.body.length)])
        if (up === undefined) {
          held.push(part)
          if (entry.bodyBytes <= RECORDED_BODY_BYTES) return
          const next = open()
          for (const p of held.splice(0)) next.write(p)
        } else if (!up.write(part)) {
          req.pause()
          up.once('drain', () => req.resume())
        }
      })
      req.on('end', () => { if (up === undefined) open().end(Buffer.concat(held)); else up.end() })
    })
    server.on('clientError', (_err, conn) => conn.destroy())
    await rm(socket, { force: true })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(socket, () => { server.off('error', reject); resolve() })
    })
    return new RecordingProxy(server, socket)
  }

  /** Stops accepting (the socket file goes) and destroys every open connection. */
  async close (): Promise<void> {
    const closed = new Promise<void>(resolve => this.server.close(() => resolve()))
    this.server.closeAllConnections()
    await closed
  }
}

/** Sends the daemon's answer to `up` back on `res` as it comes, and notes its status in `entry`. */
function forwardAnswer (up: ClientRequest, res: ServerResponse, entry: RecordedRequest): void {
  let answered = false
  up.on('response', upRes => {
    answered = true
    entry.status = upRes.statusCode
    const back: OutgoingHttpHeaders = {}
    for (const [name, value] of Object.entries(upRes.headers)) if (value !== undefined && !HOP_BY_HOP.has(name)) back[name] = value
    res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, back)
    res.flushHeaders()
    upRes.pipe(res, { end: false })
    upRes.on('end', () => {
      if (Object.keys(upRes.trailers).length > 0) res.addTrailers(upRes.trailers)
      res.end()
    })
    // Cut short by the daemon: cut short to the client too.
    upRes.on('close', () => { if (!upRes.complete) res.destroy() })
    upRes.on('error', () => res.destroy())
  })
  // A daemon that refused a large body before reading all of it may close while the rest is
  // still being written: what it answered still goes out. Without an answer, the connection ends
  // with none, as with a daemon that went away.
  up.on('error', () => { if (!answered) res.destroy() })
}
