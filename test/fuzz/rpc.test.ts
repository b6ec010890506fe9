/**
 * Fuzzing the local RPC server (`rpc/server.ts`) with the daemon's real route table
 * (`rpc/api.ts`) and schemas (`rpc/schemas.ts`) over in-memory handlers, on a real unix socket:
 *
 * - raw requests: random methods, request targets (`//[/`, `http://[/`, absolute URLs, `%`
 *   escapes, paths past the header bound), headers, framings and bodies, sometimes mutated, each
 *   followed by a pipelined `Connection: close` request. Every byte that comes back is a whole
 *   HTTP response, every failure is `{ code, message }`, the server ends the connection by
 *   itself (short deadlines here), and it still answers a normal request after;
 * - request bodies: random JSON to every route with a schema answers 200 (the handler ran with
 *   the parsed body) or 400 `INVALID_INPUT` with a message.
 */
import fc from 'fast-check'
import { request } from 'node:http'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseQuery } from '../../src/core/query.js'
import { routes, type ServerExtras, type ShoalApi } from '../../src/rpc/api.js'
import { RpcServer } from '../../src/rpc/server.js'
import { exchange, parseResponses } from '../helpers/http-raw.js'
import { tempDir } from '../helpers/tmp.js'
import { fuzzParams, mutated } from './fuzz.js'

/** Every API call answers at once; `search` runs the real query parser. */
const calls: Array<{ name: string, args: unknown[] }> = []
const api = new Proxy({} as ShoalApi, {
  get: (_t, name) => async (...args: unknown[]) => {
    calls.push({ name: String(name), args })
    if (name === 'search') {
      parseQuery(String(args[0]))
      return { rows: [], total: 0 }
    }
    const progress = args.find(a => typeof a === 'function') as ((p: object) => void) | undefined
    progress?.({ step: 1 })
    return { ok: String(name) }
  }
})
const extras: ServerExtras = {
  watch: async o => { o.send({ event: 'ready', data: {} }) },
  metrics: async () => ({ contentType: 'text/plain; version=0.0.4', body: 'shoal_up 1\n' }),
  read: async () => ({ status: 200, headers: {}, length: 3, body: (async function * () { yield new Uint8Array([1, 2, 3]) })() })
}
const table = routes(api, extras)
const paths = [...new Set(table.map(r => r.path))]

let server: RpcServer
let socketPath: string
let cleanup: () => Promise<void>
beforeAll(async () => {
  const tmp = await tempDir('shoal-fuzz-rpc-')
  socketPath = join(tmp.dir, 'rpc.sock')
  server = new RpcServer({
    socket: socketPath, mode: 0o600, routes: table, log: { warn: () => {}, debug: () => {} },
    // Short deadlines, so an incomplete request is answered 408 at once rather than waited for.
    limits: { headersTimeoutMs: 300, requestTimeoutMs: 300, checkIntervalMs: 50, keepAliveTimeoutMs: 200, stallTimeoutMs: 2000 }
  })
  await server.start()
  cleanup = async () => { await server.stop(); await tmp.cleanup() }
})
afterAll(async () => { await cleanup() })

const SENTINEL = Buffer.from('GET /v1/version HTTP/1.1\r\nConnection: close\r\n\r\n')

const method = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('GET', 'POST', 'DELETE') },
  { weight: 2, arbitrary: fc.constantFrom('PUT', 'PATCH', 'OPTIONS', 'TRACE', 'CONNECT', 'PRI', 'get', 'M-SEARCH') },
  { weight: 1, arbitrary: fc.stringMatching(/^[A-Z]{1,10}$/) },
  { weight: 1, arbitrary: fc.string({ maxLength: 8 }) }
)
const queryValue = fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('(((((', '('.repeat(3000), 'params > 1e999', 'a'.repeat(5000), '%', '%E0%A4%A', 'label.moved,nope', 'ab-1', '0', '-5', '99999'))
const target = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('//[/', 'http://[/', 'http://a:b/v1/version', 'http://shoal/v1/version', '*', '/v1/%zz', '/v1/search?q=%', '/%00', '/v1/../v1/version', '/v1/version#frag', '/v1/watch?since=zz', '/v1/events?limit=-1') },
  { weight: 6, arbitrary: fc.tuple(fc.constantFrom(...paths), fc.dictionary(fc.constantFrom('q', 'ref', 'name', 'limit', 'since', 'types', 'model', 'similar', 'private', 'x'), queryValue, { maxKeys: 3 })).map(([p, q]) => `${p}?${new URLSearchParams(q).toString()}`) },
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom(...paths), fc.string({ maxLength: 60 })).map(([p, s]) => `${p}${s}`) },
  { weight: 1, arbitrary: fc.integer({ min: 1000, max: 40_000 }).map(n => `/${'a'.repeat(n)}`) },
  { weight: 1, arbitrary: fc.string({ maxLength: 40 }) }
)
const header = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('Content-Type: application/json', 'Connection: keep-alive', 'Connection: Upgrade\r\nUpgrade: websocket', 'Expect: 100-continue', 'Expect: tea', 'Transfer-Encoding: gzip', 'Content-Length: 99999999999', 'Content-Length: -1', 'Content-Length: 1, 2', 'Last-Event-ID: zz', 'Last-Event-ID: ab-1', 'Host: shoal', 'Authorization: Bearer x', `X-Big: ${'b'.repeat(20_000)}`) },
  { weight: 2, arbitrary: fc.tuple(fc.stringMatching(/^[A-Za-z-]{1,20}$/), fc.string({ maxLength: 40 })).map(([k, v]) => `${k}: ${v}`) },
  { weight: 1, arbitrary: fc.string({ maxLength: 60 }) }
)
const body = fc.oneof(
  { weight: 4, arbitrary: fc.jsonValue({ maxDepth: 4 }).map(v => Buffer.from(JSON.stringify(v) ?? 'null')) },
  { weight: 2, arbitrary: fc.constantFrom('{"path":"/m","name":"m"}', '{"ref":"m@prod"}', '{"ref":"m@prod","ensure":true}', '{}', '{"dryRun":true}', '{"name":"m","label":"prod","version":"bafy"}').map(s => Buffer.from(s)) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map(b => Buffer.from(b)) }
)
const framing = fc.constantFrom('length', 'length', 'length', 'chunked', 'none', 'short')

const rawRequest = fc.tuple(method, target, fc.array(header, { maxLength: 5 }), body, framing).map(([m, t, hs, b, f]) => {
  const lines = [`${m} ${t} HTTP/1.1`, ...hs]
  let payload: Buffer = Buffer.alloc(0)
  if (f === 'length' || f === 'short') {
    lines.push(`Content-Length: ${b.length + (f === 'short' ? 7 : 0)}`)
    payload = b
  } else if (f === 'chunked') {
    lines.push('Transfer-Encoding: chunked')
    payload = Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n0\r\n\r\n')])
  }
  return { bytes: Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`), payload]), head: m === 'HEAD' }
})
const anyRequest = fc.oneof(
  { weight: 4, arbitrary: rawRequest },
  { weight: 1, arbitrary: rawRequest.chain(r => mutated(r.bytes).map(bytes => ({ bytes: Buffer.from(bytes), head: false }))) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map(bytes => ({ bytes: Buffer.from(bytes), head: false })) }
)

async function stillServes (): Promise<void> {
  const text = await new Promise<string>((resolve, reject) => {
    request({ socketPath, path: '/v1/version', agent: false }, res => {
      let t = ''
      res.on('data', (d: Buffer) => { t += d.toString() })
      res.on('end', () => resolve(t))
    }).on('error', reject).end()
  })
  expect(JSON.parse(text)).toEqual({ ok: 'version' })
}

function expectWireError (json: unknown, status: number): void {
  const w = json as { code?: unknown, message?: unknown } | undefined
  if (typeof w?.code !== 'string' || typeof w.message !== 'string' || w.message === '') {
    throw new Error(`a ${status} answer without { code, message }: ${JSON.stringify(json)?.slice(0, 200)}`)
  }
}

describe('fuzz: RPC requests as raw bytes', () => {
  it('every request gets whole HTTP answers, failures as { code, message }, the connection ends, the server goes on', async () => {
    await fc.assert(fc.asyncProperty(anyRequest, async ({ bytes, head }) => {
      const x = await exchange({ socketPath }, Buffer.concat([bytes, SENTINEL]), { end: false, timeoutMs: 10_000 })
      if (!x.closed) throw new Error(`the server kept the connection open for ${x.ms} ms`)
      const { responses, rest } = parseResponses(x.bytes, [head])
      if (rest.length > 0) throw new Error(`bytes that are not an HTTP response: ${JSON.stringify(rest.subarray(0, 200).toString('latin1'))}`)
      if (responses.length === 0) throw new Error('no answer at all')
      for (const r of responses) {
        if (r.status < 100 || r.status > 599) throw new Error(`status ${r.status}`)
        if (r.status >= 400 && !(head && r === responses[0])) expectWireError(r.json, r.status)
      }
      await stillServes()
    }), fuzzParams())
  })
})

describe('fuzz: request body schemas', () => {
  const withBody = table.filter(r => r.body !== undefined)
  const keys = ['path', 'name', 'label', 'metadata', 'metaFile', 'origin', 'pin', 'ref', 'dest', 'overwrite', 'dryRun', 'version', 'expect', 'activation', 'key', 'models', 'ensure', 'holder', 'ttlSeconds', 'id', 'mode', 'at', 'jitterMs', '__proto__', 'constructor']
  const value = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constantFrom('/abs/path', 'rel', 'm@prod', 'bafy', 'hot', 'cold', '0123456789abcdef01234567', 'x'.repeat(5000), '/a\u0000b'), fc.integer(), fc.double(), fc.boolean())
  const shaped = fc.dictionary(fc.constantFrom(...keys), value, { maxKeys: 6 })
  const activation = fc.record({ mode: fc.constantFrom('hot', 'cold', 'warm'), jitterMs: fc.oneof(fc.integer(), fc.double()), at: fc.oneof(fc.integer(), fc.string()) }, { requiredKeys: ['mode'] })
  const anyBody = fc.oneof(shaped, fc.jsonValue({ maxDepth: 4 }), shaped.chain(o => activation.map(a => ({ ...o, activation: a }))))

  it('random JSON to every route with a schema answers 200 with the parsed body, or 400 with a message', async () => {
    await fc.assert(fc.asyncProperty(fc.constantFrom(...withBody), anyBody, async (r, value) => {
      const text = JSON.stringify(value)
      calls.length = 0
      const answer = await new Promise<{ status: number, text: string }>((resolve, reject) => {
        const req = request({ socketPath, method: r.method, path: r.path, agent: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) } }, res => {
          let t = ''
          res.on('data', (d: Buffer) => { t += d.toString() })
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text: t }))
        })
        req.on('error', reject)
        req.end(text)
      })
      if (answer.status === 200) {
        if (calls.length !== 1) throw new Error(`accepted, but the handler ran ${calls.length} times`)
        const parsed = r.body!.safeParse(value)
        if (!parsed.success) throw new Error(`accepted a body its schema refuses: ${text.slice(0, 200)}`)
        return
      }
      if (answer.status !== 400) throw new Error(`answered ${answer.status}: ${answer.text.slice(0, 200)}`)
      const w = JSON.parse(answer.text) as { code: string, message: string }
      if (w.code !== 'INVALID_INPUT' || !/^(invalid request: |request body is not valid JSON)/.test(w.message)) throw new Error(`refused without a clear message: ${answer.text.slice(0, 200)}`)
      if (calls.length !== 0) throw new Error('refused, but the handler ran')
    }), fuzzParams())
  })
})
