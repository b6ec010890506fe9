import { describe, it, expect } from 'vitest'
import { MAX_ONNX_GRAPH_DEPTH } from '../../../src/model/limits.js'
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

  describe('weights outside the main graph\'s initializers', () => {
    const FLOAT32 = (v: number): Uint8Array => { const b = new Uint8Array(4); new DataView(b.buffer).setFloat32(0, v, true); return b }
    /** NodeProto: outputs, op_type, attributes (AttributeProto: name = 1, type = 20), optional domain. */
    const node = (op: string, output: string, attrs: Uint8Array[], domain?: string): Uint8Array =>
      pb.msg(1, pb.str(2, output), pb.str(4, op), ...attrs.map(a => pb.bytes(5, a)), ...(domain === undefined ? [] : [pb.str(7, domain)]))
    const attr = (name: string, ...fields: Uint8Array[]): Uint8Array => concat(pb.str(1, name), ...fields)
    const tensorAttr = (name: string, ...tensor: Uint8Array[]): Uint8Array => attr(name, pb.msg(5, ...tensor))
    const graphAttr = (name: string, ...graph: Uint8Array[]): Uint8Array => attr(name, pb.msg(6, ...graph))

    it('reads every kind of Constant value, named after its output when the tensor has no name', async () => {
      const bytes = model(
        node('Constant', 'w', [tensorAttr('value', pb.int(1, 2), pb.int(1, 3), pb.int(2, FLOAT), pb.bytes(9, fill(24, 0xaa)))]),
        node('Constant', 'named_out', [tensorAttr('value', pb.int(1, 2), pb.int(2, FLOAT), pb.str(8, 'own_name'), pb.bytes(4, fill(8, 0xbb)))]),
        node('Constant', 'fs', [attr('value_floats', pb.bytes(7, concat(FLOAT32(1), FLOAT32(2), FLOAT32(3))))]),
        node('Constant', 'fu', [attr('value_floats', pb.key(7, 5), FLOAT32(1), pb.key(7, 5), FLOAT32(2))]),
        node('Constant', 'is', [attr('value_ints', pb.bytes(8, concat(pb.varint(1), pb.varint(300), pb.varint(-1))))]),
        node('Constant', 'iu', [attr('value_ints', pb.int(8, 5), pb.int(8, 6))]),
        node('Constant', 'f', [attr('value_float', pb.key(2, 5), FLOAT32(0.5))]),
        node('Constant', 'i', [attr('value_int', pb.int(3, 300))]),
        node('Constant', 's', [attr('value_string', pb.str(4, 'hello'))]),
        node('Constant', 'ss', [attr('value_strings', pb.str(9, 'a'), pb.str(9, 'bc'))]),
        node('Constant', 'empty', [attr('value_floats')])
      )
      const s = await read(bytes)
      const by = (name: string): { dtype: string, shape: number[], bytes: number[] } => {
        const t = s.tensors.find(x => x.name === name)
        if (t === undefined) throw new Error(`no tensor ${name}`)
        return { dtype: t.dtype, shape: t.shape, bytes: [...bytes.subarray(t.offset, t.offset + t.length)] }
      }
      expect(by('w')).toEqual({ dtype: 'FLOAT', shape: [2, 3], bytes: [...fill(24, 0xaa)] })
      expect(by('own_name')).toEqual({ dtype: 'FLOAT', shape: [2], bytes: [...fill(8, 0xbb)] })
      expect(by('fs')).toEqual({ dtype: 'FLOAT', shape: [3], bytes: [...FLOAT32(1), ...FLOAT32(2), ...FLOAT32(3)] })
      expect(by('fu')).toEqual({ dtype: 'FLOAT', shape: [2], bytes: [...FLOAT32(1), ...pb.key(7, 5), ...FLOAT32(2)] })
      expect(by('is')).toMatchObject({ dtype: 'INT64', shape: [3] })
      expect(by('iu')).toEqual({ dtype: 'INT64', shape: [2], bytes: [5, ...pb.key(8, 0), 6] })
      expect(by('f')).toEqual({ dtype: 'FLOAT', shape: [], bytes: [...FLOAT32(0.5)] })
      expect(by('i')).toEqual({ dtype: 'INT64', shape: [], bytes: [...pb.varint(300)] })
      expect(by('s')).toEqual({ dtype: 'STRING', shape: [], bytes: [...new TextEncoder().encode('hello')] })
      expect(by('ss')).toMatchObject({ dtype: 'STRING', shape: [2] })
      expect(by('empty')).toEqual({ dtype: 'FLOAT', shape: [0], bytes: [] })
      expect(s.parameterCount).toBe(6 + 2 + 3 + 2 + 3 + 2 + 1 + 1 + 1 + 2 + 0)
      expect(s.graph?.nodeCount).toBe(11)
      expect(s.headerLength).toBe(Math.min(...s.tensors.map(t => t.offset)))
    })

    it('keeps only Constant values of the default domain, whatever the field order', async () => {
      const value = tensorAttr('value', pb.int(1, 4), pb.int(2, FLOAT), pb.bytes(9, fill(16, 1)))
      const s = await read(model(
        node('ConstantOfShape', 'fill', [value]),
        node('Constant', 'custom', [value], 'com.example'),
        node('Constant', 'onnx_domain', [value], 'ai.onnx'),
        // op_type after the attribute, as no usual writer orders it.
        pb.msg(1, pb.bytes(5, value), pb.str(2, 'late'), pb.str(4, 'Constant')),
        node('Constant', 'sparse', [attr('sparse_value', pb.msg(22))])
      ))
      expect(s.tensors.map(t => t.name).sort()).toEqual(['late', 'onnx_domain'])
    })

    it('reads initializers and Constants inside subgraphs, but not their inputs and outputs', async () => {
      const init = (name: string, n: number, byte: number): Uint8Array => initializer(pb.int(1, n), pb.int(2, FLOAT), pb.str(8, name), pb.bytes(9, fill(4 * n, byte)))
      const io = (name: string): Uint8Array => concat(pb.str(1, name))
      const body = [
        pb.msg(11, io('body_in')), pb.msg(12, io('body_out')), pb.str(2, 'body'),
        init('body.w', 4, 2),
        node('If', 'r', [
          graphAttr('then_branch', init('then.w', 2, 3), node('Constant', 'then.c', [attr('value_floats', pb.bytes(7, fill(8, 4)))])),
          graphAttr('else_branch', init('else.w', 3, 5))
        ])
      ]
      const scan = attr('bodies', pb.msg(11, init('graphs.w', 1, 6)))
      const s = await read(model(
        pb.str(2, 'main'), pb.msg(11, io('x')), pb.msg(12, io('y')),
        node('Loop', 'y', [graphAttr('body', ...body)]),
        node('Custom', 'z', [scan]),
        init('main.w', 1, 1)
      ))
      expect(s.tensors.map(t => t.name).sort()).toEqual(['body.w', 'else.w', 'graphs.w', 'main.w', 'then.c', 'then.w'])
      expect(s.parameterCount).toBe(4 + 2 + 2 + 3 + 1 + 1)
      expect(s.graph).toMatchObject({ name: 'main', nodeCount: 2, inputs: [{ name: 'x' }], outputs: [{ name: 'y' }] })
    })

    it('refuses bad Constant values and subgraphs nested too deep', async () => {
      await expectMalformed(read(model(node('Constant', 'c', [attr('value_floats', pb.bytes(7, fill(6, 0)))]))), /packed floats at offset \d+ are 6 bytes, not a whole number of 4-byte floats/)
      await expectMalformed(read(model(node('Constant', 'c', [attr('value_ints', pb.bytes(8, new Uint8Array([1, 0x80])))]))), /packed ints ending at offset \d+ end inside a varint/)
      await expectMalformed(read(model(node('Constant', 'c', [tensorAttr('value', pb.int(1, 3), pb.int(2, FLOAT), pb.bytes(9, fill(8, 0)))]))), /Constant value "" raw_data is 8 bytes but shape \[3\] of FLOAT needs 12/)
      let g = node('Identity', 'leaf', [])
      for (let i = 0; i < MAX_ONNX_GRAPH_DEPTH; i++) g = node('If', `n${i}`, [graphAttr('then_branch', g)])
      expect((await read(model(g))).graph?.nodeCount).toBe(1)
      await expectMalformed(read(model(node('If', 'top', [graphAttr('then_branch', g)]))), new RegExp(`nested ${MAX_ONNX_GRAPH_DEPTH + 1} graphs deep, over the limit of ${MAX_ONNX_GRAPH_DEPTH}`))
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
