/**
 * Human output: sizes, times, tables. Colour only on a TTY and never with NO_COLOR or --no-color
 * (picocolors). On a terminal, tables have rules and times are relative ("3 minutes ago"); when
 * stdout is a pipe or a file, tables are plain columns and times absolute, so scripts can cut them.
 * `configureFormat` sets which, once per command line (`runCli`).
 */
import Table from 'cli-table3'
import pc from 'picocolors'

export { pc }

/** Characters of an id shown in tables (as docker's short ids). @default 12 */
export const SHORT_ID_LENGTH = 12

let terminal = false
let clock: () => number = Date.now

/** Whether stdout is a terminal (rules, relative times) and the clock relative times use. */
export function configureFormat (options: { tty: boolean, now?: () => number }): void {
  terminal = options.tty
  clock = options.now ?? Date.now
}

export function bytes (n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let value = n
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++ }
  return unit === 0 ? `${n} B` : `${value.toFixed(value >= 100 ? 0 : 1)} ${units[unit] ?? ''}`
}

export function count (n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`
  return String(n)
}

/** An absolute UTC time, to the second. */
export function absoluteTime (ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z')
}

/** A time in a table: relative on a terminal ("5 minutes ago", "in 2 hours"), else absolute. */
export function time (ms: number): string {
  return terminal ? relativeTime(ms, clock()) : absoluteTime(ms)
}

export function relativeTime (ms: number, now: number): string {
  const diff = now - ms
  const s = Math.abs(diff) / 1000
  const [n, unit] = s < 60 ? [Math.floor(s), 'second'] : s < 3600 ? [Math.floor(s / 60), 'minute'] : s < 86_400 ? [Math.floor(s / 3600), 'hour'] : s < 30 * 86_400 ? [Math.floor(s / 86_400), 'day'] : [0, '']
  if (unit === '') return absoluteTime(ms).slice(0, 10)
  if (n === 0 && unit === 'second') return 'just now'
  const text = `${n} ${unit}${n === 1 ? '' : 's'}`
  return diff >= 0 ? `${text} ago` : `in ${text}`
}

/** The first `SHORT_ID_LENGTH` characters of an id. */
export function shortId (id: string): string {
  return id.length > SHORT_ID_LENGTH ? id.slice(0, SHORT_ID_LENGTH) : id
}

export function table (head: string[], rows: Array<Array<string | number>>): string {
  if (!terminal) return plainColumns(head, rows)
  const t = new Table({ head: head.map(h => pc.bold(h)), style: { head: [], border: [] }, chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' } })
  for (const row of rows) t.push(row.map(String))
  return t.toString()
}

/** Columns separated by at least three spaces, headers in capitals, no rules (as `docker ps`). */
export function plainColumns (head: string[], rows: Array<Array<string | number>>): string {
  const all = [head.map(h => h.toUpperCase()), ...rows.map(r => r.map(String))]
  const widths = head.map((_h, i) => Math.max(...all.map(r => (r[i] ?? '').length)))
  return all.map(r => r.map((cell, i) => i === r.length - 1 ? cell : cell.padEnd((widths[i] ?? 0) + 3)).join('').trimEnd()).join('\n')
}

/** A field of a JSON row by dot path (`newest.version`); objects and arrays as JSON. */
export function field (row: unknown, path: string): string {
  let value: unknown = row
  for (const key of path.split('.')) value = value !== null && typeof value === 'object' ? (value as Record<string, unknown>)[key] : undefined
  if (value === undefined || value === null) return ''
  return typeof value === 'object' ? JSON.stringify(value) : String(value)
}

/**
 * `--format`: a template (`{{.version}} {{.size}}`, `\t` for a tab) applied to each row, or a
 * comma-separated list of fields printed as columns with a header.
 */
export function formatRows (rows: readonly unknown[], format: string): string {
  if (format.includes('{{')) {
    const template = format.replace(/\\t/g, '\t').replace(/\\n/g, '\n')
    return rows.map(r => template.replace(/\{\{\s*\.?([A-Za-z0-9_.]+)\s*\}\}/g, (_m, path: string) => field(r, path))).join('\n')
  }
  const cols = format.split(',').map(c => c.trim()).filter(c => c !== '')
  return plainColumns(cols, rows.map(r => cols.map(c => field(r, c))))
}
