/**
 * RPC benchmark: what a fleet of serving processes costs one daemon, over its unix socket.
 *
 * - **resolve latency** under `--clients` concurrent clients (default 100, each making `--calls`
 *   calls, default 200), spread over `--threads` worker threads (default `DEFAULT_THREADS`) so the load generator
 *   is not the bottleneck. Each client is the shipped `ShoalClient` (dist/), one request per
 *   connection as it does. Beside it, in the same run and the same way: `GET /v1/version` on the
 *   daemon (the RPC floor: routing, JSON, the socket, no store work) and a bare node http server
 *   on a unix socket answering a fixed JSON (the floor of HTTP over a unix socket on this
 *   machine). p50/p99 and calls/s, and ratios to both baselines. One client alone, for contrast.
 * - **event delivery**: `--watchers` SSE streams (default 100) on `/v1/watch`; the label flips
 *   `--flips` times (default 60) between two versions, one flip after all watchers heard the
 *   previous one. Delivery = receive time in the watcher minus the event's `time` field (the
 *   daemon's clock when it emitted `label.moved`; same machine, same clock). p50/p99 over all
 *   flips × watchers, and p50/p99 of the slowest watcher per flip. Baseline: the bare server
 *   broadcasting a timestamped SSE event to as many watchers, the same number of times.
 *
 *   npm run bench:rpc -- [--clients 100] [--calls 200] [--threads 4] [--watchers 100] [--flips 60]
 *
 * Results also go to bench-out/rpc-<time>.json.
 */
import '../src/polyfill.js'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, request, type ServerResponse } from 'node:http'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { Worker } from 'node:worker_threads'
import { ShoalClient } from '../src/rpc/client.js'
import { DaemonProcess, ROOT } from './lib/daemon-proc.js'
import { writeOnnxModelFolder } from './lib/onnx-model.js'
import { loadNote, onExitCleanup } from './lib/proc.js'

const MODEL = 'bench/linear'
const LABEL = 'prod'
/** @default 1000 — calls per run thrown away first (connections, JIT) */
const WARMUP_CALLS = 1000
/** @default min(4, cores − 1), at least 1 — load-generator threads, leaving a core to the daemon */
const DEFAULT_THREADS = Math.max(1, Math.min(4, cpus().length - 1))
/** @default 500 — calls of the single-client contrast run */
const SOLO_CALLS = 500

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '100' },
    calls: { type: 'string', default: '200' },
    threads: { type: 'string', default: String(DEFAULT_THREADS) },
    watchers: { type: 'string', default: '100' },
    flips: { type: 'string', default: '60' },
    // Internal: this file also runs the bare baseline server.
    role: { type: 'string' },
    socket: { type: 'string' }
  }
})

// ---- the bare baseline server (a child process, like the daemon) -----------------------------

async function bareServer (socketPath: string): Promise<void> {
  const body = JSON.stringify({ version: '0.0.0', api: 'v1', node: 'bare' })
  const watchers = new Set<ServerResponse>()
  const server = createServer((req, res) => {
    req.resume()
    if (req.url === '/v1/version') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    } else if (req.url === '/watch') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' })
      res.write('event: ready\ndata: {}\n\n')
      watchers.add(res)
      res.on('close', () => watchers.delete(res))
    } else if (req.url === '/flip') {
      const line = `event: flip\ndata: ${JSON.stringify({ time: Date.now() })}\n\n`
      for (const w of watchers) w.write(line)
      res.end('{}')
    } else res.writeHead(404).end()
  })
  await rm(socketPath, { force: true })
  server.listen(socketPath, () => { process.stdout.write('ready\n') })
  process.once('SIGTERM', () => { server.close(); process.exit(0) })
}

// ---- latency under concurrent clients ---------------------------------------------------------

/** Runs in each worker thread: `loops` clients, each `calls` sequential GETs of `path`. */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
;(async () => {
  const { ShoalClient } = await import(workerData.clientUrl)
  const client = new ShoalClient({ socketPath: workerData.socketPath })
  const samples = new Float64Array(workerData.loops * workerData.calls)
  let at = 0
  const started = performance.now()
  await Promise.all(Array.from({ length: workerData.loops }, async () => {
    for (let i = 0; i < workerData.calls; i++) {
      const t = performance.now()
      await client.call('GET', workerData.path)
      samples[at++] = performance.now() - t
    }
  }))
  parentPort.postMessage({ samples, ms: performance.now() - started }, [samples.buffer])
})().catch(err => { parentPort.postMessage({ error: String(err && err.stack || err) }) })
`

interface LatencyRun { p50: number, p99: number, max: number, callsPerSecond: number, calls: number }

async function latency (socketPath: string, path: string, clients: number, calls: number, threads: number): Promise<LatencyRun> {
  const clientUrl = pathToFileURL(join(ROOT, 'dist', 'index.js')).href
  const perThread = Array.from({ length: Math.min(threads, clients) }, (_, i) => Math.floor(clients / threads) + (i < clients % threads ? 1 : 0)).filter(n => n > 0)
  const started = performance.now()
  const parts = await Promise.all(perThread.map(async loops => await new Promise<Float64Array>((resolve, reject) => {
    const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { clientUrl, socketPath, path, loops, calls } })
    w.once('message', (m: { samples?: Float64Array, error?: string }) => {
      if (m.error !== undefined) reject(new Error(m.error))
      else resolve(m.samples!)
      void w.terminate()
    })
    w.once('error', reject)
  })))
  const seconds = (performance.now() - started) / 1000
  const all = Float64Array.from(parts.flatMap(p => Array.from(p))).sort()
  return { p50: pct(all, 0.5), p99: pct(all, 0.99), max: all[all.length - 1] ?? 0, callsPerSecond: all.length / seconds, calls: all.length }
}

function pct (sorted: Float64Array | number[], q: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
}

// ---- event delivery -----------------------------------------------------------------------------

/** A raw SSE stream; calls `onEvent` with each event's data and the receive time. */
function sse (socketPath: string, path: string, onEvent: (event: string, data: Record<string, unknown>, at: number) => void): { ready: Promise<void>, close: () => void } {
  let onReady!: () => void
  let onFail!: (err: Error) => void
  const ready = new Promise<void>((resolve, reject) => { onReady = resolve; onFail = reject })
  const req = request({ socketPath, path }, res => {
    if (res.statusCode !== 200) { onFail(new Error(`${path} answered ${res.statusCode ?? 0}`)); return }
    let buffered = ''
    res.on('data', (part: Buffer) => {
      const at = Date.now()
      buffered += part.toString('utf8')
      let end
      while ((end = buffered.indexOf('\n\n')) >= 0) {
        const block = buffered.slice(0, end)
        buffered = buffered.slice(end + 2)
        let event = 'message'
        let data: string | undefined
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) event = line.slice(6).trim()
          else if (line.startsWith('data:')) data = line.slice(5).trim()
        }
        if (data === undefined) continue
        if (event === 'ready') onReady()
        else onEvent(event, JSON.parse(data) as Record<string, unknown>, at)
      }
    })
    res.on('error', () => {})
  })
  req.on('error', err => onFail(err))
  req.end()
  return { ready, close: () => { req.destroy() } }
}

interface DeliveryRun { p50: number, p99: number, max: number, slowestP50: number, slowestP99: number, samples: number, flips: number }

/**
 * Opens `watchers` streams on `path`, then `flips` times: `flip()` and wait until every watcher has
 * an event of `type` it had not seen; delivery = receive time − the event's `time`.
 */
async function delivery (socketPath: string, path: string, type: string, watchers: number, flips: number, flip: (i: number) => Promise<void>): Promise<DeliveryRun> {
  const counts = new Array<number>(watchers).fill(0)
  const lags: number[][] = Array.from({ length: flips }, () => [])
  let waiting: (() => void) | undefined
  const streams = Array.from({ length: watchers }, (_, w) => sse(socketPath, path, (event, data, at) => {
    if (event !== type) return
    const i = counts[w]!++
    if (i < flips) lags[i]!.push(at - Number(data.time))
    if (counts.every(c => c > i)) waiting?.()
  }))
  try {
    await Promise.all(streams.map(async s => await s.ready))
    for (let i = 0; i < flips; i++) {
      let timer: NodeJS.Timeout | undefined
      const heard = new Promise<void>((resolve, reject) => {
        waiting = resolve
        timer = setTimeout(() => reject(new Error(`flip ${i}: not every watcher heard it within 15 s`)), 15_000)
      })
      await flip(i)
      await heard.finally(() => clearTimeout(timer))
    }
  } finally {
    for (const s of streams) s.close()
  }
  const all = lags.flat().sort((a, b) => a - b)
  const slowest = lags.map(l => Math.max(...l)).sort((a, b) => a - b)
  return { p50: pct(all, 0.5), p99: pct(all, 0.99), max: all.at(-1) ?? NaN, slowestP50: pct(slowest, 0.5), slowestP99: pct(slowest, 0.99), samples: all.length, flips }
}

// ---- the run ------------------------------------------------------------------------------------

async function main (): Promise<void> {
  const clients = Number(values.clients)
  const calls = Number(values.calls)
  const threads = Number(values.threads)
  const watchers = Number(values.watchers)
  const flips = Number(values.flips)
  const root = await mkdtemp(join(tmpdir(), 'shoal-bench-rpc-'))
  let bare: ChildProcess | undefined
  const daemon = new DaemonProcess(join(root, 'home'), [], { SHOAL_LOG_LEVEL: 'warn' })
  const cleanup = onExitCleanup(() => { bare?.kill('SIGKILL'); daemon.child?.kill('SIGKILL') })
  try {
    await mkdir(daemon.home, { recursive: true })
    await daemon.start()
    const shoal = new ShoalClient({ socketPath: daemon.socket })
    const v: string[] = []
    for (const seed of ['a', 'b']) {
      const dir = join(root, seed)
      await writeOnnxModelFolder(dir, { seed })
      v.push((await shoal.add({ path: dir, name: MODEL, ...(seed === 'a' ? { label: LABEL } : {}) })).version)
    }
    const bareSocket = join(root, 'bare.sock')
    bare = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts', 'bench-rpc.ts'), '--role', 'bare', '--socket', bareSocket], { stdio: ['ignore', 'pipe', 'inherit'] })
    await new Promise<void>((resolve, reject) => {
      bare?.stdout?.once('data', () => resolve())
      bare?.once('exit', code => reject(new Error(`bare server exited ${code ?? '?'}`)))
    })

    console.log(`shoal bench:rpc — ${clients} clients × ${calls} calls over ${threads} threads; ${watchers} watchers × ${flips} flips; ${loadNote()}`)
    const resolvePath = `/v1/resolve?ref=${encodeURIComponent(`${MODEL}@${LABEL}`)}`
    const targets = [
      { name: 'resolve (daemon)', socket: daemon.socket, path: resolvePath },
      { name: 'GET /v1/version (daemon, RPC floor)', socket: daemon.socket, path: '/v1/version' },
      { name: 'bare node http, fixed JSON', socket: bareSocket, path: '/v1/version' }
    ]
    const results: Record<string, { concurrent: LatencyRun, solo: LatencyRun }> = {}
    for (const t of targets) {
      await latency(t.socket, t.path, clients, Math.ceil(WARMUP_CALLS / clients), threads)
      const concurrent = await latency(t.socket, t.path, clients, calls, threads)
      const solo = await latency(t.socket, t.path, 1, SOLO_CALLS, 1)
      results[t.name] = { concurrent, solo }
    }
    const f = (ms: number): string => `${ms.toFixed(2)} ms`
    console.log(`\nlatency, ${clients} concurrent clients, ${clients * calls} calls per target    p50        p99        max    calls/s   | 1 client p50   p99`)
    for (const [name, r] of Object.entries(results)) {
      console.log(`  ${name.padEnd(38)} ${f(r.concurrent.p50).padStart(10)} ${f(r.concurrent.p99).padStart(10)} ${f(r.concurrent.max).padStart(10)} ${r.concurrent.callsPerSecond.toFixed(0).padStart(10)}   | ${f(r.solo.p50).padStart(9)} ${f(r.solo.p99).padStart(9)}`)
    }
    const res = results[targets[0]!.name]!.concurrent
    const floor = results[targets[1]!.name]!.concurrent
    const bareRun = results[targets[2]!.name]!.concurrent
    const ratios = {
      resolveVsVersion: { p50: res.p50 / floor.p50, p99: res.p99 / floor.p99, throughput: res.callsPerSecond / floor.callsPerSecond },
      resolveVsBare: { p50: res.p50 / bareRun.p50, p99: res.p99 / bareRun.p99, throughput: res.callsPerSecond / bareRun.callsPerSecond },
      versionVsBare: { p50: floor.p50 / bareRun.p50, p99: floor.p99 / bareRun.p99 }
    }
    console.log(`  resolve / RPC floor:  p50 ×${ratios.resolveVsVersion.p50.toFixed(2)}, p99 ×${ratios.resolveVsVersion.p99.toFixed(2)}, throughput ×${ratios.resolveVsVersion.throughput.toFixed(2)}`)
    console.log(`  resolve / bare http:  p50 ×${ratios.resolveVsBare.p50.toFixed(2)}, p99 ×${ratios.resolveVsBare.p99.toFixed(2)}, throughput ×${ratios.resolveVsBare.throughput.toFixed(2)}`)
    console.log(`  RPC floor / bare:     p50 ×${ratios.versionVsBare.p50.toFixed(2)}, p99 ×${ratios.versionVsBare.p99.toFixed(2)}`)

    const shoalEvents = await delivery(daemon.socket, `/v1/watch?types=label.moved&model=${encodeURIComponent(MODEL)}`, 'label.moved', watchers, flips, async i => {
      await shoal.setLabel({ name: MODEL, label: LABEL, version: v[(i + 1) % 2]!, activation: { mode: 'hot' } })
    })
    const bareEvents = await delivery(bareSocket, '/watch', 'flip', watchers, flips, async () => {
      await new Promise<void>((resolve, reject) => { request({ socketPath: bareSocket, path: '/flip', method: 'POST' }, r => { r.resume(); r.on('end', resolve) }).on('error', reject).end() })
    })
    console.log(`\nevent delivery to ${watchers} watchers, ${flips} flips             p50        p99        max   | slowest watcher per flip: p50   p99`)
    for (const [name, r] of [['label.moved (daemon event time → watcher)', shoalEvents], ['bare SSE broadcast', bareEvents]] as const) {
      console.log(`  ${name.padEnd(42)} ${f(r.p50).padStart(8)} ${f(r.p99).padStart(10)} ${f(r.max).padStart(10)}   | ${f(r.slowestP50).padStart(12)} ${f(r.slowestP99).padStart(9)}`)
    }
    console.log(`  daemon / bare: p50 ×${(shoalEvents.p50 / Math.max(bareEvents.p50, 0.5)).toFixed(2)}, p99 ×${(shoalEvents.p99 / Math.max(bareEvents.p99, 0.5)).toFixed(2)} (Date.now() has 1 ms resolution; a bare figure of 0 counts as 0.5 ms)`)

    await mkdir(join(ROOT, 'bench-out'), { recursive: true })
    const out = join(ROOT, 'bench-out', `rpc-${new Date().toISOString().replace(/[:.]/g, '-')}.json`)
    await writeFile(out, `${JSON.stringify({ clients, calls, threads, watchers, flips, load: loadNote(), latency: results, ratios, events: { shoal: shoalEvents, bare: bareEvents } }, null, 2)}\n`)
    console.log(`\nwritten to ${out}`)
  } finally {
    bare?.kill('SIGTERM')
    await daemon.stop()
    cleanup()
    await rm(root, { recursive: true, force: true })
  }
}

if (values.role === 'bare') await bareServer(values.socket ?? join(tmpdir(), 'shoal-bench-bare.sock'))
else await main()
