/**
 * serve-onnx: a small inference server that follows a shoal label.
 *
 *   npm run build:examples && node examples/serve-onnx/dist/server.js --model demo/linear --label prod --mode hot --port 8080
 *
 * Start-up: `resolveEnsure(model@label)` (pulls the version if this node lacks it), a lease on that
 * version (so `shoal gc` keeps it while it is loaded), `<snapshot>/model.onnx` opened with
 * onnxruntime, then the KServe v2 inference protocol on `--port` (`POST /v2/models/<model>/infer`,
 * model metadata and readiness, `/v2/health/live|ready`), `/ready`, `/metrics` (Prometheus) and
 * `/health` (what it serves, switches). It watches the daemon's events for its model:
 *
 * - hot: on `label.moved` it leases and loads the new version beside the old one, then switches.
 * - cold: on `version.staged` it preloads (lease + session) the staged version; on `label.moved` it
 *   switches to the preloaded one (or loads it then, if it was not preloaded).
 * - `gone` (missed events: the daemon restarted or compacted them): it re-resolves the label.
 *
 * `--stream` (start while pulling): on a node that does not have the version yet, it does not wait
 * for the whole version. It reads `model.onnx` through the daemon as its bytes arrive
 * (`openRead`: verified bytes only; the pull fetches what is read first), builds the session from
 * those bytes, and starts serving; once the pull is complete it moves to the leased snapshot like
 * any other load. It logs the milliseconds from start to listening and to its first answer
 * (`first response`). Only for models whose weights are inside `model.onnx` (no external data).
 *
 * MUST hold: a request is never dropped or failed because of a switch. A request takes the current
 * model when it starts and runs to the end on it; the switch is one assignment; the old session is
 * released only after its last request has finished, and its lease only after that. Every answer
 * names the version that computed it. A failed load keeps the old version serving (and is retried
 * by the periodic re-resolve).
 *
 * Where the daemon is: `--socket <path>`, else `SHOAL_HOST` (`unix:///…`, or `http://127.0.0.1:<port>`
 * with `SHOAL_TOKEN`), else the socket of the home (`rpc.socket` in its config.json, else `shoal.sock`)
 * with home = `--home`, `$SHOAL_HOME` or `$XDG_DATA_HOME/shoal` — the same rules as the `shoal` CLI. Logs are JSON lines on stderr.
 * SIGTERM/SIGINT: stop accepting, let in-flight requests finish, release sessions and leases, exit 0.
 *
 * Not a goal: batching, several inputs of different dtypes (every input is float32), auth.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { join, resolve as resolvePath } from 'node:path'
import { parseArgs } from 'node:util'
import { InferenceSession, Tensor } from 'onnxruntime-node'
import { RpcError, ShoalClient, clientTarget } from 'shoal'

type LeaseHandle = Awaited<ReturnType<ShoalClient['holdLease']>>
type Mode = 'hot' | 'cold'

/** @default 'model.onnx' — the file loaded from the snapshot folder */
const MODEL_FILE = 'model.onnx'
/** @default 30 s — lease TTL; the client renews every third of it */
const LEASE_TTL_SECONDS = 30
/** @default 1 MiB — largest /infer body */
const MAX_BODY_BYTES = 1 << 20
/** @default 30 s — also re-resolve the label this often (a backstop for the event stream) */
const RECONCILE_INTERVAL_MS = 30_000
/** @default 30 s — longest wait for in-flight requests on a retired session or at shutdown */
const DRAIN_TIMEOUT_MS = 30_000
/** @default 2 s — wait before re-opening a watch that failed with an error */
const WATCH_RETRY_MS = 2000

const { values: args } = parseArgs({
  options: {
    model: { type: 'string' },
    label: { type: 'string', default: 'prod' },
    mode: { type: 'string', default: 'hot' },
    port: { type: 'string', default: '8080' },
    host: { type: 'string', default: '127.0.0.1' },
    socket: { type: 'string' },
    home: { type: 'string' },
    stream: { type: 'boolean', default: false }
  }
})
/** When the process started: "time to first response" counts from here. */
const startedAt = performance.now()

function log (level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}): void {
  process.stderr.write(`${JSON.stringify({ time: Date.now(), level, name: 'serve-onnx', msg, ...fields })}\n`)
}

function fail (message: string): never {
  log('error', message)
  process.exit(2)
}

/** The daemon's address: `--socket`, else the CLI's rules (`clientTarget`: SHOAL_HOST, else the home's `rpc.socket`). */
function daemonTarget (): ConstructorParameters<typeof ShoalClient>[0] {
  if (args.socket !== undefined) return { socketPath: resolvePath(args.socket) }
  try {
    // --home names the daemon to use, whatever SHOAL_HOST says.
    return args.home !== undefined ? clientTarget({ ...process.env, SHOAL_HOST: '' }, args.home) : clientTarget()
  } catch (err) {
    fail((err as Error).message)
  }
}

const modelName = args.model ?? fail('--model <name> is required')
const label = args.label
const mode: Mode = args.mode === 'hot' || args.mode === 'cold' ? args.mode : fail('--mode is hot or cold')
const port = Number(args.port)
if (!Number.isInteger(port) || port < 0 || port > 65535) fail('--port must be 0 to 65535')
const labelRef = `${modelName}@${label}`
const holder = `serve-onnx ${labelRef} pid ${process.pid}`
const shoal = new ShoalClient(daemonTarget())

/** One loaded version: its lease, its session, and the requests running on it. */
class Loaded {
  private inflight = 0
  private retired = false
  private drained?: () => void

  /** `lease` is absent for a session built from streamed bytes: it holds no file of the store. */
  constructor (readonly version: string, readonly session: InferenceSession, readonly lease: LeaseHandle | undefined, readonly loadMs: number) {}

  get active (): number { return this.inflight }

  /** Runs one request on this version; the session stays open until it returns. */
  async use<T> (fn: (session: InferenceSession) => Promise<T>): Promise<T> {
    this.inflight++
    try {
      return await fn(this.session)
    } finally {
      this.inflight--
      if (this.retired && this.inflight === 0) this.drained?.()
    }
  }

  /** Waits for in-flight requests (up to DRAIN_TIMEOUT_MS), then releases the session, then the lease. */
  async retire (): Promise<void> {
    this.retired = true
    if (this.inflight > 0) {
      await new Promise<void>(resolve => {
        this.drained = resolve
        setTimeout(resolve, DRAIN_TIMEOUT_MS).unref()
      })
    }
    if (this.inflight > 0) log('warn', 'releasing a session with requests still running', { version: this.version, inflight: this.inflight })
    await this.session.release().catch((err: unknown) => { log('warn', 'session release failed', { version: this.version, err: String(err) }) })
    await this.lease?.release()
    log('info', 'released', { version: this.version })
  }
}

/** Leases `version`, then opens its model; on failure releases what it took. */
async function load (version: string): Promise<Loaded> {
  const started = performance.now()
  const lease = await shoal.holdLease(`${modelName}@${version}`, holder, LEASE_TTL_SECONDS)
  try {
    const session = await InferenceSession.create(join(lease.lease.path, MODEL_FILE))
    return new Loaded(version, session, lease, Math.round(performance.now() - started))
  } catch (err) {
    await lease.release()
    throw err
  }
}

/**
 * `--stream`: the session built from `model.onnx` as the daemon streams it (pulling the version if
 * needed), before the version is complete here; no lease (the bytes are in memory).
 */
async function loadStreamed (): Promise<Loaded> {
  const started = performance.now()
  const stream = await shoal.openRead(labelRef, MODEL_FILE)
  const parts: Buffer[] = []
  for await (const part of stream) parts.push(part as Buffer)
  const session = await InferenceSession.create(Buffer.concat(parts))
  return new Loaded(stream.version, session, undefined, Math.round(performance.now() - started))
}

let current: Loaded
/** `--stream`: the first answer's time has been logged. */
let answered = false
/** Cold mode: the version staged by a cold head, already leased and loaded. */
let staged: Loaded | undefined
const retiring = new Set<Promise<void>>()
let switches = 0
let served = 0
/** Answers of /v2/models/<model>/infer by HTTP status, and the seconds they took in all (for /metrics). */
const requests = new Map<number, number>()
let seconds = 0
let lastSwitch: Record<string, unknown> | undefined
let stopping = false

function retire (m: Loaded): void {
  const p = m.retire().catch((err: unknown) => { log('warn', 'retire failed', { version: m.version, err: String(err) }) })
  retiring.add(p)
  void p.finally(() => retiring.delete(p))
}

/** Makes `version` the one new requests use. The old one drains and is released in the background. */
async function switchTo (version: string, cause: string): Promise<void> {
  if (version === current.version) return
  let next: Loaded
  const preloaded = staged?.version === version
  if (preloaded && staged !== undefined) {
    next = staged
    staged = undefined
  } else next = await load(version)
  const old = current
  current = next
  switches++
  lastSwitch = { from: old.version, to: version, cause, preloaded, loadMs: next.loadMs, at: Date.now() }
  log('info', 'switched', lastSwitch)
  retire(old)
  // A preload that was not used is for a head that lost (the label went elsewhere).
  if (staged !== undefined) { retire(staged); staged = undefined }
}

/** Cold mode: lease and load a staged version now, so the switch is instant when it comes. */
async function preload (version: string): Promise<void> {
  if (version === current.version || staged?.version === version) return
  if (staged !== undefined) { retire(staged); staged = undefined }
  staged = await load(version)
  log('info', 'preloaded', { version, loadMs: staged.loadMs })
}

/** Points the server at whatever the label points at now (the daemon's answer wins over events). */
async function reconcile (cause: string): Promise<void> {
  const r = await shoal.resolve(labelRef)
  await switchTo(r.version, cause)
}

/** Event handling, one step at a time, in event order. */
let queue = Promise.resolve()
function enqueue (what: string, step: () => Promise<void>): void {
  queue = queue.then(step).catch((err: unknown) => { log('error', `${what} failed; still serving ${current.version}`, { err: err instanceof Error ? err.message : String(err) }) })
}

async function watchEvents (since: string | undefined, signal: AbortSignal): Promise<void> {
  let last = since
  while (!signal.aborted) {
    try {
      for await (const e of shoal.watch({ model: modelName, types: ['label.moved', 'version.staged'], signal, ...(last !== undefined ? { since: last } : {}) })) {
        if (e.id !== undefined) last = e.id
        if (e.event === 'gone') {
          log('warn', 'missed events (daemon restarted?); re-resolving')
          enqueue('re-resolve', async () => { await reconcile('gone') })
        } else if ((e.event !== 'label.moved' && e.event !== 'version.staged') || e.data.label !== label) {
          continue
        } else if (e.event === 'label.moved') {
          if (typeof e.data.version !== 'string') log('warn', 'label removed; still serving the last version', { version: current.version })
          else enqueue(`switch to ${e.data.version}`, async () => { await reconcile('label.moved') })
        } else if (e.event === 'version.staged' && mode === 'cold' && typeof e.data.version === 'string') {
          const version = e.data.version
          enqueue(`preload of ${version}`, async () => { await preload(version) })
        }
      }
    } catch (err) {
      if (signal.aborted) return
      log('warn', 'event stream failed; reopening', { err: err instanceof Error ? err.message : String(err) })
      await new Promise(resolve => setTimeout(resolve, WATCH_RETRY_MS))
    }
  }
}

// ---- start-up --------------------------------------------------------------------------------

/** Flattens a rectangular nested array of numbers; returns values and dims. */
/** @default 1,048,576 — values one input may hold */
const MAX_INPUT_VALUES = 1 << 20

/** A KServe v2 input's `data` (flat row-major, or nested) with its `shape` as a float32 tensor. */
function toTensor (data: unknown, shape: unknown, what: string): Tensor {
  if (!Array.isArray(shape) || shape.length === 0 || shape.length > 8 || !shape.every(d => Number.isInteger(d) && d > 0)) {
    throw new InputError(`${what}: "shape" must be 1 to 8 positive whole numbers`)
  }
  const dims = shape as number[]
  const count = dims.reduce((n, d) => n * d, 1)
  if (count > MAX_INPUT_VALUES) throw new InputError(`${what}: shape [${dims.join(', ')}] holds more than ${MAX_INPUT_VALUES} values`)
  const flat = Array.isArray(data) ? data.flat(dims.length) : undefined
  if (flat === undefined || flat.length !== count) throw new InputError(`${what}: "data" must hold ${count} numbers for shape [${dims.join(', ')}] (flat or nested)`)
  const values = new Float32Array(count)
  for (const [i, v] of flat.entries()) {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new InputError(`${what}: "data" holds a value that is not a finite number`)
    values[i] = v
  }
  return new Tensor('float32', values, dims)
}

/** A request body or input the model cannot take (answered 400). */
class InputError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InputError'
  }
}

async function readJson (req: IncomingMessage): Promise<unknown> {
  const parts: Buffer[] = []
  let size = 0
  for await (const part of req) {
    size += (part as Buffer).byteLength
    if (size > MAX_BODY_BYTES) throw new InputError(`the body is over ${MAX_BODY_BYTES} bytes`)
    parts.push(part as Buffer)
  }
  try {
    return JSON.parse(Buffer.concat(parts).toString('utf8'))
  } catch {
    throw new InputError('the body is not JSON')
  }
}

function send (res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...(stopping ? { connection: 'close' } : {}) })
  res.end(text)
}

/** KServe v2 datatypes this server takes and gives (every input is float32). */
const DATATYPE = 'FP32'

/**
 * `POST /v2/models/<model>/infer` (the KServe v2 inference protocol):
 * `{ id?, inputs: [{ name, shape, datatype: "FP32", data }] }` with `data` flat (row-major) or
 * nested → `{ model_name, model_version, id?, outputs: [{ name, shape, datatype, data }] }`.
 * Failures answer `{ error }` (400 for the caller's input, 503 while stopping).
 */
async function infer (req: IncomingMessage, res: ServerResponse): Promise<void> {
  const started = performance.now()
  const done = (status: number, body: unknown): void => {
    send(res, status, body)
    requests.set(status, (requests.get(status) ?? 0) + 1)
    seconds += (performance.now() - started) / 1000
  }
  if (stopping) { req.resume(); return done(503, { error: 'shutting down' }) }
  let feeds: Record<string, Tensor>
  let id: string | undefined
  try {
    const body = await readJson(req)
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new InputError('the body must be a KServe v2 inference request: { "inputs": [{ "name", "shape", "datatype": "FP32", "data" }] }')
    const request = body as { id?: unknown, inputs?: unknown }
    if (request.id !== undefined && typeof request.id !== 'string') throw new InputError('"id" must be a string')
    id = request.id
    if (!Array.isArray(request.inputs) || request.inputs.length === 0) throw new InputError('"inputs" must be a non-empty array of { name, shape, datatype, data }')
    feeds = {}
    for (const input of request.inputs as unknown[]) {
      const { name, shape, datatype, data } = (input ?? {}) as { name?: unknown, shape?: unknown, datatype?: unknown, data?: unknown }
      if (typeof name !== 'string' || name === '') throw new InputError('every input needs a "name"')
      if (datatype !== DATATYPE) throw new InputError(`input "${name}": datatype must be ${DATATYPE}`)
      feeds[name] = toTensor(data, shape, `input "${name}"`)
    }
  } catch (err) {
    return done(400, { error: err instanceof Error ? err.message : String(err) })
  }
  if (stopping) return done(503, { error: 'shutting down' })
  // The model is chosen here, synchronously, and kept until the run ends.
  const m = current
  try {
    const result = await m.use(async session => {
      const missing = session.inputNames.filter(n => feeds[n] === undefined)
      if (missing.length > 0) throw new InputError(`missing input(s): ${missing.join(', ')}; the model takes ${session.inputNames.join(', ')}`)
      return await session.run(feeds)
    })
    const outputs = Object.entries(result).map(([name, t]) => ({ name, shape: t.dims, datatype: DATATYPE, data: Array.from(t.data as Float32Array, Number) }))
    served++
    done(200, { model_name: modelName, model_version: m.version, ...(id !== undefined ? { id } : {}), outputs })
    if (!answered) {
      answered = true
      log('info', 'first response', { msSinceStart: Math.round(performance.now() - startedAt), version: m.version, streamed: m.lease === undefined })
    }
  } catch (err) {
    // onnxruntime rejects inputs of the wrong shape or name: the caller's mistake.
    done(400, { error: err instanceof Error ? err.message : String(err), model_version: m.version })
  }
}

/** `GET /v2/models/<model>`: KServe v2 model metadata of the version being served. */
function metadata (res: ServerResponse): void {
  const session = current.session
  send(res, 200, {
    name: modelName,
    versions: [current.version],
    platform: 'onnxruntime_onnx',
    inputs: session.inputNames.map(name => ({ name, datatype: DATATYPE, shape: [-1] })),
    outputs: session.outputNames.map(name => ({ name, datatype: DATATYPE, shape: [-1] }))
  })
}

/** Prometheus text: requests by status, their total time, switches, the version served. */
function metrics (res: ServerResponse): void {
  const esc = (v: string): string => v.replace(/["\\\n]/g, c => c === '\n' ? '\\n' : `\\${c}`)
  const lines = [
    '# HELP serve_onnx_requests_total Inference requests answered, by HTTP status',
    '# TYPE serve_onnx_requests_total counter',
    ...[...requests].map(([status, n]) => `serve_onnx_requests_total{status="${status}"} ${n}`),
    '# HELP serve_onnx_request_seconds_total Time spent answering inference requests',
    '# TYPE serve_onnx_request_seconds_total counter',
    `serve_onnx_request_seconds_total ${seconds}`,
    '# HELP serve_onnx_switches_total Version switches',
    '# TYPE serve_onnx_switches_total counter',
    `serve_onnx_switches_total ${switches}`,
    '# HELP serve_onnx_inflight Inference requests running',
    '# TYPE serve_onnx_inflight gauge',
    `serve_onnx_inflight ${current.active}`,
    '# HELP serve_onnx_model_info The version being served (always 1)',
    '# TYPE serve_onnx_model_info gauge',
    `serve_onnx_model_info{model="${esc(modelName)}",label="${esc(label)}",version="${esc(current.version)}"} 1`
  ]
  const text = `${lines.join('\n')}\n`
  res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

function health (res: ServerResponse): void {
  send(res, stopping ? 503 : 200, {
    status: stopping ? 'stopping' : 'ok',
    model: modelName,
    label,
    mode,
    version: current.version,
    staged: staged?.version ?? null,
    inflight: current.active,
    served,
    switches,
    lastSwitch: lastSwitch ?? null
  })
}

async function main (): Promise<void> {
  const aborter = new AbortController()
  let first: Awaited<ReturnType<ShoalClient['resolve']>> | undefined
  if (args.stream === true) {
    // Start while pulling: serve from streamed bytes now; the snapshot replaces them once complete.
    first = await shoal.resolve(labelRef).catch(() => undefined)
    if (first === undefined) {
      current = await loadStreamed()
      log('info', 'loaded from streamed bytes', { version: current.version, loadMs: current.loadMs, inputs: current.session.inputNames, outputs: current.session.outputNames })
    }
  }
  // first.cursor: the newest event id before the label was read; the watch replays from there, so no move is missed.
  const settled = first !== undefined ? Promise.resolve(first) : shoal.resolveEnsure(labelRef, p => { log('info', 'pulling', { bytes: p.bytes, totalBytes: p.totalBytes }) }, aborter.signal)
  if (args.stream !== true || first !== undefined) {
    first = await settled
    current = await load(first.version)
    log('info', 'loaded', { version: current.version, path: first.path, loadMs: current.loadMs, inputs: current.session.inputNames, outputs: current.session.outputNames })
  }
  if (mode === 'cold') {
    // A cold head may have been staged before we started.
    const head = (await shoal.heads()).find(h => h.model === modelName && h.label === label && h.state === 'staged' && h.version !== null)
    if (head?.version != null) { const v = head.version; enqueue(`preload of ${v}`, async () => { await preload(v) }) }
  }

  const modelPath = `/v2/models/${encodeURIComponent(modelName)}`
  const base = `/v2/models/${modelName}`
  const server = createServer((req, res) => {
    let path: string
    try {
      // The model name may come encoded (demo%2Flinear) or as it is (demo/linear).
      path = decodeURIComponent((req.url ?? '/').split('?')[0] ?? '/').replace(/\/+$/, '')
    } catch {
      req.resume()
      send(res, 400, { error: 'the request path is not valid percent-encoding' })
      return
    }
    const ours = path === base ? '' : path.startsWith(`${base}/`) ? path.slice(base.length) : undefined
    if (req.method === 'POST' && ours === '/infer') { void infer(req, res); return }
    req.resume()
    if (req.method !== 'GET') { send(res, 405, { error: `${req.method ?? ''} is not allowed on ${path}` }); return }
    if (ours === '') metadata(res)
    else if (ours === '/ready' || path === '/v2/health/ready' || path === '/ready') send(res, stopping ? 503 : 200, { name: modelName, ready: !stopping })
    else if (path === '/v2/health/live') send(res, 200, { live: true })
    else if (path === '/v2') send(res, 200, { name: 'serve-onnx', version: '1', extensions: [] })
    else if (path === '/metrics') metrics(res)
    else if (path === '/health') health(res)
    else send(res, 404, { error: `no such endpoint: POST ${modelPath}/infer, GET ${modelPath}, ${modelPath}/ready, /v2/health/live, /v2/health/ready (/ready), /metrics or /health` })
  })
  server.keepAliveTimeout = 30_000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, args.host, () => { server.off('error', reject); resolve() })
  })
  const address = server.address()
  log('info', 'listening', { host: args.host, port: typeof address === 'object' && address !== null ? address.port : port, model: modelName, label, mode, version: current.version, msSinceStart: Math.round(performance.now() - startedAt) })

  let watching: Promise<void> = Promise.resolve()
  let backstop: NodeJS.Timeout | undefined
  /** Follows the label from `cursor`: events, and a periodic re-resolve as a backstop. */
  const follow = (cursor: string): void => {
    watching = watchEvents(cursor, aborter.signal)
    backstop = setInterval(() => { enqueue('periodic re-resolve', async () => { await reconcile('periodic') }) }, RECONCILE_INTERVAL_MS)
  }
  if (first !== undefined) follow(first.cursor)
  else {
    // Streamed: once the pull is complete, the leased snapshot takes over (as any load would),
    // and the label is followed from then on.
    enqueue('move to the snapshot', async () => {
      const done = await settled
      const snapshot = await load(done.version)
      const streamed = current
      current = snapshot
      retire(streamed)
      log('info', 'moved to the snapshot', { version: snapshot.version, path: done.path, msSinceStart: Math.round(performance.now() - startedAt) })
      if (!stopping) follow(done.cursor)
    })
  }

  const shutdown = async (signal: string): Promise<void> => {
    if (stopping) return
    stopping = true
    log('info', 'stopping', { signal })
    clearInterval(backstop)
    aborter.abort()
    const closed = new Promise<void>(resolve => server.close(() => resolve()))
    server.closeIdleConnections()
    await watching
    await queue
    if (staged !== undefined) retire(staged)
    retire(current)
    await Promise.all([...retiring])
    await closed
    log('info', 'stopped', { served, switches })
    process.exit(0)
  }
  process.once('SIGTERM', () => { void shutdown('SIGTERM') })
  process.once('SIGINT', () => { void shutdown('SIGINT') })
}

main().catch((err: unknown) => {
  const hint = err instanceof RpcError && err.code === 'UNREACHABLE' ? ' (is `shoal daemon` running with the same SHOAL_HOME, or pass --socket?)' : ''
  log('error', `start-up failed: ${err instanceof Error ? err.message : String(err)}${hint}`)
  process.exit(1)
})
