/**
 * safetensors I/O (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length, a JSON header
 * `{ name: { dtype, shape, data_offsets: [begin, end] }, __metadata__?: {...} }`, then the raw little-endian data.
 * Reading converts F32, F16 and BF16 to float32; integer tensors are kept as int32 when they fit.
 * Every structural problem is a UserError naming the file (and the tensor).
 */
import path from 'node:path';
import { UserError } from '../errors.js';
import { exists, isJsonObject, readFileNamed, readJsonObject, writeFileAtomic } from '../fsutil.js';

export type SafetensorsDtype = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export interface HostTensor {
  shape: number[];
  /** float32 for floating dtypes, int32 for integer ones. */
  data: Float32Array | Int32Array;
  /** dtype as stored in the file. */
  stored: SafetensorsDtype;
}

const DTYPE_BYTES: Record<SafetensorsDtype, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
/** Refuse absurd headers before parsing them (the format's own limit is 100 MB). */
const MAX_HEADER_BYTES = 100_000_000;

function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac === 0 ? sign * Infinity : NaN;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

function decode(buf: Uint8Array, offset: number, count: number, dtype: SafetensorsDtype, where: string): Float32Array | Int32Array {
  const view = new DataView(buf.buffer, buf.byteOffset + offset, count * DTYPE_BYTES[dtype]);
  switch (dtype) {
    case 'F32': {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
      return out;
    }
    case 'F64': {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(i * 8, true);
      return out;
    }
    case 'F16': {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = f16ToF32(view.getUint16(i * 2, true));
      return out;
    }
    case 'BF16': {
      const out = new Float32Array(count);
      const u32 = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) u32[i] = view.getUint16(i * 2, true) << 16;
      return out;
    }
    case 'I64': {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) {
        const v = view.getBigInt64(i * 8, true);
        if (v > 2147483647n || v < -2147483648n) throw new UserError(`${where}: int64 value ${v} does not fit in int32`);
        out[i] = Number(v);
      }
      return out;
    }
    case 'I32': {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getInt32(i * 4, true);
      return out;
    }
    case 'I16': {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getInt16(i * 2, true);
      return out;
    }
    case 'I8': {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getInt8(i);
      return out;
    }
    case 'U8':
    case 'BOOL': {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getUint8(i);
      return out;
    }
  }
}

/** Parses a safetensors buffer; `file` is used in error messages. */
export function parseSafetensors(buf: Uint8Array, file: string): { tensors: Map<string, HostTensor>; metadata: Record<string, string> } {
  if (buf.length < 8) throw new UserError(`${file}: truncated safetensors file (${buf.length} bytes, no header)`);
  const headerLen = new DataView(buf.buffer, buf.byteOffset, 8).getBigUint64(0, true);
  if (headerLen > BigInt(MAX_HEADER_BYTES) || Number(headerLen) + 8 > buf.length) {
    throw new UserError(`${file}: corrupt or truncated safetensors file (header length ${headerLen} exceeds the file's ${buf.length} bytes)`);
  }
  const n = Number(headerLen);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(buf.subarray(8, 8 + n))) as Record<string, unknown>;
  } catch (err) {
    throw new UserError(`${file}: corrupt safetensors header (${(err as Error).message})`);
  }
  if (!isJsonObject(header)) {
    throw new UserError(`${file}: corrupt safetensors header (not a JSON object)`);
  }
  const dataStart = 8 + n;
  const dataLen = buf.length - dataStart;
  const tensors = new Map<string, HostTensor>();
  let metadata: Record<string, string> = {};
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = (info ?? {}) as Record<string, string>;
      continue;
    }
    const where = `${file}: tensor '${name}'`;
    const t = info as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof t.dtype !== 'string' || !(t.dtype in DTYPE_BYTES)) throw new UserError(`${where}: unsupported dtype ${JSON.stringify(t.dtype)}`);
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isInteger(d) && d >= 0)) throw new UserError(`${where}: invalid shape`);
    if (!Array.isArray(t.data_offsets) || t.data_offsets.length !== 2) throw new UserError(`${where}: invalid data_offsets`);
    const dtype = t.dtype as SafetensorsDtype;
    const shape = t.shape as number[];
    const [begin, end] = t.data_offsets as [number, number];
    const count = shape.reduce((a, b) => a * b, 1);
    if (end - begin !== count * DTYPE_BYTES[dtype]) {
      throw new UserError(`${where}: ${end - begin} bytes stored for shape [${shape.join(', ')}] of ${dtype} (${count * DTYPE_BYTES[dtype]} expected)`);
    }
    if (begin < 0 || end > dataLen) throw new UserError(`${where}: data [${begin}, ${end}) lies outside the file (truncated?)`);
    tensors.set(name, { shape, stored: dtype, data: decode(buf, dataStart + begin, count, dtype, where) });
  }
  return { tensors, metadata };
}

/** Reads one .safetensors file. */
export async function readSafetensors(file: string): Promise<{ tensors: Map<string, HostTensor>; metadata: Record<string, string> }> {
  let buf: Buffer;
  try {
    buf = await readFileNamed(file);
  } catch (err) {
    // What readFileNamed leaves as is: a file past what one read can hold (ERR_FS_FILE_TOO_LARGE).
    if (err instanceof UserError) throw err;
    throw new UserError(`${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  return parseSafetensors(buf, file);
}

/** Whether `dir` holds safetensors weights: model.safetensors or a model.safetensors.index.json. */
export async function hasSafetensorsWeights(dir: string): Promise<boolean> {
  return (await exists(path.join(dir, 'model.safetensors'))) || (await exists(path.join(dir, 'model.safetensors.index.json')));
}

/** The weight_map (tensor name -> shard file) of a model.safetensors.index.json. */
export async function readSafetensorsIndex(index: string): Promise<Record<string, string>> {
  const weightMap = (await readJsonObject(index))['weight_map'];
  if (!isJsonObject(weightMap) || !Object.values(weightMap).every((v) => typeof v === 'string')) {
    throw new UserError(`${index}: invalid index file (no weight_map of tensor names to shard files)`);
  }
  return weightMap as Record<string, string>;
}

/**
 * Reads the weights of a Hugging Face directory: model.safetensors, or the shards listed in
 * model.safetensors.index.json.
 */
export async function readSafetensorsDir(dir: string): Promise<Map<string, HostTensor>> {
  const index = path.join(dir, 'model.safetensors.index.json');
  const single = path.join(dir, 'model.safetensors');
  if (await exists(single)) return (await readSafetensors(single)).tensors;
  if (!(await exists(index))) {
    throw new UserError(`${dir}: no model.safetensors or model.safetensors.index.json (only safetensors weights are read; ` +
      `convert pytorch_model.bin with transformers' save_pretrained(safe_serialization=True))`);
  }
  const weightMap = await readSafetensorsIndex(index);
  const out = new Map<string, HostTensor>();
  for (const shard of [...new Set(Object.values(weightMap))].sort()) {
    const { tensors } = await readSafetensors(path.join(dir, shard));
    for (const [k, v] of tensors) out.set(k, v);
  }
  for (const name of Object.keys(weightMap)) {
    if (!out.has(name)) throw new UserError(`${index}: tensor '${name}' is listed for ${weightMap[name]} but not found there`);
  }
  return out;
}

/** Serialises float32/int32 tensors as safetensors (F32/I32), names sorted, header padded to 8 bytes. */
export function serializeSafetensors(tensors: Map<string, { shape: number[]; data: Float32Array | Int32Array }>,
  metadata: Record<string, string> = { format: 'pt' }): Uint8Array {
  const names = [...tensors.keys()].sort();
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const name of names) {
    const t = tensors.get(name)!;
    const bytes = t.data.length * 4;
    header[name] = { dtype: t.data instanceof Int32Array ? 'I32' : 'F32', shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  const utf8 = new TextEncoder();
  json += ' '.repeat((8 - (utf8.encode(json).length % 8)) % 8);
  const headerBytes = utf8.encode(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let pos = 8 + headerBytes.length;
  for (const name of names) {
    const t = tensors.get(name)!;
    // Every host Node and the browsers run on is little-endian, as safetensors is.
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), pos);
    pos += t.data.byteLength;
  }
  return out;
}

/** Writes a safetensors file atomically (temporary file + rename). */
export async function writeSafetensors(file: string, tensors: Map<string, { shape: number[]; data: Float32Array | Int32Array }>,
  metadata?: Record<string, string>): Promise<void> {
  await writeFileAtomic(file, serializeSafetensors(tensors, metadata));
}
