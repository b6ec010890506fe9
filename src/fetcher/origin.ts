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
  /** Extra attempts after a retryable failure, instead of the client's `retries`. */
  retries?: number
  /** Called before every HTTP request the call sends (retries and redirect hops included). */
  onRequest?: (url: string) => void
  /** A redirect target this refuses fails the call (`not-allowed`) before it is requested. */
  allowRedirect?: (url: string) => boolean
}

type RequestHooks = Pick<FetchRangeOptions, 'onRequest' | 'allowRedirect'>

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
    const retries = options.retries === undefined ? this.retries : nonNegativeInteger('retries', options.retries)
    const hooks: RequestHooks = { ...(options.onRequest !== undefined ? { onRequest: options.onRequest } : {}), ...(options.allowRedirect !== undefined ? { allowRedirect: options.allowRedirect } : {}) }
    const { signal, dispose } = this.linkSignal(options.signal)
    try {
      for (let attempt = 0; ; attempt++) {
        throwIfAborted(signal)
        try {
          return await this.attempt(target, offset, length, signal, 0, hooks)
        } catch (err) {
          if (signal.aborted) throw abortedError(signal)
          if (!(err instanceof OriginError) || !err.retryable || attempt >= retries) throw err
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
  private attempt (url: URL, offset: number, length: number, signal: AbortSignal, redirects: number, hooks: RequestHooks): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      const href = url.href
      hooks.onRequest?.(href)
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
          if (hooks.allowRedirect !== undefined && !hooks.allowRedirect(next.href)) {
            fail(new OriginError(`refusing a redirect to ${next.protocol}//${next.host}, which is not an allowed origin`, { reason: 'not-allowed', url: href, status }))
            return
          }
          if (!done()) return
          drain(res, this.stallTimeoutMs)
          resolve(this.attempt(next, offset, length, signal, redirects + 1, hooks))
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

/** @default 8 — failed requests to one origin in one pull before the pull stops asking it (`transfer.originMaxFailures`) */
export const DEFAULT_ORIGIN_MAX_FAILURES = 8
/** @default 1 s — wait after an origin's first failure; doubled for each failure in a row, jittered */
export const ORIGIN_BACKOFF_BASE_MS = 1_000
/** @default 60 s — longest wait between two requests to a failing origin */
export const ORIGIN_BACKOFF_MAX_MS = 60_000

export interface OriginBudgetInit {
  /** @default DEFAULT_ORIGIN_MAX_FAILURES */
  maxFailures?: number
  /** @default ORIGIN_BACKOFF_BASE_MS */
  backoffBaseMs?: number
  /** @default ORIGIN_BACKOFF_MAX_MS */
  backoffMaxMs?: number
  /** Redirect targets that may be followed (for a remote manifest: the `transfer.origins` list). */
  allowRedirect?: (url: string) => boolean
  logger?: { info: (obj: object, msg?: string) => void, debug: (obj: object, msg?: string) => void }
  now?: () => number
}

interface OriginState { requests: number, failures: number, streak: number, nextAt: number, inflight: number, succeeded: boolean }

/**
 * One pull's use of its origins, wrapped around the daemon's `OriginClient` (a decorator, as a
 * retry or rate limit wraps a backend). Per origin (scheme, host and port):
 * - it is asked one request at a time until a request succeeds, and again after every failure, so
 *   a dead or refusing origin sees one request per backoff period, never a burst;
 * - after a failure it is not asked for `backoffBaseMs × 2^(failures in a row − 1)` (capped at
 *   `backoffMaxMs`, jittered to 50–100%);
 * - after `maxFailures` failed requests (bytes that did not hash count: `refused`) it is not asked
 *   again in this pull.
 * The client's own retries are off (`retries: 0`): every retry goes through this backoff. So one
 * pull sends an origin at most `maxFailures` failing calls plus one successful call per chunk it
 * serves (a chunk that arrived is never asked again), each call at most 1 + `MAX_ORIGIN_REDIRECTS`
 * HTTP requests.
 */
export class OriginBudget {
  private readonly states = new Map<string, OriginState>()
  private readonly keys = new Map<string, string>()
  private readonly maxFailures: number
  private readonly baseMs: number
  private readonly maxMs: number

  constructor (private readonly client: Pick<OriginClient, 'fetchRange'>, private readonly init: OriginBudgetInit = {}) {
    this.maxFailures = positiveInteger('maxFailures', init.maxFailures ?? DEFAULT_ORIGIN_MAX_FAILURES)
    this.baseMs = nonNegativeInteger('backoffBaseMs', init.backoffBaseMs ?? ORIGIN_BACKOFF_BASE_MS)
    this.maxMs = nonNegativeInteger('backoffMaxMs', init.backoffMaxMs ?? ORIGIN_BACKOFF_MAX_MS)
  }

  /** Whether `url` may be asked now: its origin is neither backing off, nor given up, nor probing. */
  usable (url: string): boolean {
    const s = this.states.get(this.keyOf(url))
    if (s === undefined) return true
    if (s.failures >= this.maxFailures || this.now() < s.nextAt) return false
    return s.inflight === 0 || (s.succeeded && s.streak === 0)
  }

  /** The bytes `url` returned did not hash to the chunk: a failed request like any other. */
  refused (url: string): void {
    this.failed(this.state(this.keyOf(url)), this.keyOf(url), 'bytes that do not hash to the chunk')
  }

  /** Requests sent and failures, per origin (for logs and tests). */
  stats (): Array<{ origin: string, requests: number, failures: number }> {
    return [...this.states].map(([origin, s]) => ({ origin, requests: s.requests, failures: s.failures }))
  }

  async fetchRange (url: string, offset: number, length: number, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
    const key = this.keyOf(url)
    const s = this.state(key)
    if (!this.usable(url)) {
      throw new OriginError(s.failures >= this.maxFailures ? `origin given up for this pull after ${s.failures} failed requests` : 'origin is backing off after a failure', { reason: 'backoff', url })
    }
    s.inflight++
    try {
      const bytes = await this.client.fetchRange(url, offset, length, {
        ...(options.signal !== undefined ? { signal: options.signal } : {}),
        retries: 0,
        onRequest: () => { s.requests++ },
        ...(this.init.allowRedirect !== undefined ? { allowRedirect: this.init.allowRedirect } : {})
      })
      s.succeeded = true
      s.streak = 0
      s.nextAt = 0
      return bytes
    } catch (err) {
      if (!(err instanceof AbortedError) && options.signal?.aborted !== true) this.failed(s, key, (err as Error).message)
      throw err
    } finally {
      s.inflight--
    }
  }

  private failed (s: OriginState, key: string, why: string): void {
    s.failures++
    s.streak++
    const ceiling = Math.min(this.maxMs, this.baseMs * 2 ** (s.streak - 1))
    s.nextAt = this.now() + Math.round(ceiling * (0.5 + Math.random() / 2))
    if (s.failures === this.maxFailures) {
      this.init.logger?.info({ origin: key, failures: s.failures, requests: s.requests, err: why }, 'origin given up for this pull: too many failed requests')
    } else {
      this.init.logger?.debug({ origin: key, failures: s.failures, backoffMs: s.nextAt - this.now(), err: why }, 'origin request failed; backing off')
    }
  }

  private state (key: string): OriginState {
    let s = this.states.get(key)
    if (s === undefined) {
      s = { requests: 0, failures: 0, streak: 0, nextAt: 0, inflight: 0, succeeded: false }
      this.states.set(key, s)
    }
    return s
  }

  /** Scheme, host and port of `url` (cached: asked for every candidate piece). */
  private keyOf (url: string): string {
    let key = this.keys.get(url)
    if (key === undefined) {
      try {
        key = new URL(url).origin
      } catch {
        key = url
      }
      if (this.keys.size < 100_000) this.keys.set(url, key)
    }
    return key
  }

  private now (): number {
    return this.init.now?.() ?? Date.now()
  }
}
