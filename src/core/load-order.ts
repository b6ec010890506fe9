/**
 * The order in which a loader reads a file's bytes, as the file's chunks: what a pull fetches
 * first while a process streams the file (`fetcher/priority.ts`).
 *
 * - the header first (a loader cannot place a tensor before it has read it);
 * - then the tensors in the order the format's loaders read them: safetensors and GGUF by offset;
 *   ONNX initializers as the structure lists them (embedded initializers sit in the file in graph
 *   order, so that is graph order; external data files take the tensors the `.onnx` file declares
 *   for them, in its order);
 * - a `loadOrder` hint in the version's metadata (`shoal.json`: tensor-name patterns, `*` matching
 *   any run of characters) goes first: tensors matching its first pattern, then its second, …,
 *   each group in the format's order, then the tensors no pattern matches;
 * - then every chunk not named yet (gaps, trailing bytes, a file with no tensors: all of it), in
 *   file order.
 *
 * Every chunk of the file appears once. Pure: no I/O.
 */
import type { ChunkId } from './digest.js'
import type { Manifest, ManifestFile } from './manifest.js'

/** @default 4096 — patterns of a `loadOrder` hint */
export const MAX_LOAD_ORDER_PATTERNS = 4096

interface TensorSpan { name: string, offset: number, length: number }

/** The chunks of `manifest.files[fileIndex]` in load order (duplicates of an id once, at their first place). */
export function loadOrder (manifest: Manifest, fileIndex: number, hint: readonly string[] = manifest.metadata.loadOrder ?? []): ChunkId[] {
  const file = manifest.files[fileIndex]
  if (file === undefined) return []
  const starts: number[] = []
  let at = 0
  for (const c of file.chunks) { starts.push(at); at += c.size }
  const out: ChunkId[] = []
  const taken = new Uint8Array(file.chunks.length)
  const take = (index: number): void => {
    if (index < 0 || index >= file.chunks.length || taken[index] === 1) return
    taken[index] = 1
    out.push((file.chunks[index] as { id: ChunkId }).id)
  }
  /** Chunks overlapping [offset, offset + length): binary search for the first. */
  const takeRange = (offset: number, length: number): void => {
    let lo = 0
    let hi = starts.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if ((starts[mid] ?? 0) <= offset) lo = mid
      else hi = mid - 1
    }
    for (let i = lo; i < starts.length && (starts[i] ?? 0) < offset + Math.max(1, length); i++) take(i)
  }
  const headerLength = file.structure?.headerLength ?? 0
  if (headerLength > 0) takeRange(0, headerLength)
  for (const t of ordered(tensorsOf(manifest, file), hint)) takeRange(t.offset, t.length)
  for (let i = 0; i < file.chunks.length; i++) take(i)
  return out
}

/** Tensors whose bytes live in `file`: its own, or those an ONNX file declares in it (external data). */
function tensorsOf (manifest: Manifest, file: ManifestFile): TensorSpan[] {
  const own = (file.structure?.tensors ?? []).filter(t => t.file === undefined)
  if (own.length > 0 || file.format !== 'onnx-data') return own
  const out: TensorSpan[] = []
  for (const other of manifest.files) {
    const dir = other.path.includes('/') ? other.path.slice(0, other.path.lastIndexOf('/') + 1) : ''
    for (const t of other.structure?.tensors ?? []) if (t.file !== undefined && normalise(dir + t.file) === file.path) out.push(t)
  }
  return out
}

/** `tensors` with the hint's groups first, each group (and the rest) in the order given. */
function ordered (tensors: TensorSpan[], hint: readonly string[]): TensorSpan[] {
  if (hint.length === 0) return tensors
  const patterns = hint.slice(0, MAX_LOAD_ORDER_PATTERNS).map(globRegex)
  const rank = (name: string): number => {
    const i = patterns.findIndex(p => p.test(name))
    return i < 0 ? patterns.length : i
  }
  return tensors.map((t, i) => ({ t, i, r: rank(t.name) })).sort((a, b) => a.r - b.r || a.i - b.i).map(x => x.t)
}

/** A `*` pattern as an anchored regular expression (other characters literal). */
export function globRegex (pattern: string): RegExp {
  return new RegExp(`^${pattern.split('*').map(part => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 's')
}

function normalise (path: string): string {
  const out: string[] = []
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue
    if (part === '..') out.pop()
    else out.push(part)
  }
  return out.join('/')
}
