/**
 * What a person reads from the built `shoal` binary (issue 16), against real daemon processes on
 * loopback: every usage error prints a message on stderr and, with `--json`, one JSON error on
 * stdout; every command's help has an example; Ctrl-C on `shoal pull` leaves the pull to the
 * daemon, whose events, search and metrics then agree with its store; a pull says at once that
 * it is finding peers. Two daemons, shared by every case: a seed and a puller whose download
 * rate is limited, so a pull lasts long enough to be interrupted.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encodeBlock } from '../../src/core/digest.js'
import type { EventsResult } from '../../src/rpc/api.js'
import type { SearchResult } from '../../src/store/search-index.js'
import { CLI, Harness, ROOT, rawRequest, runCli, until, versionOf, writeModelFolder, type DaemonProcess } from './helpers.js'

/** A `shoal` process whose output can be watched while it runs, and signalled. */
class Running {
  stdout = ''
  stderr = ''
  readonly exit: Promise<number | string>
  private readonly child: ChildProcess

  constructor (args: string[], env: NodeJS.ProcessEnv) {
    this.child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    this.child.stdout?.on('data', (d: Buffer) => { this.stdout += d.toString() })
    this.child.stderr?.on('data', (d: Buffer) => { this.stderr += d.toString() })
    this.exit = new Promise(resolve => this.child.once('close', (code, signal) => resolve(code ?? signal ?? -1)))
  }

  interrupt (): void { this.child.kill('SIGINT') }
  kill (): void { if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL') }
}

const USAGE_ERRORS: Array<[string[], string]> = [
  [['label', 'set', 'tiny', 'prod', 'abc', '--at', '+1m'], '--at needs --cold'],
  [['label', 'set', 'tiny', 'prod', 'abc', '--jitter', '5x'], '--jitter: "5x" is not a duration'],
  [['label', 'set', 'tiny', 'prod', 'abc', '--cold', '--at', 'tomorrow'], '--at: "tomorrow" is not a time'],
  [['bogus'], "unknown command 'bogus'"],
  [['show', 'tiny', '--tensors', 'abc'], "option '--tensors <n>' argument 'abc' is invalid"],
  [['search', '--limit', 'abc', 'x'], "option '--limit <n>' argument 'abc' is invalid"],
  [['ls', '--bogus'], "unknown option '--bogus'"],
  [['watch', '--types', 'nope'], '--types: unknown event type "nope"']
]

describe('the shoal binary, as a person uses it', () => {
  let h: Harness
  let seed: DaemonProcess
  let puller: DaemonProcess
  let version: string
  const running: Running[] = []

  beforeAll(async () => {
    h = await Harness.create('cli-ux')
    const a = await h.node('seed')
    seed = a.d
    const src = await writeModelFolder(join(h.root, 'src'))
    version = versionOf(await seed.cli(['add', src, '--name', 'tiny', '--json']))
    // 8 MiB at 1 MB/s: the pull lasts seconds, long enough to be interrupted whatever the load.
    puller = (await h.node('puller', { peers: [a.addr], config: { transfer: { downloadRate: 1_000_000 } } })).d
  })

  afterAll(async () => {
    for (const r of running) r.kill()
    await h?.close()
  })

  it.each(USAGE_ERRORS)('%j prints what was wrong on stderr, and with --json one JSON error on stdout', async (args, message) => {
    const plain = await puller.cli(args)
    expect(plain.code).toBe(2)
    expect(plain.stderr).toContain(message)
    expect(plain.stdout).toBe('')
    const json = await puller.cli(['--json', ...args])
    expect(json.code).toBe(2)
    const parsed = JSON.parse(json.stdout) as { error: { code: string, message: string } }
    expect(parsed.error.code).toBe('USAGE')
    expect(parsed.error.message).toContain(message)
  })

  it('--json --version and shoal version print JSON with the client and daemon versions', async () => {
    const v = await runCli(['--json', '--version'])
    expect(v.code).toBe(0)
    const client = (JSON.parse(v.stdout) as { client: { version: string } }).client.version
    expect(await puller.json(['version'])).toEqual({ client: { version: client }, daemon: { version: client, api: 'v1', node: process.version } })
  })

  it('every command has --help with an example', async () => {
    const top = await runCli(['--help'])
    const commands = [...top.stdout.matchAll(/^ {2}([a-z]+)\b/gm)].map(m => m[1] ?? '').filter(c => c !== 'help')
    expect(commands.length).toBeGreaterThan(20)
    const groups = ['label', 'keys', 'trust']
    const paths = commands.map(c => [c])
    for (const g of groups) {
      const sub = await runCli([g, '--help'])
      for (const m of sub.stdout.matchAll(/^ {2}([a-z]+)\b/gm)) if (m[1] !== 'help') paths.push([g, m[1] ?? ''])
    }
    const results: Array<readonly [string, Awaited<ReturnType<typeof runCli>>]> = []
    for (let i = 0; i < paths.length; i += 6) {
      results.push(...await Promise.all(paths.slice(i, i + 6).map(async p => [p.join(' '), await runCli([...p, '--help'])] as const)))
    }
    for (const [p, r] of results) {
      expect(r.code, p).toBe(0)
      expect(r.stdout, p).toMatch(/\nExamples:\n {2}\$ shoal /)
    }
  })

  it('Ctrl-C on shoal pull leaves the pull to the daemon; its events, search and metrics then agree with the store', async () => {
    const pull = new Running(['--json', 'pull', `tiny@${version}`], { SHOAL_HOME: puller.home })
    running.push(pull)
    await until('pull progress with bytes', () => /"type":"progress".*"bytes":[1-9]/.test(pull.stdout) ? true : undefined, 60_000)
    pull.interrupt()
    expect(await pull.exit).toBe(130)
    expect(pull.stderr).toContain(`interrupted: the daemon goes on pulling tiny@${version} in the background (shoal status shows it; shoal pull tiny@${version} --cancel stops it)`)

    const ofVersion = (r: EventsResult): EventsResult['events'] => r.events.filter(e => e.data.version === version)
    const events = await until('pull.completed and version.added for the interrupted pull', async () => {
      const mine = ofVersion(await puller.json<EventsResult>(['events']))
      return mine.some(e => e.type === 'version.added') ? mine : undefined
    }, 120_000)
    expect(events.map(e => e.type)).toEqual(['pull.started', 'pull.completed', 'version.added'])

    const found = await puller.json<SearchResult>(['search', 'tiny'])
    expect(found.rows.find(r => r.version === version)).toMatchObject({ model: 'tiny', local: true })
    const metrics = (await rawRequest(puller.socket, 'GET', '/metrics')).text
    expect(metrics).toMatch(/^shoal_pull_duration_seconds_count\{outcome="completed"\} 1$/m)
    // The client leaving is not logged as a failure with a stack.
    expect(puller.stderr).toContain('the client that asked for this pull left; the pull goes on in the background')
    expect(puller.stderr).not.toMatch(/"stack"/)
  })

  it('export --hf writes a hub cache entry that import-hf reads back as the same version', async () => {
    const hub = join(h.root, 'hub')
    const out = await puller.json<{ dest: string }>(['export', '--hf', `tiny@${version}`, hub])
    expect(out.dest).toMatch(/\/models--tiny\/snapshots\/[0-9a-f]{40}$/)
    const back = await puller.json<{ imported: Array<{ name: string, version: string, existing: boolean, labels: string[] }>, skipped: unknown[] }>(['import-hf', hub])
    expect(back).toMatchObject({ imported: [{ name: 'tiny', version, existing: true, labels: ['main'] }], skipped: [] })
    // A Hugging Face loader reads it offline (where huggingface_hub is installed).
    const probe = spawnSync('python3', ['-c', 'import huggingface_hub'])
    if (probe.status === 0) {
      const r = spawnSync('python3', ['-c', `from huggingface_hub import snapshot_download; print(snapshot_download('tiny', cache_dir='${hub}', local_files_only=True))`], { env: { ...process.env, HF_HUB_OFFLINE: '1' }, encoding: 'utf8' })
      expect(r.stdout.trim()).toBe(out.dest)
    }
  })

  // The Python example speaks to the same daemon over its socket (skipped only where there is no python3).
  it.skipIf(spawnSync('python3', ['--version']).status !== 0)('the Python client example resolves the pulled version, with a cursor', async () => {
    // Not spawnSync: the harness's recording proxy in front of the daemon runs in this process.
    const r = await promisify(execFile)('python3', [join(ROOT, 'examples', 'python-client', 'shoal_client.py'), 'resolve', `tiny@${version}`], { env: { ...process.env, SHOAL_HOME: puller.home }, encoding: 'utf8' })
    expect(r.stderr).toBe('')
    expect(JSON.parse(r.stdout)).toEqual({ version, path: expect.stringContaining(`/snapshots/${version}`), cursor: expect.stringMatching(/^[0-9a-f]+-\d+$/) })
  })

  it('a pull says at once that it is finding peers', async () => {
    const nobody = encodeBlock({ 'no such version': true }).cid
    const pull = new Running(['pull', `tiny@${nobody}`], { SHOAL_HOME: puller.home })
    running.push(pull)
    await until('the finding-peers line', () => pull.stderr.includes('finding peers (1 connected, 0 have it)') ? true : undefined, 30_000)
    pull.interrupt()
    expect(await pull.exit).toBe(130)
  })
})
