/**
 * Cold versions between real daemon processes over TCP on loopback: `shoal compress` keeps an old
 * version compressed (and refuses, saying why, one a label holds), `shoal ls` shows the bytes saved,
 * a peer pulls the cold version from that form byte-identical, `resolve` without `--ensure` refuses
 * it, and `export` and `resolve --ensure` bring its files back byte-identical; `verify` stays clean.
 * With `store.compress`, a version is compressed once a label leaves it, and a rollback brings it back.
 * A daemon killed with SIGKILL while compressing or re-materializing leaves the previous form.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { weightSafetensors } from '../../scripts/lib/weights.js'
import { ShoalClient } from '../../src/rpc/client.js'
import type { VersionInfo } from '../../src/store/store.js'
import { EXIT, expectConsistent, expectExit, Harness, listDir, treeDigests, until, type CliResult } from './helpers.js'

const MiB = 1024 * 1024

/** The value of one series in a /metrics text (0 when absent). */
function metric (text: string, series: string): number {
  const line = text.split('\n').find(l => l.startsWith(`${series} `))
  return line === undefined ? 0 : Number(line.slice(series.length + 1))
}

/** A model folder of bf16 tensors drawn like trained weights (1 MiB each, one per seed). */
async function writeWeightFolder (dir: string, seeds: number[]): Promise<Record<string, string>> {
  await writeFile(join(dir, 'model.safetensors'), weightSafetensors(seeds.map(seed => ({ name: `layer.${seed}.weight`, dtype: 'BF16', bytes: MiB, seed }))))
  await writeFile(join(dir, 'config.json'), `${JSON.stringify({ architectures: ['LlamaForCausalLM'], vocab: Array.from({ length: 2000 }, (_, i) => `tok${i}`) })}\n`)
  return await treeDigests(dir)
}

describe('cold versions', () => {
  let h: Harness
  beforeAll(async () => { h = await Harness.create('cold') })
  afterAll(async () => { await h.close() })

  it('compresses an old version, serves a peer from it, and brings its files back on export and resolve --ensure', async () => {
    // The puller offers codecs whatever its rate: the cold chunks' blocks go as they are stored.
    const compress = { transfer: { compress: 'always' } }
    const seed = await h.node('seed', { config: { labels: { keep: 1 }, ...compress } })
    const model = await h.dir('model')
    const v1Files = await writeWeightFolder(model, [1, 2, 3, 4, 5, 6, 7, 8])
    const v1 = (await seed.d.json<{ version: string }>(['add', model, '--name', 'w', '--label', 'prod'])).version
    await writeWeightFolder(model, [1, 2, 3, 4, 5, 6, 7, 9])
    const v2 = (await seed.d.json<{ version: string }>(['add', model, '--name', 'w', '--label', 'prod'])).version

    const refused = await seed.d.cli(['compress', 'w@prod'])
    expectExit(refused, EXIT.CONFLICT)
    expect(refused.stderr).toContain(`w@${v2} cannot be compressed: w@prod points at it; move the label first`)

    const report = await seed.d.json<{ rawBytes: number, storedBytes: number, chunks: number }>(['compress', `w@${v1}`])
    // v1 shares seven of its eight tensors with v2, which stays: only its own chunks are written.
    expect(report.chunks).toBeLessThanOrEqual(3)
    expect(report.storedBytes).toBeLessThan(0.3 * report.rawBytes)
    const rows = await seed.d.json<VersionInfo[]>(['ls', 'w'])
    const cold = rows.find(r => r.version === v1)!
    expect(cold.complete).toBe(true)
    expect(cold.cold!.savedBytes).toBe(report.rawBytes - report.storedBytes)
    expect(await listDir(join(seed.d.home, 'models', 'models--w', 'snapshots'))).toEqual([v2])
    const text = await seed.d.cli(['ls', 'w'])
    expect(text.stdout).toMatch(/compressed \(saves [\d.]+ [KM]i?B\)/)
    const shown = await seed.d.json<{ cold?: { savedBytes: number } }>(['show', `w@${v1}`])
    expect(shown.cold?.savedBytes).toBe(report.rawBytes - report.storedBytes)
    expect((await seed.d.cli(['show', `w@${v1}`])).stdout).toMatch(/compressed {2}since .*, saves [\d.]+ [KM]i?B/)

    const notHere = await seed.d.cli(['resolve', `w@${v1}`])
    expectExit(notHere, EXIT.CONFLICT)
    expect(notHere.stderr).toContain(`w@${v1} is kept compressed on this node; resolve it with --ensure to bring its files back`)

    // A peer pulls the cold version: blocks come from the cold chunk files (sent as they are
    // stored, not compressed again) and v2's blob.
    const puller = await h.node('puller', { peers: [seed.addr], config: compress })
    const pulled = await puller.d.cli(['pull', `w@${v1}`, '--json'])
    expectExit(pulled, 0)
    const result = pulled.stdout.trim().split('\n').map(l => JSON.parse(l) as { type: string, result?: { path: string } }).find(l => l.type === 'result')?.result
    expect(await treeDigests(result!.path, { followLinks: true })).toEqual(v1Files)
    await puller.d.stop()
    const seedMetrics = await new ShoalClient({ socketPath: seed.d.socket }).metrics()
    const codecLines = seedMetrics.split('\n').filter(l => l.startsWith('shoal_codec_')).join('; ')
    // The cold chunks (at most 3 of 1 MiB, in 256 KiB blocks) went in their stored form.
    expect(metric(seedMetrics, 'shoal_codec_blocks_stored_total'), codecLines).toBeGreaterThanOrEqual(4)
    expect(metric(seedMetrics, 'shoal_codec_blocks_stored_total'), codecLines).toBeLessThanOrEqual(12)

    await expectConsistent(seed.d)
    const out = await h.dir('export')
    expectExit(await seed.d.cli(['export', `w@${v1}`, out]), 0)
    expect(await treeDigests(out)).toEqual(v1Files)
    const again = await seed.d.json<{ path: string }>(['resolve', `w@${v1}`])
    expect(await treeDigests(again.path, { followLinks: true })).toEqual(v1Files)

    // Compressed again, resolve --ensure brings it back for a serving process.
    await seed.d.json(['compress', `w@${v1}`])
    const ensured = await seed.d.cli(['resolve', `w@${v1}`, '--ensure', '--json'])
    expectExit(ensured, 0)
    const { path } = JSON.parse(ensured.stdout) as { path: string }
    expect(await treeDigests(path, { followLinks: true })).toEqual(v1Files)
    await expectConsistent(seed.d)
    await seed.d.stop()
  })

  it('with store.compress, compresses the version a label left, and a rollback brings it back', async () => {
    const node = await h.node('auto', { config: { labels: { keep: 1 }, store: { compress: true, compressAfter: 0 } } })
    const model = await h.dir('auto-model')
    const v1Files = await writeWeightFolder(model, [21, 22, 23])
    const v1 = (await node.d.json<{ version: string }>(['add', model, '--name', 'w', '--label', 'prod'])).version
    await writeWeightFolder(model, [21, 22, 24])
    const v2 = (await node.d.json<{ version: string }>(['add', model, '--name', 'w', '--label', 'prod'])).version
    const isCold = (version: string) => async () => (await node.d.json<VersionInfo[]>(['ls', 'w'])).find(r => r.version === version && r.cold !== undefined)
    await until(`${v1} compressed after prod moved to ${v2}`, isCold(v1), 30_000)
    expectExit(await node.d.cli(['rollback', 'w@prod']), 0)
    const prod = await node.d.json<{ version: string, path: string }>(['resolve', 'w@prod'])
    expect(prod.version).toBe(v1)
    expect(await treeDigests(prod.path, { followLinks: true })).toEqual(v1Files)
    await until(`${v2} compressed after the rollback`, isCold(v2), 30_000)
    await expectConsistent(node.d)
    await node.d.stop()
  })

  it('kill -9 while compressing, then while re-materializing: the previous form stays and verify is clean', async () => {
    const d = await h.start(await h.dir('crash-home'))
    const model = await h.dir('crash-model')
    const files = await writeWeightFolder(model, Array.from({ length: 24 }, (_, i) => 100 + i))
    const version = (await d.json<{ version: string }>(['add', model, '--name', 'w'])).version
    const cold = join(d.home, 'cold')
    const killWhen = async (run: Promise<CliResult>, what: string, moment: () => Promise<boolean>): Promise<void> => {
      let finished: CliResult | undefined
      void run.then(r => { finished = r })
      await until(what, async () => {
        if (finished !== undefined) throw new Error(`the command ended (exit ${finished.code}) before ${what}: ${finished.stderr}`)
        return await moment() ? true : undefined
      }, 60_000, 5)
      expect(await d.stop('SIGKILL')).toBe('SIGKILL')
      expectExit(await run, EXIT.UNREACHABLE)
      await d.start()
    }

    // Killed after some cold files were written, before the batch: the version is as it was.
    await killWhen(d.cli(['compress', `w@${version}`]), 'two cold chunk files written', async () => (await listDir(cold)).length >= 2)
    expect(await listDir(cold)).toEqual([])
    expect((await d.json<VersionInfo[]>(['ls', 'w']))[0]!.cold).toBeUndefined()
    expect(await treeDigests((await d.json<{ path: string }>(['resolve', `w@${version}`])).path, { followLinks: true })).toEqual(files)
    await expectConsistent(d)

    // Compressed; killed while export re-materializes its weights: it stays compressed, whole.
    await d.json(['compress', `w@${version}`])
    const out = await h.dir('crash-export')
    await killWhen(d.cli(['export', `w@${version}`, out]), 'a blob being re-materialized', async () => (await listDir(join(d.home, 'tmp'))).some(n => n.startsWith('blob-')))
    expect((await d.json<VersionInfo[]>(['ls', 'w']))[0]!.cold).toBeDefined()
    await expectConsistent(d)
    expectExit(await d.cli(['export', `w@${version}`, out, '--overwrite']), 0)
    expect(await treeDigests(out)).toEqual(files)
    await expectConsistent(d)
    await d.stop()
  })
})
