/**
 * Model metadata (seed §2): what a model is for and how to use it. Given by CLI flags or a
 * metadata file (`shoal.json` in the model folder, or `--meta <file>`), validated here, stored in
 * the manifest. Unknown keys are refused so a typo is not silently dropped. Names and short values
 * may not hold control, bidirectional or invisible characters (`core/names.ts`); prose
 * (descriptions) may hold tabs and line breaks but no other control and no text-reordering
 * bidirectional control, so `shoal show` displays what was written.
 */
import { z } from 'zod'
import { InvalidInputError } from './errors.js'
import { escapeUnsafe, printable, unsafeCharacter } from './names.js'

/** Name of the metadata file read from the top of a model folder when present. */
export const METADATA_FILE = 'shoal.json'
/** @default 64 KiB — encoded size cap for metadata */
export const MAX_METADATA_BYTES = 64 * 1024
/**
 * Largest metadata file (`shoal.json`, `--meta`) read; checked on the open file before reading.
 * @default 1 MiB
 */
export const MAX_METADATA_FILE_BYTES = 1024 * 1024

/** Bidirectional embedding, override and isolate controls: they reorder the text after them. */
// eslint-disable-next-line no-control-regex
const UNSAFE_IN_PROSE = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/

/** Names and short values (framework, task, tag keys and values...): nothing `unsafeCharacter` refuses. */
const safe = (max: number): z.ZodString => z.string().max(max).superRefine((s, ctx) => {
  const unsafe = unsafeCharacter(s)
  if (unsafe !== undefined) ctx.addIssue({ code: 'custom', message: `contains ${unsafe}` })
})

/** Prose (description, preprocessing): tabs and line breaks allowed; other controls and text-reordering controls refused. */
const prose = (max: number): z.ZodString => z.string().max(max).superRefine((s, ctx) => {
  const found = UNSAFE_IN_PROSE.exec(s)
  if (found !== null) ctx.addIssue({ code: 'custom', message: `contains ${unsafeCharacter(found[0]) ?? 'a control character'}` })
})

const shortText = safe(256)
const scalar = z.union([prose(4096), z.number().finite(), z.boolean()])

const tensorSpec = z.strictObject({
  name: shortText,
  dtype: shortText.optional(),
  shape: z.array(z.union([z.number().int().min(-1), shortText])).max(16).optional(),
  description: prose(4096).optional()
})

export const metadataSchema = z.strictObject({
  description: prose(16 * 1024).optional(),
  /** e.g. `pytorch`, `onnx`, `gguf`, `tensorflow` */
  framework: shortText.optional(),
  /** task / type, e.g. `text-generation`, `ner`, `image-classification` */
  task: shortText.optional(),
  license: shortText.optional(),
  inputs: z.array(tensorSpec).max(256).optional(),
  outputs: z.array(tensorSpec).max(256).optional(),
  /** free-form description of preprocessing, or structured steps */
  preprocessing: z.union([prose(16 * 1024), z.record(safe(256), scalar)]).optional(),
  /** training hyperparameters, e.g. `{"lr": 3e-4, "epochs": 3}` */
  hyperparameters: z.record(safe(256), scalar).optional(),
  /** free tags; a bare tag `foo` is stored as `{ foo: "" }`, a pair as `{ task: "ner" }` */
  tags: z.record(safe(128).min(1), safe(256)).optional(),
  /**
   * The order a loader reads tensors in, as tensor-name patterns (`*` matches any run of
   * characters), for a pull to fetch first while a process streams the version (`core/load-order.ts`)
   */
  loadOrder: z.array(safe(256).min(1)).max(4096).optional()
})

export type Metadata = z.infer<typeof metadataSchema>

export function parseMetadata (value: unknown, source = 'metadata'): Metadata {
  const result = metadataSchema.safeParse(value)
  if (!result.success) {
    const issue = result.error.issues[0]
    const where = issue?.path.length ? ` at ${issue.path.map(pathSegment).join('').replace(/^\./, '')}` : ''
    // A refused record key carries the reason in its own issues.
    const inner = issue?.code === 'invalid_key' ? issue.issues[0]?.message : undefined
    throw new InvalidInputError(escapeUnsafe(`${source} is invalid${where}: ${inner !== undefined ? `key: ${inner}` : issue?.message ?? 'unknown problem'}`))
  }
  if (JSON.stringify(result.data).length > MAX_METADATA_BYTES) {
    throw new InvalidInputError(`${source} is larger than ${MAX_METADATA_BYTES} bytes`)
  }
  return stripUndefined(result.data)
}

/**
 * Parses the bytes of a metadata file (`shoal.json`, `--meta`): UTF-8 JSON, then `parseMetadata`.
 * The caller bounds the size (`MAX_METADATA_FILE_BYTES`) before reading.
 */
export function parseMetadataFile (bytes: Uint8Array, label: string): Metadata {
  let value: unknown
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch (err) {
    throw new InvalidInputError(escapeUnsafe(`${label} is not valid JSON: ${err instanceof SyntaxError ? err.message : 'it is not valid UTF-8'}`))
  }
  return parseMetadata(value, label)
}

/** `.name` for plain keys, `["…"]` (escaped, `printable`) for any other, `[3]` for an index. */
function pathSegment (key: PropertyKey): string {
  if (typeof key === 'number') return `[${key}]`
  const text = String(key)
  return /^[A-Za-z_][A-Za-z0-9_-]*$/.test(text) ? `.${text}` : `["${printable(text)}"]`
}

/** Later sources win key by key; tags are merged. */
export function mergeMetadata (...parts: Array<Metadata | undefined>): Metadata {
  const out: Metadata = {}
  for (const part of parts) {
    if (part === undefined) continue
    const { tags, ...rest } = part
    Object.assign(out, stripUndefined(rest))
    if (tags !== undefined) out.tags = { ...out.tags, ...tags }
  }
  return out
}

/** Parses `--tag k=v` / `--tag k` flags. */
export function parseTags (flags: readonly string[]): Record<string, string> {
  const tags: Record<string, string> = {}
  for (const flag of flags) {
    const eq = flag.indexOf('=')
    const key = eq < 0 ? flag : flag.slice(0, eq)
    if (key.length === 0) throw new InvalidInputError(`invalid tag "${printable(flag)}": use key or key=value`)
    // An own property even for `__proto__`, so no tag is lost to the prototype.
    Object.defineProperty(tags, key, { value: eq < 0 ? '' : flag.slice(eq + 1), enumerable: true, writable: true, configurable: true })
  }
  return tags
}

function stripUndefined<T extends object> (value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T
}
