/**
 * The dense layer's cpu and wasm kernel (the op and its gradient: index.ts): y = x W + b with the bias added in place
 * into the product's own array (the output of the backend's BatchMatMul kernel, which nothing else holds yet), where
 * tf.add(tf.matMul(x, W), b) makes a second [N, out] array and a broadcast pass over it. The bias add is one
 * `cblas_sger` (Cblas.addRowVector) where CBLAS runs the host products, else a JavaScript loop (cpu only: wasm keeps
 * the composed ops without CBLAS). The same float32 operations either way (each output the product rounded to
 * float32, plus its bias rounded to float32), so the same bits as the composed ops.
 *   x [N, in], W [in, out], b [out] -> y [N, out]
 */
import { tf } from '../../model/tf.js';
import { hostF32, type HostBackend } from '../platform/hostBackend.js';
import { registerOp } from '../registry.js';
import { activeCblas } from '../stock/host.js';
import { DENSE, DENSE_GRADIENTS } from './index.js';

function denseKernel(backendName: string): tf.KernelFunc {
  return (args) => {
    const { x, w, b } = args.inputs as Record<'x' | 'w' | 'b', tf.TensorInfo>;
    const backend = args.backend as unknown as HostBackend;
    const matMul = tf.getKernel(tf.BatchMatMul, backendName)!.kernelFunc; // whichever product the backend has registered
    const y = matMul({ inputs: { a: x, b: w }, backend: args.backend, attrs: { transposeA: false, transposeB: false } }) as tf.TensorInfo;
    const values = hostF32(backend, y); // [N, out], a view taken after the product's allocation
    const bias = hostF32(backend, b); // [out]
    const cblas = activeCblas();
    if (cblas !== undefined) {
      cblas.addRowVector(values, bias);
    } else {
      const out = bias.length;
      for (let r = 0; r < values.length; r += out) {
        for (let c = 0; c < out; c++) values[r + c]! += bias[c]!;
      }
    }
    return y;
  };
}

/** Registers the dense kernel of `backendName` if it is cpu, or wasm while CBLAS runs the host products, and its gradient. */
export function registerDenseHost(backendName: string): void {
  registerOp(backendName, { cpu: { [DENSE]: denseKernel('cpu') } }, DENSE_GRADIENTS);
  registerOp(backendName, { wasm: { [DENSE]: denseKernel('wasm') } }, DENSE_GRADIENTS, () => activeCblas() !== undefined);
}
