/**
 * Kernels registered over the stock ones where a backend lacks a kernel training needs, or has one too slow to
 * use: the host backends' (cpu, wasm) in host.ts, webgpu's one in webgpu.ts, and here the table of which replaces
 * what on which backend; webgpu's own kernels live beside the ops they serve (kernels/attention, kernels/dense,
 * kernels/layerNorm, ...). `registerKernels` (src/kernels/index.ts) calls `registerFastKernels`.
 *
 * UnsortedSegmentSum is the gradient of `tf.gather` (the embedding lookup). The stock cpu kernel runs one full
 * tensor pass per segment, i.e. per vocabulary row: about 5 minutes a call for BERT's 30,522 words. A direct
 * scatter-add is one pass over the input. On webgpu it is replaced too (the one webgpu kernel here, as it serves
 * no op of ours but autodiff's): the stock kernel transposes the input and the whole [numSegments, inner] output,
 * and adds repeated ids in an order that varies from run to run; ours adds them in row order, as the host loops do.
 */
import { tf } from '../../model/tf.js';
import {
  makeCpuBinary, makeCpuPad, makeWasmAddSub, makeCpuSoftmax, makeCpuTranspose, makeWasmTranspose, makeHostBatchMatMul, makeHostConcat, makeHostGather, makeHostPack,
  makeHostSlice, makeHostSplitV, makeHostSum, makeHostUnpack, makeWasmIdentity, makeWasmSegmentSum, unsortedSegmentSumCpu,
  type KernelFunc,
} from './host.js';
import { makeWebgpuSegmentSum } from './webgpu.js';

export {
  hostMatMulEngine, loadNativeGemm, NATIVE_GEMM_ENV, parseNativeGemmChoice, useNativeGemm, type NativeGemmChoice,
} from './host.js';

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
  { kernelName: tf.UnsortedSegmentSum, backends: ['webgpu'], make: (bn) => makeWebgpuSegmentSum(stockKernel(tf.UnsortedSegmentSum, bn).kernelFunc) },
  { kernelName: tf.Identity, backends: ['wasm'], make: (bn) => makeWasmIdentity(stockKernel(tf.Identity, bn).kernelFunc) },
  { kernelName: tf.GatherV2, backends: ['wasm', 'cpu'], make: (bn) => makeHostGather(stockKernel(tf.GatherV2, bn).kernelFunc) },
  { kernelName: tf.Slice, backends: ['wasm', 'cpu'], make: (bn) => makeHostSlice(stockKernel(tf.Slice, bn).kernelFunc) },
  { kernelName: tf.SplitV, backends: ['wasm', 'cpu'], make: (bn) => makeHostSplitV(stockKernel(tf.SplitV, bn).kernelFunc) },
  { kernelName: tf.Concat, backends: ['wasm', 'cpu'], make: (bn) => makeHostConcat(stockKernel(tf.Concat, bn).kernelFunc) },
  {
    kernelName: tf.BatchMatMul, backends: ['wasm', 'cpu'],
    make: (bn) => makeHostBatchMatMul(bn, stockKernel(tf.BatchMatMul, bn).kernelFunc, stockKernel(tf.Transpose, bn).kernelFunc),
  },
  {
    kernelName: tf.Pack, backends: ['wasm', 'cpu'],
    make: (bn) => makeHostPack(stockKernel(tf.Pack, bn).kernelFunc, makeHostConcat(stockKernel(tf.Concat, bn).kernelFunc)),
  },
  { kernelName: tf.Unpack, backends: ['wasm', 'cpu'], make: (bn) => makeHostUnpack(stockKernel(tf.Unpack, bn).kernelFunc) },
  { kernelName: tf.Sum, backends: ['wasm', 'cpu'], make: (bn) => makeHostSum(stockKernel(tf.Sum, bn).kernelFunc) },
  ...[tf.Add, tf.Sub, tf.Multiply, tf.RealDiv].map((k): Replacement => ({
    kernelName: k, backends: ['cpu'], make: (bn) => makeCpuBinary(k, stockKernel(k, bn).kernelFunc),
  })),
  ...[tf.Add, tf.Sub].map((k): Replacement => ({
    kernelName: k, backends: ['wasm'], make: (bn) => makeWasmAddSub(k, stockKernel(k, bn).kernelFunc),
  })),
  { kernelName: tf.Softmax, backends: ['cpu'], make: (bn) => makeCpuSoftmax(stockKernel(tf.Softmax, bn).kernelFunc) },
  { kernelName: tf.Transpose, backends: ['cpu'], make: (bn) => makeCpuTranspose(stockKernel(tf.Transpose, bn).kernelFunc) },
  { kernelName: tf.Transpose, backends: ['wasm'], make: (bn) => makeWasmTranspose(stockKernel(tf.Transpose, bn).kernelFunc) },
  { kernelName: tf.PadV2, backends: ['cpu'], make: (bn) => makeCpuPad(stockKernel(tf.PadV2, bn).kernelFunc) },
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
