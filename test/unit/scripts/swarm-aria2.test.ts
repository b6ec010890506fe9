import { describe, expect, it } from 'vitest'
import { defaultPieceBytes } from '../../../scripts/baselines/swarm-aria2.js'

const KiB = 1024
const MiB = 1024 * KiB

describe('defaultPieceBytes (libtorrent\'s automatic piece size)', () => {
  it('gives the benchmark files the pieces libtorrent would', () => {
    expect(defaultPieceBytes(64 * MiB)).toBe(128 * KiB)
    expect(defaultPieceBytes(Math.round(64.8 * MiB))).toBe(128 * KiB)
    expect(defaultPieceBytes(Math.round(247.5 * MiB))).toBe(256 * KiB)
    expect(defaultPieceBytes(256 * MiB)).toBe(256 * KiB)
  })

  it('steps up one byte past each of libtorrent\'s size limits', () => {
    // libtorrent's table: the largest size each piece size is used for.
    const limits: Array<[number, number]> = [
      [2684355, 16 * KiB], [10737418, 32 * KiB], [42949673, 64 * KiB], [171798692, 128 * KiB], [687194767, 256 * KiB],
      [2748779069, 512 * KiB], [10995116278, MiB], [43980465111, 2 * MiB], [175921860444, 4 * MiB], [703687441777, 8 * MiB]
    ]
    for (const [size, piece] of limits) {
      expect(defaultPieceBytes(size)).toBe(piece)
      expect(defaultPieceBytes(size + 1)).toBe(piece * 2)
    }
    expect(defaultPieceBytes(1)).toBe(16 * KiB)
    expect(defaultPieceBytes(2 ** 50)).toBe(16 * MiB)
  })
})
