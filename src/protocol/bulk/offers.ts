/**
 * Outstanding bulk offers: single-use tokens, each bound to one peer and one key, valid for a
 * while. MUST hold: a token is taken at most once; an offer that is neither taken nor withdrawn
 * expires after `ttlMs`, and its `connected` then resolves `undefined`; the number of offers per
 * peer and in all never passes its cap (past it `add` throws `BulkUnavailableError`).
 */
import { randomBytes } from 'node:crypto'
import { TOKEN_BYTES } from './constants.js'
import { BulkUnavailableError } from './errors.js'
import type { BulkSender } from './sender.js'

export interface OfferEntry {
  readonly peer: string
  /** The connection's key; undefined in clear. */
  readonly key: Uint8Array | undefined
  /** Settles the offer's `connected` (once). */
  settle: (sender: BulkSender | undefined) => void
}

export interface OfferLimits {
  ttlMs: number
  maxPerPeer: number
  max: number
}

interface Held extends OfferEntry {
  token: string
  timer: NodeJS.Timeout
  unlisten: () => void
}

export class OfferTable {
  private readonly byToken = new Map<string, Held>()
  private readonly perPeer = new Map<string, number>()

  constructor (private readonly limits: OfferLimits) {}

  get size (): number {
    return this.byToken.size
  }

  count (peer: string): number {
    return this.perPeer.get(peer) ?? 0
  }

  /**
   * A new offer for `peer`: its token, and `connected`, which resolves with the sender once the
   * token is presented, or `undefined` when it expires, is withdrawn (`signal`) or the table is
   * cleared.
   */
  add (peer: string, key: Uint8Array | undefined, signal?: AbortSignal): { token: Uint8Array, connected: Promise<BulkSender | undefined> } {
    const { maxPerPeer, max, ttlMs } = this.limits
    const mine = this.count(peer)
    if (mine >= maxPerPeer) throw new BulkUnavailableError(`peer ${peer} already holds ${mine} unused bulk offers (at most ${maxPerPeer}, MAX_OFFERS_PER_PEER): send its blocks on the libp2p stream`)
    if (this.byToken.size >= max) throw new BulkUnavailableError(`${this.byToken.size} bulk offers are outstanding (at most ${max}, MAX_OFFERS): send blocks on the libp2p stream`)
    const token = randomBytes(TOKEN_BYTES)
    const id = token.toString('hex')
    let resolve!: (sender: BulkSender | undefined) => void
    const connected = new Promise<BulkSender | undefined>(r => { resolve = r })
    const onAbort = (): void => this.drop(id)?.settle(undefined)
    signal?.addEventListener('abort', onAbort, { once: true })
    const held: Held = {
      peer,
      key,
      token: id,
      timer: setTimeout(onAbort, ttlMs),
      unlisten: () => signal?.removeEventListener('abort', onAbort),
      settle: sender => { resolve(sender) }
    }
    this.byToken.set(id, held)
    this.perPeer.set(peer, mine + 1)
    if (signal?.aborted === true) onAbort()
    return { token, connected }
  }

  /** The offer `token` belongs to, removed so it can never be used again; undefined if none. */
  take (token: Uint8Array): OfferEntry | undefined {
    return this.drop(Buffer.from(token.buffer, token.byteOffset, token.byteLength).toString('hex'))
  }

  /** Every offer expires now. */
  clear (): void {
    for (const id of [...this.byToken.keys()]) this.drop(id)?.settle(undefined)
  }

  private drop (id: string): Held | undefined {
    const held = this.byToken.get(id)
    if (held === undefined) return undefined
    this.byToken.delete(id)
    clearTimeout(held.timer)
    held.unlisten()
    const left = this.count(held.peer) - 1
    if (left > 0) this.perPeer.set(held.peer, left)
    else this.perPeer.delete(held.peer)
    return held
  }
}
