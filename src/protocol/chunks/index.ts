/**
 * `/shoal/chunks/2.0.0` as a libp2p service: registers the serving handler on start, and hands out
 * one `PeerChannel` per peer for requests (reopened when it closes). With a bulk channel
 * (`protocol/bulk/`), a new channel asks the peer for a bulk connection and blocks then come on it;
 * the serving side offers one to peers that ask.
 *
 * A peer that answers the protocol with "not supported" runs an older shoal (it speaks
 * `/shoal/chunks/1.0.0`, whole chunks): `channel` rejects with `OldPeerError`, which says so.
 *
 * @example
 * ```ts
 * const node = await createLibp2p({ services: { chunks: chunkExchange({ source, limiter }) } })
 * const channel = await node.services.chunks.channel(peerId)
 * await channel.want({ chunk, first: 0, count: 4, blockSize }, { onBlock: b => { verify(b); channel.release(b.data) } })
 * ```
 */
import type { PeerId, PeerStore, Startable } from '@libp2p/interface'
import { ShoalError } from '../../core/errors.js'
import type { BulkService } from '../bulk/index.js'
import type { ConnectionManager, Registrar } from '@libp2p/interface-internal'
import { BufferPool } from '../../core/buffer-pool.js'
import { PeerChannel } from './client.js'
import { CHUNKS_PROTOCOL, MAX_FRAME_BYTES, MAX_INBOUND_STREAMS, STREAM_IDLE_TIMEOUT_MS } from './constants.js'
import { RecentSends, ServerSession, type BlockEncoder, type PeerFaultHook, type SentHook, type ChunkSource, type ServerLog, type UploadLimiter } from './server.js'
import { OLD_CHUNKS_PROTOCOLS } from './constants.js'

export { PeerChannel, type BlockArrival, type BlockBytes, type BulkDialer, type Span as BlockSpan, type VersionWatcher, type WantOptions } from './client.js'
export { EncodedBlocks, MAX_NO_GAIN_CHUNKS, type EncoderStats } from './encoded-blocks.js'
export { RecentSends, type BlockEncoder, type OutgoingBlock, type PeerFaultHook, type SentHook, type ChunkSource, type HaveState, type HaveUpdate, type Span, type UploadLimiter } from './server.js'
export type { BlockRange } from './pb/chunks.js'
export { SendStalledError, SEND_STALL_MS } from '../framing.js'
export * from './constants.js'
export { faultyEncoder, faultyLimiter, faultySource, parseFaults, GARBAGE_BYTES, type ServerFaults } from './faults.js'
export * from './errors.js'

export interface ChunkExchangeInit {
  source: ChunkSource
  limiter: UploadLimiter
  /** Bytes this node may have requested from one peer at once (bounds that channel's read buffer). */
  maxInFlightBytes: number
  log?: ServerLog
  /** Metrics: called after each block sent. */
  onSent?: SentHook
  /** See `SEND_STALL_MS`. @default SEND_STALL_MS */
  sendStallMs?: number
  /** Receive buffers for blocks (shared with the bulk channel's receivers); each must hold `MAX_FRAME_BYTES`. */
  pool?: BufferPool
  /** Told of peers that misbehave on the serving side (the node's judge). */
  onPeerFault?: PeerFaultHook
  /** Block payloads on a second TCP connection (both ways: offered to peers, asked of them). Its pool must hold `MAX_FRAME_BYTES`. */
  bulk?: BulkService
  /** How long a new channel waits for its bulk connection before it goes on without. @default 3 s */
  bulkSetupMs?: number
  /** Encodes blocks for WANTs that offer a codec (the node's `EncodedBlocks`); absent: blocks go raw. */
  encoder?: BlockEncoder
}

/** A peer that does not speak this protocol version: it runs an older shoal. */
export class OldPeerError extends ShoalError {
  readonly code = 'OLD_PEER'
}

/** @default 3 s — the BULK answer and the dial together */
export const BULK_SETUP_MS = 3_000

export interface ChunkExchangeComponents {
  registrar: Registrar
  connectionManager: ConnectionManager
  peerStore?: PeerStore
  /** libp2p's event target (its `peer:disconnect`). */
  events?: {
    addEventListener: (type: 'peer:disconnect', listener: (evt: CustomEvent<PeerId>) => void) => void
    removeEventListener: (type: 'peer:disconnect', listener: (evt: CustomEvent<PeerId>) => void) => void
  }
}

export interface ChunkExchange {
  /** The open channel to `peer`, opening a stream (and dialling) if needed. */
  channel: (peer: PeerId, signal?: AbortSignal) => Promise<PeerChannel>
}

class ChunkExchangeService implements ChunkExchange, Startable {
  private readonly channels = new Map<string, Promise<PeerChannel>>()
  private readonly log: ServerLog
  private readonly recent = new RecentSends()
  /** Receive buffers for blocks, shared by all channels (and the bulk channel's receivers, when given its pool). */
  private readonly pool: BufferPool

  constructor (private readonly components: ChunkExchangeComponents, private readonly init: ChunkExchangeInit) {
    this.log = init.log ?? { debug () {} }
    this.pool = init.pool ?? new BufferPool(MAX_FRAME_BYTES)
  }

  /** A peer no longer connected here is not named as a chunk's holder (it may be gone for good). */
  private readonly onDisconnect = (evt: CustomEvent<PeerId>): void => { this.recent.forget(evt.detail.toString()) }

  async start (): Promise<void> {
    this.components.events?.addEventListener('peer:disconnect', this.onDisconnect)
    await this.components.registrar.handle(CHUNKS_PROTOCOL, (stream, connection) => {
      stream.inactivityTimeout = STREAM_IDLE_TIMEOUT_MS
      const bulk = this.init.bulk
      new ServerSession(stream, connection.remotePeer.toString(), this.init.source, this.init.limiter, this.recent, this.log, {
        ...(this.init.onSent !== undefined ? { onSent: this.init.onSent } : {}),
        ...(this.init.sendStallMs !== undefined ? { sendStallMs: this.init.sendStallMs } : {}),
        ...(this.init.onPeerFault !== undefined ? { onFault: this.init.onPeerFault } : {}),
        ...(this.init.encoder !== undefined ? { encoder: this.init.encoder } : {}),
        ...(bulk !== undefined && bulk.port !== 0 ? { bulk: (peer: string, signal: AbortSignal) => bulk.offer(peer, { signal }) } : {})
      })
    }, { maxInboundStreams: MAX_INBOUND_STREAMS })
  }

  async stop (): Promise<void> {
    this.components.events?.removeEventListener('peer:disconnect', this.onDisconnect)
    await this.components.registrar.unhandle(CHUNKS_PROTOCOL)
    for (const p of this.channels.values()) void p.then(async c => { await c.close() }).catch(() => {})
    this.channels.clear()
  }

  async channel (peer: PeerId, signal?: AbortSignal): Promise<PeerChannel> {
    const key = peer.toString()
    const existing = this.channels.get(key)
    if (existing !== undefined) {
      const c = await existing.catch(() => undefined)
      if (c?.isOpen === true) return c
      if (this.channels.get(key) === existing) this.channels.delete(key)
      else return await this.channel(peer, signal)
    }
    const opening = (async () => {
      let stream
      try {
        stream = await this.components.connectionManager.openStream(peer, CHUNKS_PROTOCOL, signal !== undefined ? { signal } : {})
      } catch (err) {
        throw await this.explain(peer, err as Error)
      }
      stream.inactivityTimeout = STREAM_IDLE_TIMEOUT_MS
      const channel = new PeerChannel(stream, this.init.maxInFlightBytes, this.pool)
      channel.onClose(() => { if (this.channels.get(key) === opening) this.channels.delete(key) })
      await this.openBulk(peer, channel)
      return channel
    })()
    this.channels.set(key, opening)
    opening.catch(() => { if (this.channels.get(key) === opening) this.channels.delete(key) })
    return await opening
  }

  /**
   * Asks the peer for a bulk connection and dials it at the address its libp2p connection comes
   * from; goes on without one when there is none within `bulkSetupMs`.
   */
  private async openBulk (peer: PeerId, channel: PeerChannel): Promise<void> {
    const bulk = this.init.bulk
    if (bulk === undefined || bulk.port === 0) return
    const host = remoteHost(this.components.connectionManager.getConnections(peer)[0]?.remoteAddr.toString())
    if (host === undefined) return
    const signal = AbortSignal.timeout(this.init.bulkSetupMs ?? BULK_SETUP_MS)
    const opened = await channel.openBulk(async (offer, s) => await bulk.connect(host, offer.port, offer.token, offer.key, { signal: s }), signal)
    this.log.debug({ peer: peer.toString(), host, bulk: opened }, opened ? 'bulk connection open' : 'no bulk connection: blocks on the stream')
  }

  /** A failure to open the protocol, said plainly when the peer runs an older shoal. */
  private async explain (peer: PeerId, err: Error): Promise<Error> {
    if (!/protocol.*(not supported|selection failed)|UnsupportedProtocol/i.test(`${err.name} ${err.message}`)) return err
    const protocols = await this.components.peerStore?.get(peer).then(p => p.protocols, () => []) ?? []
    const old = protocols.find(p => OLD_CHUNKS_PROTOCOLS.includes(p))
    return new OldPeerError(`peer ${peer.toString()} does not speak ${CHUNKS_PROTOCOL}${old !== undefined ? ` (it speaks ${old}: it runs an older shoal)` : ''}; upgrade it to exchange chunks with this node`, { cause: err })
  }
}

/** The IP address of a multiaddr such as `/ip4/10.0.0.2/tcp/4077/p2p/…`, for dialling its bulk port. */
function remoteHost (addr: string | undefined): string | undefined {
  const m = addr === undefined ? null : /^\/(ip4|ip6)\/([^/]+)\/tcp\//.exec(addr)
  return m?.[2]
}

export function chunkExchange (init: ChunkExchangeInit): (components: ChunkExchangeComponents) => ChunkExchange {
  return components => new ChunkExchangeService(components, init)
}
