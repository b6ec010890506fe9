import { describe, expect, it } from 'vitest'
import { createPublicKey, generateKeyPairSync } from 'node:crypto'
import { publisherKeyOf, type PublisherKey } from '../../../src/core/heads.js'
import { TrustPolicy, checkTrustRule, patternMatches } from '../../../src/core/trust.js'

const newKey = (): PublisherKey => publisherKeyOf(createPublicKey(generateKeyPairSync('ed25519').privateKey))

describe('patternMatches', () => {
  it.each<[string, string, boolean]>([
    ['*', 'llama', true],
    ['*', 'org/llama-8b', true],
    ['org/*', 'org/llama', true],
    ['org/*', 'org/', true],
    ['org/*', 'other/llama', false],
    ['org/*', 'org', false],
    ['org/*', 'xorg/llama', false],
    ['llama-*', 'llama-8b', true],
    ['llama-*', 'llama', false],
    ['llama-*', 'org/llama-8b', false],
    ['*-8b', 'llama-8b', true],
    ['*-8b', 'llama-8b-q4', false],
    ['org/*-8b*', 'org/llama-8b-q4', true],
    ['llama', 'llama', true],
    ['llama', 'llama2', false],
    ['llama', 'xllama', false],
    // '.' is a literal dot, not "any character".
    ['llama.cpp', 'llama.cpp', true],
    ['llama.cpp', 'llamaXcpp', false],
    ['v1.*', 'v1.2', true],
    ['v1.*', 'v102', false],
    ['a_b-c.d', 'a_b-c.d', true]
  ])('%s matches %s: %s', (pattern, model, expected) => {
    expect(patternMatches(pattern, model)).toBe(expected)
  })

  it('treats regular-expression metacharacters as literals', () => {
    for (const pattern of ['a+b', 'a?b', '(a)', '[ab]', 'a|b', '^a$', 'a{2}', 'a\\b']) {
      expect(patternMatches(pattern, pattern)).toBe(true)
    }
    expect(patternMatches('a+b', 'aab')).toBe(false)
    expect(patternMatches('a|b', 'a')).toBe(false)
    expect(patternMatches('[ab]', 'a')).toBe(false)
  })
})

describe('checkTrustRule', () => {
  it('normalises the key (did:key: prefix dropped) and keeps the pattern', () => {
    const key = newKey()
    expect(checkTrustRule({ key: `did:key:${key}`, models: 'org/*' })).toEqual({ key, models: 'org/*' })
    expect(checkTrustRule({ key, models: '*' })).toEqual({ key, models: '*' })
  })

  it.each([
    ['a key that is not one', 'z6MkNope', '*'],
    ['an empty key', '', '*'],
    ['an empty pattern', 'KEY', ''],
    ['a pattern with a space', 'KEY', 'org /*'],
    ['a pattern with regex syntax', 'KEY', 'org/(a|b)'],
    ['a pattern with a NUL', 'KEY', 'org\0'],
    ['a pattern over 256 characters', 'KEY', 'a'.repeat(257)]
  ])('refuses %s with InvalidInputError', (_what, key, models) => {
    const k = key === 'KEY' ? newKey() : key
    expect(() => checkTrustRule({ key: k, models })).toThrow(expect.objectContaining({ name: 'InvalidInputError', code: 'INVALID_INPUT' }))
  })
})

describe('TrustPolicy', () => {
  const alice = newKey()
  const bob = newKey()

  it('allows a publisher for the models its rules match, and nothing else', () => {
    const policy = new TrustPolicy([{ key: alice, models: 'org/*' }, { key: bob, models: 'llama-*' }])
    expect(policy.allows(alice, 'org/llama')).toBe(true)
    expect(policy.allows(alice, 'llama-8b')).toBe(false)
    expect(policy.allows(bob, 'llama-8b')).toBe(true)
    expect(policy.allows(bob, 'org/llama')).toBe(false)
    expect(policy.allows(newKey(), 'org/llama')).toBe(false)
  })

  it('trusts no one without rules, and follows replace()', () => {
    const policy = new TrustPolicy()
    expect(policy.allows(alice, 'x')).toBe(false)
    policy.replace([{ key: alice, models: '*' }])
    expect(policy.allows(alice, 'x')).toBe(true)
    expect(policy.list()).toEqual([{ key: alice, models: '*' }])
    // list() is a copy.
    policy.list().push({ key: bob, models: '*' })
    expect(policy.allows(bob, 'x')).toBe(false)
    policy.replace([])
    expect(policy.allows(alice, 'x')).toBe(false)
  })

  it('changes its epoch whenever the rules are replaced', () => {
    const policy = new TrustPolicy([{ key: alice, models: '*' }])
    const first = policy.epoch
    policy.replace([{ key: alice, models: '*' }, { key: alice, models: 'org/*' }])
    expect(policy.epoch).toBeGreaterThan(first)
    expect(policy.allows(alice, 'x')).toBe(true)
  })
})
