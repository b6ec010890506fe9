/**
 * Head storage: the winning signed head of every (model, label) this node has accepted, the
 * history of heads that won in turn, and the manifests of versions heads name but this node does
 * not store (so it can show and search them, and serve them to peers).
 *
 * The store keeps bytes and records only; deciding which head wins is `heads/book.ts`'s job. Every
 * write is one synced batch: a head and its history entry land together or not at all.
 */
import type { VersionId } from '../core/digest.js'
import { decodeManifest } from '../core/manifest.js'
import { headKey, type SignedHead } from '../core/heads.js'
import type { HeadRecord, IndexDb } from './index-db.js'

/** @default 100 — heads kept per label in its history */
export const MAX_HEAD_HISTORY = 100

export interface StoredHead {
  bytes: Uint8Array
  receivedAt: number
  from?: string
}

export class HeadStore {
  constructor (private readonly index: IndexDb) {}

  /** Records `head` as the winner of its label and appends it to the label's history. */
  async put (head: SignedHead, meta: { receivedAt: number, from?: string }): Promise<void> {
    const h = head.head
    const key = headKey(h.model, h.label)
    const record: HeadRecord = { head: Buffer.from(head.bytes).toString('base64'), receivedAt: meta.receivedAt, ...(meta.from !== undefined ? { from: meta.from } : {}) }
    const logKey = `${key}\0${String(h.stamp.wall).padStart(16, '0')}\0${String(h.stamp.counter).padStart(10, '0')}`
    const ops = [
      { type: 'put' as const, sublevel: this.index.heads, key, value: record },
      { type: 'put' as const, sublevel: this.index.headLog, key: logKey, value: record }
    ]
    const old = await this.index.headLog.keys({ gt: `${key}\0`, lt: `${key}\u0001`, reverse: true }).all()
    for (const k of old.slice(MAX_HEAD_HISTORY - 1)) ops.push({ type: 'del' as const, sublevel: this.index.headLog, key: k } as never)
    await this.index.commit(ops, { doing: `recording a head of ${h.model}@${h.label}`, kept: 'the head was not accepted (nor published, nor passed on)' })
  }

  async get (model: string, label: string): Promise<StoredHead | undefined> {
    const r = await this.index.heads.get(headKey(model, label))
    return r === undefined ? undefined : toStored(r)
  }

  async * all (): AsyncGenerator<StoredHead> {
    for await (const r of this.index.heads.values()) yield toStored(r)
  }

  /** Heads that won `model@label` in turn, oldest first. */
  async history (model: string, label: string): Promise<StoredHead[]> {
    const key = headKey(model, label)
    const out: StoredHead[] = []
    for await (const r of this.index.headLog.values({ gt: `${key}\0`, lt: `${key}\u0001` })) out.push(toStored(r))
    return out
  }

  /** Keeps the manifest of a version a head names; the bytes MUST hash to `version` (checked). */
  async putKnownManifest (version: VersionId, bytes: Uint8Array): Promise<void> {
    decodeManifest(bytes, version)
    if (await this.index.manifests.get(version) !== undefined) return
    await this.index.commit([{ type: 'put', sublevel: this.index.known, key: version, value: bytes }], { doing: `keeping the manifest of ${version}`, kept: 'it was not kept' })
  }

  /** Manifest bytes of a version, stored or only known through a head. */
  async manifest (version: VersionId): Promise<Uint8Array | undefined> {
    return await this.index.manifests.get(version) ?? await this.index.known.get(version)
  }
}

function toStored (r: HeadRecord): StoredHead {
  return { bytes: new Uint8Array(Buffer.from(r.head, 'base64')), receivedAt: r.receivedAt, ...(r.from !== undefined ? { from: r.from } : {}) }
}
