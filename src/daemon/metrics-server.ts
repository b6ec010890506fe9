/**
 * The optional metrics listener (`metrics.listen` in config.json): `GET /metrics` over plain HTTP
 * on an address Prometheus can reach, with no token — it serves the metrics and nothing else, so it
 * can be exposed where the RPC (socket, or loopback TCP with a token) must not be.
 *
 * Bounds: at most `METRICS_MAX_CONNECTIONS` connections; headers within Node's 16 KiB and
 * `METRICS_REQUEST_TIMEOUT_MS`; a body is never read. Any other path answers 404, any other method
 * 405, each `{ code, message }`.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

/** @default 64 — scrapers are few; more connections are dropped at accept */
export const METRICS_MAX_CONNECTIONS = 64
/** @default 10 s — to receive a request's headers */
export const METRICS_REQUEST_TIMEOUT_MS = 10_000

export class MetricsServer {
  private server?: Server

  constructor (private readonly options: { host: string, port: number, text: () => Promise<{ contentType: string, body: string }>, log: { warn: (obj: object, msg?: string) => void } }) {}

  /** Listens; resolves with the address (`host:port`, the port chosen when 0 was asked). */
  async start (): Promise<string> {
    const server = createServer((req, res) => {
      req.resume()
      const path = (req.url ?? '').split('?')[0]
      const answer = (status: number, code: string, message: string): void => {
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ code, message }))
      }
      if (path !== '/metrics') { answer(404, 'NOT_FOUND', 'this listener serves GET /metrics only'); return }
      if (req.method !== 'GET' && req.method !== 'HEAD') { answer(405, 'METHOD_NOT_ALLOWED', `${req.method ?? ''} is not allowed on /metrics`); return }
      this.options.text().then(out => {
        res.writeHead(200, { 'content-type': out.contentType, 'content-length': Buffer.byteLength(out.body), 'cache-control': 'no-store' })
        res.end(req.method === 'HEAD' ? undefined : out.body)
      }, (err: unknown) => {
        this.options.log.warn({ err: (err as Error).message }, 'metrics could not be collected')
        answer(500, 'INTERNAL', 'metrics could not be collected')
      })
    })
    server.maxConnections = METRICS_MAX_CONNECTIONS
    server.headersTimeout = METRICS_REQUEST_TIMEOUT_MS
    server.requestTimeout = METRICS_REQUEST_TIMEOUT_MS
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.options.port, this.options.host, () => { server.off('error', reject); resolve() })
    })
    this.server = server
    const a = server.address() as AddressInfo
    return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`
  }

  async stop (): Promise<void> {
    const server = this.server
    if (server === undefined) return
    server.closeAllConnections()
    await new Promise<void>(resolve => server.close(() => resolve()))
  }
}
