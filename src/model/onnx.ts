/**
 * ONNX reader: walks the `ModelProto` protobuf with positioned reads, descending only into the
 * messages it needs (graph, initializers, inputs/outputs, opsets, metadata_props) and skipping
 * everything else — nodes, weights, doc strings over the cap — without fetching it.
 *
 * Tensor ranges: for an embedded initializer, the payload of `raw_data` (or the span of its typed
 * `*_data` fields); for external data (`data_location = EXTERNAL`), `file` is the `location` entry
 * (relative, no `..`, no NUL, not absolute) and `offset`/`length` come from its entries (`length`
 * defaults to what dtype × shape needs). External ranges cannot be checked here: the caller MUST
 * check them against the size of the file they name.
 *
 * MUST hold, or `MalformedModelError`: every varint and length fits its enclosing message and the
 * file; the model has a graph; initializers have a known `data_type`, at most `MAX_DIMS`
 * non-negative dims and, for fixed-size dtypes, `raw_data` / external `length` of exactly
 * elements × dtype size; total bytes fetched stay under `MAX_ONNX_BYTES_SCANNED`, fields visited
 * under `MAX_ONNX_FIELDS`, strings kept in memory under `MAX_ONNX_KEPT_BYTES`. Nodes (and the
 * attributes and `Constant` tensors inside them) are counted and skipped, never fetched.
 *
 * `headerLength` is the offset of the first embedded tensor payload (the file size when none):
 * ONNX interleaves structure and weights, so only the leading structure counts as header.
 * Not a goal: sparse initializers, subgraph initializers (inside `If`/`Loop` nodes), functions.
 */
import { Cursor, checkRelativePath, elementCount, parameterCount, setOwn } from './cursor.js'
import { MAX_DIMS, MAX_ONNX_BYTES_SCANNED, MAX_ONNX_FIELDS, MAX_ONNX_KEPT_BYTES, MAX_ONNX_STRING_BYTES, MAX_TENSOR_COUNT } from './limits.js'
import { ProtoReader, WIRE_LEN, WIRE_VARINT, type Tag } from './protobuf.js'
import type { ByteSource, FileStructure, IoInfo, MetaValue, OnnxGraphSummary, TensorInfo } from './types.js'

/** `TensorProto.DataType` names by value, with bits per element (0 = variable size). */
export const ONNX_DTYPES: ReadonlyMap<number, { name: string, bits: number }> = new Map(([
  [1, 'FLOAT', 32], [2, 'UINT8', 8], [3, 'INT8', 8], [4, 'UINT16', 16], [5, 'INT16', 16], [6, 'INT32', 32],
  [7, 'INT64', 64], [8, 'STRING', 0], [9, 'BOOL', 8], [10, 'FLOAT16', 16], [11, 'DOUBLE', 64], [12, 'UINT32', 32],
  [13, 'UINT64', 64], [14, 'COMPLEX64', 64], [15, 'COMPLEX128', 128], [16, 'BFLOAT16', 16],
  [17, 'FLOAT8E4M3FN', 8], [18, 'FLOAT8E4M3FNUZ', 8], [19, 'FLOAT8E5M2', 8], [20, 'FLOAT8E5M2FNUZ', 8],
  [21, 'UINT4', 4], [22, 'INT4', 4], [23, 'FLOAT4E2M1', 4], [24, 'FLOAT8E8M0', 8]
] as const).map(([id, name, bits]) => [id, { name, bits }]))

const DATA_LOCATION_EXTERNAL = 1
/** TensorProto fields holding typed (non-raw) data. */
const TYPED_DATA_FIELDS = new Set([4, 5, 6, 7, 10, 11])

function dtypeName (id: number): string {
  return ONNX_DTYPES.get(id)?.name ?? `UNKNOWN(${id})`
}

/** Bytes elements × dtype need, or undefined for variable-size dtypes. */
function expectedBytes (dtype: number, shape: number[]): bigint | undefined {
  const bits = ONNX_DTYPES.get(dtype)?.bits
  if (bits === undefined || bits === 0) return undefined
  return (elementCount(shape) * BigInt(bits) + 7n) / 8n
}

export async function readOnnx (src: ByteSource, file = '<onnx>'): Promise<FileStructure> {
  const pb = new ProtoReader(new Cursor(src, file, 0, MAX_ONNX_BYTES_SCANNED), MAX_ONNX_FIELDS)
  const end = src.size
  const graph: OnnxGraphSummary = { inputs: [], outputs: [], opsets: {}, nodeCount: 0 }
  const metadata: Record<string, MetaValue> = {}
  const tensors: TensorInfo[] = []
  let sawGraph = false
  let kept = 0
  const keep = (s: string): string => {
    kept += s.length
    if (kept > MAX_ONNX_KEPT_BYTES) pb.fail(`names and metadata reach ${kept} characters at offset ${pb.pos}, over the limit of ${MAX_ONNX_KEPT_BYTES} kept in memory`)
    return s
  }
  const text: TextReader = Object.assign(async (e: number, what: string): Promise<string> => {
    const s = await pb.string(e, what, MAX_ONNX_STRING_BYTES)
    if (typeof s === 'number') return pb.fail(`${what} is ${s} bytes, over the limit of ${MAX_ONNX_STRING_BYTES} bytes`)
    return keep(s)
  }, { keep })

  await pb.message(end, 'ModelProto', async (tag, e) => {
    const str = async (what: string): Promise<string> => { pb.expect(tag, WIRE_LEN, what); return await text(e, what) }
    switch (tag.field) {
      case 1: pb.expect(tag, WIRE_VARINT, 'ir_version'); graph.irVersion = await pb.int(e, 'ir_version'); return true
      case 2: graph.producer = await str('producer_name'); return true
      case 3: graph.producerVersion = await str('producer_version'); return true
      case 4: graph.domain = await str('domain'); return true
      case 5: pb.expect(tag, WIRE_VARINT, 'model_version'); graph.modelVersion = await pb.int(e, 'model_version', true); return true
      case 7:
        pb.expect(tag, WIRE_LEN, 'graph')
        sawGraph = true
        await readGraph(pb, await pb.len(e, 'graph'), graph, tensors, text)
        return true
      case 8: {
        pb.expect(tag, WIRE_LEN, 'opset_import')
        let domain = ''
        let version = 0
        await pb.message(await pb.len(e, 'opset_import'), 'opset_import', async (t, e2) => {
          if (t.field === 1) { pb.expect(t, WIRE_LEN, 'opset domain'); domain = await text(e2, 'opset domain'); return true }
          if (t.field === 2) { pb.expect(t, WIRE_VARINT, 'opset version'); version = await pb.int(e2, 'opset version'); return true }
          return false
        })
        setOwn(graph.opsets, domain === '' ? 'ai.onnx' : domain, version)
        return true
      }
      case 14: {
        pb.expect(tag, WIRE_LEN, 'metadata_props')
        const [key, value] = await readEntry(pb, await pb.len(e, 'metadata_props'), 'metadata_props', text)
        setOwn(metadata, key, value)
        return true
      }
      default: return false
    }
  })
  if (!sawGraph) pb.fail('no graph (ModelProto field 7): not an ONNX model')

  tensors.sort((a, b) => (a.file ?? '').localeCompare(b.file ?? '') || a.offset - b.offset || a.length - b.length)
  for (let i = 1; i < tensors.length; i++) {
    const prev = tensors[i - 1] as TensorInfo
    const t = tensors[i] as TensorInfo
    if (prev.file === t.file && t.offset < prev.offset + prev.length) {
      pb.fail(`initializers ${JSON.stringify(prev.name)} and ${JSON.stringify(t.name)} overlap${t.file !== undefined ? ` in ${t.file}` : ''}`)
    }
  }
  const firstEmbedded = tensors.find(t => t.file === undefined && t.length > 0)
  const declared = metadata.architecture ?? metadata.model_type
  return {
    format: 'onnx',
    headerLength: firstEmbedded?.offset ?? src.size,
    tensors,
    parameterCount: parameterCount(tensors),
    dtypes: [...new Set(tensors.map(t => t.dtype))].sort(),
    ...(typeof declared === 'string' ? { architecture: declared, architectureFrom: 'metadata' as const } : {}),
    metadata,
    graph
  }
}

/** Reads a string field (refusing one over `MAX_ONNX_STRING_BYTES`); `keep` counts a string kept in memory. */
type TextReader = ((end: number, what: string) => Promise<string>) & { keep: (s: string) => string }

/** StringStringEntryProto: key = 1, value = 2. Over-long values are summarised. */
async function readEntry (pb: ProtoReader, end: number, what: string, text: TextReader): Promise<[string, string]> {
  let key = ''
  let value = ''
  await pb.message(end, what, async (t, e) => {
    if (t.field === 1) { pb.expect(t, WIRE_LEN, `${what} key`); key = await text(e, `${what} key`); return true }
    if (t.field === 2) {
      pb.expect(t, WIRE_LEN, `${what} value`)
      const v = await pb.string(e, `${what} value`, MAX_ONNX_STRING_BYTES)
      value = text.keep(typeof v === 'number' ? `[string × ${v} bytes]` : v)
      return true
    }
    return false
  })
  return [key, value]
}

async function readGraph (pb: ProtoReader, end: number, graph: OnnxGraphSummary, tensors: TensorInfo[], text: TextReader): Promise<void> {
  await pb.message(end, 'graph', (tag, e) => {
    // Nodes are most of a graph: counted and skipped without an await.
    if (tag.field === 1) { graph.nodeCount++; return false }
    return graphField(pb, tag, e, graph, tensors, text)
  })
}

async function graphField (pb: ProtoReader, tag: Tag, e: number, graph: OnnxGraphSummary, tensors: TensorInfo[], text: TextReader): Promise<boolean> {
  switch (tag.field) {
    case 2: pb.expect(tag, WIRE_LEN, 'graph name'); graph.name = await text(e, 'graph name'); return true
    case 5:
      pb.expect(tag, WIRE_LEN, 'initializer')
      if (tensors.length >= MAX_TENSOR_COUNT) pb.fail(`more than ${MAX_TENSOR_COUNT} initializers`)
      tensors.push(await readTensor(pb, await pb.len(e, 'initializer'), text))
      return true
    case 11:
    case 12: {
      const list = tag.field === 11 ? graph.inputs : graph.outputs
      const what = tag.field === 11 ? 'graph input' : 'graph output'
      pb.expect(tag, WIRE_LEN, what)
      if (list.length >= MAX_TENSOR_COUNT) pb.fail(`more than ${MAX_TENSOR_COUNT} ${what}s`)
      list.push(await readValueInfo(pb, await pb.len(e, what), what, text))
      return true
    }
    default: return false
  }
}

/** ValueInfoProto → TypeProto → TypeProto.Tensor → TensorShapeProto → Dimension. */
async function readValueInfo (pb: ProtoReader, end: number, what: string, text: TextReader): Promise<IoInfo> {
  const io: IoInfo = { name: '', dtype: 'UNDEFINED', shape: [] }
  await pb.message(end, what, async (t, e) => {
    if (t.field === 1) { pb.expect(t, WIRE_LEN, `${what} name`); io.name = await text(e, `${what} name`); return true }
    if (t.field !== 2) return false
    pb.expect(t, WIRE_LEN, `${what} type`)
    await pb.message(await pb.len(e, `${what} type`), `${what} type`, async (tt, e2) => {
      const kinds: Record<number, string> = { 4: 'sequence', 5: 'map', 9: 'optional' }
      if (kinds[tt.field] !== undefined) { io.dtype = kinds[tt.field] as string; return false }
      if (tt.field !== 1 && tt.field !== 8) return false // tensor_type, sparse_tensor_type
      pb.expect(tt, WIRE_LEN, `${what} tensor type`)
      await pb.message(await pb.len(e2, `${what} tensor type`), `${what} tensor type`, async (f, e3) => {
        if (f.field === 1) { pb.expect(f, WIRE_VARINT, `${what} elem_type`); io.dtype = dtypeName(await pb.int(e3, `${what} elem_type`)); return true }
        if (f.field !== 2) return false
        pb.expect(f, WIRE_LEN, `${what} shape`)
        await pb.message(await pb.len(e3, `${what} shape`), `${what} shape`, async (d, e4) => {
          if (d.field !== 1) return false
          pb.expect(d, WIRE_LEN, `${what} dim`)
          if (io.shape.length >= MAX_DIMS) pb.fail(`${what} ${JSON.stringify(io.name)} has more than ${MAX_DIMS} dimensions`)
          let dim: number | string = '?'
          await pb.message(await pb.len(e4, `${what} dim`), `${what} dim`, async (x, e5) => {
            if (x.field === 1) { pb.expect(x, WIRE_VARINT, 'dim_value'); dim = await pb.int(e5, 'dim_value', true); return true }
            if (x.field === 2) { pb.expect(x, WIRE_LEN, 'dim_param'); dim = await text(e5, 'dim_param'); return true }
            return false
          })
          io.shape.push(dim)
          return true
        })
        return true
      })
      return true
    })
    return true
  })
  return io
}

/** TensorProto: records where the data is, never reads it. */
async function readTensor (pb: ProtoReader, end: number, text: TextReader): Promise<TensorInfo> {
  const start = pb.pos
  let name = ''
  let dtype = 0
  const shape: number[] = []
  let raw: { offset: number, length: number } | undefined
  let span: { offset: number, end: number } | undefined
  let external = false
  const ext: Record<string, string> = {}

  const addDim = (d: number): void => {
    if (shape.length >= MAX_DIMS) pb.fail(`initializer at offset ${start} has more than ${MAX_DIMS} dimensions`)
    shape.push(d)
  }
  await pb.message(end, 'initializer', async (t: Tag, e) => {
    if (t.field === 1) {
      if (t.wire === WIRE_VARINT) { addDim(await pb.int(e, 'dim')); return true }
      pb.expect(t, WIRE_LEN, 'dims')
      const stop = await pb.len(e, 'packed dims')
      while (pb.pos < stop) addDim(await pb.int(stop, 'dim'))
      return true
    }
    if (t.field === 2) { pb.expect(t, WIRE_VARINT, 'data_type'); dtype = await pb.int(e, 'data_type'); return true }
    if (t.field === 8) { pb.expect(t, WIRE_LEN, 'name'); name = await text(e, 'initializer name'); return true }
    if (t.field === 9) {
      pb.expect(t, WIRE_LEN, 'raw_data')
      const stop = await pb.len(e, 'raw_data')
      raw = { offset: pb.pos, length: stop - pb.pos }
      pb.c.skip(stop - pb.pos, 'raw_data', stop)
      return true
    }
    if (TYPED_DATA_FIELDS.has(t.field)) {
      const from = pb.pos
      let dataStart = from
      if (t.wire === WIRE_LEN) {
        const stop = await pb.len(e, 'tensor data')
        dataStart = pb.pos
        pb.c.skip(stop - pb.pos, 'tensor data', stop)
      } else {
        await pb.skip(t, e, 'tensor data')
      }
      span = { offset: Math.min(span?.offset ?? dataStart, dataStart), end: pb.pos }
      return true
    }
    if (t.field === 13) {
      pb.expect(t, WIRE_LEN, 'external_data')
      const [k, v] = await readEntry(pb, await pb.len(e, 'external_data'), 'external_data', text)
      setOwn(ext, k, v)
      return true
    }
    if (t.field === 14) { pb.expect(t, WIRE_VARINT, 'data_location'); external = await pb.int(e, 'data_location') === DATA_LOCATION_EXTERNAL; return true }
    return false
  })

  const what = `initializer ${JSON.stringify(name)}`
  if (!ONNX_DTYPES.has(dtype)) pb.fail(`${what} has unknown data_type ${dtype}`)
  const need = expectedBytes(dtype, shape)
  if (elementCount(shape) > BigInt(Number.MAX_SAFE_INTEGER)) pb.fail(`${what} shape [${shape.join(', ')}] has too many elements`)
  const info = { name, dtype: dtypeName(dtype), shape }

  if (external) {
    const location = ext.location
    if (location === undefined) return pb.fail(`${what} has external data without a "location" entry`)
    checkRelativePath(pb.c.file, location, `${what} external data location`)
    const num = (key: string): number | undefined => {
      const v = ext[key]
      if (v === undefined) return undefined
      if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) pb.fail(`${what} external data ${key} ${JSON.stringify(v)} is not a non-negative integer`)
      return Number(v)
    }
    const length = num('length') ?? (need !== undefined ? Number(need) : undefined)
    if (length === undefined) return pb.fail(`${what} has external data of variable-size dtype ${info.dtype} without a "length" entry`)
    if (need !== undefined && BigInt(length) !== need) pb.fail(`${what} external data length ${length} does not match ${need} bytes for shape [${shape.join(', ')}] of ${info.dtype}`)
    return { ...info, offset: num('offset') ?? 0, length, file: location }
  }
  if (raw !== undefined) {
    if (need !== undefined && BigInt(raw.length) !== need) pb.fail(`${what} raw_data is ${raw.length} bytes but shape [${shape.join(', ')}] of ${info.dtype} needs ${need}`)
    return { ...info, offset: raw.offset, length: raw.length }
  }
  if (span !== undefined) return { ...info, offset: span.offset, length: span.end - span.offset }
  return { ...info, offset: start, length: 0 }
}
