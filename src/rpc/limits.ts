/**
 * The bounds of the local RPC server, in one place: how long a client may take to send a request,
 * how many connections and requests it serves at once, and how many long-running streams of each
 * kind. Every local client is trusted to operate the node, not to exhaust it: past a bound a
 * client gets a `{ code, message }` answer (408, 431, 503 `BUSY`) or, past the hard connection
 * bound, is dropped at accept; the daemon and every other client go on.
 *
 * The time bounds apply to receiving a request only. Once a request is read, a streaming answer
 * (`/v1/add`, `/v1/pull`, `/v1/watch`, …) runs as long as its operation does; what bounds it then
 * is the client taking the bytes (`stallMs`, `streamBacklogBytes`).
 *
 * `rpcLimits` applies the defaults; `config.json` `rpc.maxConnections`, `rpc.maxWatchers` and
 * `rpc.maxReads` override the three an operator may need to raise (a node with many serving processes).
 */

/** @default 10 s — from the first byte of a request (or the connection) to the end of its headers */
export const HEADERS_TIMEOUT_MS = 10_000
/** @default 30 s — from the first byte of a request to the end of its body (at most `MAX_BODY_BYTES`) */
export const REQUEST_TIMEOUT_MS = 30_000
/** @default 5 s — an idle keep-alive connection is closed after this */
export const KEEP_ALIVE_TIMEOUT_MS = 5_000
/**
 * @default 60 s — a connection on which nothing moves for this long is closed when an answer is
 * waiting for the client to read it (a client that never reads); a quiet stream whose client has
 * read everything stays open
 */
export const STALL_TIMEOUT_MS = 60_000
/** @default 1 s — how often the header and request deadlines are checked (Node's default is 30 s) */
export const TIMEOUT_CHECK_INTERVAL_MS = 1_000
/** @default 16 KiB — request line and headers together */
export const MAX_HEADER_BYTES = 16 * 1024
/** @default 64 — header lines per request */
export const MAX_HEADER_COUNT = 64
/**
 * @default 1024 — connections served at once per listener (socket, TCP); a request on a connection
 * past it is answered 503 `BUSY` and the connection closed. Every watcher holds one (a node's
 * serving processes each keep a `/v1/watch` open; 500 on one daemon is tested). Past
 * `DROP_FACTOR` times as many, connections are dropped at accept, so a flood cannot exhaust the
 * process's file descriptors (each connection is one: with a low `ulimit -n`, lower this).
 */
export const DEFAULT_MAX_RPC_CONNECTIONS = 1024
/**
 * @default 2 — open connections per listener, as a multiple of `maxConnections`, past which new
 * ones are closed at accept without an answer; below it a burst of clients past `maxConnections`
 * each get a 503 they can read
 */
export const DROP_FACTOR = 2
/** @default 256 — short requests (not streams) being handled at once; past it 503 `BUSY` */
export const MAX_CONCURRENT_REQUESTS = 256
/** @default 1024 — open `/v1/watch` event streams (each holds a subscription to the event bus and a connection) */
export const DEFAULT_MAX_WATCHERS = 1024
/**
 * @default 64 — file reads (`GET /v1/versions/{id}/files/{path}`) open at once. A read of bytes a
 * pull has not brought yet waits for them and holds its connection and a place here meanwhile;
 * past it 503 `BUSY` (the client retries), never a queue.
 */
export const DEFAULT_MAX_READS = 64
/** @default 4 — `add`, `verify`, `export` running at once (each holds disk bandwidth and ~24 MiB of buffers) */
export const MAX_DISK_OPERATIONS = 4
/** @default 8 — `pull` and `resolve` with `ensure` running at once (each holds a pull's in-flight budget) */
export const MAX_TRANSFER_OPERATIONS = 8
/**
 * @default 256 KiB — answer bytes a stream may have waiting for its client. Past it NDJSON
 * progress lines are dropped (the next one says the same, newer) and an event stream is closed
 * (its client reconnects with `Last-Event-ID` and is replayed what it missed).
 */
export const STREAM_BACKLOG_BYTES = 256 * 1024

/** What a long-running route holds while it runs; each kind has its own bound. */
export type StreamKind = 'watch' | 'disk' | 'transfer' | 'read'

export interface RpcLimits {
  headersTimeoutMs: number
  requestTimeoutMs: number
  keepAliveTimeoutMs: number
  stallTimeoutMs: number
  checkIntervalMs: number
  maxHeaderBytes: number
  maxHeaderCount: number
  maxConnections: number
  maxRequests: number
  streams: Record<StreamKind, number>
  streamBacklogBytes: number
}

export type RpcLimitsInit = Partial<Omit<RpcLimits, 'streams'>> & { streams?: Partial<Record<StreamKind, number>> }

/** The limits with every unset one at its default. */
export function rpcLimits (init: RpcLimitsInit = {}): RpcLimits {
  const limits: RpcLimits = {
    headersTimeoutMs: init.headersTimeoutMs ?? HEADERS_TIMEOUT_MS,
    requestTimeoutMs: init.requestTimeoutMs ?? REQUEST_TIMEOUT_MS,
    keepAliveTimeoutMs: init.keepAliveTimeoutMs ?? KEEP_ALIVE_TIMEOUT_MS,
    stallTimeoutMs: init.stallTimeoutMs ?? STALL_TIMEOUT_MS,
    checkIntervalMs: init.checkIntervalMs ?? TIMEOUT_CHECK_INTERVAL_MS,
    maxHeaderBytes: init.maxHeaderBytes ?? MAX_HEADER_BYTES,
    maxHeaderCount: init.maxHeaderCount ?? MAX_HEADER_COUNT,
    maxConnections: init.maxConnections ?? DEFAULT_MAX_RPC_CONNECTIONS,
    maxRequests: init.maxRequests ?? MAX_CONCURRENT_REQUESTS,
    streams: {
      watch: init.streams?.watch ?? DEFAULT_MAX_WATCHERS,
      disk: init.streams?.disk ?? MAX_DISK_OPERATIONS,
      transfer: init.streams?.transfer ?? MAX_TRANSFER_OPERATIONS,
      read: init.streams?.read ?? DEFAULT_MAX_READS
    },
    streamBacklogBytes: init.streamBacklogBytes ?? STREAM_BACKLOG_BYTES
  }
  // Node refuses a headers timeout longer than the request timeout.
  if (limits.headersTimeoutMs > limits.requestTimeoutMs) limits.headersTimeoutMs = limits.requestTimeoutMs
  return limits
}
