/**
 * A `shoal daemon` process for the process-guard fault test: the daemon started the way the CLI
 * starts it (`Daemon.runUntilSignalled`, which installs the handlers of `daemon/process-guard.ts`),
 * plus a way in for the test to make a failure nothing catches. Reads lines on stdin:
 * `reject` leaves a promise rejected unhandled, `throw` throws from a timer callback.
 *
 *   node --max-semi-space-size=4 --heap-growing-percent=100 --import tsx test/faults/rpc-guarded-daemon.ts <home>
 */
import '../../src/polyfill.js'
import { createInterface } from 'node:readline'
import { loadConfig } from '../../src/config/config.js'
import { Daemon } from '../../src/daemon/daemon.js'

const home = process.argv[2]
if (home === undefined) throw new Error('usage: rpc-guarded-daemon.ts <home>')
const daemon = new Daemon(await loadConfig({ home, overrides: { listen: ['/ip4/127.0.0.1/tcp/0'] } }))
createInterface({ input: process.stdin }).on('line', line => {
  if (line === 'reject') void Promise.reject(new Error('a background piece of work failed (fault test)'))
  if (line === 'throw') setImmediate(() => { throw new Error('an exception nothing caught (fault test)') })
})
await daemon.runUntilSignalled()
