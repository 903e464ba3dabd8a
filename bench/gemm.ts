/**
 * `node --import tsx bench/gemm.ts [--backend webgpu] [--iters N] [--warmup N] [--json FILE]`: TFLOP/s of each
 * matrix product of the BERT-base training step (batch 64 x 2 views x seq 32 = 4,096 token rows) on one backend:
 * forward (x W), input gradient (dy W^T: with the transpose flag, and as kernels/dense runs it on webgpu, `dy (W^T)`, W
 * transposed first, the transpose's time included) and weight gradient (x^T dy) of the packed query/key/value
 * projection, the attention output and the feed-forward layers, the feed-forward layer's forward with its bias and
 * GELU, and, for comparison, the batched attention products (12 heads x 128 rows, 32 x 64) as the stock kernel runs
 * them (the step itself runs kernels/attention's kernels). On webgpu each dense product also runs on
 * src/kernels/platform/gemm.ts's GEMM (what MICSE_WEBGPU_GEMM=1 runs; its tile per product printed), with its
 * subgroup variant where the device has `subgroups` and without it, beside TF.js's.
 * Each figure: `iters` products queued, then one read of the last output (which waits for all of them), after
 * `warmup` untimed passes over every product (pipelines compiled and GPU clocks up: on the H200 an unwarmed first
 * product measured up to 30% slow). Where the step's matmul time goes (bench.ts --profile gives the total) and how
 * far each product is from the card's rate; bench/README.md has the H200 figures.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { selectBackend } from '../src/model/backend.js';
import type { BackendName } from '../src/model/backendNames.js';
import { tf } from '../src/model/tf.js';
import { gelu } from '../src/kernels/gelu/index.js';
import { chooseGemmTile, describeGemmTile, deviceHasSubgroups, runGemm } from '../src/kernels/platform/gemm.js';

const TOKENS = 4096;
const HIDDEN = 768;
const FFN = 3072;
const HEADS_X_ROWS = 12 * 128;
const SEQ = 32;
const HEAD_DIM = 64;

/** One product of the step. */
interface Product {
  name: string;
  a: number[];
  b: number[];
  transA: boolean;
  transB: boolean;
  /** B transposed by its own dispatch first, then multiplied without the flag (kernels/dense's dx on webgpu, timed with the transpose). */
  copyB: boolean;
  /** + bias, then the exact GELU (the feed-forward layer's forward): TF.js's fused product and kernels/gelu, or the GEMM's epilogue. */
  biasGelu: boolean;
  /** Whether the GEMM runs it too (the dense layers' products as kernels/gemm runs them). */
  gemm: boolean;
}

const product = (name: string, a: number[], b: number[], transA: boolean, transB: boolean, more: Partial<Product> = {}): Product =>
  ({ name, a, b, transA, transB, copyB: false, biasGelu: false, gemm: true, ...more });

/** The four products of a dense layer x [TOKENS, inDim] W [inDim, outDim]: forward, dX in both forms, dW. */
function denseProducts(name: string, inDim: number, outDim: number): Product[] {
  const label = (what: string, formula: string): string => `${`${name} ${what}`.padEnd(16)}${formula}`;
  return [
    product(label('fwd', 'x W'), [TOKENS, inDim], [inDim, outDim], false, false),
    product(label('dX', 'dy W^T'), [TOKENS, outDim], [inDim, outDim], false, true),
    product(label('dX', 'dy (W^T)'), [TOKENS, outDim], [inDim, outDim], false, true, { copyB: true, gemm: false }),
    product(label('dW', 'x^T dy'), [TOKENS, inDim], [TOKENS, outDim], true, false),
  ];
}

const PRODUCTS: Product[] = [
  ...denseProducts('qkv', HIDDEN, 3 * HIDDEN),
  ...denseProducts('attn dense', HIDDEN, HIDDEN),
  ...denseProducts('ffn up', HIDDEN, FFN),
  product(`${'ffn up fwd'.padEnd(16)}gelu(x W + b)`, [TOKENS, HIDDEN], [HIDDEN, FFN], false, false, { biasGelu: true }),
  ...denseProducts('ffn down', FFN, HIDDEN),
  product(`${'scores'.padEnd(16)}q k^T`, [HEADS_X_ROWS, SEQ, HEAD_DIM], [HEADS_X_ROWS, SEQ, HEAD_DIM], false, true, { gemm: false }),
  product(`${'context'.padEnd(16)}p v`, [HEADS_X_ROWS, SEQ, SEQ], [HEADS_X_ROWS, SEQ, HEAD_DIM], false, false, { gemm: false }),
];

interface Timing {
  ms: number;
  tflops: number;
}

interface Row extends Timing {
  product: string;
  /** The GEMM (subgroup variant where the device has subgroups), its tile; absent where it does not run the product. */
  gemm?: Timing & { tile: string };
  /** The GEMM without its subgroup variant; only where the device has subgroups. */
  gemmNoSubgroups?: Timing;
}

function flops(p: Product): number {
  const { a: sa, b: sb, transA: ta, transB: tb } = p;
  const batch = sa.length === 3 ? sa[0]! : 1;
  const r = sa.length;
  const M = ta ? sa[r - 1]! : sa[r - 2]!;
  const K = ta ? sa[r - 2]! : sa[r - 1]!;
  const N = tb ? sb[sb.length - 2]! : sb[sb.length - 1]!;
  return 2 * batch * M * N * K;
}

type Operands = { a: tf.Tensor; b: tf.Tensor; bias: tf.Tensor1D };

/** TF.js's product (as the step would run it without the GEMM). */
function stock(p: Product, o: Operands): tf.Tensor {
  if (p.biasGelu) return tf.tidy(() => gelu(tf.fused.matMul({ a: o.a as tf.Tensor2D, b: o.b as tf.Tensor2D, bias: o.bias })));
  return p.copyB && p.transB ? tf.tidy(() => tf.matMul(o.a, tf.transpose(o.b), p.transA, false)) : tf.matMul(o.a, o.b, p.transA, p.transB);
}

/** The GEMM's product (with the value before GELU kept, as kernels/gemm runs the feed-forward layer). */
function ours(p: Product, o: Operands, subgroups: boolean): tf.Tensor {
  const outs = runGemm(tf.backend(), o.a, o.b, { transA: p.transA, transB: p.transB, subgroups,
    ...(p.biasGelu ? { bias: o.bias, gelu: true, keepPre: true } : {}) }).map((t) => tf.engine().makeTensorFromTensorInfo(t));
  tf.dispose(outs.slice(1));
  return outs[0]!;
}

/** Mean ms of `n` queued runs, waiting once at the end. */
async function time(run: () => tf.Tensor, n: number): Promise<number> {
  if (n === 0) return 0;
  const t0 = performance.now();
  let last: tf.Tensor | null = null;
  for (let i = 0; i < n; i++) {
    last?.dispose();
    last = run();
  }
  const first = tf.slice(last!.reshape([-1]), 0, 1);
  await first.data();
  tf.dispose([first, last!]);
  return (performance.now() - t0) / n;
}

const fmt = (t: Timing | undefined): string => (t === undefined ? ''.padEnd(24)
  : `${t.ms.toFixed(3).padStart(9)} ms ${t.tflops.toFixed(2).padStart(7)} TF/s`);

async function main(): Promise<void> {
  const { values } = parseArgs({ options: {
    backend: { type: 'string', default: 'webgpu' },
    iters: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '3' },
    json: { type: 'string' },
  } });
  const iters = Number(values.iters);
  const warmup = Number(values.warmup);
  const bad = !Number.isInteger(iters) || iters < 1 ? `--iters must be an integer >= 1; got '${values.iters}'`
    : !Number.isInteger(warmup) || warmup < 0 ? `--warmup must be an integer >= 0; got '${values.warmup}'` : null;
  if (bad !== null) {
    console.error(`gemm: ${bad}`);
    process.exit(2);
  }
  const sel = await selectBackend(values.backend as BackendName);
  const webgpu = sel.tfBackend === 'webgpu' && sel.stockOnly === null;
  const subgroups = webgpu && deviceHasSubgroups(tf.backend());
  const storage = webgpu ? (tf.backend() as unknown as { device: GPUDevice }).device.limits.maxComputeWorkgroupStorageSize : 0;
  const inputs: Operands[] = PRODUCTS.map((p) => ({ a: tf.randomUniform(p.a, -1, 1), b: tf.randomUniform(p.b, -1, 1),
    bias: tf.randomUniform([p.transB ? p.b.at(-2)! : p.b.at(-1)!], -1, 1) as tf.Tensor1D }));
  /** The runs of product i: TF.js's, then (webgpu, dense products) the GEMM's, with and without subgroups. */
  const runs = (i: number): (() => tf.Tensor)[] => {
    const p = PRODUCTS[i]!;
    const o = inputs[i]!;
    return [() => stock(p, o), ...(webgpu && p.gemm ? [() => ours(p, o, true), ...(subgroups ? [() => ours(p, o, false)] : [])] : [])];
  };
  for (let i = 0; i < PRODUCTS.length; i++) for (const run of runs(i)) await time(run, warmup);
  console.log(`${'product'.padEnd(30)} ${"TF.js's".padEnd(24)}${webgpu ? ` ${'GEMM'.padEnd(24)} ${subgroups ? 'GEMM without subgroups'.padEnd(24) : ''} GEMM tile` : ''}`);
  const rows: Row[] = [];
  for (const [i, p] of PRODUCTS.entries()) {
    const timing = async (run: () => tf.Tensor): Promise<Timing> => {
      const ms = await time(run, iters);
      return { ms, tflops: flops(p) / (ms * 1e9) };
    };
    const timings: Timing[] = [];
    for (const run of runs(i)) timings.push(await timing(run));
    const [tfjs, gemm, gemmNoSg] = timings;
    const row: Row = { product: p.name, ...tfjs! };
    let tile = '';
    if (gemm !== undefined) {
      const [M, N] = p.transA ? [p.a[1]!, p.transB ? p.b[0]! : p.b[1]!] : [p.a[0]!, p.transB ? p.b[0]! : p.b[1]!];
      tile = describeGemmTile(chooseGemmTile(M, N, storage)!);
      row.gemm = { ...gemm, tile };
      if (gemmNoSg !== undefined) row.gemmNoSubgroups = gemmNoSg;
    }
    rows.push(row);
    console.log(`${p.name.padEnd(30)} ${fmt(tfjs)} ${fmt(gemm)} ${subgroups ? fmt(gemmNoSg) : ''} ${tile}`);
  }
  tf.dispose(inputs.flatMap((o) => [o.a, o.b, o.bias]));
  if (values.json !== undefined) {
    writeFileSync(values.json, JSON.stringify({ backend: sel.name, iters, warmup, subgroups, workgroupStorage: storage, rows }, null, 2));
  }
}

await main();
