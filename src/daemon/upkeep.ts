/**
 * Store upkeep while the daemon runs: the disk quota (`store.quota`: least-recently-used
 * unprotected versions removed until under it) and idle compression (`store.compress`: versions
 * nothing has needed for `compressAfter` compressed, least recently used first). Each runs every
 * `QUOTA_CHECK_INTERVAL_MS` / `COMPRESS_CHECK_INTERVAL_MS` and after every label switch.
 *
 * MUST hold: one pass of each at a time (a pass asked for while one runs is dropped: the next
 * look catches up); a version a lease holds is never removed; a failed pass is logged and the
 * daemon goes on. Off when its setting is unset.
 */
import type { Startable } from '@libp2p/interface'
import type { VersionId } from '../core/digest.js'
import { ConflictError } from '../core/errors.js'
import { coldCandidates, compressVersion } from '../store/cold.js'
import { collectGarbage } from '../store/gc.js'
import type { Store } from '../store/store.js'
import type { EventBus } from './events.js'
import type { Logger } from './logger.js'

/** @default 60 s — how often the disk quota is checked (also after every label switch) */
export const QUOTA_CHECK_INTERVAL_MS = 60_000
/** @default 60 s — how often `store.compress` looks for versions to compress (and after every label switch) */
export const COMPRESS_CHECK_INTERVAL_MS = 60_000

export interface StoreUpkeepInit {
  store: Store
  /** `store.quota` in bytes; unset: no quota. */
  quotaBytes?: number
  /** `store.compressAfter` in ms when `store.compress` is on; unset: no compression. */
  compressAfterMs?: number
  /** `labels.keep`: versions kept per label for rollback. */
  keepLast: number
  /** Versions leases hold now (never removed by the quota). */
  leased: () => Iterable<VersionId>
  /** For `version.removed` (`via: 'quota'`). */
  events: Pick<EventBus, 'emit'>
  log: Logger
}

export class StoreUpkeep implements Startable {
  private quotaTimer?: NodeJS.Timeout
  private quotaRunning = false
  private compressTimer?: NodeJS.Timeout
  private compressRunning = false

  constructor (private readonly init: StoreUpkeepInit) {}

  start (): void {
    if (this.init.quotaBytes !== undefined) this.quotaTimer = setInterval(() => { void this.enforceQuota() }, QUOTA_CHECK_INTERVAL_MS)
    if (this.init.compressAfterMs !== undefined) this.compressTimer = setInterval(() => { void this.compressIdle() }, COMPRESS_CHECK_INTERVAL_MS)
  }

  stop (): void {
    clearInterval(this.quotaTimer)
    clearInterval(this.compressTimer)
  }

  /** A label switched: the quota, then idle compression, are looked at now. */
  afterSwitch (): void {
    void this.enforceQuota().then(async () => { await this.compressIdle() })
  }

  /** With a disk quota set, removes least-recently-used unprotected versions until under it. */
  private async enforceQuota (): Promise<void> {
    const { quotaBytes, store } = this.init
    if (quotaBytes === undefined || this.quotaRunning) return
    this.quotaRunning = true
    try {
      const report = await collectGarbage(store, { quotaBytes, keepLast: this.init.keepLast, keep: this.init.leased() })
      for (const v of report.versions) this.init.events.emit('version.removed', { model: v.name, version: v.version, via: 'quota' })
      if (report.versions.length > 0) this.init.log.info({ removed: report.versions.length, bytes: report.bytes, quota: report.quota }, 'disk quota: removed least recently used versions')
    } catch (err) {
      this.init.log.warn({ err: (err as Error).message }, 'quota GC failed')
    } finally {
      this.quotaRunning = false
    }
  }

  /**
   * With `store.compress` on, compresses the versions nothing has needed for `compressAfter`, least
   * recently used first, one at a time; one that is not eligible (rollback window, lease, pull) is
   * skipped until the next look.
   */
  private async compressIdle (): Promise<void> {
    const { compressAfterMs: idleMs, store } = this.init
    if (idleMs === undefined || this.compressRunning) return
    this.compressRunning = true
    try {
      for (const version of await coldCandidates(store, { idleMs })) {
        try {
          const r = await compressVersion(store, version, { keepLast: this.init.keepLast })
          this.init.log.info({ model: r.name, version, rawBytes: r.rawBytes, storedBytes: r.storedBytes }, 'compressed a version nothing needs')
        } catch (err) {
          if (!(err instanceof ConflictError)) throw err
          this.init.log.debug({ version, reason: err.message }, 'not compressed')
        }
      }
    } catch (err) {
      this.init.log.warn({ err: (err as Error).message }, 'compressing idle versions failed')
    } finally {
      this.compressRunning = false
    }
  }
}
