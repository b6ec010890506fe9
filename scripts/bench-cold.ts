/**
 * Cold versions benchmark: a version of bf16 weights drawn like trained ones (`scripts/lib/weights.ts`)
 * is added to a store (real files, LevelDB), compressed to cold form (`compressVersion`), then
 * re-materialized (`rematerializeVersion`: every chunk decoded, re-hashed, written, fsynced,
 * renamed). Printed beside the disk's write + fsync rate of the same bytes, measured in the same
 * run right before each re-materialization, as a ratio (issue 17's goal: ≥ 0.8× disk speed), and
 * the cold form's size against the raw size (goal ≤ 0.75).
 *
 *   npm run bench:cold -- [--mib 256] [--runs 3]
 */
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises'
import { availableParallelism, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { median } from './lib/proc.js'
import { weightSafetensors } from './lib/weights.js'

// The built modules, as the daemon runs them (`npm run bench:cold` builds first): from source the
// decoding workers would load the codecs through the TypeScript loader.
const built = async <T>(path: string): Promise<T> => await import(new URL(`../dist/${path}`, import.meta.url).href) as T
await built('polyfill.js')
const { addPath } = await built<typeof import('../src/ingest/ingest.js')>('ingest/ingest.js')
const { compressVersion, rematerializeVersion } = await built<typeof import('../src/store/cold.js')>('store/cold.js')
const { Store } = await built<typeof import('../src/store/store.js')>('store/store.js')

const MiB = 1024 * 1024
const { values } = parseArgs({ options: { mib: { type: 'string', default: '256' }, runs: { type: 'string', default: '3' } } })
const mib = Number(values.mib)
const runs = Number(values.runs)
if (!(mib >= 16) || !Number.isInteger(runs) || runs < 1) {
  console.error('usage: bench-cold.ts [--mib 256] [--runs 3]')
  process.exit(2)
}
const now = (): number => Number(process.hrtime.bigint()) / 1e6
const mbps = (bytes: number, ms: number): number => bytes / 1e6 / (ms / 1000)

/** Write + fsync of `size` bytes in 8 MiB buffers, as one file; returns MB/s. */
async function diskRate (dir: string, size: number): Promise<number> {
  const path = join(dir, 'disk-baseline.tmp')
  const buf = Buffer.alloc(8 * MiB, 7)
  const t0 = now()
  const fh = await open(path, 'w')
  try {
    for (let at = 0; at < size; at += buf.length) await fh.write(buf, 0, Math.min(buf.length, size - at), at)
    await fh.sync()
  } finally {
    await fh.close()
  }
  const ms = now() - t0
  await rm(path, { force: true })
  return mbps(size, ms)
}

const root = await mkdtemp(join(tmpdir(), 'shoal-bench-cold-'))
try {
  const model = join(root, 'model')
  await mkdir(model)
  const tensors = Math.max(1, Math.round(mib / 16))
  await writeFile(join(model, 'model.safetensors'), weightSafetensors(Array.from({ length: tensors }, (_, i) => ({ name: `layers.${i}.weight`, dtype: 'BF16' as const, bytes: Math.floor(mib * MiB / tensors / 2) * 2, seed: i + 1 }))))
  const compress: number[] = []
  const back: number[] = []
  const disk: number[] = []
  /** CPU time of every thread of this process (the decoding workers too) over wall time, while re-materializing. */
  const cores: number[] = []
  let ratio = 0
  let size = 0
  for (let r = 1; r <= runs; r++) {
    // A fresh store each run: cold files stay after a version comes back, and a second compression
    // would find its chunks there already.
    const store = await Store.open(join(root, `home-${r}`))
    try {
      const v = await addPath(store, model, { name: 'w' })
      size = v.manifest.files.reduce((n, f) => n + f.size, 0)
      let t0 = now()
      const report = await compressVersion(store, v.version, { keepLast: 1 })
      compress.push(mbps(size, now() - t0))
      ratio = report.storedBytes / report.rawBytes
      disk.push(await diskRate(root, size))
      t0 = now()
      const cpu0 = process.cpuUsage()
      await rematerializeVersion(store, v.version)
      const ms = now() - t0
      const cpu = process.cpuUsage(cpu0)
      back.push(mbps(size, ms))
      cores.push((cpu.user + cpu.system) / 1000 / ms)
    } finally {
      await store.close()
      await rm(join(root, `home-${r}`), { recursive: true, force: true })
    }
    console.log(`run ${r}: compress ${compress.at(-1)!.toFixed(0)} MB/s (cold form ${ratio.toFixed(3)} of ${(size / MiB).toFixed(0)} MiB); disk write+fsync ${disk.at(-1)!.toFixed(0)} MB/s; re-materialize ${back.at(-1)!.toFixed(0)} MB/s = ${(back.at(-1)! / disk.at(-1)!).toFixed(2)}× disk, ${cores.at(-1)!.toFixed(2)} cores busy`)
  }
  const perRun = back.map((b, i) => b / disk[i]!)
  console.log('')
  console.log(`cold versions benchmark (${(size / MiB).toFixed(0)} MiB of bf16 weights, median of ${runs}; load average ${loadavg()[0]?.toFixed(2) ?? '?'})`)
  console.log(`cold form          ${ratio.toFixed(3)}× raw size   (goal <= 0.75)`)
  console.log(`compress           ${median(compress).toFixed(0).padStart(5)} MB/s`)
  console.log(`disk write+fsync   ${median(disk).toFixed(0).padStart(5)} MB/s   [runs: ${disk.map(x => x.toFixed(0)).join(', ')}]`)
  console.log(`re-materialize     ${median(back).toFixed(0).padStart(5)} MB/s   [runs: ${back.map(x => x.toFixed(0)).join(', ')}]   ${median(perRun).toFixed(2)}× disk (median of per-run ratios; goal >= 0.8)`)
  console.log(`  while re-materializing, ${median(cores).toFixed(2)} of ${availableParallelism()} cores busy (CPU time of every thread of this process over wall time)`)
} finally {
  await rm(root, { recursive: true, force: true })
}
