/**
 * A shaped swarm of Linux network namespaces for transfer benchmarks: one bridge, N namespaces
 * joined to it by veth pairs, addresses in a private /24 that exists only inside those
 * namespaces (the root namespace gets none, so no traffic can leave the machine), and every
 * host's uplink and downlink limited with a `tc tbf` qdisc. This kernel has no netem, so links
 * have a rate but no added delay.
 *
 * Needs root and `ip`/`tc` (iproute2). Everything created has a random suffix; `destroy()` stops
 * every process started through `exec`/`run`, deletes the namespaces (which removes their veths)
 * and the bridge. It is idempotent and also runs on exit, SIGINT and SIGTERM.
 */
import { execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { type Launcher, localLauncher, onExitCleanup } from './proc.js'

/** The interface name of a host's veth end inside its namespace. */
const HOST_IF = 'eth0'
const SUBNET_PREFIX = '10.77'
/**
 * Default token bucket depth: 4 ms of line rate, at least 80 KB. Measured (tbf-check.ts): 64–96 KB
 * give exact rates at 25–100 Mbit, but 64 KB only 0.8× the rate at 1 Gbit, where 256 KB+ is exact.
 * At least 80 KB, not 64: tbf splits in software every packet longer than its bucket, and a full
 * TCP segmentation-offload packet (64 KiB of payload plus its headers) is just longer than 64 KB.
 * A sender whose socket holds a lot then had each such packet cut into ~45 MTU packets, each of
 * which then crossed the bridge and the receiver's TCP stack on its own (a veth has no GRO); on a
 * real link the NIC segments and the receiver's NIC coalesces. In a 100 Mbit/s swarm that tripled
 * the packets for the same bytes (953k against aria2's 291k) and put ~30% of all CPU in softirq,
 * charged to whatever process was running (this kernel accounts CPU by tick, without IRQ time).
 */
const DEFAULT_BURST_MS = 4
const MIN_BURST_KB = 80
/** How long a packet may wait in the tbf queue before being dropped (sets the queue length). */
const DEFAULT_LATENCY_MS = 50
const MAX_HOSTS = 250
const KILL_GRACE_MS = 2_000

export interface SwarmOptions {
  hosts: number
  /** Rate of each host's uplink and of its downlink, in Mbit/s (10^6 bit/s). */
  rateMbit: number
  /** tbf bucket depth in KiB (tc's "kb"); default 4 ms of line rate, at least 80. */
  burstKb?: number
  /** tbf queue limit expressed as the longest wait, in ms; default 50. */
  latencyMs?: number
  /** Third octet of 10.77.X.0/24; random by default. */
  subnet?: number
}

/** The command-line options that set the tbf bucket and queue (`--burst-kb`, `--latency-ms`), for `parseArgs`. */
export const SHAPING_ARGS = { 'burst-kb': { type: 'string' }, 'latency-ms': { type: 'string' } } as const

/** `SwarmOptions` shaping fields from parsed `SHAPING_ARGS` (absent ones keep the defaults). */
export function shapingOf (values: { 'burst-kb'?: string, 'latency-ms'?: string }): Pick<SwarmOptions, 'burstKb' | 'latencyMs'> {
  return {
    ...(values['burst-kb'] !== undefined ? { burstKb: Number(values['burst-kb']) } : {}),
    ...(values['latency-ms'] !== undefined ? { latencyMs: Number(values['latency-ms']) } : {})
  }
}

export interface RunResult { code: number, stdout: string, stderr: string }

export interface SwarmHost {
  /** Index in `swarm.hosts`. */
  index: number
  /** Namespace name. */
  ns: string
  ip: string
  /** Spawns `cmd` inside this host's namespace (via `ip netns exec`); stopped by `destroy()`. */
  exec: Launcher
  /** Runs `cmd` to completion inside the namespace and collects its output. */
  run: (cmd: string, args: string[], opts?: SpawnOptions) => Promise<RunResult>
}

export interface Swarm {
  hosts: SwarmHost[]
  rateMbit: number
  /** Each link's rate in bytes per second. */
  rateBytesPerSec: number
  /** Bytes this host has sent (its uplink interface's tx counter). */
  txBytes: (host: SwarmHost) => Promise<number>
  /** Bytes this host has received (its uplink interface's rx counter). */
  rxBytes: (host: SwarmHost) => Promise<number>
  destroy: () => Promise<void>
}

function sh (cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
}

function shQuiet (cmd: string, args: string[]): void {
  try { execFileSync(cmd, args, { stdio: 'ignore' }) } catch { /* already gone */ }
}

function tbf (dev: string, ns: string | undefined, rateMbit: number, burstKb: number, latencyMs: number): void {
  const where = ns === undefined ? [] : ['-n', ns]
  sh('tc', [...where, 'qdisc', 'replace', 'dev', dev, 'root', 'tbf',
    'rate', `${rateMbit}mbit`, 'burst', `${burstKb}kb`, 'latency', `${latencyMs}ms`])
}

/** Creates the swarm; on any failure everything created so far is removed before rethrowing. */
export async function createSwarm (opts: SwarmOptions): Promise<Swarm> {
  const { hosts: n, rateMbit } = opts
  const burstKb = opts.burstKb ?? Math.max(MIN_BURST_KB, Math.ceil(rateMbit * 1e6 / 8 * DEFAULT_BURST_MS / 1000 / 1024))
  const latencyMs = opts.latencyMs ?? DEFAULT_LATENCY_MS
  if (!Number.isInteger(n) || n < 1 || n > MAX_HOSTS) throw new Error(`hosts must be 1..${MAX_HOSTS}`)
  if (!(rateMbit > 0)) throw new Error('rateMbit must be positive')
  if (process.getuid?.() !== 0) throw new Error('network namespaces need root')

  const tag = randomBytes(2).toString('hex')
  const subnet = opts.subnet ?? randomBytes(1)[0]!
  const bridge = `shb${tag}`
  const namespaces: string[] = []
  const children = new Set<ChildProcess>()
  let destroyed = false

  const killAll = (signal: NodeJS.Signals): void => {
    for (const c of children) {
      if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) {
        try { process.kill(c.pid, signal) } catch { /* gone */ }
      }
    }
  }
  const removeNetwork = (): void => {
    for (const ns of namespaces) shQuiet('ip', ['netns', 'del', ns])
    shQuiet('ip', ['link', 'del', bridge])
  }
  const unregister = onExitCleanup(() => { killAll('SIGKILL'); removeNetwork() })

  const destroy = async (): Promise<void> => {
    if (destroyed) return
    destroyed = true
    const live = [...children].filter(c => c.exitCode === null && c.signalCode === null)
    const exits = live.map(c => new Promise<void>(resolve => c.once('exit', () => resolve())))
    killAll('SIGTERM')
    const grace = setTimeout(() => killAll('SIGKILL'), KILL_GRACE_MS)
    await Promise.all(exits)
    clearTimeout(grace)
    removeNetwork()
    unregister()
  }

  try {
    sh('ip', ['link', 'add', bridge, 'type', 'bridge'])
    sh('ip', ['link', 'set', bridge, 'up'])
    const hosts: SwarmHost[] = []
    for (let i = 0; i < n; i++) {
      const ns = `sh${tag}-${i}`
      const brSide = `shv${tag}-${i}`
      const nsSide = `shp${tag}-${i}`
      const ip = `${SUBNET_PREFIX}.${subnet}.${i + 1}`
      sh('ip', ['netns', 'add', ns])
      namespaces.push(ns)
      sh('ip', ['link', 'add', brSide, 'type', 'veth', 'peer', 'name', nsSide])
      sh('ip', ['link', 'set', nsSide, 'netns', ns])
      sh('ip', ['-n', ns, 'link', 'set', nsSide, 'name', HOST_IF])
      sh('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', HOST_IF])
      sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up'])
      sh('ip', ['-n', ns, 'link', 'set', HOST_IF, 'up'])
      sh('ip', ['link', 'set', brSide, 'master', bridge])
      sh('ip', ['link', 'set', brSide, 'up'])
      tbf(HOST_IF, ns, rateMbit, burstKb, latencyMs) // uplink: egress from the host
      tbf(brSide, undefined, rateMbit, burstKb, latencyMs) // downlink: egress towards the host

      const exec: Launcher = (cmd, args, spawnOpts) => {
        if (destroyed) throw new Error('swarm destroyed')
        const child = localLauncher('ip', ['netns', 'exec', ns, cmd, ...args], spawnOpts)
        children.add(child)
        child.once('exit', () => children.delete(child))
        return child
      }
      const run = async (cmd: string, args: string[], spawnOpts: SpawnOptions = {}): Promise<RunResult> => {
        const child = exec(cmd, args, { ...spawnOpts, stdio: ['ignore', 'pipe', 'pipe'] })
        let stdout = ''
        let stderr = ''
        child.stdout?.on('data', (d: Buffer) => { stdout += d.toString() })
        child.stderr?.on('data', (d: Buffer) => { stderr += d.toString() })
        const code = await new Promise<number>(resolve => {
          child.once('close', (c, sig) => resolve(c ?? (sig === null ? -1 : 128)))
          child.once('error', err => { stderr += String(err); resolve(-1) })
        })
        return { code, stdout, stderr }
      }
      hosts.push({ index: i, ns, ip, exec, run })
    }

    const counter = async (host: SwarmHost, dir: 'tx' | 'rx'): Promise<number> => {
      const [link] = JSON.parse(sh('ip', ['-n', host.ns, '-j', '-s', 'link', 'show', 'dev', HOST_IF])) as
        Array<{ stats64: Record<'tx' | 'rx', { bytes: number }> }>
      if (link === undefined) throw new Error(`no ${HOST_IF} in ${host.ns}`)
      return link.stats64[dir].bytes
    }
    return {
      hosts,
      rateMbit,
      rateBytesPerSec: rateMbit * 1e6 / 8,
      txBytes: async host => await counter(host, 'tx'),
      rxBytes: async host => await counter(host, 'rx'),
      destroy
    }
  } catch (err) {
    await destroy()
    throw err
  }
}
