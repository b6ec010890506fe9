/**
 * The store conformance suite (`conformance.ts`) against both index backends, each over real files
 * in a temporary home: memory-level (what unit tests use) and LevelDB (what the daemon uses).
 */
import { MemoryLevel } from 'memory-level'
import type { Db } from '../../../src/store/index-db.js'
import { Store } from '../../../src/store/store.js'
import { storeConformance } from './conformance.js'

storeConformance({
  name: 'memory index',
  open: async home => {
    const db = new MemoryLevel() as unknown as Db
    return { store: await Store.open(home, { db }), reopen: async () => await Store.open(home, { db }) }
  }
})

storeConformance({
  name: 'LevelDB index',
  open: async home => ({ store: await Store.open(home), reopen: async () => await Store.open(home) })
})
