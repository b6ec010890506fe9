/**
 * The local demo: four daemons on loopback (each with its own home under .shoal-demo/). A
 * generated llama-shaped model is added on the publisher, inspected, versioned; three edge daemons
 * follow `demo/llama@prod` and trust the publisher's key. Publishing `prod` (a signed head) spreads
 * by gossip: every edge pulls the version peer to peer, verified chunk by chunk, trading pieces with
 * the others, and switches its local label when the version is complete. Then `prod` moves to a
 * fine-tune cold (staged everywhere, switched at a set time), is rolled back (instant: the edges
 * kept the old version). A serving process (examples/serve-onnx) on an edge answers inference
 * requests for `demo/linear@prod`, an ONNX model, and switches when the label moves, with a lease on
 * what it has loaded. bf16 weights drawn like trained ones cross the wire compressed to an edge
 * that asks for it. Last, the store is verified, a version exported, garbage listed. Every step
 * runs the real CLI and prints it.
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
import { writeOnnxModelFolder } from './lib/onnx-model.js'
import { weightSafetensors } from './lib/weights.js'
import { spawn, type ChildProcess } from 'node:child_process'

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

/** Starts examples/serve-onnx against a daemon's home; resolves once it listens. */
async function startServer (home: string): Promise<{ child: ChildProcess, port: number }> {
  const args = [join(ROOT, 'examples', 'serve-onnx', 'dist', 'server.js'), '--model', 'demo/linear', '--label', 'prod', '--mode', 'hot', '--port', '0']
  console.log(`$ node ${args.join(' ')}   (SHOAL_HOME=${home})`)
  const child = spawn(process.execPath, args, { env: { ...process.env, SHOAL_HOME: home }, stdio: ['ignore', 'ignore', 'pipe'], cwd: ROOT })
  return await new Promise((resolve, reject) => {
    let text = ''
    child.stderr?.on('data', (d: Buffer) => {
      text += d.toString()
      const m = /"msg":"listening".*?"port":(\d+)/.exec(text)
      if (m !== null) resolve({ child, port: Number(m[1]) })
    })
    child.once('exit', code => reject(new Error(`serve-onnx exited ${String(code)}: ${text}`)))
  })
}

/** Polls every daemon until `resolve <ref>` answers `version`. */
async function waitAll (daemons: DaemonProcess[], version: string, timeoutMs = 60_000, ref = 'demo/llama@prod'): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (const d of daemons) {
    for (;;) {
      const r = await d.cli(['resolve', ref, '--json'])
      if (r.code === 0 && (JSON.parse(r.stdout) as { version: string }).version === version) break
      if (Date.now() > deadline) throw new Error(`${d.home} did not reach ${version} within ${timeoutMs} ms`)
      await sleep(100)
    }
  }
}

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

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
  step('this home made a publisher key at first start; other nodes trust it to move labels')
  const keys = await runJson<Array<{ name: string, publicKey: string }>>(daemon, ['keys', 'list', '--json'])
  await run(daemon, ['keys', 'list'])
  const publisherKey = keys[0]?.publicKey ?? ''

  step('add version 1 (no label yet)')
  const v1 = await runJson<Shown>(daemon, ['add', join(base, 'v1'), '--name', 'demo/llama', '--json'])
  console.log(`version 1 is ${v1.version}`)
  step('inspect: metadata and structure, read from headers only')
  await run(daemon, ['show', `demo/llama@${v1.version}`, '--tensors', '8'])

  step('three edge daemons follow demo/llama@prod and trust the publisher key')
  const { addresses } = await runJson<{ peerId: string, addresses: string[] }>(daemon, ['id', '--json'])
  let previous = addresses[0] ?? ''
  for (const name of ['edge-1', 'edge-2', 'edge-3']) {
    const edgeHome = join(base, name)
    await mkdir(edgeHome, { recursive: true })
    // edge-1 asks for compressed blocks at any rate; by default (`auto`) a node asks only while a
    // peer sends slower than 48 MiB/s, which loopback never is.
    const transfer = name === 'edge-1' ? { transfer: { compress: 'always' } } : {}
    await writeFile(join(edgeHome, 'config.json'), JSON.stringify({ follow: ['demo/*@prod'], trust: [{ key: publisherKey, models: 'demo/*' }], ...transfer }, null, 2))
    // A chain: each edge dials the one before it, so heads and chunks travel edge to edge.
    const d = await new DaemonProcess(edgeHome, ['--peer', previous]).start()
    others.push(d)
    previous = (await runJson<{ addresses: string[] }>(d, ['id', '--json'])).addresses[0] ?? previous
    console.log(`${name}: pid ${d.pid ?? '?'}, SHOAL_HOME=${edgeHome}, config ${JSON.stringify({ follow: ['demo/*@prod'], trust: 'publisher key for demo/*' })}`)
  }
  await sleep(1000)

  step('publish prod → version 1: a signed head, gossiped; every edge pulls and switches')
  let t0 = performance.now()
  await run(daemon, ['label', 'set', 'demo/llama', 'prod', v1.version])
  await waitAll(others, v1.version)
  console.log(`all edges resolve demo/llama@prod to version 1 after ${((performance.now() - t0) / 1000).toFixed(1)} s`)
  for (const [i, d] of others.entries()) {
    const r = await runJson<{ version: string, path: string }>(d, ['resolve', 'demo/llama@prod', '--json'])
    const ok = await sha(join(r.path, 'model.safetensors')) === await sha(join(base, 'v1', 'model.safetensors'))
    console.log(`edge-${i + 1}: ${r.path} matches the source: ${ok}`)
  }
  await run(others[2] ?? daemon, ['heads'])
  await run(others[2] ?? daemon, ['peers'])

  step('add version 2 (10% of tensors changed, header rewritten): unchanged tensors dedup')
  const v2 = await runJson<Shown>(daemon, ['add', join(base, 'v2'), '--name', 'demo/llama', '--json'])
  const shared = v2.parentShared
  console.log(`version 2 is ${v2.version}; ${shared !== undefined ? `${(shared.bytes * 100).toFixed(1)}% of its bytes are chunks version 1 already has (edges fetch only the rest)` : ''}`)
  await run(daemon, ['ls', 'demo/llama'])

  step('move prod to version 2, cold: edges pull and stage it now, switch together in 4 s')
  t0 = performance.now()
  await run(daemon, ['label', 'set', 'demo/llama', 'prod', v2.version, '--expect', v1.version, '--cold', '--at', '+4s'])
  await sleep(2000)
  await run(others[0] ?? daemon, ['heads'])
  await waitAll(others, v2.version)
  console.log(`all edges switched to version 2 after ${((performance.now() - t0) / 1000).toFixed(1)} s`)
  await run(others[0] ?? daemon, ['events', '--limit', '8'])

  step('roll prod back: the edges kept version 1, so they switch at once')
  t0 = performance.now()
  await run(daemon, ['rollback', 'demo/llama@prod'])
  await waitAll(others, v1.version)
  console.log(`all edges back on version 1 after ${((performance.now() - t0) / 1000).toFixed(2)} s`)
  await run(others[1] ?? daemon, ['label', 'history', 'demo/llama@prod'])

  step('a serving process on edge-1: an ONNX model served by examples/serve-onnx, following demo/linear@prod')
  const lin1 = await writeOnnxModelFolder(join(base, 'linear-1'), { seed: 'one' })
  await writeOnnxModelFolder(join(base, 'linear-2'), { seed: 'two' })
  const l1 = await runJson<Shown>(daemon, ['add', join(base, 'linear-1'), '--name', 'demo/linear', '--label', 'prod', '--json'])
  console.log(`demo/linear@prod → ${l1.version} (y = x·W + b, ${lin1.inputs} inputs)`)
  const edge = others[0] ?? daemon
  await waitAll([edge], l1.version, 60_000, 'demo/linear@prod')
  const server = await startServer(edge.home)
  try {
    // The KServe v2 inference protocol.
    const request = { inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3, 4] }] }
    const answer = async (): Promise<{ version: string, y: number[] }> => {
      const r = await (await fetch(`http://127.0.0.1:${server.port}/v2/models/demo%2Flinear/infer`, { method: 'POST', body: JSON.stringify(request) })).json() as { model_version: string, outputs: Array<{ name: string, data: number[] }> }
      return { version: r.model_version, y: r.outputs.find(o => o.name === 'y')?.data ?? [] }
    }
    const a1 = await answer()
    console.log(`$ curl -d '${JSON.stringify(request)}' :${server.port}/v2/models/demo%2Flinear/infer   → model_version ${a1.version.slice(0, 16)}…, y = ${JSON.stringify(a1.y.map(v => Number(v.toFixed(3))))}`)
    await run(edge, ['leases'])
    const l2 = await runJson<Shown>(daemon, ['add', join(base, 'linear-2'), '--name', 'demo/linear', '--json'])
    await run(daemon, ['label', 'set', 'demo/linear', 'prod', l2.version])
    let a2 = a1
    const deadline = Date.now() + 30_000
    while (a2.version !== l2.version && Date.now() < deadline) { await sleep(100); a2 = await answer() }
    console.log(`the server switched without dropping a request → model_version ${a2.version.slice(0, 16)}…, y = ${JSON.stringify(a2.y.map(v => Number(v.toFixed(3))))}`)
    await run(edge, ['leases'])
  } finally {
    server.child.kill('SIGTERM')
    await new Promise(resolve => server.child.once('exit', resolve))
  }

  step('bf16 weights drawn like trained ones cross the wire compressed (byte planes + Huffman), verified over the raw bytes')
  await mkdir(join(base, 'weights'), { recursive: true })
  await writeFile(join(base, 'weights', 'model.safetensors'), weightSafetensors(Array.from({ length: 4 }, (_, i) => ({ name: `layers.${i}.mlp.weight`, dtype: 'BF16' as const, bytes: 4 << 20, seed: i + 1 }))))
  const w = await runJson<Shown>(daemon, ['add', join(base, 'weights'), '--name', 'demo/weights', '--json'])
  await run(others[0] ?? daemon, ['pull', `demo/weights@${w.version}`])
  await run(others[0] ?? daemon, ['peers'])
  console.log(`edge-1's copy matches the source: ${await sha(join((await runJson<{ path: string }>(others[0] ?? daemon, ['resolve', `demo/weights@${w.version}`, '--json'])).path, 'model.safetensors')) === await sha(join(base, 'weights', 'model.safetensors'))}`)

  step('read a file by byte range (shoal cat): only verified bytes, from the snapshot or from a pull still running')
  // Bytes 8… of a safetensors file are its JSON header: a loader reads tensor offsets without the weights.
  await run(others[0] ?? daemon, ['cat', 'demo/llama@prod', 'model.safetensors', '--start', '8', '--end', '200'])
  console.log('')

  step('verify the store, export a version, collect garbage')
  await run(daemon, ['verify'])
  await run(daemon, ['export', `demo/llama@${v1.version}`, join(base, 'export')])
  console.log(`exported model.safetensors matches version 1: ${await sha(join(base, 'export', 'model.safetensors')) === await sha(join(base, 'v1', 'model.safetensors'))}`)
  await run(daemon, ['unpin', `demo/llama@${v2.version}`])
  await run(daemon, ['gc', '--dry-run'])
  console.log('(version 2 stays: a label keeps its last 3 versions so a rollback is instant; labels.keep in config.json)')
  await run(daemon, ['status'])
} finally {
  for (const d of others) await d.stop()
  await daemon.stop()
  if (values.keep !== true) await rm(base, { recursive: true, force: true })
}
step('done')
