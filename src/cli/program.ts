/**
 * The `shoal` command line: parsing, output and exit codes. Every command but `daemon` talks to the
 * daemon through `ShoalClient` (made by `CliIo.connect`); this module never prints by itself but
 * through `CliIo`, so the same program runs in the binary (`main.ts`) and in unit tests.
 *
 * Contracts:
 * - Every failure prints one message on stderr (`shoal: …`, or commander's `error: …` with the
 *   help) and exits with the code from `exit-codes.ts`: 2 for a usage error, wherever it is found
 *   (while parsing or inside an action).
 * - With `--json`, stdout holds JSON only: the answer, or `{"error":{code,message}}` for any
 *   failure, usage errors included; `--json --version` prints `{"client":{"version"}}`.
 * - Numbers typed by the user are checked before anything is sent (`--limit abc` names `--limit`).
 */
import { resolve } from 'node:path'
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander'
import { ShoalError, UsageError } from '../core/errors.js'
import { parseSize } from '../core/size.js'
import { parseTags, type Metadata } from '../core/metadata.js'
import { parseRef } from '../core/names.js'
import type { ShoalClient } from '../rpc/client.js'
import { RpcError } from '../rpc/errors.js'
import { EVENT_TYPES, isEventType } from '../core/events.js'
import { clientTarget, type ClientTarget } from '../rpc/target.js'
import { SHOAL_VERSION } from '../version.js'
import { EXIT, exitCodeFor } from './exit-codes.js'
import { completionScript, SHELLS } from './completion.js'
import { bytes, configureFormat, formatRows } from './format.js'
import { hfHubCache, listHfCache } from './hf-cache.js'
import { progressBar, pullProgress } from './progress.js'
import { parseDuration, parseTime } from './time.js'
import { renderCompress, renderDf, renderGc, renderHeadHistory, renderHeads, renderKeys, renderLabelResult, renderLeases, renderModels, renderPeers, renderSearch, renderShow, renderTrust, renderVerify, renderVersions } from './views.js'

/** What the CLI needs of a client: the public methods of `ShoalClient`. */
export type CliClient = Pick<ShoalClient, keyof ShoalClient>

/** The world the program runs in: streams, environment, the daemon, the terminal. */
export interface CliIo {
  /** Writes to stdout as given (callers add newlines). */
  out: (text: string) => void
  /** Writes to stderr as given. */
  err: (text: string) => void
  /** Writes bytes to stdout, resolving once stdout can take more (`cat`). @default through `out`, as latin1 */
  write?: (bytes: Uint8Array) => Promise<void>
  env: NodeJS.ProcessEnv
  /** Whether stdout is a terminal: tables with rules and relative times, else plain columns. */
  stdoutTTY?: boolean
  /** Whether stderr is a terminal (progress bars, notices). */
  stderrTTY: boolean
  /** Whether stdin is a terminal: only then does a command ask before deleting. */
  stdinTTY?: boolean
  /** Asks a yes/no question on the terminal; true for yes. */
  confirm?: (question: string) => Promise<boolean>
  connect: (target: ClientTarget) => CliClient
  /** Calls `handler` on Ctrl-C (instead of the default exit); returns a function that stops that. */
  onInterrupt: (handler: () => void) => () => void
  /** Runs the daemon in this process until it is signalled (only `main.ts` can). */
  daemon?: (options: DaemonOptions) => Promise<void>
}

export interface DaemonOptions { home?: string, socket?: string, logLevel?: string, listen: string[], peers: string[], follow: string[], mdns?: boolean, strategy?: string }

interface Globals { json?: boolean, home?: string, color?: boolean }

interface ListOptions { quiet?: boolean, format?: string }

/** `-q` and `--format` on a command that lists rows; `id` names what `-q` prints. */
function listOptions (command: Command, id: string): Command {
  return command
    .option('-q, --quiet', `print only ${id}, one per line`)
    .option('--format <template>', 'a template per row ({{.field}}, e.g. \'{{.version}}\\t{{.size}}\'), or fields as columns (version,size)')
}

/** `--json` given before the command's own arguments end (`--` stops option parsing). */
function jsonRequested (argv: string[]): boolean {
  const end = argv.indexOf('--')
  return (end < 0 ? argv : argv.slice(0, end)).includes('--json')
}

/** An integer option value, or a commander error naming the option (commander adds the flag). */
function integer (min: number, max: number): (value: string) => number {
  return (value: string) => {
    if (!/^\d+$/.test(value.trim()) || Number(value) < min || Number(value) > max) throw new InvalidArgumentError(`Give a whole number from ${min} to ${max}.`)
    return Number(value)
  }
}

/** Examples shown at the end of a command's help. */
function examples (...lines: string[]): string {
  return `\nExamples:\n${lines.map(l => `  $ ${l}`).join('\n')}\n`
}

/**
 * Runs one command line (`argv` without the node and script paths) and returns the exit code.
 */
export async function runCli (argv: string[], io: CliIo): Promise<number> {
  const json = jsonRequested(argv)
  configureFormat({ tty: io.stdoutTTY === true })
  let exitCode: number = EXIT.OK
  let printed = false
  const program = buildProgram(io, code => { exitCode = code }, () => { printed = true })
  const commands = new Set(program.commands.map(c => c.name()))
  const first = argv.findIndex(a => commands.has(a))
  const leading = first < 0 ? argv : argv.slice(0, first)
  if (json && (leading.includes('--version') || leading.includes('-V'))) {
    io.out(`${JSON.stringify({ client: { version: SHOAL_VERSION } })}\n`)
    return EXIT.OK
  }
  try {
    await program.parseAsync(argv, { from: 'user' })
    return exitCode
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.exitCode === 0) return EXIT.OK
      const message = err.message.replace(/^error: /, '').trim()
      // Errors thrown inside an action (InvalidArgumentError from a time or duration) were not printed.
      if (!printed) io.err(`shoal: ${message}\n`)
      if (json) io.out(`${JSON.stringify({ error: { code: 'USAGE', message } })}\n`)
      return EXIT.USAGE
    }
    const code = err instanceof RpcError || err instanceof ShoalError ? err.code : 'ERROR'
    const message = (err as Error).message
    if (json) io.out(`${JSON.stringify({ error: { code, message } })}\n`)
    io.err(`shoal: ${message}\n`)
    return exitCodeFor(code)
  }
}

/**
 * The commands, writing through `io`; `setExit` sets the exit code of a command that succeeds with
 * a finding (`verify`), `onErrorPrinted` is told when commander printed a usage error itself.
 */
export function buildProgram (io: CliIo, setExit: (code: number) => void, onErrorPrinted: () => void = () => {}): Command {
  const program = new Command()
  program
    // Before any command is added: subcommands copy these settings when they are made.
    .configureOutput({
      writeOut: text => { io.out(text) },
      writeErr: text => { io.err(text) },
      outputError: (text, write) => { onErrorPrinted(); write(text) }
    })
    .name('shoal')
    .description('Peer-to-peer model distribution: content-addressed, model-aware versions.')
    .version(SHOAL_VERSION, '-V, --version', 'print the client version (shoal version also asks the daemon)')
    .option('--json', 'print one JSON document on stdout (errors too)')
    .option('--home <dir>', 'shoal home (default: $SHOAL_HOME, else $XDG_DATA_HOME/shoal)')
    .option('--no-color', 'no colours (as NO_COLOR=1)')
    .showHelpAfterError('(see shoal --help, or shoal <command> --help for its usage and examples)')
    .exitOverride()
    .addHelpText('after', examples('shoal daemon &', 'shoal add ./llama-8b --name llama-8b --label prod', 'shoal ls', 'shoal show llama-8b@prod', 'shoal <command> --help'))

  const globals = (): Globals => program.opts<Globals>()
  const json = (): boolean => globals().json === true
  const client = (): CliClient => io.connect(clientTarget(io.env, globals().home))
  const print = (text: string): void => { io.out(`${text}\n`) }
  const out = (value: unknown, human: () => string): void => {
    if (json()) io.out(`${JSON.stringify(value, null, 2)}\n`)
    else print(human())
  }
  /** A list: JSON, ids only (`-q`), `--format`, or the human table. */
  const list = <T>(rows: readonly T[], opts: ListOptions, id: (row: T) => string, human: () => string, value: unknown = rows): void => {
    if (json()) out(value, human)
    else if (opts.quiet === true) { if (rows.length > 0) print(rows.map(id).join('\n')) } else if (opts.format !== undefined) { if (rows.length > 0) print(formatRows(rows, opts.format)) } else print(human())
  }

  program.command('daemon').helpGroup('Daemon:')
    .description('run the daemon in the foreground (stops on SIGTERM/SIGINT)')
    .option('--socket <path>', 'RPC socket path (default: <home>/shoal.sock)')
    .option('--listen <multiaddr>', 'listen address, repeatable (default: /ip4/0.0.0.0/tcp/4077)', collect)
    .option('--peer <multiaddr>', 'peer to dial and keep connected, repeatable', collect)
    .option('--mdns', 'discover peers on the LAN with multicast DNS')
    .option('--follow <name@label>', 'pull and activate what this label points at, repeatable (* matches anything)', collect)
    .addOption(new Option('--strategy <name>', 'peer selection').choices(['weighted', 'round-robin', 'random']))
    .addOption(new Option('--log-level <level>', 'log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']))
    .addHelpText('after', examples('shoal daemon --listen /ip4/0.0.0.0/tcp/4077 --peer /ip4/10.0.0.2/tcp/4077/p2p/12D3KooW… &', "shoal daemon --follow 'llama-8b@prod'"))
    .action(async (opts: { socket?: string, logLevel?: string, listen?: string[], peer?: string[], follow?: string[], mdns?: boolean, strategy?: string }) => {
      if (io.daemon === undefined) throw new UsageError('the daemon runs only from the shoal binary')
      const home = globals().home
      await io.daemon({
        ...(home !== undefined ? { home } : {}),
        ...(opts.socket !== undefined ? { socket: resolve(opts.socket) } : {}),
        ...(opts.logLevel !== undefined ? { logLevel: opts.logLevel } : {}),
        ...(opts.strategy !== undefined ? { strategy: opts.strategy } : {}),
        ...(opts.mdns === true ? { mdns: true } : {}),
        listen: opts.listen ?? [], peers: opts.peer ?? [], follow: opts.follow ?? []
      })
    })

  program.command('version').helpGroup('Daemon:')
    .description('print the client and daemon versions')
    .addHelpText('after', examples('shoal version', 'shoal version --json'))
    .action(async () => {
      const daemon = await client().version().catch((err: unknown) => ({ error: (err as Error).message }))
      out({ client: { version: SHOAL_VERSION }, daemon: 'error' in daemon ? null : daemon }, () => [
        `client  ${SHOAL_VERSION}`,
        'error' in daemon ? `daemon  not reachable: ${daemon.error}` : `daemon  ${daemon.version} (api ${daemon.api}, node ${daemon.node})`
      ].join('\n'))
    })

  program.command('completion').helpGroup('Daemon:')
    .description('print a shell completion script (commands, options, model names)')
    .argument('<shell>', `${SHELLS.join(', ')}`)
    .addHelpText('after', examples('shoal completion bash > /etc/bash_completion.d/shoal', 'source <(shoal completion bash)        # in ~/.bashrc', 'shoal completion zsh > "${fpath[1]}/_shoal"', 'shoal completion fish > ~/.config/fish/completions/shoal.fish'))
    .action((shell: string) => { io.out(completionScript(program, shell)) })

  program.command('id').helpGroup('Peers:')
    .description("print this node's peer id and listen addresses")
    .addHelpText('after', examples('shoal id'))
    .action(async () => {
      const r = await client().id()
      out(r, () => [r.peerId, ...r.addresses.map(a => `  ${a}`)].join('\n'))
    })

  listOptions(program.command('peers').helpGroup('Peers:')
    .description('list connected and remembered peers, with bytes received, offences and bans'), 'peer ids')
    .addHelpText('after', examples('shoal peers', 'shoal peers --json', 'shoal peers --format peerId,connected,bytesReceived'))
    .action(async (opts: ListOptions) => {
      const rows = await client().peers()
      list(rows, opts, r => r.peerId, () => renderPeers(rows))
    })

  program.command('pull').helpGroup('Peers:')
    .description('fetch a version from peers (and origins), verified chunk by chunk')
    .argument('<ref>', 'name@<version id>, name@label (the version its head names), name@<unique prefix> or name (latest, else newest)')
    .option('--no-pin', 'do not pin the pulled version')
    .option('--cancel', 'stop this pull (running or recorded to resume) and remove its partial data')
    .addHelpText('after', examples('shoal pull llama-8b@prod', 'shoal pull llama-8b@bafkreihdwdce', 'shoal pull llama-8b@bafkreihdwdce --cancel'))
    .action(async (ref: string, opts: { pin: boolean, cancel?: boolean }) => {
      const c = client()
      if (opts.cancel === true) {
        const r = await c.cancelPull(ref)
        out(r, () => `cancelled the pull of ${r.name}@${r.version}${r.running ? '' : ' (it was not running)'}; removed ${r.files} partial file${r.files === 1 ? '' : 's'} (${r.bytes} bytes)`)
        return
      }
      const bar = pullProgress(!json())
      const aborter = new AbortController()
      const stopListening = io.onInterrupt(() => aborter.abort())
      let finding = ''
      try {
        const v = await c.pull({ ref, pin: opts.pin }, p => {
          if (json()) { io.out(`${JSON.stringify({ type: 'progress', ...p })}\n`); return }
          if (p.phase === 'finding') {
            const line = `finding peers (${String(p.connected ?? 0)} connected, ${String(p.have ?? 0)} have it)`
            if (line !== finding) io.err(`${line}\n`)
            finding = line
            return
          }
          bar.update(p)
        }, aborter.signal)
        bar.stop()
        if (json()) io.out(`${JSON.stringify({ type: 'result', result: v })}\n`)
        else print(`pulled ${v.name}@${v.version} → ${v.path}`)
      } catch (err) {
        if (!aborter.signal.aborted) throw err
        bar.stop()
        io.err(`\ninterrupted: the daemon goes on pulling ${ref} in the background (shoal status shows it; shoal pull ${ref} --cancel stops it)\n`)
        setExit(EXIT.INTERRUPTED)
      } finally {
        stopListening()
        bar.stop()
      }
    })

  program.command('cat').helpGroup('Serving processes:')
    .description("write a file of a version to stdout: verified bytes only; a version being pulled is read as it arrives, one not here is pulled")
    .argument('<ref>', 'name@label, name@<version id> or name')
    .argument('<path>', "the file's path in the version (shoal show lists them)")
    .option('--start <byte>', 'first byte to write', integer(0, Number.MAX_SAFE_INTEGER))
    .option('--end <byte>', 'first byte not to write (default: the end of the file)', integer(1, Number.MAX_SAFE_INTEGER))
    .addHelpText('after', examples('shoal cat llama-8b@prod config.json', 'shoal cat llama-8b@prod model.safetensors --start 0 --end 8 | xxd', 'shoal cat llama-8b@bafkrei… model.safetensors > model.safetensors'))
    .action(async (ref: string, path: string, opts: { start?: number, end?: number }) => {
      if (json()) throw new UsageError('cat writes the file\'s bytes to stdout; --json does not apply to it')
      if (opts.start !== undefined && opts.end !== undefined && opts.end <= opts.start) throw new UsageError(`--end ${opts.end} must be past --start ${opts.start}: it is the first byte not written`)
      const aborter = new AbortController()
      const stopListening = io.onInterrupt(() => aborter.abort())
      const write = io.write ?? (async (bytes: Uint8Array) => { io.out(Buffer.from(bytes).toString('latin1')) })
      try {
        const stream = await client().openRead(ref, path, { ...(opts.start !== undefined ? { start: opts.start } : {}), ...(opts.end !== undefined ? { end: opts.end } : {}), signal: aborter.signal })
        for await (const part of stream) await write(part as Uint8Array)
      } catch (err) {
        if (!aborter.signal.aborted) throw err
        setExit(EXIT.INTERRUPTED)
      } finally {
        stopListening()
      }
    })

  program.command('status').helpGroup('Daemon:')
    .description('show the daemon and store status')
    .addHelpText('after', examples('shoal status', 'shoal status --json'))
    .action(async () => {
      const s = await client().status()
      out(s, () => {
        const r = s.heads.rejected
        return [
          `shoal ${s.version}, pid ${s.pid}, up ${s.uptimeSeconds}s`,
          `home    ${s.home}`,
          `socket  ${s.socket}`,
          `store   ${s.store.models} models, ${s.store.versions} versions, ${s.store.blobs} blobs`,
          ...s.leases.map(l => `lease   ${l.holder} holds ${l.model}@${l.version} until ${new Date(l.expiresAt).toISOString()}`),
          ...s.pulls.map(p => p.state === 'checking' ? `pull    ${p.name}@${p.version} checking its manifest` : `pull    ${p.name}@${p.version} ${p.bytes}/${p.totalBytes} bytes`),
          `heads   ${s.heads.accepted} accepted, ${s.heads.duplicate} duplicate, ${s.heads.stale} stale, ${s.heads.future} from the future, rejected: ${r.malformed} malformed, ${r.signature} bad signature, ${r.untrusted} untrusted`,
          `        ${s.heads.signatureChecks} signatures checked; over peers' budgets: ${s.heads.dropped} heads dropped unchecked, ${s.heads.syncsRefused} syncs refused`
        ].join('\n')
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
    .option('--tag <tag>', 'metadata: tag as key=value or key (repeatable)', collect)
    .option('--origin <url>', 'HTTP(S) base URL serving the same files (web seed for pullers)')
    .option('--no-pin', 'do not pin the new version (GC may then remove it unless labelled)')
    .option('--block-size <size>', 'bytes per verified block, a power of two from 16KiB to 4MiB (default: 256KiB)', (v: string) => {
      try {
        return parseSize(v)
      } catch (err) {
        throw new InvalidArgumentError((err as Error).message)
      }
    })
    .addHelpText('after', examples('shoal add ./llama-8b --name llama-8b --label prod --tag task=chat', 'shoal add ./model.gguf --name org/tiny --meta meta.json'))
    .action(async (path: string, opts: { name: string, label?: string, meta?: string, description?: string, framework?: string, task?: string, license?: string, tag?: string[], pin: boolean, origin?: string, blockSize?: number }) => {
      const tags = opts.tag ?? []
      const metadata: Metadata = {
        ...(opts.description !== undefined ? { description: opts.description } : {}),
        ...(opts.framework !== undefined ? { framework: opts.framework } : {}),
        ...(opts.task !== undefined ? { task: opts.task } : {}),
        ...(opts.license !== undefined ? { license: opts.license } : {}),
        ...(tags.length > 0 ? { tags: parseTags(tags) } : {})
      }
      const bar = progressBar('adding', !json())
      try {
        const v = await client().add({
          path: resolve(path), name: opts.name, pin: opts.pin,
          ...(opts.label !== undefined ? { label: opts.label } : {}),
          ...(opts.meta !== undefined ? { metaFile: resolve(opts.meta) } : {}),
          ...(opts.origin !== undefined ? { origin: opts.origin } : {}),
          ...(opts.blockSize !== undefined ? { blockSize: opts.blockSize } : {}),
          ...(Object.keys(metadata).length > 0 ? { metadata } : {})
        }, p => bar.update(p))
        bar.stop()
        out(v, () => `${v.existing === true ? 'already here, same content: ' : 'added '}${v.name}@${v.version}${v.labels.length > 0 ? ` (${v.labels.join(', ')})` : ''}`)
      } finally {
        bar.stop()
      }
    })

  program.command('import-hf').helpGroup('Models:')
    .description('add every model of a Hugging Face hub cache: each snapshot its refs name, labelled by the ref (main, …)')
    .argument('[dir]', 'the hub cache (default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)')
    .option('--no-pin', 'do not pin the imported versions')
    .option('--dry-run', 'list what would be imported, import nothing')
    .addHelpText('after', examples('shoal import-hf', 'shoal import-hf ~/.cache/huggingface/hub --dry-run'))
    .action(async (dir: string | undefined, opts: { pin: boolean, dryRun?: boolean }) => {
      const hub = resolve(dir ?? hfHubCache(io.env))
      const listing = await listHfCache(hub)
      const imported: Array<{ name: string, revision: string, labels: string[], version?: string, existing?: boolean }> = []
      const skipped = [...listing.skipped]
      const c = client()
      for (const snap of listing.snapshots) {
        if (opts.dryRun === true) { imported.push({ name: snap.name, revision: snap.revision, labels: snap.labels }); continue }
        try {
          const [first, ...rest] = snap.labels
          const v = await c.add({ path: snap.path, name: snap.name, pin: opts.pin, ...(first !== undefined ? { label: first } : {}) })
          for (const label of rest) await c.setLabel({ name: snap.name, label, version: v.version })
          imported.push({ name: snap.name, revision: snap.revision, labels: snap.labels, version: v.version, existing: v.existing === true })
        } catch (err) {
          skipped.push({ what: `${snap.name} (revision ${snap.revision.slice(0, 12)})`, why: (err as Error).message })
        }
      }
      if (skipped.length > 0 && opts.dryRun !== true) setExit(EXIT.ERROR)
      out({ hub, imported, skipped }, () => [
        ...(listing.snapshots.length === 0 ? [`no model snapshots in ${hub}`] : []),
        ...imported.map(i => opts.dryRun === true
          ? `would import ${i.name} from revision ${i.revision.slice(0, 12)}${i.labels.length > 0 ? ` (${i.labels.join(', ')})` : ''}`
          : `${i.existing === true ? 'already here' : 'imported'} ${i.name}@${i.version ?? ''}${i.labels.length > 0 ? ` (${i.labels.join(', ')})` : ''} from revision ${i.revision.slice(0, 12)}`),
        ...skipped.map(x => `skipped ${x.what}: ${x.why}`)
      ].join('\n'))
    })

  listOptions(program.command('ls').helpGroup('Models:')
    .description('list models, or the versions of one model (oldest first)')
    .argument('[name]', 'model name'), 'model names, or version ids')
    .addHelpText('after', examples('shoal ls', 'shoal ls llama-8b', 'shoal ls llama-8b -q', "shoal ls llama-8b --format '{{.version}}\\t{{.size}}'"))
    .action(async (name: string | undefined, opts: ListOptions) => {
      const c = client()
      if (name === undefined) {
        const models = await c.models()
        list(models, opts, m => m.name, () => renderModels(models))
      } else {
        const versions = await c.versions(parseRef(name).name)
        list(versions, opts, v => v.version, () => renderVersions(versions))
      }
    })

  program.command('show').helpGroup('Models:')
    .description('show a version: metadata, files and tensor structure')
    .argument('<ref>', 'name, name@label or name@<version id>')
    .option('--tensors <n>', 'tensors to list per file in human output (default: 20)', integer(0, 1_000_000))
    .addHelpText('after', examples('shoal show llama-8b@prod', 'shoal show llama-8b --tensors 100'))
    .action(async (ref: string, opts: { tensors?: number }) => {
      const v = await client().show(ref)
      out(v, () => renderShow(v, opts.tensors ?? 20))
    })

  listOptions(program.command('search').helpGroup('Models:')
    .description('find models by what they are: free text and filters, e.g. framework = "onnx" AND params > 1e9 ORDER BY created DESC LIMIT 5')
    .argument('[query...]', 'free text and/or filters (fields: name, description, framework, task, license, architecture, dtype, params, format, label, tags.<key>, created, updated, size, files, tensors, local); AND, OR, NOT, ( ), ORDER BY, LIMIT')
    .option('--similar <ref>', 'rank versions by how compatible their structure is with this one (same tensor names and shapes first)')
    .option('--limit <n>', 'at most this many rows', integer(1, 10_000)), 'name@version')
    .addHelpText('after', examples('shoal search llama', `shoal search 'framework = "onnx" AND params > 1e9'`, 'shoal search --similar llama-8b@prod'))
    .action(async (words: string[], opts: ListOptions & { similar?: string, limit?: number }) => {
      const r = await client().search(words.join(' '), {
        ...(opts.similar !== undefined ? { similar: opts.similar } : {}),
        ...(opts.limit !== undefined ? { limit: opts.limit } : {})
      })
      list(r.rows, opts, row => `${row.model}@${row.version}`, () => renderSearch(r, opts.similar !== undefined), r)
    })

  program.command('verify').helpGroup('Store:')
    .description('re-hash everything stored; quarantine what does not match')
    .addHelpText('after', examples('shoal verify', 'shoal verify --json'))
    .action(async () => {
      const bar = progressBar('verifying', !json())
      const report = await client().verify(p => bar.update(p))
      bar.stop()
      out(report, () => renderVerify(report))
      if (report.problems.length > 0) setExit(EXIT.DAMAGED)
    })

  program.command('gc').helpGroup('Store:')
    .description('remove versions that are not pinned, labelled, kept for rollback or leased, and unreferenced data')
    .option('--dry-run', 'list what would be removed, remove nothing')
    .option('-y, --yes', 'do not ask before removing (on a terminal, gc shows what it would remove and asks)')
    .addHelpText('after', examples('shoal gc --dry-run', 'shoal gc', 'shoal gc --yes'))
    .action(async (opts: { dryRun?: boolean, yes?: boolean }) => {
      const c = client()
      const ask = opts.dryRun !== true && opts.yes !== true && !json() && io.stdinTTY === true && io.confirm !== undefined
      if (ask) {
        const plan = await c.gc({ dryRun: true })
        if (plan.versions.length + plan.blobs.length + plan.partials.length === 0) { print('nothing to remove'); return }
        print(renderGc(plan))
        if (await io.confirm?.(`Remove ${plan.versions.length} versions, ${plan.blobs.length} blobs, ${plan.partials.length} partial files (${bytes(plan.bytes)})?`) !== true) {
          print('nothing removed')
          return
        }
      }
      const report = await c.gc({ dryRun: opts.dryRun === true })
      out(report, () => renderGc(report))
    })

  program.command('rm').helpGroup('Store:')
    .description('remove a version now (refused when labelled, pinned or leased, saying why, unless --force)')
    .argument('<ref>', 'name@<version id>, name@<unique prefix>, name@label or name')
    .option('-f, --force', 'remove it even when labelled (its local labels go), pinned or leased')
    .addHelpText('after', examples('shoal rm llama-8b@bafkreihdwdce', 'shoal rm llama-8b@canary --force'))
    .action(async (ref: string, opts: { force?: boolean }) => {
      const r = await client().removeVersion({ ref, ...(opts.force === true ? { force: true } : {}) })
      out(r, () => `removed ${r.name}@${r.version} (${bytes(r.bytes)} freed)${r.overrode.length > 0 ? `; it was ${r.overrode.join(', ')}` : ''}`)
    })

  program.command('compress').helpGroup('Store:')
    .description('keep a version compressed until something needs its files (not one a label, lease or the rollback window holds)')
    .argument('<ref>', 'name@<version id>, or a name or label that resolves to it')
    .addHelpText('after', examples('shoal compress llama-8b@bafkreihdwdce'))
    .action(async (ref: string) => {
      const r = await client().compress(ref)
      out(r, () => renderCompress(r))
    })

  listOptions(program.command('df').helpGroup('Store:')
    .description('disk usage by model and version: size, shared with other versions, unique to it; what gc would free'), 'version refs')
    .addHelpText('after', examples('shoal df', 'shoal df --format name,version,unique'))
    .action(async (opts: ListOptions) => {
      const r = await client().df()
      list(r.versions, opts, v => `${v.name}@${v.version}`, () => renderDf(r), r)
    })

  program.command('export').helpGroup('Models:')
    .description("write a version's files into a folder, byte-identical to what was added; --hf: into a Hugging Face hub cache")
    .argument('<ref>', 'name, name@label or name@<version id>')
    .argument('[dir]', 'destination folder; with --hf the hub cache (default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)')
    .option('--overwrite', 'replace existing files')
    .option('--hf', 'write models--<org>--<name>/{blobs,snapshots,refs} so transformers and huggingface_hub load it offline (HF_HUB_OFFLINE=1)')
    .addHelpText('after', examples('shoal export llama-8b@prod ./out', 'shoal export --hf llama-8b@prod', 'HF_HUB_OFFLINE=1 python -c "from transformers import AutoModel; AutoModel.from_pretrained(\'llama-8b\')"'))
    .action(async (ref: string, dir: string | undefined, opts: { overwrite?: boolean, hf?: boolean }) => {
      if (dir === undefined && opts.hf !== true) throw new UsageError('give the destination folder: shoal export <ref> <dir> (or --hf for the Hugging Face cache)')
      const dest = resolve(dir ?? hfHubCache(io.env))
      const bar = progressBar('exporting', !json())
      const r = await client().export({ ref, dest, overwrite: opts.overwrite === true, ...(opts.hf === true ? { layout: 'hf' as const } : {}) }, p => bar.update(p))
      bar.stop()
      out(r, () => `exported ${r.name}@${r.version} to ${r.dest} (${r.files} files)${opts.hf === true ? `; load it as ${r.name} with HF_HUB_OFFLINE=1${dir !== undefined ? ` HF_HUB_CACHE=${dest}` : ''}` : ''}`)
    })

  const label = program.command('label').helpGroup('Labels and heads:').description('move labels fleet-wide with signed heads; show their history')
    .addHelpText('after', examples('shoal label set llama-8b prod <version>', 'shoal label history llama-8b@prod'))
  label.command('set')
    .description('publish a signed head pointing name@label at a version this node holds')
    .argument('<name>', 'model name, e.g. llama-8b')
    .argument('<label>', 'label to move, e.g. prod')
    .argument('<version>', 'version id, unique prefix, or another label')
    .option('--expect <version>', 'refuse unless the label currently points here ("none" for unset)')
    .option('--cold', 'followers stage the version and switch at --at, or when an operator runs shoal activate')
    .option('--at <time>', 'cold: switch at this time (ISO 8601, or +30s / +10m / +2h from now)')
    .option('--jitter <duration>', 'spread the switch over this window per node (e.g. 30s, 5m)')
    .option('--key <name>', 'publisher key of this home to sign with (default: default)')
    .addHelpText('after', examples('shoal label set llama-8b prod bafkrei… --expect bafkrea…', 'shoal label set llama-8b prod bafkrei… --cold --at 2026-12-01T09:00:00Z --jitter 5m'))
    .action(async (name: string, lbl: string, version: string, opts: { expect?: string, cold?: boolean, at?: string, jitter?: string, key?: string }) => {
      if (opts.at !== undefined && opts.cold !== true) throw new UsageError('--at needs --cold (a hot switch happens at once)')
      const jitterMs = opts.jitter !== undefined ? usage(() => parseDuration(opts.jitter ?? ''), '--jitter') : undefined
      const at = opts.at !== undefined ? usage(() => parseTime(opts.at ?? ''), '--at') : undefined
      const activation = opts.cold === true
        ? { mode: 'cold' as const, ...(at !== undefined ? { at } : {}), ...(jitterMs !== undefined ? { jitterMs } : {}) }
        : { mode: 'hot' as const, ...(jitterMs !== undefined ? { jitterMs } : {}) }
      const r = await client().setLabel({
        name, label: lbl, version, activation,
        ...(opts.key !== undefined ? { key: opts.key } : {}),
        ...(opts.expect !== undefined ? { expect: opts.expect === 'none' ? null : opts.expect } : {})
      })
      out(r, () => renderLabelResult(r))
    })
  label.command('rm')
    .description('publish a removal of name@label')
    .argument('<name>', 'model name').argument('<label>', 'label to remove')
    .addHelpText('after', examples('shoal label rm llama-8b canary'))
    .action(async (name: string, lbl: string) => {
      const r = await client().removeLabel(name, lbl)
      out(r, () => `removed ${name}@${lbl} (was ${r.previous ?? 'nothing'})`)
    })
  label.command('history')
    .description('the heads that moved name@label, oldest first')
    .argument('<ref>', 'name@label')
    .addHelpText('after', examples('shoal label history llama-8b@prod'))
    .action(async (ref: string) => {
      const rows = await client().labelHistory(ref)
      out(rows, () => renderHeadHistory(rows))
    })

  program.command('rollback').helpGroup('Labels and heads:')
    .description('publish a head moving name@label back to the version it pointed at before')
    .argument('<ref>', 'name@label')
    .option('--key <name>', 'publisher key of this home to sign with')
    .addHelpText('after', examples('shoal rollback llama-8b@prod'))
    .action(async (ref: string, opts: { key?: string }) => {
      const r = await client().rollback(ref, opts.key)
      out(r, () => renderLabelResult(r))
    })

  program.command('activate').helpGroup('Labels and heads:')
    .description('switch a staged (cold) label to its head now, on this node')
    .argument('<ref>', 'name@label')
    .addHelpText('after', examples('shoal activate llama-8b@prod'))
    .action(async (ref: string) => {
      const r = await client().activate(ref)
      out(r, () => r.version === r.previous ? `${r.name}@${r.label} already at ${r.version ?? 'nothing'}` : `${r.name}@${r.label} → ${r.version ?? 'nothing'} (was ${r.previous ?? 'nothing'})`)
    })

  listOptions(program.command('heads').helpGroup('Labels and heads:')
    .description('the heads this node believes, with stamps, and where its local labels are'), 'name@label')
    .addHelpText('after', examples('shoal heads', "shoal heads --format '{{.model}}@{{.label}} {{.version}} {{.state}}'"))
    .action(async (opts: ListOptions) => {
      const c = client()
      const rows = await c.heads()
      if (json() || rows.length > 0 || opts.quiet === true || opts.format !== undefined) { list(rows, opts, r => `${r.model}@${r.label}`, () => renderHeads(rows)); return }
      const s = await c.status()
      const peers = (await c.peers()).filter(p => p.connected).length
      print(renderHeads(rows, { peers, untrusted: s.heads.rejected.untrusted, publishers: s.untrusted ?? [] }))
    })

  program.command('resolve').helpGroup('Serving processes:')
    .description('the version and local snapshot path of name@label (complete versions only)')
    .argument('<ref>', 'name, name@label or name@<version id>')
    .option('--ensure', 'pull it first if needed (a label: the version its head names) and wait until it is complete')
    .addHelpText('after', examples('shoal resolve llama-8b@prod', 'shoal resolve llama-8b@prod --ensure --json'))
    .action(async (ref: string, opts: { ensure?: boolean }) => {
      const c = client()
      if (opts.ensure !== true) {
        const r = await c.resolve(ref)
        out(r, () => `${r.model}@${r.version}\n${r.path}`)
        return
      }
      const bar = pullProgress(!json())
      try {
        const r = await c.resolveEnsure(ref, p => { if (!json()) bar.update(p) })
        bar.stop()
        out(r, () => `${r.model}@${r.version}\n${r.path}`)
      } finally {
        bar.stop()
      }
    })

  program.command('watch').helpGroup('Serving processes:')
    .description('stream daemon events as they happen (Ctrl-C to stop); --json prints NDJSON')
    .option('--types <list>', `comma-separated: ${EVENT_TYPES.join(',')}`)
    .option('--model <name>', 'only events of this model')
    .option('--since <id>', 'replay events after this id first')
    .addHelpText('after', examples('shoal watch --model llama-8b --types label.moved,version.staged', 'shoal watch --json'))
    .action(async (opts: { types?: string, model?: string, since?: string }) => {
      const names = opts.types?.split(',').map(t => t.trim())
      const unknown = names?.filter(t => !isEventType(t)) ?? []
      if (unknown.length > 0) throw new UsageError(`--types: unknown event type ${unknown.map(t => JSON.stringify(t)).join(', ')}; use ${EVENT_TYPES.join(', ')}`)
      const types = names?.filter(isEventType)
      const c = client()
      const aborter = new AbortController()
      const stopListening = io.onInterrupt(() => aborter.abort())
      try {
        for await (const e of c.watch({
          signal: aborter.signal,
          ...(types !== undefined ? { types } : {}),
          ...(opts.model !== undefined ? { model: opts.model } : {}),
          ...(opts.since !== undefined ? { since: opts.since } : {})
        })) {
          if (json()) io.out(`${JSON.stringify(e)}\n`)
          else print(`${e.id ?? ''} ${e.event} ${JSON.stringify(e.data)}`)
        }
      } finally {
        stopListening()
      }
    })

  listOptions(program.command('leases').helpGroup('Serving processes:')
    .description('versions held by serving processes (GC keeps them)'), 'lease ids')
    .addHelpText('after', examples('shoal leases', 'shoal leases -q'))
    .action(async (opts: ListOptions) => {
      const rows = await client().leases()
      list(rows, opts, r => r.id, () => renderLeases(rows))
    })

  const keys = program.command('keys').helpGroup('Keys and trust:').description("this home's publisher keys")
    .addHelpText('after', examples('shoal keys list', 'shoal keys export'))
  listOptions(keys.command('list').description('list publisher keys and what they are trusted for'), 'public keys')
    .addHelpText('after', examples('shoal keys list', 'shoal keys list -q'))
    .action(async (opts: ListOptions) => {
      const rows = await client().keys()
      list(rows, opts, r => r.publicKey, () => renderKeys(rows))
    })
  keys.command('new').description('create a publisher key').argument('<name>', 'key name')
    .addHelpText('after', examples('shoal keys new release'))
    .action(async (name: string) => {
      const r = await client().newKey(name)
      out(r, () => `${r.name} ${r.publicKey}`)
    })
  keys.command('export').description('print a public key (to trust it elsewhere), or with --private the private key')
    .argument('[name]', 'key name', 'default')
    .option('--private', 'include the private key (PEM): anyone holding it can move your labels')
    .addHelpText('after', examples('shoal keys export', 'shoal keys export release'))
    .action(async (name: string, opts: { private?: boolean }) => {
      const r = await client().exportKey(name, opts.private === true)
      out(r, () => r.privateKey ?? r.publicKey)
    })

  const trust = program.command('trust').helpGroup('Keys and trust:').description('which publisher keys may move which models')
    .addHelpText('after', examples('shoal trust list', "shoal trust add z6Mk… 'llama-*'"))
  listOptions(trust.command('list').description('list trust rules and where each comes from'), 'keys')
    .addHelpText('after', examples('shoal trust list', 'shoal trust list --format key,models'))
    .action(async (opts: ListOptions) => {
      const rows = await client().trust()
      list(rows, opts, r => r.key, () => renderTrust(rows))
    })
  trust.command('add').description('trust a key for models matching a pattern (* matches anything)')
    .argument('<key>', 'publisher key (z6Mk…)').argument('[models]', 'model-name pattern; quote it so the shell leaves * alone', '*')
    .addHelpText('after', examples("shoal trust add z6Mk… 'llama-*'", "shoal trust add z6Mk… 'org/*'"))
    .action(async (key: string, models: string) => {
      const r = await client().addTrust(key, models)
      out(r, () => `trusting ${r.key} for ${r.models}`)
    })
  trust.command('rm').description('remove trust.json rules of a key (for one pattern, or all)')
    .argument('<key>', 'publisher key').argument('[models]', 'only the rule for this pattern')
    .addHelpText('after', examples('shoal trust rm z6Mk…', "shoal trust rm z6Mk… 'llama-*'"))
    .action(async (key: string, models?: string) => {
      const r = await client().removeTrust(key, models)
      out(r, () => `removed ${r.removed} rule(s)`)
    })

  listOptions(program.command('events').helpGroup('Serving processes:')
    .description('recent daemon events (label.moved, version.staged, version.removed, …)')
    .option('--since <id>', 'only events after this id')
    .option('--limit <n>', 'at most this many (default: 100)', integer(1, 10_000)), 'event ids')
    .addHelpText('after', examples('shoal events', 'shoal events --since <id> --json', "shoal events --format '{{.id}} {{.type}} {{.data.version}}'"))
    .action(async (opts: ListOptions & { since?: string, limit?: number }) => {
      const r = await client().events(opts.since, opts.limit ?? 100)
      list(r.events, opts, e => e.id, () => [
        ...(r.gone ? ['(events before that id are gone; re-read the state)'] : []),
        ...r.events.map(e => `${new Date(e.time).toISOString()} ${e.id} ${e.type} ${JSON.stringify(e.data)}`)
      ].join('\n'), r)
    })

  program.command('pin').helpGroup('Store:').description('keep a version through GC; name@label keeps every version the label points at').argument('<ref>', 'name@label or name@<version id>')
    .addHelpText('after', examples('shoal pin llama-8b@prod'))
    .action(async (ref: string) => {
      const r = await client().pin(ref)
      out(r, () => r.label !== undefined ? `pinned ${r.name}@${r.label} (now ${r.version})` : `pinned ${r.name}@${r.version}`)
    })
  program.command('unpin').helpGroup('Store:').description('let GC remove a version (or drop a label pin)').argument('<ref>', 'name@label or name@<version id>')
    .addHelpText('after', examples('shoal unpin llama-8b@bafkrei…'))
    .action(async (ref: string) => {
      const r = await client().unpin(ref)
      out(r, () => r.label !== undefined ? `unpinned ${r.name}@${r.label}` : `unpinned ${r.name}@${r.version}`)
    })

  return program
}

/** A repeatable option's values; no default, so help shows none. */
function collect (value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value]
}

/** Runs a parser of a typed value; its refusal becomes a usage error naming the option. */
function usage<T> (parse: () => T, option: string): T {
  try {
    return parse()
  } catch (err) {
    throw new UsageError(`${option}: ${(err as Error).message}`)
  }
}
