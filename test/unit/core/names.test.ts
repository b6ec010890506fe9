import { describe, expect, it } from 'vitest'
import { checkLabel, checkModelName, checkRelativePath, modelDirName, parseRef } from '../../../src/core/names.js'

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
})
