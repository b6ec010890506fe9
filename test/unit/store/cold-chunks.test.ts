import { readdir, readFile, stat, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { chunkIdOf } from '../../../src/core/digest.js'
import { AbortedError, DigestMismatchError, MalformedDataError, TruncatedDataError } from '../../../src/core/errors.js'
import { COLD_FORMAT, decodeColdBlocks, decodeColdChunk, encodeColdChunk, maxColdFileBytes, parseColdChunk, readColdChunk, writeColdChunk } from '../../../src/store/cold-chunks.js'
import { testData } from '../../../scripts/lib/weights.js'
import { tempDir } from '../../helpers/tmp.js'
import { rejection } from '../../helpers/assert.js'

const KiB = 1024

describe('cold chunk files', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeEach(async () => { ({ dir, cleanup } = await tempDir()) })
  afterEach(async () => { await cleanup() })

  it('keeps a bf16 chunk in about two thirds of its size and reads it back byte for byte, whole or by blocks', async () => {
    const bytes = testData('BF16', 1024 * KiB + 1000, 1)
    const id = chunkIdOf(bytes)
    const stored = await writeColdChunk(dir, dir, id, bytes, { blockSize: 256 * KiB, dtype: 'BF16' })
    expect(await readdir(dir)).toEqual([id])
    expect((await stat(join(dir, id))).size).toBe(stored)
    expect((await stat(join(dir, id))).mode & 0o777).toBe(0o444)
    expect(stored / bytes.length).toBeLessThan(0.68)
    expect(Buffer.from(await readColdChunk(join(dir, id), id)).equals(Buffer.from(bytes))).toBe(true)
    const view = parseColdChunk(await readFile(join(dir, id)), id)
    expect(view.blocks.length).toBe(5)
    const span = decodeColdBlocks(view, 3, 2, new Uint8Array(512 * KiB), id)
    expect(Buffer.from(span).equals(Buffer.from(bytes.subarray(768 * KiB)))).toBe(true)
  })

  it('stores random bytes raw, a few bytes a block over their size', () => {
    const bytes = testData('random', 100 * KiB, 2)
    const file = encodeColdChunk(bytes, 16 * KiB, undefined)
    const blocks = Math.ceil(bytes.length / (16 * KiB))
    expect(file.length).toBe(bytes.length + 17 + blocks * (4 + 6))
    expect(Buffer.from(decodeColdChunk(file, chunkIdOf(bytes))).equals(Buffer.from(bytes))).toBe(true)
  })

  it('refuses to keep bytes under an id they do not hash to, and writes nothing', async () => {
    const bytes = testData('BF16', 64 * KiB, 3)
    const other = chunkIdOf(testData('BF16', 64 * KiB, 4))
    const err = await rejection(writeColdChunk(dir, dir, other, bytes, { blockSize: 16 * KiB }))
    expect(err).toBeInstanceOf(DigestMismatchError)
    expect(err.message).toBe(`refusing to keep bytes as cold chunk ${other}: they do not hash to it`)
    expect(await readdir(dir)).toEqual([])
  })

  it('stops when aborted, leaving no file', async () => {
    const bytes = testData('F32', 64 * KiB, 5)
    const err = await rejection(writeColdChunk(dir, dir, chunkIdOf(bytes), bytes, { blockSize: 16 * KiB, signal: AbortSignal.abort() }))
    expect(err).toBeInstanceOf(AbortedError)
    expect(await readdir(dir)).toEqual([])
  })

  it('refuses a damaged file: bytes that decode to something else, a cut, a wrong magic or format, lying sizes', async () => {
    const bytes = testData('random', 40 * KiB, 6)
    const id = chunkIdOf(bytes)
    const file = encodeColdChunk(bytes, 16 * KiB, undefined)
    const flipped = Uint8Array.from(file)
    flipped[file.length - 10]! ^= 1
    await writeFile(join(dir, 'flipped'), flipped)
    const damaged = await rejection(readColdChunk(join(dir, 'flipped'), id))
    expect(damaged).toBeInstanceOf(DigestMismatchError)
    expect(damaged.message).toBe(`cold chunk ${id} decodes to bytes that do not hash to its id: the file is damaged`)

    await writeFile(join(dir, 'cut'), file.subarray(0, file.length - 1))
    const cut = await rejection(readColdChunk(join(dir, 'cut'), id))
    expect(cut).toBeInstanceOf(TruncatedDataError)
    expect(cut.message).toBe(`cold chunk ${id}: block 2 of ${file.length - 17 - 12 - 2 * (16 * KiB + 6)} bytes runs past the end of the file`)

    const magic = Uint8Array.from(file)
    magic[0] = 0x58
    expect(() => decodeColdChunk(magic, id)).toThrow(new MalformedDataError(`cold chunk ${id} does not start with "SHCC": not a cold chunk file`))
    const format = Uint8Array.from(file)
    format[4] = COLD_FORMAT + 1
    expect(() => decodeColdChunk(format, id)).toThrow(`cold chunk ${id} is in format 2; this build reads format 1 (upgrade shoal)`)
    const count = Uint8Array.from(file)
    new DataView(count.buffer).setUint32(13, 4, true)
    expect(() => decodeColdChunk(count, id)).toThrow(`cold chunk ${id} declares 4 blocks; 40960 bytes in blocks of 16384 make 3`)
    const blockSize = Uint8Array.from(file)
    new DataView(blockSize.buffer).setUint32(5, 1000, true)
    expect(() => decodeColdChunk(blockSize, id)).toThrow(`cold chunk ${id} declares blocks of 1000 bytes, not a power of two from 16384 to 4194304`)
    const trailing = new Uint8Array(file.length + 3)
    trailing.set(file)
    expect(() => decodeColdChunk(trailing, id)).toThrow(`cold chunk ${id}: 3 bytes follow the last block`)
  })

  it('refuses a file larger than any cold chunk before reading it', async () => {
    const path = join(dir, 'huge')
    await writeFile(path, '')
    await truncate(path, maxColdFileBytes + 1)
    const err = await rejection(readColdChunk(path, chunkIdOf(new Uint8Array(1))))
    expect(err).toBeInstanceOf(MalformedDataError)
    expect(err.message).toMatch(new RegExp(`^cold chunk \\S+ is ${maxColdFileBytes + 1} bytes, more than any chunk's cold file can be \\(${maxColdFileBytes}\\)$`))
  })
})
