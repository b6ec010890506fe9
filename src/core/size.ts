/** Sizes typed by people: in config files (`store.quota`) and on the command line (`--block-size`). */
import { InvalidInputError } from './errors.js'

/** `123`, `"200GB"`, `"1.5 TiB"` → bytes (k/M/G/T are powers of 1000, Ki/Mi/Gi/Ti of 1024). */
export function parseSize (value: number | string): number {
  if (typeof value === 'number') return value
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kKMGT]i?)?B?\s*$/.exec(value)
  if (m === null) throw new InvalidInputError(`"${value}" is not a size; use bytes or e.g. "200GB", "1.5TiB"`)
  const unit = m[2] ?? ''
  const power = { '': 0, k: 1, K: 1, M: 2, G: 3, T: 4 }[unit[0] ?? ''] ?? 0
  const base = unit.endsWith('i') ? 1024 : 1000
  return Math.round(Number(m[1]) * base ** power)
}
