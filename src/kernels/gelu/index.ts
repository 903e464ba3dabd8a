/**
 * Exact GELU, forward and backward, as single kernels (BERT's feed-forward activation).
 *
 * Why: composed of stock ops, the exact GELU is 5 kernels forward and ~10 backward; on WebGPU every kernel is a
 * dispatch with a fixed host cost (bench/README.md), and on the host backends every op is another pass.
 *   gelu(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))       (erf: platform/erf.ts, the A-S 7.1.26 form every TF.js
 *                                                              backend uses, |error| < 1.5e-7)
 *     backward: dx = dy * (Phi(x) + x * phi(x)),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
 * Kernels: cpu and wasm (host.ts: WebAssembly SIMD loops, src/kernels/platform/hostSimd.ts, and scalar loops for the
 * last n % 4 elements and where wasm SIMD is missing), webgpu (webgpu.ts: one element-wise dispatch each way). Other
 * backends (tensorflow, webgl) compose stock ops. Float32 results agree with the composed ops within rounding (tests:
 * test/fused.test.ts).
 */
import { tf } from '../../model/tf.js';
import { kernelOn } from '../registry.js';

/** The kernels' names (registered by the backend files: host.ts, webgpu.ts). */
export const GELU = 'MicseGelu';
export const GELU_GRAD = 'MicseGeluGrad';


/** GELU's gradient kernel, registered with either backend file's kernels. */
export const GELU_GRADIENTS: tf.GradConfig[] = [
  {
    kernelName: GELU,
    inputsToSave: ['x'],
    gradFunc: (dy, saved) => ({
      x: () => tf.engine().runKernel(GELU_GRAD, { x: saved[0]!, dy: dy as tf.Tensor }) as tf.Tensor,
    }),
  },
];

/** Exact GELU `x * Phi(x)`, element-wise; see the module comment. */
export function gelu(x: tf.Tensor): tf.Tensor {
  if (kernelOn(GELU, x)) return tf.engine().runKernel(GELU, { x }) as tf.Tensor;
  return tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2)))));
}
