/**
 * `/shoal/heads/1.0.0`: anti-entropy. Two nodes compare their sets of winning heads and send each
 * other what the other lacks, so a node that joined late, restarted or sat behind a partition
 * converges without waiting for the next publish. Gossip carries live updates; this repairs.
 *
 * One exchange per stream, at most four `SyncMessage` frames (each at most `MAX_SYNC_FRAME_BYTES`,
 * and checked by `decodeSyncFrame` before anything is read from it):
 * 1. opener → responder: `digest` of its set (`HeadSource.digest`), or an empty digest to ask for
 *    a full exchange whatever the responder remembers (below);
 * 2. responder → opener: `match` when its digest is the same, or when neither side changed since
 *    their last exchange that left nothing behind (done); else its `entries` (at most
 *    `MAX_SYNC_ENTRIES`);
 * 3. opener → responder: the signed `heads` the responder lacks or holds older (at most
 *    `MAX_SYNC_HEADS`), and the entries it `want`s (at most `MAX_SYNC_WANTS`: those where the
 *    responder's stamp is greater, or equal with another head);
 * 4. responder → opener: the wanted signed `heads`.
 * Each side offers what it receives to its `HeadSource`, which checks every head (budget, trust,
 * ordering, signature) as if it came from gossip: this protocol moves bytes and never decides.
 *
 * Two nodes that trust different publishers never have equal digests. So that they do not send
 * each other the same entries and heads every round, the responder remembers per connection the
 * two digests (and its trust epoch) of the last exchange in which it offered every head it was
 * sent and found every head it was asked for; the same pair again answers `match`. An opener
 * whose last exchange with that peer left something behind (a list cut at a cap, a head the source
 * will take only later), or whose trust rules changed since, opens with an empty digest instead.
 * A new connection (a restart, a reconnect) starts with nothing remembered. Lists cut at a cap
 * start at a random place, so that repeated exchanges cover everything.
 *
 * Contract: idempotent (a second exchange between converged nodes is one round trip with
 * `match`); every wait has a deadline (`SYNC_TIMEOUT_MS` for the exchange, and `answerWithinMs`
 * for the first answer when the caller gives one); an over-limit or undecodable frame aborts the
 * stream; a peer over its budget of inbound exchanges (`HeadSource.admit`) has its stream reset.
 */
import type { Connection, PeerId, Startable, Stream } from '@libp2p/interface'
import type { ConnectionManager, Registrar } from '@libp2p/interface-internal'
import { lpStream } from '@libp2p/utils'
import { MalformedDataError, ShoalError } from '../../core/errors.js'
import { MAX_STAMP_COUNTER, MAX_STAMP_WALL_MS } from '../../core/heads.js'
import { SyncMessage, type HeadEntry } from './pb/heads.js'

export const HEADS_PROTOCOL = '/shoal/heads/1.0.0'
/** @default 20 s — one whole exchange */
export const SYNC_TIMEOUT_MS = 20_000
/** @default 10_000 — labels one exchange covers; beyond, the rest waits for the next exchange */
export const MAX_SYNC_ENTRIES = 10_000
/** @default 512 — signed heads in one frame (steps 3 and 4), so in one exchange each way */
export const MAX_SYNC_HEADS = 512
/** @default 512 — entries the opener asks for in one exchange (step 3) */
export const MAX_SYNC_WANTS = 512
/** @default 2 — inbound exchanges per connection at once */
export const MAX_INBOUND_SYNCS = 2
/** @default 384 — the largest entry on the wire: a 256-character model, a 64-character label, a 32-byte id, the stamp */
const MAX_ENTRY_WIRE_BYTES = 384
/**
 * Room for a full list of entries, the largest frame (a full list of heads, `MAX_SYNC_HEADS` ×
 * 4 KiB, is about half of it). @default MAX_SYNC_ENTRIES × 384 bytes (3.84 MB)
 */
export const MAX_SYNC_FRAME_BYTES = MAX_SYNC_ENTRIES * MAX_ENTRY_WIRE_BYTES
/** @default 4096 — connections (responder) and peers (opener) whose last exchange is remembered; the oldest go first */
export const MAX_REMEMBERED_PEERS = 4096
const DIGEST_BYTES = 32

export interface SyncEntry { model: string, label: string, wall: number, counter: number, id: string }

/**
 * What the source made of a head it was offered: `settled` — decided for good (kept, refused, or
 * already held); `later` — set aside (over the sender's budget, stamped in the future), so
 * offering it again later may end otherwise.
 */
export type OfferVerdict = 'settled' | 'later'

/** What the protocol needs from the node; implemented by the daemon over the head book. */
export interface HeadSource {
  digest: () => Uint8Array
  entries: () => SyncEntry[]
  /** The signed head currently winning `model@label`, or undefined. */
  signed: (model: string, label: string) => Uint8Array | undefined
  /** A head received from `peer`: checked and kept if it wins. */
  offer: (bytes: Uint8Array, peer: string) => Promise<OfferVerdict>
  /** Whether `peer` may open an exchange now (a budget); absent: always. */
  admit?: (peer: string) => boolean
  /** Changes whenever the trust rules do (what was refused may now be taken); absent: never. */
  epoch?: () => number
}

export interface SyncResult { sent: number, received: number, matched: boolean }

export interface SyncOptions {
  signal?: AbortSignal
  /** Run the exchange on this connection to the peer (default: the connection manager picks one). */
  connection?: Connection
  /** Fail with `SyncUnansweredError` unless the first answer arrives within this many ms. */
  answerWithinMs?: number
}

export interface HeadSync {
  /** Runs one exchange with `peer`. */
  sync: (peer: PeerId, options?: SyncOptions) => Promise<SyncResult>
}

export interface HeadSyncComponents { registrar: Registrar, connectionManager: ConnectionManager }

/** A peer that did not answer the opening of an exchange within the caller's `answerWithinMs`. */
export class SyncUnansweredError extends ShoalError {
  readonly code = 'SYNC_UNANSWERED'
}

/**
 * Decodes one frame and checks it against the limits (`MAX_SYNC_ENTRIES`, `MAX_SYNC_HEADS`,
 * `MAX_SYNC_WANTS`, field sizes). Throws `MalformedDataError` saying what is wrong. The heads in
 * it are bytes still: the head source checks each one.
 */
export function decodeSyncFrame (bytes: Uint8Array): SyncMessage {
  if (bytes.byteLength > MAX_SYNC_FRAME_BYTES) throw new MalformedDataError(`sync frame of ${bytes.byteLength} bytes is over the ${MAX_SYNC_FRAME_BYTES}-byte limit`)
  let m: SyncMessage
  try {
    m = SyncMessage.decode(bytes, { limits: { entries: MAX_SYNC_ENTRIES, heads: MAX_SYNC_HEADS, want: MAX_SYNC_WANTS } })
  } catch (err) {
    throw new MalformedDataError(`sync frame does not decode: ${(err as Error).message}`)
  }
  if (m.digest.byteLength !== 0 && m.digest.byteLength !== DIGEST_BYTES) throw new MalformedDataError(`sync frame digest of ${m.digest.byteLength} bytes (expected ${DIGEST_BYTES} or none)`)
  for (const e of m.entries) checkEntry(e, 'entry')
  for (const e of m.want) checkEntry(e, 'wanted entry')
  return m
}

function checkEntry (e: HeadEntry, what: string): void {
  if (e.model.length > 256 || e.label.length > 64) throw new MalformedDataError(`sync frame ${what} names a model or label over the length limits (256, 64)`)
  if (e.id.byteLength !== DIGEST_BYTES) throw new MalformedDataError(`sync frame ${what} has an id of ${e.id.byteLength} bytes (expected ${DIGEST_BYTES})`)
  if (e.wall > BigInt(MAX_STAMP_WALL_MS) || e.counter > MAX_STAMP_COUNTER) throw new MalformedDataError(`sync frame ${what} has a stamp past the limits`)
}

interface Remembered { theirs: string, mine: string, epoch: number }

class HeadSyncService implements HeadSync, Startable {
  /** Responder side: per connection, the last exchange that left nothing behind. */
  private readonly settled = new Map<string, Remembered>()
  /** Opener side: per peer, the trust epoch of its last exchange, or `dirty` if that one left something behind. */
  private readonly clean = new Map<string, number | 'dirty'>()

  constructor (private readonly components: HeadSyncComponents, private readonly source: HeadSource) {}

  async start (): Promise<void> {
    await this.components.registrar.handle(HEADS_PROTOCOL, async (stream, connection) => {
      await this.respond(stream, connection.remotePeer.toString(), connection.id)
    }, { maxInboundStreams: MAX_INBOUND_SYNCS })
  }

  async stop (): Promise<void> {
    await this.components.registrar.unhandle(HEADS_PROTOCOL)
  }

  async sync (peer: PeerId, options: SyncOptions = {}): Promise<SyncResult> {
    const peerId = peer.toString()
    const deadline = AbortSignal.timeout(SYNC_TIMEOUT_MS)
    const combined = options.signal === undefined ? deadline : AbortSignal.any([options.signal, deadline])
    const answerBy = options.answerWithinMs === undefined ? undefined : AbortSignal.timeout(options.answerWithinMs)
    const opening = answerBy === undefined ? combined : AbortSignal.any([combined, answerBy])
    let stream: Stream | undefined
    try {
      stream = options.connection !== undefined
        ? await options.connection.newStream(HEADS_PROTOCOL, { signal: opening })
        : await this.components.connectionManager.openStream(peer, HEADS_PROTOCOL, { signal: opening })
      const lp = lpStream(stream, { maxDataLength: MAX_SYNC_FRAME_BYTES })
      const epoch = this.source.epoch?.() ?? 0
      const last = this.clean.get(peerId)
      const digest = last === undefined || last === epoch ? this.source.digest() : new Uint8Array(0)
      this.remember(this.clean, peerId, 'dirty')
      await lp.write(encode({ digest }), { signal: opening })
      const answer = decodeSyncFrame((await lp.read({ signal: opening })).subarray())
      if (answer.match) {
        await stream.close({ signal: combined }).catch(() => {})
        this.remember(this.clean, peerId, epoch)
        return { sent: 0, received: 0, matched: true }
      }
      let whole = answer.entries.length < MAX_SYNC_ENTRIES
      const theirs = new Map(answer.entries.map(e => [key(e.model, e.label), fromWire(e)]))
      const mine = this.source.entries()
      const mineByKey = new Map(mine.map(e => [key(e.model, e.label), e]))
      const lacking = mine.filter(e => {
        const t = theirs.get(key(e.model, e.label))
        return t === undefined || newer(e, t) > 0
      })
      const wanted = [...theirs].filter(([k, t]) => {
        const m = mineByKey.get(k)
        return m === undefined || newer(t, m) > 0
      }).map(([, t]) => t)
      const give: Uint8Array[] = []
      for (const e of rotated(lacking)) {
        if (give.length >= MAX_SYNC_HEADS) { whole = false; break }
        const bytes = this.source.signed(e.model, e.label)
        if (bytes !== undefined) give.push(bytes)
      }
      if (wanted.length > MAX_SYNC_WANTS) whole = false
      const want = rotated(wanted).slice(0, MAX_SYNC_WANTS)
      await lp.write(encode({ heads: give, want: want.map(toWire) }), { signal: combined })
      const reply = want.length === 0 ? undefined : decodeSyncFrame((await lp.read({ signal: combined })).subarray())
      const received = reply?.heads ?? []
      if (received.length < want.length) whole = false
      for (const bytes of received) if (await this.source.offer(bytes, peerId) === 'later') whole = false
      await stream.close({ signal: combined }).catch(() => {})
      if (whole) this.remember(this.clean, peerId, epoch)
      return { sent: give.length, received: received.length, matched: false }
    } catch (err) {
      stream?.abort(err as Error)
      if (answerBy?.aborted === true && options.signal?.aborted !== true) {
        throw new SyncUnansweredError(`${peerId} did not answer a head sync within ${options.answerWithinMs ?? 0} ms`, { cause: err })
      }
      throw err
    }
  }

  private async respond (stream: Stream, peer: string, connection: string): Promise<void> {
    if (this.source.admit?.(peer) === false) {
      stream.abort(new Error('over its budget of head syncs'))
      return
    }
    const signal = AbortSignal.timeout(SYNC_TIMEOUT_MS)
    try {
      const lp = lpStream(stream, { maxDataLength: MAX_SYNC_FRAME_BYTES })
      const opening = decodeSyncFrame((await lp.read({ signal })).subarray())
      const digest = this.source.digest()
      const epoch = this.source.epoch?.() ?? 0
      const state: Remembered = { theirs: hex(opening.digest), mine: hex(digest), epoch }
      const key = `${peer}/${connection}`
      const last = this.settled.get(key)
      this.settled.delete(key)
      const unchanged = opening.digest.byteLength > 0 && last !== undefined && last.theirs === state.theirs && last.mine === state.mine && last.epoch === epoch
      if (Buffer.compare(opening.digest, digest) === 0 || unchanged) {
        await lp.write(encode({ match: true }), { signal })
        await stream.close({ signal })
        if (unchanged) this.remember(this.settled, key, state)
        return
      }
      await lp.write(encode({ entries: rotated(this.source.entries()).slice(0, MAX_SYNC_ENTRIES).map(toWire) }), { signal })
      const step3 = decodeSyncFrame((await lp.read({ signal })).subarray())
      let whole = true
      for (const bytes of step3.heads) if (await this.source.offer(bytes, peer) === 'later') whole = false
      if (step3.want.length > 0) {
        const heads: Uint8Array[] = []
        for (const w of step3.want) {
          const bytes = this.source.signed(w.model, w.label)
          if (bytes !== undefined) heads.push(bytes)
          else whole = false
        }
        await lp.write(encode({ heads }), { signal })
      }
      await stream.close({ signal })
      if (whole && opening.digest.byteLength > 0) this.remember(this.settled, key, state)
    } catch (err) {
      stream.abort(err as Error)
    }
  }

  private remember<V> (map: Map<string, V>, key: string, value: V): void {
    map.delete(key)
    if (map.size >= MAX_REMEMBERED_PEERS) map.delete(map.keys().next().value as string)
    map.set(key, value)
  }
}

export function headSync (source: HeadSource): (components: HeadSyncComponents) => HeadSync {
  return components => new HeadSyncService(components, source)
}

/** > 0 when `a` should replace `b` on the other side: a greater stamp, or the same stamp and another head. */
function newer (a: SyncEntry, b: SyncEntry): number {
  if (a.wall !== b.wall) return a.wall - b.wall
  if (a.counter !== b.counter) return a.counter - b.counter
  return a.id === b.id ? 0 : 1
}

/** The list started at a random place (wrapping), so that a list cut at a cap differs each time. */
function rotated<T> (list: T[]): T[] {
  if (list.length < 2) return list
  const at = Math.floor(Math.random() * list.length)
  return [...list.slice(at), ...list.slice(0, at)]
}

function key (model: string, label: string): string {
  return `${model}\0${label}`
}

function hex (bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex')
}

function encode (m: { digest?: Uint8Array, match?: boolean, entries?: HeadEntry[], heads?: Uint8Array[], want?: HeadEntry[] }): Uint8Array {
  return SyncMessage.encode({ digest: new Uint8Array(0), match: false, entries: [], heads: [], want: [], ...m } as SyncMessage)
}

function toWire (e: SyncEntry): HeadEntry {
  return { model: e.model, label: e.label, wall: BigInt(e.wall), counter: e.counter, id: Buffer.from(e.id, 'hex') as unknown as Uint8Array<ArrayBuffer> }
}

function fromWire (e: HeadEntry): SyncEntry {
  return { model: e.model, label: e.label, wall: Number(e.wall), counter: e.counter, id: Buffer.from(e.id).toString('hex') }
}
