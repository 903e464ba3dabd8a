/**
 * The stock-kernel replacements of the host backends (cpu and wasm): products on the native SGEMM, block copies,
 * gathers, sums, the scatter-add gradient of the embedding lookup, cpu element-wise kernels. index.ts's table says
 * which replaces which kernel on which backend; each maker here takes the stock kernel it falls back on.
 */
import {
  F32_BYTES, heapF32, heapMemory, heapOffset, heapView, hostBits, hostF32, hostOutput, hostValues, makeHostOutput, uninitialized,
  type CpuBackend, type HostBackend, type WasmBackend,
} from '../platform/hostBackend.js';
import { Cblas } from '../platform/cblas.js';
import { heapSimdHost, SIMD_LANES, simdBinary, simdSegmentSum, stagingSimdHost, type BinaryLoop } from '../platform/hostSimd.js';
import { NativeGemm, type HostGemm, type Shape3 } from '../platform/nativeGemm.js';
import { tf } from '../../model/tf.js';
import { firstLineOf } from '../../errors.js';

export type KernelFunc = tf.KernelConfig['kernelFunc'];

/**
 * out[segmentIds[i], ...] += x[i, ...]: x is read as `[segmentIds.length, inner]` (segmentIds may have any rank;
 * its elements index x's leading dims in row-major order). Out-of-range ids are dropped, as in TensorFlow.
 */
export function scatterAdd(x: Float32Array | Int32Array, segmentIds: Int32Array, numSegments: number): Float32Array {
  const rows = segmentIds.length;
  const inner = rows === 0 ? 0 : x.length / rows;
  const out = new Float32Array(numSegments * inner);
  for (let i = 0; i < rows; i++) {
    const s = segmentIds[i]!;
    if (s < 0 || s >= numSegments) continue;
    const src = i * inner;
    const dst = s * inner;
    for (let j = 0; j < inner; j++) out[dst + j]! += x[src + j]!;
  }
  return out;
}

export const unsortedSegmentSumCpu: KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backend as unknown as CpuBackend | WasmBackend;
  const x = inputs['x']!;
  const segmentIds = inputs['segmentIds']!;
  const numSegments = (attrs as { numSegments: number }).numSegments;
  const xs = b.readSync(x.dataId) as Float32Array | Int32Array;
  const ids = Int32Array.from(b.readSync(segmentIds.dataId) as Int32Array);
  const outShape = [numSegments, ...x.shape.slice(segmentIds.shape.length)];
  const out = scatterAdd(xs, ids, numSegments);
  return hostOutput(b, outShape, 'float32', out);
};


// ---------------------------------------------------------------------------------------------------------------
// Host BatchMatMul (wasm and cpu)
//
// First choice: a native SGEMM, reading the operands in place (transpose flags included) and writing the product into
// the wasm heap, or on cpu into the tensor's new array. Which one `useNativeGemm` decides (backend.ts calls it for
// both backends with NATIVE_GEMM_ENV's choice): by default the system's CBLAS through koffi (platform/cblas.ts:
// OpenBLAS, the product written straight into the output), else onnxruntime-node's MLAS (platform/nativeGemm.ts:
// on cpu the binding's copy of ORT's output becomes the tensor's array); each falls back when it cannot load.
// The stock cpu kernel is a JavaScript loop, most of a cpu step's time without these (figures: bench/README.md).
//
// Otherwise, on cpu the stock kernel, and on wasm XNNPACK: the stock wasm kernel uses it (SIMD, one thread) only for
// an unbatched product without transpose flags, i.e. `[1, M, K] @ [1, K, N]`; everything else (every backward
// product, the batched attention products) runs a scalar blocked loop, several times slower.
// This wrapper then brings every float32 product to that one fast form:
//   - a transpose flag is materialised first (the wasm Transpose kernel, one pass over the operand);
//   - `[batch, M, K] @ [K, N]` (b unbatched) becomes one `[1, batch * M, K] @ [1, K, N]` product;
//   - `[batch, M, K] @ [batch, K, N]` runs one XNNPACK product per batch entry on views of the operands: the
//     per-entry tensors are registered with the wasm module at offsets inside the batched buffers (no copy) and
//     released right after, which also frees the XNNPACK operator cached on them.
// Products with a broadcast batch (batchA = 1 < batchB) keep the stock kernel on this path.
// ---------------------------------------------------------------------------------------------------------------

/**
 * Environment switch of the host products' engine (parseNativeGemmChoice): `auto` (default: CBLAS, else MLAS),
 * `cblas` or `mlas` (that engine only), `0` (wasm: XNNPACK; cpu: the stock loop). For comparisons.
 */
export const NATIVE_GEMM_ENV = 'MICSE_NATIVE_GEMM';

export type NativeGemmChoice = 'auto' | 'cblas' | 'mlas' | 'off';

/** NATIVE_GEMM_ENV's value as a choice: unset, `1` or `auto` -> auto; `0` or `off` -> off; `cblas`; `mlas`. */
export function parseNativeGemmChoice(text: string | undefined): NativeGemmChoice {
  if (text === undefined || text === '' || text === '1' || text === 'auto') return 'auto';
  if (text === '0' || text === 'off') return 'off';
  if (text === 'cblas' || text === 'mlas') return text;
  throw new Error(`${NATIVE_GEMM_ENV}='${text}': expected auto, cblas, mlas or 0`);
}

let nativeGemm: HostGemm | undefined;
/** Why the engines tried before the active one (or all of them) are not used. */
let nativeGemmWhy: string[] = ['not requested'];
/** The engines loaded with their default threads, kept across switches (MLAS builds its ONNX sessions once per transpose-flag pair). */
const loadedEngines = new Map<'cblas' | 'mlas', HostGemm>();

function loadEngine(engine: 'cblas' | 'mlas', threads: number | undefined): HostGemm {
  if (engine === 'cblas') return Cblas.load(threads);
  try {
    return NativeGemm.load(threads);
  } catch (err) {
    throw new Error(`onnxruntime-node did not load: ${firstLineOf(err)}`);
  }
}

/**
 * The first of `choice`'s engines that loads (auto: CBLAS, then MLAS), and why each one before it (or every one) did
 * not. With `threads`, a new instance with that many threads (the bench's SGEMM probe); without, the process-wide
 * one with the engine's default count.
 */
export function loadNativeGemm(choice: NativeGemmChoice, threads?: number): { gemm: HostGemm | undefined; why: string[] } {
  if (choice === 'off') return { gemm: undefined, why: ['native GEMM switched off'] };
  const why: string[] = [];
  for (const engine of choice === 'auto' ? (['cblas', 'mlas'] as const) : [choice]) {
    try {
      if (threads !== undefined) return { gemm: loadEngine(engine, threads), why };
      let gemm = loadedEngines.get(engine);
      if (gemm === undefined) loadedEngines.set(engine, (gemm = loadEngine(engine, undefined)));
      return { gemm, why };
    } catch (err) {
      why.push(`${engine === 'cblas' ? 'CBLAS' : 'MLAS'} not used: ${firstLineOf(err)}`);
    }
  }
  return { gemm: undefined, why };
}

/**
 * Routes wasm and cpu float32 products to the native SGEMM `loadNativeGemm(choice)` gives, or to their own kernels
 * (`off`, or no engine loaded: wasm XNNPACK, cpu the stock loop). Returns whether a native engine is active
 * (`hostMatMulEngine` says which, and why the others are not).
 */
export function useNativeGemm(choice: NativeGemmChoice): boolean {
  ({ gemm: nativeGemm, why: nativeGemmWhy } = loadNativeGemm(choice));
  return nativeGemm !== undefined;
}

/** The native GEMM engine when it is the system's CBLAS (whose strided products the attention kernels use), else undefined. */
export function activeCblas(): Cblas | undefined {
  return nativeGemm instanceof Cblas ? nativeGemm : undefined;
}

/** `library, N threads`. */
function describeHostGemm(gemm: HostGemm): string {
  return `${gemm.library}, ${gemm.threads} thread${gemm.threads === 1 ? '' : 's'}`;
}

/** What runs the dense products of the wasm or cpu backend, and why an engine tried first is not used, for logs. */
export function hostMatMulEngine(backendName: 'wasm' | 'cpu'): string {
  const engine = nativeGemm !== undefined ? describeHostGemm(nativeGemm) : backendName === 'wasm' ? 'XNNPACK' : 'the stock JavaScript loop';
  return nativeGemmWhy.length === 0 ? engine : `${engine} (${nativeGemmWhy.join('; ')})`;
}

interface MatMulAttrs {
  transposeA: boolean;
  transposeB: boolean;
}

/** Bytes of an int32 shape, the form the wasm module's `array` arguments take. */
function shapeBytes(shape: number[]): Uint8Array {
  return new Uint8Array(new Int32Array(shape).buffer);
}


/**
 * BatchMatMul on a host backend: on the native GEMM when it is active (both backends: operands read in place, the
 * product written into the wasm heap or handed over as the cpu tensor's array); otherwise, on wasm, XNNPACK as the section comment says, and on cpu the stock kernel.
 */
export function makeHostBatchMatMul(backendName: string, stock: KernelFunc, transpose: KernelFunc): KernelFunc {
  let raw: ((...args: unknown[]) => void) | undefined;
  return (args) => {
    const { inputs, attrs } = args;
    const host = args.backend as unknown as HostBackend;
    const a = inputs['a']!;
    const b = inputs['b']!;
    const { transposeA, transposeB } = attrs as unknown as MatMulAttrs;
    if (a.dtype !== 'float32' || b.dtype !== 'float32') return stock(args);
    const ra = a.shape.length;
    const rb = b.shape.length;
    const batchA = tf.util.sizeFromShape(a.shape.slice(0, -2));
    const batchB = tf.util.sizeFromShape(b.shape.slice(0, -2));
    const outer = tf.broadcast_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
    // Flattening the batch dims is only right when one side has a single batch entry or both have the same dims.
    const sameOuter = batchA === batchB && tf.util.sizeFromShape(outer) === batchA;
    if (!sameOuter && batchA !== 1 && batchB !== 1) return stock(args);
    const M = transposeA ? a.shape[ra - 1]! : a.shape[ra - 2]!;
    const K = transposeA ? a.shape[ra - 2]! : a.shape[ra - 1]!;
    const N = transposeB ? b.shape[rb - 2]! : b.shape[rb - 1]!;
    const outShape = [...outer, M, N];
    if (nativeGemm !== undefined && M * N * K > 0) {
      // [batchA, M, K] (stored [batchA, K, M] when transposeA) @ [batchB, K, N] (or [batchB, N, K]) in place.
      let aShape: Shape3 = transposeA ? [batchA, K, M] : [batchA, M, K];
      if (batchB === 1 && !transposeA) aShape = [1, batchA * M, K]; // one [batchA * M, K] @ [K, N] GEMM
      const bShape: Shape3 = transposeB ? [batchB, N, K] : [batchB, K, N];
      if (!('wasm' in host)) {
        // cpu: the engine's new array becomes the tensor's
        return host.makeTensorInfo(outShape, 'float32', nativeGemm.matMulToArray(hostF32(host, a), aShape, transposeA, hostF32(host, b), bShape, transposeB));
      }
      const out = makeHostOutput(host, outShape, 'float32');
      // views taken after the allocation above, which may grow the wasm heap
      nativeGemm.matMul(hostF32(host, a), aShape, transposeA, hostF32(host, b), bShape, transposeB, hostF32(host, out));
      return out;
    }
    if (backendName !== 'wasm' || (batchA !== batchB && batchB !== 1)) return stock(args);
    const backend = host as WasmBackend;

    // Operands as [batch, rows, cols] without transpose flags.
    const temps: tf.TensorInfo[] = [];
    const plain = (x: tf.TensorInfo, batch: number, rows: number, cols: number, flip: boolean): tf.TensorInfo => {
      if (!flip) return { dataId: x.dataId, shape: [batch, rows, cols], dtype: x.dtype };
      const t = transpose({ inputs: { x: { dataId: x.dataId, shape: [batch, cols, rows], dtype: x.dtype } }, backend: args.backend, attrs: { perm: [0, 2, 1] } }) as tf.TensorInfo;
      temps.push(t);
      return { dataId: t.dataId, shape: [batch, rows, cols], dtype: t.dtype };
    };
    const a3 = plain(a, batchA, M, K, transposeA); // [batchA, M, K]
    const b3 = plain(b, batchB, K, N, transposeB); // [batchB, K, N]
    const noFlags = { transposeA: false, transposeB: false };
    let out: tf.TensorInfo;
    if (batchB === 1) {
      // [batchA * M, K] @ [K, N] in one XNNPACK product.
      out = stock({ inputs: { a: { ...a3, shape: [1, batchA * M, K] }, b: { ...b3, shape: [1, K, N] } }, backend: args.backend, attrs: noFlags }) as tf.TensorInfo;
    } else {
      raw ??= backend.wasm.cwrap('BatchMatMul', null, ['number', 'array', 'number', 'number', 'array', 'number', 'number', 'number', 'number']);
      out = backend.makeOutput([batchA, M, N], 'float32');
      const aOff = heapOffset(backend, a3);
      const bOff = heapOffset(backend, b3);
      const oOff = heapOffset(backend, out);
      const aShape = shapeBytes([1, M, K]);
      const bShape = shapeBytes([1, K, N]);
      const { tfjs } = backend.wasm;
      for (let i = 0; i < batchA; i++) {
        const aId = backend.dataIdNextNumber++;
        const bId = backend.dataIdNextNumber++;
        const oId = backend.dataIdNextNumber++;
        tfjs.registerTensor(aId, M * K, aOff + i * M * K * F32_BYTES);
        tfjs.registerTensor(bId, K * N, bOff + i * K * N * F32_BYTES);
        tfjs.registerTensor(oId, M * N, oOff + i * M * N * F32_BYTES);
        raw(aId, aShape, 3, bId, bShape, 3, 0, 0, oId);
        tfjs.disposeData(aId);
        tfjs.disposeData(bId); // also deletes the XNNPACK operator cached on this b
        tfjs.disposeData(oId);
      }
    }
    for (const t of temps) backend.disposeData(t.dataId);
    return { dataId: out.dataId, shape: outShape, dtype: out.dtype };
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Host copies, gathers and sums (wasm and cpu through hostBackend.ts; Transpose and PadV2 on cpu only, where the
// stock kernels convert every index to coordinates; Identity and UnsortedSegmentSum on wasm only). Tensors hold
// float32, int32 or bool; copies move raw elements (4-byte bits, or bytes for bool), so values pass bit for bit.
// ---------------------------------------------------------------------------------------------------------------

/**
 * Host Unpack (tf.unstack; the gradient of tf.stack, e.g. of the attention maps micseLoss stacks): the stock kernels
 * slice each output with a strided copy, element by element.
 * Here each output is `outer` contiguous runs of `inner` elements copied with TypedArray.set.
 *   value [d0, .., d_axis, .., dn] -> d_axis tensors [d0, .., dn] without d_axis
 */
export function makeHostUnpack(stock: KernelFunc): KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as HostBackend;
    const value = args.inputs['value']!;
    if (value.dtype !== 'float32' && value.dtype !== 'int32') return stock(args);
    const rank = value.shape.length;
    let axis = (args.attrs as unknown as { axis: number }).axis;
    if (axis < 0) axis += rank;
    const count = value.shape[axis]!;
    const outer = tf.util.sizeFromShape(value.shape.slice(0, axis));
    const inner = tf.util.sizeFromShape(value.shape.slice(axis + 1));
    const outShape = value.shape.filter((_, i) => i !== axis);
    const outs: tf.TensorInfo[] = [];
    for (let j = 0; j < count; j++) outs.push(makeHostOutput(backend, outShape, value.dtype));
    const src = hostBits(backend, value); // after the allocations above, which may grow the wasm heap
    outs.forEach((o, j) => {
      const dst = hostBits(backend, o);
      for (let r = 0; r < outer; r++) {
        const from = (r * count + j) * inner;
        dst.set(src.subarray(from, from + inner), r * inner);
      }
    });
    return outs;
  };
}

/** Below this many elements a leading-axis Sum stays a JavaScript loop (a native call costs ~10 us). */
const NATIVE_SUM_MIN_ELEMENTS = 1 << 14;

/**
 * Host Sum over leading axes (bias and LayerNorm-weight gradients, broadcast-add gradients):
 * `x [R, C] -> [C]` with `R` the product of the reduced leading axes. The stock kernel transposes the reduced axes
 * to the end first (a strided pass over the whole tensor); here it is a `[1, R] @ [R, C]` product with a row of
 * ones on the native GEMM when that is active, else rows are accumulated in order, contiguous in C.
 * Other reductions keep the stock kernel.
 */
export function makeHostSum(stock: KernelFunc): KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as HostBackend;
    const x = args.inputs['x']!;
    const { axis, keepDims } = args.attrs as unknown as { axis: number | number[]; keepDims: boolean };
    const rank = x.shape.length;
    const axes = [...new Set((Array.isArray(axis) ? axis : [axis]).map((a) => (a < 0 ? a + rank : a)))].sort((p, q) => p - q);
    const leading = axes.length > 0 && axes.length < rank && axes.every((a, i) => a === i);
    if (x.dtype !== 'float32' || !leading) return stock(args);
    const R = tf.util.sizeFromShape(x.shape.slice(0, axes.length));
    const C = tf.util.sizeFromShape(x.shape.slice(axes.length));
    const outShape = keepDims ? x.shape.map((d, i) => (i < axes.length ? 1 : d)) : x.shape.slice(axes.length);
    const out = makeHostOutput(backend, outShape, 'float32');
    if (R === 0) {
      hostF32(backend, out).fill(0); // an empty sum (the loop below would start from a row that does not exist)
      return out;
    }
    if (nativeGemm !== undefined && R * C >= NATIVE_SUM_MIN_ELEMENTS) {
      // [1, R] ones @ [R, C] -> [1, C] on the native GEMM's threads.
      const ones = makeHostOutput(backend, [1, R], 'float32');
      hostF32(backend, ones).fill(1);
      nativeGemm.matMul(hostF32(backend, ones), [1, 1, R], false, hostF32(backend, x), [1, R, C], false, hostF32(backend, out));
      (backend as unknown as tf.KernelBackend).disposeData(ones.dataId);
      return out;
    }
    const xs = hostF32(backend, x);
    const acc = hostF32(backend, out);
    acc.set(xs.subarray(0, C));
    for (let r = 1; r < R; r++) {
      const row = r * C;
      for (let c = 0; c < C; c++) acc[c]! += xs[row + c]!;
    }
    return out;
  };
}

/**
 * wasm Identity: the stock kernel copies the tensor (~460 calls a training step, mostly gradients passed through);
 * tensors are immutable, so the output shares the input's buffer (reference-counted, as the stock Reshape does).
 */
export function makeWasmIdentity(stock: KernelFunc): KernelFunc {
  return (args) => {
    const x = args.inputs['x']!;
    if (x.dtype === 'string') return stock(args);
    (args.backend as unknown as WasmBackend).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape.slice(), dtype: x.dtype };
  };
}

/**
 * Host GatherV2 on axis 0 without batch dims (the embedding lookups, 1-D gathers): each output row is one
 * contiguous copy of `inner` elements, where the stock kernels index element by element.
 *   x [rows, ...inner], indices [...I] -> [...I, ...inner]
 * An out-of-range index, another axis or batch dims go to the stock kernel (which also raises the error).
 */
export function makeHostGather(stock: KernelFunc): KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as HostBackend;
    const x = args.inputs['x']!;
    const indices = args.inputs['indices']!;
    const { axis, batchDims } = args.attrs as unknown as { axis: number; batchDims: number };
    if ((x.dtype !== 'float32' && x.dtype !== 'int32') || indices.dtype !== 'int32' || batchDims !== 0 || x.shape.length === 0) return stock(args);
    if (tf.util.parseAxisParam(axis, x.shape)[0] !== 0) return stock(args);
    const rows = x.shape[0]!;
    const ids = backend.readSync(indices.dataId) as Int32Array;
    for (let i = 0; i < ids.length; i++) if (ids[i]! < 0 || ids[i]! >= rows) return stock(args);
    const inner = tf.util.sizeFromShape(x.shape.slice(1));
    const out = makeHostOutput(backend, [...indices.shape, ...x.shape.slice(1)], x.dtype);
    // Copied as int32 bits for either dtype (float32 NaN payloads survive; an int32 read as float32 might not).
    const src = hostBits(backend, x);
    const dst = hostBits(backend, out);
    if (inner === 1) {
      for (let i = 0; i < ids.length; i++) dst[i] = src[ids[i]!]!;
    } else if (src.buffer === dst.buffer) {
      // one memory (the wasm heap): each row a copyWithin on it, no view made a row
      const memory = new Int32Array(src.buffer);
      const [s0, d0] = [src.byteOffset / F32_BYTES, dst.byteOffset / F32_BYTES];
      for (let i = 0; i < ids.length; i++) {
        const from = s0 + ids[i]! * inner;
        memory.copyWithin(d0 + i * inner, from, from + inner);
      }
    } else {
      for (let i = 0; i < ids.length; i++) {
        const from = ids[i]! * inner;
        dst.set(src.subarray(from, from + inner), i * inner);
      }
    }
    return out;
  };
}

/** Raw element views for copies: float32 and int32 as 4-byte int32 bits, bool (1 byte on both backends) as bytes. */
function rawValues(backend: HostBackend, x: tf.TensorInfo): Int32Array | Uint8Array {
  return x.dtype === 'bool' ? hostValues(backend, x) as Uint8Array : hostBits(backend, x);
}

/**
 * The block `[begin, begin + size)` of a row-major array of shape `shape` as contiguous runs: `visit(at, to, run)`
 * for each, `at` its offset in the array and `to` in the dense block (shape `size`). Trailing dims the block takes
 * whole are merged with the last partial one, so each run is as long as it can be (the whole block when it is
 * contiguous).
 */
function blockRuns(shape: readonly number[], begin: readonly number[], size: readonly number[], visit: (at: number, to: number, run: number) => void): void {
  const total = tf.util.sizeFromShape(size as number[]);
  if (total === 0) return;
  const rank = shape.length;
  // Innermost run: the last dim that is not taken whole, times every whole dim after it.
  let k = rank - 1;
  let run = size[k]!;
  while (k > 0 && size[k] === shape[k]) run *= size[--k]!;
  const strides = tf.util.computeStrides(shape as number[]); // elements per step of dims 0..rank-2
  const stride = (d: number): number => (d === rank - 1 ? 1 : strides[d]!);
  const idx = new Array<number>(k).fill(0); // odometer over dims 0..k-1
  let at = 0;
  for (let d = 0; d <= k; d++) at += begin[d]! * stride(d);
  for (let to = 0; to < total; to += run) {
    visit(at, to, run);
    for (let d = k - 1; d >= 0; d--) {
      idx[d]! += 1;
      at += stride(d);
      if (idx[d]! < size[d]!) break;
      at -= size[d]! * stride(d);
      idx[d] = 0;
    }
  }
}

/** dst (dense, shape `size`) = the block `[begin, begin + size)` of src (shape `shape`). */
function copyBlock<T extends Int32Array | Uint8Array>(src: T, shape: readonly number[], begin: readonly number[], size: readonly number[], dst: T): void {
  blockRuns(shape, begin, size, (at, to, run) => dst.set(src.subarray(at, at + run), to));
}

/** The block `[begin, begin + block's shape)` of dst (shape `shape`) = block (dense, shape `size`). */
function placeBlock<T extends Int32Array | Uint8Array>(block: T, size: readonly number[], dst: T, shape: readonly number[], begin: readonly number[]): void {
  blockRuns(shape, begin, size, (at, from, run) => dst.set(block.subarray(from, from + run), at));
}

/** The dtypes the block copies handle (4-byte elements and bool). */
function copyable(x: tf.TensorInfo): boolean {
  return (x.dtype === 'float32' || x.dtype === 'int32' || x.dtype === 'bool') && x.shape.length > 0;
}

/**
 * Host Slice: the stock wasm kernel first copies the whole input out of the heap (`readSync`, whatever the size of
 * the slice); the stock cpu kernel copies a slice that is not one contiguous block
 * element by element through coordinate conversions. Here one block copy.
 *   x [d0, .., dn], begin, size -> size
 */
export function makeHostSlice(stock: KernelFunc): KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as HostBackend;
    const x = args.inputs['x']!;
    if (!copyable(x)) return stock(args);
    const { begin, size } = args.attrs as unknown as { begin: number | number[]; size: number | number[] };
    const [b, sz] = tf.slice_util.parseSliceParams(x, begin, size);
    const out = makeHostOutput(backend, sz.slice(), x.dtype);
    copyBlock(rawValues(backend, x), x.shape, b, sz, rawValues(backend, out)); // views after the allocation
    return out;
  };
}

/**
 * Host SplitV (tf.split; q, k and v from the packed projection on host backends): the stock kernels slice each
 * output through their own Slice function, not the registered kernel (cpu: 1.2 s of the tiny step; wasm: a copy of
 * the whole input out of the heap per output). Here each output is one block copy.
 *   x [.., d_axis, ..] -> one tensor per split size s, [.., s, ..]
 */
export function makeHostSplitV(stock: KernelFunc): KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as HostBackend;
    const x = args.inputs['x']!;
    if (!copyable(x)) return stock(args);
    const { numOrSizeSplits, axis } = args.attrs as unknown as { numOrSizeSplits: number | number[]; axis: number | number[] };
    const ax = tf.util.parseAxisParam(axis, x.shape)[0]!;
    const sizes = tf.backend_util.prepareSplitSize(x, numOrSizeSplits, ax);
    const outs = sizes.map((s) => makeHostOutput(backend, x.shape.map((d, i) => (i === ax ? s : d)), x.dtype));
    const src = rawValues(backend, x); // after the allocations above, which may grow the wasm heap
    const begin = new Array<number>(x.shape.length).fill(0);
    outs.forEach((o) => {
      copyBlock(src, x.shape, begin, o.shape, rawValues(backend, o));
      begin[ax]! += o.shape[ax]!;
    });
    return outs;
  };
}

/**
 * cpu PadV2 (the gradient of a slice: the [CLS] rows, one view of the interleaved batch): the stock kernel places
 * every element through a coordinate conversion. Here the output is filled with the constant and the input placed
 * as contiguous runs. (The wasm backend's pad is native code.)
 */
export function makeCpuPad(stock: KernelFunc): KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as HostBackend;
    const x = args.inputs['x']!;
    if ((x.dtype !== 'float32' && x.dtype !== 'int32') || x.shape.length === 0) return stock(args);
    const { paddings, constantValue } = args.attrs as unknown as { paddings: [number, number][]; constantValue: number };
    const outShape = x.shape.map((d, i) => paddings[i]![0] + d + paddings[i]![1]);
    const out = makeHostOutput(backend, outShape, x.dtype);
    (hostValues(backend, out) as Float32Array | Int32Array).fill(constantValue); // the output's memory is not zeroed (makeHostOutput)
    placeBlock(hostBits(backend, x), x.shape, hostBits(backend, out), outShape, paddings.map((p) => p[0]));
    return out;
  };
}

/**
 * Host Concat (the gradient of tf.split: q, k and v's gradients into the packed projection's): each input placed
 * into the output as contiguous runs. The stock cpu kernel copies element by element.
 *   inputs [.., d_i, ..] along `axis` -> [.., sum of d_i, ..]
 */
export function makeHostConcat(stock: KernelFunc): KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as HostBackend;
    const inputs = args.inputs as unknown as tf.TensorInfo[];
    const first = inputs[0];
    if (first === undefined || !inputs.every((t) => copyable(t) && t.dtype === first.dtype && t.shape.length === first.shape.length)) return stock(args);
    const ax = tf.util.parseAxisParam((args.attrs as unknown as { axis: number }).axis, first.shape)[0]!;
    const outShape = tf.backend_util.computeOutShape(inputs.map((t) => t.shape), ax);
    const out = makeHostOutput(backend, outShape, first.dtype);
    const dst = rawValues(backend, out); // after the allocation, which may grow the wasm heap
    const begin = new Array<number>(outShape.length).fill(0);
    for (const t of inputs) {
      placeBlock(rawValues(backend, t), t.shape, dst, outShape, begin);
      begin[ax]! += t.shape[ax]!;
    }
    return out;
  };
}

/**
 * Host Pack (tf.stack: the attention maps micseLoss stacks): the stock kernels expand each input and concatenate
 * them element by element. Here the inputs, each seen with a 1 inserted at `axis` (no copy), go through `concat`
 * (the host Concat above): contiguous runs.
 *   n inputs [d0, .., dk] -> [d0, .., n at axis, .., dk]
 */
export function makeHostPack(stock: KernelFunc, concat: KernelFunc): KernelFunc {
  return (args) => {
    const inputs = args.inputs as unknown as tf.TensorInfo[];
    const first = inputs[0];
    if (first === undefined || !inputs.every((t) => t.dtype === first.dtype && tf.util.arraysEqual(t.shape, first.shape))) return stock(args);
    let axis = (args.attrs as unknown as { axis: number }).axis;
    if (axis < 0) axis += first.shape.length + 1;
    const expanded = inputs.map((t) => ({ dataId: t.dataId, dtype: t.dtype, shape: [...t.shape.slice(0, axis), 1, ...t.shape.slice(axis)] }));
    return concat({ inputs: expanded as unknown as tf.NamedTensorInfoMap, backend: args.backend, attrs: { axis } });
  };
}

/** Whether permuting `shape`'s axes by `perm` leaves the elements in order: the axes longer than 1 keep their order. */
function keepsOrder(shape: readonly number[], perm: readonly number[]): boolean {
  const kept = perm.filter((a) => shape[a] !== 1);
  return kept.every((a, i) => i === 0 || kept[i - 1]! < a);
}

/**
 * out = x with its axes permuted (out's axis i is x's axis perm[i]), both row-major, for a permutation that moves
 * elements (not keepsOrder: the caller shares the buffer then). Size-1 axes are dropped and x's axes that stay
 * neighbours in the same order are merged first, so the attention head transposes ([B, T, nh, dh] -> [B, nh, T, dh])
 * copy runs of dh elements; a 2-D transpose walks x by columns.
 */
function transposeValues<T extends Int32Array | Uint8Array>(x: T, shape: readonly number[], perm: readonly number[], out: T): void {
  const kept = perm.filter((a) => shape[a] !== 1);
  const groups: number[][] = []; // runs of consecutive input axes that stay consecutive in kept (two or more here)
  for (const a of kept) {
    const last = groups[groups.length - 1];
    if (last !== undefined && last[last.length - 1]! + 1 === a) last.push(a);
    else groups.push([a]);
  }
  const inOrder = groups.slice().sort((g, h) => g[0]! - h[0]!); // merged axes in x's order
  const dims = inOrder.map((g) => g.reduce((p, a) => p * shape[a]!, 1));
  const inStride = new Array<number>(dims.length);
  for (let d = dims.length - 1, acc = 1; d >= 0; d--) { inStride[d] = acc; acc *= dims[d]!; }
  const mergedPerm = groups.map((g) => inOrder.indexOf(g)); // out axis i is merged x axis mergedPerm[i]
  const r = mergedPerm.length;
  const outDims = mergedPerm.map((a) => dims[a]!);
  const strides = mergedPerm.map((a) => inStride[a]!); // x elements per step of each out axis
  const n = outDims[r - 1]!;
  const s = strides[r - 1]!;
  const idx = new Array<number>(r - 1).fill(0);
  let from = 0;
  for (let to = 0; to < out.length; to += n) {
    if (s === 1) out.set(x.subarray(from, from + n), to);
    else for (let j = 0, f = from; j < n; j++, f += s) out[to + j] = x[f]!;
    for (let d = r - 2; d >= 0; d--) {
      idx[d]! += 1;
      from += strides[d]!;
      if (idx[d]! < outDims[d]!) break;
      from -= outDims[d]! * strides[d]!;
      idx[d] = 0;
    }
  }
}

/**
 * cpu Transpose: the stock kernel converts every output index to coordinates and back (about half of the tiny cpu
 * step once the products were native). Here `transposeValues`, or a shared view (orderKeptView). (The wasm backend's
 * Transpose is native code.)
 */
export function makeCpuTranspose(stock: KernelFunc): KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as CpuBackend;
    const x = args.inputs['x']!;
    if (!copyable(x)) return stock(args);
    const { perm } = args.attrs as unknown as { perm: number[] };
    const shared = orderKeptView(backend, x, perm);
    if (shared !== null) return shared;
    const out = makeHostOutput(backend, perm.map((a) => x.shape[a]!), x.dtype);
    transposeValues(rawValues(backend, x), x.shape, perm, rawValues(backend, out));
    return out;
  };
}

/**
 * wasm Transpose: an order-keeping permutation shares the input's buffer (orderKeptView), as on cpu; every other one
 * is the stock kernel's.
 */
export function makeWasmTranspose(stock: KernelFunc): KernelFunc {
  return (args) => {
    const x = args.inputs['x']!;
    return orderKeptView(args.backend as unknown as WasmBackend, x, (args.attrs as unknown as { perm: number[] }).perm) ?? stock(args);
  };
}

/**
 * x transposed by `perm` as a view of x's buffer where the permutation keeps the elements in order (TF.js's gather
 * gradient transposes the embedding gradient by [0, 1], a 94 MB copy at BERT-base), as a reshape shares it (tensors
 * are immutable); else null.
 */
function orderKeptView(backend: HostBackend, x: tf.TensorInfo, perm: readonly number[]): tf.TensorInfo | null {
  if (!keepsOrder(x.shape, perm)) return null;
  backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: perm.map((a) => x.shape[a]!), dtype: x.dtype };
}

/**
 * wasm UnsortedSegmentSum (the embedding gradient): the scatter-add of `scatterAdd`, accumulated directly in the
 * output's heap buffer (no [numSegments, inner] host array to fill and copy in: 31 MB for a 30,522 x 256 table); with
 * the SIMD loops and rows of whole vectors, their segmentSum (the zero fill and the adds cut among the heap's threads
 * by segment), else a JavaScript loop. Either way each output element is its rows' float32 sum in order.
 */
export function makeWasmSegmentSum(stock: KernelFunc): KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const x = args.inputs['x']!;
    const segmentIds = args.inputs['segmentIds']!;
    const numSegments = (args.attrs as { numSegments: number }).numSegments;
    if (x.dtype !== 'float32') return stock(args);
    const count = tf.util.sizeFromShape(segmentIds.shape);
    const inner = count === 0 ? 0 : tf.util.sizeFromShape(x.shape) / count;
    const out = backend.makeOutput([numSegments, ...x.shape.slice(segmentIds.shape.length)], 'float32');
    const simd = heapSimdHost(heapMemory(backend));
    if (simd !== null && segmentIds.dtype === 'int32' && inner > 0 && inner % SIMD_LANES === 0) {
      simdSegmentSum(simd, heapView(backend, x), hostValues(backend, segmentIds) as Int32Array, heapView(backend, out), inner);
      return out;
    }
    const ids = Int32Array.from(backend.readSync(segmentIds.dataId) as Int32Array);
    const heap = heapF32(backend);
    const src = heapOffset(backend, x) / F32_BYTES;
    const dst = heapOffset(backend, out) / F32_BYTES;
    heap.fill(0, dst, dst + numSegments * inner);
    for (let i = 0; i < ids.length; i++) {
      const seg = ids[i]!;
      if (seg < 0 || seg >= numSegments) continue;
      const from = src + i * inner;
      const to = dst + seg * inner;
      for (let j = 0; j < inner; j++) heap[to + j]! += heap[from + j]!;
    }
    return out;
  };
}

// ---------------------------------------------------------------------------------------------------------------
// cpu element-wise kernels
//
// The stock cpu kernels of Add/Sub/Multiply/RealDiv map every output element back to each input through an
// index -> coordinates -> index conversion when shapes differ (the attention mask add, bias adds, LayerNorm's
// broadcast mean and variance), and Softmax is composed of five such ops. These loops walk the output in order and
// keep one running offset per input: the innermost (collapsed) dimension is a plain loop with stride 1 or 0; operands
// of one shape (residual adds, gradient sums) go through the WebAssembly SIMD loop on the staging memory instead.
// float32 only; other dtypes keep the stock kernels. Same float32 operations in the same order per element, so the
// results equal the stock kernels' (Softmax: exp(x - max) / sum, as the stock kernel).
// ---------------------------------------------------------------------------------------------------------------

/** The element-wise ops, as codes: one switch per row keeps each inner loop monomorphic. */
export const BINARY_OPS = { add: 0, sub: 1, mul: 2, div: 3 } as const;
type BinaryOp = (typeof BINARY_OPS)[keyof typeof BINARY_OPS];

/** out[o + j] = a[oa + j * ia] (op) b[ob + j * ib] for j < n; strides are 0 or 1. */
function binaryRow(op: BinaryOp, out: Float32Array, o: number, a: Float32Array, oa: number, ia: number, b: Float32Array, ob: number, ib: number, n: number): void {
  switch (op) {
    case 0: for (let j = 0; j < n; j++) out[o + j] = a[oa + j * ia]! + b[ob + j * ib]!; break;
    case 1: for (let j = 0; j < n; j++) out[o + j] = a[oa + j * ia]! - b[ob + j * ib]!; break;
    case 2: for (let j = 0; j < n; j++) out[o + j] = a[oa + j * ia]! * b[ob + j * ib]!; break;
    case 3: for (let j = 0; j < n; j++) out[o + j] = a[oa + j * ia]! / b[ob + j * ib]!; break;
  }
}

/**
 * out = f(a, b) with NumPy broadcasting. Shapes are right-aligned and padded with 1s, then adjacent dims where both
 * inputs broadcast the same way are merged, so a bias add is [rows, cols] with b's row stride 0.
 */
export function broadcastBinary(a: Float32Array, aShape: readonly number[], b: Float32Array, bShape: readonly number[], op: BinaryOp): { values: Float32Array; shape: number[] } {
  const rank = Math.max(aShape.length, bShape.length);
  const pa = [...Array<number>(rank - aShape.length).fill(1), ...aShape];
  const pb = [...Array<number>(rank - bShape.length).fill(1), ...bShape];
  const shape = pa.map((d, i) => {
    const e = pb[i]!;
    if (d !== e && d !== 1 && e !== 1) throw new Error(`broadcastBinary: shapes [${aShape}] and [${bShape}] do not broadcast`);
    return d === 1 ? e : d;
  });
  // Merge adjacent dims with the same broadcast pattern (a broadcast?, b broadcast?).
  const dims: number[] = [];
  const aB: boolean[] = [];
  const bB: boolean[] = [];
  for (let i = 0; i < rank; i++) {
    if (shape[i] === 1) continue;
    const ab = pa[i] === 1;
    const bb = pb[i] === 1;
    const last = dims.length - 1;
    if (last >= 0 && aB[last] === ab && bB[last] === bb) dims[last]! *= shape[i]!;
    else {
      dims.push(shape[i]!);
      aB.push(ab);
      bB.push(bb);
    }
  }
  const size = tf.util.sizeFromShape(shape);
  const out = uninitialized(Float32Array, size);
  if (dims.length === 0) {
    if (size === 1) binaryRow(op, out, 0, a, 0, 0, b, 0, 0, 1);
    return { values: out, shape };
  }
  const n = dims.length;
  // Strides of a and b over the merged dims (0 where broadcast).
  const sa = new Array<number>(n);
  const sb = new Array<number>(n);
  let ma = 1;
  let mb = 1;
  for (let i = n - 1; i >= 0; i--) {
    sa[i] = aB[i] ? 0 : ma;
    sb[i] = bB[i] ? 0 : mb;
    if (!aB[i]) ma *= dims[i]!;
    if (!bB[i]) mb *= dims[i]!;
  }
  const inner = dims[n - 1]!;
  const ia = sa[n - 1]!;
  const ib = sb[n - 1]!;
  const idx = new Array<number>(n).fill(0);
  let oa = 0;
  let ob = 0;
  for (let o = 0; o < size; o += inner) {
    binaryRow(op, out, o, a, oa, ia, b, ob, ib, inner);
    // Advance the outer index (dims 0..n-2) like an odometer, updating the input offsets.
    for (let d = n - 2; d >= 0; d--) {
      idx[d]! += 1;
      oa += sa[d]!;
      ob += sb[d]!;
      if (idx[d]! < dims[d]!) break;
      oa -= sa[d]! * dims[d]!;
      ob -= sb[d]! * dims[d]!;
      idx[d] = 0;
    }
  }
  return { values: out, shape };
}

const BINARY_KERNEL_OPS: Record<string, BinaryOp> = {
  [tf.Add]: BINARY_OPS.add,
  [tf.Sub]: BINARY_OPS.sub,
  [tf.Multiply]: BINARY_OPS.mul,
  [tf.RealDiv]: BINARY_OPS.div,
};

/** The SIMD loop of each op (hostSimd.ts). */
const BINARY_SIMD: Record<BinaryOp, BinaryLoop> = ['add', 'sub', 'mul', 'div'];
/**
 * Same-shape operands at least this long go through the staged SIMD loop: the copies into and out of the staging
 * memory cost less than the JavaScript loop's conversions per element (a [4096, 768] add: ~6 ms in JavaScript).
 */
const SIMD_BINARY_MIN_ELEMENTS = 1 << 12;

/**
 * The CBLAS that computes a + b or a - b of `n` elements as a copy of a and `cblas_saxpy` with alpha 1 or -1 (its
 * threads, no staging copies; one float32 add or subtract per element, so the bits of the loops): where op is add or
 * sub, n reaches SIMD_BINARY_MIN_ELEMENTS and CBLAS runs the host products; else undefined.
 */
function axpyEngine(op: BinaryOp, n: number): Cblas | undefined {
  return (op === BINARY_OPS.add || op === BINARY_OPS.sub) && n >= SIMD_BINARY_MIN_ELEMENTS ? activeCblas() : undefined;
}

/** out = a + b or a - b (op) on `cblas` (axpyEngine). */
function axpyAddSub(cblas: Cblas, op: BinaryOp, a: Float32Array, b: Float32Array, out: Float32Array): void {
  out.set(a);
  cblas.axpy(op === BINARY_OPS.add ? 1 : -1, b, out);
}

/**
 * out = a (op) b for equal-length arrays: axpyAddSub where axpyEngine gives a CBLAS, else the staged SIMD loop where
 * it runs, the JavaScript loop for the rest.
 */
function sameShapeBinary(op: BinaryOp, a: Float32Array, b: Float32Array): Float32Array {
  const out = uninitialized(Float32Array, a.length);
  const cblas = axpyEngine(op, a.length);
  if (cblas !== undefined) {
    axpyAddSub(cblas, op, a, b, out);
    return out;
  }
  const simd = a.length >= SIMD_BINARY_MIN_ELEMENTS ? stagingSimdHost() : null;
  const done = simd === null ? 0 : simdBinary(simd, BINARY_SIMD[op], a, b, out);
  binaryRow(op, out, done, a, done, 1, b, done, 1, a.length - done);
  return out;
}

export function makeCpuBinary(kernelName: string, stock: KernelFunc): KernelFunc {
  const op = BINARY_KERNEL_OPS[kernelName]!;
  return (args) => {
    const a = args.inputs['a']!;
    const b = args.inputs['b']!;
    if (a.dtype !== 'float32' || b.dtype !== 'float32') return stock(args);
    const backend = args.backend as unknown as CpuBackend;
    const [av, bv] = [backend.data.get(a.dataId).values as Float32Array, backend.data.get(b.dataId).values as Float32Array];
    if (tf.util.arraysEqual(a.shape, b.shape)) return backend.makeTensorInfo(a.shape.slice(), 'float32', sameShapeBinary(op, av, bv));
    const r = broadcastBinary(av, a.shape, bv, b.shape, op);
    return backend.makeTensorInfo(r.shape, 'float32', r.values);
  };
}

/**
 * wasm Add and Sub of same-shape float32 operands, where axpyEngine gives a CBLAS (the stock kernel runs on one wasm
 * thread): the SIMD loop in place on the heap where its threads run (one pass, shared by them), else axpyAddSub
 * there (a copy and cblas_saxpy); one float32 add or subtract an element either way. Every other case keeps the
 * stock kernel.
 */
export function makeWasmAddSub(kernelName: string, stock: KernelFunc): KernelFunc {
  const op = BINARY_KERNEL_OPS[kernelName]!;
  return (args) => {
    const a = args.inputs['a']!;
    const b = args.inputs['b']!;
    const n = tf.util.sizeFromShape(a.shape);
    const cblas = axpyEngine(op, n);
    if (cblas === undefined || a.dtype !== 'float32' || b.dtype !== 'float32' || !tf.util.arraysEqual(a.shape, b.shape)) return stock(args);
    const backend = args.backend as unknown as WasmBackend;
    const out = makeHostOutput(backend, a.shape.slice(), 'float32');
    const [av, bv, ov] = [hostF32(backend, a), hostF32(backend, b), hostF32(backend, out)]; // views after the allocation, which may grow the heap
    const simd = heapSimdHost(heapMemory(backend));
    if (simd !== null && simd.threads > 1) {
      const done = simdBinary(simd, BINARY_SIMD[op], av, bv, ov);
      binaryRow(op, ov, done, av, done, 1, bv, done, 1, n - done);
    } else {
      axpyAddSub(cblas, op, av, bv, ov);
    }
    return out;
  };
}

/** Softmax over the last axis: exp(x - rowMax) / rowSum, row by row. `logits [.., C] -> [.., C]` */
export function softmaxRows(x: Float32Array, C: number): Float32Array {
  const out = uninitialized(Float32Array, x.length);
  for (let base = 0; base < x.length; base += C) {
    let max = -Infinity;
    for (let j = 0; j < C; j++) if (x[base + j]! > max) max = x[base + j]!;
    let sum = 0;
    for (let j = 0; j < C; j++) {
      const e = Math.fround(Math.exp(x[base + j]! - max));
      out[base + j] = e;
      sum += e;
    }
    const s = Math.fround(sum);
    for (let j = 0; j < C; j++) out[base + j]! /= s;
  }
  return out;
}

export function makeCpuSoftmax(stock: KernelFunc): KernelFunc {
  return (args) => {
    const logits = args.inputs['logits']!;
    const { dim } = args.attrs as unknown as { dim: number };
    const rank = logits.shape.length;
    if (logits.dtype !== 'float32' || (dim !== -1 && dim !== rank - 1) || rank === 0) return stock(args);
    const backend = args.backend as unknown as CpuBackend;
    const out = softmaxRows(backend.data.get(logits.dataId).values as Float32Array, logits.shape[rank - 1]!);
    return backend.makeTensorInfo(logits.shape.slice(), 'float32', out);
  };
}
