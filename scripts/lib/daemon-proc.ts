/**
 * Real daemon processes for e2e tests, benchmarks and the demo: start `shoal daemon` (the built
 * CLI in dist/) with its own SHOAL_HOME, wait until its socket answers, run CLI commands against
 * it, and stop it by pid (SIGTERM, or SIGKILL to simulate a crash).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { request } from 'node:http'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { DAEMON_NODE_FLAGS } from '../../src/daemon/runtime.js'
import { onExitCleanup } from './proc.js'

export const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)))
export const CLI = join(ROOT, 'dist', 'cli', 'main.js')

export interface CliResult { code: number, stdout: string, stderr: string }

export class DaemonProcess {
  child?: ChildProcess
  stderr = ''

  /** `wrap` prefixes the command, e.g. `['ip', 'netns', 'exec', ns]` to run it in a namespace. */
  constructor (readonly home: string, readonly extraArgs: string[] = [], readonly env: NodeJS.ProcessEnv = {}, readonly wrap: string[] = []) {}

  /** Where clients of the home connect. */
  get socket (): string { return join(this.home, 'shoal.sock') }
  /** Where the daemon itself listens: `--socket` when given, else `socket`. */
  get daemonSocket (): string {
    const at = this.extraArgs.indexOf('--socket')
    return at >= 0 && this.extraArgs[at + 1] !== undefined ? resolve(this.extraArgs[at + 1] ?? '') : this.socket
  }
  get pid (): number | undefined { return this.child?.pid }

  /** Starts the daemon and waits until `shoal status` answers. */
  async start (timeoutMs = 20_000): Promise<this> {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`)
    const [command, ...prefix] = [...this.wrap, process.execPath, ...(process.env.SHOAL_NODE_FLAGS !== undefined ? process.env.SHOAL_NODE_FLAGS.split(' ').filter(f => f !== '') : DAEMON_NODE_FLAGS), ...profileArgs()]
    // Tests and benchmarks stay on loopback (an ephemeral port) unless told where to listen.
    const listen = this.extraArgs.includes('--listen') ? [] : ['--listen', '/ip4/127.0.0.1/tcp/0']
    const child = spawn(command ?? process.execPath, [...prefix, CLI, 'daemon', ...listen, ...this.extraArgs], {
      env: { ...process.env, SHOAL_HOME: this.home, SHOAL_LOG_LEVEL: 'info', ...this.env },
      stdio: ['ignore', 'ignore', 'pipe']
    })
    this.child = child
    this.stderr = ''
    child.stderr?.on('data', (d: Buffer) => { this.stderr += d.toString() })
    const exited = new Promise<number>(resolve => child.once('exit', code => resolve(code ?? -1)))
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      const early = await Promise.race([exited, sleep(100).then(() => undefined)])
      if (early !== undefined) throw new Error(`daemon exited with ${early} during start:\n${this.stderr}`)
      // Only this child counts: another daemon may already answer on the same home's socket.
      if (await statusPid(this.daemonSocket) === child.pid) return this
    }
    await this.stop('SIGKILL')
    throw new Error(`daemon did not answer within ${timeoutMs} ms:\n${this.stderr}`)
  }

  /** Runs `shoal <args>` against this daemon's home. */
  async cli (args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
    return await runCli(args, { SHOAL_HOME: this.home, ...env })
  }

  /** Runs `shoal <args> --json`, expects exit 0, returns the parsed JSON. */
  async json<T = unknown> (args: string[]): Promise<T> {
    const r = await this.cli([...args, '--json'])
    if (r.code !== 0) throw new Error(`shoal ${args.join(' ')} exited ${r.code}: ${r.stderr}`)
    return JSON.parse(r.stdout) as T
  }

  /** Stops by pid and waits for the exit; returns the exit code (or signal name). */
  async stop (signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<number | string> {
    const child = this.child
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? child?.signalCode ?? 0
    const done = new Promise<number | string>(resolve => child.once('exit', (code, sig) => resolve(code ?? sig ?? -1)))
    child.kill(signal)
    const result = await Promise.race([done, sleep(timeoutMs).then(() => 'timeout' as const)])
    if (result === 'timeout') {
      child.kill('SIGKILL')
      return await done
    }
    return result
  }

  /** User, system and total CPU seconds of the daemon (all its threads): `procCpuSeconds`. */
  async cpuSeconds (): Promise<CpuSeconds> {
    return await procCpuSeconds(this.pid ?? 0)
  }

  /** Peak resident set size (VmHWM) in bytes, from /proc. */
  async peakRss (): Promise<number> {
    const status = await readFile(`/proc/${this.pid ?? 0}/status`, 'utf8')
    const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0)
    return kb * 1024
  }
}

/**
 * Starts a daemon inside network namespace `at.ns`, listening on `at.ip:port` and dialling
 * `peers`. `track` sees it before it starts (so a caller can stop one that fails to). It is not
 * started through the swarm's `exec`: it is killed by pid if this process is interrupted.
 */
export async function startInNamespace (home: string, at: { ip: string, ns: string }, port: number, peers: string[], env: NodeJS.ProcessEnv, track: (d: DaemonProcess) => void): Promise<DaemonProcess> {
  const d = new DaemonProcess(home, ['--listen', `/ip4/${at.ip}/tcp/${port}`, ...peers.flatMap(p => ['--peer', p])], env, ['ip', 'netns', 'exec', at.ns])
  track(d)
  await d.start(60_000)
  const pid = d.pid
  const unregister = onExitCleanup(() => { if (pid !== undefined) try { process.kill(pid, 'SIGKILL') } catch { /* gone */ } })
  d.child?.once('exit', unregister)
  return d
}

export interface CpuSeconds { user: number, sys: number, total: number }

/** Clock ticks per second of /proc's CPU times (USER_HZ): 100 on every Linux build this runs on. */
const USER_HZ = 100

/**
 * User, system and total CPU seconds of process `pid` so far, all its threads together, from
 * /proc/<pid>/stat (utime and stime). Every benchmark that compares CPU (shoal daemons, aria2,
 * anything else) reads it here, so the figures are taken the same way.
 */
export async function procCpuSeconds (pid: number): Promise<CpuSeconds> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8')
  // The command name (field 2) is in parentheses and may hold spaces: count fields after it.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
  const [user, sys] = [Number(fields[11]) / USER_HZ, Number(fields[12]) / USER_HZ]
  return { user, sys, total: user + sys }
}

/**
 * The pid `GET /v1/status` on `socket` answers with, or undefined while nothing answers. Asked in
 * process: a `shoal status` per poll cost a node start each, most of a restart on a loaded machine.
 */
async function statusPid (socket: string): Promise<number | undefined> {
  return await new Promise(resolve => {
    const req = request({ socketPath: socket, path: '/v1/status', timeout: 2000 }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (part: string) => { body += part })
      res.on('error', () => { resolve(undefined) })
      res.on('end', () => {
        try {
          resolve(res.statusCode === 200 ? (JSON.parse(body) as { pid?: number }).pid : undefined)
        } catch {
          resolve(undefined)
        }
      })
    })
    req.on('timeout', () => { req.destroy() })
    req.on('error', () => { resolve(undefined) })
    req.end()
  })
}

/**
 * `SHOAL_NODE_FLAGS='<flags>'` starts every daemon here with those node flags instead of
 * `DAEMON_NODE_FLAGS` (to measure a V8 setting against the shipped one in the same benchmark).
 * `SHOAL_PROFILE_DIR=<dir>` makes every daemon started here write a V8 CPU profile into `dir` when
 * it exits (benchmarks stop daemons with SIGTERM, which exits normally).
 */
function profileArgs (): string[] {
  const dir = process.env.SHOAL_PROFILE_DIR
  return dir !== undefined && dir !== '' ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : []
}

export async function runCli (args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  // 'close', not 'exit': after 'exit' the pipes may still hold output the parent has not read.
  const code = await new Promise<number>(resolve => child.once('close', c => resolve(c ?? -1)))
  return { code, stdout, stderr }
}

export async function sleep (ms: number): Promise<void> {
  await new Promise(resolve => setTimeout(resolve, ms))
}
