import { describe, expect, it } from 'vitest'
import { checkLabel, checkModelName, checkRelativePath, modelDirName, parseRef, printable, unsafeCharacter } from '../../../src/core/names.js'

const invalid = expect.objectContaining({ name: 'InvalidInputError' })

describe('names', () => {
  it('accepts one or two segment model names and maps them to HF-style folders', () => {
    expect(checkModelName('llama-8b')).toBe('llama-8b')
    expect(modelDirName('org/llama-8b')).toBe('models--org--llama-8b')
  })

  it.each(['', '../x', 'a/b/c', 'a--b', '-a', 'a.', 'a b', 'a/..', '/abs', 'x'.repeat(200)])('refuses model name %j', name => {
    expect(() => checkModelName(name)).toThrow(invalid)
  })

  it('labels are lower-case words that cannot be mistaken for version ids', () => {
    expect(checkLabel('prod')).toBe('prod')
    expect(() => checkLabel('Prod')).toThrow(invalid)
    expect(() => checkLabel('bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku')).toThrow(invalid)
  })

  it.each([
    ['../etc/passwd', /'\.\.' components/],
    ['/etc/passwd', /absolute/],
    ['a//b', /empty component/],
    ['a/./b', /'\.' components/],
    ['a\0b', /NUL/],
    ['a\\b', /backslash/],
    ['a\nb', /control/],
    ['\ud800', /Unicode/],
    ['a/', /empty component/],
    ['x'.repeat(256), /longer than 255/]
  ])('refuses path %j', (path, message) => {
    expect(() => checkRelativePath(path)).toThrow(message)
  })

  it('accepts ordinary nested paths', () => {
    expect(checkRelativePath('tokenizer/vocab.json')).toBe('tokenizer/vocab.json')
    expect(checkRelativePath('モデル.safetensors')).toBe('モデル.safetensors')
  })

  it('parses refs', () => {
    expect(parseRef('llama')).toEqual({ name: 'llama' })
    expect(parseRef('org/llama@prod')).toEqual({ name: 'org/llama', selector: 'prod' })
    expect(() => parseRef('llama@')).toThrow(invalid)
    expect(() => parseRef('llama@../x')).toThrow(invalid)
    expect(() => parseRef('../x@prod')).toThrow(invalid)
  })

  describe('bidirectional and invisible characters', () => {
    const BIDI: Array<[number, string]> = [
      [0x202a, 'LEFT-TO-RIGHT EMBEDDING'], [0x202b, 'RIGHT-TO-LEFT EMBEDDING'], [0x202c, 'POP DIRECTIONAL FORMATTING'],
      [0x202d, 'LEFT-TO-RIGHT OVERRIDE'], [0x202e, 'RIGHT-TO-LEFT OVERRIDE'], [0x2066, 'LEFT-TO-RIGHT ISOLATE'],
      [0x2067, 'RIGHT-TO-LEFT ISOLATE'], [0x2068, 'FIRST STRONG ISOLATE'], [0x2069, 'POP DIRECTIONAL ISOLATE'],
      [0x200e, 'LEFT-TO-RIGHT MARK'], [0x200f, 'RIGHT-TO-LEFT MARK'], [0x061c, 'ARABIC LETTER MARK']
    ]
    const hex = (cp: number): string => cp.toString(16).toUpperCase().padStart(4, '0')

    it.each(BIDI.map(([cp, name]) => [hex(cp), cp, name] as const))('refuses U+%s in a path, naming the code point, and shows the path escaped', (_, cp, name) => {
      const path = `evil${String.fromCodePoint(cp)}gpj.exe`
      const err = (() => { try { checkRelativePath(path) } catch (e) { return e as Error } })()
      expect(err).toMatchObject({ name: 'InvalidInputError' })
      expect(err?.message).toContain(`U+${hex(cp)} ${name}, a bidirectional control character`)
      expect(err?.message).toContain(`"evil\\u${cp.toString(16).padStart(4, '0')}gpj.exe"`)
      expect(err?.message).toMatch(/rename it/)
      expect(err?.message, 'the message itself holds no bidi control').not.toMatch(/[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]/)
    })

    it.each(([
      [0x200b, /U\+200B ZERO WIDTH SPACE, an invisible character/],
      [0x200d, /U\+200D ZERO WIDTH JOINER/],
      [0xfeff, /U\+FEFF ZERO WIDTH NO-BREAK SPACE/],
      [0x00ad, /U\+00AD SOFT HYPHEN/],
      [0x2060, /U\+2060 WORD JOINER/],
      [0x2028, /U\+2028 LINE SEPARATOR/],
      [0x0085, /U\+0085, a control character/],
      [0x009b, /U\+009B, a control character/],
      [0xe0041, /U\+E0041, an invisible formatting character/],
      [0x3164, /U\+3164, an invisible formatting character/]
    ] as const).map(([cp, message]) => [hex(cp), cp, message] as const))('refuses U+%s (invisible or control) in a path', (_, cp, message) => {
      expect(() => checkRelativePath(`a${String.fromCodePoint(cp)}b/model.bin`)).toThrow(message)
    })

    it('refuses them in model names, labels and refs, naming the code point', () => {
      expect(() => checkModelName('org/llama\u202e8b')).toThrow(/invalid model name "org\/llama\\u202e8b": it contains U\+202E RIGHT-TO-LEFT OVERRIDE/)
      expect(() => checkLabel('pr\u2066od')).toThrow(/invalid label "pr\\u2066od": it contains U\+2066 LEFT-TO-RIGHT ISOLATE/)
      expect(() => parseRef('llama@pr\u200bod')).toThrow(/invalid ref "llama@pr\\u200bod": it contains U\+200B ZERO WIDTH SPACE/)
      expect(() => parseRef('lla\u202dma@prod')).toThrow(/U\+202D LEFT-TO-RIGHT OVERRIDE/)
    })

    it('leaves ordinary text from any script alone', () => {
      for (const path of ['مدل/وزن.safetensors', 'מודל.gguf', 'モデル.safetensors', 'модель/веса.bin', 'emoji-🦙.txt']) {
        expect(checkRelativePath(path)).toBe(path)
        expect(unsafeCharacter(path)).toBeUndefined()
      }
    })

    it('printable escapes what it would refuse, and quotes', () => {
      expect(printable('a\u202eb"\\\u{e0041}')).toBe('a\\u202eb\\"\\\\\\u{e0041}')
    })
  })
})
