/**
 * Search benchmark (seed §4: "search latency over 10,000 manifests").
 *
 * Generates N synthetic manifests (default 10,000): five architecture families (llama-, mistral-,
 * bert-, t5- and vit-like tensor lists of a few hundred tensors each, 40 base configurations per
 * family, most manifests fine-tunes of a base — same names and shapes — some with a resized
 * vocabulary, some of their own size), varied frameworks, tasks, licenses, tags, dtypes and
 * formats; 70% stored, 30% only known through a signed head. File sizes are capped at 64 MiB
 * (chunk lists stay short, so generating is quick); search cost does not depend on them.
 *
 * It writes them into a real LevelDB in a temporary folder (records only: manifests, versions,
 * labels, known manifests, heads), then measures:
 * - the first `SearchIndex.open` (an upgraded store: every document derived from the manifests),
 * - `open` again after a restart (documents loaded from the `search` sublevel),
 * - p50 / p99 / max latency of representative queries and of `similar` over R runs each (default
 *   200, after warm-up), beside a baseline measured in the same run: a hand-written predicate over
 *   an array of plain objects with pre-lower-cased fields (no parsing, no generic evaluator) — the
 *   floor for an in-memory linear scan; the ratio is the cost of the query language and rows,
 * - `upsert` latency (one synced LevelDB write each) and the heap the index holds.
 *
 *   npm run bench:search -- [--count 10000] [--runs 200] [--seed 1]
 */
import '../src/polyfill.js'
import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Level } from 'level'
import { chunkIdOf, fileDigest, type ChunkId, type VersionId } from '../src/core/digest.js'
import { publisherKeyOf, signHead } from '../src/core/heads.js'
import { encodeManifest, MAX_BLOCK_SIZE, type Manifest } from '../src/core/manifest.js'
import { similarity, structureVector } from '../src/core/query.js'
import { IndexDb, type Db, type IndexOp } from '../src/store/index-db.js'
import { SearchIndex } from '../src/store/search-index.js'
import { loadNote } from './lib/proc.js'

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '10000' },
    runs: { type: 'string', default: '200' },
    seed: { type: 'string', default: '1' }
  }
})
const COUNT = Number(values.count)
const RUNS = Math.max(200, Number(values.runs))
const WARMUP = 20
const MiB = 1024 * 1024

// ---- synthetic manifests ----------------------------------------------------------------------

function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
const rand = prng(Number(values.seed))
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!
const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1))

type Tensors = Array<[string, number[]]>
interface Config { layers: number, hidden: number, vocab: number }
interface Family {
  arch: string
  names: string[]
  tasks: string[]
  layers: [number, number]
  hidden: number[]
  tensors: (c: Config) => Tensors
}

const decoder = (prefix: string, mlp: string[]) => (c: Config): Tensors => {
  const h = c.hidden
  const inter = Math.round(h * 2.6875 / 256) * 256
  const out: Tensors = [[`${prefix}.embed_tokens.weight`, [c.vocab, h]]]
  for (let i = 0; i < c.layers; i++) {
    const p = `${prefix}.layers.${i}`
    out.push([`${p}.input_layernorm.weight`, [h]], [`${p}.post_attention_layernorm.weight`, [h]])
    for (const q of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) out.push([`${p}.self_attn.${q}.weight`, [h, h]])
    for (const m of mlp) out.push([`${p}.mlp.${m}.weight`, m === 'down_proj' ? [h, inter] : [inter, h]])
  }
  out.push([`${prefix}.norm.weight`, [h]], ['lm_head.weight', [c.vocab, h]])
  return out
}

const FAMILIES: Family[] = [
  { arch: 'LlamaForCausalLM', names: ['llama', 'vicuna', 'alpaca', 'tulu'], tasks: ['text-generation', 'chat', 'code', 'ner'], layers: [16, 40], hidden: [2048, 3072, 4096, 5120], tensors: decoder('model', ['gate_proj', 'up_proj', 'down_proj']) },
  { arch: 'MistralForCausalLM', names: ['mistral', 'zephyr', 'hermes'], tasks: ['text-generation', 'chat'], layers: [24, 32], hidden: [4096], tensors: decoder('model', ['gate_proj', 'up_proj', 'down_proj']) },
  {
    arch: 'BertForTokenClassification', names: ['bert', 'roberta', 'deberta', 'electra'], tasks: ['ner', 'classification', 'embedding'], layers: [6, 24], hidden: [384, 768, 1024],
    tensors: c => {
      const h = c.hidden
      const out: Tensors = [['bert.embeddings.word_embeddings.weight', [c.vocab, h]], ['bert.embeddings.position_embeddings.weight', [512, h]], ['bert.embeddings.LayerNorm.weight', [h]]]
      for (let i = 0; i < c.layers; i++) {
        const p = `bert.encoder.layer.${i}`
        for (const q of ['query', 'key', 'value']) out.push([`${p}.attention.self.${q}.weight`, [h, h]], [`${p}.attention.self.${q}.bias`, [h]])
        out.push([`${p}.attention.output.dense.weight`, [h, h]], [`${p}.attention.output.LayerNorm.weight`, [h]], [`${p}.intermediate.dense.weight`, [4 * h, h]], [`${p}.output.dense.weight`, [h, 4 * h]], [`${p}.output.LayerNorm.weight`, [h]])
      }
      out.push(['classifier.weight', [9, h]], ['classifier.bias', [9]])
      return out
    }
  },
  {
    arch: 'T5ForConditionalGeneration', names: ['t5', 'flan-t5', 'mt5'], tasks: ['summarization', 'translation'], layers: [6, 24], hidden: [512, 768, 1024],
    tensors: c => {
      const h = c.hidden
      const out: Tensors = [['shared.weight', [c.vocab, h]]]
      for (const side of ['encoder', 'decoder']) {
        for (let i = 0; i < c.layers; i++) {
          const p = `${side}.block.${i}.layer`
          for (const q of ['q', 'k', 'v', 'o']) out.push([`${p}.0.SelfAttention.${q}.weight`, [h, h]])
          out.push([`${p}.0.layer_norm.weight`, [h]], [`${p}.1.DenseReluDense.wi.weight`, [4 * h, h]], [`${p}.1.DenseReluDense.wo.weight`, [h, 4 * h]])
        }
        out.push([`${side}.final_layer_norm.weight`, [h]])
      }
      return out
    }
  },
  {
    arch: 'ViTForImageClassification', names: ['vit', 'deit', 'beit'], tasks: ['image-classification'], layers: [12, 32], hidden: [384, 768, 1024, 1280],
    tensors: c => {
      const h = c.hidden
      const out: Tensors = [['vit.embeddings.patch_embeddings.projection.weight', [h, 3, 16, 16]], ['vit.embeddings.cls_token', [1, 1, h]]]
      for (let i = 0; i < c.layers; i++) {
        const p = `vit.encoder.layer.${i}`
        for (const q of ['query', 'key', 'value']) out.push([`${p}.attention.attention.${q}.weight`, [h, h]])
        out.push([`${p}.layernorm_before.weight`, [h]], [`${p}.layernorm_after.weight`, [h]], [`${p}.intermediate.dense.weight`, [4 * h, h]], [`${p}.output.dense.weight`, [h, 4 * h]])
      }
      out.push(['classifier.weight', [1000, h]])
      return out
    }
  }
]

const BASES = FAMILIES.map(f => Array.from({ length: 40 }, () => ({ layers: int(...f.layers), hidden: pick(f.hidden), vocab: pick([30522, 32000, 50257, 128256]) })))
const FRAMEWORKS = ['pytorch', 'pytorch', 'onnx', 'gguf', 'tensorflow', 'jax']
const LICENSES = ['apache-2.0', 'mit', 'llama3', 'cc-by-4.0', 'other']
const LANGS = ['en', 'de', 'fr', 'es', 'zh', 'ja', 'multi']
const ORGS = ['acme', 'meta', 'mistralai', 'google', 'hf-community', 'bob', 'carol', 'lab-x', 'univ-y', 'startup-z']
const WORDS = ['fine-tuned', 'instruct', 'distilled', 'quantised', 'domain-adapted', 'legal', 'medical', 'finance', 'multilingual', 'small', 'robust', 'long-context']
const CHUNK_POOL: ChunkId[] = Array.from({ length: 256 }, (_, i) => chunkIdOf(Buffer.from(`bench-chunk-${i}`)))

function synthManifest (i: number): { manifest: Manifest, family: Family } {
  const fi = Math.floor(rand() * FAMILIES.length)
  const family = FAMILIES[fi]!
  const roll = rand()
  const base = pick(BASES[fi]!)
  const config = roll < 0.85 ? base : roll < 0.95 ? { ...base, vocab: base.vocab + int(1, 300) } : { layers: int(...family.layers), hidden: pick(family.hidden), vocab: base.vocab }
  const tensors = family.tensors(config)
  const framework = family.names[0] === 'bert' || family.names[0] === 'vit' ? pick(['pytorch', 'onnx', 'tensorflow']) : pick(FRAMEWORKS)
  const format = framework === 'onnx' ? 'onnx' : framework === 'gguf' ? 'gguf' : 'safetensors'
  const dtype = format === 'gguf' ? pick(['Q4_K', 'Q8_0', 'F16']) : pick(['BF16', 'F16', 'F32'])
  const params = tensors.reduce((n, [, s]) => n + s.reduce((a, b) => a * b, 1), 0)
  const task = pick(family.tasks)
  const chunks = Array.from({ length: int(1, 16) }, () => ({ id: pick(CHUNK_POOL), size: 4 * MiB }))
  const size = chunks.length * 4 * MiB
  const name = `${pick(ORGS)}/${pick(family.names)}-${(params / 1e9).toFixed(1)}b-${pick(WORDS)}-${i}`
  const manifest: Manifest = {
    // One block per chunk: the chunk ids are drawn from a pool, with no bytes to build trees from.
    schema: 2,
    blockSize: MAX_BLOCK_SIZE,
    name,
    created: Date.UTC(2025, 0, 1) + Math.floor(rand() * 540 * 86_400_000),
    parent: null,
    files: [
      { path: 'config.json', size: 4 * MiB, digest: fileDigest([{ id: CHUNK_POOL[0]!, size: 4 * MiB }]), format: 'other', chunks: [{ id: CHUNK_POOL[0]!, size: 4 * MiB }] },
      {
        path: `model.${format}`, size, digest: fileDigest(chunks), format, chunks,
        structure: {
          headerLength: 4096, parameterCount: params, dtypes: [dtype], architecture: family.arch, architectureFrom: 'metadata', metadata: {},
          tensors: tensors.map(([n, shape]) => ({ name: n, dtype, shape, offset: 0, length: 0 }))
        }
      }
    ],
    metadata: {
      description: `${family.names[0]} ${task} model, ${pick(WORDS)} and ${pick(WORDS)} (${pick(LANGS)}).`,
      framework, task: task === 'ner' ? 'token-classification' : task, license: pick(LICENSES),
      tags: { task, lang: pick(LANGS), ...(rand() < 0.3 ? { epochs: String(int(1, 10)) } : {}), ...(rand() < 0.2 ? { [pick(WORDS)]: '' } : {}) }
    },
    structure: { formats: [...new Set(['other', format] as const)].sort(), parameterCount: params, dtypes: [dtype], tensorCount: tensors.length, architecture: family.arch, totalSize: size + 4 * MiB }
  }
  return { manifest, family }
}

// ---- measurement helpers ----------------------------------------------------------------------

function pct (xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p / 100 * s.length) - 1))]!
}

function time (fn: (i: number) => unknown): number[] {
  for (let i = 0; i < WARMUP; i++) fn(i)
  const out: number[] = []
  for (let i = 0; i < RUNS; i++) {
    const t = performance.now()
    fn(i)
    out.push(performance.now() - t)
  }
  return out
}

const fmt = (ms: number): string => `${ms.toFixed(3).padStart(8)} ms`
const line = (label: string, xs: number[]): string => `p50 ${fmt(pct(xs, 50))}  p99 ${fmt(pct(xs, 99))}  max ${fmt(Math.max(...xs))}`

// ---- the run ----------------------------------------------------------------------------------

const dir = await mkdtemp(join(tmpdir(), 'shoal-bench-search-'))
try {
  console.log(`search benchmark: ${COUNT} manifests, ${RUNS} runs per query (after ${WARMUP} warm-up), node ${process.version}, ${loadNote()}`)
  let t = performance.now()
  const generated: Array<{ id: VersionId, bytes: Uint8Array, manifest: Manifest }> = []
  let tensorTotal = 0
  for (let i = 0; i < COUNT; i++) {
    const { manifest } = synthManifest(i)
    tensorTotal += manifest.structure.tensorCount
    generated.push({ ...encodeManifest(manifest), manifest })
  }
  const bytesTotal = generated.reduce((n, g) => n + g.bytes.length, 0)
  console.log(`generated and encoded in ${((performance.now() - t) / 1000).toFixed(1)} s: ${(tensorTotal / COUNT).toFixed(0)} tensors and ${(bytesTotal / COUNT / 1024).toFixed(1)} KiB per manifest on average`)

  const keys = generateKeyPairSync('ed25519')
  const publisher = publisherKeyOf(keys.publicKey)
  const open = async (): Promise<IndexDb> => {
    const index = new IndexDb(new Level<string, unknown>(join(dir, 'index')) as unknown as Db)
    await index.open()
    return index
  }
  let index = await open()
  t = performance.now()
  let ops: IndexOp[] = []
  let heads = 0
  for (const [i, g] of generated.entries()) {
    const name = g.manifest.name
    if (i % 10 < 7) {
      ops.push(
        { type: 'put', sublevel: index.manifests, key: g.id, value: g.bytes },
        { type: 'put', sublevel: index.versions, key: g.id, value: { name, created: g.manifest.created, addedAt: g.manifest.created } },
        { type: 'put', sublevel: index.byModel, key: IndexDb.modelKey(name, g.manifest.created, g.id), value: '' }
      )
      if (i % 3 === 0) ops.push({ type: 'put', sublevel: index.labels, key: IndexDb.pairKey(name, pick(['prod', 'latest', 'canary'])), value: { version: g.id, updatedAt: g.manifest.created, history: [] } })
    } else {
      ops.push({ type: 'put', sublevel: index.known, key: g.id, value: g.bytes })
      const head = signHead({ model: name, label: pick(['prod', 'stable']), version: g.id, previous: null, stamp: { wall: g.manifest.created, counter: 0 }, activation: { mode: 'hot' }, publisher }, keys.privateKey)
      ops.push({ type: 'put', sublevel: index.heads, key: `${name}\0${head.head.label}`, value: { head: Buffer.from(head.bytes).toString('base64'), receivedAt: g.manifest.created } })
      heads++
    }
    if (ops.length >= 600) { await index.commit(ops); ops = [] }
  }
  await index.commit(ops)
  const ids = generated.map(g => g.id)
  generated.length = 0
  console.log(`store records written in ${((performance.now() - t) / 1000).toFixed(1)} s (${heads} signed heads for known versions)`)

  t = performance.now()
  let search = await SearchIndex.open(index)
  const buildMs = performance.now() - t
  console.log(`\nfirst open (an upgraded store: derive ${search.size} docs from manifests, labels and ${heads} heads): ${(buildMs / 1000).toFixed(2)} s`)
  await index.close()

  const loads: number[] = []
  for (let i = 0; i < 3; i++) {
    index = await open()
    t = performance.now()
    search = await SearchIndex.open(index)
    loads.push(performance.now() - t)
    if (i < 2) await index.close()
  }
  console.log(`open after restart (load ${search.size} docs + reconcile with the store's records): median ${pct(loads, 50).toFixed(0)} ms of 3 (${loads.map(x => x.toFixed(0)).join(', ')})`)
  const docBytes = ids.reduce((n, id) => n + JSON.stringify(search.get(id)).length, 0)
  console.log(`stored search docs: ${(docBytes / ids.length).toFixed(0)} bytes each on average (${(docBytes / MiB).toFixed(1)} MiB in all)`)

  // Baseline data: plain objects, fields lower-cased in advance, a flat text field.
  const plain = ids.map(id => search.get(id)!).map(d => ({
    model: d.model, framework: d.framework?.toLowerCase(), params: d.params, created: d.created, size: d.size,
    tagTask: d.tags.task?.toLowerCase(), task: d.task?.toLowerCase(), dtypes: d.dtypes.map(x => x.toLowerCase()), formats: d.formats,
    text: `${d.model}\n${d.description ?? ''}\n${Object.entries(d.tags).map(([k, v]) => `${k}=${v}`).join(' ')}\n${d.architecture ?? ''}`.toLowerCase(),
    vector: structureVector(d)
  }))
  const jan1 = Date.UTC(2026, 0, 2)
  type Plain = typeof plain[number]
  const scan = (pred: (p: Plain) => boolean): number => { let n = 0; for (const p of plain) if (pred(p)) n++; return n }

  const queries: Array<{ name: string, query: string, baseline: () => unknown }> = [
    {
      name: "issue's example",
      query: 'framework = "onnx" AND params > 1e9 AND tags.task = "ner" AND created > 2026-01-01',
      baseline: () => scan(p => p.framework === 'onnx' && p.params > 1e9 && p.tagTask === 'ner' && p.created >= jan1)
    },
    {
      name: 'free text (2 terms)',
      query: 'medical instruct',
      baseline: () => scan(p => p.text.includes('medical') && p.text.includes('instruct'))
    },
    {
      name: 'OR / NOT / ORDER BY / LIMIT',
      query: '(task = token-classification OR tags.task = ner) AND NOT framework = tensorflow AND params < 1B ORDER BY params DESC LIMIT 10',
      baseline: () => plain.filter(p => (p.task === 'token-classification' || p.tagTask === 'ner') && p.framework !== 'tensorflow' && p.params < 1e9).sort((a, b) => b.params - a.params).slice(0, 10)
    },
    {
      name: 'multi-valued + size',
      query: 'name ~ llama AND dtype = bf16 AND format = safetensors AND size > 20MB',
      baseline: () => scan(p => p.model.includes('llama') && p.dtypes.includes('bf16') && p.formats.includes('safetensors') && p.size > 20e6)
    },
    {
      name: 'everything, newest 20',
      query: 'ORDER BY created DESC LIMIT 20',
      baseline: () => [...plain].sort((a, b) => b.created - a.created).slice(0, 20)
    }
  ]

  console.log(`\n${'query'.padEnd(30)} ${'matches'.padStart(7)}  index: latency over ${RUNS} runs${' '.repeat(22)}baseline p50 / p99     ratio p50`)
  for (const q of queries) {
    const total = search.search(q.query).total
    const index = time(() => search.search(q.query))
    const base = time(() => q.baseline())
    console.log(`${q.name.padEnd(30)} ${String(total).padStart(7)}  ${line(q.name, index)}   ${fmt(pct(base, 50))} / ${fmt(pct(base, 99))}  ${(pct(index, 50) / pct(base, 50)).toFixed(1).padStart(6)}x`)
  }

  // similar: a different target each run; baseline = the same similarity math over pre-decoded
  // vectors in a bare loop (no filter, no per-structure memo, no rows).
  const targets = Array.from({ length: RUNS + WARMUP }, (_, i) => ids[(i * 7919) % ids.length]!)
  const sim = time(i => search.similar(targets[i % targets.length]!, { limit: 20 }))
  const simBase = time(i => {
    const target = structureVector(search.get(targets[i % targets.length]!)!)
    const scores: number[] = []
    for (const p of plain) { const s = similarity(target, p.vector); if (s >= 0.05) scores.push(s) }
    return scores.sort((a, b) => b - a).slice(0, 20)
  })
  const example = search.similar(targets[0]!, { limit: 3 })
  console.log(`${'similar (20 best)'.padEnd(30)} ${String(example.total).padStart(7)}  ${line('similar', sim)}   ${fmt(pct(simBase, 50))} / ${fmt(pct(simBase, 99))}  ${(pct(sim, 50) / pct(simBase, 50)).toFixed(1).padStart(6)}x`)
  const exact = search.similar(targets[0]!, { minScore: 1 }).total
  console.log(`  e.g. ${search.get(targets[0]!)!.model}: ${exact} versions with the same architecture; best: ${example.rows.map(r => `${r.model} ${r.score!.toFixed(2)}`).join(', ')}`)

  // upsert: one synced write each
  const extra = Array.from({ length: RUNS + WARMUP }, (_, i) => encodeManifest(synthManifest(COUNT + i).manifest))
  const ups: number[] = []
  for (const [i, e] of extra.entries()) {
    const t0 = performance.now()
    await search.upsert(e.id, e.bytes, ['latest'], { local: true })
    if (i >= WARMUP) ups.push(performance.now() - t0)
  }
  console.log(`${'upsert (synced write)'.padEnd(30)} ${''.padStart(7)}  ${line('upsert', ups)}`)
  console.log(`\n${loadNote()} at the end; p99 and max move with machine load and GC pauses`)
  await index.close()
} finally {
  await rm(dir, { recursive: true, force: true })
}
