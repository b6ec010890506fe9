import { describe, expect, it, vi } from 'vitest'
import { BAN_RULES, DEFAULT_BAN_MS, PeerScores, type JudgeOffence } from '../../../src/p2p/judge.js'

/** Offences needed before `penalize` first returns true (or Infinity). */
function strikesToBan (offence: JudgeOffence, limit = 50): number {
  const scores = new PeerScores()
  for (let i = 1; i <= limit; i++) if (scores.penalize('peer', offence, 'test')) return i
  return Infinity
}

describe('PeerScores', () => {
  it('bans at the third corrupt chunk, the fifth lie, the first stall, protocol violation or invalid manifest, never for timeouts', () => {
    expect(strikesToBan('manifest')).toBe(1)
    expect(strikesToBan('corrupt')).toBe(3)
    expect(strikesToBan('lie')).toBe(5)
    expect(strikesToBan('stall')).toBe(1)
    expect(strikesToBan('protocol')).toBe(1)
    expect(strikesToBan('timeout', 1_000)).toBe(Infinity)
    expect(BAN_RULES).toMatchObject({ corrupt: 3, lie: 5, stall: 1, protocol: 1, manifest: 1, timeout: Infinity })
  })

  it('bans a sender of invalid heads at the third, and a flooder at its third flood offence', () => {
    expect(strikesToBan('head')).toBe(3)
    expect(strikesToBan('flood')).toBe(3)
    const scores = new PeerScores()
    scores.penalize('a', 'head', 'sent a signature head: bad signature')
    expect(scores.list()[0]).toMatchObject({ offences: { head: 1 }, lastOffence: 'head: sent a signature head: bad signature' })
  })

  it('counts offences per peer and per kind', () => {
    const scores = new PeerScores()
    expect(scores.penalize('a', 'corrupt', 'x')).toBe(false)
    expect(scores.penalize('a', 'lie', 'x')).toBe(false)
    expect(scores.penalize('b', 'corrupt', 'x')).toBe(false)
    expect(scores.penalize('a', 'corrupt', 'x')).toBe(false)
    expect(scores.isBanned('a')).toBe(false)
    expect(scores.penalize('a', 'corrupt', 'bad bytes')).toBe(true)
    expect(scores.isBanned('a')).toBe(true)
    expect(scores.isBanned('b')).toBe(false)
    const a = scores.list().find(r => r.peer === 'a')
    expect(a?.offences).toEqual({ corrupt: 3, lie: 1 })
    expect(a?.lastOffence).toBe('corrupt: bad bytes')
  })

  it('a ban lasts banMs on the injected clock, then lifts', () => {
    let now = 1_000_000
    const scores = new PeerScores({ banMs: 5_000, now: () => now })
    expect(scores.penalize('p', 'stall', 'x')).toBe(true)
    expect(scores.list()[0]?.bannedUntil).toBe(1_005_000)
    now += 4_999
    expect(scores.isBanned('p')).toBe(true)
    now += 2
    expect(scores.isBanned('p')).toBe(false)
    // A soft offence by a formerly banned peer does not ban it again.
    expect(scores.penalize('p', 'timeout', 'x')).toBe(false)
  })

  it('defaults to DEFAULT_BAN_MS', () => {
    let now = 0
    const scores = new PeerScores({ now: () => now })
    scores.penalize('p', 'protocol', 'x')
    now = DEFAULT_BAN_MS - 1
    expect(scores.isBanned('p')).toBe(true)
    now = DEFAULT_BAN_MS + 1
    expect(scores.isBanned('p')).toBe(false)
  })

  it('calls onBan once per ban even when offences continue, and again for a new ban after expiry', () => {
    let now = 0
    const onBan = vi.fn()
    const scores = new PeerScores({ banMs: 1_000, onBan, now: () => now })
    for (let i = 0; i < 10; i++) expect(scores.penalize('p', 'lie', `lie ${i}`)).toBe(i >= 4)
    scores.penalize('p', 'stall', 'x')
    expect(onBan).toHaveBeenCalledTimes(1)
    expect(onBan).toHaveBeenCalledWith('p', 'lie: lie 4')
    now = 2_000
    expect(scores.isBanned('p')).toBe(false)
    expect(scores.penalize('p', 'protocol', 'oversized frame')).toBe(true)
    expect(onBan).toHaveBeenCalledTimes(2)
    expect(onBan).toHaveBeenLastCalledWith('p', 'protocol: oversized frame')
  })

  it('credits received bytes and lists copies of its records', () => {
    const scores = new PeerScores()
    scores.credit('a', 100)
    scores.credit('a', 50)
    const [record] = scores.list()
    expect(record).toMatchObject({ peer: 'a', bytesReceived: 150, offences: {} })
    record!.offences.corrupt = 99
    expect(scores.list()[0]?.offences).toEqual({})
    expect(scores.isBanned('nobody')).toBe(false)
  })
})
