/**
 * The dense layer's cpu kernel (the op and its gradient: index.ts): y = x W + b with the bias added in place into the
 * product's own array (the output of the backend's BatchMatMul kernel, which nothing else holds yet), where
 * tf.add(tf.matMul(x, W), b) makes a second [N, out] array and a broadcast pass over it. The same float32 operations
 * (each output the product rounded to float32, plus its bias rounded to float32), so the same bits.
 *   x [N, in], W [in, out], b [out] -> y [N, out]
 */
import { tf } from '../../model/tf.js';
import type { CpuBackend } from '../platform/hostBackend.js';
import { registerOp } from '../registry.js';
import { DENSE, DENSE_GRADIENTS } from './index.js';

const denseCpu: tf.KernelFunc = (args) => {
  const { x, w, b } = args.inputs as Record<'x' | 'w' | 'b', tf.TensorInfo>;
  const backend = args.backend as unknown as CpuBackend;
  const matMul = tf.getKernel(tf.BatchMatMul, 'cpu')!.kernelFunc; // whichever product the backend has registered
  const y = matMul({ inputs: { a: x, b: w }, backend: args.backend, attrs: { transposeA: false, transposeB: false } }) as tf.TensorInfo;
  const values = backend.data.get(y.dataId).values as Float32Array; // [N, out]
  const bias = backend.data.get(b.dataId).values as Float32Array; // [out]
  const out = bias.length;
  for (let r = 0; r < values.length; r += out) {
    for (let c = 0; c < out; c++) values[r + c]! += bias[c]!;
  }
  return y;
};

/** Registers the dense kernel of `backendName` if it is cpu, and its gradient. */
export function registerDenseHost(backendName: string): void {
  registerOp(backendName, { cpu: { [DENSE]: denseCpu } }, DENSE_GRADIENTS);
}
