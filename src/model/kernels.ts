/**
 * Kernels registered over the stock ones where a backend lacks a kernel training needs, or has one too slow to
 * use. Only `backend.ts` calls `registerFastKernels`.
 *
 * UnsortedSegmentSum is the gradient of `tf.gather` (the embedding lookup). The stock cpu kernel runs one full
 * tensor pass per segment, i.e. per vocabulary row: about 5 minutes a call for BERT's 30,522 words. A direct
 * scatter-add is one pass over the input.
 */
import { tf } from './tf.js';

type KernelFunc = tf.KernelConfig['kernelFunc'];

/** The host-memory backends' methods the kernels use: cpu has makeTensorInfo, wasm has makeOutput. */
interface HostBackend {
  readSync(dataId: object): tf.backend_util.BackendValues;
  makeTensorInfo?(shape: number[], dtype: tf.DataType, values?: tf.backend_util.BackendValues): tf.TensorInfo;
  makeOutput?(shape: number[], dtype: tf.DataType, memoryOffset?: number, values?: tf.backend_util.BackendValues): tf.TensorInfo;
}

/** A tensor holding `values` on a host backend. */
function output(b: HostBackend, shape: number[], dtype: tf.DataType, values: Float32Array): tf.TensorInfo {
  if (b.makeTensorInfo !== undefined) return b.makeTensorInfo(shape, dtype, values);
  return b.makeOutput!(shape, dtype, undefined, values);
}

/**
 * out[segmentIds[i], ...] += x[i, ...]: x is read as `[segmentIds.length, inner]` (segmentIds may have any rank;
 * its elements index x's leading dims in row-major order). Out-of-range ids are dropped, as in TensorFlow.
 */
export function scatterAdd(x: Float32Array | Int32Array, segmentIds: Int32Array, numSegments: number): Float32Array {
  const rows = segmentIds.length;
  const inner = rows === 0 ? 0 : x.length / rows;
  const out = new Float32Array(numSegments * inner);
  for (let i = 0; i < rows; i++) {
    const s = segmentIds[i]!;
    if (s < 0 || s >= numSegments) continue;
    const src = i * inner;
    const dst = s * inner;
    for (let j = 0; j < inner; j++) out[dst + j]! += x[src + j]!;
  }
  return out;
}

const unsortedSegmentSumCpu: KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backend as unknown as HostBackend;
  const x = inputs['x']!;
  const segmentIds = inputs['segmentIds']!;
  const numSegments = (attrs as { numSegments: number }).numSegments;
  const xs = b.readSync(x.dataId) as Float32Array | Int32Array;
  const ids = Int32Array.from(b.readSync(segmentIds.dataId) as Int32Array);
  const outShape = [numSegments, ...x.shape.slice(segmentIds.shape.length)];
  const out = scatterAdd(xs, ids, numSegments);
  return output(b, outShape, 'float32', out);
};

/** Backends whose readSync/makeTensorInfo work on host memory, so the host scatter-add applies. */
const HOST_BACKENDS = ['cpu', 'wasm'] as const;

/** Registers the replacement kernels for `backendName`; returns the names of the kernels registered. */
export function registerFastKernels(backendName: string): string[] {
  if (!(HOST_BACKENDS as readonly string[]).includes(backendName)) return [];
  const registered: string[] = [];
  const name = tf.UnsortedSegmentSum;
  if (tf.getKernel(name, backendName) !== undefined) tf.unregisterKernel(name, backendName);
  tf.registerKernel({ kernelName: name, backendName, kernelFunc: unsortedSegmentSumCpu });
  registered.push(name);
  return registered;
}
