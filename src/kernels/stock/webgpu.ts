/** The webgpu stock-kernel replacement: UnsortedSegmentSum without the stock kernel's transposes. */
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { elementwiseProgram } from '../platform/webgpuPrograms.js';
import { tf } from '../../model/tf.js';
import type { KernelFunc } from './host.js';

// ---------------------------------------------------------------------------------------------------------------
// webgpu UnsortedSegmentSum
// ---------------------------------------------------------------------------------------------------------------

/** Invocations per workgroup of the zero fill and the scatter-add. */
const SEGMENT_SUM_WORKGROUP = 64;

/**
 * out[segmentIds[i], j] += x[i, j], one invocation per element of x (read as [segmentIds.length, inner]), added
 * into the zero-filled output [numSegments, inner] where it lies: float32 addition by compare-and-swap on the bits
 * (WGSL has integer atomics only), starting from the value loaded, so an uncontended add swaps once. Rows that
 * share an id add in an unspecified order (float32 rounding differs between runs, as with the stock kernel).
 */
function segmentSumProgram(numSegments: number, inner: number, xSize: number): WebGPUProgram {
  return {
    variableNames: ['x', 'segmentIds'],
    outputShape: [numSegments, inner],
    shaderKey: 'micseUnsortedSegmentSum',
    dispatchLayout: { x: [0] },
    dispatch: [Math.ceil(xSize / SEGMENT_SUM_WORKGROUP), 1, 1],
    workgroupSize: [SEGMENT_SUM_WORKGROUP, 1, 1],
    atomic: true,
    uniforms: 'numSegments : i32, inner : i32, xSize : i32,',
    getUserCode: () => `
  fn main(index : i32) {
    if (index < uniforms.xSize) {
      let row = index / uniforms.inner;
      let segment = segmentIds[row];
      if (segment >= 0 && segment < uniforms.numSegments) {
        let at = segment * uniforms.inner + index - row * uniforms.inner;
        let value = x[index];
        var old = atomicLoad(&result[at]);
        loop {
          let swapped = atomicCompareExchangeWeak(&result[at], old, bitcast<i32>(bitcast<f32>(old) + value));
          if (swapped.exchanged) { break; }
          old = swapped.old_value;
        }
      }
    }
  }`,
  };
}

/** webgpu UnsortedSegmentSum of float32 x and int32 ids: a zero fill and one scatter-add dispatch (no transposes). */
export function makeWebgpuSegmentSum(stock: KernelFunc): KernelFunc {
  return (args) => {
    const x = args.inputs['x']!;
    const segmentIds = args.inputs['segmentIds']!;
    const numSegments = (args.attrs as { numSegments: number }).numSegments;
    const rows = tf.util.sizeFromShape(segmentIds.shape);
    const xSize = tf.util.sizeFromShape(x.shape);
    if (x.dtype !== 'float32' || segmentIds.dtype !== 'int32' || rows === 0 || xSize === 0) return stock(args);
    const backend = args.backend as unknown as WebGPUBackend;
    const inner = xSize / rows;
    const zeros = backend.runWebGPUProgram(elementwiseProgram({
      shaderKey: 'micseZeros', shape: [numSegments, inner], variableNames: [], workgroup: SEGMENT_SUM_WORKGROUP,
      body: 'setOutputAtIndex(index, 0.0);',
    }), [], 'float32');
    const flatX = { dataId: x.dataId, shape: [xSize], dtype: x.dtype };
    const flatIds = { dataId: segmentIds.dataId, shape: [rows], dtype: segmentIds.dtype };
    const uniforms = [{ type: 'int32', data: [numSegments] }, { type: 'int32', data: [inner] }, { type: 'int32', data: [xSize] }];
    backend.runWebGPUProgram(segmentSumProgram(numSegments, inner, xSize), [flatX, flatIds], 'float32', uniforms, zeros);
    return { dataId: zeros.dataId, shape: [numSegments, ...x.shape.slice(segmentIds.shape.length)], dtype: 'float32' };
  };
}
