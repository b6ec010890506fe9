import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it, expect } from 'vitest'
import { detectFormat, parameterCount, readStructure, summarize } from '../../../src/model/index.js'
import { bufferSource, openFileSource } from '../../../src/model/source.js'
import type { FileStructure } from '../../../src/model/types.js'
import { concat, expectMalformed, gguf, joinBytes, u32, u64, utf8 } from './build.js'

const none = new Uint8Array(0)

describe('detectFormat', () => {
  it('goes by name, and by magic for GGUF', () => {
    expect(detectFormat('a/model.safetensors', none)).toBe('safetensors')
    expect(detectFormat('model.safetensors.index.json', none)).toBe('safetensors-index')
    expect(detectFormat('sub/diffusion_pytorch_model.safetensors.index.json', none)).toBe('safetensors-index')
    expect(detectFormat('x/Model.GGUF', none)).toBe('gguf')
    expect(detectFormat('model-q4', utf8('GGUF'))).toBe('gguf')
    expect(detectFormat('model.onnx', none)).toBe('onnx')
    expect(detectFormat('model.onnx.data', none)).toBe('other')
    expect(detectFormat('config.json', utf8('{"a"'))).toBe('other')
    expect(detectFormat('safetensors.json', none)).toBe('other')
  })
})

describe('readStructure', () => {
  it('dispatches by name and returns `other` with no tensors for the rest', async () => {
    const s = await readStructure('tokenizer.json', bufferSource(utf8('{}')))
    expect(s).toEqual({ format: 'other', headerLength: 0, tensors: [], parameterCount: 0, dtypes: [], metadata: {} })
    expect((await readStructure('empty.bin', bufferSource(none))).format).toBe('other')
    const g = await readStructure('weights', bufferSource(gguf.align(gguf.header(0, 0))))
    expect(g.format).toBe('gguf')
  })

  it('names the file in errors', async () => {
    await expectMalformed(readStructure('models/bad.safetensors', bufferSource(utf8('nope'))), /^models\/bad\.safetensors: /)
    await expectMalformed(readStructure('models/bad.gguf', bufferSource(new Uint8Array(32))), /^models\/bad\.gguf: bad magic/)
    await expectMalformed(readStructure('models/bad.onnx', bufferSource(new Uint8Array([0x08]))), /^models\/bad\.onnx: /)
  })
})

describe('sources', () => {
  it('refuse reads past the end with MalformedModelError', async () => {
    await expectMalformed(bufferSource(new Uint8Array(4), 'b').read(2, 4), /b: read of 4 bytes at offset 2 is outside the file \(4 bytes\)/)
    const dir = await mkdtemp(join(tmpdir(), 'shoal-src-'))
    try {
      await writeFile(join(dir, 'f'), 'hello')
      const src = await openFileSource(join(dir, 'f'))
      try {
        expect(src.size).toBe(5)
        expect(new TextDecoder().decode(await src.read(1, 3))).toBe('ell')
        await expectMalformed(src.read(3, 3), /outside the file/)
      } finally {
        await src.close()
      }
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('summarize', () => {
  const file = (over: Partial<FileStructure>): FileStructure =>
    ({ format: 'safetensors', headerLength: 8, tensors: [], parameterCount: 0, dtypes: [], metadata: {}, ...over })

  it('merges formats, counts and dtypes; a declared architecture beats a guess', () => {
    const t = { name: 't', dtype: 'F16', shape: [2, 3], offset: 8, length: 12 }
    const summary = summarize([
      file({ architecture: 'llama-like decoder', architectureFrom: 'tensor-names', tensors: [t], parameterCount: 6, dtypes: ['F16'] }),
      file({ format: 'gguf', architecture: 'llama', architectureFrom: 'metadata', tensors: [t, t], parameterCount: 12, dtypes: ['Q4_K', 'F16'] }),
      file({ format: 'other' })
    ])
    expect(summary).toEqual({ formats: ['gguf', 'safetensors'], parameterCount: 18, dtypes: ['F16', 'Q4_K'], architecture: 'llama', tensorCount: 3 })
    expect(summarize([])).toEqual({ formats: [], parameterCount: 0, dtypes: [], tensorCount: 0 })
    expect(parameterCount([t, { ...t, shape: [] }, { ...t, shape: [4, 0] }])).toBe(7)
  })
})

describe('readStructure with a signal', () => {
  it('stops at the next read once aborted, with an AbortedError', async () => {
    const controller = new AbortController()
    const tokens = Array.from({ length: 20_000 }, (_, i) => gguf.str(`token-${i}`))
    const bytes = concat(gguf.header(0, 1), gguf.str('tokenizer.ggml.tokens'), u32(9), u32(8), u64(tokens.length), joinBytes(tokens))
    let reads = 0
    const src = { size: bytes.byteLength, async read (offset: number, length: number) { if (++reads === 2) controller.abort(); return bytes.subarray(offset, offset + length) } }
    const err = await readStructure('m.gguf', src, controller.signal).then(() => undefined, (e: unknown) => e as Error)
    expect(err).toMatchObject({ name: 'AbortedError', message: 'reading m.gguf was cancelled' })
    expect(reads).toBe(2)
  })
})

