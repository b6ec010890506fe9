/**
 * What the daemon counts as it runs, fed into `Metrics`: label moves and pull durations from the
 * event bus, chunks verified and refused and bytes received from the pulls, bytes sent from the
 * chunk server (per peer, and per model: a version's model name is looked up once and kept).
 *
 * MUST hold: counting never fails or slows what is counted (a lookup runs in the background, and
 * bytes sent meanwhile are added once it answers); the model names kept are bounded
 * (`MAX_MODEL_NAMES`). Before `Metrics` exists nothing is counted.
 */
import type { Startable } from '@libp2p/interface'
import type { EventBus } from './events.js'
import type { Metrics } from './metrics.js'

/** @default 10,000 — version → model names kept for `shoal_bytes_sent_by_model_total` */
export const MAX_MODEL_NAMES = 10_000

export interface MetricsFeedInit {
  events: Pick<EventBus, 'subscribe'>
  /** The daemon's metrics, once they exist. */
  metrics: () => Metrics | undefined
  /** The model name of a version held here. */
  modelOf: (version: string) => Promise<string | undefined>
}

export class MetricsFeed implements Startable {
  private readonly models = new Map<string, string>()
  private readonly lookups = new Map<string, { bytes: number }>()
  private unsubscribe?: () => void

  constructor (private readonly init: MetricsFeedInit) {}

  start (): void {
    this.unsubscribe = this.init.events.subscribe(e => {
      const metrics = this.init.metrics()
      if (metrics === undefined) return
      if (e.type === 'label.moved') metrics.labelMoves.inc()
      if (e.type === 'pull.completed') metrics.pullDuration.observe({ outcome: 'completed' }, e.data.ms / 1000)
      if (e.type === 'pull.failed' && 'ms' in e.data) metrics.pullDuration.observe({ outcome: e.data.outcome }, e.data.ms / 1000)
    })
  }

  stop (): void {
    this.unsubscribe?.()
  }

  /** A pull verified `bytes` of `model` from a peer (one chunk or block). */
  received (model: string, bytes: number): void {
    const metrics = this.init.metrics()
    metrics?.chunksVerified.inc()
    metrics?.bytesReceivedByModel.inc({ model }, bytes)
  }

  /** Something a peer sent was refused (`offence`: what it did). */
  rejected (offence: string): void {
    this.init.metrics()?.chunksRejected.inc({ reason: offence })
  }

  /** The chunk server sent `bytes` to `peer` (`wireBytes` on the link), which said it wants `versions`. */
  sent (peer: string, bytes: number, versions: string[], wireBytes = bytes): void {
    this.init.metrics()?.bytesSent.inc({ peer }, bytes)
    this.init.metrics()?.wireBytesSent.inc({ peer }, wireBytes)
    if (versions.length === 1 && versions[0] !== undefined) this.sentForVersion(versions[0], bytes)
  }

  /** Counts bytes sent for a version under its model name (looked up once, then kept). */
  private sentForVersion (version: string, bytes: number): void {
    const model = this.models.get(version)
    if (model !== undefined) { this.init.metrics()?.bytesSentByModel.inc({ model }, bytes); return }
    const pending = this.lookups.get(version)
    if (pending !== undefined) { pending.bytes += bytes; return }
    const entry = { bytes }
    this.lookups.set(version, entry)
    void this.init.modelOf(version).then(name => {
      if (name === undefined) return
      if (this.models.size < MAX_MODEL_NAMES) this.models.set(version, name)
      this.init.metrics()?.bytesSentByModel.inc({ model: name }, entry.bytes)
    }).catch(() => {}).finally(() => this.lookups.delete(version))
  }
}
