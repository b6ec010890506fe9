/**
 * What the READMEs tell a person to type works as written: shell lines quote their globs, the
 * client snippet watches from the cursor its resolve returned, and every folder and script the
 * container guide uses is made by a command it gives.
 */
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../..')

/** The lines of every fenced code block of a markdown file, with the block's language. */
async function codeLines (file: string): Promise<Array<{ lang: string, line: string }>> {
  const out: Array<{ lang: string, line: string }> = []
  let lang: string | undefined
  for (const line of (await readFile(join(ROOT, file), 'utf8')).split('\n')) {
    const fence = /^```(\w*)/.exec(line)
    if (fence !== null) { lang = lang === undefined ? fence[1] ?? '' : undefined; continue }
    if (lang !== undefined) out.push({ lang, line })
  }
  return out
}

/** A shell line's words before any comment, with quoted strings removed. */
function unquotedWords (line: string): string {
  return line.replace(/'[^']*'|"[^"]*"/g, "''").replace(/\s#.*$/, '')
}

describe('README.md', () => {
  it('quotes every model pattern with * in shell lines, so the shell does not expand it', async () => {
    const shell = (await codeLines('README.md')).filter(l => l.lang === 'sh' || l.lang === '')
    const globs = shell.filter(l => /^shoal /.test(l.line) && /\S\*|\*\S/.test(unquotedWords(l.line).replace(/z6Mk…\S*/g, '')))
    expect(globs.map(l => l.line)).toEqual([])
  })

  it('the client snippet watches from the cursor resolveEnsure returned', async () => {
    const ts = (await codeLines('README.md')).filter(l => l.lang === 'ts').map(l => l.line).join('\n')
    expect(ts).toMatch(/const v = await shoal\.resolveEnsure\(/)
    expect(ts).toMatch(/shoal\.watch\(\{[^}]*since: v\.cursor[^}]*\}\)/)
  })

  it('the quick start has exactly two commands', async () => {
    const text = await readFile(join(ROOT, 'README.md'), 'utf8')
    const block = /## Quick start\n\n```sh\n([\s\S]*?)```/.exec(text)?.[1] ?? ''
    expect(block.trim().split('\n').map(l => l.split(/\s+/)[0])).toEqual(['./scripts/demo.sh', './scripts/test.sh'])
  })
})

describe('docker/README.md', () => {
  it('makes the model folder it adds, with a script that exists', async () => {
    const lines = (await codeLines('docker/README.md')).map(l => l.line)
    const added = lines.flatMap(l => [...l.matchAll(/shoal add \/models\/(\S+)/g)].map(m => m[1] ?? ''))
    expect(added.length).toBeGreaterThan(0)
    for (const name of added) {
      const maker = lines.find(l => l.includes(`docker/models/${name}`) && !l.trimStart().startsWith('#'))
      expect(maker, `a command that makes docker/models/${name}`).toBeDefined()
      const script = /node --import tsx (\S+)/.exec(maker ?? '')?.[1]
      expect(script !== undefined && existsSync(join(ROOT, script)), `${script ?? '(no script)'} exists`).toBe(true)
    }
  })
})
