/**
 * Reads a large JSON object (a safetensors header, a sharded index's `weight_map`) member by
 * member instead of with one `JSON.parse` of the whole text.
 *
 * `scanObject` walks the object's skeleton once — the braces, keys, colons and commas at its own
 * level, skipping over nested values by bracket depth — and records where each member's key and
 * value lie. It counts members as it goes and refuses the object as soon as there are more than the
 * caller's limit, so a header of millions of tiny entries is refused before anything is built for
 * them. The caller then parses each value on its own (`value`, `valueText`), checking its size
 * first.
 *
 * Contract:
 * - the scan decodes every key; the caller MUST parse every member's value (`value`, or `object`
 *   and then its members). Together they accept exactly the objects `JSON.parse` accepts
 *   (whitespace, strings and escapes, numbers, literals), except that a key given twice is refused
 *   rather than the last one silently winning;
 * - nesting deeper than `maxDepth` is refused during the scan, so no later step (parse, stringify)
 *   meets a deep structure;
 * - the scan gives the event loop a turn every `JSON_YIELD_CHARS` characters; callers parsing
 *   members call `breather` per member, which yields every `JSON_YIELD_MEMBERS`;
 * - every refusal is a `MalformedModelError` that names the file, the object and the problem.
 */
import { setImmediate as nextTurn } from 'node:timers/promises'
import { malformed } from './cursor.js'
import { JSON_YIELD_CHARS, JSON_YIELD_MEMBERS } from './limits.js'

export interface ScanLimits {
  /** Names the file in errors. */
  file: string
  /** Names the object in errors, e.g. `safetensors header`. */
  what: string
  maxMembers: number
  maxDepth: number
}

const QUOTE = 0x22
const BACKSLASH = 0x5c
const COLON = 0x3a
const COMMA = 0x2c
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d

function isSpace (c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09
}

/** The members of one scanned object: key and value spans in `text`, in order. */
export class ObjectScan {
  constructor (
    private readonly text: string,
    private readonly file: string,
    private readonly what: string,
    /** Per member: key start, key end, value start, value end. */
    private readonly spans: Uint32Array,
    private readonly keys: readonly string[]
  ) {}

  get count (): number { return this.keys.length }

  /** The key of member `i`, decoded. */
  key (i: number): string {
    return this.keys[i] as string
  }

  /** The JSON text of member `i`'s value. */
  valueText (i: number): string {
    return this.text.slice(this.spans[4 * i + 2], this.spans[4 * i + 3])
  }

  /** Characters in member `i`'s value. */
  valueLength (i: number): number {
    return (this.spans[4 * i + 3] as number) - (this.spans[4 * i + 2] as number)
  }

  /** The first character of member `i`'s value (`{`, `[`, `"`, a digit, ...). */
  valueStart (i: number): string {
    return this.text.charAt(this.spans[4 * i + 2] as number)
  }

  /** Member `i`'s value, parsed. Callers check `valueLength` first when the size matters. */
  value (i: number): unknown {
    const start = this.spans[4 * i + 2] as number
    return parseSlice(this.text, start, this.spans[4 * i + 3] as number, () => `${this.what} is not valid JSON: the value of ${JSON.stringify(this.key(i))} at character ${start}`, this.file)
  }

  /** Scans member `i`'s value, which must be an object, as an object of its own. */
  async object (i: number, limits: ScanLimits): Promise<ObjectScan> {
    return await scanObject(this.text, this.spans[4 * i + 2] as number, this.spans[4 * i + 3] as number, limits)
  }
}

function parseSlice (text: string, start: number, end: number, what: () => string, file: string): unknown {
  try {
    return JSON.parse(text.slice(start, end))
  } catch (err) {
    throw malformed(file, `${what()}: ${(err as Error).message}`)
  }
}

/** Counts members parsed and gives the event loop a turn every `JSON_YIELD_MEMBERS`. */
export function breather (): () => Promise<void> {
  let n = 0
  return async () => {
    if (++n % JSON_YIELD_MEMBERS === 0) await nextTurn()
  }
}

/**
 * Scans the JSON object that `text[start, end)` must hold exactly (surrounding whitespace allowed).
 * Throws `MalformedModelError` for a broken skeleton, too many members, too deep a nesting or a
 * duplicate key.
 */
export async function scanObject (text: string, start: number, end: number, limits: ScanLimits): Promise<ObjectScan> {
  const { file, what } = limits
  const fail = (problem: string): never => { throw malformed(file, `${what} ${problem}`) }
  const at = (i: number): string => i >= end ? 'at its end' : `at character ${i}`
  let spans = new Uint32Array(4 * Math.min(limits.maxMembers, 1024))
  /** Per member: 1 when its key has no escape or control character (its text is its value). */
  let plain = new Uint8Array(spans.length / 4)
  let count = 0
  let i = start
  let nextYield = start + JSON_YIELD_CHARS

  const skipSpace = (): void => { while (i < end && isSpace(text.charCodeAt(i))) i++ }
  /**
   * Moves `i` past the string that starts at `i` (on its opening quote). Returns whether it is
   * plain — no escape, no control character — so its text is its value without a parse.
   */
  const skipString = (): boolean => {
    let plain = true
    i++
    while (i < end) {
      const c = text.charCodeAt(i)
      if (c === QUOTE) { i++; return plain }
      if (c === BACKSLASH) { plain = false; i += 2 } else {
        if (c < 0x20) plain = false
        i++
      }
    }
    return fail('is not valid JSON: a string is not terminated (truncated header?)')
  }
  /** Moves `i` past the value that starts at `i`: a string, a nested object or array, or a literal. */
  const skipValue = (): void => {
    const c = text.charCodeAt(i)
    if (c === QUOTE) { skipString(); return }
    if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      let depth = 0
      while (i < end) {
        const d = text.charCodeAt(i)
        if (d === QUOTE) { skipString(); continue }
        if (d === OPEN_BRACE || d === OPEN_BRACKET) {
          // The object being scanned is level 1; its values start at level 2.
          if (++depth + 1 > limits.maxDepth) fail(`nests arrays and objects deeper than ${limits.maxDepth} levels ${at(i)}`)
        } else if (d === CLOSE_BRACE || d === CLOSE_BRACKET) {
          if (--depth === 0) { i++; return }
        }
        i++
      }
      fail('is not valid JSON: an array or object is not closed (truncated header?)')
    }
    while (i < end) {
      const d = text.charCodeAt(i)
      if (d === COMMA || d === CLOSE_BRACE || d === CLOSE_BRACKET || isSpace(d)) return
      i++
    }
  }

  skipSpace()
  if (text.charCodeAt(i) !== OPEN_BRACE || i >= end) fail(`is not a JSON object (it must start with '{'; found ${i >= end ? 'nothing' : JSON.stringify(text.charAt(i))})`)
  i++
  skipSpace()
  if (i < end && text.charCodeAt(i) === CLOSE_BRACE) {
    i++
  } else {
    for (;;) {
      if (i >= nextYield) { nextYield = i + JSON_YIELD_CHARS; await nextTurn() }
      if (i >= end || text.charCodeAt(i) !== QUOTE) fail(`is not valid JSON: expected a quoted key ${at(i)}`)
      if (count >= limits.maxMembers) fail(`has more than ${limits.maxMembers} entries, over the limit of ${limits.maxMembers}`)
      const keyStart = i
      const plainKey = skipString()
      const keyEnd = i
      skipSpace()
      if (i >= end || text.charCodeAt(i) !== COLON) fail(`is not valid JSON: expected ':' after a key ${at(i)}`)
      i++
      skipSpace()
      if (i >= end) fail('is not valid JSON: a value is missing at its end (truncated header?)')
      const valueStart = i
      skipValue()
      if (i === valueStart) fail(`is not valid JSON: a value is missing ${at(i)}`)
      if (4 * count + 4 > spans.length) {
        const grown = new Uint32Array(Math.min(spans.length * 2, 4 * limits.maxMembers))
        grown.set(spans)
        spans = grown
        const grownPlain = new Uint8Array(grown.length / 4)
        grownPlain.set(plain)
        plain = grownPlain
      }
      plain[count] = plainKey ? 1 : 0
      spans[4 * count] = keyStart
      spans[4 * count + 1] = keyEnd
      spans[4 * count + 2] = valueStart
      spans[4 * count + 3] = i
      count++
      skipSpace()
      if (i < end && text.charCodeAt(i) === COMMA) {
        i++
        skipSpace()
        continue
      }
      if (i < end && text.charCodeAt(i) === CLOSE_BRACE) { i++; break }
      fail(`is not valid JSON: expected ',' or '}' ${at(i)}`)
    }
  }
  skipSpace()
  if (i < end) fail(`is not valid JSON: unexpected ${JSON.stringify(text.charAt(i))} after the object at character ${i}`)

  const keys: string[] = []
  const seen = new Set<string>()
  const pause = breather()
  for (let m = 0; m < count; m++) {
    const keyStart = spans[4 * m] as number
    const keyEnd = spans[4 * m + 1] as number
    const key = plain[m] === 1
      ? text.slice(keyStart + 1, keyEnd - 1)
      : parseSlice(text, keyStart, keyEnd, () => `${what} is not valid JSON: the key at character ${keyStart}`, file) as string
    if (seen.has(key)) fail(`gives the key ${JSON.stringify(key)} twice; a reader could take either`)
    seen.add(key)
    keys.push(key)
    await pause()
  }
  return new ObjectScan(text, file, what, spans, keys)
}
