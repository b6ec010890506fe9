/**
 * Daemon configuration: `<home>/config.json` (optional), overridden by environment, overridden by
 * flags. Every setting has a named default, applied here and only here.
 *
 * Environment:
 * - `SHOAL_HOME`  the home folder (store, config, socket). @default `$XDG_DATA_HOME/shoal`, else `~/.local/share/shoal`
 * - `SHOAL_HOST`  where the CLI finds the daemon: `unix:///path/to.sock`. @default `unix://<home>/shoal.sock`
 * - `SHOAL_LOG_LEVEL`  `trace|debug|info|warn|error|fatal|silent`. @default `info`
 */
import { readFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { isAbsolute, join, resolve } from 'node:path'
import { z } from 'zod'
import { InvalidInputError } from '../core/errors.js'

export const CONFIG_FILE = 'config.json'
/** @default 'shoal.sock' */
export const SOCKET_FILE = 'shoal.sock'
/** @default 'info' */
export const DEFAULT_LOG_LEVEL = 'info'
/** @default 0o660 — owner and group may use the RPC socket */
export const SOCKET_MODE = 0o660

const logLevel = z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'])

export const configFileSchema = z.strictObject({
  rpc: z.strictObject({
    /** Socket path; relative paths are inside the home. */
    socket: z.string().min(1).max(1024).optional()
  }).optional(),
  log: z.strictObject({ level: logLevel.optional() }).optional()
})

export interface Config {
  home: string
  socket: string
  logLevel: z.infer<typeof logLevel>
}

export function defaultHome (env: NodeJS.ProcessEnv = process.env): string {
  if (env.SHOAL_HOME !== undefined && env.SHOAL_HOME !== '') return resolve(env.SHOAL_HOME)
  const data = env.XDG_DATA_HOME !== undefined && isAbsolute(env.XDG_DATA_HOME) ? env.XDG_DATA_HOME : join(homedir(), '.local', 'share')
  return join(data, 'shoal')
}

export async function loadConfig (options: { home?: string, env?: NodeJS.ProcessEnv, overrides?: { socket?: string, logLevel?: string } } = {}): Promise<Config> {
  const env = options.env ?? process.env
  const home = options.home !== undefined ? resolve(options.home) : defaultHome(env)
  const file = await readConfigFile(join(home, CONFIG_FILE))
  const level = logLevel.safeParse(options.overrides?.logLevel ?? env.SHOAL_LOG_LEVEL ?? file.log?.level ?? DEFAULT_LOG_LEVEL)
  if (!level.success) throw new InvalidInputError(`invalid log level; use one of ${logLevel.options.join(', ')}`)
  const socket = options.overrides?.socket ?? file.rpc?.socket ?? SOCKET_FILE
  return { home, socket: resolve(home, socket), logLevel: level.data }
}

async function readConfigFile (path: string): Promise<z.infer<typeof configFileSchema>> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch {
    return {}
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    throw new InvalidInputError(`${path} is not valid JSON: ${(err as Error).message}`)
  }
  const parsed = configFileSchema.safeParse(value)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new InvalidInputError(`${path} is invalid at ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? ''}`)
  }
  return parsed.data
}

/** Where the CLI connects: `SHOAL_HOST` (`unix:///path`) or the home's socket. */
export function clientTarget (env: NodeJS.ProcessEnv = process.env, home?: string): { socketPath: string } {
  const host = env.SHOAL_HOST
  if (host !== undefined && host !== '') {
    if (host.startsWith('unix://')) return { socketPath: host.slice('unix://'.length) }
    throw new InvalidInputError(`SHOAL_HOST must be unix:///path/to/shoal.sock (got ${host})`)
  }
  return { socketPath: join(home ?? defaultHome(env), SOCKET_FILE) }
}
