/**
 * What this node serves on `/shoal/chunks/2.0.0`: the `ChunkSource` over the store and the pulls
 * running now. Pieces of a version being pulled are served the moment they are verified: whole
 * chunks once written, blocks of a chunk still being assembled (cut-through) as each is checked
 * against the chunk's tree.
 *
 * MUST hold: only verified bytes leave (the store's reads check them, a pull's target holds only
 * blocks that matched their proof); a version is `complete` only when every chunk of it is here;
 * watchers hear of every chunk and block a running pull verifies from the moment its target opens,
 * before it copies the chunks this node already holds.
 *
 * Not a goal: deciding what to serve to whom (the upload limiter, `RecentSends`), or which pulls
 * run (`PullManager`).
 */
import type { ChunkId, VersionId } from '../core/digest.js'
import { blockCount } from '../core/tree.js'
import type { ChunkSource, HaveState, HaveUpdate, Span } from '../protocol/chunks/index.js'
import { proofsFrom, type PullTarget } from '../store/pull-target.js'
import type { Catalogue, ChunkReads } from '../store/api.js'

/** The pulls a `LocalChunkSource` serves from (the node's `PullManager`). */
export interface RunningPulls {
  /** The target of each pull running now. */
  targets: () => Iterable<PullTarget>
  /** The target of the running pull of `version`; undefined when none runs. */
  target: (version: VersionId) => PullTarget | undefined
  /** Calls `listener` with each pull's target as it opens, before it copies any chunk into it. */
  onOpened: (listener: (target: PullTarget) => void) => void
}

export class LocalChunkSource implements ChunkSource {
  private readonly watchers = new Map<string, Set<(update: HaveUpdate) => void>>()

  constructor (private readonly store: ChunkReads & Pick<Catalogue, 'hasVersion' | 'resolve' | 'versionRecord'>, private readonly pulls: RunningPulls) {
    pulls.onOpened(target => { this.follow(target) })
  }

  /**
   * Verified blocks of `id`: from a pull that is assembling that chunk (cut-through: blocks
   * verified before the chunk is whole), else from the store (`Store.readSpan`: proofs from the
   * chunk's leaf layer), with the layer a pull just built when it has it (it reaches the index
   * with the chunk's location, at the pull's next flush; only the span's bytes are read then too).
   * Undefined when any block is not here.
   */
  async readSpan (id: ChunkId, blockSize: number, first: number, count: number): Promise<Span | undefined> {
    let own: { leaves: Uint8Array[], size: number } | undefined
    for (const target of this.pulls.targets()) {
      if (target.blockSize !== blockSize) continue
      if (target.isAssembling(id)) {
        const span = target.readBlocks(id, first, count)
        if (span !== undefined) return span
      }
      const leaves = own === undefined ? target.leavesOf(id) : undefined
      if (leaves !== undefined) own = { leaves, size: target.sizeOf(id) }
    }
    if (own === undefined) return await this.store.readSpan(id, blockSize, first, count, { pooled: true })
    // Only the span's blocks are read: a peer asks for a chunk a span at a time.
    if (first + count > blockCount(own.size, blockSize)) return undefined
    const start = first * blockSize
    const data = await this.store.readChunkRange(id, start, Math.min(own.size, (first + count) * blockSize) - start, { pooled: true })
    if (data === undefined) return undefined
    return { data, proofs: proofsFrom(own.leaves, first, count) }
  }

  release (bytes: Uint8Array): void {
    this.store.releaseChunk(bytes)
  }

  /** What a running pull has of `version`, else `complete` when the store holds all of it. */
  async have (version: VersionId): Promise<HaveState | undefined> {
    const target = this.pulls.target(version)
    if (target !== undefined) return target.allPresent ? { complete: true } : { complete: false, bits: target.bits, ranges: target.blockRanges() }
    if (!await this.store.hasVersion(version)) return undefined
    const v = await this.store.resolve(`${(await this.store.versionRecord(version))?.name ?? ''}@${version}`).catch(() => undefined)
    return v !== undefined && v.missing.length === 0 ? { complete: true } : undefined
  }

  watch (version: VersionId, listener: (update: HaveUpdate) => void): () => void {
    const set = this.watchers.get(version) ?? new Set()
    set.add(listener)
    this.watchers.set(version, set)
    return () => {
      set.delete(listener)
      if (set.size === 0) this.watchers.delete(version)
    }
  }

  /** Tells the watchers of the target's version of each chunk and block it verifies. */
  private follow (target: PullTarget): void {
    const { version } = target
    target.on('have', chunks => { for (const l of this.watchers.get(version) ?? []) l({ chunks, ranges: [] }) })
    target.on('blocks', ranges => { for (const l of this.watchers.get(version) ?? []) l({ chunks: [], ranges }) })
  }
}
