/**
 * Compression benchmark (issue 17): shoal's block codecs beside what Node ships, on bytes drawn
 * like model weights (`scripts/lib/weights.ts`).
 *
 * For each kind of data — bf16, fp16 and fp32 tensors (normal values, per-tensor scales, a few
 * outliers), GGUF Q4_0 and Q8_0 blocks, random bytes — it makes `--mib` MiB as `--tensors`
 * tensors of their own seed and scale, cuts each into blocks of `--block-size` (every block is
 * compressed on its own, as the transfer layer and the cold store will), and measures, in the same
 * run and on the same blocks:
 * - `shoal`: the codec `chooseCodec` picks from the dtype on each tensor's first block, then
 *   `encodeBlock` / `decodeBlock` (into one reused buffer, as a pooled block);
 * - `deflate-1`, `deflate-6`, `brotli-1`, `brotli-5`: `node:zlib` on the raw bytes of each block;
 * - `raw`: a copy (the floor: what moving the bytes costs without compression);
 * - with `--variants`, design alternatives: byte planes with the sign-and-exponent plane coded by
 *   zlib in Huffman-only mode or by brotli instead of shoal's Huffman coder.
 * Ratio is compressed bytes (headers included) over raw bytes. Speeds are raw megabytes per second
 * of CPU time of this process (one thread does the work, so per core), median of `--runs` rounds
 * after one warm-up round, the methods taking turns within each round; every decoded block is
 * compared with the original once.
 *
 *   npm run bench:compress -- [--mib 16] [--block-size 262144] [--tensors 8] [--runs 5] [--seed 1] [--variants]
 */
import { parseArgs } from 'node:util'
import { brotliCompressSync, brotliDecompressSync, constants as z, deflateRawSync, inflateRawSync } from 'node:zlib'
import { chooseCodec, decodeBlock, encodeBlock, joinPlanes, splitPlanes } from '../src/core/codec.js'
import { testData, type TestDataKind } from './lib/weights.js'
import { loadNote } from './lib/proc.js'

const { values } = parseArgs({
  options: {
    mib: { type: 'string', default: '16' },
    'block-size': { type: 'string', default: String(256 * 1024) },
    tensors: { type: 'string', default: '8' },
    runs: { type: 'string', default: '5' },
    seed: { type: 'string', default: '1' },
    variants: { type: 'boolean', default: false }
  }
})
const MIB = Number(values.mib)
const BLOCK = Number(values['block-size'])
const TENSORS = Number(values.tensors)
const RUNS = Number(values.runs)
const SEED = Number(values.seed)
for (const [name, v] of [['--mib', MIB], ['--block-size', BLOCK], ['--tensors', TENSORS], ['--runs', RUNS]] as const) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer`)
}

/** The goals issue 17 sets for shoal's codec (ratio at most, decode speed at least). */
const GOALS: Partial<Record<TestDataKind, number>> = { BF16: 0.72, F16: 0.80 }
const DECODE_GOAL_MBS = 1000

const KINDS: Array<{ kind: TestDataKind, dtype: string }> = [
  { kind: 'BF16', dtype: 'BF16' }, { kind: 'F16', dtype: 'F16' }, { kind: 'F32', dtype: 'F32' },
  { kind: 'Q4_0', dtype: 'Q4_0' }, { kind: 'Q8_0', dtype: 'Q8_0' }, { kind: 'random', dtype: 'U8' }
]

interface Tensor { dtype: string, blocks: Uint8Array[] }

/** A method compresses each tensor's blocks, then decompresses each into `into`. */
interface Method {
  name: string
  encode (tensor: Tensor): Uint8Array[]
  decode (encoded: Uint8Array, into: Uint8Array, size: number): Uint8Array
}

const zlibMethod = (name: string, enc: (b: Uint8Array) => Uint8Array, dec: (b: Uint8Array) => Uint8Array): Method => ({
  name,
  encode: t => t.blocks.map(enc),
  decode: (e, into) => { const out = dec(e); into.set(out); return into.subarray(0, out.length) }
})

/** Planes with the top plane coded by `code` (a design alternative, not shoal's format). */
function planesVariant (name: string, code: (plane: Uint8Array) => Uint8Array, uncode: (bytes: Uint8Array) => Uint8Array): Method {
  const width = (dtype: string): 2 | 4 => (dtype === 'F32' ? 4 : 2)
  const widths = new WeakMap<Uint8Array, 2 | 4>()
  return {
    name,
    encode: t => t.blocks.map(block => {
      const w = width(t.dtype)
      const count = block.length / w
      const planes = Array.from({ length: w }, () => new Uint8Array(count))
      splitPlanes(block, w, count, planes)
      const top = code(planes[w - 1]!)
      const out = new Uint8Array(block.length - count + top.length)
      let at = 0
      for (let p = 0; p < w - 1; p++) { out.set(planes[p]!, at); at += count }
      out.set(top, at)
      widths.set(out, w)
      return out
    }),
    decode: (e, into, size) => {
      const w = widths.get(e)!
      const count = size / w
      const planes: Uint8Array[] = []
      for (let p = 0; p < w - 1; p++) planes.push(e.subarray(p * count, (p + 1) * count))
      planes.push(uncode(e.subarray((w - 1) * count)))
      joinPlanes(planes, w, count, into)
      return into.subarray(0, size)
    }
  }
}

const brotli = (quality: number) => (b: Uint8Array): Uint8Array => brotliCompressSync(b, { params: { [z.BROTLI_PARAM_QUALITY]: quality, [z.BROTLI_PARAM_SIZE_HINT]: b.length } })

const METHODS: Method[] = [
  {
    name: 'shoal',
    encode: t => {
      const codec = chooseCodec(t.dtype, t.blocks[0]!)
      return t.blocks.map(b => encodeBlock(b, codec))
    },
    decode: (e, into) => decodeBlock(e, { maxSize: BLOCK, into })
  },
  zlibMethod('deflate-1', b => deflateRawSync(b, { level: 1 }), b => inflateRawSync(b)),
  zlibMethod('deflate-6', b => deflateRawSync(b, { level: 6 }), b => inflateRawSync(b)),
  zlibMethod('brotli-1', brotli(1), b => brotliDecompressSync(b)),
  zlibMethod('brotli-5', brotli(5), b => brotliDecompressSync(b)),
  zlibMethod('raw', b => b.slice(), b => b),
  ...(values.variants
    ? [
        planesVariant('planes+zlib-huffman', p => deflateRawSync(p, { strategy: z.Z_HUFFMAN_ONLY }), b => inflateRawSync(b)),
        planesVariant('planes+brotli-5', brotli(5), b => brotliDecompressSync(b))
      ]
    : [])
]

function cpuMs (): number {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1000
}

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]! }

function makeTensors (kind: TestDataKind, dtype: string): Tensor[] {
  const per = Math.floor((MIB * 1024 * 1024) / TENSORS)
  return Array.from({ length: TENSORS }, (_, i) => {
    const bytes = testData(kind, per, SEED * 1000 + i)
    const blocks: Uint8Array[] = []
    for (let at = 0; at < bytes.length; at += BLOCK) blocks.push(bytes.subarray(at, Math.min(bytes.length, at + BLOCK)))
    return { dtype, blocks }
  })
}

interface Row { kind: TestDataKind, method: string, ratio: number, compress: number, decompress: number }

interface Measured { ratio: number, compress: number[], decompress: number[] }

/**
 * Every method on the same tensors, the methods alternating round by round (a warm-up round that
 * also checks every block, then `RUNS` timed rounds), so a change in the machine's load falls on
 * all of them alike rather than on whichever ran during it.
 */
function measureAll (tensors: Tensor[], methods: Method[]): Measured[] {
  const raw = tensors.reduce((n, t) => n + t.blocks.reduce((m, b) => m + b.length, 0), 0)
  const into = new Uint8Array(BLOCK)
  const out: Measured[] = methods.map(() => ({ ratio: 0, compress: [], decompress: [] }))
  for (let run = 0; run <= RUNS; run++) {
    methods.forEach((method, m) => {
      let t = cpuMs()
      const encoded = tensors.map(tensor => method.encode(tensor))
      const enc = cpuMs() - t
      t = cpuMs()
      for (let i = 0; i < tensors.length; i++) {
        const blocks = tensors[i]!.blocks
        for (let j = 0; j < blocks.length; j++) method.decode(encoded[i]![j]!, into, blocks[j]!.length)
      }
      const dec = cpuMs() - t
      if (run === 0) {
        // The warm-up round also checks every block.
        for (let i = 0; i < tensors.length; i++) {
          tensors[i]!.blocks.forEach((b, j) => {
            const decoded = method.decode(encoded[i]![j]!, into, b.length)
            if (!Buffer.from(decoded).equals(Buffer.from(b))) throw new Error(`${method.name} did not round-trip block ${j} of tensor ${i}`)
          })
        }
        out[m]!.ratio = encoded.flat().reduce((n, e) => n + e.length, 0) / raw
        return
      }
      out[m]!.compress.push(raw / 1e6 / (enc / 1000))
      out[m]!.decompress.push(raw / 1e6 / (dec / 1000))
    })
  }
  return out
}

function main (): void {
  console.log(`compression benchmark: ${MIB} MiB per kind in ${TENSORS} tensors, blocks of ${BLOCK / 1024} KiB, ${RUNS} runs (after a checked warm-up), node ${process.version}, ${loadNote()}`)
  console.log('ratio = compressed / raw bytes (headers included); MB/s = raw MB per CPU-second of this process (one core), median of the runs [min–max]\n')
  const rows: Row[] = []
  const head = `${'data'.padEnd(7)} ${'method'.padEnd(20)} ${'ratio'.padStart(7)} ${'vs deflate-1'.padStart(12)}   ${'compress MB/s'.padEnd(22)} ${'decompress MB/s'.padEnd(22)}`
  console.log(head)
  console.log('-'.repeat(head.length))
  for (const { kind, dtype } of KINDS) {
    const tensors = makeTensors(kind, dtype)
    const measured = measureAll(tensors, METHODS)
    const results = METHODS.map((m, i) => ({ m, r: measured[i]! }))
    const deflate1 = results.find(x => x.m.name === 'deflate-1')!.r.ratio
    for (const { m, r } of results) {
      const c = median(r.compress)
      const d = median(r.decompress)
      rows.push({ kind, method: m.name, ratio: r.ratio, compress: c, decompress: d })
      const span = (xs: number[]): string => `${median(xs).toFixed(0).padStart(5)} [${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)}]`
      console.log(`${kind.padEnd(7)} ${m.name.padEnd(20)} ${r.ratio.toFixed(3).padStart(7)} ${(r.ratio / deflate1).toFixed(3).padStart(12)}   ${span(r.compress).padEnd(22)} ${span(r.decompress).padEnd(22)}`)
    }
    console.log('')
  }
  console.log('goals (issue 17) for shoal:')
  for (const { kind } of KINDS) {
    const row = rows.find(r => r.kind === kind && r.method === 'shoal')!
    const raw = rows.find(r => r.kind === kind && r.method === 'raw')!
    const goal = GOALS[kind]
    const ratioNote = goal !== undefined
      ? `ratio ${row.ratio.toFixed(3)} (goal ≤ ${goal.toFixed(2)}: ${row.ratio <= goal ? 'met' : 'NOT met'})`
      : kind === 'random'
        ? `raw/compressed ${(1 / row.ratio).toFixed(5)} (goal ≥ 0.99: ${1 / row.ratio >= 0.99 ? 'met' : 'NOT met'})`
        : `ratio ${row.ratio.toFixed(3)}`
    const decodeNote = `decompress ${row.decompress.toFixed(0)} MB/s (goal ≥ ${DECODE_GOAL_MBS}: ${row.decompress >= DECODE_GOAL_MBS ? 'met' : 'NOT met'}; a copy ${raw.decompress.toFixed(0)})`
    console.log(`  ${kind.padEnd(7)} ${ratioNote}; ${decodeNote}`)
  }
  console.log(`\n${loadNote()} at the end; speeds are CPU time, so they hold up better than wall time on a busy machine, but a shared core still runs slower`)
}

main()
