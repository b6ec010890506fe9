/**
 * Totals and counts: every reader refuses a header that is over a limit in size, count or total
 * before it builds what the header describes, with a message that names the file, what was over
 * which limit, and the limit; and a large header that is within the limits is read with the event
 * loop turning, so a daemon reading it keeps answering.
 */
import { describe, expect, it } from 'vitest'
import { readGguf } from '../../../src/model/gguf.js'
import {
  MAX_GGUF_ARRAY_ELEMENTS, MAX_GGUF_HEADER_BYTES, MAX_GGUF_METADATA_BYTES, MAX_GGUF_NAME_BYTES, MAX_GGUF_TENSOR_NAME_BYTES,
  MAX_JSON_DEPTH, MAX_METADATA_VALUE_BYTES, MAX_ONNX_FIELDS, MAX_ONNX_KEPT_BYTES, MAX_SAFETENSORS_ENTRY_BYTES, MAX_SAFETENSORS_HEADER_BYTES,
  MAX_TENSOR_COUNT
} from '../../../src/model/limits.js'
import { readOnnx } from '../../../src/model/onnx.js'
import { readSafetensorsIndex } from '../../../src/model/safetensors-index.js'
import { readSafetensors } from '../../../src/model/safetensors.js'
import { bufferSource } from '../../../src/model/source.js'
import type { ByteSource } from '../../../src/model/types.js'
import { concat, counting, expectMalformed, gguf, joinBytes, pb, safetensors, u32, u64, utf8 } from './build.js'

const MiB = 1024 * 1024

/** A file of `size` bytes that starts with `head` and is zeros after it, without holding them. */
function zerosAfter (head: Uint8Array, size: number): ByteSource {
  const zeros = new Uint8Array(4 * MiB)
  return {
    size,
    async read (offset, length) {
      const out = length <= zeros.byteLength && offset >= head.byteLength ? zeros.subarray(0, length) : new Uint8Array(length)
      if (offset < head.byteLength) out.set(head.subarray(offset, Math.min(head.byteLength, offset + length)))
      return out
    }
  }
}

/** A safetensors header text of `n` zero-length U8 tensors (about 50 bytes each). */
function tinyTensors (n: number, extra = ''): string {
  const parts: string[] = []
  for (let i = 0; i < n; i++) parts.push(`"t${i}":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}`)
  return `{${extra}${parts.join(',')}}`
}

/** Runs `work` and counts how many times the event loop got a turn (a setImmediate callback ran) meanwhile. */
async function turnsDuring (work: () => Promise<unknown>): Promise<number> {
  let turns = 0
  let running = true
  const tick = (): void => { if (running) { turns++; setImmediate(tick) } }
  setImmediate(tick)
  try {
    await work()
  } finally {
    running = false
  }
  return turns
}

describe('safetensors limits', () => {
  const read = async (bytes: Uint8Array): Promise<unknown> => await readSafetensors(bufferSource(bytes), 'big.safetensors')

  it('refuses a header over MAX_SAFETENSORS_HEADER_BYTES by its declared length, before reading it', async () => {
    const declared = MAX_SAFETENSORS_HEADER_BYTES + 1
    await expectMalformed(readSafetensors(zerosAfter(u64(declared), 8 + declared), 'big.safetensors'),
      /^big\.safetensors: /, new RegExp(`header length ${declared} is over the limit of ${MAX_SAFETENSORS_HEADER_BYTES} bytes`))
  })

  it('refuses more than MAX_TENSOR_COUNT entries from a scan, before parsing any', async () => {
    const text = tinyTensors(MAX_TENSOR_COUNT + 2)
    expect(text.length).toBeLessThan(MAX_SAFETENSORS_HEADER_BYTES)
    await expectMalformed(read(safetensors(text)), /^big\.safetensors: safetensors header has more than 262145 entries, over the limit of 262145/)
  })

  it('refuses an entry over MAX_SAFETENSORS_ENTRY_BYTES', async () => {
    const pad = 'x'.repeat(MAX_SAFETENSORS_ENTRY_BYTES)
    await expectMalformed(read(safetensors(`{"t":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"pad":"${pad}"}}`)),
      /tensor "t": its entry is \d+ characters of JSON, over the limit of 65536/)
  })

  it('refuses nesting deeper than MAX_JSON_DEPTH and a key given twice', async () => {
    const deep = `${'['.repeat(MAX_JSON_DEPTH)}${']'.repeat(MAX_JSON_DEPTH)}`
    await expectMalformed(read(safetensors(`{"t":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":${deep}}}`)),
      /safetensors header nests arrays and objects deeper than 32 levels/)
    await expectMalformed(read(safetensors('{"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"t":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', 2)),
      /safetensors header gives the key "t" twice/)
  })

  it('reads a large header within the limits giving the event loop turns all along', async () => {
    const n = 60_000
    const bytes = safetensors(tinyTensors(n, '"__metadata__":{"format":"pt"},'))
    let tensors = 0
    const turns = await turnsDuring(async () => { tensors = ((await readSafetensors(bufferSource(bytes), 'big.safetensors')).tensors.length) })
    expect(tensors).toBe(n)
    console.log(`safetensors header of ${bytes.byteLength} bytes, ${n} tensors: ${turns} event-loop turns while reading`)
    // The source answers from memory, so every turn is one the reader gave: at least one per 2048 entries.
    expect(turns).toBeGreaterThanOrEqual(Math.floor(n / 2048))
  })
})

describe('safetensors index limits', () => {
  const index = async (text: string): Promise<unknown> => await readSafetensorsIndex(bufferSource(utf8(text)), 'model.safetensors.index.json')

  it('refuses metadata nested deeper than MAX_JSON_DEPTH (it would overflow the stack when re-encoded)', async () => {
    const depth = 20_000
    await expectMalformed(index(`{"metadata":{"x":${'['.repeat(depth)}${']'.repeat(depth)}},"weight_map":{}}`),
      /^model\.safetensors\.index\.json: safetensors index nests arrays and objects deeper than 32 levels/)
  })

  it('refuses a weight_map of more than MAX_TENSOR_COUNT entries', async () => {
    const parts: string[] = []
    for (let i = 0; i <= MAX_TENSOR_COUNT; i++) parts.push(`"t${i}":"a.safetensors"`)
    await expectMalformed(index(`{"weight_map":{${parts.join(',')}}}`),
      /safetensors index weight_map has more than 262144 entries, over the limit of 262144/)
  })
})

describe('GGUF limits', () => {
  const read = async (src: ByteSource | Uint8Array): Promise<unknown> => await readGguf(src instanceof Uint8Array ? bufferSource(src) : src, 'big.gguf')

  it('refuses a tensor_count over MAX_TENSOR_COUNT before reading any tensor info', async () => {
    await expectMalformed(read(zerosAfter(gguf.header(MAX_TENSOR_COUNT + 1, 0), 64 * MiB)),
      /^big\.gguf: tensor_count 262145 exceeds the limit of 262144/)
  })

  it('refuses a key or tensor name over MAX_GGUF_NAME_BYTES, before reading it', async () => {
    const long = 16 * MiB
    await expectMalformed(read(zerosAfter(concat(gguf.header(1, 0), u64(long)), 64 * MiB)),
      new RegExp(`tensor 0 name is ${long} bytes, over the limit of ${MAX_GGUF_NAME_BYTES} bytes`))
    await expectMalformed(read(zerosAfter(concat(gguf.header(0, 1), u64(MAX_GGUF_NAME_BYTES + 1)), 64 * MiB)),
      /key 0 is 1025 bytes, over the limit of 1024 bytes/)
  })

  it('refuses tensor names over MAX_GGUF_TENSOR_NAME_BYTES in all', async () => {
    const count = Math.ceil(MAX_GGUF_TENSOR_NAME_BYTES / MAX_GGUF_NAME_BYTES) + 1
    const infos = Array.from({ length: count }, (_, i) => gguf.tensor(String(i).padStart(MAX_GGUF_NAME_BYTES, 'n'), [0], 0, 0))
    await expectMalformed(read(concat(gguf.header(count, 0), joinBytes(infos), new Uint8Array(64))),
      new RegExp(`tensor names reach \\d+ bytes at offset \\d+, over the limit of ${MAX_GGUF_TENSOR_NAME_BYTES} bytes in all`))
  })

  it('refuses keys and kept values over MAX_GGUF_METADATA_BYTES in all', async () => {
    const count = Math.ceil(MAX_GGUF_METADATA_BYTES / MAX_GGUF_NAME_BYTES) + 1
    const kvs = Array.from({ length: count }, (_, i) => concat(gguf.str(String(i).padStart(MAX_GGUF_NAME_BYTES, 'k')), u32(0), new Uint8Array(1)))
    await expectMalformed(read(concat(gguf.header(0, count), joinBytes(kvs), new Uint8Array(64))),
      new RegExp(`key/value metadata reaches \\d+ bytes at offset \\d+, over the limit of ${MAX_GGUF_METADATA_BYTES} bytes kept in memory`))
  })

  it('summarises string values over MAX_METADATA_VALUE_BYTES (an embedded tokenizer.json) without reading them', async () => {
    const big = 'j'.repeat(MAX_METADATA_VALUE_BYTES + 1)
    const src = counting(bufferSource(concat(gguf.header(0, 2), gguf.kvString('tokenizer.huggingface.json', big), gguf.kvString('general.name', 'x'), new Uint8Array(64))))
    const s = await readGguf(src, 'm.gguf')
    expect(s.metadata).toEqual({ 'tokenizer.huggingface.json': `[string × ${MAX_METADATA_VALUE_BYTES + 1} bytes]`, 'general.name': 'x' })
    expect(src.bytesRead).toBeLessThan(MAX_METADATA_VALUE_BYTES)
    // The same for safetensors __metadata__ and ONNX metadata_props.
    const st = await readSafetensors(bufferSource(safetensors({ __metadata__: { notes: big, format: 'pt' } })), 'm.safetensors')
    expect(st.metadata).toEqual({ notes: `[string × ${MAX_METADATA_VALUE_BYTES + 1} bytes]`, format: 'pt' })
    const onnx = await readOnnx(bufferSource(concat(pb.msg(7), pb.msg(14, pb.str(1, 'notes'), pb.str(2, big)))), 'm.onnx')
    expect(onnx.metadata).toEqual({ notes: `[string × ${MAX_METADATA_VALUE_BYTES + 1} bytes]` })
  })

  it('refuses more than MAX_GGUF_ARRAY_ELEMENTS walked in all, over several arrays', async () => {
    const half = MAX_GGUF_ARRAY_ELEMENTS / 2 + 1
    const strings = (key: string): Uint8Array => concat(gguf.str(key), u32(9), u32(8), u64(half), new Uint8Array(8 * half))
    await expectMalformed(read(concat(gguf.header(0, 2), strings('tokens'), strings('merges'), new Uint8Array(64))),
      /value of "merges" brings the arrays walked to 4194306 elements, over the limit of 4194304 in one file/)
  })

  it('refuses a header that runs past MAX_GGUF_HEADER_BYTES', async () => {
    // A u64 array as long as one may be (skipped whole, never read) takes the header past the limit.
    const n = MAX_GGUF_HEADER_BYTES / 8
    await expectMalformed(read(zerosAfter(concat(gguf.header(0, 1), gguf.str('scores'), u32(9), u32(10), u64(n)), 2 * MAX_GGUF_HEADER_BYTES)),
      new RegExp(`the header reaches offset \\d+ at value of "scores", over the limit of ${MAX_GGUF_HEADER_BYTES} bytes`))
  })
})

describe('ONNX limits', () => {
  const read = async (bytes: Uint8Array): Promise<unknown> => await readOnnx(bufferSource(bytes), 'big.onnx')
  const model = (...graph: Uint8Array[]): Uint8Array => concat(pb.int(1, 8), pb.msg(7, ...graph), pb.msg(8, pb.str(1, ''), pb.int(2, 17)))

  it('refuses more than MAX_ONNX_FIELDS fields (millions of empty nodes)', async () => {
    const nodes = new Uint8Array(2 * (MAX_ONNX_FIELDS + 1))
    for (let i = 0; i < nodes.length; i += 2) nodes[i] = 0x0a
    await expectMalformed(read(model(nodes)), /^big\.onnx: has more than 4194304 protobuf fields .*, over the limit of 4194304/)
  })

  it('refuses more than MAX_TENSOR_COUNT tensors, Constant values and subgraph initializers counted together', async () => {
    // One initializer in a Loop body, then MAX_TENSOR_COUNT scalar Constants: one too many.
    const constant = pb.msg(1, pb.str(2, 'c'), pb.str(4, 'Constant'), pb.msg(5, pb.str(1, 'value_int'), pb.int(3, 1)))
    const loop = pb.msg(1, pb.str(4, 'Loop'), pb.msg(5, pb.str(1, 'body'), pb.msg(6, pb.msg(5, pb.int(2, 1), pb.str(8, 'w')))))
    const nodes = new Uint8Array(constant.length * MAX_TENSOR_COUNT)
    for (let i = 0; i < MAX_TENSOR_COUNT; i++) nodes.set(constant, i * constant.length)
    await expectMalformed(read(model(loop, nodes)),
      new RegExp(`^big\\.onnx: more than ${MAX_TENSOR_COUNT} tensors \\(initializers and Constant values, subgraphs included\\), over the limit of ${MAX_TENSOR_COUNT}`))
  }, 30_000)

  it('refuses names and metadata over MAX_ONNX_KEPT_BYTES in all', async () => {
    const value = 'v'.repeat(MAX_METADATA_VALUE_BYTES - 16)
    const props = Array.from({ length: MAX_ONNX_KEPT_BYTES / MAX_METADATA_VALUE_BYTES + 1 }, (_, i) => pb.msg(14, pb.str(1, `k${i}`), pb.str(2, value)))
    await expectMalformed(read(concat(model(), ...props)),
      new RegExp(`names and metadata reach \\d+ characters at offset \\d+, over the limit of ${MAX_ONNX_KEPT_BYTES} kept in memory`))
  })
})
