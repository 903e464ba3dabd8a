/** The InfoNCE kernels of webgpu: 3 dispatches forward, 3 backward (the op, the kernels' plan, the gradient: index.ts). */
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { tf } from '../../model/tf.js';
import { registerOp } from '../registry.js';
import { linearGrid, packUniforms, rawBindings, recordRaw, workgroupSumWgsl, type RawProgram } from '../platform/webgpuPrograms.js';
import { INFONCE, INFONCE_GRAD, INFONCE_GRADIENTS, INFONCE_MAX_D, type InfoNCEAttrs } from './index.js';

/** Threads per workgroup (a power of two: tree reductions). */
const WG = 256;

/** Columns of dA per thread: D / WG, rounded up. */
const PER_THREAD = INFONCE_MAX_D / WG;
/** float32's lowest value: the running maximum of a thread with no column yet. */
const F32_LOWEST = -3.4028234663852886e38;

const UNIFORMS = 'B : i32, D : i32, eps : f32, temperature : f32, rows : i32,';

function uniforms(B: number, D: number, a: InfoNCEAttrs, rows: number): ArrayBuffer {
  return packUniforms([{ type: 'int32', data: [B] }, { type: 'int32', data: [D] }, { type: 'float32', data: [a.eps] },
    { type: 'float32', data: [a.temperature] }, { type: 'int32', data: [rows] }]);
}

/** The entry point's header: `row` (the workgroup's linear index over a 2-D grid) and `lid`. */
const ENTRY = `
  var<private> localIndex : u32;
  @compute @workgroup_size(${WG}, 1, 1)
  fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>,
          @builtin(local_invocation_index) lindex : u32) {
    localIndex = lindex;
    let row = i32(wid.y * nwg.x + wid.x);
    let lid = i32(lindex);`;

const SUM = workgroupSumWgsl('workgroupSum', WG);

/** `fn zAt(r, k)`: element k of row r of [z1; z2]. */
const Z_AT = `
  fn zAt(r : i32, k : i32) -> f32 {
    if (r < uniforms.B) { return z1[r * uniforms.D + k]; }
    return z2[(r - uniforms.B) * uniforms.D + k];
  }`;

/** `fn rowLse(m, s) -> vec2(max, sum)`: the workgroup's (max, sum of exp(x - max)) from each thread's. Barriers. */
const LSE = `
  var<workgroup> lseMax : array<f32, ${WG}>;
  var<workgroup> lseSum : array<f32, ${WG}>;
  fn rowLse(m : f32, s : f32) -> vec2<f32> {
    lseMax[localIndex] = m;
    lseSum[localIndex] = s;
    workgroupBarrier();
    for (var half = ${WG / 2}u; half > 0u; half = half / 2u) {
      if (localIndex < half) {
        let m1 = lseMax[localIndex];
        let m2 = lseMax[localIndex + half];
        let top = max(m1, m2);
        lseSum[localIndex] = lseSum[localIndex] * exp(m1 - top) + lseSum[localIndex + half] * exp(m2 - top);
        lseMax[localIndex] = top;
      }
      workgroupBarrier();
    }
    let out = vec2<f32>(lseMax[0], lseSum[0]);
    workgroupBarrier();
    return out;
  }`;

/** Row i of A staged in workgroup memory (`stage(i)`, ends with a barrier), and S_ij from it (`score(j)`). */
const STAGED_ROW = `
  var<workgroup> rowA : array<f32, ${INFONCE_MAX_D}>;
  fn stage(i : i32) {
    for (var k = i32(localIndex); k < uniforms.D; k = k + ${WG}) { rowA[k] = A[i * uniforms.D + k]; }
    workgroupBarrier();
  }
  fn score(j : i32) -> f32 {
    let o = (uniforms.B + j) * uniforms.D;
    var dot = 0.0;
    for (var k = 0; k < uniforms.D; k = k + 1) { dot = dot + rowA[k] * A[o + k]; }
    return dot / uniforms.temperature;
  }`;

/** A: each of the 2B rows of [z1; z2] over max(norm, eps).  z1, z2 [B, D] -> A [2B, D] */
const NORMALIZE: RawProgram = {
  key: 'micseInfoNCENormalize',
  code: () => `${rawBindings(['z1', 'z2'], ['A'], UNIFORMS)}${SUM}${Z_AT}${ENTRY}
    let live = row < uniforms.rows;
    var ss = 0.0;
    if (live) { for (var k = lid; k < uniforms.D; k = k + ${WG}) { let v = zAt(row, k); ss = ss + v * v; } }
    let m = max(sqrt(workgroupSum(ss)), uniforms.eps);
    if (live) { for (var k = lid; k < uniforms.D; k = k + ${WG}) { A[row * uniforms.D + k] = zAt(row, k) / m; } }
  }`,
};

/** term_i = logsumexp_j S_ij - S_ii, one workgroup per row i.  A [2B, D] -> terms [B] */
const TERMS: RawProgram = {
  key: 'micseInfoNCETerms',
  code: () => `${rawBindings(['A'], ['terms'], UNIFORMS)}${STAGED_ROW}${LSE}
  var<workgroup> diagonal : f32;${ENTRY}
    let i = min(row, uniforms.B - 1); // rows past B (a 2-D grid's tail) compute row B - 1 and write nothing
    stage(i);
    var m = ${F32_LOWEST};
    var s = 0.0;
    for (var j = lid; j < uniforms.B; j = j + ${WG}) {
      let v = score(j);
      if (j == i) { diagonal = v; }
      let top = max(m, v);
      s = s * exp(m - top) + exp(v - top);
      m = top;
    }
    let lse = rowLse(m, s); // its barriers also publish diagonal
    if (lid == 0 && row < uniforms.B) { terms[i] = lse.x + log(lse.y) - diagonal; }
  }`,
};

/** loss = mean of the terms.  terms [B] -> [] */
const MEAN: RawProgram = {
  key: 'micseInfoNCEMean',
  code: () => `${rawBindings(['terms'], ['loss'], UNIFORMS)}${SUM}${ENTRY}
    var s = 0.0;
    for (var i = lid; i < uniforms.B; i = i + ${WG}) { s = s + terms[i]; }
    let total = workgroupSum(s);
    if (lid == 0) { loss[0] = total / f32(uniforms.B); }
  }`,
};

/** G_ij = dy (P_ij - [i = j]) / (B temperature), one workgroup per row i.  A [2B, D], dy [] -> G [B, B] */
const GRAD_SCORES: RawProgram = {
  key: 'micseInfoNCEG',
  code: () => `${rawBindings(['A', 'dy'], ['G'], UNIFORMS)}${STAGED_ROW}${LSE}${ENTRY}
    let i = min(row, uniforms.B - 1);
    let write = row < uniforms.B;
    stage(i);
    var m = ${F32_LOWEST};
    var s = 0.0;
    for (var j = lid; j < uniforms.B; j = j + ${WG}) {
      let v = score(j);
      if (write) { G[i * uniforms.B + j] = v; } // read back below by this thread only
      let top = max(m, v);
      s = s * exp(m - top) + exp(v - top);
      m = top;
    }
    let lse = rowLse(m, s);
    let c = dy[0] / (f32(uniforms.B) * uniforms.temperature);
    if (write) {
      for (var j = lid; j < uniforms.B; j = j + ${WG}) {
        let p = exp(G[i * uniforms.B + j] - lse.x) / lse.y;
        G[i * uniforms.B + j] = c * (p - select(0.0, 1.0, j == i));
      }
    }
  }`,
};

/**
 * dz1 and dz2 in one dispatch, one workgroup per row of [z1; z2]: dA of the row (a column sum of G times the other
 * view's rows), then through the normalisation.  A [2B, D], G [B, B], z1, z2 [B, D] -> dz1, dz2 [B, D]
 */
const DZ: RawProgram = {
  key: 'micseInfoNCEDz',
  code: () => `${rawBindings(['A', 'G', 'z1', 'z2'], ['dz1', 'dz2'], UNIFORMS)}${SUM}${Z_AT}${ENTRY}
    let live = row < uniforms.rows;
    let first = row < uniforms.B; // a row of z1: dA_i = sum_j G_ij A_{B+j}; else of z2: dA_{B+j} = sum_i G_ij A_i
    var dA : array<f32, ${PER_THREAD}>;
    var ss = 0.0;
    var dot = 0.0;
    if (live) {
      for (var t = 0; t < ${PER_THREAD}; t = t + 1) {
        let k = lid + t * ${WG};
        if (k < uniforms.D) {
          var acc = 0.0;
          for (var n = 0; n < uniforms.B; n = n + 1) {
            if (first) {
              acc = acc + G[row * uniforms.B + n] * A[(uniforms.B + n) * uniforms.D + k];
            } else {
              acc = acc + G[n * uniforms.B + row - uniforms.B] * A[n * uniforms.D + k];
            }
          }
          dA[t] = acc;
          let v = zAt(row, k);
          ss = ss + v * v;
          dot = dot + acc * A[row * uniforms.D + k];
        }
      }
    }
    let norm = sqrt(workgroupSum(ss));
    let aDotDA = workgroupSum(dot);
    if (live) {
      for (var t = 0; t < ${PER_THREAD}; t = t + 1) {
        let k = lid + t * ${WG};
        if (k < uniforms.D) {
          var g = dA[t] / uniforms.eps;
          if (norm >= uniforms.eps) { g = (dA[t] - A[row * uniforms.D + k] * aDotDA) / norm; }
          if (first) { dz1[row * uniforms.D + k] = g; } else { dz2[(row - uniforms.B) * uniforms.D + k] = g; }
        }
      }
    }
  }`,
};

function normalized(backend: unknown, z1: tf.TensorInfo, z2: tf.TensorInfo, a: InfoNCEAttrs): tf.TensorInfo {
  const [B, D] = z1.shape as [number, number];
  return recordRaw(backend, NORMALIZE, [z1, z2], [[2 * B, D]], linearGrid(backend, 2 * B), uniforms(B, D, a, 2 * B))[0]!;
}

const webgpuKernels: Record<string, tf.KernelFunc> = {
  [INFONCE]: ({ inputs, backend, attrs }) => {
    const { z1, z2 } = inputs as { z1: tf.TensorInfo; z2: tf.TensorInfo };
    const a = attrs as unknown as InfoNCEAttrs;
    const [B, D] = z1.shape as [number, number];
    const b = backend as unknown as WebGPUBackend;
    const A = normalized(backend, z1, z2, a);
    const [terms] = recordRaw(backend, TERMS, [A], [[B]], linearGrid(backend, B), uniforms(B, D, a, B));
    const [loss] = recordRaw(backend, MEAN, [terms!], [[]], [1, 1, 1], uniforms(B, D, a, 1));
    b.disposeData(A.dataId);
    b.disposeData(terms!.dataId);
    return loss!;
  },
  [INFONCE_GRAD]: ({ inputs, backend, attrs }) => {
    const { z1, z2, dy } = inputs as { z1: tf.TensorInfo; z2: tf.TensorInfo; dy: tf.TensorInfo };
    const a = attrs as unknown as InfoNCEAttrs;
    const [B, D] = z1.shape as [number, number];
    const b = backend as unknown as WebGPUBackend;
    const A = normalized(backend, z1, z2, a);
    const [G] = recordRaw(backend, GRAD_SCORES, [A, dy], [[B, B]], linearGrid(backend, B), uniforms(B, D, a, B));
    const out = recordRaw(backend, DZ, [A, G!, z1, z2], [[B, D], [B, D]], linearGrid(backend, 2 * B), uniforms(B, D, a, 2 * B));
    b.disposeData(A.dataId);
    b.disposeData(G!.dataId);
    return out;
  },
};

/** Registers the InfoNCE kernels of `backendName` if it is webgpu, and their gradient. */
export function registerInfoNCEWebgpu(backendName: string): void {
  registerOp(backendName, { webgpu: webgpuKernels }, INFONCE_GRADIENTS);
}
