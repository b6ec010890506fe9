/**
 * RPC contract: a daemon in this process (real LevelDB, real unix socket, real files) driven
 * through the typed client and raw HTTP.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'node:http'
import { mkdir, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { loadConfig } from '../../src/config/config.js'
import { Daemon } from '../../src/daemon/daemon.js'
import { createLogger } from '../../src/daemon/logger.js'
import { ShoalClient } from '../../src/rpc/client.js'
import { llamaTensors, writeSafetensors } from '../../scripts/lib/synth.js'
import { tempDir } from '../helpers/tmp.js'

async function raw (socketPath: string, method: string, path: string, body?: string | Buffer): Promise<{ status: number, json: Record<string, unknown> }> {
  return await new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, headers: body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, res => {
      const parts: Buffer[] = []
      res.on('data', (d: Buffer) => parts.push(d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(parts).toString() || '{}') }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

describe('rpc', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let daemon: Daemon
  let client: ShoalClient
  let socket: string
  let model: string

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir())
    const home = join(dir, 'home')
    socket = join(home, 'shoal.sock')
    daemon = new Daemon(await loadConfig({ home, overrides: { listen: ['/ip4/127.0.0.1/tcp/0'], logLevel: 'silent' } }), createLogger('silent'))
    await daemon.start()
    client = new ShoalClient({ socketPath: socket })
    model = join(dir, 'model')
    await mkdir(model)
    await writeSafetensors(join(model, 'model.safetensors'), llamaTensors(2 << 20, { hidden: 128, vocab: 1000 }))
  })

  afterAll(async () => {
    await daemon.stop()
    await cleanup()
  })

  it('serves version and status; the socket is mode 0660', async () => {
    expect((await client.version()).api).toBe('v1')
    expect((await client.status()).pid).toBe(process.pid)
    expect((await stat(socket)).mode & 0o777).toBe(0o660)
  })

  it('adds with streamed progress, then lists, shows, labels, pins, exports, verifies, collects', async () => {
    const events: Array<Record<string, unknown>> = []
    const v = await client.add({ path: model, name: 'm', label: 'prod', metadata: { task: 'demo' } }, p => events.push(p))
    expect(events.length).toBeGreaterThan(0)
    expect(v.files[0]?.structure?.tensors.length).toBeGreaterThan(5)
    expect((await client.models()).map(m => m.name)).toEqual(['m'])
    expect((await client.versions('m')).map(x => x.version)).toEqual([v.version])
    expect((await client.show('m@prod')).metadata).toEqual({ task: 'demo' })
    const w = await client.add({ path: model, name: 'm', pin: false })
    await expect(client.setLabel({ name: 'm', label: 'prod', version: w.version, expect: w.version })).rejects.toMatchObject({ code: 'CONFLICT' })
    expect((await client.setLabel({ name: 'm', label: 'prod', version: w.version, expect: v.version })).previous).toBe(v.version)
    expect((await client.unpin(`m@${v.version}`)).pinned).toBe(false)
    expect((await client.gc({ dryRun: true })).versions.map(x => x.version)).toEqual([v.version])
    const out = await client.export({ ref: 'm@prod', dest: join(dir, 'out') })
    expect(out.files).toBe(1)
    expect((await client.verify()).problems).toEqual([])
    expect((await client.gc({})).versions).toHaveLength(1)
    await client.removeLabel('m', 'prod')
    await expect(client.removeLabel('m', 'prod')).rejects.toMatchObject({ code: 'NOT_FOUND' })
  })

  it('maps failures to codes a caller can act on', async () => {
    await expect(client.show('nope')).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await expect(client.show('../x')).rejects.toMatchObject({ code: 'INVALID_INPUT' })
    await expect(client.add({ path: join(dir, 'missing'), name: 'x' })).rejects.toMatchObject({ code: 'INVALID_INPUT' })
    await writeFile(join(dir, 'bad.safetensors'), Buffer.from([0x10, 0, 0, 0, 0, 0, 0, 0, 0x7b, 0x7d]))
    await expect(client.add({ path: join(dir, 'bad.safetensors'), name: 'x' })).rejects.toMatchObject({ code: 'MALFORMED_MODEL' })
    await expect(new ShoalClient({ socketPath: join(dir, 'none.sock') }).status()).rejects.toMatchObject({ code: 'UNREACHABLE' })
  })

  it.each([
    ['malformed JSON', 'POST', '/v1/gc', '{"dryRun":', 400, 'INVALID_INPUT'],
    ['an unknown field', 'POST', '/v1/gc', '{"dryRun":true,"force":1}', 400, 'INVALID_INPUT'],
    ['a relative path', 'POST', '/v1/add', '{"path":"model","name":"x"}', 400, 'INVALID_INPUT'],
    ['a NUL in a path', 'POST', '/v1/export', '{"ref":"m","dest":"/tmp/a\\u0000b"}', 400, 'INVALID_INPUT'],
    ['a body over 1 MiB', 'POST', '/v1/gc', `{"x":"${'a'.repeat(1_100_000)}"}`, 413, 'PAYLOAD_TOO_LARGE'],
    ['an unknown endpoint', 'GET', '/v2/status', undefined, 404, 'NOT_FOUND'],
    ['a wrong method', 'DELETE', '/v1/status', undefined, 405, 'METHOD_NOT_ALLOWED'],
    ['a path-traversing ref', 'GET', '/v1/show?ref=..%2F..%2Fetc', undefined, 400, 'INVALID_INPUT'],
    ['a missing query parameter', 'GET', '/v1/versions', undefined, 400, 'INVALID_INPUT']
  ])('refuses %s with {code, message}', async (_what, method, path, body, status, code) => {
    const r = await raw(socket, method, path, body)
    expect(r.status).toBe(status)
    expect(r.json.code).toBe(code)
    expect(typeof r.json.message).toBe('string')
  })
})
