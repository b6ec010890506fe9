/**
 * Memory benchmark (issue 3, benchmark 3): peak RSS of a daemon that pulls a `--gib` GiB version
 * (default 4) from a seed while serving it onward to a second puller at the same time. The middle
 * daemon's VmHWM (peak resident set, from /proc) is the figure; goal ≤ 256 MiB.
 *
 *   npm run bench:memory -- [--gib 4] [--transfer '{"encrypt":false}']
 *
 * `--transfer`: JSON written as every daemon's `transfer` config.
 */
import '../src/polyfill.js'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { ShoalClient } from '../src/rpc/client.js'
import { DaemonProcess } from './lib/daemon-proc.js'
import { llamaTensors, writeSafetensors } from './lib/synth.js'

const { values } = parseArgs({ options: { gib: { type: 'string', default: '4' }, transfer: { type: 'string' } } })
const GiB = 1024 ** 3
const MiB = 1024 ** 2
const root = await mkdtemp(join(tmpdir(), 'shoal-bench-memory-'))
const daemons: DaemonProcess[] = []
const start = async (name: string, peers: string[]): Promise<DaemonProcess> => {
  const home = join(root, name)
  if (values.transfer !== undefined) {
    await mkdir(home, { recursive: true })
    await writeFile(join(home, 'config.json'), JSON.stringify({ transfer: JSON.parse(values.transfer) as unknown }))
  }
  const d = new DaemonProcess(home, peers.flatMap(p => ['--peer', p]))
  daemons.push(d)
  return await d.start()
}
try {
  await mkdir(join(root, 'model'))
  await writeSafetensors(join(root, 'model', 'model.safetensors'), llamaTensors(Number(values.gib) * GiB, { hidden: 4096 }))
  const seed = await start('seed', [])
  const { version, structure } = await seed.json<{ version: string, structure: { totalSize: number } }>(['add', join(root, 'model'), '--name', 'mem'])
  const addr = (await seed.json<{ addresses: string[] }>(['id'])).addresses[0] ?? ''
  const middle = await start('middle', [addr])
  const middleAddr = (await middle.json<{ addresses: string[] }>(['id'])).addresses[0] ?? ''
  const last = await start('last', [middleAddr])
  const idle = await middle.peakRss()
  const t0 = performance.now()
  const first = new ShoalClient({ socketPath: middle.socket }).pull({ ref: `mem@${version}` })
  // The second puller knows only the middle daemon: everything it gets, the middle one served
  // while (and after) pulling it.
  await new Promise(resolve => setTimeout(resolve, 1500))
  const second = new ShoalClient({ socketPath: last.socket }).pull({ ref: `mem@${version}` })
  await Promise.all([first, second])
  const seconds = (performance.now() - t0) / 1000
  const peak = await middle.peakRss()
  const served = (await last.json<Array<{ bytesReceived: number }>>(['peers'])).reduce((n, r) => n + r.bytesReceived, 0)
  console.log(`shoal memory benchmark: ${(structure.totalSize / GiB).toFixed(2)} GiB version, pulled by a daemon that serves it onward at the same time (${seconds.toFixed(1)} s)`)
  console.log(`middle daemon served ${(served / GiB).toFixed(2)} GiB onward`)
  console.log(`middle daemon peak RSS  ${(peak / MiB).toFixed(0)} MiB (idle ${(idle / MiB).toFixed(0)} MiB)   goal <= 256 MiB  ${peak <= 256 * MiB ? 'PASS' : 'MISS'}`)
  console.log(`seed peak RSS           ${((await seed.peakRss()) / MiB).toFixed(0)} MiB`)
} finally {
  for (const d of daemons) await d.stop('SIGKILL').catch(() => {})
  await rm(root, { recursive: true, force: true })
}
