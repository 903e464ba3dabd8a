/**
 * A dense layer's three products on platform/gemm.ts's GEMM (webgpu), switched on by MICSE_WEBGPU_GEMM:
 *   forward   y = x W + b, or GELU(x W + b) keeping z = x W + b for the gradient     one dispatch
 *   backward  dz = dy (dy * GELU'(z) after a GELU: kernels/gelu's gradient kernel)
 *             dx = dz W^T (B transposed in the GEMM's staging: no transpose dispatch), dW = x^T dz
 *             db = the caller's column sum of dz (kernels/dense)
 * with x [N, in], W [in, out], b [out]. Only products of at least MIN_MACS multiply-adds with every side at least
 * MIN_SIDE run here (smaller ones keep TF.js's product: their time is the dispatch's, not the arithmetic's).
 * Each output sums its K products in order from 0 with fma, as TF.js's product does, so values equal TF.js's (bit
 * for bit on SwiftShader: test/gemm.test.ts).
 *
 * `MICSE_WEBGPU_GEMM`: unset or `0` TF.js's products (the default until the GEMM is timed on a GPU); `1` this GEMM,
 * with its subgroup variant where the device has `subgroups`; `nosubgroups` this GEMM without it.
 */
import { tf } from '../../model/tf.js';
import { GELU_GRAD } from '../gelu/index.js';
import { chooseGemmTile } from '../platform/gemm.js';
import { internalsOf } from '../platform/webgpuPrograms.js';
import { kernelOn } from '../registry.js';

export const GEMM_ENV = 'MICSE_WEBGPU_GEMM';
/** The kernel's name (registered by webgpu.ts). */
export const GEMM = 'MicseGemm';
/** Smallest product (multiply-adds) and side run on the GEMM. */
const MIN_MACS = 2 ** 24;
const MIN_SIDE = 64;

export type GemmMode = 'off' | 'on' | 'nosubgroups';

/** The mode GEMM_ENV asks for; throws on anything but unset, 0, 1 and nosubgroups, naming the variable. */
export function parseGemmMode(text: string | undefined): GemmMode {
  if (text === undefined || text === '' || text === '0') return 'off';
  if (text === '1') return 'on';
  if (text === 'nosubgroups') return 'nosubgroups';
  throw new Error(`${GEMM_ENV}='${text}': expected 0, 1 or nosubgroups`);
}

let mode: GemmMode = 'off';

/** Sets the mode dense layers use from now on (src/model/backend.ts: GEMM_ENV's at selection). */
export function useGemm(m: GemmMode): void {
  mode = m;
}

/** The mode useGemm last set. */
export function activeGemmMode(): GemmMode {
  return mode;
}

/** `our GEMM (platform/gemm.ts), subgroups where the device has them` */
export function describeGemmMode(m: GemmMode): string {
  return m === 'off' ? "TF.js's" : `our GEMM (platform/gemm.ts)${m === 'on' ? ', subgroup variant where the device has subgroups' : ', without subgroups'}`;
}

export interface GemmAttrs {
  transA: boolean;
  transB: boolean;
  gelu: boolean;
}

function product(a: tf.Tensor2D, b: tf.Tensor2D, transA: boolean, transB: boolean): tf.Tensor2D {
  const attrs: GemmAttrs = { transA, transB, gelu: false };
  return tf.engine().runKernel(GEMM, { a, b }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor2D;
}

/**
 * `x [N, in] W [in, out] + b [out]` (then GELU with `gelu`) on the GEMM, differentiable in x, W and b, the bias
 * gradient by `biasGrad` (dz [N, out] -> [out]); null where the GEMM does not run (mode off, another backend, a
 * product below the size threshold, no tile within the device's workgroup memory), for the caller's own path.
 */
export function gemmDense(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D, gelu: boolean,
  biasGrad: (dz: tf.Tensor2D) => tf.Tensor1D): tf.Tensor2D | null {
  const [N, inDim] = x.shape;
  const outDim = w.shape[1];
  const sides = [N, inDim, outDim];
  if (mode === 'off' || !kernelOn(GEMM, x, w, b) || sides.some((s) => s < MIN_SIDE) || N * inDim * outDim < MIN_MACS) return null;
  if (chooseGemmTile(N, outDim, internalsOf(tf.backend()).device.limits.maxComputeWorkgroupStorageSize) === null) return null;
  const op = tf.customGrad((...args) => {
    const [xs, ws, bs] = args as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D];
    const save = args[3] as tf.GradSaveFunc;
    const attrs: GemmAttrs = { transA: false, transB: false, gelu };
    const out = tf.engine().runKernel(GEMM, { a: xs, b: ws, bias: bs }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor2D | tf.Tensor2D[];
    const [y, pre] = Array.isArray(out) ? out as [tf.Tensor2D, tf.Tensor2D] : [out, null];
    save(pre === null ? [xs, ws] : [xs, ws, pre]); // saving keeps a clone: the original z goes now
    pre?.dispose();
    return {
      value: y, // [N, out]
      gradFunc: (dy, saved) => {
        const [xk, wk, z] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D | undefined];
        const dz = z === undefined ? dy as tf.Tensor2D : tf.engine().runKernel(GELU_GRAD, { x: z, dy: dy as tf.Tensor }) as tf.Tensor2D; // [N, out]
        return [
          product(dz, wk, false, true), // [N, out] x [in, out]^T -> [N, in]
          product(xk, dz, true, false), // [N, in]^T x [N, out] -> [in, out]
          biasGrad(dz), // [out]
        ];
      },
    };
  }) as (x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D) => tf.Tensor2D;
  return op(x, w, b);
}
