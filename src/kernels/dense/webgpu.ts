/** The webgpu kernel of the dense layer's bias gradient, one dispatch (the op and its gradient: index.ts). */
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { tf } from '../../model/tf.js';
import { registerOp } from '../registry.js';
import { COLUMN_SUM } from './index.js';

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

/** Registers the bias-gradient kernel of `backendName` if it is webgpu. */
export function registerDenseWebgpu(backendName: string): void {
  registerOp(backendName, { webgpu: { [COLUMN_SUM]: columnSumWebgpu } });
}
