/**
 * Fuzzing the daemon configuration (`config/config.ts`): random and mutated `config.json`
 * contents, one key of a full valid config replaced by a random value, and random environment
 * values. Each gives a valid config or a typed error whose message names the key (or variable);
 * nothing else is thrown.
 */
import fc from 'fast-check'
import { writeFile } from 'node:fs/promises'
import { validateHeaderValue } from 'node:http'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, it } from 'vitest'
import { CONFIG_FILE, clientTarget, loadConfig, type Config } from '../../src/config/config.js'
import { ShoalError } from '../../src/core/errors.js'
import { tempDir } from '../helpers/tmp.js'
import { expectTypedOutcome, fuzzParams, mutated } from './fuzz.js'

/** Every key the file may hold, with a valid value. */
const FULL = {
  rpc: { socket: 'shoal.sock', tcp: '127.0.0.1:4080', maxConnections: 512, maxWatchers: 64 },
  log: { level: 'warn' },
  p2p: { listen: ['/ip4/0.0.0.0/tcp/4077'], peers: ['/ip4/10.0.0.2/tcp/4077'], mdns: false, dht: true, allow: ['12D3KooWExample'], maxConnections: 100 },
  transfer: { strategy: 'weighted', pieceOrder: 'rarest', uploadSlots: 8, uploadRate: 1_000_000, downloadRate: 2_000_000, banSeconds: 600, stallSeconds: 60, bulk: { enabled: true, listen: '0.0.0.0:4078' }, encrypt: true },
  follow: ['llama-8b@prod', 'org/*@prod'],
  trust: [{ key: 'z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK', models: 'org/*' }],
  labels: { keep: 3 },
  store: { quota: '200GB' }
}

/** Dotted paths of every leaf and list in `FULL`. */
function paths (value: unknown, prefix = ''): string[] {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return [prefix]
  return [...(prefix === '' ? [] : [prefix]), ...Object.entries(value).flatMap(([k, v]) => paths(v, prefix === '' ? k : `${prefix}.${k}`))]
}
const KEYS = paths(FULL)

function withValue (path: string, value: unknown): unknown {
  const copy = structuredClone(FULL) as Record<string, unknown>
  const parts = path.split('.')
  let at = copy
  for (const p of parts.slice(0, -1)) at = at[p] as Record<string, unknown>
  at[parts.at(-1)!] = value
  return copy
}

const SEED = new TextEncoder().encode(JSON.stringify(FULL))

let home: string
let cleanup: () => Promise<void>
beforeAll(async () => { ({ dir: home, cleanup } = await tempDir('shoal-fuzz-config-')) })
afterAll(async () => { await cleanup() })

async function load (content: string | Uint8Array, env: NodeJS.ProcessEnv = {}): Promise<Config> {
  await writeFile(join(home, CONFIG_FILE), content)
  return await loadConfig({ home, env })
}

const value = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom(0, -1, 1.5, 2 ** 53, 1e308, '', '0', '0GB', '1e999GB', 'lots', '0.0.0.0:4080', '[::1]:99999', 'localhost:4080', 'x'.repeat(2000), [], [''], ['/ip4'], [{}], null)
)

describe('fuzz: config.json and environment', () => {
  it('random and mutated config.json content gives a config or a typed error', async () => {
    const content = fc.oneof(
      fc.string({ maxLength: 300 }),
      fc.jsonValue({ maxDepth: 5 }).map(v => JSON.stringify(v) ?? ''),
      mutated(SEED),
      fc.uint8Array({ maxLength: 300 })
    )
    await fc.assert(fc.asyncProperty(content, async c => {
      await expectTypedOutcome(async () => await load(c))
    }), fuzzParams())
  })

  it('one key of a full config set to a random value gives a config or an error naming that key', async () => {
    await fc.assert(fc.asyncProperty(fc.constantFrom(...KEYS), value, async (key, v) => {
      await expectTypedOutcome(async () => {
        try {
          return await load(JSON.stringify(withValue(key, v)))
        } catch (err) {
          if (err instanceof ShoalError && !err.message.includes(key)) throw new Error(`the error for ${key} = ${JSON.stringify(v)?.slice(0, 80)} does not name it: ${err.message}`)
          throw err
        }
      }, { check: config => { if (config.rpc.maxConnections < 1 || config.rpc.maxWatchers < 1) throw new Error('an RPC bound under 1 got through') } })
    }), fuzzParams())
  })

  it('random environment values give a config or a typed error naming the variable', async () => {
    await writeFile(join(home, CONFIG_FILE), '{}')
    const text = fc.oneof(fc.string({ maxLength: 60 }), fc.constantFrom('', 'debug', 'LOUD', 'unix://', 'unix:///x.sock', 'http://', 'http://[', 'http://127.0.0.1', 'http://127.0.0.1:4080', 'http://u:p@127.0.0.1:1/', 'https://127.0.0.1:1', 'ab\ncd', 'a b', '\u0000'))
    await fc.assert(fc.asyncProperty(text, text, text, async (level, host, token) => {
      await expectTypedOutcome(async () => await loadConfig({ home, env: { SHOAL_LOG_LEVEL: level } }).catch((err: unknown) => {
        if (err instanceof ShoalError && !err.message.startsWith('SHOAL_LOG_LEVEL ')) throw new Error(`a bad SHOAL_LOG_LEVEL refused without naming it: ${err.message}`)
        throw err
      }))
      await expectTypedOutcome(() => {
        try {
          return clientTarget({ SHOAL_HOST: host, SHOAL_TOKEN: token }, home)
        } catch (err) {
          if (err instanceof ShoalError && !/SHOAL_HOST|SHOAL_TOKEN/.test(err.message)) throw new Error(`a bad SHOAL_HOST or SHOAL_TOKEN refused without naming it: ${err.message}`)
          throw err
        }
      }, {
        // What it returns is usable as it is: a URL the client can parse, a token it can send.
        check: t => {
          if ('url' in t) {
            void new URL('/v1/version', t.url)
            validateHeaderValue('authorization', `Bearer ${t.token}`)
          } else if (t.socketPath === '') throw new Error('an empty socket path got through')
        }
      })
    }), fuzzParams())
  })
})
