import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { DEFAULT_MAX_PULL_ATTEMPTS, loadConfig } from '../../../src/config/config.js'
import { DEFAULT_MAX_MANIFEST_CHUNKS, DEFAULT_MAX_VERSION_BYTES } from '../../../src/core/manifest.js'
import { DEFAULT_ORIGIN_MAX_FAILURES } from '../../../src/fetcher/origin.js'
import { tempDir } from '../../helpers/tmp.js'

describe('config: transfer limits and origins', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeEach(async () => { ({ dir, cleanup } = await tempDir()) })
  afterEach(async () => { await cleanup() })

  const load = async (transfer: unknown): Promise<Awaited<ReturnType<typeof loadConfig>>> => {
    await writeFile(join(dir, 'config.json'), JSON.stringify({ transfer }))
    return await loadConfig({ home: dir, env: {} })
  }

  it('defaults: no remote origins, the named limits', async () => {
    const c = await loadConfig({ home: dir, env: {} })
    expect(c.transfer).toMatchObject({
      origins: [], originMaxFailures: DEFAULT_ORIGIN_MAX_FAILURES, maxManifestChunks: DEFAULT_MAX_MANIFEST_CHUNKS,
      maxVersionBytes: DEFAULT_MAX_VERSION_BYTES, maxPullAttempts: DEFAULT_MAX_PULL_ATTEMPTS
    })
  })

  it('takes the keys, sizes as text included', async () => {
    const c = await load({ origins: ['models.example.com', 'https://cdn.example.com/org/'], originMaxFailures: 3, maxManifestChunks: 1000, maxVersionBytes: '1.5TiB', maxPullAttempts: 2 })
    expect(c.transfer).toMatchObject({ origins: ['models.example.com', 'https://cdn.example.com/org/'], originMaxFailures: 3, maxManifestChunks: 1000, maxVersionBytes: 1.5 * 1024 ** 4, maxPullAttempts: 2 })
  })

  it('refuses an allow-list entry that is neither a host nor an http(s) prefix, naming it and what to write', async () => {
    await expect(load({ origins: ['models.example.com', 'file:///etc'] })).rejects.toMatchObject({
      name: 'InvalidInputError',
      message: expect.stringMatching(/config\.json is invalid at transfer\.origins\.1: .*file:\/\/\/etc.*use a host \(models\.example\.com, 10\.0\.0\.5:8080\) or an http\(s\) URL prefix/)
    })
    await expect(load({ maxPullAttempts: 0 })).rejects.toMatchObject({ name: 'InvalidInputError', message: expect.stringContaining('transfer.maxPullAttempts') })
  })
})
