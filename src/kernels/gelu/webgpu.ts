/** The GELU kernels of webgpu, one element-wise dispatch each way (the op, its arithmetic and its gradient: index.ts). */
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { tf } from '../../model/tf.js';
import { elementwiseProgram } from '../platform/webgpuPrograms.js';
import { registerOp } from '../registry.js';
import { INV_SQRT_2PI, WGSL_ERF } from '../platform/erf.js';
import { GELU, GELU_GRAD, GELU_GRADIENTS } from './index.js';

/** Threads per workgroup of the element-wise programs. */
const ELEMENTWISE_WORKGROUP = 256;

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
