/** The float16 rounding kernel of the host backends, cpu and wasm (the op and its gradient: index.ts). */
import { tf } from '../../model/tf.js';
import { cpuIO, wasmIO, type HostIO } from '../platform/hostIO.js';
import { registerOp } from '../registry.js';
import { ROUND_F16, ROUND_F16_GRADIENTS, roundF16Bits } from './index.js';

function roundHost(x: Float32Array, y: Float32Array): void {
  const xb = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const yb = new Uint32Array(y.buffer, y.byteOffset, y.length);
  for (let i = 0; i < xb.length; i++) yb[i] = roundF16Bits(xb[i]!);
}

function hostKernels(io: (backend: unknown) => HostIO): Record<string, tf.KernelFunc> {
  return {
    [ROUND_F16]: ({ inputs, backend }) => {
      const h = io(backend);
      const x = inputs['x']!;
      return h.outputs([x.shape], ([y]) => roundHost(h.read(x), y!))[0]!;
    },
  };
}

/** Registers the rounding kernel of `backendName` if it is cpu or wasm, and its gradient. */
export function registerF16Host(backendName: string): void {
  registerOp(backendName, { cpu: hostKernels(cpuIO), wasm: hostKernels(wasmIO) }, ROUND_F16_GRADIENTS);
}
