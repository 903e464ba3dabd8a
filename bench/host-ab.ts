/**
 * `MICSE_DAWN_OPTIONS=backend=null npx tsx bench/host-ab.ts [--ab cache|replay] [--size tiny|small] [--rounds N] [--steps N]`:
 * the host's share of a webgpu training step with and without one of two things, in one process, in alternating
 * blocks of `--steps` steps (`--rounds` of each, after one untimed round), so that both sides see the same machine
 * load: `cache` (the default) the bind-group cache (src/kernels/platform/bindGroupCache.ts), `replay` the step
 * replay (src/kernels/replay/webgpu.ts; two TrainSteps over one model, one replaying; each block of the
 * replaying side starts by recording, since the other side used the buffer pool in between). Prints, per side, the
 * median over the blocks of the median step of a block (the replaying side: of its replayed steps): wall ms from a
 * step's start to its read being issued (TrainStep's hostMs, the bench's "host ms/step"), and the process's CPU ms
 * (process.cpuUsage: user + system, all threads; on a loaded machine less noisy than wall time); then the cache's
 * bind groups or the replayer's counts. On Dawn's null device (which runs nothing) a step is all host.
 */
import { AdamW } from '../src/train/adamw.js';
import { bindGroupCacheOf, useBindGroupCache } from '../src/kernels/platform/bindGroupCache.js';
import { MlpHead } from '../src/losses/mlpHead.js';
import { selectBackend } from '../src/model/backend.js';
import { BertModel } from '../src/model/bert.js';
import { parseBertConfig } from '../src/model/config.js';
import { tf } from '../src/model/tf.js';
import { FP32, REPLAY_ENV, TrainStep, trainableParams } from '../src/train/step.js';
import { BENCH_DEFAULTS, makeBatch, SIZES, type SizeName } from './bench.js';
import { defaultConfig } from '../src/train/config.js';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string): string => {
  const i = args.indexOf(name);
  return i < 0 ? fallback : args[i + 1] ?? fallback;
};
const ab = flag('--ab', 'cache');
const size = flag('--size', 'tiny') as SizeName;
const rounds = Number(flag('--rounds', '8'));
const steps = Number(flag('--steps', '10'));
if (!(size in SIZES) || !(rounds > 0) || !(steps > 0) || !['cache', 'replay'].includes(ab)) {
  process.stderr.write('usage: bench/host-ab.ts [--ab cache|replay] [--size tiny|small|base] [--rounds N] [--steps N]\n');
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
const objective = {
  ...defaultConfig().objective, style: 'micse' as const, temperature: d.temperature, lambda: d.lambda, minLayer: sz.minLayer, maxLayer: sz.maxLayer, pooler: 'cls' as const,
};
delete process.env[REPLAY_ENV]; // each side says whether it replays
const plain = new TrainStep(model, head, optimizer, objective, FP32, false);
const replaying = new TrainStep(model, head, optimizer, objective, FP32, true);
const SIDES = ab === 'cache' ? ['cache', 'no cache'] as const : ['replay', 'no replay'] as const;
const batch = makeBatch(sz.batch, sz.seqLen, d.vocabSize, d.seed);
const rows = { inputIds: batch, attentionMask: batch.map((r) => r.map(() => 1)) };

const sides = Object.fromEntries(SIDES.map((side) => [side, { host: [] as number[], cpu: [] as number[] }]));
let i = 0;
for (let round = 0; round <= rounds; round++) {
  for (const side of SIDES) {
    useBindGroupCache(backend, side !== 'no cache');
    const step = side === 'replay' ? replaying : plain;
    const host: number[] = [];
    const cpu: number[] = [];
    for (let k = 0; k < steps; k++, i++) {
      const replayedBefore = step.replayStats()?.replayed ?? 0;
      const cpu0 = process.cpuUsage();
      const ms = (await step.run(rows, { lr: d.learningRate, maxGradNorm: d.maxGradNorm, dropoutSeed: 2 * i + 1, amiSeed: 2 * i + 2 })).hostMs;
      const used = process.cpuUsage(cpu0);
      // The replaying side's figures are its replayed steps' (each of its blocks starts by recording two or more).
      if (side === 'replay' && (step.replayStats()?.replayed ?? 0) === replayedBefore) continue;
      host.push(ms);
      cpu.push((used.user + used.system) / 1000);
    }
    if (round === 0 || host.length === 0) continue; // warm-up: pipelines compiled, pools and caches filled
    sides[side]!.host.push(median(host));
    sides[side]!.cpu.push(median(cpu));
  }
}
useBindGroupCache(backend, true);
const stats = bindGroupCacheOf(backend)!.stats;
console.log(`${size} on ${tf.getBackend()}, ${rounds} rounds of ${steps} steps a side, alternating; load average at the end ${(await import('node:os')).loadavg().map((x) => x.toFixed(1)).join(' ')}`);
for (const [side, v] of Object.entries(sides)) {
  console.log(`${side.padEnd(9)} host ms/step (to the read) ${median(v.host).toFixed(2)} [${v.host.map((x) => x.toFixed(1)).join(' ')}]; ` +
    `CPU ms/step ${median(v.cpu).toFixed(2)} [${v.cpu.map((x) => x.toFixed(1)).join(' ')}]`);
}
if (ab === 'cache') console.log(`bind groups over the cache's steps: ${stats.misses} made, ${stats.hits} reused as they were, ${stats.rewrites} with new uniforms`);
else {
  const r = replaying.replayStats()!;
  console.log(`replaying side: ${r.replayed} steps replayed, ${r.recorded} recorded; ${r.dispatches} dispatches a replayed step`);
}
process.exit(0);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
