/**
 * A hostile peer for the fault suite: a libp2p node in the test process built from shoal's own
 * protocol services (`/shoal/chunks`, `/shoal/manifest`, `/shoal/heads`, gossipsub on the head
 * topic) with sources the test supplies, so it speaks the wire correctly and lies, floods or
 * stalls wherever the test says. It also opens raw protocol streams, for attacks the services
 * would never make (a requester that stops reading, frames out of order).
 *
 * Like the daemon it runs tcp + noise + yamux + identify on loopback only. `stop()` ends it; a
 * test stops every peer it started in `afterAll`/`finally`.
 */
import { noise } from '@chainsafe/libp2p-noise'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import type { Libp2p, PeerId, Stream } from '@libp2p/interface'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { chunkRefOf, DEFAULT_BLOCK_SIZE, encodeManifest, MANIFEST_SCHEMA, type ChunkRef, type Manifest, type ManifestFile } from '../../src/core/manifest.js'
import { fileDigest, type ChunkId, type VersionId } from '../../src/core/digest.js'
import { blockCount, joinHashes, leafHash, proofOf } from '../../src/core/tree.js'
import { Slots } from '../../src/fetcher/bandwidth.js'
import { STREAM_WINDOW_BYTES, MAX_STREAM_WINDOW_BYTES } from '../../src/p2p/node.js'
import { CHUNKS_PROTOCOL, chunkExchange, type ChunkExchange, type ChunkSource, type UploadLimiter } from '../../src/protocol/chunks/index.js'
import { headSync, type HeadSource, type HeadSync } from '../../src/protocol/heads/index.js'
import { manifestExchange, type ManifestExchange, type ManifestSource } from '../../src/protocol/manifest/index.js'

/** @default 10 s — dials and protocol opens from the hostile peer */
const TIMEOUT_MS = 10_000

export interface HostilePeerOptions {
  /** What the peer serves on `/shoal/chunks/1.0.0` (default: it has nothing). */
  chunks?: ChunkSource
  /** Upload limits of the peer's chunk server (default: 8 slots, no rate cap). */
  limiter?: UploadLimiter
  /** What it answers on `/shoal/manifest/1.0.0` (default: the manifests in `peer.manifests`). */
  manifests?: ManifestSource
  /** What it offers on `/shoal/heads/1.0.0` (default: nothing; heads offered to it are kept in `received`). */
  heads?: HeadSource
  /**
   * Replaces the chunk server with a raw handler of `/shoal/chunks/1.0.0` streams opened to this
   * peer (a requester's channel): for answers the real server never gives.
   */
  chunksHandler?: (stream: Stream) => void
}

type Services = { chunks: ChunkExchange, manifests: ManifestExchange, heads: HeadSync, pubsub: GossipSub, identify: unknown, ping: unknown }

export class HostilePeer {
  /** Manifests served by the default manifest source, by version id. */
  readonly manifests = new Map<VersionId, Uint8Array>()
  /** Chunks served by the default chunk source, by id (the bytes may be anything). */
  readonly chunks = new Map<ChunkId, Uint8Array>()
  /** Signed heads the daemon offered this peer over anti-entropy. */
  readonly received: Uint8Array[] = []

  private constructor (readonly node: Libp2p<Services>) {}

  static async start (options: HostilePeerOptions = {}): Promise<HostilePeer> {
    const ref: { self?: HostilePeer } = {}
    const chunks: ChunkSource = options.chunks ?? {
      readSpan: async (id, blockSize, first, count) => {
        const bytes = ref.self?.chunks.get(id)
        return bytes === undefined ? undefined : spanOf(bytes, blockSize, first, count)
      },
      have: async version => ref.self?.manifests.has(version) === true ? { complete: true } : undefined,
      watch: () => () => {}
    }
    const manifests: ManifestSource = options.manifests ?? { manifest: async version => ref.self?.manifests.get(version) }
    const heads: HeadSource = options.heads ?? {
      digest: () => new Uint8Array(32),
      entries: () => [],
      signed: () => undefined,
      offer: async bytes => { ref.self?.received.push(bytes); return 'settled' }
    }
    const node = await createLibp2p({
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux({ streamOptions: { initialStreamWindowSize: STREAM_WINDOW_BYTES, maxStreamWindowSize: MAX_STREAM_WINDOW_BYTES } })],
      services: {
        identify: identify(),
        ping: ping(),
        chunks: chunkExchange({ source: chunks, limiter: options.limiter ?? openLimiter(8), maxInFlightBytes: 64 * 1024 * 1024 }),
        manifests: manifestExchange(manifests),
        heads: headSync(heads),
        pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false, scoreParams: { IPColocationFactorWeight: 0 } })
      }
    }) as unknown as Libp2p<Services>
    if (options.chunksHandler !== undefined) {
      const handler = options.chunksHandler
      await node.unhandle(CHUNKS_PROTOCOL)
      await node.handle(CHUNKS_PROTOCOL, stream => { handler(stream) }, { maxInboundStreams: 64 })
    }
    ref.self = new HostilePeer(node)
    return ref.self
  }

  get peerId (): string { return this.node.peerId.toString() }
  get address (): string { return `${this.node.getMultiaddrs()[0]?.toString() ?? ''}` }

  /** Connects to a daemon's listen address (with /p2p/<id>); resolves with its peer id. */
  async dial (addr: string): Promise<PeerId> {
    const conn = await this.node.dial(multiaddr(addr), { signal: AbortSignal.timeout(TIMEOUT_MS) })
    return conn.remotePeer
  }

  async hangUp (addr: string): Promise<void> {
    await this.node.hangUp(multiaddr(addr)).catch(() => {})
  }

  /** Opens a raw stream of `protocol` to the daemon at `addr`, for attacks the services never make. */
  async stream (addr: string, protocol: string): Promise<Stream> {
    return await this.node.dialProtocol(multiaddr(addr), protocol, { signal: AbortSignal.timeout(TIMEOUT_MS) })
  }

  /** Serves `manifest` from now on; returns its version id. */
  serveManifest (manifest: Manifest): VersionId {
    const { bytes, id } = encodeManifest(manifest)
    this.manifests.set(id, bytes)
    return id
  }

  async stop (): Promise<void> {
    await this.node.stop()
  }
}

/** An upload limiter with `slots` slots and no rate cap. */
export function openLimiter (slots: number): UploadLimiter {
  const gate = new Slots(slots)
  return {
    slot: async signal => await gate.acquire(signal),
    bandwidth: async () => {},
    slotWouldWait: () => gate.full,
    load: () => gate.inUse + gate.waiting
  }
}

/**
 * A manifest file entry for `bytes` cut into `chunkSize` pieces (format `other`), with the roots of
 * their block trees at `blockSize` (the manifest's, `manifestOf`'s default), plus the chunks by id.
 */
export function fileOf (path: string, bytes: Uint8Array, chunkSize = 1024 * 1024, blockSize = DEFAULT_BLOCK_SIZE): { file: ManifestFile, chunks: Map<ChunkId, Uint8Array> } {
  const chunks = new Map<ChunkId, Uint8Array>()
  const refs: ChunkRef[] = []
  for (let at = 0; at < bytes.byteLength; at += chunkSize) {
    const piece = bytes.subarray(at, Math.min(bytes.byteLength, at + chunkSize))
    const ref = chunkRefOf(piece, blockSize)
    chunks.set(ref.id, piece)
    refs.push(ref)
  }
  return { file: { path, size: bytes.byteLength, digest: fileDigest(refs), format: 'other', chunks: refs } as ManifestFile, chunks }
}

/** A minimal valid manifest (schema 2, `DEFAULT_BLOCK_SIZE` unless `extra` says) of `files` for model `name`. */
export function manifestOf (name: string, files: ManifestFile[], extra: Partial<Manifest> = {}): Manifest {
  const totalSize = files.reduce((n, f) => n + f.size, 0)
  return {
    schema: MANIFEST_SCHEMA,
    blockSize: DEFAULT_BLOCK_SIZE,
    name,
    created: Date.now(),
    parent: null,
    files: [...files].sort((a, b) => a.path < b.path ? -1 : a.path > b.path ? 1 : 0),
    metadata: {},
    structure: { formats: ['other'], parameterCount: 0, dtypes: [], tensorCount: 0, totalSize },
    ...extra
  } as Manifest
}

/** Blocks `[first, first + count)` of `chunk` in `blockSize` geometry, with their proofs: what an honest server sends. */
export function spanOf (chunk: Uint8Array, blockSize: number, first: number, count: number): { data: Uint8Array, proofs: Uint8Array[] } | undefined {
  const n = blockCount(chunk.byteLength, blockSize)
  if (first + count > n) return undefined
  const data = chunk.subarray(first * blockSize, Math.min(chunk.byteLength, (first + count) * blockSize))
  if (n === 1) return { data, proofs: [new Uint8Array(0)] }
  const leaves = Array.from({ length: n }, (_, i) => leafHash(chunk.subarray(i * blockSize, Math.min(chunk.byteLength, (i + 1) * blockSize))))
  return { data, proofs: Array.from({ length: count }, (_, i) => joinHashes(proofOf(leaves, first + i))) }
}
