/**
 * `node --import tsx bench/gemm.ts [--backend webgpu] [--iters N] [--warmup N] [--json FILE]`: TFLOP/s of each
 * matrix product of the BERT-base training step (batch 64 x 2 views x seq 32 = 4,096 token rows) on one backend:
 * forward (x W), input gradient (dy W^T: with the transpose flag, and as kernels/dense runs it on webgpu, `dy (W^T)`, W
 * transposed first, the transpose's time included) and weight gradient (x^T dy) of the packed query/key/value
 * projection, the attention output and the feed-forward layers, and, for comparison, the batched attention
 * products (12 heads x 128 rows, 32 x 64) as the stock kernel runs them (the step itself runs kernels/attention's
 * kernels). Each figure: `iters` products queued, then one read of the last output (which waits for all of them),
 * after `warmup` untimed passes over every product (pipelines compiled and GPU clocks up: on the H200 an unwarmed
 * first product measured up to 30% slow). Where the step's matmul time goes (bench.ts --profile gives the total)
 * and how far each product is from the card's rate; bench/README.md has the H200 figures.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { selectBackend, type BackendName } from '../src/model/backend.js';
import { tf } from '../src/model/tf.js';

const TOKENS = 4096;
const HIDDEN = 768;
const FFN = 3072;
const HEADS_X_ROWS = 12 * 128;
const SEQ = 32;
const HEAD_DIM = 64;

/**
 * name, A shape, B shape, transposeA, transposeB, and whether B is first transposed by its own dispatch (then the
 * product runs without the flag: what kernels/dense does for dx on webgpu, timed here with the transpose included, beside
 * the flagged product it replaces).
 */
type Product = [string, number[], number[], boolean, boolean, boolean];

/** The four products of a dense layer x [TOKENS, inDim] W [inDim, outDim]: forward, dX in both forms, dW. */
function denseProducts(name: string, inDim: number, outDim: number): Product[] {
  const label = (what: string, formula: string): string => `${`${name} ${what}`.padEnd(16)}${formula}`;
  return [
    [label('fwd', 'x W'), [TOKENS, inDim], [inDim, outDim], false, false, false],
    [label('dX', 'dy W^T'), [TOKENS, outDim], [inDim, outDim], false, true, false],
    [label('dX', 'dy (W^T)'), [TOKENS, outDim], [inDim, outDim], false, true, true],
    [label('dW', 'x^T dy'), [TOKENS, inDim], [TOKENS, outDim], true, false, false],
  ];
}

const PRODUCTS: Product[] = [
  ...denseProducts('qkv', HIDDEN, 3 * HIDDEN),
  ...denseProducts('attn dense', HIDDEN, HIDDEN),
  ...denseProducts('ffn up', HIDDEN, FFN),
  ...denseProducts('ffn down', FFN, HIDDEN),
  ['scores          q k^T', [HEADS_X_ROWS, SEQ, HEAD_DIM], [HEADS_X_ROWS, SEQ, HEAD_DIM], false, true, false],
  ['context         p v', [HEADS_X_ROWS, SEQ, SEQ], [HEADS_X_ROWS, SEQ, HEAD_DIM], false, false, false],
];

interface Row {
  product: string;
  ms: number;
  tflops: number;
}

function flops(sa: number[], sb: number[], ta: boolean, tb: boolean): number {
  const batch = sa.length === 3 ? sa[0]! : 1;
  const r = sa.length;
  const M = ta ? sa[r - 1]! : sa[r - 2]!;
  const K = ta ? sa[r - 2]! : sa[r - 1]!;
  const N = tb ? sb[sb.length - 2]! : sb[sb.length - 1]!;
  return 2 * batch * M * N * K;
}

/** One product; with `copyB`, B transposed by its own dispatch and then multiplied without the flag. */
function product(a: tf.Tensor, b: tf.Tensor, ta: boolean, tb: boolean, copyB: boolean): tf.Tensor {
  return copyB && tb ? tf.tidy(() => tf.matMul(a, tf.transpose(b), ta, false)) : tf.matMul(a, b, ta, tb);
}

/** Mean ms of `n` queued products, waiting once at the end. */
async function time(a: tf.Tensor, b: tf.Tensor, ta: boolean, tb: boolean, copyB: boolean, n: number): Promise<number> {
  if (n === 0) return 0;
  const t0 = performance.now();
  let last: tf.Tensor | null = null;
  for (let i = 0; i < n; i++) {
    last?.dispose();
    last = product(a, b, ta, tb, copyB);
  }
  const first = tf.slice(last!, 0, 1);
  await first.data();
  tf.dispose([first, last!]);
  return (performance.now() - t0) / n;
}

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
  const inputs = PRODUCTS.map(([, sa, sb]) => [tf.randomUniform(sa, -1, 1), tf.randomUniform(sb, -1, 1)] as const);
  for (const [i, [, , , ta, tb, copyB]] of PRODUCTS.entries()) await time(inputs[i]![0], inputs[i]![1], ta, tb, copyB, warmup);
  const rows: Row[] = [];
  for (const [i, [name, sa, sb, ta, tb, copyB]] of PRODUCTS.entries()) {
    const ms = await time(inputs[i]![0], inputs[i]![1], ta, tb, copyB, iters);
    const tflops = flops(sa, sb, ta, tb) / (ms * 1e9);
    rows.push({ product: name, ms, tflops });
    console.log(`${name.padEnd(26)} ${ms.toFixed(3).padStart(9)} ms  ${tflops.toFixed(2).padStart(7)} TFLOP/s`);
  }
  tf.dispose(inputs.flat());
  if (values.json !== undefined) writeFileSync(values.json, JSON.stringify({ backend: sel.name, iters, warmup, rows }, null, 2));
}

await main();
