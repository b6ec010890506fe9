/**
 * Rules for the names users and peers give us: model names, labels, file paths inside a version,
 * and refs (`name`, `name@label`, `name@<version id>`). Everything that reaches the store or the
 * file system passes through one of these checks first.
 *
 * No name or path may hold a character that displays as something other than what it is
 * (`unsafeCharacter`): controls, bidirectional controls that reorder the text around them
 * (`evil\u202Egpj.exe` shows as `evilexe.jpg`), and invisible format characters (zero-width
 * spaces and joiners, the byte-order mark, tag characters). A refusal names the code point, and
 * every message that repeats a name shows such characters escaped (`printable`), never raw.
 */
import { InvalidInputError } from './errors.js'
import { isCid } from './digest.js'

/**
 * Characters refused in names and paths: C0 and C1 controls and DEL (`Cc`), Unicode format
 * characters (`Cf`: bidirectional controls, zero-width spaces and joiners, the byte-order mark,
 * the soft hyphen, interlinear annotations, tag characters, ...), the line and paragraph
 * separators, and the Hangul fillers that render as nothing.
 */
const UNSAFE = /[\p{Cc}\p{Cf}\u2028\u2029\u115f\u1160\u3164\uffa0]/u
const UNSAFE_ALL = new RegExp(UNSAFE.source, 'gu')

/** The bidirectional controls: each reorders how the text after it is displayed. */
const BIDI: Readonly<Record<number, string>> = {
  0x061c: 'ARABIC LETTER MARK',
  0x200e: 'LEFT-TO-RIGHT MARK',
  0x200f: 'RIGHT-TO-LEFT MARK',
  0x202a: 'LEFT-TO-RIGHT EMBEDDING',
  0x202b: 'RIGHT-TO-LEFT EMBEDDING',
  0x202c: 'POP DIRECTIONAL FORMATTING',
  0x202d: 'LEFT-TO-RIGHT OVERRIDE',
  0x202e: 'RIGHT-TO-LEFT OVERRIDE',
  0x2066: 'LEFT-TO-RIGHT ISOLATE',
  0x2067: 'RIGHT-TO-LEFT ISOLATE',
  0x2068: 'FIRST STRONG ISOLATE',
  0x2069: 'POP DIRECTIONAL ISOLATE'
}

const INVISIBLE: Readonly<Record<number, string>> = {
  0x00ad: 'SOFT HYPHEN',
  0x200b: 'ZERO WIDTH SPACE',
  0x200c: 'ZERO WIDTH NON-JOINER',
  0x200d: 'ZERO WIDTH JOINER',
  0x2028: 'LINE SEPARATOR',
  0x2029: 'PARAGRAPH SEPARATOR',
  0x2060: 'WORD JOINER',
  0xfeff: 'ZERO WIDTH NO-BREAK SPACE (byte-order mark)'
}

function codePoint (cp: number): string {
  return `U+${cp.toString(16).toUpperCase().padStart(4, '0')}`
}

/**
 * The first character of `text` that no name or path may hold, described for a person
 * (`U+202E RIGHT-TO-LEFT OVERRIDE, a bidirectional control ...`), or undefined when there is none.
 */
export function unsafeCharacter (text: string): string | undefined {
  const found = UNSAFE.exec(text)
  if (found === null) return undefined
  const cp = found[0].codePointAt(0) as number
  const bidi = BIDI[cp]
  if (bidi !== undefined) return `${codePoint(cp)} ${bidi}, a bidirectional control character that makes text display in a different order than it is stored`
  const invisible = INVISIBLE[cp]
  if (invisible !== undefined) return `${codePoint(cp)} ${invisible}, an invisible character`
  if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) return `${codePoint(cp)}, a control character`
  return `${codePoint(cp)}, an invisible formatting character`
}

/** `text` with every character `unsafeCharacter` would refuse written as `\uXXXX` (or `\u{XXXXX}`). */
export function escapeUnsafe (text: string): string {
  return text.replace(UNSAFE_ALL, c => {
    const cp = c.codePointAt(0) as number
    return cp > 0xffff ? `\\u{${cp.toString(16)}}` : `\\u${cp.toString(16).padStart(4, '0')}`
  })
}

/**
 * `text` as it may appear in a message: quotes and backslashes JSON-escaped, unsafe characters
 * escaped (`escapeUnsafe`), at most 120 characters.
 */
export function printable (text: string): string {
  const escaped = escapeUnsafe(JSON.stringify(text).slice(1, -1))
  return escaped.length > 120 ? `${escaped.slice(0, 117)}...` : escaped
}

/** @default 96 — characters of one segment of a model name */
export const MAX_NAME_SEGMENT = 96
/** @default 4096 — bytes of a relative path inside a version */
export const MAX_PATH_BYTES = 4096
/** @default 255 — bytes of one path component (the usual file-system limit) */
export const MAX_PATH_COMPONENT_BYTES = 255

const NAME_SEGMENT = /^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$/
const LABEL = /^[a-z][a-z0-9._-]{0,63}$/

/**
 * A model name is one or two segments (`llama-8b`, `org/llama-8b`) of letters, digits, `.`, `_`,
 * `-`, starting and ending with a letter or digit, without `--` or `..` (so the on-disk folder name
 * `models--org--llama-8b` stays unambiguous, as in the Hugging Face cache).
 */
export function checkModelName (name: string): string {
  const segments = name.split('/')
  const ok = segments.length <= 2 && segments.every(s => s.length <= MAX_NAME_SEGMENT && NAME_SEGMENT.test(s) && !s.includes('--') && !s.includes('..'))
  if (!ok) {
    throw new InvalidInputError(`invalid model name "${printable(name)}": ${containing(name)}use one or two segments (org/name) of letters, digits, '.', '_' or '-', starting and ending with a letter or digit, without '--'`)
  }
  return name
}

export function checkLabel (label: string): string {
  if (!LABEL.test(label) || isCid(label)) {
    throw new InvalidInputError(`invalid label "${printable(label)}": ${containing(label)}use 1-64 lower-case letters, digits, '.', '_' or '-', starting with a letter`)
  }
  return label
}

/** `it contains <character>; ` when `text` holds one `unsafeCharacter` refuses, else nothing. */
function containing (text: string): string {
  const unsafe = unsafeCharacter(text)
  return unsafe === undefined ? '' : `it contains ${unsafe}; `
}

/** Folder name for a model inside `models/`: `models--org--name`, as in the Hugging Face cache. */
export function modelDirName (name: string): string {
  return `models--${checkModelName(name).replace('/', '--')}`
}

/**
 * Checks a path inside a version: relative, `/`-separated, normalised (no empty, `.` or `..`
 * components), no NUL, no backslash, no control, bidirectional or invisible format character
 * (`unsafeCharacter`), valid Unicode, within the length caps. Such a path can never name anything
 * outside the version's folder, and displays as what it is.
 */
export function checkRelativePath (path: string): string {
  const problem = relativePathProblem(path)
  if (problem !== undefined) throw new InvalidInputError(`invalid file path "${printable(path)}": ${problem}`)
  return path
}

function relativePathProblem (path: string): string | undefined {
  if (path.length === 0) return 'it is empty'
  if (path.startsWith('/')) return 'absolute paths are not allowed'
  if (path.includes('\0')) return 'it contains a NUL byte'
  if (path.includes('\\')) return 'backslashes are not allowed; use /'
  const unsafe = unsafeCharacter(path)
  if (unsafe !== undefined) return `it contains ${unsafe}; rename it`
  if (Buffer.from(path, 'utf8').toString('utf8') !== path) return 'it is not valid Unicode (lone surrogate)'
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) return `it is longer than ${MAX_PATH_BYTES} bytes`
  for (const part of path.split('/')) {
    if (part === '') return 'it has an empty component (// or a trailing /)'
    if (part === '.' || part === '..') return `'${part}' components are not allowed`
    if (Buffer.byteLength(part) > MAX_PATH_COMPONENT_BYTES) return `a component is longer than ${MAX_PATH_COMPONENT_BYTES} bytes`
  }
  return undefined
}

export interface Ref {
  name: string
  /** Label, version id, or version id prefix; absent means the newest version. */
  selector?: string
}

/** Parses `name`, `name@label`, `name@<version id or unique prefix>`. */
export function parseRef (ref: string): Ref {
  if (typeof ref !== 'string' || ref.length === 0 || ref.length > 512) {
    throw new InvalidInputError('a ref is name, name@label or name@<version id>')
  }
  const at = ref.lastIndexOf('@')
  if (at < 0) return { name: checkModelName(ref) }
  const name = checkModelName(ref.slice(0, at))
  const selector = ref.slice(at + 1)
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(selector)) {
    throw new InvalidInputError(`invalid ref "${printable(ref)}": ${containing(selector)}after '@' give a label or a version id`)
  }
  return { name, selector }
}

export function formatRef (ref: Ref): string {
  return ref.selector === undefined ? ref.name : `${ref.name}@${ref.selector}`
}
