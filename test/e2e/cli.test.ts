/**
 * The interface contract of issue 2, end to end: a real `shoal daemon` process with a real LevelDB
 * home, driven only through the built CLI (`dist/cli/main.js`). The tests run in order and share
 * one store: add → inspect → export → re-add → labels → pins and GC.
 */
import { copyFile, lstat, mkdir, readFile, readlink, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { changeTensors, llamaTensors, writeSafetensors } from '../../scripts/lib/synth.js'
import { bytes } from '../../src/cli/format.js'
import { DEFAULT_BLOCK_SIZE } from '../../src/core/manifest.js'
import type { LabelResult, ModelRow, PinResult, ShowResult } from '../../src/rpc/api.js'
import type { GcReport } from '../../src/store/gc.js'
import type { SearchResult } from '../../src/store/search-index.js'
import type { VersionInfo } from '../../src/store/store.js'
import { EXIT, Harness, ROOT, expectConsistent, expectExit, listDir, runCli, status, treeDigests, versionOf, writeModelFolder, type DaemonProcess } from './helpers.js'

const METADATA = {
  description: 'a tiny llama for the e2e tests',
  framework: 'pytorch',
  task: 'text-generation',
  license: 'apache-2.0',
  hyperparameters: { lr: 0.0003, epochs: 3 },
  tags: { stage: 'test' }
}

describe('shoal CLI against a real daemon', () => {
  let h: Harness
  let d: DaemonProcess
  let src: string
  let srcDigests: Record<string, string>
  let v1: string
  let v2: string

  beforeAll(async () => {
    h = await Harness.create('cli')
    src = await writeModelFolder(join(h.root, 'src'), { metadata: METADATA })
    srcDigests = await treeDigests(src)
    d = await h.start(join(h.root, 'home'))
  })

  afterAll(async () => { await h?.close() })

  it('add --label prod --json prints the new version id', async () => {
    v1 = versionOf(await d.cli(['add', src, '--name', 'tiny', '--label', 'prod', '--json']))
    const models = await d.json<ModelRow[]>(['ls'])
    expect(models.map(m => m.name)).toEqual(['tiny'])
    expect(models[0]?.labels).toEqual({ prod: v1 })
    const versions = await d.json<VersionInfo[]>(['ls', 'tiny'])
    expect(versions).toHaveLength(1)
    expect(versions[0]).toMatchObject({ name: 'tiny', version: v1, labels: ['prod'], pinned: true, complete: true, files: 3 })
    // The label was published as a signed head, accepted by this node.
    expect((await status(d)).heads).toEqual({ accepted: 1, duplicate: 0, stale: 0, future: 0, rejected: { malformed: 0, signature: 0, untrusted: 0 }, signatureChecks: 1, dropped: 0, syncsRefused: 0 })
  })

  it('show lists files with format, tensors, parameter count and metadata, by every kind of ref', async () => {
    const refs = ['tiny', 'tiny@prod', `tiny@${v1}`, `tiny@${v1.slice(0, 8)}`]
    const shown = await Promise.all(refs.map(async ref => await d.json<ShowResult>(['show', ref])))
    for (const [i, v] of shown.entries()) {
      expect(v.version, refs[i]).toBe(v1)
      expect(v).toEqual(shown[0])
    }
    const v = shown[0] as ShowResult
    expect(v.name).toBe('tiny')
    // `add` writes manifest schema 2: blocks of DEFAULT_BLOCK_SIZE, each verified on its own.
    expect(v.schema).toBe(2)
    expect(v.blockSize).toBe(DEFAULT_BLOCK_SIZE)
    expect(v.metadata).toEqual(METADATA)
    expect(v.files.map(f => [f.path, f.format])).toEqual([['config.json', 'other'], ['model.safetensors', 'safetensors'], ['shoal.json', 'other']])
    const model = v.files.find(f => f.path === 'model.safetensors')
    const expected = llamaTensors(8 * 1024 * 1024, { hidden: 256, vocab: 1024 })
    expect(model?.structure?.tensors.map(t => ({ name: t.name, dtype: t.dtype, shape: t.shape }))).toEqual(
      expected.map(t => ({ name: t.name, dtype: t.dtype, shape: t.shape })))
    const params = expected.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0)
    expect(model?.structure?.parameterCount).toBe(params)
    expect(v.structure.parameterCount).toBe(params)
    expect(v.structure.tensorCount).toBe(expected.length)
    expect(model?.structure?.metadata).toEqual({ format: 'pt' })

    const human = await d.cli(['show', 'tiny@prod'])
    expectExit(human, 0)
    expect(human.stdout).toContain('model.embed_tokens.weight')
    expect(human.stdout).toContain(`blocks      ${bytes(DEFAULT_BLOCK_SIZE)} (manifest schema 2)`)
  })

  it('export writes byte-identical files', async () => {
    const out = join(h.root, 'export-v1')
    const r = await d.cli(['export', 'tiny@prod', out, '--json'])
    expectExit(r, 0)
    expect(JSON.parse(r.stdout)).toMatchObject({ name: 'tiny', version: v1, files: 3 })
    expect(await treeDigests(out)).toEqual(srcDigests)
    // Exporting again over existing files is refused unless asked for.
    expectExit(await d.cli(['export', 'tiny@prod', out]), EXIT.CONFLICT)
    expectExit(await d.cli(['export', 'tiny@prod', out, '--overwrite']), 0)
    expect(await treeDigests(out)).toEqual(srcDigests)
  })

  it('the snapshot folder is readable by ordinary fs calls, through read-only blobs', async () => {
    const v = await d.json<ShowResult>(['show', 'tiny@prod'])
    expect(v.path).toBe(join(d.home, 'models', 'models--tiny', 'snapshots', v1))
    for (const f of v.files) {
      const at = join(v.path, f.path)
      expect((await lstat(at)).isSymbolicLink()).toBe(true)
      expect(await readlink(at)).not.toMatch(/^\//)
      const [stored, original] = await Promise.all([readFile(at), readFile(join(src, f.path))])
      expect(stored.equals(original), `${f.path} read through the snapshot differs from the source`).toBe(true)
      const target = await stat(at)
      expect(target.mode & 0o222, `${f.path} must be read-only`).toBe(0)
    }
    expect((await readFile(join(d.home, 'models', 'models--tiny', 'refs', 'prod'), 'utf8')).trim()).toBe(v1)
  })

  it('adding the same folder again returns the same version, created unchanged (same content, same id)', async () => {
    const before = await status(d)
    const first = await d.json<ShowResult>(['show', `tiny@${v1}`])
    const again = await d.json<ShowResult>(['add', src, '--name', 'tiny'])
    expect(again).toMatchObject({ version: v1, created: first.created, existing: true })
    expect((await status(d)).store.versions).toBe(before.store.versions)
    const human = await d.cli(['add', src, '--name', 'tiny'])
    expect(human.stdout).toBe(`already here, same content: tiny@${v1} (prod)\n`)
  })

  it('a second add of the same files with other metadata is a new version that stores no new blobs', async () => {
    const before = await status(d)
    v2 = versionOf(await d.cli(['add', src, '--name', 'tiny', '--description', 'the second version', '--json']))
    expect(v2).not.toBe(v1)
    const after = await status(d)
    expect(after.store.blobs).toBe(before.store.blobs)
    expect(after.store.bytes).toBe(before.store.bytes)
    expect(after.store.versions).toBe(before.store.versions + 1)
    expect(await listDir(join(d.home, 'blobs'))).toHaveLength(before.store.blobs)
    const [a, b] = await Promise.all([d.json<ShowResult>(['show', `tiny@${v1}`]), d.json<ShowResult>(['show', `tiny@${v2}`])])
    expect(b.created).toBeGreaterThan(a.created)
    expect(b.parent).toBe(v1)
    expect(b.files.map(f => f.digest)).toEqual(a.files.map(f => f.digest))
    // A bare name means the newest version (no `latest` label here).
    expect((await d.json<ShowResult>(['show', 'tiny'])).version).toBe(v2)
    expect((await d.json<VersionInfo[]>(['ls', 'tiny'])).map(x => x.version)).toEqual([v1, v2])
  })

  it('label set with --expect refuses a stale expectation (exit 5)', async () => {
    expectExit(await d.cli(['label', 'set', 'tiny', 'staging', v2, '--expect', 'none']), 0)
    expect((await d.json<ShowResult>(['show', 'tiny@staging'])).version).toBe(v2)
    const stale = await d.cli(['label', 'set', 'tiny', 'staging', v1, '--expect', v1])
    expectExit(stale, EXIT.CONFLICT)
    expect(stale.stderr).toContain(v2)
    expectExit(await d.cli(['label', 'set', 'tiny', 'staging', v1, '--expect', 'none']), EXIT.CONFLICT)
    expect((await d.json<ShowResult>(['show', 'tiny@staging'])).version).toBe(v2)
    const moved = await d.json<LabelResult>(['label', 'set', 'tiny', 'staging', v1, '--expect', v2])
    expect(moved).toMatchObject({ name: 'tiny', label: 'staging', version: v1, previous: v2, publisher: expect.stringMatching(/^z6Mk/), activation: { mode: 'hot' } })
    expect(moved.stamp).toMatch(/^\d+\.\d+$/)
    expect((await d.json<ShowResult>(['show', 'tiny@staging'])).version).toBe(v1)
    const removed = await d.json<LabelResult>(['label', 'rm', 'tiny', 'staging'])
    expect(removed).toMatchObject({ name: 'tiny', label: 'staging', version: null, previous: v1, publisher: moved.publisher })
    expectExit(await d.cli(['show', 'tiny@staging']), EXIT.NOT_FOUND)
    expectExit(await d.cli(['label', 'rm', 'tiny', 'staging']), EXIT.NOT_FOUND)
  })

  it('gc removes versions neither pinned nor labelled and their blobs; --dry-run only lists them', async () => {
    // v2 is unpinned; variant B (unpinned) gets pinned; C (unpinned) gets a label; D stays unpinned.
    const base = llamaTensors(8 * 1024 * 1024, { hidden: 256, vocab: 1024 })
    const variant = async (tag: string): Promise<{ dir: string, version: string, digest: string }> => {
      const dir = await h.dir(`variant-${tag}`)
      await writeSafetensors(join(dir, 'model.safetensors'), changeTensors(base, 0.5, tag).tensors, { format: 'pt' })
      const version = versionOf(await d.cli(['add', dir, '--name', 'tiny', '--no-pin', '--json']))
      const v = await d.json<ShowResult>(['show', `tiny@${version}`])
      expect(v.pinned).toBe(false)
      return { dir, version, digest: v.files[0]?.digest ?? '' }
    }
    const b = await variant('b')
    const c = await variant('c')
    const dd = await variant('dd')
    expect((await d.json<{ pinned: boolean }>(['unpin', `tiny@${v2}`])).pinned).toBe(false)
    expect((await d.json<{ pinned: boolean }>(['pin', `tiny@${b.version}`])).pinned).toBe(true)
    expectExit(await d.cli(['label', 'set', 'tiny', 'canary', c.version]), 0)

    const before = await d.json<VersionInfo[]>(['ls', 'tiny'])
    const blobsBefore = await listDir(join(d.home, 'blobs'))
    const plan = await d.json<GcReport>(['gc', '--dry-run'])
    expect(plan.dryRun).toBe(true)
    expect(plan.versions.map(v => v.version).sort()).toEqual([v2, dd.version].sort())
    expect(plan.blobs.map(x => x.digest)).toEqual([dd.digest])
    expect(await d.json<VersionInfo[]>(['ls', 'tiny'])).toEqual(before)
    expect(await listDir(join(d.home, 'blobs'))).toEqual(blobsBefore)

    const done = await d.json<GcReport>(['gc'])
    expect({ ...done, dryRun: true }).toEqual(plan)
    expect((await d.json<VersionInfo[]>(['ls', 'tiny'])).map(v => v.version)).toEqual([v1, b.version, c.version])
    expect(await listDir(join(d.home, 'blobs'))).toEqual(blobsBefore.filter(x => x !== dd.digest))
    expect(await listDir(join(d.home, 'models', 'models--tiny', 'snapshots'))).toEqual([v1, b.version, c.version].sort())
    expectExit(await d.cli(['show', `tiny@${v2}`]), EXIT.NOT_FOUND)
    for (const kept of [b, c]) {
      const out = join(h.root, `export-${kept.version}`)
      expectExit(await d.cli(['export', `tiny@${kept.version}`, out]), 0)
      expect(await treeDigests(out)).toEqual(await treeDigests(kept.dir))
    }
    expect((await d.json<GcReport>(['gc'])).versions).toEqual([])
    await expectConsistent(d)
  })

  it('verify on a clean store exits 0 with no problems', async () => {
    const r = await d.cli(['verify', '--json'])
    expectExit(r, 0)
    expect(JSON.parse(r.stdout)).toMatchObject({ problems: [], quarantined: [], damaged: [], versions: 3 })
    expectExit(await d.cli(['verify']), 0)
  })

  it('pin name@label pins every version the label points at; unpin drops those pins', async () => {
    const canary = (await d.json<ShowResult>(['show', 'tiny@canary'])).version
    expect(await d.json<PinResult>(['pin', 'tiny@canary'])).toEqual({ name: 'tiny', version: canary, pinned: true, label: 'canary' })
    expect((await d.json<ShowResult>(['show', `tiny@${canary}`])).pinned).toBe(true)
    const v3 = versionOf(await d.cli(['add', src, '--name', 'tiny', '--description', 'the third version', '--no-pin', '--json']))
    expectExit(await d.cli(['label', 'set', 'tiny', 'canary', v3]), 0)
    expect((await d.json<ShowResult>(['show', `tiny@${v3}`])).pinned).toBe(true)
    expect(await d.json<PinResult>(['unpin', 'tiny@canary'])).toEqual({ name: 'tiny', version: v3, pinned: false, label: 'canary' })
    expect((await d.json<ShowResult>(['show', `tiny@${v3}`])).pinned).toBe(false)
    expect((await d.json<ShowResult>(['show', `tiny@${canary}`])).pinned).toBe(false)
    // Unpinned, but canary's previous target is kept for an instant rollback.
    expect((await d.json<GcReport>(['gc', '--dry-run'])).versions).toEqual([])
    const back = await d.json<LabelResult>(['rollback', 'tiny@canary'])
    expect(back).toMatchObject({ version: canary, previous: v3 })
    expect((await d.json<ShowResult>(['show', 'tiny@canary'])).version).toBe(canary)
  })

  it('add --block-size sets the block size of the version\'s trees; a size that is not one is refused saying what a block size is', async () => {
    const id = versionOf(await d.cli(['add', src, '--name', 'tiny-blocks', '--block-size', '64KiB', '--no-pin', '--json']))
    expect((await d.json<ShowResult>(['show', `tiny-blocks@${id}`])).blockSize).toBe(64 * 1024)
    const bad = await d.cli(['add', src, '--name', 'tiny-blocks', '--block-size', '100000'])
    expect(bad.code).not.toBe(0)
    expect(bad.stderr).toContain('block size 100000 is not a power of two from 16384 to 4194304 bytes')
    const junk = await d.cli(['add', src, '--name', 'tiny-blocks', '--block-size', 'big'])
    expect(junk.code).not.toBe(0)
    expect(junk.stderr).toContain('"big" is not a size')
    // Unpinned and unlabelled: gc takes it, and the store is as the other tests expect.
    expectExit(await d.cli(['gc']), 0)
    expect((await d.json<ModelRow[]>(['ls'])).map(m => m.name)).toEqual(['tiny'])
  })

  it('show and search see the weights of exporters\' files, and show prints GGUF and ONNX facts', async () => {
    // Files made by other tools (test/fixtures/models): weights in Constant nodes and subgraphs.
    const folder = join(h.root, 'exporters')
    await mkdir(folder)
    const files = ['exporter-constants.onnx', 'exporter-subgraphs.onnx', 'tiny-llama.gguf']
    for (const name of files) await copyFile(join(ROOT, 'test', 'fixtures', 'models', name), join(folder, name))
    expectExit(await d.cli(['add', folder, '--name', 'exporters']), 0)
    const v = await d.json<ShowResult>(['show', 'exporters'])
    const params = { 'exporter-constants.onnx': 680, 'exporter-subgraphs.onnx': 152, 'tiny-llama.gguf': 3216 }
    expect(Object.fromEntries(v.files.map(f => [f.path, f.structure?.parameterCount]))).toEqual(params)
    expect(v.structure.parameterCount).toBe(680 + 152 + 3216)
    // Without the ONNX weights the version would have 3216 parameters and not match.
    const found = await d.json<SearchResult>(['search', 'params > 4000'])
    expect(found.rows.map(r => r.model)).toContain('exporters')

    const human = await d.cli(['show', 'exporters'])
    expectExit(human, 0)
    expect(human.stdout).toContain('tiny-llama.gguf GGUF llama "shoal tiny llama" · context 128 · quantization Q8_0 · tensor types BF16, F16, F32, Q4_K, Q6_K, Q8_0 · vocabulary 1000 tokens (llama)')
    expect(human.stdout).toContain('exporter-constants.onnx ONNX IR 8 · opsets ai.onnx 13 · producer shoal-fixtures-constants 1 · 16 nodes')
    expect(human.stdout).toMatch(/^ +inputs {2}x FLOAT\[batch, 16\]$/m)
    expect(human.stdout).toMatch(/^ +outputs y FLOAT\[batch, 4\]$/m)
    // The tests after this one expect the store to hold only `tiny`.
    expectExit(await d.cli(['rm', 'exporters', '--force']), 0)
  })

  it('an unknown ref exits 4', async () => {
    for (const ref of ['tiny@nosuchlabel', 'nosuchmodel', `tiny@${'b'.repeat(12)}`]) {
      const r = await d.cli(['show', ref, '--json'])
      expectExit(r, EXIT.NOT_FOUND)
      expect((JSON.parse(r.stdout) as { error: { code: string } }).error.code).toBe('NOT_FOUND')
    }
    expectExit(await d.cli(['export', 'tiny@nosuchlabel', join(h.root, 'nothing')]), EXIT.NOT_FOUND)
    expect(await listDir(join(h.root, 'nothing'))).toEqual([])
  })

  it('without a daemon the CLI exits 3 and says how to start one', async () => {
    const empty = await h.dir('no-daemon')
    for (const args of [['status'], ['ls', '--json'], ['add', src, '--name', 'x']]) {
      const r = await runCli(['--home', empty, ...args])
      expectExit(r, EXIT.UNREACHABLE)
      expect(r.stderr).toContain('shoal daemon')
    }
  })

  it('a usage error exits 2', async () => {
    expectExit(await d.cli(['add', src]), EXIT.USAGE) // --name is required
    expectExit(await d.cli(['no-such-command']), EXIT.USAGE)
    expectExit(await d.cli(['show']), EXIT.USAGE)
    expectExit(await d.cli(['ls', '--bogus-flag']), EXIT.USAGE)
  })

  it('SHOAL_HOME isolates daemons: two homes, two stores', async () => {
    const other = await h.start(join(h.root, 'home-2'))
    expect(await other.json<ModelRow[]>(['ls'])).toEqual([])
    versionOf(await other.cli(['add', join(src, 'config.json'), '--name', 'only-here', '--json']))
    expect((await other.json<ModelRow[]>(['ls'])).map(m => m.name)).toEqual(['only-here'])
    expect((await d.json<ModelRow[]>(['ls'])).map(m => m.name)).toEqual(['tiny'])
    // --home selects the same daemon as SHOAL_HOME does.
    const viaFlag = await runCli(['--home', other.home, 'ls', '--json'], { SHOAL_HOME: d.home })
    expectExit(viaFlag, 0)
    expect((JSON.parse(viaFlag.stdout) as ModelRow[]).map(m => m.name)).toEqual(['only-here'])
    expect((await status(other)).pid).toBe(other.pid)
    expect((await status(d)).pid).toBe(d.pid)
    expect(await other.stop('SIGTERM')).toBe(0)
  })

  it('the socket has mode 0660, and SIGTERM stops the daemon with exit 0 and removes the socket', async () => {
    // The daemon's own socket (the harness's recording proxy listens where clients connect).
    expect((await stat(d.daemonSocket)).mode & 0o777).toBe(0o660)
    expect(await d.stop('SIGTERM')).toBe(0)
    await expect(lstat(d.daemonSocket)).rejects.toMatchObject({ code: 'ENOENT' })
    expectExit(await d.cli(['status']), EXIT.UNREACHABLE)
    // The store survives the restart.
    await d.start()
    expect((await d.json<VersionInfo[]>(['ls', 'tiny'])).map(v => v.version)).toContain(v1)
    await expectConsistent(d)
  })
})
