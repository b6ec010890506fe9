import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import { open, readFile, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { DIRECT_ALIGN, DirectWrites, MIN_DIRECT_BYTES, STAGE_BYTES } from '../../../src/store/direct-io.js'
import { tempDir } from '../../helpers/tmp.js'

/** Splits `bytes` into parts of random sizes, as a transport delivers them. */
function parts (bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = []
  for (let at = 0; at < bytes.byteLength;) {
    const n = Math.min(bytes.byteLength - at, 1 + Math.floor(Math.random() * 70_000))
    out.push(bytes.subarray(at, at + n))
    at += n
  }
  return out
}

describe('DirectWrites', () => {
  let dir: string
  let cleanup: () => Promise<void>
  const handles: Array<{ close: () => Promise<void> }> = []

  beforeEach(async () => { ({ dir, cleanup } = await tempDir()) })
  afterEach(async () => {
    for (const h of handles.splice(0)) await h.close()
    await cleanup()
  })

  async function file (size: number): Promise<{ path: string, buffered: FileHandle, direct: DirectWrites }> {
    const path = join(dir, `f-${size}`)
    const buffered = await open(path, 'w+')
    await buffered.truncate(size)
    handles.push(buffered)
    const direct = await DirectWrites.open(path)
    if (direct === undefined) throw new Error(`this file system refuses O_DIRECT in ${dir}; the test needs one that has it`)
    handles.push(direct)
    return { path, buffered, direct }
  }

  it('writes chunks at any offset, in one buffer or many parts, to the same bytes as a buffered write', async () => {
    // Chunk sizes that hit every case: under a page, an unaligned middle too short, aligned at one
    // end, aligned at both, several staging buffers, and the file's unaligned end.
    const sizes = [100, 5_000, MIN_DIRECT_BYTES + 3 * DIRECT_ALIGN - 7, 3 * STAGE_BYTES + 12_345, DIRECT_ALIGN * 40, 777_777, 4 * 1024 * 1024, 1, 300_001]
    const expected = randomBytes(sizes.reduce((a, b) => a + b, 0))
    const { path, buffered, direct } = await file(expected.byteLength)
    const hows: string[] = []
    let offset = 0
    const writes = sizes.map((size, i) => {
      const bytes = expected.subarray(offset, offset + size)
      const at = offset
      offset += size
      return async () => {
        const input = i % 2 === 0 ? bytes : parts(bytes)
        const how = await direct.write(buffered, input, size, at)
        hows.push(how)
        if (how === 'short') await buffered.writev(input instanceof Uint8Array ? [input] : input, at)
      }
    })
    // Out of order and concurrently, as a pull writes them.
    await Promise.all(writes.reverse().map(async w => await w()))
    await buffered.datasync()
    expect(hows.filter(h => h === 'written').length).toBeGreaterThanOrEqual(5)
    expect(hows).toContain('short')
    expect(Buffer.compare(await readFile(path), expected)).toBe(0)
  })

  it('says refused when the file system rejects a direct write, and the range is then written buffered', async () => {
    const size = 2 * STAGE_BYTES + 10
    const expected = randomBytes(size)
    const { path, buffered } = await file(size + 3)
    const einval = Object.assign(new Error('EINVAL: invalid argument, write'), { code: 'EINVAL' })
    const refusing = new DirectWrites({ write: async () => { throw einval } } as unknown as FileHandle)
    expect(await refusing.write(buffered, expected, size, 3)).toBe('refused')
    await buffered.write(expected, 0, size, 3)
    expect(Buffer.compare((await readFile(path)).subarray(3), expected)).toBe(0)
  })

  it('passes other errors on', async () => {
    const { buffered } = await file(STAGE_BYTES)
    const full = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' })
    const failing = new DirectWrites({ write: async () => { throw full } } as unknown as FileHandle)
    await expect(failing.write(buffered, randomBytes(STAGE_BYTES), STAGE_BYTES, 0)).rejects.toThrow(/ENOSPC/)
  })
})
