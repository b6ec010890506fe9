/**
 * `shoal verify` against bytes damaged on disk behind the daemon's back: the damage is found,
 * reported and quarantined; the version is shown as damaged and never exported; re-adding the same
 * files repairs it.
 */
import { chmod, open, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ShowResult } from '../../src/rpc/api.js'
import type { VersionInfo } from '../../src/store/store.js'
import type { VerifyReport } from '../../src/store/verify.js'
import { EXIT, Harness, expectConsistent, expectExit, listDir, treeDigests, versionOf, writeModelFolder, type DaemonProcess } from './helpers.js'

/** Flips every bit of the byte in the middle of `path` (made writable first, as an intruder would). */
async function flipMiddleByte (path: string): Promise<void> {
  const { size, mode } = await stat(path)
  await chmod(path, 0o644)
  const fh = await open(path, 'r+')
  try {
    const at = Math.floor(size / 2)
    const b = Buffer.alloc(1)
    await fh.read(b, 0, 1, at)
    b[0] = (b[0] ?? 0) ^ 0xff
    await fh.write(b, 0, 1, at)
  } finally {
    await fh.close()
  }
  await chmod(path, mode & 0o777)
}

describe('verify finds, reports and quarantines damaged bytes', () => {
  let h: Harness
  let d: DaemonProcess
  let src: string
  let srcDigests: Record<string, string>
  let version: string
  let blob: string

  beforeAll(async () => {
    h = await Harness.create('verify')
    src = await writeModelFolder(join(h.root, 'src'), { metadata: { description: 'verify me' } })
    srcDigests = await treeDigests(src)
    d = await h.start(join(h.root, 'home'))
    version = versionOf(await d.cli(['add', src, '--name', 'tiny', '--label', 'prod', '--json']))
    const shown = await d.json<ShowResult>(['show', 'tiny@prod'])
    blob = shown.files.find(f => f.path === 'model.safetensors')?.digest ?? ''
    expect(blob).not.toBe('')
    await expectConsistent(d)
  })

  afterAll(async () => { await h?.close() })

  it('export refuses damaged bytes before verify has run, leaving no partial file', async () => {
    await flipMiddleByte(join(d.home, 'blobs', blob))
    const out = join(h.root, 'export-before-verify')
    const r = await d.cli(['export', 'tiny@prod', out])
    expectExit(r, EXIT.DAMAGED)
    expect(r.stderr).toMatch(/model\.safetensors.*damaged.*shoal verify/)
    const left = await listDir(out)
    expect(left).not.toContain('model.safetensors')
    expect(left.filter(n => n.startsWith('.')), 'no temporary export file is left').toEqual([])
  })

  it('verify reports a chunk mismatch, exits 7 and moves the blob to quarantine/', async () => {
    const r = await d.cli(['verify', '--json'])
    expectExit(r, EXIT.DAMAGED)
    const report = JSON.parse(r.stdout) as VerifyReport
    expect(report.problems).toEqual([expect.objectContaining({ kind: 'chunk-mismatch', subject: blob })])
    expect(report.quarantined).toEqual([blob])
    expect(report.damaged).toEqual([`tiny@${version}`])
    expect(await listDir(join(d.home, 'blobs'))).not.toContain(blob)
    const quarantined = await listDir(join(d.home, 'quarantine'))
    expect(quarantined).toHaveLength(1)
    expect(quarantined[0]).toContain(blob)

    const human = await d.cli(['verify'])
    expectExit(human, EXIT.DAMAGED)
    expect(human.stdout + human.stderr).toContain(`tiny@${version}`)
  })

  it('the version is listed as damaged and cannot be exported, but show still works', async () => {
    const versions = await d.json<VersionInfo[]>(['ls', 'tiny'])
    expect(versions).toEqual([expect.objectContaining({ version, complete: false })])

    const shown = await d.json<ShowResult>(['show', 'tiny@prod'])
    expect(shown).toMatchObject({ version, complete: false, missing: ['model.safetensors'], metadata: { description: 'verify me' } })
    expect(shown.files.find(f => f.path === 'model.safetensors')?.structure?.tensors.length).toBeGreaterThan(0)
    // A loader reading the snapshot sees a missing file, never the corrupt bytes.
    await expect(readFile(join(shown.path, 'model.safetensors'))).rejects.toMatchObject({ code: 'ENOENT' })
    expect((await readFile(join(shown.path, 'config.json'))).equals(await readFile(join(src, 'config.json')))).toBe(true)

    const out = join(h.root, 'export-damaged')
    const r = await d.cli(['export', 'tiny@prod', out, '--json'])
    expectExit(r, EXIT.NOT_FOUND)
    expect(r.stderr).toMatch(/damaged.*model\.safetensors.*re-add/)
    expect(await listDir(out), 'nothing is written for a damaged version').toEqual([])
  })

  it('re-adding the same folder repairs it: verify clean, export byte-identical', async () => {
    // Same content, same id: the damaged version itself is made whole again.
    const again = versionOf(await d.cli(['add', src, '--name', 'tiny', '--json']))
    expect(again).toBe(version)
    const versions = await d.json<VersionInfo[]>(['ls', 'tiny'])
    expect(versions.map(v => [v.version, v.complete])).toEqual([[version, true]])
    await expectConsistent(d)
    const r = await d.cli(['verify', '--json'])
    expectExit(r, 0)
    expect((JSON.parse(r.stdout) as VerifyReport).problems).toEqual([])

    for (const ref of [`tiny@${version}`]) {
      const out = join(h.root, `export-${ref.split('@')[1] ?? ''}`)
      expectExit(await d.cli(['export', ref, out]), 0)
      expect(await treeDigests(out)).toEqual(srcDigests)
    }
    const shown = await d.json<ShowResult>(['show', 'tiny@prod'])
    expect(shown).toMatchObject({ version, complete: true, missing: [] })
  })
})
