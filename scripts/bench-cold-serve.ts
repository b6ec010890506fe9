/**
 * Serving a cold version (issue 17): the same bf16 weights (`scripts/lib/weights.ts`) held by two
 * seeds, one as a hot version (its blocks encoded for the wire by the seed's encoder, through its
 * cache) and one compressed to cold form (`shoal compress`: blocks sent as they are stored). Pullers
 * over loopback offer the codec (`transfer.compress: always`) and pull from one seed at a time,
 * alternating. Printed per seed: the seed's CPU seconds per GiB served and the pull's time, medians
 * of `--runs`, and the cold seed's figures as a ratio of the hot one's, measured in the same run.
 *
 *   npm run bench:cold-serve -- [--mib 256] [--runs 3]
 */
import '../src/polyfill.js'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { ShoalClient } from '../src/rpc/client.js'
import { DaemonProcess } from './lib/daemon-proc.js'
import { median } from './lib/proc.js'
import { weightSafetensors } from './lib/weights.js'

const { values } = parseArgs({ options: { mib: { type: 'string', default: '256' }, runs: { type: 'string', default: '3' } } })
const MiB = 1024 * 1024
const GiB = 1024 * MiB
const bytes = Number(values.mib) * MiB
const runs = Number(values.runs)
if (!(bytes >= 16 * MiB) || !Number.isInteger(runs) || runs < 1) {
  console.error('usage: bench-cold-serve.ts [--mib 256] [--runs 3]')
  process.exit(2)
}

/** The value of one series in a /metrics text (0 when absent). */
function metric (text: string, series: string): number {
  const line = text.split('\n').find(l => l.startsWith(`${series} `))
  return line === undefined ? 0 : Number(line.slice(series.length + 1))
}

const root = await mkdtemp(join(tmpdir(), 'shoal-bench-cold-serve-'))
const daemons: DaemonProcess[] = []
const listen = ['--listen', '/ip4/127.0.0.1/tcp/0']
try {
  const model = join(root, 'model')
  await mkdir(model)
  const tensors = Math.max(1, Math.round(bytes / (64 * MiB)))
  await writeFile(join(model, 'model.safetensors'), weightSafetensors(Array.from({ length: tensors }, (_, i) => ({ name: `layers.${i}.weight`, dtype: 'BF16' as const, bytes: Math.floor(bytes / tensors / 2) * 2, seed: i + 1 }))))
  // One version on both seeds: the hot one adds it, the cold one pulls it from there and compresses it.
  const hotSeed = await new DaemonProcess(join(root, 'seed-hot'), listen).start()
  daemons.push(hotSeed)
  const added = await hotSeed.json<{ version: string, structure: { totalSize: number } }>(['add', model, '--name', 'bench'])
  const version = added.version
  const size = added.structure.totalSize
  const hotAddr = (await hotSeed.json<{ addresses: string[] }>(['id'])).addresses[0] ?? ''
  const coldSeed = await new DaemonProcess(join(root, 'seed-cold'), [...listen, '--peer', hotAddr]).start()
  daemons.push(coldSeed)
  await new ShoalClient({ socketPath: coldSeed.socket }).pull({ ref: `bench@${version}` })
  const report = await coldSeed.json<{ rawBytes: number, storedBytes: number }>(['compress', `bench@${version}`])
  console.log(`cold seed: ${(report.storedBytes / report.rawBytes).toFixed(3)} of ${(report.rawBytes / MiB).toFixed(0)} MiB kept in cold form`)
  const seeds = {
    hot: { d: hotSeed, addr: hotAddr },
    cold: { d: coldSeed, addr: (await coldSeed.json<{ addresses: string[] }>(['id'])).addresses[0] ?? '' }
  }
  const figures = { hot: { cpu: [] as number[], seconds: [] as number[] }, cold: { cpu: [] as number[], seconds: [] as number[] } }
  let n = 0
  for (let i = 0; i <= runs; i++) {
    for (const kind of ['hot', 'cold'] as const) {
      const seed = seeds[kind]
      const home = join(root, `puller-${n++}`)
      await mkdir(home, { recursive: true })
      await writeFile(join(home, 'config.json'), JSON.stringify({ transfer: { compress: 'always' } }))
      const puller = await new DaemonProcess(home, [...listen, '--peer', seed.addr]).start()
      daemons.push(puller)
      const cpu0 = await seed.d.cpuSeconds()
      const t0 = process.hrtime.bigint()
      await new ShoalClient({ socketPath: puller.socket }).pull({ ref: `bench@${version}` })
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9
      const cpu = (await seed.d.cpuSeconds()).total - cpu0.total
      await puller.stop()
      await rm(home, { recursive: true, force: true })
      const m = await new ShoalClient({ socketPath: seed.d.socket }).metrics()
      const codec = `encoded ${metric(m, 'shoal_codec_blocks_encoded_total')}, from the cache ${metric(m, 'shoal_codec_blocks_reused_total')}, as stored ${metric(m, 'shoal_codec_blocks_stored_total')}, raw ${metric(m, 'shoal_codec_blocks_raw_total')}`
      console.log(`${i === 0 ? 'warm-up' : `run ${i}`} from the ${kind} seed: ${seconds.toFixed(2)} s, seed CPU ${cpu.toFixed(2)} s = ${(cpu / (size / GiB)).toFixed(2)} s/GiB served (seed's blocks so far: ${codec})`)
      if (i === 0) continue
      figures[kind].cpu.push(cpu / (size / GiB))
      figures[kind].seconds.push(seconds)
    }
  }
  const hot = { cpu: median(figures.hot.cpu), seconds: median(figures.hot.seconds) }
  const cold = { cpu: median(figures.cold.cpu), seconds: median(figures.cold.seconds) }
  console.log('')
  console.log(`serving a cold version (${(size / MiB).toFixed(0)} MiB of bf16 weights over loopback to pullers that offer the codec, median of ${runs}; load average ${loadavg()[0]?.toFixed(2) ?? '?'})`)
  console.log(`hot seed (encodes)        seed CPU ${hot.cpu.toFixed(2)} s/GiB   pull ${hot.seconds.toFixed(2)} s`)
  console.log(`cold seed (as stored)     seed CPU ${cold.cpu.toFixed(2)} s/GiB   pull ${cold.seconds.toFixed(2)} s`)
  console.log(`cold / hot                seed CPU ${(cold.cpu / hot.cpu).toFixed(2)}×          pull ${(cold.seconds / hot.seconds).toFixed(2)}×`)
} finally {
  for (const d of daemons) await d.stop('SIGKILL').catch(() => {})
  await rm(root, { recursive: true, force: true })
}
