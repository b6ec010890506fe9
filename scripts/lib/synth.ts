/**
 * Synthetic models for demos, tests and benchmarks: llama-shaped safetensors files of any size,
 * written in a streaming way with deterministic pseudo-random weights (AES-CTR keystream per
 * tensor seed, so the same seed always gives the same bytes and a changed seed changes them all).
 */
import { createCipheriv, createHash } from 'node:crypto'
import { open } from 'node:fs/promises'

export interface SynthTensor { name: string, dtype: 'BF16' | 'F16' | 'F32', shape: number[], seed: string }

const DTYPE_BYTES = { BF16: 2, F16: 2, F32: 4 } as const

/** A llama-like tensor list of about `targetBytes` (bf16). */
export function llamaTensors (targetBytes: number, options: { hidden?: number, vocab?: number, seedPrefix?: string } = {}): SynthTensor[] {
  const hidden = options.hidden ?? 2048
  const inter = Math.round(hidden * 2.75 / 64) * 64
  const vocab = options.vocab ?? 32000
  const prefix = options.seedPrefix ?? 'v1'
  const t = (name: string, shape: number[], dtype: SynthTensor['dtype'] = 'BF16'): SynthTensor => ({ name, dtype, shape, seed: `${prefix}:${name}` })
  const embed = vocab * hidden * 2
  const perLayer = (4 * hidden * hidden + 3 * hidden * inter) * 2 + 2 * hidden * 4
  const layers = Math.max(1, Math.round((targetBytes - 2 * embed) / perLayer))
  const out: SynthTensor[] = [t('model.embed_tokens.weight', [vocab, hidden])]
  for (let i = 0; i < layers; i++) {
    const p = `model.layers.${i}`
    out.push(
      t(`${p}.input_layernorm.weight`, [hidden], 'F32'),
      t(`${p}.self_attn.q_proj.weight`, [hidden, hidden]),
      t(`${p}.self_attn.k_proj.weight`, [hidden, hidden]),
      t(`${p}.self_attn.v_proj.weight`, [hidden, hidden]),
      t(`${p}.self_attn.o_proj.weight`, [hidden, hidden]),
      t(`${p}.post_attention_layernorm.weight`, [hidden], 'F32'),
      t(`${p}.mlp.gate_proj.weight`, [inter, hidden]),
      t(`${p}.mlp.up_proj.weight`, [inter, hidden]),
      t(`${p}.mlp.down_proj.weight`, [hidden, inter])
    )
  }
  out.push(t('model.norm.weight', [hidden], 'F32'), t('lm_head.weight', [vocab, hidden]))
  return out
}

/** Returns a copy where every `every`-th tensor has a new seed (so new bytes). */
export function changeTensors (tensors: SynthTensor[], fraction: number, tag: string): { tensors: SynthTensor[], changed: Set<string> } {
  const changed = new Set<string>()
  const step = Math.max(1, Math.round(1 / fraction))
  const out = tensors.map((t, i) => {
    if (i % step !== step - 1) return t
    changed.add(t.name)
    return { ...t, seed: `${tag}:${t.name}` }
  })
  return { tensors: out, changed }
}

export function tensorBytes (t: SynthTensor): number {
  return t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype]
}

/** Writes a safetensors file; returns its size. Memory stays at one 4 MiB buffer. */
export async function writeSafetensors (path: string, tensors: SynthTensor[], metadata: Record<string, string> = {}): Promise<number> {
  const header: Record<string, unknown> = {}
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata
  let offset = 0
  for (const t of tensors) {
    const n = tensorBytes(t)
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + n] }
    offset += n
  }
  let json = JSON.stringify(header)
  json += ' '.repeat((8 - (json.length % 8)) % 8)
  const head = Buffer.alloc(8 + json.length)
  head.writeBigUInt64LE(BigInt(json.length), 0)
  head.write(json, 8, 'utf8')
  const fh = await open(path, 'w')
  try {
    let at = 0
    await fh.write(head, 0, head.length, at)
    at += head.length
    const zeros = Buffer.alloc(4 * 1024 * 1024)
    for (const t of tensors) {
      const key = createHash('sha256').update(t.seed).digest()
      const cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32))
      let left = tensorBytes(t)
      while (left > 0) {
        const n = Math.min(left, zeros.length)
        const block = cipher.update(zeros.subarray(0, n))
        await fh.write(block, 0, block.length, at)
        at += block.length
        left -= n
      }
    }
    return at
  } finally {
    await fh.close()
  }
}
