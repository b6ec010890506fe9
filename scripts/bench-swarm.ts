/**
 * Swarm benchmark (issue 3, benchmark 2): N pullers and one seed in Linux network namespaces on
 * one bridge, each host's uplink and downlink shaped with tbf, all N pulling one file at once.
 * Each cell of a matrix (link rate × file) is run by three systems in turn, each on a fresh swarm:
 * - shoal: daemons, the seed having added the file; every puller pulls it through its RPC;
 * - BitTorrent: aria2 with its own tracker in the seed's namespace (baselines/swarm-aria2.ts);
 * - a full TCP mesh: every byte available everywhere from the start, the best any scheme can do
 *   over TCP on these links (baselines/swarm-mesh.ts).
 * Per cell it prints, as medians over runs: the time until the last puller is done, as a multiple
 * of the P2P lower bound max(F/u_seed, N·F/(u_seed + Σu_peers)), for all three; the seed's egress
 * as a multiple of F (its interface's tx counter) for shoal and aria2; and the CPU seconds
 * (user+sys, /proc/<pid>/stat) of all daemons, seed and pullers, per GiB delivered (N·F), for
 * shoal and aria2. Needs root; every process, namespace and temporary folder is removed at the
 * end, also on failure, SIGINT and SIGTERM.
 *
 *   sudo npm run bench:swarm -- [--cells 25:st256,100:bin256] [--runs 1] [--peers 6]
 *     [--skip-shoal] [--skip-aria2] [--skip-mesh] [--keep-page-cache]
 *     [--strategy weighted] [--slots K] [--logs <dir>] [--verbose] [--burst-kb K] [--latency-ms L]
 *     [--transfer '{"encrypt":false}']
 *   sudo npm run bench:swarm -- --rate 100 --mib 64      # one cell: 100 Mbit/s, 64 MiB safetensors
 *
 * `--cells`: comma-separated `<Mbit/s>:<file>`, the file being `st<MiB>` (a llama-shaped
 * safetensors model of about that size, its bf16 tensors random bytes), `wt<MiB>` (a safetensors
 * model of bf16 tensors drawn like trained weights, `scripts/lib/weights.ts`: what compression on
 * the wire is for) or `bin<MiB>` (random bytes, no tensor table, `model.bin`).
 * Default: every cell of {25, 100} Mbit/s × {st256, st64, bin256}. Without `--cells`, `--rate`
 * and `--mib` name one safetensors cell (defaults 100 and 256).
 *
 * Fairness, per run of a cell: each system gets a fresh swarm, the same file (on disk, under the
 * system's temporary folder) and the same t0 rule: the seed is ready (shoal: the file added;
 * aria2: the tracker counts it as a seeder), shoal's pullers are running (aria2's start at t0),
 * the page cache is dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`, unless
 * `--keep-page-cache`), then t0. A puller is done when it holds the whole verified file (shoal:
 * its pull returns; aria2: its completion hook's timestamp). Finished pullers keep serving until
 * the last one is done. CPU is read then: the seed's counts from t0, shoal's pullers' from t0,
 * aria2's pullers' from their start at t0.
 *
 * `--skip-*`: leave a system out (quicker checks). `--logs <dir>`: daemons log at debug level and
 * aria2 at info level, written to `<dir>/<cell>-run<r>-<host>.log`, plus each host's TCP counters.
 * `--verbose`: shoal's per-second seed and puller rates and what each puller got from whom.
 * `--burst-kb`, `--latency-ms`: the tbf bucket depth and queue length (see scripts/lib/netns.ts).
 * `--transfer`: JSON merged into every daemon's `transfer` config (e.g. `{"encrypt":false}`,
 * `{"compress":"off"}` to measure without blocks compressed on the wire).
 */
import '../src/polyfill.js'
import { execFileSync } from 'node:child_process'
import { rmSync } from 'node:fs'
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { ShoalClient } from '../src/rpc/client.js'
import { writeRandomFile } from './baselines/http-origin.js'
import { aria2CpuPerGiB, ensureBitTorrentTools, measureAria2, sha256File } from './baselines/swarm-aria2.js'
import { p2pLowerBound } from './baselines/swarm-http.js'
import { measureMesh } from './baselines/swarm-mesh.js'
import { DaemonProcess, startInNamespace } from './lib/daemon-proc.js'
import { createSwarm, SHAPING_ARGS, shapingOf, type Swarm } from './lib/netns.js'
import { dropPageCache, loadNote, median, onExitCleanup } from './lib/proc.js'
import { llamaTensors, writeSafetensors } from './lib/synth.js'
import { weightSafetensors } from './lib/weights.js'

const MiB = 1024 * 1024
const GiB = 1024 * MiB
const PORT = 4077
const DEFAULT_CELLS = '25:st256,25:st64,25:bin256,100:st256,100:st64,100:bin256'
/** How often a progress line is printed while a system is transferring. */
const PROGRESS_MS = 15_000
/** Limit on one system's transfer in one run (a stuck pull fails the benchmark instead of hanging it). */
const RUN_TIMEOUT_MS = 60 * 60_000

interface Cell {
  /** As given: `<Mbit/s>:<st|bin><MiB>`. */
  spec: string
  rateMbit: number
  kind: 'st' | 'wt' | 'bin'
  mib: number
}

const KIND_NAMES: Record<Cell['kind'], string> = { st: 'safetensors', wt: 'bf16 weights', bin: 'no tensor table' }

function parseCell (spec: string): Cell {
  const m = /^(\d+(?:\.\d+)?):(st|wt|bin)(\d+)$/.exec(spec.trim())
  if (m === null || !(Number(m[1]) > 0) || !(Number(m[3]) > 0)) {
    throw new Error(`bad cell "${spec}": write <Mbit/s>:st<MiB> (safetensors), <Mbit/s>:wt<MiB> (bf16 weights drawn like trained ones) or <Mbit/s>:bin<MiB> (random bytes), e.g. 100:st64`)
  }
  return { spec: spec.trim(), rateMbit: Number(m[1]), kind: m[2] as Cell['kind'], mib: Number(m[3]) }
}

/** Llama-shaped tensors of about `mib` MiB: the 256 MiB shape of earlier figures, a smaller vocabulary below 200 MiB. */
function modelTensors (mib: number): ReturnType<typeof llamaTensors> {
  return llamaTensors(mib * MiB, mib >= 200 ? { hidden: 1024 } : { hidden: 768, vocab: 8000 })
}

/** Blocks a daemon compressed for the wire and sent again from its cache (`shoal_codec_blocks_*_total`). */
async function codecCounts (d: DaemonProcess): Promise<{ encoded: number, reused: number }> {
  const text = await new ShoalClient({ socketPath: d.socket }).metrics()
  const value = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? 0)
  return { encoded: value('shoal_codec_blocks_encoded_total'), reused: value('shoal_codec_blocks_reused_total') }
}

/** Chunk bytes a daemon has sent to peers in all (its `shoal_bytes_sent_total`, from the RPC's /metrics). */
async function chunkBytesSent (d: DaemonProcess): Promise<number> {
  const text = await new ShoalClient({ socketPath: d.socket }).metrics()
  let sum = 0
  for (const m of text.matchAll(/^shoal_bytes_sent_total\{[^}]*\} (\S+)$/gm)) sum += Number(m[1])
  return sum
}

const { values } = parseArgs({
  options: {
    peers: { type: 'string', default: '6' },
    cells: { type: 'string' },
    mib: { type: 'string' },
    rate: { type: 'string' },
    runs: { type: 'string', default: '1' },
    strategy: { type: 'string', default: 'weighted' },
    verbose: { type: 'boolean', default: false },
    slots: { type: 'string' },
    transfer: { type: 'string' },
    logs: { type: 'string' },
    'skip-shoal': { type: 'boolean', default: false },
    'skip-aria2': { type: 'boolean', default: false },
    'skip-mesh': { type: 'boolean', default: false },
    'keep-page-cache': { type: 'boolean', default: false },
    ...SHAPING_ARGS
  }
})
const N = Number(values.peers)
const extraTransfer = values.transfer !== undefined ? JSON.parse(values.transfer) as Record<string, unknown> : {}
const runs = Number(values.runs)
const cells = (values.cells ?? (values.mib !== undefined || values.rate !== undefined
  ? `${values.rate ?? 100}:st${values.mib ?? 256}`
  : DEFAULT_CELLS)).split(',').filter(s => s.trim() !== '').map(parseCell)
const systems = { shoal: values['skip-shoal'] !== true, aria2: values['skip-aria2'] !== true, mesh: values['skip-mesh'] !== true }
if (!Number.isInteger(N) || N < 1 || !Number.isInteger(runs) || runs < 1 || cells.length === 0 || !Object.values(systems).some(Boolean)) {
  console.error('usage: bench-swarm.ts [--cells 25:st256,100:bin256] [--runs 1] [--peers 6] [--skip-shoal] [--skip-aria2] [--skip-mesh] ...; at least one system, one cell, one run')
  process.exit(2)
}
if (systems.aria2) ensureBitTorrentTools()

/** What one system did in one run of a cell. */
interface Outcome {
  /** Seconds from t0 until the last puller was done. */
  last: number
  /** Seed egress as a multiple of F (shoal and aria2): bytes on the seed's interface. */
  egress?: number
  /** Chunk bytes the seed sent as a multiple of F, counted raw (before compression; shoal). */
  rawEgress?: number
  /** CPU seconds of all daemons per GiB delivered (shoal and aria2). */
  cpuPerGiB?: number
}

interface CellResult {
  cell: Cell
  fileBytes: number
  bound: number
  runs: Array<{ shoal?: Outcome, aria2?: Outcome, mesh?: Outcome }>
}

const root = await mkdtemp(join(tmpdir(), 'shoal-bench-swarm-'))
const unregisterRoot = onExitCleanup(() => { rmSync(root, { recursive: true, force: true }) })
const results: CellResult[] = []
const dropCache = (): void => { if (values['keep-page-cache'] !== true) dropPageCache() }
const logName = (cell: Cell, run: number): string => `${cell.spec.replace(':', '-')}-run${run}-`

/** Prints a progress line every `PROGRESS_MS`: how much of N·F the pullers' interfaces have received. */
function progress (label: string, swarm: Swarm, total: number): () => void {
  const t0 = Date.now()
  const pullers = swarm.hosts.slice(1)
  let rx0: number | undefined
  const rx = async (): Promise<number> => (await Promise.all(pullers.map(async h => await swarm.rxBytes(h)))).reduce((s, b) => s + b, 0)
  void rx().then(b => { rx0 = b }, () => {})
  const timer = setInterval(() => {
    void rx().then(b => {
      const got = b - (rx0 ?? b)
      console.log(`  ${label} ${((Date.now() - t0) / 1000).toFixed(0)} s: pullers have received ${(100 * got / total).toFixed(0)}% of N·F (interface bytes)`)
    }, () => {}) // a sample racing the teardown of a finished run is dropped
  }, PROGRESS_MS)
  return () => clearInterval(timer)
}

/** One shoal run: a fresh swarm, a seed that adds `folder`, N pullers pulling it at once. */
async function runShoal (cell: Cell, run: number, folder: string, fileBytes: number, label: string): Promise<Outcome> {
  const swarm = await createSwarm({ hosts: N + 1, rateMbit: cell.rateMbit, ...shapingOf(values) })
  const homes = join(root, 'shoal')
  const daemons: DaemonProcess[] = []
  const names = new Map<DaemonProcess, string>()
  const keepLogs = async (ds: DaemonProcess[]): Promise<void> => {
    if (values.logs === undefined) return
    await mkdir(values.logs, { recursive: true })
    for (const d of ds) await writeFile(join(values.logs, `${logName(cell, run)}${names.get(d) ?? 'daemon'}.log`), d.stderr)
  }
  try {
    const u = swarm.rateBytesPerSec
    const [seedHost, ...peerHosts] = swarm.hosts
    if (seedHost === undefined) throw new Error('no hosts')
    const config = JSON.stringify({ transfer: { strategy: values.strategy, ...(values.slots !== undefined ? { uploadSlots: Number(values.slots) } : {}), ...extraTransfer } })
    const start = async (name: string, ip: string, ns: string, peers: string[]): Promise<DaemonProcess> => {
      const home = join(homes, name)
      await mkdir(home, { recursive: true })
      await writeFile(join(home, 'config.json'), config)
      const env = values.logs !== undefined ? { SHOAL_LOG_LEVEL: 'debug' } : {}
      return await startInNamespace(home, { ip, ns }, PORT, peers, env, d => { names.set(d, name); daemons.push(d) })
    }
    const seed = await start('seed', seedHost.ip, seedHost.ns, [])
    const { version, structure } = await seed.json<{ version: string, structure: { totalSize: number } }>(['add', folder, '--name', 'bench'])
    if (structure.totalSize !== fileBytes) throw new Error(`shoal counts ${structure.totalSize} bytes in ${folder}, the file has ${fileBytes}: the systems would not move the same bytes`)
    const { peerId } = await seed.json<{ peerId: string }>(['id'])
    const seedAddr = `/ip4/${seedHost.ip}/tcp/${PORT}/p2p/${peerId}`
    const pullers = await Promise.all(peerHosts.map(async (h, i) => await start(`peer${i}`, h.ip, h.ns, [seedAddr])))
    dropCache()

    const all = [seed, ...pullers]
    const cpu0 = await Promise.all(all.map(async d => await d.cpuSeconds()))
    const tx0 = await swarm.txBytes(seedHost)
    const chunks0 = await chunkBytesSent(seed)
    const t0 = performance.now()
    const timeline: string[] = []
    const sampler = values.verbose === true ? (() => {
      let prevTx = 0
      let prevRx = 0
      return setInterval(() => {
        void (async () => {
          const tx = await swarm.txBytes(seedHost)
          let rx = 0
          for (const h of peerHosts) rx += await swarm.rxBytes(h)
          timeline.push(`${((performance.now() - t0) / 1000).toFixed(0)}s seed out ${((tx - prevTx) / 1e6).toFixed(1)} MB/s, pullers in ${((rx - prevRx) / 1e6).toFixed(1)} MB/s`)
          prevTx = tx
          prevRx = rx
        })().catch(() => {}) // a sample racing the teardown of a failed run is dropped
      }, 1000)
    })() : undefined
    const stopProgress = progress(label, swarm, N * fileBytes)
    const signal = AbortSignal.timeout(RUN_TIMEOUT_MS)
    // A failed pull must surface as itself: stop sampling before the namespaces are removed.
    const done = await Promise.all(pullers.map(async (d, i) => {
      await new ShoalClient({ socketPath: d.socket }).pull({ ref: `bench@${version}` }, undefined, signal)
      const s = (performance.now() - t0) / 1000
      console.log(`  ${label} peer${i} done at ${s.toFixed(1)} s`)
      return s
    })).finally(() => { clearInterval(sampler); stopProgress() })
    const last = Math.max(...done)
    const cpu = await Promise.all(all.map(async (d, i) => {
      const c = await d.cpuSeconds()
      return { user: c.user - cpu0[i]!.user, sys: c.sys - cpu0[i]!.sys }
    }))
    const rss = await Promise.all(all.map(async d => Math.round(await d.peakRss() / MiB)))
    const sent = (await swarm.txBytes(seedHost)) - tx0
    const chunkSent = (await chunkBytesSent(seed)) - chunks0
    const codecs = await Promise.all(all.map(async d => await codecCounts(d)))
    if (values.verbose === true) {
      console.log(timeline.join('\n'))
      for (const [i, d] of pullers.entries()) {
        const rows = await d.json<Array<{ peerId: string, bytesReceived: number }>>(['peers'])
        console.log(`peer${i} received: ${rows.map(r => `${r.peerId === peerId ? 'seed' : r.peerId.slice(-4)}=${(r.bytesReceived / MiB).toFixed(0)}`).join(' ')}`)
      }
    }
    const bound = p2pLowerBound(fileBytes, u, peerHosts.map(() => u))
    const cpuPerGiB = cpu.reduce((s, c) => s + c.user + c.sys, 0) / (N * fileBytes / GiB)
    const split = cpu.map(c => `${c.user.toFixed(1)}+${c.sys.toFixed(1)}`)
    console.log(`${label}: last ${last.toFixed(1)} s = ${(last / bound).toFixed(2)}× bound; seed egress ${(sent / fileBytes).toFixed(2)}×F ` +
      `(chunk bytes ${(chunkSent / fileBytes).toFixed(2)}×F); CPU ${cpuPerGiB.toFixed(2)} s/GiB delivered (user+sys seed ${split[0]}, pullers ${split.slice(1).join(' ')}); ` +
      `peak RSS MiB seed ${rss[0]}, pullers ${rss.slice(1).join(' ')}; ` +
      `blocks compressed for the wire seed ${codecs[0]!.encoded} (${codecs[0]!.reused} sent again), pullers ${codecs.slice(1).map(c => `${c.encoded} (${c.reused})`).join(' ')}; ${loadNote()}`)
    if (values.logs !== undefined) {
      // TCP's view of the run: retransmissions and timeouts per host.
      const stats = await Promise.all(swarm.hosts.map(async h => `${h.ns}\n${(await h.run('nstat', ['-asz'])).stdout}`))
      await mkdir(values.logs, { recursive: true })
      await writeFile(join(values.logs, `${logName(cell, run)}nstat.txt`), stats.join('\n'))
    }
    return { last, egress: sent / fileBytes, rawEgress: chunkSent / fileBytes, cpuPerGiB }
  } finally {
    for (const d of daemons) await d.stop().catch(() => {})
    await keepLogs(daemons).catch(() => {})
    await swarm.destroy()
    await rm(homes, { recursive: true, force: true })
  }
}

/** One BitTorrent run: a fresh swarm, aria2 seeding `file` with its tracker, N aria2 pullers. */
async function runAria2 (cell: Cell, run: number, file: string, sha256: string, fileBytes: number, label: string): Promise<Outcome> {
  const swarm = await createSwarm({ hosts: N + 1, rateMbit: cell.rateMbit, ...shapingOf(values) })
  let stopProgress = (): void => {}
  try {
    const u = swarm.rateBytesPerSec
    const bound = p2pLowerBound(fileBytes, u, swarm.hosts.slice(1).map(() => u))
    const f = await measureAria2(swarm, file, {
      workDir: join(root, 'aria2'),
      sha256,
      timeoutMs: RUN_TIMEOUT_MS,
      beforeStart: () => { dropCache(); stopProgress = progress(label, swarm, N * fileBytes) },
      onDone: (i, s) => console.log(`  ${label} peer${i} done at ${s.toFixed(1)} s`),
      ...(values.logs !== undefined ? { logDir: values.logs, logPrefix: logName(cell, run) } : {})
    }).finally(() => stopProgress())
    const last = Math.max(...f.doneSeconds)
    const cpuPerGiB = aria2CpuPerGiB(f, fileBytes)
    console.log(`${label}: last ${last.toFixed(1)} s = ${(last / bound).toFixed(2)}× bound; seed egress ${(f.seedEgressBytes / fileBytes).toFixed(2)}×F; ` +
      `CPU ${cpuPerGiB.toFixed(2)} s/GiB delivered (seed ${f.cpuSeconds.seed.toFixed(1)}, pullers ${f.cpuSeconds.pullers.map(c => c.toFixed(1)).join(' ')}; ` +
      `tracker ${f.cpuSeconds.tracker.toFixed(2)}, not counted); pieces ${f.pieceBytes / 1024} KiB; every file's sha256 matches; ${loadNote()}`)
    return { last, egress: f.seedEgressBytes / fileBytes, cpuPerGiB }
  } finally {
    await swarm.destroy()
    await rm(join(root, 'aria2'), { recursive: true, force: true })
  }
}

/** One full-mesh run on a fresh swarm. */
async function runMesh (cell: Cell, fileBytes: number, label: string): Promise<Outcome> {
  const swarm = await createSwarm({ hosts: N + 1, rateMbit: cell.rateMbit, ...shapingOf(values) })
  try {
    const u = swarm.rateBytesPerSec
    const bound = p2pLowerBound(fileBytes, u, swarm.hosts.slice(1).map(() => u))
    // No progress lines: its t0 is inside measureMesh, and it runs close to the bound.
    console.log(`  ${label} running (about ${(1.2 * bound).toFixed(0)} s)`)
    const last = await measureMesh(swarm, fileBytes)
    console.log(`${label}: last ${last.toFixed(1)} s = ${(last / bound).toFixed(2)}× bound; ${loadNote()}`)
    return { last }
  } finally {
    await swarm.destroy()
  }
}

/** Writes the cell's file once: `<root>/files/<st|bin><MiB>/model.{safetensors,bin}`. */
async function cellFile (cell: Cell): Promise<{ folder: string, file: string, bytes: number, sha256: string }> {
  const folder = join(root, 'files', `${cell.kind}${cell.mib}`)
  const file = join(folder, cell.kind === 'bin' ? 'model.bin' : 'model.safetensors')
  const known = await stat(file).catch(() => undefined)
  if (known === undefined) {
    await mkdir(folder, { recursive: true })
    if (cell.kind === 'st') await writeSafetensors(file, modelTensors(cell.mib))
    else if (cell.kind === 'wt') await writeFile(file, weightSafetensors(Array.from({ length: Math.max(1, cell.mib / 16) }, (_, i) => ({ name: `model.layers.${i}.mlp.weight`, dtype: 'BF16' as const, bytes: Math.min(16, cell.mib) * MiB, seed: i + 1 }))))
    else await writeRandomFile(file, cell.mib * MiB)
  }
  return { folder, file, bytes: (await stat(file)).size, sha256: await sha256File(file) }
}

/** The type of the file system `path` is on (ext2/ext3, tmpfs, …), as `stat -f` names it. */
function filesystemOf (path: string): string {
  try { return execFileSync('stat', ['-f', '-c', '%T', path], { encoding: 'utf8' }).trim() } catch { return 'an unknown file system' }
}

const fmt = (xs: number[], digits = 2): string => xs.length === 0 ? '—' : median(xs).toFixed(digits)
const paired = (rs: CellResult['runs'], a: 'shoal', b: 'aria2' | 'mesh', key: 'last' | 'cpuPerGiB'): number[] =>
  rs.flatMap(r => r[a]?.[key] !== undefined && r[b]?.[key] !== undefined ? [r[a][key] / r[b][key]] : [])

function printTable (): void {
  const head = ['cell', 'F MiB', 'bound s', 'shoal last ×bound', 'aria2 last ×bound', 'mesh last ×bound', 'shoal/aria2', 'shoal/mesh',
    'seed egress ×F (shoal, aria2)', 'shoal seed chunk bytes ×F', 'CPU s/GiB (shoal, aria2)', 'CPU shoal/aria2']
  const rows = results.map(({ cell, fileBytes, bound, runs: rs }) => {
    const col = (s: 'shoal' | 'aria2' | 'mesh', key: keyof Outcome): number[] => rs.flatMap(r => r[s]?.[key] !== undefined ? [r[s][key]] : [])
    const over = (s: 'shoal' | 'aria2' | 'mesh'): number[] => col(s, 'last').map(x => x / bound)
    return [`${cell.rateMbit} Mbit/s ${KIND_NAMES[cell.kind]} (${cell.spec})`,
      (fileBytes / MiB).toFixed(1), bound.toFixed(1), fmt(over('shoal')), fmt(over('aria2')), fmt(over('mesh')),
      fmt(paired(rs, 'shoal', 'aria2', 'last')), fmt(paired(rs, 'shoal', 'mesh', 'last')),
      `${fmt(col('shoal', 'egress'))}, ${fmt(col('aria2', 'egress'))}`, fmt(col('shoal', 'rawEgress')), `${fmt(col('shoal', 'cpuPerGiB'))}, ${fmt(col('aria2', 'cpuPerGiB'))}`,
      fmt(paired(rs, 'shoal', 'aria2', 'cpuPerGiB'))]
  })
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map(r => r[i]!.length)))
  const line = (r: string[]): string => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`
  console.log('')
  console.log(`swarm benchmark: ${N} pullers + 1 seed, tbf up and down per host, shoal strategy ${values.strategy}; medians of ${runs} run(s) per cell; ` +
    `files on ${filesystemOf(root)} (${root}); page cache ${values['keep-page-cache'] === true ? 'kept' : 'dropped before each t0'}; ${loadNote()}`)
  console.log(line(head))
  console.log(`| ${widths.map(w => '-'.repeat(w)).join(' | ')} |`)
  for (const r of rows) console.log(line(r))
  console.log('bound = max(F/u_seed, N·F/(u_seed+Σu_peers)); ratios (shoal/aria2, shoal/mesh, CPU) are medians of per-run ratios.')
  console.log('Goal for shoal: last ≤ aria2 in every cell and ≤ 1.1× the mesh at 100 Mbit/s; seed egress ≤ 1.1×F; CPU ≤ 1.5× aria2.')
}

try {
  console.log(`swarm benchmark: cells ${cells.map(c => c.spec).join(', ')}; ${runs} run(s) each; systems ${Object.entries(systems).filter(([, on]) => on).map(([s]) => s).join(', ')}; ${loadNote()}`)
  for (const cell of cells) {
    const src = await cellFile(cell)
    const u = cell.rateMbit * 1e6 / 8
    const bound = p2pLowerBound(src.bytes, u, Array.from({ length: N }, () => u))
    const result: CellResult = { cell, fileBytes: src.bytes, bound, runs: [] }
    results.push(result)
    console.log(`\ncell ${cell.spec}: ${(src.bytes / MiB).toFixed(1)} MiB ${KIND_NAMES[cell.kind]} at ${cell.rateMbit} Mbit/s, bound ${bound.toFixed(1)} s`)
    for (let run = 1; run <= runs; run++) {
      const outcome: CellResult['runs'][number] = {}
      result.runs.push(outcome)
      const label = (s: string): string => `[${cell.spec} run ${run}/${runs} ${s}]`
      if (systems.shoal) outcome.shoal = await runShoal(cell, run, src.folder, src.bytes, label('shoal'))
      if (systems.aria2) outcome.aria2 = await runAria2(cell, run, src.file, src.sha256, src.bytes, label('aria2'))
      if (systems.mesh) outcome.mesh = await runMesh(cell, src.bytes, label('mesh'))
    }
  }
} finally {
  if (results.length > 0) printTable()
  await rm(root, { recursive: true, force: true })
  unregisterRoot()
}
