/** The GELU kernels of the host backends, cpu and wasm (the op, its arithmetic and its gradient: index.ts). */
import { tf } from '../../model/tf.js';
import { cpuIO, wasmIO, type HostIO } from '../platform/hostIO.js';
import { simdGelu, simdGeluGrad } from '../platform/hostSimd.js';
import { registerOp } from '../registry.js';
import { ERF_A1, ERF_A2, ERF_A3, ERF_A4, ERF_A5, ERF_P, INV_SQRT_2PI } from '../platform/erf.js';
import { GELU, GELU_GRAD, GELU_GRADIENTS } from './index.js';

function erf(v: number): number {
  const sign = Math.sign(v);
  const a = Math.abs(v);
  const t = 1 / (1 + ERF_P * a);
  return sign * (1 - ((((ERF_A5 * t + ERF_A4) * t + ERF_A3) * t + ERF_A2) * t + ERF_A1) * t * Math.exp(-a * a));
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

function hostKernels(io: (backend: unknown) => HostIO): Record<string, tf.KernelFunc> {
  return {
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

/** Registers the GELU kernels of `backendName` if it is cpu or wasm, and their gradient. */
export function registerGeluHost(backendName: string): void {
  registerOp(backendName, { cpu: hostKernels(cpuIO), wasm: hostKernels(wasmIO) }, GELU_GRADIENTS);
}
