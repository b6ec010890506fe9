/**
 * The config file and environment: defaults in one place, and every bad value refused with a
 * typed error that names the key or variable (never a silent default, never a raw TypeError).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { execFileSync } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { CONFIG_FILE, MAX_CONFIG_BYTES, clientTarget, loadConfig } from '../../../src/config/config.js'
import { DEFAULT_MAX_READS, DEFAULT_MAX_RPC_CONNECTIONS, DEFAULT_MAX_WATCHERS } from '../../../src/rpc/limits.js'
import { rejection } from '../../helpers/assert.js'
import { tempDir } from '../../helpers/tmp.js'

let home: string
let cleanup: () => Promise<void>
beforeEach(async () => { ({ dir: home, cleanup } = await tempDir('shoal-config-')) })
afterEach(async () => { await cleanup() })

async function withFile (content: unknown): Promise<void> {
  await writeFile(join(home, CONFIG_FILE), typeof content === 'string' ? content : JSON.stringify(content))
}

async function refusal (env: NodeJS.ProcessEnv = {}): Promise<Error> {
  const err = await rejection(loadConfig({ home, env }))
  expect(err.name).toBe('InvalidInputError')
  return err
}

describe('config', () => {
  it('applies the RPC bounds from the file, else their defaults', async () => {
    expect((await loadConfig({ home, env: {} })).rpc).toEqual({ maxConnections: DEFAULT_MAX_RPC_CONNECTIONS, maxWatchers: DEFAULT_MAX_WATCHERS, maxReads: DEFAULT_MAX_READS })
    await withFile({ rpc: { maxConnections: 1000, maxWatchers: 500, maxReads: 8, tcp: '127.0.0.1:4080' } })
    expect((await loadConfig({ home, env: {} })).rpc).toEqual({ maxConnections: 1000, maxWatchers: 500, maxReads: 8, tcp: { host: '127.0.0.1', port: 4080 } })
    await withFile({ rpc: { maxWatchers: 0 } })
    expect((await refusal()).message).toBe(`${join(home, CONFIG_FILE)} is invalid at rpc.maxWatchers: Too small: expected number to be >0`)
  })

  it('names the variable or key of a bad log level', async () => {
    expect((await refusal({ SHOAL_LOG_LEVEL: 'loud' })).message).toBe('SHOAL_LOG_LEVEL "loud" is not a log level; use one of trace, debug, info, warn, error, fatal, silent')
    expect((await loadConfig({ home, env: { SHOAL_LOG_LEVEL: '' } })).logLevel).toBe('info')
    expect((await rejection(loadConfig({ home, env: {}, overrides: { logLevel: 'loud' } }))).message).toMatch(/^--log-level "loud" is not a log level/)
  })

  it('turns store.compress on with compressAfter in seconds or a duration, and names a bad one', async () => {
    expect((await loadConfig({ home, env: {} })).store).toEqual({})
    await withFile({ store: { compress: true } })
    expect((await loadConfig({ home, env: {} })).store).toEqual({ compressAfterMs: 7 * 24 * 3600 * 1000 })
    await withFile({ store: { compress: true, compressAfter: '12h' } })
    expect((await loadConfig({ home, env: {} })).store.compressAfterMs).toBe(12 * 3600 * 1000)
    await withFile({ store: { compress: true, compressAfter: 90 } })
    expect((await loadConfig({ home, env: {} })).store.compressAfterMs).toBe(90_000)
    await withFile({ store: { compress: true, compressAfter: 'soon' } })
    expect((await refusal()).message).toBe('config.json store.compressAfter: "soon" is not a duration; use seconds or e.g. "30m", "12h", "7d"')
    await withFile({ store: { compressAfter: '1d' } })
    expect((await refusal()).message).toBe('config.json store.compressAfter is set but store.compress is not true; set "compress": true to compress versions automatically')
  })

  it('names store.quota when it is not a size, is 0, or is past 2^53 bytes', async () => {
    await withFile({ store: { quota: 'lots' } })
    expect((await refusal()).message).toBe('config.json store.quota: "lots" is not a size; use bytes or e.g. "200GB", "1.5TiB"')
    await withFile({ store: { quota: '0GB' } })
    expect((await refusal()).message).toBe(`config.json store.quota: "0GB" is 0 bytes; use at least 1 byte and at most ${Number.MAX_SAFE_INTEGER}`)
    await withFile({ store: { quota: '99999999999TiB' } })
    expect((await refusal()).message).toMatch(/^config\.json store\.quota: "99999999999TiB" is \d.* bytes; use at least 1 byte/)
    await withFile({ store: { quota: '1.5 TiB' } })
    expect((await loadConfig({ home, env: {} })).store.quotaBytes).toBe(1.5 * 2 ** 40)
  })

  it('names the trust rule that is bad', async () => {
    await withFile({ trust: [{ key: 'z6Mknot-a-key', models: '*' }] })
    expect((await refusal()).message).toMatch(/^config\.json trust\.0: /)
  })

  it('refuses a config file it cannot read, instead of running on defaults', async () => {
    await mkdir(join(home, CONFIG_FILE))
    expect((await refusal()).message).toBe(`${join(home, CONFIG_FILE)} is not a regular file`)
  })

  it('refuses a FIFO in place of the file without waiting for a writer', async () => {
    execFileSync('mkfifo', [join(home, CONFIG_FILE)])
    expect((await refusal()).message).toBe(`${join(home, CONFIG_FILE)} is not a regular file`)
  })

  it('bulk channel: on by default, encrypted, on the p2p port + 1 of the first TCP listen address with an ephemeral fallback', async () => {
    const t = (await loadConfig({ home, env: {} })).transfer
    expect(t.encrypt).toBe(true)
    expect(t.bulk).toEqual({ enabled: true, host: '0.0.0.0', port: 4078, ephemeralIfTaken: true })
    const listen = async (...addrs: string[]): Promise<unknown> => (await loadConfig({ home, env: {}, overrides: { listen: addrs } })).transfer.bulk
    expect(await listen('/ip4/127.0.0.1/tcp/0')).toEqual({ enabled: true, host: '127.0.0.1', port: 0, ephemeralIfTaken: true })
    expect(await listen('/ip6/::/tcp/9000')).toEqual({ enabled: true, host: '::', port: 9001, ephemeralIfTaken: true })
    expect(await listen('/ip4/10.0.0.1/tcp/65535')).toEqual({ enabled: true, host: '10.0.0.1', port: 0, ephemeralIfTaken: true })
    expect(await listen('/ip4/10.0.0.1/tcp/4001/ws', '/dns4/example.org/tcp/4001', '/ip4/10.0.0.1/tcp/4001')).toEqual({ enabled: true, host: '10.0.0.1', port: 4002, ephemeralIfTaken: true })
    expect(await listen('/ip4/10.0.0.1/udp/4001/quic-v1')).toEqual({ enabled: true, host: '0.0.0.0', port: 0, ephemeralIfTaken: true })
  })

  it('bulk channel: an explicit transfer.bulk.listen is used as given; encrypt and enabled can be turned off', async () => {
    await withFile({ transfer: { bulk: { enabled: false, listen: '[::1]:5000' }, encrypt: false } })
    const t = (await loadConfig({ home, env: {} })).transfer
    expect(t.bulk).toEqual({ enabled: false, host: '::1', port: 5000, ephemeralIfTaken: false })
    expect(t.encrypt).toBe(false)
    for (const bad of ['localhost:4078', '10.0.0.2', '10.0.0.2:70000', '999.0.0.1:1']) {
      await withFile({ transfer: { bulk: { listen: bad } } })
      expect((await refusal()).message).toBe(`config.json transfer.bulk.listen "${bad}" must be an IP address and a port, e.g. 0.0.0.0:4078, [::]:4078 or 10.0.0.2:4078 (port 0: any free port)`)
    }
    await withFile({ transfer: { bulk: { port: 1 } } })
    expect((await refusal()).message).toMatch(/is invalid at transfer\.bulk: Unrecognized key: "port"/)
  })

  it('compression on the wire: auto with a 32 MiB cache by default; always, off and a cache size as given; anything else refused naming the key', async () => {
    let t = (await loadConfig({ home, env: {} })).transfer
    expect([t.compress, t.compressCacheBytes]).toEqual(['auto', 32 * 1024 * 1024])
    await withFile({ transfer: { compress: 'off', compressCache: '1GiB' } })
    t = (await loadConfig({ home, env: {} })).transfer
    expect([t.compress, t.compressCacheBytes]).toEqual(['off', 1024 ** 3])
    await withFile({ transfer: { compress: 'sometimes' } })
    expect((await refusal()).message).toBe(`${join(home, CONFIG_FILE)} is invalid at transfer.compress: Invalid option: expected one of "auto"|"always"|"off"`)
    await withFile({ transfer: { compressCache: 'lots' } })
    expect((await refusal()).message).toBe('config.json transfer.compressCache: "lots" is not a size; use bytes or e.g. "200GB", "1.5TiB"')
  })

  it('refuses a config file over the size bound before reading it', async () => {
    await withFile(`{${' '.repeat(MAX_CONFIG_BYTES)}}`)
    expect((await refusal()).message).toBe(`${join(home, CONFIG_FILE)} is ${MAX_CONFIG_BYTES + 2} bytes, over the ${MAX_CONFIG_BYTES}-byte limit for a config file`)
  })
})

describe('clientTarget', () => {
  it('refuses a SHOAL_HOST that is not a URL, names no socket, or carries a path, saying so', () => {
    expect(() => clientTarget({ SHOAL_HOST: 'http://[', SHOAL_TOKEN: 't' })).toThrow('SHOAL_HOST "http://[" is not a URL: use http://127.0.0.1:<port>')
    expect(() => clientTarget({ SHOAL_HOST: 'unix://' })).toThrow('SHOAL_HOST "unix://" names no socket: use unix:///path/to/shoal.sock')
    expect(() => clientTarget({ SHOAL_HOST: 'http://127.0.0.1', SHOAL_TOKEN: 't' })).toThrow('SHOAL_HOST "http://127.0.0.1" must be just http://<host>:<port>, e.g. http://127.0.0.1:4080')
    expect(() => clientTarget({ SHOAL_HOST: 'http://127.0.0.1:4080/v1?x', SHOAL_TOKEN: 't' })).toThrow(/must be just http:\/\/<host>:<port>/)
    expect(clientTarget({ SHOAL_HOST: 'http://127.0.0.1:4080/', SHOAL_TOKEN: 'ab12' })).toEqual({ url: 'http://127.0.0.1:4080/', token: 'ab12' })
  })

  it('refuses a SHOAL_TOKEN that could not be sent in a header', () => {
    expect(() => clientTarget({ SHOAL_HOST: 'http://127.0.0.1:4080', SHOAL_TOKEN: 'ab\ncd' })).toThrow('SHOAL_TOKEN must be the token in <home>/rpc.token (printable characters, no spaces)')
  })

  it('uses the socket rpc.socket names in the home\'s config.json, as the daemon does', async () => {
    await withFile(JSON.stringify({ rpc: { socket: 'run/daemon.sock' } }))
    expect(clientTarget({}, home)).toEqual({ socketPath: join(home, 'run/daemon.sock') })
    expect(clientTarget({ SHOAL_HOME: home })).toEqual({ socketPath: join(home, 'run/daemon.sock') })
    expect(clientTarget({}, home)).toEqual({ socketPath: (await loadConfig({ home })).socket })
    await withFile(JSON.stringify({ rpc: { socket: '/abs/d.sock' } }))
    expect(clientTarget({}, home)).toEqual({ socketPath: '/abs/d.sock' })
    await withFile('{}')
    expect(clientTarget({}, home)).toEqual({ socketPath: join(home, 'shoal.sock') })
  })

  it('refuses a config.json it cannot use, naming the file and what to fix', async () => {
    await withFile('{ nope')
    expect(() => clientTarget({}, home)).toThrow(`${join(home, CONFIG_FILE)} is not valid JSON`)
    await withFile(JSON.stringify({ rpc: { socket: 7 } }))
    expect(() => clientTarget({}, home)).toThrow(`${join(home, CONFIG_FILE)} is invalid at rpc.socket: give the socket path as a string (relative paths are inside the home)`)
  })
})
