import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MemoryLevel } from 'memory-level'
import { Store } from '../../src/store/store.js'
import type { Db } from '../../src/store/index-db.js'

/** A temporary folder removed by the returned cleanup. */
export async function tempDir (prefix = 'shoal-test-'): Promise<{ dir: string, cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  return { dir, cleanup: async () => { await rm(dir, { recursive: true, force: true }) } }
}

/** A store with an in-memory index over real files in `home`; pass the same `db` to "restart". */
export async function memoryStore (home: string, db: Db = new MemoryLevel() as unknown as Db): Promise<{ store: Store, db: Db }> {
  return { store: await Store.open(home, { db }), db }
}
