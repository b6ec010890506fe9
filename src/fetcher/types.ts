/**
 * What a fetch session works with, as interfaces: the peers it asks (`Channel`), the pull it fills
 * (`Target`), the node's memory of peers (`PeerJudge`) and web seeds (`OriginSource`). The session
 * depends on these only; `PeerChannel`, `PullTarget`, `PeerScores` and `OriginClient` implement
 * them, and the unit tests use in-memory fakes.
 */
import type { CodecName } from '../core/codec.js'
import type { ChunkId, VersionId } from '../core/digest.js'

/** A span of blocks of one chunk: the unit of a request; `codec`: the block codec offered for it. */
export interface Span { chunk: ChunkId, first: number, count: number, blockSize: number, codec?: CodecName }

/**
 * One block as it arrives: its index in the chunk, its proof, its bytes (possibly in parts);
 * `encoded`: the bytes are the block encoded in the codec its span offered (`Channel.decode`).
 */
export interface Arrival { index: number, proof: Uint8Array, data: Uint8Array[], encoded?: boolean }

/** Blocks of chunks in progress a peer announces: `count` blocks of global chunk `chunk` from `first`. */
export interface BlockRange { chunk: number, first: number, count: number }

export type PeerHave = { complete: true } | { complete: false, bits: Uint8Array, ranges: BlockRange[] }

/** What the session needs of a peer connection (a `PeerChannel`, or an origin). */
export interface Channel {
  readonly isOpen: boolean
  readonly load: number
  /**
   * Bytes of blocks received from the peer so far, blocks still arriving included (never HAVE
   * updates: a peer that announces but does not send is not alive for this); when present,
   * liveness follows it rather than whole blocks, which at a slow link arrive seconds apart.
   */
  readonly bytesReceived?: number
  /**
   * Asks for the blocks of `span`; each is handed to `onBlock` as it arrives (unverified: the
   * target verifies), and the promise resolves once all have come. `onQueued` is called when the
   * peer acknowledges that the request waits for an upload slot; `onLate` takes blocks that still
   * arrive after the request was cancelled (then to be handed back through `release` like any other).
   */
  want: (span: Span, options: { signal?: AbortSignal, urgent?: boolean, onQueued?: () => void, onBlock: (b: Arrival) => void, onLate?: (b: Arrival) => void }) => Promise<void>
  /** Hands back a block's bytes once the session is done with them (pooled buffers). */
  release?: (bytes: Uint8Array[]) => void
  /**
   * An encoded block decoded (its own bytes, to be handed back through `release`); throws a
   * `MalformedDataError` for bytes that do not decode within `maxSize` in a codec of `accept`.
   * A channel without it never gets a codec offered.
   */
  decode?: (encoded: Uint8Array[], options: { maxSize: number, accept: readonly CodecName[] }) => Uint8Array[]
  watch: (version: VersionId, watcher: { onHave: (state: PeerHave | undefined) => void, onUpdate: (update: { chunks: number[], ranges: BlockRange[] }) => void }) => Promise<void>
  unwatch: (version: VersionId) => Promise<void>
  onClose: (listener: (err?: Error) => void) => void
}

/** What the session needs of the pull's storage (a `PullTarget`). */
export interface Target {
  readonly version: VersionId
  readonly totalChunks: number
  readonly totalBytes: number
  readonly bytesPresent: number
  readonly done: boolean
  /** The version's block size (its manifest's; `MAX_CHUNK_SIZE` for versions of one block per chunk). */
  readonly blockSize: number
  /** Chunks not yet whole here, each once. */
  needed: () => ChunkId[]
  isMissing: (id: ChunkId) => boolean
  /** Whether block `index` of `id` is still to be fetched (not verified here yet). */
  blockMissing: (id: ChunkId, index: number) => boolean
  sizeOf: (id: ChunkId) => number
  indicesOf: (id: ChunkId) => number[]
  /** Chunk id at a global index. */
  chunkAt: (index: number) => ChunkId | undefined
  /**
   * Verifies one block (against the chunk's tree, or the chunk id for a one-block chunk) and stores
   * it; false when it was not needed (already here). Throws `DigestMismatchError` for bytes that
   * are not the block.
   */
  putBlock: (id: ChunkId, index: number, bytes: Uint8Array | readonly Uint8Array[], proof: Uint8Array) => Promise<boolean>
  /** Verifies a whole chunk by its id and stores it (an origin's bytes come without proofs). */
  put: (id: ChunkId, bytes: Uint8Array | readonly Uint8Array[]) => Promise<boolean>
  /** Origin URL and byte range for a chunk, if its file lists an allowed origin. */
  originOf: (id: ChunkId) => { url: string, offset: number } | undefined
  /**
   * Bytes of whole chunks received and not yet written (being hashed, or waiting for the disk):
   * while they exceed `maxWriteBacklogBytes` nothing more is asked for. @default 0 when absent
   */
  readonly writeBacklogBytes?: number
}

/**
 * `timeout`: one late request (soft); `stall`: repeated timeouts with nothing ever delivered;
 * `unread`: as a requester, it stopped reading the blocks it asked this node for;
 * `manifest`: served a manifest that is not the one asked for (bytes that do not hash to the
 * version id) or not a valid one (not canonical, not decodable, schema or invariants broken).
 */
export type Offence = 'corrupt' | 'lie' | 'timeout' | 'stall' | 'protocol' | 'unread' | 'manifest'

/** Daemon-wide memory of peers: credit, penalties, bans. */
export interface PeerJudge {
  isBanned: (peer: string) => boolean
  /** Records an offence; returns true when the peer is now banned. */
  penalize: (peer: string, offence: Offence, detail: string) => boolean
  /** `bytes` of verified blocks came from `peer`, `wireBytes` of them on the link (fewer when they came encoded; default `bytes`). */
  credit: (peer: string, bytes: number, wireBytes?: number) => void
  /** Records why a peer cannot be used when that is no offence (an older shoal). */
  note?: (peer: string, detail: string) => void
}

export interface OriginSource {
  fetchRange: (url: string, offset: number, length: number, options: { signal?: AbortSignal }) => Promise<Uint8Array>
  /** Whether `url` may be asked now (`OriginBudget`: not backing off, not given up); absent = always. */
  usable?: (url: string) => boolean
  /** `url` sent bytes that do not hash to the chunk asked for. */
  refused?: (url: string) => void
}

/**
 * What to fetch first, when someone needs some of the version before the rest (a reader of a
 * version being pulled): the session asks for these chunks' pieces before any other, and falls
 * back to its piece order (rarest-first by default) when there are none. `fetcher/priority.ts`
 * implements it.
 */
export interface PrioritySource {
  /**
   * Chunks to ask for before any other, most urgent first; `pending` tells which are still
   * needed here (the source may skip the others for good). Empty when nothing is urgent.
   */
  urgent: (pending: (id: ChunkId) => boolean) => Iterable<ChunkId>
  /** Calls `listener` whenever urgent chunks are added, so the session asks for them at once; returns the unsubscribe. */
  onChange: (listener: () => void) => () => void
}
