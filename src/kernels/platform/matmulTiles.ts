/**
 * Tile shape of TF.js's webgpu matmul (MatMulPackedProgram, vec4 form) for large products.
 *
 * Why: tfjs-backend-webgpu 4.x runs every vec4 product on 32 x 32 output tiles (8 x 8 threads, 4 x 4 outputs each,
 * computeWorkgroupInfoForMatMul), whatever the shapes. Its shader generator (makeMatMulPackedVec4Source) takes other
 * workgroup sizes and rows per thread; this module sets them on the program before the backend compiles it, for
 * products whose output is at least MATMUL_TILE_MIN_OUTPUT on both sides. The numbers do not change: every output
 * still sums its K products in order, so results are bit for bit TF.js's.
 *
 * Default: 8 x 8 threads with 4 x 8 outputs each (32 columns x 64 rows, 12 KB of workgroup memory, within WebGPU's
 * default 16 KB): the fastest of the tiles probed on a GPU that fit that default (the probe's figures:
 * bench/README.md).
 *
 * `MICSE_WEBGPU_MATMUL_TILE=wx,wy,rows` (threads across, threads down, output rows per thread; 4 columns per thread
 * always) picks another, `tfjs` keeps TF.js's. Tile = (4 wx) columns x (rows wy) rows, inner step 4 wx. Products
 * with transposed A (the weight gradients) need rows = 4 and wx = wy (the generator's constraints) and keep TF.js's
 * tile otherwise.
 */
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { tf } from '../../model/tf.js';

export const MATMUL_TILE_ENV = 'MICSE_WEBGPU_MATMUL_TILE';
/** The tile used unless MATMUL_TILE_ENV says otherwise. */
export const DEFAULT_MATMUL_TILE: MatmulTile = { workgroup: [8, 8], rows: 8 };
/** Smallest output side (rows and columns) a product needs for the tile to apply. */
const MATMUL_TILE_MIN_OUTPUT = 256;
/** Columns per thread of the vec4 generator (fixed by it). */
const COLS_PER_THREAD = 4;

export interface MatmulTile {
  /** Threads across (output columns / 4) and down. */
  workgroup: [number, number];
  /** Output rows per thread. */
  rows: number;
}

/** What MatMulPackedProgram holds that the retiling reads and writes (tfjs-backend-webgpu 4.x). */
interface PackedProgram extends WebGPUProgram {
  elementsPerThread: [number, number, number];
  transposeA: boolean;
  transposeB: boolean;
  activation: string | null;
  isVec4: boolean;
  isVectorA: boolean;
  sequentialAccessByThreads: boolean;
  fitAOuter: boolean;
  fitBOuter: boolean;
  fitInner: boolean;
  getShapeFit(dimAOuter: number, dimBOuter: number, dimInner: number): [boolean, boolean, boolean];
}

/**
 * The tile MATMUL_TILE_ENV asks for: `wx,wy,rows`; null (TF.js's own) for `tfjs`; DEFAULT_MATMUL_TILE when unset.
 * Throws on anything else, naming the variable.
 */
export function parseMatmulTile(text: string | undefined): MatmulTile | null {
  if (text === undefined || text === '') return DEFAULT_MATMUL_TILE;
  if (text === 'tfjs') return null;
  const parts = text.split(',').map((p) => Number(p.trim()));
  const ok = parts.length === 3 && parts.every((n) => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0);
  if (!ok) throw new Error(`${MATMUL_TILE_ENV}='${text}': expected wx,wy,rows (powers of two, e.g. 8,8,8) or tfjs`);
  const [wx, wy, rows] = parts as [number, number, number];
  if (wx * wy > 256) throw new Error(`${MATMUL_TILE_ENV}='${text}': ${wx * wy} threads a workgroup; at most 256`);
  // The generator: inner step = 4 wx must be a multiple of wy (B's rows per thread).
  if ((COLS_PER_THREAD * wx) % wy !== 0) throw new Error(`${MATMUL_TILE_ENV}='${text}': 4 * wx must be a multiple of wy`);
  return { workgroup: [wx, wy], rows };
}

/** A MatMulPackedProgram with the fields retile reads (tfjs-backend-webgpu 4.x); anything else is left alone. */
function isPacked(p: WebGPUProgram): p is PackedProgram {
  const q = p as Partial<PackedProgram>;
  return p.shaderKey.startsWith('matMulPacked_') && typeof q.getShapeFit === 'function' && Array.isArray(q.elementsPerThread) &&
    typeof q.isVec4 === 'boolean' && typeof q.isVectorA === 'boolean' && typeof q.transposeA === 'boolean';
}

/** Sets `tile` on a vec4 MatMulPackedProgram of a large enough product; leaves every other program as it is. */
function retile(p: WebGPUProgram, inputs: tf.TensorInfo[], tile: MatmulTile): void {
  if (!isPacked(p) || !p.isVec4 || p.isVectorA) return;
  if (p.transposeA && (tile.rows !== 4 || tile.workgroup[0] !== tile.workgroup[1])) return; // the generator's limits
  const [, M, N] = p.outputShape as [number, number, number];
  if (M < MATMUL_TILE_MIN_OUTPUT || N < MATMUL_TILE_MIN_OUTPUT) return;
  const a = inputs[0]!.shape;
  const K = p.transposeA ? a[1]! : a[2]!;
  p.workgroupSize = [tile.workgroup[0], tile.workgroup[1], 1];
  p.elementsPerThread = [COLS_PER_THREAD, tile.rows, 1];
  [p.fitAOuter, p.fitBOuter, p.fitInner] = p.getShapeFit(M, N, K);
  p.dispatch = [Math.ceil(N / (COLS_PER_THREAD * tile.workgroup[0])), Math.ceil(M / (tile.rows * tile.workgroup[1])), p.outputShape[0]!];
  // The constructor's key, from the new fits (the backend appends the workgroup size itself).
  p.shaderKey = `matMulPacked_${p.elementsPerThread}_${p.transposeA}_${p.transposeB}_${p.activation}_${p.fitAOuter}_` +
    `${p.fitBOuter}_${p.fitInner}_${p.isVec4}_${p.isVectorA}_${p.sequentialAccessByThreads}`;
}

/** Bytes of workgroup memory the generator's A and B tiles take (f32). */
export function matmulTileBytes(tile: MatmulTile): number {
  const [wx, wy] = tile.workgroup;
  const inner = COLS_PER_THREAD * wx;
  return 4 * (tile.rows * wy * inner + inner * COLS_PER_THREAD * wx);
}

/** `8x8 threads, 4x8 outputs each` */
export function describeMatmulTile(tile: MatmulTile | null): string {
  return tile === null ? "TF.js's (8x8 threads, 4x4 outputs each)"
    : `${tile.workgroup.join('x')} threads, ${COLS_PER_THREAD}x${tile.rows} outputs each`;
}

/** The tile the wrapped backends apply now (null: TF.js's own). */
let activeTile: MatmulTile | null = null;
const wrapped = new WeakSet<WebGPUBackend>();

/** The tile useMatmulTile last set (null: TF.js's own), for logs. */
export function activeMatmulTile(): MatmulTile | null {
  return activeTile;
}

/**
 * Applies `tile` (null: TF.js's own) to the large vec4 products `backend` runs from now on; an error if the device
 * cannot hold it. The backend's runWebGPUProgram is wrapped once; later calls only change the tile.
 */
export function useMatmulTile(backend: WebGPUBackend, tile: MatmulTile | null): void {
  const limit = backend.device.limits.maxComputeWorkgroupStorageSize;
  if (tile !== null && matmulTileBytes(tile) > limit) {
    throw new Error(`${MATMUL_TILE_ENV}: tile ${tile.workgroup},${tile.rows} needs ${matmulTileBytes(tile)} bytes of workgroup memory; this device has ${limit}`);
  }
  activeTile = tile;
  if (wrapped.has(backend)) return;
  wrapped.add(backend);
  const run = backend.runWebGPUProgram.bind(backend);
  backend.runWebGPUProgram = (program, inputs, outputDtype, uniforms, output) => {
    if (activeTile !== null) retile(program, inputs, activeTile);
    return run(program, inputs, outputDtype, uniforms, output);
  };
}
