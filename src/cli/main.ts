#!/usr/bin/env node
/**
 * `shoal`: the admin CLI. Parsing and output only: every command but `daemon` talks to the daemon
 * through `ShoalClient` over the local socket. `--json` on every command prints one JSON document
 * on stdout (errors as `{"error":{code,message}}`); human output otherwise. Progress bars go to
 * stderr, only on a TTY.
 */
import '../polyfill.js'
import { resolve } from 'node:path'
import { Command, CommanderError, Option } from 'commander'
import { clientTarget, loadConfig } from '../config/config.js'
import { ShoalError } from '../core/errors.js'
import { parseTags, type Metadata } from '../core/metadata.js'
import { parseRef } from '../core/names.js'
import { ShoalClient } from '../rpc/client.js'
import { RpcError } from '../rpc/errors.js'
import { SHOAL_VERSION } from '../version.js'
import { EXIT, exitCodeFor } from './exit-codes.js'
import { printGc, printModels, printPeers, printShow, printVerify, printVersions } from './views.js'
import { progressBar, pullProgress } from './progress.js'

interface Globals { json?: boolean, home?: string }

const program = new Command()
program
  .name('shoal')
  .description('Peer-to-peer model distribution: content-addressed, model-aware versions.')
  .version(SHOAL_VERSION)
  .option('--json', 'print one JSON document on stdout')
  .option('--home <dir>', 'shoal home (default: $SHOAL_HOME, else $XDG_DATA_HOME/shoal)')
  .showHelpAfterError()
  .exitOverride()

const globals = (): Globals => program.opts<Globals>()

async function client (): Promise<ShoalClient> {
  const home = globals().home
  if (process.env.SHOAL_HOST !== undefined && process.env.SHOAL_HOST !== '') return new ShoalClient(clientTarget())
  const config = await loadConfig(home !== undefined ? { home } : {})
  return new ShoalClient({ socketPath: config.socket })
}

function out (value: unknown, human: () => void): void {
  if (globals().json === true) process.stdout.write(`${JSON.stringify(value, null, 2)}\n`)
  else human()
}

const collect = (v: string, prev: string[]): string[] => [...prev, v]

program.command('daemon')
  .description('run the daemon in the foreground (stops on SIGTERM/SIGINT)')
  .option('--socket <path>', 'RPC socket path (default: <home>/shoal.sock)')
  .option('--listen <multiaddr>', 'listen address, repeatable (default /ip4/0.0.0.0/tcp/4077)', collect, [] as string[])
  .option('--peer <multiaddr>', 'peer to dial and keep connected, repeatable', collect, [] as string[])
  .option('--mdns', 'discover peers on the LAN with multicast DNS')
  .addOption(new Option('--strategy <name>', 'peer selection').choices(['weighted', 'round-robin', 'random']))
  .addOption(new Option('--log-level <level>', 'log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']))
  .action(async (opts: { socket?: string, logLevel?: string, listen: string[], peer: string[], mdns?: boolean, strategy?: string }) => {
    const { Daemon } = await import('../daemon/daemon.js')
    const home = globals().home
    const config = await loadConfig({
      ...(home !== undefined ? { home } : {}),
      overrides: {
        ...(opts.socket !== undefined ? { socket: resolve(opts.socket) } : {}),
        ...(opts.logLevel !== undefined ? { logLevel: opts.logLevel } : {}),
        ...(opts.strategy !== undefined ? { strategy: opts.strategy } : {}),
        ...(opts.mdns === true ? { mdns: true } : {}),
        listen: opts.listen,
        peers: opts.peer
      }
    })
    await new Daemon(config).runUntilSignalled()
  })

program.command('id')
  .description("print this node's peer id and listen addresses")
  .action(async () => {
    const r = await (await client()).id()
    out(r, () => {
      console.log(r.peerId)
      for (const a of r.addresses) console.log(`  ${a}`)
    })
  })

program.command('peers')
  .description('list connected and remembered peers, with bytes received, offences and bans')
  .action(async () => {
    const rows = await (await client()).peers()
    out(rows, () => printPeers(rows))
  })

program.command('pull')
  .description('fetch a version from peers (and origins), verified chunk by chunk')
  .argument('<ref>', 'name@<version id>')
  .option('--no-pin', 'do not pin the pulled version')
  .action(async (ref: string, opts: { pin: boolean }) => {
    const json = globals().json === true
    const bar = pullProgress(!json)
    try {
      const v = await (await client()).pull({ ref, pin: opts.pin }, p => {
        if (json) process.stdout.write(`${JSON.stringify({ type: 'progress', ...p })}\n`)
        else bar.update(p)
      })
      bar.stop()
      if (json) process.stdout.write(`${JSON.stringify({ type: 'result', result: v })}\n`)
      else console.log(`pulled ${v.name}@${v.version} → ${v.path}`)
    } finally {
      bar.stop()
    }
  })

program.command('status')
  .description('show the daemon and store status')
  .action(async () => {
    const s = await (await client()).status()
    out(s, () => {
      console.log(`shoal ${s.version}, pid ${s.pid}, up ${s.uptimeSeconds}s`)
      console.log(`home    ${s.home}`)
      console.log(`socket  ${s.socket}`)
      console.log(`store   ${s.store.models} models, ${s.store.versions} versions, ${s.store.blobs} blobs`)
    })
  })

program.command('add')
  .description('add a model folder or file as a new immutable version')
  .argument('<path>', 'folder or file')
  .requiredOption('-n, --name <name>', 'model name, e.g. llama-8b or org/llama-8b')
  .option('-l, --label <label>', 'point this label at the new version')
  .option('--meta <file>', 'metadata JSON file (default: shoal.json in the folder, if present)')
  .option('--description <text>', 'metadata: description')
  .option('--framework <name>', 'metadata: framework (pytorch, onnx, gguf, …)')
  .option('--task <task>', 'metadata: task or type (text-generation, ner, …)')
  .option('--license <id>', 'metadata: license')
  .option('--tag <tag>', 'metadata: tag as key=value or key (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
  .option('--origin <url>', 'HTTP(S) base URL serving the same files (web seed for pullers)')
  .option('--no-pin', 'do not pin the new version (GC may then remove it unless labelled)')
  .action(async (path: string, opts: { name: string, label?: string, meta?: string, description?: string, framework?: string, task?: string, license?: string, tag: string[], pin: boolean, origin?: string }) => {
    const metadata: Metadata = {
      ...(opts.description !== undefined ? { description: opts.description } : {}),
      ...(opts.framework !== undefined ? { framework: opts.framework } : {}),
      ...(opts.task !== undefined ? { task: opts.task } : {}),
      ...(opts.license !== undefined ? { license: opts.license } : {}),
      ...(opts.tag.length > 0 ? { tags: parseTags(opts.tag) } : {})
    }
    const bar = progressBar('adding', globals().json !== true)
    try {
      const v = await (await client()).add({
        path: resolve(path), name: opts.name, pin: opts.pin,
        ...(opts.label !== undefined ? { label: opts.label } : {}),
        ...(opts.meta !== undefined ? { metaFile: resolve(opts.meta) } : {}),
        ...(opts.origin !== undefined ? { origin: opts.origin } : {}),
        ...(Object.keys(metadata).length > 0 ? { metadata } : {})
      }, p => bar.update(p))
      bar.stop()
      out(v, () => console.log(`added ${v.name}@${v.version}${v.labels.length > 0 ? ` (${v.labels.join(', ')})` : ''}`))
    } finally {
      bar.stop()
    }
  })

program.command('ls')
  .description('list models, or the versions of one model (oldest first)')
  .argument('[name]', 'model name')
  .action(async (name?: string) => {
    const c = await client()
    if (name === undefined) {
      const models = await c.models()
      out(models, () => printModels(models))
    } else {
      const versions = await c.versions(parseRef(name).name)
      out(versions, () => printVersions(versions))
    }
  })

program.command('show')
  .description('show a version: metadata, files and tensor structure')
  .argument('<ref>', 'name, name@label or name@<version id>')
  .option('--tensors <n>', 'tensors to list per file in human output', '20')
  .action(async (ref: string, opts: { tensors: string }) => {
    const v = await (await client()).show(ref)
    out(v, () => printShow(v, Number(opts.tensors)))
  })

program.command('verify')
  .description('re-hash everything stored; quarantine what does not match')
  .action(async () => {
    const bar = progressBar('verifying', globals().json !== true)
    const report = await (await client()).verify(p => bar.update(p))
    bar.stop()
    out(report, () => printVerify(report))
    if (report.problems.length > 0) process.exitCode = EXIT.DAMAGED
  })

program.command('gc')
  .description('remove versions that are neither pinned nor labelled, and unreferenced data')
  .option('--dry-run', 'list what would be removed, remove nothing')
  .action(async (opts: { dryRun?: boolean }) => {
    const report = await (await client()).gc({ dryRun: opts.dryRun === true })
    out(report, () => printGc(report))
  })

program.command('export')
  .description("write a version's files into a folder, byte-identical to what was added")
  .argument('<ref>', 'name, name@label or name@<version id>')
  .argument('<dir>', 'destination folder')
  .option('--overwrite', 'replace existing files')
  .action(async (ref: string, dir: string, opts: { overwrite?: boolean }) => {
    const bar = progressBar('exporting', globals().json !== true)
    const r = await (await client()).export({ ref, dest: resolve(dir), overwrite: opts.overwrite === true }, p => bar.update(p))
    bar.stop()
    out(r, () => console.log(`exported ${r.name}@${r.version} to ${r.dest} (${r.files} files)`))
  })

const label = program.command('label').description('move or remove labels (local)')
label.command('set')
  .description('point name@label at a version')
  .argument('<name>').argument('<label>').argument('<version>', 'version id, unique prefix, or another label')
  .option('--expect <version>', 'refuse unless the label currently points here ("none" for unset)')
  .action(async (name: string, lbl: string, version: string, opts: { expect?: string }) => {
    const r = await (await client()).setLabel({ name, label: lbl, version, ...(opts.expect !== undefined ? { expect: opts.expect === 'none' ? null : opts.expect } : {}) })
    out(r, () => console.log(`${r.name}@${r.label} → ${r.version}${r.previous !== null ? ` (was ${r.previous})` : ''}`))
  })
label.command('rm')
  .description('remove a label')
  .argument('<name>').argument('<label>')
  .action(async (name: string, lbl: string) => {
    await (await client()).removeLabel(name, lbl)
    out({ name, label: lbl, removed: true }, () => console.log(`removed ${name}@${lbl}`))
  })

program.command('pin').description('keep a version through GC').argument('<ref>')
  .action(async (ref: string) => {
    const r = await (await client()).pin(ref)
    out(r, () => console.log(`pinned ${r.name}@${r.version}`))
  })
program.command('unpin').description('let GC remove a version unless labelled').argument('<ref>')
  .action(async (ref: string) => {
    const r = await (await client()).unpin(ref)
    out(r, () => console.log(`unpinned ${r.name}@${r.version}`))
  })

async function main (): Promise<void> {
  try {
    await program.parseAsync(process.argv)
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? EXIT.OK : EXIT.USAGE
      return
    }
    const code = err instanceof RpcError || err instanceof ShoalError ? err.code : 'ERROR'
    const message = (err as Error).message
    if (globals().json === true) process.stdout.write(`${JSON.stringify({ error: { code, message } })}\n`)
    process.stderr.write(`shoal: ${message}\n`)
    process.exitCode = exitCodeFor(code)
  }
}

await main()
