/**
 * Serving processes against a real daemon: the ONNX example server (examples/serve-onnx) follows
 * a label under steady load while it moves hot three times and cold once — no request fails,
 * answers switch to the new version's numbers, old leases are released, and `gc` never removes a
 * leased version. Then 500 event watchers on one daemon: all hear a move, one reconnects with
 * Last-Event-ID and gets the replay, and an id from before a restart answers `gone`.
 */
import { existsSync } from 'node:fs'
import { spawn, type ChildProcess } from 'node:child_process'
import { Agent, request } from 'node:http'
import { join } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ROOT } from '../../scripts/lib/daemon-proc.js'
import { expectedOutput, writeOnnxModelFolder, type LinearModel } from '../../scripts/lib/onnx-model.js'
import { ShoalClient } from '../../src/rpc/client.js'
import type { LeaseRow } from '../../src/rpc/api.js'
import type { GcReport } from '../../src/store/gc.js'
import { eventually } from '../helpers/rpc.js'
import { Harness, expectExit, sleep, versionOf, type DaemonProcess } from './helpers.js'

/** The example as a team would run it: built JS (npm run build:examples), no tsx at run time. */
const SERVER = join(ROOT, 'examples', 'serve-onnx', 'dist', 'server.js')
const MODEL = 'lin'
const INPUT = [1, 2, 3, 4]
/** @default 8 — concurrent clients looping on each server */
const CLIENTS = 8
/** @default 500 — event watchers on one daemon */
const WATCHERS = 500

/** Polls every 50 ms, for up to 15 s unless told otherwise. */
async function until<T> (what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  return await eventually(what, probe, timeoutMs, 50)
}

/** The example server as a child process (built JS; `import … from 'shoal'` resolved by the package's exports). */
class ServerProcess {
  stderr = ''
  port = 0
  private constructor (readonly child: ChildProcess, readonly mode: string) {}

  static async start (home: string, mode: 'hot' | 'cold'): Promise<ServerProcess> {
    if (!existsSync(SERVER)) throw new Error(`${SERVER} is missing: run npm run build:examples first`)
    const child = spawn(process.execPath, [SERVER, '--model', MODEL, '--label', 'prod', '--mode', mode, '--port', '0'], {
      cwd: ROOT, env: { ...process.env, SHOAL_HOME: home }, stdio: ['ignore', 'ignore', 'pipe']
    })
    const s = new ServerProcess(child, mode)
    child.stderr?.on('data', (d: Buffer) => { s.stderr += d.toString() })
    await until(`the ${mode} server to listen`, async () => {
      if (child.exitCode !== null) throw new Error(`server exited ${child.exitCode}:\n${s.stderr}`)
      const m = /"msg":"listening".*?"port":(\d+)/.exec(s.stderr)
      if (m !== null) s.port = Number(m[1])
      return m ?? undefined
    }, 30_000)
    return s
  }

  get holder (): string { return `serve-onnx ${MODEL}@prod pid ${this.child.pid ?? 0}` }

  async health (): Promise<{ version: string, staged: string | null, switches: number, lastSwitch: { from: string, to: string, preloaded: boolean } | null }> {
    return JSON.parse((await this.get('/health')).text) as never
  }

  async get (path: string): Promise<{ status: number, text: string }> {
    return await new Promise((resolve, reject) => {
      request({ host: '127.0.0.1', port: this.port, path }, res => {
        let text = ''
        res.on('data', (d: Buffer) => { text += d.toString() })
        res.on('end', () => { resolve({ status: res.statusCode ?? 0, text }) })
      }).on('error', reject).end()
    })
  }

  async stop (): Promise<number | string> {
    const child = this.child
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode ?? child.signalCode ?? -1
    const done = new Promise<number | string>(resolve => child.once('exit', (code, sig) => resolve(code ?? sig ?? -1)))
    child.kill('SIGTERM')
    const r = await Promise.race([done, sleep(15_000).then(() => 'timeout')])
    if (r === 'timeout') { child.kill('SIGKILL'); return await done }
    return r
  }
}

interface Answer { start: number, end: number, status: number, version?: string, y?: number[], error?: string }

/** `CLIENTS` loops of POST /infer on keep-alive connections, until `stop()`. */
function load (port: number): { answers: Answer[], stop: () => Promise<void> } {
  const agent = new Agent({ keepAlive: true, maxSockets: CLIENTS })
  const answers: Answer[] = []
  let running = true
  // The KServe v2 inference protocol.
  const body = JSON.stringify({ id: 'load', inputs: [{ name: 'x', shape: [1, INPUT.length], datatype: 'FP32', data: INPUT }] })
  const path = `/v2/models/${encodeURIComponent(MODEL)}/infer`
  const once = async (): Promise<Answer> => {
    const start = performance.now()
    return await new Promise<Answer>(resolve => {
      const req = request({ host: '127.0.0.1', port, path, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, res => {
        let text = ''
        res.on('data', (d: Buffer) => { text += d.toString() })
        res.on('end', () => {
          const end = performance.now()
          try {
            const r = JSON.parse(text) as { model_name?: string, model_version?: string, id?: string, outputs?: Array<{ name: string, shape: number[], datatype: string, data: number[] }>, error?: string }
            const y = r.outputs?.find(o => o.name === 'y' && o.datatype === 'FP32' && o.shape.length === 2 && o.shape[0] === 1 && r.model_name === MODEL && r.id === 'load')
            resolve({ start, end, status: res.statusCode ?? 0, ...(r.model_version !== undefined ? { version: r.model_version } : {}), ...(y !== undefined ? { y: y.data } : {}), ...(r.error !== undefined ? { error: r.error } : {}) })
          } catch {
            resolve({ start, end, status: res.statusCode ?? 0, error: `not JSON: ${text.slice(0, 200)}` })
          }
        })
        res.on('error', err => resolve({ start, end: performance.now(), status: 0, error: err.message }))
      })
      req.on('error', err => resolve({ start, end: performance.now(), status: 0, error: err.message }))
      req.end(body)
    })
  }
  const loops = Array.from({ length: CLIENTS }, async () => {
    while (running) answers.push(await once())
  })
  return {
    answers,
    stop: async () => {
      running = false
      await Promise.all(loops)
      agent.destroy()
    }
  }
}

describe('serving: the ONNX example follows a label under load', () => {
  let h: Harness
  let d: DaemonProcess
  const servers: ServerProcess[] = []
  const versions: string[] = []
  const models = new Map<string, LinearModel>()

  beforeAll(async () => {
    h = await Harness.create('serving')
    const home = await h.dir('home')
    // keep: 1 — a version the label left is kept only by a pin or a lease, so gc shows which.
    await writeFile(join(home, 'config.json'), JSON.stringify({ labels: { keep: 1 } }))
    d = await h.start(home)
    for (let i = 1; i <= 5; i++) {
      const dir = await h.dir(`v${i}`)
      const model = await writeOnnxModelFolder(dir, { seed: `serving-v${i}` })
      const version = versionOf(await d.cli(['add', dir, '-n', MODEL, ...(i === 1 ? ['-l', 'prod'] : []), '--json']))
      versions.push(version)
      models.set(version, model)
    }
  })

  afterAll(async () => {
    for (const s of servers) await s.stop()
    await h?.close()
  })

  it('moves hot three times and cold once with zero failed requests; leases follow; gc keeps leased versions', async () => {
    const hot = await ServerProcess.start(d.home, 'hot')
    servers.push(hot)
    const cold = await ServerProcess.start(d.home, 'cold')
    servers.push(cold)
    const both = [hot, cold]
    const loads = both.map(s => load(s.port))
    const leasesOf = async (): Promise<LeaseRow[]> => await d.json<LeaseRow[]>(['leases'])
    /** Per server: when (client clock) the first answer from versions[k] came back. */
    const seen = both.map(() => new Map<number, number>())
    const waitServed = async (k: number): Promise<void> => {
      for (const [i, l] of loads.entries()) {
        seen[i]!.set(k, await until(`${both[i]!.mode} server answering with v${k + 1}`, async () => l.answers.find(a => a.version === versions[k])?.end))
      }
    }
    /** Each server holds exactly one lease, on versions[k] (the old ones were released). */
    const waitLeases = async (k: number, stagedBy?: ServerProcess): Promise<void> => {
      await until(`leases on v${k + 1} only`, async () => {
        const rows = await leasesOf()
        const ok = both.every(s => {
          const mine = rows.filter(r => r.holder === s.holder).map(r => r.version).sort()
          const want = [versions[k]!, ...(s === stagedBy ? [versions[4]!] : [])].sort()
          return JSON.stringify(mine) === JSON.stringify(want)
        })
        return ok ? true : undefined
      })
    }

    const moved: number[] = []
    await waitServed(0)
    await waitLeases(0)
    // Three hot moves.
    for (const k of [1, 2, 3]) {
      await sleep(300)
      expectExit(await d.cli(['label', 'set', MODEL, 'prod', versions[k]!, '--json']), 0)
      const t = performance.now()
      await waitServed(k)
      moved.push(performance.now() - t)
      await waitLeases(k)
    }

    // Cold: v5 is unpinned, so only the cold server's preload lease keeps it from gc.
    expectExit(await d.cli(['unpin', `${MODEL}@${versions[4]!}`]), 0)
    expectExit(await d.cli(['unpin', `${MODEL}@${versions[0]!}`]), 0)
    expectExit(await d.cli(['label', 'set', MODEL, 'prod', versions[4]!, '--cold', '--json']), 0)
    await until('the cold server to preload v5', async () => (await cold.health()).staged === versions[4] ? true : undefined)
    await waitLeases(3, cold)
    expect((await hot.health()).staged).toBeNull()
    // Still serving v4 while v5 is staged.
    expect((await cold.health()).version).toBe(versions[3])

    const gc1 = await d.json<GcReport>(['gc'])
    const removed1 = gc1.versions.map(v => v.version)
    expect(removed1).toContain(versions[0]) // unpinned, unlabelled, its leases released at the first move
    expect(removed1).not.toContain(versions[4]) // unpinned, unlabelled, but leased by the cold server's preload
    expect((await d.json<Array<{ version: string }>>(['ls', MODEL])).map(v => v.version)).toContain(versions[4])

    // v4 is unpinned while it is still the label's target and leased by both servers.
    expectExit(await d.cli(['unpin', `${MODEL}@${versions[3]!}`]), 0)
    await sleep(300)
    expectExit(await d.cli(['activate', `${MODEL}@prod`, '--json']), 0)
    await waitServed(4)
    await waitLeases(4)
    expect((await cold.health()).lastSwitch).toMatchObject({ from: versions[3], to: versions[4], preloaded: true })
    expect((await hot.health()).lastSwitch).toMatchObject({ from: versions[3], to: versions[4], preloaded: false })
    // v4's leases are gone, it is no longer labelled or pinned: now gc removes it; the pinned v2, v3 stay.
    const gc2 = await d.json<GcReport>(['gc'])
    expect(gc2.versions.map(v => v.version)).toEqual([versions[3]])

    await sleep(300)
    for (const l of loads) await l.stop()
    for (const [i, l] of loads.entries()) {
      const failed = l.answers.filter(a => a.status !== 200 || a.version === undefined || a.y === undefined)
      expect(failed, `${both[i]!.mode}: failed requests`).toEqual([])
      expect(l.answers.length).toBeGreaterThan(500)
      for (const a of l.answers) {
        const want = expectedOutput(models.get(a.version!)!, INPUT)
        expect(a.y!.length).toBe(want.length)
        for (const [j, v] of want.entries()) expect(Math.abs(a.y![j]! - v)).toBeLessThan(1e-4)
      }
      // After the first answer from version k came back, no request started later got an older one.
      for (const [k, at] of seen[i]!) {
        const stale = l.answers.filter(a => a.start > at && versions.indexOf(a.version!) < k)
        expect(stale, `${both[i]!.mode}: answers from before v${k + 1} after it was served`).toEqual([])
      }
      const counts = Object.fromEntries(versions.map((v, k) => [`v${k + 1}`, l.answers.filter(a => a.version === v).length]))
      console.log(`${both[i]!.mode} server: ${l.answers.length} requests, 0 failed, by version ${JSON.stringify(counts)}`)
    }
    console.log(`hot moves: label set → both servers answering with the new version in ${moved.map(ms => `${Math.round(ms)} ms`).join(', ')}`)

    // What an orchestrator and Prometheus ask of it.
    for (const s of both) {
      expect(await s.get('/ready')).toEqual({ status: 200, text: JSON.stringify({ name: MODEL, ready: true }) })
      expect((await s.get('/v2/health/live')).status).toBe(200)
      const meta = JSON.parse((await s.get(`/v2/models/${encodeURIComponent(MODEL)}`)).text) as { name: string, versions: string[], inputs: Array<{ name: string }> }
      expect(meta).toMatchObject({ name: MODEL, versions: [versions[4]], inputs: [{ name: 'x', datatype: 'FP32' }] })
      const metrics = (await s.get('/metrics')).text
      expect(metrics).toContain(`serve_onnx_model_info{model="${MODEL}",label="prod",version="${versions[4]!}"} 1`)
      expect(Number(/^serve_onnx_requests_total\{status="200"\} (\d+)$/m.exec(metrics)?.[1])).toBe(loads[both.indexOf(s)]!.answers.length)
      expect(/^serve_onnx_switches_total (\d+)$/m.exec(metrics)?.[1]).toBe('4')
      const bad = await new Promise<{ status: number, text: string }>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port: s.port, method: 'POST', path: `/v2/models/${encodeURIComponent(MODEL)}/infer` }, res => {
          let text = ''
          res.on('data', (d: Buffer) => { text += d.toString() })
          res.on('end', () => { resolve({ status: res.statusCode ?? 0, text }) })
        }).on('error', reject)
        req.end(JSON.stringify({ inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3] }] }))
      })
      expect(bad).toEqual({ status: 400, text: JSON.stringify({ error: 'input "x": "data" must hold 4 numbers for shape [1, 4] (flat or nested)' }) })
    }

    // SIGTERM: in-flight work finishes, leases are released, exit 0.
    for (const s of both) expect(await s.stop()).toBe(0)
    expect((await leasesOf()).filter(r => r.holder.startsWith('serve-onnx'))).toEqual([])
  })
})

/** One raw SSE stream on the daemon's socket: events as they arrive, `ready` when subscribed. */
class RawWatch {
  readonly events: Array<{ id?: string, event: string, data: Record<string, unknown>, at: number }> = []
  readonly ready: Promise<void>
  private readonly req: ReturnType<typeof request>
  private readonly listeners = new Set<() => void>()

  constructor (socketPath: string, query: string, lastEventId?: string) {
    let onReady!: () => void
    let onFail!: (err: Error) => void
    this.ready = new Promise((resolve, reject) => { onReady = resolve; onFail = reject })
    this.req = request({ socketPath, path: `/v1/watch?${query}`, headers: lastEventId !== undefined ? { 'last-event-id': lastEventId } : {} }, res => {
      if (res.statusCode !== 200) { onFail(new Error(`watch answered ${res.statusCode ?? 0}`)); return }
      let buffered = ''
      res.on('data', (part: Buffer) => {
        buffered += part.toString('utf8')
        let end
        while ((end = buffered.indexOf('\n\n')) >= 0) {
          const block = buffered.slice(0, end)
          buffered = buffered.slice(end + 2)
          const fields = Object.fromEntries(block.split('\n').filter(l => !l.startsWith(':') && l.includes(':')).map(l => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]))
          if (fields.data === undefined) continue
          const e = { ...(fields.id !== undefined ? { id: fields.id } : {}), event: fields.event ?? 'message', data: JSON.parse(fields.data) as Record<string, unknown>, at: Date.now() }
          if (e.event === 'ready') onReady()
          else this.events.push(e)
          for (const l of this.listeners) l()
        }
      })
      res.on('error', () => {})
    })
    this.req.on('error', err => onFail(err))
    this.req.end()
  }

  /** Resolves with the first event matching `pred` (already received or to come). */
  async next (pred: (e: RawWatch['events'][number]) => boolean, timeoutMs = 15_000): Promise<RawWatch['events'][number]> {
    return await new Promise((resolve, reject) => {
      const check = (): boolean => {
        const e = this.events.find(pred)
        if (e === undefined) return false
        this.listeners.delete(listener)
        clearTimeout(timer)
        resolve(e)
        return true
      }
      const listener = (): void => { check() }
      const timer = setTimeout(() => { this.listeners.delete(listener); reject(new Error('timed out waiting for an event')) }, timeoutMs)
      this.listeners.add(listener)
      check()
    })
  }

  close (): void { this.req.destroy() }
}

describe('serving: 500 watchers on one daemon', () => {
  let h: Harness
  let d: DaemonProcess
  const watches: RawWatch[] = []

  beforeAll(async () => {
    h = await Harness.create('watchers')
    d = await h.start(await h.dir('home'))
  })

  afterAll(async () => {
    for (const w of watches) w.close()
    await h?.close()
  })

  it('every watcher hears a move; Last-Event-ID replays; an id from another boot is gone', async () => {
    const v1 = versionOf(await d.cli(['add', await h.dir('w1').then(async dir => { await writeOnnxModelFolder(dir, { seed: 'w1' }); return dir }), '-n', MODEL, '-l', 'prod', '--json']))
    const v2 = versionOf(await d.cli(['add', await h.dir('w2').then(async dir => { await writeOnnxModelFolder(dir, { seed: 'w2' }); return dir }), '-n', MODEL, '--json']))

    // Open in batches so the socket's accept backlog is never the limit being tested.
    for (let i = 0; i < WATCHERS; i += 100) {
      const batch = Array.from({ length: Math.min(100, WATCHERS - i) }, () => new RawWatch(d.socket, `types=label.moved&model=${MODEL}`))
      watches.push(...batch)
      await Promise.all(batch.map(async w => await w.ready))
    }
    const moved = (version: string) => (e: RawWatch['events'][number]): boolean => e.event === 'label.moved' && e.data.version === version

    const before = Date.now()
    expectExit(await d.cli(['label', 'set', MODEL, 'prod', v2, '--json']), 0)
    const first = await Promise.all(watches.map(async w => await w.next(moved(v2))))
    const id1 = first[0]!.id!
    expect(id1).toMatch(/^[0-9a-f]+-\d+$/)
    expect(new Set(first.map(e => e.id))).toEqual(new Set([id1]))
    expect(first[0]!.data).toMatchObject({ model: MODEL, label: 'prod', version: v2, previous: v1 })
    const eventTime = first[0]!.data.time as number
    const lag = first.map(e => e.at - eventTime).sort((a, b) => a - b)
    console.log(`${WATCHERS} watchers: label.moved received by all, ${lag[0]}–${lag.at(-1)} ms after the event (the label set CLI process took ${eventTime - before} ms to publish)`)

    // One watcher drops, misses a move, and comes back with the last id it saw.
    const dropped = watches[0]!
    dropped.close()
    expectExit(await d.cli(['label', 'set', MODEL, 'prod', v1, '--json']), 0)
    const second = await watches[1]!.next(moved(v1))
    const back = new RawWatch(d.socket, `types=label.moved&model=${MODEL}`, id1)
    watches.push(back)
    await back.ready
    expect(back.events.map(e => ({ id: e.id, event: e.event, version: e.data.version }))).toEqual([{ id: second.id, event: 'label.moved', version: v1 }])
    // The typed client does the same with `since`.
    const shoal = new ShoalClient({ socketPath: d.socket })
    const aborter = new AbortController()
    for await (const e of shoal.watch({ since: id1, model: MODEL, types: ['label.moved'], signal: aborter.signal, reconnect: false })) {
      expect(e).toMatchObject({ id: second.id, event: 'label.moved', data: { version: v1 } })
      break
    }
    aborter.abort()
    await Promise.all(watches.slice(1).map(async w => await w.next(moved(v1))))
    for (const w of watches) w.close()

    // A restarted daemon has another boot id: events after an old id are gone.
    await d.stop()
    await d.start()
    const stale = new RawWatch(d.socket, `model=${MODEL}`, second.id)
    watches.push(stale)
    await stale.ready
    expect(stale.events.map(e => e.event)).toEqual(['gone'])
    for await (const e of shoal.watch({ since: second.id!, signal: AbortSignal.timeout(10_000), reconnect: false })) {
      expect(e.event).toBe('gone')
      break
    }
  })
})
