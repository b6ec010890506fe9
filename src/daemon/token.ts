/**
 * The bearer token of the loopback TCP RPC port: `<home>/rpc.token` (0600), 32 random bytes in
 * hex, made on first use. Whoever can read it can drive the daemon, like the unix socket's group.
 */
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { writeFileAtomic } from '../util/fsutil.js'

export const TOKEN_FILE = 'rpc.token'

export async function loadOrCreateToken (home: string): Promise<string> {
  const path = join(home, TOKEN_FILE)
  try {
    const text = (await readFile(path, 'utf8')).trim()
    if (/^[0-9a-f]{64}$/.test(text)) return text
  } catch { /* made below */ }
  const token = randomBytes(32).toString('hex')
  await writeFileAtomic(path, `${token}\n`, 0o600)
  return token
}
