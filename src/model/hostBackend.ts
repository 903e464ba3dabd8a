/**
 * The host-memory backends (tfjs-backend-cpu, tfjs-backend-wasm) as the custom kernels see them: the public fields
 * and methods the kernels use, which the packages do not type, declared once for every kernel module (kernels.ts,
 * fused.ts, random.ts, src/train/adamwKernels.ts), with the wasm heap views they share.
 *
 * A wasm tensor's values are float32 (or int32) elements at `dataIdMap.get(dataId).memoryOffset` bytes into the
 * module heap. Allocating an output (`makeOutput`) may grow the heap, which replaces its ArrayBuffer and views:
 * take views after the allocations, never keep one across a makeOutput.
 */
import { tf } from './tf.js';

/** Bytes of one float32 (and of one int32). */
export const F32_BYTES = 4;

/** tfjs-backend-cpu's MathBackendCPU: values in JavaScript typed arrays. */
export interface CpuBackend {
  data: { get(dataId: object): { values: tf.backend_util.BackendValues } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: tf.backend_util.BackendValues): tf.TensorInfo;
  readSync(dataId: object): tf.backend_util.BackendValues;
}

/** tfjs-backend-wasm's BackendWasm: values in the module heap. */
export interface WasmBackend {
  wasm: {
    /** The heap as float32; re-read on every use (replaced when the heap grows). */
    HEAPF32: Float32Array;
    asm: { memory: WebAssembly.Memory };
    cwrap(name: string, ret: null, argTypes: string[]): (...args: unknown[]) => void;
    tfjs: { registerTensor(id: number, size: number, memoryOffset: number): void; disposeData(id: number): void };
  };
  dataIdMap: { get(dataId: object): { id: number; memoryOffset: number } };
  dataIdNextNumber: number;
  makeOutput(shape: number[], dtype: tf.DataType, memoryOffset?: number, values?: tf.backend_util.BackendValues): tf.TensorInfo;
  disposeData(dataId: object): boolean;
  incRef(dataId: object): void;
  readSync(dataId: object): tf.backend_util.BackendValues;
}

/** A tensor holding `values` on either host backend (cpu keeps the array; wasm copies it into the heap). */
export function hostOutput(b: CpuBackend | WasmBackend, shape: number[], dtype: tf.DataType, values: Float32Array): tf.TensorInfo {
  if ('makeTensorInfo' in b) return b.makeTensorInfo(shape, dtype, values);
  return b.makeOutput(shape, dtype, undefined, values);
}

/** The wasm heap as float32, as it is now. */
export function heapF32(b: WasmBackend): Float32Array {
  return b.wasm.HEAPF32;
}

/** Byte offset of a wasm tensor in the heap. */
export function heapOffset(b: WasmBackend, x: tf.TensorInfo): number {
  return b.dataIdMap.get(x.dataId).memoryOffset;
}

/** Float32 view of a wasm tensor's elements from element `from` on (taken now: see the module comment). */
export function heapView(b: WasmBackend, x: tf.TensorInfo, from = 0): Float32Array {
  const start = heapOffset(b, x) / F32_BYTES;
  return heapF32(b).subarray(start + from, start + tf.util.sizeFromShape(x.shape));
}
