/**
 * Liveness of the peers of a fetch: how long a peer may be silent before its requests time out,
 * when a silent peer is busy (it said QUEUED) rather than stalling, and when it is a staller to be
 * banned. Pure functions over numbers the session measures; no timers of their own.
 *
 * The rules, each from a case where a weaker one banned an honest peer:
 * - a peer that keeps sending (bytes of blocks still arriving count) is busy or slow, never stuck;
 * - a peer may go quiet for `requestTimeoutBaseMs` plus twice the time one such span takes at its
 *   long-run rate (TCP backing off through a congested queue goes silent for seconds);
 * - a request the peer acknowledged as QUEUED waits up to `maxQueuedMs`, and cancelling it then is
 *   no offence: the peer's slots serve others;
 * - a staller is a peer that timed out `maxConsecutiveTimeouts` times in a row, delivered nothing in
 *   the whole pull (across reconnects), said no QUEUED within `stallMs`, and was first asked at
 *   least `stallMs` ago.
 */

export interface LivenessOptions {
  requestTimeoutBaseMs: number
  maxConsecutiveTimeouts: number
  stallMs: number
  minRateSampleMs: number
  maxRateAllowanceMs: number
}

/** What the session knows of one peer over the whole pull (kept across its reconnects). */
export interface PeerHistory {
  firstAskedAt: number
  /** Bytes of blocks it delivered. */
  delivered: number
  /** When it last answered QUEUED. */
  queuedAt: number
}

/** A peer's measured rates: bytes and time while the session had requests at it. */
export interface PeerRates {
  received: number
  busyBytes: number
  busyMs: number
}

/**
 * Twice the time `bytes` take at the peer's long-run rate, at most `maxRateAllowanceMs`; 0 before
 * bytes of blocks came from it and it was measured for `minRateSampleMs`. Bytes still arriving
 * count, not only whole blocks: a peer whose first block is slow in coming has been sending too.
 */
export function twoSpansMs (peer: PeerRates, bytes: number, o: LivenessOptions): number {
  const rate = longRunRate(peer, o)
  return rate > 0 ? Math.min(o.maxRateAllowanceMs, 2000 * bytes / rate) : 0
}

/**
 * The peer's rate while it had requests, in bytes per second; 0 before it was measured for
 * `minRateSampleMs`. Unlike an average over time it does not fall while the peer is silent (a
 * silence longer than the base is not counted as busy time), so a deadline set from it does not
 * grow the longer a peer has been quiet.
 */
export function longRunRate (peer: PeerRates, o: LivenessOptions): number {
  return peer.busyBytes > 0 && peer.busyMs >= o.minRateSampleMs ? peer.busyBytes * 1000 / peer.busyMs : 0
}

/** How long the peer may send nothing before a request of `bytes` at it times out. */
export function silenceAllowedMs (peer: PeerRates, bytes: number, o: LivenessOptions): number {
  return o.requestTimeoutBaseMs + twoSpansMs(peer, bytes, o)
}

/** Whether a peer whose request just timed out (not a QUEUED one) is a staller to ban. */
export function isStaller (history: PeerHistory | undefined, consecutiveTimeouts: number, now: number, o: LivenessOptions): boolean {
  if (history === undefined || history.delivered > 0) return false
  const busy = now - history.queuedAt < o.stallMs
  return consecutiveTimeouts >= o.maxConsecutiveTimeouts && now - history.firstAskedAt >= o.stallMs && !busy
}
