/**
 * Shared pieces of the RPC tests: a daemon in this process (real LevelDB, real unix socket, real
 * files), raw HTTP on its socket or loopback TCP port with no client library in between, and a
 * poll-until helper.
 */
import { request, type IncomingHttpHeaders } from 'node:http'
import type { Logger } from 'pino'
import { loadConfig } from '../../src/config/config.js'
import { Daemon } from '../../src/daemon/daemon.js'
import { createLogger } from '../../src/daemon/logger.js'

/** Starts a daemon in this process on `home`, listening on a random loopback port; silent unless given a logger. */
export async function startDaemon (home: string, log: Logger = createLogger('silent')): Promise<Daemon> {
  const daemon = new Daemon(await loadConfig({ home, overrides: { listen: ['/ip4/127.0.0.1/tcp/0'], ...(log.level === 'silent' ? { logLevel: 'silent' } : {}) } }), log)
  await daemon.start()
  return daemon
}

/** The unix socket, or the loopback TCP port. */
export type Target = { socketPath: string } | { port: number }

export interface RawAnswer { status: number, headers: IncomingHttpHeaders, text: string, json: Record<string, unknown> }

/** One raw HTTP request; `json` is the parsed body, or `{}` when it is not JSON (metrics, NDJSON). */
export async function raw (target: Target, method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<RawAnswer> {
  return await new Promise((resolve, reject) => {
    const where = 'socketPath' in target ? { socketPath: target.socketPath } : { host: '127.0.0.1', port: target.port }
    const req = request({ ...where, method, path, headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }) } }, res => {
      const parts: Buffer[] = []
      res.on('data', (d: Buffer) => parts.push(d))
      res.on('end', () => {
        const text = Buffer.concat(parts).toString()
        let json: Record<string, unknown> = {}
        try { json = JSON.parse(text || '{}') as Record<string, unknown> } catch { /* not JSON */ }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json })
      })
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** Polls `probe` every `everyMs` until it answers something other than undefined. */
export async function eventually<T> (what: string, probe: () => Promise<T | undefined>, timeoutMs = 10_000, everyMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, everyMs))
  }
}
