/**
 * Error codes ↔ HTTP statuses, in one place. The server answers every failure with
 * `{ code, message }`; the client turns that back into a `RpcError` carrying the same code.
 */
import { ShoalError } from '../core/errors.js'

const STATUS: Record<string, number> = {
  INVALID_INPUT: 400,
  BAD_REQUEST: 400,
  MALFORMED_MODEL: 422,
  MALFORMED_DATA: 422,
  BAD_SIGNATURE: 422,
  UNTRUSTED: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  LOCKED: 423,
  PAYLOAD_TOO_LARGE: 413,
  METHOD_NOT_ALLOWED: 405,
  UNAUTHORIZED: 401,
  REQUEST_TIMEOUT: 408,
  HEADERS_TOO_LARGE: 431,
  EXPECTATION_FAILED: 417,
  RANGE_NOT_SATISFIABLE: 416,
  UNAVAILABLE: 504,
  BUSY: 503,
  DIGEST_MISMATCH: 500,
  DISK_FULL: 507,
  IO_ERROR: 500,
  ABORTED: 499,
  INTERNAL: 500
}

export function statusOf (code: string): number {
  return STATUS[code] ?? 500
}

export interface WireError { code: string, message: string }

/** The wire form of any thrown value; never throws itself (a value that cannot be described is INTERNAL). */
export function toWireError (err: unknown): WireError {
  try {
    if (err instanceof ShoalError || err instanceof RpcError) return { code: String(err.code), message: String(err.message) }
    return { code: 'INTERNAL', message: `internal error: ${String((err as Error)?.message ?? err)}` }
  } catch {
    return { code: 'INTERNAL', message: 'internal error (the failure could not be described)' }
  }
}

/** A failure reported by the daemon, or the daemon being unreachable (`code` `UNREACHABLE`). */
export class RpcError extends Error {
  constructor (readonly code: string, message: string, readonly status?: number) {
    super(message)
    this.name = 'RpcError'
  }
}

export class PayloadTooLargeError extends ShoalError {
  readonly code = 'PAYLOAD_TOO_LARGE'
}

/** The daemon is at one of its RPC bounds (`rpc/limits.ts`); the same request later will do. */
export class BusyError extends ShoalError {
  readonly code = 'BUSY'
}

/** A request that is not HTTP the server can read (bad request line, headers or chunked framing). */
export class BadRequestError extends ShoalError {
  readonly code = 'BAD_REQUEST'
}

/** A request line and headers over `MAX_HEADER_BYTES` or `MAX_HEADER_COUNT`. */
export class HeadersTooLargeError extends ShoalError {
  readonly code = 'HEADERS_TOO_LARGE'
}

/** A request whose headers or body did not arrive within their deadlines (`rpc/limits.ts`). */
export class RequestTimeoutError extends ShoalError {
  readonly code = 'REQUEST_TIMEOUT'
}
