/**
 * A throwaway HTTP origin (web seed) for tests: serves the files under `root` on 127.0.0.1 (random
 * port) with single-range support (`206` + `Content-Range`, `416` for malformed or unsatisfiable
 * ranges, `HEAD`), and faults that can be switched at runtime to play a misbehaving server.
 * It counts requests, connections and body bytes so tests can check retries and keep-alive.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { readFile } from 'node:fs/promises'
import { resolve, sep } from 'node:path'

export interface OriginFaults {
  /** Flip the first byte of every response body. */
  corrupt?: boolean
  /** Send headers and this many body bytes, then hang (the socket stays open until `close()`). */
  stallAfterBytes?: number
  /** Answer every request with this status (and a short text body) instead of the file. */
  status?: number
  /** With `status`: apply it to this many requests only, then serve normally again. */
  statusTimes?: number
  /** Ignore `Range` and answer `200` with the whole file. */
  ignoreRange?: boolean
  /**
   * Send this many bytes beyond the range. The body is sent chunked (no `Content-Length`), so only
   * a client that counts what it reads notices; `Content-Range` still names the requested range.
   */
  oversend?: number
  /** Answer every request with a `302` to this location. */
  redirectTo?: string
}

export interface OriginServerStats {
  /** Requests received (any method, any outcome). */
  requests: number
  /** TCP connections accepted. */
  connections: number
  /** Body bytes written. */
  bytes: number
  /** The `Range` header of each request, in order (`undefined` when absent). */
  ranges: Array<string | undefined>
}

export interface OriginServer {
  /** The absolute URL of `path` (relative to the served root) on this server. */
  url: (path: string) => string
  /** Live counters (the same object throughout). */
  readonly stats: OriginServerStats
  /** Replaces the active faults; `setFaults({})` clears them. */
  setFaults: (faults: OriginFaults) => void
  /** Stops listening and destroys every open socket, hung responses included. */
  close: () => Promise<void>
}

export async function startOriginServer (root: string, initial: OriginFaults = {}): Promise<OriginServer> {
  const base = resolve(root)
  let faults: OriginFaults = { ...initial }
  const stats: OriginServerStats = { requests: 0, connections: 0, bytes: 0, ranges: [] }
  const sockets = new Set<Socket>()

  const send = (res: ServerResponse, status: number, headers: Record<string, string | number>, body?: Uint8Array): void => {
    res.writeHead(status, headers)
    if (body !== undefined) stats.bytes += body.length
    res.end(body)
  }

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    stats.requests++
    stats.ranges.push(req.headers.range)

    if (faults.status !== undefined) {
      const status = faults.status
      if (faults.statusTimes !== undefined && --faults.statusTimes <= 0) {
        faults = { ...faults, status: undefined, statusTimes: undefined }
      }
      const text = Buffer.from(`fault: status ${status}\n`)
      send(res, status, { 'content-type': 'text/plain', 'content-length': text.length }, text)
      return
    }
    if (faults.redirectTo !== undefined) {
      send(res, 302, { location: faults.redirectTo, 'content-length': 0 })
      return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(res, 405, { allow: 'GET, HEAD', 'content-length': 0 })
      return
    }

    const pathname = decodeURIComponent(new URL(req.url ?? '/', 'http://origin').pathname)
    const file = resolve(base, `.${pathname}`)
    let data: Buffer
    try {
      if (!file.startsWith(base + sep)) throw new Error('outside the root')
      data = await readFile(file)
    } catch {
      const text = Buffer.from('not found\n')
      send(res, 404, { 'content-type': 'text/plain', 'content-length': text.length }, text)
      return
    }

    const size = data.length
    let status = 200
    let start = 0
    let end = size - 1
    const header = req.headers.range
    if (header !== undefined && faults.ignoreRange !== true) {
      const range = parseRange(header, size)
      if (range === null) {
        send(res, 416, { 'content-range': `bytes */${size}`, 'content-length': 0 })
        return
      }
      status = 206
      ;({ start, end } = range)
    }

    let body: Buffer = Buffer.from(data.subarray(start, end + 1))
    if (faults.corrupt === true && body.length > 0) body[0] = body[0]! ^ 0xff
    const headers: Record<string, string | number> = { 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' }
    if (status === 206) headers['content-range'] = `bytes ${start}-${end}/${size}`
    const extra = faults.oversend ?? 0
    if (extra > 0) {
      body = Buffer.concat([body, Buffer.alloc(extra, 0x5a)])
    } else {
      headers['content-length'] = body.length
    }

    if (req.method === 'HEAD') {
      send(res, status, headers)
      return
    }
    if (faults.stallAfterBytes !== undefined) {
      const part = body.subarray(0, faults.stallAfterBytes)
      res.writeHead(status, headers)
      res.flushHeaders()
      if (part.length > 0) res.write(part)
      stats.bytes += part.length
      return // never ends: the client must time out or abort
    }
    send(res, status, headers, body)
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => { res.destroy(err as Error) })
  })
  server.on('connection', (socket) => {
    stats.connections++
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve() })
  })
  const { port } = server.address() as AddressInfo

  return {
    url: (path) => `http://127.0.0.1:${port}/${path.replace(/^\/+/, '').split('/').map(encodeURIComponent).join('/')}`,
    stats,
    setFaults: (f) => { faults = { ...f } },
    close: async () => {
      const closed = new Promise<void>((resolve) => { server.close(() => { resolve() }) })
      for (const socket of sockets) socket.destroy()
      server.closeAllConnections()
      await closed
    }
  }
}

/** One `bytes=` range (`a-b`, `a-`, `-n`) clamped to the file; null when malformed or unsatisfiable. */
function parseRange (header: string, size: number): { start: number, end: number } | null {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (m === null || (m[1] === '' && m[2] === '')) return null
  if (m[1] === '') {
    const suffix = Number(m[2])
    if (suffix === 0 || size === 0) return null
    return { start: Math.max(0, size - suffix), end: size - 1 }
  }
  const start = Number(m[1])
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1)
  if (start >= size || end < start) return null
  return { start, end }
}
