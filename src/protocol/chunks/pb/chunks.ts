import { decodeMessage, encodeMessage, enumeration, MaxLengthError, message, streamMessage } from 'protons-runtime'
import { alloc as uint8ArrayAlloc } from 'uint8arrays/alloc'
import type { Codec, DecodeOptions } from 'protons-runtime'
import type { Uint8ArrayList } from 'uint8arraylist'

export interface ChunkRequest {
  type: ChunkRequest.Type
  id: number
  cid: Uint8Array<ArrayBuffer>
  urgent: boolean
  first: number
  count: number
  blockSize: number
  stream: boolean
  codec: number
}

export namespace ChunkRequest {
  export enum Type {
    WANT = 'WANT',
    CANCEL = 'CANCEL',
    INTEREST = 'INTEREST',
    UNINTEREST = 'UNINTEREST',
    RECEIVED = 'RECEIVED',
    BULK = 'BULK'
  }

  enum __TypeValues {
    WANT = 0,
    CANCEL = 1,
    INTEREST = 2,
    UNINTEREST = 3,
    RECEIVED = 4,
    BULK = 5
  }

  export namespace Type {
    export const codec = (): Codec<Type> => {
      return enumeration<Type>(__TypeValues)
    }
  }

  let _codec: Codec<ChunkRequest>

  export const codec = (): Codec<ChunkRequest> => {
    if (_codec == null) {
      _codec = message<ChunkRequest>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if (obj.type != null && __TypeValues[obj.type] !== 0) {
          w.uint32(8)
          ChunkRequest.Type.codec().encode(obj.type, w)
        }

        if ((obj.id != null && obj.id !== 0)) {
          w.uint32(16)
          w.uint32(obj.id)
        }

        if ((obj.cid != null && obj.cid.byteLength > 0)) {
          w.uint32(26)
          w.bytes(obj.cid)
        }

        if ((obj.urgent != null && obj.urgent !== false)) {
          w.uint32(32)
          w.bool(obj.urgent)
        }

        if ((obj.first != null && obj.first !== 0)) {
          w.uint32(40)
          w.uint32(obj.first)
        }

        if ((obj.count != null && obj.count !== 0)) {
          w.uint32(48)
          w.uint32(obj.count)
        }

        if ((obj.blockSize != null && obj.blockSize !== 0)) {
          w.uint32(56)
          w.uint32(obj.blockSize)
        }

        if ((obj.stream != null && obj.stream !== false)) {
          w.uint32(64)
          w.bool(obj.stream)
        }

        if ((obj.codec != null && obj.codec !== 0)) {
          w.uint32(72)
          w.uint32(obj.codec)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          type: Type.WANT,
          id: 0,
          cid: uint8ArrayAlloc(0),
          urgent: false,
          first: 0,
          count: 0,
          blockSize: 0,
          stream: false,
          codec: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.type = ChunkRequest.Type.codec().decode(reader)
              break
            }
            case 2: {
              obj.id = reader.uint32()
              break
            }
            case 3: {
              obj.cid = reader.bytes()
              break
            }
            case 4: {
              obj.urgent = reader.bool()
              break
            }
            case 5: {
              obj.first = reader.uint32()
              break
            }
            case 6: {
              obj.count = reader.uint32()
              break
            }
            case 7: {
              obj.blockSize = reader.uint32()
              break
            }
            case 8: {
              obj.stream = reader.bool()
              break
            }
            case 9: {
              obj.codec = reader.uint32()
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
                field: `${prefix}.type`,
                value: ChunkRequest.Type.codec().decode(reader)
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.id`,
                value: reader.uint32()
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.cid`,
                value: reader.bytes()
              }
              break
            }
            case 4: {
              yield {
                field: `${prefix}.urgent`,
                value: reader.bool()
              }
              break
            }
            case 5: {
              yield {
                field: `${prefix}.first`,
                value: reader.uint32()
              }
              break
            }
            case 6: {
              yield {
                field: `${prefix}.count`,
                value: reader.uint32()
              }
              break
            }
            case 7: {
              yield {
                field: `${prefix}.blockSize`,
                value: reader.uint32()
              }
              break
            }
            case 8: {
              yield {
                field: `${prefix}.stream`,
                value: reader.bool()
              }
              break
            }
            case 9: {
              yield {
                field: `${prefix}.codec`,
                value: reader.uint32()
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

  export interface ChunkRequestTypeFieldEvent {
    field: '$.type'
    value: ChunkRequest.Type
  }

  export interface ChunkRequestIdFieldEvent {
    field: '$.id'
    value: number
  }

  export interface ChunkRequestCidFieldEvent {
    field: '$.cid'
    value: Uint8Array<ArrayBuffer>
  }

  export interface ChunkRequestUrgentFieldEvent {
    field: '$.urgent'
    value: boolean
  }

  export interface ChunkRequestFirstFieldEvent {
    field: '$.first'
    value: number
  }

  export interface ChunkRequestCountFieldEvent {
    field: '$.count'
    value: number
  }

  export interface ChunkRequestBlockSizeFieldEvent {
    field: '$.blockSize'
    value: number
  }

  export interface ChunkRequestStreamFieldEvent {
    field: '$.stream'
    value: boolean
  }

  export interface ChunkRequestCodecFieldEvent {
    field: '$.codec'
    value: number
  }

  export function encode (obj: Partial<ChunkRequest>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, ChunkRequest.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<ChunkRequest>): ChunkRequest {
    return decodeMessage(buf, ChunkRequest.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<ChunkRequest>): Generator<ChunkRequestTypeFieldEvent | ChunkRequestIdFieldEvent | ChunkRequestCidFieldEvent | ChunkRequestUrgentFieldEvent | ChunkRequestFirstFieldEvent | ChunkRequestCountFieldEvent | ChunkRequestBlockSizeFieldEvent | ChunkRequestStreamFieldEvent | ChunkRequestCodecFieldEvent> {
    return streamMessage(buf, ChunkRequest.codec(), opts)
  }
}

export interface BlockRange {
  chunk: number
  first: number
  count: number
}

export namespace BlockRange {
  let _codec: Codec<BlockRange>

  export const codec = (): Codec<BlockRange> => {
    if (_codec == null) {
      _codec = message<BlockRange>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.chunk != null && obj.chunk !== 0)) {
          w.uint32(8)
          w.uint32(obj.chunk)
        }

        if ((obj.first != null && obj.first !== 0)) {
          w.uint32(16)
          w.uint32(obj.first)
        }

        if ((obj.count != null && obj.count !== 0)) {
          w.uint32(24)
          w.uint32(obj.count)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          chunk: 0,
          first: 0,
          count: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.chunk = reader.uint32()
              break
            }
            case 2: {
              obj.first = reader.uint32()
              break
            }
            case 3: {
              obj.count = reader.uint32()
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
                field: `${prefix}.chunk`,
                value: reader.uint32()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.first`,
                value: reader.uint32()
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.count`,
                value: reader.uint32()
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

  export interface BlockRangeChunkFieldEvent {
    field: '$.chunk'
    value: number
  }

  export interface BlockRangeFirstFieldEvent {
    field: '$.first'
    value: number
  }

  export interface BlockRangeCountFieldEvent {
    field: '$.count'
    value: number
  }

  export function encode (obj: Partial<BlockRange>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, BlockRange.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<BlockRange>): BlockRange {
    return decodeMessage(buf, BlockRange.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<BlockRange>): Generator<BlockRangeChunkFieldEvent | BlockRangeFirstFieldEvent | BlockRangeCountFieldEvent> {
    return streamMessage(buf, BlockRange.codec(), opts)
  }
}

export interface ChunkResponse {
  type: ChunkResponse.Type
  id: number
  data: Uint8Array<ArrayBuffer>
  version: Uint8Array<ArrayBuffer>
  indices: number[]
  complete: boolean
  code: string
  message: string
  load: number
  holder: string
  index: number
  proof: Uint8Array<ArrayBuffer>
  ranges: BlockRange[]
  port: number
  token: Uint8Array<ArrayBuffer>
  key: Uint8Array<ArrayBuffer>
  encoded: boolean
}

export namespace ChunkResponse {
  export enum Type {
    BLOCK = 'BLOCK',
    DONT_HAVE = 'DONT_HAVE',
    ERROR = 'ERROR',
    HAVE = 'HAVE',
    HAVE_UPDATE = 'HAVE_UPDATE',
    QUEUED = 'QUEUED',
    BULK = 'BULK'
  }

  enum __TypeValues {
    BLOCK = 0,
    DONT_HAVE = 1,
    ERROR = 2,
    HAVE = 3,
    HAVE_UPDATE = 4,
    QUEUED = 5,
    BULK = 6
  }

  export namespace Type {
    export const codec = (): Codec<Type> => {
      return enumeration<Type>(__TypeValues)
    }
  }

  let _codec: Codec<ChunkResponse>

  export const codec = (): Codec<ChunkResponse> => {
    if (_codec == null) {
      _codec = message<ChunkResponse>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if (obj.type != null && __TypeValues[obj.type] !== 0) {
          w.uint32(8)
          ChunkResponse.Type.codec().encode(obj.type, w)
        }

        if ((obj.id != null && obj.id !== 0)) {
          w.uint32(16)
          w.uint32(obj.id)
        }

        if ((obj.data != null && obj.data.byteLength > 0)) {
          w.uint32(26)
          w.bytes(obj.data)
        }

        if ((obj.version != null && obj.version.byteLength > 0)) {
          w.uint32(34)
          w.bytes(obj.version)
        }

        if (obj.indices != null && obj.indices.length > 0) {
          for (const value of obj.indices) {
            w.uint32(40)
            w.uint32(value)
          }
        }

        if ((obj.complete != null && obj.complete !== false)) {
          w.uint32(48)
          w.bool(obj.complete)
        }

        if ((obj.code != null && obj.code !== '')) {
          w.uint32(58)
          w.string(obj.code)
        }

        if ((obj.message != null && obj.message !== '')) {
          w.uint32(66)
          w.string(obj.message)
        }

        if ((obj.load != null && obj.load !== 0)) {
          w.uint32(72)
          w.uint32(obj.load)
        }

        if ((obj.holder != null && obj.holder !== '')) {
          w.uint32(82)
          w.string(obj.holder)
        }

        if ((obj.index != null && obj.index !== 0)) {
          w.uint32(88)
          w.uint32(obj.index)
        }

        if ((obj.proof != null && obj.proof.byteLength > 0)) {
          w.uint32(98)
          w.bytes(obj.proof)
        }

        if (obj.ranges != null && obj.ranges.length > 0) {
          for (const value of obj.ranges) {
            w.uint32(106)
            BlockRange.codec().encode(value, w)
          }
        }

        if ((obj.port != null && obj.port !== 0)) {
          w.uint32(112)
          w.uint32(obj.port)
        }

        if ((obj.token != null && obj.token.byteLength > 0)) {
          w.uint32(122)
          w.bytes(obj.token)
        }

        if ((obj.key != null && obj.key.byteLength > 0)) {
          w.uint32(130)
          w.bytes(obj.key)
        }

        if ((obj.encoded != null && obj.encoded !== false)) {
          w.uint32(136)
          w.bool(obj.encoded)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          type: Type.BLOCK,
          id: 0,
          data: uint8ArrayAlloc(0),
          version: uint8ArrayAlloc(0),
          indices: [],
          complete: false,
          code: '',
          message: '',
          load: 0,
          holder: '',
          index: 0,
          proof: uint8ArrayAlloc(0),
          ranges: [],
          port: 0,
          token: uint8ArrayAlloc(0),
          key: uint8ArrayAlloc(0),
          encoded: false
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.type = ChunkResponse.Type.codec().decode(reader)
              break
            }
            case 2: {
              obj.id = reader.uint32()
              break
            }
            case 3: {
              obj.data = reader.bytes()
              break
            }
            case 4: {
              obj.version = reader.bytes()
              break
            }
            case 5: {
              if (opts.limits?.indices != null && obj.indices.length === opts.limits.indices) {
                throw new MaxLengthError('Decode error - repeated field "indices" had too many elements')
              }

              obj.indices.push(reader.uint32())
              break
            }
            case 6: {
              obj.complete = reader.bool()
              break
            }
            case 7: {
              obj.code = reader.string()
              break
            }
            case 8: {
              obj.message = reader.string()
              break
            }
            case 9: {
              obj.load = reader.uint32()
              break
            }
            case 10: {
              obj.holder = reader.string()
              break
            }
            case 11: {
              obj.index = reader.uint32()
              break
            }
            case 12: {
              obj.proof = reader.bytes()
              break
            }
            case 13: {
              if (opts.limits?.ranges != null && obj.ranges.length === opts.limits.ranges) {
                throw new MaxLengthError('Decode error - repeated field "ranges" had too many elements')
              }

              obj.ranges.push(BlockRange.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.ranges$
              }))
              break
            }
            case 14: {
              obj.port = reader.uint32()
              break
            }
            case 15: {
              obj.token = reader.bytes()
              break
            }
            case 16: {
              obj.key = reader.bytes()
              break
            }
            case 17: {
              obj.encoded = reader.bool()
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
        const obj = {
          indices: 0,
          ranges: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.type`,
                value: ChunkResponse.Type.codec().decode(reader)
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.id`,
                value: reader.uint32()
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.data`,
                value: reader.bytes()
              }
              break
            }
            case 4: {
              yield {
                field: `${prefix}.version`,
                value: reader.bytes()
              }
              break
            }
            case 5: {
              if (opts.limits?.indices != null && obj.indices === opts.limits.indices) {
                throw new MaxLengthError('Streaming decode error - repeated field "indices" had too many elements')
              }

              yield {
                field: `${prefix}.indices[]`,
                index: obj.indices,
                value: reader.uint32()
              }

              obj.indices++

              break
            }
            case 6: {
              yield {
                field: `${prefix}.complete`,
                value: reader.bool()
              }
              break
            }
            case 7: {
              yield {
                field: `${prefix}.code`,
                value: reader.string()
              }
              break
            }
            case 8: {
              yield {
                field: `${prefix}.message`,
                value: reader.string()
              }
              break
            }
            case 9: {
              yield {
                field: `${prefix}.load`,
                value: reader.uint32()
              }
              break
            }
            case 10: {
              yield {
                field: `${prefix}.holder`,
                value: reader.string()
              }
              break
            }
            case 11: {
              yield {
                field: `${prefix}.index`,
                value: reader.uint32()
              }
              break
            }
            case 12: {
              yield {
                field: `${prefix}.proof`,
                value: reader.bytes()
              }
              break
            }
            case 13: {
              if (opts.limits?.ranges != null && obj.ranges === opts.limits.ranges) {
                throw new MaxLengthError('Streaming decode error - repeated field "ranges" had too many elements')
              }

              for (const evt of BlockRange.codec().stream(reader, reader.uint32(), `${prefix}.ranges[]`, {
                limits: opts.limits?.ranges$
              })) {
                yield {
                  ...evt,
                  index: obj.ranges
                }
              }

              obj.ranges++

              break
            }
            case 14: {
              yield {
                field: `${prefix}.port`,
                value: reader.uint32()
              }
              break
            }
            case 15: {
              yield {
                field: `${prefix}.token`,
                value: reader.bytes()
              }
              break
            }
            case 16: {
              yield {
                field: `${prefix}.key`,
                value: reader.bytes()
              }
              break
            }
            case 17: {
              yield {
                field: `${prefix}.encoded`,
                value: reader.bool()
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

  export interface ChunkResponseTypeFieldEvent {
    field: '$.type'
    value: ChunkResponse.Type
  }

  export interface ChunkResponseIdFieldEvent {
    field: '$.id'
    value: number
  }

  export interface ChunkResponseDataFieldEvent {
    field: '$.data'
    value: Uint8Array<ArrayBuffer>
  }

  export interface ChunkResponseVersionFieldEvent {
    field: '$.version'
    value: Uint8Array<ArrayBuffer>
  }

  export interface ChunkResponseIndicesFieldEvent {
    field: '$.indices[]'
    index: number
    value: number
  }

  export interface ChunkResponseCompleteFieldEvent {
    field: '$.complete'
    value: boolean
  }

  export interface ChunkResponseCodeFieldEvent {
    field: '$.code'
    value: string
  }

  export interface ChunkResponseMessageFieldEvent {
    field: '$.message'
    value: string
  }

  export interface ChunkResponseLoadFieldEvent {
    field: '$.load'
    value: number
  }

  export interface ChunkResponseHolderFieldEvent {
    field: '$.holder'
    value: string
  }

  export interface ChunkResponseIndexFieldEvent {
    field: '$.index'
    value: number
  }

  export interface ChunkResponseProofFieldEvent {
    field: '$.proof'
    value: Uint8Array<ArrayBuffer>
  }

  export interface ChunkResponseRangesChunkFieldEvent {
    field: '$.ranges[].chunk'
    value: number
    index: number
  }

  export interface ChunkResponseRangesFirstFieldEvent {
    field: '$.ranges[].first'
    value: number
    index: number
  }

  export interface ChunkResponseRangesCountFieldEvent {
    field: '$.ranges[].count'
    value: number
    index: number
  }

  export interface ChunkResponsePortFieldEvent {
    field: '$.port'
    value: number
  }

  export interface ChunkResponseTokenFieldEvent {
    field: '$.token'
    value: Uint8Array<ArrayBuffer>
  }

  export interface ChunkResponseKeyFieldEvent {
    field: '$.key'
    value: Uint8Array<ArrayBuffer>
  }

  export interface ChunkResponseEncodedFieldEvent {
    field: '$.encoded'
    value: boolean
  }

  export function encode (obj: Partial<ChunkResponse>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, ChunkResponse.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<ChunkResponse>): ChunkResponse {
    return decodeMessage(buf, ChunkResponse.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<ChunkResponse>): Generator<ChunkResponseTypeFieldEvent | ChunkResponseIdFieldEvent | ChunkResponseDataFieldEvent | ChunkResponseVersionFieldEvent | ChunkResponseIndicesFieldEvent | ChunkResponseCompleteFieldEvent | ChunkResponseCodeFieldEvent | ChunkResponseMessageFieldEvent | ChunkResponseLoadFieldEvent | ChunkResponseHolderFieldEvent | ChunkResponseIndexFieldEvent | ChunkResponseProofFieldEvent | ChunkResponseRangesChunkFieldEvent | ChunkResponseRangesFirstFieldEvent | ChunkResponseRangesCountFieldEvent | ChunkResponsePortFieldEvent | ChunkResponseTokenFieldEvent | ChunkResponseKeyFieldEvent | ChunkResponseEncodedFieldEvent> {
    return streamMessage(buf, ChunkResponse.codec(), opts)
  }
}
