import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import { MemoryLevel } from 'memory-level'
import { encodeBlock, type VersionId } from '../../../src/core/digest.js'
import { publisherKeyOf, signHead, type Head, type PublisherKey, type SignedHead } from '../../../src/core/heads.js'
import { TrustPolicy } from '../../../src/core/trust.js'
import { HeadBook } from '../../../src/heads/book.js'
import { FLOOD_DROPS_PER_OFFENCE, HEAD_CHECK_BURST, HEAD_CHECKS_PER_SECOND, HeadGuard, SYNC_BURST } from '../../../src/heads/guard.js'
import { PeerScores } from '../../../src/p2p/judge.js'
import { HeadStore } from '../../../src/store/heads.js'
import { IndexDb, type Db } from '../../../src/store/index-db.js'

interface Publisher { key: KeyObject, publisher: PublisherKey }

function newPublisher (): Publisher {
  const { privateKey } = generateKeyPairSync('ed25519')
  return { key: privateKey, publisher: publisherKeyOf(createPublicKey(privateKey)) }
}

const version = (n: number): VersionId => encodeBlock(`version ${n}`).cid
const T0 = 1_790_000_000_000
const silent = { info () {}, warn () {}, debug () {} }

describe('HeadGuard', () => {
  const alice = newPublisher()
  const stranger = newPublisher()
  let index: IndexDb
  let book: HeadBook
  let judge: PeerScores
  let guard: HeadGuard
  let now: number

  const signed = (p: Publisher, over: Partial<Head> = {}): SignedHead => signHead({
    model: 'org/llama', label: 'prod', version: version(1), previous: null,
    stamp: { wall: T0, counter: 0 }, activation: { mode: 'hot' }, publisher: p.publisher, ...over
  }, p.key)
  /** `n` distinct heads of `p`, one per label. */
  const many = (p: Publisher, n: number, from = 0): Uint8Array[] => Array.from({ length: n }, (_, i) => signed(p, { label: `l${from + i}` }).bytes)
  /** What a flooder sends past its budget: never looked at, so any bytes do. */
  const junk = (n: number): Uint8Array[] => Array.from({ length: n }, (_, i) => Uint8Array.from([i & 0xff, i >> 8]))
  // Signing is the slow part of these tests: the heads are made once.
  const untrustedHeads = many(stranger, HEAD_CHECK_BURST + HEAD_CHECKS_PER_SECOND + 1)
  const trustedHeads = many(alice, HEAD_CHECK_BURST + 100)

  beforeEach(async () => {
    index = new IndexDb(new MemoryLevel() as unknown as Db)
    await index.open()
    now = T0 + 1_000
    book = await HeadBook.open(new HeadStore(index), new TrustPolicy([{ key: alice.publisher, models: 'org/*' }]), { clock: () => now, log: silent })
    judge = new PeerScores({ now: () => now })
    guard = new HeadGuard(book, judge, { clock: () => now, log: silent })
  })

  afterEach(async () => {
    await index.close()
  })

  it('looks at no more untrusted heads than the budget allows, drops the rest unchecked, and never bans for them alone', async () => {
    const flood = [...untrustedHeads.slice(0, HEAD_CHECK_BURST), ...junk(FLOOD_DROPS_PER_OFFENCE)]
    const outcomes = []
    for (const bytes of flood) outcomes.push((await guard.offer(bytes, 'flooder', 'gossip')).status)
    expect(outcomes.filter(s => s === 'rejected')).toHaveLength(HEAD_CHECK_BURST)
    expect(outcomes.slice(HEAD_CHECK_BURST).every(s => s === 'dropped')).toBe(true)
    expect(book.counters).toMatchObject({ rejected: { untrusted: HEAD_CHECK_BURST, malformed: 0, signature: 0 }, signatureChecks: 0 })
    expect(guard.counters.dropped).toBe(FLOOD_DROPS_PER_OFFENCE)
    // One flood offence so far: rate-limited and recorded, not banned.
    expect(judge.list()).toEqual([expect.objectContaining({ peer: 'flooder', offences: { flood: 1 } })])
    expect(judge.isBanned('flooder')).toBe(false)
    // The budget refills at HEAD_CHECKS_PER_SECOND.
    now += 1_000
    for (const bytes of [...untrustedHeads.slice(HEAD_CHECK_BURST, HEAD_CHECK_BURST + HEAD_CHECKS_PER_SECOND), ...junk(5)]) await guard.offer(bytes, 'flooder', 'gossip')
    expect(book.counters.rejected.untrusted).toBe(HEAD_CHECK_BURST + HEAD_CHECKS_PER_SECOND)
    // Another peer has its own budget.
    expect(await guard.offer(untrustedHeads.at(-1)!, 'other', 'sync')).toMatchObject({ status: 'rejected', reason: 'untrusted' })
  })

  it('bans a persistent gossip flooder at its third flood offence', async () => {
    for (const b of [...untrustedHeads.slice(0, HEAD_CHECK_BURST), ...junk(3 * FLOOD_DROPS_PER_OFFENCE)]) await guard.offer(b, 'flooder', 'gossip')
    expect(judge.isBanned('flooder')).toBe(true)
    expect(judge.list()[0]?.lastOffence).toBe(`flood: ${3 * FLOOD_DROPS_PER_OFFENCE} heads sent past its budget of 20 per second`)
  })

  it('never makes an offence of heads dropped over budget on anti-entropy', async () => {
    for (const b of [...untrustedHeads.slice(0, HEAD_CHECK_BURST), ...junk(5 * FLOOD_DROPS_PER_OFFENCE)]) await guard.offer(b, 'syncer', 'sync')
    expect(judge.isBanned('syncer')).toBe(false)
    expect(judge.list()).toEqual([])
    expect(guard.counters.dropped).toBe(5 * FLOOD_DROPS_PER_OFFENCE)
  })

  it('costs an honest peer nothing for heads that are accepted, or refused before by id', async () => {
    for (const b of trustedHeads) expect((await guard.offer(b, 'honest', 'sync')).status).toBe('accepted')
    // The same untrusted head again and again (a peer trusting another publisher, syncing): one check.
    const other = signed(stranger)
    for (let i = 0; i < HEAD_CHECK_BURST * 2; i++) await guard.offer(other.bytes, 'honest', 'sync')
    expect(guard.counters.dropped).toBe(0)
    expect(book.counters.rejected.untrusted).toBe(HEAD_CHECK_BURST * 2)
    expect(judge.list()).toEqual([])
  })

  it('penalises forged and malformed heads, bans the sender at the third, and then checks nothing more from it', async () => {
    const forge = (h: SignedHead): Uint8Array => dagCbor.encode({ head: h.body, sig: new Uint8Array(sign(null, h.body, stranger.key)) })
    expect(await guard.offer(forge(signed(alice, { label: 'a' })), 'forger', 'gossip')).toMatchObject({ status: 'rejected', reason: 'signature' })
    expect(await guard.offer(Uint8Array.from([0xa1, 0x01]), 'forger', 'gossip')).toMatchObject({ status: 'rejected', reason: 'malformed' })
    expect(judge.isBanned('forger')).toBe(false)
    expect(await guard.offer(forge(signed(alice, { label: 'b' })), 'forger', 'sync')).toMatchObject({ status: 'rejected', reason: 'signature' })
    expect(judge.isBanned('forger')).toBe(true)
    expect(judge.list()[0]).toMatchObject({ offences: { head: 3 }, lastOffence: expect.stringMatching(/^head: sent a signature head: bad signature on org\/llama@b/) })
    const checks = book.counters.signatureChecks
    expect(await guard.offer(forge(signed(alice, { label: 'c' })), 'forger', 'gossip')).toEqual({ status: 'dropped', reason: 'banned' })
    expect(book.counters.signatureChecks).toBe(checks)
  })

  it('stops at the ban: forged heads a peer sent at once behind its third are dropped unchecked', async () => {
    const forge = (h: SignedHead): Uint8Array => dagCbor.encode({ head: h.body, sig: new Uint8Array(sign(null, h.body, stranger.key)) })
    const forged = Array.from({ length: 10 }, (_, i) => forge(signed(alice, { label: `f${i}` })))
    const outcomes = await Promise.all(forged.map(async b => await guard.offer(b, 'forger', 'gossip')))
    expect(outcomes.map(o => o.status)).toEqual([...Array(3).fill('rejected'), ...Array(7).fill('dropped')])
    expect(book.counters.signatureChecks).toBe(3)
  })

  it('admits SYNC_BURST inbound exchanges from a peer at once, then SYNCS_PER_SECOND', () => {
    const admitted = Array.from({ length: SYNC_BURST + 5 }, () => guard.admitSync('p'))
    expect(admitted.filter(Boolean)).toHaveLength(SYNC_BURST)
    expect(guard.counters.syncsRefused).toBe(5)
    now += 1_000
    expect(guard.admitSync('p')).toBe(true)
    expect(guard.admitSync('p')).toBe(false)
    expect(guard.admitSync('q')).toBe(true)
  })
})
