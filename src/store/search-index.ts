/**
 * The search index (seed §4): one `SearchDoc` per version this node knows — stored here
 * (`manifests`) or only named by a head (`known`) — kept in the `search` sublevel and, for queries,
 * in memory. A query is a linear scan of prepared documents with a compiled predicate; 10,000
 * versions answer in a few milliseconds (`scripts/bench-search.ts`), so there are no secondary
 * structures to keep consistent.
 *
 * MUST hold:
 * - the index is derived data: `open` reconciles it with the store's records (adds versions it
 *   lacks, drops versions the store no longer has, re-derives documents of another
 *   `SEARCH_DOC_SCHEMA`, fixes labels), so a crash between a store write and the matching index
 *   call, or a store written by an older build (no `search` sublevel), heals at the next start;
 * - writes are serialised, and memory changes only after the record is written;
 * - `search` and `similar` read memory only: synchronous, no I/O, bounded by the number of docs.
 *
 * Keeping it fresh while running is the caller's job (the daemon): `refresh(version)` after a
 * version is added, imported or removed, or a head's manifest is stored; `refreshLabels(model)`
 * after a label or an accepted head of that model moves. `upsert` and `remove` are the primitives
 * underneath, for callers that already hold the bytes and labels.
 *
 * Not a goal: ranking beyond a simple free-text score and structure similarity; fuzzy matching.
 */
import type { VersionId } from '../core/digest.js'
import { InvalidInputError, NotFoundError } from '../core/errors.js'
import { decodeManifest } from '../core/manifest.js'
import { storedHeadVersion } from '../core/heads.js'
import { parseRef } from '../core/names.js'
import {
  MAX_QUERY_LIMIT, compareDefault, compareDocs, compileQuery, parseQuery, prepareDoc, similarity, structureVector, textScore,
  type PreparedDoc, type StructureVector
} from '../core/query.js'
import { SEARCH_DOC_SCHEMA, searchDocOf, type SearchDoc } from '../core/search-doc.js'
import type { IndexDb, IndexOp } from './index-db.js'
import { partsOf } from './internal.js'
import type { Store } from './store.js'

/** @default 20 — rows returned when neither the query nor the caller sets a limit */
export const DEFAULT_SEARCH_LIMIT = 20
/** @default 0.05 — `similar` leaves out versions scoring below this */
export const MIN_SIMILARITY = 0.05
/** @default 500 — documents per index batch during reconcile and rebuild */
export const SEARCH_BATCH_SIZE = 500

export interface SearchLogger {
  warn: (obj: object, msg?: string) => void
}

/** One result row: what a listing shows, without the structure signature. */
export interface SearchRow {
  model: string
  version: VersionId
  created: number
  updated: number
  size: number
  params: number
  files: number
  tensors: number
  framework?: string
  task?: string
  license?: string
  architecture?: string
  description?: string
  labels: string[]
  formats: string[]
  dtypes: string[]
  tags: Record<string, string>
  /** Stored here (true) or only known through a head (false). */
  local: boolean
  /** Free-text relevance (`search` with text terms) or structure similarity in [0, 1] (`similar`). */
  score?: number
}

export interface SearchResult {
  rows: SearchRow[]
  /** How many versions matched, before the limit. */
  total: number
}

export interface SimilarOptions {
  /** @default DEFAULT_SEARCH_LIMIT */
  limit?: number
  /** A filter in the query language (its ORDER BY is ignored: rows go by score). */
  query?: string
  /** @default MIN_SIMILARITY */
  minScore?: number
}

export interface ReconcileReport { added: number, updated: number, removed: number }

interface Entry { prepared: PreparedDoc, vector: StructureVector }
interface LabelInfo { labels: string[], updated: number }

export class SearchIndex {
  private readonly docs = new Map<VersionId, Entry>()
  private readonly byModel = new Map<string, Set<VersionId>>()
  private queue: Promise<unknown> = Promise.resolve()

  private constructor (private readonly index: IndexDb, private readonly log: SearchLogger) {}

  /** Loads the `search` sublevel into memory and reconciles it with the store (module doc). */
  /** The search index of `store`'s records (see `open`). */
  static async forStore (store: Store, options: { log?: SearchLogger } = {}): Promise<SearchIndex> {
    return await SearchIndex.open(partsOf(store).index, options)
  }

  static async open (index: IndexDb, options: { log?: SearchLogger } = {}): Promise<SearchIndex> {
    const search = new SearchIndex(index, options.log ?? { warn () {} })
    for await (const [version, doc] of index.search.iterator()) {
      if (doc.schema === SEARCH_DOC_SCHEMA && doc.version === version) search.remember(doc)
    }
    await search.reconcile()
    return search
  }

  /** Number of versions indexed. */
  get size (): number {
    return this.docs.size
  }

  get (version: VersionId): SearchDoc | undefined {
    return this.docs.get(version)?.prepared.doc
  }

  // ---- queries --------------------------------------------------------------------------------

  /**
   * Runs a query (`core/query.ts`). Rows go by ORDER BY when given, else by free-text score when
   * the query has text terms, else newest first. The query's LIMIT wins over `options.limit`.
   */
  search (query: string, options: { limit?: number } = {}): SearchResult {
    const q = parseQuery(query)
    const limit = clampLimit(q.limit ?? options.limit)
    const predicate = compileQuery(q.where)
    const hits: Array<{ p: PreparedDoc, score: number }> = []
    for (const { prepared } of this.docs.values()) {
      if (predicate(prepared)) hits.push({ p: prepared, score: q.terms.length > 0 ? textScore(prepared, q.terms) : 0 })
    }
    const cmp = q.order.length > 0
      ? (a: { p: PreparedDoc }, b: { p: PreparedDoc }) => compareDocs(a.p, b.p, q.order)
      : (a: { p: PreparedDoc, score: number }, b: { p: PreparedDoc, score: number }) => b.score - a.score || compareDefault(a.p, b.p)
    const top = topK(hits, limit, cmp)
    return { rows: top.map(h => rowOf(h.p.doc, q.terms.length > 0 ? h.score : undefined)), total: hits.length }
  }

  /**
   * Versions whose structure is closest to `version`'s (`core/query.ts` `similarity`), best first,
   * then newest: 1 means the same tensor names and shapes (a fine-tune or a re-encoding of it).
   * The version itself is left out. Throws `NotFoundError` when it is not indexed.
   */
  similar (version: VersionId, options: SimilarOptions = {}): SearchResult {
    const target = this.docs.get(version)
    if (target === undefined) throw new NotFoundError(`version ${version} is not in the search index`)
    const q = options.query !== undefined ? parseQuery(options.query) : undefined
    const predicate = compileQuery(q?.where)
    const limit = clampLimit(q?.limit ?? options.limit)
    const min = options.minScore ?? MIN_SIMILARITY
    const hits: Array<{ p: PreparedDoc, score: number }> = []
    // Fine-tunes share a structure: score each distinct structure once.
    const memo = new Map<string, number>()
    for (const [v, entry] of this.docs) {
      if (v === version) continue
      const exact = entry.vector.exact
      let score = exact === '' ? 0 : memo.get(exact)
      if (score === undefined) memo.set(exact, score = similarity(target.vector, entry.vector))
      if (score >= min && predicate(entry.prepared)) hits.push({ p: entry.prepared, score })
    }
    const top = topK(hits, limit, (a, b) => b.score - a.score || compareDefault(a.p, b.p))
    return { rows: top.map(h => rowOf(h.p.doc, h.score)), total: hits.length }
  }

  /**
   * Resolves `name`, `name@label`, `name@<version id>` or `name@<unique prefix of 8+ characters>`
   * among indexed versions (stored or known): a bare name means `latest`, else the newest.
   */
  resolve (ref: string): VersionId {
    const { name, selector } = parseRef(ref)
    const docs = [...this.byModel.get(name) ?? []].map(v => this.docs.get(v)!.prepared.doc)
    if (docs.length === 0) throw new NotFoundError(`no model named ${name} is known here`)
    const newest = (xs: SearchDoc[]): SearchDoc | undefined => xs.sort((a, b) => b.created - a.created)[0]
    const pick = selector === undefined
      ? newest(docs.filter(d => d.labels.includes('latest'))) ?? newest(docs)
      : docs.find(d => d.version === selector) ?? newest(docs.filter(d => d.labels.includes(selector)))
    if (pick !== undefined) return pick.version
    if (selector !== undefined && selector.length >= 8) {
      const prefixed = docs.filter(d => d.version.startsWith(selector))
      if (prefixed.length === 1) return prefixed[0]!.version
      if (prefixed.length > 1) throw new InvalidInputError(`version prefix ${selector} of ${name} is ambiguous (${prefixed.length} versions); give more characters`)
    }
    throw new NotFoundError(`${name}@${selector ?? ''} is neither a label nor a known version`)
  }

  // ---- updates --------------------------------------------------------------------------------

  /**
   * Indexes a version from its manifest bytes (trusted: read from this store) and its labels.
   * `local` defaults to whether the store records the version. Idempotent.
   */
  async upsert (version: VersionId, manifestBytes: Uint8Array, labels: readonly string[], options: { local?: boolean, updated?: number } = {}): Promise<SearchDoc> {
    return await this.serial(async () => {
      const local = options.local ?? await this.index.versions.get(version) !== undefined
      const doc = searchDocOf(decodeManifest(manifestBytes), version, labels, { local, ...(options.updated !== undefined ? { updated: options.updated } : {}) })
      await this.index.commit([{ type: 'put', sublevel: this.index.search, key: version, value: doc }])
      this.remember(doc)
      return doc
    })
  }

  /** Drops a version from the index. Idempotent. */
  async remove (version: VersionId): Promise<void> {
    await this.serial(async () => {
      await this.index.commit([{ type: 'del', sublevel: this.index.search, key: version }])
      this.forget(version)
    })
  }

  /**
   * Re-derives one version from the store: its manifest from `manifests` (local) or `known`, its
   * labels from `labels` and `heads`. Removes it when the store has neither manifest.
   */
  async refresh (version: VersionId): Promise<SearchDoc | undefined> {
    return await this.serial(async () => {
      const ops: IndexOp[] = []
      const doc = await this.derive(version, ops)
      await this.index.commit(ops)
      if (doc === undefined) this.forget(version)
      else this.remember(doc)
      return doc
    })
  }

  /** Re-reads the labels and heads of `model` and updates the labels of its indexed versions. */
  async refreshLabels (model: string): Promise<number> {
    return await this.serial(async () => {
      const info = await this.labelInfo(model)
      const docs = [...this.byModel.get(model) ?? []].map(v => this.docs.get(v)!.prepared.doc)
      return await this.applyLabels(docs, info)
    })
  }

  /**
   * Brings the index in line with the store (see the module doc). Runs at `open`; safe at any time.
   */
  async reconcile (): Promise<ReconcileReport> {
    return await this.serial(async () => await this.reconcileNow())
  }

  /** Forgets every document and derives them all again from the store. */
  async rebuild (): Promise<ReconcileReport> {
    return await this.serial(async () => {
      await this.index.search.clear()
      this.docs.clear()
      this.byModel.clear()
      return await this.reconcileNow()
    })
  }

  // ---- internals ------------------------------------------------------------------------------

  private async reconcileNow (): Promise<ReconcileReport> {
    const local = new Set(await this.index.manifests.keys().all())
    const known = new Set(await this.index.known.keys().all())
    const report: ReconcileReport = { added: 0, updated: 0, removed: 0 }
    let ops: IndexOp[] = []
    const flush = async (): Promise<void> => {
      await this.index.commit(ops)
      ops = []
    }
    for (const version of [...this.docs.keys()]) {
      if (local.has(version) || known.has(version)) continue
      ops.push({ type: 'del', sublevel: this.index.search, key: version })
      this.forget(version)
      report.removed++
      if (ops.length >= SEARCH_BATCH_SIZE) await flush()
    }
    const labels = await this.labelInfo()
    for (const version of [...local, ...known]) {
      const have = this.docs.get(version)?.prepared.doc
      if (have !== undefined && have.local === local.has(version)) continue
      const pending: IndexOp[] = []
      const doc = await this.derive(version, pending, labels)
      if (doc === undefined) continue
      ops.push(...pending)
      this.remember(doc)
      if (have === undefined) report.added++
      else report.updated++
      if (ops.length >= SEARCH_BATCH_SIZE) await flush()
    }
    await flush()
    report.updated += await this.applyLabels([...this.docs.values()].map(e => e.prepared.doc), labels)
    return report
  }

  /**
   * Builds a version's document from the store into `ops` (a put, or a del when it is gone).
   * `labels`: every version's labels when the caller read them all; else read for its model.
   */
  private async derive (version: VersionId, ops: IndexOp[], labels?: Map<VersionId, LabelInfo>): Promise<SearchDoc | undefined> {
    const stored = await this.index.manifests.get(version)
    const bytes = stored ?? await this.index.known.get(version)
    if (bytes === undefined) {
      ops.push({ type: 'del', sublevel: this.index.search, key: version })
      return undefined
    }
    let manifest
    try {
      manifest = decodeManifest(bytes)
    } catch (err) {
      this.log.warn({ version, err }, 'not indexing a version whose manifest does not decode; run shoal verify')
      return undefined
    }
    const info = (labels ?? await this.labelInfo(manifest.name)).get(version)
    const record = stored !== undefined ? await this.index.versions.get(version) : undefined
    const updated = Math.max(manifest.created, record?.addedAt ?? 0, info?.updated ?? 0)
    const doc = searchDocOf(manifest, version, info?.labels ?? [], { local: record !== undefined, updated })
    ops.push({ type: 'put', sublevel: this.index.search, key: version, value: doc })
    return doc
  }

  /** Writes label changes for `docs` from `info`; returns how many changed. */
  private async applyLabels (docs: SearchDoc[], info: Map<VersionId, LabelInfo>): Promise<number> {
    const changed: SearchDoc[] = []
    for (const doc of docs) {
      const next = info.get(doc.version)
      const labels = next?.labels ?? []
      if (sameList(labels, doc.labels)) continue
      changed.push({ ...doc, labels, updated: Math.max(doc.updated, next?.updated ?? 0) })
    }
    for (let i = 0; i < changed.length; i += SEARCH_BATCH_SIZE) {
      const slice = changed.slice(i, i + SEARCH_BATCH_SIZE)
      await this.index.commit(slice.map(doc => ({ type: 'put', sublevel: this.index.search, key: doc.version, value: doc })))
      for (const doc of slice) this.remember(doc)
    }
    return changed.length
  }

  /**
   * Labels per version, from this store's labels and from accepted heads (of `model`, or all),
   * with the latest time one of them moved.
   */
  private async labelInfo (model?: string): Promise<Map<VersionId, LabelInfo>> {
    const range = model === undefined ? {} : { gt: `${model}\0`, lt: `${model}\u0001` }
    const sets = new Map<VersionId, { labels: Set<string>, updated: number }>()
    const add = (version: VersionId, label: string, at: number): void => {
      const entry = sets.get(version) ?? { labels: new Set(), updated: 0 }
      entry.labels.add(label)
      entry.updated = Math.max(entry.updated, at)
      sets.set(version, entry)
    }
    for await (const [key, record] of this.index.labels.iterator(range)) {
      add(record.version, key.slice(key.indexOf('\0') + 1), record.updatedAt)
    }
    for await (const [key, record] of this.index.heads.iterator(range)) {
      const version = storedHeadVersion(Buffer.from(record.head, 'base64'))
      if (version === undefined) this.log.warn({ head: key.replace('\0', '@') }, 'skipping a stored head that does not decode')
      else if (version !== null) add(version, key.slice(key.indexOf('\0') + 1), record.receivedAt)
    }
    return new Map([...sets].map(([v, e]) => [v, { labels: [...e.labels].sort(), updated: e.updated }]))
  }

  private remember (doc: SearchDoc): void {
    const old = this.docs.get(doc.version)
    const vector = old !== undefined && old.prepared.doc.structure.exact === doc.structure.exact ? old.vector : structureVector(doc)
    this.docs.set(doc.version, { prepared: prepareDoc(doc), vector })
    let set = this.byModel.get(doc.model)
    if (set === undefined) this.byModel.set(doc.model, set = new Set())
    set.add(doc.version)
  }

  private forget (version: VersionId): void {
    const entry = this.docs.get(version)
    if (entry === undefined) return
    this.docs.delete(version)
    const set = this.byModel.get(entry.prepared.doc.model)
    set?.delete(version)
    if (set?.size === 0) this.byModel.delete(entry.prepared.doc.model)
  }

  private async serial<T> (fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn)
    this.queue = run.catch(() => {})
    return await run
  }
}

/**
 * The version a stored head names (null: the label was removed), read without re-checking it:
 * a head is stored only after `openSignedHead` accepted it (schema, canonical body, signature),
 * and re-verifying every head at every start costs about 1 ms each. Undefined when it does not
 * decode. (Candidate for `core/heads.ts`, next to the format it reads.)
 */
function clampLimit (limit: number | undefined): number {
  return Math.max(1, Math.min(limit ?? DEFAULT_SEARCH_LIMIT, MAX_QUERY_LIMIT))
}

function sameList (a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}

/** The `k` smallest items under `cmp`, sorted; one comparison for most items once full. */
export function topK<T> (items: Iterable<T>, k: number, cmp: (a: T, b: T) => number): T[] {
  const out: T[] = []
  for (const item of items) {
    if (out.length === k && cmp(item, out[k - 1]!) >= 0) continue
    let lo = 0
    let hi = out.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (cmp(item, out[mid]!) < 0) hi = mid
      else lo = mid + 1
    }
    out.splice(lo, 0, item)
    if (out.length > k) out.pop()
  }
  return out
}

function rowOf (doc: SearchDoc, score: number | undefined): SearchRow {
  const row: SearchRow = {
    model: doc.model, version: doc.version, created: doc.created, updated: doc.updated, size: doc.size, params: doc.params,
    files: doc.files, tensors: doc.tensors, labels: doc.labels, formats: doc.formats, dtypes: doc.dtypes, tags: doc.tags, local: doc.local
  }
  for (const key of ['framework', 'task', 'license', 'architecture', 'description'] as const) {
    if (doc[key] !== undefined) row[key] = doc[key]
  }
  if (score !== undefined) row.score = score
  return row
}
