import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import { MemoryLevel } from 'memory-level'
import { encodeBlock, type VersionId } from '../../../src/core/digest.js'
import { MAX_STAMP_COUNTER, encodeHead, publisherKeyOf, signHead, type Head, type PublisherKey, type SignedHead } from '../../../src/core/heads.js'
import { TrustPolicy } from '../../../src/core/trust.js'
import { HeadBook, MAX_CLOCK_SKEW_MS, MAX_UNTRUSTED_SHOWN, type AcceptedHead } from '../../../src/heads/book.js'
import { HeadStore } from '../../../src/store/heads.js'
import { IndexDb, type Db } from '../../../src/store/index-db.js'
import { rejection } from '../../helpers/assert.js'

interface Publisher { key: KeyObject, publisher: PublisherKey }

function newPublisher (): Publisher {
  const { privateKey } = generateKeyPairSync('ed25519')
  return { key: privateKey, publisher: publisherKeyOf(createPublicKey(privateKey)) }
}

const version = (n: number): VersionId => encodeBlock(`version ${n}`).cid
const T0 = 1_790_000_000_000
const silent = { info () {}, warn () {}, debug () {} }

function signed (p: Publisher, over: Partial<Head> = {}): SignedHead {
  return signHead({
    model: 'org/llama', label: 'prod', version: version(1), previous: null,
    stamp: { wall: T0, counter: 0 }, activation: { mode: 'hot' }, publisher: p.publisher, ...over
  }, p.key)
}

/** A head signed correctly over a body with `over` fields as given (past what `signHead` would allow). */
function encodeRaw (p: Publisher, over: Record<string, unknown>): Uint8Array {
  const body = dagCbor.encode({ ...dagCbor.decode(encodeHead(signed(p).head)) as Record<string, unknown>, ...over })
  return dagCbor.encode({ head: body, sig: new Uint8Array(sign(null, body, p.key)) })
}

describe('HeadBook', () => {
  const alice = newPublisher()
  const mallory = newPublisher()
  let index: IndexDb
  let trust: TrustPolicy
  let now: number
  const clock = (): number => now
  let book: HeadBook
  let accepted: AcceptedHead[]

  const open = async (): Promise<HeadBook> => await HeadBook.open(new HeadStore(index), trust, { clock, log: silent })

  beforeEach(async () => {
    index = new IndexDb(new MemoryLevel() as unknown as Db)
    await index.open()
    trust = new TrustPolicy([{ key: alice.publisher, models: 'org/*' }, { key: mallory.publisher, models: 'mallory/*' }])
    now = T0 + 1_000
    book = await open()
    accepted = []
    book.onAccepted(a => accepted.push(a))
  })

  afterEach(async () => {
    await index.close()
  })

  it('accepts a newer head, counts duplicates and stale replays, and tells listeners once', async () => {
    const h1 = signed(alice)
    const h2 = signed(alice, { version: version(2), previous: version(1), stamp: { wall: T0, counter: 1 } })
    expect(await book.offer(h1.bytes, { from: 'peer-a', via: 'gossip' })).toMatchObject({ status: 'accepted', head: { id: h1.id } })
    expect(await book.offer(h1.bytes, { from: 'peer-b', via: 'sync' })).toMatchObject({ status: 'duplicate' })
    const second = await book.offer(h2.bytes, { via: 'gossip' })
    expect(second).toMatchObject({ status: 'accepted', head: { id: h2.id }, replaced: { id: h1.id } })
    // A replay of the older head after the newer one is stale.
    expect(await book.offer(h1.bytes, { from: 'peer-a', via: 'gossip' })).toMatchObject({ status: 'stale' })
    expect(book.get('org/llama', 'prod')?.id).toBe(h2.id)
    expect(book.counters).toEqual({ accepted: 2, duplicate: 1, stale: 1, future: 0, rejected: { malformed: 0, signature: 0, untrusted: 0 }, signatureChecks: 2 })
    expect(accepted.map(a => [a.head.id, a.via, a.from, a.replaced?.id])).toEqual([[h1.id, 'gossip', 'peer-a', undefined], [h2.id, 'gossip', undefined, h1.id]])
    expect(await book.receivedAt('org/llama', 'prod')).toBe(now)
  })

  it('keeps the same winner whatever the order heads arrive in (two books, opposite orders)', async () => {
    const heads = [
      signed(alice, { stamp: { wall: T0, counter: 0 } }),
      signed(alice, { stamp: { wall: T0, counter: 3 }, version: version(3) }),
      signed(alice, { stamp: { wall: T0, counter: 3 }, version: version(3), activation: { mode: 'cold' } }),
      signed(alice, { stamp: { wall: T0, counter: 3 }, version: version(3), previous: version(1) }),
      signed(alice, { stamp: { wall: T0, counter: 3 }, version: null })
    ]
    for (const h of heads) await book.offer(h.bytes, { via: 'gossip' })
    const other = new IndexDb(new MemoryLevel() as unknown as Db)
    await other.open()
    const book2 = await HeadBook.open(new HeadStore(other), trust, { clock, log: silent })
    for (const h of [...heads].reverse()) await book2.offer(h.bytes, { via: 'gossip' })
    expect(book2.get('org/llama', 'prod')?.id).toBe(book.get('org/llama', 'prod')?.id)
    expect(Buffer.from(book2.digest()).equals(Buffer.from(book.digest()))).toBe(true)
    await other.close()
  })

  it('names the publishers (with a model) whose heads it refused as untrusted, most recent last, bounded', async () => {
    const stranger = newPublisher()
    await book.offer(signed(mallory).bytes, { via: 'gossip' })
    await book.offer(signed(stranger, { model: 'org/other' }).bytes, { via: 'sync' })
    await book.offer(signed(mallory, { stamp: { wall: T0, counter: 1 } }).bytes, { via: 'gossip' })
    expect(book.untrusted()).toEqual([{ publisher: stranger.publisher, model: 'org/other' }, { publisher: mallory.publisher, model: 'org/llama' }])
    for (let i = 0; i < MAX_UNTRUSTED_SHOWN + 3; i++) await book.offer(signed(newPublisher()).bytes, { via: 'gossip' })
    expect(book.untrusted()).toHaveLength(MAX_UNTRUSTED_SHOWN)
    expect(book.untrusted().map(u => u.publisher)).not.toContain(stranger.publisher)
    // New trust rules: what was refused under the old ones is forgotten.
    trust.replace([{ key: alice.publisher, models: 'org/*' }])
    await book.offer(signed(mallory, { stamp: { wall: T0, counter: 2 } }).bytes, { via: 'gossip' })
    expect(book.untrusted()).toEqual([{ publisher: mallory.publisher, model: 'org/llama' }])
  })

  it('rejects malformed, forged and untrusted heads by reason, and stores none of them', async () => {
    const good = signed(alice)
    const sig = new Uint8Array(good.signature)
    sig[0] = sig[0]! ^ 0xff
    const forged = dagCbor.encode({ head: good.body, sig })
    expect(await book.offer(Uint8Array.from([1, 2, 3]), { via: 'gossip' })).toMatchObject({ status: 'rejected', reason: 'malformed' })
    expect(await book.offer(forged, { via: 'gossip' })).toMatchObject({ status: 'rejected', reason: 'signature' })
    // mallory is trusted for mallory/*, not for org/*.
    expect(await book.offer(signed(mallory).bytes, { via: 'gossip' })).toMatchObject({ status: 'rejected', reason: 'untrusted' })
    expect(await book.offer(signed(newPublisher()).bytes, { via: 'sync' })).toMatchObject({ status: 'rejected', reason: 'untrusted' })
    expect(await book.offer(signed(mallory, { model: 'mallory/x' }).bytes, { via: 'gossip' })).toMatchObject({ status: 'accepted' })
    expect(book.counters.rejected).toEqual({ malformed: 1, signature: 1, untrusted: 2 })
    expect(book.get('org/llama', 'prod')).toBeUndefined()
    expect(await new HeadStore(index).get('org/llama', 'prod')).toBeUndefined()
    expect(accepted).toHaveLength(1)
  })

  it('checks trust, the clock and the order before the signature: only a head that would win costs a signature check', async () => {
    const current = signed(alice, { stamp: { wall: T0, counter: 5 } })
    await book.offer(current.bytes, { via: 'gossip' })
    expect(book.counters.signatureChecks).toBe(1)
    // Forged: a correct body with a signature by someone else (64 random-looking bytes).
    const forge = (h: SignedHead): Uint8Array => dagCbor.encode({ head: h.body, sig: new Uint8Array(sign(null, h.body, newPublisher().key)) })
    const untrusted = signed(newPublisher(), { stamp: { wall: T0 + 10, counter: 0 } })
    const older = signed(alice, { stamp: { wall: T0, counter: 1 }, version: version(9) })
    const ahead = signed(alice, { stamp: { wall: now + MAX_CLOCK_SKEW_MS + 1, counter: 0 } })
    for (const bytes of [untrusted.bytes, forge(untrusted), forge(older), forge(ahead), current.bytes]) await book.offer(bytes, { from: 'peer-x', via: 'gossip' })
    expect(book.counters).toMatchObject({ rejected: { untrusted: 2, signature: 0 }, stale: 1, future: 1, duplicate: 1, signatureChecks: 1 })
    // A forged head that would win is the one kind that costs a check, and is refused by it.
    expect(await book.offer(forge(signed(alice, { stamp: { wall: T0 + 1, counter: 0 } })), { via: 'gossip' })).toMatchObject({ status: 'rejected', reason: 'signature' })
    expect(book.counters.signatureChecks).toBe(2)
    expect(book.get('org/llama', 'prod')?.id).toBe(current.id)
  })

  it('refuses an untrusted head offered again by its id alone, until the trust rules change', async () => {
    const h = signed(mallory, { model: 'org/llama' })
    const first = await book.offer(h.bytes, { from: 'peer-a', via: 'sync' })
    expect(first).toMatchObject({ status: 'rejected', reason: 'untrusted' })
    expect(first).not.toHaveProperty('known')
    expect(await book.offer(h.bytes, { from: 'peer-b', via: 'sync' })).toMatchObject({ status: 'rejected', reason: 'untrusted', known: true })
    expect(book.counters.rejected.untrusted).toBe(2)
    trust.replace([...trust.list(), { key: mallory.publisher, models: 'org/*' }])
    expect(await book.offer(h.bytes, { from: 'peer-a', via: 'sync' })).toMatchObject({ status: 'accepted' })
  })

  it('keeps its digest until a winner changes, and counts the changes in revision', async () => {
    const empty = book.digest()
    expect(book.digest()).toBe(empty)
    await book.offer(signed(alice).bytes, { via: 'gossip' })
    expect(book.revision).toBe(1)
    const one = book.digest()
    expect(Buffer.from(one).equals(Buffer.from(empty))).toBe(false)
    await book.offer(signed(alice).bytes, { via: 'gossip' })
    expect(book.revision).toBe(1)
    expect(book.digest()).toBe(one)
  })

  it('ignores a head stamped more than MAX_CLOCK_SKEW_MS ahead, and takes it once the clock catches up', async () => {
    const ahead = signed(alice, { stamp: { wall: now + MAX_CLOCK_SKEW_MS + 1, counter: 0 } })
    expect(await book.offer(ahead.bytes, { via: 'gossip' })).toMatchObject({ status: 'future' })
    expect(book.counters.future).toBe(1)
    expect(book.get('org/llama', 'prod')).toBeUndefined()
    expect(await book.offer(signed(alice, { stamp: { wall: now + MAX_CLOCK_SKEW_MS, counter: 0 } }).bytes, { via: 'gossip' })).toMatchObject({ status: 'accepted' })
    now += 2
    expect(await book.offer(ahead.bytes, { via: 'sync' })).toMatchObject({ status: 'accepted' })
  })

  it('reloads the winners from the store when reopened', async () => {
    const a = signed(alice)
    const b = signed(alice, { label: 'canary', version: version(5) })
    await book.offer(a.bytes, { via: 'gossip' })
    await book.offer(b.bytes, { via: 'gossip' })
    const reopened = await open()
    expect(reopened.list().map(h => h.id).sort()).toEqual([a.id, b.id].sort())
    expect(Buffer.from(reopened.digest()).equals(Buffer.from(book.digest()))).toBe(true)
    expect(await reopened.offer(a.bytes, { via: 'sync' })).toMatchObject({ status: 'duplicate' })
  })

  it('ignores at open a stored head whose key is no longer trusted, and one that fails its checks', async () => {
    await book.offer(signed(alice).bytes, { via: 'gossip' })
    await book.offer(signed(mallory, { model: 'mallory/x' }).bytes, { via: 'gossip' })
    trust.replace([{ key: alice.publisher, models: 'org/*' }])
    // A damaged record on disk.
    await index.heads.put('org/broken\0prod', { head: Buffer.from('garbage').toString('base64'), receivedAt: 1 })
    const warnings: object[] = []
    const reopened = await HeadBook.open(new HeadStore(index), trust, { clock, log: { ...silent, warn: obj => { warnings.push(obj) } } })
    expect(reopened.list().map(h => h.head.model)).toEqual(['org/llama'])
    expect(reopened.get('mallory/x', 'prod')).toBeUndefined()
    expect(warnings).toHaveLength(2)
  })

  it('publishes above the current head, even when the clock went backwards', async () => {
    const first = await book.publish({ model: 'org/llama', label: 'prod', version: version(1), key: alice.key })
    expect(first.head).toMatchObject({ stamp: { wall: now, counter: 0 }, previous: null, publisher: alice.publisher, activation: { mode: 'hot' } })
    now -= 60_000
    const second = await book.publish({ model: 'org/llama', label: 'prod', version: version(2), key: alice.key })
    expect(second.head.stamp).toEqual({ wall: first.head.stamp.wall, counter: 1 })
    expect(second.head.previous).toBe(version(1))
    // A head from elsewhere with a higher stamp: the next publish goes above it too.
    await book.offer(signed(alice, { stamp: { wall: T0 + 5_000, counter: 7 }, version: version(3) }).bytes, { via: 'gossip' })
    const third = await book.publish({ model: 'org/llama', label: 'prod', version: null, key: alice.key })
    expect(third.head.stamp).toEqual({ wall: T0 + 5_000, counter: 8 })
    expect(third.head.previous).toBe(version(3))
    expect(book.get('org/llama', 'prod')?.id).toBe(third.id)
    expect(accepted.map(a => a.via)).toEqual(['local', 'local', 'gossip', 'local'])
  })

  it('a trusted head stamped with counter 2^53 - 1 is refused as malformed, and publish still works', async () => {
    const wedge = encodeRaw(alice, { stamp: [now, Number.MAX_SAFE_INTEGER] })
    const outcome = await book.offer(wedge, { from: 'peer-a', via: 'gossip' })
    expect(outcome).toMatchObject({ status: 'rejected', reason: 'malformed', message: expect.stringContaining('counter 9007199254740991 is over the limit') })
    const published = await book.publish({ model: 'org/llama', label: 'prod', version: version(2), key: alice.key })
    expect(published.head.stamp).toEqual({ wall: now, counter: 0 })
  })

  it('publishing above a head whose counter is at its cap moves to the next millisecond, counter 0', async () => {
    await book.offer(signed(alice, { stamp: { wall: now, counter: MAX_STAMP_COUNTER } }).bytes, { via: 'gossip' })
    const published = await book.publish({ model: 'org/llama', label: 'prod', version: version(2), key: alice.key })
    expect(published.head.stamp).toEqual({ wall: now + 1, counter: 0 })
    expect(book.get('org/llama', 'prod')?.id).toBe(published.id)
  })

  it('publish with expect refuses a mismatch with ConflictError and changes nothing', async () => {
    expect(await rejection(book.publish({ model: 'org/llama', label: 'prod', version: version(1), expect: version(9), key: alice.key }))).toMatchObject({ name: 'ConflictError', code: 'CONFLICT' })
    await book.publish({ model: 'org/llama', label: 'prod', version: version(1), expect: null, key: alice.key })
    const current = book.get('org/llama', 'prod')
    expect(await rejection(book.publish({ model: 'org/llama', label: 'prod', version: version(2), expect: null, key: alice.key }))).toMatchObject({ name: 'ConflictError' })
    expect(await rejection(book.publish({ model: 'org/llama', label: 'prod', version: version(2), expect: version(2), key: alice.key }))).toMatchObject({ name: 'ConflictError' })
    expect(book.get('org/llama', 'prod')?.id).toBe(current?.id)
    await book.publish({ model: 'org/llama', label: 'prod', version: version(2), expect: version(1), key: alice.key })
    expect(book.get('org/llama', 'prod')?.head.version).toBe(version(2))
  })

  it('publish with expect compares a label without a head with where it points here (unheaded), and says where it points', async () => {
    expect(await rejection(book.publish({ model: 'org/llama', label: 'prod', version: version(2), expect: null, unheaded: version(1), key: alice.key }))).toMatchObject({
      name: 'ConflictError', message: `org/llama@prod points at ${version(1)}, not nothing`
    })
    expect(book.get('org/llama', 'prod')).toBeUndefined()
    await book.publish({ model: 'org/llama', label: 'prod', version: version(2), expect: version(1), unheaded: version(1), key: alice.key })
    // With a head, the head decides: unheaded is not looked at.
    expect(await rejection(book.publish({ model: 'org/llama', label: 'prod', version: version(3), expect: version(1), unheaded: version(1), key: alice.key }))).toMatchObject({
      message: `org/llama@prod points at ${version(2)}, not ${version(1)}`
    })
    expect(book.get('org/llama', 'prod')?.head).toMatchObject({ version: version(2), previous: null })
  })

  it('refuses to publish with a key the trust rules do not allow for the model', async () => {
    expect(await rejection(book.publish({ model: 'org/llama', label: 'prod', version: version(1), key: mallory.key }))).toMatchObject({ name: 'InvalidInputError' })
    expect(await rejection(book.publish({ model: 'org/llama', label: 'prod', version: version(1), key: newPublisher().key }))).toMatchObject({ name: 'InvalidInputError' })
    expect(book.get('org/llama', 'prod')).toBeUndefined()
    expect(accepted).toEqual([])
  })

  it('serialises concurrent publishes: each one stamps above the one before', async () => {
    const heads = await Promise.all([1, 2, 3, 4, 5].map(async n => await book.publish({ model: 'org/llama', label: 'prod', version: version(n), key: alice.key })))
    expect(heads.map(h => h.head.stamp.counter)).toEqual([0, 1, 2, 3, 4])
    expect(heads.slice(1).map(h => h.head.previous)).toEqual([1, 2, 3, 4].map(version))
    expect(book.get('org/llama', 'prod')?.head.version).toBe(version(5))
  })

  it('keeps the history of heads that won in turn, oldest first', async () => {
    expect(await rejection(book.history('org/llama', 'prod'))).toMatchObject({ name: 'NotFoundError' })
    for (const n of [1, 2, 3]) {
      await book.publish({ model: 'org/llama', label: 'prod', version: version(n), key: alice.key })
      now += 1
    }
    // A stale head does not enter the history.
    await book.offer(signed(alice, { version: version(9) }).bytes, { via: 'gossip' })
    await book.publish({ model: 'org/llama', label: 'other', version: version(7), key: alice.key })
    const history = await book.history('org/llama', 'prod')
    expect(history.map(h => h.head.version)).toEqual([version(1), version(2), version(3)])
    expect(history.map(h => h.head.previous)).toEqual([null, version(1), version(2)])
    expect((await book.history('org/llama', 'other')).map(h => h.head.version)).toEqual([version(7)])
  })
})
