/**
 * Shared pieces of the e2e tests: a harness that owns a temporary folder and every daemon a test
 * file starts (all stopped by pid and removed in `close`, even after a failure), generated model
 * folders, file digests, raw HTTP on the daemon's socket, and the "store is consistent" check the
 * bad-input and crash tests repeat after every failure.
 *
 * Every RPC request of the e2e tests is checked against the OpenAPI document: the harness starts
 * each daemon on a socket of its own (`--socket <home>/daemon.sock`) and puts a recording proxy
 * (`test/helpers/rpc-recorder.ts`) where clients find the home's socket (`shoal.sock`, or the
 * config's `rpc.socket`), so the CLI processes, in-process clients, examples and raw requests
 * all go through it. `close` fails the file listing each recorded request that does not validate
 * against `docs/openapi.json`, and each one marked invalid (`rawRequest`'s `invalid`) that does.
 */
import { createHash } from 'node:crypto'
import { createReadStream, existsSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'vitest'
import { CLI, DaemonProcess, type CliResult } from '../../scripts/lib/daemon-proc.js'
import { changeTensors, llamaTensors, writeSafetensors } from '../../scripts/lib/synth.js'
import type { StatusResult } from '../../src/rpc/api.js'
import { clientTarget } from '../../src/rpc/target.js'
import type { VerifyReport } from '../../src/store/verify.js'
import { OpenApiCheck } from '../helpers/openapi-check.js'
import { MARK_INVALID, RecordingProxy, type RecordedRequest } from '../helpers/rpc-recorder.js'

export { CLI, DaemonProcess, ROOT, runCli, sleep, type CliResult } from '../../scripts/lib/daemon-proc.js'
export { EXIT } from '../../src/cli/exit-codes.js'

/** Fails the whole file early, with the fix, when the CLI was not built. */
export function requireBuiltCli (): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` before the e2e tests (npm run test:e2e does)`)
}

/**
 * `SHOAL_TEST_LOGS=<dir>`: daemons log at debug level, and each harness copies every daemon's log
 * into a new folder under `<dir>` when it closes (for chasing a failure that happens only under load).
 */
const KEEP_LOGS = process.env.SHOAL_TEST_LOGS !== undefined && process.env.SHOAL_TEST_LOGS !== '' ? process.env.SHOAL_TEST_LOGS : undefined

/** Where a checked daemon itself listens, in its home; its clients reach it through the proxy. */
export const DAEMON_SOCKET = 'daemon.sock'

/**
 * A daemon behind a recording proxy: the daemon listens on `daemonSocket`, the proxy on `socket`
 * (where every client of the home connects) from the daemon's start until it exits.
 */
export class CheckedDaemon extends DaemonProcess {
  private proxy?: RecordingProxy

  constructor (home: string, args: string[], env: NodeJS.ProcessEnv, wrap: string[], private readonly record: (r: RecordedRequest) => void) {
    super(home, ['--socket', join(home, DAEMON_SOCKET), ...args], env, wrap)
  }

  /** Where the home's clients connect: the socket its config names, else `shoal.sock`. */
  override get socket (): string {
    const target = clientTarget({ SHOAL_HOST: '' }, this.home)
    return 'socketPath' in target ? target.socketPath : super.socket
  }

  override async start (timeoutMs?: number): Promise<this> {
    await super.start(timeoutMs)
    const child = this.child
    const proxy = await RecordingProxy.listen(this.socket, this.daemonSocket, this.record)
    this.proxy = proxy
    // The proxy goes with the daemon, so clients find no socket once it is gone, as without one.
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) await proxy.close()
    else child.once('exit', () => { void proxy.close() })
    return this
  }

  override async stop (signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | string> {
    const code = await super.stop(signal, timeoutMs)
    await this.proxy?.close()
    return code
  }
}

export interface HarnessOptions {
  /**
   * `checked` (the default): every daemon is a `CheckedDaemon`, and `close` checks the requests
   * against the OpenAPI document. `direct`: clients reach the daemon's own socket — for the
   * faults files, which measure that socket itself (connection limits, slow readers, bytes that
   * are not HTTP, kill -9 timing), where a proxy in between would change what they measure.
   */
  rpc?: 'checked' | 'direct'
}

export class Harness {
  private readonly daemons: DaemonProcess[] = []
  /** Every RPC request sent to this harness's daemons, in arrival order (`checked` only). */
  readonly requests: RecordedRequest[] = []

  private constructor (readonly root: string, private readonly options: HarnessOptions) {}

  static async create (prefix: string, options: HarnessOptions = {}): Promise<Harness> {
    requireBuiltCli()
    return new Harness(await mkdtemp(join(tmpdir(), `shoal-e2e-${prefix}-`)), options)
  }

  /** A fresh folder under the harness root. */
  async dir (name: string): Promise<string> {
    const path = join(this.root, name)
    await mkdir(path, { recursive: true })
    return path
  }

  /**
   * A daemon process for `home` (not started); `close` stops it. `wrap` prefixes the command
   * (e.g. `['ip', 'netns', 'exec', ns]`).
   */
  daemon (home: string, args: string[] = [], env: NodeJS.ProcessEnv = {}, wrap: string[] = []): DaemonProcess {
    const logs = { ...(KEEP_LOGS !== undefined ? { SHOAL_LOG_LEVEL: 'debug' } : {}), ...env }
    const d = this.options.rpc === 'direct' ? new DaemonProcess(home, args, logs, wrap) : new CheckedDaemon(home, args, logs, wrap, r => this.requests.push(r))
    this.daemons.push(d)
    return d
  }

  /** Starts a daemon on `home` (a folder under the root) and waits until it answers. */
  async start (home: string, args: string[] = [], env: NodeJS.ProcessEnv = {}, wrap: string[] = []): Promise<DaemonProcess> {
    return await this.daemon(home, args, env, wrap).start()
  }

  /**
   * Starts a networked daemon on loopback (random port, no mDNS), dialling `peers`, with optional
   * `config.json` content; returns it with its first listen address (including /p2p/<id>).
   * `listen` and `wrap` place it elsewhere, e.g. in a network namespace.
   */
  async node (name: string, options: { peers?: string[], config?: object, env?: NodeJS.ProcessEnv, listen?: string, wrap?: string[] } = {}): Promise<{ d: DaemonProcess, addr: string, id: string }> {
    const home = await this.dir(name)
    if (options.config !== undefined) await writeFile(join(home, 'config.json'), JSON.stringify(options.config))
    const args = ['--listen', options.listen ?? '/ip4/127.0.0.1/tcp/0', ...(options.peers ?? []).flatMap(p => ['--peer', p])]
    const d = await this.start(home, args, options.env ?? {}, options.wrap ?? [])
    const id = await d.json<{ peerId: string, addresses: string[] }>(['id'])
    return { d, addr: id.addresses[0] ?? '', id: id.peerId }
  }

  /** Stops every daemon this harness started, by pid: SIGTERM, then SIGKILL if it lingers. */
  async stopAll (): Promise<void> {
    for (const d of this.daemons) await d.stop('SIGTERM', 10_000).catch(async () => await d.stop('SIGKILL'))
  }

  /**
   * Stops every daemon, then removes the root (after copying the daemons' logs out, if asked);
   * then fails, listing them, if any recorded request breaks the OpenAPI document (or was marked
   * invalid and does not).
   */
  async close (): Promise<void> {
    await this.stopAll()
    if (KEEP_LOGS !== undefined) {
      await mkdir(KEEP_LOGS, { recursive: true })
      const dir = await mkdtemp(join(KEEP_LOGS, 'shoal-e2e-logs-'))
      for (const [i, d] of this.daemons.entries()) await writeFile(join(dir, `${i}-${d.home.split('/').pop() ?? 'daemon'}.log`), d.stderr)
    }
    await rm(this.root, { recursive: true, force: true })
    const problems = checkRequests(await OpenApiCheck.load(), this.requests, this.root)
    if (problems.length > 0) {
      throw new Error(`${problems.length} of the ${this.requests.length} RPC requests this file sent do not match docs/openapi.json ` +
        '(fix the client, or the document in src/rpc/openapi.ts and npm run openapi; mark a request a test breaks on purpose with rawRequest\'s invalid):\n' +
        problems.map(p => `- ${p}`).join('\n'))
    }
  }
}

/**
 * What is wrong with each recorded request, one line each, naming the request, the daemon's
 * answer and the problems; `root` is cut from the socket paths shown.
 */
export function checkRequests (check: OpenApiCheck, requests: readonly RecordedRequest[], root = ''): string[] {
  const out: string[] = []
  for (const r of requests) {
    const problems = check.check(r)
    if (r.bodyBytes > r.body.length) problems.push(`its body of ${r.bodyBytes} bytes is larger than the recorder keeps (${r.body.length})`)
    const line = `${r.method} ${r.url.length > 300 ? `${r.url.slice(0, 300)}…` : r.url} (to ${r.socket.replace(root, '…')}, answered ${r.status ?? 'nothing'})`
    if (r.invalid === undefined && problems.length > 0) out.push(`${line}: ${problems.join('; ')}`)
    if (r.invalid !== undefined && problems.length === 0) out.push(`${line}: marked invalid (${r.invalid}), but the document accepts it: the document is too loose, or the mark is wrong`)
  }
  return out
}

export interface ModelOptions {
  /** Weight bytes (about). @default 8 MiB */
  bytes?: number
  /** Tensor seeds: a new prefix gives new weights. @default 'v1' */
  seed?: string
  /** Written as `shoal.json` when given. */
  metadata?: Record<string, unknown>
  /** Re-seed this fraction of the tensors (a "fine-tune" of the same model). */
  changeFraction?: number
}

/** Writes a small llama-shaped model folder: `model.safetensors`, `config.json`, optional `shoal.json`. */
export async function writeModelFolder (dir: string, options: ModelOptions = {}): Promise<string> {
  await mkdir(dir, { recursive: true })
  const base = llamaTensors(options.bytes ?? 8 * 1024 * 1024, { hidden: 256, vocab: 1024, seedPrefix: options.seed ?? 'v1' })
  const tensors = options.changeFraction === undefined ? base : changeTensors(base, options.changeFraction, 'tuned').tensors
  await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: options.changeFraction === undefined ? 'pt' : 'pt-tuned' })
  await writeFile(join(dir, 'config.json'), `${JSON.stringify({ architectures: ['LlamaForCausalLM'], hidden_size: 256, vocab_size: 1024 })}\n`)
  if (options.metadata !== undefined) await writeFile(join(dir, 'shoal.json'), `${JSON.stringify(options.metadata)}\n`)
  return dir
}

export async function sha256File (path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const part of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) hash.update(part as Buffer)
  return hash.digest('hex')
}

/**
 * sha256 of every regular file under `dir`, by `/`-separated relative path. With `followLinks`
 * (for snapshot folders, whose entries are symlinks into blobs/), links to files are read through.
 */
export async function treeDigests (dir: string, options: { followLinks?: boolean } = {}): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  const walk = async (at: string, prefix: string): Promise<void> => {
    for (const entry of await readdir(at, { withFileTypes: true })) {
      const rel = prefix === '' ? entry.name : `${prefix}/${entry.name}`
      if (entry.isDirectory()) await walk(join(at, entry.name), rel)
      else if (entry.isFile() || (options.followLinks === true && entry.isSymbolicLink() && (await stat(join(at, entry.name))).isFile())) out[rel] = await sha256File(join(at, entry.name))
      else throw new Error(`unexpected entry ${rel} in ${dir}`)
    }
  }
  await walk(dir, '')
  return out
}

/** Expects an exit code; on mismatch the failure shows what the command printed. */
export function expectExit (r: CliResult, code: number): void {
  expect(r.code, `exit code (stdout: ${r.stdout.slice(0, 2000)}\nstderr: ${r.stderr.slice(0, 2000)})`).toBe(code)
}

/** A version's id from `add --json` output. */
export function versionOf (r: CliResult): string {
  expectExit(r, 0)
  const id = (JSON.parse(r.stdout) as { version?: unknown }).version
  expect(id).toMatch(/^[a-z0-9]{20,}$/)
  return id as string
}

export async function listDir (path: string): Promise<string[]> {
  try {
    return (await readdir(path)).sort()
  } catch {
    return []
  }
}

export async function status (d: DaemonProcess): Promise<StatusResult> {
  return await d.json<StatusResult>(['status'])
}

/** `ls --json` and, per model, `ls <name> --json`: the whole visible state of the store. */
export async function listing (d: DaemonProcess): Promise<Record<string, unknown>> {
  const models = await d.json<Array<{ name: string }>>(['ls'])
  const out: Record<string, unknown> = { models }
  for (const m of models) out[m.name] = await d.json(['ls', m.name])
  return out
}

/**
 * Polls `probe` every `everyMs` until it gives a value (not undefined), which it returns; fails
 * naming `what` after `timeoutMs`. For waiting on a condition, never a fixed sleep.
 */
export async function until<T> (what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, everyMs))
  }
}

/**
 * The store is consistent: `verify` is clean, the listing is `expected` (no partial version
 * appeared), `tmp/` is empty and every file in `blobs/` is a blob the index records.
 */
export async function expectConsistent (d: DaemonProcess, expected?: Record<string, unknown>): Promise<void> {
  const r = await d.cli(['verify', '--json'])
  expectExit(r, 0)
  const report = JSON.parse(r.stdout) as VerifyReport
  expect(report.problems).toEqual([])
  expect(report.damaged).toEqual([])
  if (expected !== undefined) expect(await listing(d)).toEqual(expected)
  expect(await listDir(join(d.home, 'tmp'))).toEqual([])
  const s = await status(d)
  expect(await listDir(join(d.home, 'blobs'))).toHaveLength(s.store.blobs)
  expect(report.blobs).toBe(s.store.blobs)
}

export interface RawResponse { status: number, headers: Record<string, unknown>, text: string, json?: unknown }

/**
 * One raw HTTP request on a unix socket, no client library in between. With `chunked` the body is
 * streamed without a content-length, so the server finds its size only by reading it. `invalid`
 * says why the request breaks the OpenAPI document on purpose (the harness's check then expects
 * it to fail, and removes the mark before the daemon sees the request).
 */
export async function rawRequest (socketPath: string, method: string, path: string, body?: string, options: { chunked?: boolean, invalid?: string } = {}): Promise<RawResponse> {
  return await new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = {
      ...(body === undefined ? {} : options.chunked === true ? { 'content-type': 'application/json' } : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }),
      ...(options.invalid !== undefined ? { [MARK_INVALID]: options.invalid } : {})
    }
    // A connection of its own (no keep-alive pool): a request refused before its body was sent
    // may still be writing when the answer has come, and a pooled socket's late error would
    // surface outside the test. Errors once answered are the refusal's, not the test's.
    let answered = false
    const req = request({ socketPath, method, path, headers, agent: false }, res => {
      const parts: Buffer[] = []
      res.on('data', (p: Buffer) => parts.push(p))
      res.on('error', reject)
      res.on('end', () => {
        answered = true
        const text = Buffer.concat(parts).toString('utf8')
        let json: unknown
        try { json = JSON.parse(text) } catch { json = undefined }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json })
        req.destroy()
      })
    })
    req.on('error', err => { if (!answered) reject(err) })
    if (body !== undefined && options.chunked === true) {
      // Several writes, so the body goes out in chunks.
      for (let at = 0; at < body.length; at += 64 * 1024) req.write(body.slice(at, at + 64 * 1024))
      req.end()
    } else req.end(body)
  })
}
