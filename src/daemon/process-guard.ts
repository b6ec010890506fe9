/**
 * What the daemon process does with a failure nothing else caught. Installed by
 * `Daemon.runUntilSignalled` (the `shoal daemon` process), never by daemons embedded in another
 * process (tests, benchmarks), whose host decides.
 *
 * - An unhandled promise rejection is a failure in one piece of work that nobody awaited (a
 *   background refresh, a fire-and-forget write). It is logged at `error` with its stack and
 *   counted (`shoal_unhandled_rejections_total`), and the daemon keeps running: every write the
 *   store makes is crash-safe on its own (`docs/ARCHITECTURE.md`, "Write order and crash safety"),
 *   so one lost piece of work leaves nothing half-written that stopping would repair, while
 *   stopping would end every pull, stream and lease of the node. Node's default (exit at once)
 *   would take the node off the fleet for what is usually a bug in one path.
 * - An uncaught exception unwound a stack in the middle of something: the state in memory may be
 *   inconsistent (a lock held, a counter not decremented). It is logged at `fatal` with its stack,
 *   the daemon is stopped cleanly (RPC closed, pulls flushed, index closed) within
 *   `CRASH_STOP_DEADLINE_MS`, and the process exits with `CRASH_EXIT_CODE`, so a supervisor
 *   restarts it and start-up repairs what needs it. A second one while stopping exits at once.
 *
 * The process never ends silently: every exit of this kind is preceded by a `fatal` line.
 */
import type { Logger } from './logger.js'

/** @default 70 — EX_SOFTWARE (sysexits.h): the daemon stopped after an uncaught exception */
export const CRASH_EXIT_CODE = 70
/** @default 10 s — longest the clean stop after an uncaught exception may take before the exit */
export const CRASH_STOP_DEADLINE_MS = 10_000

export interface ProcessGuardOptions {
  log: Pick<Logger, 'error' | 'fatal'>
  /** Counts an unhandled rejection (the metric). */
  onRejection?: () => void
  /** Stops the daemon cleanly; called at most once. */
  stop: () => Promise<void>
  /** @default process.exit */
  exit?: (code: number) => void
  /** Where the events come from. @default process */
  target?: Pick<NodeJS.Process, 'on' | 'off'>
  /** @default CRASH_STOP_DEADLINE_MS */
  stopDeadlineMs?: number
}

/** Installs the handlers; returns their removal. */
export function guardProcess (options: ProcessGuardOptions): () => void {
  const target = options.target ?? process
  const exit = options.exit ?? ((code: number) => process.exit(code))
  let stopping = false
  const onRejection = (reason: unknown): void => {
    options.onRejection?.()
    options.log.error({ err: asError(reason) }, 'unhandled promise rejection: that piece of work failed; the daemon keeps running')
  }
  const onException = (err: Error): void => {
    if (stopping) {
      options.log.fatal({ err }, 'uncaught exception while stopping after another: exiting now')
      exit(CRASH_EXIT_CODE)
      return
    }
    stopping = true
    options.log.fatal({ err }, 'uncaught exception: state may be inconsistent; stopping the daemon and exiting')
    const deadline = options.stopDeadlineMs ?? CRASH_STOP_DEADLINE_MS
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<void>(resolve => { timer = setTimeout(() => { options.log.fatal({ deadlineMs: deadline }, 'the stop after an uncaught exception is taking too long: exiting'); resolve() }, deadline) })
    void Promise.race([options.stop().catch(stopErr => { options.log.fatal({ err: asError(stopErr) }, 'the stop after an uncaught exception failed') }), timedOut])
      .finally(() => {
        clearTimeout(timer)
        exit(CRASH_EXIT_CODE)
      })
  }
  target.on('unhandledRejection', onRejection)
  target.on('uncaughtException', onException)
  return () => {
    target.off('unhandledRejection', onRejection)
    target.off('uncaughtException', onException)
  }
}

function asError (reason: unknown): Error {
  return reason instanceof Error ? reason : new Error(`a promise was rejected with a non-error: ${String(reason)}`)
}
