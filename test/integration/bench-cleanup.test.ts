/**
 * Benchmarks register cleanups (namespaces, processes, temporary folders) with `onExitCleanup`
 * (scripts/lib/proc.ts). They must run when the benchmark is interrupted, even by a second signal
 * that arrives while they are running (`timeout` signals the process and then its whole group).
 */
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { pathToFileURL } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { ROOT } from '../../scripts/lib/daemon-proc.js'

const WAIT_MS = 30_000

let dir: string | undefined
afterEach(async () => { if (dir !== undefined) await rm(dir, { recursive: true, force: true }) })

describe('onExitCleanup', () => {
  it('runs every cleanup when a second SIGINT arrives during the first one\'s cleanups', async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-cleanup-'))
    const marker = join(dir, 'cleaned')
    const script = join(dir, 'interrupted.mts')
    const proc = pathToFileURL(join(ROOT, 'scripts', 'lib', 'proc.ts')).href
    await writeFile(script, [
      "import { writeFileSync } from 'node:fs'",
      `import { onExitCleanup } from '${proc}'`,
      // A slow first cleanup, as deleting namespaces is, then one whose effect the test sees.
      "onExitCleanup(() => { process.stdout.write('cleaning\\n'); const end = Date.now() + 1500; while (Date.now() < end) {} })",
      `onExitCleanup(() => { writeFileSync(${JSON.stringify(marker)}, 'cleaned') })`,
      "process.stdout.write('ready\\n')",
      'setInterval(() => {}, 1000)'
    ].join('\n'))
    const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const exit = new Promise<{ code: number | null, signal: string | null }>(resolve => child.once('close', (code, signal) => resolve({ code, signal })))
    const lines = createInterface({ input: child.stdout })
    const timer = setTimeout(() => child.kill('SIGKILL'), WAIT_MS)
    lines.on('line', line => {
      if (line === 'ready') child.kill('SIGINT')
      if (line === 'cleaning') child.kill('SIGINT')
    })
    const { code, signal } = await exit
    clearTimeout(timer)
    expect({ code, signal, stderr }).toEqual({ code: 130, signal: null, stderr: '' })
    expect(await readFile(marker, 'utf8')).toBe('cleaned')
  })
})
