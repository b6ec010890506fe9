/**
 * Baseline for the swarm benchmark: BitTorrent on the same netns topology and file as shoal.
 * aria2 (Debian's `aria2c`) seeds the file on host 0 and the N other hosts download it at once;
 * the tracker is Debian's `opentracker`, inside the seed's namespace; the torrent is made with
 * `mktorrent`. What it measures: the time until the last puller holds the complete, verified
 * file, the seed's egress, and the CPU seconds of every aria2 process, taken the same way as
 * shoal's (`procCpuSeconds`, /proc/<pid>/stat).
 *
 *   node --import tsx scripts/baselines/swarm-aria2.ts [--peers 6] [--mib 256] [--rate 100] [--runs 1] [--burst-kb K] [--latency-ms L]
 *
 * How it is set up, and why:
 * - Tools: `ensureBitTorrentTools()` installs whichever of the Debian packages `aria2`,
 *   `mktorrent`, `opentracker` is missing with `apt-get install -y` (once `apt-get update` if the
 *   install fails), and says so on stdout.
 * - Torrent: one file, v1, made by `mktorrent` with the piece size libtorrent picks by itself for
 *   that size (`defaultPieceBytes`: 128 KiB for 64 MiB, 256 KiB for 248–256 MiB), so BitTorrent
 *   runs as its usual clients set it up. The only tracker is `TRACKER_PORT` on the seed's address.
 * - Tracker: `opentracker -i <seed ip> -p TRACKER_PORT -P TRACKER_PORT` (TCP and UDP on the seed's
 *   address only; `-i` must come before the ports it applies to). Debian builds it in "private"
 *   mode, so the torrent's info hash is written to a whitelist (`-w`). It chroots to its own
 *   folder (`-d`, which also holds the whitelist, read after the chroot) and drops to `nobody`.
 *   It hands out peers in the order they announce and re-announce intervals are its default
 *   (~30 min): a puller learns of the pullers that announced before it from the tracker, of the
 *   later ones from their incoming connections and from PEX.
 * - Seed: `aria2c --bt-seed-unverified --check-integrity=false`: it announces and serves at once,
 *   without re-hashing the file. It is started, and the tracker has counted it as a seeder, before
 *   t0; its CPU counts from t0.
 * - Pullers: all N `aria2c` started at t0, each downloading into its own folder
 *   (`--file-allocation=none`: no preallocation pass). aria2 checks each piece's SHA-1 as it
 *   arrives. When the last piece is in, it runs `--on-bt-download-complete`: a hook that writes
 *   `date +%s.%N` to a file. That timestamp is the puller's "done" (same clock as t0, exact to the
 *   hook's start-up, a few ms); the files are polled every `POLL_MS`. Finished pullers keep
 *   seeding, as a shoal daemon keeps serving, until every puller is done; then all are stopped and
 *   each puller's file is compared with the source by sha256 (outside the timed part).
 * - Every aria2c: `--seed-ratio=0.0` with no `--seed-time` (seed until stopped), no upload or
 *   download limits (the defaults), encryption neither required nor preferred (the defaults),
 *   PEX on (the default: it only ever names peers of this swarm). DHT and LPD off: the namespaces
 *   have no route out, so neither could reach anything outside, but the tracker already names
 *   every peer, DHT has no node to start from here, and it would keep a state file under $HOME.
 *   `--no-conf` (no ~/.aria2/aria2.conf), `--disable-ipv6` (the namespaces have IPv4 only),
 *   `--stop-with-process=<this pid>` (aria2 ends itself if this process dies).
 * - CPU: utime+stime of each aria2c process (`ip netns exec` replaces itself with aria2c, so the
 *   pid is aria2c's own; checked through /proc/<pid>/comm) read when the last puller is done. The
 *   seed's counts from t0, each puller's from its start at t0. The tracker's is reported apart.
 *
 * Needs root (network namespaces). Every process is stopped by pid; the swarm's `destroy()` (and
 * its exit, SIGINT and SIGTERM hooks) removes whatever is left.
 */
import { execFileSync, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream, existsSync, rmSync } from 'node:fs'
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, delimiter, dirname, join } from 'node:path'
import { parseArgs } from 'node:util'
import { procCpuSeconds } from '../lib/daemon-proc.js'
import { createSwarm, SHAPING_ARGS, shapingOf, type Swarm, type SwarmHost } from '../lib/netns.js'
import { isMain, loadNote, median, onExitCleanup } from '../lib/proc.js'
import { writeRandomFile } from './http-origin.js'
import { p2pLowerBound } from './swarm-http.js'

const MiB = 1024 * 1024
const GiB = 1024 * MiB
/** The tracker's TCP and UDP port on the seed's address. */
export const TRACKER_PORT = 6969
/** aria2's BitTorrent port in every namespace (each host has its own address, so one port fits all). */
const BT_PORT = 6881
/** How often the pullers' completion files and processes are checked. */
const POLL_MS = 50
const READY_TIMEOUT_MS = 30_000
/** Default limit on one run, from t0 until the last puller is done. */
const DEFAULT_RUN_TIMEOUT_MS = 60 * 60_000
const STOP_GRACE_MS = 3_000
const OUTPUT_KEEP = 4_000

/** The Debian package that brings each tool. */
const PACKAGES = { aria2c: 'aria2', mktorrent: 'mktorrent', opentracker: 'opentracker' } as const

function onPath (cmd: string): boolean {
  return (process.env.PATH ?? '/usr/bin:/bin').split(delimiter).some(d => d !== '' && existsSync(join(d, cmd)))
}

/**
 * Installs the Debian packages of whichever of aria2c, mktorrent and opentracker is missing
 * (`apt-get install -y`; if that fails, `apt-get update` once and again), saying so on stdout.
 */
export function ensureBitTorrentTools (): void {
  const missing = Object.entries(PACKAGES).filter(([cmd]) => !onPath(cmd)).map(([, pkg]) => pkg)
  if (missing.length === 0) return
  console.log(`BitTorrent baseline: ${missing.join(', ')} not installed; installing with apt-get install -y ${missing.join(' ')}`)
  const apt = (args: string[]): void => {
    execFileSync('apt-get', args, { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
  }
  try {
    apt(['install', '-y', ...missing])
  } catch {
    console.log('apt-get install failed; running apt-get update once and trying again')
    apt(['update'])
    apt(['install', '-y', ...missing])
  }
  const still = Object.keys(PACKAGES).filter(cmd => !onPath(cmd))
  if (still.length > 0) throw new Error(`${still.join(', ')} still missing after apt-get install ${missing.join(' ')}`)
}

/**
 * The piece size libtorrent chooses by itself for a torrent of `bytes` (a creator given piece
 * size 0): a power of two from 16 KiB to 16 MiB, the smallest piece p for which the size is at
 * most (2p/20)² rounded to a whole byte — a piece list (20 bytes a piece) of about 2·√size bytes.
 */
export function defaultPieceBytes (bytes: number): number {
  let piece = 16 * 1024
  while (piece < 16 * MiB && Math.round((piece / 10) ** 2) < bytes) piece *= 2
  return piece
}

export interface Torrent {
  path: string
  /** Hex SHA-1 of the info dictionary. */
  infoHash: string
  pieceBytes: number
}

/** Makes a one-file torrent of `file` announcing to `trackerUrl`, at `defaultPieceBytes`. */
export async function makeTorrent (file: string, trackerUrl: string, out: string): Promise<Torrent> {
  const pieceBytes = defaultPieceBytes((await stat(file)).size)
  await rm(out, { force: true })
  execFileSync('mktorrent', ['-d', '-l', String(Math.log2(pieceBytes)), '-a', trackerUrl, '-n', basename(file), '-o', out, file], { stdio: 'ignore' })
  const shown = execFileSync('aria2c', ['--show-files=true', out], { encoding: 'utf8' })
  const infoHash = /^Info Hash: ([0-9a-f]{40})$/m.exec(shown)?.[1]
  if (infoHash === undefined) throw new Error(`aria2c --show-files printed no info hash for ${out}:\n${shown}`)
  return { path: out, infoHash, pieceBytes }
}

/** sha256 of a file, hex. */
export async function sha256File (path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const block of createReadStream(path, { highWaterMark: 4 * MiB })) hash.update(block as Buffer)
  return hash.digest('hex')
}

/** A process started in a namespace, with the tail of its output, stopped by pid. */
class Tool {
  output = ''
  private readonly closed: Promise<number | string>

  constructor (readonly name: string, readonly child: ChildProcess) {
    const keep = (d: Buffer): void => { this.output = (this.output + d.toString()).slice(-OUTPUT_KEEP) }
    child.stdout?.on('data', keep)
    child.stderr?.on('data', keep)
    this.closed = new Promise(resolve => {
      child.once('close', (code, sig) => resolve(code ?? sig ?? -1))
      child.once('error', err => { this.output += String(err); resolve(-1) })
    })
  }

  static start (host: SwarmHost, name: string, cmd: string, args: string[], cwd?: string): Tool {
    return new Tool(name, host.exec(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(cwd !== undefined ? { cwd } : {}) }))
  }

  get running (): boolean { return this.child.exitCode === null && this.child.signalCode === null }

  /** CPU seconds (user+sys) so far; refuses a pid that is not (yet) `expected`. */
  async cpu (expected: string): Promise<number> {
    const pid = this.child.pid ?? 0
    const comm = (await readFile(`/proc/${pid}/comm`, 'utf8')).trim()
    if (comm !== expected) throw new Error(`${this.name}: pid ${pid} is ${comm}, not ${expected}: its CPU would not be ${expected}'s`)
    return (await procCpuSeconds(pid)).total
  }

  /** SIGTERM, then SIGKILL after `STOP_GRACE_MS`; waits for the exit. Idempotent. */
  async stop (): Promise<void> {
    const pid = this.child.pid
    if (!this.running || pid === undefined) return
    const kill = (sig: NodeJS.Signals): void => { try { process.kill(pid, sig) } catch { /* gone */ } }
    kill('SIGTERM')
    const timer = setTimeout(() => kill('SIGKILL'), STOP_GRACE_MS)
    await this.closed
    clearTimeout(timer)
  }
}

/** `%XX` for every byte: an info hash as a tracker query parameter. */
function urlBytes (hex: string): string {
  return hex.replace(/../g, b => `%${b}`)
}

/** GETs `url` from inside `host`'s namespace; the body, or '' when it does not answer. */
async function getInside (host: SwarmHost, url: string): Promise<string> {
  const r = await host.run('curl', ['-sS', '--max-time', '2', url])
  return r.code === 0 ? r.stdout : ''
}

/** Polls `check` every `POLL_MS` until it returns true; throws `what` past `timeoutMs`. */
async function until (check: () => Promise<boolean>, timeoutMs: number, what: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(what())
    await new Promise(resolve => setTimeout(resolve, POLL_MS))
  }
}

export interface Aria2Options {
  /** Folder for the torrent, the tracker and the pullers' downloads (emptied and reused). */
  workDir: string
  /** sha256 (hex) of the file, if already known; computed otherwise. */
  sha256?: string
  /** Called once the seed is announced, just before t0 (e.g. to drop the page cache). */
  beforeStart?: () => Promise<void> | void
  /** Called as each puller finishes, with its index in `swarm.hosts.slice(1)` and seconds since t0. */
  onDone?: (puller: number, seconds: number) => void
  /** aria2 logs at info level, and each log is copied to `<logDir>/<logPrefix>aria2-<host>.log`. */
  logDir?: string
  logPrefix?: string
  /** Limit from t0 until the last puller is done; default one hour. */
  timeoutMs?: number
}

export interface Aria2Figures {
  /** Seconds from t0 until each puller had the whole file, verified, in host order. */
  doneSeconds: number[]
  /** Bytes the seed's interface sent from t0 until the last puller was done. */
  seedEgressBytes: number
  /** CPU seconds (user+sys) until the last puller was done: the seed's from t0, each puller's. */
  cpuSeconds: { seed: number, pullers: number[], tracker: number }
  pieceBytes: number
}

/**
 * One BitTorrent run on `swarm`: host 0 runs the tracker and seeds `file`; every other host
 * downloads it with aria2c, all started at once. Resolves when every puller has the file and its
 * sha256 matches; every process it started is stopped by then, on failure too.
 */
export async function measureAria2 (swarm: Swarm, file: string, opts: Aria2Options): Promise<Aria2Figures> {
  const [seedHost, ...peerHosts] = swarm.hosts
  if (seedHost === undefined || peerHosts.length === 0) throw new Error('aria2 baseline: a swarm needs a seed and at least one puller')
  const work = opts.workDir
  await rm(work, { recursive: true, force: true })
  await mkdir(work, { recursive: true })
  const sha = opts.sha256 ?? await sha256File(file)
  const bytes = (await stat(file)).size
  const trackerUrl = `http://${seedHost.ip}:${TRACKER_PORT}/announce`
  const torrent = await makeTorrent(file, trackerUrl, join(work, 'bench.torrent'))
  const logs = opts.logDir !== undefined
  const logOf = (name: string): string => join(work, `${name}.log`)
  const common = (name: string): string[] => [
    '--no-conf=true', '--disable-ipv6=true', `--stop-with-process=${process.pid}`,
    '--enable-dht=false', '--enable-dht6=false', '--bt-enable-lpd=false', '--enable-peer-exchange=true',
    `--listen-port=${BT_PORT}`, '--file-allocation=none', '--seed-ratio=0.0',
    '--max-overall-upload-limit=0', '--max-overall-download-limit=0',
    '--summary-interval=0', '--show-console-readout=false', '--download-result=hide', '--console-log-level=error',
    `--log=${logOf(name)}`, `--log-level=${logs ? 'info' : 'warn'}`
  ]

  // The tracker: chrooted to its folder, which must be searchable by `nobody`.
  const trackerDir = join(work, 'tracker')
  await mkdir(trackerDir)
  await chmod(trackerDir, 0o755)
  await writeFile(join(trackerDir, 'whitelist'), torrent.infoHash + '\n', { mode: 0o644 })
  const tools: Tool[] = []
  const start = (host: SwarmHost, name: string, cmd: string, args: string[], cwd?: string): Tool => {
    const t = Tool.start(host, name, cmd, args, cwd)
    tools.push(t)
    return t
  }
  const failure = (t: Tool, what: string): Error => new Error(`aria2 baseline: ${t.name} ${what}:\n${t.output}${tailOf(logOf(t.name))}`)
  try {
    const tracker = start(seedHost, 'tracker', 'opentracker',
      ['-i', seedHost.ip, '-p', String(TRACKER_PORT), '-P', String(TRACKER_PORT), '-d', trackerDir, '-w', '/whitelist'])
    const base = `http://${seedHost.ip}:${TRACKER_PORT}`
    const q = `info_hash=${urlBytes(torrent.infoHash)}`
    // Ready once it answers an announce for this hash (a 'stopped' one, which adds no peer): the
    // whitelist is loaded by a thread after start-up, and a refused seed would not retry for long.
    await until(async () => {
      if (!tracker.running) throw failure(tracker, 'exited')
      return (await getInside(seedHost, `${base}/announce?${q}&peer_id=-PROBE-0000000000000&port=1&uploaded=0&downloaded=0&left=0&event=stopped&compact=1`)).includes('8:interval')
    }, READY_TIMEOUT_MS, () => `aria2 baseline: the tracker did not accept ${torrent.infoHash} within ${READY_TIMEOUT_MS} ms:\n${tracker.output}`)

    const seed = start(seedHost, 'seed', 'aria2c', [...common('seed'), `--dir=${dirname(file)}`,
      '--bt-seed-unverified=true', '--check-integrity=false', torrent.path])
    await until(async () => {
      if (!seed.running) throw failure(seed, 'exited')
      const m = /8:completei(\d+)e/.exec(await getInside(seedHost, `${base}/scrape?${q}`))
      return Number(m?.[1] ?? 0) >= 1
    }, READY_TIMEOUT_MS, () => `aria2 baseline: the seed had not announced itself to the tracker within ${READY_TIMEOUT_MS} ms:\n${seed.output}${tailOf(logOf('seed'))}`)

    const dirs = await Promise.all(peerHosts.map(async (_h, i) => {
      const dir = join(work, `peer${i}`)
      await mkdir(join(dir, 'data'), { recursive: true })
      const hook = join(dir, 'on-complete.sh')
      await writeFile(hook, `#!/bin/sh\n# aria2 runs this once every piece is in and checked, before seeding.\ndate +%s.%N > '${dir}/done.tmp' && mv '${dir}/done.tmp' '${dir}/done'\n`, { mode: 0o755 })
      return dir
    }))
    await opts.beforeStart?.()

    const seedCpu0 = await seed.cpu('aria2c')
    const tx0 = await swarm.txBytes(seedHost)
    const t0 = Date.now()
    const pullers = peerHosts.map((h, i) => start(h, `peer${i}`, 'aria2c', [...common(`peer${i}`),
      `--dir=${join(dirs[i]!, 'data')}`, `--on-bt-download-complete=${join(dirs[i]!, 'on-complete.sh')}`, torrent.path]))
    const done: Array<number | undefined> = pullers.map(() => undefined)
    await until(async () => {
      for (const [i, p] of pullers.entries()) {
        if (done[i] !== undefined) continue
        const at = await readFile(join(dirs[i]!, 'done'), 'utf8').catch(() => undefined)
        if (at !== undefined) {
          done[i] = Number(at) - t0 / 1000
          opts.onDone?.(i, done[i])
        } else if (!p.running) {
          throw failure(p, 'exited before it had the whole file')
        }
      }
      if (!seed.running) throw failure(seed, 'exited while pullers were downloading')
      return done.every(d => d !== undefined)
    }, opts.timeoutMs ?? DEFAULT_RUN_TIMEOUT_MS, () => `aria2 baseline: pullers ${done.flatMap((d, i) => d === undefined ? [i] : []).join(', ')} not done after ${opts.timeoutMs ?? DEFAULT_RUN_TIMEOUT_MS} ms`)

    const figures: Aria2Figures = {
      doneSeconds: done.map(d => d!),
      seedEgressBytes: (await swarm.txBytes(seedHost)) - tx0,
      cpuSeconds: {
        seed: (await seed.cpu('aria2c')) - seedCpu0,
        pullers: await Promise.all(pullers.map(async p => await p.cpu('aria2c'))),
        tracker: await tracker.cpu('opentracker')
      },
      pieceBytes: torrent.pieceBytes
    }
    for (const t of [...pullers, seed]) await t.stop()
    for (const [i, dir] of dirs.entries()) {
      const got = join(dir, 'data', basename(file))
      const size = (await stat(got).catch(() => undefined))?.size
      if (size !== bytes) throw new Error(`aria2 baseline: peer${i} reported done but holds ${size ?? 'no'} bytes of ${bytes} at ${got}`)
      const digest = await sha256File(got)
      if (digest !== sha) throw new Error(`aria2 baseline: peer${i}'s file has sha256 ${digest}, the source ${sha}`)
      await rm(join(dir, 'data'), { recursive: true, force: true })
    }
    return figures
  } finally {
    for (const t of tools) await t.stop()
    if (opts.logDir !== undefined) {
      await mkdir(opts.logDir, { recursive: true })
      for (const t of tools) {
        const from = t.name === 'tracker' ? undefined : logOf(t.name)
        const text = (from !== undefined ? await readFile(from, 'utf8').catch(() => '') : '') + t.output
        await writeFile(join(opts.logDir, `${opts.logPrefix ?? ''}aria2-${t.name}.log`), text)
      }
    }
  }
}

/** The last lines of an aria2 log, for an error message ('' if there is none). */
function tailOf (path: string): string {
  try {
    const text = execFileSync('tail', ['-n', '20', path], { encoding: 'utf8' })
    return text === '' ? '' : `\n${path} (last lines):\n${text}`
  } catch {
    return ''
  }
}

/** CPU seconds of all aria2 processes (seed and pullers, not the tracker) per GiB delivered. */
export function aria2CpuPerGiB (f: Aria2Figures, fileBytes: number): number {
  const total = f.cpuSeconds.seed + f.cpuSeconds.pullers.reduce((s, c) => s + c, 0)
  return total / (f.doneSeconds.length * fileBytes / GiB)
}

async function main (): Promise<void> {
  const { values: a } = parseArgs({
    options: {
      peers: { type: 'string', default: '6' },
      mib: { type: 'string', default: '256' },
      rate: { type: 'string', default: '100' },
      runs: { type: 'string', default: '1' },
      ...SHAPING_ARGS
    }
  })
  const peers = Number(a.peers)
  const bytes = Number(a.mib) * MiB
  const runs = Number(a.runs)
  if (!Number.isInteger(peers) || peers < 1 || !(bytes > 0) || !Number.isInteger(runs) || runs < 1) {
    console.error('usage: swarm-aria2.ts [--peers 6] [--mib 256] [--rate 100] [--runs 1] [--burst-kb K] [--latency-ms L]')
    process.exit(2)
  }
  ensureBitTorrentTools()
  const dir = await mkdtemp(join(tmpdir(), 'shoal-swarm-aria2-'))
  const unregister = onExitCleanup(() => { rmSync(dir, { recursive: true, force: true }) })
  try {
    const file = join(dir, 'src', 'model.bin')
    await mkdir(dirname(file))
    await writeRandomFile(file, bytes)
    const sha256 = await sha256File(file)
    const times: number[] = []
    for (let r = 1; r <= runs; r++) {
      const swarm = await createSwarm({ hosts: peers + 1, rateMbit: Number(a.rate), ...shapingOf(a) })
      try {
        const u = swarm.rateBytesPerSec
        const bound = p2pLowerBound(bytes, u, Array.from({ length: peers }, () => u))
        const f = await measureAria2(swarm, file, { workDir: join(dir, 'work'), sha256 })
        const last = Math.max(...f.doneSeconds)
        times.push(last / bound)
        console.log(`run ${r}: pullers done at ${f.doneSeconds.map(s => s.toFixed(1)).join(', ')} s; last ${last.toFixed(1)} s = ${(last / bound).toFixed(2)}× bound; ` +
          `seed egress ${(f.seedEgressBytes / bytes).toFixed(2)}×F; CPU ${aria2CpuPerGiB(f, bytes).toFixed(2)} s/GiB delivered ` +
          `(seed ${f.cpuSeconds.seed.toFixed(1)} s, pullers ${f.cpuSeconds.pullers.map(c => c.toFixed(1)).join(' ')}, tracker ${f.cpuSeconds.tracker.toFixed(2)}); ` +
          `pieces ${f.pieceBytes / 1024} KiB; ${loadNote()}`)
      } finally {
        await swarm.destroy()
      }
    }
    console.log(`aria2 swarm: N=${peers} pullers + seed, F=${a.mib} MiB, ${a.rate} Mbit tbf up/down: last done ${median(times).toFixed(2)}× the P2P bound (median of ${runs})`)
  } finally {
    await rm(dir, { recursive: true, force: true })
    unregister()
  }
}

if (isMain(import.meta.url)) await main()
