/**
 * A web seed (an HTTP origin the manifest lists) as an ordinary `Channel`: asked for a span, it
 * fetches the span's whole chunk with one Range request and hands it over as one arrival marked
 * `whole` — an origin sends bytes without proofs, so they are verified by the chunk id instead of
 * block by block. Its budget and backoff live in the `OriginSource` (`OriginBudget`); whether the
 * origin is asked at all is the scheduler's rule (only for pieces no connected peer holds).
 */
import type { VersionId } from '../core/digest.js'
import type { Arrival, Channel, OriginSource, Span, Target } from './types.js'

/** An arrival that is a whole chunk, unproven: the target verifies it by the chunk's id. */
export interface WholeChunk extends Arrival { whole: true }

export function isWhole (a: Arrival): a is WholeChunk {
  return (a as Partial<WholeChunk>).whole === true
}

export class OriginChannel implements Channel {
  readonly isOpen = true
  readonly load = 0

  constructor (private readonly target: Target, private readonly origin: OriginSource) {}

  /** Whether this origin may be asked for chunk `id` now. */
  serves (id: string): boolean {
    const where = this.target.originOf(id)
    return where !== undefined && this.origin.usable?.(where.url) !== false
  }

  async want (span: Span, options: { signal?: AbortSignal, onBlock: (b: Arrival) => void }): Promise<void> {
    const where = this.target.originOf(span.chunk)
    if (where === undefined) throw new Error(`no origin lists chunk ${span.chunk}`)
    const bytes = await this.origin.fetchRange(where.url, where.offset, this.target.sizeOf(span.chunk), options.signal !== undefined ? { signal: options.signal } : {})
    const whole: WholeChunk = { index: 0, proof: new Uint8Array(0), data: [bytes], whole: true }
    options.onBlock(whole)
  }

  /** The origin sent bytes that are not the chunk. */
  refused (id: string): void {
    const where = this.target.originOf(id)
    if (where !== undefined) this.origin.refused?.(where.url)
  }

  async watch (): Promise<void> {}
  async unwatch (_version: VersionId): Promise<void> {}
  onClose (): void {}
}
