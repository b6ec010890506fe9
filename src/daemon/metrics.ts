/**
 * Prometheus metrics (`GET /metrics` on the RPC socket and, with its token, the TCP port).
 *
 * One registry per daemon (not prom-client's global one), so several daemons in one process —
 * tests, benchmarks — keep separate figures. Counters are bumped where things happen; gauges that
 * mirror state (peers, leases, store size, pulls) are read at scrape time by `collect` callbacks,
 * so they are never stale; totals kept by other components (bytes by peer, heads by outcome) are
 * counters grown at scrape time by what those totals grew. Peer labels are peer ids, of connected
 * peers only: a fleet node talks to at most `p2p.maxConnections` peers, which bounds the series,
 * and a peer that disconnects loses its series at the next scrape (they start again if it returns).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export interface MetricsSources {
  peers: () => number
  leases: () => number
  pullsInFlight: () => number
  /** Store totals; called at most once per scrape. */
  store: () => Promise<{ bytes: number, blobs: number, versions: number }>
  heads: () => { accepted: number, duplicate: number, stale: number, future: number, rejected: Record<string, number>, signatureChecks: number, dropped: number, syncsRefused: number }
  /** Verified block bytes received from each peer, and what they took on the link (fewer when they came compressed). */
  bytesReceivedByPeer: () => Array<{ peer: string, bytes: number, wireBytes: number }>
  /** What the wire encoder did (`EncodedBlocks.stats`); undefined when `transfer.compress` is off. */
  encoder?: () => { encoded: number, hits: number, stored?: number, raw: number, encodeMs: number } | undefined
  /** Peers connected now: per-peer series of any other peer are dropped at the next scrape. */
  connectedPeers: () => Iterable<string>
  /** Local labels and their versions; called at most once per scrape. */
  labels: () => Promise<Array<{ model: string, label: string, version: string }>>
  /** For `shoal_build_info`. */
  build: { version: string, node: string }
}

export class Metrics {
  readonly registry = new Registry()
  readonly bytesSent: Counter<'peer'>
  readonly wireBytesSent: Counter<'peer'>
  readonly bytesReceivedByModel: Counter<'model'>
  readonly bytesSentByModel: Counter<'model'>
  readonly chunksVerified: Counter
  readonly chunksRejected: Counter<'reason'>
  readonly pullDuration: Histogram<'outcome'>
  readonly labelMoves: Counter
  readonly rpcRequests: Counter<'route' | 'status'>
  /** Promise rejections nothing handled (logged with their stack; the daemon keeps running). */
  readonly unhandledRejections: Counter

  constructor (sources: MetricsSources) {
    const r = this.registry
    // shoal_process_cpu_seconds_total, shoal_nodejs_heap_size_used_bytes, …
    collectDefaultMetrics({ register: r, prefix: 'shoal_' })
    this.bytesSent = new Counter({ name: 'shoal_bytes_sent_total', help: 'Chunk bytes sent to peers', labelNames: ['peer'], registers: [r] })
    this.wireBytesSent = new Counter({ name: 'shoal_wire_bytes_sent_total', help: 'Bytes the chunk bytes sent to peers took on the link (fewer when compressed)', labelNames: ['peer'], registers: [r] })
    this.bytesReceivedByModel = new Counter({ name: 'shoal_model_bytes_received_total', help: 'Verified chunk bytes received, by model', labelNames: ['model'], registers: [r] })
    this.bytesSentByModel = new Counter({ name: 'shoal_model_bytes_sent_total', help: 'Chunk bytes sent, by model (when the request named a version)', labelNames: ['model'], registers: [r] })
    this.chunksVerified = new Counter({ name: 'shoal_chunks_verified_total', help: 'Chunks received whose bytes matched their id', registers: [r] })
    this.chunksRejected = new Counter({ name: 'shoal_chunks_rejected_total', help: 'Chunks received and discarded', labelNames: ['reason'], registers: [r] })
    this.pullDuration = new Histogram({
      name: 'shoal_pull_duration_seconds', help: 'Pull durations', labelNames: ['outcome'], registers: [r],
      buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]
    })
    this.labelMoves = new Counter({ name: 'shoal_label_moves_total', help: 'Local label switches', registers: [r] })
    this.rpcRequests = new Counter({ name: 'shoal_rpc_requests_total', help: 'RPC requests', labelNames: ['route', 'status'], registers: [r] })
    this.unhandledRejections = new Counter({ name: 'shoal_unhandled_rejections_total', help: 'Promise rejections nothing handled, logged at error (the daemon kept running)', registers: [r] })
    new Gauge({ name: 'shoal_peers', help: 'Connected peers', registers: [r], collect () { this.set(sources.peers()) } })
    new Gauge({ name: 'shoal_leases', help: 'Leases held by serving processes', registers: [r], collect () { this.set(sources.leases()) } })
    new Gauge({ name: 'shoal_pulls_in_flight', help: 'Pulls running', registers: [r], collect () { this.set(sources.pullsInFlight()) } })
    // Totals kept elsewhere (the peer judge, the head book and guard) become counters here: each
    // scrape adds what they grew by since the last one. A peer that is gone loses its series.
    const byPeer = (name: string, help: string, pick: (p: { bytes: number, wireBytes: number }) => number): void => {
      const seen = new Map<string, number>()
      new Counter({
        name, help, labelNames: ['peer'], registers: [r],
        collect () {
          const connected = new Set(sources.connectedPeers())
          const now = new Map(sources.bytesReceivedByPeer().filter(p => connected.has(p.peer)).map(p => [p.peer, pick(p)]))
          for (const peer of seen.keys()) {
            if (!now.has(peer)) { this.remove({ peer }); seen.delete(peer) }
          }
          for (const [peer, bytes] of now) {
            const before = seen.get(peer) ?? 0
            if (bytes < before) this.remove({ peer })
            this.inc({ peer }, bytes < before ? bytes : bytes - before)
            seen.set(peer, bytes)
          }
        }
      })
    }
    byPeer('shoal_bytes_received_total', 'Verified chunk bytes received, by peer (peers this node no longer knows are dropped)', p => p.bytes)
    byPeer('shoal_wire_bytes_received_total', 'Bytes the verified chunk bytes received took on the link, by peer (fewer when they came compressed)', p => p.wireBytes)
    const heads = new Map<string, number>()
    const grow = (counter: Counter<string>, key: string, labels: Record<string, string>, total: number): void => {
      const before = heads.get(key) ?? 0
      if (total > before) counter.inc(labels, total - before)
      else counter.inc(labels, 0)
      heads.set(key, Math.max(before, total))
    }
    new Counter({
      name: 'shoal_heads_total', help: 'Heads offered to this node since start, by outcome', labelNames: ['outcome', 'reason'], registers: [r],
      collect () {
        const h = sources.heads()
        grow(this, 'accepted', { outcome: 'accepted', reason: '' }, h.accepted)
        grow(this, 'duplicate', { outcome: 'duplicate', reason: '' }, h.duplicate)
        grow(this, 'stale', { outcome: 'stale', reason: '' }, h.stale)
        grow(this, 'future', { outcome: 'future', reason: '' }, h.future)
        for (const [reason, n] of Object.entries(h.rejected)) grow(this, `rejected ${reason}`, { outcome: 'rejected', reason }, n)
        grow(this, 'dropped', { outcome: 'dropped', reason: 'budget' }, h.dropped)
      }
    })
    new Counter({ name: 'shoal_head_signature_checks_total', help: 'Signatures of offered heads verified (only heads that would win are checked)', registers: [r], collect () { grow(this, 'signatureChecks', {}, sources.heads().signatureChecks) } })
    new Counter({ name: 'shoal_head_syncs_refused_total', help: 'Inbound head syncs refused: the peer was over its budget or banned', registers: [r], collect () { grow(this, 'syncsRefused', {}, sources.heads().syncsRefused) } })
    const encoder = sources.encoder
    if (encoder !== undefined) {
      new Counter({ name: 'shoal_codec_blocks_encoded_total', help: 'Blocks compressed for the wire here (each costs CPU once)', registers: [r], collect () { grow(this, 'encoded', {}, encoder()?.encoded ?? 0) } })
      new Counter({ name: 'shoal_codec_blocks_reused_total', help: 'Compressed blocks sent again from the cache (compressed here before, or received compressed)', registers: [r], collect () { grow(this, 'hits', {}, encoder()?.hits ?? 0) } })
      new Counter({ name: 'shoal_codec_blocks_stored_total', help: 'Compressed blocks sent in the form the store keeps them in (cold versions): neither compressed nor cached', registers: [r], collect () { grow(this, 'stored', {}, encoder()?.stored ?? 0) } })
      new Counter({ name: 'shoal_codec_blocks_raw_total', help: 'Blocks a peer asked for compressed that went raw: their codec did not pay', registers: [r], collect () { grow(this, 'raw', {}, encoder()?.raw ?? 0) } })
      new Counter({ name: 'shoal_codec_encode_seconds_total', help: 'Time spent compressing blocks for the wire', registers: [r], collect () { grow(this, 'encodeSeconds', {}, (encoder()?.encodeMs ?? 0) / 1000) } })
    }
    new Gauge({ name: 'shoal_build_info', help: 'shoal and Node.js versions of this daemon (always 1)', labelNames: ['version', 'node'], registers: [r] }).set(sources.build, 1)
    const labelInfo = new Gauge({ name: 'shoal_label_version_info', help: 'The version each local label points at (always 1): a fleet has converged when every node shows the same version', labelNames: ['model', 'label', 'version'], registers: [r] })
    const storeGauge = new Gauge({ name: 'shoal_store_bytes', help: 'Bytes of stored blobs', registers: [r] })
    const blobsGauge = new Gauge({ name: 'shoal_store_blobs', help: 'Stored blobs', registers: [r] })
    const versionsGauge = new Gauge({ name: 'shoal_store_versions', help: 'Stored versions', registers: [r] })
    // One store walk per scrape (in text()) feeds the three store gauges.
    this.refreshStore = async () => {
      const labels = await sources.labels()
      labelInfo.reset()
      for (const l of labels) labelInfo.set({ model: l.model, label: l.label, version: l.version }, 1)
      // Bytes sent by peer: a peer that is gone loses its series, as for bytes received.
      const known = new Set(sources.connectedPeers())
      for (const v of (await this.bytesSent.get()).values) {
        const peer = String(v.labels.peer ?? '')
        if (!known.has(peer)) this.bytesSent.remove({ peer })
      }
      for (const v of (await this.wireBytesSent.get()).values) {
        const peer = String(v.labels.peer ?? '')
        if (!known.has(peer)) this.wireBytesSent.remove({ peer })
      }
      const s = await sources.store()
      storeGauge.set(s.bytes)
      blobsGauge.set(s.blobs)
      versionsGauge.set(s.versions)
    }
  }

  private readonly refreshStore: () => Promise<void>

  async text (): Promise<{ contentType: string, body: string }> {
    await this.refreshStore()
    return { contentType: this.registry.contentType, body: await this.registry.metrics() }
  }
}
