/**
 * ONNX under fuzzing: random bytes, mutations of real models (an exporter's output, old test
 * models, external data, weights in Constant nodes and subgraphs), generated models whose graph,
 * nodes (Constant values, subgraphs), initializers and value infos hold random fields of every
 * wire type, and lengths that lie. The reader gives a valid structure or a
 * `MalformedModelError` with a message, in bounded time, never asking for more than
 * `MAX_ONE_READ` bytes at once.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { readOnnx } from '../../src/model/onnx.js'
import type { FileStructure } from '../../src/model/types.js'
import { ROOT } from '../../scripts/lib/daemon-proc.js'
import { concat, guardedSource, pb } from '../unit/model/build.js'
import { expectTypedOutcome, fuzzParams, mutated } from './fuzz.js'

const FIXTURES = join(ROOT, 'test', 'fixtures', 'models')
const SEEDS = [
  'mlp.onnx', 'torch-mlp.onnx', 'testdata-conv2d.onnx', 'testdata-operator-conv.onnx', 'onnx-external/model.onnx',
  'exporter-constants.onnx', 'exporter-subgraphs.onnx', 'testdata-if.onnx', 'testdata-loop11.onnx', 'testdata-poisson-nll.onnx'
]

function checkStructure (s: FileStructure, size: number): void {
  expect(s.format).toBe('onnx')
  for (const t of s.tensors) {
    if (t.file === undefined) expect(t.offset + t.length).toBeLessThanOrEqual(size)
    else expect(t.file).not.toMatch(/(^|[/\\])\.\.([/\\]|$)|^[/\\]|\0/)
  }
}

const read = async (bytes: Uint8Array, size?: number): Promise<void> => {
  await expectTypedOutcome(async () => await readOnnx(guardedSource(bytes, size), 'f.onnx'), { check: s => checkStructure(s, size ?? bytes.byteLength) })
}

/** A varint that is sometimes small, sometimes at a limit, sometimes absurd. */
const number = fc.oneof(
  { weight: 4, arbitrary: fc.nat({ max: 40 }).map(BigInt) },
  { weight: 1, arbitrary: fc.constantFrom(2n ** 31n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n, 1n << 20n) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) }
)

/** One field of any wire type, for field numbers the reader knows (and some it does not). */
function field (numbers: number[]): fc.Arbitrary<Uint8Array> {
  const n = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...numbers) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 40 }) })
  return fc.oneof(
    fc.tuple(n, number).map(([f, v]) => pb.int(f, v)),
    fc.tuple(n, fc.string({ maxLength: 12 })).map(([f, s]) => pb.str(f, s)),
    fc.tuple(n, fc.uint8Array({ maxLength: 24 })).map(([f, b]) => pb.bytes(f, b)),
    fc.tuple(n, number, fc.uint8Array({ maxLength: 8 })).map(([f, len, b]) => concat(pb.key(f, 2), pb.varint(len), b)),
    fc.tuple(n, fc.constantFrom(1, 3, 4, 5, 6, 7), fc.uint8Array({ minLength: 8, maxLength: 8 })).map(([f, wire, b]) => concat(pb.key(f, wire), b))
  )
}

/** Mostly well-typed fields for a message's known numbers, sometimes any field. */
const sometimes = (good: fc.Arbitrary<Uint8Array>, numbers: number[]): fc.Arbitrary<Uint8Array> =>
  fc.oneof({ weight: 12, arbitrary: good }, { weight: 1, arbitrary: field(numbers) })

const entry = fc.tuple(fc.constantFrom('location', 'offset', 'length', 'checksum', ''), fc.oneof(fc.string({ maxLength: 10 }), fc.constantFrom('w.bin', '../w.bin', '/etc/passwd', 'a\u202eb.bin', '16', '0', '99999999999999999999')))
  .map(([k, v]) => pb.msg(13, pb.str(1, k), pb.str(2, v)))
/** An initializer: often a consistent UINT8 tensor (dims, raw_data of that many bytes), else random fields. */
const initializer = fc.oneof(
  fc.tuple(fc.string({ maxLength: 6 }), fc.nat({ max: 16 }), fc.nat({ max: 2 })).map(([name, n, off]) => pb.msg(5, pb.int(1, n), pb.int(2, 2), pb.str(8, name), pb.bytes(9, new Uint8Array(n + (off === 2 ? 1 : 0))))),
  fc.tuple(fc.string({ maxLength: 6 }), fc.nat({ max: 64 }), fc.boolean()).map(([name, n, withLength]) => pb.msg(5, pb.int(1, n), pb.int(2, 1), pb.str(8, name), pb.msg(13, pb.str(1, 'location'), pb.str(2, 'w.bin')), ...(withLength ? [pb.msg(13, pb.str(1, 'length'), pb.str(2, String(4 * n)))] : []), pb.int(14, 1))),
  fc.array(sometimes(fc.oneof(entry, fc.nat({ max: 24 }).map(t => pb.int(2, t)), fc.nat({ max: 9 }).map(d => pb.int(1, d)), fc.string({ maxLength: 6 }).map(n => pb.str(8, n)), fc.uint8Array({ maxLength: 16 }).map(b => pb.bytes(9, b)), fc.constant(pb.int(14, 1))), [1, 2, 4, 5, 7, 8, 9, 14]), { maxLength: 8 }).map(fields => pb.msg(5, ...fields))
)
const dim = sometimes(fc.oneof(fc.nat({ max: 8 }).map(d => pb.msg(1, pb.int(1, d))), fc.string({ maxLength: 4 }).map(s => pb.msg(1, pb.str(2, s)))), [1, 2])
const valueInfo = fc.tuple(fc.constantFrom(11, 12), fc.string({ maxLength: 6 }), fc.array(dim, { maxLength: 10 }), fc.nat({ max: 30 }))
  .map(([f, name, dims, type]) => pb.msg(f, pb.str(1, name), pb.msg(2, pb.msg(1, pb.int(1, type), pb.msg(2, ...dims)))))
/** The payload of one length-delimited field (its key and length varint dropped). */
function payloadOf (field: Uint8Array): Uint8Array {
  let at = 1
  while (((field[at] ?? 0) & 0x80) !== 0) at++
  return field.subarray(at + 1)
}
/** An attribute: a Constant value of any kind (often well-formed), or a subgraph of initializers and nodes. */
const attribute = (sub: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> => fc.oneof(
  fc.tuple(fc.constantFrom('value', 'value_float', 'value_floats', 'value_int', 'value_ints', 'value_string', 'value_strings', 'sparse_value', 'other'),
    fc.array(sometimes(fc.oneof(
      initializer.map(t => pb.bytes(5, payloadOf(t))),
      fc.uint8Array({ maxLength: 4, minLength: 4 }).map(b => concat(pb.key(2, 5), b)),
      number.map(v => pb.int(3, v)),
      fc.string({ maxLength: 6 }).map(v => pb.str(4, v)),
      fc.uint8Array({ maxLength: 17 }).map(b => pb.bytes(7, b)),
      fc.uint8Array({ maxLength: 12 }).map(b => pb.bytes(8, b)),
      number.map(v => pb.int(8, v)),
      fc.string({ maxLength: 6 }).map(v => pb.str(9, v))
    ), [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 20]), { maxLength: 4 }))
    .map(([name, fields]) => concat(pb.str(1, name), ...fields)),
  fc.tuple(fc.constantFrom(6, 11), sub).map(([f, g]) => concat(pb.str(1, 'body'), pb.bytes(f, g)))
)
/** A node: a Constant (sometimes in another domain) or any operator, with attributes that may hold subgraphs. */
const node = (sub: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> =>
  fc.tuple(fc.constantFrom('Constant', 'If', 'Loop', 'Relu'), fc.string({ maxLength: 4 }), fc.array(attribute(sub), { maxLength: 3 }), fc.constantFrom('', 'ai.onnx', 'com.x'))
    .map(([op, out, attrs, domain]) => pb.msg(1, pb.str(2, out), pb.str(4, op), ...attrs.map(a => pb.bytes(5, a)), pb.str(7, domain)))
/** Graph contents nested a few levels (payloads, without the ModelProto field key). */
const body: fc.Arbitrary<Uint8Array> = fc.letrec<{ g: Uint8Array }>(tie => ({
  g: fc.array(fc.oneof({ weight: 3, arbitrary: initializer }, { weight: 2, arbitrary: node(fc.oneof({ weight: 3, arbitrary: fc.constant(new Uint8Array(0)) }, { weight: 1, arbitrary: tie('g') })) }), { maxLength: 4 })
    .map(items => concat(...items))
})).g
const graph = fc.array(sometimes(fc.oneof(initializer, valueInfo, node(body), fc.string({ maxLength: 6 }).map(n => pb.str(2, n)), fc.constant(pb.msg(1, pb.str(4, 'Relu')))), [1, 2, 5, 11, 12, 13]), { maxLength: 10 })
  .map(items => pb.msg(7, ...items))
const model = fc.tuple(graph, fc.array(sometimes(fc.oneof(
  fc.tuple(fc.constantFrom(2, 3, 4), fc.string({ maxLength: 8 })).map(([f, v]) => pb.str(f, v)),
  fc.tuple(fc.constantFrom(1, 5), fc.nat({ max: 12 })).map(([f, v]) => pb.int(f, v)),
  fc.tuple(fc.string({ maxLength: 6 }), fc.nat({ max: 30 })).map(([d, v]) => pb.msg(8, pb.str(1, d), pb.int(2, v))),
  fc.tuple(fc.string({ maxLength: 6 }), fc.string({ maxLength: 6 })).map(([k, v]) => pb.msg(14, pb.str(1, k), pb.str(2, v)))
), [1, 2, 3, 4, 5, 7, 8, 14]), { maxLength: 6 })).map(([g, parts]) => concat(...parts.slice(0, 2), g, ...parts.slice(2)))

describe('fuzz: ONNX', () => {
  it('random bytes', async () => {
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 512 }), async b => { await read(b) }), fuzzParams())
  })

  it('mutations of real models', async () => {
    const seeds = await Promise.all(SEEDS.map(async name => new Uint8Array(await readFile(join(FIXTURES, name)))))
    await fc.assert(fc.asyncProperty(fc.oneof(...seeds.map(mutated)), async b => { await read(b) }), fuzzParams())
  })

  it('generated models: random fields of every wire type, lying lengths, huge file sizes', async () => {
    const size = fc.option(fc.constantFrom(2 ** 31, 2 ** 40, Number.MAX_SAFE_INTEGER), { nil: undefined })
    await fc.assert(fc.asyncProperty(model, size, async (bytes, declared) => {
      await read(bytes, declared === undefined ? undefined : Math.max(declared, bytes.byteLength))
    }), fuzzParams())
  })
})
