/**
 * Rules for the names users and peers give us: model names, labels, file paths inside a version,
 * and refs (`name`, `name@label`, `name@<version id>`). Everything that reaches the store or the
 * file system passes through one of these checks first.
 */
import { InvalidInputError } from './errors.js'
import { isCid } from './digest.js'

/** @default 255 */
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
    throw new InvalidInputError(`invalid model name "${show(name)}": use one or two segments (org/name) of letters, digits, '.', '_' or '-', starting and ending with a letter or digit, without '--'`)
  }
  return name
}

export function checkLabel (label: string): string {
  if (!LABEL.test(label) || isCid(label)) {
    throw new InvalidInputError(`invalid label "${show(label)}": use 1-64 lower-case letters, digits, '.', '_' or '-', starting with a letter`)
  }
  return label
}

/** Folder name for a model inside `models/`: `models--org--name`, as in the Hugging Face cache. */
export function modelDirName (name: string): string {
  return `models--${checkModelName(name).replace('/', '--')}`
}

/**
 * Checks a path inside a version: relative, `/`-separated, normalised (no empty, `.` or `..`
 * components), no NUL, no backslash, no control characters, valid Unicode, within the length caps.
 * Such a path can never name anything outside the version's folder.
 */
export function checkRelativePath (path: string): string {
  const problem = relativePathProblem(path)
  if (problem !== undefined) throw new InvalidInputError(`invalid file path "${show(path)}": ${problem}`)
  return path
}

function relativePathProblem (path: string): string | undefined {
  if (path.length === 0) return 'it is empty'
  if (path.startsWith('/')) return 'absolute paths are not allowed'
  if (path.includes('\0')) return 'it contains a NUL byte'
  if (path.includes('\\')) return 'backslashes are not allowed; use /'
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(path)) return 'it contains control characters'
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
    throw new InvalidInputError(`invalid ref "${show(ref)}": after '@' give a label or a version id`)
  }
  return { name, selector }
}

export function formatRef (ref: Ref): string {
  return ref.selector === undefined ? ref.name : `${ref.name}@${ref.selector}`
}

function show (value: string): string {
  const printable = JSON.stringify(value).slice(1, -1)
  return printable.length > 120 ? `${printable.slice(0, 117)}...` : printable
}
