/**
 * Fused LayerNorm (alone, or after a dropout and a residual add), forward and backward, as single kernels.
 *
 * Why: composed of stock ops, one LayerNorm is ~10 kernels forward and ~20 backward. On WebGPU every kernel is a
 * dispatch with a fixed host cost (see bench/README.md), and on the host backends every op is another pass over the
 * activations. Here:
 *   layerNorm(x [.., H], gamma [H], beta [H]) = (x - mean) / sqrt(var + eps) * gamma + beta   (var: biased, per row)
 *     backward, with xhat = (x - mean) * rstd and g = dy * gamma (rstd = 1 / sqrt(var + eps)):
 *       dx = rstd * (g - mean(g) - xhat * mean(g * xhat))      per row
 *       dgamma = sum over rows of dy * xhat;  dbeta = sum over rows of dy
 *   addLayerNorm(x, residual, gamma, beta) = layerNorm(s, gamma, beta),  s = seededDropout(x) + residual  (BERT's
 *     post-sublayer step)  backward: d(residual) = ds,  dx = seededDropout(ds) (the same mask, kernels/dropout)
 * Kernels: cpu and wasm (host.ts: WebAssembly SIMD loops, src/kernels/platform/hostSimd.ts, in place on the wasm
 * heap, through a staging memory for cpu's JS arrays; scalar loops where wasm SIMD is missing and for rows with
 * H % 4 != 0), webgpu (webgpu.ts, WGSL: LayerNorm one workgroup per row; its backward is 3 dispatches: dx with each row's mean
 * and rstd, column partial sums over COLUMN_CHUNK-row chunks, then dgamma and dbeta
 * together; xhat is recomputed from x and the stored statistics rather than read from memory). addLayerNorm is one
 * kernel forward and one backward where the composed ops take 3 (dropout, add, LayerNorm) and 3 (LayerNorm's
 * gradient, dropout; the sum's gradient passes through): on webgpu one dispatch forward (the dropout mask and the
 * add inside LayerNorm's program, s recomputed wherever it is read) and 3 backward (ds and x's gradient dropout(ds)
 * from one dispatch; the multi-output dispatches are raw programs, webgpuPrograms.ts recordRaw); on cpu and wasm
 * (RESIDUAL_LAYER_NORM, residualLayerNorm below) the composed ops' own loops a few rows at a time (hostSimd.ts
 * simdResidualLayerNorm: no array for the dropout's output, and on cpu each array through the staging memory once),
 * giving y and the sum s, which the gradient keeps as the composed LayerNorm keeps its input; backward LayerNorm's
 * gradient and the dropout of ds in one kernel; so their numbers are those of seededDropout, tf.add and layerNorm
 * exactly. Other backends
 * (tensorflow, webgl) get the same math composed of stock ops. Float32 results agree with the composed ops within
 * rounding (tests: test/fused.test.ts).
 */
import { seededDropout } from '../dropout/index.js';
import { tf } from '../../model/tf.js';
import { kernelOn } from '../registry.js';

/** The kernels' names (registered by the backend files: host.ts, webgpu.ts). */
export const LAYER_NORM = 'MicseLayerNorm';
export const LAYER_NORM_GRAD = 'MicseLayerNormGrad';
/** LayerNorm(dropout(x) + residual) (see addLayerNorm). */
export const ADD_LAYER_NORM = 'MicseAddLayerNorm';
/** Its gradients with respect to the sum s, gamma and beta. */
export const ADD_LAYER_NORM_GRAD = 'MicseAddLayerNormGrad';
/** addLayerNorm on cpu and wasm: [y, s] for x, residual, gamma, beta (s = dropout(x) + residual, kept for the gradient). */
export const RESIDUAL_LAYER_NORM = 'MicseResidualLayerNorm';
/** Its gradient from s: [ds, dgamma, dbeta, dx] for s, gamma, dy (dx = dropout(ds)). */
export const RESIDUAL_LAYER_NORM_GRAD = 'MicseResidualLayerNormGrad';

/** The kernels' attributes. */
export interface LayerNormAttrs {
  eps: number;
}
export interface AddLayerNormAttrs extends LayerNormAttrs, DropoutOptions {}

/** The dropout of addLayerNorm's x: seededDropout's rate and seed. */
export interface DropoutOptions {
  rate: number;
  seed: number;
}

/** The gradients of LayerNorm and addLayerNorm, registered with the backend files' kernels. */
export const LAYER_NORM_GRADIENTS: tf.GradConfig[] = [
  {
    kernelName: LAYER_NORM,
    inputsToSave: ['x', 'gamma'],
    gradFunc: (dy, saved, attrs) => {
      const [x, gamma] = saved as [tf.Tensor, tf.Tensor];
      const [dx, dgamma, dbeta] = tf.engine().runKernel(LAYER_NORM_GRAD, { x, gamma, dy: dy as tf.Tensor },
        attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
      return { x: () => dx!, gamma: () => dgamma!, beta: () => dbeta! };
    },
  },
  // s = dropout(x) + residual: d(residual) = ds, d(x) = dropout(ds) (seededDropout's gradient, the same mask; the
  // grad kernel's fourth output, from the dispatch that computes ds).
  {
    kernelName: ADD_LAYER_NORM,
    inputsToSave: ['x', 'residual', 'gamma'],
    gradFunc: (dy, saved, attrs) => {
      const [x, residual, gamma] = saved as [tf.Tensor, tf.Tensor, tf.Tensor];
      const { rate } = attrs as unknown as AddLayerNormAttrs;
      const [ds, dgamma, dbeta, dx] = tf.engine().runKernel(ADD_LAYER_NORM_GRAD, { x, residual, gamma, dy: dy as tf.Tensor },
        attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
      // At rate 0 x's gradient is ds itself: a clone (no copy), so that accumulating one input's gradient (which
      // disposes it) leaves the other's alone.
      return { x: () => (rate === 0 ? ds!.clone() : dx!), residual: () => ds!, gamma: () => dgamma!, beta: () => dbeta! };
    },
  },
];

function checkLayerNormParams(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor): void {
  const H = x.shape[x.rank - 1];
  if (gamma.rank !== 1 || beta.rank !== 1 || gamma.shape[0] !== H || beta.shape[0] !== H) {
    throw new Error(`layerNorm: gamma and beta must be [${H}] for x of shape [${x.shape}]; got [${gamma.shape}] and [${beta.shape}]`);
  }
}

/** LayerNorm over the last axis: `x [.., H]`, `gamma [H]`, `beta [H]` -> `[.., H]`; see the module comment. */
export function layerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number): tf.Tensor {
  checkLayerNormParams(x, gamma, beta);
  if (kernelOn(LAYER_NORM, x, gamma, beta)) {
    return tf.engine().runKernel(LAYER_NORM, { x, gamma, beta }, { eps } as unknown as tf.NamedAttrMap) as tf.Tensor;
  }
  return tf.tidy(() => {
    const { mean, variance } = tf.moments(x, -1, true);
    const normed = tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, eps)));
    return tf.add(tf.mul(normed, gamma), beta);
  });
}

/**
 * LayerNorm(dropout(x) + residual) over the last axis, as `layerNorm(tf.add(seededDropout(x, rate, seed), residual),
 * gamma, beta, eps)`: `x, residual [.., H]`, `gamma, beta [H]` -> `[.., H]`, differentiable in all four. On webgpu
 * one dispatch (the mask computed in the kernel, seededDropout's bit for bit) and 5 backward (ds, dropout(ds),
 * the column partials, dgamma, dbeta; 4 at rate 0); on cpu and wasm one kernel each way with those ops' numbers;
 * every other backend runs exactly those composed ops.
 */
export function addLayerNorm(x: tf.Tensor, residual: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number,
  dropout: DropoutOptions): tf.Tensor {
  if (!tf.util.arraysEqual(x.shape, residual.shape)) {
    throw new Error(`addLayerNorm: x and residual must have one shape; got [${x.shape}] and [${residual.shape}]`);
  }
  const attrs: AddLayerNormAttrs = { eps, rate: dropout.rate, seed: dropout.seed };
  if (kernelOn(ADD_LAYER_NORM, x, residual, gamma, beta)) {
    checkLayerNormParams(x, gamma, beta);
    return tf.engine().runKernel(ADD_LAYER_NORM, { x, residual, gamma, beta }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor;
  }
  if (kernelOn(RESIDUAL_LAYER_NORM, x, residual, gamma, beta)) {
    checkLayerNormParams(x, gamma, beta);
    return residualLayerNorm(attrs)(x, residual, gamma, beta);
  }
  return tf.tidy(() => layerNorm(tf.add(seededDropout(x, dropout.rate, dropout.seed), residual), gamma, beta, eps));
}

/**
 * The host form of addLayerNorm: one kernel forward giving y and the sum s, which the gradient keeps (as the
 * composed ops' LayerNorm keeps its input); s itself is disposed with the forward's scope. Backward one kernel from s:
 * LayerNorm's gradient, then the dropout of ds for x.
 */
function residualLayerNorm(attrs: AddLayerNormAttrs): (x: tf.Tensor, residual: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor) => tf.Tensor {
  const named = attrs as unknown as tf.NamedAttrMap;
  return tf.customGrad((...args) => {
    const [x, residual, gamma, beta] = args as tf.Tensor[];
    const [y, s] = tf.engine().runKernel(RESIDUAL_LAYER_NORM, { x: x!, residual: residual!, gamma: gamma!, beta: beta! }, named) as tf.Tensor[];
    (args[4] as tf.GradSaveFunc)([s!, gamma!]);
    return {
      value: y!,
      gradFunc: (dy, saved) => {
        const [ss, g] = saved as [tf.Tensor, tf.Tensor];
        const [ds, dgamma, dbeta, dx] = tf.engine().runKernel(RESIDUAL_LAYER_NORM_GRAD, { s: ss, gamma: g, dy: dy as tf.Tensor }, named) as tf.Tensor[];
        return [dx!, ds!, dgamma!, dbeta!];
      },
    };
  }) as (x: tf.Tensor, residual: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor) => tf.Tensor;
}
