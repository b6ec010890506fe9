/**
 * Shared rules of the fuzz suite: how many cases each property runs, and the one assertion every
 * decoder and parser is held to — given any bytes or text, it returns a valid result or throws one
 * of shoal's typed errors (`ShoalError`), within a time bound, and never anything else (a
 * `TypeError`, a `RangeError`, a stack overflow, an out-of-memory).
 *
 * `SHOAL_FUZZ_RUNS` sets the number of cases per property: `npm run fuzz` runs 10,000, the test
 * command `FUZZ_RUNS_DEFAULT` so the whole suite stays within its time budget.
 */
import fc from 'fast-check'
import { ShoalError } from '../../src/core/errors.js'

/** @default 300 — cases per property in the ordinary test run */
export const FUZZ_RUNS_DEFAULT = 300

export const FUZZ_RUNS = (() => {
  const raw = process.env.SHOAL_FUZZ_RUNS
  const n = raw === undefined || raw === '' ? FUZZ_RUNS_DEFAULT : Number(raw)
  if (!Number.isInteger(n) || n < 1) throw new Error(`SHOAL_FUZZ_RUNS must be a positive integer, not ${JSON.stringify(raw)}`)
  return n
})()

/** fast-check parameters for one property: the run count, and the seed from `SHOAL_FUZZ_SEED` when set (to replay a failure). */
export function fuzzParams (runs = FUZZ_RUNS): fc.Parameters<unknown> {
  const seed = process.env.SHOAL_FUZZ_SEED
  return { numRuns: runs, ...(seed !== undefined && seed !== '' ? { seed: Number(seed) } : {}) }
}

/**
 * Runs `parse(input)` and checks the outcome: a value (then `check` may inspect it), or a
 * `ShoalError` (typed, with a message). Anything else thrown fails the property with the input.
 * Each call must finish within `maxMs` (CPU time spent synchronously, or until the promise settles).
 */
export async function expectTypedOutcome<T> (parse: () => T | Promise<T>, options: { maxMs?: number, check?: (value: T) => void } = {}): Promise<void> {
  const maxMs = options.maxMs ?? 2_000
  const started = performance.now()
  let value: T
  try {
    value = await parse()
  } catch (err) {
    if (!(err instanceof ShoalError)) {
      throw new Error(`threw ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)} instead of a typed error`, { cause: err })
    }
    if (err.message === '') throw new Error(`${err.name} without a message`)
    assertTime(started, maxMs)
    return
  }
  assertTime(started, maxMs)
  options.check?.(value)
}

function assertTime (started: number, maxMs: number): void {
  const ms = performance.now() - started
  if (ms > maxMs) throw new Error(`took ${ms.toFixed(0)} ms, over the ${maxMs} ms bound`)
}

/** Bytes that are a mutation of `seed`: bit flips, truncation, insertion, duplication of a slice. */
export function mutated (seed: Uint8Array): fc.Arbitrary<Uint8Array> {
  const n = seed.byteLength
  return fc.oneof(
    fc.array(fc.tuple(fc.nat({ max: Math.max(0, n - 1) }), fc.integer({ min: 0, max: 7 })), { minLength: 1, maxLength: 8 }).map(flips => {
      const out = Uint8Array.from(seed)
      for (const [at, bit] of flips) if (at < out.length) out[at]! ^= 1 << bit
      return out
    }),
    fc.nat({ max: n }).map(len => seed.slice(0, len)),
    fc.tuple(fc.nat({ max: n }), fc.uint8Array({ minLength: 1, maxLength: 64 })).map(([at, ins]) => concat(seed.subarray(0, at), ins, seed.subarray(at))),
    fc.tuple(fc.nat({ max: n }), fc.nat({ max: n })).map(([a, b]) => {
      const [lo, hi] = a <= b ? [a, b] : [b, a]
      return concat(seed.subarray(0, hi), seed.subarray(lo, hi), seed.subarray(hi))
    }),
    fc.tuple(fc.nat({ max: Math.max(0, n - 1) }), fc.uint8Array({ minLength: 1, maxLength: 16 })).map(([at, over]) => {
      const out = Uint8Array.from(seed)
      out.set(over.subarray(0, Math.max(0, out.length - at)), at)
      return out
    })
  )
}

function concat (...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0))
  let at = 0
  for (const p of parts) { out.set(p, at); at += p.byteLength }
  return out
}
