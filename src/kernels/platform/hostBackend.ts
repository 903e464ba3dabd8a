/**
 * The host-memory backends (tfjs-backend-cpu, tfjs-backend-wasm) as the custom kernels see them: the public fields
 * and methods the kernels use, which the packages do not type, declared once for every kernel module (kernels/stock,
 * kernels/layerNorm, kernels/dropout, src/kernels/adamw/index.ts), with the wasm heap views they share.
 *
 * A wasm tensor's values are float32 (or int32) elements at `dataIdMap.get(dataId).memoryOffset` bytes into the
 * module heap. Allocating an output (`makeOutput`) may grow the heap, which replaces its ArrayBuffer and views:
 * take views after the allocations, never keep one across a makeOutput.
 */
import { tf } from '../../model/tf.js';

/** Bytes of one float32 (and of one int32). */
export const F32_BYTES = 4;

/** tfjs-backend-cpu's MathBackendCPU: values in JavaScript typed arrays. */
export interface CpuBackend {
  /** A tensor's values, and how many tensors hold them (the stock Reshape's output shares its input's). */
  data: { get(dataId: object): { values: tf.backend_util.BackendValues; refCount: number } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: tf.backend_util.BackendValues): tf.TensorInfo;
  readSync(dataId: object): tf.backend_util.BackendValues;
  /** One more tensor shares this buffer (the stock Reshape's way of returning its input). */
  incRef(dataId: object): void;
}

/**
 * Keeps tfjs-backend-cpu's MathBackendCPU `b` from printing its banner ("Hi, looks like you are running TensorFlow.js
 * in Node.js ... install our node backend"): its `write` prints it through backend_util.warn, in Node, on the first
 * write while its private `firstUse` is true, which this clears; nothing else reads `firstUse`. The selection's
 * line (describeSelection) says which backend runs and why the faster ones were skipped. A backend without the field
 * (another version of the package) is left as it is.
 */
export function skipCpuBanner(b: object): void {
  if ('firstUse' in b) (b as { firstUse: boolean }).firstUse = false;
}

/** tfjs-backend-wasm's BackendWasm: values in the module heap. */
export interface WasmBackend {
  wasm: {
    /** The heap as float32; re-read on every use (replaced when the heap grows). */
    HEAPF32: Float32Array;
    /** The module's exports; `memory` is absent in the threaded build, whose memory is imported (shared). */
    asm: { memory?: WebAssembly.Memory };
    /** The threaded build's memory (shared: a SharedArrayBuffer heap); absent in the unthreaded build. */
    wasmMemory?: WebAssembly.Memory;
    cwrap(name: string, ret: null, argTypes: string[]): (...args: unknown[]) => void;
    tfjs: { registerTensor(id: number, size: number, memoryOffset: number): void; disposeData(id: number): void };
  };
  /** A tensor's heap block, and how many tensors hold it (the wasm Identity's output shares its input's). */
  dataIdMap: { get(dataId: object): { id: number; memoryOffset: number; refCount: number } };
  dataIdNextNumber: number;
  makeOutput(shape: number[], dtype: tf.DataType, memoryOffset?: number, values?: tf.backend_util.BackendValues): tf.TensorInfo;
  disposeData(dataId: object): boolean;
  incRef(dataId: object): void;
  readSync(dataId: object): tf.backend_util.BackendValues;
}

/**
 * Tells tfjs-backend-wasm's C++ side that the values of `x` changed where they are (an in-place update): its
 * registration is dropped and made again, which deletes the XNNPACK operators cached on it (a product caches its
 * packed right-hand matrix by that tensor's id, so a weight written in place would otherwise keep multiplying as its
 * old values). The heap block stays (tfjs.disposeData frees no memory; the backend's disposeData does).
 */
export function valuesChangedInPlace(b: WasmBackend, x: tf.TensorInfo): void {
  const { id, memoryOffset } = b.dataIdMap.get(x.dataId);
  b.wasm.tfjs.disposeData(id);
  b.wasm.tfjs.registerTensor(id, tf.util.sizeFromShape(x.shape), memoryOffset);
}

/** A tensor holding `values` on either host backend (cpu keeps the array; wasm copies it into the heap). */
export function hostOutput(b: CpuBackend | WasmBackend, shape: number[], dtype: tf.DataType, values: Float32Array): tf.TensorInfo {
  if ('makeTensorInfo' in b) return b.makeTensorInfo(shape, dtype, values);
  return b.makeOutput(shape, dtype, undefined, values);
}

/** The module's memory, exported (unthreaded build) or imported and shared with its worker threads (threaded). */
export function heapMemory(b: WasmBackend): WebAssembly.Memory | undefined {
  return b.wasm.asm.memory ?? b.wasm.wasmMemory;
}

/** Views of shared heaps on their memory's current buffer object. */
const sharedViews = new WeakMap<ArrayBufferLike, Float32Array>();

/**
 * The wasm heap as float32, as it is now: on the memory's current buffer object. A shared memory's `buffer` may be
 * a new SharedArrayBuffer object over the same memory while Emscripten's HEAPF32 is still on an older one (the
 * threaded build refreshes its views lazily); the SIMD loops check that an array is a view of `memory.buffer`.
 */
export function heapF32(b: WasmBackend): Float32Array {
  const memory = heapMemory(b);
  const views = b.wasm.HEAPF32;
  if (memory === undefined || views.buffer === memory.buffer) return views;
  const current = memory.buffer;
  let view = sharedViews.get(current);
  if (view === undefined) sharedViews.set(current, (view = new Float32Array(current)));
  return view;
}

/** Byte offset of a wasm tensor in the heap. */
export function heapOffset(b: WasmBackend, x: tf.TensorInfo): number {
  return b.dataIdMap.get(x.dataId).memoryOffset;
}

/** Float32 view of a wasm tensor's elements from element `from` on (taken now: see the module comment). */
export function heapView(b: WasmBackend, x: tf.TensorInfo, from = 0): Float32Array {
  const start = heapOffset(b, x) / F32_BYTES;
  return heapF32(b).subarray(start + from, start + tf.util.sizeFromShape(x.shape));
}

/** Either host backend. */
export type HostBackend = CpuBackend | WasmBackend;

/** The typed array of a host tensor's elements: float32, int32, and bool as one byte each (on both backends). */
export type HostValues = Float32Array | Int32Array | Uint8Array;

/** Node's Buffer where this runs in Node (a browser has none). */
const nodeBuffer = (globalThis as { Buffer?: { allocUnsafeSlow(bytes: number): Uint8Array } }).Buffer;

/**
 * An array of `n` elements of `type` for a kernel that writes every one of them, on memory that is not zeroed first
 * where Node's Buffer exists: a buffer of the same size that a disposed tensor gave back (recycleOnDispose), else
 * Buffer.allocUnsafeSlow (malloc, where `new Float32Array(n)` is calloc; its own ArrayBuffer of exactly the array's
 * bytes, as a typed array's). Zeroing a fresh block costs a memset, or a page fault a 4 KB page where the block is
 * new to the process, more than many a kernel's own loop over it. Elsewhere an ordinary (zeroed) array.
 */
export function uninitialized<A extends Float32Array | Int32Array | Uint8Array>(
  type: { new (buffer: ArrayBuffer, byteOffset: number, length: number): A; new (length: number): A; BYTES_PER_ELEMENT: number }, n: number): A {
  if (nodeBuffer === undefined) return new type(n);
  const size = n * type.BYTES_PER_ELEMENT;
  let buffer = freeBuffers.get(size)?.pop();
  if (buffer !== undefined) freeBytes -= size;
  else {
    const bytes = nodeBuffer.allocUnsafeSlow(size);
    buffer = bytes.buffer as ArrayBuffer;
    made.add(buffer);
  }
  if (poisoned) new Uint8Array(buffer).fill(0xff);
  return new type(buffer, 0, n);
}

/** The buffers `uninitialized` made. */
const made = new WeakSet<ArrayBuffer>();
/** Buffers given back, by byte length, and their bytes in all. */
const freeBuffers = new Map<number, ArrayBuffer[]>();
let freeBytes = 0;
/**
 * The most bytes kept for reuse; a buffer given back past it is left to the garbage collector. A BERT-base step
 * (batch 64 x 2, sequence 32) gives back several GB of arrays that the next step makes again, so a lower bound
 * loses much of the gain there without lowering the peak resident size (bench/README.md).
 */
const FREE_BYTES_MAX = 2 ** 32;

/** Buffers that cpu backends hold (entries holding each) and ones whose values were read out of a backend. */
const holders = new WeakMap<ArrayBuffer, number>();
const readOut = new WeakSet<ArrayBuffer>();
/** Backends already watched. */
const watched = new WeakSet<object>();

function madeBuffer(values: unknown): ArrayBuffer | undefined {
  if (!ArrayBuffer.isView(values)) return undefined;
  const buffer = values.buffer;
  return buffer instanceof ArrayBuffer && made.has(buffer) ? buffer : undefined;
}

function letGo(values: unknown): void {
  const buffer = madeBuffer(values);
  if (buffer === undefined) return;
  const left = (holders.get(buffer) ?? 1) - 1;
  if (left > 0) {
    holders.set(buffer, left);
    return;
  }
  holders.delete(buffer);
  if (readOut.has(buffer) || freeBytes + buffer.byteLength > FREE_BYTES_MAX) return;
  const list = freeBuffers.get(buffer.byteLength);
  if (list === undefined) freeBuffers.set(buffer.byteLength, [buffer]);
  else list.push(buffer);
  freeBytes += buffer.byteLength;
}

/** Drops the buffers kept for reuse (recycleOnDispose), leaving them to the garbage collector. */
export function dropRecycledBuffers(): void {
  freeBuffers.clear();
  freeBytes = 0;
}

/**
 * Gives the buffers of `uninitialized` arrays back for reuse when the last tensor of the cpu backend `backend` holding
 * them is disposed (once per backend instance). Why: V8 counts every ArrayBuffer as external memory and collects
 * garbage each time that has grown by some tens of MB, and a cpu training step makes gigabytes of arrays: dozens of
 * full collections a step, and fresh blocks for the arrays made meanwhile. A step makes arrays of the same sizes as the step before, so most come back at once.
 * How: the backend's storage is watched (its `set` and `delete`, on this instance): each buffer counts the entries
 * holding it (a stock kernel may hand out a view of its input's buffer, as the stock Slice does a contiguous slice),
 * and one whose values left the backend through `readSync` (`dataSync()`, `data()`, `bufferSync`, a move to another
 * backend) belongs to the reader as well and is never reused.
 */
export function recycleOnDispose(backend: CpuBackend): void {
  if (nodeBuffer === undefined || watched.has(backend)) return;
  watched.add(backend);
  interface Storage {
    has(dataId: object): boolean;
    get(dataId: object): { values?: unknown };
    set(dataId: object, value: { values?: unknown }): void;
    delete(dataId: object): boolean;
  }
  const storage = backend.data as unknown as Storage;
  // (get on an id the storage lacks asks the engine to move the data here: has first)
  const entryOf = (dataId: object) => (storage.has(dataId) ? storage.get(dataId) : undefined);
  const set = storage.set.bind(storage);
  const remove = storage.delete.bind(storage);
  storage.set = (dataId, value) => {
    const before = entryOf(dataId);
    const buffer = madeBuffer(value.values);
    if (buffer !== undefined) holders.set(buffer, (holders.get(buffer) ?? 0) + 1);
    set(dataId, value);
    if (before !== undefined) letGo(before.values);
  };
  storage.delete = (dataId) => {
    const entry = entryOf(dataId);
    const removed = remove(dataId);
    if (removed && entry !== undefined) letGo(entry.values);
    return removed;
  };
  const readSync = backend.readSync.bind(backend);
  backend.readSync = (dataId) => {
    const values = readSync(dataId);
    const buffer = madeBuffer(values);
    if (buffer !== undefined) readOut.add(buffer);
    return values;
  };
}

let poisoned = false;

/**
 * While on, every `uninitialized` array starts as 0xFF bytes (float32 NaN, int32 -1) instead of whatever malloc
 * gave: a check, for tests, that the kernels write every element of their outputs (a kernel that relies on zeros
 * then gives NaN).
 */
export function poisonUninitialized(on: boolean): void {
  poisoned = on;
}

/**
 * A new tensor on either host backend, for a kernel that writes every element through `hostValues` (cpu: an
 * `uninitialized` array; wasm: whatever the heap held). Float32, int32 and bool.
 */
export function makeHostOutput(b: HostBackend, shape: number[], dtype: tf.DataType): tf.TensorInfo {
  if ('wasm' in b) return b.makeOutput(shape, dtype);
  const n = tf.util.sizeFromShape(shape);
  const values = dtype === 'float32' ? uninitialized(Float32Array, n) : dtype === 'int32' ? uninitialized(Int32Array, n)
    : dtype === 'bool' ? uninitialized(Uint8Array, n) : null;
  if (values === null) throw new Error(`makeHostOutput: dtype ${dtype} is not float32, int32 or bool`);
  return b.makeTensorInfo(shape, dtype, values);
}

/**
 * The elements of `x` (float32, int32 or bool) on either host backend: cpu's own array, or a view of the wasm heap
 * taken now (see the module comment: take it after every allocation of the kernel).
 */
export function hostValues(b: HostBackend, x: tf.TensorInfo): HostValues {
  const n = tf.util.sizeFromShape(x.shape);
  if (!('wasm' in b)) {
    const values = b.data.get(x.dataId).values;
    if (values instanceof Float32Array || values instanceof Int32Array || values instanceof Uint8Array) return values.subarray(0, n);
    throw new Error(`hostValues: a ${x.dtype} tensor's values are not a float32, int32 or byte array`);
  }
  const f32 = heapF32(b);
  const offset = heapOffset(b, x);
  if (x.dtype === 'bool') return new Uint8Array(f32.buffer, f32.byteOffset + offset, n);
  if (x.dtype === 'int32') return new Int32Array(f32.buffer, f32.byteOffset + offset, n);
  return heapView(b, x);
}

/** A float32 tensor's elements on either host backend (see hostValues). */
export function hostF32(b: HostBackend, x: tf.TensorInfo): Float32Array {
  const v = hostValues(b, x);
  if (!(v instanceof Float32Array)) throw new Error(`hostF32: a ${x.dtype} tensor, not float32`);
  return v;
}

/** The elements of a float32 or int32 tensor as int32 bits (copies move values bit for bit, NaN payloads too). */
export function hostBits(b: HostBackend, x: tf.TensorInfo): Int32Array {
  const v = hostValues(b, x);
  if (v instanceof Uint8Array) throw new Error(`hostBits: a ${x.dtype} tensor has no 4-byte elements`);
  return v instanceof Int32Array ? v : new Int32Array(v.buffer, v.byteOffset, v.length);
}
