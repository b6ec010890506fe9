/**
 * A streaming protobuf wire-format reader over a {@link Cursor}: tags, varints, lengths and
 * skips, each checked against the end of the enclosing message (and so against the file size).
 *
 * Contract: nothing is buffered beyond the cursor's window; a length-delimited field is only
 * brought into memory by `string`, which takes an explicit cap. Groups (wire types 3/4) are
 * refused, as proto3/ONNX never emit them. Not a goal: decoding arbitrary messages.
 */
import type { Cursor } from './cursor.js'
import { malformed } from './cursor.js'

export const WIRE_VARINT = 0
export const WIRE_FIXED64 = 1
export const WIRE_LEN = 2
export const WIRE_FIXED32 = 5

const WIRE_NAMES = ['varint', 'fixed64', 'length-delimited', 'group start', 'group end', 'fixed32', 'invalid (6)', 'invalid (7)']
const utf8 = new TextDecoder('utf-8')

export interface Tag { field: number, wire: number }

export class ProtoReader {
  constructor (readonly c: Cursor) {}

  get pos (): number { return this.c.pos }

  fail (problem: string): never {
    throw malformed(this.c.file, problem)
  }

  /** An unsigned varint of at most 10 bytes, as a 64-bit bigint; must end before `end`. */
  async varint (end: number, what: string): Promise<bigint> {
    let result = 0n
    for (let i = 0; i < 10; i++) {
      if (this.c.pos >= end) this.fail(`truncated varint in ${what} at offset ${this.c.pos} (message or file ends at ${end})`)
      const b = await this.c.u8(what)
      result |= BigInt(b & 0x7f) << BigInt(7 * i)
      if ((b & 0x80) === 0) return BigInt.asUintN(64, result)
    }
    return this.fail(`varint in ${what} at offset ${this.c.pos - 10} is longer than 10 bytes`)
  }

  /** A varint-encoded int64 that must be a safe integer (negative allowed only if `signed`). */
  async int (end: number, what: string, signed = false): Promise<number> {
    const v = BigInt.asIntN(64, await this.varint(end, what))
    if ((!signed && v < 0n) || v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      this.fail(`${what} is ${v}, outside the supported range`)
    }
    return Number(v)
  }

  async tag (end: number, what: string): Promise<Tag> {
    const key = await this.varint(end, `${what} field tag`)
    const field = Number(key >> 3n)
    const wire = Number(key & 7n)
    if (field === 0 || key >> 3n > 0x1fffffffn) this.fail(`${what} has an invalid field number ${key >> 3n} at offset ${this.c.pos}`)
    return { field, wire }
  }

  /** Checks that a known field has the wire type we expect. */
  expect (tag: Tag, wire: number, what: string): void {
    if (tag.wire !== wire) this.fail(`${what} (field ${tag.field}) has wire type ${WIRE_NAMES[tag.wire] ?? tag.wire}, expected ${WIRE_NAMES[wire] ?? wire}`)
  }

  /** Reads a length prefix and returns the end offset of the payload. */
  async len (end: number, what: string): Promise<number> {
    const n = await this.varint(end, `${what} length`)
    const room = end - this.c.pos
    if (n > BigInt(room)) this.fail(`${what} at offset ${this.c.pos} is ${n} bytes long but its message ends after ${room} more bytes (truncated or corrupt)`)
    return this.c.pos + Number(n)
  }

  /** Reads a length-delimited UTF-8 string, or returns its byte length when it is over `max` (skipped). */
  async string (end: number, what: string, max: number): Promise<string | number> {
    const stop = await this.len(end, what)
    const n = stop - this.c.pos
    if (n > max) {
      this.c.skip(n, what, stop)
      return n
    }
    return utf8.decode(await this.c.bytes(n, what))
  }

  /** Skips one field of the given wire type. */
  async skip (tag: Tag, end: number, what: string): Promise<void> {
    switch (tag.wire) {
      case WIRE_VARINT: await this.varint(end, what); return
      case WIRE_FIXED64: this.c.skip(8, what, end); return
      case WIRE_FIXED32: this.c.skip(4, what, end); return
      case WIRE_LEN: { const stop = await this.len(end, what); this.c.skip(stop - this.c.pos, what, stop); return }
      default: this.fail(`${what} (field ${tag.field}) uses wire type ${WIRE_NAMES[tag.wire] ?? tag.wire}, which ONNX never writes`)
    }
  }

  /**
   * Walks the fields of a message ending at `end`. `onField` returns false for fields it does
   * not handle, which are skipped.
   */
  async message (end: number, what: string, onField: (tag: Tag, end: number) => Promise<boolean>): Promise<void> {
    while (this.c.pos < end) {
      const tag = await this.tag(end, what)
      if (!await onField(tag, end)) await this.skip(tag, end, `${what} field ${tag.field}`)
    }
    if (this.c.pos !== end) this.fail(`${what} overruns its declared end at ${end}`)
  }
}
