import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import { mkdir, writeFile, cp } from 'node:fs/promises'
import { join } from 'node:path'
import { addPath } from '../../../src/ingest/ingest.js'
import type { ManifestFile } from '../../../src/core/manifest.js'
import type { Store } from '../../../src/store/store.js'
import { changeTensors, llamaTensors, writeSafetensors } from '../../../scripts/lib/synth.js'
import { memoryStore, tempDir } from '../../helpers/tmp.js'

/** Chunk ids covering [offset, offset + length) of a file. */
function chunksCovering (file: ManifestFile, offset: number, length: number): string[] {
  const out: string[] = []
  let at = 0
  for (const c of file.chunks) {
    if (at < offset + length && at + c.size > offset) out.push(c.id)
    at += c.size
  }
  return out
}

describe('dedup between versions', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let store: Store

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir())
    ;({ store } = await memoryStore(join(dir, 'home')))
  })
  afterEach(async () => {
    await store.close()
    await cleanup()
  })

  it('shares every unchanged tensor\'s chunks even when the header and all offsets changed', async () => {
    const v1 = llamaTensors(24 << 20, { hidden: 512, vocab: 4000 })
    const { tensors: v2, changed } = changeTensors(v1, 0.1, 'v2')
    await mkdir(join(dir, 'a'))
    await mkdir(join(dir, 'b'))
    await writeSafetensors(join(dir, 'a', 'model.safetensors'), v1)
    await writeSafetensors(join(dir, 'b', 'model.safetensors'), v2, { note: 'fine-tuned, header is longer now' })
    const a = await addPath(store, join(dir, 'a'), { name: 'm' })
    const b = await addPath(store, join(dir, 'b'), { name: 'm' })
    const fa = a.manifest.files[0]!
    const fb = b.manifest.files[0]!
    expect(fb.structure!.headerLength).not.toBe(fa.structure!.headerLength)
    const old = new Set(fa.chunks.map(c => c.id))
    let unchanged = 0
    for (const t of fb.structure!.tensors) {
      const ids = chunksCovering(fb, t.offset, t.length)
      const shared = ids.every(id => old.has(id))
      if (changed.has(t.name)) expect(ids.some(id => old.has(id))).toBe(false)
      else { expect(shared, t.name).toBe(true); unchanged++ }
    }
    expect(unchanged).toBe(fb.structure!.tensors.length - changed.size)
    expect(changed.size).toBeGreaterThan(0)
    // large tensors are split into pieces within the chunk cap
    expect(Math.max(...fb.chunks.map(c => c.size))).toBeLessThanOrEqual(4 << 20)
  })

  it('content-defined chunks survive an insertion in an opaque file', async () => {
    const data = randomBytes(12 << 20)
    await mkdir(join(dir, 'a'))
    await writeFile(join(dir, 'a', 'blob.bin'), data)
    await cp(join(dir, 'a'), join(dir, 'b'), { recursive: true })
    await writeFile(join(dir, 'b', 'blob.bin'), Buffer.concat([data.subarray(0, 1000), Buffer.from('inserted'), data.subarray(1000)]))
    const a = await addPath(store, join(dir, 'a'), { name: 'o' })
    const b = await addPath(store, join(dir, 'b'), { name: 'o' })
    const old = new Set(a.manifest.files[0]!.chunks.map(c => c.id))
    const chunks = b.manifest.files[0]!.chunks
    const shared = chunks.filter(c => old.has(c.id)).length
    expect(chunks.length).toBeGreaterThan(4)
    expect(shared).toBeGreaterThanOrEqual(chunks.length - 2)
  })
})
