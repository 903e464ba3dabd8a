/**
 * The seeded uniform and dropout kernels of the host backends (cpu: values in JS arrays; wasm: values in the module
 * heap). The generator, the ops and dropout's gradient: index.ts.
 */
import { heapMemory, heapView, uninitialized, type CpuBackend, type WasmBackend } from '../platform/hostBackend.js';
import { heapSimdHost, simdDropout, stagingSimdHost, type DropoutKeys, type SimdHost } from '../platform/hostSimd.js';
import { tf } from '../../model/tf.js';
import { registerOp } from '../registry.js';
import {
  DROPOUT_GRADIENTS, SEEDED_DROPOUT, SEEDED_UNIFORM, seedKeys, uniformArray, uniformAt, type DropoutAttrs, type UniformAttrs,
} from './index.js';

/** kernels/dropout's mask as the SIMD loops take it: the seed's keys, the rate and the scale 1 / (1 - rate) in float32. */
export function dropoutKeys(rate: number, seed: number): DropoutKeys {
  const [k1, k2] = seedKeys(seed);
  return { k1, k2, rate: Math.fround(rate), scale: Math.fround(1 / (1 - rate)) };
}

/**
 * Dropout on the host into `out` (which may be `x`: in place), element i at flat index i: the arithmetic of every
 * backend's kernel (float32 rate and scale). The WebAssembly SIMD loop (hostSimd.ts, the same bits) does whole
 * groups of 4 where `simd` is given; this loop the rest. Also the attention kernels' dropout (kernels/attention).
 */
export function dropoutInto(x: Float32Array, out: Float32Array, rate: number, seed: number, simd: SimdHost | null): void {
  const { k1, k2, rate: r, scale } = dropoutKeys(rate, seed);
  const from = simd !== null ? simdDropout(simd, x, out, k1, k2, r, scale) : 0;
  for (let i = from; i < out.length; i++) out[i] = uniformAt(i, k1, k2) >= r ? Math.fround(x[i]! * scale) : 0;
}

const uniformCpu: tf.KernelFunc = ({ backend, attrs }) => {
  const { shape, seed } = attrs as unknown as UniformAttrs;
  return (backend as unknown as CpuBackend).makeTensorInfo(shape, 'float32', uniformArray(tf.util.sizeFromShape(shape), seed));
};

const dropoutCpu: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { rate, seed } = attrs as unknown as DropoutAttrs;
  const b = backend as unknown as CpuBackend;
  const x = inputs['x']!;
  const out = uninitialized(Float32Array, tf.util.sizeFromShape(x.shape));
  dropoutInto(b.data.get(x.dataId).values as Float32Array, out, rate, seed, stagingSimdHost());
  return b.makeTensorInfo(x.shape, 'float32', out);
};

const uniformWasm: tf.KernelFunc = ({ backend, attrs }) => {
  const { shape, seed } = attrs as unknown as UniformAttrs;
  const b = backend as unknown as WasmBackend;
  const out = b.makeOutput(shape, 'float32');
  heapView(b, out).set(uniformArray(tf.util.sizeFromShape(shape), seed));
  return out;
};

const dropoutWasm: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { rate, seed } = attrs as unknown as DropoutAttrs;
  const b = backend as unknown as WasmBackend;
  const x = inputs['x']!;
  const out = b.makeOutput(x.shape, 'float32');
  // Both views are taken after makeOutput, which may grow (and so move) the heap.
  dropoutInto(heapView(b, x), heapView(b, out), rate, seed, heapSimdHost(heapMemory(b)));
  return out;
};

/** Registers the seeded uniform and dropout kernels of `backendName` if it is cpu or wasm, and dropout's gradient. */
export function registerDropoutHost(backendName: string): void {
  registerOp(backendName, {
    cpu: { [SEEDED_UNIFORM]: uniformCpu, [SEEDED_DROPOUT]: dropoutCpu },
    wasm: { [SEEDED_UNIFORM]: uniformWasm, [SEEDED_DROPOUT]: dropoutWasm },
  }, DROPOUT_GRADIENTS);
}
