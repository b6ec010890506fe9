import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { DAEMON_NODE_FLAGS, missingNodeFlags } from '../../../src/daemon/runtime.js'

describe('daemon node flags', () => {
  it('the CLI shebang starts node with every flag the daemon expects', async () => {
    const source = await readFile(new URL('../../../src/cli/main.ts', import.meta.url), 'utf8')
    const shebang = source.split('\n')[0] ?? ''
    expect(shebang.startsWith('#!/usr/bin/env -S node ')).toBe(true)
    expect(DAEMON_NODE_FLAGS.length).toBeGreaterThan(0)
    for (const flag of DAEMON_NODE_FLAGS) expect(shebang.split(' ')).toContain(flag)
  })

  it('finds flags missing from both the command line and NODE_OPTIONS', () => {
    expect(missingNodeFlags([], '')).toEqual([...DAEMON_NODE_FLAGS])
    expect(missingNodeFlags(['--enable-source-maps'], '--trace-gc')).toEqual([...DAEMON_NODE_FLAGS])
    expect(missingNodeFlags([...DAEMON_NODE_FLAGS], '')).toEqual([])
    expect(missingNodeFlags([], ` --trace-gc  ${DAEMON_NODE_FLAGS.join(' ')} `)).toEqual([])
  })

  it('counts a flag given with another value as given (the operator chose it)', () => {
    const names = DAEMON_NODE_FLAGS.map(flag => `${flag.split('=')[0] ?? flag}=16`)
    expect(missingNodeFlags(names, '')).toEqual([])
  })
})
