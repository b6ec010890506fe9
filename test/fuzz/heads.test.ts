/**
 * Fuzzing the ways a head reaches a node from outside: `openSignedHead` (and its cheap half,
 * `decodeSignedHead`) on mutated genuine signed heads and on random bytes; the anti-entropy frame
 * checks (`decodeSyncFrame`: protons decoding with limits, then field checks) on random and mutated
 * frames, and the responder itself fed random frames over a stream; and the gossip topic
 * validator's decision (`gossipVerdict`, through the guard and a real head book) on random and
 * mutated messages. Every case ends in a valid result or a typed error, within a time bound; a
 * message the validator accepts is one that opens, and one it rejects is one that does not.
 */
import { createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { PeerId, Stream } from '@libp2p/interface'
import type { ConnectionManager, Registrar } from '@libp2p/interface-internal'
import { streamPair } from '@libp2p/utils'
import fc from 'fast-check'
import { MemoryLevel } from 'memory-level'
import * as varint from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encodeBlock, type VersionId } from '../../src/core/digest.js'
import { decodeSignedHead, openSignedHead, publisherKeyOf, signHead, type Head } from '../../src/core/heads.js'
import { TrustPolicy } from '../../src/core/trust.js'
import { HeadBook } from '../../src/heads/book.js'
import { HeadGuard } from '../../src/heads/guard.js'
import { gossipVerdict } from '../../src/heads/spread.js'
import { PeerScores } from '../../src/p2p/judge.js'
import { MAX_SYNC_HEADS, decodeSyncFrame, headSync, type HeadSource } from '../../src/protocol/heads/index.js'
import { SyncMessage } from '../../src/protocol/heads/pb/heads.js'
import { HeadStore } from '../../src/store/heads.js'
import { IndexDb, type Db } from '../../src/store/index-db.js'
import { expectTypedOutcome, fuzzParams, mutated } from './fuzz.js'

const T0 = 1_790_000_000_000
const silent = { info () {}, warn () {}, debug () {} }
const version = (n: number): VersionId => encodeBlock(`version ${n}`).cid
const { privateKey } = generateKeyPairSync('ed25519')
const publisher = publisherKeyOf(createPublicKey(privateKey))

const base: Head = { model: 'org/llama', label: 'prod', version: version(1), previous: null, stamp: { wall: T0, counter: 0 }, activation: { mode: 'hot' }, publisher }
/** Genuine signed heads of several shapes, to mutate. */
const seeds = [
  signHead(base, privateKey).bytes,
  signHead({ ...base, label: 'canary', version: null, previous: version(1), stamp: { wall: T0, counter: 7 } }, privateKey).bytes,
  signHead({ ...base, model: 'org/x-7b', activation: { mode: 'cold', at: T0 + 60_000, jitterMs: 30_000 } }, privateKey).bytes
]
const anySeed = fc.constantFrom(...seeds).chain(seed => mutated(seed))

const entry = { model: 'org/llama', label: 'prod', wall: BigInt(T0), counter: 3, id: new Uint8Array(32).fill(7) }
const frameSeeds = [
  SyncMessage.encode({ digest: new Uint8Array(32).fill(1), match: false, entries: [], heads: [], want: [] }),
  SyncMessage.encode({ digest: new Uint8Array(0), match: false, entries: [entry, { ...entry, label: 'canary' }], heads: [], want: [] }),
  SyncMessage.encode({ digest: new Uint8Array(0), match: false, entries: [], heads: seeds as Array<Uint8Array<ArrayBuffer>>, want: [entry] })
]

describe('fuzz: signed heads', () => {
  it('openSignedHead on mutated genuine heads: a head that opens is one whose id is its hash, else a typed error', async () => {
    await fc.assert(fc.asyncProperty(anySeed, async bytes => {
      await expectTypedOutcome(() => openSignedHead(bytes), {
        maxMs: 500,
        check: head => { expect(seeds.some(s => Buffer.from(s).equals(Buffer.from(bytes)))).toBe(true); expect(head.verified).toBe(true) }
      })
    }), fuzzParams())
  })

  it('openSignedHead and decodeSignedHead on random bytes: a typed error, within the bound', async () => {
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 5_000 }), async bytes => {
      await expectTypedOutcome(() => openSignedHead(bytes), { maxMs: 500 })
      await expectTypedOutcome(() => decodeSignedHead(bytes), { maxMs: 500 })
    }), fuzzParams())
  })

  it('decodeSignedHead on mutated genuine heads: decoded fields stay within the schema bounds', async () => {
    await fc.assert(fc.asyncProperty(anySeed, async bytes => {
      await expectTypedOutcome(() => decodeSignedHead(bytes), {
        maxMs: 500,
        check: d => {
          expect(d.head.stamp.counter).toBeLessThanOrEqual(2 ** 32 - 1)
          expect(Number.isSafeInteger(d.head.stamp.wall)).toBe(true)
        }
      })
    }), fuzzParams())
  })
})

describe('fuzz: anti-entropy frames', () => {
  it('decodeSyncFrame on random and mutated frames: a frame within every limit, or a typed error', async () => {
    const frames = fc.oneof(fc.uint8Array({ maxLength: 8_192 }), fc.constantFrom(...frameSeeds).chain(seed => mutated(seed)))
    await fc.assert(fc.asyncProperty(frames, async bytes => {
      await expectTypedOutcome(() => decodeSyncFrame(bytes), {
        maxMs: 500,
        check: m => {
          expect(m.heads.length).toBeLessThanOrEqual(MAX_SYNC_HEADS)
          for (const e of [...m.entries, ...m.want]) expect(e.id.byteLength).toBe(32)
        }
      })
    }), fuzzParams())
  })

  describe('the responder fed random frames', () => {
    const offered: number[] = []
    let handler: ((stream: Stream, connection: { remotePeer: PeerId, id: string }) => Promise<void>) | undefined
    beforeAll(async () => {
      const source: HeadSource = {
        digest: () => new Uint8Array(32),
        entries: () => [{ model: 'org/llama', label: 'prod', wall: T0, counter: 0, id: '00'.repeat(32) }],
        signed: () => seeds[0],
        offer: async bytes => { offered.push(bytes.byteLength); return 'settled' }
      }
      const registrar = { handle: async (_p: string, h: typeof handler) => { handler = h }, unhandle: async () => {} } as unknown as Registrar
      await (headSync(source)({ registrar, connectionManager: {} as unknown as ConnectionManager }) as unknown as { start: () => Promise<void> }).start()
    })

    it('settles every exchange (answered or aborted) within the bound, and offers at most MAX_SYNC_HEADS heads', async () => {
      const frame = fc.oneof(fc.uint8Array({ maxLength: 2_048 }), fc.constantFrom(...frameSeeds).chain(seed => mutated(seed)))
      await fc.assert(fc.asyncProperty(fc.array(frame, { minLength: 1, maxLength: 3 }), async frames => {
        offered.length = 0
        const [outbound, inbound] = await streamPair({ delay: 0 })
        const started = performance.now()
        const done = handler!(inbound, { remotePeer: { toString: () => `fuzz-${randomBytes(4).toString('hex')}` } as unknown as PeerId, id: 'c' })
        for (const f of frames) outbound.send(new Uint8ArrayList(varint.encode(f.byteLength), f))
        await outbound.close().catch(() => {})
        await done
        expect(performance.now() - started).toBeLessThan(2_000)
        expect(offered.length).toBeLessThanOrEqual(MAX_SYNC_HEADS)
        for (const end of [outbound, inbound]) if (end.status === 'open') end.abort(new Error('case over'))
      }), fuzzParams())
    })
  })
})

describe('fuzz: the gossip validator', () => {
  let index: IndexDb
  let book: HeadBook
  let guard: HeadGuard
  beforeAll(async () => {
    index = new IndexDb(new MemoryLevel() as unknown as Db)
    await index.open()
    book = await HeadBook.open(new HeadStore(index), new TrustPolicy([{ key: publisher, models: '*' }]), { clock: () => T0 + 1_000, log: silent })
    guard = new HeadGuard(book, new PeerScores(), { log: silent })
  })
  afterAll(async () => { await index.close() })

  it('decides Accept, Ignore or Reject for any message; Accept only for one that opens, Reject only for one that does not', async () => {
    const messages = fc.oneof(fc.uint8Array({ maxLength: 5_000 }), anySeed)
    await fc.assert(fc.asyncProperty(messages, async bytes => {
      // A new sender per case, so the budget and bans of one case do not decide another.
      const peer = `fuzz-${randomBytes(6).toString('hex')}`
      await expectTypedOutcome(async () => await gossipVerdict(guard, peer, bytes), {
        maxMs: 1_000,
        check: verdict => {
          expect([TopicValidatorResult.Accept, TopicValidatorResult.Ignore, TopicValidatorResult.Reject]).toContain(verdict)
          let opens = true
          try { openSignedHead(bytes) } catch { opens = false }
          if (verdict === TopicValidatorResult.Accept) expect(opens).toBe(true)
          if (verdict === TopicValidatorResult.Reject) expect(opens).toBe(false)
        }
      })
    }), fuzzParams())
    // Only genuine heads ever won.
    for (const h of book.list()) expect(seeds.some(s => Buffer.from(s).equals(Buffer.from(h.bytes)))).toBe(true)
  })
})
