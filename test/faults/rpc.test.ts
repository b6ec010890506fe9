/**
 * Attacks on the local RPC of a real daemon process (its unix socket, and its loopback TCP port
 * with the token): request targets that end the process if parsed carelessly, slowloris
 * connections, a storm of 1,000 concurrent clients, a query nested 4,000 deep; and the process's
 * own policy for failures nothing caught (`daemon/process-guard.ts`), in a daemon process started
 * the way `shoal daemon` starts it.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { request } from 'node:http'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DAEMON_NODE_FLAGS } from '../../src/daemon/runtime.js'
import { CRASH_EXIT_CODE } from '../../src/daemon/process-guard.js'
import { HEADERS_TIMEOUT_MS } from '../../src/rpc/limits.js'
import { MAX_QUERY_DEPTH } from '../../src/core/query.js'
import { EXIT, Harness, expectExit, type DaemonProcess } from '../e2e/helpers.js'
import { exchange, parseResponses, until, type Where } from '../helpers/http-raw.js'

interface Answer { status: number, json: Record<string, unknown> }

/** `rpc.maxConnections` of the daemon under attack (past twice it, connections are dropped unanswered). */
const MAX_CONNECTIONS = 512

/** One request through Node's client, one connection (no agent), within `timeoutMs`. */
async function ask (where: Where, path: string, headers: Record<string, string> = {}, timeoutMs = 60_000): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    const target = 'socketPath' in where ? { socketPath: where.socketPath } : { host: '127.0.0.1', port: where.port }
    const req = request({ ...target, path, headers, agent: false, timeout: timeoutMs }, res => {
      let text = ''
      res.on('data', (d: Buffer) => { text += d.toString() })
      res.on('end', () => {
        let json: Record<string, unknown> = {}
        try { json = JSON.parse(text) as Record<string, unknown> } catch { json = { text } }
        resolve({ status: res.statusCode ?? 0, json })
      })
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`no answer to ${path} within ${timeoutMs} ms`)))
    req.on('error', reject)
    req.end()
  })
}

async function rssKiB (pid: number): Promise<number> {
  return Number(/VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN)
}

describe('local RPC under attack (real daemon)', () => {
  let h: Harness
  let d: DaemonProcess
  let socket: Where
  let tcp: Where
  let token: string

  beforeAll(async () => {
    h = await Harness.create('faults-rpc', { rpc: 'direct' })
    // A bound of connections under the storm's 1,000 clients, so the storm meets it.
    const node = await h.node('victim', { config: { p2p: { dht: false }, rpc: { tcp: '127.0.0.1:0', maxConnections: MAX_CONNECTIONS } } })
    d = node.d
    socket = { socketPath: d.socket }
    const ready = d.stderr.split('\n').filter(l => l.startsWith('{')).map(l => JSON.parse(l) as { msg?: string, rpcTcp?: string }).find(l => l.msg === 'shoal daemon ready')
    tcp = { port: Number(ready?.rpcTcp?.split(':')[1]) }
    token = (await readFile(join(d.home, 'rpc.token'), 'utf8')).trim()
  })
  afterAll(async () => { await h.close() })

  async function stillUp (): Promise<void> {
    const s = await ask(socket, '/v1/status')
    expect(s.status).toBe(200)
    expect(s.json.pid).toBe(d.pid)
  }

  it('request targets new URL() rejects answer 400 on the socket and on TCP with the token; the daemon stays up', async () => {
    const auth = `Authorization: Bearer ${token}\r\n`
    for (const target of ['//[/', 'http://[/', 'http://a:b/v1/status']) {
      for (const [where, headers] of [[socket, ''], [tcp, auth]] as const) {
        const x = await exchange(where, `GET ${target} HTTP/1.1\r\nHost: x\r\n${headers}Connection: close\r\n\r\n`, { end: false })
        const [r] = parseResponses(x.bytes).responses
        expect(r?.status, `${target} on ${'port' in where ? 'TCP' : 'the socket'}`).toBe(400)
        expect(r?.json).toEqual({ code: 'INVALID_INPUT', message: `the request target ${JSON.stringify(target)} is not a path; send one such as /v1/status` })
      }
    }
    await stillUp()
    expect(d.child?.exitCode).toBeNull()
  })

  it('a body whose length cannot be known (Transfer-Encoding not ending in chunked) answers 400 and closes, not waiting for the client to hang up', async () => {
    for (const coding of ['gzip', 'identity', 'gzip, br']) {
      const x = await exchange(socket, `GET /v1/peers HTTP/1.1\r\nTransfer-Encoding: ${coding}\r\n\r\nsome bytes`, { end: false, timeoutMs: 10_000 })
      expect(x.closed, `Transfer-Encoding: ${coding}`).toBe(true)
      const [r] = parseResponses(x.bytes).responses
      expect(r?.status).toBe(400)
      expect(r?.json).toEqual({ code: 'BAD_REQUEST', message: `Transfer-Encoding: ${coding} does not end in chunked, so the body's length cannot be known; send Content-Length or Transfer-Encoding: chunked` })
    }
    // Chunked before another coding the HTTP parser refuses itself.
    const x = await exchange(socket, 'GET /v1/peers HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n', { end: false, timeoutMs: 10_000 })
    expect(x.closed).toBe(true)
    expect(parseResponses(x.bytes).responses[0]?.json).toMatchObject({ code: 'BAD_REQUEST', message: expect.stringMatching(/Transfer-Encoding/) })
    await stillUp()
  })

  it(`slowloris: connections dripping their headers do not block other clients, and are answered 408 after ${HEADERS_TIMEOUT_MS / 1000} s`, async () => {
    const request = 'GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n\r\n'
    // One byte a second: each would take ~40 s to finish its headers.
    const slow = Array.from({ length: 200 }, async () => await exchange(socket, [...request], { everyMs: 1000, end: false, timeoutMs: 120_000 }))
    const slowTcp = Array.from({ length: 20 }, async () => await exchange(tcp, [...request], { everyMs: 1000, end: false, timeoutMs: 120_000 }))
    // Meanwhile others are served, on the socket and on TCP.
    for (let i = 0; i < 5; i++) {
      await stillUp()
      expect((await ask(tcp, '/v1/version', { authorization: `Bearer ${token}` })).status).toBe(200)
    }
    for (const x of await Promise.all([...slow, ...slowTcp])) {
      expect(x.closed).toBe(true)
      const [r] = parseResponses(x.bytes).responses
      expect(r?.status).toBe(408)
      expect(r?.json).toMatchObject({ code: 'REQUEST_TIMEOUT', message: expect.stringMatching(/^the request was not received in time: headers within 10000 ms/) })
    }
    await stillUp()
  })

  it('1,000 concurrent clients all get an answer (200, or 503 BUSY saying why), a client after the storm a normal one, and memory stays bounded', async () => {
    const pid = d.pid!
    await stillUp()
    const before = await rssKiB(pid)
    const paths = ['/v1/status', '/v1/version', '/v1/models', '/metrics', '/v1/search?q=name%20~%20llama', '/v1/heads']
    const answers = await Promise.all(Array.from({ length: 1000 }, async (_, i) => {
      const path = paths[i % paths.length]!
      return i % 10 === 9
        ? await ask(tcp, path, { authorization: `Bearer ${token}` })
        : await ask(socket, path)
    }))
    const during = await rssKiB(pid)
    const ok = answers.filter(a => a.status === 200).length
    const busy = answers.filter(a => a.status === 503)
    expect(ok + busy.length, JSON.stringify(answers.find(a => a.status !== 200 && a.status !== 503))).toBe(1000)
    for (const b of busy) {
      expect(b.json.code).toBe('BUSY')
      expect(b.json.message).toMatch(/^the daemon is (serving \d+ connections on this (socket|port)|handling \d+ requests at once), its most/)
    }
    expect(ok).toBeGreaterThan(0)
    await stillUp()
    const after = await rssKiB(pid)
    console.log(`1,000 RPC clients: ${ok} answered 200, ${busy.length} 503 BUSY (rpc.maxConnections ${MAX_CONNECTIONS}); daemon VmRSS ${Math.round(before / 1024)} MiB before, ${Math.round(during / 1024)} MiB right after, ${Math.round(after / 1024)} MiB once served again`)
    // Generous: the daemon idles at ~100-150 MiB; unbounded buffering of 1,000 clients would show far more.
    expect(after - before).toBeLessThan(256 * 1024)
    expect(d.child?.exitCode).toBeNull()
  })

  it(`a search nested 4,000 levels deep is refused 400 with the depth and the limit (${MAX_QUERY_DEPTH}), not a 500`, async () => {
    const r = await d.cli(['search', '('.repeat(4000)])
    expectExit(r, EXIT.INVALID)
    expect(r.stderr).toContain(`the query nests 4000 levels deep (parentheses and NOT, deepest at column 4000); at most ${MAX_QUERY_DEPTH} are allowed`)
    const raw = await ask(socket, `/v1/search?q=${encodeURIComponent('NOT '.repeat(1000))}`)
    expect(raw.status).toBe(400)
    expect(raw.json).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringMatching(/^the query nests 1000 levels deep/) })
    await stillUp()
  })
})

describe('failures nothing caught, in a real daemon process', () => {
  let h: Harness
  let child: ChildProcess | undefined
  beforeAll(async () => { h = await Harness.create('faults-guard', { rpc: 'direct' }) })
  afterAll(async () => {
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await h.close()
  })

  it('an unhandled rejection is logged with its stack, counted, and the daemon keeps serving; an uncaught exception stops it cleanly and exits 70', async () => {
    const home = await h.dir('guarded')
    const script = join(import.meta.dirname, 'rpc-guarded-daemon.ts')
    const proc = spawn(process.execPath, [...DAEMON_NODE_FLAGS, '--import', 'tsx', script, home], {
      env: { ...process.env, SHOAL_HOME: home, SHOAL_LOG_LEVEL: 'info' }, stdio: ['pipe', 'ignore', 'pipe']
    })
    child = proc
    let stderr = ''
    proc.stderr.on('data', (b: Buffer) => { stderr += b.toString() })
    const exited = new Promise<number | null>(resolve => proc.once('exit', code => resolve(code)))
    const where = { socketPath: join(home, 'shoal.sock') }
    const lines = (): Array<{ level: number, msg: string, err?: { stack?: string } }> => stderr.split('\n').filter(l => l.startsWith('{')).map(l => JSON.parse(l) as { level: number, msg: string })
    await until('the daemon answers', async () => existsSync(where.socketPath) && (await ask(where, '/v1/status').catch(() => undefined))?.status === 200, 60_000, 100)

    proc.stdin.write('reject\n')
    await until('the rejection is counted in /metrics', async () => /^shoal_unhandled_rejections_total 1$/m.test(String((await ask(where, '/metrics')).json.text)), 20_000, 50)
    const rejected = lines().find(l => l.msg.startsWith('unhandled promise rejection'))
    expect(rejected?.level).toBe(50) // error
    expect(rejected?.msg).toBe('unhandled promise rejection: that piece of work failed; the daemon keeps running')
    expect(rejected?.err?.stack).toContain('a background piece of work failed (fault test)')
    expect((await ask(where, '/v1/status')).status).toBe(200)

    proc.stdin.write('throw\n')
    expect(await exited).toBe(CRASH_EXIT_CODE)
    const all = lines()
    const fatalAt = all.findIndex(l => l.level === 60)
    expect(all[fatalAt]?.msg).toBe('uncaught exception: state may be inconsistent; stopping the daemon and exiting')
    expect(all[fatalAt]?.err?.stack).toContain('an exception nothing caught (fault test)')
    // Stopped cleanly: the stop ran to its end, the socket is gone, and the home opens again.
    expect(all.findIndex(l => l.msg === 'shoal daemon stopped')).toBeGreaterThan(fatalAt)
    expect(existsSync(where.socketPath)).toBe(false)
    const again = await h.start(home)
    expect((await again.json<{ pid: number }>(['status'])).pid).toBe(again.pid)
  })
})
