/**
 * HTTP `Range` requests on file reads (RFC 9110 §14): one range of bytes, in any of its three forms
 * — `bytes=first-last`, `bytes=first-` (to the end), `bytes=-suffix` (the last bytes) — and the
 * headers of the answer.
 *
 * MUST hold: what `parseRange` returns lies inside the file (`0 ≤ start < end ≤ size`), or the
 * whole file when no range was asked; anything else is refused before a byte is read, with a
 * message that says what was asked and the file's size. The header text is bounded before it is
 * looked at (`MAX_RANGE_HEADER_LENGTH`) and its numbers before they are converted.
 *
 * Not a goal: several ranges in one request (multipart/byteranges): refused, ask for them one at
 * a time. `If-Range` is not needed: a version's files never change, so the validator always holds.
 */
import { InvalidInputError, RangeNotSatisfiableError } from '../core/errors.js'

/** @default 256 — characters of a `Range` header looked at; one range needs under 40 */
export const MAX_RANGE_HEADER_LENGTH = 256

/** A span of a file: `[start, end)`. */
export interface ByteSpan { start: number, end: number }

/**
 * The bytes a `Range` header asks of a file of `size` bytes: `partial` is false for the whole file
 * (no header), true for a range (answered 206).
 * @throws RangeNotSatisfiableError (416) for a range outside the file
 * @throws InvalidInputError (400) for a header that is not one byte range
 */
export function parseRange (header: string | string[] | undefined, size: number): ByteSpan & { partial: boolean } {
  if (header === undefined) return { start: 0, end: size, partial: false }
  if (Array.isArray(header)) throw new InvalidInputError('give one Range header, not several')
  const text = header.trim()
  if (text.length > MAX_RANGE_HEADER_LENGTH) throw new InvalidInputError(`the Range header is ${text.length} characters, over ${MAX_RANGE_HEADER_LENGTH}; ask for one range such as bytes=0-1023`)
  const m = /^bytes[ \t]*=[ \t]*(.*)$/i.exec(text)
  if (m === null) throw new InvalidInputError(`Range ${JSON.stringify(text)} is not a byte range; ask for one such as bytes=0-1023, bytes=1024- or bytes=-512`)
  const spec = (m[1] ?? '').trim()
  if (spec.includes(',')) throw new InvalidInputError(`Range ${JSON.stringify(text)} asks for several ranges; ask for one at a time`)
  const parts = /^(\d{0,16})[ \t]*-[ \t]*(\d{0,16})$/.exec(spec)
  if (parts === null || (parts[1] === '' && parts[2] === '')) throw new InvalidInputError(`Range ${JSON.stringify(text)} is not a byte range; ask for one such as bytes=0-1023, bytes=1024- or bytes=-512`)
  const [, first, last] = parts as unknown as [string, string, string]
  const unsatisfiable = (why: string): RangeNotSatisfiableError => new RangeNotSatisfiableError(`${text} ${why}; ${size === 0 ? 'the file is empty' : `the file is ${size} bytes (bytes 0-${size - 1})`}`, size)
  if (first === '') {
    const suffix = Number(last)
    if (suffix === 0) throw unsatisfiable('asks for the last 0 bytes')
    if (size === 0) throw unsatisfiable('asks for bytes of an empty file')
    return { start: Math.max(0, size - suffix), end: size, partial: true }
  }
  const start = Number(first)
  if (start >= size) throw unsatisfiable(`starts at byte ${start}, past the end`)
  if (last === '') return { start, end: size, partial: true }
  const end = Number(last)
  if (end < start) throw new InvalidInputError(`Range ${JSON.stringify(text)} ends before it starts; the last byte comes second (bytes=first-last)`)
  return { start, end: Math.min(size, end + 1), partial: true }
}

/** `Content-Range` of a 206 answer (`bytes first-last/size`), or of a 416 (`bytes *\/size`). */
export function contentRange (span: ByteSpan | undefined, size: number): string {
  return span === undefined ? `bytes */${size}` : `bytes ${span.start}-${span.end - 1}/${size}`
}

/** The `Range` header of `[start, end)` (`end` exclusive, as in `Blob.slice`), or undefined for the whole file. */
export function rangeHeader (start = 0, end?: number): string | undefined {
  if (!Number.isSafeInteger(start) || start < 0) throw new InvalidInputError(`start ${start} must be a whole number of 0 or more`)
  if (end !== undefined && (!Number.isSafeInteger(end) || end <= start)) throw new InvalidInputError(`end ${end} must be a whole number past start (${start}): it is the first byte not read`)
  if (start === 0 && end === undefined) return undefined
  return `bytes=${start}-${end === undefined ? '' : end - 1}`
}
