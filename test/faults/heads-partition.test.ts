/**
 * A fleet of six real daemons in network namespaces, split in two halves for 30 s (the link between
 * two bridges goes down: packets are dropped, nobody is told, TCP connections stay open on both
 * sides) and healed. Each half has a publisher, and both publish while cut off: a label only one
 * half moves, a label only the other moves, and one both move (the ordering rule picks the
 * winner). After the heal every node must hold the same winning heads within `HEAL_BOUND_MS`.
 *
 * Why 5 s holds (see `heads/spread.ts`): during the partition the rounds' exchanges over the cut
 * connections go unanswered, so both sides keep dialling each other afresh, a SYN at least every
 * `FRESH_DIAL_SPACING_MS`; after the heal the next SYN gets through, the new connection carries one
 * exchange both ways, and each side gossips what it learnt to its half. The old connections would
 * have waited for TCP's retransmission backoff (up to ~25 s after 30 s of loss).
 *
 * Every node is given both publishers' keys with `trust add`, all at once; the test checks they
 * are in force before it starts, since a node missing one (two adds at once used to lose one)
 * refuses that publisher's heads for good, which looks like a half that does not spread heads.
 */
import { execFileSync } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { compareHeads, type Head } from '../../src/core/heads.js'
import { FRESH_DIAL_SPACING_MS } from '../../src/heads/spread.js'
import type { HeadRow, LabelResult } from '../../src/rpc/api.js'
import { createSwarm, type Swarm } from '../../scripts/lib/netns.js'
import { onExitCleanup } from '../../scripts/lib/proc.js'
import { Harness, rawRequest, sleep, writeModelFolder, type DaemonProcess } from '../e2e/helpers.js'

/** @default 30 s — how long the halves stay apart (the figure of the hardening issue) */
const PARTITION_MS = 30_000
/**
 * What the mechanism guarantees after the heal, 5 s, plus 3 s of slack for this shared two-core
 * machine running six daemons: a fresh connection here takes a noise handshake and identify on
 * both ends, and a gossip hop a signature check and a synced write, each of which measured up to
 * several hundred ms under load.
 */
const HEAL_BOUND_MS = 5_000 + 3_000
const LABELS = ['prod', 'canary', 'dev'] as const

interface Node { d: DaemonProcess, addr: string, id: string, name: string }

function netnsUnavailable (): string | undefined {
  const name = `shprobe${process.pid}`
  try {
    execFileSync('ip', ['netns', 'add', name], { stdio: ['ignore', 'ignore', 'pipe'] })
    execFileSync('ip', ['netns', 'delete', name], { stdio: ['ignore', 'ignore', 'pipe'] })
    return undefined
  } catch (err) {
    const text = (err as { stderr?: Buffer }).stderr?.toString().trim() ?? (err as Error).message
    return `creating a network namespace is not permitted here (${text}); run as root or with CAP_NET_ADMIN`
  }
}

const NO_NETNS = netnsUnavailable()
if (NO_NETNS !== undefined) console.warn(`skipping the heads partition test: ${NO_NETNS}`)

async function heads (d: DaemonProcess): Promise<HeadRow[]> {
  const r = await rawRequest(d.socket, 'GET', '/v1/heads')
  if (r.status !== 200) throw new Error(`GET /v1/heads → ${r.status}: ${r.text.slice(0, 300)}`)
  return r.json as HeadRow[]
}

/** `<version> <wall>.<counter> <publisher>` of a label's head on a node, or `none`. */
function headOf (rows: HeadRow[], label: string): string {
  const r = rows.find(x => x.model === 'm' && x.label === label)
  return r === undefined ? 'none' : `${r.version ?? 'null'} ${r.stamp.wall}.${r.stamp.counter} ${r.publisher}`
}

function asHead (r: HeadRow): Head {
  return { model: r.model, label: r.label, version: r.version, previous: r.previous, stamp: r.stamp, activation: r.activation, publisher: r.publisher }
}

async function waitFor<T> (what: string, probe: () => Promise<T | undefined | false>, timeoutMs: number, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await probe()
    if (v !== undefined && v !== false) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(everyMs)
  }
}

describe('heads across a partition that heals', () => {
  let h: Harness
  let swarm: Swarm | undefined
  let removeExtra = (): void => {}
  let unregister = (): void => {}
  const started: Node[] = []

  beforeAll(async () => { h = await Harness.create('faults-heads-partition', { rpc: 'direct' }) })
  afterAll(async () => {
    await Promise.all(started.map(async n => await n.d.stop()))
    removeExtra()
    await swarm?.destroy()
    unregister()
    await h.close()
  })

  it.skipIf(NO_NETNS !== undefined)(`heads published on both sides during a 30 s partition are everywhere within ${HEAL_BOUND_MS / 1000} s of the heal${NO_NETNS !== undefined ? ` (skipped: ${NO_NETNS})` : ''}`, async () => {
    // Six namespaces on a bridge (scripts/lib/netns.ts); hosts 3–5 move to a second bridge joined
    // to the first by one veth pair: the cut is that pair going down, each half stays whole.
    swarm = await createSwarm({ hosts: 6, rateMbit: 1000 })
    const tag = swarm.hosts[0]!.ns.slice(2, swarm.hosts[0]!.ns.lastIndexOf('-'))
    const [bridgeA, bridgeB, linkA, linkB] = [`shb${tag}`, `shc${tag}`, `shl${tag}a`, `shl${tag}b`]
    const ip = (...args: string[]): void => { execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] }) }
    removeExtra = () => { for (const dev of [linkA, bridgeB]) { try { ip('link', 'del', dev) } catch { /* gone */ } } }
    unregister = onExitCleanup(removeExtra)
    ip('link', 'add', bridgeB, 'type', 'bridge')
    ip('link', 'set', bridgeB, 'up')
    ip('link', 'add', linkA, 'type', 'veth', 'peer', 'name', linkB)
    ip('link', 'set', linkA, 'master', bridgeA)
    ip('link', 'set', linkB, 'master', bridgeB)
    ip('link', 'set', linkA, 'up')
    ip('link', 'set', linkB, 'up')
    for (const i of [3, 4, 5]) ip('link', 'set', `shv${tag}-${i}`, 'master', bridgeB)

    const node = async (i: number, name: string, peers: Node[]): Promise<Node> => {
      const host = swarm!.hosts[i]!
      const n = await h.node(`part-${name}`, { peers: peers.map(x => x.addr), listen: `/ip4/${host.ip}/tcp/0`, wrap: ['ip', 'netns', 'exec', host.ns], config: { p2p: { dht: false } } })
      const out = { ...n, name }
      started.push(out)
      return out
    }
    // Two connections cross the cut (b0–a0, b1–a1); inside each half the nodes form a chain.
    const a0 = await node(0, 'a0', [])
    const [a1, b0] = await Promise.all([node(1, 'a1', [a0]), node(3, 'b0', [a0])])
    const [a2, b1] = await Promise.all([node(2, 'a2', [a1]), node(4, 'b1', [b0, a1])])
    const b2 = await node(5, 'b2', [b1])
    const sideA = [a0, a1, a2]
    const sideB = [b0, b1, b2]
    const all = [...sideA, ...sideB]
    // Both publishers are trusted everywhere.
    const keys = await Promise.all([a0, b0].map(async p => (await p.d.json<Array<{ name: string, publicKey: string }>>(['keys', 'list']))[0]!.publicKey))
    // All at once, as a fleet script would: each add that exits 0 must be in force (two at once on
    // one node used to lose one, and that node then refused one half's heads for good).
    await Promise.all(all.flatMap(n => keys.map(async k => await n.d.json(['trust', 'add', k, 'm']))))
    for (const n of all) {
      const rules = await n.d.json<Array<{ key: string, models: string }>>(['trust', 'list'])
      for (const k of keys) expect(rules.some(r => r.key === k && (r.models === 'm' || r.models === '*')), `${n.name} trusts ${k} after trust add exited 0`).toBe(true)
    }
    const [vA, vB] = await Promise.all([a0, b0].map(async (p, i) => {
      const dir = await writeModelFolder(await h.dir(`model-${i}`), { bytes: 64 * 1024, seed: `partition-${i}` })
      return (await p.d.json<{ version: string }>(['add', dir, '--name', 'm'])).version
    }))
    const set = async (p: Node, label: string, v: string): Promise<LabelResult> => await p.d.json<LabelResult>(['label', 'set', 'm', label, v])

    await set(a0, 'prod', vA!)
    await waitFor('every node on the first m@prod', async () => {
      const rows = await Promise.all(all.map(async n => await heads(n.d)))
      return rows.every(r => headOf(r, 'prod') === headOf(rows[0]!, 'prod') && headOf(r, 'prod') !== 'none')
    }, 60_000)

    // The cut.
    ip('link', 'set', linkA, 'down')
    const cutAt = Date.now()
    // Both halves move prod (a0 removes it, b0 points it at its own version), and each moves a
    // label the other never touches.
    await a0.d.json(['label', 'rm', 'm', 'prod'])
    await set(a0, 'dev', vA!)
    await set(b0, 'canary', vB!)
    await set(b0, 'prod', vB!)
    const [rowsA0, rowsB0] = await Promise.all([heads(a0.d), heads(b0.d)])
    const prodOf = (rows: HeadRow[]): HeadRow => rows.find(r => r.model === 'm' && r.label === 'prod')!
    // Which prod head wins once they meet is the ordering rule's call, whichever side made it.
    const prodWinner = compareHeads(asHead(prodOf(rowsA0)), asHead(prodOf(rowsB0))) > 0 ? rowsA0 : rowsB0
    const want: Record<string, string> = { dev: headOf(rowsA0, 'dev'), canary: headOf(rowsB0, 'canary'), prod: headOf(prodWinner, 'prod') }
    const sideHas = async (side: Node[], label: string, head: string): Promise<boolean> =>
      (await Promise.all(side.map(async n => headOf(await heads(n.d), label) === head))).every(Boolean)
    // Each half hears its own publisher, and nothing of the other's.
    await waitFor('side A on its heads', async () => await sideHas(sideA, 'dev', want.dev!) && await sideHas(sideA, 'prod', headOf(rowsA0, 'prod')), 20_000)
    await waitFor('side B on its heads', async () => await sideHas(sideB, 'canary', want.canary!) && await sideHas(sideB, 'prod', headOf(rowsB0, 'prod')), 20_000)
    for (const n of sideA) expect(headOf(await heads(n.d), 'canary'), `${n.name} heard of B's canary through the cut`).toBe('none')
    for (const n of sideB) expect(headOf(await heads(n.d), 'dev'), `${n.name} heard of A's dev through the cut`).toBe('none')

    // The rest of the partition: long enough for TCP's retransmission backoff to grow.
    await sleep(Math.max(0, cutAt + PARTITION_MS - Date.now()))
    ip('link', 'set', linkA, 'up')
    const healedAt = Date.now()
    const reached = new Map<string, number>()
    await waitFor('every node on the same heads', async () => {
      const rows = await Promise.all(all.map(async n => await heads(n.d)))
      rows.forEach((r, i) => {
        const name = all[i]!.name
        if (!reached.has(name) && LABELS.every(l => headOf(r, l) === want[l])) reached.set(name, Date.now() - healedAt)
      })
      return reached.size === all.length
    }, 60_000).catch(async err => {
      const rows = await Promise.all(all.map(async n => await heads(n.d)))
      const lines = all.map((n, i) => `${n.name}: ${LABELS.map(l => `${l}=${headOf(rows[i]!, l)}`).join(' ')}`)
      throw new Error(`${(err as Error).message}; want ${JSON.stringify(want)}\n${lines.join('\n')}`)
    })
    const converged = Math.max(...reached.values())
    console.log(`heads partition: ${PARTITION_MS / 1000} s apart; after the heal every node held every head in ${converged} ms (${all.map(n => `${n.name} ${reached.get(n.name)}`).join(', ')}); fresh dials at least every ${FRESH_DIAL_SPACING_MS} ms`)
    expect(converged).toBeLessThanOrEqual(HEAL_BOUND_MS)
  })
})
