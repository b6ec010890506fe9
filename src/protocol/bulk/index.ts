/**
 * The bulk channel: block payloads on a second, plain TCP connection beside libp2p, opened and
 * keyed through the libp2p connection (docs/ARCHITECTURE.md, "Bulk channel").
 *
 * Goals: move verified-later block bytes with few JavaScript operations per byte — one cipher per
 * frame, a few `writev`s per frame on the sender, reads straight into pooled buffers on the
 * receiver — so a pull is bound by hashing and disk, not by the transport; and never let a
 * stranger on the bulk port cost more than a few bytes and a few seconds.
 *
 * Not goals: identity, discovery, requests, flow control between requests (all stay on the libp2p
 * control stream, whose owner binds a bulk connection to it); integrity of the blocks themselves
 * (every block is still verified by hash by the owner: encryption keeps others from reading or
 * changing bytes on the way, it does not vouch for the peer); a client → server direction (the
 * client sends only its token); NAT traversal (a peer that cannot be dialled is served on the
 * libp2p stream).
 *
 * The owner, per peer:
 * - server (has blocks): `offer(peer)` → `{ port, token, key }`, sent to that peer over the
 *   noise-secured control stream; `connected` resolves with a `BulkSender` once the peer presents
 *   the token, `undefined` when the offer expires.
 * - client (wants blocks): `connect(remoteIp, port, token, key)` → a `BulkReceiver`; frames go to
 *   its `onFrame` listener; a `BulkUnavailableError` means "use the control stream".
 *
 * MUST hold:
 * - An accepted socket is closed unless it presents a valid hello (`HELLO_BYTES`: magic and token)
 *   within `helloTimeoutMs`; nothing more than one read (at most 64 KiB) of a socket is looked at
 *   before its token is accepted, and any byte past the hello closes it. Tokens are 32 random
 *   bytes, single-use, valid `offerTtlMs`.
 * - Sockets without a token, offers and connections are bounded per address or peer and in all
 *   (`constants.ts`); past a bound a socket is closed (answered BUSY) and an offer refused.
 * - Each connection has its own random key, used in one direction, with a counter nonce: no
 *   nonce is used twice under a key.
 * - Every failure is a typed error with a message a person can act on; no socket event can throw
 *   out of this module.
 * - Waits that belong to this module have deadlines: the hello (`helloTimeoutMs`), a connect
 *   (`timeoutMs`), every send and a sender's close (`sendStallMs` without progress), an offer
 *   (`offerTtlMs`). An open connection with nothing to send, or a receiver waiting for frames, is
 *   the owner's to close: its control stream's requests have their own deadlines, and
 *   `BulkReceiver.bytesReceived` shows frames arriving.
 *
 * @example
 * ```ts
 * const bulk = bulkService({ host: '0.0.0.0', port: 4078, pool })
 * await bulk.start()
 * // server side
 * const { port, token, key, connected } = bulk.offer(peerId)
 * const sender = await connected            // undefined: the peer never came
 * await sender?.send({ reqId, index }, proof, block)
 * // client side
 * const receiver = await bulk.connect(remoteIp, port, token, key, { signal })
 * receiver.onFrame(({ reqId, index, proof, data }) => { ... pool.give(data) })
 * ```
 */
import { createSecretKey, randomBytes } from 'node:crypto'
import { createServer, type Server, type Socket } from 'node:net'
import type { BufferPool } from '../../core/buffer-pool.js'
import {
  BULK_SEND_STALL_MS, HELLO_BYTES, HELLO_MAGIC, HELLO_TIMEOUT_MS, HelloAnswer, KEY_BYTES, MAX_BULK_DATA_BYTES, MAX_CONNECTIONS,
  MAX_CONNECTIONS_PER_PEER, MAX_OFFERS, MAX_OFFERS_PER_PEER, MAX_PENDING_PER_ADDRESS, MAX_PENDING_SOCKETS, MAX_PROOF_BYTES,
  OFFER_TTL_MS
} from './constants.js'
import { BulkClosedError, BulkUnavailableError } from './errors.js'
import { OfferTable } from './offers.js'
import { BulkReceiver, connectBulk, type ConnectOptions } from './receiver.js'
import { BulkSender } from './sender.js'
import { helloPrefixOk } from './wire.js'

export * from './constants.js'
export * from './errors.js'
export { BulkReceiver, connectBulk, type ConnectOptions, type FrameListener } from './receiver.js'
export { BulkSender, type CloseListener, type SendOptions } from './sender.js'
export { FrameReader, type FrameReaderInit } from './reader.js'
export type { BulkFrame, FrameIds } from './wire.js'

export interface BulkLog { debug: (obj: object, msg?: string) => void }

export interface BulkInit {
  /** Address to listen on (an IP literal; `0.0.0.0` / `::` for every interface). */
  host: string
  /** TCP port; 0 for an ephemeral one (see `BulkService.port`). */
  port: number
  /**
   * When `port` is taken, listen on an ephemeral port instead of failing (the offer carries the
   * port, so peers follow). For a default address; an operator's explicit one should fail loudly.
   * @default false
   */
  ephemeralIfTaken?: boolean
  /** AES-256-GCM on every connection this node serves; false: frames in clear (`transfer.encrypt`). @default true */
  encrypt?: boolean
  /** Receive buffers for `connect` (each must hold `maxDataBytes`). */
  pool: BufferPool
  log?: BulkLog
  /** @default HELLO_TIMEOUT_MS */
  helloTimeoutMs?: number
  /** @default OFFER_TTL_MS */
  offerTtlMs?: number
  /** @default BULK_SEND_STALL_MS */
  sendStallMs?: number
  /** @default MAX_OFFERS_PER_PEER */
  maxOffersPerPeer?: number
  /** @default MAX_OFFERS */
  maxOffers?: number
  /** @default MAX_CONNECTIONS_PER_PEER */
  maxConnectionsPerPeer?: number
  /** @default MAX_CONNECTIONS */
  maxConnections?: number
  /** @default MAX_PENDING_SOCKETS */
  maxPendingSockets?: number
  /** @default MAX_PENDING_PER_ADDRESS */
  maxPendingPerAddress?: number
  /** @default MAX_BULK_DATA_BYTES */
  maxDataBytes?: number
  /** @default MAX_PROOF_BYTES */
  maxProofBytes?: number
}

/** What an owner sends the peer (over the control stream), and learns when it connects. */
export interface BulkOffer {
  port: number
  token: Uint8Array
  /** Undefined when this node sends in clear. */
  key: Uint8Array | undefined
  /** The sender once the peer presented the token; undefined when the offer expired or was withdrawn. */
  connected: Promise<BulkSender | undefined>
}

export interface BulkStats {
  offers: number
  connections: number
  /** Sockets accepted that have not yet presented a token. */
  pending: number
  accepted: number
  /** Sockets closed before a connection, by reason. */
  refused: { busy: number, timeout: number, junk: number, token: number }
}

export interface BulkService {
  /** Binds the listener. Throws `BulkUnavailableError` when the address cannot be bound. */
  start: () => Promise<void>
  /** Closes the listener, every connection and pending socket; outstanding offers resolve `undefined`. */
  stop: () => Promise<void>
  /** The bound port (0 before `start`). */
  readonly port: number
  readonly encrypt: boolean
  /**
   * A single-use offer for `peer`. Throws `BulkUnavailableError` when not listening or past a cap
   * (offers per peer or in all, connections per peer or in all). `signal` withdraws it.
   */
  offer: (peer: string, options?: { signal?: AbortSignal }) => BulkOffer
  /** See `connectBulk`; uses this service's pool; the receiver is closed by `stop`. */
  connect: (host: string, port: number, token: Uint8Array, key: Uint8Array | undefined, options?: Omit<ConnectOptions, 'pool' | 'maxDataBytes' | 'maxProofBytes'>) => Promise<BulkReceiver>
  stats: () => BulkStats
}

type RefusalReason = keyof BulkStats['refused']

class BulkServiceImpl implements BulkService {
  readonly encrypt: boolean
  private server: Server | undefined
  private boundPort = 0
  private readonly offers: OfferTable
  /** Open connections per peer. */
  private readonly connections = new Map<string, Set<BulkSender>>()
  private connectionCount = 0
  private readonly receivers = new Set<BulkReceiver>()
  private readonly pending = new Set<Socket>()
  private readonly pendingPerAddress = new Map<string, number>()
  private accepted = 0
  private readonly refused = { busy: 0, timeout: 0, junk: 0, token: 0 }
  private readonly log: BulkLog
  private readonly limits: Required<Pick<BulkInit, 'helloTimeoutMs' | 'sendStallMs' | 'maxConnectionsPerPeer' | 'maxConnections' | 'maxPendingSockets' | 'maxPendingPerAddress' | 'maxDataBytes' | 'maxProofBytes'>>

  constructor (private readonly init: BulkInit) {
    this.encrypt = init.encrypt ?? true
    this.log = init.log ?? { debug () {} }
    this.limits = {
      helloTimeoutMs: init.helloTimeoutMs ?? HELLO_TIMEOUT_MS,
      sendStallMs: init.sendStallMs ?? BULK_SEND_STALL_MS,
      maxConnectionsPerPeer: init.maxConnectionsPerPeer ?? MAX_CONNECTIONS_PER_PEER,
      maxConnections: init.maxConnections ?? MAX_CONNECTIONS,
      maxPendingSockets: init.maxPendingSockets ?? MAX_PENDING_SOCKETS,
      maxPendingPerAddress: init.maxPendingPerAddress ?? MAX_PENDING_PER_ADDRESS,
      maxDataBytes: init.maxDataBytes ?? MAX_BULK_DATA_BYTES,
      maxProofBytes: init.maxProofBytes ?? MAX_PROOF_BYTES
    }
    if (init.pool.size < this.limits.maxDataBytes) throw new RangeError(`the bulk channel's pool holds ${init.pool.size}-byte buffers; frames need ${this.limits.maxDataBytes}`)
    this.offers = new OfferTable({
      ttlMs: init.offerTtlMs ?? OFFER_TTL_MS,
      maxPerPeer: init.maxOffersPerPeer ?? MAX_OFFERS_PER_PEER,
      max: init.maxOffers ?? MAX_OFFERS
    })
  }

  get port (): number {
    return this.boundPort
  }

  async start (): Promise<void> {
    if (this.server !== undefined) return
    const { host, port } = this.init
    let server: Server
    try {
      server = await this.listen(host, port)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'EADDRINUSE' || this.init.ephemeralIfTaken !== true || port === 0) {
        throw new BulkUnavailableError(`the bulk channel cannot listen on ${hostPort(host, port)}: ${code ?? (err as Error).message}; set transfer.bulk.listen to a free address, or transfer.bulk.enabled to false`, { cause: err })
      }
      this.log.debug({ host, port }, 'bulk port taken; listening on an ephemeral port')
      try {
        server = await this.listen(host, 0)
      } catch (err2) {
        throw new BulkUnavailableError(`the bulk channel cannot listen on ${hostPort(host, 0)}: ${(err2 as NodeJS.ErrnoException).code ?? (err2 as Error).message}`, { cause: err2 })
      }
    }
    this.server = server
    const address = server.address()
    this.boundPort = typeof address === 'object' && address !== null ? address.port : 0
    server.on('error', err => this.log.debug({ err }, 'bulk listener error'))
    this.log.debug({ host, port: this.boundPort, encrypt: this.encrypt }, 'bulk channel listening')
  }

  async stop (): Promise<void> {
    const server = this.server
    if (server === undefined) return
    this.server = undefined
    this.boundPort = 0
    const closed = new Promise<void>(resolve => server.close(() => resolve()))
    this.offers.clear()
    for (const socket of this.pending) socket.destroy()
    for (const senders of this.connections.values()) for (const sender of senders) sender.abort(new BulkClosedError('the bulk channel stopped'))
    for (const receiver of this.receivers) receiver.close()
    await closed
  }

  offer (peer: string, options: { signal?: AbortSignal } = {}): BulkOffer {
    if (this.server === undefined) throw new BulkUnavailableError('the bulk channel is not listening: send blocks on the libp2p stream')
    const mine = this.connections.get(peer)?.size ?? 0
    const { maxConnectionsPerPeer, maxConnections } = this.limits
    if (mine >= maxConnectionsPerPeer) throw new BulkUnavailableError(`peer ${peer} already has ${mine} bulk connections (at most ${maxConnectionsPerPeer}, MAX_CONNECTIONS_PER_PEER): send its blocks on the libp2p stream`)
    if (this.connectionCount >= maxConnections) throw new BulkUnavailableError(`${this.connectionCount} bulk connections are open (at most ${maxConnections}, MAX_CONNECTIONS): send blocks on the libp2p stream`)
    const key = this.encrypt ? randomBytes(KEY_BYTES) : undefined
    const { token, connected } = this.offers.add(peer, key, options.signal)
    return { port: this.boundPort, token, key, connected }
  }

  async connect (host: string, port: number, token: Uint8Array, key: Uint8Array | undefined, options: Omit<ConnectOptions, 'pool' | 'maxDataBytes' | 'maxProofBytes'> = {}): Promise<BulkReceiver> {
    const receiver = await connectBulk(host, port, token, key, { ...options, pool: this.init.pool, maxDataBytes: this.limits.maxDataBytes, maxProofBytes: this.limits.maxProofBytes })
    if (this.server === undefined) {
      receiver.close()
      throw new BulkUnavailableError('the bulk channel stopped while connecting')
    }
    this.receivers.add(receiver)
    receiver.onClose(() => this.receivers.delete(receiver))
    return receiver
  }

  stats (): BulkStats {
    return { offers: this.offers.size, connections: this.connectionCount, pending: this.pending.size, accepted: this.accepted, refused: { ...this.refused } }
  }

  private async listen (host: string, port: number): Promise<Server> {
    const server = createServer({ noDelay: true }, socket => this.accept(socket))
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen({ host, port }, () => {
        server.off('error', reject)
        resolve()
      })
    })
    return server
  }

  /** A new socket: it has `helloTimeoutMs` to present a token, and may send nothing else. */
  private accept (socket: Socket): void {
    socket.on('error', err => this.log.debug({ err: err.message, remote: socket.remoteAddress }, 'bulk socket error'))
    const address = socket.remoteAddress ?? ''
    if (this.server === undefined) {
      socket.destroy()
      return
    }
    const fromAddress = this.pendingPerAddress.get(address) ?? 0
    if (this.pending.size >= this.limits.maxPendingSockets || fromAddress >= this.limits.maxPendingPerAddress || this.connectionCount >= this.limits.maxConnections) {
      this.refuse(socket, 'busy', { pending: this.pending.size, fromAddress, connections: this.connectionCount })
      return
    }
    this.pending.add(socket)
    this.pendingPerAddress.set(address, fromAddress + 1)
    const hello = new Uint8Array(HELLO_BYTES)
    let got = 0
    const settle = (): void => {
      clearTimeout(timer)
      socket.off('data', onData)
      if (!this.pending.delete(socket)) return
      const left = (this.pendingPerAddress.get(address) ?? 1) - 1
      if (left > 0) this.pendingPerAddress.set(address, left)
      else this.pendingPerAddress.delete(address)
    }
    const timer = setTimeout(() => {
      settle()
      this.refuse(socket, 'timeout', { got })
    }, this.limits.helloTimeoutMs)
    const onData = (chunk: Buffer): void => {
      if (got + chunk.byteLength > HELLO_BYTES) {
        settle()
        this.refuse(socket, 'junk', { got: got + chunk.byteLength, why: 'bytes past the hello' })
        return
      }
      hello.set(chunk, got)
      got += chunk.byteLength
      if (!helloPrefixOk(hello.subarray(0, got))) {
        settle()
        this.refuse(socket, 'junk', { got, why: 'not a bulk hello' })
        return
      }
      if (got < HELLO_BYTES) return
      settle()
      this.presented(socket, hello.subarray(HELLO_MAGIC.byteLength))
    }
    socket.on('data', onData)
    socket.once('close', settle)
  }

  /** A whole hello arrived: its token is taken (once) and the socket becomes that peer's sender. */
  private presented (socket: Socket, token: Uint8Array): void {
    const offer = this.offers.take(token)
    if (offer === undefined) {
      this.refuse(socket, 'token', {})
      return
    }
    const { peer } = offer
    const peers = this.connections.get(peer) ?? new Set<BulkSender>()
    if (peers.size >= this.limits.maxConnectionsPerPeer || this.connectionCount >= this.limits.maxConnections) {
      offer.settle(undefined)
      this.refuse(socket, 'busy', { peer, connections: this.connectionCount })
      return
    }
    socket.write(Uint8Array.of(HelloAnswer.ACCEPTED))
    const sender = new BulkSender(socket, {
      peer,
      ...(offer.key !== undefined ? { key: createSecretKey(offer.key) } : {}),
      sendStallMs: this.limits.sendStallMs,
      maxDataBytes: this.limits.maxDataBytes,
      maxProofBytes: this.limits.maxProofBytes
    })
    peers.add(sender)
    this.connections.set(peer, peers)
    this.connectionCount++
    this.accepted++
    sender.onClose(err => {
      if (peers.delete(sender)) this.connectionCount--
      if (peers.size === 0 && this.connections.get(peer) === peers) this.connections.delete(peer)
      this.log.debug({ peer, err: err?.message }, 'bulk connection closed')
    })
    this.log.debug({ peer, remote: socket.remoteAddress }, 'bulk connection accepted')
    offer.settle(sender)
  }

  private refuse (socket: Socket, reason: RefusalReason, detail: object): void {
    this.refused[reason]++
    this.log.debug({ reason, remote: socket.remoteAddress, ...detail }, 'bulk socket refused')
    const answer = reason === 'token' ? HelloAnswer.TOKEN_REFUSED : reason === 'busy' ? HelloAnswer.BUSY : undefined
    if (answer === undefined) {
      socket.destroy()
      return
    }
    // The whole hello (or nothing) was read: the close is a FIN after the answer, not a reset.
    socket.end(Uint8Array.of(answer))
    socket.destroySoon()
  }
}

function hostPort (host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}

/** The bulk channel as a service the daemon starts and stops (no libp2p components needed). */
export function bulkService (init: BulkInit): BulkService {
  return new BulkServiceImpl(init)
}
