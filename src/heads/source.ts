/**
 * The head book as the anti-entropy protocol (`protocol/heads`) sees it. Heads from peers go
 * through the guard (the sender's budget, penalties for invalid heads) as gossiped ones do, and a
 * head dropped over budget or stamped in the future is reported `later` (offering it again may end
 * otherwise); inbound exchanges are budgeted per peer, and each one admitted is reported
 * (`inbound`) so the spreader skips that peer in its next round. Entries are rebuilt only when a
 * winner changed.
 */
import type { TrustPolicy } from '../core/trust.js'
import type { HeadSource, SyncEntry } from '../protocol/heads/index.js'
import type { HeadBook } from './book.js'
import type { HeadGuard } from './guard.js'

export function headSource (book: HeadBook, guard: HeadGuard, policy: TrustPolicy, inbound: (peer: string) => void = () => {}): HeadSource {
  let cached: { revision: number, entries: SyncEntry[] } | undefined
  return {
    digest: () => book.digest(),
    entries: () => {
      if (cached?.revision !== book.revision) {
        cached = { revision: book.revision, entries: book.list().map(h => ({ model: h.head.model, label: h.head.label, wall: h.head.stamp.wall, counter: h.head.stamp.counter, id: h.id })) }
      }
      return cached.entries
    },
    signed: (model, label) => book.get(model, label)?.bytes,
    offer: async (bytes, peer) => {
      const outcome = await guard.offer(bytes, peer, 'sync')
      return outcome.status === 'dropped' || outcome.status === 'future' ? 'later' : 'settled'
    },
    admit: peer => {
      if (!guard.admitSync(peer)) return false
      inbound(peer)
      return true
    },
    epoch: () => policy.epoch
  }
}
