/**
 * Daemon-wide judgement of peers: who lied, who sent garbage, who is banned and until when.
 *
 * Offences and the rule that bans (`BAN_RULES`):
 * - `corrupt` (bytes that do not hash to the chunk id): banned at the third;
 * - `lie` (claimed a chunk, then said it did not have it): banned at the fifth;
 * - `timeout` is soft (slow or overloaded is not malice);
 * - `stall` (timed out repeatedly without ever delivering): banned at once;
 * - `protocol` (oversized or undecodable frames, bad bitfields): banned at once;
 * - `unread` (asked this node for blocks, then read nothing of them for `SEND_STALL_MS`, holding
 *   upload slots meanwhile): banned at the second (the first may be a machine that was suspended);
 * - `manifest` (a manifest that does not hash to the version asked for, is not canonical or is
 *   invalid): banned at once. An honest node serves only manifests it checked the same way; one
 *   over this node's size limits is not an offence (another node's limits may be higher);
 * - `head` (a malformed head, or one whose signature does not verify — an honest node never passes
 *   one on, since it checks every head before it forwards or stores it): banned at the third;
 * - `flood` (one per `FLOOD_DROPS_PER_OFFENCE` heads gossiped past the sender's budget, see
 *   `heads/guard.ts`; heads of publishers this node does not trust cost budget but are not an
 *   offence in themselves): banned at the third.
 * A ban lasts `banMs`; the connection gater refuses the peer meanwhile and `onBan` hangs up on it.
 */
import type { Offence, PeerJudge } from '../fetcher/session.js'

/** Offences of peers that send heads (`heads/guard.ts`, `HeadJudge`). */
export type HeadOffence = 'head' | 'flood'
export type JudgeOffence = Offence | HeadOffence

/** @default 10 min */
export const DEFAULT_BAN_MS = 10 * 60_000

export const BAN_RULES: Record<JudgeOffence, number> = { corrupt: 3, lie: 5, timeout: Infinity, stall: 1, protocol: 1, unread: 2, manifest: 1, head: 3, flood: 3 }

export interface PeerRecord {
  peer: string
  /** Bytes of verified blocks received from the peer. */
  bytesReceived: number
  /** Bytes those blocks took on the link (fewer when they came encoded). */
  wireBytesReceived: number
  /** Bytes of blocks sent to the peer, and what they took on the link. */
  bytesSent: number
  wireBytesSent: number
  offences: Partial<Record<JudgeOffence, number>>
  bannedUntil?: number
  lastOffence?: string
  /** Why the peer cannot be used, when that is no offence (it runs an older shoal). */
  note?: string
}

export class PeerScores implements PeerJudge {
  private readonly records = new Map<string, PeerRecord>()

  constructor (private readonly options: { banMs?: number, onBan?: (peer: string, reason: string) => void, now?: () => number } = {}) {}

  isBanned (peer: string): boolean {
    const until = this.records.get(peer)?.bannedUntil
    return until !== undefined && until > this.now()
  }

  penalize (peer: string, offence: JudgeOffence, detail: string): boolean {
    const record = this.record(peer)
    const kind = offence
    record.offences[kind] = (record.offences[kind] ?? 0) + 1
    record.lastOffence = `${kind}: ${detail}`
    if ((record.offences[kind] ?? 0) >= BAN_RULES[kind] && !this.isBanned(peer)) {
      record.bannedUntil = this.now() + (this.options.banMs ?? DEFAULT_BAN_MS)
      this.options.onBan?.(peer, record.lastOffence)
      return true
    }
    return this.isBanned(peer)
  }

  note (peer: string, detail: string): void {
    this.record(peer).note = detail
  }

  credit (peer: string, bytes: number, wireBytes = bytes): void {
    const r = this.record(peer)
    r.bytesReceived += bytes
    r.wireBytesReceived += wireBytes
  }

  /** `bytes` of blocks went to `peer`, `wireBytes` on the link. */
  sent (peer: string, bytes: number, wireBytes = bytes): void {
    const r = this.record(peer)
    r.bytesSent += bytes
    r.wireBytesSent += wireBytes
  }

  list (): PeerRecord[] {
    return [...this.records.values()].map(r => ({ ...r, offences: { ...r.offences } }))
  }

  private record (peer: string): PeerRecord {
    let r = this.records.get(peer)
    if (r === undefined) {
      r = { peer, bytesReceived: 0, wireBytesReceived: 0, bytesSent: 0, wireBytesSent: 0, offences: {} }
      this.records.set(peer, r)
    }
    return r
  }

  private now (): number {
    return this.options.now?.() ?? Date.now()
  }
}
