/**
 * Decodes manifests from peers beside the event loop. A large legal manifest (hundreds of
 * thousands of chunks, tens of MB) takes seconds of CPU to decode and check; on the event loop it
 * would leave the RPC unanswered that long. Small ones (under `WORKER_DECODE_MIN_BYTES`) are
 * decoded in place: a worker round trip costs more. why: docs/decisions/0013-manifest-decoding.md
 *
 * MUST hold: the result is exactly `decodeManifest(bytes, version, limits)`, errors included
 * (`MalformedDataError`, `TooLargeError` come back as themselves); the worker's memory is capped
 * (`WORKER_MAX_OLD_MB`: a decode that needs more fails as `TooLargeError`, the daemon lives on) and
 * every decode has a deadline (`WORKER_DECODE_TIMEOUT_MS`: the worker is ended and replaced).
 *
 * The decoded manifest still crosses to the event loop (a structured clone, about a third of the
 * decode's cost): the pull needs every chunk entry there.
 */
import { Worker } from 'node:worker_threads'
import type { VersionId } from '../core/digest.js'
import { AbortedError, MalformedDataError, ShoalError, TooLargeError } from '../core/errors.js'
import { decodeManifest, type Manifest, type ManifestLimits } from '../core/manifest.js'

/** @default 1 MiB — smaller manifests (~20,000 chunks) are decoded on the calling thread */
export const WORKER_DECODE_MIN_BYTES = 1024 * 1024
/** @default 1536 MiB — the decoding worker's old-generation heap (a 500,000-chunk manifest retains ~530 MB) */
export const WORKER_MAX_OLD_MB = 1536
/** @default 120 s — one decode, on a machine busy with other work */
export const WORKER_DECODE_TIMEOUT_MS = 120_000

/** The worker: loads `core/manifest` (built, or through tsx when running from source) and decodes on request. */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const loading = (async () => {
  if (workerData.tsx) (await import('tsx/esm/api')).register()
  return await import(workerData.module)
})()
parentPort.on('message', async ({ id, bytes, version, limits }) => {
  try {
    const { decodeManifest } = await loading
    parentPort.postMessage({ id, manifest: decodeManifest(bytes, version, limits) })
  } catch (err) {
    parentPort.postMessage({ id, error: { name: err && err.name, message: String(err && err.message || err), limit: err && err.limit } })
  }
})
`

interface Waiting { resolve: (m: Manifest) => void, reject: (e: Error) => void, timer: NodeJS.Timeout }

export class ManifestDecoder {
  private worker?: Worker
  private readonly waiting = new Map<number, Waiting>()
  private nextId = 0
  private closed = false

  constructor (private readonly options: { minBytes?: number, timeoutMs?: number, maxOldMb?: number } = {}) {}

  /**
   * `decodeManifest(bytes, version, limits)`, off the event loop for large bytes.
   * @throws MalformedDataError, TooLargeError as `decodeManifest`; AbortedError on `signal` or `close`
   */
  async decode (bytes: Uint8Array, version: VersionId | undefined, limits: ManifestLimits | undefined, signal?: AbortSignal): Promise<Manifest> {
    signal?.throwIfAborted()
    if (bytes.byteLength < (this.options.minBytes ?? WORKER_DECODE_MIN_BYTES)) return decodeManifest(bytes, version, limits)
    if (this.closed) throw new AbortedError('the manifest decoder is closed')
    const worker = this.start()
    const id = this.nextId++
    return await new Promise<Manifest>((resolve, reject) => {
      const onAbort = (): void => { this.settle(id, undefined, new AbortedError('manifest decoding was cancelled')) }
      const timeoutMs = this.options.timeoutMs ?? WORKER_DECODE_TIMEOUT_MS
      const timer = setTimeout(() => {
        // A decode past its deadline is ended with its worker; the next decode starts another.
        this.fail(new TooLargeError(`decoding the manifest of ${version ?? 'a version'} took over ${timeoutMs} ms`, 'time'))
      }, timeoutMs)
      this.waiting.set(id, {
        resolve: m => { signal?.removeEventListener('abort', onAbort); resolve(m) },
        reject: e => { signal?.removeEventListener('abort', onAbort); reject(e) },
        timer
      })
      signal?.addEventListener('abort', onAbort, { once: true })
      worker.postMessage({ id, bytes, version, limits })
    })
  }

  async close (): Promise<void> {
    this.closed = true
    this.fail(new AbortedError('the manifest decoder is closed'))
  }

  private start (): Worker {
    if (this.worker !== undefined) return this.worker
    // From source (tests), the worker needs the same TypeScript loader as this module.
    const fromSource = import.meta.url.endsWith('.ts')
    const module = new URL(`../core/manifest.${fromSource ? 'ts' : 'js'}`, import.meta.url).href
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { module, tsx: fromSource },
      resourceLimits: { maxOldGenerationSizeMb: this.options.maxOldMb ?? WORKER_MAX_OLD_MB }
    })
    worker.unref()
    worker.on('message', ({ id, manifest, error }: { id: number, manifest?: Manifest, error?: { name?: string, message: string, limit?: string } }) => {
      this.settle(id, manifest, error === undefined ? undefined : revive(error))
    })
    worker.on('error', err => {
      const oom = (err as { code?: string }).code === 'ERR_WORKER_OUT_OF_MEMORY'
      this.fail(oom
        ? new TooLargeError(`decoding the manifest needed more than ${this.options.maxOldMb ?? WORKER_MAX_OLD_MB} MiB`, 'memory', { cause: err })
        : new MalformedDataError(`the manifest decoder failed: ${err.message}`, { cause: err }))
    })
    worker.on('exit', () => { if (this.worker === worker) this.worker = undefined })
    this.worker = worker
    return worker
  }

  private settle (id: number, manifest: Manifest | undefined, error: Error | undefined): void {
    const w = this.waiting.get(id)
    if (w === undefined) return
    this.waiting.delete(id)
    clearTimeout(w.timer)
    if (error !== undefined) w.reject(error)
    else w.resolve(manifest as Manifest)
  }

  /** Fails every decode in flight and ends the worker. */
  private fail (err: Error): void {
    for (const id of [...this.waiting.keys()]) this.settle(id, undefined, err)
    const worker = this.worker
    this.worker = undefined
    void worker?.terminate()
  }
}

/** The worker's error as the typed error it was. */
function revive (e: { name?: string, message: string, limit?: string }): ShoalError {
  if (e.name === 'TooLargeError') return new TooLargeError(e.message, e.limit)
  return new MalformedDataError(e.message)
}
