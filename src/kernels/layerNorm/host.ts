/** The LayerNorm and addLayerNorm kernels of the host backends, cpu and wasm (the ops, their arithmetic and gradients: index.ts). */
import { cpuIO, wasmIO, type HostIO } from '../platform/hostIO.js';
import {
  layerNormGradScratch, SIMD_LANES, simdLayerNorm, simdLayerNormGrad, simdResidualLayerNorm, simdResidualLayerNormGrad,
} from '../platform/hostSimd.js';
import { dropoutInto, dropoutKeys } from '../dropout/host.js';
import { tf } from '../../model/tf.js';
import { registerOp } from '../registry.js';
import {
  LAYER_NORM, LAYER_NORM_GRAD, LAYER_NORM_GRADIENTS, RESIDUAL_LAYER_NORM, RESIDUAL_LAYER_NORM_GRAD, type AddLayerNormAttrs, type LayerNormAttrs,
} from './index.js';

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

// ---------------------------------------------------------------------------------------------------------------
// cpu and wasm kernels: WebAssembly SIMD loops (hostSimd.ts: in place on the wasm heap; through a staging memory
// for the cpu backend's JS arrays), or where a runtime lacks wasm SIMD (or LayerNorm's H % 4 != 0) the host
// arithmetic above.
// ---------------------------------------------------------------------------------------------------------------

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
      }, simd !== null ? layerNormGradScratch(H, tf.util.sizeFromShape(x.shape)) : 0);
    },
    // addLayerNorm's host form (index.ts residualLayerNorm): [y, s], s = dropout(x) + residual; the SIMD loops a few
    // rows at a time (hostSimd.ts simdResidualLayerNorm), else the dropout and add into s, then LayerNorm into y
    [RESIDUAL_LAYER_NORM]: ({ inputs, backend, attrs }) => {
      const h = io(backend);
      const { x, residual, gamma, beta } = inputs as Record<'x' | 'residual' | 'gamma' | 'beta', tf.TensorInfo>;
      const { eps, rate, seed } = attrs as unknown as AddLayerNormAttrs;
      return h.outputs([x.shape, x.shape], ([y, s]) => {
        const [xs, rs, g, b] = [h.read(x), h.read(residual), h.read(gamma), h.read(beta)];
        if (h.simd !== null && gamma.shape[0]! % SIMD_LANES === 0) {
          simdResidualLayerNorm(h.simd, xs, rs, g, b, eps, dropoutKeys(rate, seed), s!, y!);
          return;
        }
        dropoutInto(xs, s!, rate, seed, h.simd);
        for (let i = 0; i < s!.length; i++) s![i]! += rs[i]!;
        layerNormHost(s!, g, b, eps, y!);
      });
    },
    // [ds, dgamma, dbeta, dx] from s: LayerNorm's gradient into ds, then dx = dropout(ds)
    [RESIDUAL_LAYER_NORM_GRAD]: ({ inputs, backend, attrs }) => {
      const h = io(backend);
      const { s, gamma, dy } = inputs as Record<'s' | 'gamma' | 'dy', tf.TensorInfo>;
      const { eps, rate, seed } = attrs as unknown as AddLayerNormAttrs;
      const H = gamma.shape[0]!;
      const simd = H % SIMD_LANES === 0 ? h.simd : null;
      return h.outputs([s.shape, gamma.shape, gamma.shape, s.shape], ([ds, dg, db, dx], scratch) => {
        const [ss, g, dys] = [h.read(s), h.read(gamma), h.read(dy)];
        if (simd !== null) {
          simdResidualLayerNormGrad(simd, ss, g, dys, eps, dropoutKeys(rate, seed), ds!, dx!, dg!, db!, scratch);
          return;
        }
        layerNormGradHost(ss, g, dys, eps, ds!, dg!, db!);
        dropoutInto(ds!, dx!, rate, seed, h.simd);
      }, simd !== null ? layerNormGradScratch(H, tf.util.sizeFromShape(s.shape)) : 0);
    },
  };
}

/** Registers the LayerNorm kernels of `backendName` if it is cpu or wasm, and their gradients. */
export function registerLayerNormHost(backendName: string): void {
  registerOp(backendName, { cpu: hostKernels(cpuIO), wasm: hostKernels(wasmIO) }, LAYER_NORM_GRADIENTS);
}
