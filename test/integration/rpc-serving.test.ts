/**
 * RPC contract of the serving endpoints: a daemon in this process (real LevelDB, real unix socket,
 * real files) driven through raw HTTP and the typed client — resolve (plain and `ensure`), leases
 * (and GC honouring them), search, the SSE event stream (replay, filters, `gone`), Prometheus
 * metrics, and the loopback TCP port with its bearer token. Bad requests answer `{ code, message }`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import { Agent, request, type IncomingHttpHeaders } from 'node:http'
import { join } from 'node:path'
import { pino } from 'pino'
import { CLI, sleep } from '../../scripts/lib/daemon-proc.js'
import { llamaTensors, writeSafetensors } from '../../scripts/lib/synth.js'
import { loadConfig } from '../../src/config/config.js'
import { Daemon } from '../../src/daemon/daemon.js'
import type { DaemonEvent, EventType } from '../../src/core/events.js'
import type { LeaseRow, ShowResult } from '../../src/rpc/api.js'
import { parseSse, ShoalClient } from '../../src/rpc/client.js'
import { eventually, raw, startDaemon, type Target } from '../helpers/rpc.js'
import { SHOAL_VERSION } from '../../src/version.js'
import { tempDir } from '../helpers/tmp.js'

/** POST of an NDJSON route: the status and every line, parsed. */
async function ndjson (socketPath: string, path: string, body: string): Promise<{ status: number, contentType: string, lines: Array<Record<string, unknown>>, json: Record<string, unknown> }> {
  const r = await raw({ socketPath }, 'POST', path, body)
  const isNdjson = String(r.headers['content-type']).startsWith('application/x-ndjson')
  const lines = isNdjson ? r.text.split('\n').filter(l => l.trim() !== '').map(l => JSON.parse(l) as Record<string, unknown>) : []
  return { status: r.status, contentType: String(r.headers['content-type']), lines, json: isNdjson ? {} : r.json }
}

interface SseMessage { id?: string, event: string, data: Record<string, unknown> }

interface SseStream {
  status: number
  headers: IncomingHttpHeaders
  /** Every event received so far (comments left out). */
  events: SseMessage[]
  /** The JSON error body when the status is not 200. */
  json: Record<string, unknown>
  /** The first received event (now or later) matching `pred`. */
  until: (pred: (e: SseMessage) => boolean, timeoutMs?: number) => Promise<SseMessage>
  close: () => void
}

/** Opens a server-sent event stream with node:http and parses it as it arrives. */
async function openSse (target: Target, path: string, headers: Record<string, string> = {}): Promise<SseStream> {
  return await new Promise((resolve, reject) => {
    const where = 'socketPath' in target ? { socketPath: target.socketPath } : { host: '127.0.0.1', port: target.port }
    const events: SseMessage[] = []
    const waiters = new Set<() => void>()
    const req = request({ ...where, method: 'GET', path, headers }, res => {
      let buffered = ''
      const stream: SseStream = {
        status: res.statusCode ?? 0,
        headers: res.headers,
        events,
        json: {},
        until: async (pred, timeoutMs = 10_000) => await new Promise((resolve, reject) => {
          const check = (): boolean => {
            const hit = events.find(pred)
            if (hit === undefined) return false
            clearTimeout(timer)
            waiters.delete(wake)
            resolve(hit)
            return true
          }
          const wake = (): void => { check() }
          const timer = setTimeout(() => {
            waiters.delete(wake)
            reject(new Error(`no matching event within ${timeoutMs} ms on ${path}; got ${JSON.stringify(events.map(e => [e.id, e.event]))}`))
          }, timeoutMs)
          if (!check()) waiters.add(wake)
        }),
        close: () => { req.destroy() }
      }
      if (stream.status !== 200) {
        const parts: Buffer[] = []
        res.on('data', (d: Buffer) => parts.push(d))
        res.on('end', () => { stream.json = JSON.parse(Buffer.concat(parts).toString() || '{}') as Record<string, unknown>; resolve(stream) })
        return
      }
      res.on('data', (d: Buffer) => {
        buffered += d.toString('utf8')
        let end
        while ((end = buffered.indexOf('\n\n')) >= 0) {
          const block = buffered.slice(0, end)
          buffered = buffered.slice(end + 2)
          const e = parseSse(block)
          if (e === undefined) continue
          events.push(e as SseMessage)
          for (const w of [...waiters]) w()
        }
      })
      res.on('error', () => {})
      resolve(stream)
    })
    req.on('error', err => { if ((err as NodeJS.ErrnoException).code !== 'ECONNRESET' && err.message !== 'socket hang up') reject(err) })
    req.end()
  })
}


/** The value of an unlabelled series in Prometheus text. */
function metricValue (text: string, name: string): number | undefined {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text)
  return m === null ? undefined : Number(m[1])
}

const EVENT_ID = /^[0-9a-f]+-\d+$/

describe('rpc serving endpoints', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let daemon: Daemon
  let client: ShoalClient
  let socket: string
  let model: string
  /** m@prod (pinned) */
  let v: ShowResult
  /** w: two pinned versions a label moves between */
  let wa: ShowResult
  let wb: ShowResult

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('shoal-serving-'))
    const home = join(dir, 'home')
    socket = join(home, 'shoal.sock')
    await mkdir(home)
    await writeFile(join(home, 'config.json'), JSON.stringify({ metrics: { listen: '127.0.0.1:0' } }))
    daemon = await startDaemon(home)
    client = new ShoalClient({ socketPath: socket })
    model = join(dir, 'model')
    await mkdir(model)
    await writeSafetensors(join(model, 'model.safetensors'), llamaTensors(1 << 20, { hidden: 64, vocab: 500 }))
    v = await client.add({ path: model, name: 'm', label: 'prod', metadata: { task: 'demo' } })
    wa = await client.add({ path: model, name: 'w' })
    wb = await client.add({ path: model, name: 'w', metadata: { description: 'w, again' } })
    expect(wa.version).not.toBe(wb.version)
  })

  afterAll(async () => {
    await daemon?.stop()
    await cleanup?.()
  })

  /** Events after `since` once one matches `last` and no more arrive for a moment. */
  async function settledEvents (since: string | undefined, last: (e: DaemonEvent) => boolean): Promise<DaemonEvent[]> {
    let before = ''
    return await eventually('the events to settle', async () => {
      const events = (await client.events(since)).events
      const key = events.map(e => e.id).join()
      const done = events.some(last) && key === before
      before = key
      if (!done) await sleep(100)
      return done ? events : undefined
    })
  }

  let canary: string | undefined
  /** Moves w@canary to the other of its two versions; returns the version it now points at. */
  async function moveCanary (): Promise<string> {
    const target = canary === wa.version ? wb.version : wa.version
    await client.setLabel({ name: 'w', label: 'canary', version: target })
    canary = target
    return target
  }

  describe('rm and df', () => {
    it('df shows what versions share and what is their own; rm refuses a pinned version saying why, and --force removes it', async () => {
      const folder = join(dir, 'r-model')
      await mkdir(folder)
      await writeSafetensors(join(folder, 'model.safetensors'), llamaTensors(1 << 19, { hidden: 64, vocab: 300, seedPrefix: 'rm' }))
      const ra = await client.add({ path: folder, name: 'r' })
      const rb = await client.add({ path: folder, name: 'r', pin: false, metadata: { description: 'rb' } })
      const size = ra.structure.totalSize
      const df = await client.df()
      const rows = df.versions.filter(x => x.name === 'r')
      expect(rows.map(x => [x.version, x.size, x.shared, x.unique, x.pinned])).toEqual([[ra.version, size, size, 0, true], [rb.version, size, size, 0, false]])
      expect(df.models.find(m => m.name === 'r')).toEqual({ name: 'r', versions: 2, size: 2 * size, unique: 0 })
      expect(df.blobs.count).toBeGreaterThan(0)

      // Unpinned, unlabelled: removed; its blobs stay, the other version uses them.
      expect(await client.removeVersion({ ref: `r@${rb.version}` })).toEqual({ name: 'r', version: rb.version, overrode: [], labels: [], bytes: 0 })
      await expect(client.removeVersion({ ref: `r@${ra.version}` })).rejects.toMatchObject({
        code: 'CONFLICT',
        message: `r@${ra.version.slice(0, 12)} is pinned: nothing was removed. To remove it anyway: shoal rm --force r@${ra.version}`
      })
      expect((await client.versions('r')).map(x => x.version)).toEqual([ra.version])
      const forced = await client.removeVersion({ ref: `r@${ra.version.slice(0, 12)}`, force: true })
      expect(forced).toMatchObject({ name: 'r', version: ra.version, overrode: ['pinned'] })
      expect(forced.bytes).toBeGreaterThanOrEqual(size)
      await expect(client.versions('r')).rejects.toMatchObject({ code: 'NOT_FOUND' })
      expect((await client.df()).versions.filter(x => x.name === 'r')).toEqual([])
      const removed = (await client.events()).events.filter(e => e.type === 'version.removed' && e.data.model === 'r').map(e => e.data.version)
      expect(removed).toEqual([rb.version, ra.version])
    })

    it('refuses to remove a labelled version, naming the labels', async () => {
      await expect(client.removeVersion({ ref: 'm@prod' })).rejects.toMatchObject({ code: 'CONFLICT', message: expect.stringMatching(/^m@\S{12} is labelled prod, pinned: nothing was removed\. To remove it anyway: shoal rm --force m@prod \(its local labels go too/) })
    })
  })

  describe('POST /v1/pull takes refs as the other commands do', () => {
    it('a label, a unique prefix and a bare name name the version to pull', async () => {
      for (const ref of ['m@prod', `m@${v.version.slice(0, 12)}`, 'm', `m@${v.version}`]) {
        expect((await client.pull({ ref })).version, ref).toBe(v.version)
      }
    })

    it('refuses a ref it cannot place, saying how to name a version', async () => {
      await expect(client.pull({ ref: 'nope@prod' })).rejects.toMatchObject({ code: 'NOT_FOUND', message: 'no model named nope is known here: give nope@<version id> to pull a version this node has not heard of' })
    })
  })

  describe('POST /v1/resolve', () => {
    it('answers a local label as an NDJSON result line, plain and with ensure', async () => {
      for (const body of [{ ref: 'm@prod' }, { ref: 'm@prod', ensure: false }, { ref: 'm@prod', ensure: true }]) {
        const r = await ndjson(socket, '/v1/resolve', JSON.stringify(body))
        expect(r.status).toBe(200)
        expect(r.contentType).toMatch(/^application\/x-ndjson/)
        const last = r.lines[r.lines.length - 1]
        expect(last).toMatchObject({ type: 'result', result: { model: 'm', version: v.version, path: v.path, labels: ['prod'] } })
        const files = (last?.result as { files: Array<{ path: string, size: number, digest: string }> }).files
        expect(files.map(f => f.path)).toEqual(['model.safetensors'])
        expect(files[0]?.size).toBeGreaterThan(0)
      }
      // A version id and a bare name resolve too; the typed client agrees.
      expect(await client.resolveEnsure(`m@${v.version}`)).toMatchObject({ model: 'm', version: v.version, path: v.path })
      expect(await client.resolveEnsure('m')).toMatchObject({ version: v.version })
      expect((await client.resolve('m@prod')).version).toBe(v.version)
    })

    it.each([
      ['an unknown model', 'nosuch'],
      ['an unknown model with a label', 'nosuch@prod'],
      ['an unknown label', 'm@never']
    ])('answers NOT_FOUND for %s, plain and with ensure', async (_what, ref) => {
      for (const ensure of [false, true]) {
        const r = await ndjson(socket, '/v1/resolve', JSON.stringify({ ref, ensure }))
        expect(r.status).toBe(200)
        expect(r.lines.at(-1)).toMatchObject({ type: 'error', code: 'NOT_FOUND' })
        expect(typeof r.lines.at(-1)?.message).toBe('string')
      }
      await expect(client.resolveEnsure(ref)).rejects.toMatchObject({ code: 'NOT_FOUND' })
    })

    it.each([
      ['a path-traversing ref', '../x'],
      ['a name of three segments', 'a/b/c@prod'],
      ['a NUL in the name', 'm\u0000x@prod'],
      ['a NUL in the selector', 'm@pr\u0000od'],
      ['an absolute path', '/etc/passwd'],
      ['a traversing selector', 'm@../../x']
    ])('answers INVALID_INPUT for %s, plain and with ensure', async (_what, ref) => {
      for (const ensure of [false, true]) {
        const r = await ndjson(socket, '/v1/resolve', JSON.stringify({ ref, ensure }))
        expect(r.status).toBe(200)
        expect(r.lines.at(-1)).toMatchObject({ type: 'error', code: 'INVALID_INPUT' })
      }
    })

    it.each([
      ['malformed JSON', '{"ref":'],
      ['a body that is not an object', '["m@prod"]'],
      ['an unknown field', '{"ref":"m@prod","wait":true}'],
      ['a missing ref', '{"ensure":true}'],
      ['an empty ref', '{"ref":""}'],
      ['an ensure that is not a boolean', '{"ref":"m@prod","ensure":"yes"}'],
      ['a ref of 600 characters', JSON.stringify({ ref: `m@${'a'.repeat(598)}` })],
      ['a ref of 600 characters with ensure', JSON.stringify({ ref: 'x'.repeat(600), ensure: true })]
    ])('refuses %s with 400 INVALID_INPUT', async (_what, body) => {
      const r = await ndjson(socket, '/v1/resolve', body)
      expect(r.status).toBe(400)
      expect(r.json.code).toBe('INVALID_INPUT')
      expect(typeof r.json.message).toBe('string')
    })

    it('refuses a body over 1 MiB with 413, declared or chunked', async () => {
      const big = JSON.stringify({ ref: 'm@prod', pad: 'a'.repeat(1_100_000) })
      const r = await raw({ socketPath: socket }, 'POST', '/v1/resolve', big)
      expect(r.status).toBe(413)
      expect(r.json.code).toBe('PAYLOAD_TOO_LARGE')
      // Without a content-length (chunked), the cap holds while reading, and the next request through
      // the same one-socket keep-alive agent is answered at once (it once stalled, then ECONNRESET).
      const agent = new Agent({ keepAlive: true, maxSockets: 1 })
      try {
        const chunked = await new Promise<{ status: number, json: Record<string, unknown> }>((resolve, reject) => {
          const req = request({ socketPath: socket, agent, method: 'POST', path: '/v1/resolve', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } }, res => {
            const parts: Buffer[] = []
            res.on('data', (d: Buffer) => parts.push(d))
            res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(parts).toString() || '{}') as Record<string, unknown> }))
          })
          req.on('error', reject)
          for (let i = 0; i < 20; i++) req.write(Buffer.alloc(64 * 1024, 0x61))
          req.end()
        })
        expect(chunked.status).toBe(413)
        expect(chunked.json.code).toBe('PAYLOAD_TOO_LARGE')
        const started = Date.now()
        const next = await new Promise<{ status: number }>((resolve, reject) => {
          const req = request({ socketPath: socket, agent, method: 'GET', path: '/v1/version' }, res => {
            res.resume()
            res.on('end', () => resolve({ status: res.statusCode ?? 0 }))
          })
          req.on('error', reject)
          req.end()
        })
        expect(next.status).toBe(200)
        expect(Date.now() - started).toBeLessThan(2000)
      } finally {
        agent.destroy()
      }
      // The daemon still answers.
      expect((await client.resolve('m@prod')).version).toBe(v.version)
    })
  })

  describe('leases', () => {
    it('acquires on name@label, renews, lists, shows in status, releases once', async () => {
      const before = Date.now()
      const lease = await client.lease('m@prod', 'inference-1 pid 4242', 30)
      expect(lease).toMatchObject({ holder: 'inference-1 pid 4242', model: 'm', version: v.version, path: v.path })
      expect(lease.id).toMatch(/^[0-9a-f]{24}$/)
      expect(lease.createdAt).toBeGreaterThanOrEqual(before)
      expect(lease.expiresAt - lease.createdAt).toBe(30_000)

      const renewed = await client.renewLease(lease.id, 600)
      expect(renewed).toMatchObject({ id: lease.id, holder: lease.holder, model: 'm', version: v.version, createdAt: lease.createdAt })
      expect(renewed.expiresAt).toBeGreaterThan(lease.expiresAt)
      // Without a TTL the default (60 s) applies.
      const byDefault = await client.renewLease(lease.id)
      expect(byDefault.expiresAt).toBeGreaterThan(Date.now() + 50_000)
      expect(byDefault.expiresAt).toBeLessThanOrEqual(Date.now() + 60_000)

      const listed = await raw({ socketPath: socket }, 'GET', '/v1/leases')
      expect(listed.status).toBe(200)
      expect(JSON.parse(listed.text)).toContainEqual({ ...lease, expiresAt: byDefault.expiresAt })
      expect((await client.status()).leases).toContainEqual({ holder: lease.holder, model: 'm', version: v.version, expiresAt: byDefault.expiresAt })

      expect(await client.releaseLease(lease.id)).toEqual({ released: true })
      expect(await client.releaseLease(lease.id)).toEqual({ released: false })
      expect((await client.leases()).map(l => l.id)).not.toContain(lease.id)
      expect((await client.status()).leases.map(l => l.holder)).not.toContain(lease.holder)
      await expect(client.renewLease(lease.id)).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
      await expect(client.renewLease('0123456789abcdef01234567')).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
      expect(await client.releaseLease('0123456789abcdef01234567')).toEqual({ released: false })
    })

    it('GC keeps a leased version that nothing else keeps, and removes it after release', async () => {
      const g = await client.add({ path: model, name: 'g', pin: false })
      expect(g.pinned).toBe(false)
      expect(g.labels).toEqual([])
      expect((await client.gc({ dryRun: true })).versions.map(x => x.version)).toEqual([g.version])
      const lease: LeaseRow = await client.lease(`g@${g.version}`, 'gc-test', 60)
      expect(lease.path).toBe(g.path)
      expect((await client.gc({ dryRun: false })).versions).toEqual([])
      expect((await client.show(`g@${g.version}`)).complete).toBe(true)
      expect((await stat(g.path)).isDirectory()).toBe(true)
      expect(await client.releaseLease(lease.id)).toEqual({ released: true })
      const report = await client.gc({ dryRun: false })
      expect(report.dryRun).toBe(false)
      expect(report.versions.map(x => x.version)).toEqual([g.version])
      await expect(client.show(`g@${g.version}`)).rejects.toMatchObject({ code: 'NOT_FOUND' })
      // Everything else is still here.
      expect((await client.resolve('m@prod')).version).toBe(v.version)
    })

    it.each([
      ['malformed JSON', 'POST', '/v1/leases', '{"ref":"m@prod","holder":"h",', 400, 'INVALID_INPUT'],
      ['an unknown field', 'POST', '/v1/leases', '{"ref":"m@prod","holder":"h","pid":1}', 400, 'INVALID_INPUT'],
      ['a missing holder', 'POST', '/v1/leases', '{"ref":"m@prod"}', 400, 'INVALID_INPUT'],
      ['an empty holder', 'POST', '/v1/leases', '{"ref":"m@prod","holder":""}', 400, 'INVALID_INPUT'],
      ['a holder over 256 characters', 'POST', '/v1/leases', JSON.stringify({ ref: 'm@prod', holder: 'h'.repeat(257) }), 400, 'INVALID_INPUT'],
      ['a holder that is not text', 'POST', '/v1/leases', '{"ref":"m@prod","holder":7}', 400, 'INVALID_INPUT'],
      ['a missing ref', 'POST', '/v1/leases', '{"holder":"h"}', 400, 'INVALID_INPUT'],
      ['a TTL of 0', 'POST', '/v1/leases', '{"ref":"m@prod","holder":"h","ttlSeconds":0}', 400, 'INVALID_INPUT'],
      ['a TTL of 99999 s', 'POST', '/v1/leases', '{"ref":"m@prod","holder":"h","ttlSeconds":99999}', 400, 'INVALID_INPUT'],
      ['a negative TTL', 'POST', '/v1/leases', '{"ref":"m@prod","holder":"h","ttlSeconds":-5}', 400, 'INVALID_INPUT'],
      ['a fractional TTL', 'POST', '/v1/leases', '{"ref":"m@prod","holder":"h","ttlSeconds":1.5}', 400, 'INVALID_INPUT'],
      ['a TTL that is text', 'POST', '/v1/leases', '{"ref":"m@prod","holder":"h","ttlSeconds":"60"}', 400, 'INVALID_INPUT'],
      ['a path-traversing ref', 'POST', '/v1/leases', '{"ref":"../x","holder":"h"}', 400, 'INVALID_INPUT'],
      ['a ref of three segments', 'POST', '/v1/leases', '{"ref":"a/b/c@prod","holder":"h"}', 400, 'INVALID_INPUT'],
      ['a ref of 600 characters', 'POST', '/v1/leases', JSON.stringify({ ref: `m@${'a'.repeat(598)}`, holder: 'h' }), 400, 'INVALID_INPUT'],
      ['an unknown model', 'POST', '/v1/leases', '{"ref":"nosuch@prod","holder":"h"}', 404, 'NOT_FOUND'],
      ['an unknown label', 'POST', '/v1/leases', '{"ref":"m@never","holder":"h"}', 404, 'NOT_FOUND'],
      ['a renew of a malformed id', 'POST', '/v1/leases/renew', '{"id":"nope"}', 400, 'INVALID_INPUT'],
      ['a renew of an upper-case id', 'POST', '/v1/leases/renew', '{"id":"0123456789ABCDEF01234567"}', 400, 'INVALID_INPUT'],
      ['a renew of a 25-character id', 'POST', '/v1/leases/renew', '{"id":"0123456789abcdef012345678"}', 400, 'INVALID_INPUT'],
      ['a renew with a TTL of 0', 'POST', '/v1/leases/renew', '{"id":"0123456789abcdef01234567","ttlSeconds":0}', 400, 'INVALID_INPUT'],
      ['a renew with a TTL of 99999 s', 'POST', '/v1/leases/renew', '{"id":"0123456789abcdef01234567","ttlSeconds":99999}', 400, 'INVALID_INPUT'],
      ['a renew with an unknown field', 'POST', '/v1/leases/renew', '{"id":"0123456789abcdef01234567","extra":1}', 400, 'INVALID_INPUT'],
      ['a renew of an unknown id', 'POST', '/v1/leases/renew', '{"id":"0123456789abcdef01234567"}', 404, 'NOT_FOUND'],
      ['a release of a malformed id', 'DELETE', '/v1/leases', '{"id":"../../etc"}', 400, 'INVALID_INPUT'],
      ['a release without an id', 'DELETE', '/v1/leases', '{}', 400, 'INVALID_INPUT'],
      ['a release with an unknown field', 'DELETE', '/v1/leases', '{"id":"0123456789abcdef01234567","all":true}', 400, 'INVALID_INPUT'],
      ['a PUT', 'PUT', '/v1/leases', '{}', 405, 'METHOD_NOT_ALLOWED'],
      ['a GET of renew', 'GET', '/v1/leases/renew', undefined, 405, 'METHOD_NOT_ALLOWED']
    ])('refuses %s (%s %s)', async (_what, method, path, body, status, code) => {
      const r = await raw({ socketPath: socket }, method, path, body)
      expect(r.status).toBe(status)
      expect(r.json.code).toBe(code)
      expect(typeof r.json.message).toBe('string')
    })
  })

  describe('GET /v1/search', () => {
    it('answers rows and a total', async () => {
      const r = await raw({ socketPath: socket }, 'GET', `/v1/search?q=${encodeURIComponent('name = m')}`)
      expect(r.status).toBe(200)
      const rows = r.json.rows as Array<{ model: string, version: string, local: boolean }>
      expect(r.json.total).toBe(rows.length)
      expect(rows).toContainEqual(expect.objectContaining({ model: 'm', version: v.version, local: true }))
      expect(rows.every(x => x.model === 'm')).toBe(true)
      // An empty query lists everything, newest first; limit caps the rows, not the total.
      const all = await client.search('', { limit: 1 })
      expect(all.rows).toHaveLength(1)
      expect(all.total).toBeGreaterThanOrEqual(3)
      // Similar to a version: the other versions of the same structure rank first.
      const similar = await client.search('', { similar: `w@${wa.version}` })
      expect(similar.rows.map(x => x.version)).toContain(wb.version)
      expect(similar.rows.map(x => x.version)).not.toContain(wa.version)
    })

    it('refuses a syntax error with 400 INVALID_INPUT naming the column', async () => {
      for (const q of ['size >', 'name = "open', '(name = m', 'size > 10 ORDER BY']) {
        const r = await raw({ socketPath: socket }, 'GET', `/v1/search?q=${encodeURIComponent(q)}`)
        expect(r.status, q).toBe(400)
        expect(r.json.code).toBe('INVALID_INPUT')
        expect(r.json.message).toMatch(/column \d+/)
      }
    })

    it.each([
      ['a limit of 0', '/v1/search?q=&limit=0', 400, 'INVALID_INPUT'],
      ['a limit over 10000', '/v1/search?q=&limit=10001', 400, 'INVALID_INPUT'],
      ['a limit that is not a number', '/v1/search?q=&limit=ten', 400, 'INVALID_INPUT'],
      ['a negative limit', '/v1/search?q=&limit=-1', 400, 'INVALID_INPUT'],
      ['a fractional limit', '/v1/search?q=&limit=2.5', 400, 'INVALID_INPUT'],
      ['a query over 4096 characters', `/v1/search?q=${'a'.repeat(4097)}`, 400, 'INVALID_INPUT'],
      ['similar to an unknown model', `/v1/search?q=&similar=${encodeURIComponent('unknown@ref')}`, 404, 'NOT_FOUND'],
      ['similar to an unknown label', `/v1/search?q=&similar=${encodeURIComponent('m@nosuch')}`, 404, 'NOT_FOUND'],
      ['similar to a path-traversing ref', `/v1/search?similar=${encodeURIComponent('../x')}`, 400, 'INVALID_INPUT'],
      ['a POST', '/v1/search', 405, 'METHOD_NOT_ALLOWED']
    ])('refuses %s', async (what, path, status, code) => {
      const r = await raw({ socketPath: socket }, what === 'a POST' ? 'POST' : 'GET', path, what === 'a POST' ? '{}' : undefined)
      expect(r.status).toBe(status)
      expect(r.json.code).toBe(code)
      expect(typeof r.json.message).toBe('string')
    })

    it('a query of exactly 4096 characters is fine', async () => {
      const r = await raw({ socketPath: socket }, 'GET', `/v1/search?q=${'a'.repeat(4096)}`)
      expect(r.status).toBe(200)
      expect(r.json).toEqual({ rows: [], total: 0 })
    })
  })

  describe('GET /v1/watch', () => {
    it('watching from the cursor resolve returns replays a label move made in between', async () => {
      await moveCanary()
      const r = await client.resolve('w@canary')
      expect(r.cursor).toMatch(EVENT_ID)
      const target = await moveCanary()
      const aborter = new AbortController()
      const events = client.watch({ types: ['label.moved'], model: 'w', since: r.cursor, signal: aborter.signal, reconnect: false })
      try {
        // Moves replay in order; the one made after resolve is among them, so it cannot be missed.
        let moved
        for await (const e of events) if (e.event === 'label.moved' && e.data.version === target) { moved = e; break }
        expect(moved).toMatchObject({ event: 'label.moved', data: { model: 'w', label: 'canary', version: target } })
      } finally {
        aborter.abort()
        await events.return(undefined)
      }
    })

    it('streams text/event-stream: ready, then label.moved with an id', async () => {
      const s = await openSse({ socketPath: socket }, '/v1/watch')
      try {
        expect(s.status).toBe(200)
        expect(s.headers['content-type']).toMatch(/^text\/event-stream/)
        const ready = await s.until(e => e.event === 'ready')
        expect(ready.id).toBeUndefined()
        expect(ready.data.boot).toMatch(/^[0-9a-f]+$/)
        const target = await moveCanary()
        const moved = await s.until(e => e.event === 'label.moved' && e.data.version === target)
        expect(moved.id).toMatch(EVENT_ID)
        expect(moved.id?.split('-')[0]).toBe(ready.data.boot)
        expect(moved.data).toMatchObject({ model: 'w', label: 'canary', version: target })
        expect(typeof moved.data.time).toBe('number')
      } finally {
        s.close()
      }
    })

    it('replays exactly the missed events after Last-Event-ID, then goes live', async () => {
      const first = await openSse({ socketPath: socket }, '/v1/watch')
      await first.until(e => e.event === 'ready')
      const t1 = await moveCanary()
      const seen = await first.until(e => e.event === 'label.moved' && e.data.version === t1)
      first.close()
      // Missed while disconnected: two moves (and whatever else the daemon emitted).
      const t2 = await moveCanary()
      const t3 = await moveCanary()
      const moves = [t2, t3]
      let missed = await settledEvents(seen.id, e => e.type === 'label.moved' && e.data.version === t3)
      expect(missed.filter(e => e.type === 'label.moved').map(e => e.data.version)).toEqual(moves)

      // Resuming by header or by ?since= replays the same: what came after the id, nothing else.
      const resumes: Array<{ path: string, headers: Record<string, string> }> = [
        { path: '/v1/watch', headers: { 'last-event-id': seen.id ?? '' } },
        { path: `/v1/watch?since=${seen.id ?? ''}`, headers: {} }
      ]
      for (const resume of resumes) {
        const again = await openSse({ socketPath: socket }, resume.path, resume.headers)
        try {
          expect(again.status).toBe(200)
          await again.until(e => e.event === 'ready')
          const replayed = again.events.slice(0, again.events.findIndex(e => e.event === 'ready'))
          expect(replayed.map(e => e.id)).toEqual(missed.map(e => e.id))
          expect(replayed.map(e => e.event)).toEqual(missed.map(e => e.type))
          expect(replayed.filter(e => e.event === 'label.moved').map(e => e.data.version)).toEqual(moves)
          // Then live.
          const next = await moveCanary()
          moves.push(next)
          await again.until(e => e.event === 'label.moved' && e.data.version === next)
          missed = await settledEvents(seen.id, e => e.type === 'label.moved' && e.data.version === next)
        } finally {
          again.close()
        }
      }
      // The newest id replays nothing.
      const newest = (await settledEvents(undefined, () => true)).at(-1)
      const none = await openSse({ socketPath: socket }, '/v1/watch', { 'last-event-id': newest?.id ?? '' })
      try {
        await none.until(e => e.event === 'ready')
        expect(none.events.map(e => e.event)).toEqual(['ready'])
      } finally {
        none.close()
      }
    })

    it('answers gone for an id from another boot', async () => {
      const boot = (await client.events()).events[0]?.id.split('-')[0] ?? ''
      const other = boot.split('').map(c => c === 'a' ? 'b' : 'a').join('')
      for (const since of [`${other}-1`, `${boot}-999999999`]) {
        const s = await openSse({ socketPath: socket }, '/v1/watch', { 'last-event-id': since })
        try {
          expect(s.status).toBe(200)
          await s.until(e => e.event === 'ready')
          expect(s.events.map(e => e.event)).toEqual(['gone', 'ready'])
          expect(s.events[0]?.id).toBeUndefined()
          expect(s.events[0]?.data.since).toBe(since)
          // Live events still follow.
          const t = await moveCanary()
          await s.until(e => e.event === 'label.moved' && e.data.version === t)
        } finally {
          s.close()
        }
      }
    })

    it('filters by ?model= and ?types=', async () => {
      const onlyW = await openSse({ socketPath: socket }, '/v1/watch?model=w')
      const onlyM = await openSse({ socketPath: socket }, '/v1/watch?model=m')
      const movesOfW = await openSse({ socketPath: socket }, '/v1/watch?types=version.removed,label.moved&model=w')
      try {
        for (const s of [onlyW, onlyM, movesOfW]) await s.until(e => e.event === 'ready')
        const tw = await moveCanary()
        await client.setLabel({ name: 'm', label: 'canary', version: v.version })
        const mMove = await onlyM.until(e => e.event === 'label.moved')
        expect(mMove.data).toMatchObject({ model: 'm', label: 'canary', version: v.version })
        await onlyW.until(e => e.event === 'label.moved' && e.data.version === tw)
        await movesOfW.until(e => e.event === 'label.moved' && e.data.version === tw)
        // A version added to w: w's stream hears it, the type-filtered one and m's do not.
        const added = await client.add({ path: join(model, 'model.safetensors'), name: 'w', metadata: { description: 'added while watching' } })
        await onlyW.until(e => e.event === 'version.added' && e.data.version === added.version)
        const tw2 = await moveCanary()
        await movesOfW.until(e => e.event === 'label.moved' && e.data.version === tw2)
        await onlyM.until(e => e.event === 'label.moved' && e.data.model === 'm')
        expect(onlyM.events.every(e => e.event === 'ready' || e.data.model === 'm')).toBe(true)
        expect(onlyW.events.every(e => e.event === 'ready' || e.data.model === 'w')).toBe(true)
        expect(movesOfW.events.every(e => e.event === 'ready' || (e.event === 'label.moved' && e.data.model === 'w'))).toBe(true)
        await client.removeLabel('m', 'canary')
      } finally {
        for (const s of [onlyW, onlyM, movesOfW]) s.close()
      }
    })

    it('the typed client surfaces a refused watch as an error, without retrying', async () => {
      await expect(client.watch({ types: ['unknown' as EventType] }).next()).rejects.toMatchObject({ code: 'INVALID_INPUT', status: 400 })
      await expect(client.watch({ since: 'not-an-id' }).next()).rejects.toMatchObject({ code: 'INVALID_INPUT', status: 400 })
    })

    it.each([
      ['an unknown type', '/v1/watch?types=unknown', {}],
      ['a known and an unknown type', '/v1/watch?types=label.moved,bogus', {}],
      ['a malformed Last-Event-ID', '/v1/watch', { 'last-event-id': 'not-an-id' }],
      ['a Last-Event-ID over 64 characters', '/v1/watch', { 'last-event-id': `${'a'.repeat(70)}-1` }],
      ['a malformed since', '/v1/watch?since=..%2F1', {}]
    ])('refuses %s with 400 INVALID_INPUT', async (_what, path, headers) => {
      const s = await openSse({ socketPath: socket }, path, headers)
      s.close()
      expect(s.status).toBe(400)
      expect(s.json.code).toBe('INVALID_INPUT')
      expect(typeof s.json.message).toBe('string')
    })
  })

  describe('GET /metrics', () => {
    it('answers Prometheus text whose figures follow label moves and leases', async () => {
      const r = await raw({ socketPath: socket }, 'GET', '/metrics')
      expect(r.status).toBe(200)
      expect(r.headers['content-type']).toMatch(/^text\/plain/)
      for (const name of ['shoal_heads_total', 'shoal_leases', 'shoal_store_bytes', 'shoal_label_moves_total']) {
        expect(r.text).toMatch(new RegExp(`^# TYPE ${name} `, 'm'))
      }
      expect(r.text).toMatch(/^shoal_heads_total\{outcome="accepted",reason=""\} \d+$/m)
      expect(metricValue(r.text, 'shoal_store_bytes')).toBeGreaterThan(0)
      const moves = metricValue(r.text, 'shoal_label_moves_total') ?? -1
      const leases = metricValue(r.text, 'shoal_leases') ?? -1
      expect(moves).toBeGreaterThan(0)

      await moveCanary()
      const lease = await client.lease('m@prod', 'metrics-test')
      try {
        await eventually('the label move in /metrics', async () => {
          const text = (await raw({ socketPath: socket }, 'GET', '/metrics')).text
          return metricValue(text, 'shoal_label_moves_total') === moves + 1 ? text : undefined
        })
        const text = await client.metrics()
        expect(metricValue(text, 'shoal_leases')).toBe(leases + 1)
      } finally {
        await client.releaseLease(lease.id)
      }
      expect(metricValue(await client.metrics(), 'shoal_leases')).toBe(leases)
      expect((await raw({ socketPath: socket }, 'POST', '/metrics', '{}')).json.code).toBe('METHOD_NOT_ALLOWED')
    })

    it('counts RPC requests by route and status, keeps totals as counters, and names process metrics once', async () => {
      const shows = (text: string, status: string): number => metricValue(text, `shoal_rpc_requests_total{route="GET /v1/show",status="${status}"}`) ?? 0
      const before = await client.metrics()
      await client.show('m@prod')
      await client.show('nope').catch(() => {})
      const after = await eventually('the two show requests in /metrics', async () => {
        const text = await client.metrics()
        return shows(text, '200') === shows(before, '200') + 1 && shows(text, '404') === shows(before, '404') + 1 ? text : undefined
      })
      for (const name of ['shoal_rpc_requests_total', 'shoal_heads_total', 'shoal_bytes_received_total', 'shoal_head_signature_checks_total', 'shoal_head_syncs_refused_total']) {
        expect(after, name).toMatch(new RegExp(`^# TYPE ${name} counter$`, 'm'))
      }
      expect(after).toMatch(/^shoal_process_cpu_seconds_total \S+$/m)
      expect(after).not.toContain('shoal_process_process_')
    })

    it('shows which version each label points at and the build, for a fleet view', async () => {
      await client.setLabel({ name: 'w', label: 'fleet', version: wa.version })
      const text = await eventually('w@fleet in /metrics', async () => {
        const t = await client.metrics()
        return t.includes(`shoal_label_version_info{model="w",label="fleet",version="${wa.version}"} 1`) ? t : undefined
      })
      expect(text).toContain(`shoal_label_version_info{model="m",label="prod",version="${v.version}"} 1`)
      expect(text).toMatch(new RegExp(`^shoal_build_info\\{version="${SHOAL_VERSION.replace(/\./g, '\\.')}",node="${process.version.replace(/\./g, '\\.')}"\\} 1$`, 'm'))
      await client.setLabel({ name: 'w', label: 'fleet', version: wb.version })
      const moved = await eventually('w@fleet moved in /metrics', async () => {
        const t = await client.metrics()
        return t.includes(`shoal_label_version_info{model="w",label="fleet",version="${wb.version}"} 1`) ? t : undefined
      })
      // The old series is gone: one version per label.
      expect(moved).not.toContain(`shoal_label_version_info{model="w",label="fleet",version="${wa.version}"}`)
    })

    it('serves GET /metrics without a token on metrics.listen, and nothing else there', async () => {
      const address = (await client.status()).metrics ?? ''
      expect(address).toMatch(/^127\.0\.0\.1:\d+$/)
      const port = Number(address.split(':')[1])
      const ok = await raw({ port }, 'GET', '/metrics')
      expect(ok.status).toBe(200)
      expect(ok.text).toMatch(/^# TYPE shoal_build_info gauge$/m)
      const other = await raw({ port }, 'GET', '/v1/status')
      expect(other.status).toBe(404)
      expect(other.json).toEqual({ code: 'NOT_FOUND', message: 'this listener serves GET /metrics only' })
      expect((await raw({ port }, 'POST', '/metrics', '{}')).json.code).toBe('METHOD_NOT_ALLOWED')
    })
  })
})

describe('rpc over loopback TCP', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let daemon: Daemon | undefined
  let home: string
  let port: number
  let token: string
  const logLines: string[] = []

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('shoal-serving-tcp-'))
    home = join(dir, 'home')
    await mkdir(home)
    await writeFile(join(home, 'config.json'), JSON.stringify({ rpc: { tcp: '127.0.0.1:0' } }))
    const log = pino({ level: 'info' }, { write (line: string) { logLines.push(line) } })
    daemon = await startDaemon(home, log)
    const ready = logLines.map(l => JSON.parse(l) as { msg?: string, rpcTcp?: string }).find(l => l.msg === 'shoal daemon ready')
    expect(ready?.rpcTcp).toMatch(/^127\.0\.0\.1:\d+$/)
    port = Number(ready?.rpcTcp?.split(':')[1])
    expect(port).toBeGreaterThan(0)
    token = (await readFile(join(home, 'rpc.token'), 'utf8')).trim()
  })

  afterAll(async () => {
    await daemon?.stop()
    await cleanup?.()
  })

  it('writes the token file with mode 0600', async () => {
    const s = await stat(join(home, 'rpc.token'))
    expect(s.mode & 0o777).toBe(0o600)
    expect(token).toMatch(/^[0-9a-f]{64}$/)
  })

  it.each([
    ['no Authorization header', {}],
    ['a wrong token', { authorization: `Bearer ${'0'.repeat(64)}` }],
    ['a token of another length', { authorization: 'Bearer abc' }],
    ['another scheme', { authorization: 'Basic c2hvYWw6c2hvYWw=' }],
    ['the bare token', { authorization: '' }]
  ])('refuses %s with 401 UNAUTHORIZED', async (what, headers: Record<string, string>) => {
    const h = what === 'the bare token' ? { authorization: token } : headers
    for (const [method, path, body] of [['GET', '/v1/status', undefined], ['GET', '/metrics', undefined], ['GET', '/v1/watch', undefined], ['POST', '/v1/leases', '{"ref":"m","holder":"h"}'], ['GET', '/v2/nothing', undefined]] as const) {
      const r = await raw({ port }, method, path, body, h)
      expect(r.status, `${method} ${path}`).toBe(401)
      expect(r.json.code).toBe('UNAUTHORIZED')
      expect(typeof r.json.message).toBe('string')
    }
    await expect(new ShoalClient({ url: `http://127.0.0.1:${port}`, token: '0'.repeat(64) }).status()).rejects.toMatchObject({ code: 'UNAUTHORIZED', status: 401 })
  })

  it('serves the API, metrics and watch with the token', async () => {
    const client = new ShoalClient({ url: `http://127.0.0.1:${port}`, token })
    expect((await client.version()).api).toBe('v1')
    expect((await client.status()).pid).toBe(process.pid)
    expect(await client.metrics()).toMatch(/^# TYPE shoal_label_moves_total counter$/m)
    const model = join(dir, 'model')
    await mkdir(model)
    await writeSafetensors(join(model, 'model.safetensors'), llamaTensors(1 << 19, { hidden: 64, vocab: 500 }))
    const a = await client.add({ path: model, name: 't', label: 'prod' })
    const b = await client.add({ path: model, name: 't', metadata: { description: 'b' } })
    expect((await client.resolveEnsure('t@prod')).version).toBe(a.version)
    const lease = await client.lease('t@prod', 'tcp-test', 30)
    expect((await client.leases()).map(l => l.id)).toContain(lease.id)
    expect(await client.releaseLease(lease.id)).toEqual({ released: true })
    // Errors keep their codes over TCP.
    await expect(client.resolve('t@never')).rejects.toMatchObject({ code: 'NOT_FOUND' })
    const bad = await raw({ port }, 'GET', '/v1/search?q=size%20%3E', undefined, { authorization: `Bearer ${token}` })
    expect(bad.status).toBe(400)
    expect(bad.json.code).toBe('INVALID_INPUT')

    // watch over TCP: a move arrives with an id (since the newest event, so none can slip by).
    const since = (await client.events()).events.at(-1)?.id
    expect(since).toMatch(EVENT_ID)
    const aborter = new AbortController()
    const events = client.watch({ types: ['label.moved'], model: 't', signal: aborter.signal, reconnect: false, ...(since !== undefined ? { since } : {}) })
    const firstEvent = events.next()
    const probe = await openSse({ port }, '/v1/watch?model=t', { authorization: `Bearer ${token}` })
    expect(probe.status).toBe(200)
    expect(probe.headers['content-type']).toMatch(/^text\/event-stream/)
    await probe.until(e => e.event === 'ready')
    await client.setLabel({ name: 't', label: 'prod', version: b.version })
    const got = await firstEvent
    expect(got.done).toBe(false)
    expect(got.value).toMatchObject({ event: 'label.moved', data: { model: 't', label: 'prod', version: b.version } })
    expect(got.value?.id).toMatch(EVENT_ID)
    await probe.until(e => e.event === 'label.moved' && e.data.version === b.version)
    probe.close()
    aborter.abort()
    expect((await events.next()).done).toBe(true)
  })

  it.each([
    '0.0.0.0:4080', '[::]:4080', '192.168.1.10:4080', 'example.com:4080', 'localhost.example.com:4080', '127.0.0.1', '127.0.0.1:99999'
  ])('refuses rpc.tcp %s when loading the config', async tcp => {
    const h = join(dir, `cfg-${tcp.replace(/[^a-z0-9]/gi, '_')}`)
    await mkdir(h)
    await writeFile(join(h, 'config.json'), JSON.stringify({ rpc: { tcp } }))
    await expect(loadConfig({ home: h })).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringMatching(/loopback/) })
  })

  it('a daemon with a non-loopback rpc.tcp refuses to start', async () => {
    expect(existsSync(CLI), `${CLI} is missing: run npm run build first`).toBe(true)
    const h = join(dir, 'public')
    await mkdir(h)
    await writeFile(join(h, 'config.json'), JSON.stringify({ rpc: { tcp: '0.0.0.0:4080' } }))
    const child = spawn(process.execPath, [CLI, 'daemon', '--listen', '/ip4/127.0.0.1/tcp/0'], {
      env: { ...process.env, SHOAL_HOME: h, SHOAL_LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe']
    })
    let output = ''
    child.stdout.on('data', (d: Buffer) => { output += d.toString() })
    child.stderr.on('data', (d: Buffer) => { output += d.toString() })
    try {
      const code = await Promise.race([
        new Promise<number>(resolve => child.once('close', c => resolve(c ?? -1))),
        sleep(20_000).then(() => 'still running' as const)
      ])
      expect(code, output).not.toBe('still running')
      expect(code, output).not.toBe(0)
      expect(output).toMatch(/loopback/)
      expect(existsSync(join(h, 'shoal.sock'))).toBe(false)
    } finally {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL')
    }
  })
})
