/**
 * Disk full at random points: a daemon's home on a small tmpfs, filled to seeded random levels of
 * free space (0 bytes included), runs `add`, `pull` (from a second real daemon), `label set` and
 * `pin`. Each either exits 0 — and then what it did is visible at once and survives a kill -9 — or
 * exits 8 (DISK_FULL) with a message that says what was kept. With the room back the store is
 * consistent (`verify` clean, nothing partial listed) and the same operations succeed.
 *
 * Also the two reported cases: `label set` with no room (it exited 0 while the `refs/` write
 * failed, the label unmoved), and an index log record cut short by a full disk, after which a
 * `label set` that exited 0 was lost at the next restart ("Corruption: checksum mismatch").
 *
 * Needs root to mount a tmpfs; skipped with the reason otherwise. The seed is printed;
 * `SHOAL_DISKFULL_SEED=<seed>` replays a run.
 */
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { VersionInfo } from '../../src/store/store.js'
import { ShoalClient } from '../../src/rpc/client.js'
import { seeded } from '../helpers/random.js'
import { EXIT, Harness, expectConsistent, expectExit, sleep, versionOf, writeModelFolder, type CliResult, type DaemonProcess } from '../e2e/helpers.js'
import { fill, mountTmpfs, remount, tmpfsUnavailable, unfill, unmount } from './tmpfs.js'

const KiB = 1024
const MiB = 1024 * KiB
const SEED = Number(process.env.SHOAL_DISKFULL_SEED ?? Math.floor(Math.random() * 2 ** 31))
const NO_TMPFS = tmpfsUnavailable()
if (NO_TMPFS !== undefined) console.warn(`skipping the disk-full fault tests: ${NO_TMPFS}`)

/** What each operation's DISK_FULL message must say it kept. */
const KEPT: Record<string, RegExp> = {
  add: /the version was not added and nothing partial was kept/,
  pull: /chunks verified so far are kept in partial\/, and the pull resumes from them|nothing new was fetched \(chunks verified by an earlier try stay in partial\/|every file is stored, and the version is added when the pull is run again/,
  label: /nothing was published|the head was not accepted|published the head moving .* but this node's own label was not changed/,
  pin: /the pin was not recorded/
}

describe.skipIf(NO_TMPFS !== undefined)(`disk full${NO_TMPFS !== undefined ? ` (skipped: ${NO_TMPFS})` : ''}`, () => {
  let h: Harness
  let mnt: string
  let mounted = false
  let source: { d: DaemonProcess, addr: string }
  let d: DaemonProcess
  let client: ShoalClient
  const random = seeded(SEED)
  /** Versions of `full/base` that `prod` moves between. */
  const base: string[] = []
  /** Versions of `full/base` added unpinned, one for each `pin` to pin. */
  const unpinned: string[] = []
  /** Versions the source holds, for pulls. */
  const pulls: Array<{ name: string, version: string }> = []
  let nextPull = 0
  /** A version of many small files of one content: its manifest (tens of KiB) makes a pull's first index write. */
  let many = ''
  let nextAdd = 0
  /** What exited 0: versions that must stay (pinned), and where `prod` must point. */
  const kept = new Map<string, string>()
  let prod = ''

  beforeAll(async () => {
    console.log(`disk-full test seed ${SEED} (replay: SHOAL_DISKFULL_SEED=${SEED})`)
    h = await Harness.create('faults-diskfull', { rpc: 'direct' })
    mnt = await h.dir('tmpfs')
    mountTmpfs(mnt, 48 * MiB)
    mounted = true
    const p2p = { dht: false }
    source = await h.node('source', { config: { p2p } })
    // One pull per round of the first test.
    await Promise.all([
      ...Array.from({ length: 3 }, async (_, i) => {
        const folder = await writeModelFolder(await h.dir(`pull-${i}`), { bytes: 2 * MiB, seed: `pull-${i}` })
        pulls[i] = { name: `full/pull-${i}`, version: versionOf(await source.d.cli(['add', folder, '--name', `full/pull-${i}`, '--json'])) }
      }),
      (async () => {
        const folder = await h.dir('many')
        // One content in every file: the pull needs 100 bytes of room, its manifest record far more.
        for (let i = 0; i < 400; i++) await writeFile(join(folder, `part-${String(i).padStart(3, '0')}.bin`), 'same\n'.repeat(20))
        many = versionOf(await source.d.cli(['add', folder, '--name', 'full/many', '--json']))
      })()
    ])
    const home = join(mnt, 'home')
    await mkdir(home)
    await writeFile(join(home, 'config.json'), JSON.stringify({ p2p }))
    d = await h.start(home, ['--peer', source.addr])
    client = new ShoalClient({ socketPath: d.socket })
    // Two versions `prod` moves between (pinned), three for the rounds' pins (unpinned).
    const versions = await Promise.all(Array.from({ length: 5 }, async (_, i) => {
      const folder = await writeModelFolder(await h.dir(`base-${i}`), { bytes: 256 * KiB, seed: `base-${i}` })
      return versionOf(await d.cli(['add', folder, '--name', 'full/base', '--json', ...(i < 2 ? [] : ['--no-pin'])]))
    }))
    base.push(...versions.slice(0, 2))
    for (const v of base) kept.set(v, 'full/base')
    unpinned.push(...versions.slice(2))
    expectExit(await d.cli(['label', 'set', 'full/base', 'prod', base[0]!]), 0)
    prod = base[0]!
  }, 120_000)

  afterAll(async () => {
    await h?.stopAll()
    if (mounted) {
      try { unmount(mnt) } catch (err) { console.error(`umount ${mnt} failed`, err) }
    }
    await h?.close()
  })

  /**
   * Waits until the daemon reports `full/base@prod` moved to `target` (by itself, once its store
   * takes writes again). Waits on events, which are in memory: no index read races the reopen.
   */
  async function movedBySelf (target: string): Promise<void> {
    const deadline = Date.now() + 30_000
    const moved = (e: { type: string, data: Record<string, unknown> }): boolean => e.type === 'label.moved' && e.data.label === 'prod' && e.data.version === target
    while (!(await client.events()).events.some(moved)) {
      if (Date.now() > deadline) throw new Error(`full/base@prod never moved to ${target} once there was room`)
      await sleep(100)
    }
    expect(await prodNow()).toBe(target)
    prod = target
  }

  /** Where `full/base@prod` points in the listing. */
  async function prodNow (): Promise<string | undefined> {
    return (await client.versions('full/base')).find(v => v.labels.includes('prod'))?.version
  }

  /** The four operations, each as a command and what an exit 0 must show at once. */
  function operations (): Array<{ op: string, args: string[], done: (r: CliResult) => Promise<void> }> {
    const add = `full/add-${nextAdd++}`
    const pull = pulls[nextPull++ % pulls.length]!
    const target = base.find(v => v !== prod)!
    const pinned = unpinned.shift()!
    return [
      { op: 'add', args: ['add', '', '--name', add, '--json'], done: async r => { kept.set(versionOf(r), add) } },
      { op: 'pull', args: ['pull', `${pull.name}@${pull.version}`, '--json'], done: async () => { kept.set(pull.version, pull.name) } },
      {
        op: 'label',
        args: ['label', 'set', 'full/base', 'prod', target],
        done: async () => {
          expect(await prodNow(), 'label set exited 0, so the local label has moved').toBe(target)
          prod = target
        }
      },
      { op: 'pin', args: ['pin', `full/base@${pinned}`], done: async () => { kept.set(pinned, 'full/base') } }
    ]
  }

  /** Runs one operation: exit 0 (checked by `done`) or exit 8 with what was kept. True when it succeeded. */
  async function attempt (o: ReturnType<typeof operations>[number], folder: string, when: string): Promise<boolean> {
    const args = o.op === 'add' ? o.args.map(a => a === '' ? folder : a) : o.args
    const r = await d.cli(args)
    if (r.code === 0) {
      await o.done(r)
      return true
    }
    expectExit(r, EXIT.DISK_FULL)
    expect(r.stderr, `${o.op} ${when}`).toMatch(/disk full/)
    expect(r.stderr, `${o.op} ${when}: what was kept`).toMatch(KEPT[o.op]!)
    if (o.op === 'pull') expect(r.stderr).not.toMatch(/nothing partial/)
    return false
  }

  /** After a kill -9 and a restart: verify clean, nothing partial listed, nothing acknowledged lost. */
  async function expectSurvived (when: string): Promise<void> {
    expect(await d.stop('SIGKILL')).toBe('SIGKILL')
    await d.start()
    const report = await client.verify()
    expect(report.problems, when).toEqual([])
    expect(report.damaged, when).toEqual([])
    const listed = new Map<string, VersionInfo>()
    for (const m of await client.models()) for (const v of await client.versions(m.name)) listed.set(v.version, v)
    for (const v of listed.values()) expect(v.complete, `${v.name}@${v.version} is listed but not complete ${when}`).toBe(true)
    for (const [version, name] of kept) {
      expect(listed.get(version), `${name}@${version} exited 0 but is gone ${when}`).toBeDefined()
      expect(listed.get(version)?.pinned, `${name}@${version} exited 0 pinned but is not ${when}`).toBe(true)
    }
    expect(await prodNow(), `full/base@prod ${when}`).toBe(prod)
  }

  it('add, pull, label set and pin at random levels of free space: each succeeds and survives kill -9, or fails with DISK_FULL saying what was kept, and succeeds once there is room', async () => {
    const folder = await writeModelFolder(await h.dir('add'), { bytes: 2 * MiB, seed: 'add' })
    const levels = [0, Math.floor(random() * 64 * KiB), 64 * KiB + Math.floor(random() * 3 * MiB)]
    let failures = 0
    for (const level of levels) {
      const free = await fill(mnt, level)
      const when = `with ${free} bytes free (seed ${SEED})`
      const ops = operations()
      // A seeded order: which write meets the full disk first differs from level to level.
      for (let i = ops.length - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1))
        ;[ops[i], ops[j]] = [ops[j]!, ops[i]!]
      }
      const failed = []
      for (const o of ops) if (!await attempt(o, folder, when)) failed.push(o)
      failures += failed.length
      await unfill(mnt)
      for (const o of failed) {
        const r = await d.cli(o.op === 'add' ? o.args.map(a => a === '' ? folder : a) : o.args)
        expectExit(r, 0)
        await o.done(r)
      }
    }
    expect(failures, 'no operation met the full disk').toBeGreaterThan(0)
    // One kill -9 for all rounds: what exited 0 in any of them, before or after a failure, stays.
    await expectSurvived(`after rounds with ${levels.join(', ')} bytes left (seed ${SEED})`)
  })

  it('label set with 0 bytes free (or a page or two) exits 0 only with the label moved, otherwise 8 saying so; the daemon moves it once there is room', async () => {
    for (const level of [0, 4 * KiB, 8 * KiB]) {
      const free = await fill(mnt, level)
      const target = base.find(v => v !== prod)!
      const r = await d.cli(['label', 'set', 'full/base', 'prod', target])
      if (r.code === 0) {
        expect(await prodNow(), `label set exited 0 with ${free} bytes free, so the local label has moved`).toBe(target)
        prod = target
        await unfill(mnt)
        continue
      }
      expectExit(r, EXIT.DISK_FULL)
      expect(r.stderr).toMatch(KEPT.label!)
      expect(await prodNow(), `label set exited 8 with ${free} bytes free`).toBe(prod)
      await unfill(mnt)
      // The head went out: once the store takes writes again the daemon applies it here.
      if (/published the head/.test(r.stderr)) await movedBySelf(target)
    }
    // That what exited 0 here survives kill -9 is checked after the last test's kill.
  })

  it('label set whose refs/ write fails after its head was recorded exits 8 saying so, and the daemon moves the label once there is room', async () => {
    // The reported case, made certain: refs/ of the model on a tmpfs of one page, which its one
    // ref file fills, so the head's index write succeeds and the ref file's write does not.
    const refs = join(d.home, 'models', 'models--full--base', 'refs')
    const files = new Map<string, Buffer>()
    for (const name of await readdir(refs)) files.set(name, await readFile(join(refs, name)))
    mountTmpfs(refs, 4 * KiB)
    try {
      for (const [name, bytes] of files) await writeFile(join(refs, name), bytes)
      const target = base.find(v => v !== prod)!
      const r = await d.cli(['label', 'set', 'full/base', 'prod', target])
      expectExit(r, EXIT.DISK_FULL)
      expect(r.stderr).toMatch(new RegExp(`^shoal: published the head moving full/base@prod to ${target} \\(nodes that follow the label act on it\\), but this node's own label was not changed: disk full while moving full/base@prod to ${target} \\(.*ENOSPC.*\\): the label was not moved \\(it still points at ${prod}\\)`))
      expect(r.stderr).toMatch(/this node applies the head by itself once its store takes writes again/)
      expect(await prodNow(), 'label set exited 8').toBe(prod)
      remount(refs, 1024 * KiB)
      await movedBySelf(target)
      expect((await readFile(join(refs, 'prod'), 'utf8')).trim()).toBe(target)
    } finally {
      for (const name of await readdir(refs)) files.set(name, await readFile(join(refs, name)))
      unmount(refs)
      for (const [name, bytes] of files) await writeFile(join(refs, name), bytes)
    }
  })

  it('an index log record cut short by a full disk: the writes acknowledged once there is room survive kill -9', async () => {
    // A pull's first write to disk is its index record with the manifest (here tens of KiB, many
    // pages: its partial files are sparse), so with 0 bytes free LevelDB's log write is cut short
    // and fails — or LevelDB fails it for a table its background compaction could not write.
    const pull = { name: 'full/many', version: many }
    // A write with room, so the store takes writes again if an earlier test left it refusing them.
    expectExit(await d.cli(['pin', `full/base@${base[0]!}`]), 0)
    // Room for the pull's one file (its free-space check passes), not for its manifest record.
    await fill(mnt, 8 * KiB)
    const r = await d.cli(['pull', `${pull.name}@${pull.version}`, '--json'])
    expectExit(r, EXIT.DISK_FULL)
    expect(r.stderr, r.stderr).toMatch(/disk full while starting the pull of full\/many@\w+ \(IO error: .*\/index\/[^)]*: No space left on device\): nothing new was fetched/)
    await unfill(mnt)
    const target = base.find(v => v !== prod)!
    expectExit(await d.cli(['label', 'set', 'full/base', 'canary', target]), 0)
    expectExit(await d.cli(['pull', `${pull.name}@${pull.version}`, '--json']), 0)
    kept.set(pull.version, pull.name)
    await expectSurvived('after label set with no room, then a cut-short index record')
    expect((await client.versions('full/base')).find(v => v.labels.includes('canary'))?.version, 'label set exited 0 after the disk had room again').toBe(target)
    await expectConsistent(d)
  })
})
