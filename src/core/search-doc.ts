/**
 * Search documents: the compact record the search index keeps for each version the node knows
 * (stored here, or only named by a head), so that queries never re-read big manifests.
 *
 * MUST hold:
 * - `searchDocOf` is pure and deterministic: the same manifest, version id, labels and options give
 *   an equal document; it never throws on a manifest that `decodeManifest` accepted;
 * - a document is bounded whatever the model: the description is cut at `MAX_INDEXED_DESCRIPTION`
 *   characters, at most `MAX_SIGNATURE_TENSORS` tensors feed the structure signature, and each
 *   sketch holds at most `SKETCH_SIZE` hashes;
 * - the structure signature ignores dtypes, offsets, file names and weights: two versions with the
 *   same set of (tensor name, shape) pairs — a base model and its fine-tunes, or the same model
 *   converted from F32 to BF16 — have the same `exact` hash.
 *
 * The signature has three parts (compared by `similarity` in `core/query.ts`):
 * - `exact`: sha-256 of the sorted, de-duplicated `name\tshape` lines ("same architecture");
 * - `shapes`: a bottom-k MinHash sketch of the `name\tshape` features, which estimates the Jaccard
 *   similarity of two tensor sets (a fine-tune with a resized head still scores near 1);
 * - `names`: the same over tensor names alone, so a deeper or wider sibling of the same family
 *   (llama 7B vs 13B: many names shared, few shapes) ranks above an unrelated model.
 * Sketches travel as base64 of little-endian u32 values sorted ascending.
 *
 * Not a goal: semantic similarity of weights; full-text indexing structures (a linear scan over
 * `SearchDoc`s answers 10,000 versions in a few milliseconds, see `scripts/bench-search.ts`).
 */
import { createHash } from 'node:crypto'
import type { VersionId } from './digest.js'
import type { Manifest } from './manifest.js'

/** Bumped when `SearchDoc` or the signature changes; the index rebuilds documents of another schema. */
export const SEARCH_DOC_SCHEMA = 1
/** @default 2048 — characters of a description kept for free-text search and display */
export const MAX_INDEXED_DESCRIPTION = 2048
/** @default 200_000 — tensors (in manifest order) that feed the structure signature */
export const MAX_SIGNATURE_TENSORS = 200_000
/** @default 64 — hashes per bottom-k sketch (Jaccard estimate error about 1/sqrt of it) */
export const SKETCH_SIZE = 64

export interface StructureSignature {
  /** Hex sha-256 of the sorted unique `name\tshape` lines; '' when the version has no tensors. */
  exact: string
  /** Distinct (name, shape) pairs that fed the signature (capped at `MAX_SIGNATURE_TENSORS`). */
  features: number
  /** Bottom-k sketch of `name\tshape` features (base64, u32 LE, ascending). */
  shapes: string
  /** Bottom-k sketch of tensor names (base64, u32 LE, ascending). */
  names: string
}

/** What the search index knows about one version. Plain JSON: stored as it is. */
export interface SearchDoc {
  schema: number
  model: string
  version: VersionId
  /** The manifest's `created` (ms). */
  created: number
  /** When this node last saw the version change: added or pulled, a label or head moved to it (ms). */
  updated: number
  description?: string
  framework?: string
  task?: string
  license?: string
  architecture?: string
  dtypes: string[]
  params: number
  /** Distinct file formats, sorted. */
  formats: string[]
  tags: Record<string, string>
  /** Labels pointing at this version, here or in heads this node accepted; sorted, unique. */
  labels: string[]
  /** Total bytes of the version's files. */
  size: number
  files: number
  tensors: number
  /** True when the version is stored here; false when only known through a head. */
  local: boolean
  structure: StructureSignature
}

export interface SearchDocOptions {
  /** @default true */
  local?: boolean
  /** @default the manifest's `created` */
  updated?: number
}

/** Extracts the searchable fields and the structure signature of a decoded manifest. */
export function searchDocOf (manifest: Manifest, version: VersionId, labels: readonly string[], options: SearchDocOptions = {}): SearchDoc {
  const m = manifest.metadata
  const s = manifest.structure
  const architecture = s.architecture ?? manifest.files.find(f => f.structure?.architecture !== undefined)?.structure?.architecture
  const doc: SearchDoc = {
    schema: SEARCH_DOC_SCHEMA,
    model: manifest.name,
    version,
    created: manifest.created,
    updated: options.updated ?? manifest.created,
    dtypes: [...new Set(s.dtypes)].sort(),
    params: s.parameterCount,
    formats: [...new Set(manifest.files.map(f => f.format))].sort(),
    tags: { ...m.tags },
    labels: [...new Set(labels)].sort(),
    size: manifest.files.reduce((n, f) => n + f.size, 0),
    files: manifest.files.length,
    tensors: s.tensorCount,
    local: options.local ?? true,
    structure: structureSignature(manifest)
  }
  if (m.description !== undefined) doc.description = m.description.slice(0, MAX_INDEXED_DESCRIPTION)
  if (m.framework !== undefined) doc.framework = m.framework
  if (m.task !== undefined) doc.task = m.task
  if (m.license !== undefined) doc.license = m.license
  if (architecture !== undefined) doc.architecture = architecture
  return doc
}

/** The structure signature of a manifest (see the module doc). */
export function structureSignature (manifest: Manifest): StructureSignature {
  const lines = new Set<string>()
  const names = new Set<string>()
  outer: for (const file of manifest.files) {
    for (const t of file.structure?.tensors ?? []) {
      if (lines.size >= MAX_SIGNATURE_TENSORS) break outer
      lines.add(`${t.name}\t${t.shape.join('x')}`)
      names.add(t.name)
    }
  }
  if (lines.size === 0) return { exact: '', features: 0, shapes: '', names: '' }
  const hash = createHash('sha256')
  for (const line of [...lines].sort()) hash.update(line).update('\n')
  return {
    exact: hash.digest('hex'),
    features: lines.size,
    shapes: encodeSketch(bottomK(lines, SHAPE_SEED)),
    names: encodeSketch(bottomK(names, NAME_SEED))
  }
}

const SHAPE_SEED = 0x9747b28c
const NAME_SEED = 0x1b873593

/** The `SKETCH_SIZE` smallest distinct 32-bit hashes of `features`, ascending. */
export function bottomK (features: Iterable<string>, seed: number, k = SKETCH_SIZE): Uint32Array {
  const all: number[] = []
  for (const f of features) all.push(hash32(f, seed))
  const sorted = Uint32Array.from(all).sort()
  const out: number[] = []
  for (let i = 0; i < sorted.length && out.length < k; i++) {
    if (i === 0 || sorted[i] !== sorted[i - 1]) out.push(sorted[i]!)
  }
  return Uint32Array.from(out)
}

/** FNV-1a over UTF-16 code units, then murmur3's finaliser (good avalanche for MinHash). */
export function hash32 (text: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

export function encodeSketch (sketch: Uint32Array): string {
  const bytes = new Uint8Array(sketch.length * 4)
  const view = new DataView(bytes.buffer)
  sketch.forEach((v, i) => view.setUint32(i * 4, v, true))
  return Buffer.from(bytes).toString('base64')
}

export function decodeSketch (text: string): Uint32Array {
  const bytes = Buffer.from(text, 'base64')
  const out = new Uint32Array(Math.floor(bytes.length / 4))
  for (let i = 0; i < out.length; i++) out[i] = bytes.readUInt32LE(i * 4)
  return out
}
