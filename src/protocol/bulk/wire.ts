/**
 * The bulk channel's bytes, in one place (documented in docs/ARCHITECTURE.md, "Bulk channel"):
 *
 * ```
 * client → server, once:  hello  = "SBK" ‖ version u8 ‖ token (32)                  36 bytes
 * server → client, once:  answer = u8 (HelloAnswer)                                   1 byte
 * server → client, then:  frame  = header (14) ‖ proof ‖ data [‖ tag (16) when encrypted]
 *                         header = reqId u32 ‖ index u32 ‖ flags+proofLen u16 ‖ dataLen u32  (big-endian)
 * ```
 * The top bit of the u16 (`ENCODED_FLAG`) says the data is an encoded block (`core/codec.ts`); the
 * other 15 bits are the proof's length (at most `MAX_PROOF_BYTES`).
 * Encrypted: AES-256-GCM under the offer's key, nonce = 4 zero bytes ‖ frame counter u64 (the
 * first frame 0), additional data = header ‖ proof, data encrypted. The nonce is never sent: both
 * ends count frames, so a frame dropped, repeated or moved fails its tag.
 */
import { createCipheriv, type KeyObject } from 'node:crypto'
import { HEADER_BYTES, HELLO_BYTES, HELLO_MAGIC, NONCE_BYTES, TAG_BYTES, TOKEN_BYTES } from './constants.js'

/** Which request and which block of it a frame carries; the owner's meaning, opaque here. */
export interface FrameIds {
  reqId: number
  index: number
  /** The data is an encoded block (`core/codec.ts`), not the block's bytes. */
  encoded?: boolean
}

/** A frame as handed to the receiver's owner: `data` is a view of a pooled buffer it now owns. */
export interface BulkFrame extends FrameIds {
  proof: Uint8Array
  data: Uint8Array
}

export interface FrameHeader extends FrameIds {
  proofLen: number
  dataLen: number
}

/** The top bit of the header's u16: the data is an encoded block. */
export const ENCODED_FLAG = 0x8000

/** Writes the header of a frame at the start of `out` (at least `HEADER_BYTES`). */
export function encodeHeader (out: Uint8Array, h: FrameHeader): void {
  if (h.proofLen >= ENCODED_FLAG) throw new RangeError(`a proof of ${h.proofLen} bytes does not fit a frame header`)
  const view = new DataView(out.buffer, out.byteOffset, HEADER_BYTES)
  view.setUint32(0, h.reqId)
  view.setUint32(4, h.index)
  view.setUint16(8, h.proofLen | (h.encoded === true ? ENCODED_FLAG : 0))
  view.setUint32(10, h.dataLen)
}

/** Reads the header at the start of `bytes` (at least `HEADER_BYTES`). */
export function decodeHeader (bytes: Uint8Array): FrameHeader {
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES)
  const word = view.getUint16(8)
  return { reqId: view.getUint32(0), index: view.getUint32(4), proofLen: word & (ENCODED_FLAG - 1), encoded: (word & ENCODED_FLAG) !== 0, dataLen: view.getUint32(10) }
}

/** The nonce of frame number `counter` (0, 1, 2, …) written into `out` (`NONCE_BYTES`), returned. */
export function nonceOf (counter: number, out: Uint8Array): Uint8Array {
  const view = new DataView(out.buffer, out.byteOffset, NONCE_BYTES)
  view.setUint32(0, 0)
  view.setBigUint64(4, BigInt(counter))
  return out
}

/** A frame's bytes in order: `head` (header and proof), `parts` (data, encrypted with a key), `tag` (with a key). */
export interface SealedFrame {
  head: Uint8Array
  parts: Uint8Array[]
  tag: Uint8Array | undefined
}

/**
 * Encodes frame number `counter` of a connection: with `key`, one AES-256-GCM cipher over the
 * data parts (header and proof authenticated), else the parts as they are (not copied).
 */
export function sealFrame (ids: FrameIds, proof: Uint8Array, data: Uint8Array[], key: KeyObject | undefined, counter: number, nonce = new Uint8Array(NONCE_BYTES)): SealedFrame {
  const dataLen = data.reduce((n, p) => n + p.byteLength, 0)
  const head = Buffer.allocUnsafe(HEADER_BYTES + proof.byteLength)
  encodeHeader(head, { reqId: ids.reqId, index: ids.index, encoded: ids.encoded === true, proofLen: proof.byteLength, dataLen })
  head.set(proof, HEADER_BYTES)
  if (key === undefined) return { head, parts: data, tag: undefined }
  const cipher = createCipheriv('aes-256-gcm', key, nonceOf(counter, nonce), { authTagLength: TAG_BYTES })
  cipher.setAAD(head)
  const parts: Uint8Array[] = data.map(p => cipher.update(p))
  const rest = cipher.final()
  if (rest.byteLength > 0) parts.push(rest)
  return { head, parts, tag: cipher.getAuthTag() }
}

export function encodeHello (token: Uint8Array): Uint8Array {
  const out = new Uint8Array(HELLO_BYTES)
  out.set(HELLO_MAGIC, 0)
  out.set(token.subarray(0, TOKEN_BYTES), HELLO_MAGIC.byteLength)
  return out
}

/** Whether `prefix` (the first bytes of a hello so far) could still start a valid hello. */
export function helloPrefixOk (prefix: Uint8Array): boolean {
  const n = Math.min(prefix.byteLength, HELLO_MAGIC.byteLength)
  for (let i = 0; i < n; i++) if (prefix[i] !== HELLO_MAGIC[i]) return false
  return true
}

/** True for a whole number in [0, 2^32). */
export function isU32 (n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 0xffff_ffff
}
