/**
 * Checks one HTTP request against the OpenAPI 3.1 document (`docs/openapi.json`), without a
 * browser and without the server's code: the path is an instance of a documented path template,
 * the method is documented for it, every path, query and declared header parameter is present
 * when required and matches its schema, no undeclared query parameter is sent, and the body is
 * JSON of the declared content type that matches the operation's schema (JSON Schema 2020-12,
 * checked by ajv). `check` answers the problems, each in words a person can act on; none means
 * the request is valid.
 *
 * Reading the document as the server does (`rpc/server.ts`): `{name}` in a template is one
 * percent-encoded segment, and a last `{path}` takes the rest of the path, slashes included.
 * Query values are strings on the wire: a parameter whose schema is an integer, number or boolean
 * is compared as one when its text is one (`?limit=5` is the integer 5; `?limit=x` stays a string
 * and fails "must be integer").
 *
 * Not a goal: responses (the document gives no response schemas), cookies, security schemes.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js'
import { ROOT } from '../../scripts/lib/daemon-proc.js'

/** The committed document the checks read. */
export const OPENAPI_DOCUMENT = join(ROOT, 'docs', 'openapi.json')

/** What the check needs of a request: its line, the headers it sent and its body. */
export interface CheckedRequest {
  method: string
  /** The request target: path and query, as sent (`/v1/show?ref=a%40b`). */
  url: string
  /** Lower-case header names. */
  headers?: Record<string, string | undefined>
  /** Empty or absent when the request sent none. */
  body?: string | Buffer
}

interface Parameter { name: string, in: 'path' | 'query' | 'header' | 'cookie', required?: boolean, schema?: Schema }
interface Operation { parameters?: Parameter[], requestBody?: { required?: boolean, content: Record<string, { schema?: Schema }> } }
type Schema = Record<string, unknown>
export interface OpenApiDocument { openapi: string, paths: Record<string, Record<string, Operation>> }

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']

export class OpenApiCheck {
  private readonly ajv = new Ajv2020({ allErrors: true, strict: true })
  private readonly validators = new Map<Schema, ValidateFunction>()
  private readonly templates: Array<{ path: string, regex: RegExp, names: string[] }>

  constructor (readonly doc: OpenApiDocument) {
    if (!/^3\.1\./.test(doc.openapi)) throw new Error(`the document is OpenAPI ${doc.openapi}: this check reads 3.1 (JSON Schema 2020-12)`)
    this.ajv.addFormat('uri', { type: 'string', validate: (s: string) => URL.canParse(s) })
    this.templates = Object.keys(doc.paths).filter(p => p.includes('{')).map(path => ({ path, ...templatePattern(path) }))
  }

  /** The check of the committed `docs/openapi.json`. */
  static async load (file = OPENAPI_DOCUMENT): Promise<OpenApiCheck> {
    return new OpenApiCheck(JSON.parse(await readFile(file, 'utf8')) as OpenApiDocument)
  }

  /** What is wrong with `req` by the document; empty when it is valid. */
  check (req: CheckedRequest): string[] {
    const q = req.url.indexOf('?')
    const rawPath = q < 0 ? req.url : req.url.slice(0, q)
    const query = new URLSearchParams(q < 0 ? '' : req.url.slice(q + 1))
    const method = req.method.toLowerCase()

    const found = this.findPath(rawPath)
    if (found === undefined) return [`no path in the document matches ${clip(rawPath)}`]
    const operations = this.doc.paths[found.path] ?? {}
    const op = operations[method]
    if (op === undefined) {
      const allowed = Object.keys(operations).filter(m => METHODS.includes(m)).map(m => m.toUpperCase())
      return [`the document has no ${req.method.toUpperCase()} for ${found.path} (only ${allowed.join(', ')})`]
    }

    const problems: string[] = []
    const params = op.parameters ?? []
    for (const p of params.filter(x => x.in === 'path')) {
      const raw = found.params[p.name]
      if (raw === undefined) { problems.push(`path parameter ${p.name} is missing`); continue }
      let value: string
      try {
        value = decodeURIComponent(raw)
      } catch {
        problems.push(`path parameter ${p.name} (${clip(raw)}) is not valid percent-encoding`)
        continue
      }
      problems.push(...this.schemaProblems(`path parameter ${p.name}`, p.schema, value))
    }
    for (const name of new Set(query.keys())) {
      const p = params.find(x => x.in === 'query' && x.name === name)
      if (p === undefined) {
        const declared = params.filter(x => x.in === 'query').map(x => x.name)
        problems.push(`query parameter ${clip(name)} is not in the document (${declared.length > 0 ? `it declares ${declared.join(', ')}` : 'it declares none'} for ${req.method.toUpperCase()} ${found.path})`)
        continue
      }
      const values = query.getAll(name)
      if (p.schema?.type === 'array') problems.push(...this.schemaProblems(`query parameter ${name}`, p.schema, values.map(v => fromText(v, itemsOf(p.schema))), true))
      else if (values.length > 1) problems.push(`query parameter ${name} is given ${values.length} times; the document takes one value`)
      else problems.push(...this.schemaProblems(`query parameter ${name}`, p.schema, fromText(values[0] ?? '', p.schema), true))
    }
    for (const p of params.filter(x => x.in === 'query' && x.required === true && !query.has(x.name))) problems.push(`required query parameter ${p.name} is missing`)
    for (const p of params.filter(x => x.in === 'header')) {
      const value = req.headers?.[p.name.toLowerCase()]
      if (value === undefined) {
        if (p.required === true) problems.push(`required header ${p.name} is missing`)
        continue
      }
      problems.push(...this.schemaProblems(`header ${p.name}`, p.schema, value, true))
    }
    problems.push(...this.bodyProblems(req, op, `${req.method.toUpperCase()} ${found.path}`))
    return problems
  }

  /** The documented path template `url`'s path is an instance of (`/v1/versions/{id}/files/{path}`), if any. */
  documentedPath (url: string): string | undefined {
    const q = url.indexOf('?')
    return this.findPath(q < 0 ? url : url.slice(0, q))?.path
  }

  private findPath (rawPath: string): { path: string, params: Record<string, string> } | undefined {
    if (this.doc.paths[rawPath] !== undefined) return { path: rawPath, params: {} }
    for (const t of this.templates) {
      const m = t.regex.exec(rawPath)
      if (m !== null) return { path: t.path, params: Object.fromEntries(t.names.map((name, i) => [name, m[i + 1] ?? ''])) }
    }
    return undefined
  }

  private bodyProblems (req: CheckedRequest, op: Operation, where: string): string[] {
    const body = req.body === undefined ? '' : req.body.toString()
    const declared = op.requestBody
    if (declared === undefined) return body === '' ? [] : [`sends a body (${clip(body)}), but the document describes none for ${where}`]
    if (body === '') return declared.required === true ? [`has no body, but ${where} requires one (${Object.keys(declared.content).join(' or ')})`] : []
    const sent = (req.headers?.['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() ?? ''
    const media = declared.content[sent]
    if (media === undefined) return [`sends content-type ${sent === '' ? '(none)' : sent}; ${where} takes ${Object.keys(declared.content).join(' or ')}`]
    let value: unknown
    try {
      value = JSON.parse(body)
    } catch (err) {
      return [`the body is not valid JSON (${(err as Error).message}): ${clip(body)}`]
    }
    return this.schemaProblems('the body', media.schema, value)
  }

  /** `what` against `schema` (a missing schema takes anything); `text` says the value came as text. */
  private schemaProblems (what: string, schema: Schema | undefined, value: unknown, text = false): string[] {
    if (schema === undefined) return []
    let validate = this.validators.get(schema)
    if (validate === undefined) {
      validate = this.ajv.compile(schema)
      this.validators.set(schema, validate)
    }
    if (validate(value)) return []
    const shown = typeof value === 'string' && text ? JSON.stringify(clip(value)) : clip(JSON.stringify(value) ?? String(value))
    return (validate.errors ?? []).map(e => `${what}${e.instancePath === '' ? '' : ` at ${e.instancePath.slice(1).replaceAll('/', '.')}`} ${describe(e)} (sent ${shown})`)
  }
}

/** ajv's message, with the name of an extra or missing property, or the values an enum allows. */
function describe (e: ErrorObject): string {
  const params = e.params as Record<string, unknown>
  if (e.keyword === 'additionalProperties') return `must not have the property ${JSON.stringify(params.additionalProperty)}`
  if (e.keyword === 'unevaluatedProperties') return `must not have the property ${JSON.stringify(params.unevaluatedProperty)}`
  if (e.keyword === 'required') return `must have the property ${JSON.stringify(params.missingProperty)}`
  if (e.keyword === 'enum') return `must be one of ${JSON.stringify(params.allowedValues)}`
  return e.message ?? e.keyword
}

/** A path template's matcher: `{name}` is one segment, a last `{path}` the rest of the path. */
function templatePattern (path: string): { regex: RegExp, names: string[] } {
  const names: string[] = []
  const parts = path.split(/(\{[A-Za-z0-9_]+\})/).map((part, i, all) => {
    const m = /^\{([A-Za-z0-9_]+)\}$/.exec(part)
    if (m === null) return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
    names.push(m[1] ?? '')
    return i === all.length - 2 && all[all.length - 1] === '' ? '(.+)' : '([^/]+)'
  })
  return { regex: new RegExp(`^${parts.join('')}$`), names }
}

function itemsOf (schema: Schema | undefined): Schema | undefined {
  const items = schema?.items
  return typeof items === 'object' && items !== null ? items as Schema : undefined
}

/** A query or header value as the type its schema names, when its text is one; else the text. */
function fromText (value: string, schema: Schema | undefined): unknown {
  const type = schema?.type
  if ((type === 'integer' || type === 'number') && /^-?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(value)) return Number(value)
  if (type === 'boolean' && (value === 'true' || value === 'false')) return value === 'true'
  return value
}

function clip (text: string, max = 200): string {
  return text.length > max ? `${text.slice(0, max)}… (${text.length} characters)` : text
}
