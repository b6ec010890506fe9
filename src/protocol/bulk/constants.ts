/**
 * Defaults and wire constants of the bulk channel. Every limit a peer can run into is here, named,
 * with its default; `BulkInit` and `ConnectOptions` may override the ones marked as options.
 */
import { MAX_CHUNK_SIZE } from '../../core/chunking.js'

/** Version of the bulk wire format, carried in the hello. @default 1 */
export const BULK_WIRE_VERSION = 1
/** First bytes of a hello: `"SBK"` then `BULK_WIRE_VERSION`. */
export const HELLO_MAGIC = Uint8Array.of(0x53, 0x42, 0x4b, BULK_WIRE_VERSION)
/** Random bytes of an offer's single-use token. @default 32 */
export const TOKEN_BYTES = 32
/** Bytes of an offer's AES-256-GCM key. @default 32 */
export const KEY_BYTES = 32
/** A hello is the magic and the token, nothing else: the whole of what a client ever sends. @default 36 */
export const HELLO_BYTES = HELLO_MAGIC.byteLength + TOKEN_BYTES
/** Frame header: `reqId u32, index u32, proofLen u16, dataLen u32`, big-endian. @default 14 */
export const HEADER_BYTES = 14
/** AES-GCM tag after an encrypted frame's data. @default 16 */
export const TAG_BYTES = 16
/** AES-GCM nonce: 4 zero bytes, then the frame counter as a big-endian u64. @default 12 */
export const NONCE_BYTES = 12

/** The server's one-byte answer to a hello; anything but `ACCEPTED` is followed by the close. */
export const HelloAnswer = {
  /** The token was good: frames follow. */
  ACCEPTED: 0x01,
  /** Unknown, expired or already used. */
  TOKEN_REFUSED: 0x02,
  /** The server is at its cap of connections, or of sockets that have not yet sent a token. */
  BUSY: 0x03
} as const

/**
 * Largest `dataLen` a frame may declare: a whole 4 MiB chunk (schema-1 versions move whole chunks
 * as one block) with room to spare. A header over it closes the connection before any of the data
 * is buffered.
 * @default MAX_CHUNK_SIZE + 64 KiB
 */
export const MAX_BULK_DATA_BYTES = MAX_CHUNK_SIZE + 64 * 1024
/** Largest `proofLen`: 64 sibling hashes of 32 bytes (a tree of 2^64 blocks). @default 2048 */
export const MAX_PROOF_BYTES = 64 * 32

/** An accepted socket must present its whole hello within this long, else it is closed. @default 5 s */
export const HELLO_TIMEOUT_MS = 5_000
/** An offer's token is good for this long, once. @default 10 s */
export const OFFER_TTL_MS = 10_000
/**
 * `connect` gives up after this long (dial, hello and the server's answer): past it the owner
 * sends blocks on the libp2p stream instead.
 * @default 2 s
 */
export const CONNECT_TIMEOUT_MS = 2_000
/**
 * A send that sees none of the socket's queued bytes taken for this long closes the connection
 * with `SendStalledError`: the same rule and value as `SEND_STALL_MS` for libp2p streams; the
 * daemon passes `transfer.sendStallSeconds` to both.
 * @default 30 s
 */
export const BULK_SEND_STALL_MS = 30_000
/** How often a waiting send checks the socket for progress (at most; less when the stall time is shorter). @default 1 s */
export const SEND_POLL_MS = 1_000

/** Unused offers one peer may hold at once; more are refused (the owner falls back). @default 4 */
export const MAX_OFFERS_PER_PEER = 4
/** Unused offers in all. @default 256 */
export const MAX_OFFERS = 256
/** Open bulk connections to one peer (one per control stream is the use). @default 4 */
export const MAX_CONNECTIONS_PER_PEER = 4
/** Open bulk connections in all; an offer past it is refused, a socket past it closed. @default 256 */
export const MAX_CONNECTIONS = 256
/** Accepted sockets that have not yet presented a token; more are closed at once. @default 64 */
export const MAX_PENDING_SOCKETS = 64
/**
 * Sockets from one address that have not yet presented a token: one host holding silent sockets
 * cannot take every pending place. @default 8
 */
export const MAX_PENDING_PER_ADDRESS = 8

/**
 * A frame's data goes to the socket in writes of at most this many bytes (header and proof with
 * the first, the tag with the last; each write one `writev`). A send's progress is seen write by
 * write, so a reader taking fewer bytes than this per stall time counts as stalled.
 * @default 256 KiB
 */
export const SEND_WRITE_BYTES = 256 * 1024
/**
 * Bytes of the receiver's reusable read buffer for headers, proofs, tags and small frames. Data
 * of a frame with at least `DIRECT_READ_MIN_BYTES` still to come is read straight into the
 * frame's pooled buffer instead.
 * @default 64 KiB
 */
export const SCRATCH_BYTES = 64 * 1024
/** See `SCRATCH_BYTES`. @default 16 KiB */
export const DIRECT_READ_MIN_BYTES = 16 * 1024
/**
 * Encrypted data is decrypted in slices of at most this many bytes: each `decipher.update` returns
 * a new buffer, and slices this small stay short-lived and in cache on their way into the pooled
 * buffer (a direct read can bring a megabyte at once).
 * @default 64 KiB
 */
export const DECRYPT_SLICE_BYTES = 64 * 1024
