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
 * typically), so ORT reads and writes tensors in place; the binding also returns a copy of each output, which is
 * dropped (the remaining cost: one memcpy of the output and the garbage it leaves). Nothing runs between the
 * views' creation and `run` returning, so a wasm heap cannot grow (and detach them) meanwhile.
 *
 * Sessions are built once per graph key. Their intra-op pools do not spin between calls
 * (`session.intra_op.allow_spinning = 0`): the cores are shared with the JavaScript and wasm kernels that run
 * between two native calls.
 */
import { createRequire } from 'node:module';
import os from 'node:os';
import { installedVersion, privateDependency, versionProblem } from './internals.js';
import { encodeModel, type GraphSpec } from './onnxProto.js';

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
   * or is not the version whose binding this module calls (internals.ts). `threads` defaults to the cores Node may
   * use (os.availableParallelism()).
   */
  static load(threads: number = os.availableParallelism()): NativeOps {
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
    const { Tensor } = this.ort;
    const wrap = (ts: Record<string, NativeTensor>): Record<string, OrtTensorLike> =>
      Object.fromEntries(Object.entries(ts).map(([name, t]) => [name, new Tensor('float32', t.data, t.dims)]));
    this.session(key, graph).run(wrap(inputs), wrap(outputs), {});
  }

  /** Releases the sessions (their thread pools); the object stays usable and rebuilds them on demand. */
  dispose(): void {
    for (const s of this.sessions.values()) s.dispose();
    this.sessions.clear();
  }
}
