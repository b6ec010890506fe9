/** Daemon logs a person reads on a terminal, JSON otherwise. */
import { describe, expect, it } from 'vitest'
import { logFormat, prettyLine } from '../../../src/daemon/logger.js'

describe('daemon log format', () => {
  it('is pretty when stderr is a terminal and JSON otherwise, unless SHOAL_LOG_FORMAT says', () => {
    expect(logFormat({}, true)).toBe('pretty')
    expect(logFormat({}, false)).toBe('json')
    expect(logFormat({ SHOAL_LOG_FORMAT: 'json' }, true)).toBe('json')
    expect(logFormat({ SHOAL_LOG_FORMAT: 'pretty' }, false)).toBe('pretty')
  })

  it('puts time, level, component and message first, then fields; a stack on the lines after', () => {
    const time = Date.parse('2026-12-07T09:14:03.120Z')
    expect(prettyLine({ level: 30, time, pid: 7, component: 'shoal:rpc', msg: 'shoal daemon ready', socket: '/h/shoal.sock', peers: 2 }))
      .toBe('09:14:03.120 INFO  shoal:rpc shoal daemon ready socket=/h/shoal.sock peers=2')
    expect(prettyLine({ level: 40, time, msg: 'pull failed', version: 'bafy1', err: { message: 'no peer has it', stack: 'Error: no peer has it\n    at pull (pulls.ts:1)' } }))
      .toBe('09:14:03.120 WARN  pull failed version=bafy1 err="no peer has it"\n    Error: no peer has it\n    at pull (pulls.ts:1)')
    expect(prettyLine({ level: 50, time, msg: 'x', detail: 'two words', list: [1, 2] })).toBe('09:14:03.120 ERROR x detail="two words" list=[1,2]')
  })

  it('colours only when asked', () => {
    expect(prettyLine({ level: 30, time: 0, msg: 'm' }, true)).toContain('\x1b[32mINFO \x1b[0m')
    expect(prettyLine({ level: 30, time: 0, msg: 'm' }, false)).not.toContain('\x1b[')
  })
})
