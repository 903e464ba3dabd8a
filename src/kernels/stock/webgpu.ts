/** The webgpu stock-kernel replacement: UnsortedSegmentSum without the stock kernel's transposes, in row order. */
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { elementwiseProgram } from '../platform/webgpuPrograms.js';
import { tf } from '../../model/tf.js';
import type { KernelFunc } from './host.js';

// ---------------------------------------------------------------------------------------------------------------
// webgpu UnsortedSegmentSum
// ---------------------------------------------------------------------------------------------------------------

/** Invocations per workgroup of the zero fill, the chain links and the chain sums. */
const SEGMENT_SUM_WORKGROUP = 64;

/**
 * links[i] for each of the `rows` segment ids: (next + 1) * 2 + first, where next is the first row after i with
 * the same id (-1: none) and first is 1 when no row before i has it. The rows of one id form a chain, in row order,
 * from its first row. Each invocation scans the ids until it meets its own: rows^2 comparisons at most (16.8 M at
 * BERT-base's 4,096 rows of a step; a step of 64 x 2 x 512 tokens would take 4.3 G).
 */
function segmentLinksProgram(rows: number): WebGPUProgram {
  return elementwiseProgram({
    shaderKey: 'micseSegmentLinks', shape: [rows], variableNames: ['segmentIds'], workgroup: SEGMENT_SUM_WORKGROUP,
    body: `
      let id = segmentIds[index];
      var following = -1;
      for (var k = index + 1; k < uniforms.size; k++) {
        if (segmentIds[k] == id) { following = k; break; }
      }
      var isFirst = 1;
      for (var k = index - 1; k >= 0; k--) {
        if (segmentIds[k] == id) { isFirst = 0; break; }
      }
      setOutputAtIndexI32(index, (following + 1) * 2 + isFirst);`,
  });
}

/**
 * out[id, j] = the sum of x[i, j] over the rows i of that id, added in row order from 0 (as the cpu and wasm
 * scatter-adds add them, so the sums are theirs to the bit): one invocation per element of x (read as
 * [rows, inner]); the invocations of a chain's first row walk it, the others return. Ids outside [0, numSegments)
 * are dropped; the output is zero-filled before, for the ids that do not occur.
 */
function segmentSumProgram(numSegments: number, inner: number, xSize: number): WebGPUProgram {
  return {
    variableNames: ['x', 'segmentIds', 'links'],
    outputShape: [numSegments, inner],
    shaderKey: 'micseSegmentChainSum',
    dispatchLayout: { x: [0] },
    dispatch: [Math.ceil(xSize / SEGMENT_SUM_WORKGROUP), 1, 1],
    workgroupSize: [SEGMENT_SUM_WORKGROUP, 1, 1],
    uniforms: 'numSegments : i32, inner : i32, xSize : i32,',
    getUserCode: () => `
  fn main(index : i32) {
    if (index < uniforms.xSize) {
      let row = index / uniforms.inner;
      let segment = segmentIds[row];
      let link = links[row];
      if (link % 2 == 1 && segment >= 0 && segment < uniforms.numSegments) {
        let column = index - row * uniforms.inner;
        var total = 0.0;
        var r = row;
        loop {
          total = total + x[r * uniforms.inner + column];
          r = links[r] / 2 - 1;
          if (r < 0) { break; }
        }
        setOutputAtIndex(segment * uniforms.inner + column, total);
      }
    }
  }`,
  };
}

/**
 * webgpu UnsortedSegmentSum of float32 x and int32 ids: a zero fill, the chain links of the ids and the chain sums
 * (no transposes, no atomics: the same bits every run, and the cpu's).
 */
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
    const links = backend.runWebGPUProgram(segmentLinksProgram(rows), [flatIds], 'int32');
    const uniforms = [{ type: 'int32', data: [numSegments] }, { type: 'int32', data: [inner] }, { type: 'int32', data: [xSize] }];
    try {
      backend.runWebGPUProgram(segmentSumProgram(numSegments, inner, xSize), [flatX, flatIds, links], 'float32', uniforms, zeros);
    } finally {
      backend.disposeData(links.dataId);
    }
    return { dataId: zeros.dataId, shape: [numSegments, ...x.shape.slice(segmentIds.shape.length)], dtype: 'float32' };
  };
}
