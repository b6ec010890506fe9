/**
 * Block trees: how one block of a chunk is verified on its own, before the rest of the chunk has
 * arrived (BitTorrent v2's piece layers and iroh's BAO do the same for their blocks).
 *
 * A chunk is cut into blocks of `blockSize` bytes from its start (the last one may be shorter).
 * Over the blocks sits a Merkle tree of the shape RFC 6962 / RFC 9162 define for Certificate
 * Transparency, with sha2-256 and domain separation, so a leaf can never pass for an inner node:
 *
 *   leaf(block)  = sha256(0x00 ‖ block)
 *   node(l, r)   = sha256(0x01 ‖ l ‖ r)
 *   MTH(leaves)  = leaves[0] when there is one; else node(MTH(leaves[0:k]), MTH(leaves[k:n])),
 *                  k the largest power of two below n.
 *
 * A block's proof is its audit path (RFC 9162 §2.1.3.1): the sibling hashes from the leaf up,
 * ⌈log2 n⌉ of them at most. `rootFromProof` folds a leaf with its proof (RFC 9162 §2.1.3.2); the
 * block is good when the result equals the chunk's root, which a version's manifest carries.
 *
 * Pure: no I/O. Not a goal: trees over more than 2^32 leaves (a chunk has at most
 * MAX_CHUNK_SIZE / blockSize leaves).
 */
import { createHash } from 'node:crypto'
import { MalformedDataError } from './errors.js'

/** Bytes of one hash in a tree. */
export const TREE_HASH_BYTES = 32
/** The smallest block size a version may use. @default 16 KiB (BitTorrent v2's block) */
export const MIN_BLOCK_SIZE = 16 * 1024
/** The largest: a whole chunk (`MAX_CHUNK_SIZE`), the geometry of versions made before blocks. @default 4 MiB */
export const MAX_BLOCK_SIZE = 4 * 1024 * 1024

/** Whether `n` is a block size a version may use: a power of two from `MIN_BLOCK_SIZE` to `MAX_BLOCK_SIZE`. */
export function isBlockSize (n: number): boolean {
  return Number.isInteger(n) && n >= MIN_BLOCK_SIZE && n <= MAX_BLOCK_SIZE && (n & (n - 1)) === 0
}

const LEAF_PREFIX = Uint8Array.of(0x00)
const NODE_PREFIX = Uint8Array.of(0x01)

/** Blocks a chunk of `chunkSize` bytes has (a chunk of zero bytes has none). */
export function blockCount (chunkSize: number, blockSize: number): number {
  return Math.ceil(chunkSize / blockSize)
}

/** `[offset, length]` of block `index` inside a chunk of `chunkSize` bytes. */
export function blockRange (chunkSize: number, blockSize: number, index: number): [offset: number, length: number] {
  const offset = index * blockSize
  return [offset, Math.max(0, Math.min(blockSize, chunkSize - offset))]
}

/** The leaf hash of one block, whose bytes may come in several parts. */
export function leafHash (block: Uint8Array | readonly Uint8Array[]): Uint8Array {
  const h = createHash('sha256').update(LEAF_PREFIX)
  if (block instanceof Uint8Array) h.update(block)
  else for (const part of block) h.update(part)
  return h.digest()
}

export function nodeHash (left: Uint8Array, right: Uint8Array): Uint8Array {
  return createHash('sha256').update(NODE_PREFIX).update(left).update(right).digest()
}

/** The root of the tree over `leaves` (at least one). */
export function rootOf (leaves: readonly Uint8Array[]): Uint8Array {
  if (leaves.length === 0) throw new MalformedDataError('a block tree needs at least one leaf')
  return mth(leaves, 0, leaves.length)
}

/** The audit path of leaf `index`: sibling hashes from the leaf up. */
export function proofOf (leaves: readonly Uint8Array[], index: number): Uint8Array[] {
  if (!Number.isInteger(index) || index < 0 || index >= leaves.length) {
    throw new MalformedDataError(`leaf ${index} is outside a tree of ${leaves.length}`)
  }
  const path: Uint8Array[] = []
  let lo = 0
  let hi = leaves.length
  let m = index
  // Walk down from the root, collecting the other side of each split; the path runs leaf-up.
  const siblings: Uint8Array[] = []
  while (hi - lo > 1) {
    const k = largestPowerOfTwoBelow(hi - lo)
    if (m < k) {
      siblings.push(mth(leaves, lo + k, hi))
      hi = lo + k
    } else {
      siblings.push(mth(leaves, lo, lo + k))
      lo += k
      m -= k
    }
  }
  for (let i = siblings.length - 1; i >= 0; i--) path.push(siblings[i]!)
  return path
}

/**
 * Folds `leaf` (of leaf `index` in a tree of `size` leaves) with its audit path; returns the root
 * it proves, or undefined when the path has the wrong length for that position (RFC 9162
 * §2.1.3.2). The caller compares the result with the root it trusts.
 */
export function rootFromProof (leaf: Uint8Array, index: number, size: number, proof: readonly Uint8Array[]): Uint8Array | undefined {
  if (!Number.isInteger(index) || !Number.isInteger(size) || index < 0 || index >= size) return undefined
  let fn = index
  let sn = size - 1
  let r = leaf
  for (const p of proof) {
    if (p.byteLength !== TREE_HASH_BYTES || sn === 0) return undefined
    if ((fn & 1) === 1 || fn === sn) {
      r = nodeHash(p, r)
      if ((fn & 1) === 0) {
        while ((fn & 1) === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2) }
      }
    } else {
      r = nodeHash(r, p)
    }
    fn = Math.floor(fn / 2)
    sn = Math.floor(sn / 2)
  }
  return sn === 0 ? r : undefined
}

/** Whether `block` is leaf `index` of the tree of `size` leaves with root `root`, by its proof. */
export function blockMatches (block: Uint8Array | readonly Uint8Array[], index: number, size: number, proof: readonly Uint8Array[], root: Uint8Array): boolean {
  const got = rootFromProof(leafHash(block), index, size, proof)
  return got !== undefined && equalBytes(got, root)
}

/** Splits concatenated hashes (a proof or a leaf layer on the wire) into 32-byte views. */
export function splitHashes (bytes: Uint8Array): Uint8Array[] {
  if (bytes.byteLength % TREE_HASH_BYTES !== 0) throw new MalformedDataError(`${bytes.byteLength} bytes are not a whole number of ${TREE_HASH_BYTES}-byte hashes`)
  const out: Uint8Array[] = []
  for (let at = 0; at < bytes.byteLength; at += TREE_HASH_BYTES) out.push(bytes.subarray(at, at + TREE_HASH_BYTES))
  return out
}

/** Concatenates hashes into one buffer. */
export function joinHashes (hashes: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(hashes.length * TREE_HASH_BYTES)
  hashes.forEach((h, i) => out.set(h, i * TREE_HASH_BYTES))
  return out
}

export function equalBytes (a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false
  return true
}

function mth (leaves: readonly Uint8Array[], lo: number, hi: number): Uint8Array {
  if (hi - lo === 1) return leaves[lo]!
  const k = largestPowerOfTwoBelow(hi - lo)
  return nodeHash(mth(leaves, lo, lo + k), mth(leaves, lo + k, hi))
}

/** The largest power of two strictly below `n` (n ≥ 2). */
function largestPowerOfTwoBelow (n: number): number {
  let k = 1
  while (k * 2 < n) k *= 2
  return k
}
