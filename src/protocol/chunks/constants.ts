import { MAX_CHUNK_SIZE } from '../../core/chunking.js'

export const PROTOCOL_PREFIX = 'shoal'
export const PROTOCOL_NAME = 'chunks'
export const PROTOCOL_VERSION = '2.0.0'
/** `/shoal/chunks/2.0.0` (1.0.0 moved whole chunks; its peers are told to upgrade, see `OLD_CHUNKS_PROTOCOLS`) */
export const CHUNKS_PROTOCOL = `/${PROTOCOL_PREFIX}/${PROTOCOL_NAME}/${PROTOCOL_VERSION}`

/** Versions of this protocol older nodes speak; a peer that speaks only these runs an older shoal. */
export const OLD_CHUNKS_PROTOCOLS = [`/${PROTOCOL_PREFIX}/${PROTOCOL_NAME}/1.0.0`]

/**
 * Largest response frame: one block (at most a whole chunk, for versions whose geometry is one block
 * per chunk) with its proof and envelope. A HAVE bitfield of `MAX_CHUNK_SIZE * 8` chunks fits too.
 * @default MAX_CHUNK_SIZE + 64 KiB
 */
export const MAX_FRAME_BYTES = MAX_CHUNK_SIZE + 64 * 1024
/** @default 4 KiB — requests carry one CID */
export const MAX_REQUEST_FRAME_BYTES = 4 * 1024
/** Blocks one WANT may ask for (its span). @default 64 */
export const MAX_SPAN_BLOCKS = 64
/** Blocks of chunks in progress one HAVE or HAVE_UPDATE may list in ranges, at most. @default 65536 */
export const MAX_HAVE_RANGES = 65_536
/** Requests one stream may have queued or in progress at the server; more are refused (`BUSY`). @default 64 */
export const MAX_PENDING_PER_STREAM = 64
/**
 * Served blocks one stream keeps for their RECEIVED (to hand their buffers back for reuse); past
 * this, the oldest is let go to the garbage collector. Bounds what a peer that never sends
 * RECEIVED can hold. @default 8
 */
export const MAX_UNRECEIVED_PER_STREAM = 8
/** Versions one stream may watch at once. @default 64 */
export const MAX_INTERESTS_PER_STREAM = 64
/** HAVE_UPDATE batches are flushed at least this often. @default 50 ms */
export const HAVE_UPDATE_INTERVAL_MS = 50
/** Inbound chunk streams per connection. @default 4 */
export const MAX_INBOUND_STREAMS = 4
/** An idle stream is closed after this long (each side reopens on demand). @default 10 min */
export const STREAM_IDLE_TIMEOUT_MS = 10 * 60_000
/** Bytes a requester may receive beyond what it asked for before the stream is aborted. @default 8 frames */
export const READ_BUFFER_SLACK_BYTES = 8 * MAX_FRAME_BYTES
/**
 * After a chunk reached one peer (its RECEIVED), other peers' non-urgent WANTs for it get
 * DUPLICATE this long: time for that peer to announce it and pass it on. @default 15 s
 */
export const DUPLICATE_HOLD_MS = 15_000
/**
 * A send not yet confirmed by RECEIVED holds its chunk at most this long past its start: at
 * 0.5 MB/s a 4 MiB block behind 8 MiB of others takes 25 s to arrive. @default 60 s
 */
export const DUPLICATE_TRANSIT_MS = 60_000
/** Chunks remembered for DUPLICATE at most. @default 4096 */
export const MAX_RECENT_SENDS = 4096
/**
 * Response frames at least this large (blocks) are assembled in one pooled buffer as they arrive
 * (see `BufferPool`); smaller ones stay as the received parts.
 * @default 64 KiB
 */
export const POOLED_FRAME_MIN_BYTES = 64 * 1024
