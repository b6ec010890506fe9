/**
 * In-memory stand-ins for a `FetchSession`'s collaborators: a `Target` that verifies like a
 * `PullTarget` (sha-256 chunk ids, block trees, `DigestMismatchError` on bad bytes), scriptable fake
 * peers (`Channel`s) that can be slow, corrupt, lying, stalling or closing, and a fake origin.
 *
 * By default a chunk is one block (the geometry of versions made before blocks); a target made
 * with a smaller `blockSize` cuts chunks into blocks with tree roots, and fake peers then send
 * each block with its proof.
 */
import { MAX_CHUNK_SIZE } from '../../src/core/chunking.js'
import { CODECS, decodeBlock, encodeBlock, type CodecName } from '../../src/core/codec.js'
import { chunkIdOf, chunkMatches, type ChunkId, type VersionId } from '../../src/core/digest.js'
import { AbortedError, DigestMismatchError } from '../../src/core/errors.js'
import { blockCount, blockMatches, joinHashes, leafHash, proofOf, rootOf, splitHashes } from '../../src/core/tree.js'
import type { Arrival, Channel, OriginSource, Span, Target } from '../../src/fetcher/session.js'
import { DontHaveError, PeerGoneError, PeerRequestError } from '../../src/protocol/chunks/errors.js'
import { seededBytes } from './random.js'

export const FAKE_VERSION: VersionId = 'bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy'

/** A target of `chunks` (global order; equal byte arrays give the same id at several indices). */
export class FakeTarget implements Target {
  readonly version = FAKE_VERSION
  readonly ids: ChunkId[]
  readonly source = new Map<ChunkId, Uint8Array>()
  readonly stored = new Map<ChunkId, Uint8Array>()
  readonly totalBytes: number
  /** Every `put` call (a whole chunk, or its last block), in order, with its outcome. */
  readonly puts: Array<{ id: ChunkId, result: 'stored' | 'duplicate' | 'mismatch' }> = []
  /** Every block stored, in order, as `id/index`. */
  readonly blocks: string[] = []
  private readonly missing: Set<ChunkId>
  /** Tree roots and leaves of chunks of more than one block. */
  readonly roots = new Map<ChunkId, Uint8Array>()
  readonly leaves = new Map<ChunkId, Uint8Array[]>()
  private readonly present = new Map<ChunkId, Set<number>>()

  constructor (chunks: Uint8Array[], private readonly origins = false, readonly blockSize = MAX_CHUNK_SIZE) {
    this.ids = chunks.map(c => chunkIdOf(c))
    chunks.forEach((c, i) => {
      const id = this.ids[i]!
      this.source.set(id, c)
      const n = blockCount(c.byteLength, blockSize)
      if (n > 1) {
        const leaves = Array.from({ length: n }, (_, b) => leafHash(c.subarray(b * blockSize, Math.min(c.byteLength, (b + 1) * blockSize))))
        this.leaves.set(id, leaves)
        this.roots.set(id, rootOf(leaves))
      }
    })
    this.totalBytes = chunks.reduce((n, c) => n + c.byteLength, 0)
    this.missing = new Set(this.ids)
  }

  blockMissing (id: ChunkId, index: number): boolean {
    return this.missing.has(id) && this.present.get(id)?.has(index) !== true
  }

  /** Blocks `[first, first + count)` of `id` as an honest peer sends them: bytes and proof. */
  spanOf (span: Span): Arrival[] {
    const chunk = this.source.get(span.chunk)!
    const leaves = this.leaves.get(span.chunk)
    const out: Arrival[] = []
    for (let b = span.first; b < span.first + span.count; b++) {
      const data = chunk.slice(b * this.blockSize, Math.min(chunk.byteLength, (b + 1) * this.blockSize))
      out.push({ index: b, proof: leaves === undefined ? new Uint8Array(0) : joinHashes(proofOf(leaves, b)), data: [data] })
    }
    return out
  }

  async putBlock (id: ChunkId, index: number, parts: Uint8Array | readonly Uint8Array[], proof: Uint8Array): Promise<boolean> {
    const root = this.roots.get(id)
    if (root === undefined) return await this.put(id, parts)
    await Promise.resolve()
    if (!this.blockMissing(id, index)) return false
    const n = this.leaves.get(id)!.length
    if (!blockMatches(parts, index, n, splitHashes(proof), root)) {
      this.puts.push({ id, result: 'mismatch' })
      throw new DigestMismatchError(`block ${index} does not match the tree of ${id}`)
    }
    const got = this.present.get(id) ?? new Set<number>()
    got.add(index)
    this.present.set(id, got)
    this.blocks.push(`${id}/${index}`)
    if (got.size < n) return true
    // The whole chunk is written now (a slow disk: `putDelayMs`).
    const size = this.sizeOf(id)
    this.backlog += size
    this.writing?.add(size)
    try {
      if (this.putDelayMs > 0) await new Promise(resolve => setTimeout(resolve, this.putDelayMs))
    } finally {
      this.backlog -= size
      this.writing?.remove(size)
    }
    this.missing.delete(id)
    this.stored.set(id, this.source.get(id)!)
    this.puts.push({ id, result: 'stored' })
    return true
  }

  /** Whole chunks of several blocks being written (as `PullTarget`'s). */
  private backlog = 0
  writing?: InflightTracker
  get writeBacklogBytes (): number { return this.backlog }

  get totalChunks (): number { return this.ids.length }
  get done (): boolean { return this.missing.size === 0 }
  get bytesPresent (): number {
    return this.ids.reduce((n, id) => n + (this.stored.has(id) ? this.sizeOf(id) : 0), 0)
  }

  needed (): ChunkId[] { return [...this.missing] }
  isMissing (id: ChunkId): boolean { return this.missing.has(id) }
  sizeOf (id: ChunkId): number { return this.source.get(id)?.byteLength ?? 0 }
  indicesOf (id: ChunkId): number[] { return this.ids.flatMap((x, i) => x === id ? [i] : []) }
  chunkAt (index: number): ChunkId | undefined { return this.ids[index] }

  originOf (id: ChunkId): { url: string, offset: number } | undefined {
    return this.origins && this.source.has(id) ? { url: `http://origin.test/${id}`, offset: 0 } : undefined
  }

  /** Delay of every `put` (a slow disk), and a tally of the bytes being stored. */
  putDelayMs = 0
  storing?: InflightTracker

  async put (id: ChunkId, parts: Uint8Array | readonly Uint8Array[]): Promise<boolean> {
    const size = parts instanceof Uint8Array ? parts.byteLength : parts.reduce((n, p) => n + p.byteLength, 0)
    this.storing?.add(size)
    try {
      if (this.putDelayMs > 0) await new Promise(resolve => setTimeout(resolve, this.putDelayMs))
      else await Promise.resolve()
    } finally {
      this.storing?.remove(size)
    }
    const bytes = parts instanceof Uint8Array ? parts : Buffer.concat(parts)
    if (!this.missing.has(id)) {
      this.puts.push({ id, result: 'duplicate' })
      return false
    }
    if (bytes.byteLength !== this.sizeOf(id) || !chunkMatches(bytes, id)) {
      this.puts.push({ id, result: 'mismatch' })
      throw new DigestMismatchError(`received bytes do not match chunk ${id}`)
    }
    this.missing.delete(id)
    this.stored.set(id, bytes)
    this.puts.push({ id, result: 'stored' })
    return true
  }
}

/** `n` chunks of pseudo-random bytes with sizes in [minSize, maxSize]. */
export function makeChunks (n: number, minSize: number, maxSize: number, seed = 1): Uint8Array[] {
  return Array.from({ length: n }, (_, i) => {
    const size = minSize + ((i * 7919 + seed * 104729) % (maxSize - minSize + 1))
    return seededBytes(size, seed * 1_000_003 + i)
  })
}

/** Shared tally of bytes requested and not yet answered, across fake peers. */
export class InflightTracker {
  current = 0
  max = 0
  add (n: number): void { this.current += n; this.max = Math.max(this.max, this.current) }
  remove (n: number): void { this.current -= n }
}

export interface FakePeerOptions {
  /** Global indices held at first; `all` by default. */
  has?: 'all' | number[]
  /** What the peer claims in HAVE: its holdings (default), `complete`, these indices, or that it does not know the version. */
  claims?: 'holdings' | 'complete' | 'unknown' | number[]
  /** Delay before each answer. @default 1 */
  delayMs?: number | ((id: ChunkId) => number)
  /** Flips a byte of every block. */
  corrupt?: boolean
  /** Never answers a `want` (until aborted). */
  stall?: boolean
  /** Acknowledges every `want` as QUEUED at once (a server whose upload slots are all busy). */
  queued?: boolean
  /** Answers this many wants, then stalls. */
  stallAfter?: number
  /** Closes the channel right after delivering this many blocks. */
  closeAfter?: number
  /** Indices announced (and gained) later through `onUpdate`. */
  updates?: Array<{ afterMs: number, indices: number[] }>
  load?: number
  tracker?: InflightTracker
  /** Answers DUPLICATE to every non-urgent want (a seed that just sent everything elsewhere). */
  duplicateUnlessUrgent?: boolean
  /** With `duplicateUnlessUrgent`: the peer the DUPLICATE names as the one the chunk went to (or names per chunk). */
  duplicateHolder?: string | ((id: ChunkId) => string)
  /** Answers with the bytes as a list of parts (as a real channel does), to be handed back through `release`. */
  inParts?: boolean
  /**
   * Reports `bytesReceived` (as a real channel does), growing by this many bytes every 20 ms while
   * a want is pending and not stalled (a slow link whose blocks are visibly on their way), and by
   * each block's size when it is delivered.
   */
  trickleBytes?: number
  /** A want cancelled before its answer is due is still answered when due, through its `onLate` (a block already on the wire). */
  deliverAfterCancel?: boolean
  /** With `trickleBytes`: bytes grow only in the first this many ms of each want, then go quiet until it is answered. */
  trickleForMs?: number
  /** Sends only the first this many blocks of each span, then nothing more for it (a peer cut off mid-span). */
  blocksPerSpan?: number
  /**
   * Sends blocks encoded when their span offers a codec: `honest`; `wrong-bytes` (the encoded form
   * of other bytes); `bomb` (a declared length of 1 GiB); `unoffered` (deflate, whatever was offered).
   */
  encode?: 'honest' | 'wrong-bytes' | 'bomb' | 'unoffered'
}

interface PendingWant { id: ChunkId, since: number, fail: (err: Error) => void }

export class FakePeer implements Channel {
  isOpen = true
  readonly load: number
  readonly holdings = new Set<number>()
  /** Every `want`, in order (its chunk), and its span. */
  readonly wants: ChunkId[] = []
  readonly spans: Span[] = []
  /** Wants answered DUPLICATE (`duplicateUnlessUrgent`). */
  readonly refused: ChunkId[] = []
  /** Wants whose signal was aborted before they were answered. */
  readonly aborted: ChunkId[] = []
  /** Ids delivered (possibly corrupted). */
  readonly delivered: ChunkId[] = []
  /** Ids delivered after their want was cancelled (`deliverAfterCancel`), through `onLate`. */
  readonly deliveredLate: ChunkId[] = []
  /** Blocks handed back through `release`. */
  readonly released: Uint8Array[][] = []
  /** Ids in flight when the channel closed. */
  readonly lostOnClose: ChunkId[] = []
  /** Wants for chunks the peer had not announced (a session must never send those to an honest peer). */
  readonly unannounced: ChunkId[] = []
  inflightBytes = 0
  maxInflightBytes = 0
  /** Present only with `trickleBytes`, like a channel that counts the bytes it reads. */
  bytesReceived?: number
  private readonly pending = new Set<PendingWant>()
  private readonly closeListeners: Array<(err?: Error) => void> = []
  private readonly timers = new Set<NodeJS.Timeout>()

  constructor (readonly key: string, private readonly target: FakeTarget, private readonly options: FakePeerOptions = {}) {
    this.load = options.load ?? 0
    const has = options.has ?? 'all'
    for (let i = 0; i < target.totalChunks; i++) if (has === 'all' || has.includes(i)) this.holdings.add(i)
    const trickle = options.trickleBytes
    if (trickle !== undefined) {
      this.bytesReceived = 0
      const timer = setInterval(() => {
        const quietAfter = this.options.trickleForMs ?? Infinity
        const now = Date.now()
        const stalled = this.options.stall === true || (this.options.stallAfter !== undefined && this.delivered.length >= this.options.stallAfter)
        if (!stalled && [...this.pending].some(p => now - p.since < quietAfter)) this.bytesReceived! += trickle
      }, 20)
      this.timers.add(timer)
    }
  }

  /** How long after a want it is answered. */
  private delayOf (id: ChunkId): number {
    return typeof this.options.delayMs === 'function' ? this.options.delayMs(id) : this.options.delayMs ?? 1
  }

  holds (id: ChunkId): boolean {
    return this.target.indicesOf(id).some(i => this.holdings.has(i))
  }

  async want (span: Span, options: { signal?: AbortSignal, urgent?: boolean, onQueued?: () => void, onBlock: (b: Arrival) => void, onLate?: (b: Arrival) => void }): Promise<void> {
    const { signal, onQueued, onBlock, onLate } = options
    const id = span.chunk
    if (!this.isOpen) throw new PeerGoneError('closed')
    signal?.throwIfAborted()
    if (this.options.duplicateUnlessUrgent === true && options.urgent !== true) {
      this.refused.push(id)
      const holder = this.options.duplicateHolder
      throw new PeerRequestError('DUPLICATE', 'just sent to another peer', typeof holder === 'function' ? holder(id) : holder)
    }
    this.wants.push(id)
    this.spans.push(span)
    if (!this.holds(id) && (this.options.claims ?? 'holdings') === 'holdings') this.unannounced.push(id)
    const blocks = this.target.spanOf(span)
    const size = blocks.reduce((n, b) => n + b.data[0]!.byteLength, 0)
    this.inflightBytes += size
    this.maxInflightBytes = Math.max(this.maxInflightBytes, this.inflightBytes)
    this.options.tracker?.add(size)
    const shaped = (b: Arrival, i: number): Arrival => {
      const bytes = b.data[0]!
      // A real channel counts a block's bytes as they are read, not only the trickle before them.
      if (this.bytesReceived !== undefined) this.bytesReceived += bytes.byteLength
      if (this.options.corrupt === true && i === 0) bytes[0] = bytes[0]! ^ 0xff
      const encoded = this.encoded(bytes, span.codec)
      if (encoded !== undefined) return { ...b, data: [encoded], encoded: true }
      return { ...b, data: this.options.inParts === true && bytes.byteLength > 1 ? [bytes.subarray(0, 1), bytes.subarray(1)] : [bytes] }
    }
    await new Promise<void>((resolve, reject) => {
      const answer: { timer?: NodeJS.Timeout } = {}
      const entry: PendingWant = {
        id,
        since: Date.now(),
        fail: err => { finish(); reject(err) }
      }
      const finish = (): void => {
        if (!this.pending.delete(entry)) return
        this.inflightBytes -= size
        this.options.tracker?.remove(size)
        if (answer.timer !== undefined) { clearTimeout(answer.timer); this.timers.delete(answer.timer) }
        signal?.removeEventListener('abort', onAbort)
      }
      const onAbort = (): void => {
        if (!this.pending.has(entry)) return
        this.aborted.push(id)
        entry.fail(new AbortedError('request cancelled'))
        if (this.options.deliverAfterCancel === true && onLate !== undefined && this.holds(id)) {
          const delay = this.delayOf(id)
          const timer = setTimeout(() => {
            this.timers.delete(timer)
            this.delivered.push(id)
            this.deliveredLate.push(id)
            blocks.forEach((b, i) => onLate(shaped(b, i)))
          }, Math.max(0, entry.since + delay - Date.now()))
          this.timers.add(timer)
        }
      }
      this.pending.add(entry)
      signal?.addEventListener('abort', onAbort, { once: true })
      if (this.options.queued === true) queueMicrotask(() => { if (this.pending.has(entry)) onQueued?.() })
      if (this.options.stall === true || (this.options.stallAfter !== undefined && this.delivered.length >= this.options.stallAfter)) return
      const delay = this.delayOf(id)
      answer.timer = setTimeout(() => {
        if (!this.pending.has(entry)) return
        if (!this.holds(id)) {
          entry.fail(new DontHaveError('peer does not have the chunk'))
          return
        }
        const cut = this.options.blocksPerSpan
        if (cut !== undefined && cut < blocks.length) {
          blocks.slice(0, cut).forEach((b, i) => onBlock(shaped(b, i)))
          return
        }
        finish()
        this.delivered.push(id)
        blocks.forEach((b, i) => onBlock(shaped(b, i)))
        resolve()
        if (this.options.closeAfter !== undefined && this.delivered.length >= this.options.closeAfter) this.close(new Error('connection reset'))
      }, delay)
      this.timers.add(answer.timer)
    })
  }

  /** `bytes` as this peer sends them encoded (see `encode`), or undefined: raw. */
  private encoded (bytes: Uint8Array, offered: CodecName | undefined): Uint8Array | undefined {
    const how = this.options.encode
    if (how === undefined || (offered === undefined && how !== 'unoffered')) return undefined
    if (how === 'unoffered') return encodeBlock(new Uint8Array(bytes.byteLength), 'deflate')
    if (how === 'wrong-bytes') {
      const other = Uint8Array.from(bytes)
      other[other.byteLength - 1] = other[other.byteLength - 1]! ^ 0x01
      return encodeBlock(other, offered!)
    }
    const encoded = encodeBlock(bytes, offered!)
    if (encoded[0] === CODECS.raw.id) return undefined
    if (how === 'bomb') new DataView(encoded.buffer, encoded.byteOffset).setUint32(2, 1024 * 1024 * 1024, true)
    return encoded
  }

  /** Decodes as a `PeerChannel` does (without a pool). */
  decode (encoded: Uint8Array[], options: { maxSize: number, accept: readonly CodecName[] }): Uint8Array[] {
    this.decodes++
    return [decodeBlock(encoded.length === 1 ? encoded[0]! : Buffer.concat(encoded), options)]
  }

  /** Calls to `decode`. */
  decodes = 0

  async watch (_version: VersionId, watcher: Parameters<Channel['watch']>[1]): Promise<void> {
    const claims = this.options.claims ?? 'holdings'
    if (claims === 'unknown') watcher.onHave(undefined)
    else if (claims === 'complete' || (claims === 'holdings' && this.holdings.size === this.target.totalChunks)) watcher.onHave({ complete: true })
    else {
      const bits = new Uint8Array(Math.ceil(this.target.totalChunks / 8))
      for (const i of claims === 'holdings' ? this.holdings : claims) bits[i >> 3]! |= 0x80 >> (i & 7)
      watcher.onHave({ complete: false, bits, ranges: [] })
    }
    for (const update of this.options.updates ?? []) {
      const timer = setTimeout(() => {
        if (!this.isOpen) return
        for (const i of update.indices) this.holdings.add(i)
        watcher.onUpdate({ chunks: update.indices, ranges: [] })
      }, update.afterMs)
      this.timers.add(timer)
    }
  }

  async unwatch (): Promise<void> {}

  release (bytes: Uint8Array[]): void {
    this.released.push(bytes)
  }

  onClose (listener: (err?: Error) => void): void {
    if (!this.isOpen) listener()
    else this.closeListeners.push(listener)
  }

  /** Closes the channel: pending wants reject with `PeerGoneError`, close listeners run. */
  close (err?: Error): void {
    if (!this.isOpen) return
    this.isOpen = false
    for (const p of [...this.pending]) {
      this.lostOnClose.push(p.id)
      p.fail(new PeerGoneError('stream to peer closed'))
    }
    for (const t of this.timers) clearTimeout(t)
    for (const l of this.closeListeners.splice(0)) l(err)
  }

  /** Test teardown: stops timers without notifying anyone. */
  dispose (): void {
    for (const t of this.timers) clearTimeout(t)
  }
}

/** The peer source a `FetchSession` reaches peers through (its `channel`), over fake peers; unknown keys fail to connect. */
export function fakePeers (peers: FakePeer[]): { channel: (peer: string, signal: AbortSignal) => Promise<Channel> } {
  const byKey = new Map(peers.map(p => [p.key, p]))
  return {
    channel: async peer => {
      const p = byKey.get(peer)
      if (p === undefined) throw new Error(`cannot reach ${peer}`)
      return p
    }
  }
}

/** An origin serving the target's chunks by the URLs `FakeTarget.originOf` gives. */
export class FakeOrigin implements OriginSource {
  readonly fetched: ChunkId[] = []
  bytes = 0

  constructor (private readonly target: FakeTarget, private readonly delayMs = 1) {}

  async fetchRange (url: string, offset: number, length: number, options: { signal?: AbortSignal }): Promise<Uint8Array> {
    await new Promise(resolve => setTimeout(resolve, this.delayMs))
    options.signal?.throwIfAborted()
    const id = url.slice(url.lastIndexOf('/') + 1)
    const chunk = this.target.source.get(id)
    if (chunk === undefined) throw new Error(`404 ${url}`)
    this.fetched.push(id)
    this.bytes += length
    return chunk.slice(offset, offset + length)
  }
}
