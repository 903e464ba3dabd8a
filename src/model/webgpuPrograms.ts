/**
 * The two shapes of WebGPU program this project's kernels are made of (random.ts, fused.ts, adamwKernels.ts),
 * written once. Both run through WebGPUBackend.runWebGPUProgram, which compiles `getUserCode()` after a header
 * it generates: the uniforms struct (with `size` when `size` is set), `result`, one read-only array per input
 * named as in `variableNames`, the builtins as module-scope `localId`/`localIndex`/`workgroupId`/`numWorkgroups`,
 * and a `fn main(index)` called with the flat global index.
 */
import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { tf } from './tf.js';

export interface ElementwiseSpec {
  shaderKey: string;
  /** Output shape; one invocation per output element. */
  shape: number[];
  variableNames: string[];
  /** Invocations per workgroup. */
  workgroup: number;
  /** Uniform fields after the generated ones, e.g. `'k1 : u32, rate : f32,'`. */
  uniforms?: string;
  /** WGSL placed before `main` (helper functions). */
  preamble?: string;
  /** The body run for each `index < uniforms.size`. */
  body: string;
}

/**
 * One invocation per output element, flat: `fn main(index) { if (index < uniforms.size) { body } }`. The dispatch
 * is the element count over the workgroup; the backend reshapes it past the per-dimension limit and `index` stays
 * the flat index.
 */
export function elementwiseProgram(s: ElementwiseSpec): WebGPUProgram {
  const program: WebGPUProgram = {
    variableNames: s.variableNames,
    outputShape: s.shape,
    shaderKey: s.shaderKey,
    dispatchLayout: { x: s.shape.map((_, i) => i) },
    dispatch: [Math.ceil(tf.util.sizeFromShape(s.shape) / s.workgroup), 1, 1],
    workgroupSize: [s.workgroup, 1, 1],
    size: true,
    getUserCode: () => `${s.preamble ?? ''}
  fn main(index : i32) {
    if (index < uniforms.size) {
      ${s.body}
    }
  }`,
  };
  if (s.uniforms !== undefined) program.uniforms = s.uniforms;
  return program;
}

/**
 * WGSL of `fn name(v : f32) -> f32`: the tree sum of `v` over a 1-D workgroup of `size` invocations (a power of
 * two), returned to every invocation. It has barriers, so every invocation must call it (uniform control flow); it
 * ends with one, so it may be called again.
 */
export function workgroupSumWgsl(name: string, size: number): string {
  if (!Number.isInteger(Math.log2(size))) throw new Error(`workgroupSumWgsl: size ${size} is not a power of two`);
  return `
  var<workgroup> ${name}Partials : array<f32, ${size}>;
  fn ${name}(v : f32) -> f32 {
    ${name}Partials[localIndex] = v;
    workgroupBarrier();
    for (var half = ${size / 2}u; half > 0u; half = half / 2u) {
      if (localIndex < half) { ${name}Partials[localIndex] = ${name}Partials[localIndex] + ${name}Partials[localIndex + half]; }
      workgroupBarrier();
    }
    let total = ${name}Partials[0];
    workgroupBarrier();
    return total;
  }`;
}
