import { describe, expect, it } from 'vitest'
import {
  CDC_AVG_SIZE, CDC_MAX_SIZE, CDC_MIN_SIZE, MAX_CHUNK_SIZE, TENSOR_PIECE_SIZE,
  fixedChunks, planTensorChunks, type TensorRange
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

/** Asserts what every tensor plan MUST satisfy (see the module doc of core/chunking.ts). */
function checkPlan (starts: number[], fileSize: number, headerLength: number, tensors: TensorRange[]): void {
  if (fileSize === 0) { expect(starts).toEqual([]); return }
  expect(starts[0]).toBe(0)
  for (const [s, e] of spans(starts, fileSize)) {
    expect(e).toBeGreaterThan(s)
    expect(e - s).toBeLessThanOrEqual(MAX_CHUNK_SIZE)
  }
  const set = new Set(starts)
  if (headerLength < fileSize && headerLength > 0 && tensors.some(t => t.length > 0 && t.offset === headerLength)) {
    expect(set.has(headerLength)).toBe(true)
  }
  for (const t of tensors) {
    if (t.length === 0) continue
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

describe('planTensorChunks', () => {
  it('gives an empty file no chunks, and a file without header or tensors a fixed plan', () => {
    expect(planTensorChunks(0, 0, [])).toEqual([])
    expect(planTensorChunks(10 * MiB, 0, [])).toEqual(fixedChunks(10 * MiB))
    expect(planTensorChunks(100, 0, [])).toEqual([0])
  })

  it('starts a chunk at the header end and at every tensor (safetensors layout)', () => {
    const tensors = [{ offset: 108, length: 1000 }, { offset: 1108, length: 2000 }, { offset: 3108, length: 50 }]
    expect(planTensorChunks(3158, 108, tensors)).toEqual([0, 108, 1108, 3108])
  })

  it('splits a large tensor into pieces aligned to its start', () => {
    const tensor = { offset: 100, length: 2 * TENSOR_PIECE_SIZE + 7 }
    const fileSize = tensor.offset + tensor.length
    expect(planTensorChunks(fileSize, 100, [tensor]))
      .toEqual([0, 100, 100 + TENSOR_PIECE_SIZE, 100 + 2 * TENSOR_PIECE_SIZE])
  })

  it('makes a non-empty gap after a tensor its own chunk, and no chunk for an empty one', () => {
    const tensors = [{ offset: 64, length: 100 }, { offset: 192, length: 64 }, { offset: 256, length: 30 }]
    // 64..164 tensor, 164..192 padding, 192..256 tensor (no gap), 256..286 tensor, 286..300 trailing bytes
    expect(planTensorChunks(300, 64, tensors)).toEqual([0, 64, 164, 192, 256, 286])
  })

  it('cuts a large gap in MAX_CHUNK_SIZE steps from its start', () => {
    const tensors = [{ offset: 10, length: 5 }, { offset: 15 + 2 * MAX_CHUNK_SIZE + 3, length: 1 }]
    const fileSize = tensors[1]!.offset + 1 + MAX_CHUNK_SIZE + 1
    expect(planTensorChunks(fileSize, 10, tensors)).toEqual([
      0, 10, 15, 15 + MAX_CHUNK_SIZE, 15 + 2 * MAX_CHUNK_SIZE,
      tensors[1]!.offset, tensors[1]!.offset + 1, tensors[1]!.offset + 1 + MAX_CHUNK_SIZE
    ])
  })

  it('lets padding after the header join the header chunk when it fits', () => {
    // GGUF-style: header, then alignment padding up to the first tensor.
    expect(planTensorChunks(200, 90, [{ offset: 96, length: 104 }])).toEqual([0, 96])
    // Header exactly MAX_CHUNK_SIZE: the padding cannot join, it gets its own chunk.
    const h = MAX_CHUNK_SIZE
    expect(planTensorChunks(h + 32 + 10, h, [{ offset: h + 32, length: 10 }])).toEqual([0, h, h + 32])
    // No header but leading bytes before the first tensor.
    expect(planTensorChunks(200, 0, [{ offset: 96, length: 104 }])).toEqual([0, 96])
  })

  it('splits a header longer than MAX_CHUNK_SIZE from offset 0', () => {
    const h = 2 * MAX_CHUNK_SIZE + 5
    const fileSize = h + 100
    expect(planTensorChunks(fileSize, h, [{ offset: h, length: 100 }]))
      .toEqual([0, MAX_CHUNK_SIZE, 2 * MAX_CHUNK_SIZE, h])
    // The last header chunk takes following padding when it fits.
    expect(planTensorChunks(fileSize + 8, h, [{ offset: h + 8, length: 100 }]))
      .toEqual([0, MAX_CHUNK_SIZE, 2 * MAX_CHUNK_SIZE, h + 8])
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
      const starts = planTensorChunks(fileSize, headerLength, tensors)
      checkPlan(starts, fileSize, headerLength, tensors)
      return relativePieces(starts, fileSize, ours)
    })
    const expected: Array<[number, number]> = [
      [0, TENSOR_PIECE_SIZE], [TENSOR_PIECE_SIZE, 2 * TENSOR_PIECE_SIZE],
      [2 * TENSOR_PIECE_SIZE, 3 * TENSOR_PIECE_SIZE], [3 * TENSOR_PIECE_SIZE, length]
    ]
    for (const pieces of results) expect(pieces).toEqual(expected)
  })

  it('accepts tensors in any order', () => {
    const tensors = [{ offset: 64, length: 100 }, { offset: 192, length: 64 }, { offset: 256, length: 30 }]
    const shuffled = [tensors[2]!, tensors[0]!, tensors[1]!]
    expect(planTensorChunks(300, 64, shuffled)).toEqual(planTensorChunks(300, 64, tensors))
    expect(shuffled[0]!.offset).toBe(256) // the input is not reordered in place
  })

  it('adds no boundary for zero-length tensors', () => {
    const tensors = [{ offset: 64, length: 100 }, { offset: 170, length: 0 }, { offset: 164, length: 0 }, { offset: 300, length: 0 }]
    expect(planTensorChunks(300, 64, tensors)).toEqual([0, 64, 164])
  })

  it('refuses overlapping tensors', () => {
    const cases: TensorRange[][] = [
      [{ offset: 10, length: 10 }, { offset: 19, length: 5 }],
      [{ offset: 19, length: 5 }, { offset: 10, length: 10 }],
      [{ offset: 10, length: 10 }, { offset: 10, length: 10 }],
      [{ offset: 10, length: 20 }, { offset: 12, length: 2 }]
    ]
    for (const tensors of cases) {
      expect(() => planTensorChunks(100, 10, tensors)).toThrow(expect.objectContaining({ name: 'InvalidInputError' }))
    }
  })

  it('refuses tensors outside the data region and bad numbers', () => {
    const bad: Array<[number, number, TensorRange[]]> = [
      [100, 10, [{ offset: 5, length: 10 }]], // inside the header
      [100, 10, [{ offset: 5, length: 0 }]], // even when empty
      [100, 10, [{ offset: 95, length: 6 }]], // past the end
      [100, 10, [{ offset: 101, length: 0 }]],
      [100, 101, []], // header longer than the file
      [100, 10, [{ offset: 10.5, length: 1 }]],
      [100, 10, [{ offset: 10, length: -1 }]],
      [100, 10, [{ offset: Number.NaN, length: 1 }]],
      [-1, 0, []],
      [2 ** 53, 0, []]
    ]
    for (const [fileSize, headerLength, tensors] of bad) {
      expect(() => planTensorChunks(fileSize, headerLength, tensors)).toThrow(expect.objectContaining({ name: 'InvalidInputError' }))
    }
  })

  it('holds its invariants on random layouts', () => {
    const next = rng(42)
    for (let round = 0; round < 200; round++) {
      const scale = [64, 64 * KiB, 3 * MiB, 9 * MiB][next(4)]!
      const headerLength = next(4) === 0 ? 0 : next(scale) + 1
      const tensors: TensorRange[] = []
      let at = headerLength + (next(3) === 0 ? next(scale) : 0)
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
      const starts = planTensorChunks(fileSize, headerLength, tensors)
      checkPlan(starts, fileSize, headerLength, tensors)
      for (let i = 1; i < starts.length; i++) expect(starts[i]!).toBeGreaterThan(starts[i - 1]!)
    }
  })
})
