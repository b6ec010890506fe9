/**
 * Child processes for benchmarks: start a TypeScript script in a separate Node process (on this
 * host or, through a launcher such as a network namespace's `exec`, somewhere else), read the
 * JSON lines it prints on stdout, and stop it by pid. Also a process-wide registry of synchronous
 * cleanups that run on exit, SIGINT and SIGTERM, so nothing started here outlives the run.
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { cpus, loadavg } from 'node:os'
import { createInterface } from 'node:readline'
import { pathToFileURL } from 'node:url'
import { ROOT } from './daemon-proc.js'

/** Starts a command somewhere (here, or inside a namespace); same shape as `child_process.spawn`. */
export type Launcher = (cmd: string, args: string[], opts?: SpawnOptions) => ChildProcess

export const localLauncher: Launcher = (cmd, args, opts = {}) => spawn(cmd, args, opts)

const STOP_GRACE_MS = 3_000
const STDERR_KEEP = 4_000

// ---- exit-time cleanup ------------------------------------------------------------------------

const cleanups = new Set<() => void>()
let hooksInstalled = false

function runCleanups (): void {
  for (const fn of cleanups) {
    try { fn() } catch { /* best effort: the process is going away */ }
  }
  cleanups.clear()
}

/**
 * Registers a synchronous cleanup to run when the process exits or is interrupted. Returns a
 * function that unregisters it (call it once the resource has been released normally).
 */
export function onExitCleanup (fn: () => void): () => void {
  if (!hooksInstalled) {
    hooksInstalled = true
    process.once('exit', runCleanups)
    // `on`, not `once`: a second signal (`timeout` sends one to the process and one to its group)
    // must not find the default action, which would kill the process before the cleanups ran.
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      process.on(sig, () => { runCleanups(); process.exit(130) })
    }
  }
  cleanups.add(fn)
  return () => { cleanups.delete(fn) }
}

// ---- JSON-line child processes ----------------------------------------------------------------

/** A child Node process running one of our scripts that reports by printing JSON lines. */
export class ScriptProcess {
  stderr = ''
  private readonly messages: unknown[] = []
  private waiter: (() => void) | undefined
  /** Set on 'close': the child has exited and every line it printed has been read. */
  private closed = false
  private readonly exited: Promise<number | string>
  private readonly unregister: () => void

  constructor (readonly child: ChildProcess, readonly name: string) {
    const pid = child.pid
    this.unregister = onExitCleanup(() => { if (pid !== undefined) killQuietly(pid, 'SIGKILL') })
    child.stderr?.on('data', (d: Buffer) => { this.stderr = (this.stderr + d.toString()).slice(-STDERR_KEEP) })
    if (child.stdout !== null) {
      createInterface({ input: child.stdout }).on('line', line => {
        if (!line.startsWith('{')) return
        this.messages.push(JSON.parse(line))
        this.waiter?.()
      })
    }
    this.exited = new Promise(resolve => {
      // 'close' comes after the last line of output has been read, which 'exit' does not promise.
      child.once('close', (code, sig) => { this.closed = true; this.unregister(); resolve(code ?? sig ?? -1); this.waiter?.() })
      child.once('error', err => { this.stderr += String(err); this.closed = true; this.unregister(); resolve(-1); this.waiter?.() })
    })
  }

  get running (): boolean { return this.child.exitCode === null && this.child.signalCode === null }

  /** Waits for the next JSON message that has `key`, skipping others; fails if the child exits. */
  async next<T> (key: string, timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const i = this.messages.findIndex(m => typeof m === 'object' && m !== null && key in m)
      if (i >= 0) return (this.messages.splice(i, 1)[0] as Record<string, T>)[key]!
      if (this.closed) throw new Error(`${this.name} exited before reporting "${key}":\n${this.stderr}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`${this.name} did not report "${key}" within ${timeoutMs} ms:\n${this.stderr}`)
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, left)
        this.waiter = () => { clearTimeout(timer); resolve() }
      })
      this.waiter = undefined
    }
  }

  /** Waits for a normal exit; throws on a non-zero code. */
  async done (timeoutMs: number): Promise<void> {
    const timer = new Promise<'timeout'>(resolve => setTimeout(() => resolve('timeout'), timeoutMs).unref())
    const code = await Promise.race([this.exited, timer])
    if (code === 'timeout') throw new Error(`${this.name} still running after ${timeoutMs} ms`)
    if (code !== 0) throw new Error(`${this.name} exited with ${code}:\n${this.stderr}`)
  }

  /** Stops the child by pid: SIGTERM, then SIGKILL after a grace period. Idempotent. */
  async stop (): Promise<void> {
    const pid = this.child.pid
    if (!this.running || pid === undefined) return
    killQuietly(pid, 'SIGTERM')
    const timer = setTimeout(() => killQuietly(pid, 'SIGKILL'), STOP_GRACE_MS)
    await this.exited
    clearTimeout(timer)
  }
}

function killQuietly (pid: number, signal: NodeJS.Signals): void {
  try { process.kill(pid, signal) } catch { /* already gone */ }
}

/**
 * Starts `node --import tsx <script> ...args` through `launch` (default: here) with the repo as
 * working directory, so the script and `tsx` resolve the same way in a namespace as outside it.
 */
export function startScript (script: string, args: string[], launch: Launcher = localLauncher): ScriptProcess {
  const child = launch(process.execPath, ['--import', 'tsx', script, ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe']
  })
  return new ScriptProcess(child, `${script.split('/').pop() ?? script} ${args.join(' ')}`)
}

/** Prints one JSON message line for the parent process (the protocol `ScriptProcess` reads). */
export function report (message: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(message) + '\n')
}

/** What a receiving process reports for one transfer: wall time and its own CPU time. */
export interface TransferReport { bytes: number, seconds: number, cpuSeconds: number }

/** Throughput figures in MB/s (10^6 bytes per second), medians over the measured transfers. */
export interface Throughput {
  /** Wall-clock rate at the receiver. */
  mbps: number
  /**
   * Bytes per CPU-second of the receiving process: the rate it would reach on an idle core when
   * it is CPU-bound. Moves much less than `mbps` when other work shares the machine.
   */
  cpuMbps: number
  /** Wall-clock rate of each measured transfer, in order. */
  samples: number[]
}

const MB = 1e6

export function summarize (transfers: readonly TransferReport[]): Throughput {
  const samples = transfers.map(t => t.bytes / t.seconds / MB)
  return { mbps: median(samples), cpuMbps: median(transfers.map(t => t.bytes / t.cpuSeconds / MB)), samples }
}

/** Starts timing a transfer in this process; call the result at its end. */
export function startClock (): (bytes: number) => TransferReport {
  const t0 = process.hrtime.bigint()
  const cpu0 = process.cpuUsage()
  return bytes => {
    const cpu = process.cpuUsage(cpu0)
    return { bytes, seconds: Number(process.hrtime.bigint() - t0) / 1e9, cpuSeconds: (cpu.user + cpu.system) / 1e6 }
  }
}

export function median (xs: readonly number[]): number {
  if (xs.length === 0) throw new Error('median of nothing')
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

/** True when `moduleUrl` is the script Node was started with (not imported by another one). */
export function isMain (moduleUrl: string): boolean {
  const entry = process.argv[1]
  return entry !== undefined && pathToFileURL(resolve(entry)).href === moduleUrl
}

/** "load 1.23/2 cores": printed beside figures, since other work on the machine moves them. */
export function loadNote (): string {
  return `load ${loadavg()[0]!.toFixed(2)}/${cpus().length} cores`
}

/**
 * Writes every dirty page back (`sync`) and drops the page cache, dentries and inodes
 * (`3 > /proc/sys/vm/drop_caches`), so the next read of any file comes from the disk. Needs root;
 * it acts on the whole machine (other work on it loses its cache too).
 */
export function dropPageCache (): void {
  execFileSync('sync', [], { stdio: 'ignore' })
  writeFileSync('/proc/sys/vm/drop_caches', '3')
}
