/**
 * A register-tiled GEMM for the webgpu backend's BatchMatMul, for the large forward products of a BERT step.
 *
 * Why: TF.js's WebGPU matmul (32 x 32 tiles, 4 x 4 per thread) ran BERT-base's products at 3.4 TFLOP/s on an
 * H200 in ../shared/docs/SPEED-NOTES.md and at 7-21 TFLOP/s in bench/gemm.ts. This kernel computes a 128 x 128
 * tile per workgroup of 16 x 16 threads, 8 x 8 outputs per thread held in registers (the code is generated
 * unrolled), staging 8-deep slices of A and B in workgroup memory, so each value loaded from workgroup memory
 * feeds 8 multiply-adds instead of 4; outputs with too few such tiles to fill the GPU take 64 x 64 tiles (4 x 4
 * per thread):  C[b] = A[b] @ B[b],  A [batchA, M, K], B [batchB, K, N], a batch of 1 broadcasts.
 *
 * It takes only the products it was measured to win on an H200: no transposed operand, inner dimension at most
 * 1,024, output at least 64 x 64. In a BERT-base step those are the Q, K, V, attention-output and FFN-up forward
 * products: 10.6 and 19.2 TFLOP/s against the stock kernel's 7.0 and 10.6. Everything else keeps the stock
 * kernel: the backward products (a version with transposes folded into the tile loads measured as fast or slower
 * on all of them), FFN-down (K = 3,072: 13 against 21 TFLOP/s), the 32 x 32 attention products, non-float32.
 *
 * Opt-in until a whole step is measured faster with it: `registerWebGPUGemm()` (backend.ts calls it when the
 * environment variable MICSE_WEBGPU_GEMM is 1); `unregisterWebGPUGemm()` restores the stock kernel. Results equal
 * the stock kernel's within float32 rounding (test/webgpu.test.ts).
 */
import { tf } from './tf.js';

/** Threads per workgroup side; depth of a staged slice of A and B. */
const THREADS = 16;
const DEPTH = 8;
const THREAD_COUNT = THREADS * THREADS; // 256
/** Output tile sides: 128 (8 x 8 per thread) when the output has enough such tiles to fill the GPU, else 64 (4 x 4). */
const TILES = [128, 64] as const;
type Tile = (typeof TILES)[number];
/** Below this many 128-tiles the 64-tile kernel runs instead (an H200 has 132 multiprocessors). */
const MIN_LARGE_TILES = 264;
/** Longest inner dimension the tiled kernel takes; longer products keep the stock kernel (see `plan`). */
const MAX_INNER = 1024;

interface MatMulAttrs {
  transposeA: boolean;
  transposeB: boolean;
}
interface ProgramLike {
  variableNames: string[];
  outputShape: number[];
  shaderKey: string;
  dispatchLayout: { x: number[]; y: number[]; z: number[] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  uniforms: string;
  getUserCode(): string;
}
interface WebGPUBackendLike {
  runWebGPUProgram(program: ProgramLike, inputs: tf.TensorInfo[], dtype: tf.DataType,
    uniforms: { type: 'int32'; data: number[] }[]): tf.TensorInfo;
}

function sizeOf(shape: readonly number[]): number {
  return shape.reduce((p, d) => p * d, 1);
}

/** WGSL source of the tile loop for one tile size. */
function gemmSource(TILE: Tile): string {
  const PER_THREAD = TILE / THREADS;
  const LOADS = (TILE * DEPTH) / THREAD_COUNT; // elements of each staged slice one thread loads
  const lines: string[] = [];
  const acc = (i: number, j: number) => `c${i}_${j}`;
  for (let i = 0; i < PER_THREAD; i++) for (let j = 0; j < PER_THREAD; j++) lines.push(`    var ${acc(i, j)} = 0.0;`);
  const decl = lines.join('\n');
  // Loads: consecutive threads read consecutive addresses (k along a row of A, n along a row of B).
  const loadA = `let kk = l % ${DEPTH}; let mm = l / ${DEPTH}; let m = row0 + mm; let k = k0 + kk;
        var v = 0.0; if (m < M && k < K) { v = A[aOff + m * K + k]; }`;
  const loadB = `let nn = l % ${TILE}; let kk = l / ${TILE}; let n = col0 + nn; let k = k0 + kk;
        var v = 0.0; if (n < N && k < K) { v = B[bOff + k * N + n]; }`;
  const inner: string[] = [];
  for (let i = 0; i < PER_THREAD; i++) inner.push(`      let a${i} = As[kk * ${TILE} + ty + ${THREADS * i}];`);
  for (let j = 0; j < PER_THREAD; j++) inner.push(`      let b${j} = Bs[kk * ${TILE} + tx + ${THREADS * j}];`);
  for (let i = 0; i < PER_THREAD; i++) {
    for (let j = 0; j < PER_THREAD; j++) inner.push(`      ${acc(i, j)} = fma(a${i}, b${j}, ${acc(i, j)});`);
  }
  const store: string[] = [];
  for (let i = 0; i < PER_THREAD; i++) {
    store.push(`    { let m = row0 + ty + ${THREADS * i}; if (m < M) {`);
    for (let j = 0; j < PER_THREAD; j++) {
      store.push(`      { let n = col0 + tx + ${THREADS * j}; if (n < N) { result[cOff + m * N + n] = ${acc(i, j)}; } }`);
    }
    store.push('    } }');
  }
  return `
  var<workgroup> As : array<f32, ${TILE * DEPTH}>; // [DEPTH][TILE]: column kk of the A tile
  var<workgroup> Bs : array<f32, ${TILE * DEPTH}>; // [DEPTH][TILE]: row kk of the B tile
  fn main() {
    let tx = i32(localId.x);
    let ty = i32(localId.y);
    let tid = ty * ${THREADS} + tx;
    let batch = i32(workgroupId.z);
    let row0 = i32(workgroupId.y) * ${TILE};
    let col0 = i32(workgroupId.x) * ${TILE};
    let M = uniforms.M;
    let N = uniforms.N;
    let K = uniforms.K;
    let aOff = batch * uniforms.aBatchStride;
    let bOff = batch * uniforms.bBatchStride;
    let cOff = batch * M * N;
${decl}
    for (var k0 = 0; k0 < K; k0 = k0 + ${DEPTH}) {
      for (var r = 0; r < ${LOADS}; r = r + 1) {
        let l = tid + r * ${THREAD_COUNT};
        ${loadA}
        As[kk * ${TILE} + mm] = v;
      }
      for (var r = 0; r < ${LOADS}; r = r + 1) {
        let l = tid + r * ${THREAD_COUNT};
        ${loadB}
        Bs[kk * ${TILE} + nn] = v;
      }
      workgroupBarrier();
      for (var kk = 0; kk < ${DEPTH}; kk = kk + 1) {
${inner.join('\n')}
      }
      workgroupBarrier();
    }
${store.join('\n')}
  }`;
}

/** The product's geometry when this kernel takes it; null: leave it to the stock kernel. */
function plan(a: tf.TensorInfo, b: tf.TensorInfo, { transposeA, transposeB }: MatMulAttrs):
  { M: number; N: number; K: number; batch: number; aStride: number; bStride: number; outShape: number[]; tile: Tile } | null {
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) return null;
  if (transposeA || transposeB) return null; // the stock kernel is as fast or faster (see the module comment)
  const [M, K] = a.shape.slice(-2) as [number, number];
  const N = b.shape[b.shape.length - 1]!;
  if (M < TILES[1] || N < TILES[1] || K > MAX_INNER) return null;
  const lead = (s: number[]) => s.slice(0, -2);
  const batchA = sizeOf(lead(a.shape));
  const batchB = sizeOf(lead(b.shape));
  let outLead: number[];
  try {
    outLead = tf.broadcast_util.assertAndGetBroadcastShape(lead(a.shape), lead(b.shape));
  } catch {
    return null; // the stock kernel reports the mismatch
  }
  if (batchA !== batchB ? batchA !== 1 && batchB !== 1 : sizeOf(outLead) !== batchA) return null;
  const batch = Math.max(batchA, batchB);
  const largeTiles = batch * Math.ceil(M / TILES[0]) * Math.ceil(N / TILES[0]);
  return {
    M, N, K, batch,
    tile: largeTiles >= MIN_LARGE_TILES ? TILES[0] : TILES[1],
    aStride: batchA === 1 ? 0 : M * K,
    bStride: batchB === 1 ? 0 : K * N,
    outShape: [...outLead, M, N],
  };
}

/** Environment variable that turns the kernel on when the webgpu backend is selected ('1'). */
export const WEBGPU_GEMM_ENV = 'MICSE_WEBGPU_GEMM';

let stock: tf.KernelConfig | undefined;

function gemmKernel(stockFunc: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const attrs = args.attrs as unknown as MatMulAttrs;
    const p = plan(a, b, attrs);
    if (p === null) return stockFunc(args);
    const program: ProgramLike = {
      variableNames: ['A', 'B'],
      outputShape: p.outShape,
      shaderKey: `micseGemm_${p.tile}`,
      dispatchLayout: { x: [p.outShape.length - 1], y: [p.outShape.length - 2], z: p.outShape.slice(0, -2).map((_, i) => i) },
      dispatch: [Math.ceil(p.N / p.tile), Math.ceil(p.M / p.tile), p.batch],
      workgroupSize: [THREADS, THREADS, 1],
      uniforms: 'M : i32, N : i32, K : i32, aBatchStride : i32, bBatchStride : i32,',
      getUserCode: () => gemmSource(p.tile),
    };
    return (args.backend as unknown as WebGPUBackendLike).runWebGPUProgram(program, [a, b], 'float32', [
      { type: 'int32', data: [p.M] }, { type: 'int32', data: [p.N] }, { type: 'int32', data: [p.K] },
      { type: 'int32', data: [p.aStride] }, { type: 'int32', data: [p.bStride] },
    ]);
  };
}

/** Puts the tiled GEMM in front of webgpu's BatchMatMul (large products only). Idempotent. */
export function registerWebGPUGemm(): void {
  if (stock !== undefined) return;
  const current = tf.getKernel('BatchMatMul', 'webgpu');
  if (current === undefined) throw new Error('registerWebGPUGemm: the webgpu backend has no BatchMatMul kernel (import @tensorflow/tfjs-backend-webgpu first)');
  stock = current;
  tf.unregisterKernel('BatchMatMul', 'webgpu');
  tf.registerKernel({ kernelName: 'BatchMatMul', backendName: 'webgpu', kernelFunc: gemmKernel(current.kernelFunc) });
}

/** Restores webgpu's stock BatchMatMul. */
export function unregisterWebGPUGemm(): void {
  if (stock === undefined) return;
  tf.unregisterKernel('BatchMatMul', 'webgpu');
  tf.registerKernel(stock);
  stock = undefined;
}
