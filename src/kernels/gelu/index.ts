/**
 * Exact GELU, forward and backward, as single kernels (BERT's feed-forward activation).
 *
 * Why: composed of stock ops, the exact GELU is 5 kernels forward and ~10 backward; on WebGPU every kernel is a
 * dispatch with a fixed host cost (bench/README.md), and on the host backends every op is another pass.
 *   gelu(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))       (erf: the Abramowitz-Stegun 7.1.26 form every TF.js
 *                                                              backend uses, |error| < 1.5e-7)
 *     backward: dx = dy * (Phi(x) + x * phi(x)),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
 * Kernels: cpu and wasm (WebAssembly SIMD loops, src/kernels/platform/hostSimd.ts, the scalar loops below for the
 * last n % 4 elements and where wasm SIMD is missing), webgpu (one element-wise dispatch each way). Other backends
 * (tensorflow, webgl) compose stock ops. Float32 results agree with the composed ops within rounding (tests:
 * test/fused.test.ts).
 */
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { tf } from '../../model/tf.js';
import { cpuIO, wasmIO, type HostIO } from '../platform/hostIO.js';
import { simdGelu, simdGeluGrad } from '../platform/hostSimd.js';
import { elementwiseProgram } from '../platform/webgpuPrograms.js';
import { kernelOn, registerOp } from '../registry.js';

const GELU = 'MicseGelu';
export const GELU_GRAD = 'MicseGeluGrad';

// Abramowitz & Stegun 7.1.26, the constants of TF.js's Erf kernels (backend_util.ERF_*).
const ERF_P = 0.3275911;
const ERF_A1 = 0.254829592;
const ERF_A2 = -0.284496736;
const ERF_A3 = 1.421413741;
const ERF_A4 = -1.453152027;
const ERF_A5 = 1.061405429;
/** 1 / sqrt(2 pi) */
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** Threads per workgroup of the element-wise programs. */
const ELEMENTWISE_WORKGROUP = 256;

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

export const WGSL_ERF = `
  fn erf_as(v : f32) -> f32 {
    let a = abs(v);
    let t = 1.0 / (1.0 + ${ERF_P} * a);
    return sign(v) * (1.0 - ((((${ERF_A5} * t + ${ERF_A4}) * t + ${ERF_A3}) * t + ${ERF_A2}) * t + ${ERF_A1}) * t * exp(-a * a));
  }`;

const webgpuKernels: Record<string, tf.KernelFunc> = {
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

const BY_BACKEND = {
  cpu: hostKernels(cpuIO),
  wasm: hostKernels(wasmIO),
  webgpu: webgpuKernels,
};

const GRADIENTS: tf.GradConfig[] = [
  {
    kernelName: GELU,
    inputsToSave: ['x'],
    gradFunc: (dy, saved) => ({
      x: () => tf.engine().runKernel(GELU_GRAD, { x: saved[0]!, dy: dy as tf.Tensor }) as tf.Tensor,
    }),
  },
];

/** Registers the GELU kernels of `backendName` (cpu, wasm, webgpu) and their gradient. */
export function registerGeluKernels(backendName: string): void {
  registerOp(backendName, BY_BACKEND, GRADIENTS);
}

/** Exact GELU `x * Phi(x)`, element-wise; see the module comment. */
export function gelu(x: tf.Tensor): tf.Tensor {
  if (kernelOn(GELU, x)) return tf.engine().runKernel(GELU, { x }) as tf.Tensor;
  return tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2)))));
}
