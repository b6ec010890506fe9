import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createPublicKey, generateKeyPairSync, sign } from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import { MemoryLevel } from 'memory-level'
import { encodeBlock } from '../../../src/core/digest.js'
import { publisherKeyOf, signHead, type Head } from '../../../src/core/heads.js'
import { TrustPolicy } from '../../../src/core/trust.js'
import { HeadBook } from '../../../src/heads/book.js'
import { HEAD_CHECK_BURST, HeadGuard } from '../../../src/heads/guard.js'
import { gossipVerdict } from '../../../src/heads/spread.js'
import { PeerScores } from '../../../src/p2p/judge.js'
import { HeadStore } from '../../../src/store/heads.js'
import { IndexDb, type Db } from '../../../src/store/index-db.js'

const T0 = 1_790_000_000_000
const silent = { info () {}, warn () {}, debug () {} }

describe('gossipVerdict (the head topic validator)', () => {
  const { privateKey: key } = generateKeyPairSync('ed25519')
  const { privateKey: other } = generateKeyPairSync('ed25519')
  const head = (k = key, over: Partial<Head> = {}): Uint8Array => signHead({
    model: 'org/llama', label: 'prod', version: encodeBlock('v1').cid, previous: null,
    stamp: { wall: T0, counter: 0 }, activation: { mode: 'hot' }, publisher: publisherKeyOf(createPublicKey(k)), ...over
  }, k).bytes
  let index: IndexDb
  let guard: HeadGuard
  let judge: PeerScores

  beforeEach(async () => {
    index = new IndexDb(new MemoryLevel() as unknown as Db)
    await index.open()
    const book = await HeadBook.open(new HeadStore(index), new TrustPolicy([{ key: publisherKeyOf(createPublicKey(key)), models: '*' }]), { clock: () => T0, log: silent })
    judge = new PeerScores()
    guard = new HeadGuard(book, judge, { clock: () => T0, log: silent })
  })
  afterEach(async () => { await index.close() })

  it('accepts a winning head; ignores a duplicate and a head of a publisher this node does not trust, without penalty', async () => {
    const h = head()
    expect(await gossipVerdict(guard, 'a', h)).toBe(TopicValidatorResult.Accept)
    expect(await gossipVerdict(guard, 'a', h)).toBe(TopicValidatorResult.Ignore)
    expect(await gossipVerdict(guard, 'b', head(other))).toBe(TopicValidatorResult.Ignore)
    expect(judge.list()).toEqual([])
  })

  it('rejects a forged or malformed head, and the relaying peer is penalised', async () => {
    const body = (dagCbor.decode(head(key, { label: 'canary' })) as { head: Uint8Array }).head
    const forged = dagCbor.encode({ head: body, sig: new Uint8Array(sign(null, body, other)) })
    expect(await gossipVerdict(guard, 'c', forged)).toBe(TopicValidatorResult.Reject)
    expect(await gossipVerdict(guard, 'c', Uint8Array.from([1, 2, 3]))).toBe(TopicValidatorResult.Reject)
    expect(judge.list()[0]).toMatchObject({ peer: 'c', offences: { head: 2 } })
  })

  it('ignores heads past the sender\'s budget (dropped unchecked)', async () => {
    const untrusted = Array.from({ length: HEAD_CHECK_BURST + 3 }, (_, i) => head(other, { label: `l${i}` }))
    const verdicts = []
    for (const h of untrusted) verdicts.push(await gossipVerdict(guard, 'd', h))
    expect(new Set(verdicts)).toEqual(new Set([TopicValidatorResult.Ignore]))
    expect(guard.counters.dropped).toBe(3)
  })
})
