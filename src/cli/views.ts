/** Human renderings of RPC answers. */
import type { SearchResult } from '../store/search-index.js'
import type { LeaseRow, HeadHistoryRow, HeadRow, KeyRow, LabelResult, ModelRow, PeerRow, ShowResult, TrustRow } from '../rpc/api.js'
import type { Activation, Stamp } from '../core/heads.js'
import type { ColdReport } from '../store/cold.js'
import type { GcReport } from '../store/gc.js'
import type { VersionInfo } from '../store/store.js'
import type { VerifyReport } from '../store/verify.js'
import { bytes, count, pc, shortId, table, time } from './format.js'

export function printModels (models: ModelRow[]): void {
  if (models.length === 0) { console.log('no models yet: shoal add <folder> --name <name>'); return }
  console.log(table(['model', 'versions', 'newest', 'created', 'size', 'labels'], models.map(m => [
    m.name, m.versions, shortId(m.newest.version), time(m.newest.created), bytes(m.newest.size),
    Object.entries(m.labels).map(([l, v]) => `${l}→${shortId(v)}`).join(' ')
  ])))
}

export function printVersions (versions: VersionInfo[]): void {
  console.log(table(['version', 'created', 'size', 'files', 'labels', 'pinned', 'state'], versions.map(v => [
    v.version, time(v.created), bytes(v.size), v.files, v.labels.join(', '), v.pinned ? 'yes' : '',
    !v.complete ? pc.red('damaged') : v.cold !== undefined ? `compressed (saves ${bytes(v.cold.savedBytes)})` : 'ok'
  ])))
}

export function printShow (v: ShowResult, tensorsPerFile: number): void {
  const s = v.structure
  console.log(`${pc.bold(v.name)}@${v.version}`)
  console.log(`  created     ${time(v.created)}${v.parent !== null ? `  (parent ${shortId(v.parent)})` : ''}`)
  console.log(`  labels      ${v.labels.join(', ') || '-'}${v.pinned ? '   pinned' : ''}${v.complete ? '' : pc.red(`   DAMAGED: missing ${v.missing.join(', ')}`)}`)
  console.log(`  path        ${v.path}${v.cold !== undefined ? pc.dim('   (compressed: resolve --ensure or export brings its files back)') : ''}`)
  if (v.cold !== undefined) console.log(`  compressed  since ${time(v.cold.at)}, saves ${bytes(v.cold.savedBytes)}`)
  if (v.parentShared !== undefined) console.log(`  dedup       ${(v.parentShared.bytes * 100).toFixed(1)}% of bytes (${(v.parentShared.chunks * 100).toFixed(1)}% of chunks) shared with the parent version`)
  console.log(`  size        ${bytes(s.totalSize)} in ${v.files.length} files`)
  console.log(`  blocks      ${bytes(v.blockSize)} (manifest schema ${v.schema})`)
  console.log(`  formats     ${s.formats.join(', ')}`)
  console.log(`  parameters  ${count(s.parameterCount)} (${s.parameterCount}) in ${s.tensorCount} tensors; dtypes ${s.dtypes.join(', ') || '-'}`)
  if (s.architecture !== undefined) console.log(`  architecture ${s.architecture}`)
  const m = v.metadata
  for (const key of ['description', 'framework', 'task', 'license'] as const) {
    if (m[key] !== undefined) console.log(`  ${key.padEnd(11)} ${m[key]}`)
  }
  if (m.tags !== undefined) console.log(`  tags        ${Object.entries(m.tags).map(([k, t]) => t === '' ? k : `${k}=${t}`).join(' ')}`)
  if (m.hyperparameters !== undefined) console.log(`  hyperparams ${JSON.stringify(m.hyperparameters)}`)
  if (m.inputs !== undefined) console.log(`  inputs      ${m.inputs.map(i => `${i.name}${i.shape !== undefined ? `[${i.shape.join(',')}]` : ''}`).join(', ')}`)
  if (m.outputs !== undefined) console.log(`  outputs     ${m.outputs.map(i => `${i.name}${i.shape !== undefined ? `[${i.shape.join(',')}]` : ''}`).join(', ')}`)
  console.log('')
  console.log(table(['file', 'format', 'size', 'chunks', 'tensors', 'params'], v.files.map(f => [
    f.path, f.format, bytes(f.size), f.chunks, f.structure?.tensors.length ?? '', f.structure !== undefined ? count(f.structure.parameterCount) : ''
  ])))
  for (const f of v.files) {
    const tensors = f.structure?.tensors ?? []
    if (tensors.length === 0) continue
    console.log(`\n${pc.bold(f.path)}${f.structure?.architecture !== undefined ? ` (${f.structure.architecture})` : ''}`)
    console.log(table(['tensor', 'dtype', 'shape', 'size'], tensors.slice(0, tensorsPerFile).map(t => [t.name, t.dtype, `[${t.shape.join(', ')}]`, bytes(t.length)])))
    if (tensors.length > tensorsPerFile) console.log(pc.dim(`  … ${tensors.length - tensorsPerFile} more (--tensors N, or --json)`))
  }
}

export function printVerify (r: VerifyReport): void {
  console.log(`checked ${r.blobs} blobs (${bytes(r.bytes)}, ${r.chunks} chunks) and ${r.versions} versions`)
  if (r.problems.length === 0) { console.log(pc.green('store is consistent')); return }
  for (const p of r.problems) console.log(`${pc.red(p.kind)} ${p.subject}: ${p.detail}`)
  if (r.quarantined.length > 0) console.log(`quarantined ${r.quarantined.length} blobs (kept under quarantine/)`)
  if (r.damaged.length > 0) console.log(`damaged versions (re-add or pull them): ${r.damaged.join(', ')}`)
}

export function printCompress (r: ColdReport): void {
  console.log(`compressed ${r.name}@${r.version}: ${bytes(r.rawBytes)} of files removed, ${bytes(r.storedBytes)} of compressed chunks written (${r.chunks} chunks), ${bytes(r.rawBytes - r.storedBytes)} saved`)
}

export function printGc (r: GcReport): void {
  const verb = r.dryRun ? 'would remove' : 'removed'
  for (const v of r.versions) console.log(`${verb} version ${v.name}@${v.version} (${bytes(v.size)})`)
  for (const b of r.blobs) console.log(`${verb} blob ${b.digest} (${bytes(b.size)})`)
  for (const p of r.partials) console.log(`${verb} partial file ${p.digest} of an abandoned pull (${bytes(p.size)})`)
  if (r.cold !== undefined) console.log(`${r.dryRun ? 'would write' : 'wrote'} ${r.cold.written} compressed chunks that compressed versions need from blobs going now; ${verb} ${r.cold.removed} no compressed version needs (${bytes(r.cold.removedBytes)})`)
  console.log(`${verb} ${r.versions.length} versions, ${r.blobs.length} blobs, ${r.partials.length} partial files, ${bytes(r.bytes)}`)
}

export function printPeers (rows: PeerRow[]): void {
  if (rows.length === 0) { console.log('no peers: start the daemon with --peer <multiaddr>, or --mdns on a LAN'); return }
  console.log(table(['peer', 'connected', 'received', 'offences', 'banned until', 'address'], rows.map(r => [
    shortId(r.peerId), r.connected ? 'yes' : '', bytes(r.bytesReceived),
    Object.entries(r.offences).map(([k, n]) => `${k}×${n}`).join(' '),
    r.bannedUntil !== undefined ? time(r.bannedUntil) : '', r.addresses[0] ?? ''
  ])))
  for (const r of rows) if (r.note !== undefined) console.log(`${shortId(r.peerId)}: ${r.note}`)
}

function stamp (s: Stamp): string {
  return `${time(s.wall)}${s.counter > 0 ? ` +${s.counter}` : ''}`
}

function activation (a: Activation): string {
  const jitter = a.jitterMs !== undefined && a.jitterMs > 0 ? `, jitter ${Math.round(a.jitterMs / 1000)}s` : ''
  if (a.mode === 'hot') return `hot${jitter}`
  return `cold ${a.at !== undefined ? `at ${time(a.at)}` : 'manual'}${jitter}`
}

export function printLabelResult (r: LabelResult): void {
  const to = r.version ?? 'nothing (removed)'
  console.log(`${r.name}@${r.label} → ${to}${r.previous !== null ? ` (was ${r.previous})` : ''}`)
  if (r.stamp !== undefined) console.log(pc.dim(`signed by ${r.publisher ?? '?'}, stamp ${r.stamp}${r.activation !== undefined ? `, ${activation(r.activation)}` : ''}`))
}

export function printHeads (rows: HeadRow[]): void {
  if (rows.length === 0) { console.log('no heads yet: publish one with shoal label set, or connect to peers that have some'); return }
  console.log(table(['label', 'head', 'local', 'state', 'stamp', 'activation', 'publisher'], rows.map(r => [
    `${r.model}@${r.label}`, r.version === null ? '(removed)' : shortId(r.version), r.local === null ? '' : shortId(r.local),
    `${r.state}${r.followed ? '' : pc.dim(' (not followed)')}${r.error !== undefined ? ` ${r.error}` : ''}`,
    stamp(r.stamp), activation(r.activation) + (r.activateAt !== undefined ? ` → ${time(r.activateAt)}` : ''), shortId(r.publisher)
  ])))
}

export function printHeadHistory (rows: HeadHistoryRow[]): void {
  console.log(table(['stamp', 'version', 'previous', 'activation', 'publisher'], rows.map(r => [
    stamp(r.stamp), r.version === null ? '(removed)' : r.version, r.previous ?? '', activation(r.activation), shortId(r.publisher)
  ])))
}

export function printKeys (rows: KeyRow[]): void {
  console.log(table(['name', 'public key', 'trusted here for'], rows.map(r => [r.name, r.publicKey, r.trusted.join(', ')])))
}

export function printTrust (rows: TrustRow[]): void {
  console.log(table(['key', 'models', 'from'], rows.map(r => [r.key, r.models, r.source])))
}

export function printLeases (rows: LeaseRow[]): void {
  if (rows.length === 0) { console.log('no leases'); return }
  console.log(table(['holder', 'version', 'expires', 'id'], rows.map(r => [r.holder, `${r.model}@${shortId(r.version)}`, time(r.expiresAt), r.id])))
}

export function printSearch (r: SearchResult, similar: boolean): void {
  if (r.rows.length === 0) { console.log('no match'); return }
  console.log(table([...(similar ? ['score'] : []), 'model', 'version', 'created', 'params', 'size', 'framework', 'task', 'architecture', 'labels', 'here'], r.rows.map(row => [
    ...(similar ? [(row.score ?? 0).toFixed(2)] : []),
    row.model, shortId(row.version), time(row.created), row.params > 0 ? count(row.params) : '', bytes(row.size),
    row.framework ?? '', row.task ?? '', row.architecture ?? '', row.labels.join(', '), row.local ? 'yes' : 'no'
  ])))
  if (r.total > r.rows.length) console.log(pc.dim(`${r.rows.length} of ${r.total}`))
}
