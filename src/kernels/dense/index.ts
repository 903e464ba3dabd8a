/**
 * A dense layer on 2-D activations: y = x W + b, with x [N, in], W [in, out], b [out] -> y [N, out].
 *
 * Why: on webgpu every dispatch has a fixed host cost (issue #9). The product already adds the bias in its own
 * kernel (tf.fused.matMul's _FusedMatMul), but TF.js's gradient of that op takes the bias gradient as
 * tf.sum(dy, [0, 1]) over dy [1, N, out], which the webgpu backend runs as two dispatches (a transpose to
 * [out, N], then a row reduction). Here, on webgpu, the same forward kernel with our own gradient:
 *   dx = dy (W^T)  (W transposed by one dispatch, then a plain product; see below)
 *   dW = x^T dy    (tf.matMul(x, dy, true, false))
 *   db = the column sums of dy [N, out] -> [out], ONE dispatch (MicseColumnSum, webgpu.ts)
 * Why dx transposes W first instead of tf.matMul(dy, W, false, true), as TF.js's gradient does: the webgpu product
 * kernel loads vec4s only when B is not transposed (MatMulPackedProgram.isVec4), and the scalar kernel is much
 * slower at these shapes (bench/gemm.ts measures both; figures in bench/README.md). Transposing W is a memory copy
 * of the weight alone (at most 2.4 M floats at BERT-base, against 4,096 rows x K x N multiply-adds), one more
 * dispatch each.
 * So 4 dispatches backward, as many as TF.js's gradient takes (its bias sum takes two), without the slow product.
 * On cpu, and on wasm while CBLAS runs the host products, one kernel (host.ts) adds the bias in place into the
 * product's array, with the gradient of the stock ops it replaces (DENSE_GRADIENTS: the same products and sum, so the
 * same bits as tf.add(tf.matMul(x, W), b)). Every other backend computes tf.add(tf.matMul(x, W), b) (the wasm
 * backend routes that MatMul to the native GEMM).
 */
import { tf } from '../../model/tf.js';
import { gelu } from '../gelu/index.js';
import { gemmDense } from '../gemm/index.js';
import { kernelOn } from '../registry.js';

/** The host kernel: the product with the bias added in place (host.ts). */
export const DENSE = 'MicseDense';

/**
 * The host kernel's gradient: the gradients TF.js gives tf.add(tf.matMul(x, W), b), the same kernels in the same
 * order.  dy [N, out] -> dx [N, in], dW [in, out], db [out]
 */
export const DENSE_GRADIENTS: tf.GradConfig[] = [
  {
    kernelName: DENSE,
    inputsToSave: ['x', 'w'],
    gradFunc: (dy, saved) => {
      const [x, w] = saved as [tf.Tensor2D, tf.Tensor2D];
      const d = dy as tf.Tensor2D;
      return {
        x: () => tf.matMul(d, w, false, true), // [N, out] x [in, out]^T
        w: () => tf.matMul(x, d, true, false), // [N, in]^T x [N, out]
        b: () => tf.sum(d, 0), // [out]
      };
    },
  },
];

/** The bias gradient's kernel: column sums of dy [rows, cols] -> [cols] (webgpu.ts). */
export const COLUMN_SUM = 'MicseColumnSum';

/** dy [N, out] -> [out], one dispatch. */
const columnSum = (dy: tf.Tensor2D): tf.Tensor1D => tf.engine().runKernel(COLUMN_SUM, { dy }) as tf.Tensor1D;

/** The product with the bias added in its kernel (_FusedMatMul, what tf.fused.matMul runs), our gradient. */
const fusedDense = tf.customGrad((...args) => {
  const [x, w, b] = args as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D];
  (args[3] as tf.GradSaveFunc)([x, w]);
  const attrs = { transposeA: false, transposeB: false, activation: 'linear' };
  const y = tf.engine().runKernel(tf._FusedMatMul, { a: x, b: w, bias: b }, attrs) as tf.Tensor2D; // [N, out]
  return {
    value: y,
    gradFunc: (dy, saved) => {
      const [xs, ws] = saved as [tf.Tensor2D, tf.Tensor2D];
      const dy2 = dy as tf.Tensor2D; // [N, out]
      return [
        // W^T [out, in] freed at once: the backward pass's own tidy would hold every layer's until its end.
        tf.tidy(() => tf.matMul(dy2, tf.transpose(ws))), // [N, out] x [out, in] -> [N, in]
        tf.matMul(xs, dy2, true, false), // [in, out]
        columnSum(dy2), // [out]
      ];
    },
  };
}) as (x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D) => tf.Tensor2D;

/**
 * `x [N, in] W [in, out] + b [out]` -> `[N, out]`, then the exact GELU with `activation` 'gelu'; see the module
 * comment. Differentiable in x, W and b. On webgpu with MICSE_WEBGPU_GEMM on, large layers run on kernels/gemm (the
 * GELU in the product's dispatch), with this module's column sum as the bias gradient.
 */
export function dense(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D, activation: 'linear' | 'gelu' = 'linear'): tf.Tensor2D {
  const [N, inDim] = x.shape;
  const [wIn, outDim] = w.shape;
  if (wIn !== inDim || b.shape[0] !== outDim) {
    throw new Error(`dense: x [${N}, ${inDim}] needs W [${inDim}, out] and b [out]; got W [${w.shape}] and b [${b.shape}]`);
  }
  const fused = kernelOn(COLUMN_SUM, x, w, b);
  const onGemm = fused ? gemmDense(x, w, b, activation === 'gelu', columnSum) : null;
  if (onGemm !== null) return onGemm;
  const y = fused ? fusedDense(x, w, b) // [N, out]
    : kernelOn(DENSE, x, w, b) ? tf.engine().runKernel(DENSE, { x, w, b }) as tf.Tensor2D
      : tf.add(tf.matMul(x, w), b) as tf.Tensor2D;
  return activation === 'gelu' ? gelu(y) as tf.Tensor2D : y;
}
