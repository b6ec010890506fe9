/**
 * The typed client against a real `RpcServer` on a unix socket with in-memory handlers.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { ShoalClient } from '../../../src/rpc/client.js'
import { RpcServer, route } from '../../../src/rpc/server.js'
import { until } from '../../helpers/http-raw.js'
import { tempDir } from '../../helpers/tmp.js'

let cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.reverse()) await c()
  cleanups = []
})

describe('ShoalClient.watch', () => {
  it('waits for a place when the daemon is at its bound of event streams, instead of failing', async () => {
    const tmp = await tempDir('shoal-client-')
    const socketPath = join(tmp.dir, 'rpc.sock')
    let n = 0
    const watch = route({
      method: 'GET', path: '/v1/watch', sse: true,
      handler: async (_b, ctx) => {
        ctx.event({ id: `ab-${++n}`, event: 'label.moved', data: { n } })
        await new Promise(resolve => ctx.signal.addEventListener('abort', resolve))
      }
    })
    const refused: string[] = []
    const server = new RpcServer({ socket: socketPath, mode: 0o600, routes: [watch], limits: { streams: { watch: 1 } }, log: { warn: (_o, msg) => { refused.push(msg ?? '') }, debug: () => {} } })
    await server.start()
    cleanups.push(async () => { await server.stop(); await tmp.cleanup() })
    const client = new ShoalClient({ socketPath })
    const first = new AbortController()
    const holder = client.watch({ signal: first.signal })
    expect((await holder.next()).value).toMatchObject({ event: 'label.moved', data: { n: 1 } })
    const second = new AbortController()
    cleanups.push(async () => { second.abort() })
    const waiter = client.watch({ signal: second.signal })
    const got = waiter.next()
    // The second watcher is refused (503 BUSY) until the first lets go; then it gets its stream.
    await until('the second watcher was refused', () => refused.some(m => m.includes('event streams are open')))
    first.abort()
    await holder.return(undefined)
    expect((await got).value).toMatchObject({ event: 'label.moved', data: { n: 2 } })
  })
})
