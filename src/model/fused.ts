/**
 * Fused LayerNorm and GELU, forward and backward, as single kernels.
 *
 * Why: composed of stock ops, one LayerNorm is ~10 kernels forward and ~20 backward, and the exact GELU 5 forward
 * and ~10 backward. On WebGPU every kernel is a dispatch with a fixed host cost (see bench/README.md), and on the
 * host backends every op is another pass over the activations. Here:
 *   layerNorm(x [.., H], gamma [H], beta [H]) = (x - mean) / sqrt(var + eps) * gamma + beta   (var: biased, per row)
 *     backward, with xhat = (x - mean) * rstd and g = dy * gamma (rstd = 1 / sqrt(var + eps)):
 *       dx = rstd * (g - mean(g) - xhat * mean(g * xhat))      per row
 *       dgamma = sum over rows of dy * xhat;  dbeta = sum over rows of dy
 *   gelu(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))       (erf: the Abramowitz-Stegun 7.1.26 form every TF.js
 *                                                              backend uses, |error| < 1.5e-7)
 *     backward: dx = dy * (Phi(x) + x * phi(x)),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
 * Kernels: cpu and wasm (WebAssembly SIMD loops, src/model/hostSimd.ts: in place on the wasm heap, through a staging
 * memory for cpu's JS arrays; the scalar loops below where wasm SIMD is missing, for LayerNorm rows with H % 4 != 0
 * and for the last n % 4 GELU elements), webgpu (WGSL: LayerNorm one workgroup per row; its backward is 5 dispatches:
 * xhat, dx, column partial sums over 64-row chunks, dgamma, dbeta). Other backends (tensorflow, webgl) get the same
 * math composed of stock ops. Float32 results agree with the composed ops within rounding (tests: test/fused.test.ts).
 */
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { heapView, type CpuBackend, type WasmBackend } from './hostBackend.js';
import {
  heapSimdHost, layerNormGradScratch, SIMD_LANES, simdGelu, simdGeluGrad, simdLayerNorm, simdLayerNormGrad, stagingSimdHost, type SimdHost,
} from './hostSimd.js';
import { tf } from './tf.js';
import { elementwiseProgram, workgroupSumWgsl } from './webgpuPrograms.js';

const LAYER_NORM = 'MicseLayerNorm';
const LAYER_NORM_GRAD = 'MicseLayerNormGrad';
const GELU = 'MicseGelu';
const GELU_GRAD = 'MicseGeluGrad';

// Abramowitz & Stegun 7.1.26, the constants of TF.js's Erf kernels (backend_util.ERF_*).
const ERF_P = 0.3275911;
const ERF_A1 = 0.254829592;
const ERF_A2 = -0.284496736;
const ERF_A3 = 1.421413741;
const ERF_A4 = -1.453152027;
const ERF_A5 = 1.061405429;
/** 1 / sqrt(2 pi) */
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** Threads per workgroup: LayerNorm rows (one workgroup per row) and element-wise GELU. */
const ROW_WORKGROUP = 64;
const ELEMENTWISE_WORKGROUP = 256;
/** Threads per workgroup of the column sums (dgamma, dbeta), and rows each thread of their first pass adds. */
const COLUMN_WORKGROUP = 64;
const COLUMN_CHUNK = 64;

interface LayerNormAttrs {
  eps: number;
}

function erf(v: number): number {
  const sign = Math.sign(v);
  const a = Math.abs(v);
  const t = 1 / (1 + ERF_P * a);
  return sign * (1 - ((((ERF_A5 * t + ERF_A4) * t + ERF_A3) * t + ERF_A2) * t + ERF_A1) * t * Math.exp(-a * a));
}

// ---------------------------------------------------------------------------------------------------------------
// Host arithmetic (cpu and wasm kernels share it)
// ---------------------------------------------------------------------------------------------------------------

/** mean and rstd = 1 / sqrt(var + eps) of the row x[o, o + H), in float64. */
function rowStats(x: Float32Array, o: number, H: number, eps: number): [number, number] {
  let s = 0;
  for (let k = 0; k < H; k++) s += x[o + k]!;
  const mean = s / H;
  let q = 0;
  for (let k = 0; k < H; k++) q += (x[o + k]! - mean) ** 2;
  return [mean, 1 / Math.sqrt(q / H + eps)];
}

function layerNormHost(x: Float32Array, gamma: Float32Array, beta: Float32Array, eps: number, y: Float32Array): void {
  const H = gamma.length;
  const rows = x.length / H;
  for (let r = 0; r < rows; r++) {
    const o = r * H;
    const [mean, rstd] = rowStats(x, o, H, eps);
    for (let k = 0; k < H; k++) y[o + k] = (x[o + k]! - mean) * rstd * gamma[k]! + beta[k]!;
  }
}

function layerNormGradHost(x: Float32Array, gamma: Float32Array, dy: Float32Array, eps: number,
  dx: Float32Array, dgamma: Float32Array, dbeta: Float32Array): void {
  const H = gamma.length;
  const rows = x.length / H;
  const dg = new Float64Array(H);
  const db = new Float64Array(H);
  for (let r = 0; r < rows; r++) {
    const o = r * H;
    const [mean, rstd] = rowStats(x, o, H, eps);
    let sg = 0;
    let sgx = 0;
    for (let k = 0; k < H; k++) {
      const xhat = (x[o + k]! - mean) * rstd;
      const g = dy[o + k]! * gamma[k]!;
      sg += g;
      sgx += g * xhat;
      dg[k]! += dy[o + k]! * xhat;
      db[k]! += dy[o + k]!;
    }
    const mg = sg / H;
    const mgx = sgx / H;
    for (let k = 0; k < H; k++) {
      const xhat = (x[o + k]! - mean) * rstd;
      dx[o + k] = rstd * (dy[o + k]! * gamma[k]! - mg - xhat * mgx);
    }
  }
  dgamma.set(dg);
  dbeta.set(db);
}

/** From element `from` on (the SIMD loops did the ones before). */
function geluHost(x: Float32Array, y: Float32Array, from: number): void {
  for (let i = from; i < x.length; i++) y[i] = 0.5 * x[i]! * (1 + erf(x[i]! * Math.SQRT1_2));
}

function geluGradHost(x: Float32Array, dy: Float32Array, dx: Float32Array, from: number): void {
  for (let i = from; i < x.length; i++) {
    const v = x[i]!;
    dx[i] = dy[i]! * (0.5 * (1 + erf(v * Math.SQRT1_2)) + v * Math.exp(-0.5 * v * v) * INV_SQRT_2PI);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// cpu and wasm kernels: WebAssembly SIMD loops (hostSimd.ts: in place on the wasm heap; through a staging memory
// for the cpu backend's JS arrays), or where a runtime lacks wasm SIMD (or LayerNorm's H % 4 != 0) the host
// arithmetic above.
// ---------------------------------------------------------------------------------------------------------------

/** Host backends seen through one interface: read an input, make outputs and fill them. */
interface HostIO {
  read(t: tf.TensorInfo): Float32Array;
  /**
   * Makes float32 outputs of `shapes`, lets `fill` write them (fresh views; `scratch`: `scratchFloats` elements of
   * working memory where the SIMD loops can address it, released after), returns them.
   */
  outputs(shapes: number[][], fill: (outs: Float32Array[], scratch: Float32Array) => void, scratchFloats?: number): tf.TensorInfo[];
  /** Where the SIMD loops run on these arrays; null without wasm SIMD. */
  simd: SimdHost | null;
}

function cpuIO(backend: unknown): HostIO {
  const b = backend as CpuBackend;
  return {
    read: (t) => b.data.get(t.dataId).values as Float32Array,
    outputs: (shapes, fill, scratchFloats = 0) => {
      const arrays = shapes.map((s) => new Float32Array(tf.util.sizeFromShape(s)));
      fill(arrays, new Float32Array(scratchFloats));
      return shapes.map((s, i) => b.makeTensorInfo(s, 'float32', arrays[i]));
    },
    simd: stagingSimdHost(),
  };
}

function wasmIO(backend: unknown): HostIO {
  const b = backend as WasmBackend;
  return {
    read: (t) => heapView(b, t),
    outputs: (shapes, fill, scratchFloats = 0) => {
      const outs = shapes.map((s) => b.makeOutput(s, 'float32'));
      const scratch = scratchFloats > 0 ? b.makeOutput([scratchFloats], 'float32') : null;
      // Views are taken after every makeOutput: allocation may grow (and so move) the heap. Inputs are read
      // through `read` inside `fill`, i.e. after the allocations too.
      fill(outs.map((o) => heapView(b, o)), scratch !== null ? heapView(b, scratch) : new Float32Array(0));
      if (scratch !== null) b.disposeData(scratch.dataId);
      return outs;
    },
    simd: heapSimdHost(b.wasm.asm.memory),
  };
}

function hostKernels(io: (backend: unknown) => HostIO): Record<string, tf.KernelFunc> {
  return {
    [LAYER_NORM]: ({ inputs, backend, attrs }) => {
      const h = io(backend);
      const { x, gamma, beta } = inputs as { x: tf.TensorInfo; gamma: tf.TensorInfo; beta: tf.TensorInfo };
      const { eps } = attrs as unknown as LayerNormAttrs;
      const [y] = h.outputs([x.shape], ([out]) => {
        const args = [h.read(x), h.read(gamma), h.read(beta), eps, out!] as const;
        if (h.simd !== null && gamma.shape[0]! % SIMD_LANES === 0) simdLayerNorm(h.simd, ...args);
        else layerNormHost(...args);
      });
      return y!;
    },
    [LAYER_NORM_GRAD]: ({ inputs, backend, attrs }) => {
      const h = io(backend);
      const { x, gamma, dy } = inputs as { x: tf.TensorInfo; gamma: tf.TensorInfo; dy: tf.TensorInfo };
      const { eps } = attrs as unknown as LayerNormAttrs;
      const H = gamma.shape[0]!;
      const simd = H % SIMD_LANES === 0 ? h.simd : null;
      return h.outputs([x.shape, gamma.shape, gamma.shape], ([dx, dg, db], scratch) => {
        const args = [h.read(x), h.read(gamma), h.read(dy), eps, dx!, dg!, db!] as const;
        if (simd !== null) simdLayerNormGrad(simd, ...args, scratch);
        else layerNormGradHost(...args);
      }, simd !== null ? layerNormGradScratch(H) : 0);
    },
    [GELU]: ({ inputs, backend }) => {
      const h = io(backend);
      const x = inputs['x']!;
      return h.outputs([x.shape], ([y]) => {
        const xs = h.read(x);
        geluHost(xs, y!, h.simd !== null ? simdGelu(h.simd, xs, y!) : 0);
      })[0]!;
    },
    [GELU_GRAD]: ({ inputs, backend }) => {
      const h = io(backend);
      const { x, dy } = inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
      return h.outputs([x.shape], ([dx]) => {
        const [xs, dys] = [h.read(x), h.read(dy)];
        geluGradHost(xs, dys, dx!, h.simd !== null ? simdGeluGrad(h.simd, xs, dys, dx!) : 0);
      })[0]!;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// WebGPU kernels (WGSL after the header WebGPUBackend.runWebGPUProgram generates: uniforms, `result`, one
// read-only array per input named as in variableNames, `localId`, `fn main(index)` with the global index).
// ---------------------------------------------------------------------------------------------------------------

const WGSL_ERF = `
  fn erf_as(v : f32) -> f32 {
    let a = abs(v);
    let t = 1.0 / (1.0 + ${ERF_P} * a);
    return sign(v) * (1.0 - ((((${ERF_A5} * t + ${ERF_A4}) * t + ${ERF_A3}) * t + ${ERF_A2}) * t + ${ERF_A1}) * t * exp(-a * a));
  }`;

/** Workgroup tree sum of `v` over the ROW_WORKGROUP threads; every thread gets the total. */
const WGSL_ROW_SUM = workgroupSumWgsl('rowSum', ROW_WORKGROUP);

/** One workgroup per row of `x [rows, H]`: the row index is the workgroup's linear index. */
function rowProgram(shaderKey: string, outputShape: number[], rows: number, variableNames: string[], body: string): WebGPUProgram {
  return {
    variableNames,
    outputShape,
    shaderKey,
    dispatchLayout: { x: outputShape.map((_, i) => i) },
    dispatch: [rows, 1, 1], // the backend reshapes it past the per-dimension limit; `index / WG` stays the row
    workgroupSize: [ROW_WORKGROUP, 1, 1],
    size: true,
    uniforms: 'rows : i32, H : i32, eps : f32,',
    getUserCode: () => `${WGSL_ROW_SUM}
  fn main(index : i32) {
    let row = index / ${ROW_WORKGROUP};
    let lid = i32(localId.x);
    let H = uniforms.H;
    let live = row < uniforms.rows;
    let o = row * H;
    ${body}
  }`,
  };
}

/** mean and rstd of row `o` (every thread of the workgroup gets both). */
const WGSL_ROW_STATS = `
    var s = 0.0;
    if (live) { for (var k = lid; k < H; k = k + ${ROW_WORKGROUP}) { s = s + x[o + k]; } }
    let mean = rowSum(s) / f32(H);
    var q = 0.0;
    if (live) { for (var k = lid; k < H; k = k + ${ROW_WORKGROUP}) { let d = x[o + k] - mean; q = q + d * d; } }
    let rstd = 1.0 / sqrt(rowSum(q) / f32(H) + uniforms.eps);`;

/**
 * dgamma and dbeta in two passes, so thousands of threads share the rows (one thread per column over 4,096 rows
 * left the GPU nearly idle: 1.9 ms a call on an H200). Pass 1, one thread per (chunk of COLUMN_CHUNK rows, j):
 *   partial[c, j] = sum over the chunk's rows r of (j < H ? dy[r, j] * xhat[r, j] : dy[r, j - H])   [chunks, 2H]
 * Pass 2, one thread per column: out[h] = sum over c of partial[c, offset + h]                      [H]
 */
function columnPartialsProgram(rows: number, H: number): WebGPUProgram {
  const chunks = Math.ceil(rows / COLUMN_CHUNK);
  return {
    variableNames: ['dy', 'xhat'],
    outputShape: [chunks, 2 * H],
    shaderKey: 'micseLayerNormColumnPartials',
    dispatchLayout: { x: [0, 1] },
    dispatch: [Math.ceil((chunks * 2 * H) / COLUMN_WORKGROUP), 1, 1],
    workgroupSize: [COLUMN_WORKGROUP, 1, 1],
    size: true,
    uniforms: 'rows : i32, H : i32,',
    getUserCode: () => `
  fn main(index : i32) {
    if (index < uniforms.size) {
      let H = uniforms.H;
      let c = index / (2 * H);
      let j = index - c * 2 * H;
      let h = select(j - H, j, j < H);
      let end = min(uniforms.rows, (c + 1) * ${COLUMN_CHUNK});
      var acc = 0.0;
      for (var r = c * ${COLUMN_CHUNK}; r < end; r = r + 1) {
        let i = r * H + h;
        acc = acc + select(dy[i], dy[i] * xhat[i], j < H);
      }
      setOutputAtIndex(index, acc);
    }
  }`,
  };
}

function columnFinalProgram(H: number): WebGPUProgram {
  return {
    variableNames: ['partial'],
    outputShape: [H],
    shaderKey: 'micseLayerNormColumnFinal', // dgamma and dbeta share the shader: the offset is a uniform
    dispatchLayout: { x: [0] },
    dispatch: [Math.ceil(H / COLUMN_WORKGROUP), 1, 1],
    workgroupSize: [COLUMN_WORKGROUP, 1, 1],
    size: true,
    uniforms: 'chunks : i32, offset : i32,',
    getUserCode: () => `
  fn main(index : i32) {
    if (index < uniforms.size) {
      let width = 2 * uniforms.size;
      var acc = 0.0;
      for (var c = 0; c < uniforms.chunks; c = c + 1) { acc = acc + partial[c * width + uniforms.offset + index]; }
      setOutputAtIndex(index, acc);
    }
  }`,
  };
}

function rowUniforms(rows: number, H: number, eps: number): { type: 'int32' | 'float32'; data: number[] }[] {
  return [{ type: 'int32', data: [rows] }, { type: 'int32', data: [H] }, { type: 'float32', data: [eps] }];
}

const webgpuKernels: Record<string, tf.KernelFunc> = {
  [LAYER_NORM]: ({ inputs, backend, attrs }) => {
    const b = backend as unknown as WebGPUBackend;
    const { x, gamma, beta } = inputs as { x: tf.TensorInfo; gamma: tf.TensorInfo; beta: tf.TensorInfo };
    const H = gamma.shape[0]!;
    const rows = tf.util.sizeFromShape(x.shape) / H;
    const p = rowProgram('micseLayerNorm', x.shape, rows, ['x', 'gamma', 'beta'], `${WGSL_ROW_STATS}
    if (live) {
      for (var k = lid; k < H; k = k + ${ROW_WORKGROUP}) {
        result[o + k] = (x[o + k] - mean) * rstd * gamma[k] + beta[k];
      }
    }`);
    return b.runWebGPUProgram(p, [x, gamma, beta], 'float32', rowUniforms(rows, H, (attrs as unknown as LayerNormAttrs).eps));
  },
  [LAYER_NORM_GRAD]: ({ inputs, backend, attrs }) => {
    const b = backend as unknown as WebGPUBackend;
    const { x, gamma, dy } = inputs as { x: tf.TensorInfo; gamma: tf.TensorInfo; dy: tf.TensorInfo };
    const H = gamma.shape[0]!;
    const rows = tf.util.sizeFromShape(x.shape) / H;
    const u = rowUniforms(rows, H, (attrs as unknown as LayerNormAttrs).eps);
    // xhat [rows, H] (kept for dgamma), then dx from it; dgamma and dbeta as column sums.
    const xhatP = rowProgram('micseLayerNormXhat', [rows, H], rows, ['x'], `${WGSL_ROW_STATS}
    if (live) {
      for (var k = lid; k < H; k = k + ${ROW_WORKGROUP}) { result[o + k] = (x[o + k] - mean) * rstd; }
    }`);
    const xhat = b.runWebGPUProgram(xhatP, [x], 'float32', u);
    const dxP = rowProgram('micseLayerNormDx', x.shape, rows, ['x', 'xhat', 'gamma', 'dy'], `${WGSL_ROW_STATS}
    var sg = 0.0;
    var sgx = 0.0;
    if (live) {
      for (var k = lid; k < H; k = k + ${ROW_WORKGROUP}) {
        let g = dy[o + k] * gamma[k];
        sg = sg + g;
        sgx = sgx + g * xhat[o + k];
      }
    }
    let mg = rowSum(sg) / f32(H);
    let mgx = rowSum(sgx) / f32(H);
    if (live) {
      for (var k = lid; k < H; k = k + ${ROW_WORKGROUP}) {
        result[o + k] = rstd * (dy[o + k] * gamma[k] - mg - xhat[o + k] * mgx);
      }
    }`);
    const dx = b.runWebGPUProgram(dxP, [x, xhat, gamma, dy], 'float32', u);
    const partial = b.runWebGPUProgram(columnPartialsProgram(rows, H), [dy, xhat], 'float32',
      [{ type: 'int32', data: [rows] }, { type: 'int32', data: [H] }]);
    const chunks = partial.shape[0]!;
    const dgamma = b.runWebGPUProgram(columnFinalProgram(H), [partial], 'float32',
      [{ type: 'int32', data: [chunks] }, { type: 'int32', data: [0] }]);
    const dbeta = b.runWebGPUProgram(columnFinalProgram(H), [partial], 'float32',
      [{ type: 'int32', data: [chunks] }, { type: 'int32', data: [H] }]);
    b.disposeData(xhat.dataId);
    b.disposeData(partial.dataId);
    return [dx, dgamma, dbeta];
  },
  [GELU]: ({ inputs, backend }) => {
    const x = inputs['x']!;
    const p = elementwiseProgram({ shaderKey: 'micseGelu', shape: x.shape, variableNames: ['x'], workgroup: ELEMENTWISE_WORKGROUP,
      preamble: WGSL_ERF, body: `let v = x[index];\n      setOutputAtIndex(index, 0.5 * v * (1.0 + erf_as(v * ${Math.SQRT1_2})));` });
    return (backend as unknown as WebGPUBackend).runWebGPUProgram(p, [x], 'float32');
  },
  [GELU_GRAD]: ({ inputs, backend }) => {
    const { x, dy } = inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
    const p = elementwiseProgram({ shaderKey: 'micseGeluGrad', shape: x.shape, variableNames: ['x', 'dy'], workgroup: ELEMENTWISE_WORKGROUP,
      preamble: WGSL_ERF,
      body: `let v = x[index];\n      setOutputAtIndex(index, dy[index] * (0.5 * (1.0 + erf_as(v * ${Math.SQRT1_2})) + v * exp(-0.5 * v * v) * ${INV_SQRT_2PI}));` });
    return (backend as unknown as WebGPUBackend).runWebGPUProgram(p, [x, dy], 'float32');
  },
};

const BY_BACKEND: Record<string, Record<string, tf.KernelFunc>> = {
  cpu: hostKernels(cpuIO),
  wasm: hostKernels(wasmIO),
  webgpu: webgpuKernels,
};
for (const [backendName, kernels] of Object.entries(BY_BACKEND)) {
  for (const [kernelName, kernelFunc] of Object.entries(kernels)) {
    if (tf.getKernel(kernelName, backendName) === undefined) tf.registerKernel({ kernelName, backendName, kernelFunc });
  }
}

if (tf.getGradient(LAYER_NORM) === undefined) {
  tf.registerGradient({
    kernelName: LAYER_NORM,
    inputsToSave: ['x', 'gamma'],
    gradFunc: (dy, saved, attrs) => {
      const [x, gamma] = saved as [tf.Tensor, tf.Tensor];
      const [dx, dgamma, dbeta] = tf.engine().runKernel(LAYER_NORM_GRAD, { x, gamma, dy: dy as tf.Tensor },
        attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
      return { x: () => dx!, gamma: () => dgamma!, beta: () => dbeta! };
    },
  });
}
if (tf.getGradient(GELU) === undefined) {
  tf.registerGradient({
    kernelName: GELU,
    inputsToSave: ['x'],
    gradFunc: (dy, saved) => ({
      x: () => tf.engine().runKernel(GELU_GRAD, { x: saved[0]!, dy: dy as tf.Tensor }) as tf.Tensor,
    }),
  });
}

function fusedOn(kernelName: string, ...xs: tf.Tensor[]): boolean {
  return tf.getKernel(kernelName, tf.getBackend()) !== undefined && xs.every((x) => x.dtype === 'float32');
}

/** LayerNorm over the last axis: `x [.., H]`, `gamma [H]`, `beta [H]` -> `[.., H]`; see the module comment. */
export function layerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number): tf.Tensor {
  const H = x.shape[x.rank - 1];
  if (gamma.rank !== 1 || beta.rank !== 1 || gamma.shape[0] !== H || beta.shape[0] !== H) {
    throw new Error(`layerNorm: gamma and beta must be [${H}] for x of shape [${x.shape}]; got [${gamma.shape}] and [${beta.shape}]`);
  }
  if (fusedOn(LAYER_NORM, x, gamma, beta)) {
    return tf.engine().runKernel(LAYER_NORM, { x, gamma, beta }, { eps } as unknown as tf.NamedAttrMap) as tf.Tensor;
  }
  return tf.tidy(() => {
    const { mean, variance } = tf.moments(x, -1, true);
    const normed = tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, eps)));
    return tf.add(tf.mul(normed, gamma), beta);
  });
}

/** Exact GELU `x * Phi(x)`, element-wise; see the module comment. */
export function gelu(x: tf.Tensor): tf.Tensor {
  if (fusedOn(GELU, x)) return tf.engine().runKernel(GELU, { x }) as tf.Tensor;
  return tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2)))));
}
