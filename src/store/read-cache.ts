/**
 * Open read-only file handles for serving chunks, kept for a short while so a burst of reads from
 * one blob does not open and close it for every chunk. A handle idle for `IDLE_MS` is closed, as
 * is the least recently used one past `MAX_OPEN`; `forget` closes a path's handle at once (a
 * removed blob's space is freed only when no handle remains). `read` returns exactly the requested
 * bytes or throws.
 */
import { open, type FileHandle } from 'node:fs/promises'

/** @default 64 */
export const MAX_OPEN = 64
/** @default 5 s */
export const IDLE_MS = 5_000

export class ReadCache {
  private readonly handles = new Map<string, { fh: Promise<FileHandle>, used: number }>()
  private readonly timer: NodeJS.Timeout

  constructor () {
    this.timer = setInterval(() => this.sweep(), IDLE_MS)
    this.timer.unref()
  }

  /** Reads into `into` (exactly `length` bytes long) when given, else into a new buffer. */
  async read (path: string, offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    const fh = await this.handle(path)
    const buf = into ?? Buffer.allocUnsafe(length)
    let done = 0
    while (done < length) {
      const { bytesRead } = await fh.read(buf, done, length - done, offset + done)
      if (bytesRead === 0) throw new Error(`${path} ended at ${offset + done}, expected ${offset + length} bytes`)
      done += bytesRead
    }
    return buf
  }

  forget (path: string): void {
    const entry = this.handles.get(path)
    if (entry === undefined) return
    this.handles.delete(path)
    void entry.fh.then(async fh => { await fh.close() }, () => {})
  }

  close (): void {
    clearInterval(this.timer)
    for (const path of [...this.handles.keys()]) this.forget(path)
  }

  private async handle (path: string): Promise<FileHandle> {
    const entry = this.handles.get(path)
    if (entry !== undefined) {
      entry.used = Date.now()
      // Re-insert to keep the map in least-recently-used order.
      this.handles.delete(path)
      this.handles.set(path, entry)
      return await entry.fh
    }
    const fh = open(path, 'r')
    this.handles.set(path, { fh, used: Date.now() })
    fh.catch(() => { if (this.handles.get(path)?.fh === fh) this.handles.delete(path) })
    while (this.handles.size > MAX_OPEN) {
      const oldest = this.handles.keys().next().value
      if (oldest === undefined) break
      this.forget(oldest)
    }
    return await fh
  }

  private sweep (): void {
    const cutoff = Date.now() - IDLE_MS
    for (const [path, entry] of this.handles) if (entry.used < cutoff) this.forget(path)
  }
}
