/**
 * Typed errors. One class per failure, each with a stable `code` that the RPC layer maps to an
 * HTTP status and the CLI to an exit code, in exactly one place each (`rpc/errors.ts`,
 * `cli/exit-codes.ts`). Tests assert on `name` or `code` to tell failures apart, and on the
 * message where a person reads it (a refusal must say what was wrong and what to do).
 */
export abstract class ShoalError extends Error {
  abstract readonly code: string
  constructor (message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
  }
}

/**
 * The same failure in other words, e.g. with what an operation did before it failed: a
 * `ShoalError` keeps its class (so its code), anything else becomes a plain `Error`.
 */
export function restated (err: unknown, message: string): Error {
  if (err instanceof ShoalError) {
    const Class = err.constructor as new (message: string, options?: { cause?: unknown }) => ShoalError
    return new Class(message, { cause: err })
  }
  return new Error(message, { cause: err })
}

/** Input that does not fit the schema or the rules (bad ref, bad path, bad metadata). */
export class InvalidInputError extends ShoalError {
  readonly code = 'INVALID_INPUT'
}

/** A command line the CLI cannot run: a bad option value or combination (exit 2). */
export class UsageError extends ShoalError {
  readonly code = 'USAGE'
}

/** A model file whose header is truncated, inconsistent or hostile. */
export class MalformedModelError extends ShoalError {
  readonly code = 'MALFORMED_MODEL'
}

/** Encoded data (a manifest, a wire message) that fails to decode or validate. */
export class MalformedDataError extends ShoalError {
  readonly code = 'MALFORMED_DATA'
}

/** Encoded data that ends before what it declares (a truncated block, a cut stream). */
export class TruncatedDataError extends MalformedDataError {}

/**
 * An encoded block that names a codec, or a codec version, this node does not know or did not
 * accept. The sender chose a codec the receiver never offered (or runs a newer shoal).
 */
export class UnknownCodecError extends MalformedDataError {}

/**
 * An encoded block that declares (or would decode to) more bytes than the receiver's bound, the
 * block size: a decompression bomb, refused before the output is allocated.
 */
export class DecodedTooLargeError extends MalformedDataError {}

/** Bytes whose digest is not the id they were stored or sent under. */
export class DigestMismatchError extends ShoalError {
  readonly code = 'DIGEST_MISMATCH'
}

export class NotFoundError extends ShoalError {
  readonly code = 'NOT_FOUND'
}

/** A compare-and-swap or uniqueness rule refused the change. */
export class ConflictError extends ShoalError {
  readonly code = 'CONFLICT'
}

/** The store or its home is in use by another process. */
export class LockedError extends ShoalError {
  readonly code = 'LOCKED'
}

/**
 * Out of disk space (ENOSPC / EDQUOT) while writing. The message says what was being written and
 * what the operation kept (nothing partial for an add; verified chunks for a pull, to resume from).
 */
export class DiskFullError extends ShoalError {
  readonly code = 'DISK_FULL'
}

/**
 * The disk failed a write for another reason than space (EIO, EROFS, or the index reporting an I/O
 * error or corruption). Like `DiskFullError`, the message says what was kept.
 */
export class StorageIoError extends ShoalError {
  readonly code = 'IO_ERROR'
}

/**
 * The peer read nothing of what this side had to send for the send-stall time (`SEND_STALL_MS`):
 * the stream or connection was closed. Thrown by the libp2p framing and by the bulk channel.
 */
export class SendStalledError extends ShoalError {
  readonly code = 'SEND_STALLED'
}

export class AbortedError extends ShoalError {
  readonly code = 'ABORTED'
  constructor (message = 'the operation was aborted', options?: { cause?: unknown }) {
    super(message, options)
  }
}

/** A signature that does not verify under the key it claims. */
export class BadSignatureError extends ShoalError {
  readonly code = 'BAD_SIGNATURE'
}

/** Signed by a key the trust rules do not allow for that model. */
export class UntrustedError extends ShoalError {
  readonly code = 'UNTRUSTED'
}

/**
 * Data over a size or count limit (a manifest with more chunks or bytes than this node accepts).
 * Not the sender's fault: the same data may be fine for a node with higher limits.
 */
export class TooLargeError extends ShoalError {
  readonly code = 'PAYLOAD_TOO_LARGE'
  constructor (message: string, readonly limit?: string, options?: { cause?: unknown }) {
    super(message, options)
  }
}

/** A pull stopped by `shoal pull --cancel`: its record and partial data are gone. */
export class PullCancelledError extends AbortedError {}

/** A pull dropped after `transfer.maxPullAttempts` failed attempts; `shoal pull` starts it afresh. */
export class PullGivenUpError extends ShoalError {
  readonly code = 'PULL_GIVEN_UP'
}

/** A byte range outside the file it asks for (HTTP 416); the message gives the file's size. */
export class RangeNotSatisfiableError extends ShoalError {
  readonly code = 'RANGE_NOT_SATISFIABLE'
  constructor (message: string, readonly size: number, options?: { cause?: unknown }) {
    super(message, options)
  }
}

/**
 * Bytes that will not arrive: the pull that was to bring them ended without them (no peer or
 * origin has them, or it failed). The message names the bytes and why.
 */
export class UnavailableError extends ShoalError {
  readonly code = 'UNAVAILABLE'
}
