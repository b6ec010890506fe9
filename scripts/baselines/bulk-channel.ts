/**
 * Baseline: shoal's bulk channel (`src/protocol/bulk/`) between two separate Node processes, beside
 * a bare libp2p stream (`libp2p-stream.ts`) and raw TCP (`raw-tcp.ts`) measured in the same run.
 *
 * The source is the serving side: a `BulkService` and a small control listener that stands in for
 * the libp2p control stream (it hands out one offer — port, token, key — per transfer). The sink
 * is the pulling side: for each transfer it fetches an offer, connects (`connectBulk`), and receives
 * `bytes` as frames of `blockSize` bytes with a 192-byte proof (6 sibling hashes, a chunk of 64
 * blocks), each frame's buffer given back to the pool as soon as it is handed on. The source keeps
 * `window` sends outstanding. The sink times a transfer from its connect to the last frame; the
 * source from its first send to the last one resolved; each reports its own CPU time, so figures
 * come as MB/s (10^6 bytes per second) and MB per CPU-second of the receiver and of the sender.
 * One warm-up transfer precedes the measured ones; medians are returned.
 *
 *   node --import tsx scripts/baselines/bulk-channel.ts [--mib 1024] [--block-kib 64,256,1024]
 *        [--runs 3] [--modes encrypted,clear] [--window 4] [--skip-baselines]
 *
 * The same file is the child process (`--role source|sink`).
 */
import { createServer, connect as netConnect, type Socket } from 'node:net'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { BufferPool } from '../../src/core/buffer-pool.js'
import { bulkService, connectBulk, MAX_BULK_DATA_BYTES, type BulkSender } from '../../src/protocol/bulk/index.js'
import { measureLibp2pStream } from './libp2p-stream.js'
import { measureRawTcp } from './raw-tcp.js'
import {
  isMain, loadNote, localLauncher, report, startClock, startScript, summarize, type Launcher, type Throughput, type TransferReport
} from '../lib/proc.js'

const SCRIPT = fileURLToPath(import.meta.url)
const KiB = 1024
const MiB = 1024 * KiB
const MB = 1e6
const START_TIMEOUT_MS = 30_000
const MIN_RATE_FOR_TIMEOUT = MB // a transfer slower than 1 MB/s counts as stuck
const PROOF_BYTES = 6 * 32
const DEFAULT_WINDOW = 4

export interface BulkChannelOptions {
  bytes: number
  /** Data bytes per frame (the block size). */
  blockSize: number
  /** AES-256-GCM (the default) or frames in clear (`transfer.encrypt: false`). */
  encrypt?: boolean
  /** Sends the source keeps outstanding. @default 4 */
  window?: number
  runs?: number
  warmup?: boolean
  host?: string
  launchSource?: Launcher
  launchSink?: Launcher
}

export interface BulkChannelFigures {
  /** At the pulling process (`mbps`: wall clock; `cpuMbps`: per CPU-second of that process). */
  receiver: Throughput
  /** At the serving process. */
  sender: Throughput
}

/** Throughput of `runs` transfers of `bytes` over the bulk channel, one connection each. */
export async function measureBulkChannel (opts: BulkChannelOptions): Promise<BulkChannelFigures> {
  const { bytes, blockSize, encrypt = true, window = DEFAULT_WINDOW, runs = 3, warmup = true, host = '127.0.0.1' } = opts
  if (blockSize < 1 || blockSize > MAX_BULK_DATA_BYTES) throw new Error(`a block of ${blockSize} bytes is outside 1..${MAX_BULK_DATA_BYTES}`)
  const rounds = runs + (warmup ? 1 : 0)
  const frames = Math.ceil(bytes / blockSize)
  const common = ['--host', host, '--frames', String(frames), '--block-size', String(blockSize), '--rounds', String(rounds)]
  const source = startScript(SCRIPT, ['--role', 'source', ...common, '--encrypt', String(encrypt), '--window', String(window)], opts.launchSource ?? localLauncher)
  try {
    const { port } = await source.next<{ port: number }>('control', START_TIMEOUT_MS)
    const sink = startScript(SCRIPT, ['--role', 'sink', ...common, '--control', String(port)], opts.launchSink ?? localLauncher)
    try {
      const timeoutMs = START_TIMEOUT_MS + 1000 * bytes / MIN_RATE_FOR_TIMEOUT
      const received: TransferReport[] = []
      const sent: TransferReport[] = []
      for (let i = 0; i < rounds; i++) {
        const t = await sink.next<TransferReport>('transfer', timeoutMs)
        const s = await source.next<TransferReport>('sent', timeoutMs)
        if (t.bytes !== frames * blockSize) throw new Error(`received ${t.bytes} of ${frames * blockSize} bytes`)
        if (i > 0 || !warmup) {
          received.push(t)
          sent.push(s)
        }
      }
      await sink.done(START_TIMEOUT_MS)
      await source.done(START_TIMEOUT_MS)
      return { receiver: summarize(received), sender: summarize(sent) }
    } finally {
      await sink.stop()
    }
  } finally {
    await source.stop()
  }
}

// ---- child roles ------------------------------------------------------------------------------

interface OfferText { port: number, token: string, key: string | null }

async function source (host: string, frames: number, blockSize: number, rounds: number, encrypt: boolean, window: number): Promise<void> {
  const service = bulkService({ host, port: 0, pool: new BufferPool(MAX_BULK_DATA_BYTES, { maxPooled: 1 }), encrypt })
  await service.start()
  const block = new Uint8Array(blockSize).fill(0xa5)
  const proof = new Uint8Array(PROOF_BYTES).fill(0x5a)
  let served = 0
  const control = createServer(socket => {
    socket.on('error', () => {})
    const offer = service.offer('bench-sink')
    const text: OfferText = { port: offer.port, token: Buffer.from(offer.token).toString('hex'), key: offer.key !== undefined ? Buffer.from(offer.key).toString('hex') : null }
    socket.end(JSON.stringify(text) + '\n')
    void offer.connected.then(async sender => {
      if (sender === undefined) throw new Error('the sink never connected')
      await sendRound(sender, served, frames, block, proof, window)
      if (++served === rounds) {
        control.close()
        await service.stop()
      }
    }).catch((err: unknown) => { console.error(err); process.exit(1) })
  })
  control.listen(0, host, () => {
    report({ control: { port: (control.address() as { port: number }).port } })
  })
}

async function sendRound (sender: BulkSender, round: number, frames: number, block: Uint8Array, proof: Uint8Array, window: number): Promise<void> {
  const stop = startClock()
  const inFlight = new Set<Promise<void>>()
  for (let i = 0; i < frames; i++) {
    const p: Promise<void> = sender.send({ reqId: round, index: i }, proof, block).finally(() => inFlight.delete(p))
    inFlight.add(p)
    if (inFlight.size >= window) await Promise.race(inFlight)
  }
  await Promise.all(inFlight)
  report({ sent: stop(frames * block.byteLength) })
  await sender.close()
}

async function fetchOffer (host: string, port: number): Promise<OfferText> {
  const socket: Socket = netConnect({ host, port })
  let text = ''
  for await (const chunk of socket) text += (chunk as Buffer).toString()
  return JSON.parse(text) as OfferText
}

async function sink (host: string, control: number, frames: number, blockSize: number, rounds: number): Promise<void> {
  const pool = new BufferPool(MAX_BULK_DATA_BYTES)
  for (let round = 0; round < rounds; round++) {
    const offer = await fetchOffer(host, control)
    let got = 0
    let bytes = 0
    let stop = startClock()
    let finished!: () => void
    const done = new Promise<void>(resolve => { finished = resolve })
    const receiver = await connectBulk(host, offer.port, Buffer.from(offer.token, 'hex'), offer.key !== null ? Buffer.from(offer.key, 'hex') : undefined, {
      pool,
      timeoutMs: START_TIMEOUT_MS,
      onFrame: f => {
        bytes += f.data.byteLength
        pool.give(f.data)
        if (++got === frames) finished()
      }
    })
    stop = startClock()
    receiver.onClose(err => { if (got < frames) { console.error(`closed after ${got} of ${frames} frames: ${err?.message ?? 'clean end'}`); process.exit(1) } })
    await done
    report({ transfer: stop(bytes) })
    receiver.close()
  }
}

// ---- command line -----------------------------------------------------------------------------

function row (cells: Array<string | number>, widths: number[]): string {
  return cells.map((c, i) => String(c).padStart(widths[i] ?? 8)).join('  ')
}

if (isMain(import.meta.url)) {
  const { values: a } = parseArgs({
    options: {
      role: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      control: { type: 'string' },
      frames: { type: 'string' },
      'block-size': { type: 'string' },
      rounds: { type: 'string', default: '1' },
      encrypt: { type: 'string', default: 'true' },
      window: { type: 'string', default: String(DEFAULT_WINDOW) },
      mib: { type: 'string', default: '1024' },
      'block-kib': { type: 'string', default: '64,256,1024' },
      modes: { type: 'string', default: 'encrypted,clear' },
      runs: { type: 'string', default: '3' },
      'skip-baselines': { type: 'boolean', default: false }
    }
  })
  if (a.role === 'source') {
    await source(a.host, Number(a.frames), Number(a['block-size']), Number(a.rounds), a.encrypt === 'true', Number(a.window))
  } else if (a.role === 'sink') {
    await sink(a.host, Number(a.control), Number(a.frames), Number(a['block-size']), Number(a.rounds))
  } else {
    const bytes = Number(a.mib) * MiB
    const runs = Number(a.runs)
    const blocks = a['block-kib'].split(',').map(k => Number(k) * KiB)
    const modes = a.modes.split(',').map(m => m.trim())
    console.log(`bulk channel ${a.host}: ${a.mib} MiB per transfer, median of ${runs} after a warm-up, window ${a.window} (${loadNote()})`)
    let libp2p: Throughput | undefined
    let raw: Throughput | undefined
    if (!a['skip-baselines']) {
      raw = await measureRawTcp({ bytes, host: a.host, runs })
      console.log(`raw TCP: ${raw.mbps.toFixed(0)} MB/s, receiver ${raw.cpuMbps.toFixed(0)} MB/CPU-s (${loadNote()})`)
      libp2p = await measureLibp2pStream({ bytes, host: a.host, runs })
      console.log(`libp2p tcp+noise+yamux, 1 MiB writes: ${libp2p.mbps.toFixed(0)} MB/s, receiver ${libp2p.cpuMbps.toFixed(0)} MB/CPU-s (${loadNote()})`)
    }
    const widths = [6, 9, 6, 8, 6, 9, 8, 9, 6]
    console.log(row(['block', 'mode', 'MB/s', '×libp2p', '×raw', 'recv MB/', '×libp2p', 'send MB/', 'load'], widths))
    console.log(row(['', '', '', '', '', 'CPU-s', '', 'CPU-s', ''], widths))
    for (const blockSize of blocks) {
      for (const mode of modes) {
        const f = await measureBulkChannel({ bytes, blockSize, encrypt: mode !== 'clear', runs, host: a.host, window: Number(a.window) })
        const ratio = (x: number, base: Throughput | undefined, key: 'mbps' | 'cpuMbps'): string => base !== undefined ? `${(x / base[key]).toFixed(2)}` : '-'
        console.log(row([
          `${blockSize / KiB} KiB`, mode, f.receiver.mbps.toFixed(0), ratio(f.receiver.mbps, libp2p, 'mbps'), ratio(f.receiver.mbps, raw, 'mbps'),
          f.receiver.cpuMbps.toFixed(0), ratio(f.receiver.cpuMbps, libp2p, 'cpuMbps'), f.sender.cpuMbps.toFixed(0), loadNote().replace(/^load /, '').replace(/ cores$/, '')
        ], widths))
        console.log(`        samples MB/s: ${f.receiver.samples.map(s => s.toFixed(0)).join(', ')}`)
      }
    }
  }
}
