import { describe, expect, it } from 'vitest'
import { createPicker, createSelector, LOAD_DISCOUNT, PieceSet, RAREST_SAMPLE, type SelectablePeer } from '../../../src/fetcher/strategies.js'
import { seeded } from '../../helpers/random.js'

const peer = (key: string, rate = 0, load = 0): SelectablePeer => ({ key, rate, load })

/** How often each key is picked over `n` draws. */
function tally (pick: () => SelectablePeer | undefined, n: number): Map<string, number> {
  const counts = new Map<string, number>()
  for (let i = 0; i < n; i++) {
    const p = pick()
    if (p !== undefined) counts.set(p.key, (counts.get(p.key) ?? 0) + 1)
  }
  return counts
}

/** A random source that returns the given values in turn. */
const fixed = (...values: number[]): () => number => {
  let i = 0
  return () => values[i++ % values.length]!
}

describe('peer selectors', () => {
  it('weighted picks in proportion to rate / (1 + load / LOAD_DISCOUNT); unmeasured peers get the average', () => {
    const peers = [peer('a', 100), peer('b', 300), peer('c', 100, 4), peer('d', 0)]
    const average = (100 + 300 + 100) / 3
    const weights = [100, 300, 100 / (1 + 4 / LOAD_DISCOUNT), average]
    const total = weights.reduce((a, b) => a + b, 0)
    const n = 40_000
    const selector = createSelector('weighted', seeded(1))
    const counts = tally(() => selector.pick(peers), n)
    peers.forEach((p, i) => {
      expect((counts.get(p.key) ?? 0) / n).toBeCloseTo(weights[i]! / total, 1)
      expect(Math.abs((counts.get(p.key) ?? 0) / n - weights[i]! / total)).toBeLessThan(0.015)
    })
  })

  it('weighted maps the random draw onto cumulative weights exactly', () => {
    const peers = [peer('a', 100), peer('b', 300)]
    // total 400: a covers [0, 100], b covers (100, 400]
    expect(createSelector('weighted', fixed(0)).pick(peers)?.key).toBe('a')
    expect(createSelector('weighted', fixed(0.24)).pick(peers)?.key).toBe('a')
    expect(createSelector('weighted', fixed(0.26)).pick(peers)?.key).toBe('b')
    expect(createSelector('weighted', fixed(0.999)).pick(peers)?.key).toBe('b')
    // A load of LOAD_DISCOUNT halves b's weight: a = 100, b = 150 → a covers [0, 0.4].
    const loaded = [peer('a', 100), peer('b', 300, LOAD_DISCOUNT)]
    expect(createSelector('weighted', fixed(0.39)).pick(loaded)?.key).toBe('a')
    expect(createSelector('weighted', fixed(0.41)).pick(loaded)?.key).toBe('b')
  })

  it('weighted treats peers as equal when none is measured, and handles 0 or 1 candidates', () => {
    const selector = createSelector('weighted', seeded(2))
    expect(selector.pick([])).toBeUndefined()
    const only = peer('x', 0, 100)
    expect(selector.pick([only])).toBe(only)
    const peers = ['a', 'b', 'c'].map(k => peer(k))
    const counts = tally(() => selector.pick(peers), 30_000)
    for (const p of peers) expect(Math.abs((counts.get(p.key) ?? 0) / 30_000 - 1 / 3)).toBeLessThan(0.015)
  })

  it('round-robin cycles through the eligible peers in key order', () => {
    const selector = createSelector('round-robin')
    const peers = [peer('c'), peer('a'), peer('b', 1_000_000)]
    const picks = Array.from({ length: 7 }, () => selector.pick(peers)?.key)
    expect(picks).toEqual(['a', 'b', 'c', 'a', 'b', 'c', 'a'])
    expect(selector.pick([])).toBeUndefined()
  })

  it('random is uniform, ignoring rate and load', () => {
    const selector = createSelector('random', seeded(3))
    const peers = [peer('a', 1), peer('b', 1_000_000), peer('c', 5, 100), peer('d')]
    const counts = tally(() => selector.pick(peers), 40_000)
    for (const p of peers) expect(Math.abs((counts.get(p.key) ?? 0) / 40_000 - 0.25)).toBeLessThan(0.015)
    expect(selector.pick([])).toBeUndefined()
  })
})

describe('PieceSet', () => {
  it('adds once, deletes, samples members and keeps file order available', () => {
    const set = new PieceSet(['p0', 'p1', 'p2', 'p3'])
    for (const p of ['p2', 'p0', 'p2', 'p3']) set.add(p)
    expect(set.size).toBe(3)
    set.delete('p0')
    set.delete('p0')
    expect(set.size).toBe(2)
    expect(set.has('p0')).toBe(false)
    expect([...set.all()].sort()).toEqual(['p2', 'p3'])
    const sample = set.sample(50, seeded(4))
    expect(sample).toHaveLength(50)
    expect(new Set(sample)).toEqual(new Set(['p2', 'p3']))
    expect(new PieceSet<string>([]).sample(5, seeded(4))).toEqual([])
  })
})

describe('piece pickers', () => {
  const pieces = (n: number): string[] => Array.from({ length: n }, (_, i) => `p${i}`)
  const filled = (items: string[]): PieceSet<string> => {
    const set = new PieceSet(items)
    for (const p of items) set.add(p)
    return set
  }

  it('rarest-first picks the piece held by the fewest peers among those the peer has', () => {
    const items = pieces(20)
    const set = filled(items)
    const avail = new Map(items.map((p, i) => [p, 10 + i]))
    avail.set('p7', 2)
    avail.set('p3', 1)
    const picker = createPicker<string>('rarest', seeded(5))
    expect(picker.pick(set, () => true, p => avail.get(p)!)).toBe('p3')
    // The peer does not have p3: the next rarest it has.
    expect(picker.pick(set, p => p !== 'p3', p => avail.get(p)!)).toBe('p7')
    // Requested pieces (removed from the set) are not picked.
    set.delete('p3')
    set.delete('p7')
    expect(picker.pick(set, () => true, p => avail.get(p)!)).toBe('p0')
    expect(picker.pick(set, () => false, p => avail.get(p)!)).toBeUndefined()
  })

  it('rarest-first breaks ties at random: different seeds pick different pieces among equals', () => {
    const items = pieces(30)
    const set = filled(items)
    const tied = new Set(['p4', 'p11', 'p17', 'p25'])
    const availability = (p: string): number => tied.has(p) ? 1 : 3
    const picks = new Set<string>()
    for (let seed = 1; seed <= 12; seed++) {
      const pick = createPicker<string>('rarest', seeded(seed)).pick(set, () => true, availability)
      expect(tied.has(pick!)).toBe(true)
      picks.add(pick!)
    }
    expect(picks.size).toBeGreaterThan(1)
    // Over many picks, each tied piece is chosen about equally often.
    const picker = createPicker<string>('rarest', seeded(99))
    const counts = new Map<string, number>()
    for (let i = 0; i < 8_000; i++) {
      const p = picker.pick(set, () => true, availability)!
      counts.set(p, (counts.get(p) ?? 0) + 1)
    }
    expect([...counts.keys()].sort()).toEqual([...tied].sort())
    for (const n of counts.values()) expect(Math.abs(n / 8_000 - 0.25)).toBeLessThan(0.03)
  })

  it('rarest-first on a large set samples, and scans everything when the sample misses what the peer has', () => {
    const items = pieces(RAREST_SAMPLE * 20)
    const set = filled(items)
    // random() = 0 makes every sample draw the same member, one the peer does not have.
    const picker = createPicker<string>('rarest', () => 0)
    const first = set.all()[0]!
    const holds = new Set(['p777', 'p501'])
    expect(holds.has(first)).toBe(false)
    const availability = (p: string): number => p === 'p501' ? 2 : 5
    expect(picker.pick(set, p => holds.has(p), availability)).toBe('p501')
    expect(picker.pick(set, p => p === 'p777', availability)).toBe('p777')
    expect(picker.pick(set, () => false, availability)).toBeUndefined()
  })

  it('in-order returns the first missing piece in file order that the peer has, and honours re-added earlier pieces', () => {
    const items = pieces(10)
    const set = new PieceSet(items)
    for (const p of [...items].reverse()) set.add(p)
    const picker = createPicker<string>('in-order', seeded(6))
    const none = (): number => 0
    expect(picker.pick(set, () => true, none)).toBe('p0')
    set.delete('p0')
    set.delete('p1')
    expect(picker.pick(set, () => true, none)).toBe('p2')
    expect(picker.pick(set, p => p !== 'p2' && p !== 'p3', none)).toBe('p4')
    // p1 came back (its request failed): it is first again.
    set.add('p1')
    expect(picker.pick(set, () => true, none)).toBe('p1')
    for (const p of items) set.delete(p)
    expect(picker.pick(set, () => true, none)).toBeUndefined()
    set.add('p9')
    expect(picker.pick(set, () => true, none)).toBe('p9')
  })
})
