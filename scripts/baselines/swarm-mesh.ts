/**
 * Baseline for the swarm benchmark (issue 3, Benchmarks 2): the same shaped links used by a
 * scheme no P2P system can beat, plain TCP with every byte available everywhere from the start.
 * Each of the N peers fetches F/N bytes from each of the other N hosts (the seed and N−1 peers) at
 * once, over N TCP connections: the schedule of the fluid lower bound (the seed sends F in all,
 * each peer receives F), with nothing waiting for a piece to arrive before it can be passed on.
 * What it measures is how close TCP through two tbf stages (uplink, downlink) gets to the bound
 * on this machine; a swarm's time over this one is what its own scheduling costs.
 *
 *   node --import tsx scripts/baselines/swarm-mesh.ts [--peers 6] [--mib 256] [--rate 100] [--runs 1] [--burst-kb K] [--latency-ms L]
 *   node --import tsx scripts/baselines/swarm-mesh.ts --serve --host <ip> [--port 5077]
 *   node --import tsx scripts/baselines/swarm-mesh.ts --fetch --bytes <n> --from <ip,ip,…> [--port 5077]
 *
 * Needs root (network namespaces). Every process and namespace is removed at the end.
 */
import { createServer, connect } from 'node:net'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { createSwarm, SHAPING_ARGS, shapingOf, type Swarm } from '../lib/netns.js'
import { isMain, median, report, startScript, type ScriptProcess } from '../lib/proc.js'
import { p2pLowerBound } from './swarm-http.js'

const SCRIPT = fileURLToPath(import.meta.url)
const MiB = 1024 * 1024
const PORT = 5077
const START_TIMEOUT_MS = 30_000
const FETCH_TIMEOUT_MS = 15 * 60_000
const SEND_BLOCK = MiB

/** Serves `n` zero bytes to whoever sends the decimal number `n`, then closes. */
async function serve (host: string, port: number): Promise<void> {
  const block = Buffer.alloc(SEND_BLOCK)
  const server = createServer(socket => {
    socket.once('data', request => {
      let left = Number(request.toString())
      const pump = (): void => {
        while (left > 0) {
          const n = Math.min(left, block.length)
          left -= n
          if (!socket.write(n === block.length ? block : block.subarray(0, n))) { socket.once('drain', pump); return }
        }
        socket.end()
      }
      pump()
    })
    socket.on('error', () => {})
  })
  await new Promise<void>(resolve => server.listen(port, host, resolve))
  report({ listening: `${host}:${port}` })
}

/** Fetches `bytes` from each host at once; reports the seconds until the last byte arrived. */
async function fetchAll (bytes: number, from: string[], port: number): Promise<void> {
  const t0 = process.hrtime.bigint()
  await Promise.all(from.map(async ip => await new Promise<void>((resolve, reject) => {
    const socket = connect(port, ip, () => socket.write(String(bytes)))
    let got = 0
    socket.on('data', (d: Buffer) => { got += d.byteLength })
    socket.on('end', () => got === bytes ? resolve() : reject(new Error(`${ip}: ${got} of ${bytes} bytes`)))
    socket.on('error', reject)
  })))
  report({ seconds: Number(process.hrtime.bigint() - t0) / 1e9 })
}

/**
 * One full-mesh run on `swarm` (host 0 is the seed, the rest are peers): every peer fetches
 * F/N from every other host at once. Returns the seconds until the last peer had all F bytes.
 */
export async function measureMesh (swarm: Swarm, fileBytes: number): Promise<number> {
  const [, ...peers] = swarm.hosts
  const servers: ScriptProcess[] = swarm.hosts.map(h => startScript(SCRIPT, ['--serve', '--host', h.ip, '--port', String(PORT)], h.exec))
  try {
    await Promise.all(servers.map(async s => await s.next<string>('listening', START_TIMEOUT_MS)))
    const share = Math.ceil(fileBytes / peers.length)
    const times = await Promise.all(peers.map(async p => {
      const from = swarm.hosts.filter(h => h !== p).map(h => h.ip).join(',')
      const fetcher = startScript(SCRIPT, ['--fetch', '--bytes', String(share), '--from', from, '--port', String(PORT)], p.exec)
      return await fetcher.next<number>('seconds', FETCH_TIMEOUT_MS)
    }))
    return Math.max(...times)
  } finally {
    for (const s of servers) await s.stop()
  }
}

async function main (): Promise<void> {
  const { values: a } = parseArgs({
    options: {
      serve: { type: 'boolean', default: false },
      fetch: { type: 'boolean', default: false },
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: String(PORT) },
      bytes: { type: 'string' },
      from: { type: 'string' },
      peers: { type: 'string', default: '6' },
      mib: { type: 'string', default: '256' },
      rate: { type: 'string', default: '100' },
      runs: { type: 'string', default: '1' },
      ...SHAPING_ARGS
    }
  })
  if (a.serve) { await serve(a.host, Number(a.port)); return }
  if (a.fetch) { await fetchAll(Number(a.bytes), (a.from ?? '').split(',').filter(x => x !== ''), Number(a.port)); return }
  const peers = Number(a.peers)
  const bytes = Number(a.mib) * MiB
  const swarm = await createSwarm({ hosts: peers + 1, rateMbit: Number(a.rate), ...shapingOf(a) })
  try {
    const u = swarm.rateBytesPerSec
    const bound = p2pLowerBound(bytes, u, Array.from({ length: peers }, () => u))
    const seconds: number[] = []
    for (let r = 0; r < Number(a.runs); r++) {
      seconds.push(await measureMesh(swarm, bytes))
      console.log(`run ${r + 1}: last peer done after ${seconds.at(-1)!.toFixed(1)} s (${(seconds.at(-1)! / bound).toFixed(2)}× bound)`)
    }
    console.log(`full TCP mesh: N=${peers} peers + seed, F=${a.mib} MiB, ${a.rate} Mbit tbf up/down: last done ${median(seconds).toFixed(1)} s, ` +
      `P2P bound ${bound.toFixed(1)} s, ratio ${(median(seconds) / bound).toFixed(2)}×`)
  } finally {
    await swarm.destroy()
  }
}

if (isMain(import.meta.url)) await main()
