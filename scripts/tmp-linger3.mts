import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DaemonProcess } from './lib/daemon-proc.js'
import { rawRequest } from '../test/e2e/helpers.js'
const home = await mkdtemp(join(tmpdir(), 'linger-'))
const d = await new DaemonProcess(home, [], { SHOAL_LOG_LEVEL: 'debug' }).start()
const big = JSON.stringify({ dryRun: true, pad: 'x'.repeat(1024 * 1024) })
let bad = 0
for (let t = 0; t < 40; t++) {
  for (const chunked of [false, true]) {
    try { const r = await rawRequest(d.socket, 'POST', '/v1/gc', big, { chunked }); if (r.status !== 413) { bad++; console.log('status', r.status, r.text.slice(0, 200)) } } catch (e) { bad++; console.log(t, chunked, (e as Error).message) }
  }
}
await d.stop()
console.log('bad', bad)
console.log(d.stderr.split('\n').filter(l => /rpc/.test(l) && !/413|PAYLOAD/.test(l)).slice(0, 10).join('\n'))
