/**
 * What serving processes use: resolve (optionally waiting until the version is here), leases, and
 * the event stream. It shapes answers for the wire; pulls, heads and the store decide.
 *
 * `resolve` with `ensure`: for `name@<version id>` pulls the version if needed; for `name@label`
 * answers the local label when it points at a complete version, else pulls the version the
 * label's head names and waits until the label points at it. A version kept compressed (cold) is
 * re-materialized first. It never answers a partial snapshot, nor a cold version's missing one.
 */
import type { VersionId } from '../core/digest.js'
import { isCid } from '../core/digest.js'
import { ConflictError, NotFoundError } from '../core/errors.js'
import { parseRef } from '../core/names.js'
import type { Activator } from '../heads/activator.js'
import type { HeadBook } from '../heads/book.js'
import type { LeaseRow, Progress, ResolveResult } from '../rpc/api.js'
import type { SseEvent } from '../rpc/server.js'
import type { Catalogue } from '../store/api.js'
import type { ResolvedVersion } from '../store/store.js'
import type { DaemonEvent, EventType } from '../core/events.js'
import type { EventBus } from './events.js'
import type { Lease, LeaseTable } from './leases.js'
import type { PullManager } from './pulls.js'

/** @default 3 — heads may move while an ensure waits; it follows them this many times */
const MAX_ENSURE_ROUNDS = 3

export class ServingService {
  constructor (private readonly deps: {
    store: Pick<Catalogue, 'resolve' | 'rematerialize'>
    pulls: PullManager
    book: HeadBook
    activator: Activator
    leases: LeaseTable
    events: EventBus
  }) {}

  /**
   * The complete local version of `ref`, with `cursor`: the newest event id before it was read, so
   * `watch({ since: cursor })` replays any label move that came after (none falls between the two).
   */
  async resolve (ref: string, options: { ensure?: boolean, onProgress?: (p: Progress) => void, signal?: AbortSignal } = {}): Promise<ResolveResult> {
    const cursor = this.deps.events.cursor()
    const toResult = (v: ResolvedVersion): ResolveResult => resultOf(v, cursor)
    if (options.ensure !== true) return toResult(await this.complete(ref))
    const { name, selector } = parseRef(ref)
    for (let round = 0; round < MAX_ENSURE_ROUNDS; round++) {
      const here = await this.deps.store.resolve(ref).catch(() => undefined)
      if (here?.cold === true) await this.deps.store.rematerialize(here.version, options.signal !== undefined ? { signal: options.signal } : {})
      const local = await this.complete(ref).catch(() => undefined)
      if (local !== undefined) return toResult(local)
      let version: VersionId | undefined
      if (selector !== undefined && isCid(selector)) version = selector
      else if (selector !== undefined) version = this.deps.book.get(name, selector)?.head.version ?? undefined
      if (version === undefined) throw new NotFoundError(`${ref} is neither here nor named by any head this node holds; check the name and label, or that this node trusts its publisher`)
      await this.deps.pulls.pull(`${name}@${version}`, {
        pin: false,
        ...(options.onProgress !== undefined ? { onProgress: p => options.onProgress?.({ ...p }) } : {}),
        ...(options.signal !== undefined ? { signal: options.signal } : {})
      })
      if (selector !== undefined && !isCid(selector)) await this.deps.activator.reconcile(name, selector)
    }
    return toResult(await this.complete(ref))
  }

  async lease (req: { ref: string, holder: string, ttlSeconds?: number }): Promise<LeaseRow> {
    const v = await this.complete(req.ref)
    return toRow(await this.deps.leases.acquire({
      model: v.name, version: v.version, path: v.path, holder: req.holder,
      ...(req.ttlSeconds !== undefined ? { ttlMs: req.ttlSeconds * 1000 } : {})
    }))
  }

  async renew (id: string, ttlSeconds?: number): Promise<LeaseRow> {
    return toRow(await this.deps.leases.renew(id, ttlSeconds === undefined ? undefined : ttlSeconds * 1000))
  }

  async release (id: string): Promise<{ released: boolean }> {
    return { released: await this.deps.leases.release(id) }
  }

  leaseList (): LeaseRow[] {
    return this.deps.leases.list().map(toRow)
  }

  /**
   * Streams events until `signal` aborts: first those after `since` (or "gone" when they were
   * compacted or are from another boot, so the client re-resolves), then live ones.
   */
  async watch (options: { since?: string, types?: EventType[], model?: string, send: (e: SseEvent) => void, signal: AbortSignal }): Promise<void> {
    const wanted = (e: DaemonEvent): boolean =>
      (options.types === undefined || options.types.includes(e.type)) && (options.model === undefined || e.data.model === options.model)
    const send = (e: DaemonEvent): void => { if (wanted(e)) options.send({ id: e.id, event: e.type, data: { ...e.data, time: e.time } }) }
    // Replay and subscription happen in one synchronous stretch: no event can fall between them.
    const unsubscribe = this.deps.events.subscribe(send)
    try {
      if (options.since !== undefined) {
        const missed = this.deps.events.since(options.since)
        if (missed === undefined) options.send({ event: 'gone', data: { since: options.since, message: 'events after that id are no longer kept (or the daemon restarted); resolve again' } })
        else for (const e of missed) send(e)
      }
      options.send({ event: 'ready', data: { boot: this.deps.events.boot } })
      await new Promise<void>(resolve => {
        if (options.signal.aborted) resolve()
        options.signal.addEventListener('abort', () => resolve(), { once: true })
      })
    } finally {
      unsubscribe()
    }
  }

  /**
   * A complete, materialized version for `ref` (the local label for `name@label`), else
   * NotFoundError (not here or incomplete) or ConflictError (kept compressed).
   */
  private async complete (ref: string): Promise<ResolvedVersion> {
    const v = await this.deps.store.resolve(ref)
    if (v.missing.length > 0) throw new NotFoundError(`${v.name}@${v.version} is not complete on this node (missing ${v.missing.length} files)`)
    if (v.cold) throw new ConflictError(`${v.name}@${v.version} is kept compressed on this node; resolve it with --ensure to bring its files back`)
    return v
  }
}

function resultOf (v: ResolvedVersion, cursor: string): ResolveResult {
  return {
    model: v.name, version: v.version, path: v.path, labels: v.labels, cursor,
    files: v.manifest.files.map(f => ({ path: f.path, size: f.size, digest: f.digest }))
  }
}

function toRow (l: Lease): LeaseRow {
  return { ...l }
}
