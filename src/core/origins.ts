/**
 * Which HTTP(S) origins (web seeds) a node may fetch from: the `transfer.origins` allow-list.
 *
 * A manifest names origin URLs per file, and anyone can write a manifest: a peer's manifest whose
 * origins point at `http://127.0.0.1:<port>/internal/…` would make the node send requests inside
 * its own network. So origins listed by a manifest from elsewhere are used only when they match
 * an entry here; the list is empty by default (remote origins unused). Origins of a version this
 * node added itself (`add --origin`) are the operator's own and need no entry.
 *
 * Entries:
 * - a host, `models.example.com` or `10.0.0.5:8080`: any http(s) URL on that host name (any port),
 *   or on exactly that port when one is given;
 * - a URL prefix, `https://models.example.com/org/`: same scheme, host and port, and a path that
 *   starts with the prefix's path at a segment boundary (`/org` matches `/org` and `/org/x`, never
 *   `/org-private`).
 * URLs are compared after the WHATWG URL parser normalised them (case of host, `.`/`..` segments,
 * percent-encoded dots, default ports), so `https://h/org/../internal` is `/internal`. A URL with
 * credentials never matches. No wildcards.
 */
import { InvalidInputError } from './errors.js'

/** @default 2048 — characters of one allow-list entry or origin URL */
export const MAX_ORIGIN_URL_LENGTH = 2048

type Entry = { kind: 'host', hostname: string, port?: string } | { kind: 'prefix', protocol: string, hostname: string, port: string, path: string }

const HOST = /^(?:\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)(?::(\d{1,5}))?$/i

export class OriginAllowList {
  private readonly entries: Entry[]

  /** @throws InvalidInputError naming an entry that is neither a host nor an http(s) URL prefix */
  constructor (readonly list: readonly string[] = []) {
    this.entries = list.map(parseEntry)
  }

  get empty (): boolean {
    return this.entries.length === 0
  }

  /** Whether `url` (an origin a manifest lists, or a redirect target) may be fetched. */
  allows (url: string): boolean {
    if (this.entries.length === 0 || url.length > MAX_ORIGIN_URL_LENGTH) return false
    let u: URL
    try {
      u = new URL(url)
    } catch {
      return false
    }
    if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.username !== '' || u.password !== '') return false
    const port = effectivePort(u)
    return this.entries.some(e => e.kind === 'host'
      ? e.hostname === u.hostname && (e.port === undefined || e.port === port)
      : e.protocol === u.protocol && e.hostname === u.hostname && e.port === port && pathUnder(u.pathname, e.path))
  }
}

/** Checks one allow-list entry (for config validation); returns it unchanged. */
export function checkOriginEntry (entry: string): string {
  parseEntry(entry)
  return entry
}

function parseEntry (entry: string): Entry {
  const hint = 'use a host (models.example.com, 10.0.0.5:8080) or an http(s) URL prefix (https://models.example.com/org/)'
  if (entry.length === 0 || entry.length > MAX_ORIGIN_URL_LENGTH) throw new InvalidInputError(`origin allow-list entry of ${entry.length} characters: ${hint}`)
  if (entry.includes('://')) {
    let u: URL
    try {
      u = new URL(entry)
    } catch {
      throw new InvalidInputError(`origin allow-list entry "${entry.slice(0, 80)}" is not a URL: ${hint}`)
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new InvalidInputError(`origin allow-list entry "${entry.slice(0, 80)}" is ${u.protocol} URL: ${hint}`)
    if (u.username !== '' || u.password !== '' || u.search !== '' || u.hash !== '') throw new InvalidInputError(`origin allow-list entry "${entry.slice(0, 80)}" has credentials, a query or a fragment: ${hint}`)
    return { kind: 'prefix', protocol: u.protocol, hostname: u.hostname, port: effectivePort(u), path: u.pathname }
  }
  const m = HOST.exec(entry)
  if (m === null || Number(m[1] ?? 0) > 65535) throw new InvalidInputError(`origin allow-list entry "${entry.slice(0, 80)}" is neither a host nor a URL: ${hint}`)
  // Normalised the way the URL parser writes host names (lower case, IPv6 in brackets).
  const u = new URL(`http://${entry}`)
  return { kind: 'host', hostname: u.hostname, ...(m[1] !== undefined ? { port: String(Number(m[1])) } : {}) }
}

function effectivePort (u: URL): string {
  return u.port !== '' ? u.port : u.protocol === 'https:' ? '443' : '80'
}

function pathUnder (path: string, prefix: string): boolean {
  if (prefix === '/' || path === prefix) return true
  if (!path.startsWith(prefix)) return false
  return prefix.endsWith('/') || path[prefix.length] === '/'
}
