/** Human output: sizes, times, tables. Colour only on a TTY and never with NO_COLOR (picocolors). */
import Table from 'cli-table3'
import pc from 'picocolors'

export { pc }

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

export function time (ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z')
}

export function shortId (id: string): string {
  return id.length > 16 ? `${id.slice(0, 16)}…` : id
}

export function table (head: string[], rows: Array<Array<string | number>>): string {
  const t = new Table({ head: head.map(h => pc.bold(h)), style: { head: [], border: [] }, chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' } })
  for (const row of rows) t.push(row.map(String))
  return t.toString()
}
