/**
 * Spreading heads through the fleet, two ways:
 * - **gossip**: heads published on the gossipsub topic `HEADS_TOPIC`. The topic validator
 *   (`gossipVerdict`) offers each message to the head book through the guard (`heads/guard.ts`:
 *   the sender's budget, penalties): a winning head is `Accept`ed (delivered and forwarded); a
 *   duplicate, stale or future one, one from a publisher this node does not trust, or one dropped
 *   over the sender's budget is `Ignore`d (not forwarded, no penalty: honest peers relay heads of
 *   publishers this node may not trust); a malformed or forged one is `Reject`ed (and the guard
 *   penalises the peer that relayed it). A head published here while this node knows no peer on
 *   the topic is re-announced after `REANNOUNCE_AFTER_MS`, since such a publish reaches nobody;
 *   otherwise gossip (mesh or fanout) and the rounds carry it, and a re-announce would be one more
 *   message for every node of the fleet.
 * - **anti-entropy** (`/shoal/heads/1.0.0`): with every peer when it connects (on the connection
 *   that just identified), and with every connected peer every `SYNC_ROUND_MS` — one round trip
 *   when nothing changed (see `protocol/heads`). A peer that opened an exchange with this node
 *   within the round is skipped: that exchange compared both sets already. A head learnt this way
 *   is also gossiped once, so the rest of a healed partition hears of it at gossip speed.
 *
 * Why every `SYNC_ROUND_MS` with every peer: besides repairing what gossip missed within a round,
 * a partition longer than `SYNC_ROUND_MS` + `SYNC_ANSWER_MS` is noticed before it heals, and one
 * shorter than that is shorter than the retransmission backoff it causes, so either way a node
 * hears of the heal within about 5 s.
 *
 * Healed partitions. A partition that drops packets leaves TCP connections open on both sides
 * with data waiting to be retransmitted; after the heal the kernel retransmits on its backoff
 * timer, which after 30 s of loss fires up to ~25 s later. Gossipsub repairs
 * nothing sent before the heal. So an exchange of a round that gets no answer within
 * `SYNC_ANSWER_MS` marks the peer suspect, and the spreader dials it afresh (`force`), one
 * attempt of `FRESH_DIAL_TIMEOUT_MS` after another, a SYN at least every `FRESH_DIAL_SPACING_MS`,
 * while the old connection is open. The first fresh connection to come up carries an exchange at
 * once; it is kept (at most one per peer: a newer one replaces it), and rounds use the newest
 * connection to a peer. So a node converges within about `FRESH_DIAL_SPACING_MS` + one exchange
 * + the gossip hops of its side after the heal (checked by `test/faults/heads-partition.test.ts`;
 * why: docs/decisions/0021-healed-partitions.md).
 * A slow but live connection (one busy with a large transfer) can be taken for a dead one; the
 * cost is one more connection to that peer, not a lost transfer: no connection is closed for
 * being slow.
 */
import type { Connection, PeerId } from '@libp2p/interface'
import type { GossipSub } from '@libp2p/gossipsub'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { HeadSync } from '../protocol/heads/index.js'
import { HEADS_PROTOCOL, SyncUnansweredError } from '../protocol/heads/index.js'
import type { AcceptedHead, BookLogger, HeadBook } from './book.js'
import type { HeadGuard } from './guard.js'

export const HEADS_TOPIC = '/shoal/heads/1'
/** @default [500, 2000, 6000] ms after a local publish */
export const REANNOUNCE_AFTER_MS = [500, 2000, 6000]
/** @default 3 s — every connected peer gets an exchange at least this often */
export const SYNC_ROUND_MS = 3_000
/** @default 2.5 s — a round's exchange not answered within this marks the connection suspect */
export const SYNC_ANSWER_MS = 2_500
/** @default 1.5 s — one attempt at a fresh connection to a suspect peer (a SYN and one retry) */
export const FRESH_DIAL_TIMEOUT_MS = 1_500
/** @default 1 s — fresh-connection attempts to one peer start at least this far apart */
export const FRESH_DIAL_SPACING_MS = 1_000
/** @default 200 ms — wait after a peer connects before syncing (identify runs first) */
const SYNC_AFTER_CONNECT_MS = 200

type IdentifyEvent = CustomEvent<{ peerId: PeerId, protocols: string[], connection?: Connection }>
type DisconnectEvent = CustomEvent<PeerId>

export interface SpreadNode {
  peerId: PeerId
  getPeers: () => PeerId[]
  getConnections: (peer?: PeerId) => Connection[]
  dial: (peer: PeerId, options: { force: boolean, signal: AbortSignal }) => Promise<Connection>
  addEventListener: ((type: 'peer:identify', listener: (evt: IdentifyEvent) => void) => void) & ((type: 'peer:disconnect', listener: (evt: DisconnectEvent) => void) => void)
  removeEventListener: ((type: 'peer:identify', listener: (evt: IdentifyEvent) => void) => void) & ((type: 'peer:disconnect', listener: (evt: DisconnectEvent) => void) => void)
  services: { pubsub: GossipSub, heads: HeadSync }
}

export interface SpreadOptions {
  /** Fresh connections are not dialled when the node holds this many (the connection limit). */
  maxConnections?: number
}

/** The gossip topic validator's decision on one message from `peer` (see the module doc). */
export async function gossipVerdict (guard: HeadGuard, peer: string, data: Uint8Array): Promise<TopicValidatorResult> {
  const outcome = await guard.offer(data, peer, 'gossip')
  if (outcome.status === 'accepted') return TopicValidatorResult.Accept
  if (outcome.status === 'rejected' && outcome.reason !== 'untrusted') return TopicValidatorResult.Reject
  return TopicValidatorResult.Ignore
}

export class HeadSpreader {
  private timers = new Set<NodeJS.Timeout>()
  private interval?: NodeJS.Timeout
  private unsubscribe?: () => void
  private readonly syncing = new Set<string>()
  private readonly redialling = new Set<string>()
  /** Peers that identified with the heads protocol. */
  private readonly speakers = new Map<string, PeerId>()
  /** When an exchange with each peer last succeeded, either way. */
  private readonly lastExchange = new Map<string, number>()
  /** The fresh connection made to each peer whose connection stopped answering. */
  private readonly fresh = new Map<string, Connection>()
  private readonly stopping = new AbortController()
  private stopped = false

  constructor (
    private readonly node: SpreadNode,
    private readonly book: HeadBook,
    private readonly guard: HeadGuard,
    private readonly log: BookLogger,
    private readonly options: SpreadOptions = {}
  ) {}

  start (): void {
    const pubsub = this.node.services.pubsub
    pubsub.topicValidators.set(HEADS_TOPIC, async (peer, message) => await gossipVerdict(this.guard, peer.toString(), message.data))
    pubsub.subscribe(HEADS_TOPIC)
    this.unsubscribe = this.book.onAccepted(a => { this.onAccepted(a) })
    this.node.addEventListener('peer:identify', this.onIdentify)
    this.node.addEventListener('peer:disconnect', this.onDisconnect)
    this.interval = setInterval(() => { this.round() }, SYNC_ROUND_MS)
  }

  stop (): void {
    this.stopped = true
    this.stopping.abort()
    this.unsubscribe?.()
    clearInterval(this.interval)
    for (const t of this.timers) clearTimeout(t)
    this.timers.clear()
    this.node.removeEventListener('peer:identify', this.onIdentify)
    this.node.removeEventListener('peer:disconnect', this.onDisconnect)
    const pubsub = this.node.services.pubsub
    pubsub.topicValidators.delete(HEADS_TOPIC)
  }

  /** An exchange `peer` opened with this node: the connection carries data, and the sets were compared. */
  noteInbound (peer: string): void {
    this.lastExchange.set(peer, Date.now())
  }

  /**
   * Runs anti-entropy with `peer` now (one exchange at a time per peer), on `connection` or the
   * newest connection to it. With `probe`, an exchange not answered within `SYNC_ANSWER_MS` marks
   * the peer suspect (see the module doc).
   */
  async syncWith (peer: PeerId, options: { connection?: Connection, probe?: boolean } = {}): Promise<void> {
    const id = peer.toString()
    if (this.syncing.has(id) || this.stopped) return
    this.syncing.add(id)
    try {
      const connection = options.connection ?? this.newest(peer)
      const r = await this.node.services.heads.sync(peer, {
        signal: this.stopping.signal,
        ...(connection !== undefined ? { connection } : {}),
        ...(options.probe === true ? { answerWithinMs: SYNC_ANSWER_MS } : {})
      })
      this.lastExchange.set(id, Date.now())
      if (!r.matched) this.log.debug({ peer: id, sent: r.sent, received: r.received }, 'heads synced')
    } catch (err) {
      this.log.debug({ peer: id, err: (err as Error).message }, 'head sync failed')
      if (options.probe === true && err instanceof SyncUnansweredError) this.redial(peer)
    } finally {
      this.syncing.delete(id)
    }
  }

  private readonly onIdentify = (evt: IdentifyEvent): void => {
    if (!evt.detail.protocols.includes(HEADS_PROTOCOL)) return
    const { peerId, connection } = evt.detail
    this.speakers.set(peerId.toString(), peerId)
    this.later(SYNC_AFTER_CONNECT_MS, () => {
      if (connection === undefined || connection.status === 'open') void this.syncWith(peerId, connection !== undefined ? { connection } : {})
    })
  }

  private readonly onDisconnect = (evt: DisconnectEvent): void => {
    const id = evt.detail.toString()
    this.speakers.delete(id)
    this.lastExchange.delete(id)
    this.fresh.delete(id)
  }

  /** Every peer that speaks the protocol and had no exchange this round gets one. */
  private round (): void {
    const now = Date.now()
    for (const [id, peer] of this.speakers) {
      if (this.redialling.has(id) || now - (this.lastExchange.get(id) ?? 0) < SYNC_ROUND_MS) continue
      void this.syncWith(peer, { probe: true })
    }
  }

  /** The connection to `peer` opened last (undefined: let the connection manager pick). */
  private newest (peer: PeerId): Connection | undefined {
    let best: Connection | undefined
    for (const c of this.node.getConnections(peer)) {
      if (c.status === 'open' && (best === undefined || c.timeline.open > best.timeline.open)) best = c
    }
    return best
  }

  /** Dials `peer` afresh, attempt after attempt, until a connection comes up or the old one goes. */
  private redial (peer: PeerId): void {
    const id = peer.toString()
    if (this.redialling.has(id) || this.stopped) return
    this.redialling.add(id)
    this.log.info({ peer: id }, 'peer does not answer a head sync; dialling it afresh')
    void (async () => {
      while (!this.stopped && this.node.getConnections(peer).length > 0) {
        const started = Date.now()
        if (this.options.maxConnections === undefined || this.node.getConnections().length < this.options.maxConnections) {
          try {
            const connection = await this.node.dial(peer, { force: true, signal: AbortSignal.any([this.stopping.signal, AbortSignal.timeout(FRESH_DIAL_TIMEOUT_MS)]) })
            const previous = this.fresh.get(id)
            this.fresh.set(id, connection)
            if (previous !== undefined && previous !== connection) await previous.close().catch(() => {})
            this.redialling.delete(id)
            this.log.info({ peer: id }, 'fresh connection up; syncing heads over it')
            await this.syncWith(peer, { connection })
            return
          } catch (err) {
            this.log.debug({ peer: id, err: (err as Error).message }, 'fresh dial failed')
          }
        }
        await this.pause(Math.max(0, FRESH_DIAL_SPACING_MS - (Date.now() - started)))
      }
      this.redialling.delete(id)
    })()
  }

  /** Waits `ms`, or less if the spreader stops meanwhile. */
  private async pause (ms: number): Promise<void> {
    if (ms <= 0 || this.stopped) return
    const signal = this.stopping.signal
    await new Promise<void>(resolve => {
      const done = (): void => { clearTimeout(t); signal.removeEventListener('abort', done); resolve() }
      const t = setTimeout(done, ms)
      signal.addEventListener('abort', done, { once: true })
    })
  }

  private onAccepted (a: AcceptedHead): void {
    if (a.via === 'local') {
      const alone = this.node.services.pubsub.getSubscribers(HEADS_TOPIC).length === 0
      this.announce(a.head.bytes)
      if (!alone) return
      for (const delay of REANNOUNCE_AFTER_MS) {
        this.later(delay, () => {
          // Only while it is still the winner: a newer head makes this one noise.
          if (this.book.get(a.head.head.model, a.head.head.label)?.id === a.head.id) this.announce(a.head.bytes)
        })
      }
    } else if (a.via === 'sync') {
      this.announce(a.head.bytes)
    }
  }

  private announce (bytes: Uint8Array): void {
    if (this.stopped) return
    this.node.services.pubsub.publish(HEADS_TOPIC, bytes).catch(err => {
      this.log.debug({ err: (err as Error).message }, 'head gossip publish failed (anti-entropy will carry it)')
    })
  }

  private later (ms: number, fn: () => void): void {
    const t = setTimeout(() => { this.timers.delete(t); if (!this.stopped) fn() }, ms)
    this.timers.add(t)
  }
}
