/**
 * Fuzzing the search query language (`core/query.ts`): token sequences built from the grammar
 * (fields, operators, values of every kind, keywords, parentheses, deep nesting) and random text.
 * Every input parses to a query or is refused with a typed error and a message, within a time
 * bound; a parsed query compiles, evaluates against documents and orders them without throwing.
 */
import fc from 'fast-check'
import { describe, it } from 'vitest'
import type { VersionId } from '../../src/core/digest.js'
import {
  FIELDS, MAX_ORDER_KEYS, MAX_QUERY_CONDITIONS, MAX_QUERY_LENGTH, MAX_QUERY_LIMIT,
  compareDocs, compileQuery, parseQuery, prepareDoc, textScore, type Query, type QueryNode
} from '../../src/core/query.js'
import type { SearchDoc } from '../../src/core/search-doc.js'
import { expectTypedOutcome, fuzzParams } from './fuzz.js'

const docs = [
  doc({ model: 'meta/llama-8b', description: 'chat model', framework: 'pytorch', task: 'text-generation', license: 'llama3', architecture: 'LlamaForCausalLM', tags: { task: 'chat', layers: '32' }, labels: ['prod'], params: 8e9, size: 16e9 }),
  doc({ model: 'mlp', framework: 'onnx', dtypes: ['F32'], formats: ['onnx'], params: 1000, size: 4096, local: false }),
  doc({ model: 'bare' })
].map(prepareDoc)

function doc (o: Partial<SearchDoc>): SearchDoc {
  return {
    schema: 1, model: 'm', version: `bafy${o.model ?? 'm'}` as VersionId, created: Date.UTC(2026, 0, 10), updated: Date.UTC(2026, 5, 1),
    dtypes: ['BF16'], params: 0, formats: ['safetensors'], tags: {}, labels: [], size: 0, files: 1, tensors: 0, local: true,
    structure: { exact: '', features: 0, shapes: '', names: '' },
    ...o
  }
}

const fieldNames = [...Object.keys(FIELDS).filter(f => f !== 'tags'), 'model', 'arch', 'dtypes', 'parameters', 'tags.task', 'tag.layers', 'tags.', 'Params', 'nosuch']
const ops = ['=', '==', '!=', '>', '>=', '<', '<=', '~', '!']
const keywords = ['AND', 'OR', 'NOT', 'ORDER', 'BY', 'LIMIT', 'ASC', 'DESC', 'and', 'not', 'order by']
const values = fc.oneof(
  fc.constantFrom('7B', '1.5M', '1e9', '1e999', '-1', '.5', '0', '10GB', '4GiB', '9e400TiB', '2026-01-10', '2026-13-45', '2026-01-10T10:00Z', '1800000000000', 'true', 'false', 'llama', '99999999999999999999'),
  fc.stringMatching(/^[a-z0-9.]{1,12}$/),
  fc.string({ maxLength: 20 }).map(s => JSON.stringify(s)),
  fc.string({ maxLength: 10 }).map(s => `'${s.replace(/'/g, "\\'")}'`),
  fc.string({ maxLength: 10 })
)
const piece: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(fc.constantFrom(...fieldNames), fc.constantFrom(...ops), values).map(([f, o, v]) => `${f} ${o} ${v}`) },
  { weight: 2, arbitrary: fc.constantFrom(...keywords) },
  { weight: 2, arbitrary: fc.constantFrom('(', ')', ',', '"', "'", '\\') },
  { weight: 1, arbitrary: values },
  { weight: 1, arbitrary: fc.constantFrom(...fieldNames) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 * MAX_QUERY_LIMIT }).map(n => `LIMIT ${n}`) }
)
const grammatical = fc.array(piece, { maxLength: 40 }).chain(parts => fc.array(fc.constantFrom(' ', '', '  ', '\t', '\n'), { minLength: parts.length, maxLength: parts.length }).map(gaps => parts.map((p, i) => `${p}${gaps[i] ?? ' '}`).join('')))
const nested = fc.tuple(fc.integer({ min: 0, max: 3000 }), fc.integer({ min: 0, max: 200 }), fc.constantFrom('(', 'NOT ', 'NOT (', '( NOT ')).map(([open, close, opener]) => `${opener.repeat(open)}name = a${')'.repeat(close)}`)
const many = fc.tuple(fc.integer({ min: 0, max: 2 * MAX_QUERY_CONDITIONS }), fc.constantFrom(' ', ' AND ', ' OR ')).map(([n, sep]) => Array(n).fill('a').join(sep))
const orderBy = fc.integer({ min: 1, max: 4 * MAX_ORDER_KEYS }).map(n => `a ORDER BY ${Array.from({ length: n }, (_, i) => i % 2 === 0 ? 'name DESC' : 'tags.layers').join(', ')}`)
const anyText = fc.oneof(fc.string({ maxLength: 200 }), fc.string({ unit: 'grapheme', maxLength: 100 }), fc.string({ maxLength: MAX_QUERY_LENGTH + 10, unit: fc.constantFrom('(', ')', 'a', ' ', '"', 'N', 'O', 'T') }))

/** A parsed query is within its bounds, and it compiles, evaluates, scores and orders documents. */
function use (q: Query): void {
  if (q.order.length > MAX_ORDER_KEYS) throw new Error(`${q.order.length} ORDER BY keys got through`)
  if (q.limit !== undefined && (q.limit < 1 || q.limit > MAX_QUERY_LIMIT)) throw new Error(`LIMIT ${q.limit} got through`)
  if (conditions(q.where) > MAX_QUERY_CONDITIONS) throw new Error('too many conditions got through')
  const p = compileQuery(q.where)
  const hits = docs.filter(d => p(d))
  for (const d of hits) textScore(d, q.terms)
  hits.sort((a, b) => compareDocs(a, b, q.order))
}

function conditions (n: QueryNode | undefined): number {
  if (n === undefined) return 0
  switch (n.type) {
    case 'and': case 'or': return n.nodes.reduce((sum, x) => sum + conditions(x), 0)
    case 'not': return conditions(n.node)
    default: return 1
  }
}

describe('fuzz: search queries', () => {
  it.each([
    ['grammar-built token sequences', grammatical],
    ['deep nesting', nested],
    ['long AND / OR lists', many],
    ['ORDER BY lists', orderBy],
    ['random text', anyText]
  ] as const)('%s parse to a bounded query or a typed error, and evaluate', async (_name, arbitrary) => {
    await fc.assert(fc.asyncProperty(arbitrary, async text => {
      await expectTypedOutcome(() => parseQuery(text), { maxMs: 1000, check: use })
    }), fuzzParams())
  })
})
