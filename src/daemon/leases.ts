/**
 * Leases: a serving process that loaded a version holds a lease on it, and GC (explicit or by
 * quota) never removes a leased version. A lease has a TTL; the holder renews it while it uses
 * the version and releases it when it lets go (the client does so on close). A holder that dies
 * stops renewing and its lease expires.
 *
 * Leases are kept in the store (its `Leases` records, `store/api.ts`: the index's `leases`
 * sublevel, synced batches like every index write) so a daemon restart does not drop them: the holder's next renew finds its lease again. A lease is
 * answered only once it is on disk. Expired leases are swept every `SWEEP_INTERVAL_MS`.
 */
import { randomBytes } from 'node:crypto'
import type { VersionId } from '../core/digest.js'
import { InvalidInputError, NotFoundError } from '../core/errors.js'
import type { LeaseRecord, Leases } from '../store/api.js'

/** @default 60 s */
export const DEFAULT_LEASE_TTL_MS = 60_000
/** @default 1 h */
export const MAX_LEASE_TTL_MS = 3_600_000
/** @default 5 s */
export const SWEEP_INTERVAL_MS = 5_000
/** @default 10_000 — leases one daemon holds at once */
export const MAX_LEASES = 10_000

/** A lease, as the store keeps it. */
export type Lease = LeaseRecord

export class LeaseTable {
  private readonly leases = new Map<string, Lease>()
  private timer?: NodeJS.Timeout

  constructor (private readonly store: Leases, private readonly onChange?: (count: number) => void, private readonly clock: () => number = Date.now) {}

  async start (): Promise<void> {
    const now = this.clock()
    for await (const lease of this.store.leaseRecords()) {
      if (lease.expiresAt > now) this.leases.set(lease.id, lease)
      else await this.drop(lease.id).catch(() => {}) // an expired lease left on disk is dropped next time
    }
    this.timer = setInterval(() => { void this.sweep() }, SWEEP_INTERVAL_MS)
    this.timer.unref()
    this.onChange?.(this.leases.size)
  }

  stop (): void {
    clearInterval(this.timer)
  }

  async acquire (req: { model: string, version: VersionId, path: string, holder: string, ttlMs?: number }): Promise<Lease> {
    if (this.leases.size >= MAX_LEASES) throw new InvalidInputError(`this daemon holds ${MAX_LEASES} leases already; release some`)
    const now = this.clock()
    const lease: Lease = {
      id: randomBytes(12).toString('hex'), holder: req.holder, model: req.model, version: req.version, path: req.path,
      createdAt: now, expiresAt: now + ttl(req.ttlMs)
    }
    await this.store.putLease(lease, { doing: `leasing ${req.model}@${req.version}`, kept: 'the lease was not taken' })
    this.leases.set(lease.id, lease)
    this.onChange?.(this.leases.size)
    return lease
  }

  async renew (id: string, ttlMs?: number): Promise<Lease> {
    const lease = this.leases.get(id)
    if (lease === undefined || lease.expiresAt <= this.clock()) throw new NotFoundError(`lease ${id.slice(0, 32)} is unknown or expired; resolve and lease again`)
    const renewed = { ...lease, expiresAt: this.clock() + ttl(ttlMs) }
    await this.store.putLease(renewed, { doing: `renewing lease ${id.slice(0, 32)}`, kept: `the lease was not renewed (it expires at ${new Date(lease.expiresAt).toISOString()})` })
    this.leases.set(id, renewed)
    return { ...renewed }
  }

  async release (id: string): Promise<boolean> {
    const had = this.leases.delete(id)
    if (had) {
      this.onChange?.(this.leases.size)
      // Released in memory at once; a record the disk refuses to drop holds its version after a
      // restart only until it expires.
      await this.drop(id)
    }
    return had
  }

  list (): Lease[] {
    const now = this.clock()
    return [...this.leases.values()].filter(l => l.expiresAt > now).map(l => ({ ...l }))
  }

  private async drop (id: string): Promise<void> {
    await this.store.dropLease(id, { doing: `dropping lease ${id.slice(0, 32)}`, kept: 'the lease is released on this daemon, but after a restart its record holds the version until it expires' })
  }

  /** Versions GC must keep. */
  versions (): VersionId[] {
    return [...new Set(this.list().map(l => l.version))]
  }

  private async sweep (): Promise<void> {
    const now = this.clock()
    for (const [id, lease] of this.leases) {
      if (lease.expiresAt <= now) {
        this.leases.delete(id)
        await this.drop(id).catch(() => {}) // dropped at the next start if the disk refuses it now
      }
    }
    this.onChange?.(this.leases.size)
  }
}

function ttl (ms: number | undefined): number {
  const value = ms ?? DEFAULT_LEASE_TTL_MS
  if (!Number.isInteger(value) || value < 1000 || value > MAX_LEASE_TTL_MS) throw new InvalidInputError(`a lease TTL is 1 s to ${MAX_LEASE_TTL_MS / 1000} s`)
  return value
}
