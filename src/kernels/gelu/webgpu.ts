/** The GELU kernels of webgpu, one element-wise dispatch each way (the op, its arithmetic and its gradient: index.ts). */
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { tf } from '../../model/tf.js';
import { elementwiseProgram } from '../platform/webgpuPrograms.js';
import { registerOp } from '../registry.js';
import { ERF_A1, ERF_A2, ERF_A3, ERF_A4, ERF_A5, ERF_P, GELU, GELU_GRAD, GELU_GRADIENTS, INV_SQRT_2PI } from './index.js';

/** Threads per workgroup of the element-wise programs. */
const ELEMENTWISE_WORKGROUP = 256;

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

/** Registers the GELU kernels of `backendName` if it is webgpu, and their gradient. */
export function registerGeluWebgpu(backendName: string): void {
  registerOp(backendName, { webgpu: webgpuKernels }, GELU_GRADIENTS);
}
