/** A progress bar (bytes, speed, ETA) on stderr, only when stderr is a TTY and output is not JSON. */
import cliProgress from 'cli-progress'
import { bytes } from './format.js'

export interface ProgressSink {
  update: (p: Record<string, unknown>) => void
  stop: () => void
}

export function progressBar (label: string, enabled: boolean): ProgressSink {
  if (!enabled || process.stderr.isTTY !== true) return { update () {}, stop () {} }
  const bar = new cliProgress.SingleBar({
    stream: process.stderr,
    format: `${label} {bar} {percentage}% | {done}/{all} | {speed} | ETA {eta_formatted} | {file}`,
    hideCursor: true,
    etaBuffer: 20,
    fps: 10
  }, cliProgress.Presets.shades_classic)
  let started = false
  const t0 = Date.now()
  return {
    update (p) {
      if (queuedNotice(p)) return
      const done = Number(p.bytes ?? 0)
      const total = Number(p.totalBytes ?? 0)
      const secs = Math.max((Date.now() - t0) / 1000, 0.001)
      const payload = { done: bytes(done), all: bytes(total), speed: `${bytes(done / secs)}/s`, file: String(p.file ?? '') }
      if (!started) { bar.start(total, done, payload); started = true } else { bar.setTotal(total); bar.update(done, payload) }
    },
    stop () { if (started) bar.stop() }
  }
}

/**
 * Pull progress on a TTY: a total bar (bytes, speed, ETA, peers, and the share of bytes on the wire
 * when blocks come compressed) and one bar per file being fetched.
 */
export function pullProgress (enabled: boolean): ProgressSink {
  if (!enabled || process.stderr.isTTY !== true) return { update () {}, stop () {} }
  const multi = new cliProgress.MultiBar({
    stream: process.stderr,
    format: '{label} {bar} {percentage}% | {done}/{all} | {speed} | ETA {eta_formatted} | {extra}',
    hideCursor: true,
    fps: 10
  }, cliProgress.Presets.shades_classic)
  let total: cliProgress.SingleBar | undefined
  const files = new Map<string, cliProgress.SingleBar>()
  let stopped = false
  return {
    update (p) {
      if (queuedNotice(p)) return
      const done = Number(p.bytes ?? 0)
      const all = Number(p.totalBytes ?? 0)
      const payload = { label: 'total', done: bytes(done), all: bytes(all), speed: `${bytes(Number(p.rate ?? 0))}/s`, extra: `${String(p.peers ?? 0)} peers${wireNote(p)}` }
      total ??= multi.create(all, done, payload)
      total.update(done, payload)
      for (const f of (p.files as Array<{ path: string, size: number, bytes: number }> | undefined) ?? []) {
        if (f.size === 0) continue
        const fp = { label: f.path.length > 28 ? `…${f.path.slice(-27)}` : f.path.padEnd(28), done: bytes(f.bytes), all: bytes(f.size), speed: '', extra: '' }
        const bar = files.get(f.path) ?? multi.create(f.size, f.bytes, fp)
        files.set(f.path, bar)
        bar.update(f.bytes, fp)
      }
    },
    stop () {
      if (stopped) return
      stopped = true
      multi.stop()
    }
  }
}

/** `, 67% on the wire` when blocks came compressed: what crossed the links against what they decoded to. */
export function wireNote (p: Record<string, unknown>): string {
  const wire = Number(p.wireBytes ?? 0)
  const received = Number(p.receivedBytes ?? 0)
  return received > 0 && wire < received ? `, ${Math.round(100 * wire / received)}% on the wire` : ''
}

/** The daemon runs as many adds (or pulls) at once as it may; this one waits in line: say so, once. */
function queuedNotice (p: Record<string, unknown>): boolean {
  if (p.phase !== 'queued') return false
  process.stderr.write(`waiting for a place: ${String(p.ahead ?? 0)} ahead in line\n`)
  return true
}
