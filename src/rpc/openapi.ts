/**
 * The RPC described as an OpenAPI 3.1 document, generated from the route table (`routes` in
 * `api.ts`): request bodies are the zod schemas the server validates with (`z.toJSONSchema`,
 * input side), so the description cannot drift from what is enforced. Served at
 * `GET /v1/openapi.json` and committed as `docs/openapi.json` (`npm run openapi` rewrites it; a
 * unit test fails when it is stale).
 *
 * MUST hold: every route has an entry in `ROUTE_DOCS` (`openApiDocument` throws otherwise, and so
 * does the test that builds it), and every query parameter and request header a handler reads is
 * listed there. Every request the e2e tests send is checked against the document (the harness's
 * recording proxy, `test/helpers/openapi-check.ts`).
 * Not a goal: response schemas (the answers are TypeScript interfaces in `api.ts`; each response
 * names its type).
 */
import { z } from 'zod'
import type { Route } from './server.js'
import { MAX_RANGE_HEADER_LENGTH } from './range.js'
import { API_VERSION } from './schemas.js'
import { EVENT_TYPES } from '../core/events.js'

interface QueryParam { name: string, description: string, required?: boolean, schema: Record<string, unknown> }
interface RouteDoc {
  summary: string
  /** The TypeScript type of the answer (`api.ts`), named in the description. */
  answer: string
  query?: QueryParam[]
  /** Parameters in the path (`{name}`). */
  path?: QueryParam[]
  /** Request headers the route reads (`Range`, `Last-Event-ID`). */
  headers?: QueryParam[]
}

const str = (max = 512): Record<string, unknown> => ({ type: 'string', minLength: 1, maxLength: max })
const ref: QueryParam = { name: 'ref', description: 'name, name@label, name@<version id> or name@<unique prefix>', required: true, schema: str() }
const limit: QueryParam = { name: 'limit', description: 'at most this many (1 to 10000)', schema: { type: 'integer', minimum: 1, maximum: 10_000 } }
const since: QueryParam = { name: 'since', description: 'an event id (`<boot>-<seq>`): only what came after it', schema: { type: 'string', maxLength: 64, pattern: '^[0-9a-f]+-\\d+$' } }

/** What each route is for; keyed `METHOD path`. */
export const ROUTE_DOCS: Record<string, RouteDoc> = {
  'GET /v1/version': { summary: 'Daemon version, API version and Node.js version', answer: 'VersionResult' },
  'GET /v1/status': { summary: 'Daemon and store status: counts, heads, leases, pulls', answer: 'StatusResult' },
  'POST /v1/add': { summary: 'Add a model folder or file as a new version (NDJSON progress, then the result)', answer: 'ShowResult' },
  'GET /v1/models': { summary: 'Models with their newest version and labels', answer: 'ModelRow[]' },
  'GET /v1/versions': { summary: 'Versions of one model, oldest first', answer: 'VersionInfo[]', query: [{ name: 'name', description: 'model name', required: true, schema: str() }] },
  'GET /v1/show': { summary: 'A version: metadata, files and tensor structure', answer: 'ShowResult', query: [ref] },
  'POST /v1/verify': { summary: 'Re-hash everything stored; quarantine what does not match (NDJSON)', answer: 'VerifyReport' },
  'POST /v1/gc': { summary: 'Remove what nothing keeps (dryRun: only report)', answer: 'GcReport' },
  'DELETE /v1/versions': { summary: 'Remove one version (refused when labelled, pinned or leased unless force, saying why)', answer: 'RemoveResult' },
  'GET /v1/df': { summary: 'Disk usage by model and version: size, shared, unique; what gc would free', answer: 'DfResult' },
  'POST /v1/compress': { summary: 'Keep a version compressed until something needs its files (refused for one a label, lease, pull or the rollback window holds)', answer: 'ColdReport' },
  'POST /v1/export': { summary: "Write a version's files into a folder (NDJSON)", answer: 'ExportResult' },
  'POST /v1/labels': { summary: 'Publish a signed head moving name@label', answer: 'LabelResult' },
  'DELETE /v1/labels': { summary: 'Publish a removal of name@label', answer: 'LabelResult' },
  'POST /v1/rollback': { summary: 'Publish a head moving name@label back to its previous version', answer: 'LabelResult' },
  'POST /v1/activate': { summary: 'Switch a staged (cold) label now, on this node', answer: 'ActivateResult' },
  'GET /v1/heads': { summary: 'Heads this node holds, with local label and state', answer: 'HeadRow[]' },
  'GET /v1/heads/history': { summary: 'Heads that moved name@label, oldest first', answer: 'HeadHistoryRow[]', query: [{ ...ref, description: 'name@label' }] },
  'GET /v1/resolve': { summary: 'The complete local version of a ref, and a cursor to watch from', answer: 'ResolveResult', query: [ref] },
  'POST /v1/resolve': { summary: 'Resolve; with ensure, pull first if needed (NDJSON)', answer: 'ResolveResult' },
  'GET /v1/keys': { summary: "This home's publisher keys", answer: 'KeyRow[]' },
  'POST /v1/keys': { summary: 'Create a publisher key', answer: 'KeyRow' },
  'GET /v1/keys/export': { summary: 'A public key, or with private=true the private key (PEM)', answer: 'KeyExport', query: [{ name: 'name', description: 'key name', required: true, schema: str(64) }, { name: 'private', description: 'include the private key', schema: { type: 'string', enum: ['true', 'false'] } }] },
  'GET /v1/trust': { summary: 'Trust rules and where each comes from', answer: 'TrustRow[]' },
  'POST /v1/trust': { summary: 'Trust a key for models matching a pattern', answer: 'TrustRow' },
  'DELETE /v1/trust': { summary: 'Remove trust.json rules of a key', answer: '{ removed: number }' },
  'GET /v1/events': { summary: 'Recent events, or those after since', answer: 'EventsResult', query: [since, { ...limit, description: 'at most this many (1 to 10000; default 1000)' }] },
  'POST /v1/pins': { summary: 'Pin a version, or every version a label points at', answer: 'PinResult' },
  'DELETE /v1/pins': { summary: 'Unpin', answer: 'PinResult' },
  'POST /v1/pull': { summary: 'Pull name@<version id> from peers and origins (NDJSON progress); goes on if the client leaves', answer: 'ShowResult' },
  'DELETE /v1/pull': { summary: 'Stop a pull and remove its record and partial data', answer: 'PullCancelResult' },
  'GET /v1/peers': { summary: 'Connected and remembered peers', answer: 'PeerRow[]' },
  'GET /v1/id': { summary: "This node's peer id and listen addresses", answer: 'IdResult' },
  'GET /v1/leases': { summary: 'Leases held by serving processes', answer: 'LeaseRow[]' },
  'POST /v1/leases': { summary: 'Lease a version (GC keeps it until released or expired)', answer: 'LeaseRow' },
  'POST /v1/leases/renew': { summary: 'Renew a lease', answer: 'LeaseRow' },
  'DELETE /v1/leases': { summary: 'Release a lease', answer: '{ released: boolean }' },
  'GET /v1/search': {
    summary: 'Search every version this node knows',
    answer: 'SearchResult',
    query: [{ name: 'q', description: 'free text and filters, e.g. framework = "onnx" AND params > 1e9', schema: { type: 'string', maxLength: 4096 } }, limit, { name: 'similar', description: 'name@version: rank by compatible structure', schema: str() }]
  },
  'GET /v1/watch': {
    summary: 'Server-sent events: ready, then events as they happen (Last-Event-ID or since replays)',
    answer: 'text/event-stream of WatchEvent',
    query: [{ name: 'types', description: `comma-separated: ${EVENT_TYPES.join(',')}`, schema: { type: 'string' } }, { name: 'model', description: 'only events of this model', schema: str() }, since],
    headers: [{ ...since, name: 'Last-Event-ID', description: 'the id of the last event seen (`<boot>-<seq>`): replay what came after it, as since does' }]
  },
  'GET /metrics': { summary: 'Prometheus metrics', answer: 'Prometheus text' },
  'GET /v1/versions/{id}/files/{path}': {
    summary: "A file's bytes, verified, with HTTP Range (one range: bytes=a-b, a-, -n; 206, or 416 outside the file). A version being pulled is served as it arrives (reads wait for their bytes, which the pull fetches first); one neither here nor being pulled is pulled. A failure after the first bytes cuts the connection, or with TE: trailers ends the body with an X-Shoal-Error trailer",
    answer: 'application/octet-stream',
    path: [
      { name: 'id', description: 'a version id, or a ref percent-encoded (org%2Fmodel%40prod)', required: true, schema: str(1024) },
      { name: 'path', description: "the file's path in the version, as its manifest lists it (shoal show)", required: true, schema: str(4096) }
    ],
    headers: [
      { name: 'Range', description: 'one byte range: bytes=first-last, bytes=first- or bytes=-suffix (several ranges are refused)', schema: { type: 'string', maxLength: MAX_RANGE_HEADER_LENGTH, pattern: '^bytes=(\\d{1,16}-\\d{0,16}|-\\d{1,16})$' } },
      { name: 'TE', description: 'trailers: a failure after the first bytes ends the body with an X-Shoal-Error trailer instead of a cut connection', schema: { type: 'string', maxLength: 256 } }
    ]
  },
  'GET /v1/openapi.json': { summary: 'This document', answer: 'OpenAPI 3.1 document' }
}

const ERROR = { type: 'object', properties: { code: { type: 'string' }, message: { type: 'string' } }, required: ['code', 'message'] }

/** The OpenAPI 3.1 document for `routes`. */
export function openApiDocument (routes: readonly Route[], version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {}
  for (const r of routes) {
    const key = `${r.method} ${r.path}`
    const doc = ROUTE_DOCS[key]
    if (doc === undefined) throw new Error(`route ${key} has no entry in ROUTE_DOCS (rpc/openapi.ts)`)
    const contentType = r.sse === true ? 'text/event-stream' : r.stream === true ? 'application/x-ndjson' : r.raw === true ? 'text/plain' : r.bytes === true ? 'application/octet-stream' : 'application/json'
    const operation: Record<string, unknown> = {
      operationId: `${r.method.toLowerCase()}${r.path.replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ?? '').toUpperCase())}`,
      summary: doc.summary,
      ...(doc.query !== undefined || doc.path !== undefined || doc.headers !== undefined
        ? {
            parameters: [
              ...(doc.path ?? []).map(q => ({ name: q.name, in: 'path', description: q.description, required: true, schema: q.schema })),
              ...(doc.query ?? []).map(q => ({ name: q.name, in: 'query', description: q.description, required: q.required === true, schema: q.schema })),
              ...(doc.headers ?? []).map(q => ({ name: q.name, in: 'header', description: q.description, required: q.required === true, schema: q.schema }))
            ]
          }
        : {}),
      ...(r.body !== undefined ? { requestBody: { required: true, content: { 'application/json': { schema: bodySchema(r.body) } } } } : {}),
      responses: {
        200: {
          description: r.stream === true ? `NDJSON: {"type":"progress",…} lines, then {"type":"result","result": ${doc.answer}} or {"type":"error","code","message"}` : doc.answer,
          content: { [contentType]: { schema: {} } }
        },
        default: { description: 'Failure: the code says what (INVALID_INPUT, NOT_FOUND, CONFLICT, BUSY, …)', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } }
      }
    }
    paths[r.path] = { ...paths[r.path], [r.method.toLowerCase()]: operation }
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'shoal local RPC',
      version,
      description: `HTTP/1.1 + JSON on the daemon's unix socket ($SHOAL_HOME/shoal.sock), API ${API_VERSION}; optionally on loopback TCP with Authorization: Bearer <home>/rpc.token. ` +
        'Example: curl --unix-socket $SHOAL_HOME/shoal.sock http://shoal/v1/show?ref=llama-8b@prod'
    },
    servers: [{ url: 'http://shoal', description: 'the unix socket (curl --unix-socket $SHOAL_HOME/shoal.sock http://shoal/v1/status)' }],
    paths: Object.fromEntries(Object.entries(paths).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)),
    components: { schemas: { Error: ERROR } }
  }
}

function bodySchema (schema: z.ZodType): Record<string, unknown> {
  const { $schema: _schema, ...rest } = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>
  return rest
}
