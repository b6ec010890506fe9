import { createHash, randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { cdcChunks } from '../../../src/core/cdc.js'
import {
  CDC_AVG_SIZE, CDC_MAX_SIZE, CDC_MIN_SIZE, MAX_CHUNK_SIZE, MIN_ANCHORED_TENSOR_BYTES, STRUCTURE_CDC, TENSOR_PIECE_SIZE,
  fixedChunks, modelRegions, planModelChunks, type TensorRange
} from '../../../src/core/chunking.js'

const KiB = 1024
const MiB = 1024 * KiB

/** `[start, end)` of every chunk of a plan. */
function spans (starts: number[], fileSize: number): Array<[number, number]> {
  return starts.map((start, i) => [start, starts[i + 1] ?? fileSize])
}

/** The chunks inside a tensor, relative to its start. */
function relativePieces (starts: number[], fileSize: number, tensor: TensorRange): Array<[number, number]> {
  return spans(starts, fileSize)
    .filter(([s, e]) => s >= tensor.offset && e <= tensor.offset + tensor.length)
    .map(([s, e]) => [s - tensor.offset, e - tensor.offset])
}

/** Asserts what every model plan MUST satisfy (see the module doc of core/chunking.ts). */
function checkPlan (starts: number[], fileSize: number, tensors: TensorRange[]): void {
  if (fileSize === 0) { expect(starts).toEqual([]); return }
  expect(starts[0]).toBe(0)
  for (const [s, e] of spans(starts, fileSize)) {
    expect(e).toBeGreaterThan(s)
    expect(e - s).toBeLessThanOrEqual(MAX_CHUNK_SIZE)
  }
  const set = new Set(starts)
  for (const t of tensors) {
    if (t.length < MIN_ANCHORED_TENSOR_BYTES) continue
    const end = t.offset + t.length
    expect(set.has(t.offset)).toBe(true)
    // Pieces are aligned to the tensor's start and hold tensor bytes only.
    for (let at = t.offset; at < end; at += TENSOR_PIECE_SIZE) expect(set.has(at)).toBe(true)
    if (end < fileSize) expect(set.has(end)).toBe(true)
    for (const s of starts) {
      if (s > t.offset && s < end) expect((s - t.offset) % TENSOR_PIECE_SIZE).toBe(0)
    }
  }
}

/** Deterministic PRNG (xorshift32) for layout fuzzing. */
function rng (seed: number): (n: number) => number {
  let x = seed | 0 || 1
  return (n) => {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5
    return (x >>> 0) % n
  }
}

describe('chunking constants', () => {
  it('keeps every chunk kind within the transfer cap', () => {
    expect(TENSOR_PIECE_SIZE).toBe(4 * MiB)
    expect(MAX_CHUNK_SIZE).toBe(4 * MiB)
    expect(TENSOR_PIECE_SIZE).toBeLessThanOrEqual(MAX_CHUNK_SIZE)
    expect(CDC_MAX_SIZE).toBeLessThanOrEqual(MAX_CHUNK_SIZE)
    expect([CDC_MIN_SIZE, CDC_AVG_SIZE, CDC_MAX_SIZE]).toEqual([256 * KiB, 1 * MiB, 4 * MiB])
    expect(STRUCTURE_CDC).toEqual({ min: 64 * KiB, avg: 256 * KiB, max: 1 * MiB })
    expect(STRUCTURE_CDC.max).toBeLessThanOrEqual(MAX_CHUNK_SIZE)
  })
})

describe('fixedChunks', () => {
  it('cuts at multiples of the size', () => {
    expect(fixedChunks(0)).toEqual([])
    expect(fixedChunks(1)).toEqual([0])
    expect(fixedChunks(MAX_CHUNK_SIZE)).toEqual([0])
    expect(fixedChunks(MAX_CHUNK_SIZE + 1)).toEqual([0, MAX_CHUNK_SIZE])
    expect(fixedChunks(10, 3)).toEqual([0, 3, 6, 9])
    expect(fixedChunks(9, 3)).toEqual([0, 3, 6])
  })

  it('refuses bad sizes', () => {
    for (const [fileSize, size] of [[10, 0], [10, -1], [10, 1.5], [-1, 3], [Number.NaN, 3]] as const) {
      expect(() => fixedChunks(fileSize, size)).toThrow(expect.objectContaining({ name: 'InvalidInputError' }))
    }
  })
})

/** A plan with structure regions cut the way `add` cuts them: by content, from the bytes. */
function plan (bytes: Uint8Array, tensors: TensorRange[]): number[] {
  return planModelChunks(modelRegions(bytes.length, tensors), r => cdcChunks(bytes.subarray(r.offset, r.offset + r.length), STRUCTURE_CDC))
}

describe('modelRegions', () => {
  it('alternates structure and tensor regions over the whole file', () => {
    const K = MIN_ANCHORED_TENSOR_BYTES
    // header 0..100, tensor, 28 bytes of padding, tensor, tensor right after, trailing bytes
    const tensors = [{ offset: 100, length: 2 * K }, { offset: 100 + 2 * K + 28, length: K }, { offset: 128 + 3 * K, length: K }]
    expect(modelRegions(200 + 4 * K, tensors)).toEqual([
      { offset: 0, length: 100, kind: 'structure' },
      { offset: 100, length: 2 * K, kind: 'tensor' },
      { offset: 100 + 2 * K, length: 28, kind: 'structure' },
      { offset: 128 + 2 * K, length: K, kind: 'tensor' },
      { offset: 128 + 3 * K, length: K, kind: 'tensor' },
      { offset: 128 + 4 * K, length: 72, kind: 'structure' }
    ])
    expect(modelRegions(0, [])).toEqual([])
    expect(modelRegions(10, [])).toEqual([{ offset: 0, length: 10, kind: 'structure' }])
  })

  it('leaves tensors under MIN_ANCHORED_TENSOR_BYTES, and empty ones, to the structure around them', () => {
    const small = MIN_ANCHORED_TENSOR_BYTES - 1
    const tensors = [{ offset: 10, length: small }, { offset: 10 + small, length: 0 }, { offset: 20 + small, length: MIN_ANCHORED_TENSOR_BYTES }]
    expect(modelRegions(30 + small + MIN_ANCHORED_TENSOR_BYTES, tensors).map(r => [r.offset, r.kind])).toEqual([
      [0, 'structure'], [20 + small, 'tensor'], [20 + small + MIN_ANCHORED_TENSOR_BYTES, 'structure']
    ])
  })

  it('refuses overlapping tensors', () => {
    const cases: TensorRange[][] = [
      [{ offset: 10, length: 10 }, { offset: 19, length: 5 }],
      [{ offset: 19, length: 5 }, { offset: 10, length: 10 }],
      [{ offset: 10, length: 10 }, { offset: 10, length: 10 }],
      [{ offset: 10, length: 20 }, { offset: 12, length: 2 }]
    ]
    for (const tensors of cases) {
      expect(() => modelRegions(100, tensors)).toThrow(/tensors \[\d+, \d+\) and \[\d+, \d+\) overlap/)
    }
  })

  it('refuses tensors outside the file and bad numbers', () => {
    const bad: Array<[number, TensorRange[], RegExp]> = [
      [100, [{ offset: 95, length: 6 }], /tensor \[95, 101\) lies outside the file \[0, 100\)/],
      [100, [{ offset: 101, length: 0 }], /lies outside the file/],
      [100, [{ offset: 10.5, length: 1 }], /tensor offset must be a non-negative integer, got 10.5/],
      [100, [{ offset: 10, length: -1 }], /tensor length must be a non-negative integer, got -1/],
      [100, [{ offset: Number.NaN, length: 1 }], /got NaN/],
      [-1, [], /file size must be a non-negative integer, got -1/],
      [2 ** 53, [], /file size/]
    ]
    for (const [fileSize, tensors, message] of bad) {
      expect(() => modelRegions(fileSize, tensors)).toThrow(expect.objectContaining({ name: 'InvalidInputError', message: expect.stringMatching(message) }))
    }
  })
})

describe('planModelChunks', () => {
  it('cuts tensors in pieces from their start and structure where it is told', () => {
    const tensor = { offset: 100, length: 2 * TENSOR_PIECE_SIZE + 7 }
    const regions = modelRegions(tensor.offset + tensor.length + 50, [tensor])
    expect(planModelChunks(regions, r => r.offset === 0 ? [0, 40] : [0]))
      .toEqual([0, 40, 100, 100 + TENSOR_PIECE_SIZE, 100 + 2 * TENSOR_PIECE_SIZE, tensor.offset + tensor.length])
  })

  it('refuses structure cuts that do not make chunks of the region', () => {
    const regions = modelRegions(2 * MAX_CHUNK_SIZE, [])
    // none, not from 0, repeated, descending, past the region, fractional, a chunk over the cap
    for (const cuts of [[], [1], [0, 0], [0, 5, 3], [0, 2 * MAX_CHUNK_SIZE], [0, 1.5], [0, 10]]) {
      expect(() => planModelChunks(regions, () => cuts)).toThrow(expect.objectContaining({ name: 'InvalidInputError' }))
    }
    expect(planModelChunks(regions, () => [0, MAX_CHUNK_SIZE])).toEqual([0, MAX_CHUNK_SIZE])
  })

  it('cuts a header by content, so an edit in it changes only the chunks around the edit', () => {
    const header = randomBytes(3 * MiB)
    const tensor = randomBytes(5 * MiB)
    const v1 = Buffer.concat([header, tensor])
    // One metadata value grows by 10 bytes in the middle of the header: every later offset shifts.
    const edited = Buffer.concat([header.subarray(0, 1500 * KiB), Buffer.from('0123456789'), header.subarray(1500 * KiB)])
    const v2 = Buffer.concat([edited, tensor])
    const chunks = (bytes: Buffer, headerLength: number): Map<string, number> => {
      const starts = plan(bytes, [{ offset: headerLength, length: tensor.length }])
      return new Map(spans(starts, bytes.length).map(([s, e]) => [createHash('sha256').update(bytes.subarray(s, e)).digest('hex'), e - s]))
    }
    const old = chunks(v1, header.length)
    const now = chunks(v2, edited.length)
    const reshipped = [...now].filter(([id]) => !old.has(id)).reduce((n, [, size]) => n + size, 0)
    expect(reshipped).toBeGreaterThan(0)
    expect(reshipped).toBeLessThanOrEqual(2 * STRUCTURE_CDC.max)
    // Before content-defined headers, the whole header (fixed 4 MiB steps from 0) was new.
    expect(reshipped).toBeLessThan(edited.length / 2)
  })

  it('gives an unchanged tensor the same pieces whatever its offset and the header length', () => {
    const length = 3 * TENSOR_PIECE_SIZE + 12345
    const layouts = [
      { headerLength: 8 + 200, gap: 0, before: 0 },
      { headerLength: 8 + 4000, gap: 0, before: 777 },
      { headerLength: 5 * MiB, gap: 24, before: 3 * MiB + 1 },
      { headerLength: 0, gap: 7, before: 0 }
    ]
    const results = layouts.map(({ headerLength, gap, before }) => {
      // An optional tensor before ours, then our tensor, then padding and another tensor.
      const tensors: TensorRange[] = []
      let at = headerLength
      if (before > 0) { tensors.push({ offset: at, length: before }); at += before + gap }
      const ours = { offset: at, length }
      tensors.push(ours)
      at += length + gap
      tensors.push({ offset: at, length: 1000 })
      const fileSize = at + 1000 + gap
      const starts = planModelChunks(modelRegions(fileSize, tensors), r => fixedChunks(r.length, STRUCTURE_CDC.max))
      checkPlan(starts, fileSize, tensors)
      return relativePieces(starts, fileSize, ours)
    })
    const expected: Array<[number, number]> = [
      [0, TENSOR_PIECE_SIZE], [TENSOR_PIECE_SIZE, 2 * TENSOR_PIECE_SIZE],
      [2 * TENSOR_PIECE_SIZE, 3 * TENSOR_PIECE_SIZE], [3 * TENSOR_PIECE_SIZE, length]
    ]
    for (const pieces of results) expect(pieces).toEqual(expected)
  })

  it('holds its invariants on random layouts', () => {
    const next = rng(42)
    for (let round = 0; round < 200; round++) {
      const scale = [64, 64 * KiB, 3 * MiB, 9 * MiB][next(4)]!
      const tensors: TensorRange[] = []
      let at = next(4) === 0 ? 0 : next(scale) + 1
      const count = next(8)
      for (let i = 0; i < count; i++) {
        const length = next(5) === 0 ? 0 : next(scale) + 1
        tensors.push({ offset: at, length })
        at += length + (next(2) === 0 ? 0 : next(scale))
      }
      const fileSize = at + (next(2) === 0 ? 0 : next(scale))
      // Shuffle (Fisher-Yates): the planner must sort.
      for (let i = tensors.length - 1; i > 0; i--) {
        const j = next(i + 1)
        ;[tensors[i], tensors[j]] = [tensors[j]!, tensors[i]!]
      }
      const regions = modelRegions(fileSize, tensors)
      let end = 0
      for (const r of regions) { expect(r.offset).toBe(end); expect(r.length).toBeGreaterThan(0); end += r.length }
      expect(end).toBe(fileSize)
      const starts = planModelChunks(regions, r => fixedChunks(r.length, STRUCTURE_CDC.max))
      checkPlan(starts, fileSize, tensors)
      for (let i = 1; i < starts.length; i++) expect(starts[i]!).toBeGreaterThan(starts[i - 1]!)
    }
  })
})
