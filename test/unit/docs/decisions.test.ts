/**
 * The decision records hold together: every `docs/decisions/…` path cited in the docs, the
 * READMEs, the sources, tests and scripts names a file that exists; every record is numbered in
 * order, opens with its number and title and a Status line, and is cited from the architecture
 * or the code, so none is an orphan.
 */
import { existsSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../..')
const DECISIONS = 'docs/decisions'
const CITED = /docs\/decisions\/[\w.-]+\.md/g
/** Where a decision may be cited: these files and, recursively, these folders. */
const SOURCES = ['README.md', 'docs', 'src', 'test', 'scripts', 'examples', 'docker']

async function filesUnder (path: string): Promise<string[]> {
  const full = join(ROOT, path)
  if (!existsSync(full)) return []
  if (/\.(md|ts|js|mjs)$/.test(path)) return [path]
  const out: string[] = []
  for (const entry of await readdir(full, { withFileTypes: true })) {
    if (entry.name === 'node_modules' || entry.name.startsWith('.')) continue
    const child = join(path, entry.name)
    if (entry.isDirectory()) out.push(...await filesUnder(child))
    else if (/\.(md|ts|js|mjs)$/.test(entry.name)) out.push(child)
  }
  return out
}

/** Every citation of a decision record, as `file: path`. */
async function citations (): Promise<Array<{ file: string, path: string }>> {
  const out: Array<{ file: string, path: string }> = []
  for (const source of SOURCES) {
    for (const file of await filesUnder(source)) {
      const text = await readFile(join(ROOT, file), 'utf8')
      for (const match of text.matchAll(CITED)) out.push({ file: relative(ROOT, join(ROOT, file)), path: match[0] })
    }
  }
  return out
}

describe('docs/decisions', () => {
  it('every cited record exists', async () => {
    const missing = (await citations()).filter(c => !existsSync(join(ROOT, c.path))).map(c => `${c.file}: ${c.path}`)
    expect(missing).toEqual([])
  })

  it('records are numbered 0001 on without gaps, each with its title and a Status line', async () => {
    const names = (await readdir(join(ROOT, DECISIONS))).filter(n => n.endsWith('.md')).sort()
    expect(names.length).toBeGreaterThan(0)
    names.forEach((name, i) => {
      expect(name, 'NNNN-words.md').toMatch(/^\d{4}-[a-z0-9-]+\.md$/)
      expect(Number(name.slice(0, 4)), name).toBe(i + 1)
    })
    for (const name of names) {
      const lines = (await readFile(join(ROOT, DECISIONS, name), 'utf8')).split('\n')
      expect(lines[0], name).toMatch(new RegExp(`^# ${name.slice(0, 4)} \\S`))
      expect(lines.some(l => l.startsWith('Status: ')), `${name} has a Status line`).toBe(true)
    }
  })

  it('every record is cited from the architecture or the code', async () => {
    const names = (await readdir(join(ROOT, DECISIONS))).filter(n => n.endsWith('.md'))
    const cited = new Set((await citations())
      .filter(c => c.file === 'docs/ARCHITECTURE.md' || c.file.startsWith('src/'))
      .map(c => c.path.slice(DECISIONS.length + 1)))
    expect(names.filter(n => !cited.has(n))).toEqual([])
  })
})
