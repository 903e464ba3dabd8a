/**
 * The value checks of test/gemm.test.ts, run where WebGPU computes: in headless Chromium (SwiftShader; this module
 * bundled into the page, its functions on `window`) and in Node where a real adapter exists (imported). Each case
 * runs on src/kernels/platform/gemm.ts's GEMM and on TF.js's own ops (its webgpu product, add, erf), and the result
 * says how far apart they are. Values are drawn on the device (tf.randomUniform, seeded per case).
 */
import { selectBackend } from '../src/model/backend.js';
import { tf } from '../src/model/tf.js';
import { gemmTileBytes, runGemm, type GemmTile } from '../src/kernels/platform/gemm.js';
import { dense } from '../src/kernels/dense/index.js';
import { useGemm } from '../src/kernels/gemm/index.js';
import { observeRawDispatches } from '../src/kernels/platform/webgpuPrograms.js';

export interface GemmCase {
  M: number;
  N: number;
  K: number;
  transA: boolean;
  transB: boolean;
  tile: GemmTile;
  subgroups: boolean;
  bias: boolean;
  gelu: boolean;
  keepPre: boolean;
  residual: boolean;
}

export interface GemmCaseResult {
  /** Why the case did not run on this device (its tile's workgroup memory), or null. */
  skipped: string | null;
  /** max |ours - TF.js| / max |TF.js| over C (and, with keepPre, over the value before GELU). */
  scaledDiff: number;
  /** Whether C (and the value before GELU) equal TF.js's bit for bit. */
  bitEqual: boolean;
}

function scaled(a: Float32Array, b: Float32Array): number {
  let m = 0;
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    m = Math.max(m, Math.abs(a[i]! - b[i]!));
    s = Math.max(s, Math.abs(b[i]!));
  }
  return a.length !== b.length ? Infinity : m / (s || 1);
}

const same = (a: Float32Array, b: Float32Array): boolean => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));

async function runCase(c: GemmCase, seed: number): Promise<GemmCaseResult> {
  const device = (tf.backend() as unknown as { device: GPUDevice }).device;
  const limit = device.limits.maxComputeWorkgroupStorageSize;
  if (gemmTileBytes(c.tile) > limit) return { skipped: `${gemmTileBytes(c.tile)} bytes of workgroup memory; this device has ${limit}`, scaledDiff: 0, bitEqual: false };
  const a = tf.randomUniform(c.transA ? [c.K, c.M] : [c.M, c.K], -1, 1, 'float32', seed);
  const b = tf.randomUniform(c.transB ? [c.N, c.K] : [c.K, c.N], -1, 1, 'float32', seed + 1);
  const bias = c.bias ? tf.randomUniform([c.N], -1, 1, 'float32', seed + 2) : undefined;
  const residual = c.residual ? tf.randomUniform([c.M, c.N], -1, 1, 'float32', seed + 3) : undefined;
  const infos = runGemm(tf.backend(), a, b, { transA: c.transA, transB: c.transB, bias, residual, gelu: c.gelu, keepPre: c.keepPre, tile: c.tile, subgroups: c.subgroups });
  const ours = infos.map((i) => tf.engine().makeTensorFromTensorInfo(i));
  const [ref, refPre] = tf.tidy(() => {
    let y = tf.matMul(a, b, c.transA, c.transB);
    if (bias !== undefined) y = tf.add(y, bias);
    const pre = y;
    if (c.gelu) y = tf.mul(tf.mul(y, 0.5), tf.add(1, tf.erf(tf.mul(y, Math.SQRT1_2))));
    if (residual !== undefined) y = tf.add(y, residual);
    return [y, pre];
  });
  const got = await Promise.all(ours.map((t) => t.data() as Promise<Float32Array>));
  const want = [(await ref.data()) as Float32Array, ...(c.keepPre ? [(await refPre.data()) as Float32Array] : [])];
  tf.dispose([a, b, ...(bias ? [bias] : []), ...(residual ? [residual] : []), ...ours, ref, refPre]);
  return { skipped: null, scaledDiff: Math.max(...got.map((g, i) => scaled(g, want[i]!))), bitEqual: got.every((g, i) => same(g, want[i]!)) };
}

/** Runs `cases` on webgpu; also the device's subgroup support, validation errors and the tensor count's change. */
export async function runGemmCases(cases: GemmCase[]): Promise<{ results: GemmCaseResult[]; subgroups: boolean; errors: string[]; leaked: number }> {
  await selectBackend('webgpu');
  const device = (tf.backend() as unknown as { device: GPUDevice }).device;
  const before = tf.memory().numTensors;
  device.pushErrorScope('validation');
  const results: GemmCaseResult[] = [];
  for (const [i, c] of cases.entries()) results.push(await runCase(c, 1000 + 10 * i));
  const error = await device.popErrorScope();
  return { results, subgroups: device.features.has('subgroups'), errors: error === null ? [] : [error.message], leaked: tf.memory().numTensors - before };
}

/**
 * kernels/dense on webgpu with kernels/gemm on and off: y = dense(x, W, b, activation) and the gradients of
 * sum(y * r) in x, W and b, for x [N, in] W [in, out]. Returns the scaled differences (y, dx, dW, db), whether each
 * is the same bit for bit, and the GEMM dispatches the run with it on made.
 */
export async function runDenseCase(N: number, inDim: number, outDim: number, activation: 'linear' | 'gelu'):
  Promise<{ diffs: number[]; bitEqual: boolean[]; gemmDispatches: number; errors: string[]; leaked: number }> {
  await selectBackend('webgpu');
  const device = (tf.backend() as unknown as { device: GPUDevice }).device;
  const x = tf.randomUniform([N, inDim], -1, 1, 'float32', 1) as tf.Tensor2D;
  const w = tf.randomUniform([inDim, outDim], -0.2, 0.2, 'float32', 2) as tf.Tensor2D;
  const b = tf.randomUniform([outDim], -1, 1, 'float32', 3) as tf.Tensor1D;
  const r = tf.randomUniform([N, outDim], -1, 1, 'float32', 4);
  const before = tf.memory().numTensors;
  const run = async (): Promise<Float32Array[]> => {
    const { value, grads } = tf.valueAndGrads((xs: tf.Tensor, ws: tf.Tensor, bs: tf.Tensor) =>
      tf.sum(tf.mul(dense(xs as tf.Tensor2D, ws as tf.Tensor2D, bs as tf.Tensor1D, activation), r)))([x, w, b]);
    const y = tf.tidy(() => dense(x, w, b, activation));
    const out = await Promise.all([y, ...grads].map(async (t) => Float32Array.from((await t.data()) as Float32Array)));
    tf.dispose([value, y, ...grads]);
    return out;
  };
  device.pushErrorScope('validation');
  useGemm('off');
  const stock = await run();
  let gemmDispatches = 0;
  const stop = observeRawDispatches((key) => { if (key.startsWith('micseGemm')) gemmDispatches += 1; });
  useGemm('on');
  const ours = await run();
  useGemm('off');
  stop();
  const error = await device.popErrorScope();
  const leaked = tf.memory().numTensors - before;
  tf.dispose([x, w, b, r]);
  return { diffs: ours.map((o, i) => scaled(o, stock[i]!)), bitEqual: ours.map((o, i) => same(o, stock[i]!)), gemmDispatches, errors: error === null ? [] : [error.message], leaked };
}

if (typeof window !== 'undefined') Object.assign(window, { runGemmCases, runDenseCase });
