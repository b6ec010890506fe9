#!/usr/bin/env -S node --max-semi-space-size=4
/**
 * `shoal`: the admin CLI. Parsing and output only: every command but `daemon` talks to the daemon
 * through `ShoalClient` over the local socket. `--json` on every command prints one JSON document
 * on stdout (errors as `{"error":{code,message}}`); human output otherwise. Progress bars go to
 * stderr, only on a TTY.
 */
import '../polyfill.js'
import { resolve } from 'node:path'
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander'
import { clientTarget, loadConfig, parseSize } from '../config/config.js'
import { ShoalError } from '../core/errors.js'
import { parseTags, type Metadata } from '../core/metadata.js'
import { parseRef } from '../core/names.js'
import { ShoalClient } from '../rpc/client.js'
import { RpcError } from '../rpc/errors.js'
import { SHOAL_VERSION } from '../version.js'
import { EXIT, exitCodeFor } from './exit-codes.js'
import { printSearch, printLeases, printCompress, printGc, printHeadHistory, printHeads, printKeys, printLabelResult, printModels, printPeers, printShow, printTrust, printVerify, printVersions } from './views.js'
import { parseDuration, parseTime } from './time.js'
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

program.command('daemon').helpGroup('Daemon:')
  .description('run the daemon in the foreground (stops on SIGTERM/SIGINT)')
  .option('--socket <path>', 'RPC socket path (default: <home>/shoal.sock)')
  .option('--listen <multiaddr>', 'listen address, repeatable (default /ip4/0.0.0.0/tcp/4077)', collect, [] as string[])
  .option('--peer <multiaddr>', 'peer to dial and keep connected, repeatable', collect, [] as string[])
  .option('--mdns', 'discover peers on the LAN with multicast DNS')
  .option('--follow <name@label>', 'pull and activate what this label points at, repeatable (* matches anything)', collect, [] as string[])
  .addOption(new Option('--strategy <name>', 'peer selection').choices(['weighted', 'round-robin', 'random']))
  .addOption(new Option('--log-level <level>', 'log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']))
  .action(async (opts: { socket?: string, logLevel?: string, listen: string[], peer: string[], follow: string[], mdns?: boolean, strategy?: string }) => {
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
        peers: opts.peer,
        follow: opts.follow
      }
    })
    await new Daemon(config).runUntilSignalled()
  })

program.command('id').helpGroup('Peers:')
  .description("print this node's peer id and listen addresses")
  .action(async () => {
    const r = await (await client()).id()
    out(r, () => {
      console.log(r.peerId)
      for (const a of r.addresses) console.log(`  ${a}`)
    })
  })

program.command('peers').helpGroup('Peers:')
  .description('list connected and remembered peers, with bytes received, offences and bans')
  .action(async () => {
    const rows = await (await client()).peers()
    out(rows, () => printPeers(rows))
  })

program.command('pull').helpGroup('Peers:')
  .description('fetch a version from peers (and origins), verified chunk by chunk')
  .argument('<ref>', 'name@<version id>')
  .option('--no-pin', 'do not pin the pulled version')
  .option('--cancel', 'stop this pull (running or recorded to resume) and remove its partial data')
  .action(async (ref: string, opts: { pin: boolean, cancel?: boolean }) => {
    if (opts.cancel === true) {
      const r = await (await client()).cancelPull(ref)
      out(r, () => console.log(`cancelled the pull of ${r.name}@${r.version}${r.running ? '' : ' (it was not running)'}; removed ${r.files} partial file${r.files === 1 ? '' : 's'} (${r.bytes} bytes)`))
      return
    }
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

program.command('status').helpGroup('Daemon:')
  .description('show the daemon and store status')
  .action(async () => {
    const s = await (await client()).status()
    out(s, () => {
      console.log(`shoal ${s.version}, pid ${s.pid}, up ${s.uptimeSeconds}s`)
      console.log(`home    ${s.home}`)
      console.log(`socket  ${s.socket}`)
      console.log(`store   ${s.store.models} models, ${s.store.versions} versions, ${s.store.blobs} blobs`)
      const r = s.heads.rejected
      for (const l of s.leases) console.log(`lease   ${l.holder} holds ${l.model}@${l.version} until ${new Date(l.expiresAt).toISOString()}`)
      for (const p of s.pulls) console.log(p.state === 'checking' ? `pull    ${p.name}@${p.version} checking its manifest` : `pull    ${p.name}@${p.version} ${p.bytes}/${p.totalBytes} bytes`)
      console.log(`heads   ${s.heads.accepted} accepted, ${s.heads.duplicate} duplicate, ${s.heads.stale} stale, ${s.heads.future} from the future, rejected: ${r.malformed} malformed, ${r.signature} bad signature, ${r.untrusted} untrusted`)
      console.log(`        ${s.heads.signatureChecks} signatures checked; over peers' budgets: ${s.heads.dropped} heads dropped unchecked, ${s.heads.syncsRefused} syncs refused`)
    })
  })

program.command('add').helpGroup('Models:')
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
  .option('--block-size <size>', 'bytes per verified block, a power of two from 16KiB to 4MiB (default 256KiB)', (v: string) => {
    try {
      return parseSize(v)
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message)
    }
  })
  .action(async (path: string, opts: { name: string, label?: string, meta?: string, description?: string, framework?: string, task?: string, license?: string, tag: string[], pin: boolean, origin?: string, blockSize?: number }) => {
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
        ...(opts.blockSize !== undefined ? { blockSize: opts.blockSize } : {}),
        ...(Object.keys(metadata).length > 0 ? { metadata } : {})
      }, p => bar.update(p))
      bar.stop()
      out(v, () => console.log(`added ${v.name}@${v.version}${v.labels.length > 0 ? ` (${v.labels.join(', ')})` : ''}`))
    } finally {
      bar.stop()
    }
  })

program.command('ls').helpGroup('Models:')
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

program.command('show').helpGroup('Models:')
  .description('show a version: metadata, files and tensor structure')
  .argument('<ref>', 'name, name@label or name@<version id>')
  .option('--tensors <n>', 'tensors to list per file in human output', '20')
  .action(async (ref: string, opts: { tensors: string }) => {
    const v = await (await client()).show(ref)
    out(v, () => printShow(v, Number(opts.tensors)))
  })

program.command('search').helpGroup('Models:')
  .description('find models by what they are: free text and filters, e.g. framework = "onnx" AND params > 1e9 ORDER BY created DESC LIMIT 5')
  .argument('[query...]', 'free text and/or filters (fields: name, description, framework, task, license, architecture, dtype, params, format, label, tags.<key>, created, updated, size, files, tensors, local); AND, OR, NOT, ( ), ORDER BY, LIMIT')
  .option('--similar <ref>', 'rank versions by how compatible their structure is with this one (same tensor names and shapes first)')
  .option('--limit <n>', 'at most this many rows')
  .action(async (words: string[], opts: { similar?: string, limit?: string }) => {
    const r = await (await client()).search(words.join(' '), {
      ...(opts.similar !== undefined ? { similar: opts.similar } : {}),
      ...(opts.limit !== undefined ? { limit: Number(opts.limit) } : {})
    })
    out(r, () => printSearch(r, opts.similar !== undefined))
  })

program.command('verify').helpGroup('Store:')
  .description('re-hash everything stored; quarantine what does not match')
  .action(async () => {
    const bar = progressBar('verifying', globals().json !== true)
    const report = await (await client()).verify(p => bar.update(p))
    bar.stop()
    out(report, () => printVerify(report))
    if (report.problems.length > 0) process.exitCode = EXIT.DAMAGED
  })

program.command('gc').helpGroup('Store:')
  .description('remove versions that are not pinned, labelled, kept for rollback or leased, and unreferenced data')
  .option('--dry-run', 'list what would be removed, remove nothing')
  .action(async (opts: { dryRun?: boolean }) => {
    const report = await (await client()).gc({ dryRun: opts.dryRun === true })
    out(report, () => printGc(report))
  })

program.command('compress').helpGroup('Store:')
  .description('keep a version compressed until something needs its files (not one a label, lease or the rollback window holds)')
  .argument('<ref>', 'name@<version id>, or a name or label that resolves to it')
  .action(async (ref: string) => {
    const r = await (await client()).compress(ref)
    out(r, () => printCompress(r))
  })

program.command('export').helpGroup('Models:')
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

const label = program.command('label').helpGroup('Labels and heads:').description('move labels fleet-wide with signed heads; show their history')
label.command('set')
  .description('publish a signed head pointing name@label at a version this node holds')
  .argument('<name>').argument('<label>').argument('<version>', 'version id, unique prefix, or another label')
  .option('--expect <version>', 'refuse unless the label currently points here ("none" for unset)')
  .option('--cold', 'followers stage the version and switch at --at, or when an operator runs shoal activate')
  .option('--at <time>', 'cold: switch at this time (ISO 8601, or +30s / +10m / +2h from now)')
  .option('--jitter <duration>', 'spread the switch over this window per node (e.g. 30s, 5m)')
  .option('--key <name>', 'publisher key of this home to sign with (default: default)')
  .action(async (name: string, lbl: string, version: string, opts: { expect?: string, cold?: boolean, at?: string, jitter?: string, key?: string }) => {
    if (opts.at !== undefined && opts.cold !== true) throw new InvalidArgumentError('--at needs --cold')
    const jitterMs = opts.jitter !== undefined ? parseDuration(opts.jitter) : undefined
    const activation = opts.cold === true
      ? { mode: 'cold' as const, ...(opts.at !== undefined ? { at: parseTime(opts.at) } : {}), ...(jitterMs !== undefined ? { jitterMs } : {}) }
      : { mode: 'hot' as const, ...(jitterMs !== undefined ? { jitterMs } : {}) }
    const r = await (await client()).setLabel({
      name, label: lbl, version, activation,
      ...(opts.key !== undefined ? { key: opts.key } : {}),
      ...(opts.expect !== undefined ? { expect: opts.expect === 'none' ? null : opts.expect } : {})
    })
    out(r, () => printLabelResult(r))
  })
label.command('rm')
  .description('publish a removal of name@label')
  .argument('<name>').argument('<label>')
  .action(async (name: string, lbl: string) => {
    const r = await (await client()).removeLabel(name, lbl)
    out(r, () => console.log(`removed ${name}@${lbl} (was ${r.previous ?? 'nothing'})`))
  })
label.command('history')
  .description('the heads that moved name@label, oldest first')
  .argument('<ref>', 'name@label')
  .action(async (ref: string) => {
    const rows = await (await client()).labelHistory(ref)
    out(rows, () => printHeadHistory(rows))
  })

program.command('rollback').helpGroup('Labels and heads:')
  .description('publish a head moving name@label back to the version it pointed at before')
  .argument('<ref>', 'name@label')
  .option('--key <name>', 'publisher key of this home to sign with')
  .action(async (ref: string, opts: { key?: string }) => {
    const r = await (await client()).rollback(ref, opts.key)
    out(r, () => printLabelResult(r))
  })

program.command('activate').helpGroup('Labels and heads:')
  .description('switch a staged (cold) label to its head now, on this node')
  .argument('<ref>', 'name@label')
  .action(async (ref: string) => {
    const r = await (await client()).activate(ref)
    out(r, () => console.log(r.version === r.previous ? `${r.name}@${r.label} already at ${r.version ?? 'nothing'}` : `${r.name}@${r.label} → ${r.version ?? 'nothing'} (was ${r.previous ?? 'nothing'})`))
  })

program.command('heads').helpGroup('Labels and heads:')
  .description('the heads this node believes, with stamps, and where its local labels are')
  .action(async () => {
    const rows = await (await client()).heads()
    out(rows, () => printHeads(rows))
  })

program.command('resolve').helpGroup('Serving processes:')
  .description('the version and local snapshot path of name@label (complete versions only)')
  .argument('<ref>', 'name, name@label or name@<version id>')
  .option('--ensure', 'pull it first if needed (a label: the version its head names) and wait until it is complete')
  .action(async (ref: string, opts: { ensure?: boolean }) => {
    const c = await client()
    if (opts.ensure !== true) {
      const r = await c.resolve(ref)
      out(r, () => console.log(`${r.model}@${r.version}\n${r.path}`))
      return
    }
    const json = globals().json === true
    const bar = pullProgress(!json)
    try {
      const r = await c.resolveEnsure(ref, p => { if (!json) bar.update(p) })
      bar.stop()
      out(r, () => console.log(`${r.model}@${r.version}\n${r.path}`))
    } finally {
      bar.stop()
    }
  })

program.command('watch').helpGroup('Serving processes:')
  .description('stream daemon events as they happen (Ctrl-C to stop); --json prints NDJSON')
  .option('--types <list>', 'comma-separated: label.moved,version.staged,version.removed,head.accepted,pull.started,pull.completed,pull.failed,pull.progress')
  .option('--model <name>', 'only events of this model')
  .option('--since <id>', 'replay events after this id first')
  .action(async (opts: { types?: string, model?: string, since?: string }) => {
    const c = await client()
    const aborter = new AbortController()
    process.once('SIGINT', () => aborter.abort())
    for await (const e of c.watch({
      signal: aborter.signal,
      ...(opts.types !== undefined ? { types: opts.types.split(',') } : {}),
      ...(opts.model !== undefined ? { model: opts.model } : {}),
      ...(opts.since !== undefined ? { since: opts.since } : {})
    })) {
      if (globals().json === true) process.stdout.write(`${JSON.stringify(e)}\n`)
      else console.log(`${e.id ?? ''} ${e.event} ${JSON.stringify(e.data)}`)
    }
  })

program.command('leases').helpGroup('Serving processes:')
  .description('versions held by serving processes (GC keeps them)')
  .action(async () => {
    const rows = await (await client()).leases()
    out(rows, () => printLeases(rows))
  })

const keys = program.command('keys').helpGroup('Keys and trust:').description("this home's publisher keys")
keys.command('list').description('list publisher keys and what they are trusted for')
  .action(async () => {
    const rows = await (await client()).keys()
    out(rows, () => printKeys(rows))
  })
keys.command('new').description('create a publisher key').argument('<name>')
  .action(async (name: string) => {
    const r = await (await client()).newKey(name)
    out(r, () => console.log(`${r.name} ${r.publicKey}`))
  })
keys.command('export').description('print a public key (to trust it elsewhere), or with --private the private key')
  .argument('[name]', 'key name', 'default')
  .option('--private', 'include the private key (PEM): anyone holding it can move your labels')
  .action(async (name: string, opts: { private?: boolean }) => {
    const r = await (await client()).exportKey(name, opts.private === true)
    out(r, () => console.log(r.privateKey ?? r.publicKey))
  })

const trust = program.command('trust').helpGroup('Keys and trust:').description('which publisher keys may move which models')
trust.command('list').description('list trust rules and where each comes from')
  .action(async () => {
    const rows = await (await client()).trust()
    out(rows, () => printTrust(rows))
  })
trust.command('add').description('trust a key for models matching a pattern (* matches anything)')
  .argument('<key>', 'publisher key (z6Mk…)').argument('[models]', 'model-name pattern', '*')
  .action(async (key: string, models: string) => {
    const r = await (await client()).addTrust(key, models)
    out(r, () => console.log(`trusting ${r.key} for ${r.models}`))
  })
trust.command('rm').description('remove trust.json rules of a key (for one pattern, or all)')
  .argument('<key>').argument('[models]')
  .action(async (key: string, models?: string) => {
    const r = await (await client()).removeTrust(key, models)
    out(r, () => console.log(`removed ${r.removed} rule(s)`))
  })

program.command('events').helpGroup('Serving processes:')
  .description('recent daemon events (label.moved, version.staged, version.removed, …)')
  .option('--since <id>', 'only events after this id')
  .option('--limit <n>', 'at most this many', '100')
  .action(async (opts: { since?: string, limit: string }) => {
    const r = await (await client()).events(opts.since, Number(opts.limit))
    out(r, () => {
      if (r.gone) console.log('(events before that id are gone; re-read the state)')
      for (const e of r.events) console.log(`${new Date(e.time).toISOString()} ${e.id} ${e.type} ${JSON.stringify(e.data)}`)
    })
  })

program.command('pin').helpGroup('Store:').description('keep a version through GC; name@label keeps every version the label points at').argument('<ref>')
  .action(async (ref: string) => {
    const r = await (await client()).pin(ref)
    out(r, () => console.log(r.label !== undefined ? `pinned ${r.name}@${r.label} (now ${r.version})` : `pinned ${r.name}@${r.version}`))
  })
program.command('unpin').helpGroup('Store:').description('let GC remove a version (or drop a label pin)').argument('<ref>')
  .action(async (ref: string) => {
    const r = await (await client()).unpin(ref)
    out(r, () => console.log(r.label !== undefined ? `unpinned ${r.name}@${r.label}` : `unpinned ${r.name}@${r.version}`))
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
