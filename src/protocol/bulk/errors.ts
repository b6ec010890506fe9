/**
 * Failures of the bulk channel. Each says what happened and what the owner does about it: every
 * one of them means "send the blocks on the libp2p stream instead".
 *
 * Also thrown here, from `core/errors.ts`: `MalformedDataError` (a frame over a cap, a bad tag, a
 * truncated frame, bytes from a client after its token), `SendStalledError` (the peer stopped
 * reading), `AbortedError` (the caller's signal), `InvalidInputError` (a caller's bad argument).
 */
import { ShoalError } from '../../core/errors.js'

/**
 * The bulk channel cannot be used: the listener could not bind, an offer is over a cap, or a
 * connect failed (unreachable, refused, timed out, token refused, server busy).
 */
export class BulkUnavailableError extends ShoalError {
  readonly code = 'BULK_UNAVAILABLE'
}

/** The bulk connection closed (either side, or the service stopped) before the frame was sent. */
export class BulkClosedError extends ShoalError {
  readonly code = 'BULK_CLOSED'
}
