/**
 * The search query language (seed §4): a tokenizer and recursive-descent parser to an AST, an
 * evaluator over `SearchDoc`s, ordering, and structure similarity. Pure: no I/O.
 *
 * Grammar (keywords case-insensitive; columns in errors are 1-based):
 * ```
 * query      := expr? ( ORDER BY key ( ',' key )* )? ( LIMIT integer )?
 * expr       := and ( OR and )*
 * and        := unary ( AND? unary )*          juxtaposition is AND
 * unary      := NOT unary | '(' expr ')' | comparison | text
 * comparison := field op value                 op: = != > >= < <= ~  (~ contains, any case)
 * text       := word | "quoted phrase"         a free-text term
 * key        := field ( ASC | DESC )?
 * ```
 * So AND binds tighter than OR, NOT tighter than AND, and parentheses group. Fields are listed in
 * `FIELDS` (`tags.<key>` for one tag); `dtype`, `format`, `label` and `tag` hold several values and
 * match when any value does (`!=` when none does). Text comparisons ignore case. Values: quoted or
 * bare text; numbers with `e` exponents and, for counts, `K M B T` suffixes (`7B`, `1.5M`), for
 * `size` byte units (`10GB`, `4GiB`); dates `YYYY-MM-DD` (a whole UTC day: `=` is within the day,
 * `>` after it) or ISO 8601 instants or milliseconds; booleans `true`/`false` for `local`.
 * A missing field fails every comparison except `!=`, which is exactly `NOT =`.
 *
 * Free-text terms match, case-insensitively and as substrings, the name, description, tags (keys
 * and values) and architecture. `textScore` ranks matches: name over architecture and tags over
 * description.
 *
 * MUST hold: `parseQuery` either returns a query or throws `InvalidInputError` whose message names
 * the column of the offending token ("expected a value after '>' at column 17 (found the end of the query)"); it never throws
 * anything else, and its work is linear in the query (capped at `MAX_QUERY_LENGTH`). What a query
 * may ask for is bounded before it is parsed: nesting (`MAX_QUERY_DEPTH`: parentheses and NOT,
 * which the parser and the evaluator follow by recursion), conditions (`MAX_QUERY_CONDITIONS`:
 * each is evaluated against every document) and ORDER BY keys (`MAX_ORDER_KEYS`). A compiled
 * query evaluates AND and OR lists by loops, so its stack depth follows the nesting only.
 *
 * Structure similarity (`structureVector`, `similarity`): 1 for the same set of (tensor name,
 * shape) pairs; otherwise a weighted Jaccard estimate from the bottom-k sketches of
 * `core/search-doc.ts`, capped below 1 (`MAX_INEXACT_SIMILARITY`) so exact matches rank first.
 */
import { InvalidInputError } from './errors.js'
import { SKETCH_SIZE, decodeSketch, type SearchDoc } from './search-doc.js'

/** @default 4096 characters */
export const MAX_QUERY_LENGTH = 4096
/** @default 10_000 — largest `LIMIT` a query may ask for */
export const MAX_QUERY_LIMIT = 10_000
/** @default 64 — levels of parentheses and NOT, one inside the other */
export const MAX_QUERY_DEPTH = 64
/** @default 256 — comparisons and free-text terms in one query */
export const MAX_QUERY_CONDITIONS = 256
/** @default 8 — keys after ORDER BY */
export const MAX_ORDER_KEYS = 8
/** @default 0.8 — weight of the (name, shape) Jaccard estimate; names alone get the rest */
export const SHAPE_WEIGHT = 0.8
/** @default 0.99 — the best score of two structures that are not exactly the same */
export const MAX_INEXACT_SIMILARITY = 0.99

export type CompareOp = '=' | '!=' | '>' | '>=' | '<' | '<=' | '~'

export type FieldName =
  | 'name' | 'description' | 'framework' | 'task' | 'license' | 'architecture' | 'version'
  | 'dtype' | 'format' | 'label' | 'tag' | 'tags'
  | 'params' | 'size' | 'files' | 'tensors' | 'created' | 'updated' | 'local'

type FieldKind = 'text' | 'texts' | 'count' | 'bytes' | 'date' | 'bool'

/** Every field, its kind, and whether ORDER BY accepts it. `tags` is written `tags.<key>`. */
export const FIELDS: Readonly<Record<FieldName, { kind: FieldKind, sortable: boolean }>> = {
  name: { kind: 'text', sortable: true },
  description: { kind: 'text', sortable: true },
  framework: { kind: 'text', sortable: true },
  task: { kind: 'text', sortable: true },
  license: { kind: 'text', sortable: true },
  architecture: { kind: 'text', sortable: true },
  version: { kind: 'text', sortable: true },
  tags: { kind: 'text', sortable: true },
  dtype: { kind: 'texts', sortable: false },
  format: { kind: 'texts', sortable: false },
  label: { kind: 'texts', sortable: false },
  tag: { kind: 'texts', sortable: false },
  params: { kind: 'count', sortable: true },
  files: { kind: 'count', sortable: true },
  tensors: { kind: 'count', sortable: true },
  size: { kind: 'bytes', sortable: true },
  created: { kind: 'date', sortable: true },
  updated: { kind: 'date', sortable: true },
  local: { kind: 'bool', sortable: true }
}

const ALIASES: Readonly<Record<string, FieldName>> = {
  model: 'name', arch: 'architecture', dtypes: 'dtype', formats: 'format', labels: 'label', parameters: 'params'
}

export interface FieldRef { name: FieldName, /** for `tags.<key>`, lower-cased */ tag?: string }

export type QueryValue =
  | { kind: 'text', text: string, /** the text read as a plain number, for tag comparisons */ number?: number }
  | { kind: 'number', value: number, /** exclusive end of a whole-day date */ until?: number }
  | { kind: 'bool', value: boolean }

export type QueryNode =
  | { type: 'and', nodes: QueryNode[] }
  | { type: 'or', nodes: QueryNode[] }
  | { type: 'not', node: QueryNode }
  | { type: 'cmp', field: FieldRef, op: CompareOp, value: QueryValue, column: number }
  | { type: 'text', text: string, column: number }

export interface OrderKey { field: FieldRef, descending: boolean }

export interface Query {
  /** Absent: every document matches. */
  where?: QueryNode
  order: OrderKey[]
  limit?: number
  /** Free-text terms (lower-cased), for `textScore`. */
  terms: string[]
}

// ---- tokenizer ------------------------------------------------------------------------------

type TokenKind = 'word' | 'string' | 'op' | '(' | ')' | ',' | 'eof'
interface Token { kind: TokenKind, text: string, column: number }

const OPS = ['!=', '>=', '<=', '==', '=', '>', '<', '~']
const STOP = new Set([' ', '\t', '\n', '\r', '(', ')', ',', '=', '<', '>', '~', '"', "'"])

function tokenize (input: string): Token[] {
  const tokens: Token[] = []
  let i = 0
  while (i < input.length) {
    const c = input[i]!
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') { i++; continue }
    const column = i + 1
    if (c === '(' || c === ')' || c === ',') { tokens.push({ kind: c, text: c, column }); i++; continue }
    const op = OPS.find(o => input.startsWith(o, i))
    if (op !== undefined) { tokens.push({ kind: 'op', text: op === '==' ? '=' : op, column }); i += op.length; continue }
    if (c === '"' || c === "'") {
      let text = ''
      let j = i + 1
      for (; j < input.length && input[j] !== c; j++) {
        if (input[j] === '\\' && j + 1 < input.length) j++
        text += input[j]
      }
      if (j >= input.length) throw new InvalidInputError(`unterminated string starting at column ${column}`)
      tokens.push({ kind: 'string', text, column })
      i = j + 1
      continue
    }
    let j = i
    while (j < input.length && !STOP.has(input[j]!) && !(input[j] === '!' && input[j + 1] === '=')) j++
    tokens.push({ kind: 'word', text: input.slice(i, j), column })
    i = j
  }
  tokens.push({ kind: 'eof', text: '', column: input.length + 1 })
  return tokens
}

// ---- parser ---------------------------------------------------------------------------------

/** Parses a query (see the module doc). Throws `InvalidInputError` with the column. */
export function parseQuery (input: string): Query {
  if (input.length > MAX_QUERY_LENGTH) throw new InvalidInputError(`the query is ${input.length} characters, over the ${MAX_QUERY_LENGTH}-character limit`)
  const tokens = tokenize(input)
  checkNesting(tokens)
  return new Parser(tokens).query()
}

/**
 * Refuses a query nested deeper than `MAX_QUERY_DEPTH` before the recursive parser sees it. The
 * depth counted is the parser's: each '(' and each NOT opens a level; a ')' closes its '(' and
 * every NOT right before that '('; a term closes the NOTs right before it.
 */
function checkNesting (tokens: readonly Token[]): void {
  let depth = 0
  let deepest = 0
  let deepestAt: Token | undefined
  let nots = 0
  const open: number[] = []
  for (const t of tokens) {
    if (t.kind === 'word' && t.text.toUpperCase() === 'NOT') {
      nots++
    } else if (t.kind === '(') {
      open.push(nots + 1)
      depth += nots + 1
      nots = 0
    } else if (t.kind === ')') {
      depth -= open.pop() ?? 0
      nots = 0
      continue
    } else {
      nots = 0
      continue
    }
    if (depth + nots > deepest) {
      deepest = depth + nots
      deepestAt = t
    }
  }
  if (deepest > MAX_QUERY_DEPTH) {
    throw new InvalidInputError(`the query nests ${deepest} levels deep (parentheses and NOT, deepest at column ${deepestAt?.column ?? 0}); at most ${MAX_QUERY_DEPTH} are allowed`)
  }
}

class Parser {
  private at = 0
  private depth = 0
  private conditions = 0
  private readonly terms: string[] = []

  constructor (private readonly tokens: Token[]) {}

  query (): Query {
    const where = this.startsClause() ? undefined : this.or()
    const order: OrderKey[] = []
    let limit: number | undefined
    if (this.isKeyword(this.peek(), 'ORDER')) {
      this.next()
      const by = this.next()
      if (!this.isKeyword(by, 'BY')) throw this.error(`expected BY after ORDER`, by)
      do {
        const t = this.next()
        if (t.kind !== 'word') throw this.error('expected a field to order by', t)
        const field = this.field(t)
        if (!FIELDS[field.name].sortable) throw new InvalidInputError(`cannot order by ${t.text} (it holds several values) at column ${t.column}`)
        let descending = false
        if (this.isKeyword(this.peek(), 'ASC')) this.next()
        else if (this.isKeyword(this.peek(), 'DESC')) { this.next(); descending = true }
        order.push({ field, descending })
        if (order.length > MAX_ORDER_KEYS) throw new InvalidInputError(`ORDER BY has more than ${MAX_ORDER_KEYS} keys (the ${order.length}th at column ${t.column}); at most ${MAX_ORDER_KEYS} are allowed`)
      } while (this.peek().kind === ',' && this.next() !== undefined)
    }
    if (this.isKeyword(this.peek(), 'LIMIT')) {
      this.next()
      const t = this.next()
      const n = Number(t.text)
      if (t.kind !== 'word' || !/^\d+$/.test(t.text) || n < 1 || n > MAX_QUERY_LIMIT) {
        throw this.error(`expected a whole number from 1 to ${MAX_QUERY_LIMIT} after LIMIT`, t)
      }
      limit = n
    }
    const rest = this.peek()
    if (rest.kind !== 'eof') {
      throw this.error(rest.kind === ')' ? "unmatched ')'" : 'expected AND, OR, ORDER BY, LIMIT or the end of the query', rest)
    }
    return { ...(where !== undefined ? { where } : {}), order, ...(limit !== undefined ? { limit } : {}), terms: this.terms }
  }

  private or (): QueryNode {
    const nodes = [this.and()]
    while (this.isKeyword(this.peek(), 'OR')) {
      const op = this.next()
      this.operand(op)
      nodes.push(this.and())
    }
    return nodes.length === 1 ? nodes[0]! : { type: 'or', nodes }
  }

  private and (): QueryNode {
    const nodes = [this.unary()]
    for (;;) {
      if (this.isKeyword(this.peek(), 'AND')) {
        const op = this.next()
        this.operand(op)
        nodes.push(this.unary())
      } else if (this.startsUnary()) {
        nodes.push(this.unary())
      } else {
        break
      }
    }
    return nodes.length === 1 ? nodes[0]! : { type: 'and', nodes }
  }

  /** Checks a condition follows a keyword (AND, OR, NOT); says which keyword lacks it. */
  private operand (keyword: Token): void {
    if (!this.startsUnary()) throw this.error(`expected a condition after ${keyword.text.toUpperCase()}`, this.peek())
  }

  private unary (): QueryNode {
    const t = this.peek()
    if (this.isKeyword(t, 'NOT') || t.kind === '(') {
      // checkNesting bounds this already; the parser holds to it on its own as well.
      if (++this.depth > MAX_QUERY_DEPTH) throw new InvalidInputError(`the query nests more than ${MAX_QUERY_DEPTH} levels deep at column ${t.column}; at most ${MAX_QUERY_DEPTH} are allowed`)
      try {
        return this.nested(t)
      } finally {
        this.depth--
      }
    }
    if (t.kind === 'word' || t.kind === 'string') {
      if (++this.conditions > MAX_QUERY_CONDITIONS) throw this.error(`the query has more than ${MAX_QUERY_CONDITIONS} conditions; at most ${MAX_QUERY_CONDITIONS} are allowed`, t)
      this.next()
      const op = this.peek()
      if (op.kind === 'op') {
        if (t.kind === 'string') throw this.error('a field name is written without quotes', t)
        return this.comparison(t)
      }
      const text = t.text.toLowerCase()
      if (text.length === 0) throw this.error('empty search text', t)
      this.terms.push(text)
      return { type: 'text', text, column: t.column }
    }
    throw this.error('expected a condition', t)
  }

  /** NOT unary, or '(' expr ')'. */
  private nested (t: Token): QueryNode {
    this.next()
    if (t.kind !== '(') {
      this.operand(t)
      return { type: 'not', node: this.unary() }
    }
    if (this.peek().kind === ')') throw this.error("expected a condition inside '('", this.peek())
    const inner = this.or()
    const close = this.next()
    if (close.kind !== ')') throw this.error(`expected ')' to close the '(' from column ${t.column}`, close)
    return inner
  }

  private comparison (fieldToken: Token): QueryNode {
    const field = this.field(fieldToken)
    const opToken = this.next()
    const op = opToken.text as CompareOp
    const v = this.peek()
    if (v.kind !== 'word' && v.kind !== 'string') throw this.error(`expected a value after '${op}'`, v)
    if (v.kind === 'word' && KEYWORDS.has(v.text.toUpperCase()) && v.text.toUpperCase() !== 'BY') {
      throw this.error(`expected a value after '${op}' (quote "${v.text}" to search for the word)`, v)
    }
    this.next()
    const kind = FIELDS[field.name].kind
    const label = field.tag !== undefined ? `tags.${field.tag}` : field.name
    if (op === '~' && kind !== 'text' && kind !== 'texts') {
      throw this.error(`'~' (contains) needs a text field, and ${label} is not one`, opToken)
    }
    if (kind === 'bool' && op !== '=' && op !== '!=') throw this.error(`${label} is true or false: use = or !=`, opToken)
    return { type: 'cmp', field, op, value: this.value(kind, label, v), column: fieldToken.column }
  }

  private value (kind: FieldKind, label: string, t: Token): QueryValue {
    const text = t.text
    switch (kind) {
      case 'text':
      case 'texts': {
        const n = parseAmount(text, 'count')
        return { kind: 'text', text: text.toLowerCase(), ...(n !== undefined ? { number: n } : {}) }
      }
      case 'count':
      case 'bytes': {
        const n = parseAmount(text, kind)
        if (n === undefined && parseAmount(text, kind, { finite: false }) !== undefined) throw this.error(`${text.slice(0, 40)} is out of range for ${label}`, t)
        if (n === undefined) {
          const example = kind === 'bytes' ? '4096, 10GB or 4GiB' : '1000, 1e9, 7B or 1.5M'
          throw this.error(`expected a number for ${label} (like ${example})`, t)
        }
        return { kind: 'number', value: n }
      }
      case 'date': {
        const d = parseDate(text)
        if (d === undefined) throw this.error(`expected a date for ${label} (YYYY-MM-DD, an ISO 8601 time or milliseconds)`, t)
        return { kind: 'number', value: d.at, ...(d.until !== undefined ? { until: d.until } : {}) }
      }
      case 'bool': {
        const lower = text.toLowerCase()
        if (lower !== 'true' && lower !== 'false') throw this.error(`expected true or false for ${label}`, t)
        return { kind: 'bool', value: lower === 'true' }
      }
    }
  }

  private field (t: Token): FieldRef {
    const lower = t.text.toLowerCase()
    if (lower.startsWith('tags.') || lower.startsWith('tag.')) {
      const tag = lower.slice(lower.indexOf('.') + 1)
      if (tag.length === 0) throw this.error('expected a tag name after "tags."', t)
      return { name: 'tags', tag }
    }
    const name = (ALIASES[lower] ?? lower) as FieldName
    if (name === 'tags' || !Object.hasOwn(FIELDS, name)) {
      const known = Object.keys(FIELDS).filter(f => f !== 'tags').join(', ')
      throw this.error(`unknown field "${t.text}" (fields: ${known}, tags.<key>)`, t)
    }
    return { name }
  }

  private startsClause (): boolean {
    const t = this.peek()
    return t.kind === 'eof' || this.isKeyword(t, 'LIMIT') || this.isOrderBy()
  }

  private startsUnary (): boolean {
    const t = this.peek()
    if (t.kind === '(' || t.kind === 'string') return true
    if (t.kind !== 'word') return false
    if (this.isKeyword(t, 'NOT')) return true
    return !this.isKeyword(t, 'AND') && !this.isKeyword(t, 'OR') && !this.isKeyword(t, 'LIMIT') && !this.isOrderBy()
  }

  private isOrderBy (): boolean {
    return this.isKeyword(this.peek(), 'ORDER') && this.isKeyword(this.tokens[this.at + 1], 'BY')
  }

  private isKeyword (t: Token | undefined, keyword: string): boolean {
    return t?.kind === 'word' && t.text.toUpperCase() === keyword
  }

  private peek (): Token {
    return this.tokens[this.at]!
  }

  private next (): Token {
    const t = this.tokens[this.at]!
    if (t.kind !== 'eof') this.at++
    return t
  }

  private error (message: string, t: Token): InvalidInputError {
    const found = t.kind === 'eof' ? 'the end of the query' : t.kind === 'string' ? JSON.stringify(t.text) : `'${t.text}'`
    return new InvalidInputError(`${message} at column ${t.column} (found ${found})`)
  }
}

const KEYWORDS = new Set(['AND', 'OR', 'NOT', 'ORDER', 'BY', 'LIMIT', 'ASC', 'DESC'])

const COUNT_UNITS: Readonly<Record<string, number>> = { '': 1, k: 1e3, m: 1e6, b: 1e9, g: 1e9, t: 1e12 }
const BYTE_UNITS: Readonly<Record<string, number>> = {
  '': 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40
}

/** `1e9`, `7B`, `1.5M` (counts) or `10GB`, `4GiB` (bytes); undefined when not a number, or (unless `finite: false`) not a finite one. */
export function parseAmount (text: string, units: 'count' | 'bytes', options: { finite?: boolean } = {}): number | undefined {
  const m = /^(\d+(?:\.\d+)?|\.\d+)(?:e([+-]?\d+))?([a-z]*)$/i.exec(text)
  if (m === null) return undefined
  const scale = (units === 'bytes' ? BYTE_UNITS : COUNT_UNITS)[m[3]!.toLowerCase()]
  if (scale === undefined) return undefined
  const n = Number(`${m[1]!}${m[2] !== undefined ? `e${m[2]}` : ''}`) * scale
  return Number.isFinite(n) || options.finite === false ? n : undefined
}

const DAY_MS = 24 * 3600 * 1000

/** `YYYY-MM-DD` (a whole UTC day), an ISO 8601 instant, or milliseconds since the epoch. */
export function parseDate (text: string): { at: number, until?: number } | undefined {
  if (/^\d{4}-\d{2}-\d{2}$/.test(text)) {
    const at = Date.parse(`${text}T00:00:00Z`)
    return Number.isNaN(at) || new Date(at).toISOString().slice(0, 10) !== text ? undefined : { at, until: at + DAY_MS }
  }
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})?$/.test(text)) {
    const at = Date.parse(text)
    return Number.isNaN(at) ? undefined : { at }
  }
  if (/^\d{1,16}$/.test(text)) return { at: Number(text) }
  return undefined
}

// ---- evaluation -----------------------------------------------------------------------------

/**
 * A document with the lower-cased, flat views the evaluator compares (one object per document, so
 * a scan touches little memory); build once per document.
 */
export interface PreparedDoc {
  readonly doc: SearchDoc
  /** name, description, tags and architecture, lower-cased, one per line. */
  readonly text: string
  readonly tagText: string
  readonly name: string
  readonly description: string | undefined
  readonly framework: string | undefined
  readonly task: string | undefined
  readonly license: string | undefined
  readonly architecture: string | undefined
  readonly version: string
  readonly params: number
  readonly size: number
  readonly files: number
  readonly tensors: number
  readonly created: number
  readonly updated: number
  readonly local: boolean
  readonly dtype: readonly string[]
  readonly format: readonly string[]
  readonly label: readonly string[]
  readonly tag: readonly string[]
  readonly tags: ReadonlyMap<string, string>
}

export function prepareDoc (doc: SearchDoc): PreparedDoc {
  const lower = (s: string | undefined): string | undefined => s?.toLowerCase()
  const tags = new Map(Object.entries(doc.tags).map(([k, v]) => [k.toLowerCase(), v.toLowerCase()]))
  const tagText = [...tags].map(([k, v]) => v === '' ? k : `${k}=${v}`).join(' ')
  const name = doc.model.toLowerCase()
  const description = lower(doc.description)
  const architecture = lower(doc.architecture)
  return {
    doc,
    text: `${name}\n${description ?? ''}\n${tagText}\n${architecture ?? ''}`,
    tagText,
    name,
    description,
    framework: lower(doc.framework),
    task: lower(doc.task),
    license: lower(doc.license),
    architecture,
    version: doc.version.toLowerCase(),
    params: doc.params,
    size: doc.size,
    files: doc.files,
    tensors: doc.tensors,
    created: doc.created,
    updated: doc.updated,
    local: doc.local,
    dtype: doc.dtypes.map(d => d.toLowerCase()),
    format: doc.formats.map(f => f.toLowerCase()),
    label: doc.labels.map(l => l.toLowerCase()),
    tag: [...tags.keys()],
    tags
  }
}

export type Predicate = (doc: PreparedDoc) => boolean

/** Compiles a query's condition to a predicate over prepared documents (absent: always true). */
export function compileQuery (node: QueryNode | undefined): Predicate {
  if (node === undefined) return () => true
  switch (node.type) {
    case 'and': {
      // A loop, not a chain of closures: the stack depth must not grow with the number of terms.
      const all = node.nodes.map(compileQuery)
      return d => {
        for (const p of all) if (!p(d)) return false
        return true
      }
    }
    case 'or': {
      const any = node.nodes.map(compileQuery)
      return d => {
        for (const p of any) if (p(d)) return true
        return false
      }
    }
    case 'not': {
      const inner = compileQuery(node.node)
      return d => !inner(d)
    }
    case 'text': {
      const text = node.text
      return d => d.text.includes(text)
    }
    case 'cmp':
      return compileComparison(node)
  }
}

const compiled = new WeakMap<QueryNode, Predicate>()

/** True when `doc` satisfies `node` (absent: always). Prefer `compileQuery` + `prepareDoc` in loops. */
export function matches (doc: SearchDoc | PreparedDoc, node: QueryNode | undefined): boolean {
  if (node === undefined) return true
  let p = compiled.get(node)
  if (p === undefined) {
    p = compileQuery(node)
    compiled.set(node, p)
  }
  return p('doc' in doc && 'text' in doc ? doc : prepareDoc(doc))
}

function compileComparison (node: Extract<QueryNode, { type: 'cmp' }>): Predicate {
  const { field, op, value } = node
  const negate = op === '!='
  const base: CompareOp = negate ? '=' : op
  let test: Predicate
  if (field.name === 'tags') {
    const key = field.tag!
    const q = value as Extract<QueryValue, { kind: 'text' }>
    const asText = textTest(base, q.text)
    const asNumber = q.number !== undefined ? numberTest(base, q.number) : undefined
    test = d => {
      const v = d.tags.get(key)
      if (v === undefined) return false
      const n = asNumber !== undefined && v.trim() !== '' ? Number(v) : NaN
      return Number.isFinite(n) ? asNumber!(n) : asText(v)
    }
  } else if (value.kind === 'text') {
    const t = textTest(base, value.text)
    if (FIELDS[field.name].kind === 'texts') {
      const get = listOf(field.name)
      test = d => get(d).some(t)
    } else {
      const get = textOf(field.name)
      test = d => {
        const v = get(d)
        return v !== undefined && t(v)
      }
    }
  } else if (value.kind === 'bool') {
    const q = value.value
    test = d => d.local === q
  } else {
    const get = numberOf(field.name)
    const t = value.until === undefined ? numberTest(base, value.value) : dayTest(base, value.value, value.until)
    test = d => t(get(d))
  }
  return negate ? d => !test(d) : test
}

/** A getter per field, so each compiled comparison reads one fixed property. */
function textOf (name: FieldName): (d: PreparedDoc) => string | undefined {
  switch (name) {
    case 'name': return d => d.name
    case 'description': return d => d.description
    case 'framework': return d => d.framework
    case 'task': return d => d.task
    case 'license': return d => d.license
    case 'architecture': return d => d.architecture
    case 'version': return d => d.version
    default: throw new InvalidInputError(`${name} is not a text field`)
  }
}

function listOf (name: FieldName): (d: PreparedDoc) => readonly string[] {
  switch (name) {
    case 'dtype': return d => d.dtype
    case 'format': return d => d.format
    case 'label': return d => d.label
    case 'tag': return d => d.tag
    default: throw new InvalidInputError(`${name} is not a list`)
  }
}

function numberOf (name: FieldName): (d: PreparedDoc) => number {
  switch (name) {
    case 'params': return d => d.params
    case 'size': return d => d.size
    case 'files': return d => d.files
    case 'tensors': return d => d.tensors
    case 'created': return d => d.created
    case 'updated': return d => d.updated
    default: throw new InvalidInputError(`${name} is not a number`)
  }
}

function textTest (op: CompareOp, q: string): (v: string) => boolean {
  switch (op) {
    case '=': return v => v === q
    case '~': return v => v.includes(q)
    case '>': return v => v > q
    case '>=': return v => v >= q
    case '<': return v => v < q
    case '<=': return v => v <= q
    default: return () => false
  }
}

function numberTest (op: CompareOp, q: number): (v: number) => boolean {
  switch (op) {
    case '=': return v => v === q
    case '>': return v => v > q
    case '>=': return v => v >= q
    case '<': return v => v < q
    case '<=': return v => v <= q
    default: return () => false
  }
}

/** A whole-day date: `=` within [at, until), `>` from `until` on, `<=` before `until`. */
function dayTest (op: CompareOp, at: number, until: number): (v: number) => boolean {
  switch (op) {
    case '=': return v => v >= at && v < until
    case '>': return v => v >= until
    case '>=': return v => v >= at
    case '<': return v => v < at
    case '<=': return v => v < until
    default: return () => false
  }
}

/** Free-text relevance: per term, 3 for the name, 2 for architecture or tags, 1 for description. */
export function textScore (d: PreparedDoc, terms: readonly string[]): number {
  let score = 0
  for (const t of terms) {
    if (d.name.includes(t)) score += 3
    else if (d.architecture?.includes(t) === true || d.tagText.includes(t)) score += 2
    else if (d.description?.includes(t) === true) score += 1
  }
  return score
}

/**
 * ORDER BY: compares by each key in turn (missing values last, whatever the direction), then by
 * `created` newest first, then by version id, so the order is total and stable across runs.
 */
export function compareDocs (a: PreparedDoc, b: PreparedDoc, order: readonly OrderKey[]): number {
  for (const key of order) {
    const x = sortValue(a, key.field)
    const y = sortValue(b, key.field)
    if (x === y) continue
    if (x === undefined) return 1
    if (y === undefined) return -1
    const c = x < y ? -1 : 1
    return key.descending ? -c : c
  }
  return compareDefault(a, b)
}

/** Newest first, then by version id. */
export function compareDefault (a: PreparedDoc, b: PreparedDoc): number {
  if (a.created !== b.created) return b.created - a.created
  return a.version < b.version ? -1 : a.version > b.version ? 1 : 0
}

function sortValue (d: PreparedDoc, field: FieldRef): string | number | undefined {
  switch (field.name) {
    case 'tags': {
      const v = d.tags.get(field.tag!)
      if (v === undefined) return undefined
      const n = v.trim() === '' ? NaN : Number(v)
      return Number.isFinite(n) ? n : v
    }
    case 'params': case 'size': case 'files': case 'tensors': case 'created': case 'updated':
      return d[field.name]
    case 'local': return d.local ? 1 : 0
    case 'name': case 'description': case 'framework': case 'task': case 'license': case 'architecture': case 'version':
      return d[field.name]
    default: return undefined
  }
}

// ---- structure similarity -------------------------------------------------------------------

/** The decoded structure signature of a document (decode once, compare many times). */
export interface StructureVector {
  exact: string
  shapes: Uint32Array
  names: Uint32Array
}

export function structureVector (doc: SearchDoc): StructureVector {
  return { exact: doc.structure.exact, shapes: decodeSketch(doc.structure.shapes), names: decodeSketch(doc.structure.names) }
}

/**
 * 1 when both have tensors and the same (name, shape) set; otherwise `SHAPE_WEIGHT` × Jaccard of
 * (name, shape) pairs + the rest × Jaccard of names, both estimated from the sketches, at most
 * `MAX_INEXACT_SIMILARITY`; 0 when either has no tensors or their name sketches share nothing.
 */
export function similarity (a: StructureVector, b: StructureVector): number {
  if (a.exact === '' || b.exact === '') return 0
  if (a.exact === b.exact) return 1
  // No shared name in the sketches: the (name, shape) pairs share none either (up to the estimate).
  const names = jaccard(a.names, b.names)
  if (names === 0) return 0
  return Math.min(SHAPE_WEIGHT * jaccard(a.shapes, b.shapes) + (1 - SHAPE_WEIGHT) * names, MAX_INEXACT_SIMILARITY)
}

/**
 * Bottom-k estimate of |A∩B| / |A∪B| from two ascending sketches. A sketch shorter than
 * `SKETCH_SIZE` holds its whole set; a full one only speaks for values up to its largest.
 */
export function jaccard (a: Uint32Array, b: Uint32Array, k = SKETCH_SIZE): number {
  const limit = Math.min(a.length >= k ? a[a.length - 1]! : Infinity, b.length >= k ? b[b.length - 1]! : Infinity)
  let i = 0
  let j = 0
  let union = 0
  let both = 0
  while (union < k && (i < a.length || j < b.length)) {
    const x = i < a.length ? a[i]! : Infinity
    const y = j < b.length ? b[j]! : Infinity
    const v = Math.min(x, y)
    if (v > limit) break
    if (x === y) { both++; i++; j++ } else if (x < y) i++
    else j++
    union++
  }
  return union === 0 ? 0 : both / union
}
