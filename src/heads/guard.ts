/**
 * The door every head from a peer comes through, over gossip and anti-entropy alike: how much
 * checking a peer may cause, and what sending bad heads costs it.
 *
 * MUST hold:
 * - a peer's head is looked at only while the peer has budget: a token bucket refilled at
 *   `HEAD_CHECKS_PER_SECOND` up to `HEAD_CHECK_BURST`. Looking at a head takes a token before
 *   anything is decoded; an accepted head gives it back (a peer bringing news costs nothing), and
 *   so does one the book refused on its id alone (`known`: a hash). Every other outcome keeps it:
 *   untrusted, duplicate, stale, future, malformed, forged. With no token left the head is dropped
 *   unchecked and counted (`dropped`). Over gossip, each `FLOOD_DROPS_PER_OFFENCE` drops in one
 *   flood are a `flood` offence: gossipsub verifies every message's libp2p signature before the
 *   topic validator sees it, so only a ban stops what a gossip flood costs. Over anti-entropy a
 *   drop costs next to nothing (exchanges are budgeted, `SYNCS_PER_SECOND`), and an honest peer
 *   joining a fleet whose other publishers hold thousands of labels sends many heads this node
 *   refuses: dropped, never an offence.
 * - a malformed or forged head is a `head` offence for the peer that sent it: an honest node checks
 *   every head before it stores or forwards it, so it never sends one. A head of a publisher this
 *   node does not trust is not an offence (a fleet may carry several publishers); it only costs
 *   budget, once per distinct head (the book remembers refused ids).
 * - a banned peer's heads are dropped unchecked. One peer's heads are taken one at a time, so the
 *   ban that follows its third invalid head stops the heads it sent behind it.
 * - inbound anti-entropy exchanges are budgeted per peer too (`SYNCS_PER_SECOND`, `SYNC_BURST`).
 * State per peer is a few numbers; when more than `MAX_TRACKED_PEERS` are tracked, those whose
 * buckets are full again (nothing to remember) are forgotten.
 *
 * Not a goal: a node-wide bound. Budgets are per peer, so the total is bounded by the connection
 * limit (`p2p.maxConnections` × `HEAD_CHECKS_PER_SECOND`); only heads that would win ever cost a
 * signature check (`heads/book.ts`), and a forger is banned at its third.
 */
import type { AcceptedHead, BookLogger, HeadBook, OfferOutcome } from './book.js'

/** @default 20 — heads per second a peer may have checked, in the long run */
export const HEAD_CHECKS_PER_SECOND = 20
/**
 * @default 512 — heads a peer may have checked at once: one full anti-entropy frame
 * (`MAX_SYNC_HEADS`), so a peer holding many labels this node lacks is not cut short.
 */
export const HEAD_CHECK_BURST = 512
/**
 * @default 200 — gossiped heads dropped over budget in one flood that make one `flood` offence
 * (banned at the third, so after `HEAD_CHECK_BURST` + 600 heads of a flood). Each one cost
 * gossipsub a signature check (0.1–0.5 ms measured). A flood ends when the peer's bucket has
 * refilled to the brim. An honest peer relays each head once: it would be banned only for
 * relaying more than 1,112 heads this node does not take (another publisher's), faster than
 * `HEAD_CHECKS_PER_SECOND`, in one go.
 */
export const FLOOD_DROPS_PER_OFFENCE = 200
/** @default 1 — inbound anti-entropy exchanges per second a peer may open, in the long run */
export const SYNCS_PER_SECOND = 1
/** @default 10 — inbound anti-entropy exchanges a peer may open at once (reconnects, rounds) */
export const SYNC_BURST = 10
/** @default 4096 — peers whose budgets are tracked before full ones are forgotten */
export const MAX_TRACKED_PEERS = 4096

/** The part of the peer judge (`p2p/judge.ts`) the guard uses, with the offences it reports. */
export interface HeadJudge {
  isBanned: (peer: string) => boolean
  penalize: (peer: string, offence: 'head' | 'flood', detail: string) => boolean
}

export type GuardOutcome = OfferOutcome | { status: 'dropped', reason: 'budget' | 'banned' }

export interface GuardCounters {
  /** Heads dropped unchecked: over their sender's budget, or from a banned peer. */
  dropped: number
  /** Inbound anti-entropy exchanges refused: over the peer's budget, or from a banned peer. */
  syncsRefused: number
}

export interface GuardOptions {
  checksPerSecond?: number
  checkBurst?: number
  syncsPerSecond?: number
  syncBurst?: number
  clock?: () => number
  log: BookLogger
}

interface Bucket { tokens: number, at: number }
interface PeerBudget { checks: Bucket, syncs: Bucket, /** Dropped in the current flood (either way). */ flood: number, /** The peer's offers, one after another. */ queue: Promise<unknown>, pending: number }

export class HeadGuard {
  readonly counters: GuardCounters = { dropped: 0, syncsRefused: 0 }
  private readonly peers = new Map<string, PeerBudget>()
  private readonly checkRate: number
  private readonly checkBurst: number
  private readonly syncRate: number
  private readonly syncBurst: number
  private readonly clock: () => number

  constructor (private readonly book: HeadBook, private readonly judge: HeadJudge, private readonly options: GuardOptions) {
    this.checkRate = options.checksPerSecond ?? HEAD_CHECKS_PER_SECOND
    this.checkBurst = options.checkBurst ?? HEAD_CHECK_BURST
    this.syncRate = options.syncsPerSecond ?? SYNCS_PER_SECOND
    this.syncBurst = options.syncBurst ?? SYNC_BURST
    this.clock = options.clock ?? Date.now
  }

  /** Offers a head `peer` sent to the book, within the peer's budget; see the module doc. */
  async offer (bytes: Uint8Array, peer: string, via: Exclude<AcceptedHead['via'], 'local' | 'disk'>): Promise<GuardOutcome> {
    const budget = this.budget(peer)
    budget.pending++
    const run = budget.queue.then(async () => await this.decide(bytes, peer, via, budget)).finally(() => { budget.pending-- })
    budget.queue = run.catch(() => {})
    return await run
  }

  private async decide (bytes: Uint8Array, peer: string, via: Exclude<AcceptedHead['via'], 'local' | 'disk'>, budget: PeerBudget): Promise<GuardOutcome> {
    if (this.judge.isBanned(peer)) {
      this.counters.dropped++
      return { status: 'dropped', reason: 'banned' }
    }
    refill(budget.checks, this.checkRate, this.checkBurst, this.clock())
    if (budget.checks.tokens >= this.checkBurst) budget.flood = 0
    if (!take(budget.checks, this.checkRate, this.checkBurst, this.clock())) {
      this.counters.dropped++
      budget.flood++
      if (budget.flood === 1) this.options.log.warn({ peer, via, perSecond: this.checkRate }, 'peer sends heads faster than its budget; dropping them unchecked')
      if (via === 'gossip' && budget.flood % FLOOD_DROPS_PER_OFFENCE === 0) {
        this.judge.penalize(peer, 'flood', `${budget.flood} heads sent past its budget of ${this.checkRate} per second`)
      }
      return { status: 'dropped', reason: 'budget' }
    }
    const outcome = await this.book.offer(bytes, { from: peer, via })
    if (outcome.status === 'accepted' || (outcome.status === 'rejected' && outcome.known === true)) {
      budget.checks.tokens = Math.min(this.checkBurst, budget.checks.tokens + 1)
    }
    if (outcome.status === 'rejected' && outcome.reason !== 'untrusted') {
      this.options.log.warn({ peer, via, reason: outcome.reason, err: outcome.message }, 'peer sent an invalid head')
      this.judge.penalize(peer, 'head', `sent a ${outcome.reason} head: ${outcome.message}`)
    }
    return outcome
  }

  /** Whether `peer` may open an anti-entropy exchange now (takes one from its budget if so). */
  admitSync (peer: string): boolean {
    if (this.judge.isBanned(peer) || !take(this.budget(peer).syncs, this.syncRate, this.syncBurst, this.clock())) {
      this.counters.syncsRefused++
      return false
    }
    return true
  }

  private budget (peer: string): PeerBudget {
    let b = this.peers.get(peer)
    if (b === undefined) {
      if (this.peers.size >= MAX_TRACKED_PEERS) this.forgetIdle()
      const at = this.clock()
      b = { checks: { tokens: this.checkBurst, at }, syncs: { tokens: this.syncBurst, at }, flood: 0, queue: Promise.resolve(), pending: 0 }
      this.peers.set(peer, b)
    }
    return b
  }

  /** Forgets peers whose buckets have refilled: a new record for them would be the same. */
  private forgetIdle (): void {
    const now = this.clock()
    for (const [peer, b] of this.peers) {
      refill(b.checks, this.checkRate, this.checkBurst, now)
      refill(b.syncs, this.syncRate, this.syncBurst, now)
      if (b.pending === 0 && b.checks.tokens >= this.checkBurst && b.syncs.tokens >= this.syncBurst) this.peers.delete(peer)
    }
  }
}

function refill (bucket: Bucket, rate: number, burst: number, now: number): void {
  if (now > bucket.at) {
    bucket.tokens = Math.min(burst, bucket.tokens + (now - bucket.at) * rate / 1000)
    bucket.at = now
  }
}

/** Takes one token if there is one. */
function take (bucket: Bucket, rate: number, burst: number, now: number): boolean {
  refill(bucket, rate, burst, now)
  if (bucket.tokens < 1) return false
  bucket.tokens -= 1
  return true
}
