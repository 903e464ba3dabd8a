/**
 * The LayerNorm and addLayerNorm kernels of webgpu (the ops, their arithmetic and gradients: index.ts). WGSL after the
 * header WebGPUBackend.runWebGPUProgram generates: uniforms, `result`, one read-only array per input named as in
 * variableNames, `localId`, `fn main(index)` with the global index.
 */
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { dropoutUniforms, WGSL_DROPOUT, WGSL_DROPOUT_UNIFORMS } from '../dropout/webgpu.js';
import { tf } from '../../model/tf.js';
import { registerOp } from '../registry.js';
import { linearGrid, packUniforms, rawBindings, recordRaw, workgroupSumWgsl, type RawProgram } from '../platform/webgpuPrograms.js';
import {
  ADD_LAYER_NORM, ADD_LAYER_NORM_GRAD, LAYER_NORM, LAYER_NORM_GRAD, LAYER_NORM_GRADIENTS, type AddLayerNormAttrs, type LayerNormAttrs,
} from './index.js';

/**
 * Threads per workgroup: LayerNorm rows (one workgroup per row). 32 (one warp on most GPUs, 24 elements a thread at
 * BERT-base's 768): fewer barrier levels in the row sums, and fewer threads each barrier waits on where the
 * threads run in turn (SwiftShader's CPU WebGPU).
 */
const ROW_WORKGROUP = 32;
/**
 * Threads per workgroup of the column sums' second pass (dgamma, dbeta), and rows one thread of their first pass
 * adds per column (ROW_WORKGROUP columns a workgroup): 128 chunks x 24 column blocks for BERT-base's 4,096 x 768.
 */
const COLUMN_WORKGROUP = 64;
const COLUMN_CHUNK = 32;

/** Workgroup tree sum of `v` over the ROW_WORKGROUP threads; every thread gets the total. */
const WGSL_ROW_SUM = workgroupSumWgsl('rowSum', ROW_WORKGROUP);

/**
 * How a LayerNorm program reads its input row `s`: `fn sourceAt(i : i32) -> f32` is s at flat index i, from the
 * program's inputs `inputs` (named as the kernel's) and uniform fields `uniforms` (after `rows, H, eps`).
 */
interface RowSource {
  /** Shader-key suffix. */
  key: string;
  inputs: string[];
  uniforms: string;
  wgsl: string;
}

/** layerNorm: s = x. */
const PLAIN_SOURCE: RowSource = { key: '', inputs: ['x'], uniforms: '', wgsl: 'fn sourceAt(i : i32) -> f32 { return x[i]; }' };

/**
 * addLayerNorm: s = dropout(x) + residual, the dropout seededDropout's mask at the same flat index (kernels/dropout
 * WGSL_DROPOUT); at rate 0 x itself (dropoutAt would give x * 1.0, the same value, after two hashes).
 */
const DROPOUT_ADD_SOURCE: RowSource = {
  key: 'DropoutAdd',
  inputs: ['x', 'residual'],
  uniforms: WGSL_DROPOUT_UNIFORMS,
  wgsl: `${WGSL_DROPOUT}
  fn sourceAt(i : i32) -> f32 {
    var v = x[i];
    if (uniforms.rate > 0.0) { v = dropoutAt(i, v); }
    return v + residual[i];
  }`,
};

/**
 * A program of ROW_WORKGROUP threads per workgroup and `workgroups` workgroups, reading the LayerNorm input through
 * `source`; `body` sees `wg` (the workgroup's linear index), `lid` and `H`.
 */
function workgroupProgram(shaderKey: string, source: RowSource, outputShape: number[], workgroups: number,
  extraInputs: string[], preamble: string, body: string): WebGPUProgram {
  return {
    variableNames: [...source.inputs, ...extraInputs],
    outputShape,
    shaderKey: `${shaderKey}${source.key}`,
    dispatchLayout: { x: outputShape.map((_, i) => i) },
    dispatch: [workgroups, 1, 1], // the backend reshapes it past the per-dimension limit; `index / WG` stays linear
    workgroupSize: [ROW_WORKGROUP, 1, 1],
    size: true,
    uniforms: `rows : i32, H : i32, eps : f32, ${source.uniforms}`,
    getUserCode: () => `${WGSL_ROW_SUM}${source.wgsl}${preamble}
  fn main(index : i32) {
    let wg = index / ${ROW_WORKGROUP};
    let lid = i32(localId.x);
    let H = uniforms.H;
    ${body}
  }`,
  };
}

/** One workgroup per row of `s [rows, H]`: `row`, `live` (a real row) and `o` (its offset) for `body`. */
function rowProgram(shaderKey: string, source: RowSource, outputShape: number[], rows: number, extraInputs: string[], body: string): WebGPUProgram {
  return workgroupProgram(shaderKey, source, outputShape, rows, extraInputs, '', `
    let row = wg;
    let live = row < uniforms.rows;
    let o = row * H;
    ${body}`);
}

/** mean and rstd of the row at offset `o` of s, if `live` (every thread of the workgroup gets both). */
const WGSL_ROW_STATS = `
    var s = 0.0;
    if (live) { for (var k = lid; k < H; k = k + ${ROW_WORKGROUP}) { s = s + sourceAt(o + k); } }
    let mean = rowSum(s) / f32(H);
    var q = 0.0;
    if (live) { for (var k = lid; k < H; k = k + ${ROW_WORKGROUP}) { let d = sourceAt(o + k) - mean; q = q + d * d; } }
    let rstd = 1.0 / sqrt(rowSum(q) / f32(H) + uniforms.eps);`;

/** y = xhat * gamma + beta, one workgroup per row.  s [rows, H] -> y [rows, H] */
function forwardProgram(source: RowSource, shape: number[], rows: number): WebGPUProgram {
  return rowProgram('micseLayerNorm', source, shape, rows, ['gamma', 'beta'], `${WGSL_ROW_STATS}
    if (live) {
      for (var k = lid; k < H; k = k + ${ROW_WORKGROUP}) {
        result[o + k] = (sourceAt(o + k) - mean) * rstd * gamma[k] + beta[k];
      }
    }`);
}

/**
 * WGSL of ds = rstd * (g - mean(g) - xhat * mean(g * xhat)), xhat recomputed, for the row at `o`; `store(i, v)`
 * writes ds's value v at flat index i.
 */
function dxWgsl(store: (i: string, v: string) => string): string {
  return `${WGSL_ROW_STATS}
    var sg = 0.0;
    var sgx = 0.0;
    if (live) {
      for (var k = lid; k < H; k = k + ${ROW_WORKGROUP}) {
        let g = dy[o + k] * gamma[k];
        sg = sg + g;
        sgx = sgx + g * (sourceAt(o + k) - mean) * rstd;
      }
    }
    let mg = rowSum(sg) / f32(H);
    let mgx = rowSum(sgx) / f32(H);
    if (live) {
      for (var k = lid; k < H; k = k + ${ROW_WORKGROUP}) {
        ${store('o + k', 'rstd * (dy[o + k] * gamma[k] - mg - (sourceAt(o + k) - mean) * rstd * mgx)')}
      }
    }`;
}

/**
 * ds (and, with `dropoutOfDs`, x's gradient dropout(ds): seededDropout's mask at the same flat index), one workgroup
 * per row, one raw dispatch (webgpuPrograms.ts recordRaw), which also stores each row's mean and rstd for the column
 * pass.  -> ds [rows, H], (dx [rows, H],) stats [rows, 2] = (mean, rstd)
 */
function dxRaw(source: RowSource, dropoutOfDs: boolean): RawProgram {
  const outputs = dropoutOfDs ? ['ds', 'dx', 'stats'] : ['ds', 'stats'];
  return {
    key: `micseLayerNormDx${source.key}${dropoutOfDs ? 'Dropout' : ''}`,
    code: () => `${rawBindings([...source.inputs, 'gamma', 'dy'], outputs, `rows : i32, H : i32, eps : f32, ${source.uniforms}`)}
  var<private> localIndex : u32;
  ${WGSL_ROW_SUM}${source.wgsl}
  @compute @workgroup_size(${ROW_WORKGROUP}, 1, 1)
  fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>,
          @builtin(local_invocation_index) lindex : u32) {
    localIndex = lindex;
    let row = i32(wid.y * nwg.x + wid.x);
    let lid = i32(lindex);
    let H = uniforms.H;
    let live = row < uniforms.rows;
    let o = row * H;
    ${dxWgsl((i, v) => dropoutOfDs ? `let v = ${v};
        ds[${i}] = v;
        dx[${i}] = dropoutAt(${i}, v);` : `ds[${i}] = ${v};`)}
    if (live && lid == 0) {
      stats[2 * row] = mean;
      stats[2 * row + 1] = rstd;
    }
  }`,
  };
}

/**
 * First pass of dgamma and dbeta (a deterministic sum over thousands of threads needs two passes: one thread per
 * column over 4,096 rows left the GPU nearly idle). One thread per column j and chunk c of COLUMN_CHUNK rows, with
 * the rows' mean and rstd as the dx program stored them (so the same xhat):
 *   partial[c, j] = sum over the chunk's rows r of dy[r, j] * xhat[r, j];  partial[c, H + j] = ... of dy[r, j]
 * -> [chunks, 2H]. xhat is recomputed from s, not read: nothing of [rows, H] is materialised besides ds, and the
 * statistics are the dx program's (recomputing them per chunk, row after row, dominated this kernel's time).
 */
function columnPartialsProgram(source: RowSource, rows: number, H: number): WebGPUProgram {
  const chunks = Math.ceil(rows / COLUMN_CHUNK);
  const blocks = Math.ceil(H / ROW_WORKGROUP);
  return workgroupProgram('micseLayerNormColumnPartials', source, [chunks, 2 * H], chunks * blocks, ['dy', 'stats'], '', `
    let blocks = (H + ${ROW_WORKGROUP - 1}) / ${ROW_WORKGROUP}; // not baked in: the pipeline cache key has no H
    let chunk = wg / blocks;
    let j = (wg % blocks) * ${ROW_WORKGROUP} + lid;
    let first = chunk * ${COLUMN_CHUNK};
    let n = min(${COLUMN_CHUNK}, uniforms.rows - first); // rows of this chunk; <= 0 past the last chunk
    if (n > 0 && j < H) {
      var dg = 0.0;
      var db = 0.0;
      for (var r = first; r < first + n; r = r + 1) {
        let i = r * H + j;
        dg = dg + dy[i] * (sourceAt(i) - stats[2 * r]) * stats[2 * r + 1];
        db = db + dy[i];
      }
      result[chunk * 2 * H + j] = dg;
      result[chunk * 2 * H + H + j] = db;
    }`);
}

/**
 * Second pass, dgamma and dbeta in one dispatch (a raw program: two outputs): per column h, the sums over chunks c
 * of partial[c, h] and of partial[c, H + h], one thread per column.  partial [chunks, 2H] -> dgamma, dbeta [H]
 */
const COLUMN_FINAL: RawProgram = {
  key: 'micseLayerNormColumnFinal',
  code: () => `${rawBindings(['partial'], ['dgamma', 'dbeta'], 'chunks : i32, H : i32,')}
  @compute @workgroup_size(${COLUMN_WORKGROUP}, 1, 1)
  fn main(@builtin(global_invocation_id) gid : vec3<u32>) {
    let h = i32(gid.x);
    if (h < uniforms.H) {
      let width = 2 * uniforms.H;
      var dg = 0.0;
      var db = 0.0;
      for (var c = 0; c < uniforms.chunks; c = c + 1) {
        dg = dg + partial[c * width + h];
        db = db + partial[c * width + uniforms.H + h];
      }
      dgamma[h] = dg;
      dbeta[h] = db;
    }
  }`,
};

type Uniforms = { type: 'int32' | 'uint32' | 'float32'; data: number[] }[];

/** Values of the `rows, H, eps` uniform fields, then `extra` (the source's fields). */
function rowUniforms(rows: number, H: number, eps: number, extra: Uniforms = []): Uniforms {
  return [{ type: 'int32', data: [rows] }, { type: 'int32', data: [H] }, { type: 'float32', data: [eps] }, ...extra];
}

/** LayerNorm of the source's `s [rows, H]` on webgpu, one dispatch.  -> y [rows, H] */
function layerNormWebgpu(b: WebGPUBackend, source: RowSource, sourceInputs: tf.TensorInfo[], gamma: tf.TensorInfo,
  beta: tf.TensorInfo, eps: number, sourceUniforms: Uniforms = []): tf.TensorInfo {
  const shape = sourceInputs[0]!.shape;
  const rows = tf.util.sizeFromShape(shape) / gamma.shape[0]!;
  return b.runWebGPUProgram(forwardProgram(source, shape, rows), [...sourceInputs, gamma, beta], 'float32',
    rowUniforms(rows, gamma.shape[0]!, eps, sourceUniforms));
}

/**
 * LayerNorm's backward on webgpu in 3 dispatches: ds with the rows' mean and rstd (with `dropoutOfDs`, addLayerNorm's
 * source only, also x's gradient dropout(ds) from the same dispatch), the column partials, dgamma and dbeta.
 *   -> [ds [rows, H], dgamma [H], dbeta [H]] and, with `dropoutOfDs`, dx [rows, H]
 */
function layerNormGradWebgpu(b: WebGPUBackend, source: RowSource, sourceInputs: tf.TensorInfo[], gamma: tf.TensorInfo,
  dy: tf.TensorInfo, eps: number, sourceUniforms: Uniforms = [], dropoutOfDs = false): tf.TensorInfo[] {
  const H = gamma.shape[0]!;
  const rows = tf.util.sizeFromShape(dy.shape) / H;
  const u = rowUniforms(rows, H, eps, sourceUniforms);
  const outputs = recordRaw(b, dxRaw(source, dropoutOfDs), [...sourceInputs, gamma, dy],
    dropoutOfDs ? [dy.shape, dy.shape, [rows, 2]] : [dy.shape, [rows, 2]], linearGrid(b, rows), packUniforms(u));
  const [ds, dx, stats] = dropoutOfDs ? outputs : [outputs[0], undefined, outputs[1]];
  const partial = b.runWebGPUProgram(columnPartialsProgram(source, rows, H), [...sourceInputs, dy, stats!], 'float32', u); // [chunks, 2H]
  b.disposeData(stats!.dataId);
  const [dgamma, dbeta] = recordRaw(b, COLUMN_FINAL, [partial], [[H], [H]], [Math.ceil(H / COLUMN_WORKGROUP), 1, 1],
    packUniforms([{ type: 'int32', data: [partial.shape[0]!] }, { type: 'int32', data: [H] }]));
  b.disposeData(partial.dataId);
  return dx === undefined ? [ds!, dgamma!, dbeta!] : [ds!, dgamma!, dbeta!, dx];
}

type LayerNormInputs = { x: tf.TensorInfo; gamma: tf.TensorInfo; beta: tf.TensorInfo };
type LayerNormGradInputs = { x: tf.TensorInfo; gamma: tf.TensorInfo; dy: tf.TensorInfo };

const webgpuKernels: Record<string, tf.KernelFunc> = {
  [LAYER_NORM]: ({ inputs, backend, attrs }) => {
    const { x, gamma, beta } = inputs as LayerNormInputs;
    return layerNormWebgpu(backend as unknown as WebGPUBackend, PLAIN_SOURCE, [x], gamma, beta, (attrs as unknown as LayerNormAttrs).eps);
  },
  [LAYER_NORM_GRAD]: ({ inputs, backend, attrs }) => {
    const { x, gamma, dy } = inputs as LayerNormGradInputs;
    return layerNormGradWebgpu(backend as unknown as WebGPUBackend, PLAIN_SOURCE, [x], gamma, dy, (attrs as unknown as LayerNormAttrs).eps);
  },
  [ADD_LAYER_NORM]: ({ inputs, backend, attrs }) => {
    const { x, residual, gamma, beta } = inputs as LayerNormInputs & { residual: tf.TensorInfo };
    const a = attrs as unknown as AddLayerNormAttrs;
    return layerNormWebgpu(backend as unknown as WebGPUBackend, DROPOUT_ADD_SOURCE, [x, residual], gamma, beta, a.eps,
      dropoutUniforms(a.rate, a.seed));
  },
  [ADD_LAYER_NORM_GRAD]: ({ inputs, backend, attrs }) => {
    const { x, residual, gamma, dy } = inputs as LayerNormGradInputs & { residual: tf.TensorInfo };
    const a = attrs as unknown as AddLayerNormAttrs;
    return layerNormGradWebgpu(backend as unknown as WebGPUBackend, DROPOUT_ADD_SOURCE, [x, residual], gamma, dy, a.eps,
      dropoutUniforms(a.rate, a.seed), a.rate > 0);
  },
};

/** Registers the LayerNorm and addLayerNorm kernels of `backendName` if it is webgpu, and their gradients. */
export function registerLayerNormWebgpu(backendName: string): void {
  registerOp(backendName, { webgpu: webgpuKernels }, LAYER_NORM_GRADIENTS);
}
