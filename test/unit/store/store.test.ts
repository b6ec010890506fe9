import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createHash } from 'node:crypto'
import { chmod, mkdir, readFile, readdir, stat, writeFile, lstat, rm, symlink } from 'node:fs/promises'
import { join } from 'node:path'
import { addPath } from '../../../src/ingest/ingest.js'
import { collectGarbage } from '../../../src/store/gc.js'
import { exportVersion } from '../../../src/store/export.js'
import { verifyStore } from '../../../src/store/verify.js'
import type { Store } from '../../../src/store/store.js'
import type { Db } from '../../../src/store/index-db.js'
import { llamaTensors, writeSafetensors } from '../../../scripts/lib/synth.js'
import { memoryStore, tempDir } from '../../helpers/tmp.js'
import { internals } from '../../helpers/store-internals.js'

const sha = async (path: string): Promise<string> => createHash('sha256').update(await readFile(path)).digest('hex')

describe('store', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let store: Store
  let db: Db
  let model: string

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir())
    ;({ store, db } = await memoryStore(join(dir, 'home')))
    model = join(dir, 'model')
    await mkdir(model)
    await writeSafetensors(join(model, 'model.safetensors'), llamaTensors(6 << 20, { hidden: 256, vocab: 2000 }))
    await writeFile(join(model, 'config.json'), JSON.stringify({ architectures: ['LlamaForCausalLM'] }))
    await writeFile(join(model, 'shoal.json'), JSON.stringify({ description: 'tiny', task: 'text-generation', tags: { lang: 'en' } }))
  })

  afterEach(async () => {
    await store.close().catch(() => {})
    await cleanup()
  })

  it('adds a folder as a version whose snapshot is an ordinary read-only folder', async () => {
    const v = await addPath(store, model, { name: 'tiny', label: 'prod', metadata: { license: 'mit' } })
    expect(v.manifest.files.map(f => f.path)).toEqual(['config.json', 'model.safetensors', 'shoal.json'])
    expect(v.manifest.metadata).toEqual({ description: 'tiny', task: 'text-generation', tags: { lang: 'en' }, license: 'mit' })
    expect(v.manifest.structure.formats).toEqual(['other', 'safetensors'])
    expect(v.manifest.structure.parameterCount).toBeGreaterThan(1_000_000)
    for (const f of ['config.json', 'model.safetensors']) {
      expect(await sha(join(v.path, f))).toBe(await sha(join(model, f)))
      expect((await lstat(join(v.path, f))).isSymbolicLink()).toBe(true)
      expect((await stat(join(v.path, f))).mode & 0o222).toBe(0)
    }
    expect((await readFile(join(internals(store).layout.refs('tiny'), 'prod'), 'utf8')).trim()).toBe(v.version)
    expect((await store.resolve('tiny@prod')).version).toBe(v.version)
    expect((await store.resolve('tiny')).version).toBe(v.version)
    expect((await store.resolve(`tiny@${v.version.slice(0, 12)}`)).version).toBe(v.version)
    expect(await readdir(internals(store).layout.tmp)).toEqual([])
  })

  it('same content, same id: adding the same folder again returns that version, created unchanged', async () => {
    const a = await addPath(store, model, { name: 'tiny', pin: false })
    const blobs = (await readdir(internals(store).layout.blobs)).length
    const again = await addPath(store, model, { name: 'tiny', label: 'prod' })
    expect(again).toMatchObject({ version: a.version, existing: true, labels: ['prod'], pinned: true })
    expect(again.manifest.created).toBe(a.manifest.created)
    expect((await readdir(internals(store).layout.blobs)).length).toBe(blobs)
    expect((await store.versions('tiny')).map(v => v.version)).toEqual([a.version])
    // Other metadata, or another block size, is another version.
    expect((await addPath(store, model, { name: 'tiny', metadata: { description: 'other' } })).version).not.toBe(a.version)
    expect((await addPath(store, model, { name: 'tiny', blockSize: 64 * 1024 })).version).not.toBe(a.version)
  })

  it('stores each file once: an add of the same bytes with other metadata adds a version and no blob', async () => {
    const a = await addPath(store, model, { name: 'tiny' })
    const blobs = (await readdir(internals(store).layout.blobs)).length
    const b = await addPath(store, model, { name: 'tiny', metadata: { description: 'b' } })
    expect(b.version).not.toBe(a.version)
    expect(b.manifest.parent).toBe(a.version)
    expect(b.manifest.created).toBeGreaterThan(a.manifest.created)
    expect((await readdir(internals(store).layout.blobs)).length).toBe(blobs)
    expect((await store.versions('tiny')).map(v => v.version)).toEqual([a.version, b.version])
  })

  it('moves labels with compare-and-swap and keeps their history', async () => {
    const a = await addPath(store, model, { name: 'tiny', label: 'prod' })
    const b = await addPath(store, model, { name: 'tiny', metadata: { description: 'b' } })
    await expect(store.setLabel('tiny', 'prod', b.version, b.version)).rejects.toMatchObject({ name: 'ConflictError' })
    const record = await store.setLabel('tiny', 'prod', b.version, a.version)
    expect(record.history[0]?.version).toBe(a.version)
    await expect(store.setLabel('tiny', 'prod', 'bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy')).rejects.toMatchObject({ name: 'NotFoundError' })
  })

  it('gc removes versions neither pinned nor labelled and data nothing else uses; dry run changes nothing', async () => {
    const kept = await addPath(store, model, { name: 'tiny', label: 'prod', pin: false })
    await writeFile(join(model, 'extra.bin'), Buffer.alloc(100_000, 7))
    const doomed = await addPath(store, model, { name: 'tiny', pin: false })
    const pinned = await addPath(store, join(model, 'config.json'), { name: 'cfg' })
    const dry = await collectGarbage(store, { dryRun: true })
    expect(dry.versions.map(v => v.version)).toEqual([doomed.version])
    expect(dry.blobs).toHaveLength(1)
    expect((await store.versions('tiny'))).toHaveLength(2)
    const report = await collectGarbage(store)
    expect(report.versions.map(v => v.version)).toEqual([doomed.version])
    expect(report.bytes).toBe(100_000)
    expect((await store.versions('tiny')).map(v => v.version)).toEqual([kept.version])
    expect((await store.resolve(`cfg@${pinned.version}`)).missing).toEqual([])
    expect((await verifyStore(store)).problems).toEqual([])
    await expect(stat(internals(store).layout.snapshot('tiny', doomed.version))).rejects.toThrow()
  })

  it('verify re-hashes, quarantines corrupt blobs, marks the version damaged; re-add repairs', async () => {
    const v = await addPath(store, model, { name: 'tiny' })
    const file = v.manifest.files.find(f => f.path === 'model.safetensors')!
    const blob = internals(store).layout.blob(file.digest)
    await chmod(blob, 0o644)
    const bytes = await readFile(blob)
    const middle = bytes.length >> 1
    bytes[middle] = bytes[middle]! ^ 0xff
    await writeFile(blob, bytes)
    let at = 0
    const hit = file.chunks.find(c => (at += c.size) > middle)!

    const report = await verifyStore(store)
    expect(report.problems.map(p => p.kind)).toEqual(['chunk-mismatch'])
    expect(report.quarantined).toEqual([file.digest])
    // Reads trust what was verified at write time; once verify quarantined the blob, nothing is served from it.
    expect(await store.readChunk(hit.id)).toBeUndefined()
    expect(report.damaged).toEqual([`tiny@${v.version}`])
    expect(await readdir(internals(store).layout.quarantine)).toHaveLength(1)
    expect((await store.resolve(`tiny@${v.version}`)).missing).toEqual(['model.safetensors'])
    const out = join(dir, 'out')
    await expect(exportVersion(store, `tiny@${v.version}`, out)).rejects.toMatchObject({ name: 'NotFoundError' })

    await addPath(store, model, { name: 'tiny' })
    expect((await verifyStore(store)).problems).toEqual([])
    expect((await store.resolve(`tiny@${v.version}`)).missing).toEqual([])
    await exportVersion(store, `tiny@${v.version}`, out)
    expect(await sha(join(out, 'model.safetensors'))).toBe(await sha(join(model, 'model.safetensors')))
  })

  it('export writes byte-identical files and refuses to overwrite', async () => {
    const v = await addPath(store, model, { name: 'tiny' })
    const out = join(dir, 'out')
    await exportVersion(store, `tiny@${v.version}`, out)
    for (const f of ['config.json', 'model.safetensors', 'shoal.json']) expect(await sha(join(out, f))).toBe(await sha(join(model, f)))
    await expect(exportVersion(store, 'tiny', out)).rejects.toMatchObject({ name: 'ConflictError' })
    await exportVersion(store, 'tiny', out, { overwrite: true })
  })

  it('export re-checks every chunk it copies: a damaged one fails the export, named, with nothing left at the destination', async () => {
    const v = await addPath(store, model, { name: 'tiny' })
    const file = v.manifest.files.find(f => f.path === 'model.safetensors')!
    expect(file.chunks.length).toBeGreaterThan(2)
    const blob = internals(store).layout.blob(file.digest)
    await chmod(blob, 0o644)
    const bytes = await readFile(blob)
    // A byte of the last chunk: the chunks before it were read, checked and written first.
    const last = bytes.length - file.chunks[file.chunks.length - 1]!.size
    bytes[last + 1] = bytes[last + 1]! ^ 0xff
    await writeFile(blob, bytes)
    const out = join(dir, 'out')
    await expect(exportVersion(store, `tiny@${v.version}`, out)).rejects.toThrow(`stored bytes of model.safetensors (chunk at offset ${last}) are damaged; run shoal verify, then re-add or pull the version`)
    expect(await readdir(out)).toEqual([])
  })

  it('recovers after a crash: leftovers removed, missing snapshots rebuilt', async () => {
    const v = await addPath(store, model, { name: 'tiny', label: 'prod' })
    await store.close()
    await writeFile(join(internals(store).layout.tmp, 'blob-partial'), 'half')
    await writeFile(internals(store).layout.blob('bafyreiorphanorphanorphanorphanorphanorphanorphanorphanorph'), 'orphan')
    await mkdir(join(internals(store).layout.snapshots('tiny'), 'bafyreiunfinished'), { recursive: true })
    await rm(internals(store).layout.snapshot('tiny', v.version), { recursive: true })
    await writeFile(internals(store).layout.ref('tiny', 'prod'), 'stale\n')
    ;({ store } = await memoryStore(join(dir, 'home'), db))
    expect(await readdir(internals(store).layout.tmp)).toEqual([])
    expect((await readdir(internals(store).layout.snapshots('tiny')))).toEqual([v.version])
    expect((await readdir(internals(store).layout.blobs)).sort()).toEqual([...new Set(v.manifest.files.map(f => f.digest))].sort())
    expect((await readFile(internals(store).layout.ref('tiny', 'prod'), 'utf8')).trim()).toBe(v.version)
    expect((await verifyStore(store)).problems).toEqual([])
  })

  it('a failed add leaves nothing behind', async () => {
    await writeFile(join(model, 'broken.safetensors'), Buffer.from([0xff, 0, 0, 0, 0, 0, 0, 0, 0x7b]))
    await expect(addPath(store, model, { name: 'tiny' })).rejects.toMatchObject({ name: 'MalformedModelError' })
    await expect(store.resolve('tiny')).rejects.toMatchObject({ name: 'NotFoundError' })
    expect(await readdir(internals(store).layout.tmp)).toEqual([])
    expect(await readdir(internals(store).layout.blobs)).toEqual([])
  })

  it('refuses symlinks leaving the folder, before writing anything', async () => {
    await symlink('/etc/hostname', join(model, 'escape'))
    await expect(addPath(store, model, { name: 'tiny' })).rejects.toThrow(/outside/)
    expect(await readdir(internals(store).layout.blobs)).toEqual([])
  })
})
