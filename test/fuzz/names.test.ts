/**
 * Names under fuzzing: file paths, model names, labels and refs made of any code points (lone
 * surrogates, controls, bidirectional and invisible characters, separators and dots mixed in).
 * Each check accepts and returns its input unchanged, or throws `InvalidInputError` with a message
 * that holds no character it would refuse; what it accepts can never leave the version's folder
 * nor display as something else.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { checkLabel, checkModelName, checkRelativePath, parseRef, printable, unsafeCharacter } from '../../src/core/names.js'
import { checkRelativePath as checkFilePath } from '../../src/model/cursor.js'
import { expectTypedOutcome, fuzzParams } from './fuzz.js'

/** Characters that make names dangerous, and those names are built of. */
const NASTY = ['/', '\\', '.', '..', '\0', '\n', '\u007f', '\u0085', '\u202a', '\u202b', '\u202c', '\u202d', '\u202e', '\u2066', '\u2067', '\u2068', '\u2069',
  '\u200e', '\u200f', '\u061c', '\u200b', '\u200c', '\u200d', '\ufeff', '\u00ad', '\u2028', '\u3164', '\u{e0041}', '@', '-', '--', '_', ' ', 'C:']
const piece = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...NASTY) },
  { weight: 3, arbitrary: fc.stringMatching(/^[a-z0-9]{1,6}$/) },
  { weight: 1, arbitrary: fc.string({ maxLength: 4, unit: 'binary' }) },
  { weight: 1, arbitrary: fc.integer({ min: 0xd800, max: 0xdfff }).map(c => String.fromCharCode(c)) }
)
const name = fc.array(piece, { maxLength: 12 }).map(parts => parts.join(''))

/** The message is safe to print: no character a name may not hold. */
function printableMessage (err: unknown): void {
  expect(unsafeCharacter((err as Error).message)).toBeUndefined()
}

async function holds<T> (check: () => T, accepted: (value: T) => void): Promise<void> {
  await expectTypedOutcome(() => {
    try {
      return check()
    } catch (err) {
      printableMessage(err)
      throw err
    }
  }, { maxMs: 200, check: accepted })
}

describe('fuzz: names', () => {
  it('relative paths inside a version', async () => {
    await fc.assert(fc.asyncProperty(name, async path => {
      await holds(() => checkRelativePath(path), ok => {
        expect(ok).toBe(path)
        expect(path.split('/')).not.toContain('..')
        expect(path.startsWith('/')).toBe(false)
        expect(path).not.toMatch(/\\|\0/)
        expect(unsafeCharacter(path)).toBeUndefined()
      })
    }), fuzzParams())
  })

  it('paths named inside model files (shards, external data)', async () => {
    await fc.assert(fc.asyncProperty(name, async path => {
      await holds(() => { checkFilePath('f.onnx', path, 'location'); return path }, ok => {
        expect(ok.split(/[/\\]/)).not.toContain('..')
        expect(unsafeCharacter(ok)).toBeUndefined()
      })
    }), fuzzParams())
  })

  it('model names and labels', async () => {
    await fc.assert(fc.asyncProperty(name, async text => {
      await holds(() => checkModelName(text), ok => {
        expect(ok).toMatch(/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)?$/)
        expect(ok).not.toMatch(/--|\.\./)
      })
      await holds(() => checkLabel(text), ok => { expect(ok).toMatch(/^[a-z][a-z0-9._-]{0,63}$/) })
    }), fuzzParams())
  })

  it('refs', async () => {
    const ref = fc.oneof(name, fc.tuple(name, name).map(([a, b]) => `${a}@${b}`), fc.tuple(fc.stringMatching(/^[a-z]{1,8}$/), name).map(([a, b]) => `${a}@${b}`))
    await fc.assert(fc.asyncProperty(ref, async text => {
      await holds(() => parseRef(text), ok => {
        checkModelName(ok.name)
        if (ok.selector !== undefined) expect(ok.selector).toMatch(/^[A-Za-z0-9._-]{1,128}$/)
      })
    }), fuzzParams())
  })

  it('printable never lets a refused character through', async () => {
    await fc.assert(fc.property(name, text => {
      expect(unsafeCharacter(printable(text))).toBeUndefined()
    }), fuzzParams())
  })
})
