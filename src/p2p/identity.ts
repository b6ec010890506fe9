/**
 * The node's persistent peer identity: an Ed25519 key in `<home>/peer.key` (protobuf, mode 0600),
 * created on first start. The peer id never changes for a home, so peers' allow-lists and bans
 * stay meaningful across restarts.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { InvalidInputError } from '../core/errors.js'
import { writeFileAtomic } from '../util/fsutil.js'

export const PEER_KEY_FILE = 'peer.key'

export async function loadOrCreateIdentity (home: string): Promise<PrivateKey> {
  const path = join(home, PEER_KEY_FILE)
  let bytes: Buffer | undefined
  try {
    bytes = await readFile(path)
  } catch {
    bytes = undefined
  }
  if (bytes !== undefined) {
    try {
      return privateKeyFromProtobuf(bytes)
    } catch (err) {
      throw new InvalidInputError(`${path} is not a valid peer key (${(err as Error).message}); move it aside to create a new identity`)
    }
  }
  const key = await generateKeyPair('Ed25519')
  await writeFileAtomic(path, privateKeyToProtobuf(key), 0o600)
  return key
}
