/**
 * Limits for transfers: a byte rate (`TokenBucket`) and a count of concurrent transfers (`Slots`).
 * Both are decorators in spirit: a download or an upload path awaits them before moving bytes and
 * knows nothing else about them, so one limit can be shared by every peer and origin.
 *
 * MUST hold, for both:
 * - strict FIFO: waiters are served in arrival order; a small request never overtakes a large one
 *   queued before it (no starvation of large requests);
 * - abortable: a waiter whose signal fires is removed from the queue, rejects with `AbortedError`,
 *   and has taken nothing (no tokens, no slot); the waiters behind it move up;
 * - no busy loops: a `TokenBucket` sleeps on one timer until the head of the queue can be served.
 *
 * Not goals: shaping below the granularity of a call (a caller that takes 1 MiB at once sends it
 * as a burst), or measuring what was actually sent — callers take before they send.
 */
import { AbortedError, InvalidInputError } from '../core/errors.js'

/**
 * The refill window that sets the default burst: one second's worth of the rate.
 * @default 1
 */
export const DEFAULT_BURST_SECONDS = 1

/**
 * A rate limiter for bytes. Tokens (bytes) refill continuously at `rate` per second up to the burst
 * size; `take(n)` resolves once `n` tokens are available and removes them.
 *
 * A request larger than the burst is not refused: while it is at the head of the queue the bucket
 * may fill beyond the burst up to its size, so it waits in proportion to its size (`n / rate`
 * seconds from empty) and the long-run rate still holds. The bucket starts full.
 */
export class TokenBucket {
  private bytesPerSecond: number | undefined
  private burst: number
  /** Whether the burst was given explicitly (else it follows the rate, see `DEFAULT_BURST_SECONDS`). */
  private readonly fixedBurst: boolean
  private tokens: number
  private last: number
  private readonly queue: Array<Waiter & { bytes: number }> = []
  private timer: NodeJS.Timeout | undefined

  /**
   * @param bytesPerSecond the rate; `undefined` or 0 means unlimited
   * @param burstBytes the bucket size. @default bytesPerSecond × `DEFAULT_BURST_SECONDS`
   */
  constructor (bytesPerSecond: number | undefined, burstBytes?: number) {
    this.bytesPerSecond = checkRate(bytesPerSecond)
    if (burstBytes !== undefined && (!Number.isFinite(burstBytes) || burstBytes <= 0)) {
      throw new InvalidInputError(`burst must be a positive number of bytes, got ${burstBytes}`)
    }
    this.fixedBurst = burstBytes !== undefined
    this.burst = burstBytes ?? defaultBurst(this.bytesPerSecond)
    this.tokens = this.burst
    this.last = now()
  }

  /** Bytes per second, or `undefined` when unlimited. */
  get rate (): number | undefined {
    return this.bytesPerSecond
  }

  /** Waiters queued behind the bucket. */
  get waiting (): number {
    return this.queue.length
  }

  /**
   * Resolves once `bytes` may be sent; immediately when unlimited or when nobody is queued and the
   * tokens are there.
   *
   * @throws AbortedError when `signal` fires first (nothing is taken)
   * @throws InvalidInputError for a negative or non-integer byte count
   */
  take (bytes: number, signal?: AbortSignal): Promise<void> {
    if (!Number.isSafeInteger(bytes) || bytes < 0) return Promise.reject(new InvalidInputError(`bad byte count ${bytes}`))
    if (signal?.aborted === true) return Promise.reject(abortedError(signal))
    if (this.bytesPerSecond === undefined || bytes === 0) return Promise.resolve()
    this.refill()
    if (this.queue.length === 0 && this.tokens >= bytes) {
      this.tokens -= bytes
      return Promise.resolve()
    }
    const granted = enqueue(this.queue, grant => ({ bytes, grant }), () => undefined, signal, (wasHead) => { if (wasHead) this.pump() })
    this.pump()
    return granted
  }

  /** Whether `take(bytes)` would wait now (someone is queued, or the tokens are not there). */
  wouldWait (bytes: number): boolean {
    if (this.bytesPerSecond === undefined || bytes === 0) return false
    this.refill()
    return this.queue.length > 0 || this.tokens < bytes
  }

  /**
   * Changes the rate for everything from now on (bytes already taken stay taken). `undefined` or 0
   * lifts the limit and releases every waiter. A burst that followed the old rate follows the new.
   */
  setRate (bytesPerSecond: number | undefined): void {
    const rate = checkRate(bytesPerSecond)
    this.refill()
    const wasUnlimited = this.bytesPerSecond === undefined
    this.bytesPerSecond = rate
    if (!this.fixedBurst) this.burst = defaultBurst(rate)
    this.tokens = wasUnlimited ? this.burst : Math.min(this.tokens, this.burst)
    this.last = now()
    this.pump()
  }

  /** Adds the tokens earned since the last refill, up to the burst (or the head's need). */
  private refill (): void {
    const t = now()
    const rate = this.bytesPerSecond
    if (rate !== undefined) {
      const cap = Math.max(this.burst, this.queue[0]?.bytes ?? 0)
      this.tokens = Math.min(cap, this.tokens + (t - this.last) * rate / 1000)
    }
    this.last = t
  }

  /** Serves the queue head while possible; otherwise sleeps until it can be. */
  private pump (): void {
    clearTimeout(this.timer)
    this.timer = undefined
    if (this.bytesPerSecond === undefined) {
      for (const w of this.queue.splice(0)) w.grant()
      return
    }
    // Also drops tokens saved beyond the burst for an oversized head that was aborted.
    this.refill()
    let head = this.queue[0]
    while (head !== undefined && this.tokens >= head.bytes) {
      this.tokens -= head.bytes
      this.queue.shift()
      head.grant()
      head = this.queue[0]
    }
    if (head === undefined) return
    const wait = Math.max(1, Math.ceil((head.bytes - this.tokens) * 1000 / this.bytesPerSecond))
    this.timer = setTimeout(() => { this.pump() }, wait)
  }
}

/**
 * A FIFO semaphore: at most `max` holders at once (upload slots, concurrent origin requests).
 * `acquire` resolves with a release function; calling it more than once is harmless. A released
 * slot passes straight to the oldest waiter.
 */
export class Slots {
  readonly max: number
  private held = 0
  private readonly queue: Waiter[] = []

  constructor (max: number) {
    if (!(Number.isSafeInteger(max) && max >= 1) && max !== Infinity) {
      throw new InvalidInputError(`slots must be a positive integer, got ${max}`)
    }
    this.max = max
  }

  /** Slots currently held. */
  get inUse (): number {
    return this.held
  }

  /** Callers queued for a slot. */
  get waiting (): number {
    return this.queue.length
  }

  /** Whether `acquire` would wait now. */
  get full (): boolean {
    return this.held >= this.max || this.queue.length > 0
  }

  /**
   * Resolves with a release function once a slot is free.
   *
   * @throws AbortedError when `signal` fires first (no slot is held)
   */
  acquire (signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted === true) return Promise.reject(abortedError(signal))
    if (this.held < this.max && this.queue.length === 0) {
      this.held++
      return Promise.resolve(this.releaser())
    }
    return enqueue(this.queue, grant => ({ grant }), () => this.releaser(), signal, () => {})
  }

  private releaser (): () => void {
    let released = false
    return () => {
      if (released) return
      released = true
      const next = this.queue.shift()
      // Hand the slot over directly: `held` stays the same, nobody can barge in between.
      if (next !== undefined) next.grant()
      else this.held--
    }
  }
}

/** A queued caller; `grant` resolves its promise (and detaches its abort listener). */
interface Waiter {
  grant: () => void
}

/**
 * Queues a waiter built by `make` and returns its promise, which resolves with `result()` when the
 * owner grants it. On abort the waiter is removed and `onRemoved(wasHead)` lets the owner re-plan.
 */
function enqueue<W extends Waiter, T> (queue: W[], make: (grant: () => void) => W, result: () => T, signal: AbortSignal | undefined, onRemoved: (wasHead: boolean) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      const i = queue.indexOf(waiter)
      if (i === -1) return
      queue.splice(i, 1)
      reject(abortedError(signal))
      onRemoved(i === 0)
    }
    const waiter = make(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve(result())
    })
    signal?.addEventListener('abort', onAbort, { once: true })
    queue.push(waiter)
  })
}

function now (): number {
  return performance.now()
}

function checkRate (bytesPerSecond: number | undefined): number | undefined {
  if (bytesPerSecond === undefined || bytesPerSecond === 0) return undefined
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond < 0) {
    throw new InvalidInputError(`rate must be a non-negative number of bytes per second, got ${bytesPerSecond}`)
  }
  return bytesPerSecond
}

function defaultBurst (rate: number | undefined): number {
  return rate === undefined ? 1 : rate * DEFAULT_BURST_SECONDS
}

function abortedError (signal: AbortSignal | undefined): AbortedError {
  const reason: unknown = signal?.reason
  return reason instanceof AbortedError ? reason : new AbortedError(undefined, { cause: reason })
}

/**
 * Upload limits of a serving node, as the chunk server asks for them: a slot from `slots` shared
 * by every peer, taken only after one of the requesting peer's own `perPeer` slots, then the bytes
 * from the rate bucket. So one peer — one that stops reading, say, and holds every send it starts
 * — holds at most `perPeer` of the node's slots, and the others keep being served.
 */
export class UploadLimits {
  private readonly gate: Slots
  private readonly bucket: TokenBucket
  private readonly peers = new Map<string, Slots>()

  constructor (slots: number, private readonly perPeer: number, rate?: number) {
    this.gate = new Slots(slots)
    this.bucket = new TokenBucket(rate)
    if (!Number.isSafeInteger(perPeer) || perPeer < 1) throw new InvalidInputError(`slots per peer must be a positive integer, got ${perPeer}`)
  }

  /** Resolves with a release function once `peer` holds one of its own slots and one of the node's. */
  async slot (signal: AbortSignal, peer = ''): Promise<() => void> {
    const own = this.peers.get(peer) ?? new Slots(this.perPeer)
    this.peers.set(peer, own)
    let releaseOwn: (() => void) | undefined
    try {
      releaseOwn = await own.acquire(signal)
      const releaseShared = await this.gate.acquire(signal)
      const release = releaseOwn
      return () => { releaseShared(); release(); this.forget(peer, own) }
    } catch (err) {
      releaseOwn?.()
      this.forget(peer, own)
      throw err
    }
  }

  async bandwidth (bytes: number, signal: AbortSignal): Promise<void> {
    await this.bucket.take(bytes, signal)
  }

  /** Whether `slot(peer)` would wait now. */
  slotWouldWait (peer = ''): boolean {
    return this.gate.full || this.peers.get(peer)?.full === true
  }

  bandwidthWouldWait (bytes: number): boolean {
    return this.bucket.wouldWait(bytes)
  }

  /** Uploads running or waiting for a shared slot. */
  load (): number {
    return this.gate.inUse + this.gate.waiting
  }

  private forget (peer: string, own: Slots): void {
    if (own.inUse === 0 && own.waiting === 0 && this.peers.get(peer) === own) this.peers.delete(peer)
  }
}
