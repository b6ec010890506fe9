/**
 * Baseline for the swarm benchmark (issue 3, Benchmarks 2): a client-server origin. In a netns
 * swarm of N peers plus one seed, every link shaped with tc tbf, the seed serves an F-byte file
 * over plain HTTP (http-origin.ts) and all N peers download it at once with curl. Prints the time
 * until the last peer completes, the P2P lower bound max(F/u_seed, N·F/(u_seed + Σu_peers)) with
 * its ratio, and the seed's egress as a multiple of F from its interface tx counter (bytes as
 * the veth counts them, headers included; with GSO that is ~1% above the payload).
 *
 *   node --import tsx scripts/baselines/swarm-http.ts [--peers 6] [--mib 256] [--rate 100] [--runs 1]
 *
 * Needs root and curl. The file lives in a temporary folder that is removed at the end; the swarm
 * (namespaces, bridge, processes) is destroyed also on failure or interrupt.
 */
import { rmSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { createSwarm, SHAPING_ARGS, shapingOf, type Swarm, type SwarmHost } from '../lib/netns.js'
import { isMain, median, onExitCleanup, startScript } from '../lib/proc.js'
import { writeRandomFile } from './http-origin.js'

const ORIGIN_SCRIPT = fileURLToPath(new URL('./http-origin.ts', import.meta.url))
const MiB = 1024 * 1024
const FILE_NAME = 'model.bin'
const ORIGIN_PORT = 8080
const START_TIMEOUT_MS = 30_000

/** P2P lower bound in seconds: every peer needs F, and all bytes leave some uplink. */
export function p2pLowerBound (fileBytes: number, uSeed: number, uPeers: readonly number[]): number {
  const total = uSeed + uPeers.reduce((s, u) => s + u, 0)
  return Math.max(fileBytes / uSeed, uPeers.length * fileBytes / total)
}

interface RunFigures { seconds: number, egressBytes: number }

async function download (host: SwarmHost, url: string, bytes: number): Promise<void> {
  const r = await host.run('curl', ['-sS', '--fail', '-o', '/dev/null', '-w', '%{size_download}', url])
  if (r.code !== 0 || Number(r.stdout) !== bytes) {
    throw new Error(`${host.ns}: curl exited ${r.code} after ${r.stdout} of ${bytes} bytes: ${r.stderr}`)
  }
}

async function runOnce (swarm: Swarm, url: string, bytes: number): Promise<RunFigures> {
  const [seed, ...peers] = swarm.hosts
  const tx0 = await swarm.txBytes(seed!)
  const t0 = process.hrtime.bigint()
  await Promise.all(peers.map(async p => { await download(p, url, bytes) }))
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9
  return { seconds, egressBytes: await swarm.txBytes(seed!) - tx0 }
}

async function main (): Promise<void> {
  const { values: a } = parseArgs({
    options: {
      peers: { type: 'string', default: '6' },
      mib: { type: 'string', default: '256' },
      rate: { type: 'string', default: '100' },
      runs: { type: 'string', default: '1' },
      ...SHAPING_ARGS
    }
  })
  const peers = Number(a.peers)
  const bytes = Number(a.mib) * MiB
  const runs = Number(a.runs)
  if (!Number.isInteger(peers) || peers < 1 || !(bytes > 0) || !Number.isInteger(runs) || runs < 1) {
    console.error('usage: swarm-http.ts [--peers 6] [--mib 256] [--rate 100] [--runs 1] [--burst-kb K] [--latency-ms L]')
    process.exit(2)
  }

  const dir = await mkdtemp(join(tmpdir(), 'shoal-swarm-http-'))
  const unregister = onExitCleanup(() => { rmSync(dir, { recursive: true, force: true }) })
  let swarm: Swarm | undefined
  try {
    await writeRandomFile(join(dir, FILE_NAME), bytes)
    swarm = await createSwarm({
      hosts: peers + 1,
      rateMbit: Number(a.rate),
      ...shapingOf(a)
    })
    const seed = swarm.hosts[0]!
    const origin = startScript(ORIGIN_SCRIPT, ['--serve', dir, '--host', seed.ip, '--port', String(ORIGIN_PORT)], seed.exec)
    const url = await origin.next<string>('listening', START_TIMEOUT_MS) + FILE_NAME

    const u = swarm.rateBytesPerSec
    const bound = p2pLowerBound(bytes, u, Array.from({ length: peers }, () => u))
    const figures: RunFigures[] = []
    for (let r = 0; r < runs; r++) {
      const f = await runOnce(swarm, url, bytes)
      figures.push(f)
      console.log(`run ${r + 1}: last peer done after ${f.seconds.toFixed(1)} s (${(f.seconds / bound).toFixed(2)}× bound), ` +
        `seed egress ${(f.egressBytes / bytes).toFixed(2)}×F`)
    }
    const seconds = median(figures.map(f => f.seconds))
    const egress = median(figures.map(f => f.egressBytes)) / bytes
    console.log(`swarm HTTP: N=${peers} peers + seed, F=${a.mib} MiB, ${a.rate} Mbit tbf up/down, median of ${runs}: ` +
      `last done ${seconds.toFixed(1)} s, P2P bound ${bound.toFixed(1)} s, ratio ${(seconds / bound).toFixed(2)}×, ` +
      `seed egress ${egress.toFixed(2)}×F (wire bytes)`)
  } finally {
    await swarm?.destroy()
    await rm(dir, { recursive: true, force: true })
    unregister()
  }
}

if (isMain(import.meta.url)) await main()
