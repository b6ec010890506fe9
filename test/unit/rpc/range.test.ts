/**
 * `Range` on file reads (`rpc/range.ts`): the three forms of one byte range, clipped to the file;
 * refusals that say what was asked and the file's size (416 outside the file, 400 for a header
 * that is not one byte range); and the header the client sends for `[start, end)`.
 */
import { describe, expect, it } from 'vitest'
import { InvalidInputError, RangeNotSatisfiableError } from '../../../src/core/errors.js'
import { contentRange, MAX_RANGE_HEADER_LENGTH, parseRange, rangeHeader } from '../../../src/rpc/range.js'

function refusal (header: string, size: number): Error {
  try {
    parseRange(header, size)
  } catch (err) {
    return err as Error
  }
  throw new Error(`${header} was accepted`)
}

describe('parseRange', () => {
  it('takes the whole file without a header, and each form of one range, clipped to the file', () => {
    expect(parseRange(undefined, 100)).toEqual({ start: 0, end: 100, partial: false })
    expect(parseRange('bytes=0-9', 100)).toEqual({ start: 0, end: 10, partial: true })
    expect(parseRange('bytes=90-', 100)).toEqual({ start: 90, end: 100, partial: true })
    expect(parseRange('bytes=-10', 100)).toEqual({ start: 90, end: 100, partial: true })
    expect(parseRange('bytes=50-5000', 100)).toEqual({ start: 50, end: 100, partial: true })
    expect(parseRange('bytes=-5000', 100)).toEqual({ start: 0, end: 100, partial: true })
    expect(parseRange('Bytes = 3 - 3', 100)).toEqual({ start: 3, end: 4, partial: true })
  })

  it('refuses a range outside the file with 416, naming the range and the size', () => {
    const past = refusal('bytes=100-200', 100)
    expect(past).toBeInstanceOf(RangeNotSatisfiableError)
    expect(past.message).toBe('bytes=100-200 starts at byte 100, past the end; the file is 100 bytes (bytes 0-99)')
    expect((past as RangeNotSatisfiableError).size).toBe(100)
    expect(refusal('bytes=-0', 100).message).toBe('bytes=-0 asks for the last 0 bytes; the file is 100 bytes (bytes 0-99)')
    expect(refusal('bytes=0-', 0).message).toBe('bytes=0- starts at byte 0, past the end; the file is empty')
    expect(refusal('bytes=-1', 0)).toBeInstanceOf(RangeNotSatisfiableError)
  })

  it('refuses what is not one byte range with 400, saying what to send', () => {
    for (const [header, message] of [
      ['items=0-9', 'Range "items=0-9" is not a byte range; ask for one such as bytes=0-1023, bytes=1024- or bytes=-512'],
      ['bytes=a-b', 'Range "bytes=a-b" is not a byte range; ask for one such as bytes=0-1023, bytes=1024- or bytes=-512'],
      ['bytes=-', 'Range "bytes=-" is not a byte range; ask for one such as bytes=0-1023, bytes=1024- or bytes=-512'],
      ['bytes=0-9,20-29', 'Range "bytes=0-9,20-29" asks for several ranges; ask for one at a time'],
      ['bytes=9-0', 'Range "bytes=9-0" ends before it starts; the last byte comes second (bytes=first-last)'],
      // Past 16 digits a number is not looked at (beyond Number.MAX_SAFE_INTEGER).
      ['bytes=12345678901234567-', 'Range "bytes=12345678901234567-" is not a byte range; ask for one such as bytes=0-1023, bytes=1024- or bytes=-512']
    ] as const) {
      const err = refusal(header, 100)
      expect(err, header).toBeInstanceOf(InvalidInputError)
      expect(err.message).toBe(message)
    }
    const long = `bytes=0-${'0'.repeat(MAX_RANGE_HEADER_LENGTH)}`
    expect(refusal(long, 100).message).toBe(`the Range header is ${long.length} characters, over ${MAX_RANGE_HEADER_LENGTH}; ask for one range such as bytes=0-1023`)
    expect(() => parseRange(['bytes=0-1', 'bytes=2-3'], 100)).toThrow('give one Range header, not several')
  })

  it('writes Content-Range for 206 and 416', () => {
    expect(contentRange({ start: 0, end: 10 }, 100)).toBe('bytes 0-9/100')
    expect(contentRange(undefined, 100)).toBe('bytes */100')
  })
})

describe('rangeHeader', () => {
  it('asks for [start, end) with an inclusive last byte, nothing for the whole file', () => {
    expect(rangeHeader()).toBeUndefined()
    expect(rangeHeader(0, 10)).toBe('bytes=0-9')
    expect(rangeHeader(5)).toBe('bytes=5-')
    expect(() => rangeHeader(5, 5)).toThrow('end 5 must be a whole number past start (5): it is the first byte not read')
    expect(() => rangeHeader(-1)).toThrow('start -1 must be a whole number of 0 or more')
  })
})
