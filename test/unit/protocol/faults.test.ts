/**
 * The chunk server's test-only faults, as decorators of its source, limiter and encoder. What a faulty
 * daemon does to its peers is tested end to end (`test/e2e/transfer.test.ts`, `test/e2e/stream.test.ts`);
 * this checks each decorator on its own, over an in-memory source.
 */
import { describe, expect, it } from 'vitest'
import type { ChunkId, VersionId } from '../../../src/core/digest.js'
import { decodeBlock } from '../../../src/core/codec.js'
import { DecodedTooLargeError, UnknownCodecError } from '../../../src/core/errors.js'
import { faultyEncoder, faultyLimiter, faultySource, GARBAGE_BYTES, MAX_FRAME_BYTES, parseFaults, type ChunkSource, type HaveUpdate, type UploadLimiter } from '../../../src/protocol/chunks/index.js'

const chunk = 'bafkreichunk' as ChunkId
const version = 'bafyreiversion' as VersionId

/** A source holding one span of 4 bytes of one chunk; it records what comes back to it. */
function source (): ChunkSource & { released: Uint8Array[] } {
  const released: Uint8Array[] = []
  return {
    released,
    readSpan: async id => id === chunk ? { data: Uint8Array.of(1, 2, 3, 4), proofs: [Uint8Array.of(9)] } : undefined,
    have: async v => v === version ? { complete: false, bits: Uint8Array.of(0x80), ranges: [] } : undefined,
    watch: (_v, listener: (u: HaveUpdate) => void) => { listener({ chunks: [0], ranges: [] }); return () => {} },
    release: bytes => { released.push(bytes) }
  }
}

const limiter: UploadLimiter = { slot: async () => () => {}, bandwidth: async () => {}, load: () => 3 }
const never = new AbortController().signal

describe('chunk server faults', () => {
  it('reads SHOAL_TEST_FAULTS: each name, an oversize frame past the cap, unknown names ignored', () => {
    expect(parseFaults('corrupt,lie,stall,oversize,nochunks,other')).toEqual({ corrupt: true, lie: true, stall: true, oversize: MAX_FRAME_BYTES * 2, noChunks: true })
    expect(parseFaults('lie')).toEqual({ lie: true })
    expect(parseFaults('encode-bomb')).toEqual({ encoding: 'bomb' })
  })

  it('encode-* sends every block in a bad encoded form: other bytes, a 1 GiB length, a codec not offered', () => {
    const honest = { encode: () => undefined }
    const block = { chunk, blockSize: 16384, index: 0, bytes: new Uint8Array(4096).fill(7) }
    const wrong = faultyEncoder(honest, { encoding: 'wrong' }).encode(block, 'deflate')!
    expect([...decodeBlock(wrong, { maxSize: 16384 })]).not.toEqual([...block.bytes])
    const bomb = faultyEncoder(honest, { encoding: 'bomb' }).encode(block, 'deflate')!
    expect(() => decodeBlock(bomb, { maxSize: 16384 })).toThrow(DecodedTooLargeError)
    const unoffered = faultyEncoder(honest, { encoding: 'unoffered' }).encode(block, 'deflate')!
    expect(() => decodeBlock(unoffered, { maxSize: 16384, accept: ['raw', 'deflate'] })).toThrow(UnknownCodecError)
    expect(faultyEncoder(honest, {})).toBe(honest)
  })

  it('lie claims every version complete but serves only what it has; nochunks claims and serves nothing', async () => {
    const liar = faultySource(source(), { lie: true })
    expect(await liar.have('bafyreiother' as VersionId)).toEqual({ complete: true })
    expect(await liar.readSpan('bafkreiother' as ChunkId, 16384, 0, 1, never)).toBeUndefined()
    const empty = faultySource(source(), { noChunks: true })
    expect(await empty.have(version)).toBeUndefined()
    expect(await empty.readSpan(chunk, 16384, 0, 1, never)).toBeUndefined()
  })

  it('corrupt flips one bit of the real bytes (handing those back at once), and sends garbage for what it lacks', async () => {
    const inner = source()
    const corrupt = faultySource(inner, { corrupt: true })
    const span = await corrupt.readSpan(chunk, 16384, 0, 1, never)
    expect([...span!.data]).toEqual([1, 2, 3 ^ 1, 4])
    expect(span!.proofs).toEqual([Uint8Array.of(9)])
    expect(inner.released.map(b => [...b])).toEqual([[1, 2, 3, 4]])
    const garbage = await corrupt.readSpan('bafkreiother' as ChunkId, 16384, 0, 1, never)
    expect(garbage?.data.byteLength).toBe(GARBAGE_BYTES)
  })

  it('oversize answers every span with a frame over the requester cap, without reading', async () => {
    const inner = source()
    const span = await faultySource(inner, { oversize: MAX_FRAME_BYTES * 2 }).readSpan('bafkreiother' as ChunkId, 16384, 0, 1, never)
    expect(span!.proofs[0]!.byteLength).toBeGreaterThan(MAX_FRAME_BYTES)
  })

  it('passes watches and releases through untouched', () => {
    const inner = source()
    const heard: HaveUpdate[] = []
    faultySource(inner, { lie: true }).watch(version, u => { heard.push(u) })
    expect(heard).toEqual([{ chunks: [0], ranges: [] }])
    const bytes = new Uint8Array(1)
    faultySource(inner, { lie: true }).release?.(bytes)
    expect(inner.released).toEqual([bytes])
  })

  it('stall never grants a slot nor says one is waited for, until the WANT is cancelled; without stall the limiter is untouched', async () => {
    const stalled = faultyLimiter(limiter, { stall: true })
    expect(stalled.slotWouldWait?.('peer')).toBe(false)
    expect(stalled.load()).toBe(3)
    const controller = new AbortController()
    let granted = false
    const slot = stalled.slot(controller.signal, 'peer').then(() => { granted = true })
    await new Promise(resolve => setImmediate(resolve))
    expect(granted).toBe(false)
    controller.abort(new Error('cancelled by the requester'))
    await expect(slot).rejects.toThrow('cancelled by the requester')
    expect(faultyLimiter(limiter, { lie: true })).toBe(limiter)
  })
})
