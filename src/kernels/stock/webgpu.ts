/** The webgpu stock-kernel replacement: UnsortedSegmentSum without the stock kernel's transposes, in row order. */
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { elementwiseProgram } from '../platform/webgpuPrograms.js';
import { tf } from '../../model/tf.js';
import type { KernelFunc } from './host.js';

// ---------------------------------------------------------------------------------------------------------------
// webgpu UnsortedSegmentSum
//
// The rows of one id must be added in row order (as the cpu and wasm scatter-adds add them), so the kernel first
// sorts the rows by id, keeping row order within an id, then lets the invocations of each id's first sorted
// position walk its rows:
//   1. the zero fill of the output;
//   2. an LSD radix sort of the (key, row) pairs, key = the row's id, or numSegments for an id out of range
//      (dropped). Each pass sorts by the next `digitBits` bits of the key (at most 8: 256 digits), stably, in three
//      dispatches over blocks of `blockRows` consecutive positions (about sqrt(rows), so that the invocations
//      are as many as the steps each takes): the digit counts of each block (one invocation a block, walking its
//      rows); their scan (one invocation a digit: the offsets of that digit's rows in each block, from the blocks
//      before, and the digit's total); the placement (one invocation a block, walking its rows in order and putting
//      each at the next free place of its digit: the digits before it, the blocks before it, the block's rows
//      before it). A pass keeps the order of the rows of one digit, so after the last one the rows of an id lie
//      together in row order. Every value is computed by one invocation in a fixed order: no atomics, and no
//      barriers (a version ranking rows in workgroups with barriers was ~40x slower on SwiftShader: bench/README.md);
//   3. the run sums: the invocations of a run's first position add its rows from 0, in order.
// Work: O(rows + 256 sqrt(rows)) a pass, and one addition per element of x; 2 + 3 * passes dispatches, passes =
// ceil(bits of numSegments / 8): 1 up to 255 ids, 2 up to 65,535 (BERT's 30,522), 3 up to 16.7 M.
// ---------------------------------------------------------------------------------------------------------------

/** Invocations per workgroup. */
const SEGMENT_SUM_WORKGROUP = 64;
/** The most key bits one radix pass sorts by (the digit counters of an invocation: 2^8). */
const MAX_DIGIT_BITS = 8;

/**
 * The radix sort of `rows` keys in [0, numSegments] (numSegments: the key of the ids out of range): its passes,
 * the bits of a digit, and the rows of a block (a power of two near sqrt(rows), at least 16).
 */
function radixPlan(rows: number, numSegments: number): { passes: number; digitBits: number; blockRows: number; numBlocks: number } {
  const bits = Math.max(1, 32 - Math.clz32(numSegments));
  const passes = Math.ceil(bits / MAX_DIGIT_BITS);
  const blockRows = 2 ** Math.max(4, Math.ceil(Math.log2(rows) / 2));
  return { passes, digitBits: Math.ceil(bits / passes), blockRows, numBlocks: Math.ceil(rows / blockRows) };
}

const PASS_UNIFORMS = 'rows : i32, numSegments : i32, shift : i32, digits : i32, numBlocks : i32, blockRows : i32,';

/**
 * WGSL of a pass's reads: `fn pairAt(t) -> vec2<i32>`, the (key, row) pair at position t of its input, in the first
 * pass from the ids (`source` is segmentIds [rows]; row = t), else from the previous pass's pairs (`source`
 * [rows * 2], interleaved); `fn digitOf(key)`, the pass's digit of a key.
 */
function passReadsWgsl(first: boolean): string {
  return `${first ? `
  fn pairAt(t : i32) -> vec2<i32> {
    let id = source[t];
    return vec2<i32>(select(uniforms.numSegments, id, id >= 0 && id < uniforms.numSegments), t);
  }` : `
  fn pairAt(t : i32) -> vec2<i32> {
    return vec2<i32>(source[2 * t], source[2 * t + 1]);
  }`}

  fn digitOf(key : i32) -> i32 {
    return (key >> u32(uniforms.shift)) & (uniforms.digits - 1);
  }`;
}

/** A radix pass's dispatch: `invocations` invocations, flat, each running `main(index)` (index past the end included). */
function passProgram(shaderKey: string, variableNames: string[], outputShape: number[], invocations: number,
  userCode: string): WebGPUProgram {
  return {
    variableNames, outputShape, shaderKey,
    dispatchLayout: { x: [0] },
    dispatch: [Math.ceil(invocations / SEGMENT_SUM_WORKGROUP), 1, 1],
    workgroupSize: [SEGMENT_SUM_WORKGROUP, 1, 1],
    uniforms: PASS_UNIFORMS,
    getUserCode: () => userCode,
  };
}

/**
 * counts ([digits * numBlocks + digits] int32): counts[d * numBlocks + b] = how many positions of block b of the
 * pass's input have digit d (the last `digits` entries are the scan's). One invocation a block.
 */
function digitCountProgram(first: boolean, digits: number, numBlocks: number): WebGPUProgram {
  return passProgram(`micseSegmentDigitCount${first ? 'Ids' : ''}`, ['source'], [digits * numBlocks + digits], numBlocks, `
  ${passReadsWgsl(first)}

  fn main(block : i32) {
    if (block < uniforms.numBlocks) {
      var counts : array<i32, ${1 << MAX_DIGIT_BITS}>;
      let begin = block * uniforms.blockRows;
      let end = min(begin + uniforms.blockRows, uniforms.rows);
      for (var t = begin; t < end; t++) {
        let d = digitOf(pairAt(t).x);
        counts[d] = counts[d] + 1;
      }
      for (var d = 0; d < uniforms.digits; d++) { result[d * uniforms.numBlocks + block] = counts[d]; }
    }
  }`);
}

/**
 * The counts scanned in place, one invocation a digit d: counts[d * numBlocks + b] becomes the number of positions
 * of blocks < b with digit d, and counts[digits * numBlocks + d] the digit's total.
 */
function countScanProgram(digits: number, numBlocks: number): WebGPUProgram {
  return passProgram('micseSegmentCountScan', [], [digits * numBlocks + digits], digits, `
  fn main(d : i32) {
    if (d < uniforms.digits) {
      var running = 0;
      for (var b = 0; b < uniforms.numBlocks; b++) {
        let count = result[d * uniforms.numBlocks + b];
        result[d * uniforms.numBlocks + b] = running;
        running = running + count;
      }
      result[uniforms.digits * uniforms.numBlocks + d] = running;
    }
  }`);
}

/**
 * The pass's output pairs ([rows * 2] int32, (key, row) interleaved), one invocation a block: walking the block in
 * order, each pair goes to the next free place of its digit, which starts after the positions of the smaller
 * digits (their totals) and of the digit in the blocks before (the scanned counts). Stable.
 */
function placeProgram(first: boolean, rows: number, numBlocks: number): WebGPUProgram {
  return passProgram(`micseSegmentPlace${first ? 'Ids' : ''}`, ['source', 'offsets'], [rows * 2], numBlocks, `
  ${passReadsWgsl(first)}

  fn main(block : i32) {
    if (block < uniforms.numBlocks) {
      var next : array<i32, ${1 << MAX_DIGIT_BITS}>;
      var digitStart = 0;
      for (var d = 0; d < uniforms.digits; d++) {
        next[d] = digitStart + offsets[d * uniforms.numBlocks + block];
        digitStart = digitStart + offsets[uniforms.digits * uniforms.numBlocks + d];
      }
      let begin = block * uniforms.blockRows;
      let end = min(begin + uniforms.blockRows, uniforms.rows);
      for (var t = begin; t < end; t++) {
        let pair = pairAt(t);
        let d = digitOf(pair.x);
        let place = next[d];
        next[d] = place + 1;
        result[2 * place] = pair.x;
        result[2 * place + 1] = pair.y;
      }
    }
  }`);
}

/**
 * out[id, j] = the sum of x[i, j] over the rows i of that id, added in row order from 0 (as the cpu and wasm
 * scatter-adds add them, so the sums are theirs to the bit): one invocation per element of x (read as
 * [rows, inner]) and of the sorted pairs ([rows * 2]: position t, column j); the invocations of the first position
 * of an id's run walk the run, the others return. Ids out of range (key numSegments) are dropped; the output is
 * zero-filled before, for the ids that do not occur.
 */
function runSumProgram(numSegments: number, inner: number, xSize: number): WebGPUProgram {
  return {
    variableNames: ['x', 'sorted'],
    outputShape: [numSegments, inner],
    shaderKey: 'micseSegmentRunSum',
    dispatchLayout: { x: [0] },
    dispatch: [Math.ceil(xSize / SEGMENT_SUM_WORKGROUP), 1, 1],
    workgroupSize: [SEGMENT_SUM_WORKGROUP, 1, 1],
    uniforms: 'numSegments : i32, inner : i32, xSize : i32, rows : i32,',
    getUserCode: () => `
  fn main(index : i32) {
    if (index < uniforms.xSize) {
      let t = index / uniforms.inner;
      let segment = sorted[2 * t];
      if (segment < uniforms.numSegments && (t == 0 || sorted[2 * t - 2] != segment)) {
        let column = index - t * uniforms.inner;
        var total = 0.0;
        for (var u = t; u < uniforms.rows && sorted[2 * u] == segment; u++) {
          total = total + x[sorted[2 * u + 1] * uniforms.inner + column];
        }
        setOutputAtIndex(segment * uniforms.inner + column, total);
      }
    }
  }`,
  };
}

/**
 * webgpu UnsortedSegmentSum of float32 x and int32 ids: a zero fill, a stable radix sort of the rows by id and the
 * run sums (no transposes, no float atomics: the same bits every run, and the cpu's).
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
    const { passes, digitBits, blockRows, numBlocks } = radixPlan(rows, numSegments);
    const digits = 1 << digitBits;
    let counts: tf.TensorInfo | null = null; // [digits * numBlocks + digits] int32
    let pairs: tf.TensorInfo | null = null; // [rows * 2] int32: (key, row), sorted by the passes so far
    try {
      counts = backend.makeTensorInfo([digits * numBlocks + digits], 'int32');
      for (let p = 0; p < passes; p++) {
        const first = pairs === null;
        const source = pairs ?? flatIds;
        const uniforms = [rows, numSegments, p * digitBits, digits, numBlocks, blockRows].map((v) => ({ type: 'int32', data: [v] }));
        backend.runWebGPUProgram(digitCountProgram(first, digits, numBlocks), [source], 'int32', uniforms, counts);
        backend.runWebGPUProgram(countScanProgram(digits, numBlocks), [], 'int32', uniforms, counts);
        const placed = backend.runWebGPUProgram(placeProgram(first, rows, numBlocks), [source, counts], 'int32', uniforms);
        if (pairs !== null) backend.disposeData(pairs.dataId);
        pairs = placed;
      }
      const uniforms = [numSegments, inner, xSize, rows].map((v) => ({ type: 'int32', data: [v] }));
      backend.runWebGPUProgram(runSumProgram(numSegments, inner, xSize), [flatX, pairs!], 'float32', uniforms, zeros);
    } catch (e) {
      backend.disposeData(zeros.dataId);
      throw e;
    } finally {
      if (pairs !== null) backend.disposeData(pairs.dataId);
      if (counts !== null) backend.disposeData(counts.dataId);
    }
    return { dataId: zeros.dataId, shape: [numSegments, ...x.shape.slice(segmentIds.shape.length)], dtype: 'float32' };
  };
}
