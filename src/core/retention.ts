/**
 * How much of a label's history a node keeps ready for a rollback: GC (`store/gc.ts`) and
 * compression (`store/cold.ts`) leave the last `keepLast` targets of every label alone, and
 * `config.json` `labels.keep` sets `keepLast` (`config/config.ts`). The default lives here, with no
 * I/O, so the config and the store share it without one importing the other.
 */

/** @default 3 — a label's current version and the two before it */
export const DEFAULT_KEEP_LAST = 3
