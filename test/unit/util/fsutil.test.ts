/**
 * Short writes: a file system about to be full often writes less than asked before it fails with
 * ENOSPC, and a short count ignored left a blob truncated on disk while its record claimed every
 * byte (found by test/faults/disk-full.test.ts). Every store write goes on until all is written.
 */
import { describe, expect, it } from 'vitest'
import { writeAt, writeFully } from '../../../src/util/fsutil.js'
import { seededBytes } from '../../helpers/random.js'

/** A file in memory whose writes take at most `limit` bytes at a time (0: none at all). */
class ShortFile {
  readonly bytes = new Uint8Array(64 * 1024)
  constructor (private readonly limit: number) {}

  async write (buffer: Uint8Array, from: number, length: number, position: number): Promise<{ bytesWritten: number, buffer: Uint8Array }> {
    const n = Math.min(length, this.limit)
    this.bytes.set(buffer.subarray(from, from + n), position)
    return { bytesWritten: n, buffer }
  }

  async writev (buffers: Uint8Array[], position: number): Promise<{ bytesWritten: number, buffers: Uint8Array[] }> {
    const first = buffers[0] ?? new Uint8Array(0)
    const { bytesWritten } = await this.write(first, 0, first.byteLength, position)
    return { bytesWritten, buffers }
  }
}

describe('writes that write less than asked', () => {
  const data = seededBytes(20_000, 7)

  it('writeAt writes every byte of one buffer, and of parts, when each write takes only some', async () => {
    const whole = new ShortFile(3000)
    await writeAt(whole as never, data, 100)
    expect(Buffer.from(whole.bytes.subarray(100, 100 + data.length)).equals(data)).toBe(true)

    const parts = new ShortFile(2500)
    await writeAt(parts as never, [data.subarray(0, 7000), data.subarray(7000, 7001), data.subarray(7001)], 50)
    expect(Buffer.from(parts.bytes.subarray(50, 50 + data.length)).equals(data)).toBe(true)
  })

  it('a write that makes no progress fails instead of leaving a hole', async () => {
    await expect(writeFully(new ShortFile(0) as never, data, 0, data.length, 0)).rejects.toMatchObject({ code: 'EIO', message: 'a write at 0 wrote nothing' })
  })
})
