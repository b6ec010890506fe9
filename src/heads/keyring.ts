/**
 * Publisher keys and trust rules kept in the home.
 *
 * - `keys/<name>.pem`: ed25519 private keys (PKCS#8 PEM, mode 0600, folder 0700). A home that has
 *   none gets `default` at first start, so a one-publisher fleet works without setup. The public
 *   half, as text (`z6Mk…`), is what other nodes trust (`shoal keys export`).
 * - `trust.json`: rules added with `shoal trust add` (`[{ "key": "z6Mk…", "models": "org/*" }]`),
 *   written atomically. The daemon's trust is: every key in `keys/` for every model, then the
 *   rules of `config.json` (`trust`), then `trust.json`.
 *
 * MUST hold: a change that answered success is in force and on disk. Each change (a key created,
 * a rule added or removed) runs alone, one after another in the order asked, and starts from what
 * the one before left: two `trust add` requests that both started from the same list would have the
 * second write drop the first rule, and the node would refuse that publisher's heads for good.
 * A change whose write failed leaves the file and the list as they were, and the next one runs.
 *
 * Both are read at start only, each bounded before it is read (`MAX_TRUST_FILE_BYTES`,
 * `MAX_TRUST_RULES`, `MAX_KEY_FILE_BYTES`), opened non-blocking (a FIFO in their place is refused,
 * not waited on), and checked entry by entry. A `trust.json` that is there but cannot be read or
 * understood stops the start with a message naming it: starting without its rules would refuse
 * their publishers' heads, and the next `trust add` would overwrite them.
 */
import { constants } from 'node:fs'
import { generateKeyPairSync, createPublicKey, type KeyObject } from 'node:crypto'
import { chmod, mkdir, open, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { ConflictError, InvalidInputError, NotFoundError } from '../core/errors.js'
import { privateKeyFromPem, publisherKeyOf, type PublisherKey } from '../core/heads.js'
import { checkTrustRule, type TrustRule } from '../core/trust.js'
import { isErrno, writeFileAtomic } from '../util/fsutil.js'

export const KEYS_DIR = 'keys'
export const TRUST_FILE = 'trust.json'
/** @default 'default' — the key made at first start and used when none is named */
export const DEFAULT_KEY = 'default'
const KEY_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/
/** @default 10,000 — rules `trust.json` may hold (as many as `config.json`'s `trust`); an add past it is refused */
export const MAX_TRUST_RULES = 10_000
/**
 * @default 4 MiB — a larger `trust.json` is refused before it is read (`MAX_TRUST_RULES` rules of
 * the longest patterns, as written, take about 3.6 MB)
 */
export const MAX_TRUST_FILE_BYTES = 4 * 1024 * 1024
/** @default 16 KiB — a larger file in `keys/` is refused before it is read (an ed25519 key in PEM is 119 bytes) */
export const MAX_KEY_FILE_BYTES = 16 * 1024

export interface KeyInfo { name: string, publicKey: PublisherKey }

/** Runs changes one at a time, in the order they were asked; a failed one does not stop the next. */
class Serial {
  private tail: Promise<unknown> = Promise.resolve()

  async run<T> (fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn)
    this.tail = run.catch(() => {})
    return await run
  }
}

export class KeyRing {
  private readonly changes = new Serial()

  private constructor (private readonly dir: string, private readonly keys: Map<string, KeyObject>) {}

  /** Loads `<home>/keys`, creating it and the default key when the home has no key yet. */
  static async open (home: string): Promise<KeyRing> {
    const dir = join(home, KEYS_DIR)
    await mkdir(dir, { recursive: true, mode: 0o700 })
    const keys = new Map<string, KeyObject>()
    for (const file of (await readdir(dir)).sort()) {
      if (!file.endsWith('.pem')) continue
      const name = file.slice(0, -'.pem'.length)
      const path = join(dir, file)
      const read = await readBounded(path, MAX_KEY_FILE_BYTES, 'a key file')
      if (!('text' in read)) throw new InvalidInputError(`publisher key ${path} ${'missing' in read ? 'went away while the folder was read' : read.problem}; move it away or fix it`)
      try {
        keys.set(name, privateKeyFromPem(read.text))
      } catch (err) {
        throw new InvalidInputError(`publisher key ${path} cannot be read: ${(err as Error).message}; move it away or fix it`)
      }
    }
    const ring = new KeyRing(dir, keys)
    if (keys.size === 0) await ring.create(DEFAULT_KEY)
    return ring
  }

  async create (name: string): Promise<KeyInfo> {
    if (!KEY_NAME.test(name)) throw new InvalidInputError(`invalid key name "${name.slice(0, 80)}": use 1-64 lower-case letters, digits, '.', '_' or '-'`)
    return await this.changes.run(async () => {
      if (this.keys.has(name)) throw new ConflictError(`a key named ${name} exists already`)
      const { privateKey } = generateKeyPairSync('ed25519')
      const path = join(this.dir, `${name}.pem`)
      await writeFileAtomic(path, privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, 0o600)
      await chmod(path, 0o600)
      this.keys.set(name, privateKey)
      return { name, publicKey: publisherKeyOf(createPublicKey(privateKey)) }
    })
  }

  list (): KeyInfo[] {
    return [...this.keys].map(([name, key]) => ({ name, publicKey: publisherKeyOf(createPublicKey(key)) }))
  }

  /** The private key to sign with: `name`, else `default`, else the only one. */
  signer (name?: string): KeyObject {
    const chosen = name ?? (this.keys.has(DEFAULT_KEY) ? DEFAULT_KEY : this.keys.size === 1 ? [...this.keys.keys()][0] : undefined)
    const key = chosen === undefined ? undefined : this.keys.get(chosen)
    if (key === undefined) throw new NotFoundError(name === undefined ? 'no default publisher key; name one with --key (see shoal keys list)' : `no publisher key named ${name} (see shoal keys list)`)
    return key
  }

  /** The private key in PEM, for moving a publisher to another host. */
  exportPrivate (name: string): string {
    const key = this.keys.get(name)
    if (key === undefined) throw new NotFoundError(`no publisher key named ${name}`)
    return key.export({ format: 'pem', type: 'pkcs8' }) as string
  }
}

/** `trust.json`: the rules added at run time. */
export class TrustFile {
  private readonly changes = new Serial()

  private constructor (private readonly path: string, private rules: TrustRule[]) {}

  /** Reads `<home>/trust.json` (none: no rules); see the module doc for what is refused. */
  static async open (home: string): Promise<TrustFile> {
    const path = join(home, TRUST_FILE)
    const read = await readBounded(path, MAX_TRUST_FILE_BYTES, TRUST_FILE)
    if ('missing' in read) return new TrustFile(path, [])
    if ('problem' in read) {
      throw new InvalidInputError(`${path} ${read.problem}; ${read.tooLarge === true ? `it holds at most ${MAX_TRUST_RULES} rules` : 'move it away or put the trust rules back in it'}`)
    }
    let value: unknown
    try {
      value = JSON.parse(read.text)
    } catch (err) {
      throw new InvalidInputError(`${path} is not valid JSON: ${(err as Error).message}`)
    }
    if (!Array.isArray(value)) throw new InvalidInputError(`${path} must be a list of {"key", "models"} rules`)
    if (value.length > MAX_TRUST_RULES) throw new InvalidInputError(`${path} holds ${value.length} rules, over the limit of ${MAX_TRUST_RULES}; use patterns (org/*) for fewer rules`)
    return new TrustFile(path, value.map((r: unknown, i) => trustEntry(r, `${path} entry ${i}`)))
  }

  list (): TrustRule[] {
    return [...this.rules]
  }

  /** Adds `rule` unless it is there already (false then). */
  async add (rule: TrustRule): Promise<boolean> {
    return await this.changes.run(async () => {
      if (this.rules.some(r => r.key === rule.key && r.models === rule.models)) return false
      if (this.rules.length >= MAX_TRUST_RULES) {
        throw new InvalidInputError(`${TRUST_FILE} holds ${this.rules.length} rules, the most allowed; remove some (shoal trust rm) or use patterns (org/*) for fewer rules`)
      }
      await this.save([...this.rules, rule])
      return true
    })
  }

  /** Removes the key's rules for `models`, or all its rules. Returns how many went. */
  async remove (key: PublisherKey, models?: string): Promise<number> {
    return await this.changes.run(async () => {
      const kept = this.rules.filter(r => !(r.key === key && (models === undefined || r.models === models)))
      const removed = this.rules.length - kept.length
      if (removed > 0) await this.save(kept)
      return removed
    })
  }

  private async save (rules: TrustRule[]): Promise<void> {
    await writeFileAtomic(this.path, `${JSON.stringify(rules, null, 2)}\n`)
    this.rules = rules
  }
}

/** One rule of `trust.json`, checked; `where` names it in the message. */
function trustEntry (r: unknown, where: string): TrustRule {
  if (typeof r !== 'object' || r === null || Array.isArray(r)) throw new InvalidInputError(`${where} is not a {"key", "models"} object`)
  const extra = Object.keys(r).find(k => k !== 'key' && k !== 'models')
  if (extra !== undefined) throw new InvalidInputError(`${where} has a field "${extra.slice(0, 64)}"; a rule has only "key" and "models"`)
  const { key, models } = r as { key?: unknown, models?: unknown }
  if (typeof key !== 'string') throw new InvalidInputError(`${where}: "key" must be a publisher key as text (z6Mk…)`)
  if (typeof models !== 'string') throw new InvalidInputError(`${where}: "models" must be a model-name pattern as text`)
  try {
    return checkTrustRule({ key, models })
  } catch (err) {
    throw new InvalidInputError(`${where}: ${(err as Error).message}`, { cause: err })
  }
}

type BoundedRead = { text: string } | { missing: true } | { problem: string, tooLarge?: true }

/**
 * A small file read whole, its size checked before it is read. Opened non-blocking, so a FIFO or a
 * device in its place is refused, not waited on; a file that changes size while it is read is
 * refused too. `what` names the file's kind in the size message.
 */
async function readBounded (path: string, max: number, what: string): Promise<BoundedRead> {
  let file
  try {
    file = await open(path, constants.O_RDONLY | constants.O_NONBLOCK)
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return { missing: true }
    return { problem: `cannot be opened (${(err as Error).message})` }
  }
  try {
    const st = await file.stat()
    if (!st.isFile()) return { problem: 'is not a regular file' }
    if (st.size > max) return { problem: `is ${st.size} bytes, over the ${max}-byte limit for ${what}`, tooLarge: true }
    // One byte more than the size: a file that grows while it is read is noticed, not followed.
    const buf = Buffer.alloc(st.size + 1)
    let length = 0
    for (;;) {
      const { bytesRead } = await file.read(buf, length, buf.length - length, length)
      length += bytesRead
      if (bytesRead === 0 || length === buf.length) break
    }
    if (length !== st.size) return { problem: 'changed while it was read; try again' }
    return { text: buf.subarray(0, length).toString('utf8') }
  } catch (err) {
    return { problem: `cannot be read (${(err as Error).message})` }
  } finally {
    await file.close()
  }
}
