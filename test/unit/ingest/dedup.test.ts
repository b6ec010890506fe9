import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createCipheriv, createHash, randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile, cp } from 'node:fs/promises'
import { join } from 'node:path'
import { WINDOW_SIZE, addPath } from '../../../src/ingest/ingest.js'
import { cdcChunks } from '../../../src/core/cdc.js'
import { STRUCTURE_CDC, modelRegions, planModelChunks } from '../../../src/core/chunking.js'
import { ROOT } from '../../../scripts/lib/daemon-proc.js'
import type { ManifestFile } from '../../../src/core/manifest.js'
import type { Store } from '../../../src/store/store.js'
import { changeTensors, llamaTensors, writeSafetensors } from '../../../scripts/lib/synth.js'
import { memoryStore, tempDir } from '../../helpers/tmp.js'
import { concat, gguf, joinBytes, pb, u32, u64 } from '../model/build.js'

const MB = 1_000_000

/** Bytes of the chunks of `now` that `before` does not have: what a peer holding `before` must fetch. */
function reshipped (before: ManifestFile, now: ManifestFile): number {
  const old = new Set(before.chunks.map(c => c.id))
  const fresh = new Map(now.chunks.filter(c => !old.has(c.id)).map(c => [c.id, c.size]))
  return [...fresh.values()].reduce((n, size) => n + size, 0)
}

/** `n` deterministic pseudo-random bytes (an AES-CTR keystream keyed by `seed`). */
function bytesOf (n: number, seed: string): Buffer {
  const key = createHash('sha256').update(seed).digest()
  return createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32)).update(Buffer.alloc(n))
}

/** A GGUF array of strings (type 9 of type 8) under `key`: `count` token-like words of 2–14 letters drawn from `seed`. */
function stringArray (key: string, count: number, seed: string): Buffer {
  const noise = bytesOf(count * 15, seed)
  const lengths = Array.from({ length: count }, (_, i) => 2 + (noise[i * 15] ?? 0) % 13)
  const head = Buffer.from(concat(gguf.str(key), u32(9), u32(8), u64(count)))
  const out = Buffer.alloc(head.length + lengths.reduce((n, l) => n + 8 + l, 0))
  head.copy(out)
  let at = head.length
  for (const [i, length] of lengths.entries()) {
    at = out.writeBigUInt64LE(BigInt(length), at)
    for (let k = 0; k < length; k++) out[at++] = 97 + (noise[i * 15 + 1 + k] ?? 0) % 26
  }
  return out
}

/**
 * Vocab-only GGUFs (no tensors) of about 16 MB, as llama.cpp ships for its tokenizer tests: a
 * 256k-token vocabulary with scores and types, 640k merges and a chat template. The arrays are
 * made once and shared by every version `make` returns.
 */
function vocabGguf (): (name: string, template: string) => Uint8Array {
  const count = 256_000
  const numbers = (key: string, type: number): Uint8Array => concat(gguf.str(key), u32(9), u32(type), u64(count), bytesOf(count * 4, key))
  const vocab = joinBytes([stringArray('tokenizer.ggml.tokens', count, 'tokens'), numbers('tokenizer.ggml.scores', 6), numbers('tokenizer.ggml.token_type', 5)])
  const merges = stringArray('tokenizer.ggml.merges', 640_000, 'merges')
  return (name, template) => joinBytes([
    gguf.header(0, 9),
    gguf.kvString('general.architecture', 'llama'),
    gguf.kvString('general.name', name),
    gguf.kvU32('llama.context_length', 8192),
    gguf.kvString('tokenizer.ggml.model', 'gpt2'),
    vocab,
    gguf.kvString('tokenizer.chat_template', template),
    merges
  ])
}

/**
 * An ONNX model of about 10 MB in the exporters' layout: no initializers, every weight a
 * `Constant` node (raw_data), between compute nodes. `big` constants of 256 KB and three of
 * ~23 KB whose bytes come from `seedOfSmall`.
 */
function constantsOnnx (seedOfSmall: number): Uint8Array {
  const FLOAT = 1
  const fill = (n: number, seed: number): Uint8Array => bytesOf(n, `constant ${seed}`)
  const constant = (out: string, dims: number[], data: Uint8Array): Uint8Array =>
    pb.msg(1, pb.str(2, out), pb.str(3, `${out}_node`), pb.str(4, 'Constant'),
      pb.msg(5, pb.str(1, 'value'), pb.msg(5, ...dims.map(d => pb.int(1, d)), pb.int(2, FLOAT), pb.bytes(9, data)), pb.int(20, 4)))
  const nodes: Uint8Array[] = []
  for (let i = 0; i < 38; i++) {
    nodes.push(constant(`w${i}`, [256, 256], fill(256 * 256 * 4, 100 + i)))
    nodes.push(pb.msg(1, pb.str(1, `h${i}`), pb.str(1, `w${i}`), pb.str(2, `h${i + 1}`), pb.str(3, `matmul_${i}`), pb.str(4, 'MatMul')))
    if (i % 12 === 5) {
      const k = Math.floor(i / 12)
      nodes.push(constant(`b${k}`, [24, 240], fill(24 * 240 * 4, seedOfSmall + k)))
      nodes.push(pb.msg(1, pb.str(1, `h${i + 1}`), pb.str(1, `b${k}`), pb.str(2, `g${i}`), pb.str(3, `add_${i}`), pb.str(4, 'Add')))
    }
  }
  const io = (field: number, name: string): Uint8Array => pb.msg(field, pb.str(1, name), pb.msg(2, pb.msg(1, pb.int(1, FLOAT), pb.msg(2, pb.msg(1, pb.str(2, 'batch')), pb.msg(1, pb.int(1, 256))))))
  return concat(pb.int(1, 8), pb.str(2, 'exporter'), pb.msg(7, ...nodes, pb.str(2, 'g'), io(11, 'h0'), io(12, 'h38')), pb.msg(8, pb.str(1, ''), pb.int(2, 17)))
}

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

  it('cuts a model file as core/chunking plans it: tensor pieces, and its structure by content across read windows', async () => {
    // A GGUF whose header (a 10 MB vocabulary) is longer than one read window of add, then two tensors.
    const header = (offsets: number[]): Uint8Array => concat(
      gguf.header(2, 1), stringArray('tokenizer.ggml.tokens', 600_000, 'window'),
      gguf.tensor('a.weight', [1024, 1024], 1, offsets[0] ?? 0), gguf.tensor('b.weight', [1536, 1024], 1, offsets[1] ?? 0))
    const a = bytesOf(2 << 20, 'a')
    const b = bytesOf(3 << 20, 'b')
    const head = gguf.align(header([0, a.length]))
    const bytes = Buffer.concat([head, a, b, Buffer.from('trailing bytes')])
    expect(head.length).toBeGreaterThan(WINDOW_SIZE)
    await mkdir(join(dir, 'g'))
    await writeFile(join(dir, 'g', 'model.gguf'), bytes)
    const file = (await addPath(store, join(dir, 'g'), { name: 'g' })).manifest.files[0]!
    const tensors = [{ offset: head.length, length: a.length }, { offset: head.length + a.length, length: b.length }]
    const starts = planModelChunks(modelRegions(bytes.length, tensors), r => cdcChunks(bytes.subarray(r.offset, r.offset + r.length), STRUCTURE_CDC))
    expect(file.chunks.map(c => c.size)).toEqual(starts.map((s, i) => (starts[i + 1] ?? bytes.length) - s))
    expect(starts).toContain(head.length)
    expect(starts.filter(s => s < head.length).length).toBeGreaterThan(head.length / STRUCTURE_CDC.max)
  })

  it('re-ships at most 1.5 MB of a 16 MB vocab-only GGUF when one key/value changes', async () => {
    const template = `{% for message in messages %}{{ message.content }}{% endfor %}${'x'.repeat(4000)}`
    const make = vocabGguf()
    const versions = {
      a: make('tokenizer test', template),
      // a longer name shifts every later byte; a template edit lands in the middle of the file
      b: make('tokenizer test, renamed', template),
      c: make('tokenizer test', template.replace('message.content', 'message["content"] | trim'))
    }
    for (const [v, bytes] of Object.entries(versions)) {
      await mkdir(join(dir, v))
      await writeFile(join(dir, v, 'vocab.gguf'), bytes)
    }
    expect(versions.a.length).toBeGreaterThan(16 * MB)
    const a = (await addPath(store, join(dir, 'a'), { name: 'v' })).manifest.files[0]!
    expect(a.structure).toMatchObject({ tensors: [], metadata: { 'general.name': 'tokenizer test' } })
    // No tensors: the whole file is one structure region, cut by content from end to end.
    const starts = cdcChunks(versions.a, STRUCTURE_CDC)
    expect(a.chunks.map(c => c.size)).toEqual(starts.map((s, i) => (starts[i + 1] ?? versions.a.length) - s))
    for (const v of ['b', 'c'] as const) {
      const file = (await addPath(store, join(dir, v), { name: 'v' })).manifest.files[0]!
      const sent = reshipped(a, file)
      expect(sent, `version ${v}`).toBeGreaterThan(0)
      expect(sent, `version ${v}`).toBeLessThanOrEqual(1.5 * MB)
    }
  })

  it('re-ships only the structure chunks around an edited key/value of llama.cpp\'s vocab-only GGUF', async () => {
    // test/fixtures/models/llama-vocab-bert-bge.gguf: a real file, 30k tokens, no tensors.
    const real = await readFile(join(ROOT, 'test', 'fixtures', 'models', 'llama-vocab-bert-bge.gguf'))
    // general.name is a string: key, u32 type 8, u64 length, bytes. Give it a longer value.
    const key = Buffer.from('general.name')
    const at = real.indexOf(key) + key.length
    expect(real.readUInt32LE(at)).toBe(8)
    const old = Number(real.readBigUInt64LE(at + 4))
    const name = Buffer.from('bert-bge, fine-tuned on support tickets')
    const length = Buffer.alloc(8)
    length.writeBigUInt64LE(BigInt(name.length))
    const edited = Buffer.concat([real.subarray(0, at + 4), length, name, real.subarray(at + 12 + old)])
    for (const [v, bytes] of [['a', real], ['b', edited]] as const) {
      await mkdir(join(dir, v))
      await writeFile(join(dir, v, 'vocab.gguf'), bytes)
    }
    const a = (await addPath(store, join(dir, 'a'), { name: 'bge' })).manifest.files[0]!
    const b = (await addPath(store, join(dir, 'b'), { name: 'bge' })).manifest.files[0]!
    expect(b.structure?.metadata['general.name']).toBe(name.toString())
    expect(a.chunks.length).toBeGreaterThan(1)
    const sent = reshipped(a, b)
    expect(sent).toBeGreaterThan(0)
    expect(sent).toBeLessThanOrEqual(STRUCTURE_CDC.max)
    // Only the chunk that holds the edit is new; the vocabulary after it is shared.
    const before = new Set(a.chunks.map(c => c.id))
    expect(b.chunks.filter(c => !before.has(c.id))).toHaveLength(1)
  })

  it('re-ships at most 1 MB of a 10 MB ONNX model when three Constant tensors change', async () => {
    const v1 = constantsOnnx(1)
    const v2 = constantsOnnx(7)
    expect(v1.length).toBeGreaterThan(9.5 * MB)
    await mkdir(join(dir, 'a'))
    await mkdir(join(dir, 'b'))
    await writeFile(join(dir, 'a', 'model.onnx'), v1)
    await writeFile(join(dir, 'b', 'model.onnx'), v2)
    const a = (await addPath(store, join(dir, 'a'), { name: 'x' })).manifest
    const b = (await addPath(store, join(dir, 'b'), { name: 'x' })).manifest
    // The weights are found: 38 matrices of 256 × 256 and three of 24 × 240.
    expect(b.structure.parameterCount).toBe(38 * 65536 + 3 * 5760)
    const sent = reshipped(a.files[0]!, b.files[0]!)
    expect(sent).toBeGreaterThanOrEqual(3 * 5760 * 4)
    expect(sent).toBeLessThanOrEqual(1 * MB)
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
