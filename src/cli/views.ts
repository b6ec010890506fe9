/** Human renderings of RPC answers: each returns the text to print (no trailing newline). */
import type { SearchResult } from '../store/search-index.js'
import type { DfResult, LeaseRow, HeadHistoryRow, HeadRow, KeyRow, LabelResult, ModelRow, PeerRow, ShowFile, ShowResult, TrustRow } from '../rpc/api.js'
import type { Activation, Stamp } from '../core/heads.js'
import type { ColdReport } from '../store/cold.js'
import type { GcReport } from '../store/gc.js'
import type { VersionInfo } from '../store/store.js'
import type { VerifyReport } from '../store/verify.js'
import { bytes, count, pc, shortId, table, time } from './format.js'

export function renderModels (models: ModelRow[]): string {
  const lines: string[] = []
  if (models.length === 0) return 'no models yet: shoal add <folder> --name <name>'
  lines.push(table(['model', 'versions', 'newest', 'created', 'size', 'labels'], models.map(m => [
    m.name, m.versions, shortId(m.newest.version), time(m.newest.created), bytes(m.newest.size),
    Object.entries(m.labels).map(([l, v]) => `${l}→${shortId(v)}`).join(' ')
  ])))
  return lines.join('\n')
}

export function renderVersions (versions: VersionInfo[]): string {
  const lines: string[] = []
  lines.push(table(['version', 'created', 'size', 'files', 'labels', 'pinned', 'state'], versions.map(v => [
    shortId(v.version), time(v.created), bytes(v.size), v.files, v.labels.join(', '), v.pinned ? 'yes' : '',
    !v.complete ? pc.red('damaged') : v.cold !== undefined ? `compressed (saves ${bytes(v.cold.savedBytes)})` : 'ok'
  ])))
  return lines.join('\n')
}

export function renderShow (v: ShowResult, tensorsPerFile: number): string {
  const lines: string[] = []
  const s = v.structure
  lines.push(`${pc.bold(v.name)}@${v.version}`)
  lines.push(`  created     ${time(v.created)}${v.parent !== null ? `  (parent ${shortId(v.parent)})` : ''}`)
  lines.push(`  labels      ${v.labels.join(', ') || '-'}${v.pinned ? '   pinned' : ''}${v.complete ? '' : pc.red(`   DAMAGED: missing ${v.missing.join(', ')}`)}`)
  lines.push(`  path        ${v.path}${v.cold !== undefined ? pc.dim('   (compressed: resolve --ensure or export brings its files back)') : ''}`)
  if (v.cold !== undefined) lines.push(`  compressed  since ${time(v.cold.at)}, saves ${bytes(v.cold.savedBytes)}`)
  if (v.parentShared !== undefined) lines.push(`  dedup       ${(v.parentShared.bytes * 100).toFixed(1)}% of bytes (${(v.parentShared.chunks * 100).toFixed(1)}% of chunks) shared with the parent version`)
  lines.push(`  size        ${bytes(s.totalSize)} in ${v.files.length} files`)
  lines.push(`  blocks      ${bytes(v.blockSize)} (manifest schema ${v.schema})`)
  lines.push(`  formats     ${s.formats.join(', ')}`)
  lines.push(`  parameters  ${count(s.parameterCount)} (${s.parameterCount}) in ${s.tensorCount} tensors; dtypes ${s.dtypes.join(', ') || '-'}`)
  if (s.architecture !== undefined) lines.push(`  architecture ${s.architecture}`)
  for (const f of v.files) {
    // Hugging Face config files: what they declare (model_type, torch_dtype, generation defaults).
    const meta = f.format === 'other' ? Object.entries(f.structure?.metadata ?? {}) : []
    if (meta.length > 0) lines.push(`  ${f.path.padEnd(11)} ${meta.map(([k, x]) => `${k}=${typeof x === 'string' ? x : JSON.stringify(x)}`).join(' ')}`)
    const facts = fileFacts(f)
    for (const [i, fact] of facts.entries()) lines.push(`  ${(i === 0 ? f.path : '').padEnd(Math.max(11, f.path.length))} ${fact}`)
  }
  const m = v.metadata
  for (const key of ['description', 'framework', 'task', 'license'] as const) {
    if (m[key] !== undefined) lines.push(`  ${key.padEnd(11)} ${m[key]}`)
  }
  if (m.tags !== undefined) lines.push(`  tags        ${Object.entries(m.tags).map(([k, t]) => t === '' ? k : `${k}=${t}`).join(' ')}`)
  if (m.hyperparameters !== undefined) lines.push(`  hyperparams ${JSON.stringify(m.hyperparameters)}`)
  if (m.inputs !== undefined) lines.push(`  inputs      ${m.inputs.map(i => `${i.name}${i.shape !== undefined ? `[${i.shape.join(',')}]` : ''}`).join(', ')}`)
  if (m.outputs !== undefined) lines.push(`  outputs     ${m.outputs.map(i => `${i.name}${i.shape !== undefined ? `[${i.shape.join(',')}]` : ''}`).join(', ')}`)
  lines.push('')
  lines.push(table(['file', 'format', 'size', 'chunks', 'tensors', 'params'], v.files.map(f => [
    f.path, f.format, bytes(f.size), f.chunks, f.format === 'other' ? '' : f.structure?.tensors.length ?? '', f.structure !== undefined && f.format !== 'other' ? count(f.structure.parameterCount) : ''
  ])))
  for (const f of v.files) {
    const tensors = f.structure?.tensors ?? []
    if (tensors.length === 0) continue
    lines.push(`\n${pc.bold(f.path)}${f.structure?.architecture !== undefined ? ` (${f.structure.architecture})` : ''}`)
    lines.push(table(['tensor', 'dtype', 'shape', 'size'], tensors.slice(0, tensorsPerFile).map(t => [t.name, t.dtype, `[${t.shape.join(', ')}]`, bytes(t.length)])))
    if (tensors.length > tensorsPerFile) lines.push(pc.dim(`  … ${tensors.length - tensorsPerFile} more (--tensors N, or --json)`))
  }
  return lines.join('\n')
}

/**
 * GGUF `general.file_type` values (llama.cpp's `llama_ftype`): the quantization a file was made
 * with, as people name it (`Q4_K_M`). Unknown values are shown as numbers.
 */
const GGUF_FILE_TYPES: Readonly<Record<number, string>> = {
  0: 'F32', 1: 'F16', 2: 'Q4_0', 3: 'Q4_1', 7: 'Q8_0', 8: 'Q5_0', 9: 'Q5_1', 10: 'Q2_K', 11: 'Q3_K_S',
  12: 'Q3_K_M', 13: 'Q3_K_L', 14: 'Q4_K_S', 15: 'Q4_K_M', 16: 'Q5_K_S', 17: 'Q5_K_M', 18: 'Q6_K',
  19: 'IQ2_XXS', 20: 'IQ2_XS', 21: 'Q2_K_S', 22: 'IQ3_XS', 23: 'IQ3_XXS', 24: 'IQ1_S', 25: 'IQ4_NL',
  26: 'IQ3_S', 27: 'IQ3_M', 28: 'IQ2_S', 29: 'IQ2_M', 30: 'IQ4_XS', 31: 'IQ1_M', 32: 'BF16',
  36: 'TQ1_0', 37: 'TQ2_0'
}

/** Graph inputs or outputs `show` lists before it says how many more there are. */
const SHOWN_IO = 8

/**
 * The key facts of a GGUF or ONNX file, one line each (none for other formats): for GGUF its
 * architecture and name, context length, quantization (file type and tensor types), vocabulary
 * size and whether it carries a chat template; for ONNX its IR version, opsets, producer, node
 * count, and its inputs and outputs with dtypes and shapes.
 */
export function fileFacts (f: ShowFile): string[] {
  const s = f.structure
  if (s === undefined) return []
  if (f.format === 'gguf') {
    const m = s.metadata
    const arch = typeof m['general.architecture'] === 'string' ? m['general.architecture'] : s.architecture
    const name = m['general.name']
    const facts = [`GGUF ${arch ?? 'architecture unknown'}${typeof name === 'string' ? ` ${JSON.stringify(name)}` : ''}`]
    const context = arch === undefined ? undefined : m[`${arch}.context_length`]
    if (typeof context === 'number') facts.push(`context ${context}`)
    const fileType = m['general.file_type']
    if (typeof fileType === 'number') facts.push(`quantization ${GGUF_FILE_TYPES[fileType] ?? `file type ${fileType}`}`)
    if (s.dtypes.length > 0) facts.push(`tensor types ${s.dtypes.join(', ')}`)
    const tokens = m['tokenizer.ggml.tokens']
    const vocabulary = Array.isArray(tokens) ? tokens.length : typeof tokens === 'string' ? Number(/× (\d+)\]$/.exec(tokens)?.[1]) : Number.NaN
    if (Number.isFinite(vocabulary)) facts.push(`vocabulary ${vocabulary} tokens${typeof m['tokenizer.ggml.model'] === 'string' ? ` (${m['tokenizer.ggml.model']})` : ''}`)
    if (m['tokenizer.chat_template'] !== undefined) facts.push('chat template')
    return [facts.join(' · ')]
  }
  const g = s.graph
  if (f.format !== 'onnx' || g === undefined) return []
  const opsets = Object.entries(g.opsets).map(([domain, version]) => `${domain} ${version}`).join(', ')
  const head = [
    `ONNX${g.irVersion !== undefined ? ` IR ${g.irVersion}` : ''}`,
    `opsets ${opsets || '-'}`,
    ...(g.producer !== undefined && g.producer !== '' ? [`producer ${g.producer}${g.producerVersion !== undefined && g.producerVersion !== '' ? ` ${g.producerVersion}` : ''}`] : []),
    `${g.nodeCount} nodes`
  ]
  const io = (label: string, list: typeof g.inputs): string => {
    const shown = list.slice(0, SHOWN_IO).map(i => `${i.name} ${i.dtype}[${i.shape.join(', ')}]`)
    if (list.length > SHOWN_IO) shown.push(`… ${list.length - SHOWN_IO} more`)
    return `${label} ${shown.join(', ') || '-'}`
  }
  return [head.join(' · '), io('inputs ', g.inputs), io('outputs', g.outputs)]
}

export function renderVerify (r: VerifyReport): string {
  const lines: string[] = []
  lines.push(`checked ${r.blobs} blobs (${bytes(r.bytes)}, ${r.chunks} chunks) and ${r.versions} versions`)
  if (r.problems.length === 0) { lines.push(pc.green('store is consistent')); return lines.join('\n') }
  for (const p of r.problems) lines.push(`${pc.red(p.kind)} ${p.subject}: ${p.detail}`)
  if (r.quarantined.length > 0) lines.push(`quarantined ${r.quarantined.length} blobs (kept under quarantine/)`)
  if (r.damaged.length > 0) lines.push(`damaged versions (re-add or pull them): ${r.damaged.join(', ')}`)
  return lines.join('\n')
}

export function renderCompress (r: ColdReport): string {
  return `compressed ${r.name}@${r.version}: ${bytes(r.rawBytes)} of files removed, ${bytes(r.storedBytes)} of compressed chunks written (${r.chunks} chunks), ${bytes(r.rawBytes - r.storedBytes)} saved`
}

export function renderGc (r: GcReport): string {
  const lines: string[] = []
  const verb = r.dryRun ? 'would remove' : 'removed'
  for (const v of r.versions) lines.push(`${verb} version ${v.name}@${v.version} (${bytes(v.size)})`)
  for (const b of r.blobs) lines.push(`${verb} blob ${b.digest} (${bytes(b.size)})`)
  for (const p of r.partials) lines.push(`${verb} partial file ${p.digest} of an abandoned pull (${bytes(p.size)})`)
  if (r.cold !== undefined) lines.push(`${r.dryRun ? 'would write' : 'wrote'} ${r.cold.written} compressed chunks that compressed versions need from blobs going now; ${verb} ${r.cold.removed} no compressed version needs (${bytes(r.cold.removedBytes)})`)
  lines.push(`${verb} ${r.versions.length} versions, ${r.blobs.length} blobs, ${r.partials.length} partial files, ${bytes(r.bytes)}`)
  return lines.join('\n')
}

export function renderPeers (rows: PeerRow[]): string {
  const lines: string[] = []
  if (rows.length === 0) return 'no peers: start the daemon with --peer <multiaddr>, or --mdns on a LAN'
  lines.push(table(['peer', 'connected', 'received', 'on the wire', 'sent', 'on the wire', 'offences', 'banned until', 'address'], rows.map(r => [
    shortId(r.peerId), r.connected ? 'yes' : '', bytes(r.bytesReceived), wireOf(r.bytesReceived, r.wireBytesReceived),
    bytes(r.bytesSent), wireOf(r.bytesSent, r.wireBytesSent),
    Object.entries(r.offences).map(([k, n]) => `${k}×${n}`).join(' '),
    r.bannedUntil !== undefined ? time(r.bannedUntil) : '', r.addresses[0] ?? ''
  ])))
  for (const r of rows) if (r.note !== undefined) lines.push(`${shortId(r.peerId)}: ${r.note}`)
  return lines.join('\n')
}

/** Bytes on the link, with their share of the bytes they carried when compression saved some. */
function wireOf (raw: number, wire: number): string {
  return wire < raw && raw > 0 ? `${bytes(wire)} (${Math.round(100 * wire / raw)}%)` : bytes(wire)
}

function stamp (s: Stamp): string {
  return `${time(s.wall)}${s.counter > 0 ? ` +${s.counter}` : ''}`
}

function activation (a: Activation): string {
  const jitter = a.jitterMs !== undefined && a.jitterMs > 0 ? `, jitter ${Math.round(a.jitterMs / 1000)}s` : ''
  if (a.mode === 'hot') return `hot${jitter}`
  return `cold ${a.at !== undefined ? `at ${time(a.at)}` : 'manual'}${jitter}`
}

export function renderLabelResult (r: LabelResult): string {
  const lines: string[] = []
  const to = r.version ?? 'nothing (removed)'
  lines.push(`${r.name}@${r.label} → ${to}${r.previous !== null ? ` (was ${r.previous})` : ''}`)
  if (r.stamp !== undefined) lines.push(pc.dim(`signed by ${r.publisher ?? '?'}, stamp ${r.stamp}${r.activation !== undefined ? `, ${activation(r.activation)}` : ''}`))
  return lines.join('\n')
}

/** Why a node holds no heads, from its status: nothing offered yet, or heads refused as untrusted. */
export interface NoHeadsContext { peers: number, untrusted: number, publishers: Array<{ publisher: string, model: string }> }

export function renderHeads (rows: HeadRow[], none?: NoHeadsContext): string {
  const lines: string[] = []
  if (rows.length === 0) return noHeads(none)
  lines.push(table(['label', 'head', 'local', 'state', 'stamp', 'activation', 'publisher'], rows.map(r => [
    `${r.model}@${r.label}`, r.version === null ? '(removed)' : shortId(r.version), r.local === null ? '' : shortId(r.local),
    `${r.state}${r.followed ? '' : pc.dim(' (not followed)')}${r.error !== undefined ? ` ${r.error}` : ''}`,
    stamp(r.stamp), activation(r.activation) + (r.activateAt !== undefined ? ` → ${time(r.activateAt)}` : ''), shortId(r.publisher)
  ])))
  return lines.join('\n')
}

export function renderHeadHistory (rows: HeadHistoryRow[]): string {
  const lines: string[] = []
  lines.push(table(['stamp', 'version', 'previous', 'activation', 'publisher'], rows.map(r => [
    stamp(r.stamp), r.version === null ? '(removed)' : shortId(r.version), r.previous !== null ? shortId(r.previous) : '', activation(r.activation), shortId(r.publisher)
  ])))
  return lines.join('\n')
}

export function renderKeys (rows: KeyRow[]): string {
  const lines: string[] = []
  lines.push(table(['name', 'public key', 'trusted here for'], rows.map(r => [r.name, r.publicKey, r.trusted.join(', ')])))
  return lines.join('\n')
}

export function renderTrust (rows: TrustRow[]): string {
  const lines: string[] = []
  lines.push(table(['key', 'models', 'from'], rows.map(r => [r.key, r.models, r.source])))
  return lines.join('\n')
}

export function renderLeases (rows: LeaseRow[]): string {
  const lines: string[] = []
  if (rows.length === 0) return 'no leases'
  lines.push(table(['holder', 'version', 'expires', 'id'], rows.map(r => [r.holder, `${r.model}@${shortId(r.version)}`, time(r.expiresAt), r.id])))
  return lines.join('\n')
}

export function renderSearch (r: SearchResult, similar: boolean): string {
  const lines: string[] = []
  if (r.rows.length === 0) return 'no match'
  lines.push(table([...(similar ? ['score'] : []), 'model', 'version', 'created', 'params', 'size', 'framework', 'task', 'architecture', 'labels', 'here'], r.rows.map(row => [
    ...(similar ? [(row.score ?? 0).toFixed(2)] : []),
    row.model, shortId(row.version), time(row.created), row.params > 0 ? count(row.params) : '', bytes(row.size),
    row.framework ?? '', row.task ?? '', row.architecture ?? '', row.labels.join(', '), row.local ? 'yes' : 'no'
  ])))
  if (r.total > r.rows.length) lines.push(pc.dim(`${r.rows.length} of ${r.total}`))
  return lines.join('\n')
}

function noHeads (c: NoHeadsContext | undefined): string {
  if (c === undefined || c.untrusted === 0) {
    return c !== undefined && c.peers > 0
      ? `no heads yet: none of the ${c.peers} connected peer${c.peers === 1 ? '' : 's'} has offered one; publish one with shoal label set`
      : 'no heads yet: publish one with shoal label set, or connect to peers that have some'
  }
  const lines = [`no heads: this node refused ${c.untrusted} head${c.untrusted === 1 ? '' : 's'} because no trust rule here lets their publisher move that model.`]
  if (c.publishers.length === 0) lines.push("To accept them, trust the publisher's key (shoal keys export on the publishing node prints it): shoal trust add <key> '<model pattern>'")
  else {
    lines.push('To accept them, trust the publisher for the model (quote patterns with *):')
    for (const p of c.publishers) lines.push(`  shoal trust add ${p.publisher} '${p.model}'`)
  }
  return lines.join('\n')
}

export function renderDf (r: DfResult): string {
  const lines: string[] = []
  if (r.versions.length === 0) return 'no versions stored'
  lines.push(table(['model', 'version', 'created', 'size', 'shared', 'unique', 'labels', 'pinned'], r.versions.map(v => [
    v.name, shortId(v.version), time(v.created), bytes(v.size), bytes(v.shared), bytes(v.unique), v.labels.join(', '), v.pinned ? 'yes' : ''
  ])))
  lines.push('')
  lines.push(table(['model', 'versions', 'size', 'unique'], r.models.map(m => [m.name, m.versions, bytes(m.size), bytes(m.unique)])))
  lines.push('')
  lines.push(`blobs ${r.blobs.count} (${bytes(r.blobs.bytes)}); reclaimable by shoal gc: ${bytes(r.reclaimable)}`)
  lines.push(pc.dim('shared: in blobs other versions use too; unique: only this version uses (what shoal rm frees)'))
  return lines.join('\n')
}
