/**
 * Heads at fleet scale, in one process: N libp2p nodes (default 200) over `@libp2p/memory`, each
 * with shoal's own head machinery — a `HeadBook` over memory-level, the `TrustPolicy`, the
 * `HeadGuard` with a `PeerScores` judge, the `/shoal/heads/1.0.0` anti-entropy service and the
 * `HeadSpreader` (gossip validator, rounds, re-announces) — on noise + yamux + identify + gossipsub
 * with the daemon's options. Each node dials 3 random nodes started before it and redials them
 * every `REDIAL_INTERVAL_MS` while disconnected, as the daemon does with its configured peers.
 *
 * Figures, printed (not asserted):
 * - **label move**: node 0 publishes a head; per node, the time until its book holds it; p50 / p99
 *   / max over all nodes and rounds, and the time until every node holds it (goal: p99 < 2 s);
 * - **baseline**: the same fleet's raw gossipsub delivery of a random message of the same size on
 *   another topic (no validator), measured in the same run, rounds interleaved with the heads';
 * - **cut and heal**: 10% of the nodes (never node 0) are cut off — their connections to the rest
 *   closed and refused by the gater, as after a partition long enough for connections to be
 *   dropped — while node 0 publishes; after the heal, the time until each cut node holds the
 *   head. They come back through the redial of dialled peers (every `REDIAL_INTERVAL_MS`) and the
 *   exchange on connect. A partition during which connections stay open is the fault test's
 *   (`test/faults/heads-partition.test.ts`, real daemons, real TCP).
 *
 *   npm run bench:heads-scale -- [--nodes 200] [--rounds 5] [--latency 0] [--seed s]
 *
 * `--latency` adds that many ms to every buffer the memory transport carries (sequentially, so a
 * burst of buffers on one connection waits in line: a slow link rather than a long one).
 */
import '../src/polyfill.js'
import { createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import { noise } from '@chainsafe/libp2p-noise'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import type { Libp2p, PeerId } from '@libp2p/interface'
import { memory } from '@libp2p/memory'
import { yamux } from '@libp2p/yamux'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { MemoryLevel } from 'memory-level'
import { encodeBlock } from '../src/core/digest.js'
import { publisherKeyOf } from '../src/core/heads.js'
import { TrustPolicy } from '../src/core/trust.js'
import { HeadBook } from '../src/heads/book.js'
import { HeadGuard } from '../src/heads/guard.js'
import { headSource } from '../src/heads/source.js'
import { HEADS_TOPIC, HeadSpreader } from '../src/heads/spread.js'
import { PeerScores } from '../src/p2p/judge.js'
import { REDIAL_INTERVAL_MS } from '../src/p2p/node.js'
import { headSync, type HeadSync } from '../src/protocol/heads/index.js'
import { HeadStore } from '../src/store/heads.js'
import { IndexDb, type Db } from '../src/store/index-db.js'
import { loadNote } from './lib/proc.js'

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '200' },
    rounds: { type: 'string', default: '5' },
    latency: { type: 'string', default: '0' },
    degree: { type: 'string', default: '3' },
    cut: { type: 'string', default: '0.1' },
    seed: { type: 'string' }
  }
})

const RAW_TOPIC = '/shoal/bench-raw/1'
const GOAL_P99_MS = 2000
const silent = { info () {}, warn () {}, debug () {} }

type Services = { pubsub: GossipSub, heads: HeadSync, identify: unknown }

interface Node {
  index: number
  node: Libp2p<Services>
  book: HeadBook
  index_: IndexDb
  spreader: HeadSpreader
  dialled: number[]
  /** When (performance.now()) this node first held each head id / raw message. */
  seen: Map<string, number>
}

/** Nearest-rank percentile. */
function pct (xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p / 100 * s.length) - 1))]!
}

function triple (xs: readonly number[]): string {
  const ms = (x: number): string => Number.isFinite(x) ? `${x.toFixed(0).padStart(6)} ms` : '     — ms'
  return `p50 ${ms(pct(xs, 50))}  p99 ${ms(pct(xs, 99))}  max ${ms(Math.max(...xs))}`
}

function rng (seedText: string): () => number {
  let s = 0
  for (const c of seedText) s = (s * 31 + c.charCodeAt(0)) >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

async function sleep (ms: number): Promise<void> { await new Promise(resolve => setTimeout(resolve, ms)) }

async function until (what: string, probe: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(20)
  }
}

async function main (): Promise<void> {
  const N = Number(values.nodes)
  const R = Number(values.rounds)
  const latency = Number(values.latency)
  const degree = Number(values.degree)
  const cutShare = Number(values.cut)
  if (!Number.isInteger(N) || N < 3) throw new Error('--nodes must be at least 3')
  const seedText = values.seed ?? randomBytes(4).toString('hex')
  const random = rng(seedText)
  const { privateKey } = generateKeyPairSync('ed25519')
  const publisher = publisherKeyOf(createPublicKey(privateKey))
  const versions = [0, 1].map(n => encodeBlock(`bench version ${n}`).cid)
  const cut = new Set<string>()
  const ids: string[] = []
  console.log(`shoal heads at scale: ${N} nodes in one process over @libp2p/memory (latency ${latency} ms per buffer), each dialling ${degree}; seed ${seedText}; ${R} rounds; ${loadNote()}`)

  const nodes: Node[] = []
  const startedAt = performance.now()
  for (let i = 0; i < N; i++) {
    const index = new IndexDb(new MemoryLevel() as unknown as Db)
    await index.open()
    const trust = new TrustPolicy([{ key: publisher, models: '*' }])
    const book = await HeadBook.open(new HeadStore(index), trust, { log: silent })
    const judge = new PeerScores()
    const guard = new HeadGuard(book, judge, { log: silent })
    const ref: { spreader?: HeadSpreader } = {}
    const source = headSource(book, guard, trust, peer => { ref.spreader?.noteInbound(peer) })
    // Refused while this node and the other are on different sides of the cut.
    const refused = (peer: PeerId): boolean => cut.has(ids[i] ?? '') !== cut.has(peer.toString())
    const node = await createLibp2p({
      addresses: { listen: [`/memory/shoal-scale-${i}`] },
      transports: [memory({ latency })],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      connectionGater: { denyDialMultiaddr: () => false, denyDialPeer: refused, denyInboundEncryptedConnection: refused, denyOutboundEncryptedConnection: refused },
      services: {
        identify: identify(),
        heads: headSync(source),
        pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false, scoreParams: { IPColocationFactorWeight: 0 } })
      }
    }) as unknown as Libp2p<Services>
    ids[i] = node.peerId.toString()
    const spreader = new HeadSpreader(node as never, book, guard, silent)
    ref.spreader = spreader
    spreader.start()
    const seen = new Map<string, number>()
    book.onAccepted(a => { if (!seen.has(a.head.id)) seen.set(a.head.id, performance.now()) })
    node.services.pubsub.subscribe(RAW_TOPIC)
    node.services.pubsub.addEventListener('message', evt => {
      if (evt.detail.topic !== RAW_TOPIC) return
      const key = Buffer.from(evt.detail.data).toString('hex')
      if (!seen.has(key)) seen.set(key, performance.now())
    })
    const pool = Array.from({ length: i }, (_, k) => k)
    const dialled: number[] = []
    while (dialled.length < Math.min(degree, i)) dialled.push(pool.splice(Math.floor(random() * pool.length), 1)[0]!)
    for (const j of dialled) await node.dial(multiaddr(`/memory/shoal-scale-${j}`), { signal: AbortSignal.timeout(30_000) }).catch(() => {})
    nodes.push({ index: i, node, book, index_: index, spreader, dialled, seen })
  }
  // The daemon's redial of configured peers (p2p/node.ts), which is how a cut node comes back.
  const redial = setInterval(() => {
    for (const n of nodes) {
      for (const j of n.dialled) {
        if (n.node.getConnections(nodes[j]!.node.peerId).length === 0) void n.node.dial(multiaddr(`/memory/shoal-scale-${j}`), { signal: AbortSignal.timeout(REDIAL_INTERVAL_MS * 2) }).catch(() => {})
      }
    }
  }, REDIAL_INTERVAL_MS)
  const connections = nodes.reduce((sum, n) => sum + n.node.getConnections().length, 0) / 2
  console.log(`fleet up in ${((performance.now() - startedAt) / 1000).toFixed(1)} s: ${connections} connections; letting gossipsub meshes form`)
  await until('every node subscribed with a peer on the head topic', () => nodes.every(n => n.node.services.pubsub.getSubscribers(HEADS_TOPIC).length > 0), 120_000)
  await sleep(3_000)

  const exitCode = 0
  try {
    const heads: number[] = []
    const headsAll: number[] = []
    const raw: number[] = []
    const rawAll: number[] = []
    const others = nodes.slice(1)
    for (let r = 0; r < R; r++) {
      // Baseline: a random message of a head's size on a topic without a validator.
      const payload = randomBytes(400)
      const key = payload.toString('hex')
      const t0 = performance.now()
      await nodes[0]!.node.services.pubsub.publish(RAW_TOPIC, payload)
      await until(`raw message ${r} everywhere`, () => others.every(n => n.seen.has(key)), 60_000).catch(err => { console.log(`  raw round ${r}: ${(err as Error).message}`) })
      const rawTimes = others.filter(n => n.seen.has(key)).map(n => n.seen.get(key)! - t0)
      raw.push(...rawTimes)
      rawAll.push(Math.max(...rawTimes))
      await sleep(1_000)
      // A label move from node 0.
      const t1 = performance.now()
      const signed = await nodes[0]!.book.publish({ model: 'bench', label: 'prod', version: versions[r % 2]!, key: privateKey })
      await until(`head ${r} everywhere`, () => others.every(n => n.seen.has(signed.id)), 60_000).catch(err => { console.log(`  head round ${r}: ${(err as Error).message}`) })
      const headTimes = others.filter(n => n.seen.has(signed.id)).map(n => n.seen.get(signed.id)! - t1)
      heads.push(...headTimes)
      headsAll.push(Math.max(...headTimes))
      console.log(`  round ${r + 1}: raw gossip everywhere in ${Math.max(...rawTimes).toFixed(0)} ms; head everywhere in ${Math.max(...headTimes).toFixed(0)} ms (${headTimes.length}/${others.length})`)
      await sleep(1_000)
    }

    // Cut 10% off, publish, heal.
    const chosen = new Set(others.filter(() => random() < cutShare).slice(0, Math.max(1, Math.round(N * cutShare))).map(n => n.index))
    // A node whose every path to node 0 runs through a chosen one is cut off with them.
    const byId = new Map(nodes.map(n => [n.node.peerId.toString(), n.index]))
    const reach = new Set([0])
    const queue = [0]
    while (queue.length > 0) {
      for (const c of nodes[queue.shift()!]!.node.getConnections()) {
        const j = byId.get(c.remotePeer.toString())
        if (j !== undefined && !chosen.has(j) && !reach.has(j)) { reach.add(j); queue.push(j) }
      }
    }
    const cutNodes = others.filter(n => !reach.has(n.index))
    for (const n of cutNodes) cut.add(n.node.peerId.toString())
    for (const n of cutNodes) {
      for (const c of n.node.getConnections()) if (!cut.has(c.remotePeer.toString())) await c.close().catch(() => {})
    }
    await sleep(1_000)
    const moved = await nodes[0]!.book.publish({ model: 'bench', label: 'prod', version: versions[R % 2]!, key: privateKey })
    const reachedWhole = others.filter(n => !cut.has(n.node.peerId.toString()))
    await until('the head on the connected 90%', () => reachedWhole.every(n => n.seen.has(moved.id)), 60_000)
    const leaked = cutNodes.filter(n => n.seen.has(moved.id)).length
    await sleep(2_000)
    cut.clear()
    const healedAt = performance.now()
    // When each cut node is connected to the rest again (redial), to tell that apart from the exchange.
    const whole = new Set(reachedWhole.map(n => n.node.peerId.toString()))
    const reconnected = new Map<number, number>()
    const watch = setInterval(() => {
      for (const n of cutNodes) {
        if (!reconnected.has(n.index) && n.node.getConnections().some(c => whole.has(c.remotePeer.toString()))) reconnected.set(n.index, performance.now() - healedAt)
      }
    }, 20)
    await until('the cut nodes converged', () => cutNodes.every(n => n.seen.has(moved.id)), 120_000).catch(err => { console.log(`  heal: ${(err as Error).message}`) })
    clearInterval(watch)
    const healTimes = cutNodes.filter(n => n.seen.has(moved.id)).map(n => n.seen.get(moved.id)! - healedAt)
    const afterConnect = cutNodes.filter(n => n.seen.has(moved.id) && reconnected.has(n.index)).map(n => n.seen.get(moved.id)! - healedAt - reconnected.get(n.index)!)

    const mem = process.memoryUsage()
    console.log('')
    console.log(`                                   per node (all rounds)                       every node, per round`)
    console.log(`raw gossipsub, 400 B (baseline)    ${triple(raw)}    p50 ${pct(rawAll, 50).toFixed(0)} ms, max ${Math.max(...rawAll).toFixed(0)} ms`)
    console.log(`label move (shoal heads)           ${triple(heads)}    p50 ${pct(headsAll, 50).toFixed(0)} ms, max ${Math.max(...headsAll).toFixed(0)} ms`)
    console.log(`  against the baseline             p50 ×${(pct(heads, 50) / pct(raw, 50)).toFixed(2)}, p99 ×${(pct(heads, 99) / pct(raw, 99)).toFixed(2)}; goal p99 < ${GOAL_P99_MS} ms: ${pct(heads, 99) < GOAL_P99_MS ? 'met' : 'NOT met'} (p99/goal ${(pct(heads, 99) / GOAL_P99_MS).toFixed(2)})`)
    console.log(`cut ${cutNodes.length} nodes (${(100 * cutNodes.length / N).toFixed(0)}%), healed    ${triple(healTimes)}    (${healTimes.length}/${cutNodes.length} converged; ${chosen.size} chosen, ${cutNodes.length - chosen.size} cut off with them; ${leaked} heard it through the cut; redial every ${REDIAL_INTERVAL_MS} ms)`)
    console.log(`  of which: reconnecting           ${triple([...reconnected.values()])}    then holding the head ${triple(afterConnect)}`)
    console.log(`process: rss ${(mem.rss / 2 ** 20).toFixed(0)} MiB, heap ${(mem.heapUsed / 2 ** 20).toFixed(0)} MiB, cpu ${(process.cpuUsage().user / 1e6).toFixed(1)} s user`)
  } finally {
    clearInterval(redial)
    for (const n of nodes) n.spreader.stop()
    await Promise.all(nodes.map(async n => { try { await n.node.stop() } catch { /* stopping anyway */ } }))
    await Promise.all(nodes.map(async n => await n.index_.close()))
  }
  process.exitCode = exitCode
}

main().catch(err => {
  console.error(err)
  process.exit(1)
})
