/**
 * Test-only misbehaviour of a chunk server, as decorators of the two things a `ServerSession` is
 * given — its `ChunkSource` (what it serves) and its `UploadLimiter` (when) — so the serving path
 * holds no test code. Never set in production: the daemon applies them only when
 * `SHOAL_TEST_FAULTS` is set, and logs so. A faulty node needs no data: with `lie` it claims every
 * version, and `corrupt` and `oversize` answer WANTs of chunks it lacks.
 */
import { CODECS, encodeBlock } from '../../core/codec.js'
import { MAX_FRAME_BYTES } from './constants.js'
import type { BlockEncoder, ChunkSource, Span, UploadLimiter } from './server.js'

export interface ServerFaults {
  /** Sends corrupted bytes (the real ones with a bit flipped, or `GARBAGE_BYTES` of zeros when it has none). */
  corrupt?: boolean
  /** Claims to have every version complete, and answers DONT_HAVE to what it lacks. */
  lie?: boolean
  /** Never answers WANTs: no upload slot is ever granted, and none is said to be waited for. */
  stall?: boolean
  /** Sends each span as one frame of at least this many bytes (a proof of that size), over the requester's cap. */
  oversize?: number
  /** Claims to have nothing and serves no chunk (manifests only). */
  noChunks?: boolean
  /**
   * Sends every block a WANT asks for compressed in a bad form: `wrong` (the encoded form of other
   * bytes), `bomb` (declaring a decoded length of 1 GiB), `unoffered` (in a codec the WANT did not offer).
   */
  encoding?: 'wrong' | 'bomb' | 'unoffered'
}

/** @default 64 KiB — garbage sent by a corrupting node for a span it lacks */
export const GARBAGE_BYTES = 64 * 1024

/**
 * The faults named in `spec` (`corrupt,lie,stall,oversize,nochunks,encode-wrong,encode-bomb,encode-unoffered`);
 * `oversize` sends twice `MAX_FRAME_BYTES`. Unknown names are ignored.
 */
export function parseFaults (spec: string): ServerFaults {
  const set = new Set(spec.split(','))
  const encoding = (['wrong', 'bomb', 'unoffered'] as const).find(e => set.has(`encode-${e}`))
  return {
    ...(encoding !== undefined ? { encoding } : {}),
    ...(set.has('corrupt') ? { corrupt: true } : {}),
    ...(set.has('lie') ? { lie: true } : {}),
    ...(set.has('stall') ? { stall: true } : {}),
    ...(set.has('oversize') ? { oversize: MAX_FRAME_BYTES * 2 } : {}),
    ...(set.has('nochunks') ? { noChunks: true } : {})
  }
}

/** `source` misbehaving as `faults` say (`lie`, `noChunks`, `corrupt`, `oversize`). */
export function faultySource (source: ChunkSource, faults: ServerFaults): ChunkSource {
  return {
    readSpan: async (id, blockSize, first, count, signal) => {
      if (faults.oversize !== undefined) return { data: new Uint8Array(0), proofs: [new Uint8Array(faults.oversize)] }
      const span = faults.noChunks === true ? undefined : await source.readSpan(id, blockSize, first, count, signal)
      if (faults.corrupt !== true) return span
      if (span === undefined) return { data: new Uint8Array(GARBAGE_BYTES), proofs: [] }
      const flipped: Span = { data: flipMiddleBit(span.data), proofs: span.proofs }
      source.release?.(span.data)
      return flipped
    },
    have: async version => faults.lie === true ? { complete: true } : faults.noChunks === true ? undefined : await source.have(version),
    watch: (version, listener) => source.watch(version, listener),
    ...(source.release !== undefined ? { release: source.release.bind(source) } : {})
  }
}

/** `limiter` misbehaving as `faults` say (`stall`: a slot is never granted). */
export function faultyLimiter (limiter: UploadLimiter, faults: ServerFaults): UploadLimiter {
  if (faults.stall !== true) return limiter
  return {
    slot: async signal => await new Promise<() => void>((_resolve, reject) => {
      signal.addEventListener('abort', () => { reject(signal.reason) }, { once: true })
    }),
    slotWouldWait: () => false,
    bandwidth: async (bytes, signal) => { await limiter.bandwidth(bytes, signal) },
    load: () => limiter.load()
  }
}

/** `encoder` misbehaving as `faults` say (`encoding`): every block asked for in a codec goes in a bad encoded form. */
export function faultyEncoder (encoder: BlockEncoder, faults: ServerFaults): BlockEncoder {
  const how = faults.encoding
  if (how === undefined) return encoder
  return {
    encode: (block, codec) => {
      if (how === 'wrong') return encodeBlock(flipMiddleBit(block.bytes), codec)
      if (how === 'unoffered') {
        // Deflate, or (when deflate was offered) its bytes under the planes4 id: refused by codec before the body is read.
        const other = Uint8Array.from(encodeBlock(new Uint8Array(block.bytes.byteLength), 'deflate'))
        if (codec === 'deflate') other[0] = CODECS.planes4.id
        return other
      }
      const bomb = Uint8Array.from(encodeBlock(block.bytes, codec))
      new DataView(bomb.buffer).setUint32(2, 1024 * 1024 * 1024, true)
      return bomb
    }
  }
}

function flipMiddleBit (bytes: Uint8Array): Uint8Array {
  const copy = new Uint8Array(bytes)
  copy[copy.length >> 1]! ^= 0x01
  return copy
}
