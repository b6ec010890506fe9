/**
 * Load order (`core/load-order.ts`): a file's chunks as a loader reads them — header first,
 * tensors in the format's order (a `loadOrder` hint's groups first), then every other chunk in
 * file order, each chunk once; ONNX external data takes the tensors the `.onnx` declares in it.
 */
import { describe, expect, it } from 'vitest'
import type { ChunkId } from '../../../src/core/digest.js'
import { globRegex, loadOrder } from '../../../src/core/load-order.js'
import type { Manifest } from '../../../src/core/manifest.js'

/** A manifest with only what `loadOrder` reads. */
function manifest (files: Array<{ path: string, format?: string, chunks: number[], headerLength?: number, tensors?: Array<{ name: string, offset: number, length: number, file?: string }> }>, hint?: string[]): Manifest {
  return {
    metadata: hint === undefined ? {} : { loadOrder: hint },
    files: files.map(f => ({
      path: f.path,
      format: f.format ?? 'safetensors',
      chunks: f.chunks.map((size, i) => ({ id: `${f.path}#${i}` as ChunkId, size })),
      ...(f.headerLength !== undefined || f.tensors !== undefined ? { structure: { headerLength: f.headerLength ?? 0, tensors: (f.tensors ?? []).map(t => ({ dtype: 'F32', shape: [1], ...t })) } } : {})
    }))
  } as unknown as Manifest
}

const at = (path: string, ...indices: number[]): string[] => indices.map(i => `${path}#${i}`)

describe('loadOrder', () => {
  // Header [0, 100), tensors a [100, 300) over chunks 1-2, b [300, 400) chunk 3, a gap chunk 4.
  const file = { path: 'm.safetensors', chunks: [100, 100, 100, 100, 50], headerLength: 100, tensors: [{ name: 'b', offset: 300, length: 100 }, { name: 'a', offset: 100, length: 200 }] }

  it('puts the header first, then tensors as listed, then the rest in file order', () => {
    expect(loadOrder(manifest([file]), 0)).toEqual(at('m.safetensors', 0, 3, 1, 2, 4))
  })

  it('puts the tensors a loadOrder hint names first, pattern by pattern', () => {
    const m = manifest([{ ...file, tensors: [{ name: 'layers.0.w', offset: 100, length: 100 }, { name: 'layers.1.w', offset: 200, length: 100 }, { name: 'embed', offset: 300, length: 100 }] }], ['embed', 'layers.1.*'])
    expect(loadOrder(m, 0)).toEqual(at('m.safetensors', 0, 3, 2, 1, 4))
  })

  it('gives a file without tensors in file order, and every chunk once', () => {
    expect(loadOrder(manifest([{ path: 'config.json', format: 'other', chunks: [10, 20, 30] }]), 0)).toEqual(at('config.json', 0, 1, 2))
  })

  it('orders an ONNX external data file by the tensors the .onnx file declares in it', () => {
    const m = manifest([
      { path: 'dir/model.onnx', format: 'onnx', chunks: [500], headerLength: 0, tensors: [{ name: 'w2', offset: 200, length: 100, file: 'weights.bin' }, { name: 'w1', offset: 0, length: 100, file: 'weights.bin' }] },
      { path: 'dir/weights.bin', format: 'onnx-data', chunks: [100, 100, 100] }
    ])
    expect(loadOrder(m, 1)).toEqual(at('dir/weights.bin', 2, 0, 1))
  })

  it('reads * in a pattern as any run of characters and everything else literally', () => {
    expect(globRegex('layers.*.w').test('layers.12.w')).toBe(true)
    expect(globRegex('layers.*.w').test('layersX12Xw')).toBe(false)
    expect(globRegex('a(b)').test('a(b)')).toBe(true)
  })
})
