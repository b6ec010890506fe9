/**
 * The data plane of `/shoal/chunks/2.0.0` under faults, with real daemons over real TCP:
 *
 * 1. a seed whose bulk port drops every packet (a `tc` filter in a network namespace this test
 *    creates): the puller's dial times out (`CONNECT_TIMEOUT_MS`, within `BULK_SETUP_MS`) and it
 *    pulls over the libp2p stream, byte-identical, without a request timing out first;
 * 2. the bulk connection killed mid-pull (`ss -K`, which aborts the socket and resets the peer):
 *    the rest of the blocks come on the stream, the pull completes byte-identical and the seed is
 *    not penalised;
 * 3. a peer that speaks only `/shoal/chunks/1.0.0`, beside a new seed and alone;
 * 4. peers that serve a few spans and then go silent: one that has the whole version beside an
 *    honest seed, and one that has part of it (a peer pulling the same version that hangs),
 *    beside a seed and alone.
 *
 * Cases 1 and 2 run in one network namespace with its own loopback, so fixed ports and the filter
 * touch nothing else on the machine; they are skipped, saying why, where namespaces, `tc` or
 * `ss -K` are not available (this needs root). Cases 3 and 4 use hostile peers built from shoal's
 * own services (`hostile-peer.ts`) in this process, on the host's loopback.
 *
 * Every wait polls a condition under a deadline; no case asserts a speed. Most daemons log at
 * debug level: the order of their log lines is what shows where the blocks went.
 */
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { onExitCleanup } from '../../scripts/lib/proc.js'
import type { VersionId } from '../../src/core/digest.js'
import { decodeManifest } from '../../src/core/manifest.js'
import { DEFAULT_SESSION_OPTIONS } from '../../src/fetcher/session.js'
import { CONNECT_TIMEOUT_MS } from '../../src/protocol/bulk/constants.js'
import { BULK_SETUP_MS, CHUNKS_PROTOCOL, OLD_CHUNKS_PROTOCOLS, type ChunkSource } from '../../src/protocol/chunks/index.js'
import type { PeerRow, StatusResult } from '../../src/rpc/api.js'
import { Harness, rawRequest, until, writeModelFolder, type CliResult, type DaemonProcess } from '../e2e/helpers.js'
import { HostilePeer, openLimiter, spanOf } from './hostile-peer.js'

const MiB = 1024 * 1024
const OLD_PROTOCOL = OLD_CHUNKS_PROTOCOLS[0]!
const p2p = { dht: false }
const DEBUG = { SHOAL_LOG_LEVEL: 'debug' }

/** One JSON log line of a daemon (pino). */
interface LogLine { msg?: string, level?: number, time?: number, component?: string, peer?: string, [field: string]: unknown }

/** A daemon's log so far, as parsed lines (anything not JSON is skipped). */
function logOf (d: DaemonProcess): LogLine[] {
  const out: LogLine[] = []
  for (const line of d.stderr.split('\n')) {
    if (!line.startsWith('{')) continue
    try { out.push(JSON.parse(line) as LogLine) } catch { /* a line still being written */ }
  }
  return out
}

async function sha256Of (path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex')
}

/** The `result` line of `pull --json` output: where the version was written. */
function pulledPath (r: CliResult): string {
  expect(r.code, `pull exited ${r.code}: ${r.stderr}`).toBe(0)
  const result = r.stdout.trim().split('\n').map(l => JSON.parse(l) as { type: string, result?: { path: string } }).find(l => l.type === 'result')?.result
  expect(result?.path).toBeTypeOf('string')
  return result!.path
}

/** Checks that a `pull --json` succeeded and wrote `model.safetensors` byte-identical to the model folder's. */
async function expectPulledIdentical (r: CliResult, model: string): Promise<void> {
  const path = pulledPath(r)
  expect(await sha256Of(join(path, 'model.safetensors'))).toBe(await sha256Of(join(model, 'model.safetensors')))
}

async function peerRow (d: DaemonProcess, id: string): Promise<PeerRow | undefined> {
  return (await d.json<PeerRow[]>(['peers'])).find(r => r.peerId === id)
}

/** A daemon as `Harness.node` returns it. */
type Node = Awaited<ReturnType<Harness['node']>>

/**
 * A peer built from shoal's own services that has a version (all of it, or the chunks `claims`
 * picks by index in the manifest's chunk list, announced as a partial peer's bitfield) and serves
 * the first `served` spans it is asked for; every later one it reads "for ever" (until cancelled),
 * saying nothing: no QUEUED (slots to spare), no DONT_HAVE, no error. It learns the manifest from
 * `seed` and takes the bytes from the model folder, as a peer that pulled it would have them.
 */
async function silentPeer (seed: Node, version: VersionId, model: string, options: { served: number, claims?: (index: number) => boolean }): Promise<{ peer: HostilePeer, asked: () => number }> {
  const chunks = new Map<string, Uint8Array>()
  let bits: Uint8Array | undefined
  let asked = 0
  const source: ChunkSource = {
    readSpan: async (id, blockSize, first, count, signal) => {
      if (++asked > options.served) {
        await new Promise<void>(resolve => { signal.addEventListener('abort', () => resolve(), { once: true }) })
        return undefined
      }
      const bytes = chunks.get(id)
      return bytes === undefined ? undefined : spanOf(bytes, blockSize, first, count)
    },
    have: async v => v !== version ? undefined : bits === undefined ? { complete: true } : { complete: false, bits, ranges: [] },
    watch: () => () => {}
  }
  const peer = await HostilePeer.start({ chunks: source, limiter: openLimiter(1024) })
  await peer.dial(seed.addr)
  const manifest = await peer.node.services.manifests.fetch(peerIdFromString(seed.id), version)
  await peer.hangUp(seed.addr)
  if (manifest === undefined) throw new Error(`the seed did not serve the manifest of ${version}`)
  peer.manifests.set(version, manifest)
  const files = decodeManifest(manifest, version).files
  const total = files.reduce((n, f) => n + f.chunks.length, 0)
  if (options.claims !== undefined) bits = new Uint8Array(Math.ceil(total / 8))
  let index = 0
  for (const f of files) {
    const data = await readFile(join(model, f.path))
    let offset = 0
    for (const c of f.chunks) {
      if (options.claims === undefined || options.claims(index)) {
        chunks.set(c.id, data.subarray(offset, offset + c.size))
        if (bits !== undefined) bits[index >> 3]! |= 0x80 >> (index & 7)
      }
      offset += c.size
      index++
    }
  }
  return { peer, asked: () => asked }
}

// ---- a network namespace of this test's own ----------------------------------------------------

function run (cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
}

/** Why cases 1 and 2 cannot run here, or undefined when they can (a namespace, `tc`, and `ss -K`). */
function namespaceUnavailable (): string | undefined {
  const probe = `shdpprobe${process.pid}`
  try {
    run('ip', ['netns', 'add', probe])
  } catch (err) {
    const text = (err as { stderr?: string }).stderr?.trim() ?? (err as Error).message
    return `creating a network namespace is not permitted here (${text}); run as root or with CAP_NET_ADMIN`
  }
  try {
    run('ip', ['-n', probe, 'link', 'set', 'lo', 'up'])
    run('tc', ['-n', probe, 'qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'htb', 'default', '1'])
    run('ip', ['netns', 'exec', probe, 'ss', '-K', '-t', 'dst', '127.0.0.1', 'dport', '=', ':1'])
    return undefined
  } catch (err) {
    const text = (err as { stderr?: string }).stderr?.trim() ?? (err as Error).message
    return `tc (htb) or ss -K is not usable in a network namespace here (${text}); both are in iproute2, and ss -K needs a kernel with CONFIG_INET_DIAG_DESTROY`
  } finally {
    try { run('ip', ['netns', 'delete', probe]) } catch { /* gone */ }
  }
}

/**
 * Drops every TCP packet to `port` on the namespace's loopback: an htb root whose default class
 * passes everything, and a u32 filter sending packets to that port into a class whose queue holds
 * none. (iptables is not installed here, and this kernel cannot load tc's `gact` action: a queue
 * of length 0 is the drop.) A dial to the port then hangs as behind a firewall that DROPs.
 */
function dropTcpTo (ns: string, port: number): void {
  const tc = (...args: string[]): void => { run('tc', ['-n', ns, ...args]) }
  tc('qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'htb', 'default', '1', 'r2q', '100000')
  tc('class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:1', 'htb', 'rate', '100gbit')
  tc('class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:2', 'htb', 'rate', '100gbit')
  tc('qdisc', 'add', 'dev', 'lo', 'parent', '1:2', 'handle', '20:', 'pfifo', 'limit', '0')
  tc('filter', 'add', 'dev', 'lo', 'parent', '1:', 'protocol', 'ip', 'prio', '1', 'u32', 'match', 'ip', 'protocol', '6', '0xff', 'match', 'ip', 'dport', String(port), '0xffff', 'flowid', '1:2')
}

/** Packets the drop queue of `dropTcpTo` has dropped so far. */
function droppedTo (ns: string): number {
  const text = run('tc', ['-n', ns, '-s', 'qdisc', 'show', 'dev', 'lo'])
  const m = /qdisc pfifo 20:[^\n]*\n\s*Sent \d+ bytes \d+ pkt \(dropped (\d+)/.exec(text)
  return Number(m?.[1] ?? 0)
}

/** Aborts every TCP connection to `port` in the namespace (`ss -K`); returns how many there were. */
function killConnectionsTo (ns: string, port: number): number {
  const out = run('ip', ['netns', 'exec', ns, 'ss', '-K', '-t', '-n', 'dst', '127.0.0.1', 'dport', '=', `:${port}`])
  return out.split('\n').filter(l => /^ESTAB/.test(l)).length
}

const NO_NETNS = namespaceUnavailable()
if (NO_NETNS !== undefined) console.warn(`skipping the bulk channel fault cases: ${NO_NETNS}`)

// ---- the cases ---------------------------------------------------------------------------------

describe('the data plane under faults (/shoal/chunks/2.0.0, bulk channel)', () => {
  let h: Harness
  const hostile: HostilePeer[] = []
  const ns = `shdp${process.pid}`
  let unregister = (): void => {}
  const wrap = ['ip', 'netns', 'exec', ns]
  const started: Node[] = []
  /** `h.node`, remembered so that `afterAll` stops every daemon at once. */
  const node = async (name: string, options: Parameters<Harness['node']>[1]): Promise<Node> => {
    const n = await h.node(name, options)
    started.push(n)
    return n
  }

  beforeAll(async () => {
    h = await Harness.create('faults-dataplane', { rpc: 'direct' })
    if (NO_NETNS === undefined) {
      run('ip', ['netns', 'add', ns])
      unregister = onExitCleanup(() => { try { run('ip', ['netns', 'delete', ns]) } catch { /* gone */ } })
      run('ip', ['-n', ns, 'link', 'set', 'lo', 'up'])
    }
  })
  afterAll(async () => {
    for (const p of hostile) await p.stop().catch(() => {})
    // All at once, by pid; a daemon still there 5 s after SIGTERM is killed (pullers of case 4
    // have been seen to log "shoal daemon stopped" and then not exit, two worker threads left).
    await Promise.all(started.map(async n => await n.d.stop('SIGTERM', 5_000)))
    await h.close()
    if (NO_NETNS === undefined) {
      try { run('ip', ['netns', 'delete', ns]) } catch { /* gone */ }
      unregister()
    }
  })

  it.skipIf(NO_NETNS !== undefined)(`a seed whose bulk port drops every packet: once the dial times out the pull goes on over the libp2p stream, byte-identical${NO_NETNS !== undefined ? ` (skipped: ${NO_NETNS})` : ''}`, async () => {
    const model = await writeModelFolder(await h.dir('model-filtered'), { bytes: 16 * MiB, seed: 'dp-filtered' })
    // Fixed ports: the namespace is this test's own.
    const seed = await node('filtered-seed', { listen: '/ip4/127.0.0.1/tcp/4077', wrap, env: DEBUG, config: { p2p, transfer: { bulk: { listen: '127.0.0.1:4078' } } } })
    const { version } = await seed.d.json<{ version: string }>(['add', model, '--name', 'm'])
    dropTcpTo(ns, 4078)
    const puller = await node('filtered-puller', { listen: '/ip4/127.0.0.1/tcp/4177', peers: [seed.addr], wrap, env: DEBUG, config: { p2p } })

    const r = await puller.d.cli(['pull', `m@${version}`, '--json'])
    await expectPulledIdentical(r, model)

    // The puller was offered the bulk port, its dial was dropped, and it went on without.
    expect(droppedTo(ns), 'packets dropped on their way to the bulk port').toBeGreaterThan(0)
    const log = logOf(puller.d)
    const at = (pred: (l: LogLine) => boolean): number => log.findIndex(pred)
    const gaveUp = at(l => l.msg === 'no bulk connection: blocks on the stream' && l.peer === seed.id)
    expect(gaveUp, 'the puller logs that it goes on without a bulk connection').toBeGreaterThanOrEqual(0)
    expect(log.filter(l => l.msg === 'bulk connection open')).toEqual([])
    const opened = log[at(l => l.msg === 'channel open' && l.peer === seed.id)]
    // It waited the dial's deadline out (the SYN went unanswered: nothing refused it) ...
    expect(opened?.ms, JSON.stringify(opened)).toBeGreaterThanOrEqual(Math.min(CONNECT_TIMEOUT_MS, BULK_SETUP_MS) - 50)
    // ... and then asked for blocks, on the stream, and got them before any request deadline passed.
    const firstSpan = at(l => l.msg === 'span requested' && l.peer === seed.id)
    const firstBlock = at(l => l.msg === 'block received' && l.peer === seed.id)
    const firstTimeout = at(l => l.msg === 'request timed out')
    expect(firstSpan).toBeGreaterThan(gaveUp)
    expect(firstBlock).toBeGreaterThan(firstSpan)
    if (firstTimeout >= 0) expect(firstTimeout, 'a request timed out before the first block came').toBeGreaterThan(firstBlock)
    expect(log.filter(l => /pull attempt failed|stalled/.test(l.msg ?? ''))).toEqual([])

    // The seed never got a bulk connection and sent every span on the stream.
    const seedLog = logOf(seed.d)
    expect(seedLog.filter(l => l.msg === 'bulk connection accepted')).toEqual([])
    const spans = seedLog.filter(l => l.msg === 'span sent')
    expect(spans.length).toBeGreaterThan(0)
    expect(spans.filter(l => l.bulk !== false)).toEqual([])
    console.log(`bulk port filtered: the channel opened ${String(opened?.ms)} ms after it was asked (CONNECT_TIMEOUT_MS ${CONNECT_TIMEOUT_MS}, BULK_SETUP_MS ${BULK_SETUP_MS}); ${spans.length} spans on the stream; ${droppedTo(ns)} packets dropped`)
  })

  it.skipIf(NO_NETNS !== undefined)(`the bulk connection killed mid-pull: the rest comes on the stream, byte-identical, and the seed is not penalised${NO_NETNS !== undefined ? ` (skipped: ${NO_NETNS})` : ''}`, async () => {
    const model = await writeModelFolder(await h.dir('model-cut'), { bytes: 32 * MiB, seed: 'dp-cut' })
    // The seed's upload is capped so the pull lasts seconds, long enough to cut it in the middle.
    const seed = await node('cut-seed', { listen: '/ip4/127.0.0.1/tcp/4277', wrap, env: DEBUG, config: { p2p, transfer: { uploadRate: 8_000_000, bulk: { listen: '127.0.0.1:4278' } } } })
    const { version } = await seed.d.json<{ version: string }>(['add', model, '--name', 'm'])
    const puller = await node('cut-puller', { listen: '/ip4/127.0.0.1/tcp/4377', peers: [seed.addr], wrap, env: DEBUG, config: { p2p } })

    const pulling = puller.d.cli(['pull', `m@${version}`, '--json'])
    await until('a span sent on the bulk connection', () => logOf(seed.d).some(l => l.msg === 'span sent' && l.bulk === true) ? true : undefined)
    // Blocks that came on it are stored: the cut is in the middle of the pull.
    const before = await until('the first blocks stored', async () => {
      const status = (await rawRequest(puller.d.socket, 'GET', '/v1/status')).json as StatusResult
      const p = status.pulls.find(x => x.version === version)
      return p !== undefined && p.bytes > 0 ? p : undefined
    })
    expect(before.bytes, 'the cut comes before the last block').toBeLessThan(before.totalBytes)
    expect(killConnectionsTo(ns, 4278), 'bulk connections aborted').toBe(1)
    const r = await pulling
    await expectPulledIdentical(r, model)

    // The seed's log: spans on the bulk connection, the connection closed, the rest on the stream.
    const seedLog = logOf(seed.d)
    const closed = seedLog.findIndex(l => l.msg === 'bulk connection closed')
    expect(closed, 'the seed logs the bulk connection closing').toBeGreaterThan(seedLog.findIndex(l => l.msg === 'span sent' && l.bulk === true))
    const after = seedLog.slice(closed).filter(l => l.msg === 'span sent' || l.msg === 'bulk send failed: the rest of the span goes on the stream')
    expect(after.length, 'spans sent after the cut').toBeGreaterThan(0)
    expect(after.filter(l => l.msg === 'span sent' && l.bulk !== false)).toEqual([])
    // Only the one bulk connection: nothing reconnected behind the test's back.
    expect(seedLog.filter(l => l.msg === 'bulk connection accepted')).toHaveLength(1)

    // The seed did nothing wrong: no offence, no ban.
    const row = await peerRow(puller.d, seed.id)
    expect(row?.offences ?? {}, JSON.stringify(row)).toEqual({})
    expect(row?.bannedUntil).toBeUndefined()
    console.log(`bulk connection cut at ${before.bytes} of ${before.totalBytes} bytes; ${after.length} spans (or their rest) then went on the stream`)
  })

  describe('a peer that speaks only /shoal/chunks/1.0.0', () => {
    let seed: Node
    let old: HostilePeer
    let model: string
    let version: VersionId

    beforeAll(async () => {
      model = await writeModelFolder(await h.dir('model-mixed'), { bytes: 8 * MiB, seed: 'dp-mixed' })
      seed = await node('mixed-seed', { config: { p2p } })
      version = (await seed.d.json<{ version: VersionId }>(['add', model, '--name', 'm'])).version
      // An older shoal: the manifest protocol as today, chunks only on 1.0.0 (whose streams it
      // closes: nothing here speaks it), and the version's manifest, which it got from the seed.
      old = await HostilePeer.start()
      hostile.push(old)
      await old.node.unhandle(CHUNKS_PROTOCOL)
      await old.node.handle(OLD_PROTOCOL, (stream: Stream) => { void stream.close().catch(() => {}) })
      await old.dial(seed.addr)
      const manifest = await old.node.services.manifests.fetch(peerIdFromString(seed.id), version)
      old.manifests.set(version, manifest!)
      await old.hangUp(seed.addr)
    })

    /** Connects the old peer to `d` and waits until both ends have identified each other. */
    async function connectOld (d: { addr: string, id: string }): Promise<void> {
      await old.dial(d.addr)
      await until('the old peer and the daemon to identify each other', async () => {
        const theirs = await old.node.peerStore.get(peerIdFromString(d.id)).then(p => p.protocols, () => [] as string[])
        return theirs.includes(CHUNKS_PROTOCOL) ? true : undefined
      }, 20_000)
    }

    /** Says what a person needs: the peer's protocol, this node's, and to upgrade. */
    const names = (text: string): boolean => text.includes(OLD_PROTOCOL) && text.includes(CHUNKS_PROTOCOL) && /upgrade/i.test(text)

    describe('beside a new seed', () => {
      let puller: Node
      let log: LogLine[]

      beforeAll(async () => {
        puller = await node('mixed-puller', { peers: [seed.addr], env: DEBUG, config: { p2p } })
        await connectOld(puller)
        const r = await puller.d.cli(['pull', `m@${version}`, '--json'])
        await expectPulledIdentical(r, model)
        log = logOf(puller.d)
      })

      it('the pull completes from the new seed; the puller tells the old peer apart (debug log)', async () => {
        expect(log.filter(l => l.msg === 'block received' && l.peer === old.peerId)).toEqual([])
        expect(log.some(l => l.msg === 'block received' && l.peer === seed.id)).toBe(true)
        const about = log.filter(l => l.peer === old.peerId && typeof l.err === 'string')
        expect(about.some(l => names(l.err as string)), JSON.stringify(about)).toBe(true)
      })

      it('the old peer is reported in the log at the default level, naming both versions and saying to upgrade', async () => {
        const shown = log.filter(l => (l.level ?? 0) >= 30 && JSON.stringify(l).includes(old.peerId))
        expect(shown.some(l => names(JSON.stringify(l))), `info-or-above lines about the old peer: ${JSON.stringify(shown)}`).toBe(true)
      })

      it('shoal peers shows the old peer as running an older shoal', async () => {
        const r = await puller.d.cli(['peers'])
        expect(r.code, r.stderr).toBe(0)
        const line = r.stdout.split('\n').find(l => l.includes(old.peerId.slice(-12))) ?? ''
        const row = await peerRow(puller.d, old.peerId)
        expect(names(`${line} ${JSON.stringify(row ?? {})}`), `shoal peers: ${r.stdout}\nrow: ${JSON.stringify(row)}`).toBe(true)
      })
    })

    it('alone: the pull fails with an error naming both protocol versions and saying to upgrade', async () => {
      const puller = await node('old-only-puller', { config: { p2p, transfer: { stallSeconds: 5 } } })
      await connectOld(puller)
      const r = await puller.d.cli(['pull', `m@${version}`])
      expect(r.code, r.stdout).not.toBe(0)
      expect(names(r.stderr), `the CLI printed: ${r.stderr}`).toBe(true)
    })
  })

  describe('peers that serve a few spans and then go silent', () => {
    /** Spans each silent peer serves before it goes silent. */
    const SERVED = 2
    /** The pull of a puller with no other source fails this long after its last progress. */
    const STALL_SECONDS = 15
    const scenarios: Record<'seedBeside' | 'partialBeside' | 'partialAlone', { puller: Node, silent: { peer: HostilePeer, asked: () => number }, r: CliResult, log: LogLine[], model: string, seed: Node }> = {} as never

    // Three pulls at once (each waits on its silent peer for seconds, so together they take the
    // time of the longest):
    // - `seedBeside`: a silent peer that has all of the version, beside an honest seed whose
    //   upload is capped so that the pull lasts long enough: the seed still has fresh pieces to
    //   send when the silent peer's first requests pass their deadline (`requestTimeoutBaseMs` and
    //   a little, about 5 s in), else the endgame would ask the seed for those pieces first and
    //   cancel them at the silent peer, no offence. Pieces are asked of the seed as fast as it
    //   sends them, at most `MAX_PULL_IN_FLIGHT_BYTES` (16 MiB) at once with what the silent peer
    //   holds, so the endgame starts about (64 MiB - 16 MiB - a second's burst) / 5 MB/s ≈ 9 s in.
    // - `partialBeside`: a silent peer that has every third chunk (a peer pulling the same version
    //   that hangs) of a smaller version, beside a seed of it (upload not capped).
    // - `partialAlone`: such a peer and nobody else: the pull cannot complete, and fails as
    //   stalled `STALL_SECONDS` after its last progress. What the peer holds (about 5 MB) fits in
    //   the puller's window for it, so each request that times out there is followed by another.
    beforeAll(async () => {
      const [capped, plain] = await Promise.all([
        (async () => {
          const model = await writeModelFolder(await h.dir('model-silent'), { bytes: 64 * MiB, seed: 'dp-silent' })
          const seed = await node('silent-seed', { config: { p2p, transfer: { uploadRate: 5_000_000 } } })
          return { model, seed, version: (await seed.d.json<{ version: VersionId }>(['add', model, '--name', 'm'])).version }
        })(),
        (async () => {
          const model = await writeModelFolder(await h.dir('model-partial'), { bytes: 16 * MiB, seed: 'dp-partial' })
          const seed = await node('partial-seed', { config: { p2p } })
          return { model, seed, version: (await seed.d.json<{ version: VersionId }>(['add', model, '--name', 'm'])).version }
        })()
      ])
      const everyThird = (i: number): boolean => i % 3 === 1
      const start = async (name: keyof typeof scenarios, from: typeof capped, claims: ((i: number) => boolean) | undefined, besideSeed: boolean): Promise<void> => {
        const silent = await silentPeer(from.seed, from.version, from.model, { served: SERVED, ...(claims !== undefined ? { claims } : {}) })
        hostile.push(silent.peer)
        const puller = await node(`silent-${name}`, { peers: besideSeed ? [from.seed.addr] : [], env: DEBUG, config: { p2p, transfer: { stallSeconds: STALL_SECONDS } } })
        await silent.peer.dial(puller.addr)
        const r = await puller.d.cli(['pull', `m@${from.version}`, '--json'])
        scenarios[name] = { puller, silent, r, log: logOf(puller.d), model: from.model, seed: from.seed }
      }
      await Promise.all([start('seedBeside', capped, undefined, true), start('partialBeside', plain, everyThird, true), start('partialAlone', plain, everyThird, false)])
    })

    it('beside an honest seed: the pull completes from the seed; the silent peer\'s requests time out and it is on record (timeout), the seed not', async () => {
      const { puller, silent, r, log, model, seed } = scenarios.seedBeside
      await expectPulledIdentical(r, model)
      expect(silent.asked(), 'spans the silent peer was asked for').toBeGreaterThan(SERVED)
      const row = await peerRow(puller.d, silent.peer.peerId)
      expect(row?.offences.timeout ?? 0, JSON.stringify(row)).toBeGreaterThan(0)
      expect(row?.lastOffence, JSON.stringify(row)).toMatch(/^timeout: request for piece \d+ timed out$/)
      expect(row?.bannedUntil, 'a slow or hung peer is not banned for timeouts').toBeUndefined()
      expect(log.filter(l => l.msg === 'request timed out' && l.peer === silent.peer.peerId).length).toBeGreaterThan(0)
      const seedRow = await peerRow(puller.d, seed.id)
      expect(seedRow?.offences ?? {}, JSON.stringify(seedRow)).toEqual({})
      expect(seedRow?.bannedUntil).toBeUndefined()
      console.log(`silent seed: asked for ${silent.asked()} spans (served ${SERVED}); on record ${JSON.stringify(row?.offences)}`)
    })

    it('a peer pulling the same version, beside an honest seed: the pull completes from the seed', async () => {
      const { r, model } = scenarios.partialBeside
      await expectPulledIdentical(r, model)
    })

    it('alone: the pull fails as stalled after stallSeconds, saying that the peer delivered none of what is missing', async () => {
      const { puller, silent, r } = scenarios.partialAlone
      expect(r.code, r.stdout).not.toBe(0)
      expect(r.stderr).toMatch(new RegExp(`stalled: 1 peer\\(s\\) connected, but none delivered any of the \\d+ missing pieces for ${STALL_SECONDS} s`))
      const row = await peerRow(puller.d, silent.peer.peerId)
      expect(row?.offences.timeout ?? 0, JSON.stringify(row)).toBeGreaterThan(0)
      expect(row?.bannedUntil, 'a slow or hung peer is not banned for timeouts').toBeUndefined()
    })

    it('alone: no request times out before its deadline (requestTimeoutBaseMs at least), and no timer overflows', async () => {
      const { puller, log } = scenarios.partialAlone
      const timedOut = log.filter(l => l.msg === 'request timed out')
      expect(timedOut.length).toBeGreaterThan(0)
      const early = timedOut.filter(l => typeof l.ms === 'number' && l.ms < DEFAULT_SESSION_OPTIONS.requestTimeoutBaseMs)
      expect(early.length, `requests that timed out sooner than ${DEFAULT_SESSION_OPTIONS.requestTimeoutBaseMs} ms: ${early.length} of ${timedOut.length}, e.g. ${JSON.stringify(early.slice(0, 2))}`).toBe(0)
      expect(puller.d.stderr).not.toContain('TimeoutOverflowWarning')
    })
  })
})
