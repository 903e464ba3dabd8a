/**
 * WebGPU kernels of the attention MI (src/losses/attentionMI.ts; the ops: index.ts): the whole term in 6 dispatches
 * forward and 1 backward,
 * instead of ~250 of stock kernels (a bitonic tf.topk alone is ~60, the Gaussian MI composite ~100 with its gradient).
 *
 * Why: a training step on WebGPU is host-bound (~100 us of host time per dispatch, issue #9). Semantics are those of
 * attentionMI.ts's module comment, computed straight from `attentions [2B, L, H, T, T]` (no regrouped copy): row r,
 * column c of view i (the regrouped X for i = 0, Y for i = 1) is
 *   attentions[2b + i, 2j + m, k, t, z]   with r = (b*H + k)*2 + m, c = j*T*T + t*T + z.
 * Kernels (one workgroup per row unless said otherwise):
 *   MicseAmiCounts   attentions -> counts [R]: valid entries (both views > 0) per row
 *   MicseAmiPlan     counts -> plan [R + 3] = [rowMask (R), rows, samples, scale] (planRows), one workgroup
 *   MicseAmiDraw     valid [R, N] bool or attentions -> positions int32 [R, S] (rankSamplePositions)
 *   MicseAmiMI       attentions, positions, plan -> mi [R] (gaussianMI over the drawn samples)
 *   MicseAmiValue    mi, plan -> value [1]: -mean(mi over kept rows) * scale, NaN -> nanValue, no row -> 0
 *   MicseAmiGrad     attentions, positions, plan, mi, dy -> d attentions (zero except at drawn positions)
 *   MicseAmiDrawn    plan -> int32 [rows, samples]
 *
 * The draw reproduces the stock path exactly: keys are seededUniform([R, N], seed) (kernels/dropout's WGSL, flat index
 * r*N + c), invalid positions keyed -1, and tf.topk's order (tfjs-backend-cpu TopK_impl: key descending, equal keys
 * by increasing index). A key is the 24-bit integer behind the uniform (u = k * 2^24, same order as the float):
 *   1. radix select (3 passes of 8 bits, a 256-bin histogram in workgroup memory) finds the take-th largest valid
 *      key t, take = min(S, valid count), and how many keys equal to t to take (the lowest indices first);
 *   2. the taken positions are compacted into workgroup memory and each goes to its rank in (key desc, index asc);
 *   3. ranks take..S-1 are the invalid positions in increasing index order (an exclusive scan of per-thread counts).
 * Equal keys: mix32 is a bijection of u32, so the hashes of a row's distinct flat indices are distinct and at most
 * 2^8 of them share their top 24 bits: at most AMI_DRAW_WORKGROUP positions share a key, one thread each.
 * Limit: S <= AMI_DRAW_MAX_SAMPLES (the compacted draw lives in workgroup memory); the ops (index.ts) take the stock
 * path (seededUniform, where, tf.topk) above it.
 *
 * Gradient (MicseAmiGrad, derived from the composite ops' gradients so the numbers follow the cpu path): with
 * g = dy * -scale / max(rows, 1) for a kept row (0 when no row is kept or the value is NaN), q = (1 - r)(1 + r),
 *   dr = -2 r * (g * -0.5 / q);  drho = dr where -(1 - rhoEps) <= rho <= 1 - rhoEps (clipByValue's gate), else 0
 *   dP = drho / (nx ny);  dnx = -drho P / (nx ny)^2 * ny;  dQx = dnx / (2 nx) where Qx >= eps^2, else 0  (same for y)
 *   dcx_s = dP cy_s + 2 dQx cx_s;  dx_s = (dcx_s - sum_s dcx_s / n) / x_s   at the drawn, used samples, 0 elsewhere.
 * Each thread writes the zeros of the columns c = lid (mod workgroup) of its row and then the drawn samples at such
 * columns, so every element is written once by one invocation, in program order (distinct positions per row).
 *
 * Reference: SAP-samples/acl2023-micse `model/models.py` `cl_forward`, step by step in src/losses/attentionMI.ts;
 * the header tfjs-backend-webgpu generates for a program: src/kernels/platform/webgpuPrograms.ts.
 */
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { seedKeys } from '../dropout/index.js';
import { WGSL_RANDOM } from '../dropout/webgpu.js';
import { tf } from '../../model/tf.js';
import { registerOp } from '../registry.js';
import { elementwiseProgram, workgroupSumWgsl } from '../platform/webgpuPrograms.js';
import {
  AMI_DRAW_MAX_SAMPLES, COUNTS, dims, DRAW, DRAWN, GRAD, MI, PLAN, VALUE, type DrawAttrs, type MIAttrs, type PlanAttrs,
} from './index.js';

/** Threads per workgroup of the draw: one 256-bin histogram entry per thread, and at most this many equal keys. */
const AMI_DRAW_WORKGROUP = 256;
/** Bits of a key (the uniform's 24 random bits), digits of the radix select, and passes (KEY_BITS / RADIX_BITS). */
const KEY_BITS = 24;
const RADIX_BITS = 8;
const RADIX_PASSES = KEY_BITS / RADIX_BITS;
/** Threads per workgroup of the counts, the plan and the final value. */
const WIDE_WORKGROUP = 256;
/** Threads per workgroup of the per-row MI and its gradient (S = 150 samples by default). */
const ROW_WORKGROUP = 64;

type Uniforms = { type: 'int32' | 'uint32' | 'float32'; data: number[] }[];

function int32s(...values: number[]): Uniforms {
  return values.map((v) => ({ type: 'int32', data: [v] }));
}

function attentionUniforms(attentions: tf.TensorInfo): Uniforms {
  const { R, N, L, H, TT } = dims(attentions);
  return int32s(R, N, L, H, TT);
}

// ---------------------------------------------------------------------------------------------------------------
// WGSL
// ---------------------------------------------------------------------------------------------------------------

/** Uniform fields of WGSL_ATTENTION_SOURCE (values: attentionUniforms). */
const ATTENTION_UNIFORMS = 'R : i32, N : i32, L : i32, H : i32, TT : i32,';

/** Row r, column c of view i of the regrouped matrices, read straight from `attentions`; validity of (r, c). */
const WGSL_ATTENTION_SOURCE = `
  fn flatAt(view : i32, r : i32, c : i32) -> i32 {
    let b = r / (2 * uniforms.H);
    let km = r - b * 2 * uniforms.H;
    let k = km / 2;
    let m = km - 2 * k;
    let j = c / uniforms.TT;
    let tz = c - j * uniforms.TT;
    return (((2 * b + view) * uniforms.L + 2 * j + m) * uniforms.H + k) * uniforms.TT + tz;
  }
  fn xAt(r : i32, c : i32) -> f32 { return attentions[flatAt(0, r, c)]; }
  fn yAt(r : i32, c : i32) -> f32 { return attentions[flatAt(1, r, c)]; }
  fn isValid(r : i32, c : i32) -> bool { return xAt(r, c) > 0.0 && yAt(r, c) > 0.0; }`;

/** Validity of (r, c) from a `valid [R, N]` bool matrix (stored as i32). */
const MASK_UNIFORMS = 'R : i32, N : i32,';
const WGSL_MASK_SOURCE = `
  fn isValid(r : i32, c : i32) -> bool { return valid[r * uniforms.N + c] != 0; }`;

/** One workgroup per row (the workgroup's linear index; `index` is the flat global index). */
function rowProgram(shaderKey: string, outputShape: number[], rows: number, workgroup: number, variableNames: string[],
  uniforms: string, preamble: string, body: string): WebGPUProgram {
  return {
    variableNames,
    outputShape,
    shaderKey,
    dispatchLayout: { x: outputShape.map((_, i) => i) },
    dispatch: [rows, 1, 1], // the backend reshapes it past the per-dimension limit; `index / workgroup` stays the row
    workgroupSize: [workgroup, 1, 1],
    uniforms,
    getUserCode: () => `${preamble}
  fn main(index : i32) {
    let row = index / ${workgroup};
    let lid = i32(localIndex);
    let live = row < uniforms.R;
    ${body}
  }`,
  };
}

/**
 * The draw (see the module comment): result[row, rank] = position, int32 [R, S]. Needs `isValid(r, c)` and the
 * uniforms R, N, S, k1, k2. Barriers sit in uniform control flow (constant loop bounds); `live` guards the rest.
 */
const WGSL_DRAW_BODY = `
    let N = uniforms.N;
    let S = uniforms.S;
    let WG = ${AMI_DRAW_WORKGROUP};
    if (lid == 0) {
      atomicStore(&drawValid, 0u);
      atomicStore(&drawTaken, 0u);
      atomicStore(&drawTies, 0u);
    }
    workgroupBarrier();
    // Valid positions of the row.
    var mine = 0u;
    if (live) { for (var c = lid; c < N; c = c + WG) { if (isValid(row, c)) { mine = mine + 1u; } } }
    atomicAdd(&drawValid, mine);
    workgroupBarrier();
    let take = min(u32(S), atomicLoad(&drawValid));
    if (lid == 0) {
      drawPrefix = 0u;
      drawRemaining = take;
    }
    // 1. Radix select: the take-th largest valid key, ${RADIX_BITS} bits a pass from the top.
    for (var round = 0u; round < ${RADIX_PASSES}u; round = round + 1u) {
      let shift = ${KEY_BITS - RADIX_BITS}u - ${RADIX_BITS}u * round;
      atomicStore(&drawHist[lid], 0u);
      workgroupBarrier();
      let prefix = drawPrefix;
      if (live) {
        for (var c = lid; c < N; c = c + WG) {
          if (isValid(row, c)) {
            let key = drawKey(row, c);
            if ((key >> (shift + ${RADIX_BITS}u)) == prefix) { atomicAdd(&drawHist[(key >> shift) & ${2 ** RADIX_BITS - 1}u], 1u); }
          }
        }
      }
      workgroupBarrier();
      if (lid == 0 && drawRemaining > 0u) {
        var above = 0u;
        var d = ${2 ** RADIX_BITS - 1}u;
        for (; d > 0u; d = d - 1u) {
          let h = atomicLoad(&drawHist[d]);
          if (above + h >= drawRemaining) { break; }
          above = above + h;
        }
        drawPrefix = (drawPrefix << ${RADIX_BITS}u) | d;
        drawRemaining = drawRemaining - above;
      }
      workgroupBarrier();
    }
    let threshold = drawPrefix;
    let tiesTaken = drawRemaining; // keys equal to threshold to take, lowest index first
    // 2. Compact the taken positions: keys above the threshold, and the ties (ranked by index below).
    if (live && take > 0u) {
      for (var c = lid; c < N; c = c + WG) {
        if (isValid(row, c)) {
          let key = drawKey(row, c);
          if (key > threshold) {
            let s = atomicAdd(&drawTaken, 1u);
            drawKeys[s] = key;
            drawIndices[s] = c;
          } else if (key == threshold) {
            drawTieIndices[atomicAdd(&drawTies, 1u)] = c;
          }
        }
      }
    }
    workgroupBarrier();
    let ties = atomicLoad(&drawTies);
    if (live && take > 0u && u32(lid) < ties) {
      let c = drawTieIndices[lid];
      var before = 0u;
      for (var e = 0u; e < ties; e = e + 1u) { if (drawTieIndices[e] < c) { before = before + 1u; } }
      if (before < tiesTaken) {
        let s = atomicAdd(&drawTaken, 1u);
        drawKeys[s] = threshold;
        drawIndices[s] = c;
      }
    }
    workgroupBarrier();
    // 3. Each taken position to its rank: key descending, equal keys by increasing index (tf.topk's order).
    if (live) {
      for (var e = u32(lid); e < take; e = e + u32(WG)) {
        let key = drawKeys[e];
        let c = drawIndices[e];
        var rank = 0;
        for (var f = 0u; f < take; f = f + 1u) {
          let other = drawKeys[f];
          if (other > key || (other == key && drawIndices[f] < c)) { rank = rank + 1; }
        }
        result[row * S + rank] = c;
      }
    }
    // 4. Ranks take..S-1: the invalid positions (key -1) in increasing index order, from contiguous chunks.
    let chunk = (N + WG - 1) / WG;
    let lo = min(N, lid * chunk);
    let hi = min(N, lo + chunk);
    var invalid = 0u;
    if (live) { for (var c = lo; c < hi; c = c + 1) { if (!isValid(row, c)) { invalid = invalid + 1u; } } }
    drawInvalid[lid] = invalid;
    workgroupBarrier();
    if (live && take < u32(S)) {
      var rank = take;
      for (var t = 0; t < lid; t = t + 1) { rank = rank + drawInvalid[t]; }
      for (var c = lo; c < hi && rank < u32(S); c = c + 1) {
        if (!isValid(row, c)) {
          result[row * S + i32(rank)] = c;
          rank = rank + 1u;
        }
      }
    }`;

const WGSL_DRAW_PREAMBLE = `${WGSL_RANDOM}
  var<workgroup> drawValid : atomic<u32>;
  var<workgroup> drawTaken : atomic<u32>;
  var<workgroup> drawTies : atomic<u32>;
  var<workgroup> drawPrefix : u32;
  var<workgroup> drawRemaining : u32;
  var<workgroup> drawHist : array<atomic<u32>, ${2 ** RADIX_BITS}>;
  var<workgroup> drawKeys : array<u32, ${AMI_DRAW_MAX_SAMPLES}>;
  var<workgroup> drawIndices : array<i32, ${AMI_DRAW_MAX_SAMPLES}>;
  var<workgroup> drawTieIndices : array<i32, ${AMI_DRAW_WORKGROUP}>;
  var<workgroup> drawInvalid : array<u32, ${AMI_DRAW_WORKGROUP}>;
  /** The seededUniform key of (r, c) as its 24-bit integer: uniformAt(r * N + c) * 2^24. */
  fn drawKey(r : i32, c : i32) -> u32 {
    return mix32(mix32(u32(r * uniforms.N + c) ^ uniforms.k1) ^ uniforms.k2) >> ${32 - KEY_BITS}u;
  }`;

function drawUniforms(samples: number, seed: number): Uniforms {
  const [k1, k2] = seedKeys(seed);
  return [{ type: 'int32', data: [samples] }, { type: 'uint32', data: [k1] }, { type: 'uint32', data: [k2] }];
}

/** Per-row Gaussian MI statistics of the drawn samples (every thread gets them); needs `amiSum`, xAt, yAt. */
const WGSL_ROW_STATS = `
    let R = uniforms.R;
    let S = uniforms.S;
    let samples = plan[R + 1];
    let n = max(samples, 1.0);
    let kept = live && plan[min(row, R - 1)] > 0.0;
    let used = select(0, i32(samples), kept);
    var sx = 0.0;
    var sy = 0.0;
    for (var s = lid; s < used; s = s + ${ROW_WORKGROUP}) {
      let p = positions[row * S + s];
      sx = sx + log(xAt(row, p));
      sy = sy + log(yAt(row, p));
    }
    let mx = amiSum(sx) / n;
    let my = amiSum(sy) / n;
    var qx = 0.0;
    var qy = 0.0;
    var pxy = 0.0;
    for (var s = lid; s < used; s = s + ${ROW_WORKGROUP}) {
      let p = positions[row * S + s];
      let cx = log(xAt(row, p)) - mx;
      let cy = log(yAt(row, p)) - my;
      qx = qx + cx * cx;
      qy = qy + cy * cy;
      pxy = pxy + cx * cy;
    }
    let Qx = amiSum(qx);
    let Qy = amiSum(qy);
    let P = amiSum(pxy);
    let nx = sqrt(max(Qx, uniforms.eps2));
    let ny = sqrt(max(Qy, uniforms.eps2));
    let rho = P / (nx * ny);
    // clipByValue, NaN kept: the test is on the bits (TF.js's isnan), since WGSL lets a compiler assume no NaN and the
    // NVIDIA driver turned the comparisons into min/max, which return the bound for a NaN (a finite value, on an H200).
    let clipped = select(select(rho, -uniforms.rhoMax, rho < -uniforms.rhoMax), uniforms.rhoMax, rho > uniforms.rhoMax);
    let r = select(clipped, rho, isnan(rho));
    let q = (1.0 - r) * (1.0 + r);`;

const MI_UNIFORMS = `${ATTENTION_UNIFORMS} S : i32, eps2 : f32, rhoMax : f32, nanValue : f32,`;

function miUniforms(attentions: tf.TensorInfo, S: number, a: MIAttrs): Uniforms {
  return [...attentionUniforms(attentions), ...int32s(S),
    { type: 'float32', data: [Math.fround(a.cosineEps * a.cosineEps)] },
    { type: 'float32', data: [Math.fround(1 - a.rhoEps)] },
    { type: 'float32', data: [a.nanValue] }];
}

/** `-mean(mi over kept rows) * scale` from the [R] MI and the plan (every thread gets it); needs `amiSum`. */
function wgslMeanMI(workgroup: number): string {
  return `
    var part = 0.0;
    for (var i = lid; i < uniforms.R; i = i + ${workgroup}) { part = part + mi[i] * plan[i]; }
    let rows = plan[uniforms.R];
    let ami = -(amiSum(part) / max(rows, 1.0)) * plan[uniforms.R + 2];`;
}

// ---------------------------------------------------------------------------------------------------------------
// Kernels (webgpu only)
// ---------------------------------------------------------------------------------------------------------------

function gpu(backend: unknown): WebGPUBackend {
  return backend as WebGPUBackend;
}

const countsKernel: tf.KernelFunc = ({ inputs, backend }) => {
  const attentions = inputs['attentions']!;
  const { R } = dims(attentions);
  const p = rowProgram('micseAmiCounts', [R], R, WIDE_WORKGROUP, ['attentions'], ATTENTION_UNIFORMS, `${WGSL_ATTENTION_SOURCE}
  var<workgroup> countsValid : atomic<u32>;`, `
    if (lid == 0) { atomicStore(&countsValid, 0u); }
    workgroupBarrier();
    var mine = 0u;
    if (live) { for (var c = lid; c < uniforms.N; c = c + ${WIDE_WORKGROUP}) { if (isValid(row, c)) { mine = mine + 1u; } } }
    atomicAdd(&countsValid, mine);
    workgroupBarrier();
    if (live && lid == 0) { result[row] = f32(atomicLoad(&countsValid)); }`);
  return gpu(backend).runWebGPUProgram(p, [attentions], 'float32', attentionUniforms(attentions));
};

/** planRows of attentionMI.ts, one workgroup; counts are exact integers, summed as u32 (exact, as the cpu sums). */
const planKernel: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const counts = inputs['counts']!;
  const { targetSamples, scaleEps, N } = attrs as unknown as PlanAttrs;
  const R = counts.shape[0]!;
  const p: WebGPUProgram = {
    variableNames: ['counts'],
    outputShape: [R + 3],
    shaderKey: 'micseAmiPlan',
    dispatchLayout: { x: [0] },
    dispatch: [1, 1, 1],
    workgroupSize: [WIDE_WORKGROUP, 1, 1],
    uniforms: 'R : i32, N : i32, wanted : u32, scaleEps : f32,',
    getUserCode: () => `
  var<workgroup> planFull : atomic<u32>;
  var<workgroup> planNonEmpty : atomic<u32>;
  var<workgroup> planMin : atomic<u32>;
  var<workgroup> planSumFull : atomic<u32>;
  var<workgroup> planSumAll : atomic<u32>;
  fn main(index : i32) {
    let lid = i32(localIndex);
    let R = uniforms.R;
    let wanted = uniforms.wanted; // targetSamples
    if (lid == 0) {
      atomicStore(&planFull, 0u);
      atomicStore(&planNonEmpty, 0u);
      atomicStore(&planMin, 0xffffffffu);
      atomicStore(&planSumFull, 0u);
      atomicStore(&planSumAll, 0u);
    }
    workgroupBarrier();
    for (var r = lid; r < R; r = r + ${WIDE_WORKGROUP}) {
      let c = u32(counts[r]);
      if (c >= wanted) {
        atomicAdd(&planFull, 1u);
        atomicAdd(&planSumFull, c);
      }
      if (c > 0u) {
        atomicAdd(&planNonEmpty, 1u);
        atomicMin(&planMin, c);
      }
      atomicAdd(&planSumAll, c);
    }
    workgroupBarrier();
    let full = atomicLoad(&planFull);
    let nonEmpty = atomicLoad(&planNonEmpty);
    let anyFull = full > 0u;
    let samples = select(select(0u, min(atomicLoad(&planMin), wanted), nonEmpty > 0u), wanted, anyFull);
    for (var r = lid; r < R; r = r + ${WIDE_WORKGROUP}) {
      let c = u32(counts[r]);
      result[r] = select(0.0, 1.0, select(c > 0u, c >= wanted, anyFull) && samples > 0u);
    }
    if (lid == 0) {
      let rows = select(select(0u, nonEmpty, samples > 0u), full, anyFull);
      let validSum = f32(select(atomicLoad(&planSumAll), atomicLoad(&planSumFull), anyFull));
      let rowCount = select(f32(R), f32(rows), anyFull);
      let ratio = validSum / max(rowCount * f32(uniforms.N), 1.0);
      result[R] = f32(rows);
      result[R + 1] = f32(samples);
      result[R + 2] = ratio * ratio + uniforms.scaleEps;
    }
  }`,
  };
  return gpu(backend).runWebGPUProgram(p, [counts], 'float32', [
    ...int32s(R, N), { type: 'uint32', data: [targetSamples] }, { type: 'float32', data: [scaleEps] }]);
};

const drawKernel: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { samples, seed } = attrs as unknown as DrawAttrs;
  const b = gpu(backend);
  const attentions = inputs['attentions'];
  if (attentions !== undefined) {
    const { R } = dims(attentions);
    const p = rowProgram('micseAmiDrawAttention', [R, samples], R, AMI_DRAW_WORKGROUP, ['attentions'],
      `${ATTENTION_UNIFORMS} S : i32, k1 : u32, k2 : u32,`, `${WGSL_ATTENTION_SOURCE}${WGSL_DRAW_PREAMBLE}`, WGSL_DRAW_BODY);
    return b.runWebGPUProgram(p, [attentions], 'int32', [...attentionUniforms(attentions), ...drawUniforms(samples, seed)]);
  }
  const valid = inputs['valid']!;
  const [R, N] = valid.shape as [number, number];
  const p = rowProgram('micseAmiDrawMask', [R, samples], R, AMI_DRAW_WORKGROUP, ['valid'],
    `${MASK_UNIFORMS} S : i32, k1 : u32, k2 : u32,`, `${WGSL_MASK_SOURCE}${WGSL_DRAW_PREAMBLE}`, WGSL_DRAW_BODY);
  return b.runWebGPUProgram(p, [valid], 'int32', [...int32s(R, N), ...drawUniforms(samples, seed)]);
};

const miKernel: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { attentions, positions, plan } = inputs as { attentions: tf.TensorInfo; positions: tf.TensorInfo; plan: tf.TensorInfo };
  const { R } = dims(attentions);
  const S = positions.shape[1]!;
  const p = rowProgram('micseAmiMI', [R], R, ROW_WORKGROUP, ['attentions', 'positions', 'plan'], MI_UNIFORMS,
    `${WGSL_ATTENTION_SOURCE}${workgroupSumWgsl('amiSum', ROW_WORKGROUP)}`, `${WGSL_ROW_STATS}
    if (live && lid == 0) { result[row] = log(q) * -0.5; }`);
  return gpu(backend).runWebGPUProgram(p, [attentions, positions, plan], 'float32', miUniforms(attentions, S, attrs as unknown as MIAttrs));
};

const valueKernel: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { mi, plan } = inputs as { mi: tf.TensorInfo; plan: tf.TensorInfo };
  const R = mi.shape[0]!;
  const p: WebGPUProgram = {
    variableNames: ['mi', 'plan'],
    outputShape: [1],
    shaderKey: 'micseAmiValue',
    dispatchLayout: { x: [0] },
    dispatch: [1, 1, 1],
    workgroupSize: [WIDE_WORKGROUP, 1, 1],
    uniforms: 'R : i32, nanValue : f32,',
    getUserCode: () => `${workgroupSumWgsl('amiSum', WIDE_WORKGROUP)}
  fn main(index : i32) {
    let lid = i32(localIndex);
    ${wgslMeanMI(WIDE_WORKGROUP)}
    if (lid == 0) { result[0] = select(0.0, select(ami, uniforms.nanValue, isnan(ami)), rows > 0.0); }
  }`,
  };
  return gpu(backend).runWebGPUProgram(p, [mi, plan], 'float32',
    [{ type: 'int32', data: [R] }, { type: 'float32', data: [(attrs as unknown as MIAttrs).nanValue] }]);
};

const gradKernel: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { attentions, positions, plan, mi, dy } = inputs as Record<'attentions' | 'positions' | 'plan' | 'mi' | 'dy', tf.TensorInfo>;
  const { R } = dims(attentions);
  const S = positions.shape[1]!;
  const p = rowProgram('micseAmiGrad', attentions.shape, R, ROW_WORKGROUP, ['attentions', 'positions', 'plan', 'mi', 'dy'],
    MI_UNIFORMS, `${WGSL_ATTENTION_SOURCE}${workgroupSumWgsl('amiSum', ROW_WORKGROUP)}`, `${wgslMeanMI(ROW_WORKGROUP)}
    ${WGSL_ROW_STATS}
    // d value / d mi[row] (the mean over kept rows, times -scale; 0 where the value is NaN or no row is kept)
    let g = select(0.0, dy[0] * -plan[R + 2] / max(rows, 1.0), rows > 0.0 && !isnan(ami) && kept);
    let dq = g * -0.5 / q;
    let drho = select(0.0, -2.0 * r * dq, rho >= -uniforms.rhoMax && rho <= uniforms.rhoMax);
    let den = nx * ny;
    let dP = drho / den;
    let dden = -drho * P / (den * den);
    let dQx = select(0.0, dden * ny / (2.0 * nx), Qx >= uniforms.eps2);
    let dQy = select(0.0, dden * nx / (2.0 * ny), Qy >= uniforms.eps2);
    var scx = 0.0;
    var scy = 0.0;
    for (var s = lid; s < used; s = s + ${ROW_WORKGROUP}) {
      let p = positions[row * S + s];
      let cx = log(xAt(row, p)) - mx;
      let cy = log(yAt(row, p)) - my;
      scx = scx + dP * cy + dQx * (2.0 * cx);
      scy = scy + dP * cx + dQy * (2.0 * cy);
    }
    let mcx = amiSum(scx) / n;
    let mcy = amiSum(scy) / n;
    if (live) {
      for (var c = lid; c < uniforms.N; c = c + ${ROW_WORKGROUP}) {
        result[flatAt(0, row, c)] = 0.0;
        result[flatAt(1, row, c)] = 0.0;
      }
      // The drawn samples at this thread's columns (the same invocation wrote their zeros just above).
      for (var s = 0; s < used; s = s + 1) {
        let p = positions[row * S + s];
        if (p % ${ROW_WORKGROUP} == lid) {
          let x = xAt(row, p);
          let y = yAt(row, p);
          let cx = log(x) - mx;
          let cy = log(y) - my;
          result[flatAt(0, row, p)] = (dP * cy + dQx * (2.0 * cx) - mcx) / x;
          result[flatAt(1, row, p)] = (dP * cx + dQy * (2.0 * cy) - mcy) / y;
        }
      }
    }`);
  return gpu(backend).runWebGPUProgram(p, [attentions, positions, plan, mi, dy], 'float32',
    miUniforms(attentions, S, attrs as unknown as MIAttrs));
};

const drawnKernel: tf.KernelFunc = ({ inputs, backend }) => {
  const plan = inputs['plan']!;
  const R = plan.shape[0]! - 3;
  const p = elementwiseProgram({ shaderKey: 'micseAmiDrawn', shape: [2], variableNames: ['plan'], workgroup: 2,
    uniforms: 'R : i32,', body: 'setOutputAtIndex(index, plan[uniforms.R + index]);' });
  return gpu(backend).runWebGPUProgram(p, [plan], 'int32', int32s(R));
};

const KERNELS: Record<string, tf.KernelFunc> = {
  [COUNTS]: countsKernel, [PLAN]: planKernel, [DRAW]: drawKernel, [MI]: miKernel, [VALUE]: valueKernel,
  [GRAD]: gradKernel, [DRAWN]: drawnKernel,
};

/** Registers the AMI kernels of `backendName` if it is webgpu. */
export function registerAmiWebgpu(backendName: string): void {
  registerOp(backendName, { webgpu: KERNELS });
}
