/**
 * The CLI program with an in-memory client: what a person reads on stdout and stderr, and the exit
 * code, for usage errors, `--json`, help texts and the messages issue 16 found missing or wrong.
 * (Against a real daemon: test/e2e/cli.test.ts and test/e2e/cli-ux.test.ts.)
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { tempDir } from '../../helpers/tmp.js'
import type { Command } from 'commander'
import { buildProgram, runCli, type CliClient, type CliIo } from '../../../src/cli/program.js'
import type { HeadRow, PeerRow, StatusResult } from '../../../src/rpc/api.js'
import { EVENT_TYPES } from '../../../src/core/events.js'

interface Run { code: number, stdout: string, stderr: string, calls: string[] }

const STATUS = {
  version: '0.1.0', pid: 1, home: '/h', socket: '/h/shoal.sock', uptimeSeconds: 1,
  store: { models: 0, versions: 0, blobs: 0, bytes: 0 },
  heads: { accepted: 0, duplicate: 0, stale: 0, future: 0, rejected: { malformed: 0, signature: 0, untrusted: 0 }, signatureChecks: 0, dropped: 0, syncsRefused: 0 },
  untrusted: [], leases: [], pulls: []
} satisfies StatusResult

function fakeClient (calls: string[], overrides: Partial<CliClient>): CliClient {
  const base: Partial<CliClient> = {
    models: async () => [],
    status: async () => STATUS,
    heads: async () => [],
    peers: async () => [],
    version: async () => ({ version: '0.1.0', api: 'v1', node: 'v20' }),
    ...overrides
  }
  return new Proxy(base, {
    get (target, prop: string) {
      const fn = (target as Record<string, unknown>)[prop]
      if (typeof fn !== 'function') return async () => { throw new Error(`unexpected call ${prop}`) }
      return (...args: unknown[]) => { calls.push(prop); return (fn as (...a: unknown[]) => unknown)(...args) }
    }
  }) as CliClient
}

async function cli (argv: string[], overrides: Partial<CliClient> = {}, extra: { interrupt?: (fire: () => void) => void, answer?: boolean, questions?: string[] } = {}): Promise<Run> {
  let stdout = ''
  let stderr = ''
  const calls: string[] = []
  const io: CliIo = {
    out: t => { stdout += t },
    err: t => { stderr += t },
    env: { SHOAL_HOME: '/nonexistent-shoal-home' },
    stderrTTY: false,
    connect: () => fakeClient(calls, overrides),
    onInterrupt: handler => { extra.interrupt?.(handler); return () => {} },
    ...(extra.answer !== undefined ? { stdinTTY: true, confirm: async (q: string) => { extra.questions?.push(q); return extra.answer === true } } : {})
  }
  const code = await runCli(argv, io)
  return { code, stdout, stderr, calls }
}

describe('usage errors found inside an action (issue 16, bug 1)', () => {
  it.each([
    [['label', 'set', 'tiny', 'prod', 'abc', '--at', '+1m'], 'shoal: --at needs --cold (a hot switch happens at once)\n'],
    [['label', 'set', 'tiny', 'prod', 'abc', '--jitter', '5x'], 'shoal: --jitter: "5x" is not a duration; use e.g. 30s, 10m, 2h\n'],
    [['label', 'set', 'tiny', 'prod', 'abc', '--cold', '--at', 'tomorrow'], 'shoal: --at: "tomorrow" is not a time; use ISO 8601 (2026-12-01T09:00:00Z) or +10m\n']
  ])('%j prints what was wrong and exits 2, sending nothing', async (argv, message) => {
    const r = await cli(argv)
    expect(r).toMatchObject({ code: 2, stdout: '', stderr: message, calls: [] })
    const j = await cli(['--json', ...argv])
    expect(j.code).toBe(2)
    expect(JSON.parse(j.stdout)).toEqual({ error: { code: 'USAGE', message: message.replace(/^shoal: /, '').trim() } })
  })
})

describe('--json everywhere (issue 16, bug 6)', () => {
  it('an unknown command prints one JSON error on stdout and the message on stderr', async () => {
    const r = await cli(['--json', 'bogus'])
    expect(r.code).toBe(2)
    expect(JSON.parse(r.stdout)).toEqual({ error: { code: 'USAGE', message: "unknown command 'bogus'" } })
    expect(r.stderr).toContain("error: unknown command 'bogus'")
  })

  it('a usage error says where help is, as docker does, instead of printing the whole help', async () => {
    for (const [argv, message] of [[['bogus'], "error: unknown command 'bogus'"], [['label', 'set', 'tiny'], "error: missing required argument 'label'"]] as const) {
      const r = await cli([...argv])
      expect(r.code, argv.join(' ')).toBe(2)
      expect(r.stderr).toBe(`${message}\n(see shoal --help, or shoal <command> --help for its usage and examples)\n`)
    }
  })

  it('--json --version prints JSON', async () => {
    const r = await cli(['--json', '--version'])
    expect(r.code).toBe(0)
    expect(JSON.parse(r.stdout)).toEqual({ client: { version: expect.stringMatching(/^\d+\.\d+\.\d+/) } })
  })

  it('--no-color is taken, before or after the command, and --json output stays JSON', async () => {
    for (const argv of [['--json', 'ls', '--no-color'], ['--no-color', '--json', 'ls']]) {
      const r = await cli(argv)
      expect(r.code, argv.join(' ')).toBe(0)
      expect(JSON.parse(r.stdout)).toEqual([])
    }
  })

  it('show --tensors abc and --limit abc are refused, naming the option', async () => {
    const show = await cli(['show', 'tiny', '--tensors', 'abc'])
    expect(show.code).toBe(2)
    expect(show.stderr).toContain("error: option '--tensors <n>' argument 'abc' is invalid. Give a whole number from 0 to 1000000.")
    expect(show.calls).toEqual([])
    const search = await cli(['search', 'x', '--limit', 'abc'])
    expect(search.code).toBe(2)
    expect(search.stderr).toContain("option '--limit <n>' argument 'abc' is invalid")
    const events = await cli(['--json', 'events', '--limit', '0'])
    expect(JSON.parse(events.stdout)).toEqual({ error: { code: 'USAGE', message: "option '--limit <n>' argument '0' is invalid. Give a whole number from 1 to 10000." } })
  })

  it('a daemon error prints its code and message as JSON and exits with its code', async () => {
    const { RpcError } = await import('../../../src/rpc/errors.js')
    const r = await cli(['--json', 'show', 'nope'], { show: async () => { throw new RpcError('NOT_FOUND', 'no model nope') } })
    expect(r.code).toBe(4)
    expect(JSON.parse(r.stdout)).toEqual({ error: { code: 'NOT_FOUND', message: 'no model nope' } })
    expect(r.stderr).toBe('shoal: no model nope\n')
  })
})

async function help (argv: string[]): Promise<string> {
  const r = await cli([...argv, '--help'])
  expect(r.code, argv.join(' ')).toBe(0)
  return r.stdout
}

describe('help texts (issue 16, bug 7)', () => {
  it('repeatable options show no (default: []) and the listen default once', async () => {
    const text = await help(['daemon'])
    expect(text).not.toContain('(default: [])')
    const listen = /\n {2}--listen[\s\S]*?(?=\n {2}--)/.exec(text)?.[0] ?? ''
    expect(listen.replace(/\s+/g, ' ')).toBe(' --listen <multiaddr> listen address, repeatable (default: /ip4/0.0.0.0/tcp/4077)')
    expect(await help(['add'])).not.toContain('(default: [])')
  })

  it('label set describes every argument', async () => {
    const text = await help(['label', 'set'])
    expect(text).toMatch(/name\s+model name, e\.g\. llama-8b/)
    expect(text).toMatch(/label\s+label to move, e\.g\. prod/)
    expect(text).toMatch(/version\s+version id, unique prefix, or another label/)
  })

  it('watch --types lists every event type, version.added included', async () => {
    const text = (await help(['watch'])).replace(/\s+/g, '')
    expect(text).toContain(EVENT_TYPES.join(','))
    expect(EVENT_TYPES).toContain('version.added')
  })

  it('watch --types refuses a type that does not exist, listing the ones that do', async () => {
    const r = await cli(['watch', '--types', 'label.moved,version.add'])
    expect(r.code).toBe(2)
    expect(r.stderr).toBe(`shoal: --types: unknown event type "version.add"; use ${EVENT_TYPES.join(', ')}\n`)
  })

  it('every command has --help with an example', async () => {
    const program = buildProgram({ out: () => {}, err: () => {}, env: {}, stderrTTY: false, connect: () => { throw new Error('no') }, onInterrupt: () => () => {} }, () => {})
    const paths: string[][] = []
    const walk = (c: Command, path: string[]): void => { for (const sub of c.commands) { paths.push([...path, sub.name()]); walk(sub, [...path, sub.name()]) } }
    walk(program, [])
    expect(paths.length).toBeGreaterThan(25)
    for (const path of paths) expect(await help(path), path.join(' ')).toMatch(/\nExamples:\n {2}\$ shoal /)
  })
})

describe('shoal heads with none (issue 16, bug 8)', () => {
  it('says heads were refused as untrusted, with the trust add command for each publisher', async () => {
    const r = await cli(['heads'], {
      heads: async () => [] as HeadRow[],
      peers: async () => [{ peerId: '12D3KooWpeer', connected: true } as PeerRow],
      status: async () => ({ ...STATUS, heads: { ...STATUS.heads, rejected: { ...STATUS.heads.rejected, untrusted: 3 } }, untrusted: [{ publisher: 'z6MkPublisher', model: 'llama-8b' }] })
    })
    expect(r.code).toBe(0)
    expect(r.stdout).toBe([
      'no heads: this node refused 3 heads because no trust rule here lets their publisher move that model.',
      'To accept them, trust the publisher for the model (quote patterns with *):',
      "  shoal trust add z6MkPublisher 'llama-8b'",
      ''
    ].join('\n'))
  })

  it('with peers connected and nothing refused, says no peer offered one', async () => {
    const r = await cli(['heads'], { peers: async () => [{ peerId: 'a', connected: true } as PeerRow, { peerId: 'b', connected: false } as PeerRow] })
    expect(r.stdout).toBe('no heads yet: none of the 1 connected peer has offered one; publish one with shoal label set\n')
  })
})

describe('shoal pull (issue 16, bugs 2 and 9)', () => {
  it('says at once that it is finding peers, with how many are connected and have it', async () => {
    const r = await cli(['pull', 'tiny@bafkreiabc'], {
      pull: async (_req, onProgress) => {
        onProgress?.({ type: 'progress', phase: 'finding', connected: 2, have: 0 })
        onProgress?.({ type: 'progress', phase: 'finding', connected: 2, have: 0 })
        onProgress?.({ type: 'progress', phase: 'finding', connected: 2, have: 1 })
        return { name: 'tiny', version: 'bafkreiabc', path: '/p' } as Awaited<ReturnType<CliClient['pull']>>
      }
    })
    expect(r.code).toBe(0)
    expect(r.stderr).toBe('finding peers (2 connected, 0 have it)\nfinding peers (2 connected, 1 have it)\n')
    expect(r.stdout).toBe('pulled tiny@bafkreiabc → /p\n')
  })

  it('Ctrl-C leaves the pull to the daemon, says so and how to stop it, and exits 130', async () => {
    let fire: () => void = () => {}
    const r = await cli(['pull', 'tiny@bafkreiabc'], {
      pull: async (_req, onProgress, signal) => {
        onProgress?.({ type: 'progress', phase: 'finding', connected: 1, have: 1 })
        fire()
        return await new Promise((_resolve, reject) => {
          if (signal?.aborted === true) reject(new Error('aborted'))
          signal?.addEventListener('abort', () => reject(new Error('aborted')))
        })
      }
    }, { interrupt: f => { fire = f } })
    expect(r.code).toBe(130)
    expect(r.stderr).toContain('interrupted: the daemon goes on pulling tiny@bafkreiabc in the background (shoal status shows it; shoal pull tiny@bafkreiabc --cancel stops it)')
  })
})

describe('lists: -q and --format (issue 16, CLI conventions)', () => {
  const versions = [
    { name: 'tiny', version: 'bafkreiaaaaaaaaaaaaaaaaaaaa', created: 1, size: 2048, files: 1, labels: ['prod'], pinned: true, complete: true },
    { name: 'tiny', version: 'bafkreibbbbbbbbbbbbbbbbbbbb', created: 2, size: 4096, files: 1, labels: [], pinned: false, complete: true }
  ] as unknown as Awaited<ReturnType<CliClient['versions']>>

  it('-q prints only the ids, one per line', async () => {
    const r = await cli(['ls', 'tiny', '-q'], { versions: async () => versions })
    expect(r.stdout).toBe('bafkreiaaaaaaaaaaaaaaaaaaaa\nbafkreibbbbbbbbbbbbbbbbbbbb\n')
  })

  it('--format applies a template, or prints fields as columns', async () => {
    expect((await cli(['ls', 'tiny', '--format', '{{.version}} {{.size}}'], { versions: async () => versions })).stdout).toBe('bafkreiaaaaaaaaaaaaaaaaaaaa 2048\nbafkreibbbbbbbbbbbbbbbbbbbb 4096\n')
    expect((await cli(['ls', 'tiny', '--format', 'version,pinned'], { versions: async () => versions })).stdout).toBe('VERSION                       PINNED\nbafkreiaaaaaaaaaaaaaaaaaaaa   true\nbafkreibbbbbbbbbbbbbbbbbbbb   false\n')
  })

  it('tables off a terminal are plain columns with 12-character ids', async () => {
    const r = await cli(['ls', 'tiny'], { versions: async () => versions })
    expect(r.stdout.split('\n')[0]).toMatch(/^VERSION\s+CREATED\s+SIZE\s+FILES\s+LABELS\s+PINNED\s+STATE$/)
    expect(r.stdout.split('\n')[1]).toMatch(/^bafkreiaaaaa {3}1970-01-01 00:00:00Z {3}2\.0 KiB/)
  })
})

describe('gc asks on a terminal (issue 16, CLI conventions)', () => {
  const plan = { dryRun: true, versions: [{ name: 'tiny', version: 'bafkreiold', size: 2048 }], blobs: [{ digest: 'd1', size: 2048 }], partials: [], bytes: 2048 } as unknown as Awaited<ReturnType<CliClient['gc']>>
  const gc = (runs: boolean[]): Partial<CliClient> => ({ gc: async req => { runs.push(req.dryRun === true); return { ...plan, dryRun: req.dryRun === true } } })

  it('shows what it would remove and removes nothing on no', async () => {
    const runs: boolean[] = []
    const questions: string[] = []
    const r = await cli(['gc'], gc(runs), { answer: false, questions })
    expect(runs).toEqual([true])
    expect(questions).toEqual(['Remove 1 versions, 1 blobs, 0 partial files (2.0 KiB)?'])
    expect(r.stdout).toContain('would remove version tiny@bafkreiold (2.0 KiB)')
    expect(r.stdout).toMatch(/nothing removed\n$/)
  })

  it('removes on yes, and --yes does not ask', async () => {
    const runs: boolean[] = []
    await cli(['gc'], gc(runs), { answer: true })
    expect(runs).toEqual([true, false])
    const quiet: boolean[] = []
    const questions: string[] = []
    const r = await cli(['gc', '--yes'], gc(quiet), { answer: false, questions })
    expect(quiet).toEqual([false])
    expect(questions).toEqual([])
    expect(r.stdout).toContain('removed version tiny@bafkreiold')
  })

  it('does not ask when stdin is not a terminal (scripts), as before', async () => {
    const runs: boolean[] = []
    await cli(['gc'], gc(runs))
    expect(runs).toEqual([false])
  })
})

describe('shoal import-hf (issue 16, Hugging Face on-ramp)', () => {
  it('adds each snapshot its refs name, labelled by the refs, and reports what it skipped', async () => {
    const { dir, cleanup } = await tempDir('shoal-import-hf-')
    try {
      const rev = 'c'.repeat(40)
      const repo = join(dir, 'models--meta-llama--Llama-3.2-1B')
      await mkdir(join(repo, 'snapshots', rev), { recursive: true })
      await mkdir(join(repo, 'refs'))
      await writeFile(join(repo, 'refs', 'main'), rev)
      await writeFile(join(repo, 'refs', 'v1.0'), rev)
      await writeFile(join(repo, 'refs', 'Release'), rev)
      await mkdir(join(dir, 'models--broken', 'snapshots', 'd'.repeat(40)), { recursive: true })
      const adds: unknown[] = []
      const labels: unknown[] = []
      const r = await cli(['import-hf', dir], {
        add: async req => {
          adds.push(req)
          if (req.name === 'broken') throw new Error('model.safetensors: the file looks damaged')
          return { name: req.name, version: 'bafyv1', labels: ['main'] } as unknown as Awaited<ReturnType<CliClient['add']>>
        },
        setLabel: async req => { labels.push(req); return {} as Awaited<ReturnType<CliClient['setLabel']>> }
      })
      expect(adds).toEqual([
        { path: join(dir, 'models--broken', 'snapshots', 'd'.repeat(40)), name: 'broken', pin: true },
        { path: join(repo, 'snapshots', rev), name: 'meta-llama/Llama-3.2-1B', pin: true, label: 'main' }
      ])
      expect(labels).toEqual([{ name: 'meta-llama/Llama-3.2-1B', label: 'v1.0', version: 'bafyv1' }])
      expect(r.stdout).toBe([
        `imported meta-llama/Llama-3.2-1B@bafyv1 (main, v1.0) from revision ${rev.slice(0, 12)}`,
        `skipped broken (revision ${'d'.repeat(12)}): model.safetensors: the file looks damaged`,
        ''
      ].join('\n'))
      expect(r.code).toBe(1)
    } finally {
      await cleanup()
    }
  })

  it('says where it looked when the cache is not there', async () => {
    const r = await cli(['import-hf', '/nonexistent-hf-cache'])
    expect(r.code).toBe(6)
    expect(r.stderr).toBe('shoal: cannot read the Hugging Face cache /nonexistent-hf-cache: ENOENT (give the hub folder, e.g. ~/.cache/huggingface/hub)\n')
  })

  it('export --hf without a folder writes to the hub cache of the environment', async () => {
    let dest = ''
    await cli(['export', '--hf', 'tiny@prod'], { export: async req => { dest = req.dest; return { name: 'tiny', version: 'v', dest: req.dest, files: 1, bytes: 1 } } })
    expect(dest).toMatch(/\/huggingface\/hub$/)
    const r = await cli(['export', 'tiny@prod'])
    expect(r.stderr).toBe('shoal: give the destination folder: shoal export <ref> <dir> (or --hf for the Hugging Face cache)\n')
  })
})

describe('shoal rm and shoal df (issue 16, CLI conventions)', () => {
  it('rm says what it freed and what it overrode; a refusal exits 5 with the daemon\'s reason', async () => {
    const r = await cli(['rm', 'tiny@bafyold', '--force'], { removeVersion: async req => ({ name: 'tiny', version: 'bafyold', overrode: req.force === true ? ['pinned'] : [], labels: [], bytes: 2048 }) })
    expect(r.stdout).toBe('removed tiny@bafyold (2.0 KiB freed); it was pinned\n')
    const { RpcError } = await import('../../../src/rpc/errors.js')
    const refused = await cli(['rm', 'tiny@prod'], { removeVersion: async () => { throw new RpcError('CONFLICT', 'tiny@bafyold is labelled prod: nothing was removed. To remove it anyway: shoal rm --force tiny@prod') } })
    expect(refused).toMatchObject({ code: 5, stderr: 'shoal: tiny@bafyold is labelled prod: nothing was removed. To remove it anyway: shoal rm --force tiny@prod\n' })
  })

  it('df shows size, shared and unique per version and model, and what gc would free', async () => {
    const df = {
      versions: [{ name: 'tiny', version: 'bafkreiaaaaaaaaaaaaaa', created: 0, size: 4096, shared: 1024, unique: 3072, labels: ['prod'], pinned: true }],
      models: [{ name: 'tiny', versions: 1, size: 4096, unique: 3072 }],
      blobs: { count: 2, bytes: 4096 },
      reclaimable: 512
    }
    const r = await cli(['df'], { df: async () => df })
    const lines = r.stdout.split('\n')
    expect(lines[0]).toMatch(/^MODEL\s+VERSION\s+CREATED\s+SIZE\s+SHARED\s+UNIQUE\s+LABELS\s+PINNED$/)
    expect(lines[1]).toMatch(/^tiny\s+bafkreiaaaaa\s+1970-01-01 00:00:00Z\s+4\.0 KiB\s+1\.0 KiB\s+3\.0 KiB\s+prod\s+yes$/)
    expect(r.stdout).toContain('blobs 2 (4.0 KiB); reclaimable by shoal gc: 512 B')
    expect((await cli(['df', '-q'], { df: async () => df })).stdout).toBe('tiny@bafkreiaaaaaaaaaaaaaa\n')
  })
})
