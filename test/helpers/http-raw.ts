/**
 * Raw bytes to an RPC listener and the answers back, with no HTTP client in between: what a
 * hostile local client sends (bad request lines, slow headers, pipelined requests) and what it
 * gets. `exchange` always settles by its deadline; `parseResponses` splits what came back into
 * HTTP responses and says if anything is left that is not one.
 */
import { connect, type Socket } from 'node:net'

export type Where = { socketPath: string } | { port: number }

export interface Exchange {
  /** Every byte received. */
  bytes: Buffer
  /** The server closed (or reset) the connection before the deadline. */
  closed: boolean
  /** Milliseconds from the connection to the close (or to the deadline). */
  ms: number
  error?: string
}

export function open (where: Where): Socket {
  return 'socketPath' in where ? connect(where.socketPath) : connect(where.port, '127.0.0.1')
}

/**
 * Sends `payload` (all at once, or `pieces` spaced `everyMs` apart), half-closes when `end`, and
 * collects the answer until the server closes or `timeoutMs` passes.
 */
export async function exchange (where: Where, payload: string | Buffer | Array<string | Buffer>, options: { end?: boolean, timeoutMs?: number, everyMs?: number } = {}): Promise<Exchange> {
  const started = Date.now()
  const socket = open(where)
  const parts: Buffer[] = []
  let error: string | undefined
  socket.on('data', (d: Buffer) => parts.push(d))
  socket.on('error', err => { error = err.message })
  const closed = new Promise<boolean>(resolve => socket.once('close', () => resolve(true)))
  const pieces = Array.isArray(payload) ? payload : [payload]
  void (async () => {
    for (const [i, piece] of pieces.entries()) {
      if (socket.destroyed) return
      if (i > 0 && options.everyMs !== undefined) await new Promise(resolve => setTimeout(resolve, options.everyMs))
      socket.write(piece)
    }
    if (options.end !== false && !socket.destroyed) socket.end()
  })()
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<boolean>(resolve => { timer = setTimeout(() => resolve(false), options.timeoutMs ?? 10_000) })
  const wasClosed = await Promise.race([closed, deadline])
  clearTimeout(timer)
  const ms = Date.now() - started
  socket.destroy()
  return { bytes: Buffer.concat(parts), closed: wasClosed, ms, ...(error !== undefined ? { error } : {}) }
}

export interface RawResponse {
  status: number
  headers: Record<string, string>
  body: Buffer
  /** `body` parsed as JSON, when it is. */
  json?: unknown
}

/**
 * The HTTP/1.1 responses in `bytes`, in order (interim 1xx responses are skipped); `rest` is what
 * follows them that is not a whole response. Bodies are framed by content-length, chunked
 * encoding, or the end of the bytes; a response to HEAD (`heads` gives which ones) has none.
 */
export function parseResponses (bytes: Buffer, heads: boolean[] = []): { responses: RawResponse[], rest: Buffer } {
  const responses: RawResponse[] = []
  let at = 0
  while (at < bytes.length) {
    const end = bytes.indexOf('\r\n\r\n', at)
    if (end < 0) break
    const lines = bytes.subarray(at, end).toString('latin1').split('\r\n')
    const m = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(lines[0] ?? '')
    if (m === null) break
    const status = Number(m[1])
    const headers: Record<string, string> = {}
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':')
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
    }
    let next = end + 4
    if (status < 200) { at = next; continue }
    let body: Buffer
    if (heads[responses.length] === true || status === 204 || status === 304) {
      body = Buffer.alloc(0)
    } else if (headers['content-length'] !== undefined) {
      const length = Number(headers['content-length'])
      if (next + length > bytes.length) break
      body = bytes.subarray(next, next + length)
      next += length
    } else if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
      const chunks: Buffer[] = []
      for (;;) {
        const lineEnd = bytes.indexOf('\r\n', next)
        if (lineEnd < 0) return { responses, rest: bytes.subarray(at) }
        const size = parseInt(bytes.subarray(next, lineEnd).toString('latin1'), 16)
        next = lineEnd + 2
        if (size === 0) { next += 2; break }
        chunks.push(bytes.subarray(next, next + size))
        next += size + 2
      }
      body = Buffer.concat(chunks)
    } else {
      body = bytes.subarray(next)
      next = bytes.length
    }
    let json: unknown
    try { json = JSON.parse(body.toString('utf8')) } catch { json = undefined }
    responses.push({ status, headers, body, ...(json !== undefined ? { json } : {}) })
    at = next
  }
  return { responses, rest: bytes.subarray(at) }
}

/** Polls `probe` every `everyMs` until it is true, or fails after `timeoutMs` saying `what`. */
export async function until (what: string, probe: () => boolean | Promise<boolean>, timeoutMs = 10_000, everyMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`)
    await new Promise(resolve => setTimeout(resolve, everyMs))
  }
}
