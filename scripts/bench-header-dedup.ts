/**
 * Header dedup benchmark (issue 18): how many bytes a new version of a real GGUF file re-ships
 * when one key/value changes, with structure regions cut by content (what `add` does) beside the
 * earlier rule of fixed 4 MiB steps from each region's start, measured in the same run on the same
 * bytes.
 *
 * Edits made to the file given (each one version against the original):
 * - `general.name` gets 24 more characters (every later byte shifts);
 * - `tokenizer.chat_template`, when the file has one, gets a line inserted in its middle.
 * Re-shipped bytes are the bytes of the new version's chunks whose ids the original does not have.
 *
 *   npm run bench:header-dedup -- <file.gguf>
 *
 * Real vocab-only files: llama.cpp's `models/ggml-vocab-*.gguf` (see test/fixtures/models/README.md
 * for how to get them from the npm package node-llama-cpp).
 */
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { basename } from 'node:path'
import { cdcChunks } from '../src/core/cdc.js'
import { STRUCTURE_CDC, MAX_CHUNK_SIZE, fixedChunks, modelRegions, planModelChunks, type ChunkRegion } from '../src/core/chunking.js'
import { bufferSource, readStructure } from '../src/model/index.js'
import { loadNote } from './lib/proc.js'

const path = process.argv[2]
if (path === undefined) {
  console.error('usage: npm run bench:header-dedup -- <file.gguf>')
  process.exit(2)
}
const original = await readFile(path)

/** The file with the string value of `key` replaced by `edit(value)` (its length prefix fixed), or undefined when it has no such string. */
function editString (bytes: Buffer, key: string, edit: (value: string) => string): Buffer | undefined {
  const k = Buffer.concat([Buffer.alloc(8), Buffer.from(key)])
  k.writeBigUInt64LE(BigInt(key.length))
  const found = bytes.indexOf(k)
  if (found < 0) return undefined
  const at = found + k.length
  if (bytes.readUInt32LE(at) !== 8) return undefined
  const length = Number(bytes.readBigUInt64LE(at + 4))
  const value = Buffer.from(edit(bytes.subarray(at + 12, at + 12 + length).toString('utf8')))
  const prefix = Buffer.alloc(8)
  prefix.writeBigUInt64LE(BigInt(value.length))
  return Buffer.concat([bytes.subarray(0, at + 4), prefix, value, bytes.subarray(at + 12 + length)])
}

/** Chunk ids and sizes of `bytes` cut by `structure` for the regions outside tensors. */
async function chunks (bytes: Buffer, structure: (region: Buffer) => number[]): Promise<Map<string, number>> {
  const s = await readStructure(basename(path as string), bufferSource(bytes))
  const regions = modelRegions(bytes.length, s.tensors.filter(t => t.file === undefined))
  const slice = (r: ChunkRegion): Buffer => bytes.subarray(r.offset, r.offset + r.length)
  const starts = planModelChunks(regions, r => structure(slice(r)))
  const out = new Map<string, number>()
  for (const [i, start] of starts.entries()) {
    const end = starts[i + 1] ?? bytes.length
    out.set(createHash('sha256').update(bytes.subarray(start, end)).digest('hex'), end - start)
  }
  return out
}

const rules = {
  'content-defined (STRUCTURE_CDC)': (region: Buffer) => cdcChunks(region, STRUCTURE_CDC),
  'fixed 4 MiB steps (earlier rule)': (region: Buffer) => fixedChunks(region.length, MAX_CHUNK_SIZE)
}
const edits: Array<[string, Buffer | undefined]> = [
  ['general.name +24 characters', editString(original, 'general.name', v => `${v}, fine-tuned for support`)],
  ['chat template, a line inserted', editString(original, 'tokenizer.chat_template', v => `${v.slice(0, v.length >> 1)}{# reviewed #}\n${v.slice(v.length >> 1)}`)]
]

const mb = (n: number): string => `${(n / 1e6).toFixed(3)} MB`
console.log(`${basename(path)}: ${mb(original.length)}; ${loadNote()}`)
for (const [edit, edited] of edits) {
  if (edited === undefined) { console.log(`  ${edit}: the file has no such string key`); continue }
  const sent: number[] = []
  for (const [rule, cut] of Object.entries(rules)) {
    const [before, after] = await Promise.all([chunks(original, cut), chunks(edited, cut)])
    const bytes = [...after].filter(([id]) => !before.has(id)).reduce((n, [, size]) => n + size, 0)
    sent.push(bytes)
    console.log(`  ${edit}, ${rule}: re-ships ${mb(bytes)} in ${[...after.keys()].filter(id => !before.has(id)).length} of ${after.size} chunks`)
  }
  const [cdc = 0, fixed = 0] = sent
  console.log(`  ${edit}: content-defined / fixed = ${fixed === 0 ? 'n/a' : (cdc / fixed).toFixed(3)}`)
}
