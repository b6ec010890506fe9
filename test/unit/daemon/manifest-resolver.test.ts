/**
 * `ManifestResolver`: where a version's manifest comes from (the store, else peers), what it
 * refuses and whom it penalises. A real store (in-memory index, real files) and real manifests;
 * the peers are a fake `ManifestPeers` answering from a table.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { pino } from 'pino'
import type { PeerId } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { encodeBlock, type VersionId } from '../../../src/core/digest.js'
import { ManifestResolver, type ManifestResolverInit } from '../../../src/daemon/manifest-resolver.js'
import type { ManifestPeers } from '../../../src/daemon/manifest-finder.js'
import type { PeerJudge } from '../../../src/fetcher/session.js'
import { addPath } from '../../../src/ingest/ingest.js'
import type { ResolvedVersion, Store } from '../../../src/store/store.js'
import { writeSafetensors } from '../../../scripts/lib/synth.js'
import { memoryStore, tempDir } from '../../helpers/tmp.js'
import { internals } from '../../helpers/store-internals.js'

const quiet = pino({ level: 'silent' })

/** A judge that only records penalties. */
function recordingJudge (): PeerJudge & { penalties: Array<{ peer: string, offence: string, detail: string }> } {
  const penalties: Array<{ peer: string, offence: string, detail: string }> = []
  return { penalties, isBanned: () => false, credit () {}, penalize: (peer, offence, detail) => { penalties.push({ peer, offence, detail: detail ?? '' }); return false } }
}

/** Peers that answer manifest requests from `answers` (peer id → version → bytes), and know no providers. */
function fakePeers (self: PeerId, answers: Map<string, Map<string, Uint8Array>>, peers: PeerId[]): ManifestPeers & { asked: string[] } {
  const asked: string[] = []
  return {
    asked,
    peerId: self,
    getPeers: () => [...peers],
    services: { manifests: { fetch: async (peer, version) => { asked.push(peer.toString()); return answers.get(peer.toString())?.get(version) } } },
    contentRouting: { findProviders: async function * () {} },
    peerStore: { merge: async () => { throw new Error('not used') } }
  }
}

describe('ManifestResolver', () => {
  let cleanup: () => Promise<void>
  let seed: Store
  let here: Store
  let v: ResolvedVersion
  let bytes: Uint8Array
  let other: { version: VersionId, bytes: Uint8Array }
  let ids: PeerId[]
  const resolvers: ManifestResolver[] = []

  const resolver = (store: Store, judge: PeerJudge, peers: ManifestPeers, init: Partial<ManifestResolverInit> = {}): ManifestResolver => {
    const r = new ManifestResolver({
      manifests: store.heads,
      isLocal: async version => (await internals(store).index.versions.get(version))?.local === true,
      judge,
      log: quiet,
      retryMs: [0, 0],
      ...init
    })
    r.attach(peers)
    resolvers.push(r)
    return r
  }

  beforeAll(async () => {
    let dir: string
    ;({ dir, cleanup } = await tempDir())
    ;({ store: seed } = await memoryStore(join(dir, 'seed')))
    ;({ store: here } = await memoryStore(join(dir, 'here')))
    for (const [folder, tensor] of [['m1', 'a'], ['m2', 'b']] as const) {
      await mkdir(join(dir, folder))
      await writeSafetensors(join(dir, folder, 'model.safetensors'), [{ name: tensor, dtype: 'BF16', shape: [1024, 1024], seed: tensor }])
      await writeFile(join(dir, folder, 'config.json'), '{}')
    }
    v = await addPath(seed, join(dir, 'm1'), { name: 'org/resolved' })
    bytes = (await seed.heads.manifest(v.version))!
    const v2 = await addPath(seed, join(dir, 'm2'), { name: 'org/other' })
    other = { version: v2.version, bytes: (await seed.heads.manifest(v2.version))! }
    ids = await Promise.all([0, 1, 2].map(async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519'))))
  })

  afterAll(async () => {
    for (const r of resolvers) await r.stop()
    await seed.close().catch(() => {})
    await here.close().catch(() => {})
    await cleanup()
  })

  it('serves and resolves what the store holds without asking a peer; a version it added is its own, over any limit', async () => {
    const peers = fakePeers(ids[0]!, new Map(), [ids[1]!])
    const r = resolver(seed, recordingJudge(), peers, { limits: { maxChunks: 1, maxVersionBytes: 1 } })
    expect(await r.manifest(v.version)).toEqual(bytes)
    const got = await r.resolve(v.version)
    expect(got).toMatchObject({ local: true, manifest: { name: 'org/resolved' } })
    expect(got.bytes).toEqual(bytes)
    expect(peers.asked).toEqual([])
    expect(await r.manifest(encodeBlock({ not: 'stored' }).cid as VersionId)).toBeUndefined()
  })

  it('takes the manifest from the peer whose bytes hash to the version, and penalises the one whose bytes do not', async () => {
    const [self, liar, honest] = ids as [PeerId, PeerId, PeerId]
    const judge = recordingJudge()
    const rejected: string[] = []
    const answers = new Map([[liar.toString(), new Map([[v.version, other.bytes]])], [honest.toString(), new Map([[v.version, bytes]])]])
    const r = resolver(here, judge, fakePeers(self, answers, [liar, honest]), { onRejected: o => { rejected.push(o) } })
    const got = await r.resolve(v.version)
    expect(got).toMatchObject({ local: false, manifest: { name: 'org/resolved' } })
    expect(got.bytes).toEqual(bytes)
    // Both are asked at once: the liar's answer is checked whether it came first or not.
    await expect.poll(() => judge.penalties).toEqual([{ peer: liar.toString(), offence: 'manifest', detail: `served bytes that do not hash to version ${v.version}` }])
    expect(rejected).toEqual(['manifest'])
  })

  it('refuses a manifest over the limits with the config key that raises them, and penalises nobody', async () => {
    const [self, peer] = ids as [PeerId, PeerId]
    const judge = recordingJudge()
    const r = resolver(here, judge, fakePeers(self, new Map([[peer.toString(), new Map([[v.version, bytes]])]]), [peer]), { limits: { maxChunks: 1, maxVersionBytes: 1 << 40 } })
    const refused = r.resolve(v.version)
    await expect(refused).rejects.toMatchObject({ name: 'TooLargeError' })
    await expect(refused).rejects.toThrow(new RegExp(`^refusing to pull ${v.version}: .*\\(transfer\\.maxManifestChunks in config\\.json raises it\\)$`))
    expect(judge.penalties).toEqual([])
  })

  it('ends the search at an invalid manifest (every copy is the same bytes) and penalises its sender', async () => {
    const [self, peer] = ids as [PeerId, PeerId]
    const bogus = encodeBlock({ schema: 2, name: 'not a manifest' })
    const judge = recordingJudge()
    const r = resolver(here, judge, fakePeers(self, new Map([[peer.toString(), new Map([[bogus.cid, bogus.bytes]])]]), [peer]))
    const refused = r.resolve(bogus.cid as VersionId)
    await expect(refused).rejects.toMatchObject({ name: 'MalformedDataError' })
    await expect(refused).rejects.toThrow(`version ${bogus.cid} names an invalid manifest, which cannot be pulled: `)
    expect(judge.penalties).toMatchObject([{ peer: peer.toString(), offence: 'manifest', detail: expect.stringContaining(`served an invalid manifest for ${bogus.cid}`) }])
  })

  it('says so when no peer has the manifest, after every round of asking', async () => {
    const [self, peer] = ids as [PeerId, PeerId]
    const peers = fakePeers(self, new Map(), [peer])
    const r = resolver(here, recordingJudge(), peers)
    await expect(r.resolve(v.version)).rejects.toMatchObject({
      name: 'NotFoundError',
      message: `no reachable peer has the manifest of ${v.version} (bytes that hash to that id); check --peer and that a peer holds the version`
    })
    expect(peers.asked).toEqual([peer.toString(), peer.toString()])
  })

  it('keeps the manifest a head names, from the peer that sent the head, once; a sender of other bytes is penalised and nothing is kept', async () => {
    const [self, liar, honest] = ids as [PeerId, PeerId, PeerId]
    const judge = recordingJudge()
    const answers = new Map([[liar.toString(), new Map([[other.version, bytes]])], [honest.toString(), new Map([[other.version, other.bytes]])]])
    const peers = fakePeers(self, answers, [])
    const r = resolver(here, judge, peers)
    const learning = r.learn(other.version, liar.toString())
    await expect(learning).rejects.toMatchObject({ name: 'MalformedDataError', message: `manifest bytes do not hash to version id ${other.version}` })
    expect(judge.penalties).toEqual([{ peer: liar.toString(), offence: 'manifest', detail: `served an invalid manifest for ${other.version}: manifest bytes do not hash to version id ${other.version}` }])
    expect(await r.manifest(other.version)).toBeUndefined()
    expect(await r.learn(other.version, honest.toString())).toBe(true)
    expect(await r.manifest(other.version)).toEqual(other.bytes)
    // Known now: nobody is asked again.
    expect(await r.learn(other.version, honest.toString())).toBe(false)
    expect(peers.asked).toEqual([liar.toString(), honest.toString()])
  })
})
