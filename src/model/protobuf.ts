/**
 * A streaming protobuf wire-format reader over a {@link Cursor}: tags, varints, lengths and
 * skips, each checked against the end of the enclosing message (and so against the file size).
 *
 * Contract: nothing is buffered beyond the cursor's window; a length-delimited field is only
 * brought into memory by `string`, which takes an explicit cap; `message` visits at most
 * `maxFields` fields over the reader's life, so a file of millions of tiny fields costs bounded time. Groups (wire types 3/4) are
 * refused, as proto3/ONNX never emit them. Not a goal: decoding arbitrary messages.
 */
import { setImmediate as nextTurn } from 'node:timers/promises'
import type { Cursor } from './cursor.js'
import { malformed } from './cursor.js'

/** Fields visited between two turns given to the event loop (a tight loop when nodes are tiny). @default 65_536 */
const FIELDS_PER_TURN = 65_536

export const WIRE_VARINT = 0
export const WIRE_FIXED64 = 1
export const WIRE_LEN = 2
export const WIRE_FIXED32 = 5

const WIRE_NAMES = ['varint', 'fixed64', 'length-delimited', 'group start', 'group end', 'fixed32', 'invalid (6)', 'invalid (7)']
const utf8 = new TextDecoder('utf-8')

export interface Tag { field: number, wire: number }

export class ProtoReader {
  private fields = 0

  /** `maxFields`: most fields `message` may visit in all, skipped ones included (a bound on time). */
  constructor (readonly c: Cursor, private readonly maxFields = Number.POSITIVE_INFINITY) {}

  get pos (): number { return this.c.pos }

  fail (problem: string): never {
    throw malformed(this.c.file, problem)
  }

  /** An unsigned varint of at most 10 bytes, as a 64-bit bigint; must end before `end`. */
  async varint (end: number, what: string): Promise<bigint> {
    if (this.c.pos >= end) this.fail(`truncated varint in ${what} at offset ${this.c.pos} (message or file ends at ${end})`)
    const view = await this.c.peek(Math.min(10, end - this.c.pos), what)
    // Up to 4 bytes (28 bits) in number arithmetic: tags, lengths and counts almost always fit.
    let small = 0
    for (let i = 0; i < view.length && i < 4; i++) {
      const b = view[i] as number
      small += (b & 0x7f) * 2 ** (7 * i)
      if ((b & 0x80) === 0) { this.c.skip(i + 1, what); return BigInt(small) }
    }
    let result = 0n
    for (let i = 0; i < view.length; i++) {
      const b = view[i] as number
      result |= BigInt(b & 0x7f) << BigInt(7 * i)
      if ((b & 0x80) === 0) {
        this.c.skip(i + 1, what)
        return BigInt.asUintN(64, result)
      }
    }
    if (view.length < 10) this.fail(`truncated varint in ${what} at offset ${this.c.pos} (message or file ends at ${end})`)
    return this.fail(`varint in ${what} at offset ${this.c.pos} is longer than 10 bytes`)
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
   * Walks the fields of a message ending at `end`. `onField` returns false (or a promise of false)
   * for fields it does not handle, which are skipped.
   */
  async message (end: number, what: string, onField: (tag: Tag, end: number) => boolean | Promise<boolean>): Promise<void> {
    while (this.c.pos < end) {
      if (++this.fields > this.maxFields) this.fail(`has more than ${this.maxFields} protobuf fields (nodes, tensor fields, dims...), over the limit of ${this.maxFields}`)
      if (this.fields % FIELDS_PER_TURN === 0) await nextTurn()
      const key = this.quickVarint(end)
      const tag = key !== undefined && key >= 8 ? { field: Math.floor(key / 8), wire: key % 8 } : await this.tag(end, what)
      const handled = onField(tag, end)
      if (handled === true || (handled !== false && await handled)) continue
      // Skipping a length-delimited field (a node, a weight) is most of a graph walk: no await when its length is buffered.
      const length = tag.wire === WIRE_LEN ? this.quickVarint(end) : undefined
      if (length !== undefined) this.c.skip(length, `${what} field ${tag.field}`, end)
      else await this.skip(tag, end, `${what} field ${tag.field}`)
    }
    if (this.c.pos !== end) this.fail(`${what} overruns its declared end at ${end}`)
  }

  /**
   * The end of a length-delimited payload whose length is already buffered (consumed), or
   * undefined (nothing consumed) when it is not: a caller's way to skip an await for small fields.
   */
  quickLen (end: number, what: string): number | undefined {
    const n = this.quickVarint(end)
    if (n === undefined) return undefined
    if (n > end - this.c.pos) this.fail(`${what} at offset ${this.c.pos} is ${n} bytes long but its message ends after ${end - this.c.pos} more bytes (truncated or corrupt)`)
    return this.c.pos + n
  }

  /**
   * A varint of at most 4 bytes decoded from the cursor's buffer, consumed; undefined (nothing
   * consumed) when it is longer or not buffered yet, for `varint` to read.
   */
  private quickVarint (end: number): number | undefined {
    const view = this.c.buffered(Math.min(4, end - this.c.pos))
    let v = 0
    for (let i = 0; i < view.length; i++) {
      const b = view[i] as number
      v += (b & 0x7f) * 2 ** (7 * i)
      if ((b & 0x80) === 0) {
        this.c.pos += i + 1
        return v
      }
    }
    return undefined
  }
}
