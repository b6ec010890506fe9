/**
 * Where a client finds the daemon, by the same rules everywhere (the CLI, `ShoalClient` users, the
 * serving example): `SHOAL_HOST` when set, else the socket of the home (`rpc.socket` in its
 * `config.json`, relative to the home, else `SOCKET_FILE`).
 *
 * Part of the client entry point (`src/index.ts`): it imports only `core/errors` and Node built-ins,
 * so a serving process that imports the client loads no store, daemon or config schema code.
 * Contracts: the config file is read only when `SHOAL_HOST` is unset, with its size checked before
 * it is read (`MAX_CLIENT_CONFIG_BYTES`); a file that is not JSON, or whose `rpc.socket` is not a
 * non-empty string, is an `InvalidInputError` naming the file, never a silent default.
 */
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs'
import { homedir } from 'node:os'
import { isAbsolute, join, resolve } from 'node:path'
import { InvalidInputError } from '../core/errors.js'

/** @default 'config.json' */
export const CONFIG_FILE = 'config.json'
/** @default 'shoal.sock' */
export const SOCKET_FILE = 'shoal.sock'
/** @default 8 MiB — the daemon's own bound on `config.json` (`MAX_CONFIG_BYTES`); larger is refused unread */
export const MAX_CLIENT_CONFIG_BYTES = 8 * 1024 * 1024

/** The daemon's unix socket, or its loopback TCP port with the token from `<home>/rpc.token`. */
export type ClientTarget = { socketPath: string } | { url: string, token: string }

export function defaultHome (env: NodeJS.ProcessEnv = process.env): string {
  if (env.SHOAL_HOME !== undefined && env.SHOAL_HOME !== '') return resolve(env.SHOAL_HOME)
  const data = env.XDG_DATA_HOME !== undefined && isAbsolute(env.XDG_DATA_HOME) ? env.XDG_DATA_HOME : join(homedir(), '.local', 'share')
  return join(data, 'shoal')
}

/**
 * Where to connect: `SHOAL_HOST` (`unix:///path` or `http://127.0.0.1:4080` with the token in
 * `SHOAL_TOKEN`), else the socket `config.json` names in the home (`home`, else `SHOAL_HOME`, else
 * the default home), else `<home>/shoal.sock`.
 */
export function clientTarget (env: NodeJS.ProcessEnv = process.env, home?: string): ClientTarget {
  const host = env.SHOAL_HOST
  if (host !== undefined && host !== '') return hostTarget(host, env.SHOAL_TOKEN)
  const dir = home !== undefined ? resolve(home) : defaultHome(env)
  return { socketPath: resolve(dir, configuredSocket(join(dir, CONFIG_FILE)) ?? SOCKET_FILE) }
}

function hostTarget (host: string, token: string | undefined): ClientTarget {
  const shown = JSON.stringify(host.slice(0, 100))
  if (host.startsWith('unix://')) {
    const socketPath = host.slice('unix://'.length)
    if (socketPath === '' || socketPath.includes('\0')) throw new InvalidInputError(`SHOAL_HOST ${shown} names no socket: use unix:///path/to/shoal.sock`)
    return { socketPath }
  }
  if (host.startsWith('http://')) {
    let url: URL
    try {
      url = new URL(host)
    } catch {
      throw new InvalidInputError(`SHOAL_HOST ${shown} is not a URL: use http://127.0.0.1:<port>`)
    }
    if (url.port === '' || (url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.username !== '') {
      throw new InvalidInputError(`SHOAL_HOST ${shown} must be just http://<host>:<port>, e.g. http://127.0.0.1:4080`)
    }
    if (token === undefined || token === '') throw new InvalidInputError('SHOAL_HOST is an http:// address: set SHOAL_TOKEN to the token in <home>/rpc.token')
    if (!/^[\x21-\x7e]{1,256}$/.test(token)) throw new InvalidInputError('SHOAL_TOKEN must be the token in <home>/rpc.token (printable characters, no spaces)')
    return { url: host, token }
  }
  throw new InvalidInputError(`SHOAL_HOST must be unix:///path/to/shoal.sock or http://127.0.0.1:<port> (got ${shown})`)
}

/** `rpc.socket` of the config file, or undefined when there is no file or it names none. */
function configuredSocket (path: string): string | undefined {
  let text: string
  let fd: number
  try {
    // Non-blocking, so a FIFO in its place is refused instead of waited on.
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new InvalidInputError(`cannot read ${path}: ${(err as Error).message}`, { cause: err })
  }
  try {
    const st = fstatSync(fd)
    if (!st.isFile()) throw new InvalidInputError(`${path} is not a regular file`)
    if (st.size > MAX_CLIENT_CONFIG_BYTES) throw new InvalidInputError(`${path} is ${st.size} bytes, over the ${MAX_CLIENT_CONFIG_BYTES}-byte limit for a config file`)
    const buf = Buffer.alloc(st.size)
    let length = 0
    while (length < buf.length) {
      const n = readSync(fd, buf, length, buf.length - length, length)
      if (n === 0) break
      length += n
    }
    text = buf.subarray(0, length).toString('utf8')
  } finally {
    closeSync(fd)
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    throw new InvalidInputError(`${path} is not valid JSON: ${(err as Error).message}`)
  }
  const rpc = typeof value === 'object' && value !== null ? (value as { rpc?: unknown }).rpc : undefined
  const socket = typeof rpc === 'object' && rpc !== null ? (rpc as { socket?: unknown }).socket : undefined
  if (socket === undefined) return undefined
  if (typeof socket !== 'string' || socket === '' || socket.length > 1024 || socket.includes('\0')) {
    throw new InvalidInputError(`${path} is invalid at rpc.socket: give the socket path as a string (relative paths are inside the home)`)
  }
  return socket
}
