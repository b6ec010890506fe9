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
import '../src/polyfill.js'
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { addPath } from '../src/ingest/ingest.js'
import { compressVersion, rematerializeVersion } from '../src/store/cold.js'
import { Store } from '../src/store/store.js'
import { median } from './lib/proc.js'
import { weightSafetensors } from './lib/weights.js'

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
      await rematerializeVersion(store, v.version)
      back.push(mbps(size, now() - t0))
    } finally {
      await store.close()
      await rm(join(root, `home-${r}`), { recursive: true, force: true })
    }
    console.log(`run ${r}: compress ${compress.at(-1)!.toFixed(0)} MB/s (cold form ${ratio.toFixed(3)} of ${(size / MiB).toFixed(0)} MiB); disk write+fsync ${disk.at(-1)!.toFixed(0)} MB/s; re-materialize ${back.at(-1)!.toFixed(0)} MB/s = ${(back.at(-1)! / disk.at(-1)!).toFixed(2)}× disk`)
  }
  const perRun = back.map((b, i) => b / disk[i]!)
  console.log('')
  console.log(`cold versions benchmark (${(size / MiB).toFixed(0)} MiB of bf16 weights, median of ${runs}; load average ${loadavg()[0]?.toFixed(2) ?? '?'})`)
  console.log(`cold form          ${ratio.toFixed(3)}× raw size   (goal <= 0.75)`)
  console.log(`compress           ${median(compress).toFixed(0).padStart(5)} MB/s`)
  console.log(`disk write+fsync   ${median(disk).toFixed(0).padStart(5)} MB/s   [runs: ${disk.map(x => x.toFixed(0)).join(', ')}]`)
  console.log(`re-materialize     ${median(back).toFixed(0).padStart(5)} MB/s   [runs: ${back.map(x => x.toFixed(0)).join(', ')}]   ${median(perRun).toFixed(2)}× disk (median of per-run ratios; goal >= 0.8)`)
} finally {
  await rm(root, { recursive: true, force: true })
}
