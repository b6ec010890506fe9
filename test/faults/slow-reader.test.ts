/**
 * A requester that stops reading must not take a seed's upload from everyone else.
 *
 * The attack, as found on loopback: a peer opens 4 chunk streams to a seed, sends 240 urgent
 * WANTs, then stops reading (its streams paused, so its yamux windows stay shut). Every upload slot
 * of the seed then waited for a drain that never came; an honest puller's requests were answered
 * QUEUED and never served, the pull failed with FETCH_STALLED, and the puller banned the honest
 * seed as a staller.
 *
 * Now: the attacker holds at most its share of the seed's slots (`transfer.uploadSlotsPerPeer`), its
 * streams are aborted once they read nothing for `transfer.sendStallSeconds`, and it is penalised
 * (`unread`, banned at the second); the honest pull completes byte-identical and the seed stays in
 * good standing with the puller.
 */
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { CID } from 'multiformats/cid'
import * as varint from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decodeManifest } from '../../src/core/manifest.js'
import { blockCount } from '../../src/core/tree.js'
import { CHUNKS_PROTOCOL, MAX_SPAN_BLOCKS } from '../../src/protocol/chunks/constants.js'
import { ChunkRequest } from '../../src/protocol/chunks/pb/chunks.js'
import { blockSizeOf } from '../../src/core/manifest.js'
import { until, Harness, writeModelFolder } from '../e2e/helpers.js'
import { HostilePeer } from './hostile-peer.js'

const MiB = 1024 * 1024
const STREAMS = 4
const WANTS_PER_STREAM = 60

interface PeerRow { peerId: string, bytesReceived: number, bannedUntil?: number, offences: Record<string, number>, lastOffence?: string }

describe('a requester that stops reading', () => {
  let h: Harness
  let attacker: HostilePeer
  beforeAll(async () => {
    h = await Harness.create('faults-slow-reader', { rpc: 'direct' })
    attacker = await HostilePeer.start()
  })
  afterAll(async () => {
    await attacker.stop()
    await h.close()
  })

  it('holds only its share of the seed\'s slots, is cut off and penalised; an honest pull completes and the seed is not banned', async () => {
    const model = await writeModelFolder(await h.dir('model'), { bytes: 48 * MiB, seed: 'slow-reader' })
    const p2p = { dht: false }
    const seed = await h.node('seed', { config: { p2p, transfer: { sendStallSeconds: 5 } } })
    const { version } = await seed.d.json<{ version: string }>(['add', model, '--name', 'm'])

    // The attacker learns the chunks and their block size from the seed's manifest, as any peer
    // can, and asks for whole chunks (as many blocks of each as one span may hold).
    const seedId = peerIdFromString(seed.id)
    await attacker.dial(seed.addr)
    const manifestBytes = await attacker.node.services.manifests.fetch(seedId, version)
    const manifest = decodeManifest(manifestBytes!, version)
    const blockSize = blockSizeOf(manifest)
    const chunks = manifest.files.flatMap(f => f.chunks)
    const streams: Stream[] = []
    for (let s = 0; s < STREAMS; s++) {
      const stream = await attacker.stream(seed.addr, CHUNKS_PROTOCOL)
      stream.maxReadBufferLength = 512 * MiB
      stream.pause() // never read: no window updates, so the seed's sends stop at the first window
      for (let i = 0; i < WANTS_PER_STREAM; i++) {
        const c = chunks[(s * WANTS_PER_STREAM + i) % chunks.length]!
        const count = Math.min(MAX_SPAN_BLOCKS, blockCount(c.size, blockSize))
        const frame = ChunkRequest.encode({ type: ChunkRequest.Type.WANT, id: i + 1, cid: CID.parse(c.id).bytes, urgent: true, first: 0, count, blockSize })
        stream.send(new Uint8ArrayList(varint.encode(frame.byteLength), frame))
      }
      streams.push(stream)
    }
    // The seed's sends to the attacker are stuck once a whole stream window (8 MiB, the attacker's
    // yamux setting) has arrived unread.
    await until('the attacker\'s window to fill', async () => streams.reduce((n, s) => n + s.readBufferLength, 0) >= 8 * MiB ? true : undefined)

    const puller = await h.node('puller', { peers: [seed.addr], config: { p2p, transfer: { stallSeconds: 20 } } })
    const r = await puller.d.cli(['pull', `m@${version}`, '--json'])
    expect(r.code, r.stderr).toBe(0)
    const result = r.stdout.trim().split('\n').map(l => JSON.parse(l) as { type: string, result?: { path: string } }).find(l => l.type === 'result')?.result
    const pulled = await readFile(join(result!.path, 'model.safetensors'))
    const source = await readFile(join(model, 'model.safetensors'))
    expect(createHash('sha256').update(pulled).digest('hex')).toBe(createHash('sha256').update(source).digest('hex'))
    const seedRow = (await puller.d.json<PeerRow[]>(['peers'])).find(row => row.peerId === seed.id)
    expect(seedRow?.offences.stall, JSON.stringify(seedRow)).toBeUndefined()
    expect(seedRow?.bannedUntil, JSON.stringify(seedRow)).toBeUndefined()

    // The attacker's streams were aborted for reading nothing, and it is on the seed's record.
    const row = await until('the seed to penalise the attacker', async () => {
      const rows = await seed.d.json<PeerRow[]>(['peers'])
      return rows.find(x => x.peerId === attacker.peerId && (x.offences.unread ?? 0) >= 1)
    })
    expect(row.lastOffence).toMatch(/^unread: the peer read nothing of \d+ bytes waiting to be sent for 5 s \(it stopped reading\)$/)
    await until('the attacker\'s streams to be closed', async () => streams.every(s => s.status !== 'open') ? true : undefined)
  })
})
