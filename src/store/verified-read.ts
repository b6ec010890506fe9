/**
 * Reads a byte range of one file of a version, giving only verified bytes: from the store when
 * the version is complete (or the chunk is), and from a pull in progress as its chunks and
 * blocks are verified, waiting for those that have not arrived.
 *
 * MUST hold:
 * - every byte given was verified: a chunk once it is written and marked present by the pull
 *   (`PullTarget.hasChunkAt`: bytes that hashed to its id, at that place), a block of a chunk in
 *   progress once it matched the chunk's tree (`PullTarget.readBlocks`); never a byte of a hole;
 * - the bytes come in file order, exactly `[start, end)`, or the read throws: when the pull ends
 *   without the bytes it is waiting for, `UnavailableError` names them (the file, the byte range
 *   not given) and why the pull ended; when the caller's signal aborts, `AbortedError`;
 * - a wait asks the pull to fetch what it waits for first (`PullView.want`), and takes that back
 *   when it ends, however it ends;
 * - bounded memory: one read of at most `READ_PIECE_BYTES` at a time.
 *
 * Waits end with the pull: the pull fails when nothing arrives for `transfer.stallSeconds`, so a
 * read never waits longer than its pull makes progress (or its caller lets it).
 */
import type { ChunkId } from '../core/digest.js'
import { AbortedError, NotFoundError, UnavailableError } from '../core/errors.js'
import type { Manifest } from '../core/manifest.js'
import type { PullTarget } from './pull-target.js'
import type { Store } from './store.js'

/** @default 1 MiB — bytes read from the store at once for a reader */
export const READ_PIECE_BYTES = 1024 * 1024

/** A pull a reader reads through. */
export interface PullView {
  readonly target: PullTarget
  /** Settles when the pull ends: fulfilled when the version is complete, rejected with why not. */
  readonly ended: Promise<unknown>
  /** Asks the pull to fetch these chunks before any other; returns the release. */
  readonly want?: (ids: readonly ChunkId[]) => () => void
}

export interface VerifiedReadOptions {
  /** The pull bringing the version, when it is not complete here. */
  pull?: PullView
  signal?: AbortSignal
}

/** The verified bytes `[start, end)` of `manifest.files[fileIndex]`, in order. */
export async function * readVerified (store: Store, manifest: Manifest, fileIndex: number, start: number, end: number, options: VerifiedReadOptions = {}): AsyncGenerator<Uint8Array> {
  const file = manifest.files[fileIndex]
  if (file === undefined) throw new NotFoundError(`file ${fileIndex} is not in the manifest`)
  const { pull, signal } = options
  let base = 0
  for (let i = 0; i < fileIndex; i++) base += manifest.files[i]?.chunks.length ?? 0
  // The chunk holding `start`.
  let ci = 0
  let chunkStart = 0
  while (ci < file.chunks.length && chunkStart + (file.chunks[ci]?.size ?? 0) <= start) chunkStart += file.chunks[ci++]?.size ?? 0
  // Counts changes at the pull, so a change between a look and the wait is never missed.
  let changes = 0
  let wake: (() => void) | undefined
  const bump = (): void => { changes++; wake?.() }
  let ended: { ok: boolean, reason?: unknown } | undefined
  const target = pull?.target
  target?.on('have', bump)
  target?.on('blocks', bump)
  target?.on('complete', bump)
  pull?.ended.then(() => { ended = { ok: true }; bump() }, (reason: unknown) => { ended = { ok: false, reason }; bump() })
  const onAbort = (): void => bump()
  signal?.addEventListener('abort', onAbort)
  let release: (() => void) | undefined
  let wantedFor: ChunkId | undefined
  try {
    let pos = start
    while (pos < end) {
      if (signal?.aborted === true) throw new AbortedError('the reader went away')
      const chunk = file.chunks[ci]
      if (chunk === undefined) throw new NotFoundError(`byte ${pos} is past the end of ${file.path} (${file.size} bytes)`)
      const chunkEnd = chunkStart + chunk.size
      const seen = changes
      const got = await readyBytes(store, target, chunk.id, base + ci, pos - chunkStart, Math.min(end, chunkEnd, pos + READ_PIECE_BYTES) - chunkStart)
      if (got !== undefined && got.byteLength > 0) {
        pos += got.byteLength
        yield got
        if (pos >= chunkEnd) { chunkStart = chunkEnd; ci++ }
        continue
      }
      if (target === undefined) throw new NotFoundError(`chunk ${chunk.id} of ${file.path} (bytes ${chunkStart}-${chunkEnd - 1}) is not in the store; run shoal verify`)
      if (ended !== undefined && changes === seen) {
        const why = ended.ok ? 'the pull completed, yet the chunk is not in the store (run shoal verify)' : `its pull ended: ${(ended.reason as Error)?.message ?? String(ended.reason)}`
        throw new UnavailableError(`bytes ${pos}-${end - 1} of ${file.path} in ${manifest.name} did not arrive (first missing: chunk ${chunk.id}, bytes ${chunkStart}-${chunkEnd - 1}); ${why}`, { cause: ended.reason })
      }
      if (wantedFor !== chunk.id) {
        release?.()
        release = pull?.want?.([chunk.id])
        wantedFor = chunk.id
      }
      if (changes === seen) await new Promise<void>(resolve => { wake = resolve })
      wake = undefined
    }
  } finally {
    release?.()
    target?.off('have', bump)
    target?.off('blocks', bump)
    target?.off('complete', bump)
    signal?.removeEventListener('abort', onAbort)
  }
}

/**
 * Verified bytes `[from, to)` of the chunk at global index `global` (or a verified prefix of them,
 * from blocks of a chunk in progress), or undefined when none are here yet.
 */
async function readyBytes (store: Store, target: PullTarget | undefined, id: ChunkId, global: number, from: number, to: number): Promise<Uint8Array | undefined> {
  if (target === undefined || target.hasChunkAt(global)) return await store.readChunkRange(id, from, to - from)
  if (!target.isAssembling(id)) return undefined
  const bs = target.blockSize
  const first = Math.floor(from / bs)
  const last = Math.floor((to - 1) / bs)
  let count = 0
  while (first + count <= last && !target.blockMissing(id, first + count)) count++
  if (count === 0) return undefined
  const span = target.readBlocks(id, first, count)
  if (span === undefined) return undefined
  const at = from - first * bs
  return span.data.subarray(at, Math.min(span.data.byteLength, to - first * bs))
}
