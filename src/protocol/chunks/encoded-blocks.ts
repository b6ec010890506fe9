/**
 * The serving side's encoded blocks: a block is encoded once and the encoded form sent to every
 * peer that asks for it in that codec, so compression CPU does not grow with the number of pullers.
 * A puller keeps the encoded blocks it received and verified (`keep`), and passes them on as they
 * came, without encoding them again; a block the store keeps encoded (a cold chunk) goes in the
 * form it is stored in.
 *
 * Bounded: at most `maxBytes` of encoded blocks (least recently used first out), and at most
 * `MAX_NO_GAIN_CHUNKS` chunks remembered as not worth encoding in a codec (a chunk whose block
 * did not shrink by `MIN_SAVING` is sent raw from then on: random bytes, quantized weights).
 */
import { CODECS, CODEC_HEADER_BYTES, MIN_SAVING, codecNameOf, encodeBlock, type CodecName } from '../../core/codec.js'
import type { BlockEncoder, OutgoingBlock } from './server.js'

/** @default 4096 — chunks remembered as not worth encoding in a codec */
export const MAX_NO_GAIN_CHUNKS = 4096

/** Counters of what the encoder did, for metrics. */
export interface EncoderStats {
  /** Blocks encoded here (each encoding costs CPU once). */
  encoded: number
  /** Blocks sent from the cache (encoded before, or kept from a peer). */
  hits: number
  /** Blocks sent in the encoded form the store keeps them in (cold chunks), neither encoded nor cached. */
  stored: number
  /** Blocks sent raw because their codec did not pay. */
  raw: number
  /** Milliseconds spent encoding. */
  encodeMs: number
}

export class EncodedBlocks implements BlockEncoder {
  private readonly blocks = new Map<string, Uint8Array>()
  private readonly noGain = new Set<string>()
  private bytes = 0
  readonly stats: EncoderStats = { encoded: 0, hits: 0, stored: 0, raw: 0, encodeMs: 0 }

  /** `maxBytes`: encoded blocks kept at most (0: none kept, every send encodes). */
  constructor (private readonly maxBytes: number, private readonly clock: () => number = () => performance.now()) {}

  /** Bytes of encoded blocks held now. */
  get heldBytes (): number {
    return this.bytes
  }

  encode (block: OutgoingBlock, codec: CodecName, stored?: Uint8Array): Uint8Array | undefined {
    if (codec === 'raw') return undefined
    // Kept encoded on disk in this very codec, and it pays: sent as it is (the receiver decodes
    // and verifies it like any encoded block).
    if (stored !== undefined && stored[0] === CODECS[codec].id && pays(stored, block.bytes.byteLength)) {
      this.stats.stored++
      return stored
    }
    const key = keyOf(block, codec)
    const cached = this.blocks.get(key)
    if (cached !== undefined) {
      this.blocks.delete(key)
      this.blocks.set(key, cached)
      this.stats.hits++
      return cached
    }
    const chunkKey = `${block.chunk}/${codec}`
    if (this.noGain.has(chunkKey)) { this.stats.raw++; return undefined }
    const started = this.clock()
    const encoded = encodeBlock(block.bytes, codec)
    this.stats.encodeMs += this.clock() - started
    this.stats.encoded++
    if (encoded[0] !== CODECS[codec].id || !pays(encoded, block.bytes.byteLength)) {
      this.noGain.add(chunkKey)
      if (this.noGain.size > MAX_NO_GAIN_CHUNKS) this.noGain.delete(this.noGain.values().next().value as string)
      this.stats.raw++
      return undefined
    }
    this.put(key, encoded)
    return encoded
  }

  /**
   * Keeps the encoded form a block came in, once the block it decodes to was verified, so it can be
   * passed on as it came. `encoded` is copied (the caller's buffer may be reused).
   */
  keep (block: Omit<OutgoingBlock, 'bytes'>, encoded: Uint8Array | readonly Uint8Array[]): void {
    const parts = encoded instanceof Uint8Array ? [encoded] : encoded
    const first = parts[0]
    if (first === undefined || first.byteLength === 0) return
    const codec = codecNameOf(first[0]!)
    if (codec === undefined || codec === 'raw') return
    const key = keyOf(block, codec)
    if (this.blocks.has(key)) return
    const size = parts.reduce((n, p) => n + p.byteLength, 0)
    if (size > this.maxBytes) return
    const copy = new Uint8Array(size)
    let at = 0
    for (const p of parts) { copy.set(p, at); at += p.byteLength }
    this.put(key, copy)
  }

  private put (key: string, encoded: Uint8Array): void {
    if (encoded.byteLength > this.maxBytes) return
    this.blocks.set(key, encoded)
    this.bytes += encoded.byteLength
    while (this.bytes > this.maxBytes) {
      const [oldest, bytes] = this.blocks.entries().next().value as [string, Uint8Array]
      this.blocks.delete(oldest)
      this.bytes -= bytes.byteLength
    }
  }
}

/** Whether an encoded block is smaller than its `rawBytes` by at least `MIN_SAVING`. */
function pays (encoded: Uint8Array, rawBytes: number): boolean {
  return encoded.byteLength - CODEC_HEADER_BYTES <= rawBytes * (1 - MIN_SAVING)
}

function keyOf (block: Omit<OutgoingBlock, 'bytes'>, codec: CodecName): string {
  return `${block.chunk}/${block.blockSize}/${block.index}/${codec}`
}
