/**
 * Pulled chunks written past the page cache (O_DIRECT).
 *
 * Why: a buffered write costs a fresh page-cache page per 4 KiB — the largest CPU cost of a pull
 * here — and evicts what the node's inference processes cache. A direct write hands the bytes to
 * the disk from our buffer. why: docs/decisions/0020-pull-writes-past-the-page-cache.md
 *
 * How: O_DIRECT needs the buffer address, file offset and length aligned. A chunk sits at any
 * offset, so `DirectWrites.write` copies the page-aligned middle of the range through small
 * page-aligned staging buffers (memory of a `WebAssembly.Memory`, which starts on a page) and
 * writes it through a second, O_DIRECT handle; the unaligned head and tail (under a page each) go
 * through the ordinary handle. Chunks never overlap, so no page is written both ways at once, and
 * Linux keeps the page cache coherent with direct writes, so buffered reads of the file see them.
 *
 * MUST hold:
 * - the file's contents after `write` are exactly those of a buffered write of the same bytes;
 * - durability is unchanged: the caller still fdatasyncs before indexing (a direct write does not
 *   flush the disk's cache, nor the metadata of blocks it allocated);
 * - where the file system refuses O_DIRECT (at open, or EINVAL on a write), `open` returns
 *   undefined or `write` says `refused`, and the caller writes the range buffered: slower, never
 *   wrong.
 *
 * Not a goal: direct reads. Serving reads go through the page cache, which is what a node serving
 * the same chunks to several peers wants.
 */
import { constants } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { Uint8ArrayList } from 'uint8arraylist'
import { isErrno, writeAt, writeFully } from '../util/fsutil.js'

/** Alignment of offsets, lengths and buffer addresses for direct writes (a page). @default 4096 */
export const DIRECT_ALIGN = 4096
/** Bytes per staging buffer (one direct write). @default 512 KiB */
export const STAGE_BYTES = 512 * 1024
/** Staging buffers per process; a write waits for one when all are in use. @default 4 */
export const MAX_STAGES = 4
/** Ranges whose aligned middle is shorter than this are written buffered only. @default 64 KiB */
export const MIN_DIRECT_BYTES = 64 * 1024

const WASM_PAGE = 64 * 1024

/** The one piece of the WebAssembly API used here (the compiler's libraries for Node leave it out). */
const { Memory } = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number, maximum: number }) => { buffer: ArrayBuffer } } }).WebAssembly

/** Page-aligned staging buffers, shared by every file of the process. */
class Stages {
  private free?: Uint8Array[]
  private readonly waiting: Array<(stage: Uint8Array) => void> = []

  async take (): Promise<Uint8Array> {
    this.free ??= Stages.allocate()
    const stage = this.free.pop()
    if (stage !== undefined) return stage
    return await new Promise(resolve => this.waiting.push(resolve))
  }

  give (stage: Uint8Array): void {
    const next = this.waiting.shift()
    if (next !== undefined) next(stage)
    else this.free?.push(stage)
  }

  /** One memory for all stages: a `WebAssembly.Memory` is mapped on its own, so byte 0 is page-aligned. */
  private static allocate (): Uint8Array[] {
    const pages = MAX_STAGES * STAGE_BYTES / WASM_PAGE
    const { buffer } = new Memory({ initial: pages, maximum: pages })
    return Array.from({ length: MAX_STAGES }, (_, i) => new Uint8Array(buffer, i * STAGE_BYTES, STAGE_BYTES))
  }
}

const stages = new Stages()

/** The O_DIRECT handle of one file being pulled. */
export class DirectWrites {
  constructor (private readonly fh: FileHandle) {}

  /** Opens `path` for direct writes, or undefined where the platform or file system does not offer them. */
  static async open (path: string): Promise<DirectWrites | undefined> {
    const flag = (constants as { O_DIRECT?: number }).O_DIRECT
    if (flag === undefined) return undefined
    try {
      return new DirectWrites(await open(path, constants.O_WRONLY | flag))
    } catch (err) {
      if (isErrno(err, 'EINVAL', 'EOPNOTSUPP', 'ENOTSUP')) return undefined
      throw err
    }
  }

  /**
   * Writes `size` bytes at `offset`: the aligned middle directly, head and tail through `buffered`.
   * `short`: nothing written, the middle is under `MIN_DIRECT_BYTES`. `refused`: the file system
   * refused a direct write (EINVAL); the caller writes the whole range buffered, and should stop
   * trying this file.
   */
  async write (buffered: FileHandle, bytes: Uint8Array | readonly Uint8Array[], size: number, offset: number): Promise<'written' | 'short' | 'refused'> {
    const a = Math.ceil(offset / DIRECT_ALIGN) * DIRECT_ALIGN
    const b = Math.floor((offset + size) / DIRECT_ALIGN) * DIRECT_ALIGN
    if (b - a < MIN_DIRECT_BYTES) return 'short'
    const list = bytes instanceof Uint8Array ? new Uint8ArrayList(bytes) : new Uint8ArrayList(...bytes)
    for (let at = a; at < b; at += STAGE_BYTES) {
      const n = Math.min(STAGE_BYTES, b - at)
      const stage = await stages.take()
      try {
        let filled = 0
        for (const part of list.sublist(at - offset, at - offset + n)) {
          stage.set(part, filled)
          filled += part.byteLength
        }
        // A short direct write goes on from where it stopped; an unaligned rest is refused
        // (EINVAL) and the caller writes the whole range buffered.
        await writeFully(this.fh, stage, 0, n, at)
      } catch (err) {
        if (isErrno(err, 'EINVAL')) return 'refused'
        throw err
      } finally {
        stages.give(stage)
      }
    }
    await writeAt(buffered, [...list.sublist(0, a - offset)], offset)
    await writeAt(buffered, [...list.sublist(b - offset, size)], b)
    return 'written'
  }

  async close (): Promise<void> {
    await this.fh.close()
  }
}
