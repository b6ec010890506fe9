/**
 * Byte builders for hand-made files: concatenation, UTF-8, and just enough protobuf wire encoding
 * to write ONNX models. Used by the ONNX model generator and by the model reader tests.
 */

export function concat (...parts: Uint8Array[]): Uint8Array {
  return joinBytes(parts)
}

/** Like `concat`, for arrays too long to spread into arguments. */
export function joinBytes (parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0))
  let at = 0
  for (const p of parts) { out.set(p, at); at += p.byteLength }
  return out
}

export const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s)

/** Protobuf wire encoding. */
export const pb = {
  varint (n: number | bigint): Uint8Array {
    let v = BigInt.asUintN(64, BigInt(n))
    const out: number[] = []
    do {
      const b = Number(v & 0x7fn)
      v >>= 7n
      out.push(v > 0n ? b | 0x80 : b)
    } while (v > 0n)
    return new Uint8Array(out)
  },
  key: (field: number, wire: number): Uint8Array => pb.varint((field << 3) | wire),
  int: (field: number, n: number | bigint): Uint8Array => concat(pb.key(field, 0), pb.varint(n)),
  bytes: (field: number, payload: Uint8Array): Uint8Array => concat(pb.key(field, 2), pb.varint(payload.byteLength), payload),
  str: (field: number, s: string): Uint8Array => pb.bytes(field, utf8(s)),
  msg: (field: number, ...parts: Uint8Array[]): Uint8Array => pb.bytes(field, concat(...parts))
}
