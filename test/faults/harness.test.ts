/**
 * The control for the fault suite: a peer built by `HostilePeer` that behaves serves a version a
 * real daemon pulls byte-identical. Every attack in test/faults/ starts from this peer, so when an
 * attack is refused it is the attack that was refused, not a peer that never worked.
 */
import { createHash, randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Harness } from '../e2e/helpers.js'
import { HostilePeer, fileOf, manifestOf } from './hostile-peer.js'

describe('hostile peer harness', () => {
  let h: Harness
  let peer: HostilePeer
  beforeAll(async () => {
    h = await Harness.create('faults-harness', { rpc: 'direct' })
    peer = await HostilePeer.start()
  })
  afterAll(async () => {
    await peer.stop()
    await h.close()
  })

  it('an honest peer built from the harness serves a version a daemon pulls byte-identical', async () => {
    const bytes = randomBytes(3 * 1024 * 1024 + 12_345)
    const { file, chunks } = fileOf('weights.bin', bytes)
    for (const [id, c] of chunks) peer.chunks.set(id, c)
    const version = peer.serveManifest(manifestOf('org/control', [file]))
    const victim = await h.node('victim', { config: { p2p: { dht: false } } })
    await peer.dial(victim.addr)
    const r = await victim.d.cli(['pull', `org/control@${version}`, '--json'])
    expect(r.code, r.stderr).toBe(0)
    const result = r.stdout.trim().split('\n').map(l => JSON.parse(l) as { type: string, result?: { path: string } }).find(l => l.type === 'result')?.result
    const pulled = await readFile(join(result!.path, 'weights.bin'))
    expect(createHash('sha256').update(pulled).digest('hex')).toBe(createHash('sha256').update(bytes).digest('hex'))
  })
})
