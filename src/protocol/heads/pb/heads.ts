import { decodeMessage, encodeMessage, MaxLengthError, message, streamMessage } from 'protons-runtime'
import { alloc as uint8ArrayAlloc } from 'uint8arrays/alloc'
import type { Codec, DecodeOptions } from 'protons-runtime'
import type { Uint8ArrayList } from 'uint8arraylist'

export interface HeadEntry {
  model: string
  label: string
  wall: bigint
  counter: number
  id: Uint8Array<ArrayBuffer>
}

export namespace HeadEntry {
  let _codec: Codec<HeadEntry>

  export const codec = (): Codec<HeadEntry> => {
    if (_codec == null) {
      _codec = message<HeadEntry>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.model != null && obj.model !== '')) {
          w.uint32(10)
          w.string(obj.model)
        }

        if ((obj.label != null && obj.label !== '')) {
          w.uint32(18)
          w.string(obj.label)
        }

        if ((obj.wall != null && obj.wall !== 0n)) {
          w.uint32(24)
          w.uint64(obj.wall)
        }

        if ((obj.counter != null && obj.counter !== 0)) {
          w.uint32(32)
          w.uint32(obj.counter)
        }

        if ((obj.id != null && obj.id.byteLength > 0)) {
          w.uint32(42)
          w.bytes(obj.id)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          model: '',
          label: '',
          wall: 0n,
          counter: 0,
          id: uint8ArrayAlloc(0)
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.model = reader.string()
              break
            }
            case 2: {
              obj.label = reader.string()
              break
            }
            case 3: {
              obj.wall = reader.uint64()
              break
            }
            case 4: {
              obj.counter = reader.uint32()
              break
            }
            case 5: {
              obj.id = reader.bytes()
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
                field: `${prefix}.model`,
                value: reader.string()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.label`,
                value: reader.string()
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.wall`,
                value: reader.uint64()
              }
              break
            }
            case 4: {
              yield {
                field: `${prefix}.counter`,
                value: reader.uint32()
              }
              break
            }
            case 5: {
              yield {
                field: `${prefix}.id`,
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

  export interface HeadEntryModelFieldEvent {
    field: '$.model'
    value: string
  }

  export interface HeadEntryLabelFieldEvent {
    field: '$.label'
    value: string
  }

  export interface HeadEntryWallFieldEvent {
    field: '$.wall'
    value: bigint
  }

  export interface HeadEntryCounterFieldEvent {
    field: '$.counter'
    value: number
  }

  export interface HeadEntryIdFieldEvent {
    field: '$.id'
    value: Uint8Array<ArrayBuffer>
  }

  export function encode (obj: Partial<HeadEntry>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, HeadEntry.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<HeadEntry>): HeadEntry {
    return decodeMessage(buf, HeadEntry.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<HeadEntry>): Generator<HeadEntryModelFieldEvent | HeadEntryLabelFieldEvent | HeadEntryWallFieldEvent | HeadEntryCounterFieldEvent | HeadEntryIdFieldEvent> {
    return streamMessage(buf, HeadEntry.codec(), opts)
  }
}

export interface SyncMessage {
  digest: Uint8Array<ArrayBuffer>
  match: boolean
  entries: HeadEntry[]
  heads: Uint8Array<ArrayBuffer>[]
  want: HeadEntry[]
}

export namespace SyncMessage {
  let _codec: Codec<SyncMessage>

  export const codec = (): Codec<SyncMessage> => {
    if (_codec == null) {
      _codec = message<SyncMessage>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.digest != null && obj.digest.byteLength > 0)) {
          w.uint32(10)
          w.bytes(obj.digest)
        }

        if ((obj.match != null && obj.match !== false)) {
          w.uint32(16)
          w.bool(obj.match)
        }

        if (obj.entries != null && obj.entries.length > 0) {
          for (const value of obj.entries) {
            w.uint32(26)
            HeadEntry.codec().encode(value, w)
          }
        }

        if (obj.heads != null && obj.heads.length > 0) {
          for (const value of obj.heads) {
            w.uint32(34)
            w.bytes(value)
          }
        }

        if (obj.want != null && obj.want.length > 0) {
          for (const value of obj.want) {
            w.uint32(42)
            HeadEntry.codec().encode(value, w)
          }
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          digest: uint8ArrayAlloc(0),
          match: false,
          entries: [],
          heads: [],
          want: []
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.digest = reader.bytes()
              break
            }
            case 2: {
              obj.match = reader.bool()
              break
            }
            case 3: {
              if (opts.limits?.entries != null && obj.entries.length === opts.limits.entries) {
                throw new MaxLengthError('Decode error - repeated field "entries" had too many elements')
              }

              obj.entries.push(HeadEntry.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.entries$
              }))
              break
            }
            case 4: {
              if (opts.limits?.heads != null && obj.heads.length === opts.limits.heads) {
                throw new MaxLengthError('Decode error - repeated field "heads" had too many elements')
              }

              obj.heads.push(reader.bytes())
              break
            }
            case 5: {
              if (opts.limits?.want != null && obj.want.length === opts.limits.want) {
                throw new MaxLengthError('Decode error - repeated field "want" had too many elements')
              }

              obj.want.push(HeadEntry.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.want$
              }))
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
          entries: 0,
          heads: 0,
          want: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.digest`,
                value: reader.bytes()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.match`,
                value: reader.bool()
              }
              break
            }
            case 3: {
              if (opts.limits?.entries != null && obj.entries === opts.limits.entries) {
                throw new MaxLengthError('Streaming decode error - repeated field "entries" had too many elements')
              }

              for (const evt of HeadEntry.codec().stream(reader, reader.uint32(), `${prefix}.entries[]`, {
                limits: opts.limits?.entries$
              })) {
                yield {
                  ...evt,
                  index: obj.entries
                }
              }

              obj.entries++

              break
            }
            case 4: {
              if (opts.limits?.heads != null && obj.heads === opts.limits.heads) {
                throw new MaxLengthError('Streaming decode error - repeated field "heads" had too many elements')
              }

              yield {
                field: `${prefix}.heads[]`,
                index: obj.heads,
                value: reader.bytes()
              }

              obj.heads++

              break
            }
            case 5: {
              if (opts.limits?.want != null && obj.want === opts.limits.want) {
                throw new MaxLengthError('Streaming decode error - repeated field "want" had too many elements')
              }

              for (const evt of HeadEntry.codec().stream(reader, reader.uint32(), `${prefix}.want[]`, {
                limits: opts.limits?.want$
              })) {
                yield {
                  ...evt,
                  index: obj.want
                }
              }

              obj.want++

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

  export interface SyncMessageDigestFieldEvent {
    field: '$.digest'
    value: Uint8Array<ArrayBuffer>
  }

  export interface SyncMessageMatchFieldEvent {
    field: '$.match'
    value: boolean
  }

  export interface SyncMessageEntriesModelFieldEvent {
    field: '$.entries[].model'
    value: string
    index: number
  }

  export interface SyncMessageEntriesLabelFieldEvent {
    field: '$.entries[].label'
    value: string
    index: number
  }

  export interface SyncMessageEntriesWallFieldEvent {
    field: '$.entries[].wall'
    value: bigint
    index: number
  }

  export interface SyncMessageEntriesCounterFieldEvent {
    field: '$.entries[].counter'
    value: number
    index: number
  }

  export interface SyncMessageEntriesIdFieldEvent {
    field: '$.entries[].id'
    value: Uint8Array<ArrayBuffer>
    index: number
  }

  export interface SyncMessageHeadsFieldEvent {
    field: '$.heads[]'
    index: number
    value: Uint8Array<ArrayBuffer>
  }

  export interface SyncMessageWantModelFieldEvent {
    field: '$.want[].model'
    value: string
    index: number
  }

  export interface SyncMessageWantLabelFieldEvent {
    field: '$.want[].label'
    value: string
    index: number
  }

  export interface SyncMessageWantWallFieldEvent {
    field: '$.want[].wall'
    value: bigint
    index: number
  }

  export interface SyncMessageWantCounterFieldEvent {
    field: '$.want[].counter'
    value: number
    index: number
  }

  export interface SyncMessageWantIdFieldEvent {
    field: '$.want[].id'
    value: Uint8Array<ArrayBuffer>
    index: number
  }

  export function encode (obj: Partial<SyncMessage>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, SyncMessage.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<SyncMessage>): SyncMessage {
    return decodeMessage(buf, SyncMessage.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<SyncMessage>): Generator<SyncMessageDigestFieldEvent | SyncMessageMatchFieldEvent | SyncMessageEntriesModelFieldEvent | SyncMessageEntriesLabelFieldEvent | SyncMessageEntriesWallFieldEvent | SyncMessageEntriesCounterFieldEvent | SyncMessageEntriesIdFieldEvent | SyncMessageHeadsFieldEvent | SyncMessageWantModelFieldEvent | SyncMessageWantLabelFieldEvent | SyncMessageWantWallFieldEvent | SyncMessageWantCounterFieldEvent | SyncMessageWantIdFieldEvent> {
    return streamMessage(buf, SyncMessage.codec(), opts)
  }
}
