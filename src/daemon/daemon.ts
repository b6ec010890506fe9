/**
 * The composition root: config → store → keys, trust and head book → peer judge → manifest
 * resolver and pull manager → libp2p node (serving a `LocalChunkSource`) → head spreading and
 * activation → the running services (`SearchFeed`, `StoreUpkeep`, `MetricsFeed`, `Providing`;
 * `pull.*` events from `PullReporter`) → RPC server, started in that order and stopped in reverse.
 * Behaviour lives in those modules; this file only builds and orders them. `SIGTERM`/`SIGINT` stop
 * it cleanly: the RPC server stops taking requests, pulls flush their verified chunks (and resume
 * at the next start), the node hangs up, the index is closed.
 */
import type { Config } from '../config/config.js'
import { SOCKET_MODE } from '../config/config.js'
import { TokenBucket, UploadLimits } from '../fetcher/bandwidth.js'
import { OriginClient } from '../fetcher/origin.js'
import { loadOrCreateIdentity } from '../p2p/identity.js'
import { PeerScores } from '../p2p/judge.js'
import { createNode, type ShoalNode } from '../p2p/node.js'
import { EncodedBlocks, faultyEncoder, faultyLimiter, faultySource, MAX_FRAME_BYTES, parseFaults, type BlockEncoder, type ChunkSource, type UploadLimiter } from '../protocol/chunks/index.js'
import { bulkService, type BulkService } from '../protocol/bulk/index.js'
import { BufferPool } from '../core/buffer-pool.js'
import { routes } from '../rpc/api.js'
import { RpcServer } from '../rpc/server.js'
import { Store } from '../store/store.js'
import { ConflictError, InvalidInputError } from '../core/errors.js'
import { componentLogger, createLogger, type Logger } from './logger.js'
import { PullManager } from './pulls.js'
import { LocalChunkSource } from './chunk-source.js'
import { StoreUpkeep } from './upkeep.js'
import { MetricsFeed } from './metrics-feed.js'
import { SearchFeed } from './search-feed.js'
import { Providing } from './providing.js'
import { PullReporter } from './pull-events.js'
import { ManifestResolver } from './manifest-resolver.js'
import { DaemonService } from './service.js'
import { peerIdFromString } from '@libp2p/peer-id'
import { TrustPolicy } from '../core/trust.js'
import { OriginAllowList } from '../core/origins.js'
import { HeadBook } from '../heads/book.js'
import { KeyRing, TrustFile } from '../heads/keyring.js'
import { HeadGuard } from '../heads/guard.js'
import { headSource } from '../heads/source.js'
import { HeadSpreader } from '../heads/spread.js'
import { Activator, FollowRules } from '../heads/activator.js'
import { EventBus } from './events.js'
import { HeadsService } from './heads-service.js'
import { LeaseTable } from './leases.js'
import { Metrics } from './metrics.js'
import { MetricsServer } from './metrics-server.js'
import { SHOAL_VERSION } from '../version.js'
import { ServingService } from './serving.js'
import { ReadService } from './reads.js'
import { loadOrCreateToken } from './token.js'
import { missingNodeFlags } from './runtime.js'
import { guardProcess } from './process-guard.js'
import { SearchIndex } from '../store/search-index.js'


/**
 * @default 16 MiB — bytes one pull may have requested at once from partial peers (seeds have
 * `seedReserveBytes` besides); every pull passes it as the session's `maxInFlightBytes`, whose own
 * default (64 MiB) the daemon never uses, and it bounds the chunk protocol's read buffer. Larger
 * budgets pulled a swarm a few percent faster for more memory per daemon.
 * why: docs/decisions/0014-pull-windows-and-budgets.md
 */
export const MAX_PULL_IN_FLIGHT_BYTES = 16 * 1024 * 1024

/**
 * `transfer.compress` → the rate from a peer below which a pull asks it for compressed blocks
 * (`SessionOptions.compressBelowBytesPerSecond`). `auto`: 48 MiB/s — encoding runs at ~180 MB and
 * decoding at ~550–950 MB per CPU-second here, so on a faster link the codec, not the link, would
 * set the pace (`docs/decisions/0024-wire-compression.md`).
 */
const COMPRESS_BELOW: Record<'auto' | 'always' | 'off', number> = { auto: 48 * 1024 * 1024, always: Infinity, off: 0 }

export class Daemon {
  private store?: Store
  private rpc?: RpcServer
  private metricsServer?: MetricsServer
  /** Where `metrics.listen` serves `GET /metrics` (the port chosen when 0 was asked). */
  private metricsAddress?: string
  private pulls?: PullManager
  private manifests?: ManifestResolver
  private stopNode?: () => Promise<void>
  private bulk?: BulkService
  private encoded?: EncodedBlocks
  private origin?: OriginClient
  private spreader?: HeadSpreader
  private activator?: Activator
  private upkeep?: StoreUpkeep
  private indexing?: SearchFeed
  private providing?: Providing
  private leases?: LeaseTable
  search?: SearchIndex
  readonly events = new EventBus()
  private readonly feed = new MetricsFeed({
    events: this.events,
    metrics: () => this.metrics,
    modelOf: async version => (await this.store?.versionRecord(version))?.name
  })
  metrics?: Metrics
  node?: ShoalNode
  readonly log: Logger

  constructor (readonly config: Config, log?: Logger) {
    this.log = log ?? createLogger(config.logLevel)
  }

  async start (): Promise<void> {
    const { config } = this
    const store = await Store.open(config.home, { log: componentLogger(this.log, 'store') })
    this.store = store
    try {
      const keys = await KeyRing.open(config.home)
      const trustFile = await TrustFile.open(config.home)
      const policy = new TrustPolicy(HeadsService.rules(keys, config.trust, trustFile))
      const book = await HeadBook.open(store.heads, policy, { log: componentLogger(this.log, 'heads') })
      const search = await SearchIndex.forStore(store, { log: componentLogger(this.log, 'search') })
      this.search = search
      const judge = new PeerScores({
        banMs: config.transfer.banSeconds * 1000,
        onBan: (peer, reason) => {
          this.log.warn({ peer, reason }, 'peer banned')
          void this.node?.hangUp(peerIdFromString(peer)).catch(() => {})
        }
      })
      const guard = new HeadGuard(book, judge, { log: componentLogger(this.log, 'heads') })
      this.origin = new OriginClient({ logger: componentLogger(this.log, 'origin') })
      const manifests = new ManifestResolver({
        manifests: store.heads,
        isLocal: async version => (await store.versionRecord(version))?.local === true,
        judge,
        limits: { maxChunks: config.transfer.maxManifestChunks, maxVersionBytes: config.transfer.maxVersionBytes },
        onRejected: offence => { this.feed.rejected(offence) },
        log: componentLogger(this.log, 'pulls')
      })
      this.manifests = manifests
      // Blocks compressed for the wire: encoded once, sent to every peer that asks in that codec.
      const encoded = config.transfer.compress === 'off' ? undefined : new EncodedBlocks(config.transfer.compressCacheBytes)
      this.encoded = encoded
      const pulls = new PullManager(store, judge, manifests, {
        session: {
          strategy: config.transfer.strategy,
          pieceOrder: config.transfer.pieceOrder,
          maxInFlightBytes: MAX_PULL_IN_FLIGHT_BYTES,
          noProgressTimeoutMs: config.transfer.stallSeconds * 1000,
          compressBelowBytesPerSecond: COMPRESS_BELOW[config.transfer.compress]
        },
        ...(encoded !== undefined ? { relay: (block, bytes) => { encoded.keep(block, bytes) } } : {}),
        origin: this.origin,
        origins: new OriginAllowList(config.transfer.origins),
        originMaxFailures: config.transfer.originMaxFailures,
        maxPullAttempts: config.transfer.maxPullAttempts,
        onGiveUp: info => { reporter.gaveUp(info) },
        onReceived: (model, _peer, bytes) => { this.feed.received(model, bytes) },
        onRejected: offence => { this.feed.rejected(offence) },
        ...(config.transfer.downloadRate !== undefined ? { download: new TokenBucket(config.transfer.downloadRate) } : {})
      }, componentLogger(this.log, 'pulls'))
      this.pulls = pulls
      const reporter = new PullReporter({ pulls, events: this.events })
      // Block receive buffers, shared by the libp2p streams and the bulk channel's connections.
      const pool = new BufferPool(MAX_FRAME_BYTES)
      const bulk = await this.startBulk(pool)
      const { node, stop } = await listening(config.p2p.listen, createNode({
        privateKey: await loadOrCreateIdentity(config.home),
        listen: config.p2p.listen,
        peers: config.p2p.peers,
        mdns: config.p2p.mdns,
        dht: config.p2p.dht,
        maxConnections: config.p2p.maxConnections,
        ...(config.p2p.allow !== undefined ? { allow: config.p2p.allow } : {}),
        isBanned: peer => judge.isBanned(peer),
        chunks: {
          ...served(new LocalChunkSource(store, pulls), new UploadLimits(config.transfer.uploadSlots, config.transfer.uploadSlotsPerPeer, config.transfer.uploadRate), encoded, this.log),
          maxInFlightBytes: MAX_PULL_IN_FLIGHT_BYTES,
          sendStallMs: config.transfer.sendStallSeconds * 1000,
          onPeerFault: (peer, offence, detail) => { judge.penalize(peer, offence, detail) },
          pool,
          ...(bulk !== undefined ? { bulk } : {}),
          log: componentLogger(this.log, 'chunks'),
          onSent: (peer, bytes, versions, wireBytes) => {
            judge.sent(peer, bytes, wireBytes)
            this.feed.sent(peer, bytes, versions, wireBytes)
          }
        },
        manifests,
        heads: headSource(book, guard, policy, peer => { this.spreader?.noteInbound(peer) })
      }))
      this.node = node
      this.stopNode = stop
      pulls.attach(node)
      manifests.attach(node)
      const headLog = componentLogger(this.log, 'heads')
      const upkeep = new StoreUpkeep({
        store, keepLast: config.labels.keep, leased: () => this.leases?.versions() ?? [], events: this.events, log: this.log,
        ...(config.store.quotaBytes !== undefined ? { quotaBytes: config.store.quotaBytes } : {}),
        ...(config.store.compressAfterMs !== undefined ? { compressAfterMs: config.store.compressAfterMs } : {})
      })
      this.upkeep = upkeep
      const activator = new Activator({
        book,
        labels: {
          current: async (model, label) => (await store.labelRecord(model, label))?.version,
          set: async (model, label, version) => { await store.setLabel(model, label, version) },
          remove: async (model, label) => { await store.removeLabel(model, label) },
          isComplete: async version => await store.isComplete(version)
        },
        puller: reporter,
        events: this.events,
        follows: new FollowRules(config.follow),
        nodeId: node.peerId.toString(),
        log: headLog,
        afterSwitch: () => { upkeep.afterSwitch() }
      })
      this.activator = activator
      // A switch the disk refused is tried again once the store takes writes again.
      store.onWritable(() => { void activator.reconcileAll() })
      // The search index follows versions, labels and the manifests heads name as they change.
      const indexing = new SearchFeed({ search, events: this.events, book, manifests, log: componentLogger(this.log, 'search'), headLog })
      this.indexing = indexing
      indexing.start()
      await activator.start()
      this.spreader = new HeadSpreader(node, book, guard, headLog, { maxConnections: config.p2p.maxConnections })
      this.spreader.start()
      upkeep.start()
      const leases = new LeaseTable(store)
      await leases.start()
      this.leases = leases
      const metrics = new Metrics({
        peers: () => node.getPeers().length,
        leases: () => leases.list().length,
        pullsInFlight: () => pulls.list().length,
        store: async () => await store.totals(),
        heads: () => ({ ...book.counters, ...guard.counters }),
        bytesReceivedByPeer: () => judge.list().map(r => ({ peer: r.peer, bytes: r.bytesReceived, wireBytes: r.wireBytesReceived })),
        encoder: () => this.encoded?.stats,
        connectedPeers: () => node.getPeers().map(String),
        labels: async () => await store.allLabels(),
        build: { version: SHOAL_VERSION, node: process.version }
      })
      this.metrics = metrics
      this.feed.start()
      const providing = new Providing({ routing: node.contentRouting, held: () => store.versionIds(), dht: config.p2p.dht })
      this.providing = providing
      const headOps = new HeadsService({ store, book, activator, keys, trustFile, configTrust: config.trust, policy, events: this.events })
      const serving = new ServingService({ store, pulls, book, activator, leases, events: this.events })
      const reads = new ReadService({ store, pulls, book })
      const service = new DaemonService(store, { home: config.home, socket: config.socket }, { node, pulls, judge, search, indexing, providing, reporter }, headOps, serving, {
        keepLast: config.labels.keep, events: this.events, headCounters: () => ({ ...book.counters, ...guard.counters }), untrusted: () => book.untrusted(), metrics: () => this.metricsAddress, leased: () => leases.versions(), log: componentLogger(this.log, 'service')
      })
      const tcp = config.rpc.tcp === undefined ? undefined : { ...config.rpc.tcp, token: await loadOrCreateToken(config.home) }
      this.rpc = new RpcServer({
        socket: config.socket, mode: SOCKET_MODE,
        routes: routes(service, { watch: async o => { await serving.watch(o) }, metrics: async () => await metrics.text(), read: async r => await reads.open(r) }),
        log: componentLogger(this.log, 'rpc'),
        onAnswered: (route, status) => { metrics.rpcRequests.inc({ route, status: String(status) }) },
        limits: { maxConnections: config.rpc.maxConnections, streams: { watch: config.rpc.maxWatchers, read: config.rpc.maxReads } },
        ...(tcp !== undefined ? { tcp } : {})
      })
      await this.rpc.start()
      const metricsListen = config.metrics.listen
      if (metricsListen !== undefined) {
        this.metricsServer = new MetricsServer({ ...metricsListen, text: async () => await metrics.text(), log: this.log })
        this.metricsAddress = await this.metricsServer.start()
      }
      await pulls.resumeAll()
      providing.start()
    } catch (err) {
      await this.stop().catch(() => {})
      throw err
    }
    this.log.info({ home: config.home, socket: config.socket, ...(this.rpc?.tcpPort !== undefined ? { rpcTcp: `${config.rpc.tcp?.host ?? ''}:${this.rpc.tcpPort}` } : {}), peer: this.node?.peerId.toString(), listen: this.node?.getMultiaddrs().map(String) }, 'shoal daemon ready')
  }

  async stop (): Promise<void> {
    await this.rpc?.stop()
    await this.metricsServer?.stop()
    this.providing?.stop()
    this.upkeep?.stop()
    this.feed.stop()
    this.indexing?.stop()
    this.leases?.stop()
    this.spreader?.stop()
    this.activator?.stop()
    await this.pulls?.stop()
    await this.manifests?.stop()
    await this.stopNode?.()
    await this.bulk?.stop()
    this.origin?.close()
    await this.store?.close()
    this.log.info({}, 'shoal daemon stopped')
  }

  /**
   * The bulk channel (`transfer.bulk`), listening; undefined when it is off or cannot listen (blocks
   * then stay on the libp2p streams, and the log says why). why: docs/decisions/0023-bulk-channel.md
   */
  private async startBulk (pool: BufferPool): Promise<BulkService | undefined> {
    const { bulk, encrypt, sendStallSeconds } = this.config.transfer
    if (!bulk.enabled) return undefined
    const service = bulkService({ host: bulk.host, port: bulk.port, ephemeralIfTaken: bulk.ephemeralIfTaken, encrypt, pool, sendStallMs: sendStallSeconds * 1000, log: componentLogger(this.log, 'bulk') })
    try {
      await service.start()
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'the bulk channel is off: blocks go on the libp2p streams')
      return undefined
    }
    this.bulk = service
    return service
  }

  /**
   * Runs until SIGTERM or SIGINT, then stops. Owns the process: an unhandled rejection is logged
   * and counted, an uncaught exception stops the daemon and exits non-zero (`process-guard.ts`).
   */
  async runUntilSignalled (): Promise<void> {
    let stopped: Promise<void> | undefined
    const stop = async (): Promise<void> => { await (stopped ??= this.stop()) }
    guardProcess({ log: this.log, onRejection: () => { this.metrics?.unhandledRejections.inc() }, stop })
    const missing = missingNodeFlags()
    if (missing.length > 0) {
      this.log.warn({ missing }, 'node was started without the flags `shoal daemon` runs with, so it takes more memory (young generation) or more CPU (old generation): start it as `shoal daemon`, or pass them to node')
    }
    await this.start()
    await new Promise<void>(resolve => {
      const onSignal = (signal: string): void => {
        this.log.info({ signal }, 'stopping')
        process.off('SIGTERM', onSignal)
        process.off('SIGINT', onSignal)
        resolve()
      }
      process.on('SIGTERM', onSignal)
      process.on('SIGINT', onSignal)
    })
    await stop()
  }
}

/** Turns a failure to bind into an error that says which address and what to do. */
async function listening<T> (addresses: string[], starting: Promise<T>): Promise<T> {
  try {
    return await starting
  } catch (err) {
    const text = `${(err as Error).message} ${String((err as { code?: string }).code ?? '')}`
    if (/EADDRINUSE|address already in use/i.test(text)) {
      throw new ConflictError(`cannot listen on ${addresses.join(', ')}: the address is in use (another shoal daemon?); pass --listen with a free port, e.g. --listen /ip4/0.0.0.0/tcp/4078`, { cause: err })
    }
    if (/EADDRNOTAVAIL|EACCES/i.test(text)) {
      throw new InvalidInputError(`cannot listen on ${addresses.join(', ')}: ${(err as Error).message}; pass --listen with an address of this host`, { cause: err })
    }
    throw err
  }
}

/**
 * What the chunk server serves, when, and in what encoded form, misbehaving on purpose when
 * `SHOAL_TEST_FAULTS` is set (comma-separated: `corrupt`, `lie`, `stall`, `oversize`, `nochunks`,
 * `encode-wrong`, `encode-bomb`, `encode-unoffered`; see `ServerFaults`). Used by the end-to-end
 * tests to run a lying, corrupting, stalling or empty-handed peer.
 */
function served (source: ChunkSource, limiter: UploadLimiter, encoder: BlockEncoder | undefined, log: Logger): { source: ChunkSource, limiter: UploadLimiter, encoder?: BlockEncoder } {
  const spec = process.env.SHOAL_TEST_FAULTS
  if (spec === undefined || spec === '') return { source, limiter, ...(encoder !== undefined ? { encoder } : {}) }
  log.warn({ faults: [...new Set(spec.split(','))] }, 'SHOAL_TEST_FAULTS is set: this node misbehaves on purpose')
  const faults = parseFaults(spec)
  return { source: faultySource(source, faults), limiter: faultyLimiter(limiter, faults), ...(encoder !== undefined ? { encoder: faultyEncoder(encoder, faults) } : {}) }
}
