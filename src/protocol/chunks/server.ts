/**
 * Serving side of `/shoal/chunks/1.0.0`: one `ServerSession` per inbound stream.
 *
 * - WANT: queued (at most `MAX_PENDING_PER_STREAM`, else `BUSY`); when the upload limiter grants a
 *   slot, the chunk is read (never before: waiting WANTs hold no bytes), and once the limiter
 *   grants its bandwidth it is sent: BLOCK with the verified bytes, or DONT_HAVE. A WANT that has
 *   to wait for the limiter is answered QUEUED first (the BLOCK follows).
 * - CANCEL: drops a queued or in-progress WANT; nothing is sent for it (a block already handed to
 *   the stream still arrives, and the requester may keep it).
 * - RECEIVED: the requester has the whole BLOCK; its bytes go back to the source
 *   (`ChunkSource.release`) for reuse. Only then is it certain that no layer below (yamux, noise,
 *   the socket) still holds them: a send that has resolved may still sit in the noise layer's
 *   write buffer, unencrypted.
 * - INTEREST: answers HAVE (bitfield or `complete`), then streams HAVE_UPDATE batches as chunks
 *   of that version become available here, so a requester can fetch a piece the moment it is
 *   verified. UNINTEREST stops them.
 *
 * The session never reads storage: it calls the injected `ChunkSource`, which MUST return only
 * verified bytes. Every response carries `load` (uploads queued or running here).
 */
import { CID } from 'multiformats/cid'
import type { Stream } from '@libp2p/interface'
import type { Uint8ArrayList } from 'uint8arraylist'
import { RAW_CODEC, DAG_CBOR_CODEC, type ChunkId, type VersionId } from '../../core/digest.js'
import { MalformedDataError } from '../../core/errors.js'
import { FramedStream, SendStalledError } from '../framing.js'
import { DUPLICATE_HOLD_MS, DUPLICATE_TRANSIT_MS, HAVE_UPDATE_INTERVAL_MS, MAX_FRAME_BYTES, MAX_INTERESTS_PER_STREAM, MAX_PENDING_PER_STREAM, MAX_RECENT_SENDS, MAX_REQUEST_FRAME_BYTES, MAX_UNRECEIVED_PER_STREAM } from './constants.js'
import { encodeBlock } from './block.js'
import { WireCode } from './errors.js'
import { ChunkRequest, ChunkResponse } from './pb/chunks.js'

export type HaveState = { complete: true } | { complete: false, bits: Uint8Array }

/** What the serving side needs from the node: verified bytes and availability. */
export interface ChunkSource {
  /** Verified bytes of a chunk, or undefined when this node has none. */
  readChunk: (id: ChunkId, signal: AbortSignal) => Promise<Uint8Array | undefined>
  /** What this node has of a version, or undefined when it knows nothing of it. */
  have: (version: VersionId) => Promise<HaveState | undefined>
  /** Calls `listener` with global chunk indices of `version` as they become available. */
  watch: (version: VersionId, listener: (indices: number[]) => void) => () => void
  /** Takes back bytes `readChunk` returned once the peer has received them (optional: reuse only). */
  release?: (bytes: Uint8Array) => void
}

/**
 * Upload limits, in two steps: a slot, taken before the chunk is read (so a server holds at most
 * as many chunks in memory as it has slots, however many WANTs wait), then the bandwidth for the
 * block once its size is known.
 */
export interface UploadLimiter {
  /**
   * A slot for an upload to `peer`. A limiter SHOULD bound the slots one peer holds at once, so a
   * peer that stops reading (every send it starts then waits, slot held, until `SEND_STALL_MS`)
   * cannot take the node's upload from everyone else.
   */
  slot: (signal: AbortSignal, peer?: string) => Promise<() => void>
  bandwidth: (bytes: number, signal: AbortSignal) => Promise<void>
  /** Whether `slot(peer)` would wait now: the requester is then told QUEUED. */
  slotWouldWait?: (peer?: string) => boolean
  /** Whether `bandwidth(bytes)` would wait now: the requester is then told QUEUED, if it was not already. */
  bandwidthWouldWait?: (bytes: number) => boolean
  /** Uploads queued or running, reported to requesters. */
  load: () => number
}

export interface ServerLog { debug: (obj: object, msg?: string) => void }

/** Called when a peer misbehaves on the serving side: `unread` — it stopped reading what it asked for (`SendStalledError`). */
export type PeerFaultHook = (peer: string, offence: 'unread', detail: string) => void

/** Called after a block went out: who got it, how many bytes, and the versions that peer said it wants. */
export type SentHook = (peer: string, bytes: number, versions: string[]) => void

/** What a server learns about one send of a chunk, for `RecentSends`. */
export interface SendRecord {
  /** The block was handed to the stream (`true`), or could not be (`false`: forgotten). */
  done: (sent: boolean) => void
  /** The peer confirmed with RECEIVED that the whole block arrived. */
  delivered: () => void
  /** The peer cancelled the request: it may not keep the block, so the chunk is not held for it. */
  cancelled: () => void
}

/**
 * Which chunks this node sent recently and to whom, shared by all sessions: a second peer asking
 * for a chunk another peer is receiving right now is told DUPLICATE (fetch it from that peer),
 * unless its request is urgent. So a seed's upload goes to pieces the swarm does not have yet.
 *
 * A chunk is held while its send is on its way (at most `transitMs` past the start: a block can
 * wait long behind others on a slow link, but one stuck upload must not refuse a chunk to
 * everyone for ever), then `holdMs` from the recipient's RECEIVED. A send the recipient cancelled
 * holds nothing: that peer keeps the block only if it still lacks the piece when it arrives.
 */
export class RecentSends {
  private readonly sent = new Map<string, { to: string, started: number, deliveredAt?: number }>()

  constructor (
    private readonly holdMs = DUPLICATE_HOLD_MS,
    private readonly max = MAX_RECENT_SENDS,
    private readonly transitMs = DUPLICATE_TRANSIT_MS
  ) {}

  /** True when `id` is on its way to a peer other than `to`, or reached one less than `holdMs` ago. */
  heldFor (id: string, to: string, now = Date.now()): boolean {
    return this.holderOf(id, to, now) !== undefined
  }

  /** The peer (other than `to`) that `id` is on its way to or reached less than `holdMs` ago, if any. */
  holderOf (id: string, to: string, now = Date.now()): string | undefined {
    const entry = this.sent.get(id)
    if (entry === undefined || entry.to === to) return undefined
    const held = entry.deliveredAt !== undefined ? now - entry.deliveredAt < this.holdMs : now - entry.started < this.transitMs
    return held ? entry.to : undefined
  }

  /** Records that `id` is about to go to `to`. */
  start (id: string, to: string, now = Date.now()): SendRecord {
    this.sent.delete(id)
    const entry: { to: string, started: number, deliveredAt?: number } = { to, started: now }
    this.sent.set(id, entry)
    if (this.sent.size > this.max) {
      const oldest = this.sent.keys().next().value
      if (oldest !== undefined) this.sent.delete(oldest)
    }
    const current = (): boolean => this.sent.get(id) === entry
    return {
      done: sent => { if (!sent && current()) this.sent.delete(id) },
      delivered: () => { if (current()) entry.deliveredAt = Date.now() },
      cancelled: () => { if (current() && entry.deliveredAt === undefined) this.sent.delete(id) }
    }
  }
}

/**
 * Optional hooks that let a test make this node misbehave. Never set in production. A faulty
 * node needs no data: with `lie` it claims every version, and the other faults answer WANTs
 * without reading anything.
 */
export interface ServerFaults {
  /** Sends corrupted bytes (the real ones with a bit flipped, or garbage when it has none). */
  corrupt?: boolean
  /** Claims to have every version complete, and answers DONT_HAVE to what it lacks. */
  lie?: boolean
  /** Never answers WANTs. */
  stall?: boolean
  /** Sends this many garbage bytes as one frame instead of the block. */
  oversize?: number
  /** Claims to have nothing and serves no chunk (manifests only). */
  noChunks?: boolean
}

/** Garbage sent by a corrupting node that has no copy. @default 64 KiB */
const GARBAGE_BYTES = 64 * 1024

export class ServerSession {
  private readonly framed: FramedStream
  private readonly pending = new Map<number, AbortController>()
  /** Bytes of blocks sent and not yet RECEIVED, by request id, oldest first. */
  private readonly unreceived = new Map<number, Uint8Array>()
  /** Sends whose RECEIVED or CANCEL has not come yet, by request id, oldest first (see `RecentSends`). */
  private readonly sends = new Map<number, SendRecord>()
  private readonly interests = new Map<string, { stop: () => void, batch: number[], timer?: NodeJS.Timeout }>()

  constructor (
    stream: Stream,
    private readonly remote: string,
    private readonly source: ChunkSource,
    private readonly limiter: UploadLimiter,
    private readonly recent: RecentSends,
    private readonly log: ServerLog,
    private readonly faults?: ServerFaults,
    private readonly onSent?: SentHook,
    options: { sendStallMs?: number, onFault?: PeerFaultHook } = {}
  ) {
    this.framed = new FramedStream(stream, {
      maxFrameBytes: MAX_REQUEST_FRAME_BYTES,
      maxBufferBytes: MAX_REQUEST_FRAME_BYTES * (MAX_PENDING_PER_STREAM + 16),
      onFrame: frame => this.onFrame(frame),
      onClose: err => {
        if (err instanceof SendStalledError) options.onFault?.(this.remote, 'unread', err.message)
        this.shutdown()
      },
      ...(options.sendStallMs !== undefined ? { sendStallMs: options.sendStallMs } : {})
    })
  }

  private onFrame (frame: Uint8ArrayList): void {
    let req: ChunkRequest
    try {
      req = ChunkRequest.decode(frame)
    } catch (err) {
      this.framed.abort(new MalformedDataError(`undecodable request: ${(err as Error).message}`))
      return
    }
    switch (req.type) {
      case ChunkRequest.Type.WANT: this.want(req); break
      case ChunkRequest.Type.CANCEL:
        this.pending.get(req.id)?.abort()
        this.pending.delete(req.id)
        this.sends.get(req.id)?.cancelled()
        this.sends.delete(req.id)
        break
      case ChunkRequest.Type.INTEREST: void this.interest(req); break
      case ChunkRequest.Type.UNINTEREST: this.uninterest(req); break
      case ChunkRequest.Type.RECEIVED: this.received(req.id); break
      default: this.reply({ type: ChunkResponse.Type.ERROR, id: req.id, code: WireCode.BAD_REQUEST, message: 'unknown request type' })
    }
  }

  private want (req: ChunkRequest): void {
    const id = parseCid(req.cid, RAW_CODEC)
    if (id === undefined) {
      this.reply({ type: ChunkResponse.Type.ERROR, id: req.id, code: WireCode.BAD_REQUEST, message: 'cid is not a raw-codec CIDv1' })
      return
    }
    if (this.pending.size >= MAX_PENDING_PER_STREAM || this.pending.has(req.id)) {
      this.reply({ type: ChunkResponse.Type.ERROR, id: req.id, code: WireCode.BUSY, message: `more than ${MAX_PENDING_PER_STREAM} requests pending` })
      return
    }
    if (this.faults?.stall === true) return
    const holder = req.urgent ? undefined : this.recent.holderOf(id, this.remote)
    if (holder !== undefined) {
      void this.reply({ type: ChunkResponse.Type.ERROR, id: req.id, code: WireCode.DUPLICATE, message: 'just sent to another peer; fetch it there', holder })
      return
    }
    const sending = this.recent.start(id, this.remote)
    this.sends.set(req.id, sending)
    if (this.sends.size > MAX_PENDING_PER_STREAM + MAX_UNRECEIVED_PER_STREAM) this.sends.delete(this.sends.keys().next().value as number)
    const controller = new AbortController()
    this.pending.set(req.id, controller)
    const finished = (sent: boolean): void => {
      sending.done(sent)
      if (!sent && this.sends.get(req.id) === sending) this.sends.delete(req.id)
    }
    void this.serve(req.id, id, controller.signal).then(finished, () => { finished(false) }).finally(() => {
      if (this.pending.get(req.id) === controller) this.pending.delete(req.id)
    })
  }

  /** Serves one WANT; resolves true when the block was sent. */
  private async serve (reqId: number, id: ChunkId, signal: AbortSignal): Promise<boolean> {
    let release: (() => void) | undefined
    let found: Uint8Array | undefined
    let handedOver = false
    try {
      // A request that waits for a slot or the rate cap is acknowledged (with the load counting
      // it), so the requester can tell a busy server from a stalled one, whose silence gets it banned.
      const queued = this.limiter.slotWouldWait?.(this.remote) === true
      const acquiring = this.limiter.slot(signal, this.remote)
      if (queued) void this.reply({ type: ChunkResponse.Type.QUEUED, id: reqId })
      release = await acquiring
      if (signal.aborted) return false
      if (this.faults?.oversize !== undefined) {
        await this.framed.send(new Uint8Array(this.faults.oversize))
        return false
      }
      found = this.faults?.noChunks === true ? undefined : await this.source.readChunk(id, signal)
      const bytes = found === undefined && this.faults?.corrupt === true ? new Uint8Array(GARBAGE_BYTES) : found
      if (signal.aborted) return false
      if (bytes === undefined) {
        await this.reply({ type: ChunkResponse.Type.DONT_HAVE, id: reqId })
        return false
      }
      if (!queued && this.limiter.bandwidthWouldWait?.(bytes.byteLength) === true) void this.reply({ type: ChunkResponse.Type.QUEUED, id: reqId })
      await this.limiter.bandwidth(bytes.byteLength, signal)
      if (signal.aborted) return false
      const data = this.faults?.corrupt === true && found !== undefined ? flipMiddleBit(bytes) : bytes
      this.awaitReceipt(reqId, bytes)
      handedOver = true
      await this.framed.send(encodeBlock(reqId, this.limiter.load(), data))
      this.log.debug({ peer: this.remote, chunk: id, size: data.byteLength }, 'chunk sent')
      this.onSent?.(this.remote, data.byteLength, [...this.interests.keys()])
      return true
    } catch (err) {
      if (signal.aborted || !this.framed.isOpen) return false
      this.log.debug({ err, chunk: id }, 'serving a chunk failed')
      await this.reply({ type: ChunkResponse.Type.ERROR, id: reqId, code: WireCode.INTERNAL, message: 'could not read the chunk' }).catch(() => {})
      return false
    } finally {
      // Bytes read but never handed to the stream go straight back; handed-over ones wait for RECEIVED.
      if (!handedOver && found !== undefined) this.source.release?.(found)
      release?.()
    }
  }

  /** Keeps `bytes` until the requester says RECEIVED for `reqId` (bounded; see the constant). */
  private awaitReceipt (reqId: number, bytes: Uint8Array): void {
    if (this.source.release === undefined) return
    this.unreceived.set(reqId, bytes)
    if (this.unreceived.size > MAX_UNRECEIVED_PER_STREAM) this.unreceived.delete(this.unreceived.keys().next().value as number)
  }

  private received (reqId: number): void {
    this.sends.get(reqId)?.delivered()
    this.sends.delete(reqId)
    const bytes = this.unreceived.get(reqId)
    if (bytes === undefined) return
    this.unreceived.delete(reqId)
    this.source.release?.(bytes)
  }

  private async interest (req: ChunkRequest): Promise<void> {
    const version = parseCid(req.cid, DAG_CBOR_CODEC)
    if (version === undefined || this.interests.size >= MAX_INTERESTS_PER_STREAM) {
      await this.reply({ type: ChunkResponse.Type.ERROR, id: req.id, code: WireCode.BAD_REQUEST, message: 'bad version id or too many interests' })
      return
    }
    if (this.interests.has(version)) return
    const entry: { stop: () => void, batch: number[], timer?: NodeJS.Timeout } = { stop: () => {}, batch: [] }
    this.interests.set(version, entry)
    entry.stop = this.source.watch(version, indices => {
      entry.batch.push(...indices)
      entry.timer ??= setTimeout(() => this.flush(version), HAVE_UPDATE_INTERVAL_MS)
    })
    const asked = Date.now()
    const state = this.faults?.lie === true
      ? { complete: true as const }
      : this.faults?.noChunks === true ? undefined : await this.source.have(version)
    const versionBytes = req.cid
    if (state === undefined) await this.reply({ type: ChunkResponse.Type.HAVE, version: versionBytes, data: new Uint8Array(0) })
    else if (state.complete) await this.reply({ type: ChunkResponse.Type.HAVE, version: versionBytes, complete: true })
    else await this.reply({ type: ChunkResponse.Type.HAVE, version: versionBytes, data: state.bits })
    this.log.debug({ peer: this.remote, version, ms: Date.now() - asked, complete: state?.complete }, 'HAVE sent')
  }

  private flush (version: string): void {
    const entry = this.interests.get(version)
    if (entry === undefined) return
    entry.timer = undefined
    const indices = entry.batch.splice(0)
    if (indices.length > 0) void this.reply({ type: ChunkResponse.Type.HAVE_UPDATE, version: CID.parse(version).bytes, indices }).catch(() => {})
  }

  private uninterest (req: ChunkRequest): void {
    const version = parseCid(req.cid, DAG_CBOR_CODEC)
    const entry = version === undefined ? undefined : this.interests.get(version)
    if (entry === undefined || version === undefined) return
    entry.stop()
    clearTimeout(entry.timer)
    this.interests.delete(version)
  }

  private async reply (res: Reply): Promise<void> {
    const frame = ChunkResponse.encode({
      id: 0, data: new Uint8Array(0), version: new Uint8Array(0), indices: [], complete: false, code: '', message: '', holder: '',
      ...res,
      load: this.limiter.load()
    } as unknown as ChunkResponse)
    if (frame.byteLength > MAX_FRAME_BYTES) throw new Error('response over the frame cap')
    await this.framed.send(frame).catch(() => {})
  }

  private shutdown (): void {
    for (const c of this.pending.values()) c.abort()
    this.pending.clear()
    // Whatever was not RECEIVED may still be referenced below; the garbage collector takes it.
    this.unreceived.clear()
    // Blocks not confirmed before the stream closed may never have arrived: hold them for nobody.
    for (const record of this.sends.values()) record.cancelled()
    this.sends.clear()
    for (const e of this.interests.values()) { e.stop(); clearTimeout(e.timer) }
    this.interests.clear()
  }
}

interface Reply {
  type: ChunkResponse.Type
  id?: number
  data?: Uint8Array
  version?: Uint8Array
  indices?: number[]
  complete?: boolean
  code?: string
  message?: string
  holder?: string
}

function flipMiddleBit (bytes: Uint8Array): Uint8Array {
  const copy = new Uint8Array(bytes)
  copy[copy.length >> 1]! ^= 0x01
  return copy
}

function parseCid (bytes: Uint8Array, codec: number): string | undefined {
  try {
    const cid = CID.decode(bytes)
    return cid.version === 1 && cid.code === codec ? cid.toString() : undefined
  } catch {
    return undefined
  }
}
