import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createPublicKey, generateKeyPairSync } from 'node:crypto'
import { mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { publisherKeyOf, privateKeyFromPem, type PublisherKey } from '../../../src/core/heads.js'
import { KEYS_DIR, KeyRing, TRUST_FILE, TrustFile } from '../../../src/heads/keyring.js'

const newKey = (): PublisherKey => publisherKeyOf(createPublicKey(generateKeyPairSync('ed25519').privateKey))

describe('TrustFile', () => {
  let home: string

  beforeEach(async () => { home = await mkdtemp(join(tmpdir(), 'shoal-trust-')) })
  afterEach(async () => { await rm(home, { recursive: true, force: true }) })

  const onDisk = async (): Promise<unknown> => JSON.parse(await readFile(join(home, TRUST_FILE), 'utf8'))

  // Each `shoal trust add` is one RPC request, and a fleet script adds its publishers' keys in
  // parallel. Two adds that both started from the same rules each wrote the list with only their
  // own rule added, so the last write lost the other: `trust add` had answered success, and the
  // node then refused that publisher's heads for good (the partition test's "one half never takes
  // the other half's heads").
  it('keeps every rule of adds made at the same time, in memory and on disk', async () => {
    const trust = await TrustFile.open(home)
    const keys = Array.from({ length: 8 }, newKey)
    const added = await Promise.all(keys.map(async key => await trust.add({ key, models: 'm' })))
    expect(added).toEqual(keys.map(() => true))
    const want = keys.map(key => ({ key, models: 'm' }))
    expect(trust.list()).toEqual(want)
    expect(await onDisk()).toEqual(want)
    expect((await TrustFile.open(home)).list()).toEqual(want)
  })

  it('adds the same rule once when it is added twice at the same time', async () => {
    const trust = await TrustFile.open(home)
    const key = newKey()
    const added = await Promise.all([trust.add({ key, models: 'm' }), trust.add({ key, models: 'm' })])
    expect(added.sort()).toEqual([false, true])
    expect(await onDisk()).toEqual([{ key, models: 'm' }])
  })

  it('applies adds and removals made at the same time in the order they were asked', async () => {
    const trust = await TrustFile.open(home)
    const [a, b, c] = [newKey(), newKey(), newKey()]
    await trust.add({ key: a, models: 'm' })
    const [addedB, removedA, addedC] = await Promise.all([trust.add({ key: b, models: 'm' }), trust.remove(a), trust.add({ key: c, models: '*' })])
    expect([addedB, removedA, addedC]).toEqual([true, 1, true])
    const want = [{ key: b, models: 'm' }, { key: c, models: '*' }]
    expect(trust.list()).toEqual(want)
    expect(await onDisk()).toEqual(want)
  })

  it('goes on after a write that failed, and keeps the rules it had', async () => {
    const trust = await TrustFile.open(home)
    const a = newKey()
    await trust.add({ key: a, models: 'm' })
    // trust.json replaced by a folder that is not empty: the rename over it fails.
    await rm(join(home, TRUST_FILE))
    await mkdir(join(home, TRUST_FILE, 'x'), { recursive: true })
    await expect(trust.add({ key: newKey(), models: 'm' })).rejects.toThrow(/trust\.json/)
    expect(trust.list()).toEqual([{ key: a, models: 'm' }])
    await rm(join(home, TRUST_FILE), { recursive: true })
    const b = newKey()
    expect(await trust.add({ key: b, models: 'm' })).toBe(true)
    expect(await onDisk()).toEqual([{ key: a, models: 'm' }, { key: b, models: 'm' }])
  })
})

describe('KeyRing', () => {
  let home: string

  beforeEach(async () => { home = await mkdtemp(join(tmpdir(), 'shoal-keys-')) })
  afterEach(async () => { await rm(home, { recursive: true, force: true }) })

  // Two `shoal keys create` of one name at the same time both passed the "exists already" check;
  // the second write replaced the first key's file after the first caller had been given its
  // public key, which the home then no longer held.
  it('creates a name once when it is asked twice at the same time; the other is told it exists', async () => {
    const ring = await KeyRing.open(home)
    const results = await Promise.allSettled([ring.create('release'), ring.create('release')])
    const made = results.filter(r => r.status === 'fulfilled')
    const refused = results.filter(r => r.status === 'rejected')
    expect(made).toHaveLength(1)
    expect(refused).toHaveLength(1)
    expect(((refused[0] as PromiseRejectedResult).reason as Error).message).toBe('a key named release exists already')
    const pem = await readFile(join(home, KEYS_DIR, 'release.pem'), 'utf8')
    expect(publisherKeyOf(createPublicKey(privateKeyFromPem(pem)))).toBe((made[0] as PromiseFulfilledResult<{ publicKey: string }>).value.publicKey)
    expect((await KeyRing.open(home)).list().find(k => k.name === 'release')?.publicKey).toBe((made[0] as PromiseFulfilledResult<{ publicKey: string }>).value.publicKey)
  })

  it('creates distinct names asked at the same time', async () => {
    const ring = await KeyRing.open(home)
    const made = await Promise.all(['k1', 'k2', 'k3'].map(async n => await ring.create(n)))
    expect((await readdir(join(home, KEYS_DIR))).sort()).toEqual(['default.pem', 'k1.pem', 'k2.pem', 'k3.pem'])
    const reopened = (await KeyRing.open(home)).list()
    for (const k of made) expect(reopened.find(r => r.name === k.name)?.publicKey).toBe(k.publicKey)
  })
})
