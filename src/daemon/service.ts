/**
 * The daemon's implementation of the RPC API: each operation delegates to the store and the
 * ingest pipeline. It adds no storage logic of its own; it shapes answers for the wire.
 *
 * An answer never claims more than reached the disk, nor less: an operation fails only when what it
 * was asked to do was not done, and when a later step fails after an earlier one was kept (an add
 * whose label could not be set), the error says which was kept. Derived data (the search index,
 * reconciled with the store at every start) is refreshed best-effort and never fails an answer.
 */
import { addPath, checkAddOptions } from '../ingest/ingest.js'
import type { DfResult, RemoveResult, ActivateResult, EventsResult, ExportResult, HeadHistoryRow, HeadRow, IdResult, KeyExport, KeyRow, LabelResult, ModelRow, PeerRow, PinResult, Progress, PullCancelResult, ResolveResult, ShoalApi, ShowResult, StatusResult, TrustRow, VersionResult } from '../rpc/api.js'
import type { HeadsService } from './heads-service.js'
import type { ServingService } from './serving.js'
import type { SearchIndex, SearchResult } from '../store/search-index.js'
import type { LeaseRow } from '../rpc/api.js'
import type { EventBus } from './events.js'
import type { HeadCounters } from '../heads/book.js'
import type { GuardCounters } from '../heads/guard.js'
import { AbortedError, ConflictError, NotFoundError, restated } from '../core/errors.js'
import { diskUsage } from '../store/usage.js'
import { isCid } from '../core/digest.js'
import { blockSizeOf } from '../core/manifest.js'
import { checkLabel, parseRef } from '../core/names.js'
import type { ShoalNode } from '../p2p/node.js'
import type { PeerScores } from '../p2p/judge.js'
import type { PullManager } from './pulls.js'
import type { SearchFeed } from './search-feed.js'
import type { Providing } from './providing.js'
import type { PullReporter, RequestedPull } from './pull-events.js'
import type { AddRequest, ExportRequest, GcRequest, LabelRequest, PullRequest, RemoveRequest } from '../rpc/schemas.js'
import { exportVersion } from '../store/export.js'
import { compressVersion, type ColdReport } from '../store/cold.js'
import { collectGarbage, type GcReport } from '../store/gc.js'
import type { ResolvedVersion, Store, VersionInfo } from '../store/store.js'
import { verifyStore, type VerifyReport } from '../store/verify.js'
import { SHOAL_VERSION } from '../version.js'

/** @default 250 ms — progress events are sent at most this often */
export const PROGRESS_INTERVAL_MS = 250

export class DaemonService implements ShoalApi {
  private readonly started = Date.now()

  constructor (
    private readonly store: Store,
    private readonly info: { home: string, socket: string },
    private readonly net: { node: ShoalNode, pulls: PullManager, judge: PeerScores, search: SearchIndex, indexing: Pick<SearchFeed, 'refresh'>, providing: Pick<Providing, 'announce'>, reporter: Pick<PullReporter, 'requested'> },
    private readonly headOps: HeadsService,
    private readonly serving: ServingService,
    private readonly options: { keepLast: number, events: EventBus, headCounters: () => HeadCounters & GuardCounters, untrusted: () => Array<{ publisher: string, model: string }>, metrics: () => string | undefined, leased: () => string[], log?: { warn: (obj: object, msg?: string) => void, info: (obj: object, msg?: string) => void } }
  ) {}

  /**
   * Pulls `name@<version id>`. A pull outlives its request (`PullManager`): when the client leaves
   * (Ctrl-C, a closed connection), the pull goes on in the background and its end is still
   * reported: `pull.completed` and `version.added` (and the search index, and the pull-duration
   * metric, which follow those events), or `pull.failed` with its `outcome`. `pull.failed` is never
   * sent only because a client left.
   */
  async pull (request: PullRequest, onProgress?: (p: Progress) => void, signal?: AbortSignal): Promise<ShowResult> {
    const req = { ...request, ref: await this.pullRef(request.ref) }
    const throttled = throttle(onProgress)
    const { name, selector } = parseRef(req.ref)
    // At once, before the manifest is looked for (which may take a while with no peer that has it).
    onProgress?.({ phase: 'finding', connected: this.net.node.getPeers().length, have: 0 })
    const report = this.net.reporter.requested(name, selector ?? null)
    let v: ResolvedVersion
    try {
      let finding: string | undefined = ''
      v = await this.net.pulls.pull(req.ref, {
        pin: req.pin ?? true,
        onProgress: p => {
          // Until the first bytes arrive, each change of how many peers are connected and have it.
          if (finding !== undefined && p.bytes === 0) {
            const line = { phase: 'finding', connected: this.net.node.getPeers().length, have: p.peers }
            const key = `${line.connected} ${line.have}`
            if (key !== finding) onProgress?.(line)
            finding = key
          } else finding = undefined
          throttled({ ...p })
        },
        ...(signal !== undefined ? { signal } : {})
      })
    } catch (err) {
      // The client left (the wait for the pull was aborted with the request's reason), or the pull itself ended.
      const left = signal?.aborted === true && err === signal.reason
      if (!left) {
        report.failed(err)
        throw err
      }
      this.options.log?.info({ ref: req.ref }, 'the client that asked for this pull left; the pull goes on in the background')
      void this.net.pulls.pull(req.ref, { pin: req.pin ?? true }).then(
        async done => { await this.pullCompleted(done, report) },
        failure => { report.failed(failure) }
      ).catch(failure => { this.options.log?.warn({ ref: req.ref, err: (failure as Error).message }, 'recording the end of a background pull failed') })
      throw new AbortedError(`the client left; the pull of ${req.ref} goes on in the background`, { cause: err })
    }
    await this.pullCompleted(v, report)
    return await this.toShow(v)
  }

  /**
   * `name@<version id>` for any ref, as the other commands take them: a version id as given; a
   * label by the head this node holds for it (what followers pull), else the local label; a unique
   * prefix of 8+ characters, or a bare name (its `latest`, else its newest version), among the
   * versions this node knows (stored, or named by heads).
   */
  private async pullRef (ref: string): Promise<string> {
    const { name, selector } = parseRef(ref)
    if (selector !== undefined && isCid(selector)) return ref
    if (selector !== undefined) {
      const head = (await this.headOps.heads()).find(h => h.model === name && h.label === selector)
      if (head !== undefined && head.version !== null) return `${name}@${head.version}`
    }
    try {
      return `${name}@${this.net.search.resolve(ref)}`
    } catch (err) {
      if (err instanceof NotFoundError) throw new NotFoundError(`${err.message}: give ${name}@<version id> to pull a version this node has not heard of`, { cause: err })
      throw err
    }
  }

  private async pullCompleted (v: ResolvedVersion, report: RequestedPull): Promise<void> {
    report.completed(v)
    await this.refreshSearch(v.version)
    this.options.events.emit('version.added', { model: v.name, version: v.version, via: 'pull' })
  }

  async cancelPull (ref: string, signal?: AbortSignal): Promise<PullCancelResult> {
    const { selector } = parseRef(ref)
    return await this.net.pulls.cancel(selector !== undefined && isCid(selector) ? ref : await this.pullRef(ref), signal)
  }

  async search (query: string, options: { limit?: number, similar?: string } = {}): Promise<SearchResult> {
    const { search } = this.net
    const limit = options.limit !== undefined ? { limit: options.limit } : {}
    if (options.similar !== undefined) return search.similar(search.resolve(options.similar), { ...limit, ...(query !== '' ? { query } : {}) })
    return search.search(query, limit)
  }

  async peers (): Promise<PeerRow[]> {
    const { node, judge } = this.net
    const rows = new Map<string, PeerRow>()
    for (const c of node.getConnections()) {
      const id = c.remotePeer.toString()
      const row = rows.get(id) ?? { peerId: id, addresses: [], connected: true, bytesReceived: 0, wireBytesReceived: 0, bytesSent: 0, wireBytesSent: 0, offences: {} }
      row.addresses.push(c.remoteAddr.toString())
      rows.set(id, row)
    }
    for (const r of judge.list()) {
      const row = rows.get(r.peer) ?? { peerId: r.peer, addresses: [], connected: false, bytesReceived: 0, wireBytesReceived: 0, bytesSent: 0, wireBytesSent: 0, offences: {} }
      rows.set(r.peer, {
        ...row, bytesReceived: r.bytesReceived, wireBytesReceived: r.wireBytesReceived, bytesSent: r.bytesSent, wireBytesSent: r.wireBytesSent, offences: r.offences as Record<string, number>,
        ...(r.bannedUntil !== undefined && r.bannedUntil > Date.now() ? { bannedUntil: r.bannedUntil } : {}),
        ...(r.lastOffence !== undefined ? { lastOffence: r.lastOffence } : {}),
        ...(r.note !== undefined ? { note: r.note } : {})
      })
    }
    return [...rows.values()]
  }

  async id (): Promise<IdResult> {
    const { node } = this.net
    return { peerId: node.peerId.toString(), addresses: node.getMultiaddrs().map(String) }
  }

  async version (): Promise<VersionResult> {
    return { version: SHOAL_VERSION, api: 'v1', node: process.version }
  }

  async status (): Promise<StatusResult> {
    const store = await this.store.totals()
    return {
      version: SHOAL_VERSION, pid: process.pid, home: this.info.home, socket: this.info.socket,
      uptimeSeconds: Math.round((Date.now() - this.started) / 1000),
      store,
      heads: this.options.headCounters(),
      untrusted: this.options.untrusted(),
      ...(this.options.metrics() !== undefined ? { metrics: this.options.metrics() } : {}),
      leases: this.serving.leaseList().map(l => ({ holder: l.holder, model: l.model, version: l.version, expiresAt: l.expiresAt })),
      pulls: [
        ...this.net.pulls.listChecking().map(p => ({ ...p, bytes: 0, totalBytes: 0, state: 'checking' as const })),
        ...this.net.pulls.list().map(p => ({ name: p.name, version: p.version, bytes: p.bytes, totalBytes: p.totalBytes, state: 'fetching' as const }))
      ]
    }
  }

  async add (req: AddRequest, onProgress?: (p: Progress) => void, signal?: AbortSignal): Promise<ShowResult> {
    // The label is published below, after the add: check it (and the rest) before any data is read.
    checkAddOptions(req)
    const throttled = throttle(onProgress)
    const version = await addPath(this.store, req.path, {
      name: req.name,
      ...(req.metadata !== undefined ? { metadata: req.metadata } : {}),
      ...(req.metaFile !== undefined ? { metaFile: req.metaFile } : {}),
      ...(req.origin !== undefined ? { origin: req.origin } : {}),
      ...(req.pin !== undefined ? { pin: req.pin } : {}),
      ...(req.blockSize !== undefined ? { blockSize: req.blockSize } : {}),
      ...(signal !== undefined ? { signal } : {}),
      onProgress: p => throttled({ ...p })
    })
    await this.refreshSearch(version.version)
    this.net.providing.announce(version.version)
    if (version.existing !== true) this.options.events.emit('version.added', { model: req.name, version: version.version, via: 'add' })
    // A label given at add time is published like any other: as a signed head.
    if (req.label !== undefined) {
      try {
        await this.headOps.setLabel({ name: req.name, label: req.label, version: version.version })
      } catch (err) {
        throw restated(err, `added ${req.name}@${version.version}${version.pinned ? ' (pinned)' : ''}, which is kept, but did not set ${req.name}@${req.label}: ${(err as Error).message}`)
      }
    }
    const shown = await this.toShow(req.label !== undefined ? await this.store.resolve(`${req.name}@${version.version}`) : version)
    return version.existing === true ? { ...shown, existing: true } : shown
  }

  async models (): Promise<ModelRow[]> {
    return await this.store.models()
  }

  async versions (name: string): Promise<VersionInfo[]> {
    return await this.store.versions(name)
  }

  async show (ref: string): Promise<ShowResult> {
    return await this.toShow(await this.store.resolve(ref))
  }

  async verify (onProgress?: (p: Progress) => void, signal?: AbortSignal): Promise<VerifyReport> {
    const throttled = throttle(onProgress)
    return await verifyStore(this.store, { onProgress: p => throttled({ ...p }), ...(signal !== undefined ? { signal } : {}) })
  }

  async gc (req: GcRequest): Promise<GcReport> {
    const report = await collectGarbage(this.store, { dryRun: req.dryRun === true, keepLast: this.options.keepLast, keep: this.options.leased() })
    if (!report.dryRun) for (const v of report.versions) this.options.events.emit('version.removed', { model: v.name, version: v.version, via: 'gc' })
    return report
  }

  /** Keeps a version compressed (see `store/cold.ts`); refuses one a label, lease, pull or the rollback window needs. */
  async compress (ref: string): Promise<ColdReport> {
    const v = await this.store.resolve(ref)
    return await compressVersion(this.store, v.version, { keepLast: this.options.keepLast })
  }

  /**
   * Removes one version (`shoal rm`). Refused with `ConflictError` naming what keeps it — local
   * labels, a pin, leases — unless `force`, which drops those labels (locally: a followed label's
   * head would pull the version again), its pin and its leases. Never while it is being pulled.
   */
  async removeVersion (req: RemoveRequest): Promise<RemoveResult> {
    const v = await this.store.resolve(req.ref)
    const short = `${v.name}@${v.version.slice(0, 12)}`
    if (this.net.pulls.list().some(p => p.version === v.version) || this.net.pulls.listChecking().some(p => p.version === v.version)) {
      throw new ConflictError(`${short} is being pulled; stop that first with shoal pull ${v.name}@${v.version} --cancel`)
    }
    const leases = this.serving.leaseList().filter(l => l.version === v.version)
    const reasons = [
      ...(v.labels.length > 0 ? [`labelled ${v.labels.join(', ')}`] : []),
      ...(v.pinned ? ['pinned'] : []),
      ...(leases.length > 0 ? [`leased by ${leases.map(l => l.holder).join(', ')}`] : [])
    ]
    if (reasons.length > 0 && req.force !== true) {
      throw new ConflictError(`${short} is ${reasons.join(', ')}: nothing was removed. To remove it anyway: shoal rm --force ${req.ref}${v.labels.length > 0 ? ` (its local labels go too; move them first with shoal label set ${v.name} <label> <version> to keep them)` : ''}`)
    }
    for (const label of v.labels) await this.store.removeLabel(v.name, label)
    if (v.pinned) await this.store.unpin(v.name, v.version)
    for (const l of leases) await this.serving.release(l.id)
    const report = await collectGarbage(this.store, { only: [v.version] })
    for (const r of report.versions) this.options.events.emit('version.removed', { model: r.name, version: r.version, via: 'rm' })
    return { name: v.name, version: v.version, overrode: req.force === true ? reasons : [], labels: v.labels, bytes: report.bytes }
  }

  async df (signal?: AbortSignal): Promise<DfResult> {
    const usage = await diskUsage(this.store, signal)
    signal?.throwIfAborted()
    const plan = await collectGarbage(this.store, { dryRun: true, keepLast: this.options.keepLast, keep: this.options.leased() })
    return { ...usage, reclaimable: plan.bytes }
  }

  async export (req: ExportRequest, onProgress?: (p: Progress) => void, signal?: AbortSignal): Promise<ExportResult> {
    const throttled = throttle(onProgress)
    const out = await exportVersion(this.store, req.ref, req.dest, {
      overwrite: req.overwrite === true, onProgress: p => throttled({ ...p }), ...(signal !== undefined ? { signal } : {}), ...(req.layout !== undefined ? { layout: req.layout } : {})
    })
    return { name: out.name, version: out.version, dest: out.dest, files: out.manifest.files.length, bytes: out.manifest.files.reduce((n, f) => n + f.size, 0) }
  }

  async setLabel (req: LabelRequest): Promise<LabelResult> { return await this.headOps.setLabel(req) }
  async removeLabel (name: string, label: string): Promise<LabelResult> { return await this.headOps.removeLabel(name, label) }
  async rollback (ref: string, key?: string): Promise<LabelResult> { return await this.headOps.rollback(ref, key) }
  async activate (ref: string): Promise<ActivateResult> { return await this.headOps.activate(ref) }
  async heads (): Promise<HeadRow[]> { return await this.headOps.heads() }
  async labelHistory (ref: string): Promise<HeadHistoryRow[]> { return await this.headOps.history(ref) }
  async resolve (ref: string): Promise<ResolveResult> { return await this.serving.resolve(ref) }
  async resolveEnsure (ref: string, onProgress?: (p: Progress) => void, signal?: AbortSignal): Promise<ResolveResult> {
    const throttled = throttle(onProgress)
    return await this.serving.resolve(ref, { ensure: true, onProgress: p => throttled({ ...p }), ...(signal !== undefined ? { signal } : {}) })
  }

  async leases (): Promise<LeaseRow[]> { return this.serving.leaseList() }
  async lease (ref: string, holder: string, ttlSeconds?: number): Promise<LeaseRow> { return await this.serving.lease({ ref, holder, ...(ttlSeconds !== undefined ? { ttlSeconds } : {}) }) }
  async renewLease (id: string, ttlSeconds?: number): Promise<LeaseRow> { return await this.serving.renew(id, ttlSeconds) }
  async releaseLease (id: string): Promise<{ released: boolean }> { return await this.serving.release(id) }
  async keys (): Promise<KeyRow[]> { return await this.headOps.keys() }
  async newKey (name: string): Promise<KeyRow> { return await this.headOps.newKey(name) }
  async exportKey (name: string, includePrivate: boolean): Promise<KeyExport> { return await this.headOps.exportKey(name, includePrivate) }
  async trust (): Promise<TrustRow[]> { return await this.headOps.trust() }
  async addTrust (key: string, models: string): Promise<TrustRow> { return await this.headOps.addTrust({ key, models }) }
  async removeTrust (key: string, models?: string): Promise<{ removed: number }> { return await this.headOps.removeTrust({ key, ...(models !== undefined ? { models } : {}) }) }
  async events (since?: string, limit = 1000): Promise<EventsResult> { return this.headOps.events(since, limit) }

  /** `name@<version>` pins that version; `name@<label>` pins the label (each version it points at). */
  async pin (ref: string): Promise<PinResult> {
    const label = labelOf(ref)
    if (label !== undefined && await this.store.labelRecord(label.name, label.label) !== undefined) {
      const version = await this.store.pinLabel(label.name, label.label)
      return { name: label.name, version: version ?? '', pinned: true, label: label.label }
    }
    const v = await this.store.resolve(ref)
    await this.store.pin(v.name, v.version)
    return { name: v.name, version: v.version, pinned: true }
  }

  async unpin (ref: string): Promise<PinResult> {
    const label = labelOf(ref)
    if (label !== undefined && await this.store.isLabelPinned(label.name, label.label)) {
      await this.store.unpinLabel(label.name, label.label)
      return { name: label.name, version: (await this.store.labelRecord(label.name, label.label))?.version ?? '', pinned: false, label: label.label }
    }
    const v = await this.store.resolve(ref)
    await this.store.unpin(v.name, v.version)
    return { name: v.name, version: v.version, pinned: false }
  }

  /** Refreshes a version's search doc (`SearchFeed`: one refresh with the `pull.completed` event's); a failure is logged. */
  private async refreshSearch (version: string): Promise<void> {
    await this.net.indexing.refresh(version)
  }

  private async toShow (v: ResolvedVersion): Promise<ShowResult> {
    const record = v.cold ? await this.store.coldRecord(v.version) : undefined
    const show = { ...toShow(v), ...(record !== undefined ? { cold: { at: record.at, savedBytes: record.rawBytes - record.storedBytes } } : {}) }
    if (v.manifest.parent === null) return show
    const parent = await this.store.resolve(`${v.name}@${v.manifest.parent}`).catch(() => undefined)
    if (parent === undefined) return show
    const had = new Set(parent.manifest.files.flatMap(f => f.chunks.map(c => c.id)))
    const chunks = v.manifest.files.flatMap(f => f.chunks)
    const total = chunks.reduce((n, c) => n + c.size, 0)
    const shared = chunks.filter(c => had.has(c.id))
    return {
      ...show,
      parentShared: {
        chunks: chunks.length === 0 ? 0 : shared.length / chunks.length,
        bytes: total === 0 ? 0 : shared.reduce((n, c) => n + c.size, 0) / total
      }
    }
  }
}

/** Advertises in the DHT that this node provides `version` (in the background; best effort). */
/** The label of a `name@label` ref (not a version id or prefix), or undefined. */
function labelOf (ref: string): { name: string, label: string } | undefined {
  const { name, selector } = parseRef(ref)
  if (selector === undefined) return undefined
  try {
    return { name, label: checkLabel(selector) }
  } catch {
    return undefined
  }
}

function toShow (v: ResolvedVersion): ShowResult {
  const m = v.manifest
  return {
    name: v.name, version: v.version, schema: m.schema, blockSize: blockSizeOf(m), created: m.created, parent: m.parent, path: v.path,
    labels: v.labels, pinned: v.pinned, complete: v.missing.length === 0, missing: v.missing,
    metadata: m.metadata, structure: m.structure,
    files: m.files.map(f => ({
      path: f.path, size: f.size, digest: f.digest, format: f.format, chunks: f.chunks.length,
      ...(f.structure !== undefined ? { structure: f.structure } : {})
    }))
  }
}

/** Passes at most one event per `PROGRESS_INTERVAL_MS`, plus the last one of a run. */
function throttle (fn: ((p: Progress) => void) | undefined): (p: Progress) => void {
  if (fn === undefined) return () => {}
  let last = 0
  return p => {
    const now = Date.now()
    const final = typeof p.bytes === 'number' && p.bytes === p.totalBytes
    if (final || now - last >= PROGRESS_INTERVAL_MS) {
      last = now
      fn(p)
    }
  }
}
