import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { generateKeyPairSync } from 'node:crypto'
import { join } from 'node:path'
import { chunkIdOf, fileDigest, type VersionId } from '../../../src/core/digest.js'
import { publisherKeyOf, signHead } from '../../../src/core/heads.js'
import { DEFAULT_BLOCK_SIZE, encodeManifest, type Manifest } from '../../../src/core/manifest.js'
import type { Metadata } from '../../../src/core/metadata.js'
import { SEARCH_DOC_SCHEMA } from '../../../src/core/search-doc.js'
import { IndexDb, type Db } from '../../../src/store/index-db.js'
import { SearchIndex, topK } from '../../../src/store/search-index.js'
import type { Store } from '../../../src/store/store.js'
import { memoryStore, tempDir } from '../../helpers/tmp.js'
import { internals } from '../../helpers/store-internals.js'

type Tensors = Array<[string, number[]]>

function llama (layers: number, hidden: number, vocab = 32000): Tensors {
  const out: Tensors = [['model.embed_tokens.weight', [vocab, hidden]]]
  for (let i = 0; i < layers; i++) {
    for (const p of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) out.push([`model.layers.${i}.self_attn.${p}.weight`, [hidden, hidden]])
    out.push([`model.layers.${i}.mlp.up_proj.weight`, [hidden * 3, hidden]], [`model.layers.${i}.input_layernorm.weight`, [hidden]])
  }
  out.push(['model.norm.weight', [hidden]], ['lm_head.weight', [vocab, hidden]])
  return out
}

function bert (layers: number): Tensors {
  const out: Tensors = [['bert.embeddings.word_embeddings.weight', [30522, 768]]]
  for (let i = 0; i < layers; i++) out.push([`bert.encoder.layer.${i}.attention.self.query.weight`, [768, 768]], [`bert.encoder.layer.${i}.output.dense.weight`, [768, 3072]])
  return out
}

let seq = 0
function manifest (name: string, o: { tensors?: Tensors, metadata?: Metadata, created?: number, format?: 'safetensors' | 'onnx', params?: number } = {}): { bytes: Uint8Array, id: VersionId, manifest: Manifest } {
  const bytes = Buffer.from(`${name}:${seq++}`)
  const chunks = [{ id: chunkIdOf(bytes), size: bytes.length }]
  const tensors = o.tensors ?? llama(4, 64)
  const format = o.format ?? 'safetensors'
  const params = o.params ?? tensors.reduce((n, [, s]) => n + s.reduce((a, b) => a * b, 1), 0)
  const m: Manifest = {
    schema: 2,
    blockSize: DEFAULT_BLOCK_SIZE,
    name,
    created: o.created ?? Date.UTC(2026, 0, 1) + seq * 1000,
    parent: null,
    files: [{
      path: 'model.bin', size: bytes.length, digest: fileDigest(chunks), format, chunks,
      structure: { headerLength: 8, parameterCount: params, dtypes: ['BF16'], metadata: {}, tensors: tensors.map(([n, shape]) => ({ name: n, dtype: 'BF16', shape, offset: 8, length: 0 })) }
    }],
    metadata: o.metadata ?? {},
    structure: { formats: [format], parameterCount: params, dtypes: ['BF16'], tensorCount: tensors.length, totalSize: bytes.length }
  }
  return { ...encodeManifest(m), manifest: m }
}

/** Records a version as stored (index records only: search never reads blobs). */
async function putLocal (store: Store, m: ReturnType<typeof manifest>, labels: string[] = []): Promise<VersionId> {
  const name = m.manifest.name
  await internals(store).index.commit([
    { type: 'put', sublevel: internals(store).index.manifests, key: m.id, value: m.bytes },
    { type: 'put', sublevel: internals(store).index.versions, key: m.id, value: { name, created: m.manifest.created, addedAt: m.manifest.created + 5 } },
    { type: 'put', sublevel: internals(store).index.byModel, key: IndexDb.modelKey(name, m.manifest.created, m.id), value: '' }
  ])
  for (const label of labels) await store.setLabel(name, label, m.id)
  return m.id
}

const keys = generateKeyPairSync('ed25519')
const publisher = publisherKeyOf(keys.publicKey)

/** Records a version known only through a head naming it `model@label`. */
async function putKnown (store: Store, m: ReturnType<typeof manifest>, label?: string, receivedAt = Date.UTC(2026, 5, 1)): Promise<VersionId> {
  await store.heads.putKnownManifest(m.id, m.bytes)
  if (label !== undefined) await putHead(store, m.manifest.name, label, m.id, receivedAt)
  return m.id
}

async function putHead (store: Store, model: string, label: string, version: VersionId | null, receivedAt: number): Promise<void> {
  const head = signHead({ model, label, version, previous: null, stamp: { wall: receivedAt, counter: 0 }, activation: { mode: 'hot' }, publisher }, keys.privateKey)
  await store.heads.put(head, { receivedAt })
}

describe('search index', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let store: Store
  let db: Db

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir())
    ;({ store, db } = await memoryStore(join(dir, 'home')))
  })

  afterEach(async () => {
    await store.close().catch(() => {})
    await cleanup()
  })

  async function reopen (): Promise<SearchIndex> {
    await store.close()
    ;({ store } = await memoryStore(join(dir, 'home'), db))
    return await SearchIndex.open(internals(store).index)
  }

  it("answers the issue's example query over local and known versions, with labels from the store and heads", async () => {
    const ner = { framework: 'onnx', task: 'token-classification', tags: { task: 'ner' } }
    const big = await putLocal(store, manifest('acme/ner-big', { tensors: bert(24), params: 3e9, metadata: { ...ner, description: 'Large NER model' }, format: 'onnx', created: Date.UTC(2026, 1, 1) }), ['prod'])
    await putLocal(store, manifest('acme/ner-small', { tensors: bert(1), metadata: ner, format: 'onnx', created: Date.UTC(2026, 1, 2) }))
    await putLocal(store, manifest('acme/ner-old', { tensors: bert(24), params: 3e9, metadata: ner, format: 'onnx', created: Date.UTC(2025, 5, 1) }))
    const remote = await putKnown(store, manifest('other/ner-xl', { tensors: bert(30), params: 5e9, metadata: ner, format: 'onnx', created: Date.UTC(2026, 2, 1) }), 'stable')
    await putKnown(store, manifest('other/chat', { metadata: { framework: 'pytorch', tags: { task: 'chat' } } }), 'stable')

    const search = await SearchIndex.open(internals(store).index)
    expect(search.size).toBe(5)
    const result = search.search('framework = "onnx" AND params > 1e9 AND tags.task = "ner" AND created > 2026-01-01')
    expect(result.total).toBe(2)
    expect(result.rows.map(r => r.model)).toEqual(['other/ner-xl', 'acme/ner-big'])
    expect(result.rows[0]).toMatchObject({ version: remote, local: false, labels: ['stable'], framework: 'onnx', formats: ['onnx'], updated: Date.UTC(2026, 5, 1) })
    expect(result.rows[1]).toMatchObject({ version: big, local: true, labels: ['prod'], description: 'Large NER model', task: 'token-classification' })
    expect(result.rows[1]!.score).toBeUndefined()
    expect(search.search('local = false').rows.map(r => r.model).sort()).toEqual(['other/chat', 'other/ner-xl'])
    expect(search.search('label = stable AND tags.task = chat').rows.map(r => r.model)).toEqual(['other/chat'])
  })

  it('orders by ORDER BY, by free-text score, or newest first; LIMIT and the limit option cap rows, not total', async () => {
    for (let i = 0; i < 30; i++) {
      await putLocal(store, manifest(`org/m${i}`, { tensors: llama(1 + (i % 5), 64), created: Date.UTC(2026, 0, 1 + i), metadata: { description: i === 7 ? 'mentions llama' : 'plain' } }))
    }
    await putLocal(store, manifest('org/llama', { created: Date.UTC(2025, 0, 1) }))
    const search = await SearchIndex.open(internals(store).index)
    const all = search.search('')
    expect(all.total).toBe(31)
    expect(all.rows).toHaveLength(20)
    expect(all.rows[0]!.model).toBe('org/m29')
    expect(search.search('', { limit: 5 }).rows).toHaveLength(5)
    expect(search.search('LIMIT 3', { limit: 5 }).rows).toHaveLength(3)
    const byParams = search.search('name ~ "org/m" ORDER BY params DESC, created ASC LIMIT 7')
    expect(byParams.total).toBe(30)
    expect(byParams.rows.map(r => r.model)).toEqual(['org/m4', 'org/m9', 'org/m14', 'org/m19', 'org/m24', 'org/m29', 'org/m3'])
    // the name hit outranks the description hit, although older
    const text = search.search('llama')
    expect(text.rows.map(r => [r.model, r.score])).toEqual([['org/llama', 3], ['org/m7', 1]])
  })

  it('ranks fine-tunes of a base first in similar, then near relatives, and leaves out unrelated models', async () => {
    const base = await putLocal(store, manifest('meta/base', { tensors: llama(8, 256), created: Date.UTC(2026, 0, 1) }))
    const tuneA = await putLocal(store, manifest('acme/base-chat', { tensors: llama(8, 256), created: Date.UTC(2026, 1, 1), metadata: { task: 'chat' } }))
    const tuneB = await putKnown(store, manifest('bob/base-code', { tensors: llama(8, 256), created: Date.UTC(2026, 2, 1), metadata: { task: 'code' } }), 'prod')
    const resized = llama(8, 256).map(([n, s]): [string, number[]] => n === 'lm_head.weight' || n === 'model.embed_tokens.weight' ? [n, [32100, 256]] : [n, s])
    const extended = await putLocal(store, manifest('carol/base-extended-vocab', { tensors: resized }))
    const sibling = await putLocal(store, manifest('meta/big', { tensors: llama(16, 512) }))
    await putLocal(store, manifest('google/bert', { tensors: bert(12) }))
    await putLocal(store, manifest('empty/model', { tensors: [] }))

    const search = await SearchIndex.open(internals(store).index)
    const result = search.similar(base)
    expect(result.rows.map(r => r.version)).toEqual([tuneB, tuneA, extended, sibling])
    expect(result.rows.map(r => r.score)).toEqual([1, 1, expect.any(Number), expect.any(Number)])
    expect(result.rows[2]!.score).toBeGreaterThan(0.5)
    expect(result.rows[2]!.score).toBeLessThan(1)
    expect(result.rows[3]!.score).toBeLessThan(result.rows[2]!.score!)
    expect(result.rows[0]).toMatchObject({ local: false, labels: ['prod'] })
    expect(search.similar(base, { limit: 1 }).rows.map(r => r.version)).toEqual([tuneB])
    expect(search.similar(base, { query: 'local = true' }).rows.map(r => r.version)).toEqual([tuneA, extended, sibling])
    expect(search.similar(base, { minScore: 1 }).total).toBe(2)
    expect(search.similar(tuneA).rows[0]!.version).toBe(tuneB)
    expect(() => search.similar('bafynotthere')).toThrow(expect.objectContaining({ name: 'NotFoundError' }))
  })

  it('keeps documents across a restart without re-deriving them', async () => {
    const m = manifest('org/model', { metadata: { framework: 'onnx' } })
    await putLocal(store, m, ['prod'])
    const search = await SearchIndex.open(internals(store).index)
    // a value only `upsert` sets: a rebuild would derive `updated` from the store instead
    await search.upsert(m.id, m.bytes, ['prod'], { updated: 42 })
    const again = await reopen()
    expect(again.size).toBe(1)
    expect(again.get(m.id)).toMatchObject({ updated: 42, local: true, labels: ['prod'], framework: 'onnx' })
    expect(again.search('framework = onnx').rows.map(r => r.version)).toEqual([m.id])
  })

  it('builds the index from manifests, known manifests, labels and heads when the store has none (an upgraded store)', async () => {
    const a = await putLocal(store, manifest('org/a'), ['prod', 'latest'])
    const b = await putKnown(store, manifest('org/b'), 'stable')
    await putHead(store, 'org/a', 'canary', a, Date.UTC(2040, 6, 1))
    await putHead(store, 'org/a', 'gone', null, Date.UTC(2040, 6, 2))
    await internals(store).index.heads.put('org/a\0broken', { head: 'bm90IGEgaGVhZA==', receivedAt: 1 })
    expect(await internals(store).index.search.keys().all()).toEqual([])

    const warnings: object[] = []
    const search = await SearchIndex.open(internals(store).index, { log: { warn: obj => warnings.push(obj) } })
    expect(warnings).toEqual([{ head: 'org/a@broken' }])
    expect(search.get(a)).toMatchObject({ schema: SEARCH_DOC_SCHEMA, local: true, labels: ['canary', 'latest', 'prod'], updated: Date.UTC(2040, 6, 1) })
    expect(search.get(b)).toMatchObject({ local: false, labels: ['stable'] })
    expect((await internals(store).index.search.keys().all()).sort()).toEqual([a, b].sort())
    expect((await search.rebuild())).toEqual({ added: 2, updated: 0, removed: 0 })
    expect(search.size).toBe(2)
  })

  it('reconciles at open: adds what it missed, drops what the store lost, re-derives other schemas, fixes labels', async () => {
    const a = await putLocal(store, manifest('org/a'))
    const b = await putLocal(store, manifest('org/b'))
    const c = await putLocal(store, manifest('org/c'))
    await SearchIndex.open(internals(store).index)
    // while "crashed": a version added, one removed, a label moved, a document from another schema
    const d = await putLocal(store, manifest('org/d'))
    await internals(store).index.commit([{ type: 'del', sublevel: internals(store).index.manifests, key: b }, { type: 'del', sublevel: internals(store).index.versions, key: b }])
    await store.setLabel('org/a', 'prod', a)
    const old = await internals(store).index.search.get(c)
    await internals(store).index.search.put(c, { ...old!, schema: SEARCH_DOC_SCHEMA + 1 })

    const search = await reopen()
    expect([...['org/a', 'org/c', 'org/d']].map(n => search.search(`name = "${n}"`).total)).toEqual([1, 1, 1])
    expect(search.get(b)).toBeUndefined()
    expect(search.get(d)).toBeDefined()
    expect(search.get(a)!.labels).toEqual(['prod'])
    expect((await internals(store).index.search.get(c))!.schema).toBe(SEARCH_DOC_SCHEMA)
    expect(await internals(store).index.search.get(b)).toBeUndefined()
    expect(await search.reconcile()).toEqual({ added: 0, updated: 0, removed: 0 })
  })

  it('follows the store through refresh, refreshLabels and remove', async () => {
    const search = await SearchIndex.open(internals(store).index)
    const v1 = await putLocal(store, manifest('org/m'))
    const v2 = await putLocal(store, manifest('org/m'))
    expect(await search.refresh(v1)).toMatchObject({ local: true, labels: [] })
    await search.refresh(v2)
    await store.setLabel('org/m', 'prod', v1)
    expect(await search.refreshLabels('org/m')).toBe(1)
    expect(search.search('label = prod').rows.map(r => r.version)).toEqual([v1])
    await store.setLabel('org/m', 'prod', v2)
    expect(await search.refreshLabels('org/m')).toBe(2)
    expect(search.search('label = prod').rows.map(r => r.version)).toEqual([v2])
    expect(search.get(v1)!.labels).toEqual([])

    // a version known through a head, then pulled: local flips
    const known = manifest('org/remote')
    await putKnown(store, known, 'stable')
    expect(await search.refresh(known.id)).toMatchObject({ local: false, labels: ['stable'] })
    await putLocal(store, known)
    expect(await search.refresh(known.id)).toMatchObject({ local: true, labels: ['stable'] })

    // gone from the store: refresh removes it; remove is idempotent
    await internals(store).index.commit([{ type: 'del', sublevel: internals(store).index.manifests, key: v1 }, { type: 'del', sublevel: internals(store).index.versions, key: v1 }])
    expect(await search.refresh(v1)).toBeUndefined()
    expect(search.get(v1)).toBeUndefined()
    await search.remove(v2)
    await search.remove(v2)
    expect(search.search('name = "org/m"').total).toBe(0)
    expect(await internals(store).index.search.get(v2)).toBeUndefined()
  })

  it('upsert defaults local to whether the store records the version', async () => {
    const search = await SearchIndex.open(internals(store).index)
    const stored = manifest('org/s')
    await putLocal(store, stored)
    const other = manifest('org/o')
    expect((await search.upsert(stored.id, stored.bytes, ['x'])).local).toBe(true)
    expect((await search.upsert(other.id, other.bytes, [])).local).toBe(false)
    expect(search.size).toBe(2)
    await expect(search.upsert(other.id, new Uint8Array([1, 2, 3]), [])).rejects.toMatchObject({ name: 'MalformedDataError' })
    expect(search.size).toBe(2)
  })

  it('resolves refs among indexed versions, stored or known', async () => {
    const v1 = await putLocal(store, manifest('org/m', { created: Date.UTC(2026, 0, 1) }), ['latest'])
    const v2 = await putLocal(store, manifest('org/m', { created: Date.UTC(2026, 0, 2) }))
    const k = await putKnown(store, manifest('org/k'), 'prod')
    const search = await SearchIndex.open(internals(store).index)
    expect(search.resolve('org/m')).toBe(v1)
    expect(search.resolve(`org/m@${v2}`)).toBe(v2)
    expect(search.resolve('org/k@prod')).toBe(k)
    expect(search.resolve('org/k')).toBe(k)
    expect(search.resolve(`org/k@${k.slice(0, 20)}`)).toBe(k)
    expect(() => search.resolve('org/none')).toThrow(expect.objectContaining({ name: 'NotFoundError' }))
    expect(() => search.resolve('org/m@nolabel')).toThrow(expect.objectContaining({ name: 'NotFoundError' }))
    expect(() => search.resolve('bad name!')).toThrow(expect.objectContaining({ name: 'InvalidInputError' }))
  })

  it('refuses a bad query with InvalidInputError', async () => {
    const search = await SearchIndex.open(internals(store).index)
    expect(() => search.search('params >')).toThrow(expect.objectContaining({ name: 'InvalidInputError', message: expect.stringContaining('column 9') }))
    expect(() => search.similar('x', { query: 'a AND' })).toThrow(expect.objectContaining({ name: 'NotFoundError' }))
  })

  it('topK keeps the k smallest in order', () => {
    const xs = Array.from({ length: 1000 }, (_, i) => (i * 7919) % 1000)
    expect(topK(xs, 5, (a, b) => a - b)).toEqual([0, 1, 2, 3, 4])
    expect(topK([3, 1, 2], 10, (a, b) => b - a)).toEqual([3, 2, 1])
  })
})
