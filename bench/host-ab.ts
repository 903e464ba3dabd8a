/**
 * `MICSE_DAWN_OPTIONS=backend=null npx tsx bench/host-ab.ts [--size tiny|small] [--rounds N] [--steps N]`: the host's
 * share of a webgpu training step with the bind-group cache (src/kernels/platform/bindGroupCache.ts) on and off,
 * in one process, in alternating blocks of `--steps` steps (`--rounds` of each, after one untimed round), so that
 * both sides see the same machine load. Prints, per side, the median over the blocks of: wall ms from a step's
 * start to its read being issued (TrainStep's hostMs, the bench's "host ms/step"), and the process's CPU ms a step
 * (process.cpuUsage: user + system, all threads; on a loaded machine less noisy than wall time), and the bind
 * groups the cache made, reused and rewrote. On Dawn's null device (which runs nothing) a step is all host.
 */
import { AdamW } from '../src/train/adamw.js';
import { bindGroupCacheOf, useBindGroupCache } from '../src/kernels/platform/bindGroupCache.js';
import { MlpHead } from '../src/losses/mlpHead.js';
import { selectBackend } from '../src/model/backend.js';
import { BertModel } from '../src/model/bert.js';
import { parseBertConfig } from '../src/model/config.js';
import { tf } from '../src/model/tf.js';
import { TrainStep, trainableParams } from '../src/train/step.js';
import { BENCH_DEFAULTS, makeBatch, SIZES, type SizeName } from './bench.js';
import { defaultConfig } from '../src/train/config.js';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string): string => {
  const i = args.indexOf(name);
  return i < 0 ? fallback : args[i + 1] ?? fallback;
};
const size = flag('--size', 'tiny') as SizeName;
const rounds = Number(flag('--rounds', '8'));
const steps = Number(flag('--steps', '10'));
if (!(size in SIZES) || !(rounds > 0) || !(steps > 0)) {
  process.stderr.write('usage: bench/host-ab.ts [--size tiny|small|base] [--rounds N] [--steps N]\n');
  process.exit(2);
}

const d = BENCH_DEFAULTS;
const sz = SIZES[size];
await selectBackend('webgpu');
const backend = tf.backend() as unknown as WebGPUBackend;
const model = BertModel.random(parseBertConfig({ vocab_size: d.vocabSize, hidden_size: sz.hidden, num_hidden_layers: sz.layers,
  num_attention_heads: sz.heads, intermediate_size: 4 * sz.hidden, max_position_embeddings: 512 }, 'host-ab'), d.seed);
const head = new MlpHead(sz.hidden, { seed: d.seed + 1 });
const optimizer = new AdamW(trainableParams(model, head), { beta1: d.beta1, beta2: d.beta2, eps: d.eps, weightDecay: d.weightDecay });
const step = new TrainStep(model, head, optimizer, {
  ...defaultConfig().objective, style: 'micse', temperature: d.temperature, lambda: d.lambda, minLayer: sz.minLayer, maxLayer: sz.maxLayer, pooler: 'cls',
});
const batch = makeBatch(sz.batch, sz.seqLen, d.vocabSize, d.seed);
const rows = { inputIds: batch, attentionMask: batch.map((r) => r.map(() => 1)) };

const sides = { cache: { host: [] as number[], cpu: [] as number[] }, 'no cache': { host: [] as number[], cpu: [] as number[] } };
let i = 0;
for (let round = 0; round <= rounds; round++) {
  for (const side of ['cache', 'no cache'] as const) {
    useBindGroupCache(backend, side === 'cache');
    const host: number[] = [];
    const cpu0 = process.cpuUsage();
    for (let k = 0; k < steps; k++, i++) {
      host.push((await step.run(rows, { lr: d.learningRate, maxGradNorm: d.maxGradNorm, dropoutSeed: 2 * i + 1, amiSeed: 2 * i + 2 })).hostMs);
    }
    const cpu = process.cpuUsage(cpu0);
    if (round === 0) continue; // warm-up: pipelines compiled, pools and caches filled
    sides[side].host.push(median(host));
    sides[side].cpu.push((cpu.user + cpu.system) / 1000 / steps);
  }
}
useBindGroupCache(backend, true);
const stats = bindGroupCacheOf(backend)!.stats;
console.log(`${size} on ${tf.getBackend()}, ${rounds} rounds of ${steps} steps a side, alternating; load average at the end ${(await import('node:os')).loadavg().map((x) => x.toFixed(1)).join(' ')}`);
for (const [side, v] of Object.entries(sides)) {
  console.log(`${side.padEnd(9)} host ms/step (to the read) ${median(v.host).toFixed(2)} [${v.host.map((x) => x.toFixed(1)).join(' ')}]; ` +
    `CPU ms/step ${median(v.cpu).toFixed(2)} [${v.cpu.map((x) => x.toFixed(1)).join(' ')}]`);
}
console.log(`bind groups over the cache's steps: ${stats.misses} made, ${stats.hits} reused as they were, ${stats.rewrites} with new uniforms`);
process.exit(0);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
