/**
 * Streaming reads (`GET /v1/versions/{id}/files/{path}`, `openRead`, `shoal cat`) between real
 * daemons over TCP on loopback: a publisher and a puller whose reads start the pull and return
 * exactly the file's bytes while it runs; the snapshot stays invisible until the version is
 * whole; 206 with Content-Range and 416 from the snapshot; a path the version does not have is
 * refused with its message; a range no peer has ends with an error naming the bytes; the serving
 * example's `--stream` mode answers from a session built of streamed bytes.
 */
import { spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { request } from 'node:http'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { writeOnnxModelFolder } from '../../scripts/lib/onnx-model.js'
import type { HeadRow, KeyRow } from '../../src/rpc/api.js'
import { ShoalClient } from '../../src/rpc/client.js'
import { RpcError } from '../../src/rpc/errors.js'
import { EXIT, expectExit, Harness, ROOT, until, writeModelFolder, type DaemonProcess } from './helpers.js'

const MiB = 1024 * 1024

/** A raw GET on the socket with headers: status, headers and body bytes. */
async function get (socketPath: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number, headers: Record<string, unknown>, body: Buffer }> {
  return await new Promise((resolve, reject) => {
    const req = request({ socketPath, path, headers, agent: false }, res => {
      const parts: Buffer[] = []
      res.on('data', (p: Buffer) => parts.push(p))
      res.on('error', reject)
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }))
    })
    req.on('error', reject)
    req.end()
  })
}

async function readAll (client: ShoalClient, ref: string, path: string, options: { start?: number, end?: number } = {}): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const part of await client.openRead(ref, path, options)) parts.push(part as Buffer)
  return Buffer.concat(parts)
}

describe('streaming reads', () => {
  let h: Harness
  let publisher: { d: DaemonProcess, addr: string }
  let puller: { d: DaemonProcess, addr: string }
  let weights: Buffer
  let config: Buffer
  let version: string

  beforeAll(async () => {
    h = await Harness.create('stream')
    const model = await writeModelFolder(await h.dir('model'), { bytes: 24 * MiB, seed: 'stream' })
    weights = await readFile(join(model, 'model.safetensors'))
    config = await readFile(join(model, 'config.json'))
    // Capped so the pull takes seconds: the reads below run while it does.
    publisher = await h.node('publisher', { config: { p2p: { dht: false }, transfer: { uploadRate: 6 * MiB } } })
    version = (await publisher.d.json<{ version: string }>(['add', model, '--name', 'm'])).version
    puller = await h.node('puller', { peers: [publisher.addr], config: { p2p: { dht: false } } })
  })
  afterAll(async () => { await h.close() })

  it('reads during a pull (which the first read starts) return exactly the file\'s bytes; the snapshot stays hidden until the version is whole', async () => {
    const client = new ShoalClient({ socketPath: puller.d.socket })
    const ref = `m@${version}`
    const tail = weights.length - 3 * MiB - 123
    const reads = [
      readAll(client, ref, 'model.safetensors'),
      readAll(client, ref, 'model.safetensors', { start: tail }),
      readAll(client, ref, 'model.safetensors', { start: 5 * MiB + 7, end: 9 * MiB + 11 })
    ]
    // The version is being pulled, not complete: resolve (the snapshot) refuses it meanwhile.
    const during = await until('the pull to be running', async () => {
      const s = await puller.d.json<{ pulls: Array<{ version: string, bytes: number, totalBytes: number, state: string }> }>(['status'])
      return s.pulls.find(p => p.version === version && p.state === 'fetching')
    }, 30_000, 20)
    expect(during.bytes).toBeLessThan(during.totalBytes)
    await expect(client.resolve(ref)).rejects.toThrow(RpcError)
    const [whole, end, middle] = await Promise.all(reads)
    expect(whole?.equals(weights)).toBe(true)
    expect(end?.equals(weights.subarray(tail))).toBe(true)
    expect(middle?.equals(weights.subarray(5 * MiB + 7, 9 * MiB + 11))).toBe(true)
    // The CLI reads the same way.
    const cat = await puller.d.cli(['cat', ref, 'config.json'])
    expectExit(cat, 0)
    expect(cat.stdout).toBe(config.toString('utf8'))
    await until('the pull to complete', async () => await client.resolve(ref).then(v => v, () => undefined), 60_000)
  })

  it('serves a complete version from its snapshot: 206 with Content-Range, and 416 for a range outside the file', async () => {
    const path = `/v1/versions/${encodeURIComponent(`m@${version}`)}/files/model.safetensors`
    const partial = await get(puller.d.socket, path, { range: 'bytes=100-199' })
    expect(partial.status).toBe(206)
    expect(partial.headers['content-range']).toBe(`bytes 100-199/${weights.length}`)
    expect(partial.headers['x-shoal-source']).toBe('snapshot')
    expect(partial.body.equals(weights.subarray(100, 200))).toBe(true)
    // A bare version id names it too.
    const whole = await get(puller.d.socket, `/v1/versions/${version}/files/config.json`)
    expect(whole.status).toBe(200)
    expect(whole.body.equals(config)).toBe(true)
    const outside = await get(puller.d.socket, path, { range: `bytes=${weights.length}-` })
    expect(outside.status).toBe(416)
    expect(outside.headers['content-range']).toBeUndefined()
    expect(JSON.parse(outside.body.toString())).toEqual({
      code: 'RANGE_NOT_SATISFIABLE',
      message: `bytes=${weights.length}- starts at byte ${weights.length}, past the end; the file is ${weights.length} bytes (bytes 0-${weights.length - 1})`
    })
  })

  it('refuses a path the version does not have, naming the files it has', async () => {
    const client = new ShoalClient({ socketPath: puller.d.socket })
    const err = await client.openRead(`m@${version}`, '../config.json').then(() => undefined, (e: unknown) => e as RpcError)
    expect(err?.code).toBe('NOT_FOUND')
    expect(err?.message).toBe(`"../config.json" is not a file of m@${version}; its files are config.json, model.safetensors`)
    const r = await puller.d.cli(['cat', `m@${version}`, 'weights.bin'])
    expectExit(r, EXIT.NOT_FOUND)
    expect(r.stderr).toBe(`shoal: "weights.bin" is not a file of m@${version}; its files are config.json, model.safetensors\n`)
  })

  it('a range no peer has ends with an error naming the missing bytes, never with other bytes', async () => {
    // A publisher that serves the manifest but no chunk: nobody has the bytes.
    const empty = await h.node('empty-handed', { env: { SHOAL_TEST_FAULTS: 'nochunks' }, config: { p2p: { dht: false } } })
    const model = await writeModelFolder(await h.dir('model-2'), { bytes: 2 * MiB, seed: 'nobody' })
    const other = (await empty.d.json<{ version: string }>(['add', model, '--name', 'm2'])).version
    const reader = await h.node('reader', { peers: [empty.addr], config: { p2p: { dht: false }, transfer: { stallSeconds: 2 } } })
    const r = await reader.d.cli(['cat', `m2@${other}`, 'model.safetensors', '--start', '1000', '--end', '2000'])
    expectExit(r, EXIT.ERROR)
    expect(r.stdout).toBe('')
    expect(r.stderr).toMatch(new RegExp(`^shoal: bytes 1000-1999 of model\\.safetensors in m2 did not arrive \\(first missing: chunk \\w+, bytes 0-\\d+\\); its pull ended: .+\\n$`))
  })

  it('the serving example in --stream mode builds its session from streamed bytes, answers, then moves to the snapshot', async () => {
    const dir = await h.dir('onnx')
    await writeOnnxModelFolder(dir, { seed: 'stream-example' })
    const added = await publisher.d.json<{ version: string }>(['add', dir, '--name', 'lin', '--label', 'prod'])
    const key = (await publisher.d.json<KeyRow[]>(['keys', 'list'])).find(k => k.name === 'default')?.publicKey ?? ''
    const node = await h.node('serving-node', { peers: [publisher.addr], config: { p2p: { dht: false }, trust: [{ key, models: 'lin' }] } })
    await until('the node to hold the head of lin@prod', async () => (await node.d.json<HeadRow[]>(['heads'])).find(r => r.model === 'lin' && r.version === added.version), 30_000)
    const child = spawn(process.execPath, [join(ROOT, 'examples', 'serve-onnx', 'dist', 'server.js'), '--model', 'lin', '--label', 'prod', '--stream', '--port', '0'], {
      cwd: ROOT, env: { ...process.env, SHOAL_HOME: node.d.home }, stdio: ['ignore', 'ignore', 'pipe']
    })
    let log = ''
    child.stderr?.on('data', (b: Buffer) => { log += b.toString() })
    try {
      const port = Number(await until('the example to listen', () => {
        if (child.exitCode !== null) throw new Error(`the example exited ${child.exitCode}:\n${log}`)
        return /"msg":"listening".*?"port":(\d+)/.exec(log)?.[1]
      }, 30_000, 50))
      expect(log).toContain('"msg":"loaded from streamed bytes"')
      const body = JSON.stringify({ inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3, 4] }] })
      const answer = await new Promise<{ status: number, text: string }>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path: '/v2/models/lin/infer', method: 'POST', headers: { 'content-type': 'application/json' } }, res => {
          let text = ''
          res.on('data', (d: Buffer) => { text += d.toString() })
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }))
        })
        req.on('error', reject)
        req.end(body)
      })
      expect(answer.status, answer.text).toBe(200)
      expect((JSON.parse(answer.text) as { model_version: string }).model_version).toBe(added.version)
      // Whether the snapshot took over before this first answer depends on timing; the session it
      // started with was built from streamed bytes (above).
      await until('the example to log its first response', () => /"msg":"first response","msSinceStart":\d+,"version":"\w+","streamed":(true|false)/.exec(log) ?? undefined, 10_000, 20)
      await until('the example to move to the snapshot', () => log.includes('"msg":"moved to the snapshot"') ? true : undefined, 30_000, 50)
    } finally {
      // Waited for only while it runs: one that already exited (it failed to start) sends no more 'exit'.
      const exited = new Promise(resolve => child.once('exit', resolve))
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM')
        await exited
      }
    }
  })
})
