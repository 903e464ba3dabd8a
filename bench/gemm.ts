/**
 * `node --import tsx bench/gemm.ts [--backend webgpu] [--iters N] [--json FILE]`: TFLOP/s of the BERT-base
 * training step's matrix products (batch 64 x 2 views x seq 32 = 4,096 token rows) on one backend, with the
 * stock BatchMatMul and, on webgpu, with the tiled GEMM of src/model/webgpuGemm.ts. One row per product:
 * forward (x W), input gradient (dy W^T) and weight gradient (x^T dy) of the attention and feed-forward layers,
 * and the batched attention products (12 heads x 128 rows, 32 x 64). Each figure: `iters` products queued, then
 * one read of the last output (which waits for all of them); every product and kernel first runs `warmup` untimed
 * times, then two timed rounds in opposite kernel orders give the faster of two figures per pair (the first H200
 * run measured each product's second kernel up to 30% faster only for coming second).
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { selectBackend, type BackendName } from '../src/model/backend.js';
import { tf } from '../src/model/tf.js';
import { registerWebGPUGemm, unregisterWebGPUGemm } from '../src/model/webgpuGemm.js';

const TOKENS = 4096;
const HIDDEN = 768;
const FFN = 3072;
const HEADS_X_ROWS = 12 * 128;
const SEQ = 32;
const HEAD_DIM = 64;

/** name, A shape, B shape, transposeA, transposeB */
const PRODUCTS: [string, number[], number[], boolean, boolean][] = [
  ['attn dense fwd  x W', [TOKENS, HIDDEN], [HIDDEN, HIDDEN], false, false],
  ['attn dense dX   dy W^T', [TOKENS, HIDDEN], [HIDDEN, HIDDEN], false, true],
  ['attn dense dW   x^T dy', [TOKENS, HIDDEN], [TOKENS, HIDDEN], true, false],
  ['ffn up fwd      x W', [TOKENS, HIDDEN], [HIDDEN, FFN], false, false],
  ['ffn up dX       dy W^T', [TOKENS, FFN], [HIDDEN, FFN], false, true],
  ['ffn up dW       x^T dy', [TOKENS, HIDDEN], [TOKENS, FFN], true, false],
  ['ffn down fwd    x W', [TOKENS, FFN], [FFN, HIDDEN], false, false],
  ['scores          q k^T', [HEADS_X_ROWS, SEQ, HEAD_DIM], [HEADS_X_ROWS, SEQ, HEAD_DIM], false, true],
  ['context         p v', [HEADS_X_ROWS, SEQ, SEQ], [HEADS_X_ROWS, SEQ, HEAD_DIM], false, false],
];

interface Row {
  product: string;
  kernel: 'stock' | 'tiled';
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

async function time(a: tf.Tensor, b: tf.Tensor, ta: boolean, tb: boolean, iters: number, warmup: number): Promise<number> {
  const run = async (n: number) => {
    if (n === 0) return;
    let last: tf.Tensor | null = null;
    for (let i = 0; i < n; i++) {
      last?.dispose();
      last = tf.matMul(a, b, ta, tb);
    }
    await last!.slice(0, 1).data();
    last!.dispose();
  };
  await run(warmup);
  const t0 = performance.now();
  await run(iters);
  return (performance.now() - t0) / iters;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: {
    backend: { type: 'string', default: 'webgpu' },
    iters: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '3' },
    json: { type: 'string' },
  } });
  const sel = await selectBackend(values.backend as BackendName);
  const iters = Number(values.iters);
  const warmup = Number(values.warmup);
  const kernels: Row['kernel'][] = sel.tfBackend === 'webgpu' ? ['stock', 'tiled'] : ['stock'];
  const rows: Row[] = [];
  const inputs = PRODUCTS.map(([, sa, sb]) => [tf.randomUniform(sa, -1, 1), tf.randomUniform(sb, -1, 1)] as const);
  // One untimed pass over every product and kernel first (pipelines compiled, GPU clocks up); then two rounds in
  // opposite kernel orders, keeping each pair's faster time, so neither kernel gains from being measured second.
  const use = (kernel: Row['kernel']) => (kernel === 'tiled' ? registerWebGPUGemm() : sel.tfBackend === 'webgpu' && unregisterWebGPUGemm());
  for (const kernel of kernels) {
    use(kernel);
    for (const [i, [, , , ta, tb]] of PRODUCTS.entries()) await time(inputs[i]![0], inputs[i]![1], ta, tb, 1, warmup);
  }
  const best = new Map<string, number>();
  for (const order of [kernels, [...kernels].reverse()]) {
    for (const [i, [product, , , ta, tb]] of PRODUCTS.entries()) {
      for (const kernel of order) {
        use(kernel);
        const ms = await time(inputs[i]![0], inputs[i]![1], ta, tb, iters, 0);
        const key = `${product}|${kernel}`;
        best.set(key, Math.min(best.get(key) ?? Infinity, ms));
      }
    }
  }
  for (const [product, sa, sb, ta, tb] of PRODUCTS) {
    for (const kernel of kernels) {
      const ms = best.get(`${product}|${kernel}`)!;
      const tflops = flops(sa, sb, ta, tb) / (ms * 1e9);
      rows.push({ product, kernel, ms, tflops });
      console.log(`${product.padEnd(24)} ${kernel.padEnd(6)} ${ms.toFixed(3).padStart(9)} ms  ${tflops.toFixed(2).padStart(7)} TFLOP/s`);
    }
  }
  tf.dispose(inputs.flat());
  if (values.json !== undefined) writeFileSync(values.json, JSON.stringify({ backend: sel.name, iters, warmup, rows }, null, 2));
}

await main();
