/**
 * Writes a small ONNX model folder (`model.onnx`, `shoal.json`: y = x·W + b), the one the demo and
 * the serving example use, for trying shoal by hand or in containers:
 *
 *   node --import tsx scripts/make-onnx-model.ts docker/models/linear [seed]
 */
import { resolve } from 'node:path'
import { writeOnnxModelFolder } from './lib/onnx-model.js'

const [dir, seed = 'one'] = process.argv.slice(2)
if (dir === undefined || dir === '') {
  console.error('usage: node --import tsx scripts/make-onnx-model.ts <folder> [seed]')
  process.exit(2)
}
const model = await writeOnnxModelFolder(resolve(dir), { seed })
console.log(`wrote ${resolve(dir)}: model.onnx (${model.inputs} inputs, ${model.outputs} outputs) and shoal.json`)
