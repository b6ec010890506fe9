/**
 * The Hugging Face on-ramp at add time: `config.json` and `generation_config.json` are read for
 * architectures, model_type, torch_dtype, num_parameters and generation defaults, kept in the
 * manifest as those files' metadata; a `config.json` that is not one (too big, not JSON, not an
 * object) is stored as plain bytes, never an error.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { addPath } from '../../../src/ingest/ingest.js'
import { MAX_HF_CONFIG_BYTES, readHfConfig } from '../../../src/model/hf-config.js'
import { bufferSource } from '../../../src/model/index.js'
import type { Store } from '../../../src/store/store.js'
import { memoryStore, tempDir } from '../../helpers/tmp.js'
import { safetensors } from '../model/build.js'

const CONFIG = {
  architectures: ['LlamaForCausalLM'], model_type: 'llama', torch_dtype: 'bfloat16', num_parameters: 8_030_261_248,
  hidden_size: 4096, num_hidden_layers: 32, vocab_size: 128256, rope_scaling: { type: 'llama3', factor: 8 }, id2label: { 0: 'a' }
}

describe('Hugging Face config files', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let store: Store

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('shoal-hf-'))
    ;({ store } = await memoryStore(join(dir, 'home')))
  })
  afterEach(async () => {
    await store.close()
    await cleanup()
  })

  it('keeps the known keys of config.json and generation_config.json, and the declared architecture', async () => {
    const model = join(dir, 'model')
    await mkdir(model)
    await writeFile(join(model, 'config.json'), JSON.stringify(CONFIG))
    await writeFile(join(model, 'generation_config.json'), JSON.stringify({ temperature: 0.6, top_p: 0.9, eos_token_id: [128001, 128009], do_sample: true, _from_model_config: false }))
    await writeFile(join(model, 'model.safetensors'), safetensors({ 'model.layers.0.self_attn.q_proj.weight': { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] } }, 16))
    const v = await addPath(store, model, { name: 'org/llama' })
    const files = Object.fromEntries(v.manifest.files.map(f => [f.path, f]))
    expect(files['config.json']?.format).toBe('other')
    expect(files['config.json']?.structure?.metadata).toEqual({
      architectures: ['LlamaForCausalLM'], model_type: 'llama', torch_dtype: 'bfloat16', num_parameters: 8_030_261_248, hidden_size: 4096, num_hidden_layers: 32, vocab_size: 128256
    })
    expect(files['generation_config.json']?.structure?.metadata).toEqual({ temperature: 0.6, top_p: 0.9, eos_token_id: [128001, 128009], do_sample: true })
    expect(v.manifest.structure.architecture).toBe('LlamaForCausalLM')
    expect(v.manifest.structure.formats).toEqual(['other', 'safetensors'])
  })

  it('reads nothing from a config.json that is not one, and refuses nothing', async () => {
    const plain = { format: 'other', headerLength: 0, tensors: [], parameterCount: 0, dtypes: [], metadata: {} }
    for (const text of ['not json', '[1,2]', 'null', '{"architectures": "x", "model_type": {"a": 1}}']) {
      expect(await readHfConfig(bufferSource(Buffer.from(text)), 'config.json'), text).toEqual(plain)
    }
    expect(await readHfConfig(bufferSource(Buffer.alloc(MAX_HF_CONFIG_BYTES + 1, 32)), 'config.json')).toEqual(plain)
    const model = join(dir, 'other')
    await mkdir(model)
    await writeFile(join(model, 'config.json'), 'key = value\n')
    const v = await addPath(store, model, { name: 'plain' })
    expect(v.manifest.files[0]?.structure).toBeUndefined()
  })

  it('keeps long values short and long lists out', async () => {
    const r = await readHfConfig(bufferSource(Buffer.from(JSON.stringify({ model_type: 'x'.repeat(1000), architectures: Array.from({ length: 40 }, (_, i) => `A${i}`) }))), 'config.json')
    expect(r.metadata).toEqual({ model_type: 'x'.repeat(256) })
    expect(r.architecture).toBeUndefined()
  })
})
