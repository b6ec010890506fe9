/**
 * `PullReporter`, the one source of `pull.*` events, over the real event bus and a pull manager
 * whose pulls end as each test says.
 */
import { describe, expect, it } from 'vitest'
import { PullCancelledError, PullGivenUpError } from '../../../src/core/errors.js'
import { EventBus } from '../../../src/daemon/events.js'
import { PullReporter } from '../../../src/daemon/pull-events.js'
import type { PullProgress } from '../../../src/daemon/pulls.js'

function setup (pull: (ref: string, o: { pin?: boolean, onProgress?: (p: PullProgress) => void }) => Promise<unknown>): { reporter: PullReporter, events: EventBus, seen: () => Array<{ type: string, data: unknown }>, tick: (ms: number) => void } {
  const events = new EventBus()
  const heard: Array<{ type: string, data: unknown }> = []
  events.subscribe(e => { heard.push({ type: e.type, data: e.data }) })
  let clock = 1_000
  const reporter = new PullReporter({ pulls: { pull: pull as never }, events, now: () => clock })
  return { reporter, events, seen: () => heard, tick: ms => { clock += ms } }
}

const progress = (bytes: number): PullProgress => ({ bytes, totalBytes: 100, peers: 2 }) as unknown as PullProgress

describe('PullReporter', () => {
  it('a followed label’s pull: started, progress at most every PULL_PROGRESS_EVENT_MS, completed with its duration; unpinned', async () => {
    const asked: Array<{ ref: string, pin?: boolean }> = []
    let clockTick: (ms: number) => void = () => {}
    const { reporter, seen, tick } = setup(async (ref, o) => {
      asked.push({ ref, ...(o.pin !== undefined ? { pin: o.pin } : {}) })
      o.onProgress?.(progress(10))
      o.onProgress?.(progress(20))
      clockTick(250)
    })
    clockTick = tick
    await reporter.pull('org/m', 'prod', 'bafyv1')
    expect(asked).toEqual([{ ref: 'org/m@bafyv1', pin: false }])
    expect(seen()).toEqual([
      { type: 'pull.started', data: { model: 'org/m', label: 'prod', version: 'bafyv1' } },
      { type: 'pull.progress', data: { model: 'org/m', version: 'bafyv1', bytes: 10, totalBytes: 100, peers: 2 } },
      { type: 'pull.completed', data: { model: 'org/m', label: 'prod', version: 'bafyv1', ms: 250 } }
    ])
  })

  it('a followed label’s pull that fails or is cancelled: pull.failed with its outcome, and the error goes on to the caller', async () => {
    const { reporter, seen } = setup(async ref => { throw ref.endsWith('v1') ? new Error('no peer has it') : new PullCancelledError('the pull of org/m@bafyv2 was cancelled') })
    await expect(reporter.pull('org/m', 'prod', 'bafyv1')).rejects.toThrow('no peer has it')
    await expect(reporter.pull('org/m', 'prod', 'bafyv2')).rejects.toThrow('was cancelled')
    expect(seen().filter(e => e.type === 'pull.failed').map(e => e.data)).toEqual([
      { model: 'org/m', label: 'prod', version: 'bafyv1', outcome: 'failed', ms: 0, error: 'no peer has it' },
      { model: 'org/m', label: 'prod', version: 'bafyv2', outcome: 'cancelled', ms: 0, error: 'the pull of org/m@bafyv2 was cancelled' }
    ])
  })

  it('a pull a client asked for: started at once, its end as the caller reports it; a given-up pull says how to retry', () => {
    const { reporter, seen, tick } = setup(async () => {})
    const one = reporter.requested('org/m', 'bafyv1')
    tick(40)
    one.completed({ name: 'org/m', version: 'bafyv1' })
    const two = reporter.requested('org/m', null)
    two.failed(new PullCancelledError('cancelled by the operator'))
    const err = new PullGivenUpError('gave up')
    reporter.gaveUp({ name: 'org/m', version: 'bafyv3', attempts: 10, error: err.message, retry: 'shoal pull org/m@bafyv3' })
    expect(seen()).toEqual([
      { type: 'pull.started', data: { model: 'org/m', version: 'bafyv1', via: 'request' } },
      { type: 'pull.completed', data: { model: 'org/m', version: 'bafyv1', via: 'request', ms: 40 } },
      { type: 'pull.started', data: { model: 'org/m', version: null, via: 'request' } },
      { type: 'pull.failed', data: { model: 'org/m', version: null, via: 'request', outcome: 'cancelled', ms: 0, error: 'cancelled by the operator' } },
      { type: 'pull.failed', data: { model: 'org/m', version: 'bafyv3', outcome: 'failed', gaveUp: true, attempts: 10, error: 'gave up', retry: 'shoal pull org/m@bafyv3' } }
    ])
  })
})
