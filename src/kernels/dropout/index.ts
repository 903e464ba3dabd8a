/**
 * Counter-based random numbers and the dropout built on them, computed where the tensors live.
 *
 * Why: `tf.randomUniform` and `tf.dropout` draw their numbers in JavaScript on the host and upload them. On the
 * host backends that is merely slow; on WebGPU it is one upload per dropout site per step (bert-base at batch 64:
 * ~11 M floats per layer) and the mask stays alive for the backward pass. Here the value at flat index `i` of a
 * draw with seed `s` is a pure function of `(s, i)`:
 *   k1 = mix32(s ^ SEED_SALT);  k2 = mix32(k1)
 *   h  = mix32(mix32(i ^ k1) ^ k2)                       // two keyed rounds of the `lowbias32` mixer
 *   u  = (h >>> 8) * 2^-24                               // float32 in [0, 1), 24 random bits, exact
 * so every backend computes the same bits (a WGSL kernel on webgpu, a WebAssembly SIMD loop on cpu and wasm, with
 * a JavaScript loop for the last n % 4 elements or where wasm SIMD is missing, and host numbers
 * uploaded on any other backend), and dropout's backward pass regenerates its mask instead of storing it:
 *   dropout(x; rate, s) = x * (1 / (1 - rate)) where u(s, i) >= rate, else 0
 * is linear in x with a fixed mask, so its gradient is dropout(dy; rate, s) (the same kernel on dy).
 * Kept with probability 1 - rate and scaled by 1 / (1 - rate), as torch.nn.Dropout.
 *
 * Ops: `seededUniform(shape, seed)` and `seededDropout(x, rate, seed)`. Kernels `MicseSeededUniform` and
 * `MicseDropout` are registered for cpu, wasm and webgpu when this module loads (the registry is keyed by
 * backend name, so the backend need not exist yet); elsewhere the ops fall back to uploaded host numbers.
 * WebGPU kernels that fuse a dropout into a larger program (kernels/attention) use `WGSL_DROPOUT`, `WGSL_DROPOUT_UNIFORMS`
 * and `dropoutUniforms`: the same WGSL and uniforms as the `MicseDropout` kernel, so the same mask bit for bit.
 */
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { heapMemory, heapView, type CpuBackend, type WasmBackend } from '../platform/hostBackend.js';
import { heapSimdHost, simdDropout, stagingSimdHost, type SimdHost } from '../platform/hostSimd.js';
import { tf } from '../../model/tf.js';
import { kernelOn, registerOp } from '../registry.js';
import { elementwiseProgram } from '../platform/webgpuPrograms.js';

const SEEDED_UNIFORM = 'MicseSeededUniform';
export const SEEDED_DROPOUT = 'MicseDropout';

/** XORed into the seed before it is mixed, so seed 0 does not give key 0. */
const SEED_SALT = 0x9e3779b9;
/** 2^-24: 24-bit integers map to float32 in [0, 1) exactly. */
const INV_2_24 = 1 / 16777216;
/** Threads per workgroup of the WGSL kernels. */
const WORKGROUP = 256;

/** `lowbias32` (C. Wellons): a 32-bit integer mixer with low bias, as an unsigned 32-bit result. */
function mix32(x: number): number {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/** The two round keys of a seed (any integer; taken modulo 2^32). */
export function seedKeys(seed: number): [number, number] {
  const k1 = mix32((seed ^ SEED_SALT) >>> 0);
  return [k1, mix32(k1)];
}

/** The uniform at flat index `i` for keys `[k1, k2]`. */
function uniformAt(i: number, k1: number, k2: number): number {
  return (mix32((mix32((i ^ k1) >>> 0) ^ k2) >>> 0) >>> 8) * INV_2_24;
}

/** `n` uniforms in [0, 1) of `seed` on the host: the numbers every backend's kernel computes. */
export function uniformArray(n: number, seed: number): Float32Array {
  const [k1, k2] = seedKeys(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = uniformAt(i, k1, k2);
  return out;
}

/**
 * Dropout on the host into `out`: the arithmetic of every backend's kernel (float32 rate and scale). The
 * WebAssembly SIMD loop (hostSimd.ts, the same bits) does whole groups of 4 where `simd` is given; this loop the rest.
 */
function dropoutInto(x: Float32Array, out: Float32Array, rate: number, seed: number, simd: SimdHost | null): void {
  const [k1, k2] = seedKeys(seed);
  const r = Math.fround(rate);
  const scale = Math.fround(1 / (1 - rate));
  const from = simd !== null ? simdDropout(simd, x, out, k1, k2, r, scale) : 0;
  for (let i = from; i < out.length; i++) out[i] = uniformAt(i, k1, k2) >= r ? Math.fround(x[i]! * scale) : 0;
}

interface UniformAttrs {
  shape: number[];
  seed: number;
}
interface DropoutAttrs {
  rate: number;
  seed: number;
}

function checkRate(rate: number): void {
  if (!(rate >= 0 && rate < 1)) throw new Error(`seededDropout: rate must be in [0, 1), got ${rate}`);
}

// ---------------------------------------------------------------------------------------------------------------
// Host kernels (cpu: values in JS arrays; wasm: values in the module heap)
// ---------------------------------------------------------------------------------------------------------------

const uniformCpu: tf.KernelFunc = ({ backend, attrs }) => {
  const { shape, seed } = attrs as unknown as UniformAttrs;
  return (backend as unknown as CpuBackend).makeTensorInfo(shape, 'float32', uniformArray(tf.util.sizeFromShape(shape), seed));
};

const dropoutCpu: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { rate, seed } = attrs as unknown as DropoutAttrs;
  const b = backend as unknown as CpuBackend;
  const x = inputs['x']!;
  const out = new Float32Array(tf.util.sizeFromShape(x.shape));
  dropoutInto(b.data.get(x.dataId).values as Float32Array, out, rate, seed, stagingSimdHost());
  return b.makeTensorInfo(x.shape, 'float32', out);
};

const uniformWasm: tf.KernelFunc = ({ backend, attrs }) => {
  const { shape, seed } = attrs as unknown as UniformAttrs;
  const b = backend as unknown as WasmBackend;
  const out = b.makeOutput(shape, 'float32');
  heapView(b, out).set(uniformArray(tf.util.sizeFromShape(shape), seed));
  return out;
};

const dropoutWasm: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { rate, seed } = attrs as unknown as DropoutAttrs;
  const b = backend as unknown as WasmBackend;
  const x = inputs['x']!;
  const out = b.makeOutput(x.shape, 'float32');
  // Both views are taken after makeOutput, which may grow (and so move) the heap.
  dropoutInto(heapView(b, x), heapView(b, out), rate, seed, heapSimdHost(heapMemory(b)));
  return out;
};

// ---------------------------------------------------------------------------------------------------------------
// WebGPU kernels: WebGPUBackend.runWebGPUProgram compiles `getUserCode()` after a header it generates (the
// uniforms struct with `size`, the `result` buffer, `getXByOutputIndex`, `setOutputAtIndex`, `fn main(index)`).
// ---------------------------------------------------------------------------------------------------------------

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

const BY_BACKEND = {
  cpu: { [SEEDED_UNIFORM]: uniformCpu, [SEEDED_DROPOUT]: dropoutCpu },
  wasm: { [SEEDED_UNIFORM]: uniformWasm, [SEEDED_DROPOUT]: dropoutWasm },
  webgpu: { [SEEDED_UNIFORM]: uniformWebgpu, [SEEDED_DROPOUT]: dropoutWebgpu },
};

// d(dropout(x))/dx applied to dy is dropout(dy): the same mask, regenerated from the seed.
const GRADIENTS: tf.GradConfig[] = [
  {
    kernelName: SEEDED_DROPOUT,
    gradFunc: (dy, _saved, attrs) => ({
      x: () => tf.engine().runKernel(SEEDED_DROPOUT, { x: dy as tf.Tensor }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor,
    }),
  },
];

/** Registers the seeded uniform and dropout kernels of `backendName` (cpu, wasm, webgpu) and dropout's gradient. */
export function registerDropoutKernels(backendName: string): void {
  registerOp(backendName, BY_BACKEND, GRADIENTS);
}

function checkSeed(op: string, seed: number): void {
  if (!Number.isInteger(seed)) throw new Error(`${op}: seed must be an integer, got ${seed}`);
}

/** Seeds of unseeded draws (a pass without dropoutSeed, an AMI draw without seed) come from [0, FRESH_SEED_RANGE). */
const FRESH_SEED_RANGE = 2 ** 31;

/** A seed for a draw the caller did not seed (not reproducible, by request). */
export function freshSeed(): number {
  return Math.floor(Math.random() * FRESH_SEED_RANGE);
}

/** float32 uniforms in [0, 1) of `shape`, a pure function of (seed, flat index); see the module comment. */
export function seededUniform(shape: number[], seed: number): tf.Tensor {
  checkSeed('seededUniform', seed);
  if (!kernelOn(SEEDED_UNIFORM)) return tf.tensor(uniformArray(tf.util.sizeFromShape(shape), seed), shape, 'float32');
  const attrs: UniformAttrs = { shape: [...shape], seed };
  return tf.engine().runKernel(SEEDED_UNIFORM, {}, attrs as unknown as tf.NamedAttrMap) as tf.Tensor;
}

/**
 * Inverted dropout with a mask that is a pure function of (seed, flat index): `x [any] -> [same]`, float32.
 * Differentiable in x; the backward pass regenerates the mask. `rate` 0 returns x itself.
 */
export function seededDropout<T extends tf.Tensor>(x: T, rate: number, seed: number): T {
  checkRate(rate);
  checkSeed('seededDropout', seed);
  if (rate === 0) return x;
  const attrs: DropoutAttrs = { rate, seed };
  if (kernelOn(SEEDED_DROPOUT, x)) {
    return tf.engine().runKernel(SEEDED_DROPOUT, { x }, attrs as unknown as tf.NamedAttrMap) as T;
  }
  // Other backends: the same op composed of stock ops, with the kernels' gradient (dropout of dy, not the
  // gradient of tf.where, which multiplies dy by the mask and so turns a dropped NaN or -dy into NaN or -0).
  const dropout = tf.customGrad((a) => ({
    value: composedDropout(a as tf.Tensor, rate, seed),
    gradFunc: (dy: tf.Tensor | tf.Tensor[]) => composedDropout(dy as tf.Tensor, rate, seed),
  }));
  return dropout(x) as T;
}

/**
 * The dropout kernels' arithmetic from stock ops, the mask from host numbers (uploaded). A select, as the kernels:
 * a dropped element is 0 even where x is infinite or NaN (x * 0 would be NaN there).  x [any] -> [same] float32
 */
function composedDropout(x: tf.Tensor, rate: number, seed: number): tf.Tensor {
  return tf.tidy(() => {
    const keep = tf.greaterEqual(tf.tensor(uniformArray(x.size, seed), x.shape, 'float32'), Math.fround(rate));
    const kept = tf.mul(tf.cast(x, 'float32'), Math.fround(1 / (1 - rate)));
    return tf.where(keep, kept, tf.zerosLike(kept));
  });
}
