/**
 * The kernels layer: what makes a step fast, kept apart from the method (src/model, src/losses, src/train call
 * the ops exported here and never name a backend).
 *
 * One folder per op (dropout, layerNorm, gelu, attention, dense, infoNCE, ami, adamw; gemm, the dense layers'
 * products on our own WebGPU GEMM): the op's public function, its composed fallback (stock TF.js ops, which every
 * backend runs) and its kernels per backend, with their gradients. `stock/` replaces stock cpu/wasm kernels that
 * training needs faster; `platform/` is the machinery they share (host backend views and the run-time wasm
 * assembler, WebGPU program shapes and raw dispatches, the matmul tile, the WGSL GEMM generator, onnxruntime-node's
 * native GEMM and the ONNX protobuf writer it and the exports share).
 *
 * Nothing registers on import: `registerKernels` is called where a backend is selected (src/model/backend.ts), and
 * an op runs its kernel only where the active backend has it registered (registry.ts `kernelOn`).
 */
import { registerAdamWKernels } from './adamw/index.js';
import { registerAmiKernels } from './ami/index.js';
import { registerAttentionKernels } from './attention/index.js';
import { registerDenseKernels } from './dense/index.js';
import { registerDropoutKernels } from './dropout/index.js';
import { registerGeluKernels } from './gelu/index.js';
import { registerGemmKernels } from './gemm/index.js';
import { registerInfoNCEKernels } from './infoNCE/index.js';
import { registerLayerNormKernels } from './layerNorm/index.js';
import { internalsProblem } from './platform/internals.js';
import { registerFastKernels } from './stock/index.js';
import { tf } from '../model/tf.js';

const OPS: readonly ((backendName: string) => void)[] = [
  registerDropoutKernels, registerLayerNormKernels, registerGeluKernels, registerAttentionKernels, registerDenseKernels,
  registerInfoNCEKernels, registerAmiKernels, registerAdamWKernels, registerGemmKernels,
];

export interface KernelRegistration {
  /** The stock kernels replaced (stock/). */
  replaced: string[];
  /**
   * Why nothing was registered and the backend runs TF.js's stock kernels (its package is not the version whose
   * internals the kernels use, or lacks a field: platform/internals.ts), or null.
   */
  stockOnly: string | null;
}

/**
 * Registers this project's kernels for the TF.js backend `backendName` (each op's own, and the stock replacements
 * of stock/), unless the backend's private internals are not the ones the kernels were written against; a second
 * call changes nothing.
 */
export function registerKernels(backendName: string): KernelRegistration {
  const backend = tf.findBackend(backendName);
  const stockOnly = backend === null ? null : internalsProblem(backendName, backend);
  if (stockOnly !== null) return { replaced: [], stockOnly };
  for (const register of OPS) register(backendName);
  return { replaced: registerFastKernels(backendName), stockOnly: null };
}
