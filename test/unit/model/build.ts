/** Byte builders for hand-made model headers, and assertions shared by the model reader tests. */
import { expect } from 'vitest'
import type { ByteSource } from '../../../src/model/types.js'
import { concat, utf8 } from '../../../scripts/lib/bytes.js'

export { concat, joinBytes, pb, utf8 } from '../../../scripts/lib/bytes.js'

export function u32 (n: number): Uint8Array {
  const b = new Uint8Array(4)
  new DataView(b.buffer).setUint32(0, n, true)
  return b
}

export function u64 (n: number | bigint): Uint8Array {
  const b = new Uint8Array(8)
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true)
  return b
}

/** A safetensors file: the header (object, or raw text/bytes as given), then `dataLength` zero bytes. */
export function safetensors (header: unknown, dataLength = 0): Uint8Array {
  const h = header instanceof Uint8Array ? header : utf8(typeof header === 'string' ? header : JSON.stringify(header))
  return concat(u64(h.byteLength), h, new Uint8Array(dataLength))
}

/** GGUF pieces. */
export const gguf = {
  str: (s: string): Uint8Array => concat(u64(utf8(s).byteLength), utf8(s)),
  header: (tensorCount: number | bigint, kvCount: number | bigint, version = 3): Uint8Array =>
    concat(utf8('GGUF'), u32(version), u64(tensorCount), u64(kvCount)),
  kvString: (key: string, value: string): Uint8Array => concat(gguf.str(key), u32(8), gguf.str(value)),
  kvU32: (key: string, value: number): Uint8Array => concat(gguf.str(key), u32(4), u32(value)),
  tensor: (name: string, dims: Array<number | bigint>, type: number, offset: number | bigint): Uint8Array =>
    concat(gguf.str(name), u32(dims.length), ...dims.map(d => u64(d)), u32(type), u64(offset)),
  /** Pads `bytes` with zeros to a multiple of `alignment`. */
  align: (bytes: Uint8Array, alignment = 32): Uint8Array =>
    concat(bytes, new Uint8Array((alignment - bytes.byteLength % alignment) % alignment))
}


/** Wraps a source and counts the bytes read through it. */
export function counting (src: ByteSource): ByteSource & { bytesRead: number, reads: number } {
  const wrapped = {
    size: src.size,
    bytesRead: 0,
    reads: 0,
    async read (offset: number, length: number) {
      wrapped.bytesRead += length
      wrapped.reads++
      return await src.read(offset, length)
    }
  }
  return wrapped
}

/** Asserts a `MalformedModelError` whose message matches every pattern (so it says what is wrong). */
export async function expectMalformed (p: Promise<unknown>, ...patterns: RegExp[]): Promise<Error> {
  const err = await p.then(() => undefined, (e: unknown) => e)
  expect(err, 'expected the reader to reject').toBeInstanceOf(Error)
  const e = err as Error
  expect(e.name, e.message).toBe('MalformedModelError')
  for (const re of patterns) expect(e.message).toMatch(re)
  return e
}

/** Most bytes a reader may ask for in one read from a guarded source (`guardedSource`). */
export const MAX_ONE_READ = 64 * 1024 * 1024

/**
 * A source of `size` bytes (default: `head`'s length) that holds `head` and zeros after it without
 * allocating them, and that fails with a plain `Error` (not a typed one, so a fuzz property
 * reports it) when a reader asks for more than `MAX_ONE_READ` bytes at once: a reader whose memory
 * follows a declared length instead of its own limits is caught even for files of terabytes.
 */
export function guardedSource (head: Uint8Array, size = head.byteLength): ByteSource {
  return {
    size,
    async read (offset, length) {
      if (length > MAX_ONE_READ) throw new Error(`read of ${length} bytes at once (over ${MAX_ONE_READ})`)
      if (!Number.isSafeInteger(offset) || offset < 0 || length < 0 || offset + length > size) throw new Error(`read of ${length} bytes at ${offset} is outside the ${size}-byte source (the reader did not check)`)
      const out = new Uint8Array(length)
      if (offset < head.byteLength) out.set(head.subarray(offset, Math.min(head.byteLength, offset + length)))
      return out
    }
  }
}
