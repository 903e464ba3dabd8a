/**
 * Kernels registered over the stock ones where a backend lacks a kernel training needs, or has one too slow to
 * use. Only `backend.ts` calls `registerFastKernels`.
 *
 * UnsortedSegmentSum is the gradient of `tf.gather` (the embedding lookup). The stock cpu kernel runs one full
 * tensor pass per segment, i.e. per vocabulary row: about 5 minutes a call for BERT's 30,522 words. A direct
 * scatter-add is one pass over the input.
 */
import { F32_BYTES, heapF32, heapOffset, heapView, hostOutput, type CpuBackend, type WasmBackend } from './hostBackend.js';
import { NativeGemm, type Shape3 } from './nativeGemm.js';
import { tf } from './tf.js';

type KernelFunc = tf.KernelConfig['kernelFunc'];

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

const unsortedSegmentSumCpu: KernelFunc = ({ inputs, backend, attrs }) => {
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
// wasm BatchMatMul
//
// First choice: onnxruntime-node's native SGEMM (src/model/nativeGemm.ts: MLAS, AVX2/AVX-512, intra-op threads,
// 100-200 GFLOP/s a core here), reading and writing the wasm heap in place; `useNativeGemm` switches it on (the
// wasm branch of backend.ts does, unless MICSE_NATIVE_GEMM=0) and falls back when onnxruntime-node cannot load.
//
// Otherwise XNNPACK: the stock wasm kernel uses it (about 20-40 GFLOP/s with SIMD, one thread) only for an
// unbatched product without transpose flags, i.e. `[1, M, K] @ [1, K, N]`; everything else (every backward
// product, the batched attention products) runs a scalar blocked loop at 2.5-3.6 GFLOP/s. This wrapper then brings
// every float32 product to that one fast form:
//   - a transpose flag is materialised first (the wasm Transpose kernel, one pass over the operand);
//   - `[batch, M, K] @ [K, N]` (b unbatched) becomes one `[1, batch * M, K] @ [1, K, N]` product;
//   - `[batch, M, K] @ [batch, K, N]` runs one XNNPACK product per batch entry on views of the operands: the
//     per-entry tensors are registered with the wasm module at offsets inside the batched buffers (no copy) and
//     released right after, which also frees the XNNPACK operator cached on them.
// Products with a broadcast batch (batchA = 1 < batchB) keep the stock kernel on this path.
// ---------------------------------------------------------------------------------------------------------------

/** Environment switch: `MICSE_NATIVE_GEMM=0` keeps wasm products on XNNPACK (for comparisons). */
export const NATIVE_GEMM_ENV = 'MICSE_NATIVE_GEMM';

let nativeGemm: NativeGemm | undefined;
/** The loaded instance, kept across switches (its ONNX sessions are built once per transpose-flag pair). */
let loadedGemm: NativeGemm | undefined;
let nativeGemmWhy = 'not requested';

/**
 * Routes wasm float32 products to onnxruntime-node's native SGEMM (`on`) or to XNNPACK. Returns whether the native
 * path is active: false when `on` is false or onnxruntime-node failed to load (`wasmMatMulEngine` says why).
 */
export function useNativeGemm(on: boolean): boolean {
  if (!on) {
    nativeGemm = undefined;
    nativeGemmWhy = 'switched off';
    return false;
  }
  try {
    nativeGemm = loadedGemm ??= NativeGemm.load();
  } catch (err) {
    nativeGemm = undefined;
    nativeGemmWhy = `onnxruntime-node did not load: ${(err instanceof Error ? err.message : String(err)).split('\n')[0]}`;
  }
  return nativeGemm !== undefined;
}

/** What runs the wasm backend's dense products, for logs. */
export function wasmMatMulEngine(): string {
  return nativeGemm !== undefined
    ? `onnxruntime-node MLAS (native SGEMM, ${nativeGemm.threads} threads)`
    : `XNNPACK (wasm SIMD, one thread; native GEMM ${nativeGemmWhy})`;
}

interface MatMulAttrs {
  transposeA: boolean;
  transposeB: boolean;
}

/** Bytes of an int32 shape, the form the wasm module's `array` arguments take. */
function shapeBytes(shape: number[]): Uint8Array {
  return new Uint8Array(new Int32Array(shape).buffer);
}

/** The stock kernels a replacement falls back on, captured once per backend before the first replacement. */
const stockKernels = new Map<string, tf.KernelConfig>();

function stockKernel(kernelName: string, backendName: string): tf.KernelConfig {
  const key = `${kernelName}/${backendName}`;
  let k = stockKernels.get(key);
  if (k === undefined) {
    k = tf.getKernel(kernelName, backendName);
    if (k === undefined) throw new Error(`registerFastKernels: backend '${backendName}' has no ${kernelName} kernel to wrap`);
    stockKernels.set(key, k);
  }
  return k;
}

function makeWasmBatchMatMul(stock: KernelFunc, transpose: KernelFunc): KernelFunc {
  let raw: ((...args: unknown[]) => void) | undefined;
  return (args) => {
    const { inputs, attrs } = args;
    const backend = args.backend as unknown as WasmBackend;
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
      const out = backend.makeOutput(outShape, 'float32');
      // views taken after the allocation above, which may grow the heap
      nativeGemm.matMul(heapView(backend, a), aShape, transposeA, heapView(backend, b), bShape, transposeB, heapView(backend, out));
      return out;
    }
    if (batchA !== batchB && batchB !== 1) return stock(args);

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

/**
 * wasm Unpack (tf.unstack; the gradient of tf.stack, e.g. of the attention maps micseLoss stacks): the stock kernel
 * slices each output with a strided copy and takes ~100 ms for a [64, 2, 2, 32, 32] map. Here each output is
 * `outer` contiguous runs of `inner` floats copied with TypedArray.set.
 *   value [d0, .., d_axis, .., dn] -> d_axis tensors [d0, .., dn] without d_axis
 */
function makeWasmUnpack(stock: KernelFunc): KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
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
    for (let j = 0; j < count; j++) outs.push(backend.makeOutput(outShape, value.dtype));
    const heap = heapF32(backend); // after the allocations above, which may grow the heap
    const src = heapOffset(backend, value) / F32_BYTES;
    outs.forEach((o, j) => {
      const dst = heapOffset(backend, o) / F32_BYTES;
      for (let r = 0; r < outer; r++) {
        const from = src + (r * count + j) * inner;
        heap.copyWithin(dst + r * inner, from, from + inner);
      }
    });
    return outs;
  };
}

/** Below this many elements a leading-axis Sum stays a JavaScript loop (a native call costs ~10 us). */
const NATIVE_SUM_MIN_ELEMENTS = 1 << 14;

/**
 * wasm Sum over leading axes (bias and LayerNorm-weight gradients, broadcast-add gradients):
 * `x [R, C] -> [C]` with `R` the product of the reduced leading axes. The stock kernel transposes the reduced axes
 * to the end first (a strided pass over the whole tensor); here it is a `[1, R] @ [R, C]` product with a row of
 * ones on the native GEMM when that is active, else rows are accumulated in order, contiguous in C.
 * Other reductions keep the stock kernel.
 */
function makeWasmSum(stock: KernelFunc): KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const x = args.inputs['x']!;
    const { axis, keepDims } = args.attrs as unknown as { axis: number | number[]; keepDims: boolean };
    const rank = x.shape.length;
    const axes = [...new Set((Array.isArray(axis) ? axis : [axis]).map((a) => (a < 0 ? a + rank : a)))].sort((p, q) => p - q);
    const leading = axes.length > 0 && axes.length < rank && axes.every((a, i) => a === i);
    if (x.dtype !== 'float32' || !leading) return stock(args);
    const R = tf.util.sizeFromShape(x.shape.slice(0, axes.length));
    const C = tf.util.sizeFromShape(x.shape.slice(axes.length));
    const outShape = keepDims ? x.shape.map((d, i) => (i < axes.length ? 1 : d)) : x.shape.slice(axes.length);
    const out = backend.makeOutput(outShape, 'float32');
    if (R === 0) {
      heapView(backend, out).fill(0); // an empty sum (the loop below would start from a row that does not exist)
      return out;
    }
    if (nativeGemm !== undefined && R * C >= NATIVE_SUM_MIN_ELEMENTS) {
      // [1, R] ones @ [R, C] -> [1, C] on the native GEMM's threads.
      const ones = backend.makeOutput([1, R], 'float32');
      heapView(backend, ones).fill(1);
      nativeGemm.matMul(heapView(backend, ones), [1, 1, R], false, heapView(backend, x), [1, R, C], false, heapView(backend, out));
      backend.disposeData(ones.dataId);
      return out;
    }
    const heap = heapF32(backend);
    const src = heapOffset(backend, x) / F32_BYTES;
    const dst = heapOffset(backend, out) / F32_BYTES;
    const acc = heap.subarray(dst, dst + C);
    acc.set(heap.subarray(src, src + C));
    for (let r = 1; r < R; r++) {
      const row = src + r * C;
      for (let c = 0; c < C; c++) acc[c]! += heap[row + c]!;
    }
    return out;
  };
}

/**
 * wasm Identity: the stock kernel copies the tensor (~460 calls a training step, mostly gradients passed through);
 * tensors are immutable, so the output shares the input's buffer (reference-counted, as the stock Reshape does).
 */
function makeWasmIdentity(stock: KernelFunc): KernelFunc {
  return (args) => {
    const x = args.inputs['x']!;
    if (x.dtype === 'string') return stock(args);
    (args.backend as unknown as WasmBackend).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape.slice(), dtype: x.dtype };
  };
}

/**
 * wasm GatherV2 on axis 0 without batch dims (the embedding lookups, 1-D gathers): each output row is one
 * contiguous copy of `inner` elements inside the heap, where the stock kernel indexes element by element.
 *   x [rows, ...inner], indices [...I] -> [...I, ...inner]
 * An out-of-range index, another axis or batch dims go to the stock kernel (which also raises the error).
 */
function makeWasmGather(stock: KernelFunc): KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const x = args.inputs['x']!;
    const indices = args.inputs['indices']!;
    const { axis, batchDims } = args.attrs as unknown as { axis: number; batchDims: number };
    if ((x.dtype !== 'float32' && x.dtype !== 'int32') || indices.dtype !== 'int32' || batchDims !== 0 || x.shape.length === 0) return stock(args);
    if (tf.util.parseAxisParam(axis, x.shape)[0] !== 0) return stock(args);
    const rows = x.shape[0]!;
    const ids = backend.readSync(indices.dataId) as Int32Array;
    for (let i = 0; i < ids.length; i++) if (ids[i]! < 0 || ids[i]! >= rows) return stock(args);
    const inner = tf.util.sizeFromShape(x.shape.slice(1));
    const out = backend.makeOutput([...indices.shape, ...x.shape.slice(1)], x.dtype);
    // Copied as int32 bits for either dtype (float32 NaN payloads survive; an int32 read as float32 might not).
    const f32 = heapF32(backend);
    const heap = new Int32Array(f32.buffer, f32.byteOffset, f32.length);
    const src = heapOffset(backend, x) / F32_BYTES;
    const dst = heapOffset(backend, out) / F32_BYTES;
    if (inner === 1) {
      for (let i = 0; i < ids.length; i++) heap[dst + i] = heap[src + ids[i]!]!;
    } else {
      for (let i = 0; i < ids.length; i++) {
        const from = src + ids[i]! * inner;
        heap.copyWithin(dst + i * inner, from, from + inner);
      }
    }
    return out;
  };
}

/**
 * wasm Slice: the stock kernel first copies the whole input out of the heap (`readSync`: ~2 ms for a [128, 32, 256]
 * input, whatever the slice). Here the slice is copied inside the heap: trailing dims the slice takes whole are
 * merged with the last partial one, so each copy is one contiguous run (the whole slice when it is contiguous).
 *   x [d0, .., dn], begin, size -> size
 */
function makeWasmSlice(stock: KernelFunc): KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const x = args.inputs['x']!;
    if (x.dtype === 'string' || x.shape.length === 0) return stock(args);
    const { begin, size } = args.attrs as unknown as { begin: number | number[]; size: number | number[] };
    const [b, sz] = tf.slice_util.parseSliceParams(x, begin, size);
    const out = backend.makeOutput(sz.slice(), x.dtype);
    const total = tf.util.sizeFromShape(sz);
    if (total === 0) return out;
    const rank = x.shape.length;
    // Innermost run: the last dim that is not taken whole, times every whole dim after it.
    let k = rank - 1;
    let run = sz[k]!;
    while (k > 0 && sz[k] === x.shape[k]) run *= sz[--k]!;
    const strides = tf.util.computeStrides(x.shape); // elements per step of dims 0..rank-2
    // copyWithin moves raw elements: float32 and int32 through 4-byte views, bool (1 byte on wasm) through bytes.
    const f32 = heapF32(backend);
    const heap = x.dtype === 'bool' ? new Uint8Array(f32.buffer) : f32;
    const bytes = x.dtype === 'bool' ? 1 : F32_BYTES;
    const src = heapOffset(backend, x) / bytes;
    const dst = heapOffset(backend, out) / bytes;
    const stride = (d: number): number => (d === rank - 1 ? 1 : strides[d]!);
    const idx = new Array<number>(k).fill(0); // odometer over dims 0..k-1
    let from = src;
    for (let d = 0; d <= k; d++) from += b[d]! * stride(d);
    for (let to = dst; to < dst + total; to += run) {
      heap.copyWithin(to, from, from + run);
      for (let d = k - 1; d >= 0; d--) {
        idx[d]! += 1;
        from += stride(d);
        if (idx[d]! < sz[d]!) break;
        from -= sz[d]! * stride(d);
        idx[d] = 0;
      }
    }
    return out;
  };
}

/**
 * wasm UnsortedSegmentSum (the embedding gradient): the scatter-add of `scatterAdd`, accumulated directly in the
 * output's heap buffer (no [numSegments, inner] host array to fill and copy in: 31 MB for a 30,522 x 256 table).
 */
function makeWasmSegmentSum(stock: KernelFunc): KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const x = args.inputs['x']!;
    const segmentIds = args.inputs['segmentIds']!;
    const numSegments = (args.attrs as { numSegments: number }).numSegments;
    if (x.dtype !== 'float32') return stock(args);
    const ids = Int32Array.from(backend.readSync(segmentIds.dataId) as Int32Array);
    const inner = ids.length === 0 ? 0 : tf.util.sizeFromShape(x.shape) / ids.length;
    const out = backend.makeOutput([numSegments, ...x.shape.slice(segmentIds.shape.length)], 'float32');
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
// keep one running offset per input: the innermost (collapsed) dimension is a plain loop with stride 1 or 0.
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
  const out = new Float32Array(size);
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

function makeCpuBinary(kernelName: string, stock: KernelFunc): KernelFunc {
  const op = BINARY_KERNEL_OPS[kernelName]!;
  return (args) => {
    const a = args.inputs['a']!;
    const b = args.inputs['b']!;
    if (a.dtype !== 'float32' || b.dtype !== 'float32') return stock(args);
    const backend = args.backend as unknown as CpuBackend;
    const r = broadcastBinary(backend.data.get(a.dataId).values as Float32Array, a.shape, backend.data.get(b.dataId).values as Float32Array, b.shape, op);
    return backend.makeTensorInfo(r.shape, 'float32', r.values);
  };
}

/** Softmax over the last axis: exp(x - rowMax) / rowSum, row by row. `logits [.., C] -> [.., C]` */
export function softmaxRows(x: Float32Array, C: number): Float32Array {
  const out = new Float32Array(x.length);
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

function makeCpuSoftmax(stock: KernelFunc): KernelFunc {
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

// ---------------------------------------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------------------------------------

interface Replacement {
  kernelName: string;
  backends: readonly string[];
  make(backendName: string): KernelFunc;
}

const REPLACEMENTS: readonly Replacement[] = [
  { kernelName: tf.UnsortedSegmentSum, backends: ['cpu'], make: () => unsortedSegmentSumCpu },
  // The stock wasm backend has no UnsortedSegmentSum: the host scatter-add is its fallback for other dtypes.
  { kernelName: tf.UnsortedSegmentSum, backends: ['wasm'], make: () => makeWasmSegmentSum(unsortedSegmentSumCpu) },
  { kernelName: tf.Identity, backends: ['wasm'], make: (bn) => makeWasmIdentity(stockKernel(tf.Identity, bn).kernelFunc) },
  { kernelName: tf.GatherV2, backends: ['wasm'], make: (bn) => makeWasmGather(stockKernel(tf.GatherV2, bn).kernelFunc) },
  { kernelName: tf.Slice, backends: ['wasm'], make: (bn) => makeWasmSlice(stockKernel(tf.Slice, bn).kernelFunc) },
  {
    kernelName: tf.BatchMatMul, backends: ['wasm'],
    make: (bn) => makeWasmBatchMatMul(stockKernel(tf.BatchMatMul, bn).kernelFunc, stockKernel(tf.Transpose, bn).kernelFunc),
  },
  { kernelName: tf.Unpack, backends: ['wasm'], make: (bn) => makeWasmUnpack(stockKernel(tf.Unpack, bn).kernelFunc) },
  { kernelName: tf.Sum, backends: ['wasm'], make: (bn) => makeWasmSum(stockKernel(tf.Sum, bn).kernelFunc) },
  ...[tf.Add, tf.Sub, tf.Multiply, tf.RealDiv].map((k): Replacement => ({
    kernelName: k, backends: ['cpu'], make: (bn) => makeCpuBinary(k, stockKernel(k, bn).kernelFunc),
  })),
  { kernelName: tf.Softmax, backends: ['cpu'], make: (bn) => makeCpuSoftmax(stockKernel(tf.Softmax, bn).kernelFunc) },
];

/** Which kernels `registerFastKernels` replaces on `backendName`. */
export function fastKernelNames(backendName: string): string[] {
  return REPLACEMENTS.filter((r) => r.backends.includes(backendName)).map((r) => r.kernelName);
}

function swapKernel(kernelName: string, backendName: string, kernelFunc: KernelFunc): void {
  if (tf.getKernel(kernelName, backendName) !== undefined) tf.unregisterKernel(kernelName, backendName);
  tf.registerKernel({ kernelName, backendName, kernelFunc });
}

/**
 * Registers the replacement kernels for `backendName` (stock kernels are captured first, so calling it again is
 * harmless); returns the names of the kernels registered.
 */
export function registerFastKernels(backendName: string): string[] {
  const names: string[] = [];
  for (const r of REPLACEMENTS) {
    if (!r.backends.includes(backendName)) continue;
    const existing = tf.getKernel(r.kernelName, backendName);
    if (existing !== undefined) stockKernel(r.kernelName, backendName);
    swapKernel(r.kernelName, backendName, r.make(backendName));
    names.push(r.kernelName);
  }
  return names;
}

/**
 * Puts the stock kernels back on `backendName` (for tests that compare against them; a kernel the backend never
 * had is left unregistered). Returns the names restored or removed.
 */
export function unregisterFastKernels(backendName: string): string[] {
  const names: string[] = [];
  for (const r of REPLACEMENTS) {
    if (!r.backends.includes(backendName)) continue;
    const stock = stockKernels.get(`${r.kernelName}/${backendName}`);
    if (tf.getKernel(r.kernelName, backendName) !== undefined) tf.unregisterKernel(r.kernelName, backendName);
    if (stock !== undefined) tf.registerKernel(stock);
    names.push(r.kernelName);
  }
  return names;
}
