/**
 * A dense layer on 2-D activations: y = x W + b, with x [N, in], W [in, out], b [out] -> y [N, out].
 *
 * Why: on webgpu every dispatch has a fixed host cost (issue #9). The product already adds the bias in its own
 * kernel (tf.fused.matMul's _FusedMatMul), but TF.js's gradient of that op takes the bias gradient as
 * tf.sum(dy, [0, 1]) over dy [1, N, out], which the webgpu backend runs as two dispatches (a transpose to
 * [out, N], then a row reduction). Here, on webgpu, the same forward kernel with our own gradient:
 *   dx = dy (W^T)  (W transposed by one dispatch, then a plain product; see below)
 *   dW = x^T dy    (tf.matMul(x, dy, true, false))
 *   db = the column sums of dy [N, out] -> [out], ONE dispatch (MicseColumnSum below)
 * Why dx transposes W first instead of tf.matMul(dy, W, false, true), as TF.js's gradient does: the webgpu product
 * kernel loads vec4s only when B is not transposed (MatMulPackedProgram.isVec4), and the scalar kernel is much
 * slower at these shapes (bench/gemm.ts measures both; figures in bench/README.md). Transposing W is a memory copy
 * of the weight alone (at most 2.4 M floats at BERT-base, against 4,096 rows x K x N multiply-adds), one more
 * dispatch each.
 * So 4 dispatches backward, as many as TF.js's gradient takes (its bias sum takes two), without the slow product.
 * Every other backend computes tf.add(tf.matMul(x, W), b) exactly as before (their numbers do not change; the wasm
 * backend routes that MatMul to the native GEMM).
 */
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { tf } from '../../model/tf.js';
import { gelu } from '../gelu/index.js';
import { gemmDense } from '../gemm/index.js';
import { kernelOn, registerOp } from '../registry.js';

const COLUMN_SUM = 'MicseColumnSum';

/**
 * The column-sum program's workgroup is COLUMNS x ROW_LANES invocations: it owns COLUMNS neighbouring columns, and
 * its invocation (lane, c) sums rows lane, lane + ROW_LANES, ... of column c; then a tree over the lanes. Neighbouring
 * invocations read neighbouring columns of one row: 8 floats, one 32-byte memory sector. 8 columns (rather than
 * more) so a BERT-base layer's 768 columns still make 96 workgroups: a memory-bound reduction needs many of them in
 * flight (one thread per column over all rows left a GPU nearly idle; see kernels/layerNorm's LayerNorm sums). Not yet timed
 * on a real GPU.
 */
const COLUMNS = 8;
const ROW_LANES = 32;
const WORKGROUP = COLUMNS * ROW_LANES;

/**
 * out[c] = sum over r of dy[r, c], for dy [rows, cols] -> [cols]: workgroup w owns columns [w * COLUMNS,
 * (w + 1) * COLUMNS); `index / WORKGROUP` is w even where the backend reshapes a large dispatch. The tree sums
 * partials[lane * COLUMNS + c] over the lanes in workgroup memory; lane 0 writes the column's total.
 */
function columnSumProgram(cols: number): WebGPUProgram {
  return {
    variableNames: ['dy'],
    outputShape: [cols],
    shaderKey: 'micseColumnSum',
    dispatchLayout: { x: [0] },
    dispatch: [Math.ceil(cols / COLUMNS), 1, 1],
    workgroupSize: [WORKGROUP, 1, 1],
    uniforms: 'rows : i32, cols : i32,',
    getUserCode: () => `
  var<workgroup> partials : array<f32, ${WORKGROUP}>;
  fn main(index : i32) {
    let li = i32(localIndex);
    let c = li % ${COLUMNS};
    let lane = li / ${COLUMNS};
    let col = (index / ${WORKGROUP}) * ${COLUMNS} + c;
    var acc = 0.0;
    if (col < uniforms.cols) {
      for (var r = lane; r < uniforms.rows; r = r + ${ROW_LANES}) { acc = acc + dy[r * uniforms.cols + col]; }
    }
    partials[li] = acc;
    workgroupBarrier();
    for (var half = ${ROW_LANES / 2}; half > 0; half = half / 2) {
      if (lane < half) { partials[li] = partials[li] + partials[li + half * ${COLUMNS}]; }
      workgroupBarrier();
    }
    if (lane == 0 && col < uniforms.cols) { result[col] = partials[li]; }
  }`,
  };
}

const columnSumWebgpu: tf.KernelFunc = ({ inputs, backend }) => {
  const dy = inputs['dy']!; // [rows, cols]
  const [rows, cols] = dy.shape as [number, number];
  return (backend as unknown as WebGPUBackend).runWebGPUProgram(columnSumProgram(cols), [dy], 'float32',
    [{ type: 'int32', data: [rows] }, { type: 'int32', data: [cols] }]); // [cols]
};

/** Registers the bias-gradient kernel of `backendName` (webgpu only). */
export function registerDenseKernels(backendName: string): void {
  registerOp(backendName, { webgpu: { [COLUMN_SUM]: columnSumWebgpu } });
}

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
  const y = fused ? fusedDense(x, w, b) : tf.add(tf.matMul(x, w), b) as tf.Tensor2D; // [N, out]
  return activation === 'gelu' ? gelu(y) as tf.Tensor2D : y;
}
