/**
 * The walk and `openListed` on real files: whatever replaces a listed file between the walk and
 * the open (a symlink to a secret, another file, a FIFO, a folder swapped for a symlink) is refused
 * with a message naming the path, and nothing of it is read. Each swap is made deterministically
 * between the two steps.
 */
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { link, mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { listSourceFiles, openListed, type SourceFile } from '../../../src/ingest/walk.js'
import { tempDir } from '../../helpers/tmp.js'

const SECRET = 'root-only secret!'

async function expectRefused (p: Promise<unknown>, ...patterns: RegExp[]): Promise<void> {
  const err = await p.then(() => undefined, (e: unknown) => e as Error)
  expect(err, 'expected a refusal').toBeInstanceOf(Error)
  expect(err?.name, err?.message).toBe('InvalidInputError')
  for (const re of patterns) expect(err?.message).toMatch(re)
}

describe('walk, then open only what the walk saw', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let model: string
  let secret: string

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('shoal-walk-'))
    model = join(dir, 'model')
    await mkdir(join(model, 'sub'), { recursive: true })
    await writeFile(join(model, 'config.json'), '{"a":1}')
    // The same size as the secret, so a size check alone would not notice the swap.
    await writeFile(join(model, 'sub', 'weights.bin'), 'x'.repeat(SECRET.length))
    secret = join(dir, 'secret.txt')
    await writeFile(secret, SECRET)
  })
  afterEach(async () => { await cleanup() })

  const listed = async (path: string): Promise<SourceFile> => {
    const { files } = await listSourceFiles(model)
    const file = files.find(f => f.path === path)
    if (file === undefined) throw new Error(`${path} not listed`)
    return file
  }

  it('opens a listed file and reads it', async () => {
    const src = await openListed(await listed('sub/weights.bin'))
    try {
      expect(Buffer.from(await src.read(0, src.size)).toString()).toBe('x'.repeat(SECRET.length))
    } finally {
      await src.close()
    }
  })

  it('refuses a file replaced by a symlink to a file outside the folder', async () => {
    const file = await listed('sub/weights.bin')
    await rm(join(model, 'sub', 'weights.bin'))
    await symlink(secret, join(model, 'sub', 'weights.bin'))
    await expectRefused(openListed(file), /^sub\/weights\.bin was replaced by a symlink after the folder was listed/, /nothing was added/)
  })

  it('refuses a file replaced by another file of the same size', async () => {
    const file = await listed('sub/weights.bin')
    await writeFile(join(dir, 'other'), SECRET)
    await rename(join(dir, 'other'), join(model, 'sub', 'weights.bin'))
    await expectRefused(openListed(file), /^sub\/weights\.bin was replaced by another file after the folder was listed/)
  })

  it('refuses a FIFO swapped in, without waiting for a writer', async () => {
    const file = await listed('sub/weights.bin')
    await rm(join(model, 'sub', 'weights.bin'))
    execFileSync('mkfifo', [join(model, 'sub', 'weights.bin')])
    await expectRefused(openListed(file), /^sub\/weights\.bin was replaced by something that is not a regular file/)
  }, 10_000)

  it('refuses a file that was removed, or that changed size', async () => {
    const file = await listed('sub/weights.bin')
    await writeFile(join(model, 'sub', 'weights.bin'), 'longer than it was', { flag: 'a' })
    await expectRefused(openListed(file), /^sub\/weights\.bin changed size while being added/)
    await rm(join(model, 'sub', 'weights.bin'))
    await expectRefused(openListed(file), /^sub\/weights\.bin was removed or moved after the folder was listed/)
  })

  it('refuses a file of an in-folder symlink when the link target was replaced by a symlink', async () => {
    await symlink('sub/weights.bin', join(model, 'alias.bin'))
    const file = await listed('alias.bin')
    expect(file.absolute).toBe(join(model, 'sub', 'weights.bin'))
    await rm(join(model, 'sub', 'weights.bin'))
    await symlink(secret, join(model, 'sub', 'weights.bin'))
    await expectRefused(openListed(file), /^alias\.bin was replaced by a symlink/)
  })

  // The path check reads /proc/self/fd; elsewhere the device-and-inode check is what holds.
  it.skipIf(!existsSync('/proc/self/fd'))('refuses a file reached through a folder that was replaced by a symlink, even to a hard link of the same file', async () => {
    const file = await listed('sub/weights.bin')
    await mkdir(join(dir, 'elsewhere'))
    await link(join(model, 'sub', 'weights.bin'), join(dir, 'elsewhere', 'weights.bin'))
    await rename(join(model, 'sub'), join(dir, 'old-sub'))
    await symlink(join(dir, 'elsewhere'), join(model, 'sub'))
    await expectRefused(openListed(file), /^sub\/weights\.bin is now reached through a different folder/)
  })

  it('refuses names with bidirectional or invisible characters while listing, naming the code point', async () => {
    await writeFile(join(model, 'evil\u202egpj.exe'), 'x')
    await expectRefused(listSourceFiles(model), /invalid file path "evil\\u202egpj\.exe": it contains U\+202E RIGHT-TO-LEFT OVERRIDE/)
    await rm(join(model, 'evil\u202egpj.exe'))
    await writeFile(join(model, 'zero\u200bwidth.txt'), 'x')
    await expectRefused(listSourceFiles(model), /U\+200B ZERO WIDTH SPACE/)
  })
})

describe('cache snapshots: links into the cache\'s own blobs are followed, others refused', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeEach(async () => { ({ dir, cleanup } = await tempDir('shoal-walk-cache-')) })
  afterEach(async () => { await cleanup() })

  /** A Hugging Face hub cache: `hub/models--org--tiny/{blobs/<sha>, snapshots/<rev>/<file> → ../../blobs/<sha>}`. */
  async function hubSnapshot (): Promise<string> {
    const repo = join(dir, 'hub', 'models--org--tiny')
    const snapshot = join(repo, 'snapshots', 'abc123')
    await mkdir(join(repo, 'blobs'), { recursive: true })
    await mkdir(join(snapshot, 'sub'), { recursive: true })
    await writeFile(join(repo, 'blobs', 'aaa'), '{"model_type":"llama"}')
    await writeFile(join(repo, 'blobs', 'bbb'), 'weights')
    await symlink('../../blobs/aaa', join(snapshot, 'config.json'))
    await symlink('../../../blobs/bbb', join(snapshot, 'sub', 'model.bin'))
    return snapshot
  }

  it('lists a hub snapshot whose files are links into blobs/, under the links\' names', async () => {
    const snapshot = await hubSnapshot()
    const { files } = await listSourceFiles(snapshot)
    expect(files.map(f => [f.path, f.size])).toEqual([['config.json', 22], ['sub/model.bin', 7]])
    const src = await openListed(files[0] as SourceFile)
    try {
      expect(Buffer.from(await src.read(0, src.size)).toString()).toBe('{"model_type":"llama"}')
    } finally {
      await src.close()
    }
  })

  it('lists a snapshot of a shoal home, whose links go to $SHOAL_HOME/blobs', async () => {
    const home = join(dir, 'home')
    const snapshot = join(home, 'models', 'models--tiny', 'snapshots', 'bafyversion')
    await mkdir(join(home, 'blobs'), { recursive: true })
    await mkdir(snapshot, { recursive: true })
    await writeFile(join(home, 'blobs', 'digest1'), 'bytes')
    await symlink('../../../../blobs/digest1', join(snapshot, 'model.safetensors'))
    expect((await listSourceFiles(snapshot)).files.map(f => f.path)).toEqual(['model.safetensors'])
  })

  it('still refuses a link in a snapshot that leaves the cache, saying where it points', async () => {
    const snapshot = await hubSnapshot()
    await writeFile(join(dir, 'secret.txt'), SECRET)
    await symlink(join(dir, 'secret.txt'), join(snapshot, 'leak.txt'))
    await expectRefused(listSourceFiles(snapshot), /^leak\.txt is a symlink to .*secret\.txt, outside .*snapshots\/abc123 and its cache's .*models--org--tiny\/blobs: copy the file in instead$/)
  })

  it('does not widen what links may reach for a folder that is not a snapshot', async () => {
    const model = join(dir, 'plain')
    await mkdir(join(dir, 'blobs'), { recursive: true })
    await mkdir(model)
    await writeFile(join(dir, 'blobs', 'x'), 'x')
    await symlink('../blobs/x', join(model, 'x'))
    await expectRefused(listSourceFiles(model), /^x is a symlink to .*blobs\/x, outside .*plain: copy the file in instead$/)
  })
})
