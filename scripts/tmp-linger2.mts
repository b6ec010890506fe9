import { RpcServer, route } from '../src/rpc/server.js'
import { rawRequest } from '../test/e2e/helpers.js'
import { z } from 'zod'
const socket = '/tmp/linger2.sock'
const s = new RpcServer({ socket, mode: 0o600, routes: [route({ method: 'POST', path: '/v1/gc', body: z.object({}).passthrough(), handler: async () => ({}) })], log: { warn () {}, debug () {}, info () {}, error () {} } as any })
await s.start()
const big = JSON.stringify({ dryRun: true, pad: 'x'.repeat(1024 * 1024) })
let bad = 0
for (let t = 0; t < 40; t++) {
  for (const chunked of [false, true]) {
    try { const r = await rawRequest(socket, 'POST', '/v1/gc', big, { chunked }); if (r.status !== 413) { bad++; console.log('status', r.status) } } catch (e) { bad++; console.log(t, chunked, (e as Error).message) }
  }
}
await s.stop()
console.log('bad', bad)
