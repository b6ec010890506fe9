/** Times and durations typed by operators: `30s`, `10m`, `2h`, `1d`, `+10m`, ISO 8601. */
import { InvalidArgumentError } from 'commander'

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** `500ms`, `30s`, `10m`, `2h`, `1d`, or a plain number of seconds → milliseconds. */
export function parseDuration (text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim())
  if (m === null) throw new InvalidArgumentError(`"${text}" is not a duration; use e.g. 30s, 10m, 2h`)
  return Math.round(Number(m[1]) * (UNITS[m[2] ?? 's'] ?? 1000))
}

/** `+10m` (from now) or an ISO 8601 time → milliseconds since the epoch. */
export function parseTime (text: string, now = Date.now()): number {
  if (text.startsWith('+')) return now + parseDuration(text.slice(1))
  const t = Date.parse(text)
  if (Number.isNaN(t)) throw new InvalidArgumentError(`"${text}" is not a time; use ISO 8601 (2026-12-01T09:00:00Z) or +10m`)
  return t
}
