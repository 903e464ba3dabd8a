/**
 * The seeded uniform and dropout kernels of webgpu, and the WGSL of the generator and the dropout for kernels that draw
 * or drop inside a larger program (kernels/ami, kernels/attention, kernels/layerNorm). The generator, the ops and
 * dropout's gradient: index.ts.
 *
 * WebGPUBackend.runWebGPUProgram compiles `getUserCode()` after a header it generates (the uniforms struct with
 * `size`, the `result` buffer, `getXByOutputIndex`, `setOutputAtIndex`, `fn main(index)`).
 */
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { tf } from '../../model/tf.js';
import { registerOp } from '../registry.js';
import { elementwiseProgram } from '../platform/webgpuPrograms.js';
import {
  checkRate, checkSeed, DROPOUT_GRADIENTS, INV_2_24, SEEDED_DROPOUT, SEEDED_UNIFORM, seedKeys, type DropoutAttrs, type UniformAttrs,
} from './index.js';

/** Threads per workgroup of the WGSL kernels. */
const WORKGROUP = 256;

/**
 * WGSL of `mix32(v : u32) -> u32` and `uniformAt(i : i32) -> f32` (the value at flat index `i`), for kernels that draw
 * inside a larger program (kernels/ami); needs `k1 : u32, k2 : u32,` (seedKeys) in the program's uniforms.
 */
export const WGSL_RANDOM = `
  fn mix32(v : u32) -> u32 {
    var x = v;
    x = x ^ (x >> 16u);
    x = x * 0x7feb352du;
    x = x ^ (x >> 15u);
    x = x * 0x846ca68bu;
    return x ^ (x >> 16u);
  }
  fn uniformAt(i : i32) -> f32 {
    let h = mix32(mix32(u32(i) ^ uniforms.k1) ^ uniforms.k2);
    return f32(h >> 8u) * ${INV_2_24.toExponential()};
  }`;

/** The uniform fields `WGSL_DROPOUT` reads, for a program's `uniforms`; their values come from `dropoutUniforms`. */
export const WGSL_DROPOUT_UNIFORMS = 'k1 : u32, k2 : u32, rate : f32, scale : f32,';

/**
 * WGSL of `fn dropoutAt(i : i32, x : f32) -> f32`: `seededDropout`'s value at flat index `i` of an input valued `x`
 * (and `uniformAt(i)`), for kernels that fuse the dropout into a larger program (kernels/attention). Needs the fields of
 * `WGSL_DROPOUT_UNIFORMS` in the program's uniforms.
 */
export const WGSL_DROPOUT = `${WGSL_RANDOM}
  fn dropoutAt(i : i32, x : f32) -> f32 {
    return select(0.0, x * uniforms.scale, uniformAt(i) >= uniforms.rate);
  }`;

/** The values of the `WGSL_DROPOUT_UNIFORMS` fields, in order, for dropout at `rate` with `seed` (both checked). */
export function dropoutUniforms(rate: number, seed: number): { type: 'uint32' | 'float32'; data: number[] }[] {
  checkRate(rate);
  checkSeed('seededDropout', seed);
  const [k1, k2] = seedKeys(seed);
  return [
    { type: 'uint32', data: [k1] }, { type: 'uint32', data: [k2] },
    { type: 'float32', data: [rate] }, { type: 'float32', data: [1 / (1 - rate)] },
  ];
}

const uniformWebgpu: tf.KernelFunc = ({ backend, attrs }) => {
  const { shape, seed } = attrs as unknown as UniformAttrs;
  const [k1, k2] = seedKeys(seed);
  const p = elementwiseProgram({ shaderKey: 'micseSeededUniform', shape, variableNames: [], workgroup: WORKGROUP,
    uniforms: 'k1 : u32, k2 : u32,', preamble: WGSL_RANDOM, body: 'setOutputAtIndex(index, uniformAt(index));' });
  return (backend as unknown as WebGPUBackend).runWebGPUProgram(p, [], 'float32',
    [{ type: 'uint32', data: [k1] }, { type: 'uint32', data: [k2] }]);
};

const dropoutWebgpu: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { rate, seed } = attrs as unknown as DropoutAttrs;
  const x = inputs['x']!;
  const p = elementwiseProgram({ shaderKey: 'micseDropout', shape: x.shape, variableNames: ['x'], workgroup: WORKGROUP,
    uniforms: WGSL_DROPOUT_UNIFORMS, preamble: WGSL_DROPOUT, body: 'setOutputAtIndex(index, dropoutAt(index, getXByOutputIndex(index)));' });
  return (backend as unknown as WebGPUBackend).runWebGPUProgram(p, [x], 'float32', dropoutUniforms(rate, seed));
};

/** Registers the seeded uniform and dropout kernels of `backendName` if it is webgpu, and dropout's gradient. */
export function registerDropoutWebgpu(backendName: string): void {
  registerOp(backendName, { webgpu: { [SEEDED_UNIFORM]: uniformWebgpu, [SEEDED_DROPOUT]: dropoutWebgpu } }, DROPOUT_GRADIENTS);
}
