/**
 * What every store backend promises, as one suite (iroh-blobs runs one smoke test against each of
 * its stores; restic one suite against each backend). `storeConformance(backend)` registers it
 * for one backend: `conformance.test.ts` runs it against the memory index (memory-level) and the
 * real one (LevelDB), both over real files in a temporary home.
 *
 * It goes through the store's interfaces (`store/api.ts`) and its modules (gc, verify, the pull
 * target); the private parts (`internals`) only to look at what is on disk or to damage it.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { generateKeyPairSync } from 'node:crypto'
import { chmod, mkdir, open, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { ChunkId, FileDigest, VersionId } from '../../../src/core/digest.js'
import { blockCount, blockRange } from '../../../src/core/tree.js'
import { ConflictError, NotFoundError } from '../../../src/core/errors.js'
import { publisherKeyOf, signHead } from '../../../src/core/heads.js'
import { encodeManifest } from '../../../src/core/manifest.js'
import { addPath } from '../../../src/ingest/ingest.js'
import type { LeaseRecord } from '../../../src/store/api.js'
import { compressVersion } from '../../../src/store/cold.js'
import { collectGarbage } from '../../../src/store/gc.js'
import { PullTarget } from '../../../src/store/pull-target.js'
import type { ResolvedVersion, Store } from '../../../src/store/store.js'
import { verifyStore } from '../../../src/store/verify.js'
import { sameBytes, seededBytes } from '../../helpers/random.js'
import { internals } from '../../helpers/store-internals.js'
import { tempDir } from '../../helpers/tmp.js'

export interface Backend {
  name: string
  /** Opens a new store in `home`; `reopen` (after `close`) opens the same one again, as a restart does. */
  open: (home: string) => Promise<{ store: Store, reopen: () => Promise<Store> }>
}

const BLOCK = 16 * 1024
const NAME = 'org/m'

/** Plenty of room, whatever the test machine's disk has. */
const roomy = { freeBytes: async () => Number.MAX_SAFE_INTEGER }

export function storeConformance (backend: Backend): void {
  describe(`store conformance: ${backend.name}`, () => {
    let dir: string
    let cleanup: () => Promise<void>
    let store: Store
    let reopen: () => Promise<Store>
    const others: Store[] = []

    /** A folder of two files (one with `seed`'s bytes) added as a version of `NAME`. */
    const add = async (seed: number, options: { label?: string, pin?: boolean } = {}, into = store): Promise<ResolvedVersion> => {
      const folder = join(dir, `model-${seed}`)
      await mkdir(folder, { recursive: true })
      await writeFile(join(folder, 'weights.bin'), seededBytes(300 * 1024, seed))
      await writeFile(join(folder, 'config.json'), JSON.stringify({ seed }))
      return await addPath(into, folder, { name: NAME, blockSize: BLOCK, ...options })
    }

    /** Another store of the same backend (a peer to pull into). */
    const another = async (): Promise<{ store: Store, reopen: () => Promise<Store> }> => {
      const opened = await backend.open(join(dir, `home-${others.length + 1}`))
      others.push(opened.store)
      return opened
    }

    beforeEach(async () => {
      ({ dir, cleanup } = await tempDir('shoal-conformance-'))
      ;({ store, reopen } = await backend.open(join(dir, 'home')))
    })

    afterEach(async () => {
      for (const s of [store, ...others.splice(0)]) await s.close().catch(() => {})
      await cleanup()
    })

    it('adds a version and finds it by name, label, id and id prefix, with its records and snapshot', async () => {
      const v = await add(1, { label: 'prod' })
      for (const ref of [NAME, `${NAME}@prod`, `${NAME}@${v.version}`, `${NAME}@${v.version.slice(0, 12)}`]) {
        expect((await store.resolve(ref)).version).toBe(v.version)
      }
      expect(v).toMatchObject({ name: NAME, labels: ['prod'], pinned: true, missing: [], cold: false })
      expect(v.path).toBe(store.snapshotPath(NAME, v.version))
      expect(sameBytes(await readFile(join(v.path, 'weights.bin')), seededBytes(300 * 1024, 1))).toBe(true)
      expect((await store.versions(NAME)).map(x => x.version)).toEqual([v.version])
      expect(await store.hasVersion(v.version)).toBe(true)
      expect(await store.isComplete(v.version)).toBe(true)
      expect(await store.versionRecord(v.version)).toMatchObject({ name: NAME, local: true })
      expect((await store.manifestOf(v.version))?.files.map(f => f.path)).toEqual(['config.json', 'weights.bin'])
      expect(await store.totals()).toMatchObject({ models: 1, versions: 1, blobs: 2 })
      await expect(store.resolve(`${NAME}@nope`)).rejects.toThrow(`${NAME}@nope is neither a label nor a version in this store`)
      await expect(store.resolve('org/none')).rejects.toThrow('no model named org/none in this store')

      // A restart finds it all again.
      await store.close()
      store = await reopen()
      expect((await store.resolve(`${NAME}@prod`)).version).toBe(v.version)
    })

    it('labels move with their history, and a compare-and-set that does not hold is refused', async () => {
      const a = await add(1, { pin: false })
      const b = await add(2, { pin: false })
      await store.setLabel(NAME, 'prod', a.version, null)
      await expect(store.setLabel(NAME, 'prod', b.version, null)).rejects.toThrow(ConflictError)
      await expect(store.setLabel(NAME, 'prod', b.version, b.version)).rejects.toThrow(`${NAME}@prod points at ${a.version}, not ${b.version}`)
      const moved = await store.setLabel(NAME, 'prod', b.version, a.version)
      expect(moved.version).toBe(b.version)
      expect(moved.history.map(h => h.version)).toEqual([a.version])
      expect(await store.labels(NAME)).toEqual({ prod: b.version })
      expect(await store.allLabels()).toEqual([{ model: NAME, label: 'prod', version: b.version }])
      expect((await readFile(join(dir, 'home', 'models', 'models--org--m', 'refs', 'prod'), 'utf8')).trim()).toBe(b.version)
      await expect(store.setLabel(NAME, 'prod', 'bafkreinotaversion' as VersionId)).rejects.toThrow(`version bafkreinotaversion of ${NAME} is not in this store`)

      await store.removeLabel(NAME, 'prod')
      expect(await store.labelRecord(NAME, 'prod')).toBeUndefined()
      await expect(store.resolve(`${NAME}@prod`)).rejects.toThrow(NotFoundError)
    })

    it('pins: a version pin, and a label pin that pins every version the label points at', async () => {
      const a = await add(1, { pin: false })
      const b = await add(2, { pin: false })
      await store.pin(NAME, a.version)
      expect((await store.resolve(`${NAME}@${a.version}`)).pinned).toBe(true)
      expect(await store.unpin(NAME, a.version)).toBe(true)
      expect(await store.unpin(NAME, a.version)).toBe(false)
      await expect(store.pin('org/other', a.version)).rejects.toThrow(`version ${a.version} of org/other is not in this store`)

      await store.setLabel(NAME, 'prod', a.version)
      expect(await store.pinLabel(NAME, 'prod')).toBe(a.version)
      await store.setLabel(NAME, 'prod', b.version)
      expect(await store.isLabelPinned(NAME, 'prod')).toBe(true)
      expect((await store.versions(NAME)).map(v => v.pinned)).toEqual([true, true])
      expect(await store.unpinLabel(NAME, 'prod')).toBe(true)
      expect((await store.versions(NAME)).map(v => v.pinned)).toEqual([false, false])
    })

    it('leases are kept across a restart until dropped', async () => {
      const v = await add(1)
      const lease: LeaseRecord = { id: 'lease-1', holder: 'inference-7', model: NAME, version: v.version, path: v.path, createdAt: 1, expiresAt: 2 }
      await store.putLease(lease, { doing: 'leasing', kept: 'nothing' })
      await store.putLease({ ...lease, expiresAt: 3 }, { doing: 'renewing', kept: 'nothing' })
      await store.close()
      store = await reopen()
      const records: LeaseRecord[] = []
      for await (const r of store.leaseRecords()) records.push(r)
      expect(records).toEqual([{ ...lease, expiresAt: 3 }])
      await store.dropLease('lease-1', { doing: 'dropping', kept: 'nothing' })
      for await (const r of store.leaseRecords()) expect.unreachable(`lease ${r.id} was dropped`)
    })

    it('a pull is recorded with its attempts, is found again after a restart, and a discard removes it', async () => {
      const v = await add(1)
      const bytes = (await store.heads.manifest(v.version))!
      const peer = await another()
      const target = await PullTarget.open(peer.store, v.version, bytes, { pin: false, ...roomy })
      expect(await peer.store.pullRecord(v.version)).toMatchObject({ name: NAME, pin: false })
      const record = (await peer.store.pullRecord(v.version))!
      await peer.store.updatePullRecord(v.version, { ...record, attempts: 1 }, { doing: 'counting', kept: 'nothing' })
      await target.close()
      await peer.store.close()
      const again = await peer.reopen()
      others.push(again)
      const records: Array<[VersionId, unknown]> = []
      for await (const entry of again.pullRecords()) records.push(entry)
      expect(records).toEqual([[v.version, { ...record, attempts: 1 }]])
      await PullTarget.discard(again, v.version)
      expect(await again.pullRecord(v.version)).toBeUndefined()
      expect(await again.manifestOf(v.version)).toBeUndefined()
    })

    it('a chunk written but not yet recorded is held and served; recorded, it is served from the index; dropped, it is not held', async () => {
      const v = await add(1)
      const chunk = v.manifest.files.find(f => f.path === 'weights.bin')!.chunks[0]!
      const bytes = (await store.readChunk(chunk.id))!
      const peer = await another()
      const { layout, index } = internals(peer.store)
      const digest = 'bafkreipartialpartialpartialpartialpartialpartialpartialpar' as FileDigest
      await writeFile(layout.partialBlob(digest), bytes)
      expect(await peer.store.heldChunks([chunk.id])).toEqual(new Set())

      peer.store.chunkWritten(chunk.id, { digest, offset: 0, size: bytes.length })
      expect(await peer.store.heldChunks([chunk.id])).toEqual(new Set([chunk.id]))
      expect(sameBytes(await peer.store.readChunk(chunk.id), bytes)).toBe(true)
      expect(await index.locations(chunk.id)).toBeUndefined()

      await peer.store.recordChunks([{ id: chunk.id, digest, offset: 0, size: bytes.length }], { doing: 'recording', kept: 'nothing' })
      expect(await index.locations(chunk.id)).toEqual([[digest, 0, bytes.length]])
      expect(sameBytes(await peer.store.readChunk(chunk.id), bytes)).toBe(true)

      const other = 'bafkreiotherchunkotherchunkotherchunkotherchunkotherchunkoth' as ChunkId
      peer.store.chunkWritten(other, { digest, offset: 0, size: bytes.length })
      peer.store.chunksDropped([other])
      expect(await peer.store.heldChunks([other])).toEqual(new Set())
    })

    it('a version pulled chunk by chunk from another store is complete, and its chunks and blocks read back', async () => {
      const v = await add(1)
      const peer = await another()
      const target = await PullTarget.open(peer.store, v.version, (await store.heads.manifest(v.version))!, { ...roomy })
      try {
        for (const id of target.needed()) expect(await target.put(id, (await store.readChunk(id))!)).toBe(true)
        const pulled = await target.completed()
        expect(pulled).toMatchObject({ version: v.version, missing: [], pinned: true })
      } finally {
        await target.close()
      }
      expect(await peer.store.pullRecord(v.version)).toBeUndefined()
      const ids = v.manifest.files.flatMap(f => f.chunks.map(c => c.id))
      expect(await peer.store.heldChunks(ids)).toEqual(new Set(ids))
      for (const id of ids) expect(sameBytes(await peer.store.readChunk(id), await store.readChunk(id))).toBe(true)
      const big = v.manifest.files.flatMap(f => f.chunks).find(c => blockCount(c.size, BLOCK) > 2)!
      const whole = (await peer.store.readChunk(big.id))!
      const span = (await peer.store.readSpan(big.id, BLOCK, 1, 2))!
      const [start] = blockRange(big.size, BLOCK, 1)
      expect(sameBytes(span.data, whole.subarray(start, start + 2 * BLOCK))).toBe(true)
      expect(span.proofs).toHaveLength(2)
      expect(sameBytes(await peer.store.readChunkRange(big.id, 100, 50), whole.subarray(100, 150))).toBe(true)
    })

    it('gc keeps what is pinned, labelled, leased or being pulled, and removes the rest with its blobs', async () => {
      const pinned = await add(1)
      const labelled = await add(2, { pin: false, label: 'prod' })
      const leased = await add(3, { pin: false })
      const doomed = await add(4, { pin: false })
      const doomedBlob = internals(store).layout.blob(doomed.manifest.files.find(f => f.path === 'weights.bin')!.digest)
      // A pull under way (recorded, one chunk in its partial file), of a version another store holds.
      const peer = await another()
      const source = await add(5, {}, peer.store)
      const target = await PullTarget.open(store, source.version, (await peer.store.heads.manifest(source.version))!, { ...roomy })
      const first = target.needed()[0]!
      await target.put(first, (await peer.store.readChunk(first))!)
      await target.close()
      const partial = internals(store).layout.partialBlob(source.manifest.files.find(f => f.chunks.some(c => c.id === first))!.digest)
      await stat(partial)

      const dry = await collectGarbage(store, { dryRun: true, keep: [leased.version], keepLast: 1 })
      expect(dry.versions.map(v => v.version)).toEqual([doomed.version])
      await stat(doomedBlob)

      const report = await collectGarbage(store, { keep: [leased.version], keepLast: 1 })
      expect(report.versions.map(v => v.version)).toEqual([doomed.version])
      expect(report.blobs).toHaveLength(2)
      expect(report.partials).toEqual([])
      await expect(stat(doomedBlob)).rejects.toMatchObject({ code: 'ENOENT' })
      await stat(partial)
      expect(await store.heldChunks([first])).toEqual(new Set([first]))
      expect((await store.versions(NAME)).map(v => v.version)).toEqual([pinned.version, labelled.version, leased.version])
      for (const v of [pinned, labelled, leased]) expect(await store.isComplete(v.version)).toBe(true)
      await expect(store.resolve(`${NAME}@${doomed.version}`)).rejects.toThrow(`version ${doomed.version} of ${NAME} is not in this store`)

      // Without the lease, the leased version goes on the next collection; discarded, the pull's partial file goes.
      await PullTarget.discard(store, source.version)
      expect((await collectGarbage(store, { keepLast: 1 })).versions.map(v => v.version)).toEqual([leased.version])
      await expect(stat(partial)).rejects.toMatchObject({ code: 'ENOENT' })
    })

    it('a cold version keeps its chunks readable, refuses to go cold twice, and comes back whole for a label', async () => {
      const v = await add(1, { pin: false })
      const ids = v.manifest.files.flatMap(f => f.chunks.map(c => c.id))
      const before = await Promise.all(ids.map(async id => await store.readChunk(id)))
      const report = await compressVersion(store, v.version, { keepLast: 1 })
      expect(report).toMatchObject({ name: NAME, version: v.version, blobs: 2 })
      const cold = await store.resolve(`${NAME}@${v.version}`)
      expect(cold).toMatchObject({ cold: true, missing: [] })
      expect(await store.coldRecord(v.version)).toMatchObject({ rawBytes: report.rawBytes, storedBytes: report.storedBytes })
      await expect(stat(cold.path)).rejects.toMatchObject({ code: 'ENOENT' })
      expect(await store.heldChunks(ids)).toEqual(new Set(ids))
      for (const [i, id] of ids.entries()) expect(sameBytes(await store.readChunk(id), before[i])).toBe(true)
      await expect(compressVersion(store, v.version, { keepLast: 1 })).rejects.toThrow(`${NAME}@${v.version} is already compressed`)
      expect((await verifyStore(store)).problems).toEqual([])

      // A label only points at a materialized version: setting it brings the files back.
      await store.setLabel(NAME, 'prod', v.version)
      expect(await store.coldRecord(v.version)).toBeUndefined()
      expect(sameBytes(await readFile(join(v.path, 'weights.bin')), seededBytes(300 * 1024, 1))).toBe(true)
      await expect(compressVersion(store, v.version, { keepLast: 1 })).rejects.toThrow(`${NAME}@prod points at it; move the label first`)
    })

    it('heads: the winner of each label, its history oldest first, and manifests known only through heads', async () => {
      const v = await add(1, { pin: false })
      const keys = generateKeyPairSync('ed25519')
      const publisher = publisherKeyOf(keys.publicKey)
      const head = (wall: number, version: VersionId | null): ReturnType<typeof signHead> =>
        signHead({ model: NAME, label: 'prod', version, previous: null, stamp: { wall, counter: 0 }, activation: { mode: 'hot' }, publisher }, keys.privateKey)
      await store.heads.put(head(1_000, v.version), { receivedAt: 1_001, from: 'peer-a' })
      await store.heads.put(head(2_000, null), { receivedAt: 2_001 })
      expect(await store.heads.get(NAME, 'prod')).toMatchObject({ receivedAt: 2_001 })
      expect((await store.heads.history(NAME, 'prod')).map(h => [h.receivedAt, h.from])).toEqual([[1_001, 'peer-a'], [2_001, undefined]])
      const all = []
      for await (const h of store.heads.all()) all.push(h.receivedAt)
      expect(all).toEqual([2_001])

      // A manifest named by a head and not stored is kept, and only under its own id.
      const known = encodeManifest({ ...v.manifest, name: 'org/known', created: v.manifest.created + 1, parent: null })
      expect(await store.heads.manifest(known.id)).toBeUndefined()
      await store.heads.putKnownManifest(known.id, known.bytes)
      expect(sameBytes(await store.heads.manifest(known.id), known.bytes)).toBe(true)
      await expect(store.heads.putKnownManifest(v.version, known.bytes)).rejects.toThrow(`manifest bytes do not hash to version id ${v.version}`)
      expect(await store.hasVersion(known.id)).toBe(false)
      await store.close()
      store = await reopen()
      expect(sameBytes(await store.heads.manifest(known.id), known.bytes)).toBe(true)
      expect((await store.heads.history(NAME, 'prod'))).toHaveLength(2)
    })

    it('verify finds a corrupted chunk, moves its blob to quarantine and reports the version damaged', async () => {
      const v = await add(1)
      const file = v.manifest.files.find(f => f.path === 'weights.bin')!
      expect((await verifyStore(store)).problems).toEqual([])
      const blob = internals(store).layout.blob(file.digest)
      await chmod(blob, 0o644)
      const fh = await open(blob, 'r+')
      await fh.write(new Uint8Array([0xff ^ seededBytes(300 * 1024, 1)[1000]!]), 0, 1, 1000)
      await fh.close()

      const report = await verifyStore(store)
      expect(report.problems).toEqual([{ kind: 'chunk-mismatch', subject: file.digest, detail: `chunk ${file.chunks[0]!.id} at offset 0 of ${blob} does not match its id` }])
      expect(report.quarantined).toEqual([file.digest])
      expect(report.damaged).toEqual([`${NAME}@${v.version}`])
      expect((await store.resolve(`${NAME}@${v.version}`)).missing).toEqual(['weights.bin'])
      expect(await store.readChunk(file.chunks[0]!.id)).toBeUndefined()
      await expect(stat(blob)).rejects.toMatchObject({ code: 'ENOENT' })
    })
  })
}
