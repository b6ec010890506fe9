/**
 * The client entry point (`src/index.ts`, what `import … from 'shoal'` loads) reaches only client
 * code: its runtime imports, followed file by file, never reach the store, the daemon, the config
 * schema or the polyfill that patches the global Promise.
 */
import { readFile } from 'node:fs/promises'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const SRC = join(dirname(fileURLToPath(import.meta.url)), '../../../src')

/** Relative modules a file imports at run time (type-only imports and specifiers are left out). */
export function runtimeImports (text: string): string[] {
  const found: string[] = []
  const re = /^\s*(import|export)\s+(type\s+)?([^'";]*?)\s*from\s*'([^']+)'|^\s*import\s*'([^']+)'/gm
  for (const m of text.matchAll(re)) {
    const bare = m[5]
    if (bare !== undefined) { found.push(bare); continue }
    if (m[2] !== undefined) continue
    const clause = m[3] ?? ''
    const braces = /\{([^}]*)\}/.exec(clause)
    const outside = clause.replace(/\{[^}]*\}/, '').replace(/,/g, '').trim()
    const named = braces?.[1]?.split(',').map(s => s.trim()).filter(s => s !== '' && !s.startsWith('type ')) ?? []
    if (outside === '' && braces !== null && named.length === 0) continue
    found.push(m[4] ?? '')
  }
  return found.filter(s => s.startsWith('.'))
}

async function closure (entry: string): Promise<string[]> {
  const seen = new Set<string>()
  const todo = [entry]
  while (todo.length > 0) {
    const file = todo.pop() ?? ''
    if (seen.has(file)) continue
    seen.add(file)
    for (const spec of runtimeImports(await readFile(file, 'utf8'))) todo.push(join(dirname(file), spec.replace(/\.js$/, '.ts')))
  }
  return [...seen].map(f => relative(SRC, f)).sort()
}

describe('the client entry point', () => {
  it('loads only the client, its errors, its target and range rules and core errors', async () => {
    expect(await closure(join(SRC, 'index.ts'))).toEqual(['core/errors.ts', 'index.ts', 'rpc/client.ts', 'rpc/errors.ts', 'rpc/range.ts', 'rpc/target.ts'])
  })

  it('tells runtime imports from type-only ones', () => {
    expect(runtimeImports("import type { A } from './a.js'\nimport { type B } from './b.js'\nimport { type C, D } from './c.js'\nexport { E } from './e.js'\nimport './f.js'\nimport x from 'zod'")).toEqual(['./c.js', './e.js', './f.js'])
  })
})
