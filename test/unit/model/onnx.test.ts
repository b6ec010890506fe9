import { describe, it, expect } from 'vitest'
import { readOnnx } from '../../../src/model/onnx.js'
import { bufferSource } from '../../../src/model/source.js'
import { concat, expectMalformed, pb } from './build.js'

const read = async (bytes: Uint8Array): Promise<ReturnType<typeof readOnnx>> => await readOnnx(bufferSource(bytes), 'm.onnx')
const FLOAT = 1
const FLOAT16 = 10

const fill = (n: number, byte: number): Uint8Array => new Uint8Array(n).fill(byte)
/** A TensorProto (as graph field 5). */
const initializer = (...fields: Uint8Array[]): Uint8Array => pb.msg(5, ...fields)
const ext = (key: string, value: string): Uint8Array => pb.msg(13, pb.str(1, key), pb.str(2, value))
const model = (...graph: Uint8Array[]): Uint8Array => concat(pb.int(1, 8), pb.msg(7, ...graph), pb.msg(8, pb.str(1, ''), pb.int(2, 17)))

describe('readOnnx', () => {
  it('walks the model: opsets, metadata, io, and initializer data ranges', async () => {
    const bytes = concat(
      pb.int(1, 9), pb.str(2, 'hand'), pb.str(3, '0.1'), pb.str(4, 'ai.shoal'), pb.int(5, 3),
      pb.msg(7,
        pb.msg(1, pb.str(1, 'x'), pb.str(4, 'Relu')), pb.msg(1, pb.str(4, 'Add')),
        pb.str(2, 'g'),
        initializer(pb.int(1, 2), pb.int(1, 3), pb.int(2, FLOAT), pb.str(8, 'w'), pb.bytes(9, fill(24, 0xaa))),
        initializer(pb.bytes(1, concat(pb.varint(2), pb.varint(2))), pb.int(2, FLOAT16), pb.str(8, 'h'), pb.bytes(9, fill(8, 0xbb))),
        initializer(pb.int(1, 2), pb.int(2, FLOAT), pb.str(8, 'f'), pb.bytes(4, fill(8, 0xcc))),
        initializer(pb.int(1, 4), pb.int(2, FLOAT), pb.str(8, 'e'), ext('location', 'data/w.bin'), ext('offset', '64'), pb.int(14, 1)),
        pb.msg(11, pb.str(1, 'in'), pb.msg(2, pb.msg(1, pb.int(1, FLOAT), pb.msg(2, pb.msg(1, pb.str(2, 'batch')), pb.msg(1, pb.int(1, 4)), pb.msg(1))))),
        pb.msg(12, pb.str(1, 'out'), pb.msg(2, pb.msg(4, pb.msg(1)))),
        pb.msg(13, pb.str(1, 'ignored'))
      ),
      pb.msg(8, pb.str(1, ''), pb.int(2, 17)), pb.msg(8, pb.str(1, 'com.microsoft'), pb.int(2, 1)),
      pb.msg(14, pb.str(1, 'model_type'), pb.str(2, 'toy')),
      pb.int(99, 1)
    )
    const s = await read(bytes)
    expect(s.format).toBe('onnx')
    const slice = (name: string): number[] => {
      const t = s.tensors.find(x => x.name === name)
      return t === undefined ? [] : [...bytes.subarray(t.offset, t.offset + t.length)]
    }
    expect(slice('w')).toEqual([...fill(24, 0xaa)])
    expect(slice('h')).toEqual([...fill(8, 0xbb)])
    expect(slice('f')).toEqual([...fill(8, 0xcc)])
    expect(s.tensors.map(t => t.name)).toEqual(['w', 'h', 'f', 'e'])
    expect(s.tensors[3]).toEqual({ name: 'e', dtype: 'FLOAT', shape: [4], file: 'data/w.bin', offset: 64, length: 16 })
    expect(s.tensors[1]).toMatchObject({ dtype: 'FLOAT16', shape: [2, 2] })
    expect(s.headerLength).toBe(s.tensors[0]?.offset)
    expect(s.parameterCount).toBe(6 + 4 + 2 + 4)
    expect(s.dtypes).toEqual(['FLOAT', 'FLOAT16'])
    expect(s.metadata).toEqual({ model_type: 'toy' })
    expect(s.architecture).toBe('toy')
    expect(s.graph).toEqual({
      irVersion: 9, producer: 'hand', producerVersion: '0.1', domain: 'ai.shoal', modelVersion: 3, name: 'g', nodeCount: 2,
      opsets: { 'ai.onnx': 17, 'com.microsoft': 1 },
      inputs: [{ name: 'in', dtype: 'FLOAT', shape: ['batch', 4, '?'] }],
      outputs: [{ name: 'out', dtype: 'sequence', shape: [] }]
    })
  })

  describe('refuses malformed files', () => {
    it('truncated varint', async () => {
      await expectMalformed(read(new Uint8Array([0x08, 0x80])), /truncated varint in ir_version/)
      await expectMalformed(read(new Uint8Array([0x08])), /truncated varint in ir_version/)
    })
    it('over-long varint', async () => {
      await expectMalformed(read(new Uint8Array([0x08, ...fill(11, 0xff)])), /longer than 10 bytes/)
    })
    it('length past the end of the file', async () => {
      await expectMalformed(read(concat(pb.key(7, 2), pb.varint(1000), fill(10, 0))), /graph at offset 3 is 1000 bytes long/, /truncated or corrupt/)
      await expectMalformed(read(concat(pb.key(7, 2), pb.varint(2n ** 63n), fill(10, 0))), /graph at offset \d+ is 9223372036854775808 bytes long/)
    })
    it('length past the end of its enclosing message', async () => {
      const inner = concat(pb.key(5, 2), pb.varint(50), fill(3, 0))
      await expectMalformed(read(concat(pb.bytes(7, inner), fill(64, 0))), /initializer at offset \d+ is 50 bytes long but its message ends/)
    })
    it('no graph', async () => {
      await expectMalformed(read(pb.int(1, 8)), /no graph/, /not an ONNX model/)
    })
    it('wrong wire types, groups and field 0', async () => {
      await expectMalformed(read(pb.str(1, 'x')), /ir_version \(field 1\) has wire type length-delimited, expected varint/)
      await expectMalformed(read(concat(pb.key(3, 3), fill(4, 0))), /group start/)
      await expectMalformed(read(new Uint8Array([0x02, 0x00])), /invalid field number 0/)
    })
    it('external data paths that escape the model folder', async () => {
      const withLocation = (loc: string): Uint8Array =>
        model(initializer(pb.int(1, 1), pb.int(2, FLOAT), pb.str(8, 'w'), ext('location', loc), pb.int(14, 1)))
      await expectMalformed(read(withLocation('../secret.bin')), /initializer "w" external data location "\.\.\/secret\.bin" contains a "\.\." segment/)
      await expectMalformed(read(withLocation('/etc/passwd')), /absolute/)
      await expectMalformed(read(withLocation('a\u0000b')), /NUL/)
    })
    it('bad external data entries', async () => {
      const t = (...f: Uint8Array[]): Uint8Array => model(initializer(pb.int(1, 4), pb.int(2, FLOAT), pb.str(8, 'w'), pb.int(14, 1), ...f))
      await expectMalformed(read(t()), /without a "location" entry/)
      await expectMalformed(read(t(ext('location', 'a.bin'), ext('offset', '-4'))), /offset "-4" is not a non-negative integer/)
      await expectMalformed(read(t(ext('location', 'a.bin'), ext('length', '8'))), /length 8 does not match 16 bytes/)
      const two = model(
        initializer(pb.int(1, 4), pb.int(2, FLOAT), pb.str(8, 'a'), pb.int(14, 1), ext('location', 'x.bin')),
        initializer(pb.int(1, 4), pb.int(2, FLOAT), pb.str(8, 'b'), pb.int(14, 1), ext('location', 'x.bin'), ext('offset', '8')))
      await expectMalformed(read(two), /"a" and "b" overlap in x.bin/)
    })
    it('unknown data_type, raw_data size mismatch, bad dims', async () => {
      await expectMalformed(read(model(initializer(pb.int(2, 99), pb.str(8, 'w')))), /initializer "w" has unknown data_type 99/)
      await expectMalformed(read(model(initializer(pb.int(1, 3), pb.int(2, FLOAT), pb.str(8, 'w'), pb.bytes(9, fill(8, 0))))), /raw_data is 8 bytes but shape \[3\] of FLOAT needs 12/)
      await expectMalformed(read(model(initializer(pb.int(1, -1), pb.int(2, FLOAT)))), /dim is -1/)
      await expectMalformed(read(model(initializer(...Array.from({ length: 9 }, () => pb.int(1, 1)), pb.int(2, FLOAT)))), /more than 8 dimensions/)
    })
  })
})
