/**
 * Content identifiers.
 *
 * Every id shoal stores or sends is a CIDv1 (multicodec + multihash), written in base32:
 * - a chunk id is `CIDv1(raw, sha2-256(chunk bytes))`, e.g. `bafkrei…`;
 * - a file digest is `CIDv1(dag-cbor, sha2-256(file chunk list))` (see `fileDigest`);
 * - a version id is `CIDv1(dag-cbor, sha2-256(canonical manifest bytes))`.
 *
 * The multihash carries the algorithm, so a store can hold ids of several algorithms and the
 * algorithm can change without breaking existing stores. Only the algorithms in
 * `SUPPORTED_HASHES` are accepted when an id is parsed.
 *
 * sha2-256 via node:crypto: several times faster than one process receives over libp2p, with
 * nothing native to install. why: docs/decisions/0005-sha2-256.md
 */
import { createHash, type Hash } from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { InvalidInputError } from './errors.js'

export const RAW_CODEC = 0x55
export const DAG_CBOR_CODEC = dagCbor.code
export const SHA2_256 = 0x12

/** Multihash codes this build can verify, with the node:crypto algorithm behind each. */
export const SUPPORTED_HASHES: ReadonlyMap<number, string> = new Map([[SHA2_256, 'sha256']])

/** A CIDv1 in base32 naming one chunk's bytes. */
export type ChunkId = string & { readonly __brand?: 'ChunkId' }
/** A CIDv1 in base32 naming one file's content (its chunk list). */
export type FileDigest = string & { readonly __brand?: 'FileDigest' }
/** A CIDv1 in base32 naming one version (its canonical manifest). */
export type VersionId = string & { readonly __brand?: 'VersionId' }

/** Incremental hasher for one chunk that may arrive in several buffers. */
export class ChunkHasher {
  private hash: Hash = createHash('sha256')

  update (bytes: Uint8Array): void {
    this.hash.update(bytes)
  }

  /** Returns the chunk id and resets the hasher for the next chunk. */
  digest (): ChunkId {
    const id = cidFromSha256(RAW_CODEC, this.hash.digest())
    this.hash = createHash('sha256')
    return id
  }
}

/** The chunk id for a sha2-256 digest computed elsewhere (a hash worker). */
export function chunkIdFromSha256 (digest: Uint8Array): ChunkId {
  return cidFromSha256(RAW_CODEC, digest)
}

export function chunkIdOf (bytes: Uint8Array): ChunkId {
  return cidFromSha256(RAW_CODEC, createHash('sha256').update(bytes).digest())
}

/** Encodes a dag-cbor value and names it: the same value always gives the same bytes and id. */
export function encodeBlock (value: unknown): { bytes: Uint8Array, cid: string } {
  const bytes = dagCbor.encode(value)
  return { bytes, cid: cidFromSha256(DAG_CBOR_CODEC, createHash('sha256').update(bytes).digest()) }
}

/** Hashes already-encoded dag-cbor bytes with the algorithm `expected` names and compares. */
export function blockMatches (bytes: Uint8Array, expected: string): boolean {
  const cid = parseCid(expected)
  return cid.code === DAG_CBOR_CODEC && hashWith(cid.multihash.code, bytes) === cid.toString()
}

/**
 * Checks that `bytes` hash to `id` with the algorithm the id names. `bytes` may be given in parts
 * (as received from the network), hashed in order without joining them.
 */
export function chunkMatches (bytes: Uint8Array | readonly Uint8Array[], id: ChunkId): boolean {
  const cid = parseCid(id)
  return cid.code === RAW_CODEC && hashWith(cid.multihash.code, bytes, RAW_CODEC) === id
}

/** Total length of bytes given whole or in parts. */
export function byteLength (bytes: Uint8Array | readonly Uint8Array[]): number {
  if (bytes instanceof Uint8Array) return bytes.byteLength
  let n = 0
  for (const part of bytes) n += part.byteLength
  return n
}

/**
 * The whole-file digest: the id of the dag-cbor list `[[chunkCid, size], …]` in file order.
 * Like BitTorrent v2's piece root and Xet's file hash, it is a hash over the chunk hashes, so a
 * file is verified by verifying its chunks, and computing it costs no second pass over the bytes.
 */
export function fileDigest (chunks: ReadonlyArray<{ id: ChunkId, size: number }>): FileDigest {
  return encodeBlock(chunks.map(c => [CID.parse(c.id), c.size])).cid
}

/** Parses a CIDv1 string and checks that its hash algorithm is supported. */
export function parseCid (value: string): CID {
  let cid: CID
  try {
    cid = CID.parse(value)
  } catch {
    throw new InvalidInputError(`"${truncate(value)}" is not a content id (expected a base32 CIDv1 such as bafkrei…)`)
  }
  if (cid.version !== 1) throw new InvalidInputError(`content id ${truncate(value)} is CIDv0; shoal uses CIDv1`)
  if (!SUPPORTED_HASHES.has(cid.multihash.code)) {
    throw new InvalidInputError(`content id ${truncate(value)} uses hash 0x${cid.multihash.code.toString(16)}, which this build cannot verify`)
  }
  return cid
}

export function isCid (value: string): boolean {
  try {
    parseCid(value)
    return true
  } catch {
    return false
  }
}

function hashWith (code: number, bytes: Uint8Array | readonly Uint8Array[], codec: number = DAG_CBOR_CODEC): string {
  const algorithm = SUPPORTED_HASHES.get(code)
  if (algorithm === undefined) throw new InvalidInputError(`unsupported hash 0x${code.toString(16)}`)
  const hash = createHash(algorithm)
  if (bytes instanceof Uint8Array) hash.update(bytes)
  else for (const part of bytes) hash.update(part)
  return cidFromSha256(codec, hash.digest())
}

function cidFromSha256 (codec: number, digest: Uint8Array): string {
  return CID.createV1(codec, Digest.create(SHA2_256, digest)).toString()
}

function truncate (value: string): string {
  return value.length > 80 ? `${value.slice(0, 77)}...` : value
}
