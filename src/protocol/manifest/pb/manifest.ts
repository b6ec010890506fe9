import { decodeMessage, encodeMessage, message, streamMessage } from 'protons-runtime'
import { alloc as uint8ArrayAlloc } from 'uint8arrays/alloc'
import type { Codec, DecodeOptions } from 'protons-runtime'
import type { Uint8ArrayList } from 'uint8arraylist'

export interface ManifestRequest {
  version: Uint8Array<ArrayBuffer>
}

export namespace ManifestRequest {
  let _codec: Codec<ManifestRequest>

  export const codec = (): Codec<ManifestRequest> => {
    if (_codec == null) {
      _codec = message<ManifestRequest>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.version != null && obj.version.byteLength > 0)) {
          w.uint32(10)
          w.bytes(obj.version)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          version: uint8ArrayAlloc(0)
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.version = reader.bytes()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.version`,
                value: reader.bytes()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface ManifestRequestVersionFieldEvent {
    field: '$.version'
    value: Uint8Array<ArrayBuffer>
  }

  export function encode (obj: Partial<ManifestRequest>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, ManifestRequest.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<ManifestRequest>): ManifestRequest {
    return decodeMessage(buf, ManifestRequest.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<ManifestRequest>): Generator<ManifestRequestVersionFieldEvent> {
    return streamMessage(buf, ManifestRequest.codec(), opts)
  }
}

export interface ManifestResponse {
  found: boolean
  manifest: Uint8Array<ArrayBuffer>
}

export namespace ManifestResponse {
  let _codec: Codec<ManifestResponse>

  export const codec = (): Codec<ManifestResponse> => {
    if (_codec == null) {
      _codec = message<ManifestResponse>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.found != null && obj.found !== false)) {
          w.uint32(8)
          w.bool(obj.found)
        }

        if ((obj.manifest != null && obj.manifest.byteLength > 0)) {
          w.uint32(18)
          w.bytes(obj.manifest)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          found: false,
          manifest: uint8ArrayAlloc(0)
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.found = reader.bool()
              break
            }
            case 2: {
              obj.manifest = reader.bytes()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.found`,
                value: reader.bool()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.manifest`,
                value: reader.bytes()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface ManifestResponseFoundFieldEvent {
    field: '$.found'
    value: boolean
  }

  export interface ManifestResponseManifestFieldEvent {
    field: '$.manifest'
    value: Uint8Array<ArrayBuffer>
  }

  export function encode (obj: Partial<ManifestResponse>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, ManifestResponse.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<ManifestResponse>): ManifestResponse {
    return decodeMessage(buf, ManifestResponse.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<ManifestResponse>): Generator<ManifestResponseFoundFieldEvent | ManifestResponseManifestFieldEvent> {
    return streamMessage(buf, ManifestResponse.codec(), opts)
  }
}
