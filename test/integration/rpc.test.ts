/**
 * RPC contract: a daemon in this process (real LevelDB, real unix socket, real files) driven
 * through the typed client and raw HTTP.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createPublicKey, generateKeyPairSync } from 'node:crypto'
import { mkdir, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { encodeBlock } from '../../src/core/digest.js'
import { privateKeyFromPem, publisherKeyOf } from '../../src/core/heads.js'
import { Daemon } from '../../src/daemon/daemon.js'
import { ShoalClient } from '../../src/rpc/client.js'
import { llamaTensors, writeSafetensors } from '../../scripts/lib/synth.js'
import { raw, startDaemon } from '../helpers/rpc.js'
import { tempDir } from '../helpers/tmp.js'

/** A publisher key of no home here (for trust rules). */
const OTHER_KEY = publisherKeyOf(createPublicKey(generateKeyPairSync('ed25519').privateKey))
const SOME_CID = encodeBlock('some version').cid

describe('rpc', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let daemon: Daemon
  let client: ShoalClient
  let socket: string
  let model: string

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir())
    const home = join(dir, 'home')
    socket = join(home, 'shoal.sock')
    daemon = await startDaemon(home)
    client = new ShoalClient({ socketPath: socket })
    model = join(dir, 'model')
    await mkdir(model)
    await writeSafetensors(join(model, 'model.safetensors'), llamaTensors(2 << 20, { hidden: 128, vocab: 1000 }))
  })

  afterAll(async () => {
    await daemon.stop()
    await cleanup()
  })

  it('serves version and status; the socket is mode 0660', async () => {
    expect((await client.version()).api).toBe('v1')
    const status = await client.status()
    expect(status.pid).toBe(process.pid)
    expect(status.heads).toEqual({ accepted: 0, duplicate: 0, stale: 0, future: 0, rejected: { malformed: 0, signature: 0, untrusted: 0 }, signatureChecks: 0, dropped: 0, syncsRefused: 0 })
    expect((await stat(socket)).mode & 0o777).toBe(0o660)
  })

  it('adds with streamed progress, then lists, shows, labels, pins, exports, verifies, collects', async () => {
    const events: Array<Record<string, unknown>> = []
    const v = await client.add({ path: model, name: 'm', label: 'prod', metadata: { task: 'demo' } }, p => events.push(p))
    expect(events.length).toBeGreaterThan(0)
    expect(v.files[0]?.structure?.tensors.length).toBeGreaterThan(5)
    expect(v.labels).toEqual(['prod'])
    expect((await client.models()).map(m => m.name)).toEqual(['m'])
    expect((await client.versions('m')).map(x => x.version)).toEqual([v.version])
    expect((await client.show('m@prod')).metadata).toEqual({ task: 'demo' })
    const w = await client.add({ path: model, name: 'm', pin: false })
    await expect(client.setLabel({ name: 'm', label: 'prod', version: w.version, expect: w.version })).rejects.toMatchObject({ code: 'CONFLICT' })
    // Moving a label publishes a signed head: the answer names its stamp, publisher and activation.
    const [key] = await client.keys()
    const moved = await client.setLabel({ name: 'm', label: 'prod', version: w.version, expect: v.version })
    expect(moved).toMatchObject({ name: 'm', label: 'prod', version: w.version, previous: v.version, publisher: key?.publicKey, activation: { mode: 'hot' } })
    expect(moved.stamp).toMatch(/^\d{13}\.\d+$/)
    expect((await client.show('m@prod')).version).toBe(w.version)
    expect((await client.unpin(`m@${v.version}`)).pinned).toBe(false)
    // v is unpinned but one of the versions prod pointed at before: kept, so a rollback is instant.
    expect((await client.gc({ dryRun: true })).versions).toEqual([])
    const x = await client.add({ path: join(model, 'model.safetensors'), name: 'm', pin: false })
    expect((await client.gc({ dryRun: true })).versions.map(r => r.version)).toEqual([x.version])
    const out = await client.export({ ref: 'm@prod', dest: join(dir, 'out') })
    expect(out.files).toBe(1)
    expect((await client.verify()).problems).toEqual([])
    expect((await client.gc({})).versions.map(r => r.version)).toEqual([x.version])
    expect(await client.removeLabel('m', 'prod')).toMatchObject({ name: 'm', label: 'prod', version: null, previous: w.version, publisher: key?.publicKey })
    await expect(client.show('m@prod')).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await expect(client.removeLabel('m', 'prod')).rejects.toMatchObject({ code: 'NOT_FOUND' })
  })

  it('publishes heads, stages a cold one until activate, keeps history, rolls back, resolves', async () => {
    const a = await client.add({ path: model, name: 'h', label: 'prod' })
    const b = await client.add({ path: model, name: 'h', pin: false, metadata: { description: 'b' } })
    const accepted = (await client.status()).heads.accepted
    const [key] = await client.keys()
    const row = (await client.heads()).find(r => r.model === 'h' && r.label === 'prod')
    expect(row).toMatchObject({ version: a.version, previous: null, local: a.version, state: 'active', followed: false, publisher: key?.publicKey, activation: { mode: 'hot' } })
    expect(row?.size).toBeGreaterThan(0)
    expect((await client.resolve('h@prod'))).toMatchObject({ model: 'h', version: a.version, path: a.path, labels: ['prod'] })

    // Cold without a time: the head moves, the local label waits for an operator.
    const cold = await client.setLabel({ name: 'h', label: 'prod', version: b.version, activation: { mode: 'cold' } })
    expect(cold).toMatchObject({ version: b.version, previous: a.version, activation: { mode: 'cold' } })
    expect((await client.heads()).find(r => r.model === 'h' && r.label === 'prod')).toMatchObject({ version: b.version, local: a.version, state: 'staged' })
    expect((await client.resolve('h@prod')).version).toBe(a.version)
    expect(await client.activate('h@prod')).toEqual({ name: 'h', label: 'prod', version: b.version, previous: a.version })
    expect((await client.resolve('h@prod')).version).toBe(b.version)
    expect((await client.heads()).find(r => r.model === 'h' && r.label === 'prod')?.state).toBe('active')
    expect((await client.status()).heads.accepted).toBe(accepted + 1)

    const rolled = await client.rollback('h@prod')
    expect(rolled).toMatchObject({ version: a.version, previous: b.version, activation: { mode: 'hot' } })
    expect((await client.resolve('h@prod')).version).toBe(a.version)
    const history = await client.labelHistory('h@prod')
    expect(history.map(x => [x.version, x.previous])).toEqual([[a.version, null], [b.version, a.version], [a.version, b.version]])
    expect(history.map(x => x.activation.mode)).toEqual(['hot', 'cold', 'hot'])
    // Each stamp is above the one before.
    const stamps = history.map(x => x.stamp.wall * 1e6 + x.stamp.counter)
    expect([...stamps].sort((x, y) => x - y)).toEqual(stamps)
    expect(new Set(stamps).size).toBe(3)
    await expect(client.labelHistory('h@nosuch')).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await expect(client.activate('h@nosuch')).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await expect(client.resolve('h@nosuch')).rejects.toMatchObject({ code: 'NOT_FOUND' })
  })

  it('pins a label (each version it points at) and unpins it', async () => {
    const a = await client.add({ path: model, name: 'p', label: 'prod', pin: false })
    expect(await client.pin('p@prod')).toEqual({ name: 'p', version: a.version, pinned: true, label: 'prod' })
    const b = await client.add({ path: model, name: 'p', pin: false, metadata: { description: 'b' } })
    await client.setLabel({ name: 'p', label: 'prod', version: b.version })
    expect((await client.show(`p@${b.version}`)).pinned).toBe(true)
    expect(await client.unpin('p@prod')).toEqual({ name: 'p', version: b.version, pinned: false, label: 'prod' })
    expect((await client.show(`p@${a.version}`)).pinned).toBe(false)
    expect((await client.show(`p@${b.version}`)).pinned).toBe(false)
    // A version ref still pins just that version.
    expect(await client.pin(`p@${a.version}`)).toEqual({ name: 'p', version: a.version, pinned: true })
  })

  it('lists, creates and exports publisher keys; signs with the key named', async () => {
    const keys = await client.keys()
    expect(keys).toEqual([{ name: 'default', publicKey: expect.stringMatching(/^z6Mk/), trusted: ['*'] }])
    const ci = await client.newKey('ci')
    expect(ci).toEqual({ name: 'ci', publicKey: expect.stringMatching(/^z6Mk/), trusted: ['*'] })
    expect(ci.publicKey).not.toBe(keys[0]?.publicKey)
    await expect(client.newKey('ci')).rejects.toMatchObject({ code: 'CONFLICT' })
    expect((await client.keys()).map(k => k.name).sort()).toEqual(['ci', 'default'])
    expect(await client.exportKey('ci', false)).toEqual({ name: 'ci', publicKey: ci.publicKey })
    const withPrivate = await client.exportKey('ci', true)
    expect(withPrivate.privateKey).toMatch(/^-----BEGIN PRIVATE KEY-----/)
    expect(privateKeyFromPem(withPrivate.privateKey ?? '').asymmetricKeyType).toBe('ed25519')
    expect(publisherKeyOf(createPublicKey(privateKeyFromPem(withPrivate.privateKey ?? '')))).toBe(ci.publicKey)
    await expect(client.exportKey('nope', false)).rejects.toMatchObject({ code: 'NOT_FOUND' })

    const v = await client.add({ path: model, name: 'k' })
    expect(await client.setLabel({ name: 'k', label: 'prod', version: v.version, key: 'ci' })).toMatchObject({ publisher: ci.publicKey })
    await expect(client.setLabel({ name: 'k', label: 'prod', version: v.version, key: 'nope' })).rejects.toMatchObject({ code: 'NOT_FOUND' })
  })

  it('adds and removes trust rules', async () => {
    const rule = await client.addTrust(`did:key:${OTHER_KEY}`, 'org/*')
    expect(rule).toEqual({ key: OTHER_KEY, models: 'org/*', source: 'trust-file' })
    expect(await client.trust()).toContainEqual({ key: OTHER_KEY, models: 'org/*', source: 'trust-file' })
    expect((await client.trust()).filter(r => r.source === 'home-key').every(r => r.models === '*')).toBe(true)
    // Adding the same rule twice keeps one.
    await client.addTrust(OTHER_KEY, 'org/*')
    await client.addTrust(OTHER_KEY, 'llama-*')
    expect((await client.trust()).filter(r => r.key === OTHER_KEY).map(r => r.models)).toEqual(['org/*', 'llama-*'])
    expect(await client.removeTrust(OTHER_KEY, 'llama-*')).toEqual({ removed: 1 })
    expect(await client.removeTrust(OTHER_KEY)).toEqual({ removed: 1 })
    expect((await client.trust()).filter(r => r.key === OTHER_KEY)).toEqual([])
    await expect(client.removeTrust(OTHER_KEY)).rejects.toMatchObject({ code: 'NOT_FOUND' })
    // The keys of this home cannot be removed here.
    const [own] = await client.keys()
    await expect(client.removeTrust(own?.publicKey ?? '')).rejects.toMatchObject({ code: 'NOT_FOUND' })
  })

  it('replays events since an id, and says when they are gone', async () => {
    const recent = await client.events()
    expect(recent.gone).toBe(false)
    const moved = recent.events.filter(e => e.type === 'label.moved')
    expect(moved.length).toBeGreaterThan(2)
    const first = recent.events[0]!
    const boot = first.id.split('-')[0]
    expect(recent.events.map(e => e.id)).toEqual(recent.events.map(e => `${boot}-${e.seq}`))
    const after = await client.events(first.id)
    expect(after).toEqual({ events: recent.events.slice(1), gone: false })
    expect((await client.events(first.id, 1)).events).toEqual(recent.events.slice(1, 2))
    expect((await client.events(undefined, 2)).events).toEqual(recent.events.slice(-2))
    const last = recent.events[recent.events.length - 1]!
    expect(await client.events(last.id)).toEqual({ events: [], gone: false })
    expect(await client.events('deadbeef-1')).toEqual({ events: [], gone: true })
    // An event of each head operation: add --label, label set and rollback move the label.
    expect(moved.some(e => e.data.model === 'h' && e.data.version !== null)).toBe(true)
  })

  it('maps failures to codes a caller can act on', async () => {
    await expect(client.show('nope')).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await expect(client.show('../x')).rejects.toMatchObject({ code: 'INVALID_INPUT' })
    await expect(client.add({ path: join(dir, 'missing'), name: 'x' })).rejects.toMatchObject({ code: 'INVALID_INPUT' })
    await writeFile(join(dir, 'bad.safetensors'), Buffer.from([0x10, 0, 0, 0, 0, 0, 0, 0, 0x7b, 0x7d]))
    await expect(client.add({ path: join(dir, 'bad.safetensors'), name: 'x' })).rejects.toMatchObject({ code: 'MALFORMED_MODEL' })
    await expect(new ShoalClient({ socketPath: join(dir, 'none.sock') }).status()).rejects.toMatchObject({ code: 'UNREACHABLE' })
  })

  it.each([
    ['malformed JSON', 'POST', '/v1/gc', '{"dryRun":', 400, 'INVALID_INPUT'],
    ['an unknown field', 'POST', '/v1/gc', '{"dryRun":true,"force":1}', 400, 'INVALID_INPUT'],
    ['a relative path', 'POST', '/v1/add', '{"path":"model","name":"x"}', 400, 'INVALID_INPUT'],
    ['a NUL in a path', 'POST', '/v1/export', '{"ref":"m","dest":"/tmp/a\\u0000b"}', 400, 'INVALID_INPUT'],
    ['a body over 1 MiB', 'POST', '/v1/gc', `{"x":"${'a'.repeat(1_100_000)}"}`, 413, 'PAYLOAD_TOO_LARGE'],
    ['an unknown endpoint', 'GET', '/v2/status', undefined, 404, 'NOT_FOUND'],
    ['a wrong method', 'DELETE', '/v1/status', undefined, 405, 'METHOD_NOT_ALLOWED'],
    ['a path-traversing ref', 'GET', '/v1/show?ref=..%2F..%2Fetc', undefined, 400, 'INVALID_INPUT'],
    ['a missing query parameter', 'GET', '/v1/versions', undefined, 400, 'INVALID_INPUT'],
    ['a label request with an unknown field', 'POST', '/v1/labels', '{"name":"m","label":"prod","version":"x","force":true}', 400, 'INVALID_INPUT'],
    ['an unknown activation mode', 'POST', '/v1/labels', '{"name":"m","label":"prod","version":"x","activation":{"mode":"warm"}}', 400, 'INVALID_INPUT'],
    ['a cold activation time that is not a positive integer', 'POST', '/v1/labels', '{"name":"m","label":"prod","version":"x","activation":{"mode":"cold","at":-1}}', 400, 'INVALID_INPUT'],
    ['a jitter over 7 days', 'POST', '/v1/labels', '{"name":"m","label":"prod","version":"x","activation":{"mode":"hot","jitterMs":604800001}}', 400, 'INVALID_INPUT'],
    ['an invalid label', 'POST', '/v1/labels', '{"name":"m","label":"Prod","version":"x"}', 400, 'INVALID_INPUT'],
    ['a label removal with an invalid label', 'DELETE', '/v1/labels', '{"name":"m","label":"../x"}', 400, 'INVALID_INPUT'],
    ['a label removal with an unknown field', 'DELETE', '/v1/labels', '{"name":"m","label":"prod","all":true}', 400, 'INVALID_INPUT'],
    ['a rollback of a ref without a label', 'POST', '/v1/rollback', '{"ref":"m"}', 400, 'INVALID_INPUT'],
    ['a rollback of a version id', 'POST', '/v1/rollback', `{"ref":"m@${SOME_CID}"}`, 400, 'INVALID_INPUT'],
    ['a rollback with an unknown field', 'POST', '/v1/rollback', '{"ref":"m@prod","to":1}', 400, 'INVALID_INPUT'],
    ['a rollback of a label never set', 'POST', '/v1/rollback', '{"ref":"m@never"}', 404, 'NOT_FOUND'],
    ['an activate of a ref without a label', 'POST', '/v1/activate', '{"ref":"m"}', 400, 'INVALID_INPUT'],
    ['an activate with a path-traversing ref', 'POST', '/v1/activate', '{"ref":"../m@prod"}', 400, 'INVALID_INPUT'],
    ['a POST to /v1/heads', 'POST', '/v1/heads', '{}', 405, 'METHOD_NOT_ALLOWED'],
    ['a history without a ref', 'GET', '/v1/heads/history', undefined, 400, 'INVALID_INPUT'],
    ['a history of a bare name', 'GET', '/v1/heads/history?ref=m', undefined, 400, 'INVALID_INPUT'],
    ['a history with a bad ref', 'GET', '/v1/heads/history?ref=m%40Bad%20Label', undefined, 400, 'INVALID_INPUT'],
    ['a resolve without a ref', 'GET', '/v1/resolve', undefined, 400, 'INVALID_INPUT'],
    ['a resolve of a path-traversing ref', 'GET', '/v1/resolve?ref=..%2Fx', undefined, 400, 'INVALID_INPUT'],
    ['a resolve of an unknown model', 'GET', '/v1/resolve?ref=nosuch', undefined, 404, 'NOT_FOUND'],
    ['a key name with capitals', 'POST', '/v1/keys', '{"name":"CI"}', 400, 'INVALID_INPUT'],
    ['a key name with a slash', 'POST', '/v1/keys', '{"name":"../ci"}', 400, 'INVALID_INPUT'],
    ['a key request with an unknown field', 'POST', '/v1/keys', '{"name":"ci2","type":"rsa"}', 400, 'INVALID_INPUT'],
    ['a key export without a name', 'GET', '/v1/keys/export', undefined, 400, 'INVALID_INPUT'],
    ['a key export of an unknown key', 'GET', '/v1/keys/export?name=nosuch', undefined, 404, 'NOT_FOUND'],
    ['a trust rule with a key that is not one', 'POST', '/v1/trust', '{"key":"z6MkNotAKey","models":"*"}', 400, 'INVALID_INPUT'],
    ['a trust rule with a non-ed25519 did:key', 'POST', '/v1/trust', '{"key":"did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme","models":"*"}', 400, 'INVALID_INPUT'],
    ['a trust rule with a bad pattern', 'POST', '/v1/trust', `{"key":"${OTHER_KEY}","models":"org/(a|b)"}`, 400, 'INVALID_INPUT'],
    ['a trust rule with a space in the pattern', 'POST', '/v1/trust', `{"key":"${OTHER_KEY}","models":"org /*"}`, 400, 'INVALID_INPUT'],
    ['a trust rule without models', 'POST', '/v1/trust', `{"key":"${OTHER_KEY}"}`, 400, 'INVALID_INPUT'],
    ['a trust rule with an unknown field', 'POST', '/v1/trust', `{"key":"${OTHER_KEY}","models":"*","expires":1}`, 400, 'INVALID_INPUT'],
    ['a trust removal with a key that is not one', 'DELETE', '/v1/trust', '{"key":"nope"}', 400, 'INVALID_INPUT'],
    ['a trust removal of a rule not there', 'DELETE', '/v1/trust', `{"key":"${OTHER_KEY}","models":"x/*"}`, 404, 'NOT_FOUND'],
    ['an events limit of 0', 'GET', '/v1/events?limit=0', undefined, 400, 'INVALID_INPUT'],
    ['an events limit over 10000', 'GET', '/v1/events?limit=10001', undefined, 400, 'INVALID_INPUT'],
    ['an events limit that is not a number', 'GET', '/v1/events?limit=ten', undefined, 400, 'INVALID_INPUT'],
    ['a fractional events limit', 'GET', '/v1/events?limit=1.5', undefined, 400, 'INVALID_INPUT'],
    ['a pin of a label never set', 'POST', '/v1/pins', '{"ref":"m@never"}', 404, 'NOT_FOUND']
  ])('refuses %s with {code, message}', async (_what, method, path, body, status, code) => {
    const r = await raw({ socketPath: socket }, method, path, body)
    expect(r.status).toBe(status)
    expect(r.json.code).toBe(code)
    expect(typeof r.json.message).toBe('string')
  })
})
