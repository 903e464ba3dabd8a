/**
 * The host backends (cpu, wasm) seen through one interface by kernels written once for both: read an input, make
 * outputs and fill them, and where the WebAssembly SIMD loops (hostSimd.ts) can run on those arrays.
 */
import { tf } from '../../model/tf.js';
import { heapMemory, heapView, uninitialized, type CpuBackend, type WasmBackend } from './hostBackend.js';
import { heapSimdHost, stagingSimdHost, type SimdHost } from './hostSimd.js';

/** Host backends seen through one interface: read an input, make outputs and fill them. */
export interface HostIO {
  read(t: tf.TensorInfo): Float32Array;
  /**
   * Makes float32 outputs of `shapes`, lets `fill` write them (fresh views, holding whatever the memory held: `fill`
   * writes every element; `scratch`: `scratchFloats` elements of working memory where the SIMD loops can address
   * it, not zeroed either, released after), returns them.
   */
  outputs(shapes: number[][], fill: (outs: Float32Array[], scratch: Float32Array) => void, scratchFloats?: number): tf.TensorInfo[];
  /** Where the SIMD loops run on these arrays; null without wasm SIMD. */
  simd: SimdHost | null;
}

/** Each backend's HostIO, made once (the kernels ask for it at every call). */
const ios = new WeakMap<object, HostIO>();

function ioOf(backend: unknown, make: () => HostIO): HostIO {
  const b = backend as object;
  let io = ios.get(b);
  if (io === undefined) ios.set(b, (io = make()));
  return io;
}

export function cpuIO(backend: unknown): HostIO {
  return ioOf(backend, () => makeCpuIO(backend as CpuBackend));
}

export function wasmIO(backend: unknown): HostIO {
  return ioOf(backend, () => makeWasmIO(backend as WasmBackend));
}

function makeCpuIO(b: CpuBackend): HostIO {
  return {
    read: (t) => b.data.get(t.dataId).values as Float32Array,
    outputs: (shapes, fill, scratchFloats = 0) => {
      const arrays = shapes.map((s) => uninitialized(Float32Array, tf.util.sizeFromShape(s)));
      fill(arrays, uninitialized(Float32Array, scratchFloats));
      return shapes.map((s, i) => b.makeTensorInfo(s, 'float32', arrays[i]));
    },
    simd: stagingSimdHost(),
  };
}

function makeWasmIO(b: WasmBackend): HostIO {
  return {
    read: (t) => heapView(b, t),
    outputs: (shapes, fill, scratchFloats = 0) => {
      const outs = shapes.map((s) => b.makeOutput(s, 'float32'));
      const scratch = scratchFloats > 0 ? b.makeOutput([scratchFloats], 'float32') : null;
      // Views are taken after every makeOutput: allocation may grow (and so move) the heap. Inputs are read
      // through `read` inside `fill`, i.e. after the allocations too.
      fill(outs.map((o) => heapView(b, o)), scratch !== null ? heapView(b, scratch) : new Float32Array(0));
      if (scratch !== null) b.disposeData(scratch.dataId);
      return outs;
    },
    simd: heapSimdHost(heapMemory(b)),
  };
}
