/**
 * The typed client for the local RPC. The CLI uses it, and so can any serving process:
 *
 * ```ts
 * import { ShoalClient } from 'shoal'
 * const shoal = new ShoalClient({ socketPath: '/var/lib/shoal/shoal.sock' })
 * const v = await shoal.show('llama-8b@prod')
 * console.log(v.path) // a read-only folder you can mmap from
 * ```
 *
 * Failures throw `RpcError` with the daemon's `code` (`NOT_FOUND`, `CONFLICT`, …), or `UNREACHABLE`
 * when no daemon answers on the socket.
 */
import { request } from 'node:http'
import { Readable } from 'node:stream'
import type { ColdReport } from '../store/cold.js'
import type { GcReport } from '../store/gc.js'
import type { SearchResult } from '../store/search-index.js'
import type { VersionInfo } from '../store/store.js'
import type { VerifyReport } from '../store/verify.js'
import type { DfResult, RemoveResult, LeaseRow, ActivateResult, EventsResult, HeadHistoryRow, HeadRow, KeyExport, KeyRow, ResolveResult, TrustRow, ExportResult, IdResult, LabelResult, ModelRow, PeerRow, PinResult, Progress, PullCancelResult, ShoalApi, ShowResult, StatusResult, VersionResult } from './api.js'
import { RpcError } from './errors.js'
import { rangeHeader } from './range.js'
import type { AddRequest, ExportRequest, GcRequest, LabelRequest, PullRequest, RemoveRequest } from './schemas.js'
import type { EventPayloads, EventType } from '../core/events.js'

/** The daemon's unix socket, or its loopback TCP port with the token from `<home>/rpc.token`. */
export type ShoalClientOptions = { socketPath: string } | { url: string, token: string }

/**
 * One event of `watch`, narrowed by `event`: a daemon event (`label.moved`, `version.staged`, …;
 * its `data` as in `EventPayloads`, plus the time it happened), or `gone` (missed events were
 * compacted or the daemon restarted: re-resolve).
 */
export type WatchEvent = { [T in EventType]: { id: string, event: T, data: EventPayloads[T] & { time: number } } }[EventType] |
{ id?: undefined, event: 'gone', data: { since: string, message: string } }

export interface WatchOptions {
  types?: EventType[]
  model?: string
  /** Replay what came after this event id (else only new events). */
  since?: string
  signal?: AbortSignal
  /** Reconnect (with Last-Event-ID) when the stream breaks. @default true */
  reconnect?: boolean
}

/** Which bytes of a file `openRead` reads: `[start, end)`, `end` exclusive as in `Blob.slice`. @default the whole file */
export interface ReadOptions {
  start?: number
  end?: number
  signal?: AbortSignal
}

/** What `openRead` gives: the bytes, and which version and file they are of. */
export type ReadStream = Readable & {
  /** The model and the version the ref named when the read started (a label is read once). */
  readonly model: string
  readonly version: string
  /** The file's size (the whole file, not the range). */
  readonly size: number
}

/** @default 1 s, doubling to 10 s — waits between reconnects of a broken watch */
const WATCH_RETRY_MS = [1000, 2000, 5000, 10_000]

/** A lease kept alive in the background until `release`. */
export interface LeaseHandle {
  lease: LeaseRow
  release: () => Promise<void>
}

export class ShoalClient implements ShoalApi {
  constructor (private readonly options: ShoalClientOptions) {}

  async version (): Promise<VersionResult> { return await this.call('GET', '/v1/version') }
  async status (): Promise<StatusResult> { return await this.call('GET', '/v1/status') }
  async models (): Promise<ModelRow[]> { return await this.call('GET', '/v1/models') }
  async versions (name: string): Promise<VersionInfo[]> { return await this.call('GET', `/v1/versions?name=${encodeURIComponent(name)}`) }
  async show (ref: string): Promise<ShowResult> { return await this.call('GET', `/v1/show?ref=${encodeURIComponent(ref)}`) }
  async gc (req: GcRequest): Promise<GcReport> { return await this.call('POST', '/v1/gc', req) }
  async compress (ref: string): Promise<ColdReport> { return await this.call('POST', '/v1/compress', { ref }) }
  /** Removes one version; refused (CONFLICT, saying why) when labelled, pinned or leased, unless `force`. */
  async removeVersion (req: RemoveRequest): Promise<RemoveResult> { return await this.call('DELETE', '/v1/versions', req) }
  async df (signal?: AbortSignal): Promise<DfResult> { return await this.call('GET', '/v1/df', undefined, signal) }
  async setLabel (req: LabelRequest): Promise<LabelResult> { return await this.call('POST', '/v1/labels', req) }
  async removeLabel (name: string, label: string): Promise<LabelResult> { return await this.call('DELETE', '/v1/labels', { name, label }) }
  async rollback (ref: string, key?: string): Promise<LabelResult> { return await this.call('POST', '/v1/rollback', { ref, ...(key !== undefined ? { key } : {}) }) }
  async activate (ref: string): Promise<ActivateResult> { return await this.call('POST', '/v1/activate', { ref }) }
  async heads (): Promise<HeadRow[]> { return await this.call('GET', '/v1/heads') }
  async labelHistory (ref: string): Promise<HeadHistoryRow[]> { return await this.call('GET', `/v1/heads/history?ref=${encodeURIComponent(ref)}`) }
  async resolve (ref: string): Promise<ResolveResult> { return await this.call('GET', `/v1/resolve?ref=${encodeURIComponent(ref)}`) }
  async keys (): Promise<KeyRow[]> { return await this.call('GET', '/v1/keys') }
  async newKey (name: string): Promise<KeyRow> { return await this.call('POST', '/v1/keys', { name }) }
  async exportKey (name: string, includePrivate: boolean): Promise<KeyExport> { return await this.call('GET', `/v1/keys/export?name=${encodeURIComponent(name)}${includePrivate ? '&private=true' : ''}`) }
  async trust (): Promise<TrustRow[]> { return await this.call('GET', '/v1/trust') }
  async addTrust (key: string, models: string): Promise<TrustRow> { return await this.call('POST', '/v1/trust', { key, models }) }
  async removeTrust (key: string, models?: string): Promise<{ removed: number }> { return await this.call('DELETE', '/v1/trust', { key, ...(models !== undefined ? { models } : {}) }) }
  async events (since?: string, limit?: number): Promise<EventsResult> {
    const q = new URLSearchParams()
    if (since !== undefined) q.set('since', since)
    if (limit !== undefined) q.set('limit', String(limit))
    return await this.call('GET', `/v1/events${q.size > 0 ? `?${q.toString()}` : ''}`)
  }
  async pin (ref: string): Promise<PinResult> { return await this.call('POST', '/v1/pins', { ref }) }
  async unpin (ref: string): Promise<PinResult> { return await this.call('DELETE', '/v1/pins', { ref }) }

  async add (req: AddRequest, onProgress?: (p: Progress) => void, signal?: AbortSignal): Promise<ShowResult> {
    return await this.stream('/v1/add', req, onProgress, signal)
  }

  async verify (onProgress?: (p: Progress) => void, signal?: AbortSignal): Promise<VerifyReport> {
    return await this.stream('/v1/verify', {}, onProgress, signal)
  }

  async pull (req: PullRequest, onProgress?: (p: Progress) => void, signal?: AbortSignal): Promise<ShowResult> {
    return await this.stream('/v1/pull', req, onProgress, signal)
  }

  /** Stops the pull of `name@<version id>` and removes its record and partial data (`NOT_FOUND` when there is none). */
  async cancelPull (ref: string, signal?: AbortSignal): Promise<PullCancelResult> {
    return await this.call('DELETE', '/v1/pull', { ref }, signal)
  }

  async peers (): Promise<PeerRow[]> { return await this.call('GET', '/v1/peers') }
  async resolveEnsure (ref: string, onProgress?: (p: Progress) => void, signal?: AbortSignal): Promise<ResolveResult> {
    return await this.stream('/v1/resolve', { ref, ensure: true }, onProgress, signal)
  }

  async leases (): Promise<LeaseRow[]> { return await this.call('GET', '/v1/leases') }
  /** Searches every version this node knows; `similar: name@version` ranks by compatible structure. */
  async search (query: string, options: { limit?: number, similar?: string } = {}): Promise<SearchResult> {
    const q = new URLSearchParams({ q: query })
    if (options.limit !== undefined) q.set('limit', String(options.limit))
    if (options.similar !== undefined) q.set('similar', options.similar)
    return await this.call('GET', `/v1/search?${q.toString()}`)
  }
  async lease (ref: string, holder: string, ttlSeconds?: number): Promise<LeaseRow> { return await this.call('POST', '/v1/leases', { ref, holder, ...(ttlSeconds !== undefined ? { ttlSeconds } : {}) }) }
  async renewLease (id: string, ttlSeconds?: number): Promise<LeaseRow> { return await this.call('POST', '/v1/leases/renew', { id, ...(ttlSeconds !== undefined ? { ttlSeconds } : {}) }) }
  async releaseLease (id: string): Promise<{ released: boolean }> { return await this.call('DELETE', '/v1/leases', { id }) }

  /**
   * Leases `ref` and renews the lease every third of its TTL until `release()`. A failed renew
   * (daemon restarted and lost it, or it expired) re-leases the same version.
   */
  async holdLease (ref: string, holder: string, ttlSeconds = 60): Promise<LeaseHandle> {
    let lease = await this.lease(ref, holder, ttlSeconds)
    const versionRef = `${lease.model}@${lease.version}`
    const timer = setInterval(() => {
      this.renewLease(lease.id, ttlSeconds).catch(async () => { lease = await this.lease(versionRef, holder, ttlSeconds) }).catch(() => {})
    }, Math.max(1000, ttlSeconds * 1000 / 3))
    timer.unref()
    return {
      get lease () { return lease },
      release: async () => {
        clearInterval(timer)
        await this.releaseLease(lease.id).catch(() => {})
      }
    }
  }

  /**
   * Server-sent events from `/v1/watch` as an async iterable. Reconnects when the stream breaks,
   * sending the last id seen, so nothing is missed; if the daemon no longer has those events (or
   * restarted), yields `{ event: 'gone' }` and goes on with live events — re-resolve then.
   */
  async * watch (options: WatchOptions = {}): AsyncGenerator<WatchEvent> {
    let last = options.since
    let attempt = 0
    const aborted = (): boolean => options.signal?.aborted === true
    while (!aborted()) {
      const q = new URLSearchParams()
      if (options.types !== undefined) q.set('types', options.types.join(','))
      if (options.model !== undefined) q.set('model', options.model)
      try {
        const res = await this.send('GET', `/v1/watch${q.size > 0 ? `?${q.toString()}` : ''}`, undefined, options.signal, last !== undefined ? { 'last-event-id': last } : {})
        if ((res.statusCode ?? 500) >= 400) {
          const err = parseJson(await readAll(res), res.statusCode ?? 0) as { code?: string, message?: string }
          throw new RpcError(err.code ?? 'INTERNAL', err.message ?? `daemon answered ${res.statusCode ?? '?'}`, res.statusCode)
        }
        let buffered = ''
        for await (const part of res) {
          buffered += (part as Buffer).toString('utf8')
          let end
          while ((end = buffered.indexOf('\n\n')) >= 0) {
            const block = buffered.slice(0, end)
            buffered = buffered.slice(end + 2)
            const e = parseSse(block)
            if (e === undefined) continue
            if (e.event === 'ready') { attempt = 0; continue }
            if (e.id !== undefined) last = e.id
            // The daemon sends only its own events (typed in `core/events.ts`) and `gone`.
            yield e as WatchEvent
          }
        }
      } catch (err) {
        if (aborted()) return
        // A daemon at its bound of open streams (BUSY) is retried like one that is not there yet.
        if (err instanceof RpcError && err.code !== 'UNREACHABLE' && err.code !== 'BUSY') throw err
        if (options.reconnect === false) throw err
      }
      if (options.reconnect === false) return
      await new Promise(resolve => setTimeout(resolve, WATCH_RETRY_MS[Math.min(attempt++, WATCH_RETRY_MS.length - 1)]))
    }
  }

  /**
   * A readable stream of the verified bytes `[start, end)` of `path` in the version `ref` names
   * (`name@label`, `name@<version id>`, a version id). A version being pulled is read as it
   * arrives: the stream waits for bytes not here yet (the pull fetches them first), and a version
   * neither here nor being pulled is pulled. The promise rejects with `RpcError` when the read
   * cannot start (`NOT_FOUND`: no such version or file; `RANGE_NOT_SATISFIABLE`: outside the file);
   * the stream fails with `RpcError` (`UNAVAILABLE` naming the bytes that did not arrive) rather
   * than end short, so whatever it gives before ending cleanly is the whole range.
   */
  async openRead (ref: string, path: string, options: ReadOptions = {}): Promise<ReadStream> {
    const range = rangeHeader(options.start ?? 0, options.end)
    const headers: Record<string, string> = { te: 'trailers', ...(range !== undefined ? { range } : {}) }
    // The path as one encoded segment: a `..` in it reaches the daemon (which refuses it as no
    // file of the version) instead of being folded into the URL.
    const res = await this.send('GET', `/v1/versions/${encodeURIComponent(ref)}/files/${encodeURIComponent(path)}`, undefined, options.signal, headers)
    if ((res.statusCode ?? 500) >= 400) {
      const err = parseJson(await readAll(res), res.statusCode ?? 0) as { code?: string, message?: string }
      throw new RpcError(err.code ?? 'INTERNAL', err.message ?? `daemon answered ${res.statusCode ?? '?'}`, res.statusCode)
    }
    const expected = Number(res.headers['x-shoal-length'] ?? res.headers['content-length'])
    const what = `${path} in ${ref}`
    async function * body (): AsyncGenerator<Buffer> {
      let got = 0
      try {
        for await (const part of res) {
          got += (part as Buffer).byteLength
          yield part as Buffer
        }
      } catch (err) {
        if (options.signal?.aborted === true) throw err
        throw new RpcError('UNREACHABLE', `the daemon closed the connection after ${got} of ${expected} bytes of ${what} (${(err as Error).message}); did it stop? Check its log, then retry`)
      }
      const trailer = res.trailers['x-shoal-error']
      if (trailer !== undefined) {
        let failure: { code?: string, message?: string } = {}
        try { failure = JSON.parse(decodeURIComponent(trailer)) as typeof failure } catch { failure = { message: trailer } }
        throw new RpcError(failure.code ?? 'INTERNAL', failure.message ?? `reading ${what} failed`)
      }
      if (Number.isFinite(expected) && got !== expected) throw new RpcError('UNREACHABLE', `the daemon sent ${got} of ${expected} bytes of ${what} and closed the answer; retry`)
    }
    const stream = Readable.from(body(), { objectMode: false })
    // Leaving the stream early (destroy) ends the request, which the daemon sees as the reader going away.
    stream.once('close', () => { if (!res.complete) res.destroy() })
    const whole = /\/(\d+)$/.exec(String(res.headers['content-range'] ?? ''))
    const size = whole !== null ? Number(whole[1]) : expected
    return Object.assign(stream, { model: String(res.headers['x-shoal-model'] ?? ''), version: String(res.headers['x-shoal-version'] ?? ''), size })
  }

  /** Prometheus text from `/metrics`. */
  async metrics (): Promise<string> {
    const res = await this.send('GET', '/metrics')
    return await readAll(res)
  }
  async id (): Promise<IdResult> { return await this.call('GET', '/v1/id') }

  async export (req: ExportRequest, onProgress?: (p: Progress) => void, signal?: AbortSignal): Promise<ExportResult> {
    return await this.stream('/v1/export', req, onProgress, signal)
  }

  /** One request, one JSON answer. */
  async call<T> (method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const res = await this.send(method, path, body, signal)
    const text = await readAll(res)
    const value = parseJson(text, res.statusCode ?? 0)
    if ((res.statusCode ?? 500) >= 400) {
      const err = value as { code?: string, message?: string }
      throw new RpcError(err.code ?? 'INTERNAL', err.message ?? `daemon answered ${res.statusCode ?? '?'}`, res.statusCode)
    }
    return value as T
  }

  /** An NDJSON stream: progress lines, then a result or an error line. */
  async stream<T> (path: string, body: unknown, onProgress?: (p: Progress) => void, signal?: AbortSignal): Promise<T> {
    const res = await this.send('POST', path, body, signal)
    if ((res.statusCode ?? 500) >= 400) {
      const err = parseJson(await readAll(res), res.statusCode ?? 0) as { code?: string, message?: string }
      throw new RpcError(err.code ?? 'INTERNAL', err.message ?? `daemon answered ${res.statusCode ?? '?'}`, res.statusCode)
    }
    let buffered = ''
    try {
      for await (const part of res) {
        buffered += (part as Buffer).toString('utf8')
        let nl
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl)
          buffered = buffered.slice(nl + 1)
          if (line.trim() === '') continue
          const event = parseJson(line, 200) as { type: string, result?: T, code?: string, message?: string }
          if (event.type === 'progress') onProgress?.(event)
          else if (event.type === 'result') return event.result as T
          else if (event.type === 'error') throw new RpcError(event.code ?? 'INTERNAL', event.message ?? 'operation failed')
        }
      }
    } catch (err) {
      if (err instanceof RpcError || signal?.aborted === true) throw err
      // The connection broke mid-stream (ECONNRESET, "aborted"): the daemon stopped or crashed.
      throw new RpcError('UNREACHABLE', `the daemon closed the connection before ${path} finished (${(err as Error).message}); did it stop or crash? Check its log, then retry`)
    }
    throw new RpcError('INTERNAL', 'the daemon closed the stream without a result (did it stop?)')
  }

  private async send (method: string, path: string, body?: unknown, signal?: AbortSignal, extraHeaders: Record<string, string> = {}): Promise<import('node:http').IncomingMessage> {
    const payload = body === undefined ? undefined : JSON.stringify(body)
    const o = this.options
    const where = 'socketPath' in o ? o.socketPath : o.url
    const target = 'socketPath' in o
      ? { socketPath: o.socketPath, path }
      : (() => { const u = new URL(path, o.url); return { host: u.hostname, port: u.port, path: `${u.pathname}${u.search}` } })()
    const headers: Record<string, string | number> = { ...extraHeaders }
    if (payload !== undefined) { headers['content-type'] = 'application/json'; headers['content-length'] = Buffer.byteLength(payload) }
    if (!('socketPath' in o)) headers.authorization = `Bearer ${o.token}`
    return await new Promise((resolve, reject) => {
      const req = request({ ...target, method, headers, ...(signal !== undefined ? { signal } : {}) }, resolve)
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
          reject(new RpcError('UNREACHABLE', `no shoal daemon is listening on ${where}; start one with \`shoal daemon\` (same SHOAL_HOME)`))
        } else if (err.code === 'EACCES') {
          reject(new RpcError('UNREACHABLE', `permission denied on ${where}; join the daemon's group or run as its user`))
        } else if (err.name === 'AbortError') {
          reject(err)
        } else reject(new RpcError('UNREACHABLE', `lost the connection to the daemon at ${where}: ${err.message}`))
      })
      req.end(payload)
    })
  }
}

/** One server-sent event as read, before it is known to be one of the daemon's. */
export interface SseBlock { id?: string, event: string, data: unknown }

/** One server-sent-events block (the text between blank lines) as an event; undefined for a comment-only block. */
export function parseSse (block: string): SseBlock | undefined {
  let id: string | undefined
  let event = 'message'
  const data: string[] = []
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue
    const colon = line.indexOf(':')
    const field = colon < 0 ? line : line.slice(0, colon)
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '')
    if (field === 'id') id = value
    else if (field === 'event') event = value
    else if (field === 'data') data.push(value)
  }
  if (data.length === 0) return undefined
  return { ...(id !== undefined ? { id } : {}), event, data: JSON.parse(data.join('\n')) as unknown }
}

async function readAll (res: AsyncIterable<unknown>): Promise<string> {
  const parts: Buffer[] = []
  for await (const part of res) parts.push(part as Buffer)
  return Buffer.concat(parts).toString('utf8')
}

function parseJson (text: string, status: number): unknown {
  try {
    return JSON.parse(text)
  } catch {
    throw new RpcError('INTERNAL', `daemon answered ${status} with a body that is not JSON`)
  }
}
