/**
 * The local demo: three daemons on loopback (each with its own home under .shoal-demo/). A
 * generated llama-shaped model is added on the first, inspected, versioned and labelled; the other
 * two pull it at the same time, peer to peer, verified chunk by chunk, and trade pieces with each
 * other; then the store is verified, a version exported, garbage listed. Every step runs the real
 * CLI and prints it.
 *
 *   ./scripts/demo.sh            (or: npm run demo)
 *
 * Options: --size-mib N (default 64), --keep (leave the home and exported files for a look).
 */
import { createHash } from 'node:crypto'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { DaemonProcess, ROOT } from './lib/daemon-proc.js'
import { changeTensors, llamaTensors, writeSafetensors } from './lib/synth.js'

const { values } = parseArgs({ options: { 'size-mib': { type: 'string', default: '64' }, keep: { type: 'boolean', default: false } } })
const sizeMiB = Number(values['size-mib'])
const base = join(ROOT, '.shoal-demo')
const home = join(base, 'home')

function step (title: string): void {
  console.log(`\n\x1b[1m== ${title}\x1b[0m`)
}

async function run (daemon: DaemonProcess, args: string[]): Promise<string> {
  console.log(`$ shoal ${args.join(' ')}`)
  const r = await daemon.cli(args)
  process.stdout.write(r.stdout)
  if (r.code !== 0) throw new Error(`shoal ${args.join(' ')} failed (${r.code}): ${r.stderr}`)
  return r.stdout
}

async function runJson<T> (daemon: DaemonProcess, args: string[]): Promise<T> {
  console.log(`$ shoal ${args.join(' ')}`)
  const r = await daemon.cli(args)
  if (r.code !== 0) throw new Error(`shoal ${args.join(' ')} failed (${r.code}): ${r.stderr}`)
  return JSON.parse(r.stdout) as T
}

/** `shoal pull --json` streams NDJSON progress lines; the last one carries the result. */
async function pull (daemon: DaemonProcess, ref: string): Promise<Shown> {
  console.log(`$ shoal pull ${ref}   (SHOAL_HOME=${daemon.home})`)
  const r = await daemon.cli(['pull', ref, '--json'])
  if (r.code !== 0) throw new Error(`shoal pull ${ref} failed (${r.code}): ${r.stderr}`)
  const last = r.stdout.trim().split('\n').pop() ?? '{}'
  return (JSON.parse(last) as { result: Shown }).result
}

interface Shown { version: string, path: string, parentShared?: { chunks: number, bytes: number } }

const sha = async (path: string): Promise<string> => createHash('sha256').update(await readFile(path)).digest('hex')

await rm(base, { recursive: true, force: true })
await mkdir(join(base, 'v1'), { recursive: true })
await mkdir(join(base, 'v2'), { recursive: true })

step(`generating a llama-shaped model (~${sizeMiB} MiB, bf16 safetensors) in ${join(base, 'v1')}`)
const tensors = llamaTensors(sizeMiB << 20, { hidden: 512, vocab: 8000 })
await writeSafetensors(join(base, 'v1', 'model.safetensors'), tensors, { format: 'pt' })
await writeFile(join(base, 'v1', 'config.json'), JSON.stringify({ architectures: ['LlamaForCausalLM'], hidden_size: 512 }, null, 2))
await writeFile(join(base, 'v1', 'shoal.json'), JSON.stringify({ description: 'demo model', framework: 'pytorch', task: 'text-generation', license: 'apache-2.0', tags: { lang: 'en' } }, null, 2))
const { tensors: tuned } = changeTensors(tensors, 0.1, 'ft')
await writeSafetensors(join(base, 'v2', 'model.safetensors'), tuned, { format: 'pt', note: 'fine-tuned' })
await writeFile(join(base, 'v2', 'config.json'), await readFile(join(base, 'v1', 'config.json')))
await writeFile(join(base, 'v2', 'shoal.json'), await readFile(join(base, 'v1', 'shoal.json')))

step(`starting the publishing daemon (SHOAL_HOME=${home})`)
const daemon = await new DaemonProcess(home).start()
console.log(`daemon pid ${daemon.pid ?? '?'}, socket ${daemon.socket}`)
const others: DaemonProcess[] = []
try {
  step('add version 1 and label it prod')
  const v1 = await runJson<Shown>(daemon, ['add', join(base, 'v1'), '--name', 'demo/llama', '--label', 'prod', '--json'])
  console.log(`version 1 is ${v1.version}`)
  step('inspect: metadata and structure, read from headers only')
  await run(daemon, ['show', 'demo/llama@prod', '--tensors', '8'])

  step('add version 2 (10% of tensors changed, header rewritten): unchanged tensors dedup')
  const v2 = await runJson<Shown>(daemon, ['add', join(base, 'v2'), '--name', 'demo/llama', '--label', 'canary', '--json'])
  const shared = v2.parentShared
  console.log(`version 2 is ${v2.version}; ${shared !== undefined ? `${(shared.bytes * 100).toFixed(1)}% of its bytes are chunks version 1 already has (a peer holding version 1 fetches only the rest)` : ''}`)
  await run(daemon, ['ls', 'demo/llama'])

  step('move prod to version 2 (compare-and-swap on the old target)')
  await run(daemon, ['label', 'set', 'demo/llama', 'prod', v2.version, '--expect', v1.version])
  await run(daemon, ['ls'])

  step('a serving process reads the snapshot folder directly')
  const shown = await runJson<Shown>(daemon, ['show', 'demo/llama@prod', '--json'])
  const same = await sha(join(shown.path, 'model.safetensors')) === await sha(join(base, 'v2', 'model.safetensors'))
  console.log(`${join(shown.path, 'model.safetensors')} matches the source: ${same}`)

  step('two more daemons on loopback pull version 2 at once, peer to peer')
  const { addresses } = await runJson<{ peerId: string, addresses: string[] }>(daemon, ['id', '--json'])
  for (const name of ['edge-1', 'edge-2']) {
    const d = await new DaemonProcess(join(base, name), ['--peer', addresses[0] ?? '']).start()
    others.push(d)
    console.log(`${name}: pid ${d.pid ?? '?'}, SHOAL_HOME=${d.home}`)
  }
  const t0 = performance.now()
  const pulled = await Promise.all(others.map(async d => await pull(d, `demo/llama@${v2.version}`)))
  console.log(`both pulled in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
  for (const [i, d] of others.entries()) {
    const ok = await sha(join(pulled[i]?.path ?? '', 'model.safetensors')) === await sha(join(base, 'v2', 'model.safetensors'))
    console.log(`edge-${i + 1}: ${pulled[i]?.path ?? '?'} matches the source: ${ok}`)
    await run(d, ['peers'])
  }

  step('verify the store, export a version, collect garbage')
  await run(daemon, ['verify'])
  await run(daemon, ['export', `demo/llama@${v1.version}`, join(base, 'export')])
  console.log(`exported model.safetensors matches version 1: ${await sha(join(base, 'export', 'model.safetensors')) === await sha(join(base, 'v1', 'model.safetensors'))}`)
  await run(daemon, ['unpin', `demo/llama@${v1.version}`])
  await run(daemon, ['gc', '--dry-run'])
  await run(daemon, ['status'])
} finally {
  for (const d of others) await d.stop()
  await daemon.stop()
  if (values.keep !== true) await rm(base, { recursive: true, force: true })
}
step('done')
