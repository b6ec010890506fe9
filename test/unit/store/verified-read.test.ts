/**
 * Reading a version while it is pulled (`store/verified-read.ts`) against a real pull target:
 * only verified bytes, in order and exactly the range asked; a verified block of a chunk in
 * progress is given before the chunk is whole; a read waits for bytes not here (and asks the pull
 * for them first, then takes that back); when the pull ends without them it fails naming them.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { ChunkId } from '../../../src/core/digest.js'
import { AbortedError, UnavailableError } from '../../../src/core/errors.js'
import { blockSizeOf } from '../../../src/core/manifest.js'
import { blockCount } from '../../../src/core/tree.js'
import { addPath } from '../../../src/ingest/ingest.js'
import { PullTarget } from '../../../src/store/pull-target.js'
import type { ResolvedVersion, Store } from '../../../src/store/store.js'
import { readVerified, type PullView } from '../../../src/store/verified-read.js'
import { writeSafetensors } from '../../../scripts/lib/synth.js'
import { memoryStore, tempDir } from '../../helpers/tmp.js'

describe('readVerified', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let source: Store
  let dest: Store
  let v: ResolvedVersion
  let bytes: Buffer
  let fileIndex: number
  const targets: PullTarget[] = []

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir())
    ;({ store: source } = await memoryStore(join(dir, 'source')))
    ;({ store: dest } = await memoryStore(join(dir, 'dest')))
    await mkdir(join(dir, 'model'))
    await writeSafetensors(join(dir, 'model', 'model.safetensors'), [
      { name: 'a', dtype: 'BF16', shape: [512, 1024], seed: 'a' },
      { name: 'b', dtype: 'F32', shape: [100_000], seed: 'b' }
    ])
    v = await addPath(source, join(dir, 'model'), { name: 'reads' })
    bytes = await readFile(join(v.path, 'model.safetensors'))
    fileIndex = v.manifest.files.findIndex(f => f.path === 'model.safetensors')
  })

  afterEach(async () => {
    for (const t of targets.splice(0)) await t.close()
    await source.close().catch(() => {})
    await dest.close().catch(() => {})
    await cleanup()
  })

  const open = async (): Promise<PullTarget> => {
    const target = await PullTarget.open(dest, v.version, (await source.heads.manifest(v.version))!)
    targets.push(target)
    return target
  }

  /** Reads in the background; `got` grows as bytes are given. */
  function reader (view: PullView, start: number, end: number, signal?: AbortSignal): { got: Buffer[], done: Promise<Buffer> } {
    const got: Buffer[] = []
    const done = (async () => {
      for await (const part of readVerified(dest, v.manifest, fileIndex, start, end, { pull: view, ...(signal !== undefined ? { signal } : {}) })) got.push(Buffer.from(part))
      return Buffer.concat(got)
    })()
    done.catch(() => {})
    return { got, done }
  }

  async function until (what: string, probe: () => boolean): Promise<void> {
    const deadline = Date.now() + 10_000
    while (!probe()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
      await new Promise(resolve => setTimeout(resolve, 5))
    }
  }

  it('gives a chunk\'s verified blocks before it is whole, waits for the rest, and gives exactly the range; a wait asks the pull first', async () => {
    const target = await open()
    const file = v.manifest.files[fileIndex]!
    const bs = blockSizeOf(v.manifest)
    // The tensor piece of several blocks, and where it starts in the file.
    let offset = 0
    const ci = file.chunks.findIndex(c => { if (blockCount(c.size, bs) > 1) return true; offset += c.size; return false })
    const chunk = file.chunks[ci]!
    const wanted: ChunkId[][] = []
    let released = 0
    const view: PullView = { target, ended: new Promise(() => {}), want: ids => { wanted.push([...ids]); return () => { released++ } } }
    const start = offset + 100
    const end = offset + chunk.size - 100
    const r = reader(view, start, end)
    await until('the read to wait for the chunk', () => wanted.length === 1)
    expect(wanted[0]).toEqual([chunk.id])
    expect(r.got).toEqual([])
    const block = async (i: number): Promise<void> => {
      const span = (await source.readSpan(chunk.id, bs, i, 1))!
      expect(await target.putBlock(chunk.id, i, Uint8Array.from(span.data), span.proofs[0]!)).toBe(true)
    }
    // A later block first: nothing to give yet (the range starts in block 0).
    await block(1)
    await block(0)
    await until('the verified blocks to be given', () => r.got.length > 0)
    expect(target.isAssembling(chunk.id)).toBe(true)
    expect(Buffer.concat(r.got).equals(bytes.subarray(start, offset + 2 * bs))).toBe(true)
    for (let i = 2; i < blockCount(chunk.size, bs); i++) await block(i)
    expect((await r.done).equals(bytes.subarray(start, end))).toBe(true)
    expect(released).toBe(wanted.length)
  })

  it('fails naming the bytes that did not arrive when the pull ends without them', async () => {
    const target = await open()
    const first = v.manifest.files[fileIndex]!.chunks[0]!
    let fail: (err: Error) => void = () => {}
    const ended = new Promise<never>((_resolve, reject) => { fail = reject })
    ended.catch(() => {})
    const r = reader({ target, ended }, 0, 100)
    fail(new Error('no peer has the version'))
    await expect(r.done).rejects.toThrow(UnavailableError)
    await expect(r.done).rejects.toThrow(`bytes 0-99 of model.safetensors in reads did not arrive (first missing: chunk ${first.id}, bytes 0-${first.size - 1}); its pull ended: no peer has the version`)
  })

  it('ends with AbortedError when its reader goes away', async () => {
    const target = await open()
    const leave = new AbortController()
    const r = reader({ target, ended: new Promise(() => {}) }, 0, 100, leave.signal)
    leave.abort()
    await expect(r.done).rejects.toThrow(AbortedError)
  })
})
