/**
 * Baseline: plain TCP (node:net, no encryption, no multiplexing) between two separate Node
 * processes, as real daemons are. The receiver times each connection from its first byte to the
 * sender's end of stream and reports MB/s (10^6 bytes per second), and MB per CPU-second of the
 * receiving process. One warm-up transfer precedes the measured ones; medians are returned.
 *
 *   node --import tsx scripts/baselines/raw-tcp.ts [--mib 1024] [--runs 3] [--host 127.0.0.1]
 *
 * The same file is the child process (`--role receive|send`); launchers let the two ends run in
 * different network namespaces (see `scripts/baselines/tbf-check.ts`).
 */
import { createConnection, createServer, type Socket } from 'node:net'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import {
  isMain, type Launcher, loadNote, localLauncher, report, startClock, startScript, summarize, type Throughput,
  type TransferReport
} from '../lib/proc.js'

const SCRIPT = fileURLToPath(import.meta.url)
const MiB = 1024 * 1024
const MB = 1e6
const WRITE_SIZE = MiB
const START_TIMEOUT_MS = 30_000
const MIN_RATE_FOR_TIMEOUT = MB // a transfer slower than 1 MB/s counts as stuck

export interface RawTcpOptions {
  bytes: number
  /** Address the receiver listens on and the sender connects to. */
  host?: string
  /** Measured transfers (after one warm-up); the median is returned. */
  runs?: number
  warmup?: boolean
  launchReceiver?: Launcher
  launchSender?: Launcher
}

/** Throughput of `runs` transfers of `bytes`, over one fresh TCP connection each. */
export async function measureRawTcp (opts: RawTcpOptions): Promise<Throughput> {
  const { bytes, host = '127.0.0.1', runs = 3, warmup = true } = opts
  const rounds = runs + (warmup ? 1 : 0)
  const receiver = startScript(SCRIPT, ['--role', 'receive', '--host', host], opts.launchReceiver ?? localLauncher)
  try {
    const { port } = await receiver.next<{ port: number }>('listening', START_TIMEOUT_MS)
    const sender = startScript(SCRIPT, ['--role', 'send', '--host', host, '--port', String(port),
      '--bytes', String(bytes), '--rounds', String(rounds)], opts.launchSender ?? localLauncher)
    try {
      const timeoutMs = START_TIMEOUT_MS + 1000 * bytes / MIN_RATE_FOR_TIMEOUT
      const measured: TransferReport[] = []
      for (let i = 0; i < rounds; i++) {
        const t = await receiver.next<TransferReport>('transfer', timeoutMs)
        if (t.bytes !== bytes) throw new Error(`received ${t.bytes} of ${bytes} bytes`)
        if (i > 0 || !warmup) measured.push(t)
      }
      await sender.done(START_TIMEOUT_MS)
      return summarize(measured)
    } finally {
      await sender.stop()
    }
  } finally {
    await receiver.stop()
  }
}

// ---- child roles ------------------------------------------------------------------------------

function receive (host: string): void {
  const server = createServer((socket: Socket) => {
    let received = 0
    let stop = startClock()
    socket.on('data', (chunk: Buffer) => {
      if (received === 0) stop = startClock()
      received += chunk.length
    })
    socket.on('end', () => {
      report({ transfer: stop(received) })
      socket.end()
    })
  })
  server.listen(0, host, () => {
    const addr = server.address()
    if (addr === null || typeof addr === 'string') throw new Error('unexpected server address')
    report({ listening: { port: addr.port } })
  })
}

async function sendOnce (host: string, port: number, bytes: number, buf: Buffer): Promise<void> {
  const socket = createConnection({ host, port, noDelay: true })
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  const closed = new Promise<void>((resolve, reject) => { socket.once('close', () => resolve()); socket.once('error', reject) })
  for (let left = bytes; left > 0; left -= buf.length) {
    const part = left >= buf.length ? buf : buf.subarray(0, left)
    if (!socket.write(part)) await new Promise(resolve => socket.once('drain', resolve))
  }
  socket.end()
  socket.resume() // the receiver ends its side after reporting; wait for that
  await closed
}

async function send (host: string, port: number, bytes: number, rounds: number): Promise<void> {
  const buf = Buffer.alloc(WRITE_SIZE, 0xa5)
  for (let i = 0; i < rounds; i++) await sendOnce(host, port, bytes, buf)
}

// ---- command line -----------------------------------------------------------------------------

if (isMain(import.meta.url)) {
  const { values: a } = parseArgs({
    options: {
      role: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '0' },
      bytes: { type: 'string' },
      rounds: { type: 'string', default: '1' },
      mib: { type: 'string', default: '1024' },
      runs: { type: 'string', default: '3' }
    }
  })
  if (a.role === 'receive') {
    receive(a.host)
  } else if (a.role === 'send') {
    await send(a.host, Number(a.port), Number(a.bytes), Number(a.rounds))
  } else {
    const bytes = Number(a.mib) * MiB
    const t = await measureRawTcp({ bytes, host: a.host, runs: Number(a.runs) })
    console.log(`raw TCP ${a.host}: ${a.mib} MiB, median of ${a.runs}: ${t.mbps.toFixed(0)} MB/s, ` +
      `receiver ${t.cpuMbps.toFixed(0)} MB/CPU-s (${loadNote()})`)
  }
}
