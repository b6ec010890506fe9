/**
 * Model metadata under fuzzing: `shoal.json` bytes (mutations of a valid file, random bytes),
 * generated documents of any shape with hostile strings, and `--tag` flags. Parsing gives valid
 * metadata within `MAX_METADATA_BYTES` whose names and short values hold no control,
 * bidirectional or invisible character, or an `InvalidInputError` whose message holds none either.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { MAX_METADATA_BYTES, mergeMetadata, parseMetadata, parseMetadataFile, parseTags, type Metadata } from '../../src/core/metadata.js'
import { unsafeCharacter } from '../../src/core/names.js'
import { utf8 } from '../unit/model/build.js'
import { expectTypedOutcome, fuzzParams, mutated } from './fuzz.js'

const VALID = {
  description: 'A small model.\nTwo lines.',
  framework: 'pytorch',
  task: 'text-generation',
  license: 'apache-2.0',
  inputs: [{ name: 'input_ids', dtype: 'int64', shape: [-1, 'seq'] }],
  outputs: [{ name: 'logits', dtype: 'float32' }],
  preprocessing: { lower: true, max_len: 512 },
  hyperparameters: { lr: 3e-4, epochs: 3 },
  tags: { english: '', task: 'ner' }
}

const text = fc.oneof(
  { weight: 3, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 1, arbitrary: fc.constantFrom('a\u202eb', 'x\u200by', 'bell\u0007', 'c1\u0085', '\u2066iso\u2069', 'line\nbreak', 'tab\t', '__proto__', 'constructor', '') },
  { weight: 1, arbitrary: fc.string({ maxLength: 6, unit: 'binary' }) }
)
const scalar = fc.oneof(text, fc.double(), fc.integer(), fc.boolean(), fc.constant(null))
/** Documents close to the schema (right keys, sometimes wrong types), and anything at all. */
const doc = fc.oneof(
  fc.record({
    description: text,
    framework: text,
    task: text,
    license: text,
    inputs: fc.array(fc.record({ name: text, dtype: text, shape: fc.array(fc.oneof(fc.integer({ min: -2, max: 9 }), text), { maxLength: 4 }) }, { requiredKeys: ['name'] }), { maxLength: 3 }),
    preprocessing: fc.oneof(text, fc.dictionary(text, scalar, { maxKeys: 4 })),
    hyperparameters: fc.dictionary(text, fc.oneof(scalar, fc.jsonValue({ maxDepth: 2 })), { maxKeys: 4 }),
    tags: fc.dictionary(text, fc.oneof(text, fc.integer()), { maxKeys: 4 })
  }, { requiredKeys: [] }),
  fc.jsonValue({ maxDepth: 4 }),
  fc.dictionary(text, fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 })
)

function checkAccepted (m: Metadata): void {
  expect(JSON.stringify(m).length).toBeLessThanOrEqual(MAX_METADATA_BYTES)
  for (const short of [m.framework, m.task, m.license, ...Object.keys(m.tags ?? {}), ...Object.values(m.tags ?? {}), ...Object.keys(m.hyperparameters ?? {})]) {
    if (short !== undefined) expect(unsafeCharacter(short)).toBeUndefined()
  }
  // Prose keeps tabs and line breaks, but no other control and nothing that reorders the text.
  expect([...(m.description ?? '')].every(c => c === '\n' || c === '\t' || c === '\r' || !/[\p{Cc}\u202a-\u202e\u2066-\u2069]/u.test(c))).toBe(true)
}

async function parses (parse: () => Metadata): Promise<void> {
  await expectTypedOutcome(() => {
    try {
      return parse()
    } catch (err) {
      expect(unsafeCharacter((err as Error).message.replace(/\n/g, ' '))).toBeUndefined()
      throw err
    }
  }, { maxMs: 500, check: checkAccepted })
}

describe('fuzz: metadata', () => {
  it('mutations of a valid shoal.json', async () => {
    const seed = utf8(JSON.stringify(VALID, null, 2))
    await fc.assert(fc.asyncProperty(mutated(seed), async bytes => { await parses(() => parseMetadataFile(bytes, 'shoal.json')) }), fuzzParams())
  })

  it('random bytes', async () => {
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 256 }), async bytes => { await parses(() => parseMetadataFile(bytes, 'shoal.json')) }), fuzzParams())
  })

  it('generated documents of any shape with hostile strings', async () => {
    await fc.assert(fc.asyncProperty(doc, async value => { await parses(() => parseMetadata(value, 'shoal.json')) }), fuzzParams())
  })

  it('--tag flags, merged over a file', async () => {
    await fc.assert(fc.asyncProperty(fc.array(text, { maxLength: 6 }), async flags => {
      await parses(() => parseMetadata(mergeMetadata(VALID, { tags: parseTags(flags) }), '--tag'))
    }), fuzzParams())
  })
})
