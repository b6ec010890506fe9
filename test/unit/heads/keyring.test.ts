import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { execFileSync } from 'node:child_process'
import { createPublicKey, generateKeyPairSync } from 'node:crypto'
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { publisherKeyOf, privateKeyFromPem, type PublisherKey } from '../../../src/core/heads.js'
import { InvalidInputError } from '../../../src/core/errors.js'
import { KEYS_DIR, KeyRing, MAX_KEY_FILE_BYTES, MAX_TRUST_FILE_BYTES, MAX_TRUST_RULES, TRUST_FILE, TrustFile } from '../../../src/heads/keyring.js'
import { rejection } from '../../helpers/assert.js'

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

describe('reading trust.json and keys/', () => {
  let home: string

  beforeEach(async () => { home = await mkdtemp(join(tmpdir(), 'shoal-trust-read-')) })
  afterEach(async () => { await rm(home, { recursive: true, force: true }) })

  const path = (): string => join(home, TRUST_FILE)
  const openWith = async (text: string): Promise<TrustFile> => {
    await writeFile(path(), text)
    return await TrustFile.open(home)
  }

  it('starts with no rules when there is no trust.json', async () => {
    expect((await TrustFile.open(home)).list()).toEqual([])
  })

  it('refuses entries that are not {key, models} objects of strings, naming the entry', async () => {
    const key = newKey()
    const cases: Array<[string, RegExp]> = [
      ['[null]', /trust\.json entry 0 is not a \{"key", "models"\} object/],
      [JSON.stringify([{ key, models: 'm' }, 'x']), /trust\.json entry 1 is not a \{"key", "models"\} object/],
      [JSON.stringify([{ key: 5, models: 'm' }]), /trust\.json entry 0: "key" must be a publisher key as text \(z6Mk…\)/],
      [JSON.stringify([{ key, models: 7 }]), /trust\.json entry 0: "models" must be a model-name pattern as text/],
      [JSON.stringify([{ key, models: 'm', extra: 1 }]), /trust\.json entry 0 has a field "extra"; a rule has only "key" and "models"/],
      [JSON.stringify([{ key: 'z6Mkbad', models: 'm' }]), /trust\.json entry 0: /],
      ['{"key": 1}', /must be a list of \{"key", "models"\} rules/],
      ['[', /is not valid JSON/]
    ]
    for (const [text, message] of cases) {
      const err = await rejection(openWith(text))
      expect(err, text).toBeInstanceOf(InvalidInputError)
      expect((err as Error).message, text).toMatch(message)
      expect((err as Error).message, text).toContain(path())
    }
  })

  it('refuses a trust.json over its size limit before reading it, saying the limit', async () => {
    await writeFile(path(), Buffer.alloc(MAX_TRUST_FILE_BYTES + 1, 0x20))
    const err = await rejection(TrustFile.open(home))
    expect(err).toBeInstanceOf(InvalidInputError)
    expect((err as Error).message).toBe(`${path()} is ${MAX_TRUST_FILE_BYTES + 1} bytes, over the ${MAX_TRUST_FILE_BYTES}-byte limit for trust.json; it holds at most ${MAX_TRUST_RULES} rules`)
  })

  it('refuses a trust.json of more rules than the limit, and an add past it, saying what to do', async () => {
    const key = newKey()
    const rules = Array.from({ length: MAX_TRUST_RULES }, (_, i) => ({ key, models: `m${i}` }))
    const err = await rejection(openWith(JSON.stringify([...rules, { key, models: 'one-more' }])))
    expect((err as Error).message).toBe(`${path()} holds ${MAX_TRUST_RULES + 1} rules, over the limit of ${MAX_TRUST_RULES}; use patterns (org/*) for fewer rules`)
    const full = await openWith(JSON.stringify(rules))
    const refused = await rejection(full.add({ key, models: 'one-more' }))
    expect(refused).toBeInstanceOf(InvalidInputError)
    expect((refused as Error).message).toBe(`trust.json holds ${MAX_TRUST_RULES} rules, the most allowed; remove some (shoal trust rm) or use patterns (org/*) for fewer rules`)
    expect(full.list()).toHaveLength(MAX_TRUST_RULES)
    // An existing rule is still "added" (nothing to do).
    expect(await full.add({ key, models: 'm0' })).toBe(false)
  })

  it('refuses a trust.json that cannot be read instead of starting without its rules (a later add would overwrite them)', async () => {
    await mkdir(path())
    const err = await rejection(TrustFile.open(home))
    expect(err).toBeInstanceOf(InvalidInputError)
    expect((err as Error).message).toBe(`${path()} is not a regular file; move it away or put the trust rules back in it`)
  })

  it('refuses a FIFO in place of trust.json or a key at once, instead of waiting on it', async () => {
    execFileSync('mkfifo', [path()])
    const err = await rejection(TrustFile.open(home))
    expect((err as Error).message).toBe(`${path()} is not a regular file; move it away or put the trust rules back in it`)
    await rm(path())
    await mkdir(join(home, KEYS_DIR), { recursive: true })
    execFileSync('mkfifo', [join(home, KEYS_DIR, 'stuck.pem')])
    const keyErr = await rejection(KeyRing.open(home))
    expect(keyErr).toBeInstanceOf(InvalidInputError)
    expect((keyErr as Error).message).toBe(`publisher key ${join(home, KEYS_DIR, 'stuck.pem')} is not a regular file; move it away or fix it`)
  })

  it('refuses a key file over its size limit before reading it', async () => {
    await mkdir(join(home, KEYS_DIR), { recursive: true })
    await writeFile(join(home, KEYS_DIR, 'big.pem'), Buffer.alloc(MAX_KEY_FILE_BYTES + 1, 0x41))
    const err = await rejection(KeyRing.open(home))
    expect((err as Error).message).toBe(`publisher key ${join(home, KEYS_DIR, 'big.pem')} is ${MAX_KEY_FILE_BYTES + 1} bytes, over the ${MAX_KEY_FILE_BYTES}-byte limit for a key file; move it away or fix it`)
  })
})
