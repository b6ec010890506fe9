import { describe, expect, it } from 'vitest'
import { readAhead } from '../../../src/util/read-ahead.js'

describe('readAhead', () => {
  it('reads one item ahead of the consumer, into the buffers in turn, and yields in order', async () => {
    const buffers = [Buffer.alloc(4), Buffer.alloc(4)]
    const log: string[] = []
    const items = [1, 2, 3, 4].map(n => ({ n, size: n === 4 ? 2 : 4 }))
    const read = async (item: { n: number, size: number }, into: Buffer): Promise<number> => {
      log.push(`read ${item.n} into ${buffers.findIndex(b => b.buffer === into.buffer && b.byteOffset === into.byteOffset)}`)
      into.fill(item.n)
      return item.n
    }
    for await (const { item, buf, result } of readAhead(items.values(), buffers, read, () => {})) {
      log.push(`got ${item.n}`)
      expect(result).toBe(item.n)
      expect([...buf]).toEqual(new Array(item.size).fill(item.n))
    }
    // Item i+2 is read only after the consumer asked for item i+1, into item i's buffer.
    expect(log).toEqual(['read 1 into 0', 'read 2 into 1', 'got 1', 'read 3 into 0', 'got 2', 'read 4 into 1', 'got 3', 'got 4'])
  })

  it('stops at the abort check, and a read in flight settles before it returns', async () => {
    let settled = false
    let aborted = false
    const read = async (item: { size: number }): Promise<void> => {
      await new Promise(resolve => setTimeout(resolve, item.size))
      settled = true
    }
    const gen = readAhead([{ size: 1 }, { size: 20 }, { size: 1 }].values(), [Buffer.alloc(32), Buffer.alloc(32)], read, () => { if (aborted) throw new Error('add was cancelled') })
    await gen.next()
    settled = false
    aborted = true
    await expect(gen.next()).rejects.toThrow('add was cancelled')
    expect(settled).toBe(true)
  })
})
