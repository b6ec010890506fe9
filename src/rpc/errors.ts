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

export function toWireError (err: unknown): WireError {
  if (err instanceof ShoalError) return { code: err.code, message: err.message }
  if (err instanceof RpcError) return { code: err.code, message: err.message }
  return { code: 'INTERNAL', message: `internal error: ${(err as Error)?.message ?? String(err)}` }
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
