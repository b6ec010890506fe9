/**
 * Origin (web seed) fallback. A version may list plain HTTP(S) URLs for its files; chunks that no
 * peer can serve are fetched from there as byte ranges, one `GET` with a `Range` header per chunk.
 *
 * MUST hold:
 * - only absolute `http:` and `https:` URLs are fetched, including redirect targets; anything else
 *   (`file:`, `data:`, `ftp:`, …) is refused before a byte moves. At most `MAX_ORIGIN_REDIRECTS`
 *   redirects are followed per attempt;
 * - the result is exactly the bytes asked for or an error: a `206` must carry a `Content-Range`
 *   naming exactly the requested range; a `200` (server ignored `Range`) is accepted only when it
 *   is the whole answer anyway (offset 0 and the body is exactly `length` bytes long); a body that
 *   is longer, shorter or content-encoded is refused;
 * - memory is bounded: the body goes into one buffer of `length` bytes; a server that sends more is
 *   cut off, never buffered. `length` itself is capped by `MAX_ORIGIN_RANGE_BYTES`;
 * - every wait has a deadline: response headers within `timeoutMs` of getting a connection, then
 *   the body must keep moving (no gap between bytes longer than `stallTimeoutMs`), so a large range
 *   on a slow but live link is not cut off while a dead one is; every call takes an `AbortSignal`;
 * - network errors, timeouts, truncated bodies and 5xx are retried (`retries` times, exponential
 *   backoff with jitter); 4xx and contract violations are not;
 * - connections are reused: one keep-alive agent per scheme, at most `maxConnectionsPerOrigin`
 *   sockets per host; requests beyond that queue in the agent (the header deadline starts when a
 *   request gets its socket, so queueing is not counted against it).
 *
 * Not a goal: integrity. The origin is untrusted; the bytes returned are whatever it sent for the
 * range. The caller MUST hash them against the chunk id before using or storing them (the store
 * refuses a put whose bytes do not hash to their id anyway). Nor is choosing among several origins
 * or peers: that is the fetch session's job, which moves on when this client throws.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import { AbortedError, InvalidInputError } from '../core/errors.js'
import { SHOAL_VERSION } from '../version.js'
import { OriginError } from './errors.js'

/**
 * Deadline for response headers, counted from the moment the request has a socket.
 * @default 30_000
 */
export const DEFAULT_ORIGIN_TIMEOUT_MS = 30_000

/**
 * Longest gap allowed between two pieces of a response body before the request is abandoned.
 * @default 10_000
 */
export const DEFAULT_ORIGIN_STALL_TIMEOUT_MS = 10_000

/**
 * Keep-alive sockets per origin host (per scheme agent).
 * @default 4
 */
export const DEFAULT_ORIGIN_MAX_CONNECTIONS = 4

/**
 * Extra attempts after a retryable failure (so `retries + 1` attempts in all).
 * @default 2
 */
export const DEFAULT_ORIGIN_RETRIES = 2

/**
 * Base delay before the first retry; doubled for each further one, jittered, capped by
 * `MAX_ORIGIN_RETRY_DELAY_MS`.
 * @default 250
 */
export const DEFAULT_ORIGIN_RETRY_DELAY_MS = 250

/** Upper bound on any single backoff delay. */
export const MAX_ORIGIN_RETRY_DELAY_MS = 5_000

/** Redirects followed per attempt before giving up. */
export const MAX_ORIGIN_REDIRECTS = 3

/** Largest range one call may ask for: the whole range is held in memory. */
export const MAX_ORIGIN_RANGE_BYTES = 64 * 1024 * 1024

/**
 * Bodies of error and redirect responses up to this size are read and dropped so the socket can be
 * reused; larger (or stalled) ones close the socket instead.
 */
const DRAIN_LIMIT_BYTES = 64 * 1024

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308])
const USER_AGENT = `shoal/${SHOAL_VERSION}`

/** The subset of a (pino) logger this client uses. */
export interface OriginLogger {
  debug: (obj: object, msg?: string) => void
}

export interface OriginClientInit {
  /** @default DEFAULT_ORIGIN_TIMEOUT_MS */
  timeoutMs?: number
  /** @default DEFAULT_ORIGIN_STALL_TIMEOUT_MS */
  stallTimeoutMs?: number
  /** @default DEFAULT_ORIGIN_MAX_CONNECTIONS */
  maxConnectionsPerOrigin?: number
  /** @default DEFAULT_ORIGIN_RETRIES */
  retries?: number
  /** @default DEFAULT_ORIGIN_RETRY_DELAY_MS */
  retryDelayMs?: number
  logger?: OriginLogger
}

export interface FetchRangeOptions {
  signal?: AbortSignal
}

const silent: OriginLogger = { debug () {} }

/** Fetches byte ranges from HTTP(S) origins. One instance per daemon; `close()` on shutdown. */
export class OriginClient {
  readonly timeoutMs: number
  readonly stallTimeoutMs: number
  readonly maxConnectionsPerOrigin: number
  readonly retries: number
  readonly retryDelayMs: number
  private readonly logger: OriginLogger
  private readonly httpAgent: HttpAgent
  private readonly httpsAgent: HttpsAgent
  /** One controller per call in flight; `close()` aborts them all. */
  private readonly inflight = new Set<AbortController>()
  private closed = false

  constructor (init: OriginClientInit = {}) {
    this.timeoutMs = positive('timeoutMs', init.timeoutMs ?? DEFAULT_ORIGIN_TIMEOUT_MS)
    this.stallTimeoutMs = positive('stallTimeoutMs', init.stallTimeoutMs ?? DEFAULT_ORIGIN_STALL_TIMEOUT_MS)
    this.maxConnectionsPerOrigin = positiveInteger('maxConnectionsPerOrigin', init.maxConnectionsPerOrigin ?? DEFAULT_ORIGIN_MAX_CONNECTIONS)
    this.retries = nonNegativeInteger('retries', init.retries ?? DEFAULT_ORIGIN_RETRIES)
    this.retryDelayMs = nonNegativeInteger('retryDelayMs', init.retryDelayMs ?? DEFAULT_ORIGIN_RETRY_DELAY_MS)
    this.logger = init.logger ?? silent
    const agentOptions = { keepAlive: true, maxSockets: this.maxConnectionsPerOrigin, maxFreeSockets: this.maxConnectionsPerOrigin }
    this.httpAgent = new HttpAgent(agentOptions)
    this.httpsAgent = new HttpsAgent(agentOptions)
  }

  /**
   * The `length` bytes of `url` starting at `offset`, unverified (see the module doc).
   *
   * @throws OriginError when the origin cannot serve exactly that range (after retries)
   * @throws AbortedError when `signal` fires or the client is closed
   * @throws InvalidInputError for a negative offset or a length outside 1..`MAX_ORIGIN_RANGE_BYTES`
   */
  async fetchRange (url: string, offset: number, length: number, options: FetchRangeOptions = {}): Promise<Uint8Array> {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new InvalidInputError(`bad range offset ${offset}`)
    if (!Number.isSafeInteger(length) || length < 1 || length > MAX_ORIGIN_RANGE_BYTES) {
      throw new InvalidInputError(`bad range length ${length} (1..${MAX_ORIGIN_RANGE_BYTES})`)
    }
    const target = parseOriginUrl(url)
    const { signal, dispose } = this.linkSignal(options.signal)
    try {
      for (let attempt = 0; ; attempt++) {
        throwIfAborted(signal)
        try {
          return await this.attempt(target, offset, length, signal, 0)
        } catch (err) {
          if (signal.aborted) throw abortedError(signal)
          if (!(err instanceof OriginError) || !err.retryable || attempt >= this.retries) throw err
          const delay = backoff(this.retryDelayMs, attempt)
          this.logger.debug({ url: target.origin, offset, length, attempt: attempt + 1, delay, reason: err.reason, status: err.status }, 'origin request failed; retrying')
          await sleep(delay, signal)
        }
      }
    } finally {
      dispose()
    }
  }

  /** Fails requests in flight (with `AbortedError`) and closes every socket. Idempotent. */
  close (): void {
    if (this.closed) return
    this.closed = true
    for (const controller of this.inflight) controller.abort(closedError())
    this.inflight.clear()
    this.httpAgent.destroy()
    this.httpsAgent.destroy()
  }

  /** One signal per call that fires on the caller's abort or on `close()`. */
  private linkSignal (outer: AbortSignal | undefined): { signal: AbortSignal, dispose: () => void } {
    const controller = new AbortController()
    if (this.closed) {
      controller.abort(closedError())
      return { signal: controller.signal, dispose: () => {} }
    }
    const forward = (): void => { controller.abort(new AbortedError(undefined, { cause: outer?.reason })) }
    if (outer?.aborted === true) forward()
    else outer?.addEventListener('abort', forward, { once: true })
    this.inflight.add(controller)
    return {
      signal: controller.signal,
      dispose: () => {
        outer?.removeEventListener('abort', forward)
        this.inflight.delete(controller)
      }
    }
  }

  /** One request (following redirects); settles exactly once. */
  private attempt (url: URL, offset: number, length: number, signal: AbortSignal, redirects: number): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      const href = url.href
      const https = url.protocol === 'https:'
      const req = (https ? httpsRequest : httpRequest)(url, {
        method: 'GET',
        agent: https ? this.httpsAgent : this.httpAgent,
        headers: {
          range: `bytes=${offset}-${offset + length - 1}`,
          'accept-encoding': 'identity',
          'user-agent': USER_AGENT
        }
      })

      let settled = false
      let timer: NodeJS.Timeout | undefined
      const arm = (ms: number, message: string): void => {
        clearTimeout(timer)
        timer = setTimeout(() => { fail(new OriginError(message, { reason: 'timeout', url: href, retryable: true })) }, ms)
      }
      const done = (): boolean => {
        if (settled) return false
        settled = true
        clearTimeout(timer)
        signal.removeEventListener('abort', onAbort)
        return true
      }
      /** Settles with `err` and closes the socket (never reused after a failure mid-response). */
      const fail = (err: Error): void => {
        if (!done()) return
        req.destroy()
        reject(err)
      }
      const onAbort = (): void => { fail(abortedError(signal)) }
      signal.addEventListener('abort', onAbort, { once: true })

      const protocolError = (message: string, status?: number): OriginError =>
        new OriginError(message, { reason: 'protocol', url: href, status })

      req.once('socket', () => { if (!settled) arm(this.timeoutMs, `no response headers within ${this.timeoutMs} ms`) })
      req.on('error', (err) => {
        fail(new OriginError(`request failed (${errorCode(err)})`, { reason: 'network', url: href, retryable: true, cause: err }))
      })
      req.on('response', (res) => {
        if (settled) { res.destroy(); return }
        const status = res.statusCode ?? 0

        if (REDIRECT_STATUSES.has(status)) {
          const location = res.headers.location
          if (location === undefined || location === '') { fail(new OriginError('redirect without a Location', { reason: 'redirect', url: href, status })); return }
          if (redirects >= MAX_ORIGIN_REDIRECTS) { fail(new OriginError(`more than ${MAX_ORIGIN_REDIRECTS} redirects`, { reason: 'redirect', url: href, status })); return }
          let next: URL
          try {
            next = parseOriginUrl(location, url)
          } catch (err) {
            fail(err as Error)
            return
          }
          if (!done()) return
          drain(res, this.stallTimeoutMs)
          resolve(this.attempt(next, offset, length, signal, redirects + 1))
          return
        }

        if (status !== 200 && status !== 206) {
          if (!done()) return
          drain(res, this.stallTimeoutMs)
          reject(new OriginError(statusText(status), { reason: 'status', url: href, status, retryable: status >= 500 }))
          return
        }

        const encoding = res.headers['content-encoding']
        if (encoding !== undefined && encoding.toLowerCase() !== 'identity') { fail(protocolError(`refusing a ${encoding}-encoded body`, status)); return }
        const declared = contentLength(res)
        if (declared === null) { fail(protocolError('malformed Content-Length', status)); return }
        if (status === 206) {
          const range = parseContentRange(res.headers['content-range'])
          if (range === null || range.start !== offset || range.end !== offset + length - 1) {
            fail(protocolError(`Content-Range ${JSON.stringify(res.headers['content-range'] ?? null)} is not bytes ${offset}-${offset + length - 1}`, status))
            return
          }
        } else if (offset !== 0) {
          fail(protocolError(`server ignored the Range header (offset ${offset})`, status))
          return
        }
        if (declared !== undefined && declared !== length) {
          fail(protocolError(`Content-Length ${declared} is not the ${length} bytes asked for`, status))
          return
        }
        this.readBody(res, length, arm, fail, (bytes) => { if (done()) resolve(bytes) }, href, status)
      })
      req.end()
    })
  }

  /** Reads exactly `length` bytes into one buffer, under the stall deadline. */
  private readBody (res: IncomingMessage, length: number, arm: (ms: number, message: string) => void, fail: (err: Error) => void, succeed: (bytes: Uint8Array) => void, href: string, status: number): void {
    const out = new Uint8Array(length)
    let received = 0
    const stalled = `body stalled: no bytes for ${this.stallTimeoutMs} ms`
    arm(this.stallTimeoutMs, stalled)
    res.on('data', (chunk: Buffer) => {
      if (received + chunk.length > length) {
        fail(new OriginError(`the server sent more than the ${length} bytes asked for`, { reason: 'protocol', url: href, status }))
        return
      }
      out.set(chunk, received)
      received += chunk.length
      arm(this.stallTimeoutMs, stalled)
    })
    res.on('end', () => {
      if (received === length) succeed(out)
      else fail(new OriginError(`body ended after ${received} of ${length} bytes`, { reason: 'network', url: href, status, retryable: true }))
    })
    res.on('error', (err) => {
      fail(new OriginError(`response failed (${errorCode(err)})`, { reason: 'network', url: href, status, retryable: true, cause: err }))
    })
    res.on('close', () => {
      fail(new OriginError(`connection closed after ${received} of ${length} bytes`, { reason: 'network', url: href, status, retryable: true }))
    })
  }
}

/** An absolute http(s) URL, resolved against `base` for redirects; anything else is refused. */
function parseOriginUrl (url: string, base?: URL): URL {
  let parsed: URL
  try {
    parsed = new URL(url, base)
  } catch (err) {
    throw new OriginError('not a URL', { reason: 'unsupported-url', url, cause: err })
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    const what = base === undefined ? 'only http: and https: origins are supported' : 'refusing a redirect to a non-http(s) URL'
    throw new OriginError(`${what} (got ${parsed.protocol})`, { reason: 'unsupported-url', url: parsed.href })
  }
  return parsed
}

/** `bytes start-end/total` (total may be `*`); null when absent or malformed. */
function parseContentRange (header: string | undefined): { start: number, end: number } | null {
  const m = header === undefined ? null : /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header.trim())
  if (m === null) return null
  const start = Number(m[1])
  const end = Number(m[2])
  const total = m[3] === '*' ? Infinity : Number(m[3])
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start || end >= total) return null
  return { start, end }
}

/** The declared body length: undefined when absent (chunked), null when malformed. */
function contentLength (res: IncomingMessage): number | undefined | null {
  const header = res.headers['content-length']
  if (header === undefined) return undefined
  if (!/^\d+$/.test(header.trim())) return null
  const n = Number(header)
  return Number.isSafeInteger(n) ? n : null
}

/** Drops a small unused body so its socket goes back to the pool; closes the socket otherwise. */
function drain (res: IncomingMessage, stallTimeoutMs: number): void {
  const declared = contentLength(res)
  if (declared === null || (declared !== undefined && declared > DRAIN_LIMIT_BYTES)) { res.destroy(); return }
  let seen = 0
  const timer = setTimeout(() => { res.destroy() }, stallTimeoutMs)
  res.on('data', (chunk: Buffer) => {
    seen += chunk.length
    if (seen > DRAIN_LIMIT_BYTES) res.destroy()
  })
  res.on('close', () => { clearTimeout(timer) })
  res.on('error', () => {})
  res.resume()
}

function backoff (baseMs: number, attempt: number): number {
  const ceiling = Math.min(MAX_ORIGIN_RETRY_DELAY_MS, baseMs * 2 ** attempt)
  return Math.round(ceiling * (0.5 + Math.random() / 2))
}

function sleep (ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => { clearTimeout(timer); reject(abortedError(signal)) }
    const timer = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve() }, ms)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

function closedError (): AbortedError {
  return new AbortedError('the origin client was closed')
}

function abortedError (signal: AbortSignal): AbortedError {
  return signal.reason instanceof AbortedError ? signal.reason : new AbortedError(undefined, { cause: signal.reason })
}

function throwIfAborted (signal: AbortSignal): void {
  if (signal.aborted) throw abortedError(signal)
}

function errorCode (err: Error): string {
  return (err as NodeJS.ErrnoException).code ?? err.message
}

function statusText (status: number): string {
  if (status === 404) return 'not found on the origin'
  if (status === 416) return 'range not satisfiable'
  if (status >= 500) return 'origin server error'
  return 'unexpected status'
}

function positive (name: string, value: number): number {
  if (!(value > 0) || !Number.isFinite(value)) throw new InvalidInputError(`${name} must be a positive number, got ${value}`)
  return value
}

function positiveInteger (name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) throw new InvalidInputError(`${name} must be a positive integer, got ${value}`)
  return value
}

function nonNegativeInteger (name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 0) throw new InvalidInputError(`${name} must be a non-negative integer, got ${value}`)
  return value
}
