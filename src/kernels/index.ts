/**
 * The kernels layer: what makes a step fast, kept apart from the method (src/model, src/losses, src/train call
 * the ops exported here and never name a backend).
 *
 * One folder per op (dropout, layerNorm, gelu, attention, dense, infoNCE, ami, adamw, f16; gemm, the dense layers'
 * products on our own WebGPU GEMM): index.ts holds the op's public
 * function, which runs its kernels where the active backend has them and its composed fallback (stock TF.js ops, which
 * every backend runs) elsewhere, and its gradients; each backend's kernels live in their own file (host.ts for cpu and
 * wasm, webgpu.ts), with the one function that registers them. `stock/` replaces stock cpu/wasm kernels that
 * training needs faster; `replay/` records a webgpu training step's GPU commands and replays them (index.ts: the
 * per-step values the method notes for it; webgpu.ts: the recorder); `platform/` is the machinery they share (host backend views and the run-time wasm
 * assembler, WebGPU program shapes and raw dispatches, the matmul tile, onnxruntime-node's native GEMM and the ONNX
 * protobuf writer it and the exports share).
 *
 * Nothing registers on import: `registerKernels` is called where a backend is selected (src/model/backend.ts), and
 * an op runs its kernel only where the active backend has it registered (registry.ts `kernelOn`).
 */
import { registerAdamWHost } from './adamw/host.js';
import { registerAdamWWebgpu } from './adamw/webgpu.js';
import { registerAmiHost } from './ami/host.js';
import { registerAmiWebgpu } from './ami/webgpu.js';
import { registerAttentionHost } from './attention/host.js';
import { registerAttentionWebgpu } from './attention/webgpu.js';
import { registerDenseHost } from './dense/host.js';
import { registerDenseWebgpu } from './dense/webgpu.js';
import { registerGemmWebgpu } from './gemm/webgpu.js';
import { registerDropoutHost } from './dropout/host.js';
import { registerDropoutWebgpu } from './dropout/webgpu.js';
import { registerF16Host } from './f16/host.js';
import { registerF16Webgpu } from './f16/webgpu.js';
import { registerGeluHost } from './gelu/host.js';
import { registerGeluWebgpu } from './gelu/webgpu.js';
import { registerInfoNCEWebgpu } from './infoNCE/webgpu.js';
import { registerLayerNormHost } from './layerNorm/host.js';
import { registerLayerNormWebgpu } from './layerNorm/webgpu.js';
import { internalsProblem } from './platform/internals.js';
import { registerFastKernels } from './stock/index.js';
import { tf } from '../model/tf.js';

/**
 * Each op's register functions, one per backend file (host.ts: cpu and wasm; webgpu.ts): each registers its kernels
 * (and the op's gradients) when given its backend's name and does nothing for another.
 */
const OPS: readonly ((backendName: string) => void)[] = [
  registerDropoutHost, registerDropoutWebgpu,
  registerLayerNormHost, registerLayerNormWebgpu,
  registerGeluHost, registerGeluWebgpu,
  registerAttentionHost, registerAttentionWebgpu,
  registerDenseHost, registerDenseWebgpu,
  registerGemmWebgpu,
  registerInfoNCEWebgpu,
  registerAmiHost, registerAmiWebgpu,
  registerAdamWHost, registerAdamWWebgpu,
  registerF16Host, registerF16Webgpu,
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
