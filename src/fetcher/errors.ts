/**
 * Typed errors of the fetcher. Like every `ShoalError`, each carries a stable `code`; tests
 * assert on `name`, `code` and the structured fields, never on message text.
 */
import { ShoalError } from '../core/errors.js'

/**
 * Why an origin (web seed) request failed:
 * - `status`: the server answered with an HTTP status we cannot use (4xx, 5xx, unexpected 2xx/3xx);
 * - `timeout`: no response headers within the deadline, or the body stalled;
 * - `network`: the connection failed or closed before the body was complete;
 * - `protocol`: the server answered but broke the contract (wrong `Content-Range`, a 200 for a
 *   range it did not send exactly, more or fewer bytes than asked, an encoded body);
 * - `redirect`: too many redirects, or a redirect without a usable `Location`;
 * - `unsupported-url`: not an absolute `http:` or `https:` URL (also for redirect targets);
 * - `not-allowed`: a redirect to a URL the caller does not allow (off the `transfer.origins` list);
 * - `backoff`: not asked at all: the origin failed recently (exponential backoff) or too often in
 *   this pull (`OriginBudget`).
 */
export type OriginErrorReason = 'status' | 'timeout' | 'network' | 'protocol' | 'redirect' | 'unsupported-url' | 'not-allowed' | 'backoff'

/**
 * An origin could not serve a byte range. `retryable` is true for failures worth another attempt
 * against the same origin (network errors, timeouts, truncated bodies, 5xx); the client has already
 * spent its retries by the time a caller sees it, so callers move on to another source.
 */
export class OriginError extends ShoalError {
  readonly code = 'ORIGIN_ERROR'
  readonly reason: OriginErrorReason
  readonly url: string
  /** The HTTP status when the server answered with one. */
  readonly status: number | undefined
  readonly retryable: boolean

  constructor (message: string, init: { reason: OriginErrorReason, url: string, status?: number, retryable?: boolean, cause?: unknown }) {
    const status = init.status === undefined ? '' : ` (HTTP ${init.status})`
    super(`${message}${status}: ${redactUrl(init.url)}`, { cause: init.cause })
    this.reason = init.reason
    this.url = init.url
    this.status = init.status
    this.retryable = init.retryable ?? false
  }
}

/** The URL without credentials or query string (which often carry signed tokens), for messages. */
function redactUrl (url: string): string {
  try {
    const u = new URL(url)
    return `${u.protocol}//${u.host}${u.pathname}${u.search === '' ? '' : '?…'}`
  } catch {
    return url.length > 200 ? `${url.slice(0, 200)}…` : url
  }
}
