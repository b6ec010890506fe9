/** A seeded pseudo-random generator (mulberry32): same seed, same sequence. */
export function seeded (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Deterministic pseudo-random bytes. */
export function seededBytes (length: number, seed: number): Uint8Array {
  const random = seeded(seed)
  const out = new Uint8Array(length)
  for (let i = 0; i < length; i++) out[i] = Math.floor(random() * 256)
  return out
}

/** Byte equality without a per-element deep compare (fast on large arrays). */
export function sameBytes (a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  return a !== undefined && b !== undefined && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))
}
