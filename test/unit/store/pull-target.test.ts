import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { existsSync } from 'node:fs'
import { mkdir, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { ChunkId } from '../../../src/core/digest.js'
import { MAX_CHUNK_SIZE } from '../../../src/core/chunking.js'
import { addPath } from '../../../src/ingest/ingest.js'
import { collectGarbage } from '../../../src/store/gc.js'
import type { Db } from '../../../src/store/index-db.js'
import { PullTarget, pullingFiles } from '../../../src/store/pull-target.js'
import { chunkIdOf, encodeBlock, fileDigest } from '../../../src/core/digest.js'
import type { Manifest, ManifestFile } from '../../../src/core/manifest.js'
import { CID } from 'multiformats/cid'
import type { ResolvedVersion, Store } from '../../../src/store/store.js'
import { changeTensors, writeSafetensors, type SynthTensor } from '../../../scripts/lib/synth.js'
import { sameBytes } from '../../helpers/random.js'
import { memoryStore, tempDir } from '../../helpers/tmp.js'
import { internals } from '../../helpers/store-internals.js'

const t = (name: string, shape: number[], seed = name, dtype: SynthTensor['dtype'] = 'BF16'): SynthTensor => ({ name, dtype, shape, seed })

/** A small model: 12 distinct tensors plus two tensors with identical bytes (same seed). */
function tensors (): SynthTensor[] {
  const out = [t('embed', [512, 128]), t('twin.a', [256, 128], 'twin'), t('twin.b', [256, 128], 'twin')]
  for (let i = 0; i < 10; i++) out.push(t(`layer.${i}`, [128 + i * 16, 128]))
  out.push(t('norm', [128], 'norm', 'F32'))
  return out
}

async function writeModel (dir: string, list: SynthTensor[], config = '{"architectures":["LlamaForCausalLM"]}'): Promise<void> {
  await mkdir(dir, { recursive: true })
  await writeSafetensors(join(dir, 'model.safetensors'), list)
  await writeFile(join(dir, 'config.json'), config)
}

describe('PullTarget', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let source: Store
  let dest: Store
  let destDb: Db
  let v: ResolvedVersion
  let manifestBytes: Uint8Array
  const targets: PullTarget[] = []

  const open = async (store = dest): Promise<PullTarget> => {
    const target = await PullTarget.open(store, v.version, manifestBytes)
    targets.push(target)
    return target
  }

  const fromSource = async (id: ChunkId): Promise<Uint8Array> => {
    const bytes = await source.readChunk(id)
    if (bytes === undefined) throw new Error(`source lacks ${id}`)
    return bytes
  }

  const expectSnapshotIdentical = async (resolved: ResolvedVersion): Promise<void> => {
    expect(resolved.missing).toEqual([])
    for (const f of v.manifest.files) {
      expect(sameBytes(await readFile(join(resolved.path, f.path)), await readFile(join(v.path, f.path)))).toBe(true)
    }
  }

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir())
    ;({ store: source } = await memoryStore(join(dir, 'source')))
    ;({ store: dest, db: destDb } = await memoryStore(join(dir, 'dest')))
    await writeModel(join(dir, 'model'), tensors())
    v = await addPath(source, join(dir, 'model'), { name: 'tiny' })
    manifestBytes = (await source.heads.manifest(v.version))!
  })

  afterEach(async () => {
    for (const target of targets.splice(0)) await target.close()
    await source.close().catch(() => {})
    await dest.close().catch(() => {})
    await cleanup()
  })

  it('completes into a visible version whose snapshot files are byte-identical', async () => {
    const target = await open()
    const total = target.totalChunks
    expect(target.done).toBe(false)
    expect(await dest.hasVersion(v.version)).toBe(false)
    const announced = new Set<number>()
    target.on('have', indices => { for (const i of indices) announced.add(i) })
    const files: string[] = []
    target.on('file', path => files.push(path))
    for (const id of target.needed()) expect(await target.put(id, await fromSource(id))).toBe(true)
    expect(target.done).toBe(true)
    expect(announced.size).toBe(total)
    expect(target.bytesPresent).toBe(target.totalBytes)
    expect(files.sort()).toEqual(['config.json', 'model.safetensors'])
    const resolved = await target.completed()
    expect(resolved.version).toBe(v.version)
    expect(await dest.hasVersion(v.version)).toBe(true)
    await expectSnapshotIdentical(await dest.resolve(`tiny@${v.version}`))
    expect(await internals(dest).index.pulls.get(v.version)).toBeUndefined()
    expect(await internals(dest).index.partials.get(v.manifest.files[0]!.digest)).toBeUndefined()
    // Added there, pulled here: only the source's record says its origins are the operator's own.
    expect((await internals(source).index.versions.get(v.version))?.local).toBe(true)
    expect((await internals(dest).index.versions.get(v.version))?.local).toBeUndefined()
  })

  it('reads chunks to serve into pooled buffers, reused once handed back with releaseChunk', async () => {
    const ids = (await open()).needed()
    const [a, b] = [ids[0]!, ids[1]!]
    const first = await source.readChunk(a, { pooled: true })
    // A pool buffer (of the chunk's size class), and an ordinary one: served bytes never leave the main thread.
    expect(first!.buffer.byteLength).toBeGreaterThanOrEqual(first!.byteLength)
    expect(first!.buffer.byteLength).toBeLessThanOrEqual(MAX_CHUNK_SIZE)
    expect(first?.buffer).not.toBeInstanceOf(SharedArrayBuffer)
    expect(sameBytes(first, await fromSource(a))).toBe(true)
    const buffer = first!.buffer
    source.releaseChunk(first!)
    // A chunk of the same size class takes the same buffer.
    const second = await source.readChunk(b, { pooled: true })
    if (second!.buffer.byteLength === buffer.byteLength) expect(second?.buffer).toBe(buffer)
    expect(sameBytes(second, await fromSource(b))).toBe(true)
    source.releaseChunk(second!)
    const again = await source.readChunk(a, { pooled: true })
    expect(again?.buffer).toBe(buffer)
    source.releaseChunk(again!)
    const stillOut = await source.readChunk(a, { pooled: true })
    // Bytes that did not come from the pool are ignored: a plain read is never reused.
    const plain = await fromSource(a)
    source.releaseChunk(plain)
    const third = await source.readChunk(a, { pooled: true })
    expect(third?.buffer).not.toBe(plain.buffer)
    expect(third?.buffer).not.toBe(buffer) // `stillOut` holds it
    expect(stillOut?.buffer).toBe(buffer)
  })

  it('verifies bytes in shared memory (as received into pooled buffers) on the hash workers', async () => {
    const target = await open()
    const [first, second] = target.needed()
    const inShared = (bytes: Uint8Array): Uint8Array => {
      const view = new Uint8Array(new SharedArrayBuffer(bytes.byteLength + 8), 8, bytes.byteLength)
      view.set(bytes)
      return view
    }
    const bad = inShared(await fromSource(first!))
    bad[0]! ^= 0x01
    await expect(target.put(first!, [bad])).rejects.toMatchObject({ name: 'DigestMismatchError' })
    expect(await target.put(first!, [inShared(await fromSource(first!))])).toBe(true)
    expect(await target.put(second!, inShared(await fromSource(second!)))).toBe(true)
    for (const id of [first!, second!]) expect(sameBytes(await dest.readChunk(id), await fromSource(id))).toBe(true)
  })

  it('refuses bytes that do not hash to the chunk id, and writes nothing', async () => {
    const target = await open()
    const id = target.needed()[3]!
    const good = await fromSource(id)
    const bad = new Uint8Array(good)
    bad[bad.length >> 1]! ^= 0x01
    await expect(target.put(id, bad)).rejects.toMatchObject({ name: 'DigestMismatchError' })
    await expect(target.put(id, good.subarray(1))).rejects.toMatchObject({ name: 'DigestMismatchError' })
    expect(target.isMissing(id)).toBe(true)
    expect(target.bytesPresent).toBe(0)
    expect(target.bits.every(b => b === 0)).toBe(true)
    expect(await dest.readChunk(id)).toBeUndefined()
    await target.flush()
    expect(await internals(dest).index.chunks.get(id)).toBeUndefined()
    // Nothing reached a partial file: none exists yet (a file is created by its first write).
    for (const f of v.manifest.files) expect(existsSync(internals(dest).layout.partialBlob(f.digest))).toBe(false)
    expect(await target.put(id, good)).toBe(true)
  })

  it('fills every position of a chunk that occurs several times with one put', async () => {
    const target = await open()
    const repeated = target.needed().find(id => target.indicesOf(id).length > 1)
    expect(repeated).toBeDefined()
    const indices = target.indicesOf(repeated!)
    expect(indices.length).toBeGreaterThanOrEqual(2)
    const announced: number[][] = []
    target.on('have', i => announced.push(i))
    expect(await target.put(repeated!, await fromSource(repeated!))).toBe(true)
    expect(announced).toEqual([indices])
    for (const i of indices) expect((target.bits[i >> 3]! & (0x80 >> (i & 7))) !== 0).toBe(true)
    expect(target.isMissing(repeated!)).toBe(false)
    expect(target.bytesPresent).toBe(indices.length * target.sizeOf(repeated!))
    // A second put of it is not needed.
    expect(await target.put(repeated!, await fromSource(repeated!))).toBe(false)
    for (const id of target.needed()) await target.put(id, await fromSource(id))
    await expectSnapshotIdentical(await target.completed())
  })

  it('serves a chunk from the destination right after put, before it is flushed', async () => {
    const target = await open()
    const [id, other] = target.needed()
    const bytes = await fromSource(id!)
    await target.put(id!, bytes)
    expect(await internals(dest).index.chunks.get(id!)).toBeUndefined() // not indexed yet
    expect((await dest.heldChunks([id!])).has(id!)).toBe(true)
    expect(sameBytes(await dest.readChunk(id!), bytes)).toBe(true)
    expect(await dest.readChunk(other!)).toBeUndefined()
    await target.flush()
    expect(await internals(dest).index.chunks.get(id!)).toBeDefined()
    expect(sameBytes(await dest.readChunk(id!), bytes)).toBe(true)
  })

  it('serves a chunk while its file is renamed from partial to blob between the two opens', async () => {
    // The race an honest server hit under load: it looked for the blob (not there yet), the file
    // was renamed, then it looked for the partial (gone), and answered DONT_HAVE for a chunk it
    // had announced, five times at once, which got it banned as a liar.
    const target = await open()
    const [id] = target.needed()
    const bytes = await fromSource(id!)
    await target.put(id!, bytes)
    const digest = v.manifest.files.find(f => f.chunks.some(c => c.id === id))!.digest
    const [partial, blob] = [internals(dest).layout.partialBlob(digest), internals(dest).layout.blob(digest)]
    const read = internals(dest).reads.read.bind(internals(dest).reads)
    let renamed = false
    const spy = vi.spyOn(internals(dest).reads, 'read').mockImplementation(async (path, ...rest) => {
      if (path === blob && !renamed) {
        renamed = true
        const missing = read(path, ...rest)
        await missing.catch(() => {})
        await rename(partial, blob)
        return await missing
      }
      return await read(path, ...rest)
    })
    expect(sameBytes(await dest.readChunk(id!), bytes)).toBe(true)
    expect(renamed).toBe(true)
    spy.mockRestore()
  })

  it('resumes after a restart: chunks flushed before are kept, only the rest is needed', async () => {
    const first = await open()
    const needed = first.needed()
    const half = needed.slice(0, Math.floor(needed.length / 2))
    for (const id of half) await first.put(id, await fromSource(id))
    await first.flush()
    await first.close()
    await dest.close()
    ;({ store: dest } = await memoryStore(join(dir, 'dest'), destDb))
    const again = await open()
    expect(new Set(again.needed())).toEqual(new Set(needed.filter(id => !half.includes(id))))
    for (const id of half) expect(sameBytes(await dest.readChunk(id), await fromSource(id))).toBe(true)
    for (const id of again.needed()) await again.put(id, await fromSource(id))
    await expectSnapshotIdentical(await again.completed())
  })

  it('forgets chunks written but never flushed when the process dies', async () => {
    const first = await open()
    const needed = first.needed()
    const [flushed, unflushed] = [needed[0]!, needed[1]!]
    await first.put(flushed, await fromSource(flushed))
    await first.flush()
    // The group-commit timer must not fire: the process "dies" before it does.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] })
    try {
      await first.put(unflushed, await fromSource(unflushed))
      await dest.close()
    } finally {
      vi.useRealTimers()
    }
    ;({ store: dest } = await memoryStore(join(dir, 'dest'), destDb))
    const again = await open()
    expect(again.isMissing(flushed)).toBe(false)
    expect(again.isMissing(unflushed)).toBe(true)
  })

  it('completes only once every chunk is written, when the last chunk to arrive is not the last written', async () => {
    // One 4 MiB chunk at 8 positions (identical tensors) takes many writes; the small chunks put
    // meanwhile complete the set first, and their put finishes the pull.
    const list = [t('norm', [64], 'norm', 'F32'), ...Array.from({ length: 8 }, (_, i) => t(`same.${i}`, [1024, 2048], 'same'))]
    await writeModel(join(dir, 'big'), list)
    v = await addPath(source, join(dir, 'big'), { name: 'big' })
    manifestBytes = (await source.heads.manifest(v.version))!
    const target = await open()
    // Whenever the target says every chunk is present, every chunk has been announced (written).
    const announced = new Set<number>()
    target.on('have', indices => { for (const i of indices) announced.add(i) })
    let claimedEarly = 0
    let sawDoneBeforePresent = false
    const watch = setInterval(() => {
      if (target.allPresent && announced.size < target.totalChunks) claimedEarly++
      if (target.done && !target.allPresent) sawDoneBeforePresent = true
    }, 0)
    const sizes = target.needed().map(id => [id, target.sizeOf(id)] as const).sort((a, b) => b[1] - a[1])
    const [[big, bigSize], ...rest] = sizes as [readonly [ChunkId, number], ...Array<readonly [ChunkId, number]>]
    expect(bigSize).toBe(4 * 1024 * 1024)
    expect(target.indicesOf(big).length).toBe(8)
    const bigPut = target.put(big, await fromSource(big))
    await new Promise(resolve => setTimeout(resolve, 5))
    for (const [id] of rest) await target.put(id, await fromSource(id))
    expect(await bigPut).toBe(true)
    clearInterval(watch)
    await expectSnapshotIdentical(await target.completed())
    expect(claimedEarly).toBe(0)
    expect(target.allPresent).toBe(true)
    // The window this guards: nothing left to fetch while the 4 MiB chunk's writes went on.
    expect(sawDoneBeforePresent).toBe(true)
  })

  it('copyLocal takes chunks the destination has in another version, without any put from the network', async () => {
    // The destination has an older version; the pulled one changes a quarter of the tensors.
    await writeModel(join(dir, 'old'), tensors())
    const { tensors: changed } = changeTensors(tensors(), 0.25, 'v2')
    await writeModel(join(dir, 'new'), changed, '{"architectures":["LlamaForCausalLM"],"v":2}')
    const old = await addPath(dest, join(dir, 'old'), { name: 'tiny' })
    v = await addPath(source, join(dir, 'new'), { name: 'tiny' })
    manifestBytes = (await source.heads.manifest(v.version))!
    const target = await open()
    const before = target.needed()
    const local = new Set(old.manifest.files.flatMap(f => f.chunks.map(c => c.id)))
    const copied = await target.copyLocal()
    const after = target.needed()
    expect(copied).toBeGreaterThan(0)
    expect(new Set(after)).toEqual(new Set(before.filter(id => !local.has(id))))
    expect(after.length).toBeGreaterThan(0)
    expect(after.length).toBeLessThan(before.length)
    for (const id of after) await target.put(id, await fromSource(id))
    await expectSnapshotIdentical(await target.completed())
  })

  it('gc during a pull keeps the blobs the pull already has', async () => {
    // The destination holds an unpinned, unlabelled version sharing config.json with the pull.
    await writeModel(join(dir, 'other'), [t('x', [64, 64])])
    const other = await addPath(dest, join(dir, 'other'), { name: 'other', pin: false })
    const shared = v.manifest.files.find(f => f.path === 'config.json')!
    expect(other.manifest.files.some(f => f.digest === shared.digest)).toBe(true)
    const target = await open()
    const needed = target.needed()
    for (const id of needed.slice(0, 3)) await target.put(id, await fromSource(id))
    const report = await collectGarbage(dest)
    expect(report.versions.map(r => r.version)).toEqual([other.version])
    expect(report.blobs.map(b => b.digest)).not.toContain(shared.digest)
    expect((await stat(internals(dest).layout.blob(shared.digest))).isFile()).toBe(true)
    for (const id of needed.slice(3)) await target.put(id, await fromSource(id))
    await expectSnapshotIdentical(await target.completed())
  })

  it.runIf(existsSync('/proc/self/fd'))('closes every file handle it opened, even with concurrent puts', async () => {
    const handles = async (): Promise<number> => (await readdir('/proc/self/fd')).length
    const baseline = await handles()
    const target = await open()
    const needed = target.needed()
    const chunks = await Promise.all(needed.map(async id => [id, await fromSource(id)] as const))
    await Promise.all(chunks.map(async ([id, bytes]) => await target.put(id, bytes)))
    await target.completed()
    await target.close()
    // Serving reads keep a few handles open on purpose (ReadCache); those are not the target's.
    internals(source).reads.close()
    internals(dest).reads.close()
    await new Promise(resolve => setTimeout(resolve, 20))
    expect(await handles()).toBe(baseline)
  })

  it('refuses a pull that needs more space than is free, saying both, and writes nothing', async () => {
    const err = await PullTarget.open(dest, v.version, manifestBytes, { freeBytes: async () => 1000 }).then(() => undefined, (e: unknown) => e as Error)
    expect(err).toMatchObject({ name: 'DiskFullError', code: 'DISK_FULL' })
    const needed = v.manifest.files.reduce((n, f) => n + f.size, 0)
    expect(err?.message).toContain(`disk full for the pull of tiny@${v.version}: it needs`)
    expect(err?.message).toContain(`(${needed} bytes) more in ${internals(dest).layout.partial}, but only 1000 bytes is free`)
    expect(err?.message).toContain('shoal gc')
    expect(await internals(dest).index.pulls.get(v.version)).toBeUndefined()
    expect(await internals(dest).index.manifests.get(v.version)).toBeUndefined()
    expect(await readdir(internals(dest).layout.partial)).toEqual([])
    // Exactly enough is enough; files already stored count for nothing.
    const target = await PullTarget.open(dest, v.version, manifestBytes, { freeBytes: async () => needed })
    targets.push(target)
  })

  it('preallocates nothing: a partial file grows as chunks land', async () => {
    const target = await open()
    expect(await readdir(internals(dest).layout.partial)).toEqual([])
    const big = v.manifest.files.find(f => f.path === 'model.safetensors')!
    const first = big.chunks[0]!
    await target.put(first.id, await fromSource(first.id))
    await target.flush()
    const s = await stat(internals(dest).layout.partialBlob(big.digest))
    expect(s.size).toBeLessThan(big.size)
    expect(s.blocks * 512).toBeLessThan(big.size)
  })

  it('with one id listed at two sizes (a manifest that skipped validation), never makes a file whole with bytes missing', async () => {
    // X is 100 bytes. a.bin lists it as 100 bytes, b.bin as 200: whichever size put() checks, the
    // other position must not be filled with 100 bytes and counted as 200.
    const x = new Uint8Array(100).fill(7)
    const id = chunkIdOf(x)
    const sized: Record<string, number> = { 'a.bin': 100, 'b.bin': 200 }
    for (const order of [['a.bin', 'b.bin'], ['b.bin', 'a.bin']]) {
      const files = order.map(path => ({ path, size: sized[path]!, digest: fileDigest([{ id, size: sized[path]! }]), format: 'other', chunks: [{ id, size: sized[path]! }] }) as ManifestFile)
      const forged: Manifest = { schema: 2, blockSize: 256 * 1024, name: 'forged', created: 1, parent: null, files, metadata: {}, structure: { formats: ['other'], parameterCount: 0, dtypes: [], tensorCount: 0, totalSize: 300 } }
      const { bytes, cid } = encodeBlock({ ...forged, files: files.map(f => ({ ...f, chunks: f.chunks.map(c => [CID.parse(c.id), c.size]) })) })
      const target = await PullTarget.open(dest, cid, bytes, { manifest: forged })
      targets.push(target)
      await expect(target.put(id, x)).rejects.toMatchObject({ name: 'DigestMismatchError' })
      expect(target.bytesPresent).toBe(0)
      expect(target.allPresent).toBe(false)
      for (const f of files) expect(await internals(dest).index.blobs.get(f.digest)).toBeUndefined()
      expect(await dest.hasVersion(cid)).toBe(false)
    }
  })

  it('keeps the record of a resumed pull (when it started, the attempts that failed)', async () => {
    const first = await open()
    await first.close()
    const record = (await internals(dest).index.pulls.get(v.version))!
    await internals(dest).index.pulls.put(v.version, { ...record, attempts: 2 })
    await open()
    expect(await internals(dest).index.pulls.get(v.version)).toEqual({ ...record, attempts: 2 })
  })

  it('offers only the origins it is told to allow', async () => {
    const m = structuredClone(v.manifest)
    m.files = m.files.map(f => ({ ...f, origins: ['http://127.0.0.1:9/internal/' + f.path, 'https://models.example.com/tiny/' + f.path] }))
    const { bytes, cid } = encodeBlock({ ...m, files: m.files.map(f => ({ ...f, chunks: f.chunks.map(c => [CID.parse(c.id), c.size]) })) })
    const none = await PullTarget.open(dest, cid, bytes)
    targets.push(none)
    const id = none.needed()[0]!
    expect(none.originOf(id)).toBeUndefined()
    await none.close()
    const some = await PullTarget.open(dest, cid, bytes, { origins: url => url.startsWith('https://models.example.com/') })
    targets.push(some)
    expect(some.originOf(id)?.url).toMatch(/^https:\/\/models\.example\.com\/tiny\//)
  })

  it('discard removes the record, the partial files and their chunk locations', async () => {
    const target = await open()
    const needed = target.needed()
    for (const id of needed.slice(0, 4)) await target.put(id, await fromSource(id))
    await target.flush()
    expect(pullingFiles(dest).size).toBeGreaterThan(0)
    await target.close()
    expect(pullingFiles(dest).size).toBe(0)
    const partialFiles = await readdir(internals(dest).layout.partial)
    expect(partialFiles.length).toBeGreaterThan(0)
    const freed = await PullTarget.discard(dest, v.version)
    expect(freed.files).toBe(partialFiles.length)
    expect(await internals(dest).index.pulls.get(v.version)).toBeUndefined()
    expect(await internals(dest).index.manifests.get(v.version)).toBeUndefined()
    expect(await readdir(internals(dest).layout.partial)).toEqual([])
    for (const f of v.manifest.files) expect(await internals(dest).index.partials.get(f.digest)).toBeUndefined()
    for (const id of needed.slice(0, 4)) {
      expect(await internals(dest).index.chunks.get(id)).toBeUndefined()
      expect(await dest.readChunk(id)).toBeUndefined()
    }
    // Idempotent; and a new pull starts from nothing.
    await PullTarget.discard(dest, v.version)
    const again = await open()
    expect(new Set(again.needed())).toEqual(new Set(needed))
  })

  it('gc reclaims partial files no pull record names, and keeps those of recorded or open pulls', async () => {
    const target = await open()
    const needed = target.needed()
    for (const id of needed.slice(0, 4)) await target.put(id, await fromSource(id))
    await target.flush()
    // Open: kept. Closed but recorded (to be resumed): kept.
    expect((await collectGarbage(dest)).partials).toEqual([])
    await target.close()
    expect((await collectGarbage(dest)).partials).toEqual([])
    // The record gone (a cancel interrupted before its files went): reclaimed, with their locations.
    await internals(dest).index.pulls.del(v.version)
    const files = await readdir(internals(dest).layout.partial)
    await writeFile(join(internals(dest).layout.partial, 'bafyreiorphanwithoutanyrecordatall'), 'x')
    const dry = await collectGarbage(dest, { dryRun: true })
    expect(dry.partials.map(p => p.digest).sort()).toEqual([...files, 'bafyreiorphanwithoutanyrecordatall'].sort())
    expect(await readdir(internals(dest).layout.partial)).toHaveLength(files.length + 1)
    const report = await collectGarbage(dest)
    expect(report.partials).toHaveLength(files.length + 1)
    expect(report.bytes).toBeGreaterThan(0)
    expect(await readdir(internals(dest).layout.partial)).toEqual([])
    for (const id of needed.slice(0, 4)) expect(await internals(dest).index.chunks.get(id)).toBeUndefined()
  })
})

