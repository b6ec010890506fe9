/**
 * A tiny ONNX model for tests, benchmarks and the serving example: `y = x · W + b`
 * (`MatMul` then `Add`, opset 13), input `x` float32 `[batch, inputs]`, output `y` float32
 * `[batch, outputs]`, with `W` and `b` as float initializers stored in `raw_data`.
 *
 * The weights depend only on `seed`, so two versions with different seeds answer the same input
 * differently and a caller can tell which version answered by the numbers alone
 * (`expectedOutput`). The protobuf is written by hand (field numbers from `onnx.proto3`); nothing
 * here loads onnxruntime.
 *
 * Not a goal: any model that does real work, external data, other dtypes.
 */
import { createHash } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { concat, pb } from './bytes.js'

/** @default 4 — features per input row */
export const DEFAULT_INPUTS = 4
/** @default 3 — values per output row */
export const DEFAULT_OUTPUTS = 3

/** ONNX `TensorProto.DataType.FLOAT`. */
const FLOAT = 1
/** @default 8 — ONNX IR version written (onnxruntime 1.x loads 3 to 10) */
const IR_VERSION = 8
/** @default 13 — default-domain opset written */
const OPSET = 13

export interface OnnxModelOptions {
  /** Any text: the same seed gives the same weights. */
  seed: string
  /** @default DEFAULT_INPUTS */
  inputs?: number
  /** @default DEFAULT_OUTPUTS */
  outputs?: number
}

export interface LinearModel {
  /** The `.onnx` file's bytes. */
  bytes: Uint8Array
  inputs: number
  outputs: number
  /** Row-major `[inputs][outputs]`, exactly the float32 values stored. */
  weights: Float32Array
  /** `[outputs]` */
  bias: Float32Array
}

/** Builds the model for `seed` (deterministic: same options, same bytes). */
export function linearOnnxModel (options: OnnxModelOptions): LinearModel {
  const inputs = options.inputs ?? DEFAULT_INPUTS
  const outputs = options.outputs ?? DEFAULT_OUTPUTS
  const random = seededFloats(options.seed)
  // Values in [-2, 2), rounded to multiples of 1/64 so they are exact in float32 and easy to read.
  const weights = Float32Array.from({ length: inputs * outputs }, () => Math.round((random() * 4 - 2) * 64) / 64)
  const bias = Float32Array.from({ length: outputs }, () => Math.round((random() * 4 - 2) * 64) / 64)

  const tensor = (name: string, dims: number[], values: Float32Array): Uint8Array => concat(
    ...dims.map(d => pb.int(1, d)),
    pb.int(2, FLOAT),
    pb.str(8, name),
    pb.bytes(9, new Uint8Array(values.buffer, values.byteOffset, values.byteLength))
  )
  // ValueInfoProto { name, type: TypeProto { tensor_type { elem_type, shape { dim… } } } }
  const valueInfo = (name: string, dims: Array<number | string>): Uint8Array => concat(
    pb.str(1, name),
    pb.msg(2, pb.msg(1,
      pb.int(1, FLOAT),
      pb.msg(2, ...dims.map(d => pb.msg(1, typeof d === 'number' ? pb.int(1, d) : pb.str(2, d))))
    ))
  )
  // NodeProto { input…, output…, name, op_type }
  const node = (op: string, ins: string[], outs: string[], name: string): Uint8Array => concat(
    ...ins.map(i => pb.str(1, i)), ...outs.map(o => pb.str(2, o)), pb.str(3, name), pb.str(4, op)
  )
  const graph = concat(
    pb.msg(1, node('MatMul', ['x', 'W'], ['xW'], 'matmul')),
    pb.msg(1, node('Add', ['xW', 'b'], ['y'], 'add')),
    pb.str(2, 'linear'),
    pb.msg(5, tensor('W', [inputs, outputs], weights)),
    pb.msg(5, tensor('b', [outputs], bias)),
    pb.msg(11, valueInfo('x', ['batch', inputs])),
    pb.msg(12, valueInfo('y', ['batch', outputs]))
  )
  const bytes = concat(
    pb.int(1, IR_VERSION),
    pb.str(2, 'shoal-test'),
    pb.str(3, '1'),
    pb.msg(7, graph),
    pb.msg(8, pb.str(1, ''), pb.int(2, OPSET))
  )
  return { bytes, inputs, outputs, weights, bias }
}

/** What the model computes for one input row, in float64 (compare with a tolerance). */
export function expectedOutput (model: Pick<LinearModel, 'inputs' | 'outputs' | 'weights' | 'bias'>, x: readonly number[]): number[] {
  if (x.length !== model.inputs) throw new Error(`expected ${model.inputs} inputs, got ${x.length}`)
  return Array.from({ length: model.outputs }, (_, j) =>
    x.reduce((sum, xi, i) => sum + xi * (model.weights[i * model.outputs + j] ?? 0), model.bias[j] ?? 0))
}

/**
 * Writes a model folder: `model.onnx` and a `shoal.json` describing it. Returns the model (for
 * `expectedOutput`).
 */
export async function writeOnnxModelFolder (dir: string, options: OnnxModelOptions): Promise<LinearModel> {
  const model = linearOnnxModel(options)
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'model.onnx'), model.bytes)
  await writeFile(join(dir, 'shoal.json'), `${JSON.stringify({
    description: `y = x·W + b (seed ${options.seed})`,
    framework: 'onnx',
    task: 'regression',
    inputs: [{ name: 'x', dtype: 'float32', shape: [-1, model.inputs] }],
    outputs: [{ name: 'y', dtype: 'float32', shape: [-1, model.outputs] }]
  }, null, 2)}\n`)
  return model
}

/** A deterministic stream of floats in [0, 1) from sha-256 of `seed` and a counter. */
function seededFloats (seed: string): () => number {
  let block = Buffer.alloc(0)
  let at = 0
  let counter = 0
  return () => {
    if (at + 4 > block.length) {
      block = createHash('sha256').update(`${seed}\0${counter++}`).digest()
      at = 0
    }
    const value = block.readUInt32LE(at) / 2 ** 32
    at += 4
    return value
  }
}
