/**
 * Streaming read benchmark (issue 18): a reader on a new node reads a safetensors version while it
 * is pulled, against a full pull followed by a read of the same bytes, measured in the same run.
 *
 * Swarm: `--seeds` seeds (3) and one reader in Linux network namespaces on one bridge, every
 * host's uplink and downlink shaped with tbf at `--rate` Mbit/s (100), as in `bench:swarm`
 * (scripts/lib/netns.ts). The seeds hold the same version: the first adds a llama-shaped
 * safetensors file of `--mib` MiB (1024), the others start from copies of its home (new
 * identities), so nothing is transferred before t0.
 *
 * Per run, each of two modes on a fresh reader home, the reader's daemon started and connected to
 * every seed and the page cache dropped (unless `--keep-page-cache`) before t0:
 * - stream: at t0 the reader opens `model.safetensors` through `openRead` (which starts the pull)
 *   and reads it sequentially; printed: seconds from t0 until it has the first byte, the header
 *   and the first tensor (in offset order), the first 10% of the file, and all of it;
 * - full: at t0 the reader pulls the version, then reads the whole file through `openRead` (from
 *   the snapshot); printed: the pull's seconds, the read's, and their sum.
 * The modes alternate which goes first from run to run. Figures are medians over `--runs`, then
 * the goals' ratios: stream's "all" over full's "pull + read" (goal ≤ 1.05), and the first tensor's
 * seconds (goal < 1 s), beside the floor for the first tensor: its bytes at the link rate.
 *
 *   sudo npm run bench:stream -- [--mib 1024] [--rate 100] [--seeds 3] [--runs 1] [--keep-page-cache] [--logs <dir>]
 *
 * Needs root (namespaces, tc, dropping the page cache). Every daemon is stopped by pid, and every
 * namespace and temporary folder removed at the end, also on failure, SIGINT and SIGTERM.
 */
import '../src/polyfill.js'
import { execFileSync } from 'node:child_process'
import { rmSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { ShoalClient } from '../src/rpc/client.js'
import { DaemonProcess, startInNamespace } from './lib/daemon-proc.js'
import { createSwarm, SHAPING_ARGS, shapingOf, type SwarmHost } from './lib/netns.js'
import { dropPageCache, loadNote, median, onExitCleanup } from './lib/proc.js'
import { llamaTensors, writeSafetensors } from './lib/synth.js'

const MiB = 1024 * 1024
const PORT = 4077
/** A mode that has not finished after this long fails the benchmark instead of hanging it. */
const RUN_TIMEOUT_MS = 30 * 60_000
/** How long the reader's daemon may take to connect to every seed. */
const CONNECT_TIMEOUT_MS = 60_000

const { values } = parseArgs({
  options: {
    mib: { type: 'string', default: '1024' },
    rate: { type: 'string', default: '100' },
    seeds: { type: 'string', default: '3' },
    runs: { type: 'string', default: '1' },
    logs: { type: 'string' },
    'keep-page-cache': { type: 'boolean', default: false },
    ...SHAPING_ARGS
  }
})
const mib = Number(values.mib)
const rateMbit = Number(values.rate)
const seedCount = Number(values.seeds)
const runs = Number(values.runs)
if (!(mib > 0) || !(rateMbit > 0) || !(seedCount >= 1) || !(runs >= 1)) throw new Error('--mib, --rate, --seeds and --runs take positive numbers')

const root = await mkdtemp(join(tmpdir(), 'shoal-bench-stream-'))
const unregisterRoot = onExitCleanup(() => { rmSync(root, { recursive: true, force: true }) })
const dropCache = (): void => { if (values['keep-page-cache'] !== true) dropPageCache() }
const daemons: DaemonProcess[] = []

async function start (name: string, host: SwarmHost, peers: string[]): Promise<DaemonProcess> {
  const home = join(root, name)
  await mkdir(home, { recursive: true })
  return await startInNamespace(home, host, PORT, peers, values.logs !== undefined ? { SHOAL_LOG_LEVEL: 'debug' } : {}, d => { daemons.push(d) })
}

async function stop (d: DaemonProcess, name: string): Promise<void> {
  await d.stop()
  if (values.logs !== undefined) {
    await mkdir(values.logs, { recursive: true })
    await writeFile(join(values.logs, `${name}.log`), d.stderr)
  }
}

/** Waits until the reader's daemon is connected to `count` peers. */
async function connected (d: DaemonProcess, count: number): Promise<void> {
  const client = new ShoalClient({ socketPath: d.socket })
  const deadline = Date.now() + CONNECT_TIMEOUT_MS
  for (;;) {
    if ((await client.peers()).filter(p => p.connected).length >= count) return
    if (Date.now() > deadline) throw new Error(`the reader did not connect to ${count} seeds within ${CONNECT_TIMEOUT_MS} ms`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

/** Reads the whole file from `t0`, noting when each of `marks` (byte counts) was reached. */
async function readMarks (client: ShoalClient, ref: string, marks: number[], t0: number): Promise<number[]> {
  const at: number[] = marks.map(() => Number.NaN)
  let got = 0
  for await (const part of await client.openRead(ref, 'model.safetensors', { signal: AbortSignal.timeout(RUN_TIMEOUT_MS) })) {
    got += (part as Buffer).byteLength
    const now = (performance.now() - t0) / 1000
    marks.forEach((m, i) => { if (Number.isNaN(at[i]) && got >= m) at[i] = now })
  }
  if (got !== marks[marks.length - 1]) throw new Error(`read ${got} bytes, expected ${marks[marks.length - 1] ?? 0}`)
  return at
}

const swarm = await createSwarm({ hosts: seedCount + 1, rateMbit, ...shapingOf(values) })
try {
  // The model, and the seeds: the first adds it, the others start from copies of its home.
  const folder = join(root, 'model')
  await mkdir(folder, { recursive: true })
  const tensors = llamaTensors(mib * MiB, mib >= 200 ? { hidden: 1024 } : { hidden: 768, vocab: 8000 })
  const fileBytes = await writeSafetensors(join(folder, 'model.safetensors'), tensors)
  const [readerHost, ...seedHosts] = swarm.hosts
  if (readerHost === undefined || seedHosts[0] === undefined) throw new Error('no hosts')
  const first = await start('seed0', seedHosts[0], [])
  const { version } = await first.json<{ version: string }>(['add', folder, '--name', 'bench'])
  const show = await first.json<{ files: Array<{ path: string, size: number, structure?: { headerLength: number, tensors: Array<{ name: string, offset: number, length: number }> } }> }>(['show', `bench@${version}`])
  await stop(first, 'seed0-add')
  daemons.length = 0
  const file = show.files.find(f => f.path === 'model.safetensors')
  const firstTensor = [...(file?.structure?.tensors ?? [])].sort((a, b) => a.offset - b.offset)[0]
  if (file === undefined || firstTensor === undefined || file.size !== fileBytes) throw new Error('the version does not hold the model as written')
  for (let i = 1; i < seedCount; i++) {
    execFileSync('cp', ['-a', join(root, 'seed0'), join(root, `seed${i}`)])
    for (const f of ['peer.key', 'shoal.sock']) rmSync(join(root, `seed${i}`, f), { force: true })
  }
  const seeds = await Promise.all(seedHosts.map(async (h, i) => await start(`seed${i}`, h, [])))
  const seedAddrs = await Promise.all(seeds.map(async (d, i) => `/ip4/${seedHosts[i]?.ip ?? ''}/tcp/${PORT}/p2p/${(await d.json<{ peerId: string }>(['id'])).peerId}`))
  const ref = `bench@${version}`
  const firstTensorEnd = firstTensor.offset + firstTensor.length
  const marks = [1, firstTensorEnd, Math.ceil(fileBytes / 10), fileBytes]
  const linkBytesPerSec = rateMbit * 1e6 / 8
  console.log(`bench:stream: ${(fileBytes / MiB).toFixed(0)} MiB safetensors (${tensors.length} tensors; first in offset order ${firstTensor.name}, ${(firstTensor.length / MiB).toFixed(1)} MiB, ends at byte ${firstTensorEnd}), ${seedCount} seeds, links ${rateMbit} Mbit/s; ${loadNote()}`)

  const results: { stream: number[][], full: Array<{ pull: number, read: number }> } = { stream: [], full: [] }
  for (let run = 0; run < runs; run++) {
    const order = run % 2 === 0 ? ['stream', 'full'] as const : ['full', 'stream'] as const
    for (const mode of order) {
      const name = `reader-${mode}-${run}`
      const reader = await start(name, readerHost, seedAddrs)
      try {
        await connected(reader, seedCount)
        const client = new ShoalClient({ socketPath: reader.socket })
        dropCache()
        const t0 = performance.now()
        if (mode === 'stream') {
          const at = await readMarks(client, ref, marks, t0)
          results.stream.push(at)
          console.log(`  run ${run + 1} stream: first byte ${at[0]?.toFixed(2)} s, first tensor ${at[1]?.toFixed(2)} s, first 10% ${at[2]?.toFixed(2)} s, all ${at[3]?.toFixed(2)} s; ${loadNote()}`)
        } else {
          await client.pull({ ref }, undefined, AbortSignal.timeout(RUN_TIMEOUT_MS))
          const pulled = (performance.now() - t0) / 1000
          const at = await readMarks(client, ref, marks, performance.now())
          const read = at[3] ?? Number.NaN
          results.full.push({ pull: pulled, read })
          console.log(`  run ${run + 1} full: pull ${pulled.toFixed(2)} s, then read ${read.toFixed(2)} s, in all ${(pulled + read).toFixed(2)} s; ${loadNote()}`)
        }
      } finally {
        await stop(reader, name)
        daemons.splice(daemons.indexOf(reader), 1)
        await rm(reader.home, { recursive: true, force: true })
      }
    }
  }
  const med = (f: (i: number) => number, n: number): number => median(Array.from({ length: n }, (_, i) => f(i)))
  const byteS = med(i => results.stream[i]?.[0] ?? Number.NaN, runs)
  const firstS = med(i => results.stream[i]?.[1] ?? Number.NaN, runs)
  const tenthS = med(i => results.stream[i]?.[2] ?? Number.NaN, runs)
  const allS = med(i => results.stream[i]?.[3] ?? Number.NaN, runs)
  const pullS = med(i => results.full[i]?.pull ?? Number.NaN, runs)
  const fullS = med(i => (results.full[i]?.pull ?? Number.NaN) + (results.full[i]?.read ?? Number.NaN), runs)
  console.log(`medians of ${runs} run(s): stream first byte ${byteS.toFixed(2)} s, first tensor ${firstS.toFixed(2)} s (floor at the link rate ${(firstTensorEnd / linkBytesPerSec).toFixed(2)} s), first 10% ${tenthS.toFixed(2)} s, all ${allS.toFixed(2)} s; ` +
    `full pull ${pullS.toFixed(2)} s + read = ${fullS.toFixed(2)} s`)
  console.log(`stream all / (full pull + read) = ${(allS / fullS).toFixed(3)} (goal ≤ 1.05); first tensor ${firstS.toFixed(2)} s (goal < 1 s); ` +
    `first tensor / its floor = ${(firstS / (firstTensorEnd / linkBytesPerSec)).toFixed(2)}; stream all / full pull alone = ${(allS / pullS).toFixed(3)}`)
  for (const d of seeds) await stop(d, `seed${seeds.indexOf(d)}`)
} finally {
  for (const d of daemons) await d.stop('SIGKILL').catch(() => {})
  await swarm.destroy()
  await rm(root, { recursive: true, force: true })
  unregisterRoot()
}
