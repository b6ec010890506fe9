/**
 * Fuzzing `trust.json` as the daemon reads it at start (`TrustFile.open`, `heads/keyring.ts`):
 * random JSON, mutated bytes of a valid file, and a valid file with one entry replaced by a random
 * value. Each gives a list of checked rules — every one a `TrustPolicy` compiles and that is
 * written back to the same list — or a typed error with a message naming the file; nothing else.
 */
import fc from 'fast-check'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TrustPolicy, type TrustRule } from '../../src/core/trust.js'
import { ShoalError } from '../../src/core/errors.js'
import { TRUST_FILE, TrustFile } from '../../src/heads/keyring.js'
import { tempDir } from '../helpers/tmp.js'
import { expectTypedOutcome, fuzzParams, mutated } from './fuzz.js'

const KEY = 'z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK'
const VALID = [{ key: KEY, models: 'org/*' }, { key: KEY, models: 'llama-*' }, { key: KEY, models: '*' }]
const SEED = new TextEncoder().encode(`${JSON.stringify(VALID, null, 2)}\n`)

let home: string
let cleanup: () => Promise<void>
beforeAll(async () => { ({ dir: home, cleanup } = await tempDir('shoal-fuzz-trust-')) })
afterAll(async () => { await cleanup() })

async function open (content: string | Uint8Array): Promise<TrustRule[]> {
  await writeFile(join(home, TRUST_FILE), content)
  try {
    return (await TrustFile.open(home)).list()
  } catch (err) {
    if (err instanceof ShoalError && !err.message.includes(join(home, TRUST_FILE))) throw new Error(`the message does not name the file: ${err.message}`)
    throw err
  }
}

/** What every accepted list must satisfy: strings only, and a policy that compiles them. */
function usable (rules: TrustRule[]): void {
  for (const r of rules) {
    expect(Object.keys(r).sort()).toEqual(['key', 'models'])
    expect(typeof r.key).toBe('string')
    expect(typeof r.models).toBe('string')
  }
  const policy = new TrustPolicy(rules)
  for (const r of rules) policy.allows(r.key, 'org/model')
}

describe('trust.json', () => {
  it('random JSON: rules that work, or a typed error naming the file', async () => {
    await fc.assert(fc.asyncProperty(fc.jsonValue({ maxDepth: 4 }), async value => {
      await expectTypedOutcome(async () => await open(JSON.stringify(value)), { check: usable })
    }), fuzzParams())
  })

  it('mutated bytes of a valid file: rules that work, or a typed error naming the file', async () => {
    await fc.assert(fc.asyncProperty(mutated(SEED), async bytes => {
      await expectTypedOutcome(async () => await open(bytes), { check: usable })
    }), fuzzParams())
  })

  it('one entry of a valid file replaced by a random value: rules that work, or a typed error naming the file', async () => {
    const value = fc.oneof(
      fc.jsonValue({ maxDepth: 3 }),
      fc.record({ key: fc.jsonValue({ maxDepth: 2 }), models: fc.jsonValue({ maxDepth: 2 }) }),
      fc.record({ key: fc.constant(KEY), models: fc.string({ maxLength: 300 }) }),
      fc.record({ key: fc.string({ maxLength: 80 }), models: fc.constant('*') })
    )
    await fc.assert(fc.asyncProperty(fc.nat({ max: VALID.length - 1 }), value, async (at, entry) => {
      const list: unknown[] = [...VALID]
      list[at] = entry
      await expectTypedOutcome(async () => await open(JSON.stringify(list)), { check: usable })
    }), fuzzParams())
  })
})
