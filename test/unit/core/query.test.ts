import { describe, expect, it } from 'vitest'
import { chunkIdOf, fileDigest } from '../../../src/core/digest.js'
import { DEFAULT_BLOCK_SIZE, type Manifest } from '../../../src/core/manifest.js'
import type { Metadata } from '../../../src/core/metadata.js'
import {
  MAX_INEXACT_SIMILARITY, MAX_ORDER_KEYS, MAX_QUERY_CONDITIONS, MAX_QUERY_DEPTH,
  compareDocs, compileQuery, jaccard, matches, parseAmount, parseDate, parseQuery, prepareDoc, similarity, structureVector, textScore,
  type QueryNode
} from '../../../src/core/query.js'
import { MAX_INDEXED_DESCRIPTION, MAX_SIGNATURE_TENSORS, SKETCH_SIZE, bottomK, searchDocOf, type SearchDoc } from '../../../src/core/search-doc.js'

type Tensors = Array<[string, number[]]>

function manifest (o: { name: string, created?: number, tensors?: Tensors, metadata?: Metadata, format?: 'safetensors' | 'onnx' | 'gguf', dtype?: string, architecture?: string }): Manifest {
  const bytes = Buffer.from(`${o.name}:${o.created ?? 0}`)
  const chunks = [{ id: chunkIdOf(bytes), size: bytes.length }]
  const tensors = o.tensors ?? []
  const dtype = o.dtype ?? 'BF16'
  const format = o.format ?? 'safetensors'
  const params = tensors.reduce((n, [, s]) => n + s.reduce((a, b) => a * b, 1), 0)
  return {
    schema: 2,
    blockSize: DEFAULT_BLOCK_SIZE,
    name: o.name,
    created: o.created ?? Date.UTC(2026, 0, 10),
    parent: null,
    files: [{
      path: 'model.bin', size: bytes.length, digest: fileDigest(chunks), format, chunks,
      structure: {
        headerLength: 8, parameterCount: params, dtypes: [dtype], metadata: {},
        tensors: tensors.map(([name, shape]) => ({ name, dtype, shape, offset: 8, length: 0 })),
        ...(o.architecture !== undefined ? { architecture: o.architecture } : {})
      }
    }],
    metadata: o.metadata ?? {},
    structure: { formats: [format], parameterCount: params, dtypes: [dtype], tensorCount: tensors.length, totalSize: bytes.length }
  }
}

function llama (layers: number, hidden: number, vocab = 32000): Tensors {
  const out: Tensors = [['model.embed_tokens.weight', [vocab, hidden]]]
  for (let i = 0; i < layers; i++) {
    for (const p of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) out.push([`model.layers.${i}.self_attn.${p}.weight`, [hidden, hidden]])
    out.push([`model.layers.${i}.mlp.up_proj.weight`, [hidden * 3, hidden]], [`model.layers.${i}.input_layernorm.weight`, [hidden]])
  }
  out.push(['model.norm.weight', [hidden]], ['lm_head.weight', [vocab, hidden]])
  return out
}

function bert (layers: number): Tensors {
  const out: Tensors = [['bert.embeddings.word_embeddings.weight', [30522, 768]]]
  for (let i = 0; i < layers; i++) out.push([`bert.encoder.layer.${i}.attention.self.query.weight`, [768, 768]])
  return out
}

let n = 0
/** A search document from a small manifest, with fields overridden. */
function doc (overrides: Partial<SearchDoc> = {}, m: Parameters<typeof manifest>[0] = { name: `m${n++}` }): SearchDoc {
  return { ...searchDocOf(manifest(m), `bafy${n++}`, []), ...overrides }
}

const DOCS: Record<string, SearchDoc> = {
  onnxNer: doc({ model: 'acme/ner-large', framework: 'ONNX', params: 3e9, tags: { task: 'ner', lang: 'en' }, created: Date.UTC(2026, 2, 1), formats: ['onnx'], dtypes: ['F16'], labels: ['prod'], size: 6e9, local: true }),
  onnxNerSmall: doc({ model: 'acme/ner-small', framework: 'onnx', params: 5e8, tags: { task: 'ner' }, created: Date.UTC(2026, 2, 2), formats: ['onnx'], dtypes: ['F32'], size: 2e9 }),
  onnxNerOld: doc({ model: 'acme/ner-old', framework: 'onnx', params: 2e9, tags: { task: 'ner' }, created: Date.UTC(2025, 11, 31), formats: ['onnx'], dtypes: ['F32'] }),
  onnxNerNewYear: doc({ model: 'acme/ner-ny', framework: 'onnx', params: 2e9, tags: { task: 'ner' }, created: Date.UTC(2026, 0, 1, 12), formats: ['onnx'], dtypes: ['F32'] }),
  torchNer: doc({ model: 'acme/ner-torch', framework: 'pytorch', params: 7e9, tags: { task: 'ner' }, created: Date.UTC(2026, 3, 1), formats: ['safetensors'], dtypes: ['BF16'] }),
  llama: doc({ model: 'meta/llama-7b', framework: 'pytorch', task: 'text-generation', params: 6.7e9, architecture: 'LlamaForCausalLM', description: 'A general Llama model', tags: { epochs: '3', chat: '' }, created: Date.UTC(2026, 1, 1), formats: ['safetensors', 'other'], dtypes: ['BF16', 'F32'], labels: ['latest', 'prod'], local: false, size: 13e9, files: 4 }),
  gguf: doc({ model: 'someone/tiny-gguf', framework: 'gguf', params: 1.1e9, description: 'quantised tinyllama for ner-like tagging', license: 'apache-2.0', created: Date.UTC(2026, 0, 5), formats: ['gguf'], dtypes: ['Q4_K'], size: 7e8, tags: { epochs: '12' } })
}

function run (query: string, docs: SearchDoc[] = Object.values(DOCS)): string[] {
  const q = parseQuery(query)
  return docs.filter(d => matches(d, q.where)).map(d => d.model).sort()
}

function errorOf (query: string): Error {
  try {
    parseQuery(query)
  } catch (err) {
    return err as Error
  }
  throw new Error(`"${query}" parsed`)
}

describe('query parser', () => {
  it("answers the issue's example query", () => {
    const query = 'framework = "onnx" AND params > 1e9 AND tags.task = "ner" AND created > 2026-01-01'
    expect(run(query)).toEqual(['acme/ner-large'])
    const q = parseQuery(query)
    expect(q.where).toMatchObject({ type: 'and', nodes: [{ type: 'cmp', field: { name: 'framework' } }, { field: { name: 'params' }, op: '>' }, { field: { name: 'tags', tag: 'task' } }, { field: { name: 'created' } }] })
  })

  it('binds AND tighter than OR, NOT tighter than AND, and groups with parentheses', () => {
    const q = parseQuery('a OR b AND c')
    expect(q.where).toEqual({ type: 'or', nodes: [{ type: 'text', text: 'a', column: 1 }, { type: 'and', nodes: [{ type: 'text', text: 'b', column: 6 }, { type: 'text', text: 'c', column: 12 }] }] })
    expect(parseQuery('NOT a AND b').where).toMatchObject({ type: 'and', nodes: [{ type: 'not', node: { text: 'a' } }, { text: 'b' }] })
    expect(parseQuery('(a OR b) c').where).toMatchObject({ type: 'and', nodes: [{ type: 'or' }, { text: 'c' }] })
    expect(parseQuery('not not a').where).toMatchObject({ type: 'not', node: { type: 'not', node: { text: 'a' } } })
    // framework = pytorch OR (framework = gguf AND params > 1e9): the llama, torch and gguf models
    expect(run('framework = pytorch OR framework = gguf AND params > 1e9')).toEqual(['acme/ner-torch', 'meta/llama-7b', 'someone/tiny-gguf'])
    expect(run('(framework = pytorch OR framework = gguf) AND params > 7e9')).toEqual([])
    expect(run('NOT framework = onnx AND params < 2e9')).toEqual(['someone/tiny-gguf'])
    expect(run('NOT (framework = onnx OR framework = pytorch)')).toEqual(['someone/tiny-gguf'])
  })

  it('supports every operator on text, numbers and multi-valued fields', () => {
    expect(run('framework = ONNX')).toEqual(['acme/ner-large', 'acme/ner-ny', 'acme/ner-old', 'acme/ner-small'])
    expect(run('framework == onnx')).toEqual(run('framework = onnx'))
    expect(run('framework != onnx')).toEqual(['acme/ner-torch', 'meta/llama-7b', 'someone/tiny-gguf'])
    expect(run('name ~ NER-')).toEqual(['acme/ner-large', 'acme/ner-ny', 'acme/ner-old', 'acme/ner-small', 'acme/ner-torch'])
    expect(run('params > 3e9')).toEqual(['acme/ner-torch', 'meta/llama-7b'])
    expect(run('params >= 3e9')).toEqual(['acme/ner-large', 'acme/ner-torch', 'meta/llama-7b'])
    expect(run('params < 1.1e9')).toEqual(['acme/ner-small'])
    expect(run('params <= 1.1e9')).toEqual(['acme/ner-small', 'someone/tiny-gguf'])
    expect(run('params = 3e9')).toEqual(['acme/ner-large'])
    expect(run('name > "acme/ner-small"')).toEqual(['acme/ner-torch', 'meta/llama-7b', 'someone/tiny-gguf'])
    expect(run('dtype = f32')).toEqual(['acme/ner-ny', 'acme/ner-old', 'acme/ner-small', 'meta/llama-7b'])
    expect(run('dtype != f32 AND framework = onnx')).toEqual(['acme/ner-large'])
    expect(run('dtype ~ q4')).toEqual(['someone/tiny-gguf'])
    expect(run('format = gguf')).toEqual(['someone/tiny-gguf'])
    expect(run('label = prod')).toEqual(['acme/ner-large', 'meta/llama-7b'])
    expect(run('labels = latest')).toEqual(['meta/llama-7b'])
    expect(run('architecture ~ llama')).toEqual(['meta/llama-7b'])
    expect(run('license = "apache-2.0"')).toEqual(['someone/tiny-gguf'])
    expect(run('task = text-generation')).toEqual(['meta/llama-7b'])
    expect(run('files >= 4')).toEqual(['meta/llama-7b'])
    expect(run('local = false')).toEqual(['meta/llama-7b'])
    expect(run('local != false AND name ~ llama')).toEqual([])
    expect(run(`version = ${DOCS.gguf!.version}`)).toEqual(['someone/tiny-gguf'])
  })

  it('treats a missing field as failing every comparison but !=', () => {
    expect(run('license ~ a')).toEqual(['someone/tiny-gguf'])
    expect(run('license != mit')).toHaveLength(Object.keys(DOCS).length)
    expect(run('task > a')).toEqual(['meta/llama-7b'])
    expect(run('tags.lang != en')).toHaveLength(Object.keys(DOCS).length - 1)
  })

  it('reads parameter-count suffixes and byte units', () => {
    expect(run('params > 7B')).toEqual([])
    expect(run('params >= 7B')).toEqual(['acme/ner-torch'])
    expect(run('params > 1.5b AND params < 2.5B')).toEqual(['acme/ner-ny', 'acme/ner-old'])
    expect(run('params < 500M')).toEqual([])
    expect(run('params <= 500M')).toEqual(['acme/ner-small'])
    expect(run('size > 10GB')).toEqual(['meta/llama-7b'])
    expect(run('size < 1GiB')).toEqual(['acme/ner-ny', 'acme/ner-old', 'acme/ner-torch', 'someone/tiny-gguf'])
    expect(parseAmount('1.5M', 'count')).toBe(1_500_000)
    expect(parseAmount('7B', 'count')).toBe(7e9)
    expect(parseAmount('2k', 'count')).toBe(2000)
    expect(parseAmount('1T', 'count')).toBe(1e12)
    expect(parseAmount('1e9', 'count')).toBe(1e9)
    expect(parseAmount('2.5e-3', 'count')).toBe(0.0025)
    expect(parseAmount('4GiB', 'bytes')).toBe(4 * 2 ** 30)
    expect(parseAmount('7B', 'bytes')).toBe(7)
    expect(parseAmount('7X', 'count')).toBeUndefined()
    expect(parseAmount('seven', 'count')).toBeUndefined()
  })

  it('reads dates as whole UTC days, ISO instants or milliseconds', () => {
    // a whole day: "> 2026-01-01" is after that day; "= 2026-01-01" within it
    expect(run('created > 2026-01-01 AND framework = onnx')).toEqual(['acme/ner-large', 'acme/ner-small'])
    expect(run('created = 2026-01-01')).toEqual(['acme/ner-ny'])
    expect(run('created >= 2026-01-01 AND framework = onnx')).toEqual(['acme/ner-large', 'acme/ner-ny', 'acme/ner-small'])
    expect(run('created < 2026-01-01')).toEqual(['acme/ner-old'])
    expect(run('created <= 2026-01-01 AND framework = onnx')).toEqual(['acme/ner-ny', 'acme/ner-old'])
    expect(run('created != 2026-01-01 AND framework = onnx')).toEqual(['acme/ner-large', 'acme/ner-old', 'acme/ner-small'])
    expect(run('created > 2026-01-01T06:00:00Z AND created < 2026-01-02')).toEqual(['acme/ner-ny'])
    expect(run(`created = ${Date.UTC(2026, 0, 5)}`)).toEqual(['someone/tiny-gguf'])
    expect(run('created > 2026-03-01T00:00:00+01:00 AND framework = onnx')).toEqual(['acme/ner-large', 'acme/ner-small'])
    expect(run('updated = 2026-01-10')).toHaveLength(Object.keys(DOCS).length)
    expect(parseDate('2026-02-30')).toBeUndefined()
    expect(parseDate('2026-01-01T10:00Z')).toEqual({ at: Date.UTC(2026, 0, 1, 10) })
  })

  it('compares tags by key, numerically when both sides are numbers', () => {
    expect(run('tags.task = NER')).toEqual(['acme/ner-large', 'acme/ner-ny', 'acme/ner-old', 'acme/ner-small', 'acme/ner-torch'])
    expect(run('tags.lang ~ e')).toEqual(['acme/ner-large'])
    expect(run('tags.epochs > 5')).toEqual(['someone/tiny-gguf'])
    expect(run('tags.epochs < 10')).toEqual(['meta/llama-7b'])
    expect(run('tags.Epochs >= 3')).toEqual(['meta/llama-7b', 'someone/tiny-gguf'])
    expect(run('tag = chat')).toEqual(['meta/llama-7b'])
    expect(run('tag = lang OR tag = chat')).toEqual(['acme/ner-large', 'meta/llama-7b'])
  })

  it('matches free text in name, description, tags and architecture, not other fields', () => {
    expect(run('llama')).toEqual(['meta/llama-7b', 'someone/tiny-gguf'])
    expect(run('LLAMA 7b')).toEqual(['meta/llama-7b'])
    expect(run('"general llama"')).toEqual(['meta/llama-7b'])
    expect(run('lamaforcausal')).toEqual(['meta/llama-7b'])
    expect(run('chat')).toEqual(['meta/llama-7b'])
    expect(run('"lang=en"')).toEqual(['acme/ner-large'])
    expect(run('pytorch')).toEqual([])
    expect(run('ner AND NOT acme')).toEqual(['meta/llama-7b', 'someone/tiny-gguf']) // "general"
    expect(run('llama OR ner-small')).toEqual(['acme/ner-small', 'meta/llama-7b', 'someone/tiny-gguf'])
    expect(run('llama framework = gguf')).toEqual(['someone/tiny-gguf'])
    expect(run('"order"')).toEqual([])
    expect(parseQuery('llama "tiny llama" framework = gguf').terms).toEqual(['llama', 'tiny llama'])
    // name hits outrank tag/architecture hits, which outrank description hits
    const terms = ['llama']
    expect(textScore(prepareDoc(DOCS.llama!), terms)).toBeGreaterThan(textScore(prepareDoc(DOCS.gguf!), terms))
    expect(textScore(prepareDoc(DOCS.gguf!), terms)).toBe(1)
    expect(textScore(prepareDoc(DOCS.torchNer!), terms)).toBe(0)
  })

  it('matches everything when the query has no condition', () => {
    expect(run('')).toHaveLength(Object.keys(DOCS).length)
    expect(parseQuery('  ORDER BY params DESC LIMIT 3')).toEqual({ order: [{ field: { name: 'params' }, descending: true }], limit: 3, terms: [] })
  })

  it('parses ORDER BY and LIMIT, and compareDocs orders with missing values last', () => {
    const q = parseQuery('framework = onnx ORDER BY params DESC, created asc LIMIT 2')
    expect(q.order).toEqual([{ field: { name: 'params' }, descending: true }, { field: { name: 'created' }, descending: false }])
    expect(q.limit).toBe(2)
    const docs = Object.values(DOCS).map(prepareDoc)
    const sorted = (order: string): string[] => [...docs].sort((a, b) => compareDocs(a, b, parseQuery(order).order)).map(d => d.doc.model)
    expect(sorted('ORDER BY params DESC, created')).toEqual(['acme/ner-torch', 'meta/llama-7b', 'acme/ner-large', 'acme/ner-old', 'acme/ner-ny', 'someone/tiny-gguf', 'acme/ner-small'])
    expect(sorted('order by params desc, created desc').slice(3, 5)).toEqual(['acme/ner-ny', 'acme/ner-old'])
    expect(sorted('ORDER BY license').at(0)).toBe('someone/tiny-gguf')
    expect(sorted('ORDER BY license DESC').at(0)).toBe('someone/tiny-gguf')
    expect(sorted('ORDER BY tags.epochs DESC').slice(0, 2)).toEqual(['someone/tiny-gguf', 'meta/llama-7b'])
    expect(sorted('ORDER BY name').at(-1)).toBe('someone/tiny-gguf')
    // no keys: newest first
    expect(sorted('').at(0)).toBe('acme/ner-torch')
  })

  it.each([
    ['params >', "expected a value after '>' at column 9 (found the end of the query)"],
    ['framework = "onnx" AND params > AND x', "expected a value after '>' (quote \"AND\" to search for the word) at column 33 (found 'AND')"],
    ['framework = "onnx" AND', 'expected a condition after AND at column 23 (found the end of the query)'],
    ['a OR', 'expected a condition after OR at column 5 (found the end of the query)'],
    ['NOT', 'expected a condition after NOT at column 4 (found the end of the query)'],
    ['(a OR b', "expected ')' to close the '(' from column 1 at column 8 (found the end of the query)"],
    ['a)', "unmatched ')' at column 2 (found ')')"],
    ['()', "expected a condition inside '(' at column 2 (found ')')"],
    ['frameworks = onnx', 'unknown field "frameworks" (fields: name, description, framework, task, license, architecture, version, dtype, format, label, tag, params, files, tensors, size, created, updated, local, tags.<key>) at column 1 (found \'frameworks\')'],
    ['params > big', "expected a number for params (like 1000, 1e9, 7B or 1.5M) at column 10 (found 'big')"],
    ['size > "7Q"', 'expected a number for size (like 4096, 10GB or 4GiB) at column 8 (found "7Q")'],
    ['created > yesterday', "expected a date for created (YYYY-MM-DD, an ISO 8601 time or milliseconds) at column 11 (found 'yesterday')"],
    ['params ~ 7', "'~' (contains) needs a text field, and params is not one at column 8 (found '~')"],
    ['local > true', "local is true or false: use = or != at column 7 (found '>')"],
    ['local = maybe', "expected true or false for local at column 9 (found 'maybe')"],
    ['name = "unterminated', 'unterminated string starting at column 8'],
    ['"name" = x', 'a field name is written without quotes at column 1 (found "name")'],
    ['tags. = x', "expected a tag name after \"tags.\" at column 1 (found 'tags.')"],
    ['a ORDER BY params LIMIT', 'expected a whole number from 1 to 10000 after LIMIT at column 24 (found the end of the query)'],
    ['a ORDER BY dtype', 'cannot order by dtype (it holds several values) at column 12'],
    ['a ORDER BY', 'expected a field to order by at column 11 (found the end of the query)'],
    ['a LIMIT 0', "expected a whole number from 1 to 10000 after LIMIT at column 9 (found '0')"],
    ['a LIMIT 10 b', "expected AND, OR, ORDER BY, LIMIT or the end of the query at column 12 (found 'b')"],
    ['name = = b', "expected a value after '=' at column 8 (found '=')"],
    ['""', 'empty search text at column 1 (found "")']
  ])('refuses %j with the column', (query, message) => {
    const err = errorOf(query)
    expect(err.name).toBe('InvalidInputError')
    expect(err.message).toBe(message)
  })

  it('refuses a query over the length cap', () => {
    expect(errorOf('a'.repeat(5000)).name).toBe('InvalidInputError')
  })

  it('refuses 4,000 nested parentheses saying how deep and the limit, instead of overflowing the stack', () => {
    const err = errorOf('('.repeat(4000))
    expect(err.name).toBe('InvalidInputError')
    expect(err.message).toBe(`the query nests 4000 levels deep (parentheses and NOT, deepest at column 4000); at most ${MAX_QUERY_DEPTH} are allowed`)
  })

  it('counts each NOT and each parenthesis as a level, as the parser recurses, up to exactly the limit', () => {
    const half = MAX_QUERY_DEPTH / 2
    const deepest = `${'NOT '.repeat(half)}${'('.repeat(half)}name = a${')'.repeat(half)}`
    const q = parseQuery(deepest)
    expect(matches(doc({ model: 'a' }), q.where)).toBe(half % 2 === 0)
    const err = errorOf(`NOT ${deepest}`)
    expect(err.message).toBe(`the query nests ${MAX_QUERY_DEPTH + 1} levels deep (parentheses and NOT, deepest at column ${4 * half + 4 + half}); at most ${MAX_QUERY_DEPTH} are allowed`)
    // Siblings do not add up: only what is open at once counts.
    expect(parseQuery(Array.from({ length: 20 }, () => `NOT (${'('.repeat(60)}a${')'.repeat(60)})`).join(' OR ')).where?.type).toBe('or')
  })

  it('refuses more conditions and more ORDER BY keys than allowed, saying the limit', () => {
    expect(parseQuery(Array(MAX_QUERY_CONDITIONS).fill('a').join(' ')).terms).toHaveLength(MAX_QUERY_CONDITIONS)
    expect(errorOf(Array(MAX_QUERY_CONDITIONS + 1).fill('a').join(' ')).message)
      .toBe(`the query has more than ${MAX_QUERY_CONDITIONS} conditions; at most ${MAX_QUERY_CONDITIONS} are allowed at column ${2 * MAX_QUERY_CONDITIONS + 1} (found 'a')`)
    expect(parseQuery(`a ORDER BY ${Array(MAX_ORDER_KEYS).fill('name').join(', ')}`).order).toHaveLength(MAX_ORDER_KEYS)
    expect(errorOf(`a ORDER BY ${Array(400).fill('name').join(',')}`).message)
      .toBe(`ORDER BY has more than ${MAX_ORDER_KEYS} keys (the ${MAX_ORDER_KEYS + 1}th at column ${12 + 5 * MAX_ORDER_KEYS}); at most ${MAX_ORDER_KEYS} are allowed`)
  })

  it('says a number too large for a double is out of range', () => {
    expect(errorOf('params > 1e999').message).toBe("1e999 is out of range for params at column 10 (found '1e999')")
    expect(errorOf('size < 9e400GiB').message).toBe("9e400GiB is out of range for size at column 8 (found '9e400GiB')")
  })

  it('evaluates a very long AND or OR list (a tree built by hand) without deepening the stack', () => {
    const term: QueryNode = { type: 'text', text: 'llama', column: 1 }
    const miss: QueryNode = { type: 'text', text: 'absent', column: 1 }
    const d = prepareDoc(doc({ model: 'llama-8b' }))
    expect(compileQuery({ type: 'and', nodes: Array(50_000).fill(term) })(d)).toBe(true)
    expect(compileQuery({ type: 'or', nodes: [...Array(50_000).fill(miss), term] })(d)).toBe(true)
    expect(compileQuery({ type: 'and', nodes: [...Array(50_000).fill(term), miss] })(d)).toBe(false)
  })
})

describe('search documents', () => {
  it('extracts the searchable fields from a manifest', () => {
    const m = manifest({
      name: 'org/model', tensors: llama(12, 64, 100), architecture: 'LlamaForCausalLM', dtype: 'BF16', format: 'safetensors',
      metadata: { description: 'x'.repeat(MAX_INDEXED_DESCRIPTION + 10), framework: 'pytorch', task: 'text-generation', license: 'mit', tags: { task: 'chat' } }
    })
    const d = searchDocOf(m, 'bafyv', ['prod', 'latest', 'prod'], { local: false, updated: 5 })
    expect(d).toMatchObject({
      model: 'org/model', version: 'bafyv', created: m.created, updated: 5, framework: 'pytorch', task: 'text-generation', license: 'mit',
      architecture: 'LlamaForCausalLM', dtypes: ['BF16'], formats: ['safetensors'], labels: ['latest', 'prod'], tags: { task: 'chat' },
      local: false, files: 1, tensors: m.structure.tensorCount, params: m.structure.parameterCount
    })
    expect(d.description).toHaveLength(MAX_INDEXED_DESCRIPTION)
    expect(d.structure.exact).toMatch(/^[0-9a-f]{64}$/)
    expect(structureVector(d).shapes).toHaveLength(SKETCH_SIZE)
    expect(searchDocOf(m, 'bafyv', ['latest', 'prod'], { local: false, updated: 5 })).toEqual(d)
    const empty = searchDocOf(manifest({ name: 'empty' }), 'bafye', [])
    expect(empty.structure).toEqual({ exact: '', features: 0, shapes: '', names: '' })
    expect(empty.updated).toBe(empty.created)
  })

  it('caps the features of a model with very many tensors', () => {
    const tensors: Tensors = Array.from({ length: MAX_SIGNATURE_TENSORS + 1000 }, (_, i) => [`t.${i}`, [4, 4]])
    const started = performance.now()
    const d = searchDocOf(manifest({ name: 'huge', tensors }), 'bafyh', [])
    expect(performance.now() - started).toBeLessThan(5000)
    expect(d.structure.features).toBe(MAX_SIGNATURE_TENSORS)
    expect(d.tensors).toBe(MAX_SIGNATURE_TENSORS + 1000)
    expect(Buffer.from(d.structure.shapes, 'base64')).toHaveLength(SKETCH_SIZE * 4)
  })
})

describe('structure similarity', () => {
  const vec = (tensors: Tensors, dtype = 'BF16'): ReturnType<typeof structureVector> => structureVector(searchDocOf(manifest({ name: `s${n++}`, tensors, dtype }), 'bafys', []))
  const base = vec(llama(8, 256))

  it('scores the same tensor names and shapes 1, whatever the dtype', () => {
    expect(similarity(base, vec(llama(8, 256), 'F32'))).toBe(1)
    expect(similarity(base, vec([...llama(8, 256)].reverse()))).toBe(1)
  })

  it('ranks a resized head above a sibling of another size above an unrelated model', () => {
    const resized = llama(8, 256).map(([name, shape]): [string, number[]] => name === 'lm_head.weight' ? [name, [32002, 256]] : [name, shape])
    const s1 = similarity(base, vec(resized))
    const s2 = similarity(base, vec(llama(12, 512)))
    const s3 = similarity(base, vec(bert(12)))
    expect(s1).toBeGreaterThan(0.8)
    expect(s1).toBeLessThanOrEqual(MAX_INEXACT_SIMILARITY)
    expect(s2).toBeGreaterThan(0.05)
    expect(s2).toBeLessThan(s1)
    expect(s3).toBeLessThan(s2)
    expect(s3).toBe(0)
    expect(similarity(base, vec([]))).toBe(0)
  })

  it('estimates Jaccard from bottom-k sketches, exactly for small sets', () => {
    const a = bottomK(['a', 'b', 'c', 'd'], 1)
    const b = bottomK(['c', 'd', 'e', 'f'], 1)
    expect(jaccard(a, b)).toBeCloseTo(2 / 6)
    const big = (from: number, to: number): string[] => Array.from({ length: to - from }, (_, i) => `f${from + i}`)
    const estimate = jaccard(bottomK(big(0, 2000), 1), bottomK(big(1000, 3000), 1))
    expect(estimate).toBeGreaterThan(1 / 3 - 0.2)
    expect(estimate).toBeLessThan(1 / 3 + 0.2)
    expect(jaccard(bottomK(big(0, 10), 1), bottomK(big(0, 2000), 1))).toBeLessThan(0.2)
    expect(jaccard(new Uint32Array(), new Uint32Array())).toBe(0)
  })
})

describe('matches', () => {
  it('accepts plain or prepared documents, and no condition', () => {
    const node = parseQuery('framework = onnx').where as QueryNode
    expect(matches(DOCS.onnxNer!, node)).toBe(true)
    expect(matches(prepareDoc(DOCS.llama!), node)).toBe(false)
    expect(matches(DOCS.llama!, undefined)).toBe(true)
  })
})
