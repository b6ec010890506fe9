import { randomBytes } from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { encodeBlock, RAW_CODEC } from '../../../src/core/digest.js'
import { ManifestDecoder } from '../../../src/daemon/manifest-decoder.js'

/** A valid manifest (schema 2) of `chunks` chunks (4 MiB each, random roots), built straight in the dag-cbor data model. */
function bigManifest (chunks: number, perFile = 10_000): { bytes: Uint8Array, id: string } {
  const files = []
  for (let f = 0; f * perFile < chunks; f++) {
    const ids = Array.from({ length: Math.min(perFile, chunks - f * perFile) }, () => CID.create(1, RAW_CODEC, Digest.create(0x12, randomBytes(32))))
    const list = ids.map(id => [id, 4 * 1024 * 1024, randomBytes(32)])
    const size = list.length * 4 * 1024 * 1024
    files.push({ path: `f${String(f).padStart(4, '0')}.bin`, size, digest: CID.parse(encodeBlock(ids.map(id => [id, 4 * 1024 * 1024])).cid).toString(), format: 'other', chunks: list })
  }
  const totalSize = files.reduce((n, f) => n + f.size, 0)
  const { bytes, cid } = encodeBlock({ schema: 2, blockSize: 256 * 1024, name: 'org/big', created: 1, parent: null, files, metadata: {}, structure: { formats: ['other'], parameterCount: 0, dtypes: [], tensorCount: 0, totalSize } })
  return { bytes, id: cid }
}

/** Timer callbacks that ran while `work` was pending: none when it blocked the event loop. */
async function ticksDuring (work: () => Promise<unknown>): Promise<number> {
  let ticks = 0
  const timer = setInterval(() => { ticks++ }, 5)
  try {
    await work()
  } finally {
    clearInterval(timer)
  }
  return ticks
}

describe('ManifestDecoder', () => {
  const decoders: ManifestDecoder[] = []
  const decoder = (options: ConstructorParameters<typeof ManifestDecoder>[0] = {}): ManifestDecoder => {
    const d = new ManifestDecoder(options)
    decoders.push(d)
    return d
  }
  afterEach(async () => { for (const d of decoders.splice(0)) await d.close() })
  /** Large enough to take the worker a while and need more than a few MB of heap. */
  let large: { bytes: Uint8Array, id: string }
  beforeAll(() => { large = bigManifest(20_000) })

  it('decodes off the event loop exactly what decodeManifest gives, and the loop keeps running meanwhile', async () => {
    const { bytes, id } = large
    const inWorker = decoder({ minBytes: 0 })
    let result: Awaited<ReturnType<ManifestDecoder['decode']>> | undefined
    const ticks = await ticksDuring(async () => { result = await inWorker.decode(bytes, id, { maxChunks: 20_000, maxVersionBytes: 2 ** 50 }) })
    // The same decode on the event loop: not one timer runs until it is over.
    const inPlace = decoder({ minBytes: Infinity })
    let expected: typeof result
    const blocked = await ticksDuring(async () => { expected = await inPlace.decode(bytes, id, undefined) })
    expect(result).toEqual(expected)
    console.log(`manifest of 20,000 chunks (${bytes.byteLength} bytes): ${ticks} timer ticks during the worker decode, ${blocked} during the in-place one`)
    expect(blocked).toBe(0)
    expect(ticks).toBeGreaterThan(0)
  }, 60_000)

  it('gives back the typed errors of decodeManifest', async () => {
    const { bytes, id } = bigManifest(2_000)
    const d = decoder({ minBytes: 0 })
    await expect(d.decode(bytes, id, { maxChunks: 1_999, maxVersionBytes: 2 ** 50 })).rejects.toMatchObject({ name: 'TooLargeError', limit: 'chunks', message: 'manifest lists 2000 chunks, over the limit of 1999' })
    const other = bigManifest(10)
    await expect(d.decode(bytes, other.id, undefined)).rejects.toMatchObject({ name: 'MalformedDataError', message: `manifest bytes do not hash to version id ${other.id}` })
    await expect(d.decode(dagCbor.encode({ schema: 2 }), undefined, undefined)).rejects.toMatchObject({ name: 'MalformedDataError' })
  })

  it('a decode over its memory cap or its deadline fails as TooLargeError, and the next one works', async () => {
    const { bytes, id } = large
    const small = decoder({ minBytes: 0, maxOldMb: 8 })
    await expect(small.decode(bytes, id, undefined)).rejects.toMatchObject({ name: 'TooLargeError', limit: 'memory' })
    const slow = decoder({ minBytes: 0, timeoutMs: 1 })
    await expect(slow.decode(bytes, id, undefined)).rejects.toMatchObject({ name: 'TooLargeError', limit: 'time' })
    const ok = bigManifest(10)
    expect((await decoder({ minBytes: 0 }).decode(ok.bytes, ok.id, undefined)).files).toHaveLength(1)
  }, 60_000)

  it('stops waiting on its signal or on close, with AbortedError', async () => {
    const { bytes, id } = large
    const d = decoder({ minBytes: 0 })
    const controller = new AbortController()
    const pending = d.decode(bytes, id, undefined, controller.signal)
    controller.abort()
    await expect(pending).rejects.toMatchObject({ name: 'AbortedError' })
    const closing = d.decode(bytes, id, undefined)
    await d.close()
    await expect(closing).rejects.toMatchObject({ name: 'AbortedError' })
    await expect(d.decode(bytes, id, undefined)).rejects.toMatchObject({ name: 'AbortedError' })
  })
})
