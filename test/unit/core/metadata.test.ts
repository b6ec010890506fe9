import { describe, expect, it } from 'vitest'
import { mergeMetadata, parseMetadata, parseTags } from '../../../src/core/metadata.js'

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
})
