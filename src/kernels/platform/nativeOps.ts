/**
 * Small ONNX graphs run synchronously on onnxruntime-node's CPU kernels, on views of host memory (the wasm heap).
 *
 * Why: TF.js kernels must return synchronously, and the wasm backend computes on one wasm SIMD thread. ORT's CPU
 * kernels are native (MLAS: AVX2/AVX-512 GEMM, vectorised Erf/Exp/Tanh, ...) and run on an intra-op thread pool,
 * for ~10 us of fixed cost a call. src/kernels/platform/nativeGemm.ts uses this for the dense products; any kernel can run
 * a graph of its own the same way (`NativeOps.run`).
 *
 * How: the public `InferenceSession.run()` is async (it defers the call with setImmediate), but the package's
 * native binding (`onnxruntime-node/dist/binding`, the object its own session handler wraps) has a synchronous
 * `run`, which this module calls directly: a documented shim over an internal entry point (listed in internals.ts
 * with the version it is checked against). Inputs and preallocated outputs are Float32Array views (of the wasm heap,
 * typically), so ORT reads and writes tensors in place (`run`). The binding also returns a copy of every output, in
 * a fresh zero-filled ArrayBuffer: `run` frees those at once (`releaseBuffer`) instead of leaving them to the
 * garbage collector, whose external-memory accounting they would push towards full collections and whose late
 * frees leave malloc to hand out fresh pages (a page fault each) for the next copy. Where the caller has no memory
 * of its own to offer (the cpu backend, whose tensors are JavaScript arrays), `runToArrays` lets ORT allocate the
 * outputs (from its arena) and hands the binding's copies over as the results: one copy, no preallocated array.
 * Nothing runs between the views' creation and `run` returning, so a wasm heap cannot grow (and detach them)
 * meanwhile.
 *
 * Sessions are built once per graph key. Their intra-op pools do not spin between calls
 * (`session.intra_op.allow_spinning = 0`): the cores are shared with the JavaScript and wasm kernels that run
 * between two native calls.
 */
import { createRequire } from 'node:module';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { installedVersion, privateDependency, versionProblem } from './internals.js';
import { encodeModel, type GraphSpec } from './onnxProto.js';
import { hostThreads, isShared } from './simdThreads.js';

/** ONNX opset and IR version of the graphs (opset 17: every op used here, LayerNormalization included). */
const NATIVE_OPSET = 17;
const NATIVE_IR_VERSION = 8;

/** The pieces of onnxruntime-node's native binding this module calls (dist/binding.d.ts, Binding namespace). */
interface OrtTensorLike {
  readonly data: unknown;
}
interface BindingSession {
  loadModel(buffer: ArrayBufferLike, byteOffset: number, byteLength: number, options: Record<string, unknown>): void;
  run(feeds: Record<string, OrtTensorLike>, fetches: Record<string, OrtTensorLike | null>, options: Record<string, unknown>): Record<string, OrtTensorLike>;
  dispose(): void;
}
interface OrtBindingModule {
  binding: { InferenceSession: new () => BindingSession };
  initOrt(): void;
}
interface OrtModule {
  Tensor: new (type: 'float32', data: Float32Array, dims: readonly number[]) => OrtTensorLike;
}

/** A dense row-major float32 tensor in place: `data.length` must equal the product of `dims`. */
export interface NativeTensor {
  data: Float32Array;
  dims: readonly number[];
}

/** A closed port: a transfer to it detaches the buffer and drops the message at once (see releaseBuffer). */
let closedPort: MessagePort | undefined;

/**
 * Frees `buffer`'s memory now instead of at a later garbage collection; the buffer is detached (length 0) after.
 * How: a transfer to a closed MessagePort. Node still serializes a message posted to a closed port (the transfer
 * takes the buffer's memory) and then drops it, which frees the memory (node_messaging.cc, MessagePort::PostMessage).
 * A buffer that cannot be transferred is left to the collector.
 */
export function releaseBuffer(buffer: ArrayBufferLike): void {
  if (!(buffer instanceof ArrayBuffer) || buffer.byteLength === 0) return;
  if (closedPort === undefined) {
    closedPort = new MessageChannel().port1;
    closedPort.close();
  }
  try {
    closedPort.postMessage(null, [buffer]);
  } catch {
    // not detachable (e.g. a wasm memory's buffer): the collector frees it
  }
}

/** Cached ONNX sessions run synchronously on native threads. */
export class NativeOps {
  private readonly sessions = new Map<string, BindingSession>();
  private static sharedInstance: NativeOps | undefined;

  private constructor(
    private readonly ort: OrtModule,
    private readonly binding: OrtBindingModule,
    /** Intra-op threads of each call (the calling thread included). */
    readonly threads: number,
  ) {}

  /**
   * Loads onnxruntime-node; throws (with the loader's message) when the package or its native library is missing,
   * or is not the version whose binding this module calls (internals.ts). `threads` defaults to the host threads
   * (hostThreads(): MICSE_HOST_THREADS, else the cores this process may use), as the CBLAS library's and the SIMD
   * loops'.
   */
  static load(threads: number = hostThreads()): NativeOps {
    const why = versionProblem(privateDependency('onnxruntime-node'), installedVersion('onnxruntime-node'));
    if (why !== null) throw new Error(why);
    const require = createRequire(import.meta.url);
    const ort = require('onnxruntime-node') as OrtModule;
    const binding = require('onnxruntime-node/dist/binding') as OrtBindingModule;
    binding.initOrt();
    return new NativeOps(ort, binding, Math.max(1, Math.floor(threads)));
  }

  /** One process-wide instance with the default thread count, loaded on first use (throws as `load`). */
  static shared(): NativeOps {
    return (NativeOps.sharedInstance ??= NativeOps.load());
  }

  private session(key: string, graph: () => GraphSpec): BindingSession {
    let s = this.sessions.get(key);
    if (s === undefined) {
      const model = encodeModel({ irVersion: NATIVE_IR_VERSION, opset: NATIVE_OPSET, producerName: 'micse-tfjs', producerVersion: '0', graph: graph() });
      s = new this.binding.binding.InferenceSession();
      s.loadModel(model.buffer, model.byteOffset, model.byteLength, {
        intraOpNumThreads: this.threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
        extra: { session: { intra_op: { allow_spinning: '0' } } },
      });
      this.sessions.set(key, s);
    }
    return s;
  }

  /**
   * Runs the graph `graph()` builds (once per `key`; its inputs and outputs should have symbolic dims) with
   * `inputs`, writing each of `outputs` in place. Output dims must be the ones the graph produces.
   */
  run(key: string, graph: () => GraphSpec, inputs: Record<string, NativeTensor>, outputs: Record<string, NativeTensor>): void {
    // ORT's binding refuses SharedArrayBuffer views ("Invalid argument"; the threaded wasm build's heap): such outputs
    // are written to an array of their own and copied back, such inputs copied (wrap)
    const own = Object.fromEntries(Object.entries(outputs).map(([name, t]) =>
      [name, isShared(t.data.buffer) ? { data: new Float32Array(t.data.length), dims: t.dims } : t]));
    const copies = this.session(key, graph).run(this.wrap(inputs), this.wrap(own), {});
    for (const t of Object.values(copies)) if (ArrayBuffer.isView(t.data)) releaseBuffer(t.data.buffer);
    for (const [name, t] of Object.entries(outputs)) if (own[name] !== t) t.data.set(own[name]!.data);
  }

  /**
   * Runs the graph as `run` does, with ORT allocating the outputs named in `outputs`: returns each as a new
   * Float32Array of its own (the binding's copy, which the caller now owns).
   */
  runToArrays(key: string, graph: () => GraphSpec, inputs: Record<string, NativeTensor>, outputs: readonly string[]): Record<string, Float32Array> {
    const results = this.session(key, graph).run(this.wrap(inputs), Object.fromEntries(outputs.map((name) => [name, null])), {});
    return Object.fromEntries(outputs.map((name) => {
      const data = results[name]?.data;
      if (!(data instanceof Float32Array)) throw new Error(`NativeOps ${key}: output '${name}' did not come back as float32`);
      return [name, data];
    }));
  }

  private wrap(ts: Record<string, NativeTensor>): Record<string, OrtTensorLike> {
    const { Tensor } = this.ort;
    return Object.fromEntries(Object.entries(ts).map(([name, t]) => [name, new Tensor('float32', isShared(t.data.buffer) ? t.data.slice() : t.data, t.dims)]));
  }

  /** Releases the sessions (their thread pools); the object stays usable and rebuilds them on demand. */
  dispose(): void {
    for (const s of this.sessions.values()) s.dispose();
    this.sessions.clear();
  }
}
