import { describe, it, expect } from 'vitest'
import { readSafetensors, architectureFromNames } from '../../../src/model/safetensors.js'
import { readSafetensorsIndex } from '../../../src/model/safetensors-index.js'
import { bufferSource } from '../../../src/model/source.js'
import { concat, expectMalformed, safetensors, u64, utf8 } from './build.js'

const read = async (bytes: Uint8Array): Promise<ReturnType<typeof readSafetensors>> => await readSafetensors(bufferSource(bytes), 'm.safetensors')

describe('readSafetensors', () => {
  it('reads tensors as absolute, sorted ranges with metadata and a name-based hint', async () => {
    const header = {
      __metadata__: { format: 'pt' },
      'model.layers.0.self_attn.q_proj.weight': { dtype: 'BF16', shape: [2, 4], data_offsets: [16, 32] },
      'model.embed_tokens.weight': { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] },
      empty: { dtype: 'F16', shape: [0, 3], data_offsets: [32, 32] },
      packed: { dtype: 'F4', shape: [4], data_offsets: [32, 34] }
    }
    const bytes = safetensors(header, 34)
    const n = bytes.byteLength - 34 - 8
    const s = await read(bytes)
    expect(s.format).toBe('safetensors')
    expect(s.headerLength).toBe(8 + n)
    expect(s.tensors.map(t => [t.name, t.offset - s.headerLength, t.length])).toEqual([
      ['model.embed_tokens.weight', 0, 16],
      ['model.layers.0.self_attn.q_proj.weight', 16, 16],
      ['empty', 32, 0],
      ['packed', 32, 2]
    ])
    expect(s.parameterCount).toBe(4 + 8 + 0 + 4)
    expect(s.dtypes).toEqual(['BF16', 'F16', 'F32', 'F4'])
    expect(s.metadata).toEqual({ format: 'pt' })
    expect(s.architecture).toBe('llama-like decoder')
    expect(s.architectureFrom).toBe('tensor-names')
  })

  it('prefers an architecture declared in __metadata__', async () => {
    const s = await read(safetensors({ __metadata__: { 'modelspec.architecture': 'stable-diffusion-xl-v1-base' } }))
    expect(s.architecture).toBe('stable-diffusion-xl-v1-base')
    expect(s.architectureFrom).toBe('metadata')
    expect(s.tensors).toEqual([])
  })

  it('guesses common layouts from names', () => {
    expect(architectureFromNames(['transformer.h.0.attn.c_attn.weight'])).toBe('gpt2-like decoder')
    expect(architectureFromNames(['bert.embeddings.word_embeddings.weight'])).toBe('bert-like encoder')
    expect(architectureFromNames(['foo'])).toBeUndefined()
  })

  describe('refuses malformed headers', () => {
    const one = (entry: unknown, dataLength = 16): Uint8Array => safetensors({ t: entry }, dataLength)

    it('file shorter than the length prefix', async () => {
      await expectMalformed(read(new Uint8Array(5)), /too small/)
    })
    it('header length past the end of the file', async () => {
      await expectMalformed(read(concat(u64(1000), utf8('{}'))), /header length 1000/, /past the end/)
    })
    it('absurd header length', async () => {
      await expectMalformed(read(concat(u64(2n ** 62n), utf8('{}'))), /header length 4611686018427387904 is over the limit of 16777216 bytes/)
    })
    it('truncated header', async () => {
      const full = safetensors({ t: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, 4)
      await expectMalformed(read(full.subarray(0, 20)), /past the end/)
    })
    it('bad JSON', async () => {
      await expectMalformed(read(safetensors('{"t": {')), /not valid JSON/)
    })
    it('non-UTF-8 JSON', async () => {
      await expectMalformed(read(safetensors(new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]))), /UTF-8/)
    })
    it('a header that is not an object', async () => {
      await expectMalformed(read(safetensors('[1,2]')), /not a JSON object/)
    })
    it('unknown dtype', async () => {
      await expectMalformed(read(one({ dtype: 'F128', shape: [1], data_offsets: [0, 16] })), /tensor "t"/, /unknown dtype "F128"/)
    })
    it('negative or fractional dimensions', async () => {
      await expectMalformed(read(one({ dtype: 'U8', shape: [-1], data_offsets: [0, 16] })), /non-negative integer/)
      await expectMalformed(read(one({ dtype: 'U8', shape: [1.5], data_offsets: [0, 16] })), /non-negative integer/)
    })
    it('too many dimensions', async () => {
      await expectMalformed(read(one({ dtype: 'U8', shape: [1, 1, 1, 1, 1, 1, 1, 1, 1], data_offsets: [0, 1] })), /9 dimensions/)
    })
    it('a shape whose product overflows u64', async () => {
      const big = 2 ** 40
      await expectMalformed(read(one({ dtype: 'F32', shape: [big, big], data_offsets: [0, 16] })), /needs \d+ bytes but data_offsets span 16/)
    })
    it('shape and offsets that disagree', async () => {
      await expectMalformed(read(one({ dtype: 'F32', shape: [2], data_offsets: [0, 16] })), /needs 8 bytes but data_offsets span 16/)
    })
    it('offsets out of range', async () => {
      await expectMalformed(read(one({ dtype: 'U8', shape: [32], data_offsets: [0, 32] })), /past the data region \(16 bytes/)
      await expectMalformed(read(one({ dtype: 'U8', shape: [0], data_offsets: [8, 4] })), /begin <= end/)
      await expectMalformed(read(one({ dtype: 'U8', shape: [1], data_offsets: [0] })), /\[begin, end\]/)
    })
    it('overlapping tensors', async () => {
      const bytes = safetensors({
        a: { dtype: 'U8', shape: [8], data_offsets: [0, 8] },
        b: { dtype: 'U8', shape: [8], data_offsets: [4, 12] }
      }, 16)
      await expectMalformed(read(bytes), /"a" and "b" overlap/)
    })
    it('names from the file appear escaped in the message, never raw', async () => {
      const e = await expectMalformed(read(safetensors({ 'evil\u202eb': { dtype: 'F128', shape: [1], data_offsets: [0, 16] } })), /tensor "evil\\u202eb": unknown dtype/)
      expect(e.message).not.toMatch(/\u202e/)
    })
    it('non-string metadata', async () => {
      await expectMalformed(read(safetensors({ __metadata__: { n: 1 } })), /__metadata__ value for "n"/)
    })
  })
})

describe('readSafetensorsIndex', () => {
  const index = async (doc: unknown): Promise<ReturnType<typeof readSafetensorsIndex>> =>
    await readSafetensorsIndex(bufferSource(utf8(typeof doc === 'string' ? doc : JSON.stringify(doc))), 'model.safetensors.index.json')

  it('lists distinct shards and keeps metadata', async () => {
    const s = await index({
      metadata: { total_size: 1234, nested: { a: 1 } },
      weight_map: { a: 'model-00002-of-00002.safetensors', b: 'model-00001-of-00002.safetensors', c: 'sub/model-00001.safetensors', d: 'model-00001-of-00002.safetensors' }
    })
    expect(s.format).toBe('safetensors-index')
    expect(s.shards).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'sub/model-00001.safetensors'])
    expect(s.tensors).toEqual([])
    expect(s.metadata).toEqual({ total_size: 1234, nested: '{"a":1}' })
  })

  it('refuses shard paths that escape the model folder', async () => {
    await expectMalformed(index({ weight_map: { a: '../x.safetensors' } }), /"\.\." segment/, /tensor "a"/)
    await expectMalformed(index({ weight_map: { a: 'sub/../../x.safetensors' } }), /"\.\." segment/)
    await expectMalformed(index({ weight_map: { a: '/etc/passwd' } }), /absolute/)
    await expectMalformed(index({ weight_map: { a: 'C:\\x.safetensors' } }), /absolute/)
    await expectMalformed(index({ weight_map: { a: 'x\u0000.safetensors' } }), /NUL/)
    await expectMalformed(index({ weight_map: { a: '' } }), /empty/)
    await expectMalformed(index({ weight_map: { a: 'model\u202egpj.safetensors' } }), /shard for tensor "a" "model\\u202egpj\.safetensors" contains U\+202E RIGHT-TO-LEFT OVERRIDE/)
  })

  it('refuses a malformed index', async () => {
    await expectMalformed(index('{"weight_map": '), /not valid JSON/, /value is missing/)
    await expectMalformed(index({ metadata: {} }), /no "weight_map"/)
    await expectMalformed(index({ weight_map: { a: 1 } }), /not a file name/)
    await expectMalformed(index([]), /not a JSON object/)
  })
})
