/** Human output: plain columns off a terminal, short ids, relative times, --format. */
import { afterEach, describe, expect, it } from 'vitest'
import { configureFormat, formatRows, plainColumns, relativeTime, shortId, table, time } from '../../../src/cli/format.js'

afterEach(() => { configureFormat({ tty: false }) })

describe('tables', () => {
  it('are plain columns with capital headers when stdout is not a terminal, so scripts can cut them', () => {
    configureFormat({ tty: false })
    expect(table(['model', 'versions'], [['llama-8b', 3], ['t', 12]])).toBe('MODEL      VERSIONS\nllama-8b   3\nt          12')
  })

  it('have rules on a terminal', () => {
    configureFormat({ tty: true })
    expect(table(['model'], [['x']])).toMatch(/[┌─│]/)
  })

  it('plain columns leave no trailing spaces', () => {
    expect(plainColumns(['a', 'b'], [['x', '']])).toBe('A   B\nx')
  })
})

describe('ids and times', () => {
  it('shows 12 characters of an id', () => {
    expect(shortId('bafkreihdwdcefgh4dqkjv67uzcmw7oj')).toBe('bafkreihdwdc')
    expect(shortId('short')).toBe('short')
  })

  it('shows relative times on a terminal and absolute ones otherwise', () => {
    const now = Date.parse('2026-12-07T10:00:00Z')
    expect(relativeTime(now - 5 * 60_000, now)).toBe('5 minutes ago')
    expect(relativeTime(now - 3_600_000, now)).toBe('1 hour ago')
    expect(relativeTime(now + 2 * 86_400_000, now)).toBe('in 2 days')
    expect(relativeTime(now - 500, now)).toBe('just now')
    expect(relativeTime(now - 90 * 86_400_000, now)).toBe('2026-09-08')
    configureFormat({ tty: true, now: () => now })
    expect(time(now - 120_000)).toBe('2 minutes ago')
    configureFormat({ tty: false })
    expect(time(now)).toBe('2026-12-07 10:00:00Z')
  })
})

describe('--format', () => {
  const rows = [{ version: 'v1', size: 10, newest: { created: 5 }, labels: ['prod'] }, { version: 'v2', size: 20 }]

  it('applies a template to each row, nested fields and tabs included', () => {
    expect(formatRows(rows, '{{.version}}\\t{{.size}} {{.newest.created}}')).toBe('v1\t10 5\nv2\t20 ')
    expect(formatRows(rows, '{{ .labels }}')).toBe('["prod"]\n')
  })

  it('prints listed fields as columns', () => {
    expect(formatRows(rows, 'version,size')).toBe('VERSION   SIZE\nv1        10\nv2        20')
  })
})
