/**
 * Baseline: a bare libp2p stream on the stack shoal uses (tcp + noise + yamux, with identify)
 * between two separate Node processes. The sink handles `/shoal-bench/sink/1.0.0`, counts bytes
 * and times each transfer from its first byte to the end of its last stream; it reports MB/s
 * (10^6 bytes per second) and MB per CPU-second of the sink process. A transfer is `bytes` split over `streams` streams on one connection,
 * written in `writeSize` pieces with `stream.send()` and `onDrain()` backpressure. One warm-up
 * transfer precedes the measured ones; medians are returned.
 *
 *   node --import tsx scripts/baselines/libp2p-stream.ts [--mib 1024] [--runs 3] [--streams 1] [--write-kib 1024]
 *
 * The same file is the child process (`--role sink|source`).
 */
import '../../src/polyfill.js'
import { noise } from '@chainsafe/libp2p-noise'
import { identify } from '@libp2p/identify'
import type { Stream } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p, type Libp2p } from 'libp2p'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import {
  isMain, type Launcher, loadNote, localLauncher, report, startClock, startScript, summarize, type Throughput,
  type TransferReport
} from '../lib/proc.js'

const SCRIPT = fileURLToPath(import.meta.url)
const PROTOCOL = '/shoal-bench/sink/1.0.0'
const KiB = 1024
const MiB = 1024 * KiB
const MB = 1e6
const DEFAULT_WRITE_SIZE = MiB
const ACK = new Uint8Array([1])
const START_TIMEOUT_MS = 30_000
const MIN_RATE_FOR_TIMEOUT = MB // a transfer slower than 1 MB/s counts as stuck

export interface Libp2pStreamOptions {
  bytes: number
  /** Parallel streams on the one connection, sharing `bytes` (default 1). */
  streams?: number
  /** Size of each `stream.send()` (default 1 MiB). */
  writeSize?: number
  /** Measured transfers (after one warm-up); the median is returned. */
  runs?: number
  warmup?: boolean
  /** Address the sink listens on (default 127.0.0.1). */
  host?: string
  launchSink?: Launcher
  launchSource?: Launcher
}

/** Throughput at the receiving process of `runs` transfers of `bytes`. */
export async function measureLibp2pStream (opts: Libp2pStreamOptions): Promise<Throughput> {
  const { bytes, streams = 1, writeSize = DEFAULT_WRITE_SIZE, runs = 3, warmup = true, host = '127.0.0.1' } = opts
  const rounds = runs + (warmup ? 1 : 0)
  const sink = startScript(SCRIPT, ['--role', 'sink', '--host', host, '--bytes', String(bytes),
    '--streams', String(streams)], opts.launchSink ?? localLauncher)
  try {
    const { addr } = await sink.next<{ addr: string }>('listening', START_TIMEOUT_MS)
    const source = startScript(SCRIPT, ['--role', 'source', '--addr', addr, '--bytes', String(bytes),
      '--streams', String(streams), '--write-size', String(writeSize), '--rounds', String(rounds)],
    opts.launchSource ?? localLauncher)
    try {
      const timeoutMs = START_TIMEOUT_MS + 1000 * bytes / MIN_RATE_FOR_TIMEOUT
      const measured: TransferReport[] = []
      for (let i = 0; i < rounds; i++) {
        const t = await sink.next<TransferReport>('transfer', timeoutMs)
        if (t.bytes !== bytes) throw new Error(`received ${t.bytes} of ${bytes} bytes`)
        if (i > 0 || !warmup) measured.push(t)
      }
      await source.done(START_TIMEOUT_MS)
      return summarize(measured)
    } finally {
      await source.stop()
    }
  } finally {
    await sink.stop()
  }
}

// ---- child roles ------------------------------------------------------------------------------

async function createNode (listen: string[]): Promise<Libp2p> {
  return await createLibp2p({
    addresses: { listen },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify() }
  })
}

/** Splits `total` into `parts` near-equal integer shares. */
function shares (total: number, parts: number): number[] {
  const base = Math.floor(total / parts)
  return Array.from({ length: parts }, (_, i) => base + (i < total % parts ? 1 : 0))
}

async function sink (host: string, bytes: number, streams: number): Promise<void> {
  const node = await createNode([`/ip4/${host}/tcp/0`])
  let received = 0
  let ended = 0
  let stop = startClock()
  await node.handle(PROTOCOL, async (stream: Stream) => {
    for await (const chunk of stream) {
      if (received === 0) stop = startClock()
      received += chunk.byteLength
    }
    if (++ended === streams) {
      report({ transfer: stop(received) })
      received = 0
      ended = 0
    }
    stream.send(ACK)
    await stream.close()
  }, { maxInboundStreams: streams * 2 })
  const addr = node.getMultiaddrs()[0]
  if (addr === undefined) throw new Error('sink has no listen address')
  report({ listening: { addr: addr.toString() } })
}

async function sendStream (node: Libp2p, addr: string, bytes: number, buf: Uint8Array): Promise<void> {
  const stream = await node.dialProtocol(multiaddr(addr), PROTOCOL)
  for (let left = bytes; left > 0; left -= buf.byteLength) {
    const part = left >= buf.byteLength ? buf : buf.subarray(0, left)
    if (!stream.send(part)) await stream.onDrain()
  }
  await stream.close()
  for await (const _ack of stream) { /* the sink acknowledges once it has read everything */ }
}

async function source (addr: string, bytes: number, streams: number, writeSize: number, rounds: number): Promise<void> {
  const node = await createNode([])
  const buf = new Uint8Array(writeSize).fill(0xa5)
  for (let i = 0; i < rounds; i++) {
    await Promise.all(shares(bytes, streams).map(async share => { await sendStream(node, addr, share, buf) }))
  }
  await node.stop()
}

// ---- command line -----------------------------------------------------------------------------

if (isMain(import.meta.url)) {
  const { values: a } = parseArgs({
    options: {
      role: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      addr: { type: 'string' },
      bytes: { type: 'string' },
      streams: { type: 'string', default: '1' },
      'write-size': { type: 'string' },
      'write-kib': { type: 'string', default: String(DEFAULT_WRITE_SIZE / KiB) },
      rounds: { type: 'string', default: '1' },
      mib: { type: 'string', default: '1024' },
      runs: { type: 'string', default: '3' }
    }
  })
  const streams = Number(a.streams)
  if (a.role === 'sink') {
    await sink(a.host, Number(a.bytes), streams)
  } else if (a.role === 'source') {
    await source(a.addr!, Number(a.bytes), streams, Number(a['write-size']), Number(a.rounds))
  } else {
    const writeSize = Number(a['write-kib']) * KiB
    const t = await measureLibp2pStream({ bytes: Number(a.mib) * MiB, streams, writeSize, runs: Number(a.runs), host: a.host })
    console.log(`libp2p tcp+noise+yamux ${a.host}: ${a.mib} MiB, ${streams} stream(s), ${a['write-kib']} KiB writes, ` +
      `median of ${a.runs}: ${t.mbps.toFixed(0)} MB/s, receiver ${t.cpuMbps.toFixed(0)} MB/CPU-s (${loadNote()})`)
  }
}
