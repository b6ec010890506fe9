/**
 * Swarm benchmark (issue 3, benchmark 2): N hosts in Linux network namespaces on one bridge, each
 * host's uplink and downlink shaped with tbf (default 100 Mbit/s), one seed holding an F-MiB
 * version (default 256), and all N pulling it at once. Prints the time until the last host
 * completes as a ratio to the P2P lower bound max(F/u_seed, N·F/(u_seed + Σu_peers)), and the
 * seed's egress as a multiple of F (interface counters, and the chunk bytes it sent), and each daemon's CPU seconds (user+sys) and peak RSS. Each run is followed by a full TCP mesh
 * on the same links (baselines/swarm-mesh.ts: every byte available everywhere from the start), the
 * best any scheme can do over TCP here. Needs root; every namespace and process is removed at the end.
 *
 *   sudo npm run bench:swarm -- [--peers 6] [--mib 256] [--rate 100] [--runs 1] [--strategy weighted] [--logs <dir>]
 *     [--skip-mesh] [--burst-kb K] [--latency-ms L]
 *
 * `--burst-kb`, `--latency-ms`: the tbf bucket depth and queue length (see scripts/lib/netns.ts).
 *
 * `--skip-mesh`: no full-mesh baseline after each run (quicker, for comparing shoal with itself).
 * `--logs <dir>`: daemons log at debug level, and each one's log is written to `<dir>/<name>.log`
 * when the run ends (requests, timeouts, DUPLICATE hints, sends: for chasing where time goes).
 */
import '../src/polyfill.js'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { ShoalClient } from '../src/rpc/client.js'
import { p2pLowerBound } from './baselines/swarm-http.js'
import { measureMesh } from './baselines/swarm-mesh.js'
import { DaemonProcess } from './lib/daemon-proc.js'
import { createSwarm, SHAPING_ARGS, shapingOf, type Swarm } from './lib/netns.js'
import { median } from './lib/proc.js'
import { llamaTensors, writeSafetensors } from './lib/synth.js'

/** Chunk bytes a daemon has sent to peers in all (its `shoal_bytes_sent_total`, from the RPC's /metrics). */
async function chunkBytesSent (d: DaemonProcess): Promise<number> {
  const text = await new ShoalClient({ socketPath: d.socket }).metrics()
  let sum = 0
  for (const m of text.matchAll(/^shoal_bytes_sent_total\{[^}]*\} (\S+)$/gm)) sum += Number(m[1])
  return sum
}

const { values } = parseArgs({
  options: {
    peers: { type: 'string', default: '6' },
    mib: { type: 'string', default: '256' },
    rate: { type: 'string', default: '100' },
    runs: { type: 'string', default: '1' },
    strategy: { type: 'string', default: 'weighted' },
    verbose: { type: 'boolean', default: false },
    slots: { type: 'string' },
    logs: { type: 'string' },
    'skip-mesh': { type: 'boolean', default: false },
    ...SHAPING_ARGS
  }
})
const N = Number(values.peers)
const MiB = 1024 * 1024
const rateMbit = Number(values.rate)
const runs = Number(values.runs)
const PORT = 4077

const root = await mkdtemp(join(tmpdir(), 'shoal-bench-swarm-'))
let swarm: Swarm | undefined
const daemons: DaemonProcess[] = []
const names = new Map<DaemonProcess, string>()
/** Writes the logs of `ds` under `--logs`, if given. */
const keepLogs = async (ds: DaemonProcess[]): Promise<void> => {
  if (values.logs === undefined) return
  await mkdir(values.logs, { recursive: true })
  for (const d of ds) await writeFile(join(values.logs, `${names.get(d) ?? 'daemon'}.log`), d.stderr)
}
try {
  await mkdir(join(root, 'model'))
  await writeSafetensors(join(root, 'model', 'model.safetensors'), llamaTensors(Number(values.mib) * MiB, { hidden: 1024 }))
  swarm = await createSwarm({ hosts: N + 1, rateMbit, ...shapingOf(values) })
  const u = swarm.rateBytesPerSec
  const [seedHost, ...peerHosts] = swarm.hosts
  if (seedHost === undefined) throw new Error('no hosts')
  const config = JSON.stringify({ transfer: { strategy: values.strategy, ...(values.slots !== undefined ? { uploadSlots: Number(values.slots) } : {}) } })
  const start = async (name: string, ip: string, ns: string, peers: string[]): Promise<DaemonProcess> => {
    const home = join(root, name)
    await mkdir(home, { recursive: true })
    await writeFile(join(home, 'config.json'), config)
    const env = values.logs !== undefined ? { SHOAL_LOG_LEVEL: 'debug' } : {}
    const d = new DaemonProcess(home, ['--listen', `/ip4/${ip}/tcp/${PORT}`, ...peers.flatMap(p => ['--peer', p])], env, ['ip', 'netns', 'exec', ns])
    names.set(d, name)
    daemons.push(d)
    return await d.start(60_000)
  }
  const seed = await start('seed', seedHost.ip, seedHost.ns, [])
  const { version, structure } = await seed.json<{ version: string, structure: { totalSize: number } }>(['add', join(root, 'model'), '--name', 'bench'])
  const F = structure.totalSize
  const { peerId } = await seed.json<{ peerId: string }>(['id'])
  const seedAddr = `/ip4/${seedHost.ip}/tcp/${PORT}/p2p/${peerId}`
  const bound = p2pLowerBound(F, u, peerHosts.map(() => u))

  const ratios: number[] = []
  const meshRatios: number[] = []
  const egress: number[] = []
  const chunkEgress: number[] = []
  for (let run = 1; run <= runs; run++) {
    const pullers = await Promise.all(peerHosts.map(async (h, i) => await start(`run${run}-peer${i}`, h.ip, h.ns, [seedAddr])))
    const cpuOf = async (d: DaemonProcess): Promise<{ user: number, sys: number }> => await d.cpuSeconds()
    const cpu0 = await Promise.all([seed, ...pullers].map(cpuOf))
    const tx0 = await swarm.txBytes(seedHost)
    const chunks0 = await chunkBytesSent(seed)
    const t0 = performance.now()
    const timeline: string[] = []
    const sampler = values.verbose === true ? (() => {
      let prevTx = 0
      let prevRx = 0
      const timer = setInterval(() => {
        void (async () => {
          const tx = await swarm!.txBytes(seedHost)
          let rx = 0
          for (const h of peerHosts) rx += await swarm!.rxBytes(h)
          timeline.push(`${((performance.now() - t0) / 1000).toFixed(0)}s seed out ${((tx - prevTx) / 1e6).toFixed(1)} MB/s, pullers in ${((rx - prevRx) / 1e6).toFixed(1)} MB/s`)
          prevTx = tx
          prevRx = rx
        })().catch(() => {}) // a sample racing the teardown of a failed run is dropped
      }, 1000)
      return timer
    })() : undefined
    // A failed pull must surface as itself: stop sampling before the namespaces are removed.
    const done = await Promise.all(pullers.map(async d => {
      await new ShoalClient({ socketPath: d.socket }).pull({ ref: `bench@${version}` })
      return (performance.now() - t0) / 1000
    })).finally(() => clearInterval(sampler))
    if (values.verbose === true) {
      console.log(timeline.join('\n'))
      for (const [i, d] of pullers.entries()) {
        const rows = await d.json<Array<{ peerId: string, bytesReceived: number }>>(['peers'])
        console.log(`peer${i} received: ${rows.map(r => `${r.peerId === peerId ? 'seed' : r.peerId.slice(-4)}=${(r.bytesReceived / MiB).toFixed(0)}`).join(' ')}`)
      }
    }
    const last = Math.max(...done)
    const cpu = (await Promise.all([seed, ...pullers].map(cpuOf))).map((c, i) => `${(c.user - (cpu0[i]?.user ?? 0)).toFixed(1)}+${(c.sys - (cpu0[i]?.sys ?? 0)).toFixed(1)}`)
    const rss = await Promise.all([seed, ...pullers].map(async d => Math.round(await d.peakRss() / MiB)))
    const sent = (await swarm.txBytes(seedHost)) - tx0
    const chunkSent = (await chunkBytesSent(seed)) - chunks0
    ratios.push(last / bound)
    egress.push(sent / F)
    chunkEgress.push(chunkSent / F)
    console.log(`run ${run}: hosts done at ${done.map(s => s.toFixed(1)).join(', ')} s; last ${last.toFixed(1)} s = ${(last / bound).toFixed(2)}× bound; seed egress ${(sent / F).toFixed(2)}×F (chunk bytes ${(chunkSent / F).toFixed(2)}×F); CPU seconds (user+sys) seed ${cpu[0] ?? '?'}, pullers ${cpu.slice(1).join(' ')}; peak RSS MiB seed ${rss[0] ?? '?'}, pullers ${rss.slice(1).join(' ')}`)
    for (const d of pullers) await d.stop()
    await keepLogs(pullers)
    if (values.logs !== undefined) {
      // TCP's view of the run: retransmissions and timeouts per host.
      const stats = await Promise.all(swarm.hosts.map(async h => `${h.ns}\n${(await h.run('nstat', ['-asz'])).stdout}`))
      await writeFile(join(values.logs, `run${run}-nstat.txt`), stats.join('\n'))
    }
    if (values['skip-mesh'] === true) continue
    const mesh = await measureMesh(swarm, F)
    meshRatios.push(mesh / bound)
    console.log(`run ${run}: full TCP mesh on the same links ${mesh.toFixed(1)} s = ${(mesh / bound).toFixed(2)}× bound; shoal / mesh ${(last / mesh).toFixed(2)}`)
  }
  console.log('')
  console.log(`shoal swarm benchmark: ${N} pullers + 1 seed, ${(F / MiB).toFixed(0)} MiB, ${rateMbit} Mbit/s up and down per host, strategy ${values.strategy}`)
  console.log(`P2P lower bound      ${bound.toFixed(1)} s  (max(F/u_seed, N·F/(u_seed+Σu_peers)))`)
  console.log(`last host done       ${(median(ratios) * bound).toFixed(1)} s = ${median(ratios).toFixed(2)}× bound   (goal <= 1.15; plain HTTP 6.3×, BitTorrent 1.41–1.55×)`)
  if (meshRatios.length > 0) {
    console.log(`full TCP mesh        ${(median(meshRatios) * bound).toFixed(1)} s = ${median(meshRatios).toFixed(2)}× bound   (every byte everywhere at t=0: what TCP over these links reaches)`)
    console.log(`shoal / mesh         ${(median(ratios) / median(meshRatios)).toFixed(2)}`)
  }
  console.log(`seed egress          ${median(egress).toFixed(2)}×F            (goal <= 1.1; plain HTTP 6.0×F, BitTorrent 1.3×F)`)
  console.log(`  of which chunks    ${median(chunkEgress).toFixed(2)}×F            (chunk bytes the seed sent; the rest is TCP/IP headers, retransmissions, noise, yamux, requests)`)
} finally {
  for (const d of daemons) await d.stop().catch(() => {})
  await keepLogs(daemons.filter(d => names.get(d) === 'seed')).catch(() => {})
  await swarm?.destroy()
  await rm(root, { recursive: true, force: true })
}
