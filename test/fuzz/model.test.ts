/**
 * The format dispatch and the sharded safetensors index under fuzzing: any file name with any
 * bytes goes to the right reader and comes back as a structure or a `MalformedModelError`; index
 * files (mutations of a real one, generated documents with hostile shard paths, deep and odd JSON)
 * give the shards they name only when every path is safe.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { unsafeCharacter } from '../../src/core/names.js'
import { readStructure } from '../../src/model/index.js'
import { readSafetensorsIndex } from '../../src/model/safetensors-index.js'
import { ROOT } from '../../scripts/lib/daemon-proc.js'
import { guardedSource, utf8 } from '../unit/model/build.js'
import { expectTypedOutcome, fuzzParams, mutated } from './fuzz.js'

const INDEX = join(ROOT, 'test', 'fixtures', 'models', 'sharded', 'model.safetensors.index.json')

const readIndex = async (bytes: Uint8Array): Promise<void> => {
  await expectTypedOutcome(async () => await readSafetensorsIndex(guardedSource(bytes), 'model.safetensors.index.json'), {
    check: s => {
      expect(s.format).toBe('safetensors-index')
      for (const shard of s.shards ?? []) {
        expect(shard.length).toBeGreaterThan(0)
        expect(shard.split(/[/\\]/)).not.toContain('..')
        expect(shard).not.toMatch(/^[/\\]|^[A-Za-z]:/)
        expect(unsafeCharacter(shard)).toBeUndefined()
      }
      // Metadata values are scalars or JSON text: nothing deep survives.
      for (const v of Object.values(s.metadata)) expect(['string', 'number', 'boolean']).toContain(typeof v)
    }
  })
}

const shardPath = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'sub/m.safetensors') },
  { weight: 1, arbitrary: fc.constantFrom('../x.safetensors', '/etc/passwd', 'C:\\x', 'a/../../b', '', 'x\u0000y', 'evil\u202egpj.safetensors', 'z\u200b.safetensors') },
  { weight: 1, arbitrary: fc.string({ maxLength: 12, unit: 'binary' }) }
)
const indexDoc = fc.record({
  metadata: fc.option(fc.oneof(fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 4 })), fc.jsonValue({ maxDepth: 2 })), { nil: undefined }),
  weight_map: fc.oneof({ weight: 5, arbitrary: fc.dictionary(fc.string({ maxLength: 10 }), shardPath, { maxKeys: 20 }) }, { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) }),
  extra: fc.option(fc.jsonValue({ maxDepth: 3 }), { nil: undefined })
}).map(d => JSON.stringify(d, null, d.extra === null ? 2 : undefined))

describe('fuzz: format dispatch and the sharded index', () => {
  it('any name, any bytes: every reader gives a structure or a typed error', async () => {
    const name = fc.oneof(
      fc.constantFrom('m.safetensors', 'm.gguf', 'm.onnx', 'model.safetensors.index.json', 'x.safetensors.index.json', 'README.md', 'weights.bin'),
      fc.string({ maxLength: 16 })
    )
    const bytes = fc.oneof(fc.uint8Array({ maxLength: 256 }), fc.uint8Array({ maxLength: 64 }).map(b => new Uint8Array([0x47, 0x47, 0x55, 0x46, ...b])))
    await fc.assert(fc.asyncProperty(name, bytes, async (n, b) => {
      await expectTypedOutcome(async () => await readStructure(n, guardedSource(b)))
    }), fuzzParams())
  })

  it('mutations of a real index', async () => {
    const seed = new Uint8Array(await readFile(INDEX))
    await fc.assert(fc.asyncProperty(mutated(seed), readIndex), fuzzParams())
  })

  it('generated index documents with hostile shard paths and odd metadata', async () => {
    await fc.assert(fc.asyncProperty(indexDoc, async text => { await readIndex(utf8(text)) }), fuzzParams())
  })

  it('deep nesting anywhere is refused with a message, never a stack overflow', async () => {
    await fc.assert(fc.asyncProperty(fc.integer({ min: 1, max: 100_000 }), fc.constantFrom('metadata', 'weight_map', 'other'), async (depth, where) => {
      const deep = `${'['.repeat(depth)}${']'.repeat(depth)}`
      const doc = where === 'metadata' ? `{"metadata":{"x":${deep}},"weight_map":{}}` : where === 'weight_map' ? `{"weight_map":{"t":${deep}}}` : `{"weight_map":{},"x":${deep}}`
      await readIndex(utf8(doc))
    }), fuzzParams(Math.min(200, fuzzParams().numRuns ?? 200)))
  })
})
