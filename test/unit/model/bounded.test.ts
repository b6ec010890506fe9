/**
 * Bounded memory: readers touch headers only. Each file here has a 64 MiB data region (a sparse
 * hole, so the test is cheap), and the reader must get through while reading < 2 MiB of it.
 */
import { mkdtemp, open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, it, expect } from 'vitest'
import { readStructure } from '../../../src/model/index.js'
import { openFileSource } from '../../../src/model/source.js'
import { concat, counting, gguf, joinBytes, pb, safetensors, u32, u64 } from './build.js'

const MiB = 1024 * 1024
type Piece = Uint8Array | { hole: number }

let dir = ''
beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'shoal-model-')) })
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

/** Writes pieces in order, leaving holes unwritten (sparse). Returns the path. */
async function sparse (name: string, pieces: Piece[]): Promise<string> {
  const path = join(dir, name)
  const fh = await open(path, 'w')
  let at = 0
  for (const p of pieces) {
    if (p instanceof Uint8Array) { await fh.write(p, 0, p.byteLength, at); at += p.byteLength } else at += p.hole
  }
  await fh.truncate(at)
  await fh.close()
  return path
}

async function readCounting (path: string, rel: string): Promise<{ s: Awaited<ReturnType<typeof readStructure>>, bytesRead: number, size: number }> {
  const file = await openFileSource(path)
  try {
    const src = counting(file)
    const s = await readStructure(rel, src)
    return { s, bytesRead: src.bytesRead, size: file.size }
  } finally {
    await file.close()
  }
}

describe('readers read headers only', () => {
  it('safetensors with a 64 MiB tensor', async () => {
    const head = safetensors({ big: { dtype: 'F32', shape: [16 * MiB], data_offsets: [0, 64 * MiB] } })
    const { s, bytesRead } = await readCounting(await sparse('big.safetensors', [head, { hole: 64 * MiB }]), 'big.safetensors')
    expect(s.tensors[0]).toMatchObject({ offset: head.byteLength, length: 64 * MiB })
    expect(bytesRead).toBeLessThan(2 * MiB)
  })

  it('GGUF with a 64 MiB tensor and a 150k-token vocabulary', async () => {
    const tokens = Array.from({ length: 150_000 }, (_, i) => gguf.str(`token-${i}`))
    const head = gguf.align(concat(
      gguf.header(1, 2), gguf.kvString('general.architecture', 'llama'),
      gguf.str('tokenizer.ggml.tokens'), u32(9), u32(8), u64(tokens.length), joinBytes(tokens),
      gguf.tensor('big', [16 * MiB], 0, 0)))
    const { s, bytesRead } = await readCounting(await sparse('big.gguf', [head, { hole: 64 * MiB }]), 'big.gguf')
    expect(s.headerLength).toBe(head.byteLength)
    expect(s.metadata['tokenizer.ggml.tokens']).toBe('[array string × 150000]')
    expect(s.tensors[0]).toMatchObject({ offset: head.byteLength, length: 64 * MiB })
    expect(bytesRead).toBeLessThan(head.byteLength + 2 * MiB)
    expect(bytesRead - head.byteLength).toBeLessThan(2 * MiB)
  })

  it('ONNX with sixteen 4 MiB initializers interleaved with structure', async () => {
    const data = 4 * MiB
    const inits = Array.from({ length: 16 }, (_, i) => {
      const prefix = concat(pb.int(1, MiB), pb.int(2, 1), pb.str(8, `w${i}`), pb.key(9, 2), pb.varint(data))
      return { head: concat(pb.key(5, 2), pb.varint(prefix.byteLength + data), prefix) }
    })
    const graphLen = inits.reduce((n, x) => n + x.head.byteLength + data, 0)
    const pieces: Piece[] = [pb.int(1, 8), pb.key(7, 2), pb.varint(graphLen)]
    for (const x of inits) pieces.push(x.head, { hole: data })
    pieces.push(pb.msg(8, pb.str(1, ''), pb.int(2, 17)))
    const { s, bytesRead, size } = await readCounting(await sparse('big.onnx', pieces), 'big.onnx')
    expect(size).toBeGreaterThan(64 * MiB)
    expect(s.tensors).toHaveLength(16)
    expect(s.tensors.every(t => t.length === data)).toBe(true)
    expect(s.graph?.opsets).toEqual({ 'ai.onnx': 17 })
    expect(bytesRead).toBeLessThan(2 * MiB)
  })
})
