import { partsOf, type StoreParts } from '../../src/store/internal.js'
import type { Store } from '../../src/store/store.js'

/**
 * The store's private parts (index, layout, read handles), for tests that check records and files
 * directly or damage them on purpose.
 */
export function internals (store: Store): StoreParts {
  return partsOf(store)
}
