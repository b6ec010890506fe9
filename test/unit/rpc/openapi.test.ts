/**
 * The OpenAPI document (`docs/openapi.json`, `GET /v1/openapi.json`), checked without a browser:
 * it is what the route table generates (not stale), it has every route the server has and no
 * other, and every request the CLI and the typed client send — each command run with `--json`
 * against a recording server on a unix socket — validates against it (`OpenApiCheck`, the check
 * the e2e harness applies to every request of the e2e tests).
 */
import { readFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli, type CliIo } from '../../../src/cli/program.js'
import { routes, type ShoalApi } from '../../../src/rpc/api.js'
import { ShoalClient } from '../../../src/rpc/client.js'
import { openApiDocument } from '../../../src/rpc/openapi.js'
import { SHOAL_VERSION } from '../../../src/version.js'
import { OpenApiCheck, type OpenApiDocument } from '../../helpers/openapi-check.js'
import { tempDir } from '../../helpers/tmp.js'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../..')
const unused = new Proxy({}, { get: () => async () => { throw new Error('not called') } }) as ShoalApi
const extras = { watch: async () => {}, metrics: async () => ({ contentType: 'text/plain', body: '' }), read: async () => { throw new Error('not called') } }
const table = routes(unused, extras)

type Doc = { paths: Record<string, Record<string, object>> }

interface Recorded { method: string, url: string, headers: Record<string, string | undefined>, body: string }

describe('the OpenAPI document', () => {
  let doc: Doc
  let check: OpenApiCheck

  beforeAll(async () => {
    doc = JSON.parse(await readFile(join(ROOT, 'docs', 'openapi.json'), 'utf8')) as Doc
    check = new OpenApiCheck(doc as OpenApiDocument)
  })

  it('is what the route table generates (npm run openapi rewrites it)', () => {
    expect(doc).toEqual(JSON.parse(JSON.stringify(openApiDocument(table, SHOAL_VERSION))))
  })

  it('is served at GET /v1/openapi.json', async () => {
    const served = table.find(r => r.method === 'GET' && r.path === '/v1/openapi.json')
    const ctx = { query: new URLSearchParams(), params: {}, headers: {}, signal: new AbortController().signal, progress: () => {}, event: () => {} }
    expect(JSON.parse(JSON.stringify(await served?.handler(undefined, ctx)))).toEqual(doc)
  })

  it('has every route the server has, and no other', () => {
    const documented = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map(m => `${m.toUpperCase()} ${path}`)).sort()
    expect(documented).toEqual(table.map(r => `${r.method} ${r.path}`).sort())
  })

  describe('every request the CLI and the client send validates against it', () => {
    let dir: string
    let cleanup: () => Promise<void>
    let server: Server
    let socket: string
    const recorded: Recorded[] = []

    beforeAll(async () => {
      ({ dir, cleanup } = await tempDir('shoal-openapi-'))
      socket = join(dir, 'shoal.sock')
      server = createServer((req, res) => {
        const parts: Buffer[] = []
        req.on('data', (d: Buffer) => parts.push(d))
        req.on('end', () => {
          recorded.push({ method: req.method ?? '', url: req.url ?? '', headers: Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : v])), body: Buffer.concat(parts).toString() })
          const path = new URL(req.url ?? '/', 'http://shoal').pathname
          const route = table.find(r => r.method === req.method && r.path === path)
          if (route?.sse === true) { res.writeHead(200, { 'content-type': 'text/event-stream' }); res.end(); return }
          if (route?.stream === true) { res.writeHead(200, { 'content-type': 'application/x-ndjson' }); res.end('{"type":"result","result":{}}\n'); return }
          res.writeHead(200, { 'content-type': 'application/json' })
          res.end(path === '/v1/leases' && req.method === 'POST' ? '{"id":"0123456789abcdef01234567","model":"m","version":"v"}' : '{}')
        })
      })
      await new Promise<void>(resolve => server.listen(socket, resolve))
    })

    afterAll(async () => {
      await new Promise<void>(resolve => server.close(() => resolve()))
      await cleanup()
    })

    it('for every command and client call', async () => {
      const io: CliIo = { out: () => {}, err: () => {}, env: { SHOAL_HOME: dir }, stderrTTY: false, connect: t => new ShoalClient(t), onInterrupt: () => () => {} }
      const V = 'bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku'
      const commands = [
        ['version'], ['id'], ['peers'], ['status'], ['ls'], ['ls', 'tiny'], ['show', 'tiny@prod'], ['search', 'framework', '=', '"onnx"', '--limit', '5'],
        ['search', '--similar', `tiny@${V}`], ['verify'], ['gc', '--dry-run'], ['export', 'tiny@prod', join(dir, 'out')], ['export', '--hf', 'tiny@prod', join(dir, 'hub')],
        ['add', join(dir, 'model'), '--name', 'tiny', '--label', 'prod', '--tag', 'task=chat', '--description', 'a model', '--block-size', '1MiB'],
        ['label', 'set', 'tiny', 'prod', V, '--cold', '--at', '+1m', '--jitter', '30s', '--expect', 'none'], ['label', 'set', 'tiny', 'prod', V],
        ['label', 'rm', 'tiny', 'canary'], ['label', 'history', 'tiny@prod'], ['rollback', 'tiny@prod'], ['activate', 'tiny@prod'], ['heads'],
        ['resolve', 'tiny@prod'], ['resolve', 'tiny@prod', '--ensure'], ['leases'], ['keys', 'list'], ['keys', 'new', 'release'], ['keys', 'export', 'release', '--private'],
        ['trust', 'list'], ['trust', 'add', 'z6MkKey', 'llama-*'], ['trust', 'rm', 'z6MkKey'], ['events', '--since', 'abc123-4', '--limit', '10'],
        ['pin', 'tiny@prod'], ['rm', `tiny@${V}`, '--force'], ['df'], ['compress', `tiny@${V}`], ['unpin', `tiny@${V}`], ['pull', `tiny@${V}`, '--no-pin'], ['pull', `tiny@${V}`, '--cancel']
      ]
      for (const argv of commands) await runCli(['--json', ...argv], io)
      const client = new ShoalClient({ socketPath: socket })
      const lease = await client.holdLease('tiny@prod', 'inference-1', 30)
      await lease.release()
      await client.renewLease('0123456789abcdef01234567', 30)
      for await (const _e of client.watch({ types: ['label.moved'], model: 'tiny', since: 'abc123-4', reconnect: false })) { /* none */ }
      await client.metrics()
      for await (const _b of await client.openRead('org/tiny@prod', 'sub/model.safetensors', { start: 8, end: 16 })) { /* what the recorder sends */ }

      const seen = new Set<string>()
      for (const r of recorded) {
        expect(check.check(r), `${r.method} ${r.url} ${r.body}`).toEqual([])
        seen.add(`${r.method} ${check.documentedPath(r.url) ?? r.url}`)
      }
      // The commands reach (nearly) every route: what they do not is said here, so a new one is noticed.
      const missed = table.map(r => `${r.method} ${r.path}`).filter(k => !seen.has(k)).sort()
      expect(missed).toEqual(['GET /v1/openapi.json'])
    })
  })
})
