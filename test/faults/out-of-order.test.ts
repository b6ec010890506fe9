/**
 * A peer that sends every message type out of order, on every protocol, to a real daemon — as a
 * requester to its chunk server, as a server to its chunk requests during a pull, and on the
 * manifest and head-sync protocols. The daemon must stay up and answer its RPC, refuse or ignore
 * each message (penalising the peer where the protocol is broken), and complete an honest pull from
 * an honest seed at the same time, byte-identical.
 */
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Stream } from '@libp2p/interface'
import { CID } from 'multiformats/cid'
import * as varint from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { chunkIdOf } from '../../src/core/digest.js'
import { CHUNKS_PROTOCOL } from '../../src/protocol/chunks/constants.js'
import { encodeBlock } from '../../src/protocol/chunks/block.js'
import { ChunkRequest, ChunkResponse } from '../../src/protocol/chunks/pb/chunks.js'
import { HEADS_PROTOCOL } from '../../src/protocol/heads/index.js'
import { SyncMessage } from '../../src/protocol/heads/pb/heads.js'
import { MANIFEST_PROTOCOL } from '../../src/protocol/manifest/index.js'
import { ManifestRequest, ManifestResponse } from '../../src/protocol/manifest/pb/manifest.js'
import { until, Harness, writeModelFolder } from '../e2e/helpers.js'
import { HostilePeer } from './hostile-peer.js'

const MiB = 1024 * 1024

interface PeerRow { peerId: string, bannedUntil?: number, offences: Record<string, number>, lastOffence?: string }

const frame = (bytes: Uint8Array | Uint8ArrayList): Uint8ArrayList => new Uint8ArrayList(varint.encode(bytes.byteLength), bytes)
const request = (r: Partial<ChunkRequest>): Uint8ArrayList => frame(ChunkRequest.encode({ type: ChunkRequest.Type.WANT, id: 0, cid: new Uint8Array(0), urgent: false, ...r }))
const response = (r: Partial<ChunkResponse>): Uint8ArrayList => frame(ChunkResponse.encode({
  type: ChunkResponse.Type.BLOCK, id: 0, data: new Uint8Array(0), version: new Uint8Array(0), indices: [], complete: false, code: '', message: '', load: 0, holder: '', ...r
} as ChunkResponse))
const sync = (m: Partial<SyncMessage>): Uint8ArrayList => frame(SyncMessage.encode({ digest: new Uint8Array(0), match: false, entries: [], heads: [], want: [], ...m } as SyncMessage))

function sendAll (stream: Stream, frames: Uint8ArrayList[]): void {
  for (const f of frames) {
    try { stream.send(f) } catch { return } // the daemon may already have hung up: that is an answer too
  }
}

describe('a peer that sends every message out of order', () => {
  let h: Harness
  let hostile: HostilePeer
  beforeAll(async () => { h = await Harness.create('faults-out-of-order', { rpc: 'direct' }) })
  afterAll(async () => {
    await hostile?.stop()
    await h.close()
  })

  it('cannot crash or wedge a daemon on any protocol; the daemon still completes an honest pull', async () => {
    const model = await writeModelFolder(await h.dir('model'), { bytes: 24 * MiB, seed: 'out-of-order' })
    const p2p = { dht: false }
    const seed = await h.node('seed', { config: { p2p } })
    const { version } = await seed.d.json<{ version: string }>(['add', model, '--name', 'm'])
    const versionCid = CID.parse(version).bytes
    const junk = new Uint8Array(1000).fill(1)
    const junkId = CID.parse(chunkIdOf(junk)).bytes

    // As a server to the daemon's requests: answers nobody asked for, in every order, then junk.
    hostile = await HostilePeer.start({
      chunksHandler: stream => {
        stream.addEventListener('message', () => {}) // reads and ignores every request
        sendAll(stream, [
          response({ type: ChunkResponse.Type.HAVE_UPDATE, version: versionCid, indices: [0, 1, 2, 10_000_000] }),
          response({ type: ChunkResponse.Type.BLOCK, id: 77, data: junk }),
          frame(encodeBlock(12345, 3, 0, new Uint8Array(0), junk)),
          response({ type: ChunkResponse.Type.QUEUED, id: 999 }),
          response({ type: ChunkResponse.Type.DONT_HAVE, id: 1000 }),
          response({ type: ChunkResponse.Type.ERROR, id: 1001, code: 'NO_SUCH_CODE', message: 'x'.repeat(1000) }),
          response({ type: ChunkResponse.Type.HAVE, version: junkId, complete: true }),
          response({ type: ChunkResponse.Type.HAVE, version: versionCid, data: new Uint8Array(3) }),
          frame(Uint8Array.from([0x08, 0x63, 0x10, 0x01]))
        ])
      }
    })
    const victim = await h.node('victim', { peers: [seed.addr], config: { p2p, transfer: { stallSeconds: 30 } } })
    await hostile.dial(victim.addr)

    // As a requester to the daemon's chunk server: every request type before its time, twice, and
    // responses sent where requests belong.
    const asRequester = await hostile.stream(victim.addr, CHUNKS_PROTOCOL)
    asRequester.addEventListener('message', () => {})
    sendAll(asRequester, [
      request({ type: ChunkRequest.Type.RECEIVED, id: 5 }),
      request({ type: ChunkRequest.Type.CANCEL, id: 6 }),
      request({ type: ChunkRequest.Type.UNINTEREST, cid: versionCid }),
      request({ type: ChunkRequest.Type.WANT, id: 7, cid: junkId }),
      request({ type: ChunkRequest.Type.WANT, id: 7, cid: junkId }),
      request({ type: ChunkRequest.Type.CANCEL, id: 7 }),
      request({ type: ChunkRequest.Type.RECEIVED, id: 7 }),
      request({ type: ChunkRequest.Type.INTEREST, cid: junkId }),
      request({ type: ChunkRequest.Type.INTEREST, cid: versionCid }),
      request({ type: ChunkRequest.Type.INTEREST, cid: versionCid }),
      request({ type: ChunkRequest.Type.WANT, id: 8, cid: versionCid }),
      response({ type: ChunkResponse.Type.BLOCK, id: 9, data: junk }),
      frame(Uint8Array.from([0x08, 0x63]))
    ])
    // Manifest protocol: a response where the request belongs, then a second frame; and a stream
    // that says nothing at all (the daemon's deadline ends it).
    const manifestStream = await hostile.stream(victim.addr, MANIFEST_PROTOCOL)
    sendAll(manifestStream, [frame(ManifestResponse.encode({ found: true, manifest: junk })), frame(ManifestRequest.encode({ version: versionCid }))])
    const silent = await hostile.stream(victim.addr, MANIFEST_PROTOCOL)
    // Head sync: step 4 first, then step 3, then step 1 twice.
    const headStream = await hostile.stream(victim.addr, HEADS_PROTOCOL)
    headStream.addEventListener('message', () => {})
    sendAll(headStream, [sync({ heads: [junk] }), sync({ want: [{ model: 'm', label: 'prod', wall: 1n, counter: 0, id: new Uint8Array(32) }] }), sync({ digest: junk.subarray(0, 32) }), sync({ match: true })])

    // The daemon answers, pulls from the honest seed, and writes the right bytes.
    const status = await victim.d.cli(['status', '--json'])
    expect(status.code, status.stderr).toBe(0)
    const r = await victim.d.cli(['pull', `m@${version}`, '--json'])
    expect(r.code, r.stderr).toBe(0)
    const result = r.stdout.trim().split('\n').map(l => JSON.parse(l) as { type: string, result?: { path: string } }).find(l => l.type === 'result')?.result
    const pulled = await readFile(join(result!.path, 'model.safetensors'))
    expect(createHash('sha256').update(pulled).digest('hex')).toBe(createHash('sha256').update(await readFile(join(model, 'model.safetensors'))).digest('hex'))

    // The broken protocol is on the hostile peer's record, with a reason a person can read.
    const row = await until('the victim to record the hostile peer', async () => {
      const rows = await victim.d.json<PeerRow[]>(['peers'])
      return rows.find(x => x.peerId === hostile.peerId && Object.keys(x.offences).length > 0)
    })
    expect(row.lastOffence, JSON.stringify(row)).toMatch(/^(protocol|lie|corrupt): ./)
    await until('the silent manifest stream to be closed by the daemon', async () => silent.status !== 'open' ? true : undefined, 45_000)
    expect(victim.d.child?.exitCode).toBeNull()
    expect(victim.d.stderr).not.toMatch(/uncaught|unhandled/i)
    expect((await victim.d.cli(['verify'])).code).toBe(0)
  })
})
