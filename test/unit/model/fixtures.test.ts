/**
 * Real files made by other tools (see test/fixtures/models/README.md): what we read must agree with
 * `expected.json` and `expected-exporters.json`, which the generators wrote from python-onnx /
 * numpy / torch. Data ranges are
 * checked by hashing the bytes at the offsets we report.
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, it, expect } from 'vitest'
import { readStructure, summarize } from '../../../src/model/index.js'
import { openFileSource } from '../../../src/model/source.js'
import type { FileStructure } from '../../../src/model/types.js'

const DIR = join(dirname(fileURLToPath(import.meta.url)), '../../fixtures/models')

interface ExpectedTensor { name: string, dtype: string, shape: number[], sha256: string, file?: string, offset?: number, length?: number }
interface Expected {
  format: string
  headerLength?: number
  tensors?: ExpectedTensor[]
  parameterCount?: number
  metadata?: Record<string, unknown>
  shards?: string[]
  graph?: Record<string, unknown>
}
const load = (name: string): Record<string, Expected> => JSON.parse(readFileSync(join(DIR, name), 'utf8')) as Record<string, Expected>
// expected-exporters.json: weights in Constant nodes and subgraphs (make-exporter-fixtures.py).
const expected = { ...load('expected.json'), ...load('expected-exporters.json') }
const fixtures = Object.keys(expected).filter(k => !k.startsWith('_'))

async function structureOf (rel: string): Promise<FileStructure> {
  const src = await openFileSource(join(DIR, rel))
  try {
    return await readStructure(rel, src)
  } finally {
    await src.close()
  }
}

function sha256At (path: string, offset: number, length: number): string {
  return createHash('sha256').update(readFileSync(path).subarray(offset, offset + length)).digest('hex')
}

describe('real model files', () => {
  it('covers every format', () => {
    expect(new Set(fixtures.map(f => expected[f]?.format))).toEqual(new Set(['safetensors', 'safetensors-index', 'gguf', 'onnx']))
  })

  for (const rel of fixtures) {
    it(`reads ${rel} as the generator describes it`, async () => {
      const want = expected[rel] as Expected
      const s = await structureOf(rel)
      expect(s.format).toBe(want.format)
      if (want.headerLength !== undefined) expect(s.headerLength).toBe(want.headerLength)
      if (want.parameterCount !== undefined) expect(s.parameterCount).toBe(want.parameterCount)
      if (want.shards !== undefined) expect(s.shards).toEqual(want.shards)

      const byName = (a: { name: string }, b: { name: string }): number => a.name.localeCompare(b.name)
      const got = [...s.tensors].sort(byName)
      const wanted = [...(want.tensors ?? [])].sort(byName)
      expect(got.map(t => [t.name, t.dtype, t.shape, t.file])).toEqual(wanted.map(t => [t.name, t.dtype, t.shape, t.file]))
      for (const [i, t] of got.entries()) {
        const w = wanted[i] as ExpectedTensor
        if (w.offset !== undefined) expect([t.offset, t.length]).toEqual([w.offset, w.length])
        const file = join(DIR, dirname(rel), t.file ?? rel.split('/').pop() as string)
        expect(sha256At(file, t.offset, t.length), `data of ${t.name}`).toBe(w.sha256)
      }
      for (let i = 1; i < s.tensors.length; i++) {
        const [a, b] = [s.tensors[i - 1], s.tensors[i]]
        if (a?.file === b?.file) expect((b?.offset ?? 0) >= (a?.offset ?? 0) + (a?.length ?? 0)).toBe(true)
      }

      if (want.format !== 'gguf' && want.metadata !== undefined) expect(s.metadata).toEqual(want.metadata)
      if (want.graph !== undefined) expect(s.graph).toMatchObject(want.graph)
    })
  }

  it('summarises GGUF metadata without copying the vocabulary', async () => {
    const s = await structureOf('tiny-llama.gguf')
    expect(s.architecture).toBe('llama')
    expect(s.dtypes).toEqual(['BF16', 'F16', 'F32', 'Q4_K', 'Q6_K', 'Q8_0'])
    expect(s.metadata).toMatchObject({
      'general.name': 'shoal tiny llama',
      'general.quantized': true,
      'general.size_hint': 2n ** 60n,
      'general.offset_hint': -5,
      'general.tags': ['tiny', 'test'],
      'shoal.nested': [[1, 2], [3]],
      'llama.context_length': 128,
      'llama.rope.freq_base': 10000,
      'llama.attention.layer_norm_rms_epsilon': 1e-5,
      'tokenizer.ggml.tokens': '[array string × 1000]',
      'tokenizer.ggml.scores': '[array float32 × 1000]',
      'tokenizer.ggml.token_type': '[array int32 × 1000]'
    })
  })

  it('summarises a sharded safetensors model', async () => {
    const rels = ['sharded/model.safetensors.index.json', 'sharded/model-00001-of-00002.safetensors', 'sharded/model-00002-of-00002.safetensors']
    const summary = summarize(await Promise.all(rels.map(structureOf)))
    expect(summary).toEqual({
      formats: ['safetensors', 'safetensors-index'],
      parameterCount: expected['tiny-llama.safetensors']?.parameterCount,
      dtypes: ['BF16', 'F16', 'F32', 'I64', 'U8'],
      architecture: 'llama-like decoder',
      tensorCount: 8
    })
  })

  it('finds the weights exporters keep in Constant nodes and subgraphs', async () => {
    for (const rel of ['exporter-constants.onnx', 'exporter-subgraphs.onnx', 'testdata-if.onnx', 'testdata-loop11.onnx', 'testdata-poisson-nll.onnx']) {
      const s = await structureOf(rel)
      expect(s.tensors.length, rel).toBeGreaterThan(0)
      expect(s.parameterCount, rel).toBe(expected[rel]?.parameterCount)
    }
    const s = await structureOf('exporter-subgraphs.onnx')
    // Subgraph inputs and outputs are not the model's.
    expect(s.graph?.inputs.map(i => i.name)).toEqual(['x', 'cond', 'trips'])
    expect(s.graph?.nodeCount).toBe(2)
  })

  it('reads llama.cpp\'s vocab-only GGUF as llama.cpp\'s gguf-py does (expected-gguf.json)', async () => {
    const want = JSON.parse(readFileSync(join(DIR, 'expected-gguf.json'), 'utf8')) as Record<string, { tensorCount: number, metadata: Record<string, unknown> }>
    for (const [rel, w] of Object.entries(want).filter(([k]) => !k.startsWith('_'))) {
      const s = await structureOf(rel)
      expect(s).toMatchObject({ format: 'gguf', parameterCount: 0, architecture: w.metadata['general.architecture'] })
      expect(s.tensors).toHaveLength(w.tensorCount)
      // Arrays longer than MAX_INLINE_ARRAY_LENGTH are summarised with their type and length.
      const mine = Object.fromEntries(Object.entries(w.metadata).map(([k, v]) => {
        const arr = v as { array?: string, length?: number }
        return [k, arr.array !== undefined ? `[array ${arr.array} × ${arr.length ?? 0}]` : v]
      }))
      expect(s.metadata).toEqual(mine)
    }
  })

  it('leaves ONNX external data files to the model that references them', async () => {
    const s = await structureOf('onnx-external/weights.bin')
    expect(s).toMatchObject({ format: 'other', tensors: [], parameterCount: 0 })
  })
})
