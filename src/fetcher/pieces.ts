/**
 * The pieces of a pull and who holds them.
 *
 * A piece is a span of consecutive blocks of one chunk (`spanBlocks` of them; fewer at a chunk's
 * end), the unit the scheduler requests. A chunk of one block (small tensors, versions whose
 * geometry is one block per chunk) is one piece. Pieces are numbered in file order.
 *
 * `Holdings` is what one peer has: everything, or a bitfield of whole chunks plus the blocks of
 * chunks in progress it announced. `Availability` counts, per piece, the partial peers holding it
 * (complete peers are counted once for all), for rarest-first.
 *
 * Pure bookkeeping: no I/O, no timers.
 */
import type { ChunkId } from '../core/digest.js'
import { blockCount } from '../core/tree.js'
import type { BlockRange, PeerHave, Target } from './types.js'

export interface Piece {
  readonly chunk: ChunkId
  /** First block and number of blocks. */
  readonly first: number
  readonly count: number
  /** Bytes of the span. */
  readonly size: number
  /** Global index of the chunk's first occurrence in the version. */
  readonly chunkIndex: number
}

/** The pieces of the chunks a target still needs, in file order. */
export class PieceTable {
  readonly pieces: Piece[] = []
  private readonly byChunk = new Map<ChunkId, number[]>()
  /** Global chunk index → the pieces of that chunk (every occurrence of an id maps to its pieces). */
  private readonly byIndex = new Map<number, number[]>()

  constructor (target: Target, readonly spanBlocks: number) {
    const bs = target.blockSize
    const needed = target.needed()
    const first = new Map<ChunkId, number>()
    for (const id of needed) first.set(id, Math.min(...target.indicesOf(id)))
    const ordered = [...needed].sort((a, b) => (first.get(a) ?? 0) - (first.get(b) ?? 0))
    for (const id of ordered) {
      const size = target.sizeOf(id)
      const blocks = blockCount(size, bs)
      const list: number[] = []
      for (let b = 0; b < blocks; b += spanBlocks) {
        const count = Math.min(spanBlocks, blocks - b)
        const bytes = Math.min(size, (b + count) * bs) - b * bs
        list.push(this.pieces.length)
        this.pieces.push({ chunk: id, first: b, count, size: bytes, chunkIndex: first.get(id) ?? 0 })
      }
      this.byChunk.set(id, list)
      for (const i of target.indicesOf(id)) this.byIndex.set(i, list)
    }
  }

  /** The pieces of chunk `id` (none when it was not needed). */
  ofChunk (id: ChunkId): readonly number[] {
    return this.byChunk.get(id) ?? []
  }

  /** The pieces of the chunk at global index `index`. */
  ofIndex (index: number): readonly number[] {
    return this.byIndex.get(index) ?? []
  }

  /** The piece holding block `index` of chunk `id`. */
  pieceOf (id: ChunkId, index: number): number | undefined {
    const list = this.byChunk.get(id)
    return list?.[Math.floor(index / this.spanBlocks)]
  }
}

/** What one peer holds of the version. */
export class Holdings {
  /** 'unknown' until its HAVE, 'none' when it has nothing of the version. */
  state: 'unknown' | 'none' | 'complete' | 'partial' = 'unknown'
  private chunks?: Uint8Array
  /** Blocks of chunks in progress: global chunk index → the block indices announced. */
  private readonly blocks = new Map<number, Set<number>>()

  constructor (private readonly totalChunks: number) {}

  get complete (): boolean { return this.state === 'complete' }
  get partial (): boolean { return this.state === 'partial' }
  get known (): boolean { return this.state === 'complete' || this.state === 'partial' }

  /** Replaces the holdings with a HAVE. Returns false for a malformed one (a bitfield of the wrong size). */
  set (have: PeerHave | undefined): boolean {
    this.blocks.clear()
    this.chunks = undefined
    if (have === undefined) { this.state = 'none'; return true }
    if (have.complete) { this.state = 'complete'; return true }
    if (have.bits.byteLength !== Math.ceil(this.totalChunks / 8)) { this.state = 'none'; return false }
    this.state = 'partial'
    this.chunks = new Uint8Array(have.bits)
    for (const r of have.ranges) this.addRange(r)
    return true
  }

  hasChunk (index: number): boolean {
    if (this.state === 'complete') return true
    return this.chunks !== undefined && ((this.chunks[index >> 3] ?? 0) & (0x80 >> (index & 7))) !== 0
  }

  /** Every block of `piece` (at any occurrence of its chunk). */
  hasPiece (piece: Piece, occurrences: readonly number[]): boolean {
    if (this.state === 'complete') return true
    if (this.state !== 'partial') return false
    for (const index of occurrences) {
      if (this.hasChunk(index)) return true
      const got = this.blocks.get(index)
      if (got === undefined) continue
      let all = true
      for (let b = piece.first; b < piece.first + piece.count && all; b++) all = got.has(b)
      if (all) return true
    }
    return false
  }

  /** Marks chunk `index` whole. Returns false when it was already. */
  addChunk (index: number): boolean {
    if (this.state === 'complete' || index < 0 || index >= this.totalChunks) return false
    if (this.state !== 'partial') { this.state = 'partial'; this.chunks = new Uint8Array(Math.ceil(this.totalChunks / 8)) }
    if (this.hasChunk(index)) return false
    this.chunks![index >> 3]! |= 0x80 >> (index & 7)
    this.blocks.delete(index)
    return true
  }

  addRange (r: BlockRange): void {
    if (this.state === 'complete' || r.chunk >= this.totalChunks || r.count > 1 << 16) return
    if (this.state !== 'partial') { this.state = 'partial'; this.chunks = new Uint8Array(Math.ceil(this.totalChunks / 8)) }
    if (this.hasChunk(r.chunk)) return
    const got = this.blocks.get(r.chunk) ?? new Set<number>()
    for (let b = r.first; b < r.first + r.count; b++) got.add(b)
    this.blocks.set(r.chunk, got)
  }

  /** The peer does not have chunk `index` after all (it lied, or lost it). */
  forgetChunk (index: number, totalChunks: number): void {
    if (this.state === 'complete') {
      this.state = 'partial'
      this.chunks = new Uint8Array(Math.ceil(totalChunks / 8)).fill(0xff)
    }
    if (this.chunks !== undefined) this.chunks[index >> 3]! &= ~(0x80 >> (index & 7))
    this.blocks.delete(index)
  }
}

/** Partial peers holding each piece (complete peers are counted in `complete`). */
export class Availability {
  complete = 0
  private readonly partial: Int32Array

  constructor (pieces: number) {
    this.partial = new Int32Array(pieces)
  }

  of (piece: number): number {
    return this.complete + (this.partial[piece] ?? 0)
  }

  partialHolders (piece: number): number {
    return this.partial[piece] ?? 0
  }

  gained (piece: number): void { this.partial[piece]!++ }
  lost (piece: number): void { if ((this.partial[piece] ?? 0) > 0) this.partial[piece]!-- }
}
