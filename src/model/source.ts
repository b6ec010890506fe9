/**
 * Byte sources: positioned reads over one model file.
 *
 * Contract: `read(offset, length)` returns exactly `length` bytes or throws; a read past the end
 * (or a file that shrank under us) throws `MalformedModelError`. Sources never read ahead on their
 * own; buffering belongs to the reader's cursor (`model/cursor.ts`), so a reader's memory is what
 * it asks for.
 *
 * A file source also offers `readInto(buf, offset)`, which fills a caller-owned buffer under the
 * same contract: bulk copies (`ingest/`) reuse a few window buffers instead of allocating (and
 * page-faulting in) a fresh one per read.
 */
import { open, type FileHandle } from 'node:fs/promises'
import { MalformedModelError } from '../core/errors.js'
import type { ByteSource } from './types.js'

export interface FileSource extends ByteSource {
  /** Fills all of `buf` with the bytes at `offset`, or throws as `read` does. */
  readInto (buf: Uint8Array, offset: number): Promise<void>
  close (): Promise<void>
}

function checkRange (label: string, size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
    throw new MalformedModelError(`${label}: read of ${length} bytes at offset ${offset} is outside the file (${size} bytes)`)
  }
}

/** Opens `path` read-only. The caller MUST `close()` it. */
export async function openFileSource (path: string): Promise<FileSource> {
  const handle = await open(path, 'r')
  try {
    const { size } = await handle.stat()
    return handleSource(handle, size, path)
  } catch (err) {
    await handle.close()
    throw err
  }
}

/**
 * A source over a file the caller opened (and checked): `size` is its size when opened, `label`
 * names it in errors. `close()` closes the handle.
 */
export function handleSource (handle: FileHandle, size: number, label: string): FileSource {
  const readInto = async (buf: Uint8Array, offset: number): Promise<void> => {
    const length = buf.byteLength
    checkRange(label, size, offset, length)
    let done = 0
    while (done < length) {
      const { bytesRead } = await handle.read(buf, done, length - done, offset + done)
      if (bytesRead === 0) {
        throw new MalformedModelError(`${label}: file ended at ${offset + done} while reading ${length} bytes at ${offset} (was it truncated while being read?)`)
      }
      done += bytesRead
    }
  }
  return {
    size,
    readInto,
    async read (offset, length) {
      checkRange(label, size, offset, length)
      const out = new Uint8Array(length)
      await readInto(out, offset)
      return out
    },
    async close () { await handle.close() }
  }
}

/** A source over bytes already in memory (tests, small files). Reads return views, not copies. */
export function bufferSource (buf: Uint8Array, label = '<buffer>'): ByteSource {
  return {
    size: buf.byteLength,
    async read (offset, length) {
      checkRange(label, buf.byteLength, offset, length)
      return buf.subarray(offset, offset + length)
    }
  }
}
