/**
 * A small HTTP origin (node:http) for tests and benchmarks, like a web seed: serves the files of
 * one directory with GET and HEAD, single `Range: bytes=a-b` / `a-` / `-n` requests (206, or 416
 * when unsatisfiable; multi-range requests get the whole file), Content-Length, Accept-Ranges and
 * keep-alive.
 *
 * As a baseline it measures download MB/s (10^6 bytes per second) from an origin in a separate
 * process over loopback: the whole file in one GET, and the same file as sequential 4 MiB Range
 * requests on one keep-alive connection; also MB per CPU-second of the client (the receiver).
 * One warm-up GET precedes the measured runs.
 *
 *   node --import tsx scripts/baselines/http-origin.ts [--mib 1024] [--runs 3]
 *   node --import tsx scripts/baselines/http-origin.ts --serve <dir> [--host 127.0.0.1] [--port 0]
 */
import { randomFillSync } from 'node:crypto'
import { createReadStream, rmSync } from 'node:fs'
import { mkdtemp, open, rm, stat } from 'node:fs/promises'
import { Agent, createServer, request, type IncomingMessage, type ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join, resolve, sep } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import {
  isMain, loadNote, onExitCleanup, report, startClock, startScript, summarize, type Throughput, type TransferReport
} from '../lib/proc.js'

const SCRIPT = fileURLToPath(import.meta.url)
const MiB = 1024 * 1024
const READ_CHUNK = MiB
const RANGE_SIZE = 4 * MiB
const KEEP_ALIVE_MS = 60_000
const START_TIMEOUT_MS = 30_000
const FILE_NAME = 'blob.bin'

export interface HttpOrigin {
  /** Base URL, ending in `/`; a file `f` in the directory is at `${url}f`. */
  url: string
  close: () => Promise<void>
}

/** A byte range, inclusive at both ends. */
interface ByteRange { start: number, end: number }

/**
 * Parses a Range header against a file size: a range, 'unsatisfiable', or undefined when the
 * header is absent, malformed or asks for several ranges (the whole file is then served).
 */
export function parseRange (header: string | undefined, size: number): ByteRange | 'unsatisfiable' | undefined {
  const m = header === undefined ? null : /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (m === null) return undefined
  const [, a = '', b = ''] = m
  if (a === '' && b === '') return undefined
  if (a === '') { // suffix: the last b bytes
    const n = Number(b)
    return n === 0 || size === 0 ? 'unsatisfiable' : { start: Math.max(0, size - n), end: size - 1 }
  }
  const start = Number(a)
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1)
  if (b !== '' && Number(b) < start) return undefined
  return start >= size ? 'unsatisfiable' : { start, end }
}

async function serve (root: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { Allow: 'GET, HEAD' }).end()
    return
  }
  const path = resolve(root, '.' + decodeURIComponent(new URL(req.url ?? '/', 'http://origin').pathname))
  const st = path.startsWith(root + sep) ? await stat(path).catch(() => undefined) : undefined
  if (st === undefined || !st.isFile()) {
    res.writeHead(404, { 'Content-Length': 0 }).end()
    return
  }
  const range = parseRange(req.headers.range, st.size)
  if (range === 'unsatisfiable') {
    res.writeHead(416, { 'Content-Range': `bytes */${st.size}`, 'Content-Length': 0 }).end()
    return
  }
  const { start, end } = range ?? { start: 0, end: st.size - 1 }
  const headers: Record<string, string | number> = {
    'Accept-Ranges': 'bytes',
    'Content-Type': 'application/octet-stream',
    'Content-Length': end - start + 1,
    'Last-Modified': st.mtime.toUTCString()
  }
  if (range !== undefined) headers['Content-Range'] = `bytes ${start}-${end}/${st.size}`
  res.writeHead(range === undefined ? 200 : 206, headers)
  if (req.method === 'HEAD' || end < start) {
    res.end()
    return
  }
  await pipeline(createReadStream(path, { start, end, highWaterMark: READ_CHUNK }), res)
}

/** Starts an origin serving the files in `dir`; `close()` stops it and drops open connections. */
export async function startHttpOrigin (dir: string, opts: { port?: number, host?: string } = {}): Promise<HttpOrigin> {
  const root = resolve(dir)
  const { port = 0, host = '127.0.0.1' } = opts
  const server = createServer((req, res) => {
    serve(root, req, res).catch(() => { res.destroy() })
  })
  server.keepAliveTimeout = KEEP_ALIVE_MS
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => resolve())
  })
  const addr = server.address()
  if (addr === null || typeof addr === 'string') throw new Error('unexpected server address')
  return {
    url: `http://${host}:${addr.port}/`,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
}

// ---- baseline ---------------------------------------------------------------------------------

export interface HttpFigures {
  /** One GET for the whole file. */
  whole: Throughput
  /** The file fetched as sequential 4 MiB Range requests on one connection. */
  ranges: Throughput
}

/** GETs `url` (optionally a range), discards the body, returns the bytes received. */
async function fetchDiscard (agent: Agent, url: string, range?: ByteRange): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    const headers = range === undefined ? {} : { Range: `bytes=${range.start}-${range.end}` }
    request(url, { agent, headers }, res => {
      const want = range === undefined ? 200 : 206
      if (res.statusCode !== want) { res.resume(); reject(new Error(`HTTP ${res.statusCode} for ${url}`)); return }
      let n = 0
      res.on('data', (d: Buffer) => { n += d.length })
      res.once('end', () => resolve(n))
      res.once('error', reject)
    }).once('error', reject).end()
  })
}

async function timed (fn: () => Promise<number>): Promise<TransferReport> {
  const stop = startClock()
  return stop(await fn())
}

/** Writes `bytes` of random data to `path` (random so no layer can compress it away). */
export async function writeRandomFile (path: string, bytes: number): Promise<void> {
  const fh = await open(path, 'w')
  try {
    const buf = Buffer.alloc(Math.min(bytes, 4 * MiB))
    for (let left = bytes; left > 0; left -= buf.length) {
      const part = left >= buf.length ? buf : buf.subarray(0, left)
      randomFillSync(part)
      await fh.write(part)
    }
  } finally {
    await fh.close()
  }
}

/** Throughput over `runs` of downloading a `bytes` file from an origin in a child process. */
export async function measureHttp (opts: { bytes: number, runs?: number }): Promise<HttpFigures> {
  const { bytes, runs = 3 } = opts
  const dir = await mkdtemp(join(tmpdir(), 'shoal-http-'))
  const unregister = onExitCleanup(() => { rmSync(dir, { recursive: true, force: true }) })
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  try {
    await writeRandomFile(join(dir, FILE_NAME), bytes)
    const origin = startScript(SCRIPT, ['--serve', dir])
    try {
      const base = await origin.next<string>('listening', START_TIMEOUT_MS)
      const url = base + FILE_NAME
      await fetchDiscard(agent, url) // warm-up: page cache, connection, buffers
      const whole: TransferReport[] = []
      const ranges: TransferReport[] = []
      for (let r = 0; r < runs; r++) {
        const w = await timed(async () => await fetchDiscard(agent, url))
        if (w.bytes !== bytes) throw new Error(`got ${w.bytes} of ${bytes} bytes`)
        whole.push(w)
        const p = await timed(async () => {
          let n = 0
          for (let start = 0; start < bytes; start += RANGE_SIZE) {
            n += await fetchDiscard(agent, url, { start, end: Math.min(start + RANGE_SIZE, bytes) - 1 })
          }
          return n
        })
        if (p.bytes !== bytes) throw new Error(`got ${p.bytes} of ${bytes} bytes in ranges`)
        ranges.push(p)
      }
      return { whole: summarize(whole), ranges: summarize(ranges) }
    } finally {
      await origin.stop()
    }
  } finally {
    agent.destroy()
    await rm(dir, { recursive: true, force: true })
    unregister()
  }
}

// ---- command line -----------------------------------------------------------------------------

if (isMain(import.meta.url)) {
  const { values: a } = parseArgs({
    options: {
      serve: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '0' },
      mib: { type: 'string', default: '1024' },
      runs: { type: 'string', default: '3' }
    }
  })
  if (a.serve !== undefined) {
    const origin = await startHttpOrigin(a.serve, { host: a.host, port: Number(a.port) })
    report({ listening: origin.url })
  } else {
    const f = await measureHttp({ bytes: Number(a.mib) * MiB, runs: Number(a.runs) })
    const fmt = (t: Throughput): string => `${t.mbps.toFixed(0)} MB/s (client ${t.cpuMbps.toFixed(0)} MB/CPU-s)`
    console.log(`HTTP origin 127.0.0.1: ${a.mib} MiB, median of ${a.runs}: whole file ${fmt(f.whole)}, ` +
      `${RANGE_SIZE / MiB} MiB ranges ${fmt(f.ranges)} (${loadNote()})`)
  }
}
