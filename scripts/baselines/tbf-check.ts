/**
 * Checks the netns swarm's shaping: one TCP transfer between two namespaces (raw-tcp baseline,
 * receiver in one, sender in the other) must run at about the tbf rate. TCP goodput is at most
 * rate × 1448/1514 (payload per Ethernet frame with timestamps), ~11.95 MB/s at 100 Mbit.
 *
 *   node --import tsx scripts/baselines/tbf-check.ts [--rate 100] [--burst-kb 64] [--latency-ms 50] [--mib 48] [--runs 3]
 *
 * Needs root. Prints the measured rate and its ratio to that goodput ceiling.
 */
import { parseArgs } from 'node:util'
import { createSwarm, SHAPING_ARGS, shapingOf } from '../lib/netns.js'
import { measureRawTcp } from './raw-tcp.js'

const MiB = 1024 * 1024
const MB = 1e6
/** TCP payload per full-size Ethernet frame: 1500 − 20 (IP) − 32 (TCP + timestamps) of 1514 bytes. */
const GOODPUT_FRACTION = 1448 / 1514

const { values: a } = parseArgs({
  options: {
    rate: { type: 'string', default: '100' },
    ...SHAPING_ARGS,
    mib: { type: 'string', default: '48' },
    runs: { type: 'string', default: '3' }
  }
})
const rateMbit = Number(a.rate)
const swarm = await createSwarm({
  hosts: 2,
  rateMbit,
  ...shapingOf(a)
})
try {
  const [rx, tx] = swarm.hosts
  const { mbps } = await measureRawTcp({
    bytes: Number(a.mib) * MiB,
    host: rx!.ip,
    runs: Number(a.runs),
    launchReceiver: rx!.exec,
    launchSender: tx!.exec
  })
  const ceiling = swarm.rateBytesPerSec * GOODPUT_FRACTION / MB
  console.log(`tbf ${rateMbit} Mbit: TCP ${mbps.toFixed(2)} MB/s, goodput ceiling ${ceiling.toFixed(2)} MB/s, ratio ${(mbps / ceiling).toFixed(3)}`)
} finally {
  await swarm.destroy()
}
