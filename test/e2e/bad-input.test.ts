/**
 * Issue 2, "Bad input: clear error, nothing lost": hostile or broken model folders, bad names and
 * metadata, a second daemon on the same home, and malformed RPC requests. Each is refused with a
 * message a person can act on, and afterwards the store is exactly as before: `verify` clean, the
 * listing unchanged (no partial version), `tmp/` empty, no stray blob.
 */
import { execFileSync } from 'node:child_process'
import { copyFile, mkdir, readFile, symlink, truncate, writeFile } from 'node:fs/promises'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ROOT } from '../../scripts/lib/daemon-proc.js'
import { ShoalClient } from '../../src/rpc/client.js'
import { concat, pb, u32, u64, utf8 } from '../unit/model/build.js'
import { EXIT, Harness, expectConsistent, expectExit, listing, rawRequest, status, versionOf, writeModelFolder, type DaemonProcess } from './helpers.js'

const FIXTURES = join(ROOT, 'test', 'fixtures', 'models')

interface BadCase {
  name: string
  /** Builds the input under `dir`; returns the path to add. */
  make: (dir: string) => Promise<string>
  /** Extra `add` arguments; `--name bad` unless `name` is given here. */
  args?: string[]
  modelName?: string
  code: number
  /** Every pattern must match stderr: the message names the problem and where it is. */
  message: RegExp[]
}

/** A folder holding a valid config.json beside `file`, so the bad file is not alone. */
async function folderWith (dir: string, file: string, bytes: Uint8Array | string): Promise<string> {
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'config.json'), '{"architectures":["LlamaForCausalLM"]}\n')
  await writeFile(join(dir, file), bytes)
  return dir
}

const FLOAT = 1
/** An ONNX model with one initializer whose external data lives at `location`. */
function onnxWithExternal (location: string): Uint8Array {
  const initializer = pb.msg(5, pb.int(1, 4), pb.int(2, FLOAT), pb.str(8, 'w'),
    pb.msg(13, pb.str(1, 'location'), pb.str(2, location)), pb.msg(13, pb.str(1, 'length'), pb.str(2, '16')), pb.int(14, 1))
  return concat(pb.int(1, 8), pb.msg(7, pb.str(2, 'g'), initializer), pb.msg(8, pb.str(1, ''), pb.int(2, 17)))
}

const CASES: BadCase[] = [
  {
    name: 'safetensors whose header length runs past the end of the file',
    make: async dir => await folderWith(dir, 'model.safetensors', concat(u64(1_000_000), utf8('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'))),
    code: EXIT.INVALID,
    message: [/model\.safetensors/, /header/i, /nothing was added/]
  },
  {
    name: 'safetensors with overlapping tensor offsets',
    make: async dir => {
      const header = utf8(JSON.stringify({
        a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
        b: { dtype: 'F32', shape: [4], data_offsets: [8, 24] }
      }))
      return await folderWith(dir, 'model.safetensors', concat(u64(header.byteLength), header, new Uint8Array(24)))
    },
    code: EXIT.INVALID,
    message: [/model\.safetensors/, /overlap/i]
  },
  {
    name: 'truncated GGUF',
    make: async dir => {
      await mkdir(dir, { recursive: true })
      await copyFile(join(FIXTURES, 'tiny-llama.gguf'), join(dir, 'tiny-llama.gguf'))
      await truncate(join(dir, 'tiny-llama.gguf'), 2000)
      return dir
    },
    code: EXIT.INVALID,
    message: [/tiny-llama\.gguf/, /damaged or incomplete/]
  },
  {
    name: 'header-only GGUF cut inside its metadata',
    make: async dir => {
      await mkdir(dir, { recursive: true })
      await writeFile(join(dir, 'm.gguf'), (await readFile(join(FIXTURES, 'tiny-llama.gguf'))).subarray(0, 60))
      return dir
    },
    code: EXIT.INVALID,
    message: [/m\.gguf/, /damaged or incomplete/]
  },
  {
    name: 'garbage .onnx (not protobuf)',
    make: async dir => await folderWith(dir, 'model.onnx', 'this is not a protobuf message\n'.repeat(8)),
    code: EXIT.INVALID,
    message: [/model\.onnx/, /damaged or incomplete/]
  },
  {
    name: 'a file name that is not valid UTF-8',
    make: async dir => {
      await writeModelFolder(dir)
      writeFileSync(Buffer.concat([Buffer.from(`${dir}/`), Buffer.from([0xff, 0xfe, 0x41])]), 'x')
      return dir
    },
    code: EXIT.INVALID,
    message: [/not valid UTF-8/, /rename it/]
  },
  {
    name: 'a symlink pointing outside the folder',
    make: async dir => {
      await writeModelFolder(dir)
      await symlink('/etc/hostname', join(dir, 'escape.txt'))
      return dir
    },
    code: EXIT.INVALID,
    message: [/escape\.txt/, /outside/]
  },
  {
    name: 'a relative symlink climbing out with ..',
    make: async dir => {
      await writeModelFolder(dir)
      await writeFile(join(dir, '..', 'secret.txt'), 'secret')
      await symlink('../secret.txt', join(dir, 'secret.txt'))
      return dir
    },
    code: EXIT.INVALID,
    message: [/secret\.txt/, /outside/]
  },
  {
    name: 'a FIFO in the folder',
    make: async dir => {
      await writeModelFolder(dir)
      execFileSync('mkfifo', [join(dir, 'pipe')])
      return dir
    },
    code: EXIT.INVALID,
    message: [/pipe/, /special file/]
  },
  {
    name: 'ONNX external data at ../../etc/passwd',
    make: async dir => {
      await folderWith(dir, 'model.onnx', onnxWithExternal('../../etc/passwd'))
      return dir
    },
    code: EXIT.INVALID,
    message: [/model\.onnx/, /\.\.\/\.\.\/etc\/passwd/, /"\.\."/]
  },
  {
    name: 'ONNX external data at an absolute path',
    make: async dir => await folderWith(dir, 'model.onnx', onnxWithExternal('/etc/passwd')),
    code: EXIT.INVALID,
    message: [/model\.onnx/, /\/etc\/passwd/]
  },
  {
    name: 'model name ../x',
    make: async dir => await writeModelFolder(dir),
    modelName: '../x',
    code: EXIT.INVALID,
    message: [/invalid model name/, /\.\.\/x/]
  },
  {
    name: 'model name a--b',
    make: async dir => await writeModelFolder(dir),
    modelName: 'a--b',
    code: EXIT.INVALID,
    message: [/invalid model name/, /--/]
  },
  {
    name: 'metadata file with an unknown key',
    make: async dir => await writeModelFolder(dir, { metadata: { descripton: 'typo' } }),
    code: EXIT.INVALID,
    message: [/shoal\.json/, /descripton/]
  },
  {
    name: 'metadata file that is not JSON',
    make: async dir => {
      await writeModelFolder(dir)
      await writeFile(join(dir, 'shoal.json'), '{"description": "unterminated')
      return dir
    },
    code: EXIT.INVALID,
    message: [/shoal\.json/, /not valid JSON/]
  },
  {
    name: '--meta file with a value of the wrong type',
    make: async dir => {
      await writeModelFolder(dir)
      await writeFile(join(dir, '..', 'meta.json'), JSON.stringify({ hyperparameters: { lr: { nested: true } } }))
      return dir
    },
    args: ['--meta', 'META'],
    code: EXIT.INVALID,
    message: [/meta\.json/, /hyperparameters/]
  },
  {
    name: 'add --label ../x (refused before the version is committed or pinned)',
    make: async dir => await writeModelFolder(dir),
    args: ['--label', '../x'],
    code: EXIT.INVALID,
    message: [/invalid label "\.\.\/x"/]
  },
  {
    name: 'a file name holding a right-to-left override',
    make: async dir => {
      await writeModelFolder(dir)
      await writeFile(join(dir, 'evil\u202egpj.exe'), 'x')
      return dir
    },
    code: EXIT.INVALID,
    message: [/invalid file path "evil\\u202egpj\.exe": it contains U\+202E RIGHT-TO-LEFT OVERRIDE, a bidirectional control character/]
  },
  {
    name: '--meta naming a FIFO (refused at once, not waited on)',
    make: async dir => {
      await writeModelFolder(dir)
      execFileSync('mkfifo', [join(dir, '..', 'meta.json')])
      return dir
    },
    args: ['--meta', 'META'],
    code: EXIT.INVALID,
    message: [/metadata file .*meta\.json is not a regular file/]
  },
  {
    name: 'safetensors declaring a header over the 16 MiB limit',
    make: async dir => await folderWith(dir, 'model.safetensors', concat(u64(16 * 1024 * 1024 + 1), utf8('{}'))),
    code: EXIT.INVALID,
    message: [/model\.safetensors: safetensors header length 16777217 is over the limit of 16777216 bytes/, /nothing was added/]
  },
  {
    name: 'safetensors header of more tensors than the limit (tiny entries)',
    make: async dir => {
      const parts: string[] = []
      for (let i = 0; i < 262_146; i++) parts.push(`"${i}":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}`)
      const header = utf8(`{${parts.join(',')}}`)
      return await folderWith(dir, 'model.safetensors', concat(u64(header.byteLength), header))
    },
    code: EXIT.INVALID,
    message: [/model\.safetensors: safetensors header has more than 262145 entries, over the limit of 262145/]
  },
  {
    name: 'GGUF declaring a 16 MiB tensor name',
    make: async dir => await folderWith(dir, 'model.gguf', concat(utf8('GGUF'), u32(3), u64(1), u64(0), u64(16 * 1024 * 1024), new Uint8Array(4096))),
    code: EXIT.INVALID,
    message: [/model\.gguf: tensor 0 name is 16777216 bytes, over the limit of 1024 bytes/]
  },
  {
    name: 'an empty folder',
    make: async dir => { await mkdir(dir, { recursive: true }); return dir },
    code: EXIT.INVALID,
    message: [/no files/]
  },
  {
    name: 'a path that does not exist',
    make: async dir => join(dir, 'nope'),
    code: EXIT.INVALID,
    message: [/nope/, /no such file or folder/]
  }
]

describe('bad input: clear error, nothing lost', () => {
  let h: Harness
  let d: DaemonProcess
  let baseline: Record<string, unknown>
  let blobs: number

  beforeAll(async () => {
    h = await Harness.create('bad-input')
    d = await h.start(join(h.root, 'home'))
    versionOf(await d.cli(['add', await writeModelFolder(join(h.root, 'good'), { metadata: { task: 'text-generation' } }), '--name', 'good', '--label', 'prod', '--json']))
    baseline = await listing(d)
    blobs = (await status(d)).store.blobs
  })

  afterAll(async () => { await h?.close() })

  for (const [i, c] of CASES.entries()) {
    it(`refuses ${c.name}`, async () => {
      const caseDir = join(h.root, `case-${i}`)
      const path = await c.make(join(caseDir, 'model'))
      const args = (c.args ?? []).map(a => a === 'META' ? join(caseDir, 'meta.json') : a)
      const r = await d.cli(['add', path, '--name', c.modelName ?? 'bad', ...args])
      expectExit(r, c.code)
      for (const re of c.message) expect(r.stderr).toMatch(re)
      expect(r.stderr).not.toMatch(/internal error/i)
      expect(r.stderr, 'the file is named once, not twice').not.toMatch(/(\S+): \1:/)
      expect(r.stderr, 'no raw bidirectional or invisible character reaches the terminal').not.toMatch(/[\u202a-\u202e\u2066-\u2069\u200b-\u200f]/)
      const json = await d.cli(['add', path, '--name', c.modelName ?? 'bad', ...args, '--json'])
      expectExit(json, c.code)
      expect(JSON.parse(json.stdout)).toMatchObject({ error: { code: expect.any(String), message: expect.any(String) } })
      await expectConsistent(d, baseline)
      // Refused before any data was read or stored: not a blob more (GC would remove one, but it was never written).
      expect((await status(d)).store.blobs).toBe(blobs)
    })
  }

  it('a second daemon on the same home exits non-zero saying the store is in use; the first keeps working', async () => {
    const before = await status(d)
    const second = h.daemon(d.home)
    await expect(second.start()).rejects.toThrow(/in use by another shoal daemon/)
    expect(second.child?.exitCode).toBe(EXIT.CONFLICT)
    expect(second.stderr).toMatch(/stop it, or use another SHOAL_HOME/)
    const after = await status(d)
    expect(after.pid).toBe(before.pid)
    expect(after.socket).toBe(d.daemonSocket)
    await expectConsistent(d, baseline)
    // Still takes writes.
    const v = versionOf(await d.cli(['add', join(h.root, 'good'), '--name', 'good2', '--no-pin', '--json']))
    expectExit(await d.cli(['show', `good2@${v}`]), 0)
    expect((await d.json<{ versions: unknown[] }>(['gc'])).versions).toHaveLength(1)
    await expectConsistent(d, baseline)
  })

  // Requests the OpenAPI document itself refuses are marked `invalid` with the reason; the
  // harness checks that they fail it, and that every other request here passes it.
  describe('raw HTTP on the socket', () => {
    const expectError = (r: Awaited<ReturnType<typeof rawRequest>>, statusCode: number, code: string, message?: RegExp): void => {
      expect(r.status, r.text).toBe(statusCode)
      expect(r.headers['content-type']).toMatch(/application\/json/)
      const body = r.json as { code: string, message: string }
      expect(Object.keys(body).sort()).toEqual(['code', 'message'])
      expect(body.code).toBe(code)
      expect(body.message.length).toBeGreaterThan(10)
      if (message !== undefined) expect(body.message).toMatch(message)
    }

    it('malformed JSON body → 400', async () => {
      expectError(await rawRequest(d.socket, 'POST', '/v1/gc', '{"dryRun": tru', { invalid: 'not JSON' }), 400, 'INVALID_INPUT', /not valid JSON/)
      expectError(await rawRequest(d.socket, 'POST', '/v1/add', '[1,2', { invalid: 'not JSON' }), 400, 'INVALID_INPUT', /not valid JSON/)
    })

    it('unknown field → 400', async () => {
      expectError(await rawRequest(d.socket, 'POST', '/v1/gc', JSON.stringify({ dryRun: true, bogus: 1 }), { invalid: 'an unknown field' }), 400, 'INVALID_INPUT', /bogus/)
      expectError(await rawRequest(d.socket, 'POST', '/v1/pins', JSON.stringify({ ref: 'good', force: true }), { invalid: 'an unknown field' }), 400, 'INVALID_INPUT', /force/)
    })

    it('body over 1 MiB → 413, declared or streamed', async () => {
      const big = JSON.stringify({ dryRun: true, pad: 'x'.repeat(1024 * 1024) })
      expectError(await rawRequest(d.socket, 'POST', '/v1/gc', big, { invalid: 'an unknown field, in a body over the cap' }), 413, 'PAYLOAD_TOO_LARGE')
      expectError(await rawRequest(d.socket, 'POST', '/v1/gc', big, { chunked: true, invalid: 'an unknown field, in a body over the cap' }), 413, 'PAYLOAD_TOO_LARGE')
    })

    it('unknown endpoint → 404, wrong method → 405', async () => {
      expectError(await rawRequest(d.socket, 'GET', '/v1/nope', undefined, { invalid: 'an unknown path' }), 404, 'NOT_FOUND', /\/v1\/nope/)
      expectError(await rawRequest(d.socket, 'GET', '/v2/status', undefined, { invalid: 'an unknown path' }), 404, 'NOT_FOUND')
      expectError(await rawRequest(d.socket, 'DELETE', '/v1/status', undefined, { invalid: 'a method the path does not take' }), 405, 'METHOD_NOT_ALLOWED')
    })

    it('show?ref=../../etc → 400', async () => {
      expectError(await rawRequest(d.socket, 'GET', '/v1/show?ref=../../etc'), 400, 'INVALID_INPUT', /invalid model name/)
      expectError(await rawRequest(d.socket, 'GET', `/v1/show?ref=${encodeURIComponent('good@../../etc')}`), 400, 'INVALID_INPUT')
      expectError(await rawRequest(d.socket, 'GET', '/v1/show', undefined, { invalid: 'no ref' }), 400, 'INVALID_INPUT', /ref/)
    })

    it('relative, NUL-bearing or escaping paths in add/export → 400', async () => {
      const good = join(h.root, 'good')
      expectError(await rawRequest(d.socket, 'POST', '/v1/add', JSON.stringify({ path: 'good', name: 'x' }), { invalid: 'a relative path' }), 400, 'INVALID_INPUT', /path/)
      expectError(await rawRequest(d.socket, 'POST', '/v1/add', JSON.stringify({ path: `${good}\u0000x`, name: 'x' }), { invalid: 'a path with a NUL' }), 400, 'INVALID_INPUT', /NUL/)
      expectError(await rawRequest(d.socket, 'POST', '/v1/add', JSON.stringify({ path: good, name: 'x', metaFile: 'meta.json' }), { invalid: 'a relative metaFile' }), 400, 'INVALID_INPUT', /metaFile/)
      expectError(await rawRequest(d.socket, 'POST', '/v1/export', JSON.stringify({ ref: 'good', dest: 'out' }), { invalid: 'a relative dest' }), 400, 'INVALID_INPUT', /dest/)
    })

    it('bad head, key, trust and event requests → 400/404, and nothing is published or trusted', async () => {
      const before = await status(d)
      const trust = (await rawRequest(d.socket, 'GET', '/v1/trust')).json
      const post = async (path: string, body: unknown, method = 'POST', invalid?: string): Promise<Awaited<ReturnType<typeof rawRequest>>> => await rawRequest(d.socket, method, path, JSON.stringify(body), { ...(invalid !== undefined ? { invalid } : {}) })
      expectError(await post('/v1/labels', { name: 'good', label: 'prod', version: 'good@nosuch' }), 400, 'INVALID_INPUT')
      expectError(await post('/v1/labels', { name: 'good', label: 'canary', version: 'nosuchlabel' }), 404, 'NOT_FOUND')
      expectError(await post('/v1/labels', { name: 'good', label: 'canary', version: 'prod', activation: { mode: 'cold', at: 'tomorrow' } }, 'POST', 'at is not a time'), 400, 'INVALID_INPUT', /at/)
      expectError(await post('/v1/labels', { name: 'good', label: 'canary', version: 'prod', key: 'nosuch' }), 404, 'NOT_FOUND')
      expectError(await post('/v1/labels', { name: 'good', label: 'canary', version: 'prod', sign: false }, 'POST', 'an unknown field'), 400, 'INVALID_INPUT', /sign/)
      expectError(await post('/v1/rollback', { ref: 'good@prod' }), 404, 'NOT_FOUND')
      expectError(await post('/v1/activate', { ref: 'good' }), 400, 'INVALID_INPUT')
      expectError(await rawRequest(d.socket, 'GET', '/v1/heads/history?ref=good'), 400, 'INVALID_INPUT')
      expectError(await post('/v1/keys', { name: 'Not A Name' }), 400, 'INVALID_INPUT')
      expectError(await post('/v1/keys', { name: 'default' }), 409, 'CONFLICT')
      expectError(await post('/v1/trust', { key: 'not-a-key', models: '*' }), 400, 'INVALID_INPUT')
      expectError(await post('/v1/trust', { key: 'did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK', models: 'org/[a]' }), 400, 'INVALID_INPUT')
      expectError(await post('/v1/trust', { key: 'not-a-key' }, 'DELETE'), 400, 'INVALID_INPUT')
      for (const limit of ['0', '10001', 'x', '-1']) expectError(await rawRequest(d.socket, 'GET', `/v1/events?limit=${limit}`, undefined, { invalid: 'limit out of range' }), 400, 'INVALID_INPUT', /limit/)
      const after = await status(d)
      expect(after.heads).toEqual(before.heads)
      expect((await rawRequest(d.socket, 'GET', '/v1/trust')).json).toEqual(trust)
      expect((await rawRequest(d.socket, 'GET', '/v1/keys')).json).toHaveLength(1)
    })

    it('the daemon is unharmed by all of it', async () => {
      const r = await rawRequest(d.socket, 'GET', '/v1/status')
      expect(r.status).toBe(200)
      await expectConsistent(d, baseline)
    })
  })
})

describe('a large header within the limits does not hold the daemon', () => {
  let h: Harness
  let d: DaemonProcess

  beforeAll(async () => {
    h = await Harness.create('large-header')
    d = await h.start(join(h.root, 'home'))
  })
  afterAll(async () => { await h?.close() })

  it('status answers while an add reads a safetensors header of 100,000 tensors', async () => {
    const dir = join(h.root, 'model')
    const tensors = 100_000
    const parts: string[] = []
    for (let i = 0; i < tensors; i++) parts.push(`"model.layers.${i}.w":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}`)
    const header = utf8(`{${parts.join(',')}}`)
    await folderWith(dir, 'model.safetensors', concat(u64(header.byteLength), header))
    await rawRequest(d.socket, 'GET', '/metrics') // starts the event-loop delay measurement afresh

    // The walk and the header read come before the first progress event; copying and the commit after it.
    const now: { phase: 'header' | 'copy and commit' | 'done' } = { phase: 'header' }
    const add = new ShoalClient({ socketPath: d.socket }).add({ path: dir, name: 'big' }, () => { if (now.phase === 'header') now.phase = 'copy and commit' })
      .finally(() => { now.phase = 'done' })
    const answers: Array<{ ms: number, phase: string }> = []
    // Back to back, no pause: each status goes out as soon as the previous one is answered.
    while (now.phase !== 'done') {
      const started = performance.now()
      const r = await rawRequest(d.socket, 'GET', '/v1/status')
      expect(r.status, r.text).toBe(200)
      answers.push({ ms: performance.now() - started, phase: now.phase })
    }
    const result = await add
    const lag = /^shoal_nodejs_eventloop_lag_max_seconds (\S+)$/m.exec((await rawRequest(d.socket, 'GET', '/metrics')).text)?.[1]
    const summary = (which: string): string => {
      const ms = answers.filter(a => a.phase === which).map(a => a.ms).sort((x, y) => x - y)
      return `${ms.length} answers, latency median ${(ms[Math.floor(ms.length / 2)] ?? 0).toFixed(1)} ms, max ${(ms[ms.length - 1] ?? 0).toFixed(1)} ms`
    }
    console.log(`status during an add of a ${header.byteLength}-byte safetensors header: while reading the header ${summary('header')}; while copying and committing ${summary('copy and commit')}; daemon event-loop delay max over the add ${lag === undefined ? '?' : (Number(lag) * 1000).toFixed(0)} ms`)

    expect(answers.filter(a => a.phase === 'header').length, 'status answered while the header was being read').toBeGreaterThan(0)
    expect(result.structure.tensorCount).toBe(tensors)
  })
})
