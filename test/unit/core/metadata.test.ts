import { describe, expect, it } from 'vitest'
import { mergeMetadata, parseMetadata, parseMetadataFile, parseTags } from '../../../src/core/metadata.js'

describe('metadata', () => {
  it('validates the typed fields', () => {
    const m = parseMetadata({
      description: 'a model', framework: 'pytorch', task: 'ner', license: 'apache-2.0',
      inputs: [{ name: 'input_ids', dtype: 'int64', shape: [-1, 'seq'] }],
      outputs: [{ name: 'logits' }],
      preprocessing: 'lower-case, wordpiece',
      hyperparameters: { lr: 3e-4, epochs: 3, amp: true },
      tags: { task: 'ner', english: '' }
    })
    expect(m.hyperparameters?.lr).toBe(3e-4)
  })

  it('refuses unknown keys and wrong types, naming where', () => {
    expect(() => parseMetadata({ descripton: 'typo' })).toThrow(/invalid.*descripton|Unrecognized/)
    expect(() => parseMetadata({ hyperparameters: { lr: {} } }, 'shoal.json')).toThrow(/shoal.json is invalid at hyperparameters.lr/)
  })

  it('merges later over earlier, tags key by key', () => {
    const m = mergeMetadata({ task: 'a', tags: { x: '1', y: '2' } }, { task: 'b', tags: { y: '3' } })
    expect(m).toEqual({ task: 'b', tags: { x: '1', y: '3' } })
  })

  it('parses tag flags', () => {
    expect(parseTags(['task=ner', 'english', 'k=a=b'])).toEqual({ task: 'ner', english: '', k: 'a=b' })
    expect(() => parseTags(['=x'])).toThrow(/invalid tag/)
  })

  it('refuses control, bidirectional and invisible characters in names and short values, naming where and which', () => {
    expect(() => parseMetadata({ tags: { 'a\u202eb': 'x' } }, 'shoal.json')).toThrow(/^shoal\.json is invalid at tags\["a\\u202eb"\]: key: contains U\+202E RIGHT-TO-LEFT OVERRIDE/)
    expect(() => parseMetadata({ tags: { a: 'x\u200by' } }, 'shoal.json')).toThrow(/at tags\.a: contains U\+200B ZERO WIDTH SPACE/)
    expect(() => parseMetadata({ framework: 'py\u0007' })).toThrow(/at framework: contains U\+0007, a control character/)
    expect(() => parseMetadata({ inputs: [{ name: 'ids\u2066' }] })).toThrow(/at inputs\[0\]\.name: contains U\+2066/)
    expect(() => parseMetadata({ hyperparameters: { 'l\u200dr': 1 } })).toThrow(/key: contains U\+200D ZERO WIDTH JOINER/)
  })

  it('prose keeps line breaks, tabs and right-to-left text but not text-reordering controls', () => {
    expect(parseMetadata({ description: 'line 1\n\tline 2 — مدل بزرگ' }).description).toBe('line 1\n\tline 2 — مدل بزرگ')
    expect(() => parseMetadata({ description: 'safe \u202e txt.exe' })).toThrow(/at description: contains U\+202E RIGHT-TO-LEFT OVERRIDE/)
    expect(() => parseMetadata({ description: 'bell\u0007' })).toThrow(/at description: contains U\+0007/)
  })

  it('shows an unknown key escaped', () => {
    const err = (() => { try { parseMetadata({ 'descr\u202eiption': 'x' }) } catch (e) { return e as Error } })()
    expect(err?.message).toMatch(/descr\\u202eiption/)
    expect(err?.message).not.toMatch(/\u202e/)
  })

  it('keeps a __proto__ tag as a tag', () => {
    const tags = parseTags(['__proto__=x'])
    expect(Object.keys(tags)).toEqual(['__proto__'])
    expect(Object.getPrototypeOf(tags)).toBe(Object.prototype)
  })

  it('reads metadata file bytes: UTF-8 JSON, named in every refusal', () => {
    expect(parseMetadataFile(new TextEncoder().encode('{"task":"ner"}'), 'shoal.json')).toEqual({ task: 'ner' })
    expect(() => parseMetadataFile(new Uint8Array([0x7b, 0xff, 0x7d]), 'shoal.json')).toThrow(/^shoal\.json is not valid JSON: it is not valid UTF-8$/)
    expect(() => parseMetadataFile(new TextEncoder().encode('{"task":'), 'shoal.json')).toThrow(/^shoal\.json is not valid JSON: /)
  })
})
