/**
 * Leaf layers: the leaf hashes of one chunk's blocks at one block size, as the store keeps them
 * (index sublevel `leaves`, key `<chunk id>\0<block size>`, value n × 32 bytes) and serves proofs
 * from them.
 *
 * A layer is a function of the chunk's bytes and the block size alone, so one stored for a chunk
 * id is right for every version that lists that chunk at that block size, whatever root a
 * manifest claims; a layer is only ever made from bytes that hash to the chunk id (by `add`, a
 * pull, or the store from its own verified bytes).
 *
 * `LeafLayer` keeps the tree's inner nodes beside the leaves: `proofOf` of `core/tree.ts`
 * recomputes the sibling subtrees of every proof (about n hashes each, n² for a chunk served
 * whole), while the 2n − 1 nodes of the tree, computed once with `nodeHash` and held in two
 * buffers (so the cache's byte count is what the layer takes), make each proof a
 * walk of ⌈log2 n⌉ lookups. Its proofs are checked against `proofOf` by the unit tests.
 *
 * `LeafHasher` computes a layer incrementally from bytes given in any pieces (the add path that
 * hashes on the calling thread); the hash workers compute it for whole chunks (`hash-pool.ts`).
 */
import { createHash, type Hash } from 'node:crypto'
import type { ChunkId } from '../core/digest.js'
import { MAX_CHUNK_SIZE } from '../core/chunking.js'
import { InvalidInputError } from '../core/errors.js'
import { checkBlockSize, MIN_BLOCK_SIZE } from '../core/manifest.js'
import { blockCount, nodeHash, rootOf, splitHashes, TREE_HASH_BYTES } from '../core/tree.js'

/** Leaves a layer can have: a whole chunk of the smallest blocks. */
export const MAX_LAYER_LEAVES = MAX_CHUNK_SIZE / MIN_BLOCK_SIZE

/** The `leaves` sublevel key of chunk `id`'s layer at `blockSize`. */
export function leavesKey (id: ChunkId, blockSize: number): string {
  return `${id}\0${blockSize}`
}

/** `[chunk id, block size]` of a `leaves` key, or undefined for a key of another shape. */
export function splitLeavesKey (key: string): [ChunkId, number] | undefined {
  const at = key.indexOf('\0')
  if (at <= 0) return undefined
  const size = Number(key.slice(at + 1))
  return Number.isInteger(size) && size > 0 ? [key.slice(0, at), size] : undefined
}

/** Key range of every layer of chunk `id` (`gt`/`lt` for an iterator). */
export function leavesRange (id: ChunkId): { gt: string, lt: string } {
  return { gt: `${id}\0`, lt: `${id}\u0001` }
}

/**
 * Checks a layer given for chunk `id` (from a pull, or read back from the index): the block size
 * is one a manifest may declare, the bytes are whole hashes, at least two (a one-block chunk has
 * no layer) and at most what a chunk can hold, and, when the chunk's size is known, exactly its
 * block count. Returns `leaves` or throws `InvalidInputError` saying what is wrong.
 */
export function checkLayer (id: ChunkId, blockSize: number, leaves: Uint8Array, chunkSize?: number): Uint8Array {
  checkBlockSize(blockSize)
  const n = leaves.byteLength / TREE_HASH_BYTES
  if (!Number.isInteger(n) || n < 2 || n > MAX_LAYER_LEAVES) {
    throw new InvalidInputError(`the leaf layer of chunk ${id} is ${leaves.byteLength} bytes: a layer is 2 to ${MAX_LAYER_LEAVES} hashes of ${TREE_HASH_BYTES} bytes (a one-block chunk has none)`)
  }
  if (chunkSize !== undefined && n !== blockCount(chunkSize, blockSize)) {
    throw new InvalidInputError(`the leaf layer of chunk ${id} has ${n} leaves, but the chunk has ${blockCount(chunkSize, blockSize)} blocks of ${blockSize} bytes`)
  }
  return leaves
}

/** A chunk's leaf layer with its tree, for proofs. Immutable. */
export class LeafLayer {
  readonly count: number
  /**
   * The n − 1 inner nodes, back to back in one buffer. Each inner node splits its leaves at its
   * own point (`lo + k`, k the largest power of two below its width), and no two share one, so
   * the node over `[lo, hi)` lives at slot `lo + k − 1`.
   */
  private readonly nodes: Uint8Array
  readonly root: Uint8Array

  constructor (readonly leaves: Uint8Array) {
    this.count = leaves.byteLength / TREE_HASH_BYTES
    if (!Number.isInteger(this.count) || this.count < 1) throw new InvalidInputError(`${leaves.byteLength} bytes are not a leaf layer`)
    this.nodes = new Uint8Array((this.count - 1) * TREE_HASH_BYTES)
    this.root = this.build(0, this.count)
  }

  /** Bytes this layer holds in memory (leaves and inner nodes), for the cache's bound. */
  get bytes (): number {
    return this.leaves.byteLength + this.nodes.byteLength
  }

  /** The audit path of leaf `index`, leaf-up, joined (the wire form): what `proofOf` gives, joined. */
  proof (index: number): Uint8Array {
    if (!Number.isInteger(index) || index < 0 || index >= this.count) throw new InvalidInputError(`block ${index} is outside a chunk of ${this.count} blocks`)
    const siblings: Uint8Array[] = []
    let lo = 0
    let hi = this.count
    while (hi - lo > 1) {
      const k = largestPowerOfTwoBelow(hi - lo)
      if (index < lo + k) {
        siblings.push(this.node(lo + k, hi))
        hi = lo + k
      } else {
        siblings.push(this.node(lo, lo + k))
        lo += k
      }
    }
    const out = new Uint8Array(siblings.length * TREE_HASH_BYTES)
    for (let i = 0; i < siblings.length; i++) out.set(siblings[siblings.length - 1 - i] as Uint8Array, i * TREE_HASH_BYTES)
    return out
  }

  /** The hash of the subtree over leaves `[lo, hi)` (RFC 6962 split), built by the constructor. */
  private node (lo: number, hi: number): Uint8Array {
    if (hi - lo === 1) return this.leaves.subarray(lo * TREE_HASH_BYTES, (lo + 1) * TREE_HASH_BYTES)
    const at = (lo + largestPowerOfTwoBelow(hi - lo) - 1) * TREE_HASH_BYTES
    return this.nodes.subarray(at, at + TREE_HASH_BYTES)
  }

  /** Hashes the subtree over `[lo, hi)` and its inner nodes into `nodes`; returns its hash. */
  private build (lo: number, hi: number): Uint8Array {
    if (hi - lo === 1) return this.node(lo, hi)
    const k = largestPowerOfTwoBelow(hi - lo)
    const h = nodeHash(this.build(lo, lo + k), this.build(lo + k, hi))
    const slot = this.node(lo, hi)
    slot.set(h)
    return slot
  }
}

/** The root of the tree over a joined layer (`rootOf` of `core/tree.ts`), as a plain `Uint8Array`. */
export function layerRoot (leaves: Uint8Array): Uint8Array {
  const root = rootOf(splitHashes(leaves))
  return new Uint8Array(root.buffer, root.byteOffset, root.byteLength)
}

const LEAF_PREFIX = Uint8Array.of(0x00)

/**
 * Leaf hashes of one chunk's blocks from bytes that come in pieces of any size: the blocks are cut
 * from the chunk's start every `blockSize` bytes. `finish` gives the layer (undefined for a chunk
 * of one block or none) and starts over for the next chunk.
 */
export class LeafHasher {
  private readonly leaves: Uint8Array[] = []
  private block: Hash | undefined
  private inBlock = 0

  constructor (readonly blockSize: number) {}

  update (bytes: Uint8Array): void {
    let at = 0
    while (at < bytes.byteLength) {
      this.block ??= createHash('sha256').update(LEAF_PREFIX)
      const take = Math.min(this.blockSize - this.inBlock, bytes.byteLength - at)
      this.block.update(bytes.subarray(at, at + take))
      this.inBlock += take
      at += take
      if (this.inBlock === this.blockSize) this.closeBlock()
    }
  }

  finish (): Uint8Array | undefined {
    if (this.inBlock > 0) this.closeBlock()
    const leaves = this.leaves.splice(0)
    if (leaves.length < 2) return undefined
    const out = new Uint8Array(leaves.length * TREE_HASH_BYTES)
    leaves.forEach((l, i) => out.set(l, i * TREE_HASH_BYTES))
    return out
  }

  private closeBlock (): void {
    this.leaves.push((this.block as Hash).digest())
    this.block = undefined
    this.inBlock = 0
  }
}

/** The largest power of two strictly below `n` (n ≥ 2). */
function largestPowerOfTwoBelow (n: number): number {
  let k = 1
  while (k * 2 < n) k *= 2
  return k
}
