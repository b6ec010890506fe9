/**
 * `/shoal/chunks/1.0.0` as a libp2p service: registers the serving handler on start, and hands out
 * one `PeerChannel` per peer for requests (reopened when it closes).
 *
 * @example
 * ```ts
 * const node = await createLibp2p({ services: { chunks: chunkExchange({ source, limiter }) } })
 * const channel = await node.services.chunks.channel(peerId)
 * const bytes = await channel.want(chunkId, signal)   // caller verifies the bytes
 * channel.release(bytes)                               // done with them: the buffer is reused
 * ```
 */
import type { PeerId, Startable } from '@libp2p/interface'
import type { ConnectionManager, Registrar } from '@libp2p/interface-internal'
import { BufferPool } from '../../core/buffer-pool.js'
import { PeerChannel } from './client.js'
import { CHUNKS_PROTOCOL, MAX_FRAME_BYTES, MAX_INBOUND_STREAMS, STREAM_IDLE_TIMEOUT_MS } from './constants.js'
import { RecentSends, ServerSession, type PeerFaultHook, type SentHook, type ChunkSource, type ServerFaults, type ServerLog, type UploadLimiter } from './server.js'

export { PeerChannel, type VersionWatcher } from './client.js'
export { RecentSends, type PeerFaultHook, type SentHook, type ChunkSource, type HaveState, type ServerFaults, type UploadLimiter } from './server.js'
export { SendStalledError, SEND_STALL_MS } from '../framing.js'
export * from './constants.js'
export * from './errors.js'

export interface ChunkExchangeInit {
  source: ChunkSource
  limiter: UploadLimiter
  /** Bytes this node may have requested from one peer at once (bounds that channel's read buffer). */
  maxInFlightBytes: number
  log?: ServerLog
  /** Test-only misbehaviour. */
  faults?: ServerFaults
  /** Metrics: called after each block sent. */
  onSent?: SentHook
  /** See `SEND_STALL_MS`. @default SEND_STALL_MS */
  sendStallMs?: number
  /** Told of peers that misbehave on the serving side (the node's judge). */
  onPeerFault?: PeerFaultHook
}

export interface ChunkExchangeComponents {
  registrar: Registrar
  connectionManager: ConnectionManager
}

export interface ChunkExchange {
  /** The open channel to `peer`, opening a stream (and dialling) if needed. */
  channel: (peer: PeerId, signal?: AbortSignal) => Promise<PeerChannel>
}

class ChunkExchangeService implements ChunkExchange, Startable {
  private readonly channels = new Map<string, Promise<PeerChannel>>()
  private readonly log: ServerLog
  private readonly recent = new RecentSends()
  /** Receive buffers for blocks, shared by all channels. */
  private readonly pool = new BufferPool(MAX_FRAME_BYTES)

  constructor (private readonly components: ChunkExchangeComponents, private readonly init: ChunkExchangeInit) {
    this.log = init.log ?? { debug () {} }
  }

  async start (): Promise<void> {
    await this.components.registrar.handle(CHUNKS_PROTOCOL, (stream, connection) => {
      stream.inactivityTimeout = STREAM_IDLE_TIMEOUT_MS
      new ServerSession(stream, connection.remotePeer.toString(), this.init.source, this.init.limiter, this.recent, this.log, this.init.faults, this.init.onSent, {
        ...(this.init.sendStallMs !== undefined ? { sendStallMs: this.init.sendStallMs } : {}),
        ...(this.init.onPeerFault !== undefined ? { onFault: this.init.onPeerFault } : {})
      })
    }, { maxInboundStreams: MAX_INBOUND_STREAMS })
  }

  async stop (): Promise<void> {
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
      const stream = await this.components.connectionManager.openStream(peer, CHUNKS_PROTOCOL, signal !== undefined ? { signal } : {})
      stream.inactivityTimeout = STREAM_IDLE_TIMEOUT_MS
      const channel = new PeerChannel(stream, this.init.maxInFlightBytes, this.pool)
      channel.onClose(() => { if (this.channels.get(key) === opening) this.channels.delete(key) })
      return channel
    })()
    this.channels.set(key, opening)
    opening.catch(() => { if (this.channels.get(key) === opening) this.channels.delete(key) })
    return await opening
  }
}

export function chunkExchange (init: ChunkExchangeInit): (components: ChunkExchangeComponents) => ChunkExchange {
  return components => new ChunkExchangeService(components, init)
}
