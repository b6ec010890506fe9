/**
 * Byte answers of the RPC server (file reads) on a real unix socket with in-memory handlers: a
 * failure before the first byte is an ordinary `{ code, message }` answer; after it, a client
 * that accepts trailers (the typed client) gets the failure as the stream's error, and any other
 * client a cut connection — never a body it could take for the whole; reads past `rpc.maxReads`
 * are refused with 503.
 */
import { request } from 'node:http'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { UnavailableError } from '../../../src/core/errors.js'
import { ShoalClient } from '../../../src/rpc/client.js'
import { RpcError } from '../../../src/rpc/errors.js'
import { RpcServer, route, type ByteAnswer } from '../../../src/rpc/server.js'
import { tempDir } from '../../helpers/tmp.js'

let cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.reverse()) await c()
  cleanups = []
})

const quiet = { warn: () => {}, debug: () => {} }

async function serve (answer: (signal: AbortSignal) => Promise<ByteAnswer>, maxReads = 8): Promise<string> {
  const tmp = await tempDir('shoal-bytes-')
  const socket = join(tmp.dir, 'rpc.sock')
  const server = new RpcServer({
    socket, mode: 0o600, log: quiet, limits: { streams: { read: maxReads } },
    routes: [route({ method: 'GET', path: '/v1/versions/{id}/files/{path}', bytes: true, handler: async (_b, ctx) => await answer(ctx.signal) })]
  })
  await server.start()
  cleanups.push(async () => { await server.stop(); await tmp.cleanup() })
  return socket
}

/** A body that fails before its first byte. */
function failing (err: Error): AsyncIterable<Uint8Array> {
  return { [Symbol.asyncIterator]: () => ({ next: async () => { throw err } }) }
}

/** Three bytes, then the failure: bytes 3-9 never come. */
const failsAfterThree = async (): Promise<ByteAnswer> => ({
  status: 200, headers: {}, length: 10,
  body: (async function * () {
    yield new Uint8Array([1, 2, 3])
    throw new UnavailableError('bytes 3-9 of f in m did not arrive')
  })()
})

describe('byte answers', () => {
  it('a failure before the first byte is a JSON answer with its status', async () => {
    const socket = await serve(async () => ({ status: 200, headers: {}, length: 10, body: failing(new UnavailableError('bytes 0-9 of f in m did not arrive')) }))
    const err = await new ShoalClient({ socketPath: socket }).openRead('m@x', 'f').then(() => undefined, (e: unknown) => e as RpcError)
    expect(err).toBeInstanceOf(RpcError)
    expect([err?.code, err?.status, err?.message]).toEqual(['UNAVAILABLE', 504, 'bytes 0-9 of f in m did not arrive'])
  })

  it('a failure after the first bytes: the typed client\'s stream fails with it (trailer)', async () => {
    const socket = await serve(failsAfterThree)
    const stream = await new ShoalClient({ socketPath: socket }).openRead('m@x', 'f')
    const got: Buffer[] = []
    const err = await (async () => { for await (const part of stream) got.push(part as Buffer) })().then(() => undefined, (e: unknown) => e as RpcError)
    expect(Buffer.concat(got)).toEqual(Buffer.from([1, 2, 3]))
    expect([err?.code, err?.message]).toEqual(['UNAVAILABLE', 'bytes 3-9 of f in m did not arrive'])
  })

  it('a failure after the first bytes: a plain HTTP client sees the connection cut short of Content-Length', async () => {
    const socket = await serve(failsAfterThree)
    const outcome = await new Promise<{ length: string | undefined, got: number, error: string }>(resolve => {
      let got = 0
      let length: string | undefined
      const req = request({ socketPath: socket, path: '/v1/versions/m/files/f', agent: false }, res => {
        length = res.headers['content-length']
        res.on('data', (p: Buffer) => { got += p.byteLength })
        res.on('end', () => resolve({ length, got, error: 'none' }))
        res.on('error', err => resolve({ length, got, error: err.message }))
      })
      req.on('error', err => resolve({ length, got, error: err.message }))
      req.end()
    })
    expect(outcome.length).toBe('10')
    expect(outcome.got).toBe(3)
    expect(outcome.error).not.toBe('none')
  })

  it('refuses a read past rpc.maxReads with 503, and ends a waiting read when its client leaves', async () => {
    let aborted = 0
    const socket = await serve(async signal => ({
      status: 200, headers: {}, length: 1,
      body: (async function * () {
        await new Promise<void>(resolve => { signal.addEventListener('abort', () => { aborted++; resolve() }, { once: true }) })
        yield new Uint8Array([1])
      })()
    }), 1)
    const client = new ShoalClient({ socketPath: socket })
    const leave = new AbortController()
    const waiting = client.openRead('m@x', 'f', { signal: leave.signal }).catch(() => undefined)
    // The first read holds the one place while it waits for its bytes.
    let refused: RpcError | undefined
    for (let i = 0; i < 200 && refused === undefined; i++) {
      refused = await client.openRead('m@x', 'f').then(s => { s.destroy(); return undefined }, (e: unknown) => e as RpcError)
    }
    expect([refused?.code, refused?.status, refused?.message]).toEqual(['BUSY', 503, '1 file reads are open, the most at once (rpc.maxReads); retry when one finishes, or raise rpc.maxReads'])
    leave.abort()
    await waiting
    const deadline = Date.now() + 5_000
    while (aborted === 0 && Date.now() < deadline) await new Promise(resolve => setImmediate(resolve))
    expect(aborted).toBe(1)
  })
})
