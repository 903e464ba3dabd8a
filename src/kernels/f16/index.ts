/**
 * Rounding to float16, for `train.precision: mixed`: the encoder's dense products take x and W rounded to float16
 * and accumulate in float32, as a float16 GEMM with float32 accumulation does (PyTorch's autocast to float16 on
 * CUDA), and the gradients of x and W come back rounded to float16, as autocast's float16 copies' gradients do
 * (the weight gradient is where small values underflow without loss scaling).
 *
 *   MicseRoundF16   x (float32)  ->  x rounded to the nearest float16 (ties to even), as float32: magnitudes from
 *                   65520 up become infinity (float16's largest finite value is 65504), below 2^-14 the float16
 *                   subnormals (multiples of 2^-24), infinities and NaN stay as they are.
 *   gradient        dy rounded the same way.
 *
 * Kernels: cpu and wasm (host.ts: a loop on the float32 bits), webgpu (webgpu.ts: one dispatch of the same bit
 * arithmetic in WGSL, on every device), so the three give the same bits. There is no composite: `precision: mixed`
 * on another backend is refused (f16Problem).
 *
 * This rounds the product inputs; the products themselves stay TF.js's float32 kernels, so mixed precision here
 * gives float16 numerics (and exercises the loss scaling, src/train/lossScale.ts) without float16 speed, which
 * needs a float16 GEMM.
 */
import { tf } from '../../model/tf.js';
import { kernelOn } from '../registry.js';

/** The kernel's name (registered by the backend files: host.ts, webgpu.ts). */
export const ROUND_F16 = 'MicseRoundF16';

/** The float32 bits `b` rounded to float16 (see the module comment), as float32 bits. */
export function roundF16Bits(b: number): number {
  const sign = b & 0x80000000;
  const a = b & 0x7fffffff;
  if (a >= 0x7f800000) return b >>> 0; // infinity, NaN
  if (a >= 0x477ff000) return (sign | 0x7f800000) >>> 0; // >= 65520: past float16's range
  if (a < 0x38800000) {
    // below 2^-14: a float16 subnormal, a multiple of 2^-24 (exact in float32 at this size)
    return (sign | f32Bits(roundHalfEven(f32Of(a) * 2 ** 24) * 2 ** -24)) >>> 0;
  }
  const lsb = (a >>> 13) & 1; // 23 - 10 mantissa bits dropped, ties to even
  return (sign | ((a + 0xfff + lsb) & ~0x1fff)) >>> 0;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
function f32Of(bits: number): number {
  u32[0] = bits;
  return f32[0]!;
}
function f32Bits(x: number): number {
  f32[0] = x;
  return u32[0]!;
}
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** The rounding's gradient, registered with either backend file's kernels: dy rounded the same way. */
export const ROUND_F16_GRADIENTS: tf.GradConfig[] = [
  { kernelName: ROUND_F16, gradFunc: (dy) => ({ x: () => tf.engine().runKernel(ROUND_F16, { x: dy as tf.Tensor }) as tf.Tensor }) },
];

/** Why float16 product inputs cannot run on the active backend (no rounding kernel there), or null. */
export function f16Problem(): string | null {
  const backend = tf.getBackend();
  return tf.getKernel(ROUND_F16, backend) === undefined ? `backend ${backend} has no float16 rounding kernel (cpu, wasm and webgpu have)` : null;
}

/** `x` rounded to float16 (kept as float32), element-wise; its gradient is `dy` rounded the same way. */
export function roundToF16<T extends tf.Tensor>(x: T): T {
  if (!kernelOn(ROUND_F16, x)) throw new Error(`roundToF16: ${f16Problem() ?? `${x.dtype} input; float32 only`}`);
  return tf.engine().runKernel(ROUND_F16, { x }) as T;
}
