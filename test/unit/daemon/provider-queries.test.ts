import { describe, expect, it } from 'vitest'
import { nextProviderQueryDelay, PROVIDER_QUERY_MAX_MS, PROVIDER_QUERY_SCHEDULE_MS } from '../../../src/daemon/pulls.js'

/** The waits a pull would take over `rounds` queries, each finding something new or not. */
function waits (found: boolean[]): number[] {
  const out: number[] = []
  let delay: number | undefined
  let foundNew = false
  for (const [round, f] of found.entries()) {
    delay = nextProviderQueryDelay(round, delay, foundNew)
    out.push(delay)
    foundNew = f
  }
  return out
}

describe('provider queries of a running pull', () => {
  it('follow the quick schedule at first, whatever the queries find', () => {
    expect(waits([false, false, false, false, false])).toEqual(PROVIDER_QUERY_SCHEDULE_MS.slice(0, 5))
  })

  it('then wait twice as long after each query that finds no new provider, up to the cap', () => {
    const steady = PROVIDER_QUERY_SCHEDULE_MS.at(-1)!
    const got = waits(Array.from({ length: 12 }, () => false)).slice(5)
    expect(got).toEqual([steady, 2 * steady, 4 * steady, 8 * steady, PROVIDER_QUERY_MAX_MS, PROVIDER_QUERY_MAX_MS, PROVIDER_QUERY_MAX_MS])
  })

  it('go back to the steady step once a query finds a provider the pull did not know', () => {
    const steady = PROVIDER_QUERY_SCHEDULE_MS.at(-1)!
    // Rounds 5–8 find nothing (10, 20, 40, 80 s), round 9 finds a new provider, then nothing again.
    const got = waits([false, false, false, false, false, false, false, false, false, true, false, false]).slice(5)
    expect(got).toEqual([steady, 2 * steady, 4 * steady, 8 * steady, PROVIDER_QUERY_MAX_MS, steady, 2 * steady])
  })
})
