/**
 * `/shoal/heads/1.0.0`: anti-entropy. Two nodes compare their sets of winning heads and send each
 * other what the other lacks, so a node that joined late, restarted or sat behind a partition
 * converges without waiting for the next publish. Gossip carries live updates; this repairs.
 *
 * One exchange per stream, at most four `SyncMessage` frames (each capped at `MAX_SYNC_FRAME_BYTES`):
 * 1. opener → responder: `digest` of its set (`HeadSource.digest`);
 * 2. responder → opener: `match` when its digest is the same (done), else its `entries`;
 * 3. opener → responder: the signed `heads` the responder lacks or holds older, and the entries it
 *    `want`s (those where the responder's stamp is greater, or equal with another head);
 * 4. responder → opener: the wanted signed `heads`.
 * Each side offers what it receives to its `HeadSource`, which checks every head (signature,
 * trust, ordering) as if it came from gossip: this protocol moves bytes and never decides.
 *
 * Contract: idempotent (a second exchange between converged nodes is one round trip with
 * `match`); every wait has a deadline (`SYNC_TIMEOUT_MS`); malformed frames abort the stream.
 */
import type { PeerId, Startable, Stream } from '@libp2p/interface'
import type { ConnectionManager, Registrar } from '@libp2p/interface-internal'
import { pbStream } from '@libp2p/utils'
import { MAX_SIGNED_HEAD_BYTES } from '../../core/heads.js'
import { SyncMessage, type HeadEntry } from './pb/heads.js'

export const HEADS_PROTOCOL = '/shoal/heads/1.0.0'
/** @default 20 s — one whole exchange */
export const SYNC_TIMEOUT_MS = 20_000
/** @default 10_000 — labels one exchange covers; beyond, the rest waits for the next round */
export const MAX_SYNC_ENTRIES = 10_000
/** @default 2 — inbound exchanges per connection at once */
export const MAX_INBOUND_SYNCS = 2
/** Room for a full list of entries or of heads. @default MAX_SYNC_ENTRIES × 1 KiB */
export const MAX_SYNC_FRAME_BYTES = MAX_SYNC_ENTRIES * 1024
/** @default 512 — heads per frame in steps 3 and 4 */
const MAX_HEADS_PER_FRAME = Math.floor(MAX_SYNC_FRAME_BYTES / (MAX_SIGNED_HEAD_BYTES + 16))

export interface SyncEntry { model: string, label: string, wall: number, counter: number, id: string }

/** What the protocol needs from the node; implemented by the daemon over the head book. */
export interface HeadSource {
  digest: () => Uint8Array
  entries: () => SyncEntry[]
  /** The signed head currently winning `model@label`, or undefined. */
  signed: (model: string, label: string) => Uint8Array | undefined
  /** A head received from `peer`: checked and kept if it wins. */
  offer: (bytes: Uint8Array, peer: string) => Promise<void>
}

export interface SyncResult { sent: number, received: number, matched: boolean }

export interface HeadSync {
  /** Runs one exchange with `peer`. */
  sync: (peer: PeerId, signal?: AbortSignal) => Promise<SyncResult>
}

export interface HeadSyncComponents { registrar: Registrar, connectionManager: ConnectionManager }

class HeadSyncService implements HeadSync, Startable {
  constructor (private readonly components: HeadSyncComponents, private readonly source: HeadSource) {}

  async start (): Promise<void> {
    await this.components.registrar.handle(HEADS_PROTOCOL, async (stream, connection) => {
      await this.respond(stream, connection.remotePeer.toString())
    }, { maxInboundStreams: MAX_INBOUND_SYNCS })
  }

  async stop (): Promise<void> {
    await this.components.registrar.unhandle(HEADS_PROTOCOL)
  }

  async sync (peer: PeerId, signal?: AbortSignal): Promise<SyncResult> {
    const deadline = AbortSignal.timeout(SYNC_TIMEOUT_MS)
    const combined = signal === undefined ? deadline : AbortSignal.any([signal, deadline])
    const stream = await this.components.connectionManager.openStream(peer, HEADS_PROTOCOL, { signal: combined })
    try {
      const pb = pbStream(stream, { maxDataLength: MAX_SYNC_FRAME_BYTES }).pb(SyncMessage)
      await pb.write(message({ digest: this.source.digest() }), { signal: combined })
      const answer = await pb.read({ signal: combined })
      if (answer.match) {
        await stream.close({ signal: combined }).catch(() => {})
        return { sent: 0, received: 0, matched: true }
      }
      const theirs = new Map(answer.entries.slice(0, MAX_SYNC_ENTRIES).map(e => [key(e.model, e.label), fromWire(e)]))
      const give: Uint8Array[] = []
      const want: SyncEntry[] = []
      const mine = this.source.entries()
      const mineByKey = new Map(mine.map(e => [key(e.model, e.label), e]))
      for (const e of mine) {
        const t = theirs.get(key(e.model, e.label))
        if (t === undefined || newer(e, t) > 0) {
          const bytes = this.source.signed(e.model, e.label)
          if (bytes !== undefined && give.length < MAX_HEADS_PER_FRAME) give.push(bytes)
        }
      }
      for (const [k, t] of theirs) {
        const m = mineByKey.get(k)
        if ((m === undefined || newer(t, m) > 0) && want.length < MAX_HEADS_PER_FRAME) want.push(t)
      }
      await pb.write(message({ heads: give, want: want.map(toWire) }), { signal: combined })
      const reply = want.length === 0 ? { heads: [] } : await pb.read({ signal: combined })
      const peerId = peer.toString()
      for (const bytes of reply.heads.slice(0, MAX_HEADS_PER_FRAME)) await this.source.offer(bytes, peerId)
      await stream.close({ signal: combined }).catch(() => {})
      return { sent: give.length, received: reply.heads.length, matched: false }
    } catch (err) {
      stream.abort(err as Error)
      throw err
    }
  }

  private async respond (stream: Stream, peer: string): Promise<void> {
    const signal = AbortSignal.timeout(SYNC_TIMEOUT_MS)
    try {
      const pb = pbStream(stream, { maxDataLength: MAX_SYNC_FRAME_BYTES }).pb(SyncMessage)
      const opening = await pb.read({ signal })
      const digest = this.source.digest()
      if (Buffer.compare(opening.digest, digest) === 0) {
        await pb.write(message({ match: true }), { signal })
        await stream.close({ signal })
        return
      }
      await pb.write(message({ entries: this.source.entries().slice(0, MAX_SYNC_ENTRIES).map(toWire) }), { signal })
      const step3 = await pb.read({ signal })
      for (const bytes of step3.heads.slice(0, MAX_HEADS_PER_FRAME)) await this.source.offer(bytes, peer)
      if (step3.want.length > 0) {
        const heads: Uint8Array[] = []
        for (const w of step3.want.slice(0, MAX_HEADS_PER_FRAME)) {
          const bytes = this.source.signed(w.model, w.label)
          if (bytes !== undefined) heads.push(bytes)
        }
        await pb.write(message({ heads }), { signal })
      }
      await stream.close({ signal })
    } catch (err) {
      stream.abort(err as Error)
    }
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

function key (model: string, label: string): string {
  return `${model}\0${label}`
}

function message (m: { digest?: Uint8Array, match?: boolean, entries?: HeadEntry[], heads?: Uint8Array[], want?: HeadEntry[] }): SyncMessage {
  return { digest: new Uint8Array(0), match: false, entries: [], heads: [], want: [], ...m } as SyncMessage
}

function toWire (e: SyncEntry): HeadEntry {
  return { model: e.model, label: e.label, wall: BigInt(e.wall), counter: e.counter, id: Buffer.from(e.id, 'hex') as unknown as Uint8Array<ArrayBuffer> }
}

function fromWire (e: HeadEntry): SyncEntry {
  return { model: e.model, label: e.label, wall: Number(e.wall), counter: e.counter, id: Buffer.from(e.id).toString('hex') }
}
