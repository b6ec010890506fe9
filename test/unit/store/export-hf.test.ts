/**
 * `export --hf` writes a Hugging Face hub cache entry (blobs, snapshot links, refs) whose files are
 * byte-identical to the version's, and `import-hf`'s listing of that cache finds the snapshot,
 * whose add gives back the same version (same content, same id): the round trip is lossless.
 */
import { lstat, mkdir, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { listHfCache } from '../../../src/cli/hf-cache.js'
import { addPath } from '../../../src/ingest/ingest.js'
import { exportVersion, hfRevision } from '../../../src/store/export.js'
import type { Store } from '../../../src/store/store.js'
import { memoryStore, tempDir } from '../../helpers/tmp.js'

describe('export to a Hugging Face hub cache', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let store: Store
  let model: string

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('shoal-export-hf-'))
    ;({ store } = await memoryStore(join(dir, 'home')))
    model = join(dir, 'model')
    await mkdir(join(model, 'sub'), { recursive: true })
    await writeFile(join(model, 'config.json'), '{"architectures":["LlamaForCausalLM"],"model_type":"llama"}')
    await writeFile(join(model, 'weights.bin'), Buffer.alloc(300_000, 3))
    // The same bytes twice: one blob, two links.
    await writeFile(join(model, 'sub', 'copy.bin'), Buffer.alloc(300_000, 3))
  })
  afterEach(async () => {
    await store.close()
    await cleanup()
  })

  it('writes blobs once, snapshot links to them, refs/main and a ref per label; the files are identical', async () => {
    const v = await addPath(store, model, { name: 'org/tiny', label: 'prod' })
    const hub = join(dir, 'hub')
    const out = await exportVersion(store, 'org/tiny@prod', hub, { layout: 'hf' })
    const repo = join(hub, 'models--org--tiny')
    const revision = hfRevision(v.version)
    expect(revision).toMatch(/^[0-9a-f]{40}$/)
    expect(out.dest).toBe(join(repo, 'snapshots', revision))
    expect((await readdir(join(repo, 'refs'))).sort()).toEqual(['main', 'prod'])
    expect(await readFile(join(repo, 'refs', 'main'), 'utf8')).toBe(revision)
    expect(await readdir(join(repo, 'blobs'))).toHaveLength(2)
    for (const path of ['config.json', 'weights.bin', 'sub/copy.bin']) {
      const link = join(out.dest, path)
      expect((await lstat(link)).isSymbolicLink(), path).toBe(true)
      expect((await readlink(link)).startsWith('../'), path).toBe(true)
      expect(await readFile(link)).toEqual(await readFile(join(model, path)))
    }
    // Again: nothing to write, nothing refused.
    await exportVersion(store, 'org/tiny@prod', hub, { layout: 'hf' })

    // import-hf's listing finds it, labelled by its refs; adding it gives the same version back.
    const listing = await listHfCache(hub)
    expect(listing).toEqual({ snapshots: [{ name: 'org/tiny', revision, path: out.dest, labels: ['main', 'prod'] }], skipped: [] })
    const again = await addPath(store, out.dest, { name: 'org/tiny' })
    expect(again).toMatchObject({ version: v.version, existing: true })
  })

  it('refuses to replace a snapshot file that is not this version\'s unless overwrite', async () => {
    await addPath(store, model, { name: 'tiny' })
    const hub = join(dir, 'hub')
    const out = await exportVersion(store, 'tiny', hub, { layout: 'hf' })
    await rm(join(out.dest, 'weights.bin'))
    await symlink('/etc/hostname', join(out.dest, 'weights.bin'))
    await expect(exportVersion(store, 'tiny', hub, { layout: 'hf' })).rejects.toMatchObject({ code: 'CONFLICT', message: `${join(out.dest, 'weights.bin')} already exists and is not this version's file; remove it or pass --overwrite` })
    await exportVersion(store, 'tiny', hub, { layout: 'hf', overwrite: true })
    expect(await readFile(join(out.dest, 'weights.bin'))).toEqual(await readFile(join(model, 'weights.bin')))
  })

  it('lists a cache skipping what is not a model snapshot, saying why', async () => {
    const hub = join(dir, 'hub2')
    await mkdir(join(hub, 'models--org--ok', 'snapshots', 'a'.repeat(40)), { recursive: true })
    await mkdir(join(hub, 'models--org--ok', 'refs'), { recursive: true })
    await writeFile(join(hub, 'models--org--ok', 'refs', 'main'), 'a'.repeat(40))
    await writeFile(join(hub, 'models--org--ok', 'refs', 'bad'), 'not a commit')
    await mkdir(join(hub, 'models--bad..name', 'snapshots'), { recursive: true })
    await mkdir(join(hub, 'models--org--empty'), { recursive: true })
    await mkdir(join(hub, 'datasets--org--data'), { recursive: true })
    const listing = await listHfCache(hub)
    expect(listing.snapshots).toEqual([{ name: 'org/ok', revision: 'a'.repeat(40), path: join(hub, 'models--org--ok', 'snapshots', 'a'.repeat(40)), labels: ['main'] }])
    expect(listing.skipped.map(s => s.what).sort()).toEqual(['models--bad..name', 'org/empty', 'org/ok ref bad'])
    expect(listing.skipped.find(s => s.what === 'org/ok ref bad')?.why).toBe('not a ref file holding a commit id')
    await expect(listHfCache(join(dir, 'nope'))).rejects.toMatchObject({ message: expect.stringMatching(/^cannot read the Hugging Face cache .*nope: ENOENT/) })
  })
})
