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
      const done = Number(p.bytes ?? 0)
      const total = Number(p.totalBytes ?? 0)
      const secs = Math.max((Date.now() - t0) / 1000, 0.001)
      const payload = { done: bytes(done), all: bytes(total), speed: `${bytes(done / secs)}/s`, file: String(p.file ?? '') }
      if (!started) { bar.start(total, done, payload); started = true } else { bar.setTotal(total); bar.update(done, payload) }
    },
    stop () { if (started) bar.stop() }
  }
}
