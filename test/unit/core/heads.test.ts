import { describe, expect, it } from 'vitest'
import { createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import { encodeBlock, type VersionId } from '../../../src/core/digest.js'
import {
  HEAD_SCHEMA, MAX_JITTER_MS, MAX_SIGNED_HEAD_BYTES, MAX_STAMP_COUNTER, MAX_STAMP_WALL_MS, activationTime, checkPublisherKey, compareHeads, compareStamps, encodeHead, headSetDigest,
  jitterOffset, nextStamp, openSignedHead, publicKeyFrom, publisherKeyOf, signHead, type Activation, type Head, type PublisherKey, type SignedHead, type Stamp
} from '../../../src/core/heads.js'
import { seeded } from '../../helpers/random.js'

interface Publisher { key: KeyObject, publisher: PublisherKey }

function newPublisher (): Publisher {
  const { privateKey } = generateKeyPairSync('ed25519')
  return { key: privateKey, publisher: publisherKeyOf(createPublicKey(privateKey)) }
}

const version = (n: number): VersionId => encodeBlock(`version ${n}`).cid

function head (p: Publisher, over: Partial<Head> = {}): Head {
  return {
    model: 'org/llama', label: 'prod', version: version(1), previous: null,
    stamp: { wall: 1_790_000_000_000, counter: 0 }, activation: { mode: 'hot' }, publisher: p.publisher, ...over
  }
}

/** A body map as `encodeHead` writes it, to tamper with field by field. */
function body (h: Head): Record<string, unknown> {
  return dagCbor.decode(encodeHead(h))
}

/** Signs arbitrary body bytes correctly, so only the body's content can be at fault. */
function envelope (bodyBytes: Uint8Array, key: KeyObject): Uint8Array {
  return dagCbor.encode({ head: bodyBytes, sig: new Uint8Array(sign(null, bodyBytes, key)) })
}

const refusal = (bytes: Uint8Array): unknown => {
  try {
    openSignedHead(bytes)
  } catch (err) {
    return err
  }
  throw new Error('expected openSignedHead to refuse')
}

describe('signed heads', () => {
  const alice = newPublisher()
  const bob = newPublisher()

  it('round-trips: what is signed opens to the same head, body, id', () => {
    for (const activation of [{ mode: 'hot' }, { mode: 'hot', jitterMs: 60_000 }, { mode: 'cold' }, { mode: 'cold', at: 1_790_000_100_000, jitterMs: 5 }] as Activation[]) {
      const h = head(alice, { activation, previous: version(0) })
      const signed = signHead(h, alice.key)
      const opened = openSignedHead(signed.bytes)
      expect(opened.head).toEqual(h)
      expect(opened.id).toBe(signed.id)
      expect(Buffer.from(opened.body).equals(Buffer.from(signed.body))).toBe(true)
      expect(signed.id).toMatch(/^[0-9a-f]{64}$/)
    }
    const removal = openSignedHead(signHead(head(alice, { version: null, previous: version(1) }), alice.key).bytes)
    expect(removal.head.version).toBeNull()
  })

  it('signs deterministically: the same head has one encoding and one id', () => {
    const a = signHead(head(alice), alice.key)
    const b = signHead({ ...head(alice), activation: { mode: 'hot', jitterMs: 0 } }, alice.key)
    expect(b.id).toBe(a.id)
    expect(signHead(head(alice, { stamp: { wall: 1_790_000_000_000, counter: 1 } }), alice.key).id).not.toBe(a.id)
  })

  it('refuses a flipped signature byte, a truncated signature and a signature by another key (BadSignatureError)', () => {
    const signed = signHead(head(alice), alice.key)
    const flipped = new Uint8Array(signed.signature)
    flipped[10] = flipped[10]! ^ 0x01
    expect(refusal(dagCbor.encode({ head: signed.body, sig: flipped }))).toMatchObject({ name: 'BadSignatureError', code: 'BAD_SIGNATURE' })
    expect(refusal(dagCbor.encode({ head: signed.body, sig: signed.signature.subarray(0, 63) }))).toMatchObject({ name: 'BadSignatureError' })
    // The body names alice; bob signs it.
    expect(refusal(envelope(signed.body, bob.key))).toMatchObject({ name: 'BadSignatureError' })
    // A flipped byte in the body itself (a stamp digit) no longer matches alice's signature.
    const forged = body(head(alice))
    forged.stamp = [1_790_000_000_001, 0]
    expect(refusal(dagCbor.encode({ head: dagCbor.encode(forged), sig: signed.signature }))).toMatchObject({ name: 'BadSignatureError' })
  })

  it('refuses to sign a head that names another publisher than the key', () => {
    expect(() => signHead(head(alice), bob.key)).toThrow(expect.objectContaining({ name: 'MalformedDataError' }))
  })

  it('refuses a validly signed body that is not canonically encoded (MalformedDataError)', () => {
    // `jitter: 0` decodes and fits the schema, but the canonical encoding omits it.
    const withZero = { ...body(head(alice)), activation: { mode: 'hot', jitter: 0 } }
    expect(refusal(envelope(dagCbor.encode(withZero), alice.key))).toMatchObject({ name: 'MalformedDataError', code: 'MALFORMED_DATA' })
    // Keys out of canonical order, by hand: CBOR map with `v` first (dag-cbor sorts by length then bytes).
    const canonical = encodeHead(head(alice))
    const reordered = reorderFirstKeyLast(canonical)
    expect(Buffer.from(reordered).equals(Buffer.from(canonical))).toBe(false)
    expect(refusal(envelope(reordered, alice.key))).toMatchObject({ name: 'MalformedDataError' })
  })

  it.each<[string, (b: Record<string, unknown>) => void]>([
    ['another schema version', b => { b.v = HEAD_SCHEMA + 1 }],
    ['an invalid model name', b => { b.model = '../etc' }],
    ['an invalid label', b => { b.label = 'Prod' }],
    ['a version that is not a CID', b => { b.version = 'not-a-cid' }],
    ['a previous that is not a CID', b => { b.previous = 'bafy' }],
    ['a negative stamp', b => { b.stamp = [-1, 0] }],
    ['a fractional counter', b => { b.stamp = [1, 0.5] }],
    ['an unknown field', b => { b.extra = 1 }],
    ['a missing field', b => { delete b.previous }],
    ['an unknown activation mode', b => { b.activation = { mode: 'warm' } }],
    ['a jitter over MAX_JITTER_MS', b => { b.activation = { mode: 'hot', jitter: MAX_JITTER_MS + 1 } }],
    ['an unknown activation field', b => { b.activation = { mode: 'cold', when: 1 } }],
    ['a publisher that is not a key', b => { b.publisher = 'z6MkNotAKey' }]
  ])('refuses a signed body with %s (MalformedDataError)', (_what, tamper) => {
    const b = body(head(alice))
    tamper(b)
    expect(refusal(envelope(dagCbor.encode(b), alice.key))).toMatchObject({ name: 'MalformedDataError' })
  })

  it('refuses garbage, a bad envelope and oversized input (MalformedDataError)', () => {
    const signed = signHead(head(alice), alice.key)
    const cases: Uint8Array[] = [
      new Uint8Array(0),
      Uint8Array.from([0xff, 0x00, 0x13, 0x37]),
      signed.bytes.subarray(0, signed.bytes.length - 3),
      dagCbor.encode('a string'),
      dagCbor.encode({ head: signed.body }),
      dagCbor.encode({ head: signed.body, sig: signed.signature, extra: 1 }),
      dagCbor.encode({ head: 'not bytes', sig: signed.signature }),
      dagCbor.encode({ head: Uint8Array.from([0xff, 0xff]), sig: signed.signature }),
      dagCbor.encode({ head: signed.body, sig: signed.signature, pad: new Uint8Array(MAX_SIGNED_HEAD_BYTES) })
    ]
    for (const bytes of cases) expect(refusal(bytes)).toMatchObject({ name: 'MalformedDataError' })
    // Over the cap is refused before decoding, even when what follows would decode.
    const big = new Uint8Array(MAX_SIGNED_HEAD_BYTES + 1)
    big.set(signed.bytes)
    expect(refusal(big)).toMatchObject({ name: 'MalformedDataError' })
  })

  it('encodeHead refuses names, labels and ranges outside the rules', () => {
    expect(() => encodeHead(head(alice, { model: 'a--b' }))).toThrow(expect.objectContaining({ name: 'InvalidInputError' }))
    expect(() => encodeHead(head(alice, { label: '1prod' }))).toThrow(expect.objectContaining({ name: 'InvalidInputError' }))
    expect(() => encodeHead(head(alice, { version: 'nope' as VersionId }))).toThrow(expect.objectContaining({ name: 'MalformedDataError' }))
    expect(() => encodeHead(head(alice, { activation: { mode: 'hot', jitterMs: MAX_JITTER_MS + 1 } }))).toThrow(expect.objectContaining({ name: 'MalformedDataError' }))
    expect(() => encodeHead(head(alice, { stamp: { wall: -5, counter: 0 } }))).toThrow(expect.objectContaining({ name: 'MalformedDataError' }))
  })
})

describe('stamp bounds', () => {
  const alice = newPublisher()
  const withStamp = (wall: number, counter: number): Uint8Array => envelope(dagCbor.encode({ ...body(head(alice)), stamp: [wall, counter] }), alice.key)

  it('a counter over MAX_STAMP_COUNTER (2^32 - 1) is malformed, and the message names the limit', () => {
    for (const counter of [Number.MAX_SAFE_INTEGER, MAX_STAMP_COUNTER + 1]) {
      const err = refusal(withStamp(1_790_000_000_000, counter)) as Error
      expect(err).toMatchObject({ name: 'MalformedDataError' })
      expect(err.message).toContain(`counter ${counter} is over the limit of ${MAX_STAMP_COUNTER}`)
    }
    expect(openSignedHead(withStamp(1_790_000_000_000, MAX_STAMP_COUNTER)).head.stamp.counter).toBe(MAX_STAMP_COUNTER)
  })

  it('a wall clock past MAX_STAMP_WALL_MS (year 9999) is malformed, for the stamp and a cold `at`', () => {
    const err = refusal(withStamp(Number.MAX_SAFE_INTEGER, 0)) as Error
    expect(err).toMatchObject({ name: 'MalformedDataError' })
    expect(err.message).toContain(`wall ${Number.MAX_SAFE_INTEGER} is past 9999-12-31`)
    const at = envelope(dagCbor.encode({ ...body(head(alice)), activation: { mode: 'cold', at: MAX_STAMP_WALL_MS + 1 } }), alice.key)
    expect(refusal(at)).toMatchObject({ name: 'MalformedDataError', message: expect.stringContaining('past 9999-12-31') })
    expect(() => encodeHead(head(alice, { stamp: { wall: MAX_STAMP_WALL_MS + 1, counter: 0 } }))).toThrow(expect.objectContaining({ name: 'MalformedDataError' }))
    expect(openSignedHead(withStamp(MAX_STAMP_WALL_MS, 0)).head.stamp.wall).toBe(MAX_STAMP_WALL_MS)
  })

  it('nextStamp moves to the next millisecond, counter 0, when the counter is at its cap', () => {
    expect(nextStamp(1_000, { wall: 5_000, counter: MAX_STAMP_COUNTER })).toEqual({ wall: 5_001, counter: 0 })
    expect(nextStamp(5_000, { wall: 5_000, counter: MAX_STAMP_COUNTER - 1 })).toEqual({ wall: 5_000, counter: MAX_STAMP_COUNTER })
  })

  it('nextStamp refuses with a ConflictError, saying why, when no stamp is left above the current one', () => {
    expect(() => nextStamp(1_000, { wall: MAX_STAMP_WALL_MS, counter: MAX_STAMP_COUNTER })).toThrow(expect.objectContaining({
      name: 'ConflictError', message: expect.stringContaining('no later stamp')
    }))
  })
})

describe('publisher keys', () => {
  it('round-trips as text, with or without the did:key: prefix', () => {
    const p = newPublisher()
    expect(p.publisher).toMatch(/^z6Mk/)
    expect(publisherKeyOf(publicKeyFrom(p.publisher))).toBe(p.publisher)
    expect(checkPublisherKey(`did:key:${p.publisher}`)).toBe(p.publisher)
    expect(checkPublisherKey(p.publisher)).toBe(p.publisher)
    expect(publicKeyFrom(`did:key:${p.publisher}`).export({ format: 'der', type: 'spki' })).toEqual(createPublicKey(p.key).export({ format: 'der', type: 'spki' }))
  })

  it('refuses text that is not an ed25519 key', () => {
    const p = newPublisher()
    const { publicKey: ec } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    for (const text of ['', 'z', 'hello world', p.publisher.slice(0, -2), `did:web:${p.publisher}`, 'zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme']) {
      expect(() => checkPublisherKey(text)).toThrow(expect.objectContaining({ name: 'MalformedDataError' }))
    }
    expect(() => publisherKeyOf(ec)).toThrow(expect.objectContaining({ name: 'MalformedDataError' }))
  })
})

describe('ordering', () => {
  const publishers = [newPublisher(), newPublisher(), newPublisher()]

  /** A random head for one label, from small ranges so ties of every kind are common. */
  function randomHead (random: () => number): Head {
    const pick = <T>(xs: T[]): T => xs[Math.floor(random() * xs.length)]!
    return {
      model: 'org/llama', label: 'prod',
      version: pick([version(1), version(2), version(3), null]),
      previous: pick([version(1), null]),
      stamp: { wall: 1_000 + Math.floor(random() * 3), counter: Math.floor(random() * 2) },
      activation: pick<Activation>([{ mode: 'hot' }, { mode: 'cold' }, { mode: 'cold', at: 5 }, { mode: 'hot', jitterMs: 10 }]),
      publisher: pick(publishers).publisher
    }
  }

  /** Every field of a head that its encoding carries (jitter 0 and none encode alike). */
  const identity = (h: Head): string => JSON.stringify([
    h.model, h.label, h.version, h.previous, h.stamp.wall, h.stamp.counter, h.publisher,
    h.activation.mode, h.activation.mode === 'cold' ? h.activation.at ?? null : null, h.activation.jitterMs ?? 0
  ])

  it('is a total order: antisymmetric, transitive, and 0 only for the same head', () => {
    const random = seeded(7)
    const heads = Array.from({ length: 45 }, () => randomHead(random))
    const encodings = heads.map(identity)
    const cmp = heads.map(a => heads.map(b => Math.sign(compareHeads(a, b))))
    const broken: string[] = []
    for (let i = 0; i < heads.length; i++) {
      for (let j = 0; j < heads.length; j++) {
        if (cmp[i]![j]! + cmp[j]![i]! !== 0) broken.push(`antisymmetry ${i} ${j}`)
        if ((cmp[i]![j] === 0) !== (encodings[i] === encodings[j])) broken.push(`equality ${i} ${j}`)
        for (let k = 0; k < heads.length; k++) {
          if (cmp[i]![j] === 1 && cmp[j]![k] === 1 && cmp[i]![k] !== 1) broken.push(`transitivity ${i} ${j} ${k}`)
        }
      }
    }
    expect(broken).toEqual([])
    // The sample has ties of every kind, so the test exercises every tie-break.
    let deepTies = 0
    for (let i = 0; i < heads.length; i++) {
      for (let j = i + 1; j < heads.length; j++) {
        const [a, b] = [heads[i]!, heads[j]!]
        if (compareStamps(a.stamp, b.stamp) === 0 && a.publisher === b.publisher && a.version === b.version && encodings[i] !== encodings[j]) deepTies++
      }
    }
    expect(deepTies).toBeGreaterThan(0)
  })

  it('converges: keeping the max gives the same winner whatever the arrival order', () => {
    const random = seeded(42)
    const keepMax = (order: Head[]): Head => order.reduce((best, h) => compareHeads(h, best) > 0 ? h : best)
    const diverged: number[] = []
    for (let round = 0; round < 200; round++) {
      const set = Array.from({ length: 2 + Math.floor(random() * 6) }, () => randomHead(random))
      const encoding = new Map(set.map(h => [h, identity(h)]))
      const winner = encoding.get(keepMax(set))
      for (let k = 0; k < 10; k++) {
        const shuffled = [...set].sort(() => random() - 0.5)
        if (encoding.get(keepMax(shuffled)) !== winner) diverged.push(round)
      }
      if (encoding.get(keepMax([...set].reverse())) !== winner) diverged.push(round)
    }
    expect(diverged).toEqual([])
  })

  it('breaks ties by stamp, then publisher, then version, with a removal lowest', () => {
    const [a, b] = [...publishers].sort((x, y) => x.publisher < y.publisher ? -1 : 1) as [Publisher, Publisher]
    const s = (wall: number, counter = 0): Stamp => ({ wall, counter })
    expect(compareHeads(head(a, { stamp: s(2) }), head(b, { stamp: s(1, 9) }))).toBeGreaterThan(0)
    expect(compareHeads(head(a, { stamp: s(1, 1) }), head(b, { stamp: s(1, 0) }))).toBeGreaterThan(0)
    // Same stamp: the greater publisher key wins, whatever the versions.
    expect(compareHeads(head(b, { stamp: s(1), version: null }), head(a, { stamp: s(1), version: version(9) }))).toBeGreaterThan(0)
    // Same stamp and publisher: the greater version id wins; a removal loses to any version.
    const [v1, v2] = [version(1), version(2)].sort()
    expect(compareHeads(head(a, { stamp: s(1), version: v2! }), head(a, { stamp: s(1), version: v1! }))).toBeGreaterThan(0)
    expect(compareHeads(head(a, { stamp: s(1), version: null }), head(a, { stamp: s(1), version: v1! }))).toBeLessThan(0)
    expect(compareHeads(head(a), head(a))).toBe(0)
  })

  it('compares stamps by wall, then counter', () => {
    expect(compareStamps({ wall: 2, counter: 0 }, { wall: 1, counter: 5 })).toBe(1)
    expect(compareStamps({ wall: 1, counter: 0 }, { wall: 1, counter: 5 })).toBe(-1)
    expect(compareStamps({ wall: 1, counter: 5 }, { wall: 1, counter: 5 })).toBe(0)
  })
})

describe('nextStamp', () => {
  it('is above every given stamp and at wall clock when the clock is ahead', () => {
    expect(nextStamp(5_000)).toEqual({ wall: 5_000, counter: 0 })
    expect(nextStamp(5_000, { wall: 4_000, counter: 7 }, undefined)).toEqual({ wall: 5_000, counter: 0 })
    expect(nextStamp(5_000, { wall: 5_000, counter: 2 })).toEqual({ wall: 5_000, counter: 3 })
    // The clock went backwards: stay on the newest stamp seen and count up.
    expect(nextStamp(1_000, { wall: 5_000, counter: 2 }, { wall: 4_000, counter: 9 })).toEqual({ wall: 5_000, counter: 3 })
  })

  it('always stamps strictly above, for random clocks and inputs', () => {
    const random = seeded(3)
    for (let i = 0; i < 500; i++) {
      const seen = Array.from({ length: Math.floor(random() * 4) }, () => ({ wall: Math.floor(random() * 100), counter: Math.floor(random() * 3) }))
      const now = 1 + Math.floor(random() * 120)
      const next = nextStamp(now, ...seen)
      for (const s of seen) expect(compareStamps(next, s)).toBe(1)
      expect(next.wall).toBeGreaterThanOrEqual(now)
      if (seen.every(s => s.wall < now)) expect(next).toEqual({ wall: now, counter: 0 })
    }
  })
})

describe('activation timing', () => {
  const p = newPublisher()
  const signed = (activation: Activation): SignedHead => signHead(head(p, { activation }), p.key)

  it('jitterOffset is in [0, window), stable per node and head, and spread across nodes', () => {
    const h = signed({ mode: 'hot', jitterMs: 1_000 })
    const offsets = Array.from({ length: 200 }, (_, i) => jitterOffset(h, `node-${i}`))
    for (const o of offsets) {
      expect(Number.isInteger(o)).toBe(true)
      expect(o).toBeGreaterThanOrEqual(0)
      expect(o).toBeLessThan(1_000)
    }
    expect(jitterOffset(h, 'node-3')).toBe(offsets[3])
    expect(new Set(offsets).size).toBeGreaterThan(100)
    expect(offsets.filter(o => o < 500).length).toBeGreaterThan(60)
    expect(offsets.filter(o => o >= 500).length).toBeGreaterThan(60)
    expect(jitterOffset(signed({ mode: 'hot' }), 'node-1')).toBe(0)
    expect(jitterOffset(signed({ mode: 'cold', jitterMs: 1 }), 'node-1')).toBe(0)
  })

  it('activationTime: hot at completion plus jitter, cold at `at` plus jitter, manual never', () => {
    expect(activationTime(signed({ mode: 'hot' }), 'n', 777)).toBe(777)
    const hot = signed({ mode: 'hot', jitterMs: 50 })
    expect(activationTime(hot, 'n', 777)).toBe(777 + jitterOffset(hot, 'n'))
    const cold = signed({ mode: 'cold', at: 10_000, jitterMs: 50 })
    expect(activationTime(cold, 'n', 777)).toBe(10_000 + jitterOffset(cold, 'n'))
    expect(activationTime(cold, 'n', 20_000)).toBe(10_000 + jitterOffset(cold, 'n'))
    expect(activationTime(signed({ mode: 'cold' }), 'n', 777)).toBeUndefined()
    expect(activationTime(signed({ mode: 'cold', jitterMs: 50 }), 'n', 777)).toBeUndefined()
  })
})

describe('headSetDigest', () => {
  it('depends on the set of ids, not their order', () => {
    const ids = ['aa', 'bb', 'cc']
    expect(Buffer.from(headSetDigest(ids)).equals(Buffer.from(headSetDigest(['cc', 'aa', 'bb'])))).toBe(true)
    expect(Buffer.from(headSetDigest(ids)).equals(Buffer.from(headSetDigest(['aa', 'bb'])))).toBe(false)
    expect(headSetDigest([])).toHaveLength(32)
  })
})

/**
 * Moves the first key/value pair of a definite-length CBOR map to the end. Works for the head
 * body because its first key is `v` and its value a small integer (two bytes in all).
 */
function reorderFirstKeyLast (bytes: Uint8Array): Uint8Array {
  expect(bytes[0]! >> 5).toBe(5)
  expect(Array.from(bytes.subarray(1, 4))).toEqual([0x61, 0x76, HEAD_SCHEMA])
  return Uint8Array.from([bytes[0]!, ...bytes.subarray(4), ...bytes.subarray(1, 4)])
}
