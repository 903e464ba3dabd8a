/**
 * The attention core's kernels on webgpu: 2 dispatches forward, 3 backward (the op, the kernels' plan and their
 * gradients: index.ts).
 */
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { dropoutUniforms, WGSL_DROPOUT, WGSL_DROPOUT_UNIFORMS } from '../dropout/webgpu.js';
import { tf } from '../../model/tf.js';
import { registerOp } from '../registry.js';
import { packUniforms, rawBindings, recordRaw, type RawProgram } from '../platform/webgpuPrograms.js';
import {
  ATTENTION_CONTEXT, ATTENTION_CONTEXT_GRAD, ATTENTION_GRADIENTS, ATTENTION_PROBS, ATTENTION_PROBS_GRAD, dimsOf, type ContextAttrs,
  type Dims, type ProbsAttrs,
} from './index.js';

/**
 * Edge of the square tiles: a workgroup computes a TILE x TILE block of a product (rows x columns), staging TILE x
 * TILE blocks of both operands in workgroup memory per step along the inner dimension.
 */
const TILE = 32;
/**
 * A workgroup is THREADS x THREADS threads; each owns PER_THREAD x PER_THREAD outputs of the block. 64 threads with
 * 4 x 4 outputs each (TF.js's own matmul tile): few threads per barrier, which a CPU WebGPU (SwiftShader) pays per
 * thread, running a workgroup's threads in turn at each one.
 */
const THREADS = 8;
const PER_THREAD = TILE / THREADS;
/** One padding float per staged row, so staging along columns does not hit one memory bank. */
const PAD = 1;
// Workgroup memory of the softmax rows programs: two staged blocks (2 x 32 x 33 floats) and three row partials
// (3 x 32 x 8 floats), 11,520 bytes, within WebGPU's guaranteed 16,384 (maxComputeWorkgroupStorageSize).

/** float32's lowest value: where running row maxima start (the additive mask value, so no score is below it). */
const F32_LOWEST = -3.4028234663852886e38;

// ---------------------------------------------------------------------------------------------------------------
// WebGPU programs (WGSL after the header WebGPUBackend.runWebGPUProgram generates: the uniforms, `result`, one
// read-only array per input named as in variableNames, `localId`/`localIndex`/`workgroupId`; see webgpuPrograms.ts).
// Every shape is a uniform, so each program compiles once.
// ---------------------------------------------------------------------------------------------------------------

/** Uniform fields of every program, and those of the softmax rows programs (1) and (5) after them. */
const HEAD_UNIFORMS = 'seqLen : i32, heads : i32, headSize : i32,';
const ROWS_UNIFORMS = `${HEAD_UNIFORMS} attnScale : f32, ${WGSL_DROPOUT_UNIFORMS}`;

type Uniforms = { type: 'int32' | 'uint32' | 'float32'; data: number[] }[];

function headUniforms(d: Dims): Uniforms {
  return [{ type: 'int32', data: [d.T] }, { type: 'int32', data: [d.nh] }, { type: 'int32', data: [d.dh] }];
}

function rowsUniforms(d: Dims, a: ProbsAttrs): Uniforms {
  return [...headUniforms(d), { type: 'float32', data: [a.scale] }, ...dropoutUniforms(a.rate, a.seed)];
}

/**
 * Flat indices: (t, c) of head z = b * nh + h in [B, T, nh * dh]; the same in part `part` (0 q, 1 k, 2 v) of the
 * packed [B, T, 3 * nh * dh]; (i, j) of head z in [B, nh, T, T].
 */
const WGSL_INDEX = `
  fn headAt(z : i32, t : i32, c : i32) -> i32 {
    let b = z / uniforms.heads;
    let h = z - b * uniforms.heads;
    return (b * uniforms.seqLen + t) * uniforms.heads * uniforms.headSize + h * uniforms.headSize + c;
  }
  fn packedAt(part : i32, z : i32, t : i32, c : i32) -> i32 {
    let b = z / uniforms.heads;
    let h = z - b * uniforms.heads;
    let H = uniforms.heads * uniforms.headSize;
    return (b * uniforms.seqLen + t) * 3 * H + part * H + h * uniforms.headSize + c;
  }
  fn probAt(z : i32, i : i32, j : i32) -> i32 {
    return (z * uniforms.seqLen + i) * uniforms.seqLen + j;
  }`;

/** The staged blocks of the two operands: [TILE rows][TILE columns + PAD]. */
const WGSL_TILES = `
  var<workgroup> tileA : array<f32, ${TILE * (TILE + PAD)}>;
  var<workgroup> tileB : array<f32, ${TILE * (TILE + PAD)}>;`;

/** How a product reads one operand. */
interface Operand {
  /** WGSL expression of the operand's element (row, col) of head `z`, from WGSL expressions of row and col. */
  at: (row: string, col: string) => string;
  /** Whether consecutive columns are adjacent in memory (else consecutive rows are): staging reads along it. */
  colContiguous: boolean;
}

/**
 * WGSL of `fn name(z, m0, n0, mLen, nLen, kLen) -> array<f32, PER_THREAD^2>`: this thread's outputs of the block
 * [m0, m0 + TILE) x [n0, n0 + TILE) of A B (A [mLen, kLen], B [kLen, nLen] of head z; out of range reads 0): rows
 * m0 + ty + r * THREADS, columns n0 + tx + c * THREADS at [r * PER_THREAD + c]. The inner loop stops at kLen (a
 * head size below TILE multiplies no staged zeros). Has barriers: call it in uniform control flow with a uniform kLen.
 */
function productWgsl(name: string, a: Operand, b: Operand): string {
  const staged = (o: Operand, tile: string, rowLen: string, colLen: string, r0: string, c0: string) => `
        let ${tile}Row = ${o.colContiguous ? `e / ${TILE}` : `e % ${TILE}`};
        let ${tile}Col = ${o.colContiguous ? `e % ${TILE}` : `e / ${TILE}`};
        var ${tile}Value = 0.0;
        if (${r0} + ${tile}Row < ${rowLen} && ${c0} + ${tile}Col < ${colLen}) {
          ${tile}Value = ${o.at(`${r0} + ${tile}Row`, `${c0} + ${tile}Col`)};
        }
        ${tile}[${tile}Row * ${TILE + PAD} + ${tile}Col] = ${tile}Value;`;
  return `
  fn ${name}(z : i32, m0 : i32, n0 : i32, mLen : i32, nLen : i32, kLen : i32) -> array<f32, ${PER_THREAD * PER_THREAD}> {
    var acc : array<f32, ${PER_THREAD * PER_THREAD}>;
    let tx = i32(localId.x);
    let ty = i32(localId.y);
    for (var k0 = 0; k0 < kLen; k0 = k0 + ${TILE}) {
      for (var e = i32(localIndex); e < ${TILE * TILE}; e = e + ${THREADS * THREADS}) {${
        staged(a, 'tileA', 'mLen', 'kLen', 'm0', 'k0')}${staged(b, 'tileB', 'kLen', 'nLen', 'k0', 'n0')}
      }
      workgroupBarrier();
      let kEnd = min(${TILE}, kLen - k0);
      for (var kk = 0; kk < kEnd; kk = kk + 1) {
        for (var r = 0; r < ${PER_THREAD}; r = r + 1) {
          let x = tileA[(ty + r * ${THREADS}) * ${TILE + PAD} + kk];
          for (var c = 0; c < ${PER_THREAD}; c = c + 1) {
            acc[r * ${PER_THREAD} + c] = acc[r * ${PER_THREAD} + c] + x * tileB[kk * ${TILE + PAD} + tx + c * ${THREADS}];
          }
        }
      }
      workgroupBarrier();
    }
    return acc;
  }`;
}

/**
 * WGSL running `body` for each element (row, col) of the TILE x TILE block at (m0, n0) that this thread owns (rows
 * m0 + ty + r * THREADS, columns n0 + tx + c * THREADS) and that lies inside [rows) x [cols); `body` sees r and c too.
 */
function forOwned(row: string, col: string, rows: string, cols: string, body: string): string {
  return `for (var r = 0; r < ${PER_THREAD}; r = r + 1) {
      for (var c = 0; c < ${PER_THREAD}; c = c + 1) {
        let ${row} = m0 + i32(localId.y) + r * ${THREADS};
        let ${col} = n0 + i32(localId.x) + c * ${THREADS};
        if (${row} < ${rows} && ${col} < ${cols}) {
          ${body}
        }
      }
    }`;
}

/**
 * Operands of head z: a [B, T, nh * dh] tensor as [T, dh]; part `p` (0 q, 1 k, 2 v) of the packed [B, T, 3 nh dh]
 * as [T, dh], or transposed as [dh, T]; a [B, nh, T, T] tensor, or transposed.
 */
const heads = (name: string): Operand => ({ at: (t, c) => `${name}[headAt(z, ${t}, ${c})]`, colContiguous: true });
const part = (name: string, p: number): Operand => ({ at: (t, c) => `${name}[packedAt(${p}, z, ${t}, ${c})]`, colContiguous: true });
const partT = (name: string, p: number): Operand => ({ at: (c, t) => `${name}[packedAt(${p}, z, ${t}, ${c})]`, colContiguous: false });
const square = (name: string): Operand => ({ at: (i, j) => `${name}[probAt(z, ${i}, ${j})]`, colContiguous: true });
const squareT = (name: string): Operand => ({ at: (j, i) => `${name}[probAt(z, ${i}, ${j})]`, colContiguous: false });

/** A program whose workgroup id is (x, y, z) = `dispatch`'s grid, with `main()` taking no index. */
function gridProgram(shaderKey: string, outputShape: number[], variableNames: string[], dispatch: [number, number, number],
  uniforms: string, userCode: string): WebGPUProgram {
  const rank = outputShape.length;
  return {
    variableNames,
    outputShape,
    shaderKey,
    // Not flat: the header calls `main()`; the layout only names the output dimensions along the grid's axes.
    dispatchLayout: { x: [rank - 1], y: [rank - 2], z: outputShape.slice(0, rank - 2).map((_, i) => i) },
    dispatch,
    workgroupSize: [THREADS, THREADS, 1],
    uniforms,
    getUserCode: () => userCode,
  };
}

/** The grid's limit per axis on this device (the backend would reshape a larger grid, which these programs do not expect). */
function checkGrid(backend: WebGPUBackend, d: Dims, dispatch: number[]): void {
  const limit = backend.device.limits.maxComputeWorkgroupsPerDimension;
  if (dispatch.some((n) => n > limit)) {
    throw new Error(`selfAttention: ${d.z} heads x batch or ${d.T} tokens exceed this device's ${limit} workgroups per dimension`);
  }
}

/**
 * A product of two head operands into `outputShape`, one TILE x TILE block per workgroup: grid (column blocks, row
 * blocks, z); `store(m, n)` is the WGSL flat index of output (m, n) of head z.
 */
function productProgram(shaderKey: string, outputShape: number[], variableNames: [string, string], a: Operand, b: Operand,
  size: { m: string; n: string; k: string; grid: [number, number, number] }, store: (m: string, n: string) => string): WebGPUProgram {
  return gridProgram(shaderKey, outputShape, variableNames, size.grid, HEAD_UNIFORMS, `${WGSL_INDEX}${WGSL_TILES}${productWgsl('product', a, b)}
  fn main() {
    let z = i32(workgroupId.z);
    let m0 = i32(workgroupId.y) * ${TILE};
    let n0 = i32(workgroupId.x) * ${TILE};
    let mLen = ${size.m};
    let nLen = ${size.n};
    var acc = product(z, m0, n0, mLen, nLen, ${size.k});
    ${forOwned('m', 'n', 'mLen', 'nLen', `result[${store('m', 'n')}] = acc[r * ${PER_THREAD} + c];`)}
  }`);
}

/** Blocks of TILE covering n (rows, columns or tokens). */
const blocks = (n: number) => Math.ceil(n / TILE);

/** (2) context = probs v: [B, nh, T, T] times v (part 2 of qkv) per head, into [B, T, nh * dh]. */
function contextProgram(d: Dims): WebGPUProgram {
  return productProgram('micseAttentionContext', [d.B, d.T, d.H], ['p', 'qkv'], square('p'), part('qkv', 2),
    { m: 'uniforms.seqLen', n: 'uniforms.headSize', k: 'uniforms.seqLen', grid: [blocks(d.dh), blocks(d.T), d.z] },
    (m, n) => `headAt(z, ${m}, ${n})`);
}

/**
 * (1) probs, or with `backward` (5) dScores, into [B, nh, T, T]: a workgroup per (block of TILE query rows, z), in two
 * passes over the key blocks.
 *   pass 1: s = q k^T * scale + mask, kept in `result`; per thread and row the running max m, sum l of exp(s - m)
 *           and (backward) u, the sum of dP exp(s - m) with dP = dropout(dProbs)
 *   combine: the THREADS partials of each row (rescaled to the row's max); (backward) rowsum(dP * P) = u / l
 *   pass 2: P = exp(s - m) / l from `result`; forward: dropout(P); backward: P * (dP - u / l) * scale
 * A thread reads back only the elements it wrote, so `result` needs no barrier between the passes.
 */
function softmaxRowsProgram(d: Dims, backward: boolean): WebGPUProgram {
  const names = backward ? ['qkv', 'mask', 'dProbs'] : ['qkv', 'mask'];
  const partial = (name: string) => `var<workgroup> ${name} : array<f32, ${TILE * THREADS}>;`; // [row of the block][tx]
  return gridProgram(backward ? 'micseAttentionDScores' : 'micseAttentionProbs', [d.B, d.nh, d.T, d.T], names,
    [blocks(d.T), d.z, 1], ROWS_UNIFORMS, `${WGSL_INDEX}${WGSL_DROPOUT}${WGSL_TILES}
  ${partial('partMax')}
  ${partial('partSum')}
  ${backward ? partial('partDot') : ''}
  ${productWgsl('scores', part('qkv', 0), partT('qkv', 1))}
  fn main() {
    let z = i32(workgroupId.y);
    let m0 = i32(workgroupId.x) * ${TILE};
    let T = uniforms.seqLen;
    let b = z / uniforms.heads;
    let tx = i32(localId.x);
    let ty = i32(localId.y);
    var rowMax : array<f32, ${PER_THREAD}>;
    var rowSum : array<f32, ${PER_THREAD}>;
    ${backward ? `var rowDot : array<f32, ${PER_THREAD}>;` : ''}
    for (var r = 0; r < ${PER_THREAD}; r = r + 1) { rowMax[r] = ${F32_LOWEST}; }
    for (var n0 = 0; n0 < T; n0 = n0 + ${TILE}) {
      var s = scores(z, m0, n0, T, T, uniforms.headSize);
      ${forOwned('i', 'j', 'T', 'T', `let idx = probAt(z, i, j);
          let v = s[r * ${PER_THREAD} + c] * uniforms.attnScale + mask[b * T + j];
          result[idx] = v;
          let top = max(rowMax[r], v);
          let decay = exp(rowMax[r] - top);
          let e = exp(v - top);
          rowSum[r] = rowSum[r] * decay + e;
          ${backward ? 'rowDot[r] = rowDot[r] * decay + dropoutAt(idx, dProbs[idx]) * e;' : ''}
          rowMax[r] = top;`)}
    }
    for (var r = 0; r < ${PER_THREAD}; r = r + 1) {
      let o = (ty + r * ${THREADS}) * ${THREADS} + tx;
      partMax[o] = rowMax[r];
      partSum[o] = rowSum[r];
      ${backward ? 'partDot[o] = rowDot[r];' : ''}
    }
    workgroupBarrier();
    for (var r = 0; r < ${PER_THREAD}; r = r + 1) {
      let o = (ty + r * ${THREADS}) * ${THREADS};
      var top = ${F32_LOWEST};
      for (var t = 0; t < ${THREADS}; t = t + 1) { top = max(top, partMax[o + t]); }
      var sum = 0.0;
      ${backward ? 'var dot = 0.0;' : ''}
      for (var t = 0; t < ${THREADS}; t = t + 1) {
        let w = exp(partMax[o + t] - top);
        sum = sum + partSum[o + t] * w;
        ${backward ? 'dot = dot + partDot[o + t] * w;' : ''}
      }
      rowMax[r] = top;
      rowSum[r] = sum;
      ${backward ? 'rowDot[r] = dot / sum;' : ''}
    }
    for (var n0 = 0; n0 < T; n0 = n0 + ${TILE}) {
      ${forOwned('i', 'j', 'T', 'T', `let idx = probAt(z, i, j);
          let p = exp(result[idx] - rowMax[r]) / rowSum[r];
          result[idx] = ${backward ? 'p * (dropoutAt(idx, dProbs[idx]) - rowDot[r]) * uniforms.attnScale' : 'dropoutAt(idx, p)'};`)}
    }
  }`);
}

/**
 * Two products of one backward step in one dispatch (a raw program, webgpuPrograms.ts recordRaw: its grid and
 * outputs are its own): the grid's z axis holds the first product's heads, then the second's. Each half is
 * `product` with its own operands and grid extent, and writes its result through `write` (WGSL statements storing
 * `value` at row m, column n of head z). The branch on the half is on the workgroup id, uniform across the
 * workgroup, so the products' barriers stay in uniform control flow.
 */
interface Half {
  a: Operand;
  b: Operand;
  m: string;
  n: string;
  k: string;
  /** Column blocks of this half (the grid's x extent is the larger of the two halves'). */
  nBlocks: string;
  write: (m: string, n: string, value: string) => string;
}

function pairProgram(key: string, inputs: string[], outputs: string[], first: Half, second: Half): RawProgram {
  const half = (h: Half, name: string, z: string) => `
    let z = ${z};
    if (i32(wid.x) < ${h.nBlocks}) {
      let mLen = ${h.m};
      let nLen = ${h.n};
      var acc = ${name}(z, m0, n0, mLen, nLen, ${h.k});
      ${forOwned('m', 'n', 'mLen', 'nLen', h.write('m', 'n', `acc[r * ${PER_THREAD} + c]`))}
    }`;
  return {
    key,
    code: () => `${rawBindings(inputs, outputs, `${HEAD_UNIFORMS} z : i32,`)}
  var<private> localId : vec3<u32>;
  var<private> localIndex : u32;
  ${WGSL_INDEX}${WGSL_TILES}${productWgsl('productFirst', first.a, first.b)}${productWgsl('productSecond', second.a, second.b)}
  @compute @workgroup_size(${THREADS}, ${THREADS}, 1)
  fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_id) lid : vec3<u32>,
          @builtin(local_invocation_index) lindex : u32) {
    localId = lid;
    localIndex = lindex;
    let m0 = i32(wid.y) * ${TILE};
    let n0 = i32(wid.x) * ${TILE};
    if (i32(wid.z) < uniforms.z) {${half(first, 'productFirst', 'i32(wid.z)')}
    } else {${half(second, 'productSecond', 'i32(wid.z) - uniforms.z')}
    }
  }`,
  };
}

const HEAD_BLOCKS = `(uniforms.headSize + ${TILE - 1}) / ${TILE}`;
const SEQ_BLOCKS = `(uniforms.seqLen + ${TILE - 1}) / ${TILE}`;

/**
 * The probabilities' gradient with respect to qkv: (6) dq = dScores k into part 0 and (7) dk = dScores^T q into
 * part 1; part 2 (v) is 0 (the context's gradient holds dv).  p = dScores [B, nh, T, T], qkv [B, T, 3H] -> [B, T, 3H]
 */
const DQ_DK = pairProgram('micseAttentionDqDk', ['p', 'qkv'], ['dqkv'],
  { a: square('p'), b: part('qkv', 1), m: 'uniforms.seqLen', n: 'uniforms.headSize', k: 'uniforms.seqLen', nBlocks: HEAD_BLOCKS,
    write: (m, n, v) => `dqkv[packedAt(0, z, ${m}, ${n})] = ${v};` },
  { a: squareT('p'), b: part('qkv', 0), m: 'uniforms.seqLen', n: 'uniforms.headSize', k: 'uniforms.seqLen', nBlocks: HEAD_BLOCKS,
    write: (m, n, v) => `dqkv[packedAt(1, z, ${m}, ${n})] = ${v};\n          dqkv[packedAt(2, z, ${m}, ${n})] = 0.0;` });

/**
 * The context's gradients: (3) dProbs = dContext v^T, and with respect to qkv (4) dv = probs^T dContext into part 2,
 * parts 0 and 1 being 0.  probs [B, nh, T, T], qkv [B, T, 3H], dContext [B, T, H] -> dProbs [B, nh, T, T], [B, T, 3H]
 */
const DPROBS_DV = pairProgram('micseAttentionDProbsDv', ['probs', 'qkv', 'dContext'], ['dProbs', 'dqkv'],
  { a: heads('dContext'), b: partT('qkv', 2), m: 'uniforms.seqLen', n: 'uniforms.seqLen', k: 'uniforms.headSize', nBlocks: SEQ_BLOCKS,
    write: (m, n, v) => `dProbs[probAt(z, ${m}, ${n})] = ${v};` },
  { a: squareT('probs'), b: heads('dContext'), m: 'uniforms.seqLen', n: 'uniforms.headSize', k: 'uniforms.seqLen', nBlocks: HEAD_BLOCKS,
    write: (m, n, v) => `dqkv[packedAt(2, z, ${m}, ${n})] = ${v};\n          dqkv[packedAt(0, z, ${m}, ${n})] = 0.0;\n          dqkv[packedAt(1, z, ${m}, ${n})] = 0.0;` });

/** One dispatch of a pair program: grid (the halves' larger column-block count, row blocks, 2 z). */
function runPair(backend: unknown, d: Dims, program: RawProgram, inputs: tf.TensorInfo[], shapes: number[][]): tf.TensorInfo[] {
  const grid: [number, number, number] = [Math.max(blocks(d.T), blocks(d.dh)), blocks(d.T), 2 * d.z];
  return recordRaw(backend, program, inputs, shapes, grid, packUniforms([...headUniforms(d), { type: 'int32', data: [d.z] }]));
}

type Run = (p: WebGPUProgram, inputs: tf.TensorInfo[], uniforms: Uniforms) => tf.TensorInfo;

function runner(backend: unknown, d: Dims): Run {
  const b = backend as WebGPUBackend;
  return (p, inputs, uniforms) => {
    checkGrid(b, d, p.dispatch);
    return b.runWebGPUProgram(p, inputs, 'float32', uniforms);
  };
}

const webgpuKernels: Record<string, tf.KernelFunc> = {
  [ATTENTION_PROBS]: ({ inputs, backend, attrs }) => {
    const { qkv, mask } = inputs as { qkv: tf.TensorInfo; mask: tf.TensorInfo };
    const a = attrs as unknown as ProbsAttrs;
    const d = dimsOf(qkv.shape, a.heads);
    return runner(backend, d)(softmaxRowsProgram(d, false), [qkv, mask], rowsUniforms(d, a));
  },
  [ATTENTION_PROBS_GRAD]: ({ inputs, backend, attrs }) => {
    const { qkv, mask, dProbs } = inputs as { qkv: tf.TensorInfo; mask: tf.TensorInfo; dProbs: tf.TensorInfo };
    const a = attrs as unknown as ProbsAttrs;
    const d = dimsOf(qkv.shape, a.heads);
    const dScores = runner(backend, d)(softmaxRowsProgram(d, true), [qkv, mask, dProbs], rowsUniforms(d, a)); // [B, nh, T, T]
    const [dqkv] = runPair(backend, d, DQ_DK, [dScores, qkv], [qkv.shape]); // [B, T, 3H]: dq, dk, 0
    (backend as WebGPUBackend).disposeData(dScores.dataId);
    return dqkv!;
  },
  [ATTENTION_CONTEXT]: ({ inputs, backend, attrs }) => {
    const { probs, qkv } = inputs as { probs: tf.TensorInfo; qkv: tf.TensorInfo };
    const d = dimsOf(qkv.shape, (attrs as unknown as ContextAttrs).heads);
    return runner(backend, d)(contextProgram(d), [probs, qkv], headUniforms(d));
  },
  [ATTENTION_CONTEXT_GRAD]: ({ inputs, backend, attrs }) => {
    const { probs, qkv, dContext } = inputs as { probs: tf.TensorInfo; qkv: tf.TensorInfo; dContext: tf.TensorInfo };
    const d = dimsOf(qkv.shape, (attrs as unknown as ContextAttrs).heads);
    return runPair(backend, d, DPROBS_DV, [probs, qkv, dContext], [probs.shape, qkv.shape]); // [dProbs, (0, 0, dv)]
  },
};

/** Registers the attention-core kernels of `backendName` if it is webgpu, and their gradients. */
export function registerAttentionWebgpu(backendName: string): void {
  registerOp(backendName, { webgpu: webgpuKernels }, ATTENTION_GRADIENTS);
}
