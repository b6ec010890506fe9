/**
 * `addPath` against a store over real files: a refused add changes nothing, and everything that
 * can be checked without the data is checked before any data is read; a file swapped for a symlink
 * to a secret while the add is copying the files before it is refused, and the secret is stored
 * nowhere.
 */
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readdir, readFile, mkdir, symlink, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { addPath, type AddOptions } from '../../../src/ingest/ingest.js'
import { MAX_METADATA_FILE_BYTES } from '../../../src/core/metadata.js'
import type { Store } from '../../../src/store/store.js'
import { memoryStore, tempDir } from '../../helpers/tmp.js'
import { concat, gguf, pb, safetensors } from '../model/build.js'

async function refusal (p: Promise<unknown>): Promise<Error> {
  const err = await p.then(() => undefined, (e: unknown) => e as Error)
  expect(err, 'expected the add to be refused').toBeInstanceOf(Error)
  return err as Error
}

/** A safetensors header text of `n` zero-length tensors named `<prefix><i>`. */
function tinyTensors (n: number, prefix: string): string {
  const parts: string[] = []
  for (let i = 0; i < n; i++) parts.push(`"${prefix}${i}":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}`)
  return `{${parts.join(',')}}`
}

describe('addPath refuses early and changes nothing', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let store: Store
  let model: string

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('shoal-add-'))
    ;({ store } = await memoryStore(join(dir, 'home')))
    model = join(dir, 'model')
    await mkdir(model)
    await writeFile(join(model, 'a.bin'), randomBytes(3 << 20))
    await writeFile(join(model, 'b.bin'), randomBytes(1 << 20))
  })
  afterEach(async () => {
    await store.close()
    await cleanup()
  })

  const unchanged = async (): Promise<void> => {
    expect(await store.totals()).toEqual({ models: 0, versions: 0, blobs: 0, bytes: 0 })
    expect(await readdir(join(dir, 'home', 'blobs'))).toEqual([])
  }

  it.each<[string, Partial<AddOptions>, RegExp]>([
    ['a bad model name', { name: '../x' }, /^invalid model name "\.\.\/x"/],
    ['a bad label', { label: '../x' }, /^invalid label "\.\.\/x"/],
    ['a label with a bidi control', { label: 'pr\u202eod' }, /^invalid label "pr\\u202eod": it contains U\+202E RIGHT-TO-LEFT OVERRIDE/],
    ['an origin that is not http', { origin: 'file:///etc/' }, /^origin file:\/\/\/etc\/ must be an http or https URL/],
    ['bad metadata options', { metadata: { tags: { k: 'v\u200b' } } }, /^metadata options is invalid at tags\.k: contains U\+200B/]
  ])('%s, before reading any file', async (_, options, message) => {
    const err = await refusal(addPath(store, model, { name: 'm', ...options }))
    expect(err.name).toBe('InvalidInputError')
    expect(err.message).toMatch(message)
    await unchanged()
  })

  it('a --meta file over MAX_METADATA_FILE_BYTES, before the walk', async () => {
    const meta = join(dir, 'meta.json')
    await writeFile(meta, `${' '.repeat(MAX_METADATA_FILE_BYTES)}{}`)
    const err = await refusal(addPath(store, join(dir, 'no-such-folder'), { name: 'm', metaFile: meta }))
    expect(err.message).toBe(`${meta} is ${MAX_METADATA_FILE_BYTES + 2} bytes, over the limit of ${MAX_METADATA_FILE_BYTES} bytes for a metadata file`)
    await unchanged()
  })

  it('a --meta FIFO, without waiting for a writer', async () => {
    const fifo = join(dir, 'meta.fifo')
    execFileSync('mkfifo', [fifo])
    const err = await refusal(addPath(store, model, { name: 'm', metaFile: fifo }))
    expect(err.message).toBe(`metadata file ${fifo} is not a regular file`)
    await unchanged()
  }, 10_000)

  it('a shoal.json over MAX_METADATA_FILE_BYTES in the folder', async () => {
    await writeFile(join(model, 'shoal.json'), `${' '.repeat(MAX_METADATA_FILE_BYTES)}{}`)
    const err = await refusal(addPath(store, model, { name: 'm' }))
    expect(err.message).toMatch(/^shoal\.json in the model folder is \d+ bytes, over the limit of 1048576 bytes for a metadata file/)
    await unchanged()
  })

  it('more tensors across files than one version may hold, before copying any', async () => {
    // Two shards of 140k tensors each: each file is within the reader's limits, together they are not.
    await writeFile(join(model, 'model-00001.safetensors'), safetensors(tinyTensors(140_000, 'a.')))
    await writeFile(join(model, 'model-00002.safetensors'), safetensors(tinyTensors(140_000, 'b.')))
    const err = await refusal(addPath(store, model, { name: 'm' }))
    expect(err.message).toBe("the model's files declare more than 262144 tensors in all (model-00002.safetensors brings them to 280000), over the limit of 262144 per version; nothing was added")
    await unchanged()
  }, 60_000)

  it('a manifest that could not be stored, before copying any data', async () => {
    // Three files of 12 MiB of embedded metadata each (values of 60 KB, as many as a manifest
    // record holds one by one): readable one by one, too much for one manifest.
    const notes = Object.fromEntries(Array.from({ length: 210 }, (_, i) => [`notes${i}`, 'm'.repeat(60_000)]))
    for (const i of [1, 2, 3]) await writeFile(join(model, `part-${i}.safetensors`), safetensors({ __metadata__: notes }))
    const err = await refusal(addPath(store, model, { name: 'm' }))
    expect(err.message).toMatch(/^the manifest of this model would take more than 33554432 bytes \(the limit\) with part-3\.safetensors: too many files, tensors or embedded metadata for one version; nothing was added$/)
    await unchanged()
  }, 60_000)

  it('a model whose structure a manifest could not hold, naming the file, before copying any data', async () => {
    // A producer name over the manifest record's 256 characters.
    await writeFile(join(model, 'model.onnx'), concat(pb.int(1, 8), pb.str(2, 'p'.repeat(300)), pb.msg(7, pb.str(2, 'g'))))
    const err = await refusal(addPath(store, model, { name: 'm' }))
    expect(err.name).toBe('MalformedModelError')
    expect(err.message).toMatch(/^model\.onnx: graph\.producer does not fit a version's manifest \(Too big: expected string to have <=256 characters\) — the file looks damaged or incomplete; nothing was added$/)
    await unchanged()
  })

  it('a model file without tensors whose structure chunks could not be listed, before copying any data', async () => {
    // A sparse 480 GiB GGUF with no tensors is cut by content in chunks of at most 1 MiB: too
    // many chunk records for one manifest (in 4 MiB steps they would have fitted).
    const path = join(model, 'huge.gguf')
    await writeFile(path, gguf.header(0, 0))
    await truncate(path, 480 * 2 ** 30)
    const err = await refusal(addPath(store, model, { name: 'm' }))
    expect(err.message).toMatch(/^the manifest of this model would take more than 33554432 bytes \(the limit\) with huge\.gguf: /)
    await unchanged()
  })
})

describe('addPath and a file swapped during the add', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let store: Store

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('shoal-add-swap-'))
    ;({ store } = await memoryStore(join(dir, 'home')))
  })
  afterEach(async () => {
    await store.close()
    await cleanup()
  })

  it('refuses b.bin swapped for a symlink to a secret while a.bin is being copied; the secret is stored nowhere', async () => {
    const secret = `secret ${randomBytes(16).toString('hex')}\n`
    await writeFile(join(dir, 'secret.txt'), secret)
    const model = join(dir, 'model')
    await mkdir(model)
    await writeFile(join(model, 'a.bin'), randomBytes(2 << 20))
    // The same size as the secret, so only the open can tell.
    await writeFile(join(model, 'b.bin'), 'x'.repeat(secret.length))
    let swapped = false
    const err = await refusal(addPath(store, model, {
      name: 'm',
      // The walk and every header read are done; a.bin is being copied; b.bin is opened next.
      onProgress: p => {
        if (swapped || p.file !== 'a.bin') return
        swapped = true
        execFileSync('sh', ['-c', 'rm "$1" && ln -s "$2" "$1"', 'swap', join(model, 'b.bin'), join(dir, 'secret.txt')])
      }
    }))
    expect(swapped).toBe(true)
    expect(err.name).toBe('InvalidInputError')
    expect(err.message).toMatch(/^b\.bin was replaced by a symlink after the folder was listed, so it is not what was checked: nothing was added/)
    expect((await store.totals()).versions).toBe(0)
    for (const blob of await readdir(join(dir, 'home', 'blobs'))) {
      expect((await readFile(join(dir, 'home', 'blobs', blob))).includes(secret)).toBe(false)
    }
  })

  it('refuses a folder that holds a symlink to a file outside it, before reading anything', async () => {
    const model = join(dir, 'model')
    await mkdir(model)
    await writeFile(join(model, 'a.bin'), 'a')
    await writeFile(join(dir, 'secret.txt'), 'secret')
    await symlink(join(dir, 'secret.txt'), join(model, 'b.bin'))
    const err = await refusal(addPath(store, model, { name: 'm' }))
    expect(err.message).toMatch(/^b\.bin is a symlink to .*secret\.txt, outside .*: copy the file in instead$/)
    expect(await store.totals()).toMatchObject({ versions: 0, blobs: 0 })
  })
})
