/** `shoal show` without --json: the key facts of GGUF and ONNX files. */
import { describe, expect, it } from 'vitest'
import { wireNote } from '../../../src/cli/progress.js'
import { fileFacts, renderPeers, renderShow } from '../../../src/cli/views.js'
import type { FileStructureRecord } from '../../../src/core/manifest.js'
import type { ShowFile, ShowResult } from '../../../src/rpc/api.js'

const structure = (s: Partial<FileStructureRecord>): FileStructureRecord =>
  ({ headerLength: 0, tensors: [], parameterCount: 0, dtypes: [], metadata: {}, ...s })
const file = (path: string, format: string, s?: FileStructureRecord): ShowFile =>
  ({ path, size: 1000, digest: 'bafy', format, chunks: 1, ...(s !== undefined ? { structure: s } : {}) })

const gguf = file('model.gguf', 'gguf', structure({
  architecture: 'llama',
  dtypes: ['F32', 'Q4_K', 'Q6_K'],
  metadata: {
    'general.architecture': 'llama',
    'general.name': 'Tiny Llama',
    'general.file_type': 15,
    'llama.context_length': 8192,
    'tokenizer.ggml.model': 'gpt2',
    'tokenizer.ggml.tokens': '[array string × 128256]',
    'tokenizer.chat_template': '{% for m in messages %}{{ m.content }}{% endfor %}'
  }
}))

const onnx = file('model.onnx', 'onnx', structure({
  graph: {
    irVersion: 8,
    opsets: { 'ai.onnx': 17, 'com.microsoft': 1 },
    producer: 'pytorch',
    producerVersion: '2.1.0',
    nodeCount: 42,
    inputs: [{ name: 'input_ids', dtype: 'INT64', shape: ['batch', 'sequence'] }],
    outputs: Array.from({ length: 10 }, (_, i) => ({ name: `out${i}`, dtype: 'FLOAT', shape: ['batch', 4] }))
  }
}))

describe('fileFacts', () => {
  it('gives a GGUF file\'s architecture, context length, quantization, vocabulary and chat template', () => {
    expect(fileFacts(gguf)).toEqual([
      'GGUF llama "Tiny Llama" · context 8192 · quantization Q4_K_M · tensor types F32, Q4_K, Q6_K · vocabulary 128256 tokens (gpt2) · chat template'
    ])
    // What a file does not say is left out; an unknown file type shows its number.
    const bare = file('v.gguf', 'gguf', structure({ metadata: { 'general.file_type': 99 } }))
    expect(fileFacts(bare)).toEqual(['GGUF architecture unknown · quantization file type 99'])
  })

  it('gives an ONNX file\'s opsets, producer, and inputs and outputs with their shapes', () => {
    expect(fileFacts(onnx)).toEqual([
      'ONNX IR 8 · opsets ai.onnx 17, com.microsoft 1 · producer pytorch 2.1.0 · 42 nodes',
      'inputs  input_ids INT64[batch, sequence]',
      'outputs out0 FLOAT[batch, 4], out1 FLOAT[batch, 4], out2 FLOAT[batch, 4], out3 FLOAT[batch, 4], out4 FLOAT[batch, 4], out5 FLOAT[batch, 4], out6 FLOAT[batch, 4], out7 FLOAT[batch, 4], … 2 more'
    ])
  })

  it('says nothing for other formats', () => {
    expect(fileFacts(file('model.safetensors', 'safetensors', structure({ dtypes: ['BF16'] })))).toEqual([])
    expect(fileFacts(file('notes.txt', 'other'))).toEqual([])
  })

  it('is part of what show prints, under each file\'s path', () => {
    const v: ShowResult = {
      name: 'tiny', version: 'bafyversion', schema: 2, blockSize: 262144, created: 0, parent: null, path: '/x',
      labels: [], pinned: false, complete: true, missing: [], metadata: {},
      structure: { formats: ['gguf', 'onnx'], parameterCount: 0, dtypes: [], tensorCount: 0, totalSize: 2000 },
      files: [gguf, onnx]
    }
    const lines = renderShow(v, 10).split('\n')
    expect(lines).toContain(`  model.gguf  ${fileFacts(gguf)[0] ?? ''}`)
    expect(lines).toContain(`  model.onnx  ${fileFacts(onnx)[0] ?? ''}`)
    expect(lines).toContain('              inputs  input_ids INT64[batch, sequence]')
  })
})

describe('shoal peers and pull progress: bytes on the wire', () => {
  it('peers shows what blocks took on the link beside what they carried, with the share when compression saved some', () => {
    const text = renderPeers([{ peerId: '12D3KooWAbCdEf', addresses: ['/ip4/10.0.0.2/tcp/4077'], connected: true, bytesReceived: 100 * 1024 * 1024, wireBytesReceived: 67 * 1024 * 1024, bytesSent: 10 * 1024 * 1024, wireBytesSent: 10 * 1024 * 1024, offences: {} }])
    const [head, row] = text.split('\n')
    expect(head).toMatch(/RECEIVED +ON THE WIRE +SENT +ON THE WIRE/)
    expect(row).toMatch(/100(\.0)? MiB +67(\.0)? MiB \(67%\) +10(\.0)? MiB +10(\.0)? MiB /)
  })

  it('pull progress notes the share on the wire only when blocks came compressed', () => {
    expect(wireNote({ wireBytes: 670, receivedBytes: 1000 })).toBe(', 67% on the wire')
    expect(wireNote({ wireBytes: 1000, receivedBytes: 1000 })).toBe('')
    expect(wireNote({})).toBe('')
  })
})
