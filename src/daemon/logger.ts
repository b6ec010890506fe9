/**
 * Structured logs on stderr (pino), one child logger per component, named `shoal:<component>`
 * (`shoal:store`, `shoal:rpc`). Components receive their logger; none creates its own.
 *
 * Format: JSON lines, except when stderr is a terminal, where each record is one readable line
 * (`prettyLine`: time, level, component, message, then key=value fields; a stack on the lines
 * after). `SHOAL_LOG_FORMAT=json|pretty` chooses either way. Colour only on a terminal, never with
 * `NO_COLOR`.
 */
import { writeSync } from 'node:fs'
import { pino, type Logger } from 'pino'

export type { Logger }

export type LogFormat = 'json' | 'pretty'

/** `SHOAL_LOG_FORMAT` when set to json or pretty, else pretty on a terminal and JSON otherwise. */
export function logFormat (env: NodeJS.ProcessEnv = process.env, stderrTTY = process.stderr.isTTY === true): LogFormat {
  const chosen = env.SHOAL_LOG_FORMAT
  if (chosen === 'json' || chosen === 'pretty') return chosen
  return stderrTTY ? 'pretty' : 'json'
}

export function createLogger (level: string, format: LogFormat = logFormat()): Logger {
  if (format === 'json') return pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }))
  const color = process.stderr.isTTY === true && (process.env.NO_COLOR ?? '') === ''
  return pino({ level, base: { pid: process.pid } }, {
    write (line: string) {
      let record: Record<string, unknown>
      try {
        record = JSON.parse(line) as Record<string, unknown>
      } catch {
        writeSync(2, line)
        return
      }
      writeSync(2, `${prettyLine(record, color)}\n`)
    }
  })
}

export function componentLogger (root: Logger, component: string): Logger {
  return root.child({ component: `shoal:${component}` })
}

const LEVELS: Record<number, { name: string, color: string }> = {
  10: { name: 'TRACE', color: '\x1b[90m' },
  20: { name: 'DEBUG', color: '\x1b[36m' },
  30: { name: 'INFO ', color: '\x1b[32m' },
  40: { name: 'WARN ', color: '\x1b[33m' },
  50: { name: 'ERROR', color: '\x1b[31m' },
  60: { name: 'FATAL', color: '\x1b[35m' }
}
const HIDDEN = new Set(['level', 'time', 'pid', 'hostname', 'msg', 'component'])

/**
 * One pino record as a line a person reads: `09:14:03.120 INFO  shoal:rpc  message key=value …`,
 * values JSON-quoted only when they need it; an `err` object's stack (or message) on the lines after.
 */
export function prettyLine (record: Record<string, unknown>, color = false): string {
  const level = LEVELS[Number(record.level)] ?? { name: String(record.level).toUpperCase().padEnd(5), color: '' }
  const time = typeof record.time === 'number' ? new Date(record.time).toISOString().slice(11, 23) : ''
  const paint = (code: string, text: string): string => color ? `${code}${text}\x1b[0m` : text
  const fields: string[] = []
  let stack: string | undefined
  for (const [key, value] of Object.entries(record)) {
    if (HIDDEN.has(key)) continue
    if (key === 'err' && value !== null && typeof value === 'object') {
      const e = value as { message?: unknown, stack?: unknown }
      stack = typeof e.stack === 'string' ? e.stack : undefined
      fields.push(`err=${show(e.message ?? value)}`)
      continue
    }
    fields.push(`${key}=${show(value)}`)
  }
  const component = typeof record.component === 'string' ? `${paint('\x1b[1m', record.component)} ` : ''
  const head = `${paint('\x1b[90m', time)} ${paint(level.color, level.name)} ${component}${String(record.msg ?? '')}`
  const line = fields.length > 0 ? `${head} ${paint('\x1b[90m', fields.join(' '))}` : head
  return stack !== undefined ? `${line}\n${stack.split('\n').map(l => `    ${l.trim()}`).join('\n')}` : line
}

function show (value: unknown): string {
  if (typeof value === 'string') return /^[\w.:/@+-]+$/.test(value) ? value : JSON.stringify(value)
  return JSON.stringify(value) ?? String(value)
}
