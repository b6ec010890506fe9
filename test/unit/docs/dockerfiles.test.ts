/**
 * The images build from a pinned base: every stage of every Dockerfile starts from an image named
 * by its digest (an `ARG` default counts), on a Node.js LTS line, and the daemon's image and the
 * serving example's share it (they mount the same socket and snapshot volume).
 */
import { readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../..')
const DOCKERFILES = ['docker/Dockerfile', 'examples/serve-onnx/Dockerfile']

/** The image each `FROM` names, with `${ARG}` replaced by the global `ARG` defaults before the first `FROM`. */
function baseImages (text: string): string[] {
  const args = new Map<string, string>()
  const images: string[] = []
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    const arg = /^ARG\s+(\w+)=(\S+)$/.exec(line)
    if (arg !== null && images.length === 0) args.set(arg[1]!, arg[2]!)
    const from = /^FROM\s+(\S+)/i.exec(line)
    if (from !== null) images.push(from[1]!.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a?: string, b?: string) => args.get(a ?? b ?? '') ?? `<unset ${a ?? b ?? ''}>`))
  }
  return images
}

describe('Dockerfiles', () => {
  it('start every stage from a Node.js LTS image pinned by digest, the same in both', async () => {
    const bases = new Set<string>()
    for (const file of DOCKERFILES) {
      const images = baseImages(await readFile(join(ROOT, file), 'utf8'))
      expect(images.length, file).toBeGreaterThanOrEqual(2)
      for (const image of images) {
        expect(image, `${file}: ${image} is not pinned by digest`).toMatch(/^node:(\d+)-[\w.-]+@sha256:[0-9a-f]{64}$/)
        const major = Number(/^node:(\d+)/.exec(image)?.[1])
        expect(major % 2 === 0 && major >= 22, `${file}: Node ${major} is not a current LTS line`).toBe(true)
        bases.add(image)
      }
    }
    expect([...bases]).toHaveLength(1)
  })

  it('reads the pin through a global ARG (and reports a FROM without one)', () => {
    expect(baseImages('ARG B=node:24-slim@sha256:' + 'a'.repeat(64) + '\nFROM ${B} AS x\nFROM $B\n')).toEqual([`node:24-slim@sha256:${'a'.repeat(64)}`, `node:24-slim@sha256:${'a'.repeat(64)}`])
    expect(baseImages('FROM node:24-slim\nARG B=x\nFROM ${B}\n')).toEqual(['node:24-slim', '<unset B>'])
  })
})
