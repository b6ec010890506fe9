/**
 * Issue 2, "kill -9 during add" and "disk full during add": the daemon dies (or the disk fills) in
 * the middle of storing a large model. Afterwards the store is consistent — `verify` clean, no
 * version of the interrupted model listed, `tmp/` empty, every file in `blobs/` recorded by the
 * index — and the same add, retried, succeeds and exports byte-identical files.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { llamaTensors, writeSafetensors } from '../../scripts/lib/synth.js'
import type { ModelRow } from '../../src/rpc/api.js'
import { EXIT, Harness, expectConsistent, expectExit, listDir, listing, sleep, status, treeDigests, versionOf, writeModelFolder, type CliResult, type DaemonProcess } from './helpers.js'

/** Each of the two weight files of the large model. 2 × 768 MiB ≈ 1.5 GiB. */
const SHARD_BYTES = 768 * 1024 * 1024
const MiB = 1024 * 1024

/**
 * Watches `<home>/tmp` during one add: the temporary blob files in the order they appeared (one per
 * file added: `a.safetensors`, then `b.safetensors`, then `config.json`) and their current sizes.
 */
class TmpWatch {
  private readonly order: string[] = []

  constructor (private readonly home: string) {}

  /** Size of the `index`-th blob file this add started, or -1 if it has not appeared (or is gone). */
  async size (index: number): Promise<number> {
    for (const name of await listDir(join(this.home, 'tmp'))) {
      if (name.startsWith('blob-') && !this.order.includes(name)) this.order.push(name)
    }
    const name = this.order[index]
    if (name === undefined) return -1
    return (await stat(join(this.home, 'tmp', name)).catch(() => undefined))?.size ?? -1
  }
}

describe('kill -9 during add', () => {
  let h: Harness
  let d: DaemonProcess
  let big: string
  let bigDigests: Record<string, string>
  let shardSize: number
  let baseline: Record<string, unknown>

  beforeAll(async () => {
    h = await Harness.create('crash')
    big = await h.dir('big')
    for (const shard of ['a', 'b']) {
      shardSize = await writeSafetensors(join(big, `${shard}.safetensors`), llamaTensors(SHARD_BYTES, { hidden: 1024, vocab: 8192, seedPrefix: `crash-${shard}` }))
    }
    await writeModelFolder(join(h.root, 'small'), { metadata: { task: 'text-generation' } })
    await writeFile(join(big, 'config.json'), JSON.stringify({ architectures: ['LlamaForCausalLM'] }))
    bigDigests = await treeDigests(big)
    d = await h.start(join(h.root, 'home'))
    versionOf(await d.cli(['add', join(h.root, 'small'), '--name', 'small', '--label', 'prod', '--json']))
    baseline = await listing(d)
  }, 180_000)

  afterAll(async () => { await h?.close() })

  /**
   * Starts `add` of the large model, waits until the `blob`-th file being stored has `bytes` in
   * `tmp/`, kills the daemon with SIGKILL, restarts it and checks the store: nothing of the
   * interrupted add is visible or left over.
   */
  async function killDuringAdd (blob: number, bytes: number): Promise<void> {
    let finished: CliResult | undefined
    const adding = d.cli(['add', big, '--name', 'big', '--json']).then(r => { finished = r; return r })
    const watch = new TmpWatch(d.home)
    const deadline = Date.now() + 120_000
    while (await watch.size(blob) < bytes) {
      if (finished !== undefined) throw new Error(`add ended (exit ${finished.code}) before the kill moment: ${finished.stderr}`)
      if (Date.now() > deadline) throw new Error('the kill moment never came')
      await sleep(5)
    }
    expect(await d.stop('SIGKILL')).toBe('SIGKILL')
    const r = await adding
    expectExit(r, EXIT.UNREACHABLE)
    expect(r.stderr).toMatch(/daemon closed the connection.*did it stop or crash/)
    expect((await listDir(join(d.home, 'tmp'))).length, 'the kill left work in progress behind').toBeGreaterThan(0)

    await d.start()
    await expectConsistent(d, baseline)
    expect((await d.json<ModelRow[]>(['ls'])).map(m => m.name)).toEqual(['small'])
    expectExit(await d.cli(['show', 'big']), EXIT.NOT_FOUND)
    expect(await listDir(join(d.home, 'models'))).toEqual(['models--small'])
  }

  it('while the first weight file is being written', async () => {
    await killDuringAdd(0, 32 * MiB)
  })

  it('after the first weight file is stored, while the second is written', async () => {
    await killDuringAdd(1, 64 * MiB)
  })

  it('when the last weight file is almost complete', async () => {
    await killDuringAdd(1, Math.floor(shardSize * 0.95))
    // Blobs the interrupted adds committed are recorded (never orphaned) and no version keeps them.
    const gc = await d.json<{ versions: unknown[], blobs: Array<{ size: number }> }>(['gc', '--dry-run'])
    expect(gc.versions).toEqual([])
    expect(gc.blobs.every(b => b.size === shardSize)).toBe(true)
  })

  it('then the same add succeeds and exports byte-identical files', async () => {
    const version = versionOf(await d.cli(['add', big, '--name', 'big', '--json']))
    expect((await d.json<ModelRow[]>(['ls'])).map(m => m.name).sort()).toEqual(['big', 'small'])
    const out = join(h.root, 'export')
    expectExit(await d.cli(['export', `big@${version}`, out]), 0)
    expect(await treeDigests(out)).toEqual(bigDigests)
    await expectConsistent(d)
    // The retried add now references every blob an interrupted attempt left: GC finds nothing to remove.
    const gc = await d.json<{ versions: unknown[], blobs: unknown[] }>(['gc', '--dry-run'])
    expect(gc).toMatchObject({ versions: [], blobs: [] })
  })
})

/** Why a tmpfs cannot be mounted here, or undefined when it can. */
function tmpfsUnavailable (): string | undefined {
  if (process.platform !== 'linux') return 'tmpfs mounts need Linux'
  const dir = mkdtempSync(join(tmpdir(), 'shoal-e2e-tmpfs-probe-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { stdio: 'pipe' })
    execFileSync('umount', [dir], { stdio: 'pipe' })
    return undefined
  } catch (err) {
    const text = (err as { stderr?: Buffer }).stderr?.toString().trim() ?? (err as Error).message
    return `mounting a tmpfs is not permitted here (${text}); run as root or with CAP_SYS_ADMIN`
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const NO_TMPFS = tmpfsUnavailable()
if (NO_TMPFS !== undefined) console.warn(`skipping the disk-full e2e test: ${NO_TMPFS}`)

describe('disk full during add', () => {
  let h: Harness
  const mounts: string[] = []

  beforeAll(async () => { h = await Harness.create('diskfull') })

  afterAll(async () => {
    await h?.stopAll()
    for (const m of mounts) {
      try { execFileSync('umount', [m], { stdio: 'pipe' }) } catch (err) { console.error(`umount ${m} failed`, err) }
    }
    await h?.close()
  })

  it.skipIf(NO_TMPFS !== undefined)(`exits 8 with a disk-full message, keeps the store consistent, and works once there is room${NO_TMPFS !== undefined ? ` (skipped: ${NO_TMPFS})` : ''}`, async () => {
    const mnt = await h.dir('tmpfs')
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', mnt], { stdio: 'pipe' })
    mounts.push(mnt)
    const d = await h.start(join(mnt, 'home'))

    const small = await writeModelFolder(join(h.root, 'small-1'), { bytes: 4 * MiB, seed: 's1' })
    versionOf(await d.cli(['add', small, '--name', 'small', '--label', 'prod', '--json']))
    const baseline = await listing(d)

    const large = await writeModelFolder(join(h.root, 'large'), { bytes: 64 * MiB, seed: 'large' })
    const r = await d.cli(['add', large, '--name', 'large', '--json'])
    const pid = d.pid
    expectExit(r, EXIT.DISK_FULL)
    expect(r.stderr).toMatch(/disk full/i)
    expect(r.stderr).toMatch(/free some space/)
    expect(JSON.parse(r.stdout)).toMatchObject({ error: { code: 'DISK_FULL' } })
    expect((await status(d)).pid, 'the daemon survives a full disk').toBe(pid)
    await expectConsistent(d, baseline)
    expect(await listDir(join(d.home, 'models'))).toEqual(['models--small'])

    // The failed add left its space free: a model that fits goes in.
    const next = await writeModelFolder(join(h.root, 'small-2'), { bytes: 4 * MiB, seed: 's2' })
    const version = versionOf(await d.cli(['add', next, '--name', 'small', '--json']))
    const out = join(h.root, 'export-small-2')
    expectExit(await d.cli(['export', `small@${version}`, out]), 0)
    expect(await treeDigests(out)).toEqual(await treeDigests(next))
    await expectConsistent(d)
    expect(await d.stop('SIGTERM')).toBe(0)
  })
})
