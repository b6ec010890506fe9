/**
 * Provider records in the DHT for what this node holds: every version it holds, once at start (in
 * the background, one at a time; kad-dht re-provides them while the node runs), and each version it
 * adds as it is added. Coarse on purpose: one record per version, never per chunk.
 *
 * MUST hold: providing never fails or delays what asked for it (a failure is dropped: the next
 * re-provide or a peer's direct INTEREST covers it); each provide ends within
 * `PROVIDE_TIMEOUT_MS`; `stop` ends the start-up pass.
 */
import type { ContentRouting, Startable } from '@libp2p/interface'
import { CID } from 'multiformats/cid'

/** @default 30 s — one provide of a version */
export const PROVIDE_TIMEOUT_MS = 30_000

export interface ProvidingInit {
  routing: Pick<ContentRouting, 'provide'>
  /** The versions this node holds. */
  held: () => AsyncIterable<string>
  /** Whether the start-up pass runs (`p2p.dht`). */
  dht: boolean
}

export class Providing implements Startable {
  private readonly stopped = new AbortController()

  constructor (private readonly init: ProvidingInit) {}

  start (): void {
    if (!this.init.dht) return
    void (async () => {
      for await (const version of this.init.held()) {
        if (this.stopped.signal.aborted) return
        await this.provide(version)
      }
    })().catch(() => {})
  }

  stop (): void {
    this.stopped.abort()
  }

  /** Provides `version` in the background. */
  announce (version: string): void {
    void this.provide(version)
  }

  private async provide (version: string): Promise<void> {
    const signal = AbortSignal.any([AbortSignal.timeout(PROVIDE_TIMEOUT_MS), this.stopped.signal])
    await this.init.routing.provide(CID.parse(version), { signal }).catch(() => {})
  }
}
