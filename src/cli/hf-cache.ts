/**
 * The Hugging Face hub cache as the CLI sees it: where it is (`hfHubCache`, by the rules
 * `huggingface_hub` uses) and what it holds (`listHfCache`: each `models--<org>--<name>` folder
 * with its refs and snapshots), for `shoal import-hf` and `shoal export --hf`.
 *
 * Bounded: at most `MAX_HF_REPOS` repositories and `MAX_HF_REFS` refs each are looked at, a ref
 * file is read only when it is at most `MAX_REF_BYTES`, and a revision must look like one.
 * Nothing is followed outside the cache: snapshot folders are handed to the daemon's `add`, whose
 * walk allows links only into the repository's `blobs/`.
 */
import { lstat, open, readdir } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { InvalidInputError } from '../core/errors.js'
import { checkLabel, checkModelName } from '../core/names.js'

/** @default 10,000 */
export const MAX_HF_REPOS = 10_000
/** @default 64 */
export const MAX_HF_REFS = 64
/** @default 256 — a ref file holds a 40-character commit id */
const MAX_REF_BYTES = 256
const REVISION = /^[0-9a-f]{40}$/

/** `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub` (as `huggingface_hub`). */
export function hfHubCache (env: NodeJS.ProcessEnv): string {
  if ((env.HF_HUB_CACHE ?? '') !== '') return env.HF_HUB_CACHE ?? ''
  if ((env.HF_HOME ?? '') !== '') return join(env.HF_HOME ?? '', 'hub')
  return join((env.XDG_CACHE_HOME ?? '') !== '' ? env.XDG_CACHE_HOME ?? '' : join(homedir(), '.cache'), 'huggingface', 'hub')
}

export interface HfSnapshot {
  /** `org/name`, the repo id and the shoal model name. */
  name: string
  revision: string
  /** The folder to add. */
  path: string
  /** Refs (branches, tags) pointing at it that are valid shoal labels. */
  labels: string[]
}

export interface HfCacheListing { snapshots: HfSnapshot[], skipped: Array<{ what: string, why: string }> }

/** Every model snapshot of the cache at `hub`: those its refs name, else every snapshot folder. */
export async function listHfCache (hub: string, signal?: AbortSignal): Promise<HfCacheListing> {
  const entries = await readdir(hub).catch((err: NodeJS.ErrnoException) => {
    throw new InvalidInputError(`cannot read the Hugging Face cache ${hub}: ${err.code ?? err.message} (give the hub folder, e.g. ~/.cache/huggingface/hub)`)
  })
  const repos = entries.filter(e => e.startsWith('models--')).sort()
  const skipped: HfCacheListing['skipped'] = []
  if (repos.length > MAX_HF_REPOS) skipped.push({ what: hub, why: `more than ${MAX_HF_REPOS} models; only the first ${MAX_HF_REPOS} are imported` })
  const snapshots: HfSnapshot[] = []
  for (const repo of repos.slice(0, MAX_HF_REPOS)) {
    signal?.throwIfAborted()
    const name = repo.slice('models--'.length).split('--').join('/')
    try {
      checkModelName(name)
    } catch (err) {
      skipped.push({ what: repo, why: (err as Error).message })
      continue
    }
    const dir = join(hub, repo)
    const revisions = new Map<string, string[]>()
    for (const ref of (await readdir(join(dir, 'refs')).catch(() => [] as string[])).slice(0, MAX_HF_REFS)) {
      const revision = await readRef(join(dir, 'refs', ref))
      if (revision === undefined) { skipped.push({ what: `${name} ref ${ref}`, why: 'not a ref file holding a commit id' }); continue }
      const labels = revisions.get(revision) ?? []
      if (isLabel(ref)) labels.push(ref)
      revisions.set(revision, labels)
    }
    if (revisions.size === 0) {
      for (const revision of (await readdir(join(dir, 'snapshots')).catch(() => [] as string[])).slice(0, MAX_HF_REFS)) if (REVISION.test(revision)) revisions.set(revision, [])
    }
    if (revisions.size === 0) { skipped.push({ what: name, why: 'no snapshot' }); continue }
    for (const [revision, labels] of revisions) {
      const path = join(dir, 'snapshots', revision)
      const info = await lstat(path).catch(() => undefined)
      if (info?.isDirectory() !== true) { skipped.push({ what: `${name}@${revision}`, why: 'its snapshot folder is missing' }); continue }
      snapshots.push({ name, revision, path, labels: labels.sort() })
    }
  }
  return { snapshots, skipped }
}

async function readRef (path: string): Promise<string | undefined> {
  const info = await lstat(path).catch(() => undefined)
  if (info?.isFile() !== true || info.size > MAX_REF_BYTES) return undefined
  const file = await open(path, 'r')
  try {
    const text = (await file.readFile('utf8')).trim()
    return REVISION.test(text) ? text : undefined
  } finally {
    await file.close()
  }
}

function isLabel (ref: string): boolean {
  try {
    checkLabel(ref)
    return true
  } catch {
    return false
  }
}
