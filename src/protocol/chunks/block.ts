/**
 * The hot path of `/shoal/chunks/2.0.0`: BLOCK responses are encoded and decoded without copying
 * the block. The wire format is the ordinary `ChunkResponse` protobuf — a sender writes the small
 * fields (type, id, load, index, proof) with protons and appends field 3 (`data`) itself, which
 * protobuf allows in any order; a receiver scans the fields and takes `data` and `proof` as views of
 * the received parts. Every other message goes through protons.
 */
import * as varint from 'uint8-varint'
import { Uint8ArrayList } from 'uint8arraylist'
import { ChunkResponse } from './pb/chunks.js'

const DATA_TAG = (3 << 3) | 2

/**
 * One block on its way: the request it answers, its index in the chunk, its proof and bytes
 * (`encoded`: an encoded block, `core/codec.ts`, rather than the block itself).
 */
export interface BlockFrame { id: number, load: number, index: number, proof: Uint8Array, data: Uint8Array[], encoded: boolean }

/** A BLOCK frame for `data`, sharing its bytes. */
export function encodeBlock (id: number, load: number, index: number, proof: Uint8Array, data: Uint8Array, encoded = false): Uint8ArrayList {
  const head = ChunkResponse.encode({ type: ChunkResponse.Type.BLOCK, id, load, index, proof, encoded } as unknown as ChunkResponse)
  return new Uint8ArrayList(head, Uint8Array.of(DATA_TAG), varint.encode(data.byteLength), data)
}

/**
 * Decodes a BLOCK frame without joining its parts; returns undefined for any other message type
 * (decode those with `ChunkResponse.decode`). Throws on a truncated or malformed frame.
 */
export function decodeBlock (frame: Uint8ArrayList): BlockFrame | undefined {
  let pos = 0
  let id = 0
  let load = 0
  let index = 0
  let encoded = false
  let proof: Uint8Array = new Uint8Array(0)
  let data: Uint8ArrayList | undefined
  const end = frame.byteLength
  const readVarint = (): number => {
    let value = 0
    let shift = 0
    for (let i = 0; i < 10; i++) {
      if (pos >= end) throw new Error('truncated varint')
      const b = frame.get(pos++)
      value += (b & 0x7f) * 2 ** shift
      if ((b & 0x80) === 0) return value
      shift += 7
    }
    throw new Error('varint too long')
  }
  while (pos < end) {
    const key = readVarint()
    const field = Math.floor(key / 8)
    const wire = key & 7
    if (wire === 0) {
      const value = readVarint()
      if (field === 1 && value !== 0) return undefined
      if (field === 2) id = value
      else if (field === 9) load = value
      else if (field === 11) index = value
      else if (field === 17) encoded = value !== 0
    } else if (wire === 2) {
      const length = readVarint()
      if (pos + length > end) throw new Error('length-delimited field past the end of the frame')
      if (field === 3) data = frame.sublist(pos, pos + length)
      else if (field === 12) proof = frame.subarray(pos, pos + length)
      pos += length
    } else if (wire === 1) pos += 8
    else if (wire === 5) pos += 4
    else throw new Error(`unsupported wire type ${wire}`)
  }
  if (pos !== end) throw new Error('frame ends inside a field')
  return { id, load, index, proof, data: data === undefined ? [] : [...data], encoded }
}
