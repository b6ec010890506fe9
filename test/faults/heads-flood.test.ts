/**
 * Peers flooding a real daemon with heads, over gossipsub (a `HostilePeer` on the head topic) and
 * over anti-entropy (`HeadInjector` pushing full frames), with heads of a publisher the daemon does
 * not trust and with forged heads of the publisher it does. What must hold:
 * - untrusted heads never cost a signature check; the daemon looks at no more of them than the
 *   sender's budget allows (`HEAD_CHECK_BURST` + `HEAD_CHECKS_PER_SECOND` × seconds) and drops the
 *   rest unchecked, counted; each `FLOOD_DROPS_PER_OFFENCE` drops are a `flood` offence;
 * - forged heads cost one signature check each until the sender is banned at the third;
 * - the RPC answers throughout (its latency is printed, not asserted: the machine is shared);
 * - a trusted head stamped with counter 2^53 − 1 is refused (the sender's offence says why), and
 *   `label set` still publishes above a head whose counter is at the cap.
 */
import { spawn } from 'node:child_process'
import { request } from 'node:http'
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MAX_STAMP_COUNTER, publisherKeyOf } from '../../src/core/heads.js'
import { FLOOD_DROPS_PER_OFFENCE, HEAD_CHECK_BURST, HEAD_CHECKS_PER_SECOND, SYNC_BURST } from '../../src/heads/guard.js'
import { HEADS_TOPIC } from '../../src/heads/spread.js'
import type { KeyRow, LabelResult, PeerRow, StatusResult } from '../../src/rpc/api.js'
import { HeadInjector } from '../e2e/head-injector.js'
import { Harness, sleep, writeModelFolder, type DaemonProcess } from '../e2e/helpers.js'
import { HostilePeer } from './hostile-peer.js'

type Counts = StatusResult['heads']

/**
 * `GET path` on the daemon's socket, on a new connection: a kept-alive one can be closed by the
 * server while this process is busy flooding, and the next request on it would be reset.
 */
async function get<T> (d: DaemonProcess, path: string): Promise<T> {
  return await new Promise((resolve, reject) => {
    request({ socketPath: d.socket, path, agent: false }, res => {
      const parts: Buffer[] = []
      res.on('data', (p: Buffer) => parts.push(p))
      res.on('error', reject)
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8')
        if (res.statusCode !== 200) reject(new Error(`GET ${path} → ${res.statusCode ?? 0}: ${text.slice(0, 300)}`))
        else resolve(JSON.parse(text) as T)
      })
    }).on('error', reject).end()
  })
}

async function counts (d: DaemonProcess): Promise<Counts> {
  return (await get<StatusResult>(d, '/v1/status')).heads
}

async function peerRow (d: DaemonProcess, peer: string): Promise<PeerRow | undefined> {
  return (await get<PeerRow[]>(d, '/v1/peers')).find(p => p.peerId === peer)
}

async function waitFor<T> (what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await probe()
    if (v !== undefined && v !== false) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(100)
  }
}

/** Signed heads built straight from dag-cbor (no schema checks on the way: the receiver must do them). */
function rawHead (key: KeyObject, body: Record<string, unknown>, badSignature = false): Uint8Array {
  const bytes = dagCbor.encode({ v: 1, previous: null, activation: { mode: 'hot' }, publisher: publisherKeyOf(createPublicKey(key)), ...body })
  const sig = badSignature ? new Uint8Array(randomBytes(64)) : new Uint8Array(sign(null, bytes, key))
  return dagCbor.encode({ head: bytes, sig })
}

/**
 * Polls the daemon's RPC (`GET /v1/status`, a new connection each time) every 100 ms from a
 * separate process while `work` runs, so the latencies are the daemon's and not this busy test
 * process's; returns them in ms. A request that fails is an error.
 */
async function whileProbing (d: DaemonProcess, work: () => Promise<void>): Promise<number[]> {
  const script = `
    const http = require('node:http')
    let stop = false
    process.stdin.on('data', () => { stop = true }); process.stdin.on('end', () => { stop = true })
    const once = () => new Promise((resolve, reject) => {
      const t = performance.now()
      http.request({ socketPath: ${JSON.stringify(d.socket)}, path: '/v1/status', agent: false }, res => {
        res.resume(); res.on('end', () => res.statusCode === 200 ? resolve(performance.now() - t) : reject(new Error('status ' + res.statusCode)))
      }).on('error', reject).end()
    })
    ;(async () => {
      while (!stop) { console.log(JSON.stringify(await once())); await new Promise(r => setTimeout(r, 100)) }
    })().catch(err => { console.log(JSON.stringify({ error: err.message })); process.exitCode = 1 })
  `
  const child = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (b: Buffer) => { out += b.toString() })
  const exited = new Promise<number | null>(resolve => child.on('exit', code => { resolve(code) }))
  try {
    await work()
  } finally {
    child.stdin.end('stop')
    if (await Promise.race([exited, sleep(10_000).then(() => 'late' as const)]) === 'late') child.kill('SIGKILL')
  }
  const lines = out.trim().split('\n').filter(l => l !== '').map(l => JSON.parse(l) as number | { error: string })
  const failed = lines.find((l): l is { error: string } => typeof l === 'object')
  if (failed !== undefined) throw new Error(`an RPC request during the flood failed: ${failed.error}`)
  return lines as number[]
}

function describeLatency (ms: number[]): string {
  const s = [...ms].sort((a, b) => a - b)
  const at = (p: number): string => (s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN).toFixed(0)
  return `${s.length} status calls: p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${at(1)} ms`
}

describe('heads flooding a daemon', () => {
  let h: Harness
  let victim: DaemonProcess
  let addr: string
  let version: string
  let publisher: KeyObject
  const stranger = generateKeyPairSync('ed25519').privateKey
  const peers: Array<{ stop: () => Promise<void> }> = []

  beforeAll(async () => {
    h = await Harness.create('faults-heads', { rpc: 'direct' })
    const n = await h.node('victim', { config: { p2p: { dht: false } } })
    victim = n.d
    addr = n.addr
    const dir = await writeModelFolder(await h.dir('model'), { bytes: 64 * 1024, seed: 'flood' })
    version = (await victim.json<{ version: string }>(['add', dir, '--name', 'm'])).version
    await victim.json<LabelResult>(['label', 'set', 'm', 'prod', version])
    publisher = createPrivateKey((await victim.json<{ privateKey: string }>(['keys', 'export', 'default', '--private'])).privateKey)
    expect((await victim.json<KeyRow[]>(['keys', 'list']))[0]?.publicKey).toBe(publisherKeyOf(createPublicKey(publisher)))
  })

  afterAll(async () => {
    await Promise.all(peers.map(async p => await p.stop()))
    await h.close()
  })

  it('untrusted heads over gossip: no signature is checked, the sender is held to its budget, the RPC answers', async () => {
    const N = 4_000
    const wall = Date.now()
    const flood = Array.from({ length: N }, (_, i) => rawHead(stranger, { model: 'm', label: `g${i}`, version, stamp: [wall, 0] }))
    const hostile = await HostilePeer.start()
    peers.push(hostile)
    const pubsub = hostile.node.services.pubsub
    pubsub.subscribe(HEADS_TOPIC)
    const victimId = (await hostile.dial(addr)).toString()
    await waitFor('the daemon on the hostile peer\'s head topic', async () => pubsub.getSubscribers(HEADS_TOPIC).some(p => p.toString() === victimId), 30_000)

    const before = await counts(victim)
    const started = Date.now()
    let settled = before
    const latencies = await whileProbing(victim, async () => {
      for (const bytes of flood) await pubsub.publish(HEADS_TOPIC, bytes).catch(() => {})
      // Every head counted, or the flooder banned (its third flood offence) and cut off.
      settled = await waitFor('every flooded head counted, or the flooder cut off', async () => {
        const c = await counts(victim)
        if (c.rejected.untrusted + c.dropped - before.rejected.untrusted - before.dropped >= N) return c
        const cutOff = (await peerRow(victim, hostile.peerId))?.bannedUntil !== undefined && hostile.node.getConnections().every(x => x.remotePeer.toString() !== victimId)
        return cutOff ? c : undefined
      })
    })
    const seconds = (Date.now() - started) / 1000
    const checked = settled.rejected.untrusted - before.rejected.untrusted
    const dropped = settled.dropped - before.dropped
    console.log(`heads flood (gossip, untrusted): ${N} heads published in ${seconds.toFixed(1)} s; ${checked} checked, ${dropped} dropped unchecked, ${settled.signatureChecks - before.signatureChecks} signature checks; RPC during the flood: ${describeLatency(latencies)}`)
    expect(settled.signatureChecks).toBe(before.signatureChecks)
    expect(checked).toBeGreaterThanOrEqual(HEAD_CHECK_BURST)
    expect(checked).toBeLessThanOrEqual(HEAD_CHECK_BURST + Math.ceil(HEAD_CHECKS_PER_SECOND * seconds) + 1)
    expect(checked + dropped).toBeLessThanOrEqual(N)
    expect(settled.accepted).toBe(before.accepted)
    // Rate-limited and recorded: one flood offence per FLOOD_DROPS_PER_OFFENCE drops; banned at the third.
    const row = (await peerRow(victim, hostile.peerId))!
    const offences = row.offences.flood ?? 0
    expect(offences).toBe(Math.min(3, Math.floor(dropped / FLOOD_DROPS_PER_OFFENCE)))
    expect(row.lastOffence).toMatch(/^flood: \d+ heads sent past its budget of 20 per second$/)
    expect(row.bannedUntil !== undefined && row.bannedUntil > Date.now()).toBe(offences >= 3)
    console.log(`heads flood (gossip, untrusted): the flooder has ${offences} flood offences${offences >= 3 ? ', banned' : ''}`)
  })

  it('untrusted heads over anti-entropy: full frames pushed back to back are held to the same budget, and exchanges to theirs', async () => {
    const PUSHES = SYNC_BURST + 6
    const wall = Date.now()
    const frames = Array.from({ length: PUSHES }, (_, p) => Array.from({ length: 512 }, (_, i) => rawHead(stranger, { model: 'm', label: `s${p}x${i}`, version, stamp: [wall, 0] })))
    const injector = await HeadInjector.start()
    peers.push(injector)
    const before = await counts(victim)
    const started = Date.now()
    let failed = 0
    let settled = before
    const latencies = await whileProbing(victim, async () => {
      for (const frame of frames) await injector.push(addr, frame).catch(() => { failed++ })
      settled = await waitFor('the pushed heads counted', async () => {
        const c = await counts(victim)
        return c.rejected.untrusted + c.dropped - before.rejected.untrusted - before.dropped >= (PUSHES - failed) * 512 ? c : undefined
      })
    })
    const seconds = (Date.now() - started) / 1000
    const checked = settled.rejected.untrusted - before.rejected.untrusted
    const dropped = settled.dropped - before.dropped
    const syncsRefused = settled.syncsRefused - before.syncsRefused
    console.log(`heads flood (anti-entropy, untrusted): ${PUSHES} frames of 512 pushed in ${seconds.toFixed(1)} s, ${syncsRefused} refused; ${checked} heads checked, ${dropped} dropped unchecked, ${settled.signatureChecks - before.signatureChecks} signature checks; RPC during the flood: ${describeLatency(latencies)}`)
    expect(settled.signatureChecks).toBe(before.signatureChecks)
    expect(failed).toBe(syncsRefused)
    expect(syncsRefused).toBeGreaterThanOrEqual(1)
    expect(syncsRefused).toBeLessThanOrEqual(PUSHES - SYNC_BURST)
    expect(checked).toBeGreaterThanOrEqual(HEAD_CHECK_BURST)
    expect(checked).toBeLessThanOrEqual(HEAD_CHECK_BURST + Math.ceil(HEAD_CHECKS_PER_SECOND * seconds) + 1)
    expect(checked + dropped).toBe((PUSHES - syncsRefused) * 512)
    // Dropped, never an offence over anti-entropy: an honest peer of another publisher's fleet looks the same.
    const row = await peerRow(victim, injector.peerId)
    expect(row?.offences ?? {}).toEqual({})
  })

  it('an honest peer holding 600 heads of a publisher this node does not trust is neither penalised nor cut off', async () => {
    // The honest node trusts the stranger (another publisher of its fleet) and this daemon's key.
    const strangerKey = publisherKeyOf(createPublicKey(stranger))
    const victimKey = publisherKeyOf(createPublicKey(publisher))
    const before = await counts(victim)
    const honest = await h.node('honest', { peers: [addr], config: { p2p: { dht: false }, trust: [{ key: strangerKey, models: '*' }, { key: victimKey, models: 'm' }] } })
    await waitFor('the honest node connected', async () => (await peerRow(victim, honest.id))?.connected === true, 30_000)
    // 600 heads reach the honest node at once; it relays them (gossip) and offers them (rounds).
    const wall = Date.now()
    const theirs = Array.from({ length: 600 }, (_, i) => rawHead(stranger, { model: 'other', label: `h${i}`, version, stamp: [wall, 0] }))
    const injector = await HeadInjector.start()
    peers.push(injector)
    for (const part of [theirs.slice(0, 300), theirs.slice(300)]) await injector.push(honest.addr, part)
    const id = honest.id
    // Every one of them offered to this daemon at least once, over gossip and the rounds.
    await waitFor('the 600 foreign heads refused as untrusted', async () => (await counts(victim)).rejected.untrusted - before.rejected.untrusted >= 600, 60_000)
    // A move here still reaches the honest node.
    const moved = await victim.json<LabelResult>(['label', 'set', 'm', 'canary', version])
    await waitFor('the honest node holding m@canary', async () => (await get<Array<{ label: string, stamp: { wall: number, counter: number } }>>(honest.d, '/v1/heads')).some(r => r.label === 'canary' && `${r.stamp.wall}.${r.stamp.counter}` === moved.stamp), 30_000)
    const after = await counts(victim)
    const row = await peerRow(victim, id)
    console.log(`heads from another publisher's fleet: 600 foreign heads, ${after.rejected.untrusted - before.rejected.untrusted} refused as untrusted (repeats by id), ${after.dropped - before.dropped} dropped over budget, ${after.signatureChecks - before.signatureChecks} signature checks`)
    expect(row?.offences ?? {}).toEqual({})
    expect(row?.bannedUntil).toBeUndefined()
    expect(after.signatureChecks - before.signatureChecks).toBeLessThanOrEqual(1)
  })

  it('forged heads of the trusted publisher: one signature check each until the sender is banned at the third', async () => {
    const wall = Date.now()
    const forged = (): Uint8Array[] => Array.from({ length: 50 }, (_, i) => rawHead(publisher, { model: 'm', label: 'prod', version, stamp: [wall + i, 0], previous: version }, true))
    // Over anti-entropy, in one frame.
    const injector = await HeadInjector.start()
    peers.push(injector)
    let before = await counts(victim)
    await injector.push(addr, forged())
    let after = await waitFor('the forged frame counted', async () => {
      const c = await counts(victim)
      return c.dropped - before.dropped + c.rejected.signature - before.rejected.signature >= 50 ? c : undefined
    })
    expect(after.signatureChecks - before.signatureChecks).toBe(3)
    expect(after.rejected.signature - before.rejected.signature).toBe(3)
    expect(after.dropped - before.dropped).toBe(47)
    let row = await peerRow(victim, injector.peerId)
    expect(row).toMatchObject({ offences: { head: 3 }, lastOffence: expect.stringMatching(/^head: sent a signature head: bad signature on m@prod \(publisher z6Mk/) })
    expect(row?.bannedUntil).toBeGreaterThan(Date.now())

    // Over gossip: the daemon hangs up on the sender at its third; nothing after it is checked.
    const hostile = await HostilePeer.start()
    peers.push(hostile)
    const pubsub = hostile.node.services.pubsub
    pubsub.subscribe(HEADS_TOPIC)
    const victimId = (await hostile.dial(addr)).toString()
    await waitFor('the daemon on the head topic', async () => pubsub.getSubscribers(HEADS_TOPIC).some(p => p.toString() === victimId), 30_000)
    before = await counts(victim)
    for (const bytes of forged()) await pubsub.publish(HEADS_TOPIC, bytes).catch(() => {})
    row = await waitFor('the gossiping forger banned', async () => {
      const r = await peerRow(victim, hostile.peerId)
      return r?.bannedUntil !== undefined ? r : undefined
    })
    expect(row.offences).toEqual({ head: 3 })
    after = await counts(victim)
    expect(after.signatureChecks - before.signatureChecks).toBe(3)
    expect(after.rejected.signature - before.rejected.signature).toBe(3)
    expect(((await victim.json<Array<{ model: string, label: string, version: string }>>(['heads'])).find(r => r.label === 'prod'))?.version).toBe(version)
  })

  it('a trusted head at counter 2^53 − 1 is refused saying why; label set publishes above one at the counter cap', async () => {
    const injector = await HeadInjector.start()
    peers.push(injector)
    // A minute ahead (within the accepted clock skew), so a publish must stamp above it, not at the clock.
    const wall = Date.now() + 60_000
    await injector.push(addr, [rawHead(publisher, { model: 'm', label: 'prod', version, stamp: [wall, Number.MAX_SAFE_INTEGER], previous: version })])
    const row = await waitFor('the sender of the wedge head penalised', async () => {
      const r = await peerRow(victim, injector.peerId)
      return r?.lastOffence !== undefined ? r : undefined
    })
    expect(row.lastOffence).toBe(`head: sent a malformed head: head body is invalid: stamp.1: counter ${Number.MAX_SAFE_INTEGER} is over the limit of ${MAX_STAMP_COUNTER}`)
    // At the cap, the head is valid and wins; the next publish moves to the next millisecond.
    await injector.push(addr, [rawHead(publisher, { model: 'm', label: 'prod', version, stamp: [wall, MAX_STAMP_COUNTER], previous: version })])
    await waitFor('the capped head accepted', async () => (await victim.json<Array<{ label: string, stamp: { counter: number } }>>(['heads'])).find(r => r.label === 'prod')?.stamp.counter === MAX_STAMP_COUNTER)
    const r = await victim.json<LabelResult>(['label', 'set', 'm', 'prod', version])
    expect(r.stamp).toBe(`${wall + 1}.0`)
  })
})
