/**
 * Baseline for the pair benchmark (issue 3, Benchmarks 1): what verifying and storing a pull
 * costs in CPU on this machine, whoever does it. Hashes `bytes` as 4 MiB chunks with sha2-256 (one
 * thread), and writes them to a file as a pull does (`DirectWrites`: the page-aligned middle of
 * each chunk O_DIRECT, head and tail buffered; chunks at unaligned offsets) with an fdatasync every
 * 64 MiB, timing the CPU of each (user + system, all threads of this process). The same writes
 * through the page cache are timed too, for reference.
 *
 * With them the pair benchmark states the ceiling of a verified, durable pull when sender and
 * receiver share the machine's cores: a bare stream already keeps every core busy, so each byte
 * also hashed and written costs CPU the transfer no longer has:
 * `ceiling = cores / (cores / bare + 1 / hash + 1 / write)` (rates in MB per CPU-second).
 *
 *   node --import tsx scripts/baselines/verify-cost.ts [--mib 512]
 */
import { createHash, randomFillSync } from 'node:crypto'
import { mkdtemp, open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { DirectWrites } from '../../src/store/direct-io.js'
import { isMain } from '../lib/proc.js'

const MiB = 1024 * 1024
const CHUNK = 4 * MiB
const SYNC_EVERY = 64 * MiB
/** Where the first chunk starts: a safetensors header puts a model's tensors at no particular alignment. */
const FIRST_OFFSET = 1000

export interface VerifyCost {
  /** sha2-256, MB (10^6 bytes) per CPU-second. */
  hashMbps: number
  /** Writes as a pull does them (direct where the file system allows) + fdatasync every 64 MiB, MB per CPU-second. */
  writeMbps: number
  /** The same writes through the page cache, MB per CPU-second. */
  bufferedWriteMbps: number
  /** Whether the file system took direct writes. */
  direct: boolean
}

const cpuSeconds = (since: NodeJS.CpuUsage): number => {
  const d = process.cpuUsage(since)
  return (d.user + d.system) / 1e6
}

export async function measureVerifyCost (bytes: number, dir = tmpdir()): Promise<VerifyCost> {
  const chunk = randomFillSync(Buffer.allocUnsafe(CHUNK))
  const count = Math.max(1, Math.round(bytes / CHUNK))
  const cpu = process.cpuUsage()
  for (let i = 0; i < count; i++) createHash('sha256').update(chunk).digest()
  const hashSeconds = cpuSeconds(cpu)

  const work = await mkdtemp(join(dir, 'shoal-verify-cost-'))
  try {
    const total = count * CHUNK / 1e6
    const timeWrites = async (name: string, direct: boolean): Promise<{ mbps: number, direct: boolean }> => {
      const path = join(work, name)
      const fh = await open(path, 'w')
      const writes = direct ? await DirectWrites.open(path) : undefined
      const cpu = process.cpuUsage()
      for (let i = 0; i < count; i++) {
        const offset = FIRST_OFFSET + i * CHUNK
        if (writes === undefined || await writes.write(fh, chunk, CHUNK, offset) !== 'written') await fh.write(chunk, 0, CHUNK, offset)
        if (((i + 1) * CHUNK) % SYNC_EVERY === 0) await fh.datasync()
      }
      await fh.datasync()
      const seconds = cpuSeconds(cpu)
      await writes?.close()
      await fh.close()
      await rm(path)
      return { mbps: total / seconds, direct: writes !== undefined }
    }
    const buffered = await timeWrites('buffered', false)
    const pull = await timeWrites('pull', true)
    return { hashMbps: total / hashSeconds, writeMbps: pull.mbps, bufferedWriteMbps: buffered.mbps, direct: pull.direct }
  } finally {
    await rm(work, { recursive: true, force: true })
  }
}

/** The ceiling of a verified, durable transfer on `cores` cores shared by both ends (see the module doc). */
export function verifiedCeiling (bareMbps: number, cost: VerifyCost, cores: number): number {
  return cores / (cores / bareMbps + 1 / cost.hashMbps + 1 / cost.writeMbps)
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({ options: { mib: { type: 'string', default: '512' } } })
  const cost = await measureVerifyCost(Number(values.mib) * MiB)
  console.log(`sha2-256 ${cost.hashMbps.toFixed(0)} MB per CPU-second; writes as a pull does them (${cost.direct ? 'direct' : 'buffered: no O_DIRECT here'}) + fdatasync ${cost.writeMbps.toFixed(0)} MB per CPU-second; through the page cache ${cost.bufferedWriteMbps.toFixed(0)}`)
}
