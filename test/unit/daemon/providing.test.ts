/**
 * `Providing`: provider records for what the node holds, over a content routing that records what
 * it is asked to provide.
 */
import { describe, expect, it } from 'vitest'
import { encodeBlock } from '../../../src/core/digest.js'
import { Providing } from '../../../src/daemon/providing.js'

const versions = [1, 2, 3].map(n => encodeBlock({ n }).cid)

function routing (hold = false): { provide: (cid: { toString: () => string }, o?: { signal?: AbortSignal }) => Promise<void>, provided: string[] } {
  const provided: string[] = []
  return {
    provided,
    provide: async (cid, o) => {
      provided.push(cid.toString())
      // A DHT that takes its time: only the deadline or a stop ends the provide.
      if (hold) await new Promise((_resolve, reject) => { o?.signal?.addEventListener('abort', () => { reject(o.signal?.reason) }, { once: true }) })
      else throw new Error('no peers to provide to')
    }
  }
}

async function * held (): AsyncIterable<string> { yield * versions }

describe('Providing', () => {
  it('provides every held version at start, one at a time, failures dropped; and a version added later', async () => {
    const r = routing()
    const p = new Providing({ routing: r, held, dht: true })
    p.start()
    await expect.poll(() => r.provided).toEqual(versions)
    p.announce(versions[0]!)
    expect(r.provided).toEqual([...versions, versions[0]])
    p.stop()
  })

  it('has no start-up pass without the DHT, and stop ends one that waits', async () => {
    const quiet = routing()
    new Providing({ routing: quiet, held, dht: false }).start()
    await new Promise(resolve => setImmediate(resolve))
    expect(quiet.provided).toEqual([])
    const slow = routing(true)
    const p = new Providing({ routing: slow, held, dht: true })
    p.start()
    await expect.poll(() => slow.provided).toEqual([versions[0]])
    p.stop()
    await new Promise(resolve => setImmediate(resolve))
    expect(slow.provided).toEqual([versions[0]])
  })
})
