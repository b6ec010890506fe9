/**
 * The operations the daemon offers over RPC, as one interface the daemon implements and the typed
 * client mirrors, and the route table that binds each to an HTTP endpoint.
 *
 * | endpoint                 | body / query                 | answer                     |
 * |--------------------------|------------------------------|----------------------------|
 * | GET  /v1/version         |                              | {@link VersionResult}      |
 * | GET  /v1/status          |                              | {@link StatusResult}       |
 * | POST /v1/add             | `addRequest`                 | NDJSON → {@link ShowResult}|
 * | GET  /v1/models          |                              | {@link ModelRow}[]         |
 * | GET  /v1/versions        | `?name=`                     | `VersionInfo[]`            |
 * | GET  /v1/show            | `?ref=`                      | {@link ShowResult}         |
 * | POST /v1/verify          | `{}`                         | NDJSON → `VerifyReport`    |
 * | POST /v1/gc              | `gcRequest`                  | `GcReport`                 |
 * | POST /v1/compress        | `refRequest`                 | `ColdReport`               |
 * | DELETE /v1/versions      | `removeRequest`              | {@link RemoveResult}       |
 * | GET  /v1/df              |                              | {@link DfResult}           |
 * | POST /v1/export          | `exportRequest`              | NDJSON → {@link ExportResult} |
 * | POST /v1/labels          | `labelRequest`               | {@link LabelResult}        |
 * | DELETE /v1/labels        | `labelRemoveRequest`         | `{}`                       |
 * | POST /v1/pins            | `refRequest`                 | {@link PinResult}          |
 * | DELETE /v1/pins          | `refRequest`                 | {@link PinResult}          |
 * | POST /v1/pull            | `pullRequest`                | NDJSON → {@link ShowResult}|
 * | DELETE /v1/pull          | `pullCancelRequest`          | {@link PullCancelResult}   |
 * | GET  /v1/peers           |                              | {@link PeerRow}[]          |
 * | GET  /v1/id              |                              | {@link IdResult}           |
 * | GET  /v1/heads           |                              | {@link HeadRow}[]          |
 * | GET  /v1/heads/history   | `?ref=name@label`            | {@link HeadHistoryRow}[]   |
 * | POST /v1/rollback        | `rollbackRequest`            | {@link LabelResult}        |
 * | POST /v1/activate        | `refRequest`                 | {@link ActivateResult}     |
 * | GET  /v1/resolve         | `?ref=`                      | {@link ResolveResult}      |
 * | GET  /v1/keys            |                              | {@link KeyRow}[]           |
 * | POST /v1/keys            | `keyRequest`                 | {@link KeyRow}             |
 * | GET  /v1/keys/export     | `?name=&private=true`        | `{name, publicKey, privateKey?}` |
 * | GET  /v1/trust           |                              | {@link TrustRow}[]         |
 * | POST /v1/trust           | `trustRequest`               | {@link TrustRow}           |
 * | DELETE /v1/trust         | `trustRemoveRequest`         | `{removed}`                |
 * | GET  /v1/events          | `?since=<event id>&limit=`   | {@link EventsResult}       |
 * | POST /v1/resolve         | `resolveRequest` (`ensure`)  | NDJSON → {@link ResolveResult} |
 * | GET  /v1/leases          |                              | {@link LeaseRow}[]         |
 * | POST /v1/leases          | `leaseRequest`               | {@link LeaseRow}           |
 * | POST /v1/leases/renew    | `leaseRenewRequest`          | {@link LeaseRow}           |
 * | DELETE /v1/leases        | `leaseReleaseRequest`        | `{released}`               |
 * | GET  /v1/watch           | `?types=a,b&model=&since=`, `Last-Event-ID` | server-sent events |
 * | GET  /metrics            |                              | Prometheus text            |
 * | GET  /v1/search          | `?q=&limit=&similar=name@v`  | {@link SearchResult}       |
 * | GET  /v1/versions/{id}/files/{path} | `Range` header        | the file's bytes (200, 206; 416 outside the file) |
 * | GET  /v1/openapi.json    |                              | this table as OpenAPI 3.1 (`openapi.ts`) |
 *
 * `POST /v1/labels` publishes a signed head (see `core/heads.ts`) and `DELETE /v1/labels` a removal.
 */
import { InvalidInputError } from '../core/errors.js'
import type { FileStructureRecord, ModelSummary } from '../core/manifest.js'
import type { Metadata } from '../core/metadata.js'
import type { ColdReport } from '../store/cold.js'
import type { GcReport } from '../store/gc.js'
import type { SearchResult } from '../store/search-index.js'
import type { VersionInfo } from '../store/store.js'
import type { VerifyReport } from '../store/verify.js'
import type { DiskUsage } from '../store/usage.js'
import { route, type ByteAnswer, type Route, type SseEvent } from './server.js'
import { openApiDocument } from './openapi.js'
import { SHOAL_VERSION } from '../version.js'
import { addRequest, removeRequest, exportRequest, gcRequest, keyRequest, labelRemoveRequest, labelRequest, pullCancelRequest, pullRequest, refRequest, rollbackRequest, trustRemoveRequest, trustRequest, verifyRequest, resolveRequest, leaseRequest, leaseRenewRequest, leaseReleaseRequest, type AddRequest, type ExportRequest, type GcRequest, type LabelRequest, type PullRequest, type RemoveRequest } from './schemas.js'
import type { Activation, Stamp } from '../core/heads.js'
import { isEventType, EVENT_TYPES, type DaemonEvent, type EventType } from '../core/events.js'

export interface VersionResult { version: string, api: string, node: string }

export interface StatusResult {
  version: string
  pid: number
  home: string
  socket: string
  uptimeSeconds: number
  store: { models: number, versions: number, blobs: number, bytes: number }
  /**
   * Heads offered to this node since start, by outcome; the signatures that cost; and what peers
   * sent past their budgets (dropped unchecked, see `heads/guard.ts`).
   */
  heads: {
    accepted: number, duplicate: number, stale: number, future: number, rejected: { malformed: number, signature: number, untrusted: number }
    signatureChecks: number, dropped: number, syncsRefused: number
  }
  /** Publishers (with a model) whose heads were refused as untrusted under the current rules, most recent last. */
  untrusted: Array<{ publisher: string, model: string }>
  /** Where `GET /metrics` is also served without a token (`metrics.listen`), when set. */
  metrics?: string
  /** Who holds which version (serving processes). */
  leases: Array<{ holder: string, model: string, version: string, expiresAt: number }>
  /** `checking`: its manifest is being fetched and checked; `fetching`: chunks are coming. */
  pulls: Array<{ name: string, version: string, bytes: number, totalBytes: number, state: 'checking' | 'fetching' }>
}

/** A removed version (`shoal rm`): what kept it that `force` overrode, and the bytes freed. */
export interface RemoveResult {
  name: string
  version: string
  /** What kept it (labelled prod, pinned, leased by …); empty when nothing did. */
  overrode: string[]
  /** Local labels that pointed at it and were removed with it. */
  labels: string[]
  /** Bytes of blobs only it used, now freed. */
  bytes: number
}

/** `shoal df`: usage by version and model, the store's blobs, and what gc would free now. */
export interface DfResult extends DiskUsage {
  /** Bytes `shoal gc` would free now. */
  reclaimable: number
}

/** A cancelled pull: whether it was running (else only recorded), and the partial data removed. */
export interface PullCancelResult { name: string, version: string, running: boolean, files: number, bytes: number }

export interface ShowFile {
  path: string
  size: number
  digest: string
  format: string
  chunks: number
  structure?: FileStructureRecord
}

export interface ShowResult {
  name: string
  version: string
  /** The manifest's schema: 2 (block trees), or 1 for versions made before them. */
  schema: number
  /** Bytes per block: the manifest's `blockSize`, or the whole chunk (4 MiB) for schema 1. */
  blockSize: number
  created: number
  parent: string | null
  path: string
  labels: string[]
  pinned: boolean
  complete: boolean
  missing: string[]
  /** Kept compressed (cold) since `at`, saving `savedBytes`: `path` exists once something re-materializes it. */
  cold?: { at: number, savedBytes: number }
  metadata: Metadata
  structure: ModelSummary
  files: ShowFile[]
  /** Fractions (0–1) of this version's chunks, and of its bytes, that its parent also has. */
  parentShared?: { chunks: number, bytes: number }
  /** `add` only: the folder was the same content as this version, already here (no new version). */
  existing?: boolean
}

export interface ModelRow { name: string, versions: number, labels: Record<string, string>, newest: VersionInfo }
export interface ExportResult { name: string, version: string, dest: string, files: number, bytes: number }
export interface LabelResult {
  name: string
  label: string
  /** null when the label was removed */
  version: string | null
  previous: string | null
  /** The published head's stamp (`wall.counter`), publisher key and activation. */
  stamp?: string
  publisher?: string
  activation?: Activation
}

export interface HeadRow {
  model: string
  label: string
  version: string | null
  previous: string | null
  stamp: Stamp
  publisher: string
  activation: Activation
  /** What `refs/<label>` points at on this node. */
  local: string | null
  /** active: local = head; pulling; staged (cold, complete, waiting); waiting (hot jitter); failed; remote (not followed, not here) */
  state: 'active' | 'pulling' | 'staged' | 'waiting' | 'failed' | 'remote'
  followed: boolean
  receivedAt?: number
  activateAt?: number
  error?: string
  /** Bytes of the version, when its manifest is known here. */
  size?: number
}

export interface HeadHistoryRow { version: string | null, previous: string | null, stamp: Stamp, publisher: string, activation: Activation }
export interface ActivateResult { name: string, label: string, version: string | null, previous: string | null }
export interface ResolveResult {
  model: string
  version: string
  path: string
  labels: string[]
  files: Array<{ path: string, size: number, digest: string }>
  /** The newest event id before the version was read: `watch({ since: cursor })` misses no later label move. */
  cursor: string
}
export interface KeyRow { name: string, publicKey: string, trusted: string[] }
export interface TrustRow { key: string, models: string, source: 'home-key' | 'config' | 'trust-file' }
export interface EventsResult { events: DaemonEvent[], gone: boolean }
export interface LeaseRow { id: string, holder: string, model: string, version: string, path: string, createdAt: number, expiresAt: number }
export interface KeyExport { name: string, publicKey: string, privateKey?: string }
export interface PinResult { name: string, version: string, pinned: boolean, /** set when a label was (un)pinned */ label?: string }
export type Progress = Record<string, unknown>

export interface IdResult { peerId: string, addresses: string[] }

export interface PeerRow {
  peerId: string
  addresses: string[]
  connected: boolean
  /** Bytes of verified blocks received from the peer. */
  bytesReceived: number
  /** What those blocks took on the link: fewer than `bytesReceived` when they came encoded (compressed). */
  wireBytesReceived: number
  /** Bytes of blocks sent to the peer. */
  bytesSent: number
  /** What those blocks took on the link. */
  wireBytesSent: number
  offences: Record<string, number>
  bannedUntil?: number
  lastOffence?: string
  /** Why the peer is not used, when that is no offence (it runs an older shoal). */
  note?: string
}

export interface ShoalApi {
  version: () => Promise<VersionResult>
  status: () => Promise<StatusResult>
  add: (req: AddRequest, onProgress?: (p: Progress) => void, signal?: AbortSignal) => Promise<ShowResult>
  models: () => Promise<ModelRow[]>
  versions: (name: string) => Promise<VersionInfo[]>
  show: (ref: string) => Promise<ShowResult>
  verify: (onProgress?: (p: Progress) => void, signal?: AbortSignal) => Promise<VerifyReport>
  gc: (req: GcRequest) => Promise<GcReport>
  compress: (ref: string) => Promise<ColdReport>
  removeVersion: (req: RemoveRequest) => Promise<RemoveResult>
  df: (signal?: AbortSignal) => Promise<DfResult>
  export: (req: ExportRequest, onProgress?: (p: Progress) => void, signal?: AbortSignal) => Promise<ExportResult>
  setLabel: (req: LabelRequest) => Promise<LabelResult>
  removeLabel: (name: string, label: string) => Promise<LabelResult>
  rollback: (ref: string, key?: string) => Promise<LabelResult>
  activate: (ref: string) => Promise<ActivateResult>
  heads: () => Promise<HeadRow[]>
  labelHistory: (ref: string) => Promise<HeadHistoryRow[]>
  resolve: (ref: string) => Promise<ResolveResult>
  keys: () => Promise<KeyRow[]>
  newKey: (name: string) => Promise<KeyRow>
  exportKey: (name: string, includePrivate: boolean) => Promise<KeyExport>
  trust: () => Promise<TrustRow[]>
  addTrust: (key: string, models: string) => Promise<TrustRow>
  removeTrust: (key: string, models?: string) => Promise<{ removed: number }>
  events: (since?: string, limit?: number) => Promise<EventsResult>
  resolveEnsure: (ref: string, onProgress?: (p: Progress) => void, signal?: AbortSignal) => Promise<ResolveResult>
  leases: () => Promise<LeaseRow[]>
  lease: (ref: string, holder: string, ttlSeconds?: number) => Promise<LeaseRow>
  renewLease: (id: string, ttlSeconds?: number) => Promise<LeaseRow>
  releaseLease: (id: string) => Promise<{ released: boolean }>
  search: (query: string, options?: { limit?: number, similar?: string }) => Promise<SearchResult>
  pin: (ref: string) => Promise<PinResult>
  unpin: (ref: string) => Promise<PinResult>
  pull: (req: PullRequest, onProgress?: (p: Progress) => void, signal?: AbortSignal) => Promise<ShowResult>
  cancelPull: (ref: string, signal?: AbortSignal) => Promise<PullCancelResult>
  peers: () => Promise<PeerRow[]>
  id: () => Promise<IdResult>
}

/**
 * A file read: `id` a version id or a ref (`name@label`, `name@<version id>`), `path` the file's
 * path in the version's manifest, `range` the HTTP `Range` header.
 */
export interface FileReadRequest { id: string, path: string, range?: string | string[], signal: AbortSignal }

/** What the server side adds to the API: the event stream, metrics and file reads (not mirrored by the client as plain calls). */
export interface ServerExtras {
  watch: (options: { since?: string, types?: EventType[], model?: string, send: (e: SseEvent) => void, signal: AbortSignal }) => Promise<void>
  metrics: () => Promise<{ contentType: string, body: string }>
  read: (req: FileReadRequest) => Promise<ByteAnswer>
}

/** Binds the API to endpoints. */
export function routes (api: ShoalApi, extras?: ServerExtras): Route[] {
  let described: Record<string, unknown> | undefined
  const list: Route[] = [
    route({ method: 'GET', path: '/v1/openapi.json', handler: async () => (described ??= openApiDocument(list, SHOAL_VERSION)) }),
    ...(extras !== undefined
      ? [
          route({ method: 'GET', path: '/v1/watch', sse: true, check: ctx => { watchOptions(ctx.query, ctx.headers['last-event-id']) }, handler: async (_b, ctx) => { await extras.watch({ ...watchOptions(ctx.query, ctx.headers['last-event-id']), send: ctx.event, signal: ctx.signal }) } }),
          route({ method: 'GET', path: '/metrics', raw: true, handler: async () => await extras.metrics() }),
          route({ method: 'GET', path: '/v1/versions/{id}/files/{path}', bytes: true, handler: async (_b, ctx) => await extras.read({ id: ctx.params.id ?? '', path: ctx.params.path ?? '', ...(ctx.headers.range !== undefined ? { range: ctx.headers.range } : {}), signal: ctx.signal }) })
        ]
      : []),
    route({ method: 'POST', path: '/v1/resolve', body: resolveRequest, stream: true, holds: 'transfer', handler: async (body, ctx) => body.ensure === true ? await api.resolveEnsure(body.ref, ctx.progress, ctx.signal) : await api.resolve(body.ref) }),
    route({ method: 'GET', path: '/v1/leases', handler: async () => await api.leases() }),
    route({
      method: 'GET', path: '/v1/search',
      handler: async (_b, ctx) => {
        const q = ctx.query.get('q') ?? ''
        if (q.length > 4096) throw new InvalidInputError('a query is at most 4096 characters')
        const similar = ctx.query.get('similar') ?? undefined
        return await api.search(q, { ...(ctx.query.has('limit') ? { limit: limitOf(ctx.query) } : {}), ...(similar !== undefined ? { similar } : {}) })
      }
    }),
    route({ method: 'POST', path: '/v1/leases', body: leaseRequest, handler: async body => await api.lease(body.ref, body.holder, body.ttlSeconds) }),
    route({ method: 'POST', path: '/v1/leases/renew', body: leaseRenewRequest, handler: async body => await api.renewLease(body.id, body.ttlSeconds) }),
    route({ method: 'DELETE', path: '/v1/leases', body: leaseReleaseRequest, handler: async body => await api.releaseLease(body.id) }),
    route({ method: 'GET', path: '/v1/version', handler: async () => await api.version() }),
    route({ method: 'GET', path: '/v1/status', handler: async () => await api.status() }),
    route({ method: 'POST', path: '/v1/add', body: addRequest, stream: true, holds: 'disk', handler: async (body, ctx) => await api.add(body, ctx.progress, ctx.signal) }),
    route({ method: 'GET', path: '/v1/models', handler: async () => await api.models() }),
    route({ method: 'GET', path: '/v1/versions', handler: async (_b, ctx) => await api.versions(required(ctx.query, 'name')) }),
    route({ method: 'GET', path: '/v1/show', handler: async (_b, ctx) => await api.show(required(ctx.query, 'ref')) }),
    route({ method: 'POST', path: '/v1/verify', body: verifyRequest, stream: true, holds: 'disk', handler: async (_b, ctx) => await api.verify(ctx.progress, ctx.signal) }),
    route({ method: 'POST', path: '/v1/gc', body: gcRequest, handler: async body => await api.gc(body) }),
    route({ method: 'POST', path: '/v1/compress', body: refRequest, handler: async body => await api.compress(body.ref) }),
    route({ method: 'DELETE', path: '/v1/versions', body: removeRequest, handler: async body => await api.removeVersion(body) }),
    route({ method: 'GET', path: '/v1/df', handler: async (_b, ctx) => await api.df(ctx.signal) }),
    route({ method: 'POST', path: '/v1/export', body: exportRequest, stream: true, holds: 'disk', handler: async (body, ctx) => await api.export(body, ctx.progress, ctx.signal) }),
    route({ method: 'POST', path: '/v1/labels', body: labelRequest, handler: async body => await api.setLabel(body) }),
    route({ method: 'DELETE', path: '/v1/labels', body: labelRemoveRequest, handler: async body => await api.removeLabel(body.name, body.label) }),
    route({ method: 'POST', path: '/v1/rollback', body: rollbackRequest, handler: async body => await api.rollback(body.ref, body.key) }),
    route({ method: 'POST', path: '/v1/activate', body: refRequest, handler: async body => await api.activate(body.ref) }),
    route({ method: 'GET', path: '/v1/heads', handler: async () => await api.heads() }),
    route({ method: 'GET', path: '/v1/heads/history', handler: async (_b, ctx) => await api.labelHistory(required(ctx.query, 'ref')) }),
    route({ method: 'GET', path: '/v1/resolve', handler: async (_b, ctx) => await api.resolve(required(ctx.query, 'ref')) }),
    route({ method: 'GET', path: '/v1/keys', handler: async () => await api.keys() }),
    route({ method: 'POST', path: '/v1/keys', body: keyRequest, handler: async body => await api.newKey(body.name) }),
    route({ method: 'GET', path: '/v1/keys/export', handler: async (_b, ctx) => await api.exportKey(required(ctx.query, 'name'), ctx.query.get('private') === 'true') }),
    route({ method: 'GET', path: '/v1/trust', handler: async () => await api.trust() }),
    route({ method: 'POST', path: '/v1/trust', body: trustRequest, handler: async body => await api.addTrust(body.key, body.models) }),
    route({ method: 'DELETE', path: '/v1/trust', body: trustRemoveRequest, handler: async body => await api.removeTrust(body.key, body.models) }),
    route({ method: 'GET', path: '/v1/events', handler: async (_b, ctx) => await api.events(watchOptions(ctx.query, undefined).since, limitOf(ctx.query)) }),
    route({ method: 'POST', path: '/v1/pins', body: refRequest, handler: async body => await api.pin(body.ref) }),
    route({ method: 'DELETE', path: '/v1/pins', body: refRequest, handler: async body => await api.unpin(body.ref) }),
    route({ method: 'POST', path: '/v1/pull', body: pullRequest, stream: true, holds: 'transfer', handler: async (body, ctx) => await api.pull(body, ctx.progress, ctx.signal) }),
    route({ method: 'DELETE', path: '/v1/pull', body: pullCancelRequest, handler: async (body, ctx) => await api.cancelPull(body.ref, ctx.signal) }),
    route({ method: 'GET', path: '/v1/peers', handler: async () => await api.peers() }),
    route({ method: 'GET', path: '/v1/id', handler: async () => await api.id() })
  ]
  return list
}

function watchOptions (query: URLSearchParams, lastEventId: string | string[] | undefined): { since?: string, types?: EventType[], model?: string } {
  const since = query.get('since') ?? (typeof lastEventId === 'string' ? lastEventId : undefined)
  const typesText = query.get('types')
  let types: EventType[] | undefined
  if (typesText !== null) {
    const names = typesText.split(',').filter(t => t !== '')
    const unknown = names.find(t => !isEventType(t))
    if (unknown !== undefined) throw new InvalidInputError(`unknown event type "${unknown.slice(0, 40)}"; use ${EVENT_TYPES.join(', ')}`)
    types = names.filter(isEventType)
  }
  const model = query.get('model') ?? undefined
  if (since !== undefined && (since.length > 64 || !/^[0-9a-f]+-\d+$/.test(since))) throw new InvalidInputError('since / Last-Event-ID must be an event id such as 3f2a9c1e-42')
  return { ...(since !== undefined ? { since } : {}), ...(types !== undefined ? { types } : {}), ...(model !== undefined ? { model } : {}) }
}

function limitOf (query: URLSearchParams): number {
  const text = query.get('limit')
  if (text === null) return 1000
  const n = Number(text)
  if (!Number.isInteger(n) || n < 1 || n > 10_000) throw new InvalidInputError('limit must be an integer from 1 to 10000')
  return n
}

function required (query: URLSearchParams, key: string): string {
  const value = query.get(key)
  if (value === null || value === '' || value.length > 512) throw new InvalidInputError(`query parameter "${key}" is required`)
  return value
}
