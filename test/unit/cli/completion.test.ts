/**
 * `shoal completion`: the bash script is run in a real bash with `shoal ls -q` stubbed, and
 * completes commands, subcommands, options and model names; zsh reuses it; fish lists every
 * command and option. An unknown shell is a usage error naming the ones there are.
 */
import { execFileSync } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { buildProgram, runCli, type CliIo } from '../../../src/cli/program.js'
import { tempDir } from '../../helpers/tmp.js'

async function script (shell: string): Promise<{ code: number, stdout: string, stderr: string }> {
  let stdout = ''
  let stderr = ''
  const io: CliIo = { out: t => { stdout += t }, err: t => { stderr += t }, env: {}, stderrTTY: false, connect: () => { throw new Error('no daemon') }, onInterrupt: () => () => {} }
  return { code: await runCli(['completion', shell], io), stdout, stderr }
}

describe('shoal completion', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeEach(async () => { ({ dir, cleanup } = await tempDir('shoal-completion-')) })
  afterEach(async () => { await cleanup() })

  it('bash completes commands, subcommands, options and model names', async () => {
    const file = join(dir, 'shoal.bash')
    await writeFile(file, (await script('bash')).stdout)
    const complete = (...words: string[]): string[] => execFileSync('bash', ['-c', [
      `source ${file}`,
      'shoal () { [ "$*" = "ls -q" ] && printf "tiny\\nllama-8b\\n"; }',
      `COMP_WORDS=(${words.map(w => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _shoal; printf '%s\\n' "\${COMPREPLY[@]}"`
    ].join('\n')], { encoding: 'utf8' }).split('\n').filter(w => w !== '')
    expect(complete('shoal', 'la')).toEqual(['label'])
    expect(complete('shoal', 'label', '')).toEqual(expect.arrayContaining(['set', 'rm', 'history']))
    expect(complete('shoal', 'label', 'set', '--co')).toEqual(['--cold'])
    expect(complete('shoal', '--json', 'show', 'ti')).toEqual(['tiny'])
    expect(complete('shoal', 'gc', '--')).toEqual(expect.arrayContaining(['--dry-run', '--yes', '--json']))
  })

  it('zsh loads the bash completion through bashcompinit; fish names every command', async () => {
    expect((await script('zsh')).stdout).toMatch(/^#compdef shoal\nautoload -U \+X bashcompinit && bashcompinit\n/)
    const fish = (await script('fish')).stdout
    const program = buildProgram({ out: () => {}, err: () => {}, env: {}, stderrTTY: false, connect: () => { throw new Error('no') }, onInterrupt: () => () => {} }, () => {})
    for (const c of program.commands.filter(c => c.name() !== 'help')) expect(fish).toContain(`complete -c shoal -n __fish_use_subcommand -a '${c.name()}'`)
    expect(fish).toContain("complete -c shoal -n '__fish_seen_subcommand_from label; and __fish_seen_subcommand_from set' -l cold")
  })

  it('refuses a shell it has no script for, naming the ones it has', async () => {
    expect(await script('tcsh')).toEqual({ code: 2, stdout: '', stderr: 'shoal: no completion for "tcsh"; use bash, zsh, fish\n' })
  })
})
