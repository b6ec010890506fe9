/**
 * Peer-to-peer transfer between real daemon processes over TCP on loopback: a seed and several
 * pullers at once, a peer killed mid-transfer, faulty peers (corrupting, lying, stalling, sending
 * oversized frames), a puller killed with SIGKILL and restarted, and the origin-only case.
 */
import { stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { weightSafetensors } from '../../scripts/lib/weights.js'
import { ShoalClient } from '../../src/rpc/client.js'
import { startOriginServer } from '../helpers/origin-server.js'
import { Harness, sleep, treeDigests, writeModelFolder, type DaemonProcess } from './helpers.js'

const MiB = 1024 * 1024

interface PeerRow { peerId: string, bytesReceived: number, wireBytesReceived: number, bannedUntil?: number, lastOffence?: string, offences: Record<string, number> }

/** The value of one series in a /metrics text (0 when absent). */
function metric (text: string, series: string): number {
  const line = text.split('\n').find(l => l.startsWith(`${series} `))
  return line === undefined ? 0 : Number(line.slice(series.length + 1))
}

/** Polls `check` until it returns a value, or fails after `ms` naming what it waited for. */
async function waitFor<T> (what: string, check: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const value = await check().catch(() => undefined)
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await sleep(50)
  }
}

async function pullAndCheck (d: DaemonProcess, ref: string, source: Record<string, string>): Promise<void> {
  const r = await d.cli(['pull', ref, '--json'])
  expect(r.code, r.stderr).toBe(0)
  const lines = r.stdout.trim().split('\n').map(l => JSON.parse(l) as { type: string, result?: { path: string } })
  const result = lines.find(l => l.type === 'result')?.result
  expect(result).toBeDefined()
  expect(await treeDigests(result!.path, { followLinks: true })).toEqual(source)
}

describe('transfer', () => {
  let h: Harness
  let model: string
  let source: Record<string, string>

  beforeAll(async () => {
    h = await Harness.create('transfer')
    model = await writeModelFolder(await h.dir('model'), { bytes: 48 * MiB })
    source = await treeDigests(model)
  })
  afterAll(async () => { await h.close() })

  it('one seed and five pullers at once: all byte-identical, pieces flow between pullers', async () => {
    // The seed's upload is capped so pullers have a reason to trade pieces among themselves.
    const seed = await h.node('seed', { config: { transfer: { uploadRate: 40 * MiB } } })
    const { version } = await seed.d.json<{ version: string }>(['add', model, '--name', 'm'])
    const pullers = await Promise.all([1, 2, 3, 4, 5].map(async i => await h.node(`puller-${i}`, { peers: [seed.addr] })))
    await Promise.all(pullers.map(async p => { await pullAndCheck(p.d, `m@${version}`, source) }))
    let fromPullers = 0
    for (const p of pullers) {
      const rows = await p.d.json<PeerRow[]>(['peers'])
      fromPullers += rows.filter(r => r.peerId !== seed.id).reduce((n, r) => n + r.bytesReceived, 0)
      expect((await p.d.cli(['verify'])).code).toBe(0)
    }
    expect(fromPullers).toBeGreaterThan(0)
    await Promise.all([seed, ...pullers].map(async n => await n.d.stop()))
  })

  it('a seed with one upload slot: requests wait in its queue past their deadline, it says QUEUED, and nobody bans it', async () => {
    // Three pullers that know only the seed (no DHT to find each other) each ask it for the
    // whole version at once; its one slot sends 1 MiB/s in arrival order, so the last puller's
    // first block starts ~12 s later, past its ~8 s deadline. Silent, that queue looked like a
    // stall and got the seed banned.
    const small = await writeModelFolder(await h.dir('model-small'), { bytes: 6 * MiB, seed: 'queued' })
    const p2p = { dht: false }
    const seed = await h.node('q-seed', { config: { p2p, transfer: { uploadSlots: 1, uploadRate: 1 * MiB } } })
    const { version } = await seed.d.json<{ version: string }>(['add', small, '--name', 'm'])
    const pullers = await Promise.all([1, 2, 3].map(async i => await h.node(`q-puller-${i}`, { peers: [seed.addr], config: { p2p } })))
    const expected = await treeDigests(small)
    const weights = (await stat(join(small, 'model.safetensors'))).size
    await Promise.all(pullers.map(async p => { await pullAndCheck(p.d, `m@${version}`, expected) }))
    for (const p of pullers) {
      // The seed was each puller's only source.
      const row = (await p.d.json<PeerRow[]>(['peers'])).find(r => r.peerId === seed.id)
      expect(row?.bytesReceived, JSON.stringify(row)).toBeGreaterThanOrEqual(weights)
      expect(row?.offences.stall, JSON.stringify(row)).toBeUndefined()
      expect(row?.bannedUntil, JSON.stringify(row)).toBeUndefined()
    }
    await Promise.all([seed, ...pullers].map(async n => await n.d.stop()))
  })

  it('a peer killed mid-transfer: the pull completes from the others', async () => {
    const config = { transfer: { uploadRate: 12 * MiB } }
    const a = await h.node('kill-a', { config })
    const { version } = await a.d.json<{ version: string }>(['add', model, '--name', 'm'])
    const b = await h.node('kill-b', { peers: [a.addr], config })
    await pullAndCheck(b.d, `m@${version}`, source)
    const c = await h.node('kill-c', { peers: [a.addr, b.addr] })
    const pulling = pullAndCheck(c.d, `m@${version}`, source)
    await sleep(1000)
    expect(await b.d.stop('SIGKILL')).toBe('SIGKILL')
    await pulling
    await Promise.all([a, c].map(async n => await n.d.stop()))
  })

  it.each([
    // [name, SHOAL_TEST_FAULTS, seed upload rate]: the pull must outlast the fault's detection.
    ['corrupt', 'corrupt', 24 * MiB],
    ['lie', 'lie', 24 * MiB],
    // A staller is judged after 30 s of silence (a congested TCP flow can go quiet for 20 s).
    ['stall', 'lie,stall', 1 * MiB],
    ['oversize', 'lie,oversize', 24 * MiB]
  ])('a %s peer: the pull completes byte-identical and the peer is banned', async (name, faults, rate) => {
    const seed = await h.node(`f-seed-${name}`, { config: { transfer: { uploadRate: rate } } })
    const { version } = await seed.d.json<{ version: string }>(['add', model, '--name', 'm'])
    const bad = await h.node(`f-bad-${name}`, { peers: [seed.addr], env: { SHOAL_TEST_FAULTS: faults } })
    // The corrupting peer flips bits in real bytes: it gets the version first (faults only
    // change what it serves).
    if (name === 'corrupt') await pullAndCheck(bad.d, `m@${version}`, source)
    const puller = await h.node(`f-puller-${name}`, {
      peers: [seed.addr, bad.addr],
      config: { transfer: { strategy: 'round-robin' } }
    })
    await pullAndCheck(puller.d, `m@${version}`, source)
    const rows = await puller.d.json<PeerRow[]>(['peers'])
    const row = rows.find(r => r.peerId === bad.id)
    expect(row?.bannedUntil, JSON.stringify(rows)).toBeGreaterThan(Date.now())
    await Promise.all([seed, bad, puller].map(async n => await n.d.stop()))
  })

  it('a puller killed with SIGKILL resumes from its verified chunks after restart', async () => {
    const seed = await h.node('r-seed', { config: { transfer: { uploadRate: 16 * MiB } } })
    const { version } = await seed.d.json<{ version: string }>(['add', model, '--name', 'm'])
    const home = await h.dir('r-puller')
    const args = ['--listen', '/ip4/127.0.0.1/tcp/0', '--peer', seed.addr]
    const first = await h.start(home, args, { SHOAL_LOG_LEVEL: 'debug' })
    void first.cli(['pull', `m@${version}`])
    // Killed mid-pull once at least 16 MiB are recorded in the index (its log says so after each
    // batch), so there is something to resume from (a fixed wait had killed it, on a loaded
    // machine, before its first chunk; a wait for bytes written, before their first batch was indexed).
    const status = new ShoalClient({ socketPath: first.socket })
    const recorded = (): number => Math.max(0, ...first.stderr.split('\n').filter(l => l.includes('"chunks recorded"')).map(l => (JSON.parse(l) as { recorded: number }).recorded))
    await waitFor('16 MiB of the version recorded', async () => recorded() >= 16 * MiB ? true : undefined)
    const atKill = (await status.status()).pulls.find(p => p.version === version)
    await first.stop('SIGKILL')
    expect(atKill?.bytes).toBeLessThan(atKill!.totalBytes)
    const second = await h.start(home, args)
    // The pull resumes by itself at start-up; a new request joins it.
    await pullAndCheck(second, `m@${version}`, source)
    const rows = await second.json<PeerRow[]>(['peers'])
    const refetched = rows.reduce((n, r) => n + r.bytesReceived, 0)
    expect(refetched).toBeLessThanOrEqual(atKill!.totalBytes - 16 * MiB)
    await Promise.all([seed.d.stop(), second.stop()])
  })

  it('origin only: no peer serves chunks, the HTTP origin does, verified the same way', async () => {
    const origin = await startOriginServer(model)
    try {
      const home = await h.dir('o-seed')
      const publisher = await h.start(home, ['--listen', '/ip4/127.0.0.1/tcp/0'])
      const { version } = await publisher.json<{ version: string }>(['add', model, '--name', 'm', '--origin', origin.url('')])
      await publisher.stop()
      // Restarted as a node that holds the manifest but serves no chunk.
      const seed = await h.node('o-seed', { env: { SHOAL_TEST_FAULTS: 'nochunks' } })
      // The manifest came from another node: its origin is used only because the puller allows it.
      const puller = await h.node('o-puller', { peers: [seed.addr], config: { transfer: { origins: [origin.url('')] } } })
      await pullAndCheck(puller.d, `m@${version}`, source)
      expect(origin.stats.bytes).toBeGreaterThanOrEqual(48 * MiB)
      const rows = await puller.d.json<PeerRow[]>(['peers'])
      expect(rows.reduce((n, r) => n + r.bytesReceived, 0)).toBe(0)
      await Promise.all([seed.d.stop(), puller.d.stop()])
    } finally {
      await origin.close()
    }
  })

  it('chunks already held locally (another version) are never fetched: a fine-tune pulls only what changed', async () => {
    const seed = await h.node('dedup-seed')
    const v1 = await seed.d.json<{ version: string }>(['add', model, '--name', 'm'])
    const tuned = await writeModelFolder(await h.dir('model-tuned'), { bytes: 48 * MiB, seed: 'v1', changeFraction: 0.1 })
    const v2 = await seed.d.json<{ version: string, parentShared: { bytes: number } }>(['add', tuned, '--name', 'm'])
    const puller = await h.node('dedup-puller', { peers: [seed.addr] })
    await pullAndCheck(puller.d, `m@${v1.version}`, source)
    const before = (await puller.d.json<PeerRow[]>(['peers'])).reduce((n, r) => n + r.bytesReceived, 0)
    await pullAndCheck(puller.d, `m@${v2.version}`, await treeDigests(tuned))
    const fetched = (await puller.d.json<PeerRow[]>(['peers'])).reduce((n, r) => n + r.bytesReceived, 0) - before
    const size = 48 * MiB
    // Only the chunks v1 lacks cross the network (about 10% of the weights, plus headers).
    expect(fetched).toBeLessThan(size * (1 - v2.parentShared.bytes) + 2 * MiB)
    expect(fetched).toBeGreaterThan(0)
    await Promise.all([seed.d.stop(), puller.d.stop()])
  })

  it('an allow-list keeps every other peer out (a private swarm without pre-shared keys)', async () => {
    // A's identity exists before the seed starts, so the seed can name it.
    const first = await h.node('allow-a')
    await first.d.stop()
    const seed = await h.node('allow-seed', { config: { p2p: { allow: [first.id] } } })
    const { version } = await seed.d.json<{ version: string }>(['add', model, '--name', 'm'])
    const a = await h.start(await h.dir('allow-a'), ['--listen', '/ip4/127.0.0.1/tcp/0', '--peer', seed.addr])
    const b = await h.node('allow-b', { peers: [seed.addr] })
    await pullAndCheck(a, `m@${version}`, source)
    const refused = await b.d.cli(['pull', `m@${version}`])
    expect(refused.code).toBe(4)
    expect(refused.stderr).toMatch(/no reachable peer has the manifest/)
    await Promise.all([seed.d.stop(), a.stop(), b.d.stop()])
  })

  it('bf16 weights cross compressed: byte-identical, fewer bytes on the wire, and a puller passes the compressed blocks on without compressing them again', async () => {
    const folder = await h.dir('model-bf16')
    await writeFile(join(folder, 'model.safetensors'), weightSafetensors(Array.from({ length: 4 }, (_, i) => ({ name: `layers.${i}.weight`, dtype: 'BF16' as const, bytes: 4 * MiB, seed: i + 1 }))))
    await writeFile(join(folder, 'config.json'), '{"model_type":"llama","torch_dtype":"bfloat16"}')
    const expected = await treeDigests(folder)
    const config = { p2p: { dht: false }, transfer: { compress: 'always' } }
    const seed = await h.node('c-seed', { config })
    const { version } = await seed.d.json<{ version: string }>(['add', folder, '--name', 'w'])
    const first = await h.node('c-first', { peers: [seed.addr], config })
    const pulled = await first.d.cli(['pull', `w@${version}`, '--json'])
    expect(pulled.code, pulled.stderr).toBe(0)
    const lines = pulled.stdout.trim().split('\n').map(l => JSON.parse(l) as { type: string, wireBytes?: number, receivedBytes?: number, result?: { path: string } })
    expect(await treeDigests(lines.find(l => l.type === 'result')!.result!.path, { followLinks: true })).toEqual(expected)
    // Pull progress says what crossed the link beside what it decoded to.
    const progress = lines.filter(l => l.type === 'progress' && (l.receivedBytes ?? 0) > 0).at(-1)
    expect(progress?.wireBytes, JSON.stringify(lines.slice(-3))).toBeLessThan(0.8 * (progress?.receivedBytes ?? 0))
    const row = (await first.d.json<PeerRow[]>(['peers'])).find(r => r.peerId === seed.id)!
    expect(row.bytesReceived).toBeGreaterThanOrEqual(16 * MiB)
    expect(row.wireBytesReceived / row.bytesReceived).toBeLessThan(0.75)
    const seedMetrics = await new ShoalClient({ socketPath: seed.d.socket }).metrics()
    expect(metric(seedMetrics, `shoal_wire_bytes_sent_total{peer="${first.id}"}`)).toBeLessThan(0.75 * metric(seedMetrics, `shoal_bytes_sent_total{peer="${first.id}"}`))
    expect(metric(seedMetrics, 'shoal_codec_blocks_encoded_total')).toBeGreaterThanOrEqual(64)
    // A second puller that knows only the first: the first sends the blocks as they came to it.
    const second = await h.node('c-second', { peers: [first.addr], config })
    await pullAndCheck(second.d, `w@${version}`, expected)
    const firstMetrics = await new ShoalClient({ socketPath: first.d.socket }).metrics()
    const codecLines = firstMetrics.split('\n').filter(l => l.startsWith('shoal_codec_')).join('; ')
    expect(metric(firstMetrics, 'shoal_codec_blocks_reused_total'), codecLines).toBeGreaterThanOrEqual(64)
    expect(metric(firstMetrics, 'shoal_codec_blocks_encoded_total'), codecLines).toBe(0)
    const fromFirst = (await second.d.json<PeerRow[]>(['peers'])).find(r => r.peerId === first.id)!
    expect(fromFirst.wireBytesReceived / fromFirst.bytesReceived).toBeLessThan(0.75)
    for (const n of [first, second]) expect((await n.d.cli(['verify'])).code).toBe(0)
    await Promise.all([seed, first, second].map(async n => await n.d.stop()))
  })

  it('peers that send compressed blocks in bad forms (other bytes, a decompression bomb, a codec not offered): refused and counted against each, nothing of them written', async () => {
    const folder = await h.dir('model-bf16-faults')
    await writeFile(join(folder, 'model.safetensors'), weightSafetensors(Array.from({ length: 2 }, (_, i) => ({ name: `layers.${i}.weight`, dtype: 'BF16' as const, bytes: 4 * MiB, seed: i + 10 }))))
    const expected = await treeDigests(folder)
    const headerBytes = (await stat(join(folder, 'model.safetensors'))).size - 2 * 4 * MiB
    const config = { p2p: { dht: false }, transfer: { compress: 'always' } }
    const seed = await h.node('cf-seed', { config: { ...config, transfer: { ...config.transfer, uploadRate: 8 * MiB } } })
    const { version } = await seed.d.json<{ version: string }>(['add', folder, '--name', 'w'])
    const kinds = [['wrong', /not block \d+ of \S+ \(they came encoded, and decoded to other bytes\)/], ['bomb', /does not decode: .*declares 1073741824 bytes/], ['unoffered', /does not decode: .*(deflate|planes4)/]] as const
    const bad = await Promise.all(kinds.map(async ([kind]) => {
      const n = await h.node(`cf-${kind}`, { peers: [seed.addr], config, env: { SHOAL_TEST_FAULTS: `encode-${kind}` } })
      await pullAndCheck(n.d, `w@${version}`, expected)
      return n
    }))
    const puller = await h.node('cf-puller', { peers: [seed.addr, ...bad.map(n => n.addr)], config: { ...config, transfer: { ...config.transfer, strategy: 'round-robin' } } })
    await pullAndCheck(puller.d, `w@${version}`, expected)
    expect((await puller.d.cli(['verify'])).code).toBe(0)
    const rows = await puller.d.json<PeerRow[]>(['peers'])
    for (const [i, [kind, message]] of kinds.entries()) {
      const row = rows.find(r => r.peerId === bad[i]!.id)
      expect(row?.offences.corrupt, `${kind}: ${JSON.stringify(row)}`).toBeGreaterThanOrEqual(1)
      expect(row?.lastOffence, kind).toMatch(message)
      // The safetensors header does not shrink enough to go encoded: a bad peer may serve it raw, and
      // those bytes are good. Nothing of the weights is taken from it.
      expect(row?.bytesReceived, kind).toBeLessThanOrEqual(headerBytes)
    }
    await Promise.all([seed, ...bad, puller].map(async n => await n.d.stop()))
  })

  it('a pull of a version no peer has fails with a reason', async () => {
    const lonely = await h.node('lonely')
    const r = await lonely.d.cli(['pull', 'm@bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy'])
    expect(r.code).toBe(4)
    expect(r.stderr).toMatch(/no reachable peer has the manifest/)
    await lonely.d.stop()
  })
})
