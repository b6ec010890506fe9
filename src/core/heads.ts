/**
 * Version heads: signed statements "label L of model M points at version V", and the rule that
 * orders them.
 *
 * A head is a canonical dag-cbor map (the *body*, `encodeHead`) signed with the publisher's
 * ed25519 key; the signature covers exactly the body bytes. On the wire and on disk a head travels
 * as a *signed head*: the dag-cbor map `{ head: <body bytes>, sig: <64 bytes> }`.
 *
 * MUST hold (checked by `openSignedHead`, whatever the source):
 * - the envelope and the body decode, fit the schema and their size caps (`MAX_SIGNED_HEAD_BYTES`,
 *   a stamp counter of at most `MAX_STAMP_COUNTER`, clock values up to `MAX_STAMP_WALL_MS`);
 * - the body is canonical: re-encoding the decoded head gives the same bytes, so one head has one
 *   encoding and one id;
 * - the signature verifies under the publisher key the body names.
 * `openSignedHead` is `decodeSignedHead` (size, envelope, schema: cheap, no signature) followed by
 * `verifySignedHead` (canonical encoding and signature: the costly part), so that a receiver can
 * drop a head on cheap grounds — an untrusted publisher, a stamp that loses — before paying for
 * its signature. Whether that key may move that model is policy (`core/trust.ts`), not part of
 * decoding.
 *
 * Ordering (`compareHeads`): per (model, label), the head with the greater stamp wins; equal
 * stamps are broken by the publisher key, then by the version id (a removal, `version: null`,
 * sorts lowest), both compared as strings, then by `previous` and the activation (only one key
 * used on two hosts can get that far). The order is total over distinct heads, so every node
 * that has seen the same heads picks the same winner whatever the order they arrived in.
 *
 * Stamps are hybrid logical clocks (`nextStamp`): `wall` is milliseconds since the epoch, `counter`
 * orders heads made within one millisecond or behind a clock that went backwards. A publisher
 * always stamps above the head it replaces, so a new head wins over the one it saw even if its
 * clock is behind; a counter at its cap moves the stamp to the next millisecond, so no accepted
 * head can leave a label without a stamp above it.
 */
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import { base58btc } from 'multiformats/bases/base58'
import { z } from 'zod'
import { isCid, type VersionId } from './digest.js'
import { BadSignatureError, ConflictError, MalformedDataError } from './errors.js'
import { checkLabel, checkModelName } from './names.js'

export const HEAD_SCHEMA = 1
/** @default 4 KiB — a head is a few hundred bytes */
export const MAX_SIGNED_HEAD_BYTES = 4096
/** @default 7 days — the longest jitter window a head may ask for */
export const MAX_JITTER_MS = 7 * 24 * 3600 * 1000
/**
 * @default 2^32 − 1 — the largest stamp counter. A counter only counts heads stamped within one
 * millisecond (or behind a clock that went backwards), and the sync wire carries it as a uint32;
 * a head past it is malformed, so none can leave `nextStamp` without a stamp above it.
 */
export const MAX_STAMP_COUNTER = 2 ** 32 - 1
/**
 * @default 9999-12-31T23:59:59.999Z (253402300799999 ms) — the latest wall-clock time a stamp or a
 * cold activation's `at` may name; past it a head is malformed (not merely `future`).
 */
export const MAX_STAMP_WALL_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999)
/** Publisher keys parsed lately, so verifying many heads of one publisher parses its key once. */
const KEY_CACHE_SIZE = 256
/** Multicodec of an ed25519 public key (as in did:key). */
const ED25519_PUB = [0xed, 0x01]
/** DER prefix of an ed25519 SubjectPublicKeyInfo; the raw 32-byte key follows it. */
const SPKI_ED25519_PREFIX = Uint8Array.from([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00])

/** A publisher key as text: multibase base58btc of the multicodec ed25519 public key (`z6Mk…`). */
export type PublisherKey = string & { readonly __brand?: 'PublisherKey' }

export interface Stamp { wall: number, counter: number }

/**
 * When followers switch their local label to the head's version, once they have it complete and
 * verified: `hot` at once; `cold` at `at` (ms since the epoch) or, without `at`, only when an
 * operator runs `shoal activate`. Each node waits a further offset in `[0, jitterMs)` derived from
 * its own id (`jitterOffset`), so a fleet does not reload all at once.
 */
export type Activation =
  | { mode: 'hot', jitterMs?: number }
  | { mode: 'cold', at?: number, jitterMs?: number }

export interface Head {
  model: string
  label: string
  /** The version the label points at; null removes the label. */
  version: VersionId | null
  /** What the label pointed at in the publisher's view when it published (null: nothing). */
  previous: VersionId | null
  stamp: Stamp
  activation: Activation
  publisher: PublisherKey
}

/**
 * A signed head that decoded and fits the schema (`decodeSignedHead`), its encoding and signature
 * not checked yet: enough to decide on trust and ordering, never to store or pass on.
 */
export interface DecodedHead {
  head: Head
  /** Body bytes as sent (what the signature covers, once `verifySignedHead` found them canonical). */
  body: Uint8Array
  signature: Uint8Array
  /** The envelope as sent and stored. */
  bytes: Uint8Array
  /** Hex sha-256 of `bytes`: names this exact signed head. */
  id: string
}

/** A head with its verified encoding, as accepted from anywhere. */
export interface SignedHead extends DecodedHead {
  /** Set by `verifySignedHead` and `signHead` only: the body is canonical and the signature verified. */
  readonly verified: true
}

const versionText = z.string().max(256).refine(isCid, 'not a CID')
const wallClock = z.number().int().nonnegative().max(MAX_STAMP_WALL_MS, {
  error: issue => `wall ${String(issue.input)} is past 9999-12-31 (${MAX_STAMP_WALL_MS} ms); a head cannot be stamped or activated that late`
})
const counter = z.number().int().nonnegative().max(MAX_STAMP_COUNTER, {
  error: issue => `counter ${String(issue.input)} is over the limit of ${MAX_STAMP_COUNTER}`
})
const jitter = z.number().int().nonnegative().max(MAX_JITTER_MS).optional()

const bodySchema = z.strictObject({
  v: z.literal(HEAD_SCHEMA),
  model: z.string().max(256),
  label: z.string().max(64),
  version: versionText.nullable(),
  previous: versionText.nullable(),
  stamp: z.tuple([wallClock, counter]),
  activation: z.discriminatedUnion('mode', [
    z.strictObject({ mode: z.literal('hot'), jitter }),
    z.strictObject({ mode: z.literal('cold'), at: wallClock.optional(), jitter })
  ]),
  publisher: z.string().max(128)
})

const envelopeSchema = z.strictObject({ head: z.instanceof(Uint8Array), sig: z.instanceof(Uint8Array) })

// ---- keys ----------------------------------------------------------------------------------

export function publisherKeyOf (publicKey: KeyObject): PublisherKey {
  const der = new Uint8Array(publicKey.export({ format: 'der', type: 'spki' }))
  if (der.length !== SPKI_ED25519_PREFIX.length + 32) throw new MalformedDataError('not an ed25519 public key')
  return base58btc.encode(Uint8Array.from([...ED25519_PUB, ...der.subarray(SPKI_ED25519_PREFIX.length)])) as PublisherKey
}

/** Parses `z6Mk…` (optionally prefixed `did:key:`) into a public key; throws if it is not one. */
export function publicKeyFrom (text: string): KeyObject {
  const bare = text.startsWith('did:key:') ? text.slice('did:key:'.length) : text
  let bytes: Uint8Array
  try {
    bytes = base58btc.decode(bare)
  } catch {
    throw new MalformedDataError(`"${text.slice(0, 80)}" is not a publisher key (expected z6Mk…, a base58btc ed25519 key)`)
  }
  if (bytes.length !== 34 || bytes[0] !== ED25519_PUB[0] || bytes[1] !== ED25519_PUB[1]) {
    throw new MalformedDataError(`"${text.slice(0, 80)}" is not an ed25519 publisher key`)
  }
  return createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, bytes.subarray(2)]), format: 'der', type: 'spki' })
}

/** Normalises a key given by a person (`did:key:` prefix dropped); throws if it is not one. */
export function checkPublisherKey (text: string): PublisherKey {
  return publisherKeyOf(publicKeyFrom(text))
}

export function privateKeyFromPem (pem: string): KeyObject {
  const key = createPrivateKey(pem)
  if (key.asymmetricKeyType !== 'ed25519') throw new MalformedDataError('a publisher key must be ed25519')
  return key
}

// ---- encoding ------------------------------------------------------------------------------

/** The canonical body bytes of a head. Validates names, versions and ranges first. */
export function encodeHead (head: Head): Uint8Array {
  checkModelName(head.model)
  checkLabel(head.label)
  checkPublisherKey(head.publisher)
  const activation = head.activation.mode === 'hot'
    ? { mode: 'hot', ...(head.activation.jitterMs !== undefined && head.activation.jitterMs > 0 ? { jitter: head.activation.jitterMs } : {}) }
    : {
        mode: 'cold',
        ...(head.activation.at !== undefined ? { at: head.activation.at } : {}),
        ...(head.activation.jitterMs !== undefined && head.activation.jitterMs > 0 ? { jitter: head.activation.jitterMs } : {})
      }
  const body = {
    v: HEAD_SCHEMA,
    model: head.model,
    label: head.label,
    version: head.version,
    previous: head.previous,
    stamp: [head.stamp.wall, head.stamp.counter],
    activation,
    publisher: head.publisher
  }
  const parsed = bodySchema.safeParse(body)
  if (!parsed.success) throw new MalformedDataError(`invalid head: ${describe(parsed.error)}`)
  return dagCbor.encode(body)
}

/** Signs a head with the publisher's private key; the head's `publisher` MUST be its public key. */
export function signHead (head: Head, privateKey: KeyObject): SignedHead {
  if (publisherKeyOf(createPublicKey(privateKey)) !== head.publisher) throw new MalformedDataError('the head names another publisher than the signing key')
  const body = encodeHead(head)
  const signature = new Uint8Array(sign(null, body, privateKey))
  const bytes = dagCbor.encode({ head: body, sig: signature })
  return { head, body, signature, bytes, id: idOf(bytes), verified: true }
}

/**
 * Decodes and checks a signed head from anywhere (peer, disk): size, schema, canonical body,
 * signature (`decodeSignedHead`, then `verifySignedHead`). Throws `MalformedDataError` or
 * `BadSignatureError` saying what is wrong.
 */
export function openSignedHead (bytes: Uint8Array): SignedHead {
  return verifySignedHead(decodeSignedHead(bytes))
}

/**
 * The cheap half of `openSignedHead`: size, envelope and body schema, no signature. What it
 * returns MAY be forged; use it to drop a head early (untrusted, stale), never to keep one.
 * Throws `MalformedDataError` saying what is wrong.
 */
export function decodeSignedHead (bytes: Uint8Array): DecodedHead {
  if (bytes.length > MAX_SIGNED_HEAD_BYTES) throw new MalformedDataError(`signed head of ${bytes.length} bytes is over the ${MAX_SIGNED_HEAD_BYTES}-byte limit`)
  let envelope: unknown
  try {
    envelope = dagCbor.decode(bytes)
  } catch (err) {
    throw new MalformedDataError(`signed head does not decode: ${(err as Error).message}`)
  }
  const env = envelopeSchema.safeParse(envelope)
  if (!env.success) throw new MalformedDataError(`signed head envelope is invalid: ${describe(env.error)}`)
  let decoded: unknown
  try {
    decoded = dagCbor.decode(env.data.head)
  } catch (err) {
    throw new MalformedDataError(`head body does not decode: ${(err as Error).message}`)
  }
  const parsed = bodySchema.safeParse(decoded)
  if (!parsed.success) throw new MalformedDataError(`head body is invalid: ${describe(parsed.error)}`)
  const b = parsed.data
  const head: Head = {
    model: b.model,
    label: b.label,
    version: b.version,
    previous: b.previous,
    stamp: { wall: b.stamp[0], counter: b.stamp[1] },
    activation: b.activation.mode === 'hot'
      ? { mode: 'hot', ...(b.activation.jitter !== undefined ? { jitterMs: b.activation.jitter } : {}) }
      : { mode: 'cold', ...(b.activation.at !== undefined ? { at: b.activation.at } : {}), ...(b.activation.jitter !== undefined ? { jitterMs: b.activation.jitter } : {}) },
    publisher: b.publisher as PublisherKey
  }
  return { head, body: env.data.head, signature: env.data.sig, bytes, id: idOf(bytes) }
}

/**
 * The costly half of `openSignedHead`: the body is the canonical encoding of the head (names and
 * CIDs checked on the way) and the signature verifies under the publisher key it names.
 * Throws `MalformedDataError` or `BadSignatureError`.
 */
export function verifySignedHead (decoded: DecodedHead): SignedHead {
  const { head, body, signature } = decoded
  let canonical: Uint8Array
  try {
    canonical = encodeHead(head)
  } catch (err) {
    throw new MalformedDataError(`head body is invalid: ${(err as Error).message}`)
  }
  if (!equalBytes(canonical, body)) throw new MalformedDataError('head body is not canonically encoded')
  if (signature.length !== 64 || !verify(null, body, cachedKey(head.publisher), signature)) {
    throw new BadSignatureError(`bad signature on ${head.model}@${head.label} (publisher ${head.publisher})`)
  }
  return { ...decoded, verified: true }
}

const keyCache = new Map<string, KeyObject>()

/** `publicKeyFrom`, remembering the last `KEY_CACHE_SIZE` keys (the publisher was checked by `encodeHead`). */
function cachedKey (publisher: PublisherKey): KeyObject {
  let key = keyCache.get(publisher)
  if (key === undefined) {
    key = publicKeyFrom(publisher)
    if (keyCache.size >= KEY_CACHE_SIZE) keyCache.delete(keyCache.keys().next().value as string)
    keyCache.set(publisher, key)
  }
  return key
}

/**
 * The version a stored head names (null: a removal), read without re-checking the signature —
 * only for heads that passed `openSignedHead` before they were stored. Undefined if it does not
 * decode. About 1 ms cheaper per head than `openSignedHead`, which matters at start-up.
 */
export function storedHeadVersion (bytes: Uint8Array): VersionId | null | undefined {
  try {
    const envelope = dagCbor.decode(bytes) as { head?: unknown }
    if (!(envelope.head instanceof Uint8Array)) return undefined
    const body = dagCbor.decode(envelope.head) as { version?: unknown }
    return typeof body.version === 'string' || body.version === null ? body.version : undefined
  } catch {
    return undefined
  }
}

// ---- ordering ------------------------------------------------------------------------------

export function compareStamps (a: Stamp, b: Stamp): number {
  return a.wall !== b.wall ? Math.sign(a.wall - b.wall) : Math.sign(a.counter - b.counter)
}

/** The head-ordering rule (see the module doc): > 0 when `a` wins over `b`. */
export function compareHeads (a: Head, b: Head): number {
  const byStamp = compareStamps(a.stamp, b.stamp)
  if (byStamp !== 0) return byStamp
  if (a.publisher !== b.publisher) return a.publisher > b.publisher ? 1 : -1
  const byVersion = compareText(a.version ?? '', b.version ?? '')
  if (byVersion !== 0) return byVersion
  // Same stamp, publisher and version (one key used on two hosts): the rest of the head decides,
  // so that two distinct heads never compare equal and every node keeps the same one.
  const byPrevious = compareText(a.previous ?? '', b.previous ?? '')
  if (byPrevious !== 0) return byPrevious
  const [x, y] = [a.activation, b.activation]
  if (x.mode !== y.mode) return compareText(x.mode, y.mode)
  const atX = x.mode === 'cold' ? x.at ?? -1 : -1
  const atY = y.mode === 'cold' ? y.at ?? -1 : -1
  if (atX !== atY) return Math.sign(atX - atY)
  // An absent jitter and a zero jitter encode the same way (see `encodeHead`).
  return Math.sign((x.jitterMs ?? 0) - (y.jitterMs ?? 0))
}

function compareText (a: string, b: string): number {
  return a === b ? 0 : a > b ? 1 : -1
}

/**
 * The hybrid-logical-clock step for a new head: above the node's clock, above every stamp it has
 * seen for that label (`above`), and at wall-clock time when the clock is ahead of both. A counter
 * at `MAX_STAMP_COUNTER` moves to the next millisecond instead. Throws `ConflictError` only when
 * the newest stamp is the last one there is (`MAX_STAMP_WALL_MS`, counter at its cap).
 */
export function nextStamp (now: number, ...above: Array<Stamp | undefined>): Stamp {
  let top: Stamp = { wall: 0, counter: 0 }
  for (const s of above) if (s !== undefined && compareStamps(s, top) > 0) top = s
  if (now > top.wall && now <= MAX_STAMP_WALL_MS) return { wall: now, counter: 0 }
  if (top.counter < MAX_STAMP_COUNTER) return { wall: top.wall, counter: top.counter + 1 }
  if (top.wall < MAX_STAMP_WALL_MS) return { wall: top.wall + 1, counter: 0 }
  throw new ConflictError(`no later stamp than ${top.wall}.${top.counter} exists (the end of year 9999 with the counter at its limit), so no head can replace the current one`)
}

/** `<model>\0<label>`: the key a head is stored and compared under. */
export function headKey (model: string, label: string): string {
  return `${model}\0${label}`
}

/**
 * This node's wait within the head's jitter window: a stable function of the node id and the
 * head, so a node restarted mid-window keeps its place and the fleet spreads evenly.
 */
export function jitterOffset (head: SignedHead, nodeId: string): number {
  const window = head.head.activation.jitterMs ?? 0
  if (window <= 0) return 0
  const h = createHash('sha256').update(nodeId).update(head.body).digest()
  return h.readUInt32BE(0) % window
}

/** When a node may switch to this head's version (ms), or undefined for manual activation. */
export function activationTime (head: SignedHead, nodeId: string, completedAt: number): number | undefined {
  const a = head.head.activation
  const offset = jitterOffset(head, nodeId)
  if (a.mode === 'hot') return completedAt + offset
  return a.at === undefined ? undefined : a.at + offset
}

/**
 * A digest of a set of heads, to tell in one comparison whether two nodes agree: sha-256 over the
 * sorted ids of the winning head of every (model, label).
 */
export function headSetDigest (ids: Iterable<string>): Uint8Array {
  const hash = createHash('sha256')
  for (const id of [...ids].sort()) hash.update(id)
  return new Uint8Array(hash.digest())
}

function idOf (bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

function equalBytes (a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0
}

function describe (error: z.ZodError): string {
  const issue = error.issues[0]
  return `${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'does not match the schema'}`
}
