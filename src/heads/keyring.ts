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
 * the one before left: two `trust add` requests at once used to both start from the same list, and
 * the second write dropped the first rule (the node then refused that publisher's heads for good).
 * A change whose write failed leaves the file and the list as they were, and the next one runs.
 */
import { generateKeyPairSync, createPublicKey, type KeyObject } from 'node:crypto'
import { mkdir, readFile, readdir, chmod } from 'node:fs/promises'
import { join } from 'node:path'
import { ConflictError, InvalidInputError, NotFoundError } from '../core/errors.js'
import { privateKeyFromPem, publisherKeyOf, type PublisherKey } from '../core/heads.js'
import { checkTrustRule, type TrustRule } from '../core/trust.js'
import { writeFileAtomic } from '../store/fsutil.js'

export const KEYS_DIR = 'keys'
export const TRUST_FILE = 'trust.json'
/** @default 'default' — the key made at first start and used when none is named */
export const DEFAULT_KEY = 'default'
const KEY_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/

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
      try {
        keys.set(name, privateKeyFromPem(await readFile(join(dir, file), 'utf8')))
      } catch (err) {
        throw new InvalidInputError(`publisher key ${join(dir, file)} cannot be read: ${(err as Error).message}; move it away or fix it`)
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

  static async open (home: string): Promise<TrustFile> {
    const path = join(home, TRUST_FILE)
    let text: string
    try {
      text = await readFile(path, 'utf8')
    } catch {
      return new TrustFile(path, [])
    }
    let value: unknown
    try {
      value = JSON.parse(text)
    } catch (err) {
      throw new InvalidInputError(`${path} is not valid JSON: ${(err as Error).message}`)
    }
    if (!Array.isArray(value)) throw new InvalidInputError(`${path} must be a list of {"key", "models"} rules`)
    return new TrustFile(path, value.map((r: { key: string, models: string }) => checkTrustRule(r)))
  }

  list (): TrustRule[] {
    return [...this.rules]
  }

  /** Adds `rule` unless it is there already (false then). */
  async add (rule: TrustRule): Promise<boolean> {
    return await this.changes.run(async () => {
      if (this.rules.some(r => r.key === rule.key && r.models === rule.models)) return false
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
