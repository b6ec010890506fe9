/**
 * Wire error codes of `/shoal/chunks/2.0.0`, mapped to and from errors in this one place.
 */
import { ShoalError } from '../../core/errors.js'

export const WireCode = {
  /** The server's queue for this stream is full: ask someone else or later. */
  BUSY: 'BUSY',
  /** The request was malformed (bad CID, unknown type). */
  BAD_REQUEST: 'BAD_REQUEST',
  /**
   * The chunk was just sent to another peer, which will offer it shortly: fetch it there (or
   * retry with `urgent`). Keeps a seed's upload for pieces nobody has yet (super-seeding).
   */
  DUPLICATE: 'DUPLICATE',
  /** The server failed to read its own copy. */
  INTERNAL: 'INTERNAL',
  /** The server offers no bulk connection (none configured, or past its caps): blocks stay on the stream. */
  BULK_OFF: 'BULK_OFF'
} as const

/** The peer has no verified copy of the chunk. */
export class DontHaveError extends ShoalError {
  readonly code = 'DONT_HAVE'
}

/** The peer refused or failed the request; `wireCode` says why (with DUPLICATE, `holder` says whom the chunk went to). */
export class PeerRequestError extends ShoalError {
  readonly code = 'PEER_REQUEST'
  constructor (readonly wireCode: string, message: string, readonly holder?: string) {
    super(message)
  }
}

/** The stream to the peer closed or broke while the request was pending. */
export class PeerGoneError extends ShoalError {
  readonly code = 'PEER_GONE'
}

export function fromWire (code: string, message: string, holder = ''): Error {
  return new PeerRequestError(code, `peer answered ${code}: ${message}`, holder !== '' ? holder : undefined)
}
