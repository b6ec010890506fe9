/**
 * Pair benchmark (issue 3, benchmark 1): one daemon pulls a version of `--mib` MiB (default 1 GiB)
 * from another over loopback TCP. Printed beside a bare libp2p stream on the same stack
 * (tcp + noise + yamux) and raw TCP, measured in the same run, as ratios. Each pull starts from an
 * empty home; the figure is bytes / (time from the pull request to the version being visible),
 * manifest exchange included. Also prints both daemons' peak RSS, and the ceiling of a verified,
 * durable pull on this machine (baselines/verify-cost.ts): when both ends share the cores, hashing
 * and writing every byte take CPU a bare stream spends on the transfer.
 *
 *   npm run bench:pair -- [--mib 1024] [--runs 3] [--block-size 256KiB] [--data random|weights] [--compress auto,off]
 *
 * `--data weights`: bf16 tensors drawn like trained weights (`scripts/lib/weights.ts`) instead of
 * random bytes. `--compress`: the pullers' `transfer.compress`, one or several (comma-separated):
 * each run then pulls once with each, alternating, and each gets its own median (the seed runs
 * with the default, `auto`, and compresses for a puller that asks).
 */
import '../src/polyfill.js'
import { mkdtemp, rm, mkdir, writeFile } from 'node:fs/promises'
import { availableParallelism, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { ShoalClient } from '../src/rpc/client.js'
import { measureLibp2pStream } from './baselines/libp2p-stream.js'
import { measureRawTcp } from './baselines/raw-tcp.js'
import { measureVerifyCost, verifiedCeiling } from './baselines/verify-cost.js'
import { DaemonProcess } from './lib/daemon-proc.js'
import { median } from './lib/proc.js'
import { llamaTensors, writeSafetensors } from './lib/synth.js'
import { weightSafetensors } from './lib/weights.js'

/** CPU spent between two readings, split into user and system time (where a pull's CPU goes differs by run: the seed's swings are in user time). */
function cpuSplit (now: { user: number, sys: number }, before: { user: number, sys: number }): string {
  return `${(now.user - before.user).toFixed(2)} user + ${(now.sys - before.sys).toFixed(2)} sys`
}

const { values } = parseArgs({ options: { mib: { type: 'string', default: '1024' }, runs: { type: 'string', default: '3' }, 'block-size': { type: 'string' }, data: { type: 'string', default: 'random' }, compress: { type: 'string', default: 'auto' } } })
const modes = values.compress.split(',').map(m => m.trim())
if (modes.some(m => !['auto', 'always', 'off'].includes(m)) || !['random', 'weights'].includes(values.data)) {
  console.error('usage: bench-pair.ts [--mib 1024] [--runs 3] [--block-size 256KiB] [--data random|weights] [--compress auto,always,off]')
  process.exit(2)
}
const MiB = 1024 * 1024
const bytes = Number(values.mib) * MiB
const runs = Number(values.runs)
const mb = (n: number): string => `${n.toFixed(0).padStart(5)} MB/s`

const root = await mkdtemp(join(tmpdir(), 'shoal-bench-pair-'))
const daemons: DaemonProcess[] = []
try {
  await mkdir(join(root, 'model'))
  if (values.data === 'weights') {
    const tensors = Math.max(1, Math.round(bytes / (64 * MiB)))
    await writeFile(join(root, 'model', 'model.safetensors'), weightSafetensors(Array.from({ length: tensors }, (_, i) => ({ name: `layers.${i}.weight`, dtype: 'BF16' as const, bytes: Math.floor(bytes / tensors / 2) * 2, seed: i + 1 }))))
  } else {
    await writeSafetensors(join(root, 'model', 'model.safetensors'), llamaTensors(bytes, { hidden: 2048 }))
  }
  const listen = ['--listen', '/ip4/127.0.0.1/tcp/0']
  const seed = await new DaemonProcess(join(root, 'seed'), listen).start()
  daemons.push(seed)
  const { version, structure } = await seed.json<{ version: string, structure: { totalSize: number } }>(['add', join(root, 'model'), '--name', 'bench', ...(values['block-size'] !== undefined ? ['--block-size', values['block-size']] : [])])
  const size = structure.totalSize
  const { addresses } = await seed.json<{ addresses: string[] }>(['id'])

  const rates = new Map<string, number[]>(modes.map(m => [m, []]))
  const cpuRates = new Map<string, number[]>(modes.map(m => [m, []]))
  let pullerRss = 0
  let n = 0
  for (let i = 0; i <= runs; i++) {
    for (const mode of i === 0 ? modes.slice(0, 1) : modes) {
      const home = join(root, `puller-${n++}`)
      await mkdir(home, { recursive: true })
      await writeFile(join(home, 'config.json'), JSON.stringify({ transfer: { compress: mode } }))
      const puller = await new DaemonProcess(home, [...listen, '--peer', addresses[0] ?? '']).start()
      daemons.push(puller)
      const client = new ShoalClient({ socketPath: puller.socket })
      const cpu0 = await puller.cpuSeconds()
      const seedCpu0 = await seed.cpuSeconds()
      const t0 = process.hrtime.bigint()
      let wire = ''
      await client.pull({ ref: `bench@${version}` }, p => { if (typeof p.wireBytes === 'number' && typeof p.receivedBytes === 'number' && p.receivedBytes > 0) wire = `, ${(100 * p.wireBytes / p.receivedBytes).toFixed(0)}% on the wire` })
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9
      const cpuNow = await puller.cpuSeconds()
      const seedNow = await seed.cpuSeconds()
      const cpu = cpuNow.total - cpu0.total
      const seedCpu = seedNow.total - seedCpu0.total
      pullerRss = Math.max(pullerRss, await puller.peakRss())
      await puller.stop()
      await rm(home, { recursive: true, force: true })
      if (i === 0) { console.log(`warm-up pull: ${mb(size / seconds / 1e6)}`); continue }
      rates.get(mode)!.push(size / seconds / 1e6)
      cpuRates.get(mode)!.push(size / cpu / 1e6)
      console.log(`pull ${i}${modes.length > 1 ? ` (compress ${mode})` : ''}: ${mb(size / seconds / 1e6)} (${seconds.toFixed(2)} s; puller CPU ${cpu.toFixed(2)} s (${cpuSplit(cpuNow, cpu0)}) → ${mb(size / cpu / 1e6)} per CPU-second; seed CPU ${seedCpu.toFixed(2)} s (${cpuSplit(seedNow, seedCpu0)})${wire})`)
    }
  }
  const seedRss = await seed.peakRss()
  await seed.stop()

  const libp2p = await measureLibp2pStream({ bytes: size, runs })
  const raw = await measureRawTcp({ bytes: size, runs })
  const cost = await measureVerifyCost(size, root)
  const cores = availableParallelism()
  const ceiling = verifiedCeiling(libp2p.mbps, cost, cores)
  const pull = median(rates.get(modes[0]!)!)
  const pullCpu = median(cpuRates.get(modes[0]!)!)
  console.log('')
  console.log(`shoal pair benchmark (${(size / MiB).toFixed(0)} MiB of ${values.data === 'weights' ? 'bf16 weights' : 'random bf16 bytes'} over loopback, block size ${values['block-size'] ?? 'default'}, median of ${runs}; load average ${loadavg()[0]?.toFixed(2) ?? '?'})`)
  console.log('                     wall-clock    per receiver CPU-second')
  console.log(`raw TCP              ${mb(raw.mbps)}    ${mb(raw.cpuMbps)}`)
  console.log(`bare libp2p stream   ${mb(libp2p.mbps)}    ${mb(libp2p.cpuMbps)}   (tcp + noise + yamux, one stream)`)
  for (const mode of modes) console.log(`shoal pull${modes.length > 1 ? ` (${mode})`.padEnd(11) : '          '} ${mb(median(rates.get(mode)!))}    ${mb(median(cpuRates.get(mode)!))}`)
  if (modes.length > 1) console.log(`compress ${modes[0]!} / ${modes[1]!}  ${(median(rates.get(modes[0]!)!) / median(rates.get(modes[1]!)!)).toFixed(2)}× wall-clock (medians of ${runs} pulls each, alternated)`)
  console.log(`ratio to libp2p      ${(pull / libp2p.mbps).toFixed(2)}×         ${(pullCpu / libp2p.cpuMbps).toFixed(2)}×   (goal >= 2)`)
  console.log(`ratio to raw TCP     ${(pull / raw.mbps).toFixed(2)}×`)
  console.log(`verify + store cost  sha2-256 ${mb(cost.hashMbps)}, writes as a pull does them (${cost.direct ? 'direct' : 'buffered'}) + fdatasync ${mb(cost.writeMbps)} per CPU-second (through the page cache ${mb(cost.bufferedWriteMbps)})`)
  console.log(`verified ceiling     ${mb(ceiling)}    (${cores} cores shared by both ends: the bare stream's CPU plus hashing and writing every byte)`)
  console.log(`ratio to ceiling     ${(pull / ceiling).toFixed(2)}×         (the ceiling is ${(ceiling / libp2p.mbps).toFixed(2)}× the bare stream here)`)
  console.log(`peak RSS             seed ${(seedRss / MiB).toFixed(0)} MiB, puller ${(pullerRss / MiB).toFixed(0)} MiB`)
} finally {
  for (const d of daemons) await d.stop('SIGKILL').catch(() => {})
  await rm(root, { recursive: true, force: true })
}
