/**
 * kill -9 at random points: a daemon is killed with SIGKILL 20 times — during `add`, `pull` (from a
 * second real daemon), `label set` + `pin`, and `gc` — each time at a seeded random delay after the
 * commands start, and restarted. After every restart:
 * - `verify` is clean;
 * - nothing partial is visible: every listed version is complete, and a model has no more versions
 *   than commands tried to make;
 * - nothing acknowledged is lost: every command that exited 0 before the kill — an add, a pull, a
 *   label set, a pin, a gc's removals — is still in force. (A command killed before it answered
 *   may or may not have happened; its label may appear later, when the head it published is
 *   applied at start-up.)
 *
 * The seed is printed; `SHOAL_CRASH_SEED=<seed>` replays a run. The random delays are the fault's
 * timing, not waits for a condition: every check after a restart waits for the daemon to answer.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { VersionInfo } from '../../src/store/store.js'
import { ShoalClient } from '../../src/rpc/client.js'
import { seeded } from '../helpers/random.js'
import { Harness, expectConsistent, sleep, versionOf, writeModelFolder, type CliResult, type DaemonProcess } from '../e2e/helpers.js'

const MiB = 1024 * 1024
const SEED = Number(process.env.SHOAL_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31))

type Kind = 'add' | 'pull' | 'label' | 'gc'
/** Kills per kind: 20 in all. */
const KILLS: Record<Kind, number> = { add: 6, pull: 5, label: 5, gc: 4 }
/** Range of the delay between the start of a cycle's commands and the kill, per kind (ms). */
const DELAY: Record<Kind, [number, number]> = { add: [150, 900], pull: [200, 1500], label: [150, 1300], gc: [150, 700] }

/** What commands acknowledged (exit 0) so far, and what they merely tried. */
class Acked {
  /** Versions that must stay: added or pulled (pinned), or pinned later. */
  readonly kept = new Map<string, string>()
  /** Versions a gc that exited 0 removed. */
  readonly removed = new Set<string>()
  /** Per label of `crash/base`: the last acknowledged target, and targets tried after it. */
  readonly labels = new Map<string, { acked?: string, tried: Set<string> }>()
  /** Per model: how many commands tried to add a version of it. */
  readonly attempts = new Map<string, number>()

  tried (model: string): void {
    this.attempts.set(model, (this.attempts.get(model) ?? 0) + 1)
  }
}

describe('kill -9 at random points', () => {
  let h: Harness
  let source: { d: DaemonProcess, addr: string }
  let d: DaemonProcess
  const random = seeded(SEED)
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)] as T
  const acked = new Acked()
  const folders: { add: string[], fodder: string[] } = { add: [], fodder: [] }
  const pulls: Array<{ name: string, version: string }> = []
  const base: string[] = []
  /** Versions of `crash/fodder`, added unpinned for gc to collect. */
  const fodder: string[] = []

  beforeAll(async () => {
    console.log(`kill -9 test seed ${SEED} (replay: SHOAL_CRASH_SEED=${SEED})`)
    h = await Harness.create('faults-crash', { rpc: 'direct' })
    const p2p = { dht: false }
    const count = (n: number): number[] => Array.from({ length: n }, (_, i) => i)
    const model = async (name: string, bytes: number): Promise<string> => await writeModelFolder(await h.dir(name), { bytes, seed: name })
    source = await h.node('source', { config: { p2p } })
    const [victim] = await Promise.all([
      h.node('victim', { peers: [source.addr], config: { p2p } }),
      ...count(KILLS.pull).map(async i => {
        const folder = await model(`pull-${i}`, 3 * MiB)
        pulls[i] = { name: `crash/pull-${i}`, version: versionOf(await source.d.cli(['add', folder, '--name', `crash/pull-${i}`, '--json'])) }
      }),
      ...count(KILLS.add).map(async i => { folders.add[i] = await model(`add-${i}`, 2 * MiB) }),
      ...count(KILLS.gc).map(async i => { folders.fodder[i] = await model(`fodder-${i}`, 1 * MiB) })
    ])
    d = victim!.d
    for (const i of count(3)) {
      const version = versionOf(await d.cli(['add', await model(`base-${i}`, 1 * MiB), '--name', 'crash/base', '--json']))
      base.push(version)
      acked.kept.set(version, 'crash/base')
      acked.tried('crash/base')
    }
    expect((await d.cli(['label', 'set', 'crash/base', 'prod', base[0]!])).code).toBe(0)
    acked.labels.set('prod', { acked: base[0], tried: new Set() })
  }, 120_000)

  afterAll(async () => { await h?.close() })

  /**
   * Runs `commands` one after another, kills the daemon with SIGKILL `delay` ms after they start,
   * and returns the results of those that finished (a command the kill cut off fails).
   */
  async function killDuring (commands: string[][], delay: number): Promise<Array<{ args: string[], r: CliResult }>> {
    const done: Array<{ args: string[], r: CliResult }> = []
    let killed = false
    const running = (async () => {
      for (const args of commands) {
        if (killed) return
        done.push({ args, r: await d.cli(args) })
      }
    })()
    await sleep(delay)
    killed = true
    await d.stop('SIGKILL')
    await running
    return done
  }

  /** One cycle of `kind`: its commands, the kill, and what they acknowledged. */
  async function cycle (kind: Kind, n: number): Promise<string> {
    const [low, high] = DELAY[kind]
    const delay = Math.round(low + random() * (high - low))
    if (kind === 'add') {
      const name = `crash/add-${n}`
      acked.tried(name)
      for (const { r } of await killDuring([['add', folders.add[n]!, '--name', name, '--json']], delay)) {
        if (r.code === 0) acked.kept.set(versionOf(r), name)
      }
    } else if (kind === 'pull') {
      const { name, version } = pulls[n]!
      acked.tried(name)
      for (const { r } of await killDuring([['pull', `${name}@${version}`, '--json']], delay)) {
        if (r.code === 0) acked.kept.set(version, name)
      }
    } else if (kind === 'label') {
      const target = pick(base)
      const label = acked.labels.get('prod')!
      label.tried.add(target)
      const unpinned = fodder.filter(v => !acked.kept.has(v) && !acked.removed.has(v))
      const pin = unpinned.length > 0 ? pick(unpinned) : undefined
      const commands = [['label', 'set', 'crash/base', 'prod', target], ...(pin !== undefined ? [['pin', `crash/fodder@${pin}`]] : [])]
      for (const { args, r } of await killDuring(commands, delay)) {
        if (r.code !== 0) continue
        if (args[0] === 'label') acked.labels.set('prod', { acked: target, tried: new Set() })
        else if (pin !== undefined) acked.kept.set(pin, 'crash/fodder')
      }
    } else {
      // Something for gc to collect: an unpinned version nothing labels.
      acked.tried('crash/fodder')
      fodder.push(versionOf(await d.cli(['add', folders.fodder[n]!, '--name', 'crash/fodder', '--no-pin', '--json'])))
      for (const { r } of await killDuring([['gc', '--json']], delay)) {
        if (r.code !== 0) continue
        for (const v of (JSON.parse(r.stdout) as { versions: Array<{ version: string }> }).versions) acked.removed.add(v.version)
      }
    }
    return `${kind} #${n}, killed after ${delay} ms`
  }

  /** The checks after a restart (see the module doc), through the RPC client for speed. */
  async function expectIntact (when: string): Promise<void> {
    const client = new ShoalClient({ socketPath: d.socket })
    const report = await client.verify()
    expect(report.problems, `verify after ${when}`).toEqual([])
    expect(report.damaged, `verify after ${when}`).toEqual([])
    const listed = new Map<string, VersionInfo>()
    for (const m of await client.models()) {
      const versions = await client.versions(m.name)
      expect(versions.length, `versions of ${m.name} after ${when}`).toBeLessThanOrEqual(acked.attempts.get(m.name) ?? 0)
      for (const v of versions) listed.set(v.version, v)
    }
    for (const v of listed.values()) expect(v.complete, `${v.name}@${v.version} listed but not complete after ${when}`).toBe(true)
    for (const [version, name] of acked.kept) {
      expect(listed.get(version), `acknowledged ${name}@${version} lost after ${when}`).toBeDefined()
      expect(listed.get(version)?.pinned, `acknowledged pin of ${name}@${version} lost after ${when}`).toBe(true)
    }
    for (const version of acked.removed) expect(listed.has(version), `${version}, removed by an acknowledged gc, is back after ${when}`).toBe(false)
    for (const [label, { acked: target, tried }] of acked.labels) {
      const at = [...listed.values()].find(v => v.name === 'crash/base' && v.labels.includes(label))?.version
      expect([target, ...tried], `crash/base@${label} after ${when}`).toContain(at)
    }
  }

  it('20 kills during add, pull, label set and gc lose nothing acknowledged and leave nothing partial', async () => {
    const plan = Object.entries(KILLS).flatMap(([kind, count]) => Array.from({ length: count }, (_, n) => ({ kind: kind as Kind, n })))
    for (let i = plan.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1))
      ;[plan[i], plan[j]] = [plan[j]!, plan[i]!]
    }
    for (const [i, { kind, n }] of plan.entries()) {
      const when = `kill ${i + 1} (${await cycle(kind, n)}, seed ${SEED})`
      await d.start()
      await expectIntact(when)
    }
    await expectConsistent(d)
  })
})
