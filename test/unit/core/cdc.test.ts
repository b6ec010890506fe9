import { describe, expect, it } from 'vitest'
import { CDC_NORMALIZATION, FastCdc, GEAR, GEAR_SEED, cdcChunks, makeGearTable, type FastCdcOptions } from '../../../src/core/cdc.js'
import { CDC_AVG_SIZE, CDC_MAX_SIZE, CDC_MIN_SIZE } from '../../../src/core/chunking.js'

const MiB = 1024 * 1024
const SMALL = { min: 64, avg: 256, max: 1024 }

/** Deterministic pseudo-random bytes: xorshift32, low byte of each state. Pinned cut points depend on it. */
function xorshiftBytes (n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n)
  let x = seed | 0
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}

/** Streams `data` through a chunker in the given push sizes; returns all cut offsets. */
function cutsOf (data: Uint8Array, pushSizes: Iterable<number>, opts?: FastCdcOptions): number[] {
  const chunker = new FastCdc(opts)
  const cuts: number[] = []
  let at = 0
  for (const size of pushSizes) {
    cuts.push(...chunker.push(data.subarray(at, at + size)))
    at += size
  }
  cuts.push(...chunker.push(data.subarray(at)), ...chunker.finish())
  return cuts
}

/** Random push sizes (some zero, some tiny, some large) covering `total` bytes. */
function* randomSplits (total: number, seed: number, maxPush: number): Generator<number> {
  const bytes = xorshiftBytes(4096, seed)
  let at = 0
  for (let i = 0; at < total; i++) {
    const r = bytes[(2 * i) % bytes.length]! * 256 + bytes[(2 * i + 1) % bytes.length]!
    const size = r % 7 === 0 ? r % 3 : Math.min(total - at, r % maxPush)
    at += size
    yield size
  }
}

/**
 * A direct transcription of FastCDC's per-chunk cut function, one chunk at a time, for
 * cross-checking the streaming implementation. Returns cut offsets.
 */
function referenceCuts (data: Uint8Array, { min, avg, max }: Required<FastCdcOptions>): number[] {
  const bits = Math.log2(avg)
  const maskS = 2 ** 32 - 2 ** (32 - bits - CDC_NORMALIZATION)
  const maskL = 2 ** 32 - 2 ** (32 - bits + CDC_NORMALIZATION)
  const cut = (start: number): number => {
    const n = Math.min(data.length - start, max)
    if (n <= min) return n
    let h = 0
    for (let i = min; i < n; i++) {
      h = (h * 2 + GEAR[data[start + i]!]!) % 2 ** 32
      const mask = i < avg ? maskS : maskL
      if ((h & mask) === 0) return i + 1
    }
    return n
  }
  const cuts: number[] = []
  for (let start = 0; start < data.length;) {
    start += cut(start)
    cuts.push(start)
  }
  return cuts
}

describe('gear table', () => {
  it('is pinned: it is part of the format', () => {
    expect(GEAR_SEED).toBe(0x73686f61)
    expect(GEAR).toHaveLength(256)
    expect([...GEAR.slice(0, 4)]).toEqual([0xbaf5a610, 0x5227cbfd, 0x2eb4e33c, 0xe0d7925a])
    let acc = 0
    for (const v of GEAR) acc = (Math.imul(acc, 31) + v) >>> 0
    expect(acc).toBe(0x3135631e)
    expect(makeGearTable(GEAR_SEED)).toEqual(GEAR)
    expect(new Set(GEAR).size).toBe(256)
  })
})

describe('FastCdc', () => {
  it('pins the cut points of the default sizes', () => {
    expect([CDC_MIN_SIZE, CDC_AVG_SIZE, CDC_MAX_SIZE, CDC_NORMALIZATION]).toEqual([256 * 1024, MiB, 4 * MiB, 2])
    expect(cdcChunks(xorshiftBytes(8 * MiB, 1))).toEqual([0, 819203, 2325891, 3603072, 5501572, 6223682, 7430747])
  })

  it('pins the cut points of small sizes', () => {
    expect(cdcChunks(xorshiftBytes(4096, 2), SMALL)).toEqual([0, 505, 727, 985, 1271, 1545, 1855, 2140, 2449, 2771, 2907, 3172, 3438, 3773, 4040])
  })

  it('agrees with a one-chunk-at-a-time reference', () => {
    for (let seed = 1; seed <= 5; seed++) {
      const data = xorshiftBytes(50_000, seed)
      expect(cutsOf(data, [])).toEqual(referenceCuts(data, { min: CDC_MIN_SIZE, avg: CDC_AVG_SIZE, max: CDC_MAX_SIZE }))
      expect(cutsOf(data, [], SMALL)).toEqual(referenceCuts(data, SMALL))
      expect(cutsOf(data, [], { min: 16, avg: 32, max: 40 })).toEqual(referenceCuts(data, { min: 16, avg: 32, max: 40 }))
    }
    const big = xorshiftBytes(6 * MiB, 9)
    expect(cutsOf(big, [])).toEqual(referenceCuts(big, { min: CDC_MIN_SIZE, avg: CDC_AVG_SIZE, max: CDC_MAX_SIZE }))
  })

  it('keeps chunks within [min, max] except the last, near the normal size', () => {
    const data = xorshiftBytes(32 * MiB, 3)
    const starts = cdcChunks(data)
    const lengths = starts.map((s, i) => (starts[i + 1] ?? data.length) - s)
    for (const length of lengths.slice(0, -1)) {
      expect(length).toBeGreaterThanOrEqual(CDC_MIN_SIZE)
      expect(length).toBeLessThanOrEqual(CDC_MAX_SIZE)
    }
    expect(lengths.at(-1)!).toBeLessThanOrEqual(CDC_MAX_SIZE)
    const mean = data.length / lengths.length
    expect(mean).toBeGreaterThan(0.75 * CDC_AVG_SIZE)
    expect(mean).toBeLessThan(1.5 * CDC_AVG_SIZE)
  })

  it('cuts at max when no content boundary comes (all zeros)', () => {
    const data = new Uint8Array(10 * MiB)
    expect(cdcChunks(data)).toEqual([0, CDC_MAX_SIZE, 2 * CDC_MAX_SIZE])
    expect(cdcChunks(new Uint8Array(2500), SMALL)).toEqual([0, 1024, 2048])
  })

  it('gives the same cuts however the stream is split into pushes', () => {
    const data = xorshiftBytes(12 * MiB, 4)
    const whole = cutsOf(data, [])
    expect(whole.at(-1)).toBe(data.length)
    for (let seed = 1; seed <= 3; seed++) {
      expect(cutsOf(data, randomSplits(data.length, seed, 3 * MiB))).toEqual(whole)
    }
    const small = xorshiftBytes(20_000, 5)
    const smallWhole = cutsOf(small, [], SMALL)
    expect(cutsOf(small, new Array<number>(small.length).fill(1), SMALL)).toEqual(smallWhole)
    for (let seed = 1; seed <= 20; seed++) {
      expect(cutsOf(small, randomSplits(small.length, seed, 700), SMALL)).toEqual(smallWhole)
    }
  })

  it('is deterministic and reusable after finish', () => {
    const data = xorshiftBytes(3 * MiB, 6)
    const chunker = new FastCdc()
    const first = [...chunker.push(data), ...chunker.finish()]
    expect(chunker.position).toBe(0)
    expect(chunker.finish()).toEqual([])
    const second = [...chunker.push(data), ...chunker.finish()]
    expect(second).toEqual(first)
    expect(cutsOf(data, [])).toEqual(first)
  })

  it('reports the stream position and nothing for an empty stream', () => {
    const chunker = new FastCdc(SMALL)
    expect(chunker.push(new Uint8Array(0))).toEqual([])
    expect(chunker.finish()).toEqual([])
    chunker.push(new Uint8Array(100))
    expect(chunker.position).toBe(100)
    expect(chunker.finish()).toEqual([100])
    expect(cdcChunks(new Uint8Array(0))).toEqual([])
    expect(cdcChunks(new Uint8Array(10))).toEqual([0])
  })

  it('keeps most chunks when bytes are inserted or removed near the start', () => {
    const original = xorshiftBytes(16 * MiB, 7)
    /** Chunks as `start:end` in the original's coordinates: those past the edit are shifted back. */
    const chunkSet = (data: Uint8Array, edit: { at: number, shift: number }): Set<string> => {
      const starts = cdcChunks(data)
      const keys = new Set<string>()
      starts.forEach((s, i) => {
        const e = starts[i + 1] ?? data.length
        if (e <= edit.at) keys.add(`${s}:${e}`)
        else if (s >= edit.at + Math.max(edit.shift, 0)) keys.add(`${s - edit.shift}:${e - edit.shift}`)
      })
      return keys
    }
    const before = chunkSet(original, { at: 0, shift: 0 })
    const edits = [
      { at: 1000, insert: xorshiftBytes(100, 8), remove: 0 },
      { at: 300_000, insert: xorshiftBytes(1, 9), remove: 0 },
      { at: 2 * MiB, insert: new Uint8Array(0), remove: 5000 }
    ]
    for (const { at, insert, remove } of edits) {
      const edited = new Uint8Array(original.length + insert.length - remove)
      edited.set(original.subarray(0, at))
      edited.set(insert, at)
      edited.set(original.subarray(at + remove), at + insert.length)
      const after = chunkSet(edited, { at, shift: insert.length - remove })
      const shared = [...after].filter(k => before.has(k)).length
      expect(shared / before.size).toBeGreaterThanOrEqual(0.8)
    }
  })

  it('refuses invalid sizes', () => {
    const bad: FastCdcOptions[] = [
      { avg: 1000 }, // not a power of two
      { min: 2 * MiB }, // min > avg
      { max: 512 * 1024 }, // avg > max
      { min: 0 },
      { min: 1, avg: 4, max: 8 }, // too few mask bits for the normalization level
      { min: 1.5 }
    ]
    for (const opts of bad) {
      expect(() => new FastCdc(opts)).toThrow(expect.objectContaining({ name: 'InvalidInputError' }))
    }
  })
})
