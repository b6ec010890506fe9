/**
 * Benchmark of `shoal add` (issue 2, "Benchmark"): a generated safetensors model is added to a
 * fresh daemon several times; its MB/s is set beside the disk write rate (write + fsync) and the
 * sha256 rate measured in the same run, on the same file system as the store. Also reports the
 * daemon's peak RSS and a dedup check (a second version with 10% of tensors changed and a
 * different header: which chunk ids it shares with the first).
 *
 *   node --import tsx scripts/bench-add.ts [--size-gib 4] [--runs 3] [--dir /path]
 *
 * Same conditions for baseline and add: this VM hands freed memory back to its host
 * (virtio-balloon free page reporting, 2 MiB blocks, after about 2 s), so writing into pages freed
 * a moment ago is several times faster than writing into pages freed earlier, which must be
 * faulted in again. Left alone, the disk baseline (run right after the previous run's files were
 * deleted) got warm pages and the add cold ones. Both now start after `SETTLE_MS` of quiet, so
 * both write into reclaimed memory, as a daemon adding a new model does (`--no-settle` skips it).
 *
 * Needs the built CLI (`npm run bench:add` builds first). Everything it creates lives in one
 * temporary folder under --dir (default: os.tmpdir()) and is removed at the end; daemons are
 * stopped by pid. Raw figures go to bench-out/add-<timestamp>.json.
 */
import { execFileSync } from 'node:child_process'
import { createHash, randomFillSync } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { mkdtemp, open, readdir, rm, stat, statfs } from 'node:fs/promises'
import { cpus, loadavg, tmpdir, totalmem } from 'node:os'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { CLI, DaemonProcess, ROOT } from './lib/daemon-proc.js'
import { changeTensors, llamaTensors, writeSafetensors } from './lib/synth.js'

const MiB = 1024 * 1024
const GiB = 1024 * MiB
const MB = 1e6
const WRITE_BUFFER = 8 * MiB
/** Quiet time before each timed write, longer than the VM's free page reporting delay (~2 s). */
const SETTLE_MS = 6_000
const HASH_BUFFER = 4 * MiB

const { values: args } = parseArgs({
  options: {
    'size-gib': { type: 'string', default: '4' },
    runs: { type: 'string', default: '3' },
    dir: { type: 'string' },
    'no-settle': { type: 'boolean', default: false }
  }
})
const sizeGib = Number(args['size-gib'])
const runs = Number(args.runs)
if (!(sizeGib > 0) || !Number.isInteger(runs) || runs < 1) {
  console.error('usage: bench-add.ts [--size-gib 4] [--runs 3] [--dir /path]')
  process.exit(2)
}
const baseDir = resolve(args.dir ?? tmpdir())

// ---- bookkeeping: everything started here is stopped / removed here --------------------------

const daemons = new Set<DaemonProcess>()
let workDir: string | undefined
let cleaning: Promise<void> | undefined

async function cleanup (): Promise<void> {
  cleaning ??= (async () => {
    for (const d of daemons) await d.stop().catch(() => {})
    daemons.clear()
    if (workDir !== undefined) await rm(workDir, { recursive: true, force: true })
  })()
  await cleaning
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    console.error(`\n${sig}: cleaning up`)
    void cleanup().finally(() => process.exit(130))
  })
}

async function startDaemon (home: string): Promise<DaemonProcess> {
  const d = new DaemonProcess(home)
  daemons.add(d)
  await d.start()
  return d
}

async function stopDaemon (d: DaemonProcess): Promise<void> {
  const code = await d.stop()
  daemons.delete(d)
  if (code !== 0) throw new Error(`daemon exited with ${code}:\n${d.stderr.slice(-2000)}`)
}

// ---- helpers ---------------------------------------------------------------------------------

function log (msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`)
}

function mbps (bytes: number, ms: number): number {
  return bytes / MB / (ms / 1000)
}

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

const now = (): number => performance.now()

/** Percentage of the file's pages in the page cache (util-linux `fincore`), or undefined. */
function pageCacheResident (path: string, size: number): number | undefined {
  try {
    const out = execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', path], { encoding: 'utf8' })
    return 100 * Number(out.trim()) / size
  } catch {
    return undefined
  }
}

async function dirBytes (dir: string): Promise<number> {
  let n = 0
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) n += await dirBytes(p)
    else if (e.isFile()) n += (await stat(p)).size
  }
  return n
}

// ---- baselines -------------------------------------------------------------------------------

/** A buffer filled (so touched) once and reused by every write. */
const writeBuf = randomFillSync(Buffer.allocUnsafe(WRITE_BUFFER))

async function writeFile (path: string, size: number): Promise<number> {
  const t0 = now()
  const fh = await open(path, 'wx')
  try {
    for (let at = 0; at < size; at += WRITE_BUFFER) {
      const n = Math.min(WRITE_BUFFER, size - at)
      await fh.write(writeBuf, 0, n, at)
    }
    await fh.sync()
  } finally {
    await fh.close()
  }
  return now() - t0
}

/** Write + fsync of `size` bytes with 8 MiB buffers, after a discarded warm-up of 512 MiB. */
async function settle (): Promise<void> {
  if (args['no-settle'] !== true) await new Promise(resolve => setTimeout(resolve, SETTLE_MS))
}

async function diskBaseline (dir: string, size: number): Promise<{ mbps: number, ms: number, warmupMbps: number }> {
  const warm = join(dir, 'disk-warmup.tmp')
  const file = join(dir, 'disk-baseline.tmp')
  try {
    const warmSize = Math.min(size, 512 * MiB)
    const warmMs = await writeFile(warm, warmSize)
    await rm(warm)
    await settle()
    const ms = await writeFile(file, size)
    return { mbps: mbps(size, ms), ms, warmupMbps: mbps(warmSize, warmMs) }
  } finally {
    await rm(warm, { force: true })
    await rm(file, { force: true })
  }
}

/** sha256 over 4 MiB buffers (one digest per buffer, like one chunk each), one thread. */
function hashBaseline (bytes: number): { mbps: number, ms: number } {
  const buf = randomFillSync(Buffer.allocUnsafe(HASH_BUFFER))
  const pass = (n: number): number => {
    const t0 = now()
    for (let done = 0; done < n; done += HASH_BUFFER) createHash('sha256').update(buf).digest()
    return now() - t0
  }
  pass(256 * MiB) // warm-up
  const ms = pass(bytes)
  return { mbps: mbps(bytes, ms), ms }
}

async function fsyncFile (path: string): Promise<void> {
  const fh = await open(path, 'r+')
  try { await fh.sync() } finally { await fh.close() }
}

/** Reads the file once with 8 MiB buffers; returns MB/s. */
async function readThrough (path: string): Promise<number> {
  const buf = Buffer.allocUnsafe(8 * MiB)
  const fh = await open(path, 'r')
  const t0 = now()
  let total = 0
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, total)
      if (bytesRead === 0) break
      total += bytesRead
    }
  } finally {
    await fh.close()
  }
  return mbps(total, now() - t0)
}

// ---- add -------------------------------------------------------------------------------------

interface AddRun { ms: number, mbps: number, peakRssBytes: number, startRssBytes: number, daemonCpu: { user: number, sys: number }, sourcePreReadMbps: number, sourceCachedPct?: number, version: string }

async function addOnce (home: string, path: string, size: number): Promise<AddRun> {
  const preRead = await readThrough(path)
  const cached = pageCacheResident(path, size)
  const d = await startDaemon(home)
  try {
    const startRss = await d.peakRss()
    await settle()
    const cpu0 = await d.cpuSeconds()
    const t0 = now()
    const r = await d.cli(['add', path, '--name', 'bench', '--json'])
    const ms = now() - t0
    if (r.code !== 0) throw new Error(`shoal add exited ${r.code}: ${r.stderr}`)
    const cpu1 = await d.cpuSeconds()
    const peak = await d.peakRss()
    const version = (JSON.parse(r.stdout) as { version: string }).version
    return { ms, mbps: mbps(size, ms), peakRssBytes: peak, startRssBytes: startRss, daemonCpu: { user: cpu1.user - cpu0.user, sys: cpu1.sys - cpu0.sys }, sourcePreReadMbps: preRead, ...(cached !== undefined ? { sourceCachedPct: cached } : {}), version }
  } finally {
    await stopDaemon(d)
  }
}

// ---- dedup -----------------------------------------------------------------------------------

interface ChunkRef { id: string, size: number }
interface TensorRec { name: string, offset: number, length: number }
interface StoreLike {
  resolve: (ref: string) => Promise<{ manifest: { files: Array<{ path: string, size: number, chunks: ChunkRef[], structure?: { headerLength: number, tensors: TensorRec[] } }> } }>
  close: () => Promise<void>
}

async function dedupCheck (work: string, v1Path: string, v2Path: string, v2Write: () => Promise<{ size: number, changed: Set<string> }>): Promise<Record<string, unknown>> {
  const home = join(work, 'home-dedup')
  const d = await startDaemon(home)
  let id1: string
  let id2: string
  let v2Ms: number
  let blobsBefore: number
  let blobsAfter: number
  let changed: Set<string>
  try {
    id1 = (await d.json<{ version: string }>(['add', v1Path, '--name', 'bench'])).version
    // The v1 source is no longer needed: free its space before v2 is generated.
    await rm(v1Path)
    log('dedup: v1 added; generating v2 (10% of tensors changed, different header)')
    changed = (await v2Write()).changed
    await readThrough(v2Path)
    blobsBefore = await dirBytes(join(home, 'blobs'))
    const t0 = now()
    id2 = (await d.json<{ version: string }>(['add', v2Path, '--name', 'bench'])).version
    v2Ms = now() - t0
    blobsAfter = await dirBytes(join(home, 'blobs'))
  } finally {
    await stopDaemon(d)
  }
  await rm(v2Path)

  // No RPC lists chunk ids: open the store in-process once its daemon is gone. The store's lock
  // (mortice) needs Promise.withResolvers, which Node 20 lacks: load the project's polyfill first.
  await import(pathToFileURL(join(ROOT, 'dist', 'polyfill.js')).href)
  const { Store } = await import(pathToFileURL(join(ROOT, 'dist', 'store', 'store.js')).href) as { Store: { open: (home: string) => Promise<StoreLike> } }
  const store = await Store.open(home)
  try {
    const m1 = (await store.resolve(`bench@${id1}`)).manifest
    const m2 = (await store.resolve(`bench@${id2}`)).manifest
    const f1 = m1.files[0]!
    const f2 = m2.files[0]!
    const v1Ids = new Set(f1.chunks.map(c => c.id))
    const total = { count: f2.chunks.length, bytes: f2.size }
    const shared = { count: 0, bytes: 0 }
    const starts: number[] = []
    let at = 0
    for (const c of f2.chunks) {
      starts.push(at)
      at += c.size
      if (v1Ids.has(c.id)) { shared.count++; shared.bytes += c.size }
    }
    const covering = (offset: number, length: number): ChunkRef[] => {
      const out: ChunkRef[] = []
      for (let i = 0; i < f2.chunks.length; i++) {
        const s = starts[i]!
        const c = f2.chunks[i]!
        if (s < offset + length && s + c.size > offset) out.push(c)
      }
      return out
    }
    const tensors = f2.structure?.tensors ?? []
    let unchanged = 0
    let unchangedShared = 0
    let unchangedBytes = 0
    let unchangedChunks = 0
    let changedCount = 0
    let changedChunksShared = 0
    const notShared: string[] = []
    for (const t of tensors) {
      if (t.length === 0) continue
      const cs = covering(t.offset, t.length)
      if (changed.has(t.name)) {
        changedCount++
        changedChunksShared += cs.filter(c => v1Ids.has(c.id)).length
        continue
      }
      unchanged++
      unchangedBytes += t.length
      unchangedChunks += cs.length
      if (cs.every(c => v1Ids.has(c.id))) unchangedShared++
      else notShared.push(t.name)
    }
    return {
      v1: id1,
      v2: id2,
      headerLength: { v1: f1.structure?.headerLength, v2: f2.structure?.headerLength },
      chunks: { v1: f1.chunks.length, v2: f2.chunks.length },
      sharedByCount: shared.count / total.count,
      sharedByBytes: shared.bytes / total.bytes,
      expectedByCount: unchangedChunks / total.count,
      expectedByBytes: unchangedBytes / total.bytes,
      unchangedTensors: unchanged,
      unchangedFullyShared: unchangedShared,
      unchangedNotShared: notShared.slice(0, 20),
      changedTensors: changedCount,
      changedTensorChunksShared: changedChunksShared,
      v2AddMs: v2Ms,
      v2AddMbps: mbps(f2.size, v2Ms),
      blobBytesWrittenByV2: blobsAfter - blobsBefore,
      pass: unchanged > 0 && unchangedShared === unchanged
    }
  } finally {
    await store.close()
  }
}

// ---- main ------------------------------------------------------------------------------------

async function main (): Promise<void> {
  await stat(CLI).catch(() => { throw new Error(`${CLI} is missing: run npm run build first`) })
  mkdirSync(baseDir, { recursive: true })
  const fsInfo = await statfs(baseDir)
  const free = fsInfo.bavail * fsInfo.bsize
  const target = Math.round(sizeGib * GiB)
  if (free < 3.2 * target) throw new Error(`${baseDir} has ${(free / GiB).toFixed(1)} GiB free; this benchmark needs about ${(3.2 * target / GiB).toFixed(1)} GiB (3× the model)`)
  workDir = await mkdtemp(join(baseDir, 'shoal-bench-'))
  const work = workDir
  mkdirSync(join(work, 'v1'))
  mkdirSync(join(work, 'v2'))
  const v1Path = join(work, 'v1', 'model.safetensors')
  const v2Path = join(work, 'v2', 'model.safetensors')

  log(`work folder ${work}`)
  const tensors = llamaTensors(target)
  const t0 = now()
  const size = await writeSafetensors(v1Path, tensors, { format: 'pt', bench: 'v1' })
  await fsyncFile(v1Path) // so its write-back does not overlap the disk baseline
  log(`generated v1: ${tensors.length} tensors, ${(size / GiB).toFixed(2)} GiB in ${((now() - t0) / 1000).toFixed(1)} s`)

  // The daemon reads the model during add; read it first so every run starts with it cached.
  const firstRead = await readThrough(v1Path)
  const cachedAfterFirstRead = pageCacheResident(v1Path, size)
  log(`source read once: ${firstRead.toFixed(0)} MB/s; resident in page cache: ${cachedAfterFirstRead?.toFixed(1) ?? '?'}%`)

  // Each run measures its own baselines just before its add, so all three see the same machine
  // (this VM's disk rate drifts by 2x or more within minutes); medians are compared.
  const hashBytes = Math.max(GiB, Math.min(size, 2 * GiB))
  const disks: Array<Awaited<ReturnType<typeof diskBaseline>>> = []
  const hashes: Array<ReturnType<typeof hashBaseline>> = []
  const addRuns: AddRun[] = []
  const loads: number[][] = [loadavg()]
  for (let i = 0; i < runs; i++) {
    const disk = await diskBaseline(work, size)
    disks.push(disk)
    const hash = hashBaseline(hashBytes)
    hashes.push(hash)
    log(`run ${i + 1}/${runs}: disk write+fsync ${disk.mbps.toFixed(0)} MB/s (warm-up ${disk.warmupMbps.toFixed(0)}), sha256 ${hash.mbps.toFixed(0)} MB/s`)
    const home = join(work, `home-${i}`)
    try {
      const r = await addOnce(home, v1Path, size)
      addRuns.push(r)
      log(`run ${i + 1}/${runs}: add ${r.mbps.toFixed(0)} MB/s (${(r.ms / 1000).toFixed(2)} s), peak RSS ${(r.peakRssBytes / MiB).toFixed(0)} MiB, daemon CPU user ${r.daemonCpu.user.toFixed(2)} s + sys ${r.daemonCpu.sys.toFixed(2)} s`)
    } finally {
      await rm(home, { recursive: true, force: true })
    }
    loads.push(loadavg())
  }

  log('dedup: v1 then v2 in one home')
  const metadataV2 = { format: 'pt', bench: 'v2', description: 'second version: 10% of tensors retrained, header edited' }
  const dedup = await dedupCheck(work, v1Path, v2Path, async () => {
    const { tensors: t2, changed } = changeTensors(tensors, 0.1, 'v2')
    const v2Size = await writeSafetensors(v2Path, t2, metadataV2)
    await fsyncFile(v2Path)
    return { size: v2Size, changed }
  })

  // ---- report ----
  const addMedian = median(addRuns.map(r => r.mbps))
  const diskMedian = median(disks.map(d => d.mbps))
  const hashMedian = median(hashes.map(h => h.mbps))
  const floor = Math.min(diskMedian, hashMedian)
  const runRatios = addRuns.map((r, i) => r.mbps / Math.min(disks[i]!.mbps, hashes[i]!.mbps))
  const list = (xs: number[]): string => xs.map(x => x.toFixed(0)).join(', ')
  const ratio = addMedian / floor
  const peakRss = Math.max(...addRuns.map(r => r.peakRssBytes))
  const pf = (ok: boolean): string => ok ? 'PASS' : 'MISS'
  const pct = (x: unknown): string => `${(100 * (x as number)).toFixed(1)}%`
  const fsType = (() => { try { return execFileSync('findmnt', ['-n', '-o', 'FSTYPE', '-T', work], { encoding: 'utf8' }).trim() } catch { return '?' } })()
  const lines = [
    `shoal add benchmark (size ${(size / GiB).toFixed(2)} GiB, runs ${runs}, store on ${work} [${fsType}])`,
    `machine            ${cpus().length} cpus, ${(totalmem() / GiB).toFixed(1)} GiB RAM, node ${process.version}`,
    `source             in page cache: read once before the runs (${firstRead.toFixed(0)} MB/s, ${cachedAfterFirstRead?.toFixed(0) ?? '?'}% resident), re-read before each run [${addRuns.map(r => `${r.sourcePreReadMbps.toFixed(0)} MB/s ${r.sourceCachedPct?.toFixed(0) ?? '?'}%`).join(', ')}]`,
    `load average       ${loads.map(l => l[0]!.toFixed(2)).join(' → ')} (1 min, before the runs and after each)`,
    `memory             ${args['no-settle'] === true ? 'no settle: baseline and add may see warm or reclaimed pages' : `baseline and add each start after ${SETTLE_MS / 1000} s of quiet, both writing into memory the VM has reclaimed`}`,
    `disk write+fsync   ${diskMedian.toFixed(0).padStart(5)} MB/s   [runs: ${list(disks.map(d => d.mbps))}]`,
    `sha256 (1 thread)  ${hashMedian.toFixed(0).padStart(5)} MB/s   [runs: ${list(hashes.map(h => h.mbps))}]`,
    `add (median)       ${addMedian.toFixed(0).padStart(5)} MB/s   [runs: ${list(addRuns.map(r => r.mbps))}]   ratio ${ratio.toFixed(2)} of min(disk, hash)  goal >= 0.8  ${pf(ratio >= 0.8)}   (per run: ${runRatios.map(x => x.toFixed(2)).join(', ')})`,
    `daemon peak RSS    ${(peakRss / MiB).toFixed(0).padStart(5)} MiB  [runs: ${addRuns.map(r => (r.peakRssBytes / MiB).toFixed(0)).join(', ')}; idle ${(addRuns[0]!.startRssBytes / MiB).toFixed(0)} MiB]   goal <= 256 MiB  ${pf(peakRss <= 256 * MiB)}`,
    `daemon CPU / add   ${addRuns.map(r => `user ${r.daemonCpu.user.toFixed(1)} s + sys ${r.daemonCpu.sys.toFixed(1)} s`).join('; ')}  (sha256 alone needs ${(size / MB / hashMedian).toFixed(1)} s)`,
    `dedup v1→v2: ${pct(dedup.sharedByCount)} of chunks shared (by bytes ${pct(dedup.sharedByBytes)}; expected ≈ ${pct(dedup.expectedByCount)} / ${pct(dedup.expectedByBytes)}), unchanged tensors fully shared ${String(dedup.unchangedFullyShared)}/${String(dedup.unchangedTensors)}  ${pf(dedup.pass === true)}`,
    `  changed tensors ${String(dedup.changedTensors)} (their chunks shared: ${String(dedup.changedTensorChunksShared)}); header ${JSON.stringify(dedup.headerLength)} bytes; chunks ${JSON.stringify(dedup.chunks)}`,
    `  add v2: ${(dedup.v2AddMbps as number).toFixed(0)} MB/s; store blobs grew by ${((dedup.blobBytesWrittenByV2 as number) / GiB).toFixed(2)} GiB (blobs are whole files: chunk dedup saves transfer, not local disk)`
  ]
  console.log(lines.join('\n'))

  const outDir = join(ROOT, 'bench-out')
  mkdirSync(outDir, { recursive: true })
  const outFile = join(outDir, `add-${new Date().toISOString().replace(/[:.]/g, '-')}.json`)
  writeFileSync(outFile, JSON.stringify({
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    totalMemBytes: totalmem(),
    dir: work,
    fsType,
    sizeBytes: size,
    tensors: tensors.length,
    runs,
    source: { firstReadMbps: firstRead, residentPct: cachedAfterFirstRead, state: 'page cache (read once before measuring)' },
    loadavg: loads,
    disk: { runs: disks, medianMbps: diskMedian },
    sha256: { runs: hashes, medianMbps: hashMedian, bytes: hashBytes, bufferBytes: HASH_BUFFER },
    add: { runs: addRuns, medianMbps: addMedian, ratio, runRatios, floorMbps: floor, pass: ratio >= 0.8 },
    peakRss: { bytes: peakRss, pass: peakRss <= 256 * MiB },
    dedup
  }, null, 2) + '\n')
  console.log(`raw figures: ${outFile}`)
}

try {
  await main()
} catch (err) {
  console.error(err instanceof Error ? err.stack ?? err.message : err)
  process.exitCode = 1
} finally {
  await cleanup()
}
