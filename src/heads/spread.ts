/**
 * Spreading heads through the fleet, two ways:
 * - **gossip**: heads published on the gossipsub topic `HEADS_TOPIC`. The topic validator offers
 *   each message to the head book: a winning head is `Accept`ed (delivered and forwarded), a
 *   duplicate, stale or future one `Ignore`d (not forwarded), a malformed, forged or untrusted one
 *   `Reject`ed (gossipsub lowers the sender's score). A head published here is re-announced after
 *   `REANNOUNCE_AFTER_MS`, since a publish before the mesh forms reaches nobody.
 * - **anti-entropy** (`/shoal/heads/1.0.0`): with every peer when it connects, and with one
 *   random connected peer every `SYNC_INTERVAL_MS`, so late joiners, restarted nodes and healed
 *   partitions converge by themselves. A head learnt this way is also gossiped once, so the rest of
 *   a healed partition hears of it at gossip speed.
 */
import type { PeerId } from '@libp2p/interface'
import type { GossipSub } from '@libp2p/gossipsub'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { HeadSync } from '../protocol/heads/index.js'
import { HEADS_PROTOCOL } from '../protocol/heads/index.js'
import type { AcceptedHead, BookLogger, HeadBook } from './book.js'

export const HEADS_TOPIC = '/shoal/heads/1'
/** @default [500, 2000, 6000] ms after a local publish */
export const REANNOUNCE_AFTER_MS = [500, 2000, 6000]
/** @default 10 s */
export const SYNC_INTERVAL_MS = 10_000
/** @default 200 ms — wait after a peer connects before syncing (identify runs first) */
const SYNC_AFTER_CONNECT_MS = 200

export interface SpreadNode {
  peerId: PeerId
  getPeers: () => PeerId[]
  addEventListener: (type: 'peer:identify', listener: (evt: CustomEvent<{ peerId: PeerId, protocols: string[] }>) => void) => void
  removeEventListener: (type: 'peer:identify', listener: (evt: CustomEvent<{ peerId: PeerId, protocols: string[] }>) => void) => void
  services: { pubsub: GossipSub, heads: HeadSync }
}

export class HeadSpreader {
  private timers = new Set<NodeJS.Timeout>()
  private interval?: NodeJS.Timeout
  private unsubscribe?: () => void
  private readonly syncing = new Set<string>()
  private stopped = false

  constructor (private readonly node: SpreadNode, private readonly book: HeadBook, private readonly log: BookLogger) {}

  start (): void {
    const pubsub = this.node.services.pubsub
    pubsub.topicValidators.set(HEADS_TOPIC, async (peer, message) => {
      const outcome = await this.book.offer(message.data, { from: peer.toString(), via: 'gossip' })
      switch (outcome.status) {
        case 'accepted': return TopicValidatorResult.Accept
        case 'rejected':
          this.log.warn({ peer: peer.toString(), reason: outcome.reason, err: outcome.message }, 'gossiped head rejected')
          return TopicValidatorResult.Reject
        default: return TopicValidatorResult.Ignore
      }
    })
    pubsub.subscribe(HEADS_TOPIC)
    this.unsubscribe = this.book.onAccepted(a => { this.onAccepted(a) })
    this.node.addEventListener('peer:identify', this.onIdentify)
    this.interval = setInterval(() => { this.syncRandom() }, SYNC_INTERVAL_MS)
  }

  stop (): void {
    this.stopped = true
    this.unsubscribe?.()
    clearInterval(this.interval)
    for (const t of this.timers) clearTimeout(t)
    this.timers.clear()
    this.node.removeEventListener('peer:identify', this.onIdentify)
    const pubsub = this.node.services.pubsub
    pubsub.topicValidators.delete(HEADS_TOPIC)
  }

  /** Runs anti-entropy with `peer` now (one exchange at a time per peer). */
  async syncWith (peer: PeerId): Promise<void> {
    const id = peer.toString()
    if (this.syncing.has(id) || this.stopped) return
    this.syncing.add(id)
    try {
      const r = await this.node.services.heads.sync(peer)
      if (!r.matched) this.log.debug({ peer: id, sent: r.sent, received: r.received }, 'heads synced')
    } catch (err) {
      this.log.debug({ peer: id, err: (err as Error).message }, 'head sync failed')
    } finally {
      this.syncing.delete(id)
    }
  }

  private readonly onIdentify = (evt: CustomEvent<{ peerId: PeerId, protocols: string[] }>): void => {
    if (!evt.detail.protocols.includes(HEADS_PROTOCOL)) return
    this.later(SYNC_AFTER_CONNECT_MS, () => { void this.syncWith(evt.detail.peerId) })
  }

  private syncRandom (): void {
    const peers = this.node.getPeers()
    const peer = peers[Math.floor(Math.random() * peers.length)]
    if (peer !== undefined) void this.syncWith(peer)
  }

  private onAccepted (a: AcceptedHead): void {
    if (a.via === 'local') {
      this.announce(a.head.bytes)
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
