/**
 * Pluggable choices of the fetch scheduler (the seed's load balancing, §11), in the manner of
 * Kraken's piece-request policies: which peer gets the next request, and which piece it asks for.
 *
 * Peer selection (`PeerSelector`):
 * - `round-robin`: eligible peers in turn;
 * - `random`: uniformly at random;
 * - `weighted` (default, adaptive): at random in proportion to measured throughput, discounted by
 *   the load the peer reports; peers not yet measured get the average, so they are tried.
 *
 * Piece selection (`PiecePicker`):
 * - `rarest` (default): among missing, unrequested pieces the peer has, one held by the fewest
 *   peers, ties broken at random (so concurrent pullers spread over different pieces);
 * - `in-order`: the first missing piece in file order (header and early tensors first).
 */
export type StrategyName = 'weighted' | 'round-robin' | 'random'
export type PieceOrder = 'rarest' | 'in-order'

export interface SelectablePeer {
  readonly key: string
  /** Bytes per second measured from this peer, or 0 if not yet measured. */
  readonly rate: number
  /** Load the peer last reported (uploads queued or running there). */
  readonly load: number
}

export interface PeerSelector {
  pick: <P extends SelectablePeer>(eligible: readonly P[]) => P | undefined
}

/** How much a reported load unit discounts a peer's weight. @default 4 */
export const LOAD_DISCOUNT = 4

export function createSelector (name: StrategyName, random: () => number = Math.random): PeerSelector {
  switch (name) {
    case 'round-robin': {
      let turn = 0
      return {
        pick (eligible) {
          if (eligible.length === 0) return undefined
          const sorted = [...eligible].sort((a, b) => a.key < b.key ? -1 : 1)
          return sorted[turn++ % sorted.length]
        }
      }
    }
    case 'random':
      return { pick: eligible => eligible[Math.floor(random() * eligible.length)] }
    case 'weighted':
      return {
        pick (eligible) {
          if (eligible.length <= 1) return eligible[0]
          const measured = eligible.filter(p => p.rate > 0)
          const average = measured.length === 0 ? 1 : measured.reduce((n, p) => n + p.rate, 0) / measured.length
          const weights = eligible.map(p => (p.rate > 0 ? p.rate : average) / (1 + p.load / LOAD_DISCOUNT))
          let r = random() * weights.reduce((a, b) => a + b, 0)
          for (const [i, w] of weights.entries()) {
            r -= w
            if (r <= 0) return eligible[i]
          }
          return eligible[eligible.length - 1]
        }
      }
  }
}

/** Missing, unrequested pieces: O(1) add/remove/random sample, plus file order for `in-order`. */
export class PieceSet<T> {
  private readonly items: T[] = []
  private readonly index = new Map<T, number>()
  /** Every piece that may ever be a member, in file order; `cursor` is at or before the first member. */
  private readonly sorted: T[]
  private readonly rank: Map<T, number>
  private cursor = 0

  constructor (inFileOrder: readonly T[]) {
    this.sorted = [...inFileOrder]
    this.rank = new Map(this.sorted.map((item, i) => [item, i]))
  }

  get size (): number { return this.items.length }
  has (item: T): boolean { return this.index.has(item) }

  add (item: T): void {
    if (this.index.has(item)) return
    this.index.set(item, this.items.length)
    this.items.push(item)
    this.cursor = Math.min(this.cursor, this.rank.get(item) ?? 0)
  }

  delete (item: T): void {
    const i = this.index.get(item)
    if (i === undefined) return
    const last = this.items.pop() as T
    this.index.delete(item)
    if (i < this.items.length) {
      this.items[i] = last
      this.index.set(last, i)
    }
  }

  /** Up to `count` random members (with repeats). */
  sample (count: number, random: () => number): T[] {
    const out: T[] = []
    for (let i = 0; i < count && this.items.length > 0; i++) out.push(this.items[Math.floor(random() * this.items.length)] as T)
    return out
  }

  all (): readonly T[] { return this.items }

  /** The first member in file order that `accept` takes. */
  firstInOrder (accept: (item: T) => boolean): T | undefined {
    while (this.cursor < this.sorted.length && !this.index.has(this.sorted[this.cursor] as T)) this.cursor++
    for (let i = this.cursor; i < this.sorted.length; i++) {
      const item = this.sorted[i] as T
      if (this.index.has(item) && accept(item)) return item
    }
    return undefined
  }
}

export interface PiecePicker<T> {
  pick: (set: PieceSet<T>, has: (item: T) => boolean, availability: (item: T) => number) => T | undefined
}

/** Pieces sampled per rarest-first pick on large sets. @default 48 */
export const RAREST_SAMPLE = 48

export function createPicker<T> (order: PieceOrder, random: () => number = Math.random): PiecePicker<T> {
  if (order === 'in-order') {
    return {
      pick: (set, has) => set.firstInOrder(has)
    }
  }
  return {
    pick (set, has, availability) {
      const pool = set.size <= RAREST_SAMPLE * 2 ? set.all() : set.sample(RAREST_SAMPLE, random)
      let best: T | undefined
      let bestAvail = Infinity
      let ties = 0
      for (const item of pool) {
        if (!has(item)) continue
        const a = availability(item)
        if (a < bestAvail) { best = item; bestAvail = a; ties = 1 } else if (a === bestAvail && random() * ++ties < 1) best = item
      }
      if (best !== undefined || pool === set.all()) return best
      // The sample missed: the peer holds few of the missing pieces. Scan them all.
      for (const item of set.all()) {
        if (!has(item)) continue
        const a = availability(item)
        if (a < bestAvail) { best = item; bestAvail = a }
      }
      return best
    }
  }
}
