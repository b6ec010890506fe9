/**
 * Model metadata (seed §2): what a model is for and how to use it. Given by CLI flags or a
 * metadata file (`shoal.json` in the model folder, or `--meta <file>`), validated here, stored in
 * the manifest. Unknown keys are refused so a typo is not silently dropped.
 */
import { z } from 'zod'
import { InvalidInputError } from './errors.js'

/** Name of the metadata file read from the top of a model folder when present. */
export const METADATA_FILE = 'shoal.json'
/** @default 64 KiB — encoded size cap for metadata */
export const MAX_METADATA_BYTES = 64 * 1024

const shortText = z.string().max(256)
const scalar = z.union([z.string().max(4096), z.number().finite(), z.boolean()])

const tensorSpec = z.strictObject({
  name: shortText,
  dtype: shortText.optional(),
  shape: z.array(z.union([z.number().int().min(-1), shortText])).max(16).optional(),
  description: z.string().max(4096).optional()
})

export const metadataSchema = z.strictObject({
  description: z.string().max(16 * 1024).optional(),
  /** e.g. `pytorch`, `onnx`, `gguf`, `tensorflow` */
  framework: shortText.optional(),
  /** task / type, e.g. `text-generation`, `ner`, `image-classification` */
  task: shortText.optional(),
  license: shortText.optional(),
  inputs: z.array(tensorSpec).max(256).optional(),
  outputs: z.array(tensorSpec).max(256).optional(),
  /** free-form description of preprocessing, or structured steps */
  preprocessing: z.union([z.string().max(16 * 1024), z.record(z.string().max(256), scalar)]).optional(),
  /** training hyperparameters, e.g. `{"lr": 3e-4, "epochs": 3}` */
  hyperparameters: z.record(z.string().max(256), scalar).optional(),
  /** free tags; a bare tag `foo` is stored as `{ foo: "" }`, a pair as `{ task: "ner" }` */
  tags: z.record(z.string().min(1).max(128), z.string().max(256)).optional()
})

export type Metadata = z.infer<typeof metadataSchema>

export function parseMetadata (value: unknown, source = 'metadata'): Metadata {
  const result = metadataSchema.safeParse(value)
  if (!result.success) {
    const issue = result.error.issues[0]
    const where = issue?.path.length ? ` at ${issue.path.join('.')}` : ''
    throw new InvalidInputError(`${source} is invalid${where}: ${issue?.message ?? 'unknown problem'}`)
  }
  if (JSON.stringify(result.data).length > MAX_METADATA_BYTES) {
    throw new InvalidInputError(`${source} is larger than ${MAX_METADATA_BYTES} bytes`)
  }
  return stripUndefined(result.data)
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
    if (key.length === 0) throw new InvalidInputError(`invalid tag "${flag}": use key or key=value`)
    tags[key] = eq < 0 ? '' : flag.slice(eq + 1)
  }
  return tags
}

function stripUndefined<T extends object> (value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T
}
