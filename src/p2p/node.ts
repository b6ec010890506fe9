/**
 * The libp2p node: TCP, noise, yamux, identify, ping, a Kademlia DHT under shoal's own protocol
 * (`/shoal/kad/1.0.0`, never the public DHT), optional mDNS, shoal's chunk, manifest and head-sync
 * protocols, gossipsub (the head topic), a connection gater enforcing the allow-list and bans, and connection limits.
 *
 * Configured peers (`--peer`) are dialled at start and re-dialled while disconnected, so a node
 * whose peer restarts reconnects by itself.
 */
import { noise } from '@chainsafe/libp2p-noise'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import type { Libp2p, PeerId, PrivateKey } from '@libp2p/interface'
import { kadDHT, passthroughMapper, type KadDHT } from '@libp2p/kad-dht'
import { mdns } from '@libp2p/mdns'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { chunkExchange, type ChunkExchange, type ChunkExchangeInit } from '../protocol/chunks/index.js'
import { manifestExchange, type ManifestExchange, type ManifestSource } from '../protocol/manifest/index.js'
import { headSync, type HeadSource, type HeadSync } from '../protocol/heads/index.js'

export const DHT_PROTOCOL = '/shoal/kad/1.0.0'
/**
 * yamux's receive window starts at 256 KiB and only grows when the receiver answers within four
 * round trips; a receiver busy hashing 4 MiB chunks rarely does, so a chunk stream crawled at
 * window/latency. Starting at two chunks keeps the pipe full.
 * why: docs/decisions/0008-yamux-stream-window.md
 * @default 8 MiB
 */
export const STREAM_WINDOW_BYTES = 8 * 1024 * 1024
/** @default 8 MiB — a larger window pulled no faster and let more unsent data pile up on a serving node */
export const MAX_STREAM_WINDOW_BYTES = 8 * 1024 * 1024
/**
 * libp2p's connection monitor aborts a connection whose ping goes unanswered. A ping waits behind
 * the data already queued on the connection, so on a busy slow link a short timeout cuts a live
 * connection and loses every block in flight. Here a connection is pinged every minute and judged
 * dead only when a ping has no answer for 45–55 s (under the interval: the ping protocol allows one
 * ping stream at a time, and a second one while the first waits would itself abort the connection).
 * why: docs/decisions/0009-connection-monitor-ping.md
 */
export const PING_INTERVAL_MS = 60_000
export const PING_TIMEOUT_MS = 45_000
/** @default 5 s — how often configured peers that are not connected are dialled again */
export const REDIAL_INTERVAL_MS = 5_000

export interface NodeInit {
  privateKey: PrivateKey
  listen: string[]
  peers: string[]
  mdns: boolean
  dht: boolean
  maxConnections: number
  /** When set, only these peer ids may connect or be dialled. */
  allow?: string[]
  isBanned: (peer: string) => boolean
  chunks: ChunkExchangeInit
  manifests: ManifestSource
  heads: HeadSource
}

export type ShoalServices = {
  chunks: ChunkExchange
  manifests: ManifestExchange
  heads: HeadSync
  pubsub: GossipSub
  dht?: KadDHT
  identify: unknown
  ping: unknown
}

export type ShoalNode = Libp2p<ShoalServices>

export async function createNode (init: NodeInit): Promise<{ node: ShoalNode, stop: () => Promise<void> }> {
  const allowed = init.allow === undefined ? undefined : new Set(init.allow)
  const refused = (peer: PeerId): boolean => init.isBanned(peer.toString()) || (allowed !== undefined && !allowed.has(peer.toString()))
  const node = await createLibp2p({
    privateKey: init.privateKey,
    addresses: { listen: init.listen },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux({ streamOptions: { initialStreamWindowSize: STREAM_WINDOW_BYTES, maxStreamWindowSize: MAX_STREAM_WINDOW_BYTES } })],
    connectionManager: { maxConnections: init.maxConnections },
    connectionMonitor: { pingInterval: PING_INTERVAL_MS, pingTimeout: { minTimeout: PING_TIMEOUT_MS, maxTimeout: PING_INTERVAL_MS - 5_000 } },
    connectionGater: {
      denyDialMultiaddr: () => false,
      denyDialPeer: refused,
      denyInboundEncryptedConnection: refused,
      denyOutboundEncryptedConnection: refused
    },
    peerDiscovery: init.mdns ? [mdns()] : [],
    services: {
      identify: identify(),
      ping: ping(),
      chunks: chunkExchange(init.chunks),
      manifests: manifestExchange(init.manifests),
      heads: headSync(init.heads),
      // Heads are signed by their publishers and checked by the topic validator; a publish with no
      // peers yet is not an error (anti-entropy carries the head later). gossipsub's default score
      // penalises peers sharing an IP (weight -5 × surplus² over 10): nodes behind one NAT, or on one
      // host, fell below the graylist threshold and gossip stopped (every head then waited for
      // anti-entropy, ~20 s at 20 nodes). A forged head is refused by signature anyway.
      pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false, scoreParams: { IPColocationFactorWeight: 0 } }),
      ...(init.dht ? { dht: kadDHT({ protocol: DHT_PROTOCOL, clientMode: false, peerInfoMapper: passthroughMapper }) } : {})
    }
  }) as unknown as ShoalNode

  const configured: Multiaddr[] = init.peers.map(p => multiaddr(p))
  const redial = async (): Promise<void> => {
    const connected = new Set(node.getConnections().map(c => c.remoteAddr.toString()))
    const connectedPeers = new Set(node.getConnections().map(c => c.remotePeer.toString()))
    await Promise.all(configured.map(async ma => {
      const id = ma.getComponents().find(c => c.name === 'p2p')?.value
      if ((id !== undefined && connectedPeers.has(id)) || connected.has(ma.toString())) return
      await node.dial(ma, { signal: AbortSignal.timeout(REDIAL_INTERVAL_MS * 2) }).catch(() => {})
    }))
  }
  await redial()
  const timer = setInterval(() => { void redial() }, REDIAL_INTERVAL_MS)
  return {
    node,
    stop: async () => {
      clearInterval(timer)
      await node.stop()
    }
  }
}
