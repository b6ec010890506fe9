/**
 * Reads a sequence of byte ranges one ahead of the consumer, into buffers it reuses in turn: the
 * read stage of the `add` and `export` pipelines (`it-pipe`), so reading item i+1 overlaps what
 * the consumer does with item i.
 *
 * MUST hold: item i+2 is read into the buffer of item i+2−`buffers.length`, and its read starts
 * only once the consumer asks for item i+1. With two buffers the consumer must be done with an
 * item's bytes when it asks for the next; with three it may still be writing the one before
 * (`BlobWriter.append`'s contract). A read in flight when the consumer stops settles before the
 * generator returns, so the caller may close the file then.
 */

/** One range to read: `size` bytes (at most a buffer) at the reader's position for it. */
export interface ReadItem { size: number }

/** An item as read: its bytes (a view of one of the buffers) and what its read returned. */
export interface ReadDone<T, R> { item: T, buf: Buffer, result: R }

export async function * readAhead<T extends ReadItem, R> (
  items: Iterator<T>,
  buffers: readonly Buffer[],
  read: (item: T, into: Buffer) => Promise<R>,
  checkAborted: () => void
): AsyncGenerator<ReadDone<T, R>> {
  let turn = 0
  const start = (): { item: T, buf: Buffer, read: Promise<R> } | undefined => {
    const next = items.next()
    if (next.done === true) return undefined
    const buf = (buffers[turn] as Buffer).subarray(0, next.value.size)
    turn = (turn + 1) % buffers.length
    const reading = read(next.value, buf)
    // Awaited below, or in `finally` when the consumer stops first: never an unhandled rejection.
    reading.catch(() => {})
    return { item: next.value, buf, read: reading }
  }
  let current = start()
  try {
    while (current !== undefined) {
      checkAborted()
      const result = await current.read
      const { item, buf } = current
      current = start()
      yield { item, buf, result }
    }
  } finally {
    await current?.read.catch(() => {})
  }
}
