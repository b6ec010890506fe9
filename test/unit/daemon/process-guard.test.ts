/**
 * The daemon process's policy for failures nothing caught (`daemon/process-guard.ts`), on an
 * event emitter standing in for `process`. `test/faults/rpc.test.ts` runs the same handlers in a
 * real daemon process.
 */
import { EventEmitter } from 'node:events'
import { describe, expect, it } from 'vitest'
import { CRASH_EXIT_CODE, guardProcess } from '../../../src/daemon/process-guard.js'
import { until } from '../../helpers/http-raw.js'

interface Line { level: 'error' | 'fatal', obj: { err?: Error }, msg: string }

function setup (stop: () => Promise<void> = async () => {}, stopDeadlineMs?: number): { target: EventEmitter, lines: Line[], exits: number[], rejections: () => number, stops: () => number, remove: () => void } {
  const target = new EventEmitter()
  const lines: Line[] = []
  const exits: number[] = []
  let rejections = 0
  let stops = 0
  const remove = guardProcess({
    log: {
      error: ((obj: Line['obj'], msg: string) => { lines.push({ level: 'error', obj, msg }) }) as never,
      fatal: ((obj: Line['obj'], msg: string) => { lines.push({ level: 'fatal', obj, msg }) }) as never
    },
    onRejection: () => { rejections++ },
    stop: async () => { stops++; await stop() },
    exit: code => { exits.push(code) },
    target: target as unknown as NodeJS.Process,
    ...(stopDeadlineMs !== undefined ? { stopDeadlineMs } : {})
  })
  return { target, lines, exits, rejections: () => rejections, stops: () => stops, remove }
}

describe('process guard', () => {
  it('logs an unhandled rejection at error with its stack, counts it, and keeps running', () => {
    const g = setup()
    const err = new Error('background refresh failed')
    g.target.emit('unhandledRejection', err, Promise.resolve())
    g.target.emit('unhandledRejection', 'a string', Promise.resolve())
    expect(g.rejections()).toBe(2)
    expect(g.lines.map(l => [l.level, l.msg])).toEqual([
      ['error', 'unhandled promise rejection: that piece of work failed; the daemon keeps running'],
      ['error', 'unhandled promise rejection: that piece of work failed; the daemon keeps running']
    ])
    expect(g.lines[0]?.obj.err?.stack).toContain('background refresh failed')
    expect(g.lines[1]?.obj.err?.message).toBe('a promise was rejected with a non-error: a string')
    expect(g.stops()).toBe(0)
    expect(g.exits).toEqual([])
  })

  it('on an uncaught exception logs fatal with the stack, stops cleanly, then exits non-zero', async () => {
    let finish!: () => void
    const g = setup(async () => { await new Promise<void>(resolve => { finish = resolve }) })
    g.target.emit('uncaughtException', new Error('kaboom'))
    expect(g.lines[0]).toMatchObject({ level: 'fatal', msg: 'uncaught exception: state may be inconsistent; stopping the daemon and exiting' })
    expect(g.lines[0]?.obj.err?.stack).toContain('kaboom')
    await until('the stop began', () => g.stops() === 1)
    expect(g.exits).toEqual([])
    finish()
    await until('the process exited', () => g.exits.length === 1)
    expect(g.exits).toEqual([CRASH_EXIT_CODE])
  })

  it('exits even when the stop hangs or fails, saying so; a second exception while stopping exits at once', async () => {
    const hung = setup(async () => { await new Promise(() => {}) }, 50)
    hung.target.emit('uncaughtException', new Error('first'))
    await until('the deadline passed', () => hung.exits.length === 1)
    expect(hung.lines.map(l => l.msg)).toContain('the stop after an uncaught exception is taking too long: exiting')

    const failing = setup(async () => { throw new Error('index would not close') })
    failing.target.emit('uncaughtException', new Error('first'))
    await until('the failed stop exited', () => failing.exits.length === 1)
    expect(failing.lines.map(l => l.msg)).toContain('the stop after an uncaught exception failed')

    const twice = setup(async () => { await new Promise(() => {}) })
    twice.target.emit('uncaughtException', new Error('first'))
    twice.target.emit('uncaughtException', new Error('second'))
    expect(twice.exits).toEqual([CRASH_EXIT_CODE])
    expect(twice.lines.at(-1)?.msg).toBe('uncaught exception while stopping after another: exiting now')
    for (const g of [hung, failing, twice]) g.remove()
  })

  it('removes its handlers', () => {
    const g = setup()
    g.remove()
    expect(g.target.listenerCount('unhandledRejection')).toBe(0)
    expect(g.target.listenerCount('uncaughtException')).toBe(0)
  })
})
