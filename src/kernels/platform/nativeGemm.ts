/**
 * Dense float32 products on onnxruntime-node's MLAS SGEMM (native AVX2/AVX-512, intra-op threads), called
 * synchronously from a TF.js kernel through src/kernels/platform/nativeOps.ts.
 *
 * Why: the wasm backend's best product is XNNPACK on one wasm SIMD (128-bit) thread; Node gets no wasm threads.
 * MLAS runs several times faster a core (figures: bench/README.md), which moves the training step's dense
 * products (well over half of its time on wasm) to native code.
 *
 * One ONNX graph per transpose-flag pair, with symbolic dims: a [ba, ra, ca], b [bb, rb, cb] -> optional
 * Transpose(perm 0,2,1) on each -> MatMul -> c [bo, M, N]. ORT fuses a Transpose into the MatMul
 * (MatMulTransposeFusion -> FusedMatMul: MLAS reads the operand transposed), and MatMul broadcasts a batch of 1
 * against the other operand's batch.
 */
import { DataType, type GraphSpec, type NodeSpec } from './onnxProto.js';
import { NativeOps } from './nativeOps.js';

/** NativeGemm's `library`. */
export const MLAS_LIBRARY = 'onnxruntime-node MLAS';

/** Swaps the last two axes of a rank-3 operand. */
const SWAP_LAST_TWO = [0, 2, 1];

/** `[batch, rows, cols]` of an operand as stored (before its transpose flag is applied). */
export type Shape3 = readonly [number, number, number];

function matMulGraph(transA: boolean, transB: boolean): GraphSpec {
  const nodes: NodeSpec[] = [];
  const operand = (name: string, flip: boolean): string => {
    if (!flip) return name;
    nodes.push({ opType: 'Transpose', inputs: [name], outputs: [`${name}T`], name: `transpose_${name}`, attributes: { perm: { kind: 'ints', value: SWAP_LAST_TWO } } });
    return `${name}T`;
  };
  nodes.push({ opType: 'MatMul', inputs: [operand('a', transA), operand('b', transB)], outputs: ['c'], name: 'matmul' });
  return {
    name: `matmul_${+transA}${+transB}`, nodes, initializers: [],
    inputs: [
      { name: 'a', elemType: DataType.FLOAT, shape: ['ba', 'ra', 'ca'] },
      { name: 'b', elemType: DataType.FLOAT, shape: ['bb', 'rb', 'cb'] },
    ],
    outputs: [{ name: 'c', elemType: DataType.FLOAT, shape: ['bo', 'm', 'n'] }],
  };
}

/**
 * A dense float32 product engine of the host backends (NativeGemm here, Cblas in cblas.ts): c = op(a) @ op(b) over a
 * broadcast batch.
 */
export interface HostGemm {
  /** The library (and its version where it says) in a few words, for logs. */
  readonly library: string;
  /** Threads of each product (the calling thread included). */
  readonly threads: number;
  /**
   * out [max(ba, bb), M, N] = op(a) @ op(b), op = transpose of the last two axes where the flag is set; the batches
   * must be equal or one of them 1. `a`, `b`, `out` are dense row-major views (of the wasm heap, typically).
   */
  matMul(a: Float32Array, aShape: Shape3, transA: boolean, b: Float32Array, bShape: Shape3, transB: boolean, out: Float32Array): void;
  /** The product of `matMul` in a new array of its own ([max(ba, bb), M, N]), for a caller with no memory to offer. */
  matMulToArray(a: Float32Array, aShape: Shape3, transA: boolean, b: Float32Array, bShape: Shape3, transB: boolean): Float32Array;
  /** Releases what the engine holds beyond the library (sessions, thread pools); it stays usable. */
  dispose(): void;
}

/** `[max(ba, bb), M, N]` of op(a) @ op(b); throws where the batches do not broadcast or the inner dims differ. */
export function productDims(aShape: Shape3, transA: boolean, bShape: Shape3, transB: boolean): Shape3 {
  const [ba, ra, ca] = aShape;
  const [bb, rb, cb] = bShape;
  if (ba !== bb && ba !== 1 && bb !== 1) throw new Error(`host GEMM: batches ${ba} and ${bb} do not broadcast`);
  if ((transA ? ra : ca) !== (transB ? cb : rb)) throw new Error(`host GEMM: inner dims of [${aShape}] (T=${transA}) and [${bShape}] (T=${transB}) differ`);
  return [Math.max(ba, bb), transA ? ca : ra, transB ? rb : cb];
}

/** c = op(a) @ op(b) over a broadcast batch, on native threads. */
export class NativeGemm implements HostGemm {
  private constructor(private readonly ops: NativeOps) {}

  /**
   * On the process-wide NativeOps, or on a NativeOps of its own with `threads` intra-op threads (the bench's SGEMM
   * probe); throws when onnxruntime-node cannot load.
   */
  static load(threads?: number): NativeGemm {
    return new NativeGemm(threads === undefined ? NativeOps.shared() : NativeOps.load(threads));
  }

  get threads(): number {
    return this.ops.threads;
  }

  readonly library = MLAS_LIBRARY;

  matMul(a: Float32Array, aShape: Shape3, transA: boolean, b: Float32Array, bShape: Shape3, transB: boolean, out: Float32Array): void {
    const outDims = productDims(aShape, transA, bShape, transB);
    this.ops.run(`matmul_${+transA}${+transB}`, () => matMulGraph(transA, transB),
      { a: { data: a, dims: aShape }, b: { data: b, dims: bShape } }, { c: { data: out, dims: outDims } });
  }

  /** ORT allocates the output and the binding's copy of it is the result (one copy, no array to zero-fill). */
  matMulToArray(a: Float32Array, aShape: Shape3, transA: boolean, b: Float32Array, bShape: Shape3, transB: boolean): Float32Array {
    productDims(aShape, transA, bShape, transB);
    return this.ops.runToArrays(`matmul_${+transA}${+transB}`, () => matMulGraph(transA, transB),
      { a: { data: a, dims: aShape }, b: { data: b, dims: bShape } }, ['c'])['c']!;
  }

  /** Releases the sessions (their thread pools); the object rebuilds them on demand. */
  dispose(): void {
    this.ops.dispose();
  }
}
