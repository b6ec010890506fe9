/**
 * Daemon configuration: `<home>/config.json` (optional), overridden by environment, overridden by
 * flags. Every setting has a named default, applied here and only here.
 *
 * Environment:
 * - `SHOAL_HOME`  the home folder (store, config, socket). @default `$XDG_DATA_HOME/shoal`, else `~/.local/share/shoal`
 * - `SHOAL_HOST`  where the CLI finds the daemon: `unix:///path/to.sock` or `http://127.0.0.1:<port>`
 *                 (the loopback TCP port, `rpc.tcp`; with `SHOAL_TOKEN`). @default `unix://<home>/shoal.sock`
 * - `SHOAL_TOKEN` the bearer token for an http `SHOAL_HOST` (`<home>/rpc.token`)
 * - `SHOAL_LOG_LEVEL`  `trace|debug|info|warn|error|fatal|silent`. @default `info`
 * - `SHOAL_LOG_FORMAT` `json|pretty` (daemon/logger.ts). @default pretty when stderr is a terminal, else json
 */
import { constants } from 'node:fs'
import { open } from 'node:fs/promises'
import { isIP } from 'node:net'
import { join, resolve } from 'node:path'
import { z } from 'zod'
import { InvalidInputError } from '../core/errors.js'
import { DEFAULT_MAX_MANIFEST_CHUNKS, DEFAULT_MAX_VERSION_BYTES } from '../core/manifest.js'
import { checkOriginEntry, MAX_ORIGIN_URL_LENGTH } from '../core/origins.js'
import { DEFAULT_KEEP_LAST } from '../core/retention.js'
import { checkTrustRule, type TrustRule } from '../core/trust.js'
import { DEFAULT_ORIGIN_MAX_FAILURES } from '../fetcher/origin.js'
import { DEFAULT_MAX_READS, DEFAULT_MAX_RPC_CONNECTIONS, DEFAULT_MAX_WATCHERS } from '../rpc/limits.js'
import { CONFIG_FILE, SOCKET_FILE, defaultHome } from '../rpc/target.js'
import { parseSize } from '../core/size.js'

export { parseSize } from '../core/size.js'

/** Where clients find the daemon lives beside the client (`rpc/target.ts`), so a client loads no config schema. */
export { CONFIG_FILE, SOCKET_FILE, clientTarget, defaultHome } from '../rpc/target.js'

/** @default 8 MiB — a larger `config.json` is refused before it is read (10,000 trust rules take ~4 MiB) */
export const MAX_CONFIG_BYTES = 8 * 1024 * 1024
/** @default 'info' */
export const DEFAULT_LOG_LEVEL = 'info'
/** @default 0o660 — owner and group may use the RPC socket */
export const SOCKET_MODE = 0o660

const logLevel = z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'])

/** @default ['/ip4/0.0.0.0/tcp/4077'] */
export const DEFAULT_LISTEN = ['/ip4/0.0.0.0/tcp/4077']
/** @default 300 */
export const DEFAULT_MAX_CONNECTIONS = 300
/** Concurrent uploads served. @default 8 */
export const DEFAULT_UPLOAD_SLOTS = 8
/**
 * Upload slots one peer may hold at once: a peer that stops reading holds every send it starts,
 * so without a share it could take all of them.
 * why: docs/decisions/0022-upload-slots-and-send-stall.md
 * @default 4
 */
export const DEFAULT_UPLOAD_SLOTS_PER_PEER = 4
/** @default 30 s — see `SEND_STALL_MS` (protocol/framing.ts) */
export const DEFAULT_SEND_STALL_SECONDS = 30
/** Failed attempts before a pull is given up and its partial data removed. @default 10 */
export const DEFAULT_MAX_PULL_ATTEMPTS = 10
/** The bulk channel (block payloads on a second TCP connection, `protocol/bulk/`). @default true */
export const DEFAULT_BULK_ENABLED = true
/** AES-256-GCM on bulk connections. @default true */
export const DEFAULT_ENCRYPT = true
/** The default bulk port is the p2p port plus this. @default 1 */
export const BULK_PORT_OFFSET = 1

const multiaddrText = z.string().min(1).max(1024).refine(s => s.startsWith('/'), 'a multiaddr starts with /, e.g. /ip4/10.0.0.2/tcp/4077')
const byteRate = z.number().int().positive().optional()
const followSpec = z.string().min(1).max(300).regex(/^[A-Za-z0-9._\-/*]+(@[a-z0-9._\-*]+)?$/, 'use name@label; * matches anything (e.g. llama-8b@prod, org/*@prod)')

export const configFileSchema = z.strictObject({
  rpc: z.strictObject({
    /** Socket path; relative paths are inside the home. */
    socket: z.string().min(1).max(1024).optional(),
    /** Also serve the RPC on loopback TCP (`127.0.0.1:4080`), bearer token in `<home>/rpc.token`. */
    tcp: z.string().max(64).optional(),
    /** Connections served at once per listener; past it 503 BUSY (`rpc/limits.ts`). @default 1024 */
    maxConnections: z.number().int().positive().max(65_536).optional(),
    /** Open `/v1/watch` event streams at once; past it 503 BUSY. @default 1024 */
    maxWatchers: z.number().int().positive().max(65_536).optional(),
    /** File reads (`GET /v1/versions/{id}/files/{path}`) open at once; past it 503 BUSY. @default 64 */
    maxReads: z.number().int().positive().max(65_536).optional()
  }).optional(),
  log: z.strictObject({ level: logLevel.optional() }).optional(),
  p2p: z.strictObject({
    listen: z.array(multiaddrText).max(16).optional(),
    /** Peers dialled at start and whenever disconnected (bootstrap). */
    peers: z.array(multiaddrText).max(1024).optional(),
    /** Multicast DNS discovery on the LAN. @default false */
    mdns: z.boolean().optional(),
    /** Kademlia DHT under /shoal/kad/1.0.0. @default true */
    dht: z.boolean().optional(),
    /** Only these peer ids may connect (a private swarm without pre-shared keys). */
    allow: z.array(z.string().min(1).max(128)).max(10_000).optional(),
    maxConnections: z.number().int().positive().optional()
  }).optional(),
  transfer: z.strictObject({
    strategy: z.enum(['weighted', 'round-robin', 'random']).optional(),
    pieceOrder: z.enum(['rarest', 'in-order']).optional(),
    uploadSlots: z.number().int().positive().max(1024).optional(),
    /** Upload slots one peer may hold at once. @default 4 */
    uploadSlotsPerPeer: z.number().int().positive().max(1024).optional(),
    /** Abort an upload stream whose peer reads nothing for this long. @default 30 */
    sendStallSeconds: z.number().int().positive().max(3600).optional(),
    /** Bytes per second; unset = unlimited. */
    uploadRate: byteRate,
    downloadRate: byteRate,
    /** How long a misbehaving peer stays banned. @default 600 */
    banSeconds: z.number().int().positive().optional(),
    /** Fail a pull that receives nothing for this long. @default 60 */
    stallSeconds: z.number().int().positive().optional(),
    /**
     * Origins (web seeds) a manifest from another node may make this node fetch from: hosts
     * (`models.example.com`, `10.0.0.5:8080`) or http(s) URL prefixes. Empty: only the origins of
     * versions added here. @default []
     */
    origins: z.array(z.string().max(MAX_ORIGIN_URL_LENGTH)).max(1024).optional(),
    /** Failed requests to one origin in one pull before the pull stops asking it. @default 8 */
    originMaxFailures: z.number().int().positive().max(10_000).optional(),
    /** Chunks a manifest from another node may list. @default 500000 */
    maxManifestChunks: z.number().int().positive().optional(),
    /** Bytes a version from another node may hold: a number or a size such as "2TiB". @default 2 TiB */
    maxVersionBytes: z.union([z.number().int().positive(), z.string().max(32)]).optional(),
    /** Failed attempts before a pull is given up (its partial data removed). @default 10 */
    maxPullAttempts: z.number().int().positive().max(10_000).optional(),
    bulk: z.strictObject({
      /** Send and receive block payloads on a bulk TCP connection beside libp2p. @default true */
      enabled: z.boolean().optional(),
      /**
       * `host:port` the bulk channel listens on (an IP address, IPv6 in brackets; port 0: any
       * free port). @default the host of the first TCP p2p listen address, its port + 1
       */
      listen: z.string().min(1).max(64).optional()
    }).optional(),
    /** Encrypt bulk connections (AES-256-GCM); false only on a network where every host is trusted. @default true */
    encrypt: z.boolean().optional(),
    /**
     * Blocks on the wire, compressed losslessly by the codec of their tensor's dtype: `auto` asks
     * peers for compressed blocks while a peer sends slower than 48 MiB/s (where the bytes saved
     * outweigh the CPU), and sends them compressed to peers that ask; `always` asks at any rate;
     * `off` neither asks nor compresses. @default "auto"
     */
    compress: z.enum(['auto', 'always', 'off']).optional(),
    /** Bytes of compressed blocks kept to send again (a block is compressed once for every peer). @default 32 MiB */
    compressCache: z.union([z.number().int().nonnegative(), z.string().max(32)]).optional()
  }).optional(),
  metrics: z.strictObject({
    /**
     * Also serve `GET /metrics` (only that, no token) on this `host:port` (an IP address, IPv6 in
     * brackets; port 0: any free port), for Prometheus. Unset: metrics only on the RPC.
     */
    listen: z.string().min(1).max(64).optional()
  }).optional(),
  /** `name@label` patterns whose heads this node pulls and activates (`*` matches anything). */
  follow: z.array(followSpec).max(1024).optional(),
  /** Publisher keys allowed to move models: `[{ "key": "z6Mk…", "models": "org/*" }]`. */
  trust: z.array(z.strictObject({ key: z.string().min(1).max(128), models: z.string().min(1).max(256) })).max(10_000).optional(),
  labels: z.strictObject({
    /** Versions kept per label (its target and the ones before it), so rollback is instant. @default 3 */
    keep: z.number().int().positive().max(1000).optional()
  }).optional(),
  store: z.strictObject({
    /** Disk quota for blobs: a number of bytes or a size such as "200GB" / "1.5TiB". Unset: none. */
    quota: z.union([z.number().int().positive(), z.string().max(32)]).optional(),
    /** Keep versions nothing needs compressed, once they have been so for `compressAfter` (`store/cold.ts`). @default false */
    compress: z.boolean().optional(),
    /** How long: seconds, or a duration such as "30m", "12h", "7d". @default DEFAULT_COMPRESS_AFTER_MS (7 days) */
    compressAfter: z.union([z.number().nonnegative(), z.string().max(32)]).optional()
  }).optional()
})

/** @default 7 days — how long a version nothing needs waits before `store.compress` compresses it */
export const DEFAULT_COMPRESS_AFTER_MS = 7 * 24 * 3600 * 1000

export interface Config {
  home: string
  socket: string
  rpc: { tcp?: { host: string, port: number }, maxConnections: number, maxWatchers: number, maxReads: number }
  logLevel: z.infer<typeof logLevel>
  p2p: { listen: string[], peers: string[], mdns: boolean, dht: boolean, allow?: string[], maxConnections: number }
  transfer: {
    strategy: 'weighted' | 'round-robin' | 'random'
    pieceOrder: 'rarest' | 'in-order'
    uploadSlots: number
    uploadSlotsPerPeer: number
    sendStallSeconds: number
    uploadRate?: number
    downloadRate?: number
    banSeconds: number
    stallSeconds: number
    origins: string[]
    originMaxFailures: number
    maxManifestChunks: number
    maxVersionBytes: number
    maxPullAttempts: number
    bulk: BulkConfig
    encrypt: boolean
    compress: 'auto' | 'always' | 'off'
    compressCacheBytes: number
  }
  /** `metrics.listen`: where `GET /metrics` is also served, without a token. */
  metrics: { listen?: { host: string, port: number } }
  follow: string[]
  trust: TrustRule[]
  labels: { keep: number }
  /** `compressAfterMs`: set when `store.compress` is on. */
  store: { quotaBytes?: number, compressAfterMs?: number }
}

/** Where the bulk channel listens; see `bulkListenAddress`. */
export interface BulkConfig {
  enabled: boolean
  host: string
  /** 0: an ephemeral port. */
  port: number
  /** True for the default address: a taken port falls back to an ephemeral one (the offer carries the port). */
  ephemeralIfTaken: boolean
}

export interface ConfigOverrides {
  socket?: string
  logLevel?: string
  listen?: string[]
  peers?: string[]
  mdns?: boolean
  strategy?: string
  follow?: string[]
}

export async function loadConfig (options: { home?: string, env?: NodeJS.ProcessEnv, overrides?: ConfigOverrides } = {}): Promise<Config> {
  const env = options.env ?? process.env
  const home = options.home !== undefined ? resolve(options.home) : defaultHome(env)
  const file = await readConfigFile(join(home, CONFIG_FILE))
  const levelFrom = options.overrides?.logLevel !== undefined ? '--log-level' : nonEmpty(env.SHOAL_LOG_LEVEL) !== undefined ? 'SHOAL_LOG_LEVEL' : 'log.level'
  const levelText = options.overrides?.logLevel ?? nonEmpty(env.SHOAL_LOG_LEVEL) ?? file.log?.level ?? DEFAULT_LOG_LEVEL
  const level = logLevel.safeParse(levelText)
  if (!level.success) throw new InvalidInputError(`${levelFrom} "${levelText.slice(0, 40)}" is not a log level; use one of ${logLevel.options.join(', ')}`)
  const o = options.overrides ?? {}
  const socket = o.socket ?? file.rpc?.socket ?? SOCKET_FILE
  const strategy = configFileSchema.shape.transfer.unwrap().shape.strategy.safeParse(o.strategy ?? file.transfer?.strategy ?? 'weighted')
  if (!strategy.success) throw new InvalidInputError('invalid strategy; use weighted, round-robin or random')
  for (const f of o.follow ?? []) {
    if (!followSpec.safeParse(f).success) throw new InvalidInputError(`--follow "${f}" is not name@label (* matches anything, e.g. llama-8b@prod)`)
  }
  for (const ma of [...(o.listen ?? []), ...(o.peers ?? [])]) {
    if (!multiaddrText.safeParse(ma).success) throw new InvalidInputError(`"${ma}" is not a multiaddr (e.g. /ip4/127.0.0.1/tcp/4077)`)
  }
  const t = file.transfer ?? {}
  for (const [i, entry] of (t.origins ?? []).entries()) {
    try {
      checkOriginEntry(entry)
    } catch (err) {
      throw new InvalidInputError(`${join(home, CONFIG_FILE)} is invalid at transfer.origins.${i}: ${(err as Error).message}`)
    }
  }
  const listen = o.listen !== undefined && o.listen.length > 0 ? o.listen : file.p2p?.listen ?? DEFAULT_LISTEN
  return {
    home,
    socket: resolve(home, socket),
    rpc: {
      ...(file.rpc?.tcp !== undefined ? { tcp: loopbackAddress(file.rpc.tcp) } : {}),
      maxConnections: file.rpc?.maxConnections ?? DEFAULT_MAX_RPC_CONNECTIONS,
      maxWatchers: file.rpc?.maxWatchers ?? DEFAULT_MAX_WATCHERS,
      maxReads: file.rpc?.maxReads ?? DEFAULT_MAX_READS
    },
    logLevel: level.data,
    p2p: {
      listen,
      peers: [...(file.p2p?.peers ?? []), ...(o.peers ?? [])],
      mdns: o.mdns ?? file.p2p?.mdns ?? false,
      dht: file.p2p?.dht ?? true,
      ...(file.p2p?.allow !== undefined ? { allow: file.p2p.allow } : {}),
      maxConnections: file.p2p?.maxConnections ?? DEFAULT_MAX_CONNECTIONS
    },
    transfer: {
      strategy: strategy.data ?? 'weighted',
      pieceOrder: t.pieceOrder ?? 'rarest',
      uploadSlots: t.uploadSlots ?? DEFAULT_UPLOAD_SLOTS,
      uploadSlotsPerPeer: t.uploadSlotsPerPeer ?? DEFAULT_UPLOAD_SLOTS_PER_PEER,
      sendStallSeconds: t.sendStallSeconds ?? DEFAULT_SEND_STALL_SECONDS,
      ...(t.uploadRate !== undefined ? { uploadRate: t.uploadRate } : {}),
      ...(t.downloadRate !== undefined ? { downloadRate: t.downloadRate } : {}),
      banSeconds: t.banSeconds ?? 600,
      stallSeconds: t.stallSeconds ?? 60,
      origins: t.origins ?? [],
      originMaxFailures: t.originMaxFailures ?? DEFAULT_ORIGIN_MAX_FAILURES,
      maxManifestChunks: t.maxManifestChunks ?? DEFAULT_MAX_MANIFEST_CHUNKS,
      maxVersionBytes: t.maxVersionBytes !== undefined ? sizeAt('transfer.maxVersionBytes', t.maxVersionBytes) : DEFAULT_MAX_VERSION_BYTES,
      maxPullAttempts: t.maxPullAttempts ?? DEFAULT_MAX_PULL_ATTEMPTS,
      bulk: { enabled: t.bulk?.enabled ?? DEFAULT_BULK_ENABLED, ...bulkListenAddress(listen, t.bulk?.listen) },
      encrypt: t.encrypt ?? DEFAULT_ENCRYPT,
      compress: t.compress ?? 'auto',
      compressCacheBytes: t.compressCache !== undefined ? sizeAt('transfer.compressCache', t.compressCache) : DEFAULT_COMPRESS_CACHE_BYTES
    },
    metrics: file.metrics?.listen !== undefined ? { listen: hostPort(file.metrics.listen, 'metrics.listen', '0.0.0.0:9464, [::]:9464 or 10.0.0.2:9464') } : {},
    follow: [...(file.follow ?? []), ...(o.follow ?? [])],
    trust: (file.trust ?? []).map((r, i) => configTrustRule(r, i)),
    labels: { keep: file.labels?.keep ?? DEFAULT_KEEP_LAST },
    store: {
      ...(file.store?.quota !== undefined ? { quotaBytes: quotaOf(file.store.quota) } : {}),
      ...compressionOf(file.store)
    }
  }
}

/** A size from the config file, a refusal naming its key. */
function sizeAt (key: string, value: number | string): number {
  try {
    return parseSize(value)
  } catch (err) {
    throw new InvalidInputError(`${CONFIG_FILE} ${key}: ${(err as Error).message}`)
  }
}

/** @default 32 MiB — `transfer.compressCache` */
export const DEFAULT_COMPRESS_CACHE_BYTES = 32 * 1024 * 1024

/** `store.compress` and `store.compressAfter` → how long a version waits before it is compressed, when on. */
function compressionOf (store: { compress?: boolean, compressAfter?: number | string } | undefined): { compressAfterMs?: number } {
  if (store?.compress !== true) {
    if (store?.compressAfter !== undefined) throw new InvalidInputError(`${CONFIG_FILE} store.compressAfter is set but store.compress is not true; set "compress": true to compress versions automatically`)
    return {}
  }
  const after = store.compressAfter
  if (after === undefined) return { compressAfterMs: DEFAULT_COMPRESS_AFTER_MS }
  if (typeof after === 'number') return { compressAfterMs: Math.round(after * 1000) }
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|h|d)$/.exec(after.trim())
  if (m === null) throw new InvalidInputError(`${CONFIG_FILE} store.compressAfter: ${JSON.stringify(after)} is not a duration; use seconds or e.g. "30m", "12h", "7d"`)
  const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd']
  return { compressAfterMs: Math.round(Number(m[1]) * unit) }
}

function nonEmpty (value: string | undefined): string | undefined {
  return value === '' ? undefined : value
}

function configTrustRule (rule: { key: string, models: string }, i: number): TrustRule {
  try {
    return checkTrustRule(rule)
  } catch (err) {
    throw new InvalidInputError(`${CONFIG_FILE} trust.${i}: ${(err as Error).message}`, { cause: err })
  }
}

/** `store.quota`: a whole number of bytes from 1 up to 2^53 - 1, or a size text. */
function quotaOf (value: number | string): number {
  let bytes: number
  try {
    bytes = parseSize(value)
  } catch (err) {
    throw new InvalidInputError(`${CONFIG_FILE} store.quota: ${(err as Error).message}`, { cause: err })
  }
  if (bytes < 1 || !Number.isSafeInteger(bytes)) throw new InvalidInputError(`${CONFIG_FILE} store.quota: ${JSON.stringify(value)} is ${bytes} bytes; use at least 1 byte and at most ${Number.MAX_SAFE_INTEGER}`)
  return bytes
}

/**
 * Where the bulk channel listens. `transfer.bulk.listen` when set (`10.0.0.2:4078`, `[::]:4078`;
 * port 0 for any free port), used as given. Otherwise the host of the first `/ip4/…/tcp/…` or
 * `/ip6/…/tcp/…` p2p listen address with its port + `BULK_PORT_OFFSET` (4077 → 4078), so one
 * firewall rule covers a pair of ports; an ephemeral port when that p2p port is 0 (or 65535),
 * and `0.0.0.0` with an ephemeral port when no p2p address is TCP over IP. A default port that
 * turns out to be taken is replaced by an ephemeral one at start (`ephemeralIfTaken`); an explicit
 * one is not.
 */
export function bulkListenAddress (p2pListen: readonly string[], explicit?: string): Omit<BulkConfig, 'enabled'> {
  if (explicit !== undefined) return { ...hostPort(explicit, 'transfer.bulk.listen', '0.0.0.0:4078, [::]:4078 or 10.0.0.2:4078'), ephemeralIfTaken: false }
  for (const ma of p2pListen) {
    const m = /^\/(ip4|ip6)\/([^/]+)\/tcp\/(\d{1,5})$/.exec(ma)
    if (m === null || isIP(m[2]!) === 0) continue
    const p2pPort = Number(m[3])
    const port = p2pPort === 0 || p2pPort + BULK_PORT_OFFSET > 65535 ? 0 : p2pPort + BULK_PORT_OFFSET
    return { host: m[2]!, port, ephemeralIfTaken: true }
  }
  return { host: '0.0.0.0', port: 0, ephemeralIfTaken: true }
}

/** `10.0.0.2:4078`, `[::]:4078` → host and port, or an error naming the key with examples. */
function hostPort (text: string, key: string, examples: string): { host: string, port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|(\d{1,3}(?:\.\d{1,3}){3})):(\d{1,5})$/.exec(text)
  const host = m?.[1] ?? m?.[2] ?? ''
  const port = Number(m?.[3])
  if (m === null || isIP(host) === 0 || port > 65535) {
    throw new InvalidInputError(`${CONFIG_FILE} ${key} ${JSON.stringify(text.slice(0, 80))} must be an IP address and a port, e.g. ${examples} (port 0: any free port)`)
  }
  return { host, port }
}

/** `127.0.0.1:4080`, `[::1]:4080`, `localhost:4080` → host and port; anything not loopback is refused. */
export function loopbackAddress (text: string): { host: string, port: number } {
  const m = /^(?:\[(::1)\]|(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost)):(\d{1,5})$/.exec(text)
  const port = Number(m?.[3])
  if (m === null || port > 65535) throw new InvalidInputError(`rpc.tcp "${text}" must be a loopback address with a port (127.0.0.1:4080 or [::1]:4080): the RPC is never exposed beyond this host`)
  return { host: m[1] ?? m[2] ?? '127.0.0.1', port }
}

/**
 * The config file, parsed and validated; `{}` when there is none. Its size is checked before it is
 * read (`MAX_CONFIG_BYTES`); any other failure to read it is an error, never a silent default.
 */
async function readConfigFile (path: string): Promise<z.infer<typeof configFileSchema>> {
  let text: string
  try {
    // Non-blocking, so a FIFO (or a device) in its place is refused instead of waited on.
    const file = await open(path, constants.O_RDONLY | constants.O_NONBLOCK)
    try {
      const st = await file.stat()
      if (!st.isFile()) throw new InvalidInputError(`${path} is not a regular file`)
      if (st.size > MAX_CONFIG_BYTES) throw new InvalidInputError(`${path} is ${st.size} bytes, over the ${MAX_CONFIG_BYTES}-byte limit for a config file`)
      // One byte more than the size: a file that grows while it is read is noticed, not followed.
      const buf = Buffer.alloc(st.size + 1)
      let length = 0
      for (;;) {
        const { bytesRead } = await file.read(buf, length, buf.length - length, length)
        length += bytesRead
        if (bytesRead === 0 || length === buf.length) break
      }
      if (length !== st.size) throw new InvalidInputError(`${path} changed while it was read; try again`)
      text = buf.subarray(0, length).toString('utf8')
    } finally {
      await file.close()
    }
  } catch (err) {
    if (err instanceof InvalidInputError) throw err
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {}
    throw new InvalidInputError(`cannot read ${path}: ${(err as Error).message}`, { cause: err })
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    throw new InvalidInputError(`${path} is not valid JSON: ${(err as Error).message}`)
  }
  const parsed = configFileSchema.safeParse(value)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new InvalidInputError(`${path} is invalid at ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? ''}`)
  }
  return parsed.data
}
