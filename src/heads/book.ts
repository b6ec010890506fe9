/**
 * The head book: what this node believes each label points at.
 *
 * Every head, whatever brought it (gossip, anti-entropy, a local publish, the disk at start-up),
 * goes through `offer`, which decides in this order, cheapest checks first, so that the signature
 * (the costly check) is verified only for a head that would win:
 * 1. `rejected` `malformed` — over the size cap, or it does not decode or fit the schema
 *    (`decodeSignedHead`);
 * 2. `rejected` `untrusted` — no trust rule lets its publisher move its model (a map lookup). The
 *    ids of the last `REFUSED_IDS_KEPT` such heads are remembered until the trust rules change, so
 *    the same bytes offered again are refused on their hash alone (`known: true`);
 * 3. `future` — its stamp is more than `MAX_CLOCK_SKEW_MS` ahead of this node's clock: ignored for
 *    now (anti-entropy offers it again later), so one publisher with a clock far ahead cannot
 *    freeze a label;
 * 4. `duplicate` — it is the head already held (same id); `stale` — it loses to it under
 *    `compareHeads` (older, or a replay). Ignored and counted, signature unchecked: neither is kept;
 * 5. `rejected` `malformed` / `signature` — not canonically encoded, or the signature does not
 *    verify (`verifySignedHead`, counted in `signatureChecks`);
 * 6. `accepted` — it wins: it is stored (with history) and listeners hear of it.
 * Rejections are counted per reason; the caller may penalise the sender (`heads/guard.ts`).
 * Offers are processed one at a time, so two heads for the same label never race.
 *
 * The book keeps the winners in memory too (a few hundred bytes per label), and their digest,
 * recomputed only when a winner changes.
 */
import { EventEmitter } from 'node:events'
import { BadSignatureError, ConflictError, InvalidInputError, NotFoundError } from '../core/errors.js'
import { createHash, type KeyObject } from 'node:crypto'
import type { VersionId } from '../core/digest.js'
import {
  MAX_SIGNED_HEAD_BYTES, compareHeads, decodeSignedHead, headKey, headSetDigest, nextStamp, openSignedHead, publisherKeyOf, signHead, verifySignedHead,
  type Activation, type DecodedHead, type SignedHead
} from '../core/heads.js'
import type { TrustPolicy } from '../core/trust.js'
import type { HeadRecords } from '../store/api.js'
import { createPublicKey } from 'node:crypto'

/** @default 5 minutes — how far ahead of this node's clock a head's stamp may be */
export const MAX_CLOCK_SKEW_MS = 5 * 60 * 1000
/**
 * @default 10,000 — ids of heads refused as untrusted that the book remembers (about 1 MiB), so
 * a peer that holds heads of publishers this node does not trust (an honest fleet with several
 * publishers) costs a hash, not a decode, each time it offers them again.
 */
export const REFUSED_IDS_KEPT = 10_000

/** @default 8 — publisher and model pairs refused as untrusted that the book names (`untrusted()`) */
export const MAX_UNTRUSTED_SHOWN = 8

export type RejectReason = 'malformed' | 'signature' | 'untrusted'

export type OfferOutcome =
  | { status: 'accepted', head: SignedHead, replaced?: SignedHead }
  /** Not kept, so the signature was not checked: `head` may be forged. */
  | { status: 'duplicate' | 'stale' | 'future', head: DecodedHead }
  /** `known`: refused before under the same trust rules (by id, nothing decoded). */
  | { status: 'rejected', reason: RejectReason, message: string, known?: boolean }

export interface HeadCounters {
  accepted: number
  duplicate: number
  stale: number
  future: number
  rejected: Record<RejectReason, number>
  /** Signatures verified for offered heads (the costly check; only heads that would win get it). */
  signatureChecks: number
}

export interface AcceptedHead {
  head: SignedHead
  replaced?: SignedHead
  /** Peer id it came from; undefined when published on this node. */
  from?: string
  /** What carried it here. */
  via: 'local' | 'gossip' | 'sync' | 'disk'
}

export interface BookLogger {
  info: (obj: object, msg?: string) => void
  warn: (obj: object, msg?: string) => void
  debug: (obj: object, msg?: string) => void
}

export interface PublishRequest {
  model: string
  label: string
  version: VersionId | null
  activation?: Activation
  /**
   * Compare-and-swap, checked in the same serialised step as the publish: refuse unless the label
   * points at this (null: nowhere) — at its current head's version, or at `unheaded` when the book
   * holds no head for it.
   */
  expect?: VersionId | null
  /** Where the label points on this node when the book holds no head for it (a label older than heads). @default null */
  unheaded?: VersionId | null
  key: KeyObject
}

export class HeadBook {
  private readonly winners = new Map<string, SignedHead>()
  private readonly events = new EventEmitter()
  private queue: Promise<unknown> = Promise.resolve()
  /** Ids refused as untrusted under the rules of `refusedEpoch`, oldest first. */
  private readonly refused = new Set<string>()
  private refusedEpoch: number
  private cachedDigest?: Uint8Array
  private changes = 0
  /** Publishers (with a model) whose heads were refused as untrusted, newest last, at most `MAX_UNTRUSTED_SHOWN`. */
  private readonly untrustedSeen = new Map<string, { publisher: string, model: string }>()
  readonly counters: HeadCounters = { accepted: 0, duplicate: 0, stale: 0, future: 0, rejected: { malformed: 0, signature: 0, untrusted: 0 }, signatureChecks: 0 }

  private constructor (
    private readonly store: HeadRecords,
    private readonly trust: TrustPolicy,
    private readonly clock: () => number,
    private readonly log: BookLogger
  ) {
    this.refusedEpoch = trust.epoch
  }

  /** Loads the stored winners (re-checking each: a head on disk is not trusted as it stands). */
  static async open (store: HeadRecords, trust: TrustPolicy, options: { clock?: () => number, log: BookLogger }): Promise<HeadBook> {
    const book = new HeadBook(store, trust, options.clock ?? Date.now, options.log)
    for await (const stored of store.all()) {
      try {
        const head = openSignedHead(stored.bytes)
        if (!trust.allows(head.head.publisher, head.head.model)) {
          options.log.warn({ model: head.head.model, label: head.head.label, publisher: head.head.publisher }, 'stored head is no longer trusted; ignoring it')
          continue
        }
        book.winners.set(headKey(head.head.model, head.head.label), head)
      } catch (err) {
        options.log.warn({ err: (err as Error).message }, 'ignoring a stored head that fails its checks')
      }
    }
    return book
  }

  onAccepted (listener: (a: AcceptedHead) => void): () => void {
    this.events.on('accepted', listener)
    return () => { this.events.off('accepted', listener) }
  }

  /** Offers a signed head from anywhere; see the module doc for the outcomes. */
  async offer (bytes: Uint8Array, source: { from?: string, via: AcceptedHead['via'] }): Promise<OfferOutcome> {
    return await this.serialised(async () => await this.decide(bytes, source))
  }

  /**
   * Signs and accepts a new head for `model@label`, stamped above the current one. With `expect`,
   * refuses (ConflictError) unless the current head points at that version.
   */
  async publish (req: PublishRequest): Promise<SignedHead> {
    return await this.serialised(async () => {
      const key = headKey(req.model, req.label)
      const current = this.winners.get(key)
      const currentVersion = current?.head.version ?? null
      const compared = current !== undefined ? currentVersion : req.unheaded ?? null
      if (req.expect !== undefined && compared !== req.expect) {
        throw new ConflictError(`${req.model}@${req.label} points at ${compared ?? 'nothing'}, not ${req.expect ?? 'nothing'}`)
      }
      const publisher = publisherKeyOf(createPublicKey(req.key))
      if (!this.trust.allows(publisher, req.model)) {
        throw new InvalidInputError(`key ${publisher} is not trusted for ${req.model} on this node, so its heads would be refused everywhere that shares this trust; add it with shoal trust add`)
      }
      const signed = signHead({
        model: req.model,
        label: req.label,
        version: req.version,
        previous: currentVersion,
        stamp: nextStamp(this.clock(), current?.head.stamp),
        activation: req.activation ?? { mode: 'hot' },
        publisher
      }, req.key)
      const outcome = await this.decide(signed.bytes, { via: 'local' })
      if (outcome.status === 'future') {
        throw new ConflictError(`the current head of ${req.model}@${req.label} is stamped more than ${MAX_CLOCK_SKEW_MS / 60_000} minutes ahead of this node's clock; fix the clock (NTP) and publish again`)
      }
      if (outcome.status !== 'accepted') throw new Error(`a freshly signed head was not accepted (${outcome.status})`)
      return signed
    })
  }

  get (model: string, label: string): SignedHead | undefined {
    return this.winners.get(headKey(model, label))
  }

  list (): SignedHead[] {
    return [...this.winners.values()]
  }

  /** Increments whenever a winner changes, so callers can cache what they derive from `list()`. */
  get revision (): number {
    return this.changes
  }

  /** Digest of the whole set of winners (see `headSetDigest`); recomputed only after a change. */
  digest (): Uint8Array {
    this.cachedDigest ??= headSetDigest([...this.winners.values()].map(h => h.id))
    return this.cachedDigest
  }

  async history (model: string, label: string): Promise<SignedHead[]> {
    const out: SignedHead[] = []
    for (const stored of await this.store.history(model, label)) {
      try {
        out.push(openSignedHead(stored.bytes))
      } catch { /* a damaged history entry is skipped; the winner is checked at open */ }
    }
    if (out.length === 0 && this.winners.get(headKey(model, label)) === undefined) throw new NotFoundError(`no head for ${model}@${label}`)
    return out
  }

  async receivedAt (model: string, label: string): Promise<number | undefined> {
    return (await this.store.get(model, label))?.receivedAt
  }

  /**
   * Publishers whose heads this node refused as untrusted under the current trust rules, with a
   * model each (at most `MAX_UNTRUSTED_SHOWN`, most recent last): what `shoal heads` names when it
   * holds none, so an operator can trust the right key.
   */
  untrusted (): Array<{ publisher: string, model: string }> {
    return [...this.untrustedSeen.values()]
  }

  private noteUntrusted (publisher: string, model: string): void {
    const key = `${publisher}\0${model}`
    this.untrustedSeen.delete(key)
    this.untrustedSeen.set(key, { publisher, model })
    if (this.untrustedSeen.size > MAX_UNTRUSTED_SHOWN) this.untrustedSeen.delete(this.untrustedSeen.keys().next().value ?? '')
  }

  private async decide (bytes: Uint8Array, source: { from?: string, via: AcceptedHead['via'] }): Promise<OfferOutcome> {
    if (this.trust.epoch !== this.refusedEpoch) {
      this.refused.clear()
      this.untrustedSeen.clear()
      this.refusedEpoch = this.trust.epoch
    }
    const id = bytes.length <= MAX_SIGNED_HEAD_BYTES ? createHash('sha256').update(bytes).digest('hex') : undefined
    if (id !== undefined && this.refused.has(id)) {
      this.counters.rejected.untrusted++
      return { status: 'rejected', reason: 'untrusted', message: 'refused before: its publisher is not trusted for its model', known: true }
    }
    let decoded: DecodedHead
    try {
      decoded = decodeSignedHead(bytes)
    } catch (err) {
      return this.reject('malformed', err as Error, source)
    }
    const h = decoded.head
    if (!this.trust.allows(h.publisher, h.model)) {
      this.counters.rejected.untrusted++
      this.remember(decoded.id)
      this.noteUntrusted(h.publisher, h.model)
      this.log.debug({ from: source.from, model: h.model, label: h.label, publisher: h.publisher }, 'head from an untrusted key rejected')
      return { status: 'rejected', reason: 'untrusted', message: `publisher ${h.publisher} is not trusted for ${h.model}` }
    }
    if (h.stamp.wall > this.clock() + MAX_CLOCK_SKEW_MS) {
      this.counters.future++
      return { status: 'future', head: decoded }
    }
    const key = headKey(h.model, h.label)
    const current = this.winners.get(key)
    if (current !== undefined) {
      if (current.id === decoded.id) { this.counters.duplicate++; return { status: 'duplicate', head: decoded } }
      if (compareHeads(h, current.head) <= 0) { this.counters.stale++; return { status: 'stale', head: decoded } }
    }
    let head: SignedHead
    try {
      this.counters.signatureChecks++
      head = verifySignedHead(decoded)
    } catch (err) {
      return this.reject(err instanceof BadSignatureError ? 'signature' : 'malformed', err as Error, source)
    }
    await this.store.put(head, { receivedAt: this.clock(), ...(source.from !== undefined ? { from: source.from } : {}) })
    this.winners.set(key, head)
    this.changes++
    this.cachedDigest = undefined
    this.counters.accepted++
    this.log.info({ model: h.model, label: h.label, version: h.version, stamp: `${h.stamp.wall}.${h.stamp.counter}`, from: source.from, via: source.via }, 'head accepted')
    const accepted: AcceptedHead = { head, via: source.via, ...(current !== undefined ? { replaced: current } : {}), ...(source.from !== undefined ? { from: source.from } : {}) }
    this.events.emit('accepted', accepted)
    return { status: 'accepted', head, ...(current !== undefined ? { replaced: current } : {}) }
  }

  private reject (reason: RejectReason, err: Error, source: { from?: string }): OfferOutcome {
    this.counters.rejected[reason]++
    this.log.debug({ from: source.from, reason, err: err.message }, 'head rejected')
    return { status: 'rejected', reason, message: err.message }
  }

  private remember (id: string): void {
    if (this.refused.size >= REFUSED_IDS_KEPT) this.refused.delete(this.refused.values().next().value as string)
    this.refused.add(id)
  }

  private async serialised<T> (fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn)
    this.queue = run.catch(() => {})
    return await run
  }
}
