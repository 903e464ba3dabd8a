/**
 * Dense float32 products on onnxruntime-node's CPU kernels, called synchronously from a TF.js kernel.
 *
 * Why: the wasm backend's best product is XNNPACK on one wasm SIMD (128-bit) thread, ~20-40 GFLOP/s here; Node
 * gets no wasm threads. onnxruntime-node (already a dependency, for the ONNX export check) runs MatMul on MLAS:
 * native AVX2/AVX-512 SGEMM with its own intra-op thread pool, 100-200 GFLOP/s on one core of the 2-core bench
 * machine. That moves the training step's dense products (well over half of its time on wasm) to native code.
 *
 * How: the public `InferenceSession.run()` is async (it defers the call with setImmediate), but a TF.js kernel
 * must return synchronously. The package's native binding (`onnxruntime-node/dist/binding`, the object its own
 * session handler wraps) has a synchronous `run`, so this module uses it directly: a documented shim over an
 * internal but stable entry point (the same in 1.16-1.21). Inputs and the preallocated output are Float32Array
 * views of the wasm heap, so ORT reads and writes TF.js tensors in place (the binding also returns a copy of the
 * output, which is dropped). Nothing runs between the views' creation and `run` returning, so the heap cannot
 * grow (and detach them) meanwhile.
 *
 * One ONNX graph per transpose-flag pair, with symbolic dims: a [ba, ra, ca], b [bb, rb, cb] -> optional
 * Transpose(perm 0,2,1) on each -> MatMul -> c [bo, M, N]. ORT fuses a Transpose into the MatMul
 * (MatMulTransposeFusion -> FusedMatMul), and MatMul broadcasts a batch of 1 against the other operand's batch.
 * The intra-op pool does not spin between calls (`session.intra_op.allow_spinning = 0`): the cores are shared
 * with the wasm kernels that run between two products.
 */
import { createRequire } from 'node:module';
import os from 'node:os';
import { DataType, encodeModel, type NodeSpec } from '../export/onnx/proto.js';

/** ONNX opset and IR version of the product graphs (MatMul/Transpose semantics are unchanged since opset 13). */
const GEMM_OPSET = 17;
const GEMM_IR_VERSION = 8;
/** Swaps the last two axes of a rank-3 operand. */
const SWAP_LAST_TWO = [0, 2, 1];

/** `[batch, rows, cols]` of an operand as stored (before its transpose flag is applied). */
export type Shape3 = readonly [number, number, number];

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

/** c = op(a) @ op(b) over a broadcast batch, on native threads. */
export class NativeGemm {
  private readonly sessions = new Map<string, BindingSession>();

  private constructor(
    private readonly ort: OrtModule,
    private readonly binding: OrtBindingModule,
    /** Intra-op threads of each product (the calling thread included). */
    readonly threads: number,
  ) {}

  /**
   * Loads onnxruntime-node; throws (with the loader's message) when the package or its native library is missing.
   * `threads` defaults to the cores Node may use (os.availableParallelism()).
   */
  static load(threads: number = os.availableParallelism()): NativeGemm {
    const require = createRequire(import.meta.url);
    const ort = require('onnxruntime-node') as OrtModule;
    const binding = require('onnxruntime-node/dist/binding') as OrtBindingModule;
    binding.initOrt();
    return new NativeGemm(ort, binding, Math.max(1, Math.floor(threads)));
  }

  private session(transA: boolean, transB: boolean): BindingSession {
    const key = `${+transA}${+transB}`;
    let s = this.sessions.get(key);
    if (s === undefined) {
      const nodes: NodeSpec[] = [];
      const operand = (name: string, flip: boolean): string => {
        if (!flip) return name;
        nodes.push({ opType: 'Transpose', inputs: [name], outputs: [`${name}T`], name: `transpose_${name}`, attributes: { perm: { kind: 'ints', value: SWAP_LAST_TWO } } });
        return `${name}T`;
      };
      nodes.push({ opType: 'MatMul', inputs: [operand('a', transA), operand('b', transB)], outputs: ['c'], name: 'matmul' });
      const model = encodeModel({
        irVersion: GEMM_IR_VERSION, opset: GEMM_OPSET, producerName: 'micse-tfjs', producerVersion: '0',
        graph: {
          name: `matmul_${key}`, nodes, initializers: [],
          inputs: [
            { name: 'a', elemType: DataType.FLOAT, shape: ['ba', 'ra', 'ca'] },
            { name: 'b', elemType: DataType.FLOAT, shape: ['bb', 'rb', 'cb'] },
          ],
          outputs: [{ name: 'c', elemType: DataType.FLOAT, shape: ['bo', 'm', 'n'] }],
        },
      });
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
   * out [max(ba, bb), M, N] = op(a) @ op(b), op = transpose of the last two axes where the flag is set; the batches
   * must be equal or one of them 1. `a`, `b`, `out` are dense row-major views (of the wasm heap, typically).
   */
  matMul(a: Float32Array, aShape: Shape3, transA: boolean, b: Float32Array, bShape: Shape3, transB: boolean, out: Float32Array): void {
    const [ba, ra, ca] = aShape;
    const [bb, rb, cb] = bShape;
    const M = transA ? ca : ra;
    const N = transB ? rb : cb;
    const batch = Math.max(ba, bb);
    if (ba !== bb && ba !== 1 && bb !== 1) throw new Error(`NativeGemm: batches ${ba} and ${bb} do not broadcast`);
    if ((transA ? ra : ca) !== (transB ? cb : rb)) throw new Error(`NativeGemm: inner dims of [${aShape}] (T=${transA}) and [${bShape}] (T=${transB}) differ`);
    const { Tensor } = this.ort;
    this.session(transA, transB).run(
      { a: new Tensor('float32', a, aShape), b: new Tensor('float32', b, bShape) },
      { c: new Tensor('float32', out, [batch, M, N]) },
      {},
    );
  }

  /** Releases the sessions (their thread pools); the object stays usable and recreates them on demand. */
  dispose(): void {
    for (const s of this.sessions.values()) s.dispose();
    this.sessions.clear();
  }
}
