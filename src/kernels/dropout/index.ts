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
 * `MicseDropout`: cpu and wasm (host.ts), webgpu (webgpu.ts); elsewhere the ops fall back to uploaded host numbers.
 * WebGPU kernels that fuse a dropout into a larger program (kernels/attention, kernels/layerNorm) use webgpu.ts's
 * `WGSL_DROPOUT`, `WGSL_DROPOUT_UNIFORMS` and `dropoutUniforms`: the same WGSL and uniforms as the `MicseDropout`
 * kernel, so the same mask bit for bit.
 */
import { tf } from '../../model/tf.js';
import { kernelOn } from '../registry.js';
import { loggingStepValues, noteStepValue, stepValueOf } from '../replay/index.js';

/** The kernels' names (registered by the backend files: host.ts, webgpu.ts). */
export const SEEDED_UNIFORM = 'MicseSeededUniform';
export const SEEDED_DROPOUT = 'MicseDropout';

/** XORed into the seed before it is mixed, so seed 0 does not give key 0. */
const SEED_SALT = 0x9e3779b9;
/** 2^-24: 24-bit integers map to float32 in [0, 1) exactly. */
export const INV_2_24 = 1 / 16777216;

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
  const k2 = mix32(k1);
  if (loggingStepValues()) {
    const from = stepValueOf(seed);
    if (from !== undefined) {
      noteStepValue(`k1(${from.key})`, k1, 'u32', (r) => seedKeys(from.formula(r))[0]);
      noteStepValue(`k2(${from.key})`, k2, 'u32', (r) => seedKeys(from.formula(r))[1]);
    }
  }
  return [k1, k2];
}

/** The uniform at flat index `i` for keys `[k1, k2]`. */
export function uniformAt(i: number, k1: number, k2: number): number {
  return uniformBitsAt(i, k1, k2) * INV_2_24;
}

/** The 24-bit integer behind the uniform at flat index `i` (uniformAt * 2^24, the same order). */
export function uniformBitsAt(i: number, k1: number, k2: number): number {
  return mix32((mix32((i ^ k1) >>> 0) ^ k2) >>> 0) >>> 8;
}

/** `n` uniforms in [0, 1) of `seed` on the host: the numbers every backend's kernel computes. */
export function uniformArray(n: number, seed: number): Float32Array {
  const [k1, k2] = seedKeys(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = uniformAt(i, k1, k2);
  return out;
}

/** The kernels' attributes. */
export interface UniformAttrs {
  shape: number[];
  seed: number;
}
export interface DropoutAttrs {
  rate: number;
  seed: number;
}

export function checkRate(rate: number): void {
  if (!(rate >= 0 && rate < 1)) throw new Error(`seededDropout: rate must be in [0, 1), got ${rate}`);
}

// d(dropout(x))/dx applied to dy is dropout(dy): the same mask, regenerated from the seed.
export const DROPOUT_GRADIENTS: tf.GradConfig[] = [
  {
    kernelName: SEEDED_DROPOUT,
    gradFunc: (dy, _saved, attrs) => ({
      x: () => tf.engine().runKernel(SEEDED_DROPOUT, { x: dy as tf.Tensor }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor,
    }),
  },
];

export function checkSeed(op: string, seed: number): void {
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
