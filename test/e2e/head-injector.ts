/**
 * Test-only: a libp2p node in the test process that speaks `/shoal/heads/1.0.0` with crafted
 * heads, to check that a daemon refuses forged, untrusted, replayed and malformed heads whatever
 * path brings them.
 *
 * Two ways in:
 * - **pull** (`advertise` + `dial`): the daemon syncs with every peer it identifies; the injector's
 *   head source answers with entries that claim whatever stamp the test chooses (entries are only
 *   summaries, nothing checks them), so the daemon asks for the crafted bytes and offers them to
 *   its head book.
 * - **push** (`push`): the injector opens the exchange itself and sends the crafted heads in step 3
 *   (signed heads "the responder lacks"), which the daemon offers to its book as well.
 * Heads the daemon sends back are kept in `received`, so a test can capture genuine heads to replay.
 *
 * Not a goal: speaking gossipsub, chunks or manifests. The node runs tcp + noise + yamux + identify
 * only, like the daemon, on loopback.
 */
import { createHash, randomBytes } from 'node:crypto'
import { noise } from '@chainsafe/libp2p-noise'
import { identify } from '@libp2p/identify'
import type { Libp2p, PeerId } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { pbStream } from '@libp2p/utils'
import { yamux } from '@libp2p/yamux'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { openSignedHead } from '../../src/core/heads.js'
import { HEADS_PROTOCOL, MAX_SYNC_FRAME_BYTES, headSync, type HeadSource, type HeadSync, type SyncEntry } from '../../src/protocol/heads/index.js'
import { SyncMessage } from '../../src/protocol/heads/pb/heads.js'

/** A crafted head and the entry the injector claims for it (stamp as the test wants). */
export interface Advert { model: string, label: string, wall: number, counter: number, bytes: Uint8Array }

const TIMEOUT_MS = 10_000

export class HeadInjector {
  /** Signed heads the daemon sent to this node, as received (not checked). */
  readonly received: Uint8Array[] = []
  private readonly adverts = new Map<string, Advert>()

  private constructor (readonly node: Libp2p<{ heads: HeadSync, identify: unknown }>) {}

  static async start (): Promise<HeadInjector> {
    const ref: { self?: HeadInjector } = {}
    const source: HeadSource = {
      // Never equal to a real digest: the daemon always goes on to compare entries.
      digest: () => randomBytes(32),
      entries: () => [...(ref.self?.adverts.values() ?? [])].map(a => ({ model: a.model, label: a.label, wall: a.wall, counter: a.counter, id: idOf(a.bytes) })),
      signed: (model, label) => ref.self?.adverts.get(`${model}\0${label}`)?.bytes,
      offer: async bytes => { ref.self?.received.push(bytes); return 'settled' }
    }
    const node = await createLibp2p({
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: { identify: identify(), heads: headSync(source) }
    })
    ref.self = new HeadInjector(node as unknown as Libp2p<{ heads: HeadSync, identify: unknown }>)
    return ref.self
  }

  get peerId (): string { return this.node.peerId.toString() }

  /** What the injector serves for `model@label` when the daemon syncs with it (replaces any earlier one). */
  advertise (a: Advert): void {
    this.adverts.set(`${a.model}\0${a.label}`, a)
  }

  clearAdverts (): void {
    this.adverts.clear()
  }

  /** Connects to a daemon (its identify then triggers the daemon's sync with this node). */
  async dial (addr: string): Promise<PeerId> {
    const conn = await this.node.dial(multiaddr(addr), { signal: AbortSignal.timeout(TIMEOUT_MS) })
    return conn.remotePeer
  }

  async hangUp (addr: string): Promise<void> {
    await this.node.hangUp(multiaddr(addr)).catch(() => {})
  }

  /** Heads received so far, decoded (those that decode). */
  receivedHeads (): ReturnType<typeof openSignedHead>[] {
    const out = []
    for (const bytes of this.received) {
      try { out.push(openSignedHead(bytes)) } catch { /* the daemon only sends what it accepted */ }
    }
    return out
  }

  /**
   * Opens an exchange with the daemon at `addr` and sends `heads` as "heads you lack" (step 3),
   * wanting nothing back. Resolves once the frame is written and the stream closed.
   */
  async push (addr: string, heads: Uint8Array[]): Promise<void> {
    const signal = AbortSignal.timeout(TIMEOUT_MS)
    const stream = await this.node.dialProtocol(multiaddr(addr), HEADS_PROTOCOL, { signal })
    try {
      const pb = pbStream(stream, { maxDataLength: MAX_SYNC_FRAME_BYTES }).pb(SyncMessage)
      await pb.write(message({ digest: randomBytes(32) }), { signal })
      const answer = await pb.read({ signal })
      if (answer.match) throw new Error('the daemon matched a random digest')
      await pb.write(message({ heads: heads as Array<Uint8Array<ArrayBuffer>> }), { signal })
      await stream.close({ signal }).catch(() => {})
    } catch (err) {
      stream.abort(err as Error)
      throw err
    }
  }

  async stop (): Promise<void> {
    await this.node.stop()
  }
}

export function idOf (bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

/** A summary entry (for tests that want to compare). */
export type { SyncEntry }

function message (m: Partial<SyncMessage>): SyncMessage {
  return { digest: new Uint8Array(0), match: false, entries: [], heads: [], want: [], ...m } as SyncMessage
}
