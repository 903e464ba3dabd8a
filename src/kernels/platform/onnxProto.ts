/**
 * A minimal protobuf wire-format encoder for the ONNX messages an exported graph needs (onnx/onnx.proto3:
 * ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto and the type/shape messages).
 * Only encoding is implemented; field numbers are the ones onnx.proto3 assigns (quoted next to each field).
 *
 * Wire format (https://protobuf.dev/programming-guides/encoding/): each field is a key varint
 * `(fieldNumber << 3) | wireType` followed by a varint (wire type 0), 4 little-endian bytes (5) or a length-
 * delimited payload (2: varint length + bytes, used for strings, bytes, sub-messages and packed repeated scalars).
 * Messages are built as lists of chunks with a known total length, so large initialisers are never copied until
 * `encodeModel` joins everything once.
 */

/** ONNX TensorProto.DataType values used here. */
export const DataType = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7 } as const;
export type DataTypeValue = (typeof DataType)[keyof typeof DataType];

/** AttributeProto.AttributeType values used here. */
const AttrType = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, FLOATS: 6, INTS: 7 } as const;

/** Encoded bytes kept as chunks plus their total length. */
class Encoded {
  readonly chunks: Uint8Array[] = [];
  length = 0;

  push(b: Uint8Array): this {
    this.chunks.push(b);
    this.length += b.length;
    return this;
  }

  toBuffer(): Buffer {
    return Buffer.concat(this.chunks, this.length);
  }
}

/** Base-128 varint of a non-negative or negative (two's complement, 10 bytes) 64-bit integer. */
function varint(value: number | bigint): Uint8Array {
  let v = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Uint8Array.from(out);
}

const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;

function key(field: number, wire: number): Uint8Array {
  return varint((field << 3) | wire);
}

/** Field writers on one message. */
class Msg {
  readonly enc = new Encoded();

  int(field: number, value: number | bigint | undefined): this {
    if (value === undefined) return this;
    this.enc.push(key(field, WIRE_VARINT)).push(varint(value));
    return this;
  }

  float(field: number, value: number): this {
    const b = Buffer.alloc(4);
    b.writeFloatLE(value, 0);
    this.enc.push(key(field, WIRE_FIXED32)).push(b);
    return this;
  }

  bytes(field: number, value: Uint8Array): this {
    this.enc.push(key(field, WIRE_LEN)).push(varint(value.length)).push(value);
    return this;
  }

  str(field: number, value: string | undefined): this {
    if (value === undefined) return this;
    return this.bytes(field, Buffer.from(value, 'utf8'));
  }

  msg(field: number, sub: Msg): this {
    this.enc.push(key(field, WIRE_LEN)).push(varint(sub.enc.length));
    for (const c of sub.enc.chunks) this.enc.push(c);
    return this;
  }

  /** Packed repeated int64/int32 (proto3's default encoding for repeated scalars). */
  packedInts(field: number, values: readonly (number | bigint)[]): this {
    if (values.length === 0) return this;
    const parts = values.map(varint);
    const len = parts.reduce((a, p) => a + p.length, 0);
    this.enc.push(key(field, WIRE_LEN)).push(varint(len));
    for (const p of parts) this.enc.push(p);
    return this;
  }

  packedFloats(field: number, values: readonly number[]): this {
    if (values.length === 0) return this;
    const b = Buffer.alloc(values.length * 4);
    values.forEach((v, i) => b.writeFloatLE(v, i * 4));
    return this.bytes(field, b);
  }
}

/** An initialiser or constant: raw little-endian data of one of the supported element types. */
export interface TensorSpec {
  name: string;
  dims: number[];
  dataType: DataTypeValue;
  /** Little-endian element bytes (Float32Array, Int8Array, Uint8Array, BigInt64Array, Int32Array views). */
  data: Float32Array | Int8Array | Uint8Array | BigInt64Array | Int32Array;
}

export type AttributeValue =
  | { kind: 'int'; value: number }
  | { kind: 'float'; value: number }
  | { kind: 'string'; value: string }
  | { kind: 'ints'; value: number[] }
  | { kind: 'floats'; value: number[] }
  | { kind: 'tensor'; value: TensorSpec };

export interface NodeSpec {
  opType: string;
  inputs: string[];
  outputs: string[];
  name: string;
  attributes?: Record<string, AttributeValue>;
  /** Operator domain ('' = ai.onnx). */
  domain?: string;
}

/** A dimension: a fixed size or a symbolic name (`batch`, `sequence`). */
export type Dim = number | string;

export interface ValueInfoSpec {
  name: string;
  elemType: DataTypeValue;
  shape: Dim[];
}

export interface GraphSpec {
  name: string;
  nodes: NodeSpec[];
  initializers: TensorSpec[];
  inputs: ValueInfoSpec[];
  outputs: ValueInfoSpec[];
  docString?: string;
}

export interface ModelSpec {
  /** IR version (8 = ONNX 1.10+, enough for opset 17). */
  irVersion: number;
  /** ai.onnx opset. */
  opset: number;
  producerName: string;
  producerVersion: string;
  docString?: string;
  /** metadata_props key/value pairs. */
  metadata?: Record<string, string>;
  graph: GraphSpec;
}

/** TensorProto: dims = 1, data_type = 2, name = 8, raw_data = 9. */
function tensorMsg(t: TensorSpec): Msg {
  const count = t.dims.reduce((a, b) => a * b, 1);
  if (count !== t.data.length) throw new Error(`tensor '${t.name}': ${t.data.length} values for dims [${t.dims.join(', ')}]`);
  return new Msg()
    .packedInts(1, t.dims)
    .int(2, t.dataType)
    .str(8, t.name)
    .bytes(9, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
}

/** AttributeProto: name = 1, f = 2, i = 3, s = 4, t = 5, floats = 7, ints = 8, type = 20. */
function attributeMsg(name: string, a: AttributeValue): Msg {
  const m = new Msg().str(1, name);
  switch (a.kind) {
    case 'float':
      return m.float(2, a.value).int(20, AttrType.FLOAT);
    case 'int':
      return m.int(3, a.value).int(20, AttrType.INT);
    case 'string':
      return m.str(4, a.value).int(20, AttrType.STRING);
    case 'tensor':
      return m.msg(5, tensorMsg(a.value)).int(20, AttrType.TENSOR);
    case 'floats':
      return m.packedFloats(7, a.value).int(20, AttrType.FLOATS);
    case 'ints':
      return m.packedInts(8, a.value).int(20, AttrType.INTS);
  }
}

/** NodeProto: input = 1, output = 2, name = 3, op_type = 4, attribute = 5, domain = 7. */
function nodeMsg(n: NodeSpec): Msg {
  const m = new Msg();
  for (const i of n.inputs) m.str(1, i);
  for (const o of n.outputs) m.str(2, o);
  m.str(3, n.name).str(4, n.opType);
  for (const [k, v] of Object.entries(n.attributes ?? {})) m.msg(5, attributeMsg(k, v));
  if (n.domain !== undefined && n.domain !== '') m.str(7, n.domain);
  return m;
}

/**
 * ValueInfoProto: name = 1, type = 2. TypeProto: tensor_type = 1. TypeProto.Tensor: elem_type = 1, shape = 2.
 * TensorShapeProto: dim = 1. Dimension: dim_value = 1, dim_param = 2.
 */
function valueInfoMsg(v: ValueInfoSpec): Msg {
  const shape = new Msg();
  for (const d of v.shape) shape.msg(1, typeof d === 'number' ? new Msg().int(1, d) : new Msg().str(2, d));
  const tensorType = new Msg().int(1, v.elemType).msg(2, shape);
  return new Msg().str(1, v.name).msg(2, new Msg().msg(1, tensorType));
}

/** GraphProto: node = 1, name = 2, initializer = 5, doc_string = 10, input = 11, output = 12. */
function graphMsg(g: GraphSpec): Msg {
  const m = new Msg();
  for (const n of g.nodes) m.msg(1, nodeMsg(n));
  m.str(2, g.name);
  for (const t of g.initializers) m.msg(5, tensorMsg(t));
  m.str(10, g.docString);
  for (const i of g.inputs) m.msg(11, valueInfoMsg(i));
  for (const o of g.outputs) m.msg(12, valueInfoMsg(o));
  return m;
}

/**
 * ModelProto: ir_version = 1, producer_name = 2, producer_version = 3, doc_string = 6, graph = 7,
 * opset_import = 8 (OperatorSetIdProto: domain = 1, version = 2), metadata_props = 14 (key = 1, value = 2).
 */
export function encodeModel(spec: ModelSpec): Buffer {
  const m = new Msg()
    .int(1, spec.irVersion)
    .str(2, spec.producerName)
    .str(3, spec.producerVersion)
    .str(6, spec.docString)
    .msg(7, graphMsg(spec.graph))
    .msg(8, new Msg().str(1, '').int(2, spec.opset));
  for (const [k, v] of Object.entries(spec.metadata ?? {})) m.msg(14, new Msg().str(1, k).str(2, v));
  return m.enc.toBuffer();
}

