/**
 * The store's own parts, for the store's modules that work on them directly (gc, verify, cold,
 * the pull target, disk usage, export): the index (through its named methods, `store/index-db.ts`),
 * the home's layout and the read handles kept open for serving.
 *
 * Nothing outside `src/store/` imports this module (`eslint.config.js`): other layers use the
 * narrow interfaces of `store/api.ts`, which `Store` implements.
 */
import type { IndexDb } from './index-db.js'
import type { Layout } from './layout.js'
import type { ReadCache } from './read-cache.js'

export interface StoreParts {
  readonly index: IndexDb
  readonly layout: Layout
  readonly reads: ReadCache
}

const parts = new WeakMap<object, StoreParts>()

/** Called once by the store's constructor. */
export function attachParts (store: object, own: StoreParts): void {
  parts.set(store, own)
}

/** The parts of `store` (a `Store`). */
export function partsOf (store: object): StoreParts {
  const own = parts.get(store)
  if (own === undefined) throw new TypeError('not a store: it has no parts')
  return own
}
