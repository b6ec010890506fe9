/**
 * The one source of `pull.*` events. A pull a client asked for (`via: 'request'`, reported by the
 * RPC service as it waits, or waits no more) and a followed label's pull (the activator's
 * `VersionPuller`: `pull.progress` too, at most every `PULL_PROGRESS_EVENT_MS`) each have
 * `pull.started`, then `pull.completed` or `pull.failed` (`outcome` `cancelled` for a cancelled
 * pull); a pull the `PullManager` gives up has `pull.failed` with `gaveUp`.
 *
 * MUST hold: one `pull.started` and at most one end per reported pull; `ms` runs from
 * `pull.started`; reporting never throws into the pull.
 */
import type { VersionId } from '../core/digest.js'
import { PullCancelledError } from '../core/errors.js'
import type { VersionPuller } from '../heads/activator.js'
import type { EventBus } from './events.js'
import type { PullManager } from './pulls.js'

/** @default 1 s — `pull.progress` events of a followed pull are sent at most this often */
export const PULL_PROGRESS_EVENT_MS = 1000

/** The end of a pull a client asked for, to report once. */
export interface RequestedPull {
  completed: (v: { name: string, version: VersionId }) => void
  failed: (err: unknown) => void
}

export interface PullReporterInit {
  /** Pulls followed labels' versions (unpinned). */
  pulls: Pick<PullManager, 'pull'>
  events: Pick<EventBus, 'emit'>
  /** @default Date.now */
  now?: () => number
}

export class PullReporter implements VersionPuller {
  private readonly now: () => number

  constructor (private readonly init: PullReporterInit) {
    this.now = init.now ?? Date.now
  }

  /** A client asked to pull `model` (at `version` when it named one): `pull.started` now, its end when the caller says. */
  requested (model: string, version: VersionId | null): RequestedPull {
    const started = this.now()
    const { events } = this.init
    events.emit('pull.started', { model, version, via: 'request' })
    return {
      completed: v => { events.emit('pull.completed', { model: v.name, version: v.version, via: 'request', ms: this.now() - started }) },
      failed: err => {
        const outcome = err instanceof PullCancelledError ? 'cancelled' : 'failed'
        events.emit('pull.failed', { model, version, via: 'request', outcome, ms: this.now() - started, error: (err as Error).message })
      }
    }
  }

  /** Pulls `version` for the followed label `model@label`, unpinned, reporting it. */
  async pull (model: string, label: string, version: VersionId): Promise<void> {
    const { events } = this.init
    const started = this.now()
    events.emit('pull.started', { model, label, version })
    let last = 0
    try {
      await this.init.pulls.pull(`${model}@${version}`, {
        pin: false,
        onProgress: p => {
          const now = Date.now()
          if (now - last < PULL_PROGRESS_EVENT_MS) return
          last = now
          events.emit('pull.progress', { model, version, bytes: p.bytes, totalBytes: p.totalBytes, peers: p.peers })
        }
      })
    } catch (err) {
      events.emit('pull.failed', { model, label, version, outcome: err instanceof PullCancelledError ? 'cancelled' : 'failed', ms: this.now() - started, error: (err as Error).message })
      throw err
    }
    events.emit('pull.completed', { model, label, version, ms: this.now() - started })
  }

  /** The `PullManager` gave the pull of `name@version` up after `attempts` failed attempts. */
  gaveUp (info: { name: string, version: VersionId, attempts: number, error: string, retry: string }): void {
    this.init.events.emit('pull.failed', { model: info.name, version: info.version, outcome: 'failed', gaveUp: true, attempts: info.attempts, error: info.error, retry: info.retry })
  }
}
