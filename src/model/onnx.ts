/**
 * ONNX reader: walks the `ModelProto` protobuf with positioned reads, descending only into the
 * messages it needs (graph, nodes and their attributes, initializers, inputs/outputs, opsets,
 * metadata_props) and skipping everything else — weights, doc strings over the cap — without
 * fetching it.
 *
 * Tensors it reports, with their byte ranges:
 * - initializers of the main graph and of every subgraph (`If` branches, `Loop`/`Scan` bodies,
 *   any attribute of type GRAPH or GRAPHS), nested at most `MAX_ONNX_GRAPH_DEPTH` deep;
 * - the value of every `Constant` node (default domain), in the main graph or a subgraph: `value`
 *   (a TensorProto), `value_float(s)` (FLOAT), `value_int(s)` (INT64), `value_string(s)` (STRING).
 *   Its name is the TensorProto's name, else the node's first output (exporters leave the tensor
 *   unnamed). Exporters such as paddle2onnx, spox and older PyTorch keep all their weights there.
 * Both count toward `MAX_TENSOR_COUNT` and the parameter count.
 *
 * Tensor ranges: for a TensorProto, the payload of `raw_data` (or the span of its typed `*_data`
 * fields); for external data (`data_location = EXTERNAL`), `file` is the `location` entry
 * (relative, no `..`, no NUL, not absolute) and `offset`/`length` come from its entries (`length`
 * defaults to what dtype × shape needs). External ranges cannot be checked here: the caller MUST
 * check them against the size of the file they name. For a `Constant`'s list attribute, the packed
 * payload (or the span of its repeated fields); for a scalar, the value's bytes.
 *
 * MUST hold, or `MalformedModelError`: every varint and length fits its enclosing message and the
 * file; the model has a graph; tensors have a known `data_type`, at most `MAX_DIMS` non-negative
 * dims and, for fixed-size dtypes, `raw_data` / external `length` of exactly elements × dtype size;
 * packed `value_floats` are a whole number of floats; subgraphs nest at most `MAX_ONNX_GRAPH_DEPTH`
 * deep; total bytes fetched stay under `MAX_ONNX_BYTES_SCANNED` (packed `value_ints` are fetched to
 * count their varints; nothing else of a weight is), fields visited under `MAX_ONNX_FIELDS`, strings
 * kept in memory under `MAX_ONNX_KEPT_BYTES`; no two tensors overlap.
 *
 * `headerLength` is the offset of the first embedded tensor payload (the file size when none):
 * ONNX interleaves structure and weights, so only the leading structure counts as header. The rest
 * of the structure lies between tensors; the chunker treats every byte outside a tensor alike.
 * Not a goal: sparse initializers and `sparse_value` constants, functions (`ModelProto.functions`),
 * training info, tensor-valued attributes of other operators (a `ConstantOfShape` fill value).
 */
import { Cursor, checkRelativePath, elementCount, parameterCount, setOwn } from './cursor.js'
import { MAX_DIMS, MAX_METADATA_VALUE_BYTES, MAX_ONNX_BYTES_SCANNED, MAX_ONNX_FIELDS, MAX_ONNX_GRAPH_DEPTH, MAX_ONNX_KEPT_BYTES, MAX_ONNX_STRING_BYTES, MAX_TENSOR_COUNT } from './limits.js'
import { ProtoReader, WIRE_FIXED32, WIRE_LEN, WIRE_VARINT, type Tag } from './protobuf.js'
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
  const walk: Walk = { pb, text, graph, tensors }

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
        await readGraph(walk, await pb.len(e, 'graph'), 0)
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
      pb.fail(`tensors ${JSON.stringify(prev.name)} and ${JSON.stringify(t.name)} overlap${t.file !== undefined ? ` in ${t.file}` : ''}`)
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

/** What one walk over a model shares: the reader, the summary of the main graph, the tensors found. */
interface Walk {
  pb: ProtoReader
  text: TextReader
  graph: OnnxGraphSummary
  tensors: TensorInfo[]
}

/** StringStringEntryProto: key = 1, value = 2. Over-long values are summarised. */
async function readEntry (pb: ProtoReader, end: number, what: string, text: TextReader): Promise<[string, string]> {
  let key = ''
  let value = ''
  await pb.message(end, what, async (t, e) => {
    if (t.field === 1) { pb.expect(t, WIRE_LEN, `${what} key`); key = await text(e, `${what} key`); return true }
    if (t.field === 2) {
      pb.expect(t, WIRE_LEN, `${what} value`)
      const v = await pb.string(e, `${what} value`, MAX_METADATA_VALUE_BYTES)
      value = text.keep(typeof v === 'number' ? `[string × ${v} bytes]` : v)
      return true
    }
    return false
  })
  return [key, value]
}

function addTensor (w: Walk, tensor: TensorInfo): void {
  if (w.tensors.length >= MAX_TENSOR_COUNT) w.pb.fail(`more than ${MAX_TENSOR_COUNT} tensors (initializers and Constant values, subgraphs included), over the limit of ${MAX_TENSOR_COUNT}`)
  w.tensors.push(tensor)
}

/**
 * GraphProto: nodes (field 1), initializers (5); for the main graph (`depth` 0) also its name,
 * inputs and outputs, which a subgraph's do not change.
 */
async function readGraph (w: Walk, end: number, depth: number): Promise<void> {
  const { pb, graph, text } = w
  await pb.message(end, depth === 0 ? 'graph' : 'subgraph', (tag, e) => {
    if (tag.field === 5) return readInitializer(w, tag, e)
    if (tag.field !== 1) return depth === 0 ? graphField(pb, tag, e, graph, text) : false
    pb.expect(tag, WIRE_LEN, 'node')
    if (depth === 0) graph.nodeCount++
    // Most of a graph is nodes: an empty one costs no await.
    const stop = pb.quickLen(e, 'node')
    if (stop === pb.pos) return true
    return (async () => { await readNode(w, stop ?? await pb.len(e, 'node'), depth); return true })()
  })
}

async function readInitializer (w: Walk, tag: Tag, e: number): Promise<boolean> {
  w.pb.expect(tag, WIRE_LEN, 'initializer')
  addTensor(w, await readTensor(w.pb, await w.pb.len(e, 'initializer'), w.text, 'initializer'))
  return true
}

async function graphField (pb: ProtoReader, tag: Tag, e: number, graph: OnnxGraphSummary, text: TextReader): Promise<boolean> {
  switch (tag.field) {
    case 2: pb.expect(tag, WIRE_LEN, 'graph name'); graph.name = await text(e, 'graph name'); return true
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

/** `Constant` attributes that hold its value, by attribute name. */
const CONSTANT_VALUES = new Set(['value', 'value_float', 'value_floats', 'value_int', 'value_ints', 'value_string', 'value_strings'])

/** A tensor found in a node's attribute, before the node says whether it is a `Constant`. */
type Found = Omit<TensorInfo, 'name'> & { name?: string }

/**
 * NodeProto: output (2), op_type (4), attribute (5), domain (7). Subgraphs in its attributes are
 * walked whatever the operator; tensor values are kept only for a `Constant` of the default
 * domain. Writers put op_type before attributes, so the values of any other operator are skipped
 * unread; a file in another order still reads correctly.
 */
async function readNode (w: Walk, end: number, depth: number): Promise<void> {
  const { pb } = w
  let opType: string | undefined
  let domain = ''
  let output: string | undefined
  const found: Found[] = []
  await pb.message(end, 'node', async (t, e) => {
    switch (t.field) {
      case 2: {
        if (output !== undefined) return false
        pb.expect(t, WIRE_LEN, 'node output')
        const s = await pb.string(e, 'node output', MAX_ONNX_STRING_BYTES)
        output = typeof s === 'string' ? s : ''
        return true
      }
      case 4: {
        pb.expect(t, WIRE_LEN, 'op_type')
        const s = await pb.string(e, 'op_type', MAX_ONNX_STRING_BYTES)
        opType = typeof s === 'string' ? s : ''
        return true
      }
      case 7: {
        pb.expect(t, WIRE_LEN, 'node domain')
        const s = await pb.string(e, 'node domain', MAX_ONNX_STRING_BYTES)
        domain = typeof s === 'string' ? s : ''
        return true
      }
      case 5: {
        pb.expect(t, WIRE_LEN, 'attribute')
        const value = await readAttribute(w, await pb.len(e, 'attribute'), depth, opType === undefined || opType === 'Constant')
        if (value !== undefined) found.push(value)
        return true
      }
      default: return false
    }
  })
  if (opType !== 'Constant' || (domain !== '' && domain !== 'ai.onnx')) return
  // A named TensorProto's name was kept as it was read; an unnamed one takes the node's output.
  for (const f of found) addTensor(w, { ...f, name: f.name ?? w.text.keep(output ?? '') })
}

/** A repeated scalar attribute field being gathered: where its elements lie and how many there are. */
interface ListSpan { offset: number, end: number, count: number }

/**
 * AttributeProto: walks a subgraph (`g` = 6, `graphs` = 11) one level deeper; with `wantValue`,
 * returns the tensor a `Constant` would hold when the attribute is one of {@link CONSTANT_VALUES}:
 * `t` (5), `f` (2), `i` (3), `s` (4), `floats` (7), `ints` (8), `strings` (9).
 */
async function readAttribute (w: Walk, end: number, depth: number, wantValue: boolean): Promise<Found | undefined> {
  const { pb, text } = w
  let name = ''
  let value: Found | undefined
  let list: ListSpan | undefined
  let listDtype = ''
  const gather = (dtype: string, offset: number, stop: number, count: number): void => {
    if (list !== undefined && listDtype !== dtype) pb.fail(`attribute ${JSON.stringify(name)} at offset ${offset} mixes ${listDtype} and ${dtype} values`)
    listDtype = dtype
    list = { offset: list?.offset ?? offset, end: stop, count: (list?.count ?? 0) + count }
  }
  const subgraph = async (e: number, what: string): Promise<void> => {
    if (depth + 1 > MAX_ONNX_GRAPH_DEPTH) pb.fail(`${what} at offset ${pb.pos} is nested ${depth + 1} graphs deep, over the limit of ${MAX_ONNX_GRAPH_DEPTH}`)
    await readGraph(w, await pb.len(e, what), depth + 1)
  }
  await pb.message(end, 'attribute', async (t, e) => {
    switch (t.field) {
      case 6: pb.expect(t, WIRE_LEN, 'attribute graph'); await subgraph(e, 'attribute graph'); return true
      case 11: pb.expect(t, WIRE_LEN, 'attribute graphs'); await subgraph(e, 'attribute graphs'); return true
    }
    // Any other operator's attributes are skipped unread.
    if (!wantValue) return false
    switch (t.field) {
      case 1: {
        pb.expect(t, WIRE_LEN, 'attribute name')
        const s = await pb.string(e, 'attribute name', MAX_ONNX_STRING_BYTES)
        name = typeof s === 'string' ? s : ''
        return true
      }
      case 5:
        pb.expect(t, WIRE_LEN, 'attribute tensor')
        value = await readTensor(pb, await pb.len(e, 'attribute tensor'), text, 'Constant value')
        if (value.name === '') delete value.name
        return true
      case 2:
        pb.expect(t, WIRE_FIXED32, 'attribute float')
        value = { dtype: 'FLOAT', shape: [], offset: pb.pos, length: 4 }
        pb.c.skip(4, 'attribute float', e)
        return true
      case 3: {
        pb.expect(t, WIRE_VARINT, 'attribute int')
        const at = pb.pos
        await pb.varint(e, 'attribute int')
        value = { dtype: 'INT64', shape: [], offset: at, length: pb.pos - at }
        return true
      }
      case 4: {
        pb.expect(t, WIRE_LEN, 'attribute string')
        const stop = await pb.len(e, 'attribute string')
        value = { dtype: 'STRING', shape: [], offset: pb.pos, length: stop - pb.pos }
        pb.c.skip(stop - pb.pos, 'attribute string', stop)
        return true
      }
      case 7: {
        if (t.wire === WIRE_FIXED32) { gather('FLOAT', pb.pos, pb.pos + 4, 1); pb.c.skip(4, 'attribute floats', e); return true }
        pb.expect(t, WIRE_LEN, 'attribute floats')
        const stop = await pb.len(e, 'attribute floats')
        const bytes = stop - pb.pos
        if (bytes % 4 !== 0) pb.fail(`packed floats at offset ${pb.pos} are ${bytes} bytes, not a whole number of 4-byte floats`)
        gather('FLOAT', pb.pos, stop, bytes / 4)
        pb.c.skip(bytes, 'attribute floats', stop)
        return true
      }
      case 8: {
        const at = pb.pos
        if (t.wire === WIRE_VARINT) { await pb.varint(e, 'attribute ints'); gather('INT64', at, pb.pos, 1); return true }
        pb.expect(t, WIRE_LEN, 'attribute ints')
        const stop = await pb.len(e, 'attribute ints')
        const from = pb.pos
        gather('INT64', from, stop, await countVarints(pb, stop))
        return true
      }
      case 9: {
        pb.expect(t, WIRE_LEN, 'attribute strings')
        const stop = await pb.len(e, 'attribute strings')
        gather('STRING', pb.pos, stop, 1)
        pb.c.skip(stop - pb.pos, 'attribute strings', stop)
        return true
      }
      default: return false
    }
  })
  if (!wantValue || !CONSTANT_VALUES.has(name)) return undefined
  if (name.endsWith('s')) {
    const span = list ?? { offset: end, end, count: 0 }
    return { dtype: listDtype === '' ? constantListDtype(name) : listDtype, shape: [span.count], offset: span.offset, length: span.end - span.offset }
  }
  return value
}

function constantListDtype (name: string): string {
  return name === 'value_floats' ? 'FLOAT' : name === 'value_ints' ? 'INT64' : 'STRING'
}

/** Counts the varints of a packed field ending at `stop` (their last bytes: high bit clear), consuming it. */
async function countVarints (pb: ProtoReader, stop: number): Promise<number> {
  let count = 0
  let last = 0
  while (pb.pos < stop) {
    const view = await pb.c.bytes(Math.min(stop - pb.pos, COUNT_STEP_BYTES), 'packed ints')
    for (let i = 0; i < view.length; i++) if (((view[i] as number) & 0x80) === 0) count++
    last = view[view.length - 1] as number
  }
  if ((last & 0x80) !== 0) pb.fail(`packed ints ending at offset ${stop} end inside a varint`)
  return count
}

/** Bytes of a packed varint list fetched at a time while counting. @default 64 KiB */
const COUNT_STEP_BYTES = 64 * 1024

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

/** TensorProto (an initializer or a `Constant`'s value, as `kind` says in errors): records where the data is, never reads it. */
async function readTensor (pb: ProtoReader, end: number, text: TextReader, kind: string): Promise<TensorInfo> {
  const start = pb.pos
  let name = ''
  let dtype = 0
  const shape: number[] = []
  let raw: { offset: number, length: number } | undefined
  let span: { offset: number, end: number } | undefined
  let external = false
  const ext: Record<string, string> = {}

  const addDim = (d: number): void => {
    if (shape.length >= MAX_DIMS) pb.fail(`${kind} at offset ${start} has more than ${MAX_DIMS} dimensions`)
    shape.push(d)
  }
  await pb.message(end, kind, async (t: Tag, e) => {
    if (t.field === 1) {
      if (t.wire === WIRE_VARINT) { addDim(await pb.int(e, 'dim')); return true }
      pb.expect(t, WIRE_LEN, 'dims')
      const stop = await pb.len(e, 'packed dims')
      while (pb.pos < stop) addDim(await pb.int(stop, 'dim'))
      return true
    }
    if (t.field === 2) { pb.expect(t, WIRE_VARINT, 'data_type'); dtype = await pb.int(e, 'data_type'); return true }
    if (t.field === 8) { pb.expect(t, WIRE_LEN, 'name'); name = await text(e, `${kind} name`); return true }
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

  const what = `${kind} ${JSON.stringify(name)}`
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
