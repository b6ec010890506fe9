/**
 * Shell completion scripts (`shoal completion bash|zsh|fish`), generated from the command tree, so
 * a new command or option completes without editing them. Commands, subcommands and options
 * complete everywhere; refs (`name`, `name@label`) complete from `shoal ls -q` (model names) when
 * a daemon answers; paths complete as files for `add` and `export`.
 */
import type { Command } from 'commander'
import { UsageError } from '../core/errors.js'

export const SHELLS = ['bash', 'zsh', 'fish'] as const

interface Node { path: string[], command: Command }

function nodes (program: Command): Node[] {
  const out: Node[] = []
  const walk = (c: Command, path: string[]): void => {
    for (const sub of c.commands) {
      if (sub.name() === 'help') continue
      out.push({ path: [...path, sub.name()], command: sub })
      walk(sub, [...path, sub.name()])
    }
  }
  walk(program, [])
  return out
}

const flags = (c: Command): string[] => c.options.flatMap(o => [o.short, o.long].filter((f): f is string => f !== undefined))
const takesRef = (c: Command): boolean => c.registeredArguments.some(a => /ref|name/.test(a.name()))
const takesPath = (c: Command): boolean => c.registeredArguments.some(a => /path|dir/.test(a.name()))
const quote = (s: string): string => `'${s.replace(/'/g, "'\\''")}'`

export function completionScript (program: Command, shell: string): string {
  if (shell === 'bash') return bash(program)
  if (shell === 'zsh') return `#compdef shoal\nautoload -U +X bashcompinit && bashcompinit\n${bash(program)}`
  if (shell === 'fish') return fish(program)
  throw new UsageError(`no completion for ${JSON.stringify(shell.slice(0, 20))}; use ${SHELLS.join(', ')}`)
}

function bash (program: Command): string {
  const all = nodes(program)
  const top = [...program.commands.filter(c => c.name() !== 'help').map(c => c.name()), ...flags(program)]
  const cases = all.map(n => {
    const subs = n.command.commands.filter(c => c.name() !== 'help').map(c => c.name())
    const words = [...subs, ...flags(n.command), ...flags(program)].join(' ')
    const extra = takesRef(n.command) ? '$(shoal ls -q 2>/dev/null)' : ''
    const files = takesPath(n.command) ? ' ; COMPREPLY+=( $(compgen -f -- "$cur") )' : ''
    return `    ${quote(n.path.join(' '))}) COMPREPLY=( $(compgen -W "${words} ${extra}" -- "$cur") )${files} ;;`
  })
  return `# shoal completion for bash: source <(shoal completion bash)
_shoal () {
  local cur="\${COMP_WORDS[COMP_CWORD]}" path="" i w next
  for (( i = 1; i < COMP_CWORD; i++ )); do
    w="\${COMP_WORDS[i]}"
    case "$w" in -*) continue ;; esac
    next="\${path:+$path }$w"
    case "$next" in
      ${all.map(n => quote(n.path.join(' '))).join('|')}) path="$next" ;;
    esac
  done
  case "$path" in
    '') COMPREPLY=( $(compgen -W "${top.join(' ')}" -- "$cur") ) ;;
${cases.join('\n')}
  esac
}
complete -F _shoal shoal
`
}

function fish (program: Command): string {
  const lines = ['# shoal completion for fish: shoal completion fish | source', 'complete -c shoal -f']
  for (const c of program.commands.filter(c => c.name() !== 'help')) {
    lines.push(`complete -c shoal -n __fish_use_subcommand -a ${quote(c.name())} -d ${quote(c.description().slice(0, 80))}`)
  }
  for (const o of program.options) if (o.long !== undefined) lines.push(`complete -c shoal -l ${o.long.slice(2)} -d ${quote(o.description.slice(0, 80))}`)
  for (const n of nodes(program)) {
    const first = n.path[0] ?? ''
    const condition = n.path.length === 1 ? `__fish_seen_subcommand_from ${first}` : `__fish_seen_subcommand_from ${first}; and __fish_seen_subcommand_from ${n.path[1] ?? ''}`
    for (const sub of n.command.commands.filter(c => c.name() !== 'help')) {
      lines.push(`complete -c shoal -n ${quote(`__fish_seen_subcommand_from ${first}`)} -a ${quote(sub.name())} -d ${quote(sub.description().slice(0, 80))}`)
    }
    for (const o of n.command.options) {
      if (o.long === undefined) continue
      lines.push(`complete -c shoal -n ${quote(condition)} -l ${o.long.slice(2)}${o.short !== undefined ? ` -s ${o.short.slice(1)}` : ''}${o.required ? ' -r' : ''} -d ${quote(o.description.slice(0, 80))}`)
    }
    if (takesRef(n.command)) lines.push(`complete -c shoal -n ${quote(condition)} -a '(shoal ls -q 2>/dev/null)'`)
    if (takesPath(n.command)) lines.push(`complete -c shoal -n ${quote(condition)} -F`)
  }
  return `${lines.join('\n')}\n`
}
