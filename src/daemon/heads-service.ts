/**
 * The head operations of the RPC API: publishing labels as signed heads, rollback, activation,
 * listing heads, resolving refs to local paths, keys and trust. It shapes answers for the wire and
 * delegates the decisions to the head book (ordering, checks) and the activator (when to switch).
 */
import type { VersionId } from '../core/digest.js'
import { isCid } from '../core/digest.js'
import { ConflictError, InvalidInputError, NotFoundError, restated } from '../core/errors.js'
import type { Activation, SignedHead } from '../core/heads.js'
import { checkPublisherKey } from '../core/heads.js'
import { decodeManifest } from '../core/manifest.js'
import { checkLabel, checkModelName, parseRef } from '../core/names.js'
import { checkTrustRule, type TrustPolicy, type TrustRule } from '../core/trust.js'
import type { Activator } from '../heads/activator.js'
import type { HeadBook } from '../heads/book.js'
import type { KeyRing, TrustFile } from '../heads/keyring.js'
import type { ActivateResult, HeadHistoryRow, HeadRow, KeyRow, LabelResult, TrustRow } from '../rpc/api.js'
import type { LabelRequest } from '../rpc/schemas.js'
import type { BlobSink, Catalogue, HeadRecords } from '../store/api.js'
import type { DaemonEvent } from '../core/events.js'
import type { EventBus } from './events.js'

export class HeadsService {
  constructor (private readonly deps: {
    store: Pick<Catalogue, 'resolve' | 'labelRecord' | 'isComplete'> & Pick<BlobSink, 'writable'> & { heads: HeadRecords }
    book: HeadBook
    activator: Activator
    keys: KeyRing
    trustFile: TrustFile
    /** Rules from config.json. */
    configTrust: TrustRule[]
    policy: TrustPolicy
    events: EventBus
  }) {}

  /** The trust rules in force: this home's keys for every model, then config, then trust.json. */
  static rules (keys: KeyRing, configTrust: TrustRule[], trustFile: TrustFile): TrustRule[] {
    return [...keys.list().map(k => ({ key: k.publicKey, models: '*' })), ...configTrust, ...trustFile.list()]
  }

  /**
   * Publishes a signed head moving `name@label` to a version this node holds, then applies it here.
   * Answers only once the local label is durably moved (or, for a cold or jittered head, staged);
   * when the move fails after the head went out, the error says both.
   */
  async setLabel (req: LabelRequest): Promise<LabelResult> {
    const { store } = this.deps
    checkLabel(req.label)
    const target = await store.resolve(`${req.name}@${req.version}`)
    if (target.missing.length > 0) throw new ConflictError(`${req.name}@${target.version} is not complete on this node (missing ${target.missing.join(', ')}); pull it first`)
    return await this.publish(req.name, req.label, target.version, req)
  }

  /** Publishes a removal of `name@label`. */
  async removeLabel (name: string, label: string): Promise<LabelResult> {
    checkModelName(name)
    checkLabel(label)
    const current = this.deps.book.get(name, label)?.head.version ?? (await this.deps.store.labelRecord(name, label))?.version
    if (current === undefined || current === null) throw new NotFoundError(`${name}@${label} is not set`)
    return await this.publish(name, label, null, {})
  }

  /** Moves `name@label` back to the version it pointed at before, with a new head. */
  async rollback (ref: string, key?: string): Promise<LabelResult> {
    const { name, label } = labelRef(ref)
    const head = this.deps.book.get(name, label)
    const record = await this.deps.store.labelRecord(name, label)
    const current = head?.head.version ?? record?.version ?? null
    const previous = head?.head.previous ?? record?.history.find(h => h.version !== current)?.version ?? null
    if (previous === null || previous === current) throw new NotFoundError(`${name}@${label} has no earlier version to roll back to`)
    if (!await this.deps.store.isComplete(previous)) throw new ConflictError(`the previous version ${previous} of ${name}@${label} is not on this node any more; pull it, then run shoal label set`)
    return await this.publish(name, label, previous, { ...(key !== undefined ? { key } : {}), expect: current })
  }

  async activate (ref: string): Promise<ActivateResult> {
    const { name, label } = labelRef(ref)
    const r = await this.deps.activator.activate(name, label)
    return { name, label, version: r.version, previous: r.previous }
  }

  async heads (): Promise<HeadRow[]> {
    const rows: HeadRow[] = []
    for (const h of this.deps.book.list()) rows.push(await this.row(h))
    return rows.sort((a, b) => a.model === b.model ? (a.label < b.label ? -1 : 1) : (a.model < b.model ? -1 : 1))
  }

  async history (ref: string): Promise<HeadHistoryRow[]> {
    const { name, label } = labelRef(ref)
    return (await this.deps.book.history(name, label)).map(h => ({
      version: h.head.version, previous: h.head.previous, stamp: h.head.stamp,
      publisher: h.head.publisher, activation: h.head.activation
    }))
  }

  async keys (): Promise<KeyRow[]> {
    return this.deps.keys.list().map(k => ({
      name: k.name, publicKey: k.publicKey,
      trusted: this.deps.policy.list().filter(r => r.key === k.publicKey).map(r => r.models)
    }))
  }

  async newKey (name: string): Promise<KeyRow> {
    const k = await this.deps.keys.create(name)
    this.refreshTrust()
    return { name: k.name, publicKey: k.publicKey, trusted: ['*'] }
  }

  async exportKey (name: string, includePrivate: boolean): Promise<{ name: string, publicKey: string, privateKey?: string }> {
    const k = this.deps.keys.list().find(x => x.name === name)
    if (k === undefined) throw new NotFoundError(`no publisher key named ${name}`)
    return { name, publicKey: k.publicKey, ...(includePrivate ? { privateKey: this.deps.keys.exportPrivate(name) } : {}) }
  }

  async trust (): Promise<TrustRow[]> {
    const own = new Set(this.deps.keys.list().map(k => k.publicKey))
    return [
      ...[...own].map(key => ({ key, models: '*', source: 'home-key' as const })),
      ...this.deps.configTrust.map(r => ({ ...r, source: 'config' as const })),
      ...this.deps.trustFile.list().map(r => ({ ...r, source: 'trust-file' as const }))
    ]
  }

  async addTrust (rule: { key: string, models: string }): Promise<TrustRow> {
    const checked = checkTrustRule(rule)
    await this.deps.trustFile.add(checked)
    this.refreshTrust()
    return { ...checked, source: 'trust-file' }
  }

  async removeTrust (rule: { key: string, models?: string }): Promise<{ removed: number }> {
    let key
    try {
      key = checkPublisherKey(rule.key)
    } catch (err) {
      throw new InvalidInputError((err as Error).message)
    }
    const removed = await this.deps.trustFile.remove(key, rule.models)
    if (removed === 0) throw new NotFoundError(`no trust.json rule for ${rule.key}${rule.models !== undefined ? ` and ${rule.models}` : ''} (keys of this home and config rules are not removed here)`)
    this.refreshTrust()
    return { removed }
  }

  events (since: string | undefined, limit: number): { events: DaemonEvent[], gone: boolean } {
    if (since === undefined) return { events: this.deps.events.recent(limit), gone: false }
    const events = this.deps.events.since(since)
    return events === undefined ? { events: [], gone: true } : { events: events.slice(0, limit), gone: false }
  }

  private refreshTrust (): void {
    this.deps.policy.replace(HeadsService.rules(this.deps.keys, this.deps.configTrust, this.deps.trustFile))
  }

  private async publish (name: string, label: string, version: VersionId | null, req: { expect?: string | null, activation?: LabelRequest['activation'], key?: string }): Promise<LabelResult> {
    const { book, activator, keys, store } = this.deps
    const local = (await store.labelRecord(name, label))?.version ?? null
    const current = book.get(name, label)?.head.version ?? local
    const expect = req.expect === undefined ? undefined : req.expect === null ? null : await this.versionOf(name, req.expect)
    // A store that takes no writes could not move the local label: publish nothing then.
    await store.writable({ doing: `publishing a head for ${name}@${label}`, kept: 'nothing was published' })
    // The compare-and-swap is the book's, in the step that publishes.
    const signed = await book.publish({
      model: name, label, version,
      activation: toActivation(req.activation),
      key: keys.signer(req.key),
      ...(expect !== undefined ? { expect, unheaded: local } : {})
    })
    try {
      await activator.reconcileNow(name, label)
    } catch (err) {
      const head = version === null ? `the head removing ${name}@${label}` : `the head moving ${name}@${label} to ${version}`
      throw restated(err, `published ${head} (nodes that follow the label act on it), but this node's own label was not changed: ${(err as Error).message}; this node applies the head by itself once its store takes writes again (or at its next start)`)
    }
    const h = signed.head
    return { name, label, version, previous: h.previous ?? (current === version ? null : current), stamp: `${h.stamp.wall}.${h.stamp.counter}`, publisher: h.publisher, activation: h.activation }
  }

  /** A version id, unique prefix or label of `name` → the version id (stored or named by a head). */
  private async versionOf (name: string, selector: string): Promise<VersionId> {
    if (isCid(selector)) return selector
    try {
      return (await this.deps.store.resolve(`${name}@${selector}`)).version
    } catch (err) {
      const head = this.deps.book.get(name, selector)?.head.version
      if (head !== undefined && head !== null) return head
      throw err
    }
  }

  private async row (h: SignedHead): Promise<HeadRow> {
    const { model, label } = h.head
    const slot = this.deps.activator.slot(model, label)
    const local = (await this.deps.store.labelRecord(model, label))?.version ?? null
    const known = h.head.version === null ? undefined : await this.deps.store.heads.manifest(h.head.version)
    let size: number | undefined
    if (known !== undefined && h.head.version !== null) {
      try {
        size = decodeManifest(known, h.head.version).files.reduce((n, f) => n + f.size, 0)
      } catch { /* checked when stored */ }
    }
    const received = await this.deps.book.receivedAt(model, label)
    return {
      model, label, version: h.head.version, previous: h.head.previous,
      stamp: h.head.stamp, publisher: h.head.publisher, activation: h.head.activation,
      local,
      state: slot?.state ?? (local === h.head.version ? 'active' : 'remote'),
      followed: this.deps.activator.follows(model, label),
      ...(received !== undefined ? { receivedAt: received } : {}),
      ...(slot?.activateAt !== undefined && slot.state !== 'active' ? { activateAt: slot.activateAt } : {}),
      ...(slot?.error !== undefined && slot.state === 'failed' ? { error: slot.error } : {}),
      ...(size !== undefined ? { size } : {})
    }
  }
}

function labelRef (ref: string): { name: string, label: string } {
  const { name, selector } = parseRef(ref)
  if (selector === undefined || isCid(selector)) throw new InvalidInputError(`give a label: ${name}@<label>`)
  return { name, label: checkLabel(selector) }
}

function toActivation (a: LabelRequest['activation']): Activation {
  if (a === undefined || a.mode === 'hot') return { mode: 'hot', ...(a?.jitterMs !== undefined ? { jitterMs: a.jitterMs } : {}) }
  return { mode: 'cold', ...(a.at !== undefined ? { at: a.at } : {}), ...(a.jitterMs !== undefined ? { jitterMs: a.jitterMs } : {}) }
}

