/**
 * Structured logs: JSON lines on stderr (pino), one child logger per component, named
 * `shoal:<component>` (`shoal:store`, `shoal:rpc`). Components receive their logger; none creates
 * its own.
 */
import { pino, type Logger } from 'pino'

export type { Logger }

export function createLogger (level: string): Logger {
  return pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }))
}

export function componentLogger (root: Logger, component: string): Logger {
  return root.child({ component: `shoal:${component}` })
}
