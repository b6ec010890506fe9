/**
 * Peer-controlled manifests and pulls against real daemons: a hostile peer (`HostilePeer`) serves
 * manifests a victim daemon pulls over TCP on loopback, and a local HTTP server plays the
 * "internal" URL a manifest's origins point at.
 *
 * - origins: a remote manifest's origins are not used unless `transfer.origins` allows them; an
 *   allowed origin that fails is asked one request at a time, with growing waits, at most
 *   `transfer.originMaxFailures` times per pull;
 * - one chunk id with two sizes: refused (naming the chunk and both sizes), the peer banned;
 *   bytes that do not hash to the version: the peer banned;
 * - limits: a manifest over `transfer.maxManifestChunks` / `maxVersionBytes` refused, no penalty;
 *   a large legal one decoded while `shoal status` keeps answering, then refused for the disk
 *   space it would need (needed and free said), nothing written;
 * - `shoal pull --cancel`, a pull given up after `transfer.maxPullAttempts` (across a restart),
 *   and `gc` reclaiming a partial file no pull names.
 */
import { createHash, randomBytes } from 'node:crypto'
import { statfs, readdir, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encodeBlock, RAW_CODEC, type VersionId } from '../../src/core/digest.js'
import { DEFAULT_BLOCK_SIZE, DEFAULT_MAX_MANIFEST_CHUNKS, type Manifest, type ManifestFile } from '../../src/core/manifest.js'
import { ShoalClient } from '../../src/rpc/client.js'
import type { StatusResult } from '../../src/rpc/api.js'
import { until, EXIT, Harness, expectExit, listDir, type DaemonProcess } from '../e2e/helpers.js'
import { HostilePeer, fileOf, manifestOf } from './hostile-peer.js'

const MiB = 1024 * 1024

interface PeerRow { peerId: string, offences: Record<string, number>, bannedUntil?: number, lastOffence?: string }
interface EventRow { type: string, data: Record<string, unknown> }

/** A manifest in the dag-cbor data model, encoded without any check: what a hostile peer can send. */
function rawManifest (m: Manifest): { bytes: Uint8Array, id: VersionId } {
  const { bytes, cid } = encodeBlock({ ...m, files: m.files.map(f => ({ ...f, chunks: f.chunks.map(c => c.root === undefined ? [CID.parse(c.id), c.size] : [CID.parse(c.id), c.size, c.root]) })) })
  return { bytes, id: cid }
}

/**
 * A valid manifest (schema 2) of `chunks` 4 MiB chunks of random ids and roots, built straight in
 * the data model (fast).
 */
function hugeManifest (name: string, chunks: number, perFile = 20_000): { bytes: Uint8Array, id: VersionId } {
  const files = []
  const digests = randomBytes(32 * chunks)
  const roots = randomBytes(32 * chunks)
  for (let f = 0; f * perFile < chunks; f++) {
    const ats = Array.from({ length: Math.min(perFile, chunks - f * perFile) }, (_, i) => 32 * (f * perFile + i))
    const ids = ats.map(at => CID.create(1, RAW_CODEC, Digest.create(0x12, digests.subarray(at, at + 32))))
    const list = ids.map((id, i) => [id, 4 * MiB, roots.subarray(ats[i]!, ats[i]! + 32)])
    files.push({ path: `shard-${String(f).padStart(5, '0')}.bin`, size: list.length * 4 * MiB, digest: encodeBlock(ids.map(id => [id, 4 * MiB])).cid, format: 'other', chunks: list })
  }
  const totalSize = files.reduce((n, f) => n + f.size, 0)
  const { bytes, cid } = encodeBlock({ schema: 2, blockSize: DEFAULT_BLOCK_SIZE, name, created: 1, parent: null, files, metadata: {}, structure: { formats: ['other'], parameterCount: 0, dtypes: [], tensorCount: 0, totalSize } })
  return { bytes, id: cid }
}

/** An HTTP server that answers every request 503 and notes when each came: the "internal URL". */
async function internalServer (): Promise<{ url: string, hits: number[], close: () => Promise<void> }> {
  const hits: number[] = []
  const server: Server = createServer((_req, res) => {
    hits.push(Date.now())
    res.writeHead(503, { 'content-type': 'text/plain' }).end('internal service\n')
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    hits,
    close: async () => { server.closeAllConnections(); await new Promise(resolve => server.close(resolve)) }
  }
}

const client = (d: DaemonProcess): ShoalClient => new ShoalClient({ socketPath: d.socket })

describe('faults: peer-controlled manifests and pulls', () => {
  let h: Harness
  const peers: HostilePeer[] = []
  const servers: Array<{ close: () => Promise<void> }> = []
  /** Default limits (the disk-space case raises the chunk limit to what the disk needs). */
  let plain: { d: DaemonProcess, addr: string }
  /** Allows its internal origin; gives a pull up after 2 attempts. */
  let allowing: { d: DaemonProcess, addr: string }
  /** Small manifest limits. */
  let small: { d: DaemonProcess, addr: string }
  let allowed: Awaited<ReturnType<typeof internalServer>>
  let chunksForDisk: number

  const hostile = async (): Promise<HostilePeer> => {
    const p = await HostilePeer.start()
    peers.push(p)
    return p
  }

  beforeAll(async () => {
    h = await Harness.create('faults-manifest', { rpc: 'direct' })
    allowed = await internalServer()
    servers.push(allowed)
    // A legal manifest larger than the free disk space, and large enough to take seconds to decode.
    const free = await statfs(tmpdir()).then(s => s.bavail * s.bsize)
    chunksForDisk = Math.max(100_000, Math.ceil((free + 1024 * MiB) / (4 * MiB)))
    const p2p = { dht: false }
    ;[plain, allowing, small] = await Promise.all([
      h.node('plain', { config: { p2p, transfer: { stallSeconds: 3, maxManifestChunks: Math.max(DEFAULT_MAX_MANIFEST_CHUNKS, chunksForDisk), maxVersionBytes: chunksForDisk * 4 * MiB } } }),
      h.node('allowing', { config: { p2p, transfer: { origins: [allowed.url], originMaxFailures: 3, stallSeconds: 5, maxPullAttempts: 2 } } }),
      h.node('small', { config: { p2p, transfer: { maxManifestChunks: 1000, maxVersionBytes: '64MiB', stallSeconds: 30 } } })
    ])
  })
  afterAll(async () => {
    for (const p of peers) await p.stop().catch(() => {})
    for (const s of servers) await s.close().catch(() => {})
    await h.close()
  })

  it('origins of a remote manifest are not used unless allowed; an allowed failing one is asked one at a time, backing off, at most originMaxFailures times; the pull is given up after maxPullAttempts, across a restart', async () => {
    const refused = await internalServer()
    servers.push(refused)
    const bytes = randomBytes(3 * MiB)
    const { file, chunks } = fileOf('weights.bin', bytes)
    const first = [...chunks][0]!
    const origins = (url: string): ManifestFile => ({ ...file, origins: [`${url}/internal/admin?delete=all`] })
    const p1 = await hostile()
    const v1 = p1.serveManifest(manifestOf('org/origins', [origins(refused.url)]))
    await p1.dial(plain.addr)
    const p2 = await hostile()
    p2.chunks.set(first[0], first[1]) // one chunk from the peer, so the pull has partial data
    const v2 = p2.serveManifest(manifestOf('org/origins', [origins(allowed.url)], { created: 2 }))
    await p2.dial(allowing.addr)
    const [r1, r2] = await Promise.all([plain.d.cli(['pull', `org/origins@${v1}`]), allowing.d.cli(['pull', `org/origins@${v2}`])])

    // Not allowed (the default): not one request, and the failure says why origins did not help.
    expectExit(r1, EXIT.ERROR)
    expect(r1.stderr).toContain('stalled')
    expect(r1.stderr).toContain('its manifest lists 1 origin URL(s) this node does not use (add their hosts to transfer.origins in config.json to allow them)')
    expect(refused.hits).toEqual([])

    // Allowed, and failing: one request at a time, at growing intervals, at most 3 for the pull
    // (the third may come after the 5 s stall on a loaded machine; never a fourth).
    expectExit(r2, EXIT.ERROR)
    expect(r2.stderr).toContain('stalled')
    expect(allowed.hits.length).toBeGreaterThanOrEqual(2)
    expect(allowed.hits.length).toBeLessThanOrEqual(3)
    const gaps = allowed.hits.slice(1).map((t, i) => t - allowed.hits[i]!)
    console.log(`failing allowed origin: ${allowed.hits.length} requests, gaps ${gaps.join(', ')} ms`)
    // Waits of 50-100% of 1, then 2 s (a loaded machine only makes them longer).
    expect(gaps[0]).toBeGreaterThanOrEqual(500)
    if (gaps.length > 1) expect(gaps[1]).toBeGreaterThanOrEqual(1_000)
    expect((await listDir(join(allowing.d.home, 'partial'))).length).toBeGreaterThan(0)

    // The failed attempt is recorded: after a restart the resumed pull is the second and last.
    await allowing.d.stop()
    await allowing.d.start()
    const gaveUp = await until('the pull to be given up', async () => {
      const { events } = await allowing.d.json<{ events: EventRow[] }>(['events'])
      return events.find(e => e.type === 'pull.failed' && e.data.gaveUp === true)
    })
    expect(gaveUp.data).toMatchObject({ model: 'org/origins', version: v2, attempts: 2, retry: `shoal pull org/origins@${v2}` })
    expect(allowing.d.stderr).toContain('pull given up after too many failed attempts; its partial data was removed')
    expect(await listDir(join(allowing.d.home, 'partial'))).toEqual([])
    expect((await allowing.d.json<StatusResult>(['status'])).pulls).toEqual([])
    // Each attempt had its own budget of 3; none more.
    expect(allowed.hits.length).toBeLessThanOrEqual(6)
  })

  it('one chunk id listed with two sizes: refused naming the chunk and both sizes, the peer banned, nothing written; bytes that do not hash to the version: the peer banned', async () => {
    const x = randomBytes(100)
    const id = CID.create(1, RAW_CODEC, Digest.create(0x12, createHash('sha256').update(x).digest())).toString()
    const a = { path: 'a.bin', size: 100, digest: encodeBlock([[CID.parse(id), 100]]).cid, format: 'other', chunks: [{ id, size: 100 }] } as ManifestFile
    const b = { path: 'b.bin', size: 200, digest: encodeBlock([[CID.parse(id), 200]]).cid, format: 'other', chunks: [{ id, size: 200 }] } as ManifestFile
    const sizes = await hostile()
    const { bytes, id: version } = rawManifest(manifestOf('org/sizes', [a, b]))
    sizes.manifests.set(version, bytes)
    sizes.chunks.set(id, x)
    await sizes.dial(plain.addr)
    const swap = await hostile()
    const { file } = fileOf('w.bin', randomBytes(1000))
    const real = rawManifest(manifestOf('org/swap', [file]))
    const other = rawManifest(manifestOf('org/swap', [file], { created: 7 }))
    swap.manifests.set(real.id, other.bytes)
    await swap.dial(plain.addr)
    const [r, s] = await Promise.all([plain.d.cli(['pull', `org/sizes@${version}`]), plain.d.cli(['pull', `org/swap@${real.id}`])])

    expectExit(r, EXIT.INVALID)
    expect(r.stderr).toContain(`version ${version} names an invalid manifest, which cannot be pulled`)
    expect(r.stderr).toContain(`chunk ${id} is listed with two sizes, 100 bytes (in a.bin) and 200 bytes (in b.bin)`)
    expectExit(s, EXIT.NOT_FOUND)
    expect(s.stderr).toContain(`no reachable peer has the manifest of ${real.id} (bytes that hash to that id)`)
    const rows = await plain.d.json<PeerRow[]>(['peers'])
    for (const [peer, why] of [[sizes, 'served an invalid manifest'], [swap, `served bytes that do not hash to version ${real.id}`]] as const) {
      const row = rows.find(x => x.peerId === peer.peerId)
      expect(row?.offences.manifest).toBe(1)
      expect(row?.bannedUntil).toBeGreaterThan(Date.now())
      expect(row?.lastOffence).toContain(why)
    }
    expect(await listDir(join(plain.d.home, 'partial'))).toEqual([])
    expect((await plain.d.json<StatusResult>(['status'])).pulls).toEqual([])
  })

  it('a large legal manifest is decoded while `shoal status` answers, then refused for the disk space it needs; nothing is allocated', async () => {
    const p = await hostile()
    const built = Date.now()
    const { bytes, id } = hugeManifest('org/huge', chunksForDisk)
    console.log(`large manifest: ${chunksForDisk} chunks, ${bytes.byteLength} bytes, built in ${Date.now() - built} ms`)
    p.manifests.set(id, bytes)
    await p.dial(plain.addr)
    const c = client(plain.d)
    const pulling = plain.d.cli(['pull', `org/huge@${id}`])
    // Status over the socket while the pull is being accepted: it answers, and says so.
    const latencies: number[] = []
    let sawChecking = false
    let cliSawChecking = false
    let done = false
    void pulling.finally(() => { done = true })
    while (!done) {
      const t = performance.now()
      const s = await c.status()
      latencies.push(performance.now() - t)
      if (s.pulls.some(x => x.version === id && x.state === 'checking')) {
        sawChecking = true
        if (!cliSawChecking) cliSawChecking = (await plain.d.cli(['status'])).stdout.includes(`pull    org/huge@${id} checking its manifest`)
      }
      await new Promise(resolve => setTimeout(resolve, 50))
    }
    const r = await pulling
    latencies.sort((a, b) => a - b)
    console.log(`shoal status during the pull of a ${bytes.byteLength}-byte manifest: ${latencies.length} answers, median ${latencies[latencies.length >> 1]!.toFixed(0)} ms, max ${latencies.at(-1)!.toFixed(0)} ms`)
    expect(sawChecking).toBe(true)
    expect(cliSawChecking).toBe(true)
    expectExit(r, EXIT.DISK_FULL)
    expect(r.stderr).toMatch(new RegExp(`disk full for the pull of org/huge@${id}: it needs .* \\(${chunksForDisk * 4 * MiB} bytes\\) more in .*/partial, but only .* is free; nothing new was fetched .*; free some space`))
    expect(await listDir(join(plain.d.home, 'partial'))).toEqual([])
    expect((await plain.d.json<StatusResult>(['status'])).pulls).toEqual([])
    // Not the peer's fault.
    expect((await plain.d.json<PeerRow[]>(['peers'])).find(x => x.peerId === p.peerId)?.offences ?? {}).toEqual({})
  })

  it('manifests over maxManifestChunks or maxVersionBytes are refused saying the limit and its key; the peer is not penalised', async () => {
    const p = await hostile()
    const many = hugeManifest('org/many', 1001, 1001)
    p.manifests.set(many.id, many.bytes)
    const big = hugeManifest('org/big', 17)
    p.manifests.set(big.id, big.bytes)
    await p.dial(small.addr)
    const [r1, r2] = await Promise.all([small.d.cli(['pull', `org/many@${many.id}`]), small.d.cli(['pull', `org/big@${big.id}`])])
    expectExit(r1, EXIT.INVALID)
    expect(r1.stderr).toContain(`refusing to pull ${many.id}: manifest lists 1001 chunks, over the limit of 1000 (transfer.maxManifestChunks in config.json raises it)`)
    expectExit(r2, EXIT.INVALID)
    expect(r2.stderr).toContain(`manifest declares ${17 * 4 * MiB} bytes, over the limit of ${64 * MiB} bytes for one version (transfer.maxVersionBytes in config.json raises it)`)
    expect((await small.d.json<PeerRow[]>(['peers'])).find(x => x.peerId === p.peerId)?.offences ?? {}).toEqual({})
    expect(await listDir(join(small.d.home, 'partial'))).toEqual([])
  })

  it('shoal pull --cancel stops a pull, drops its record and partial data; the waiting pull says so; a second cancel finds nothing', async () => {
    const p = await hostile()
    const { file, chunks } = fileOf('weights.bin', randomBytes(6 * MiB))
    for (const [id, c] of [...chunks].slice(0, 3)) p.chunks.set(id, c)
    const version = p.serveManifest(manifestOf('org/cancel', [file]))
    await p.dial(small.addr)
    const waiting = small.d.cli(['pull', `org/cancel@${version}`])
    await until('partial data', async () => (await small.d.json<StatusResult>(['status'])).pulls.find(x => x.version === version && x.bytes > 0))
    const r = await small.d.cli(['pull', '--cancel', `org/cancel@${version}`])
    expectExit(r, 0)
    expect(r.stdout).toMatch(new RegExp(`cancelled the pull of org/cancel@${version}; removed 1 partial file \\(\\d+ bytes\\)`))
    const w = await waiting
    expect(w.code).not.toBe(0)
    expect(w.stderr).toContain(`the pull of org/cancel@${version} was cancelled; its partial data was removed`)
    expect(await listDir(join(small.d.home, 'partial'))).toEqual([])
    expect((await small.d.json<StatusResult>(['status'])).pulls).toEqual([])
    const again = await small.d.cli(['pull', '--cancel', `org/cancel@${version}`])
    expectExit(again, EXIT.NOT_FOUND)
    expect(again.stderr).toContain(`no pull of org/cancel@${version} is running or recorded here`)
  })

  it('gc reclaims a partial file no pull names', async () => {
    const stray = 'bafyreiabandonedpartialfilewithoutanypullrecord'
    await writeFile(join(small.d.home, 'partial', stray), randomBytes(64 * 1024))
    const report = await small.d.json<{ partials: Array<{ digest: string, size: number }>, bytes: number }>(['gc'])
    expect(report.partials.map(x => x.digest)).toEqual([stray])
    expect(report.partials[0]!.size).toBeGreaterThanOrEqual(64 * 1024)
    expect(await readdir(join(small.d.home, 'partial'))).toEqual([])
    const human = await small.d.cli(['gc'])
    expect(human.stdout).toContain('removed 0 versions, 0 blobs, 0 partial files')
  })
})
