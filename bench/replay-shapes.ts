/**
 * `MICSE_DAWN_OPTIONS=backend=null npx tsx bench/replay-shapes.ts [--steps N] [--batch B] [--max-seq-len T] [--replay 0|1]
 * [--precision fp32|mixed]`:
 * how much of a webgpu run the step replay (src/kernels/replay/webgpu.ts) covers when the batch length varies as
 * the trainer's batches of ../shared/data/wiki1m-head.txt ($MICSE_SHARED_DIR/data where set) do (TwoViewBatchIterator with the bert-base-uncased
 * tokenizer, the trainer's default seed; each batch padded to its longest row). Runs `--steps` steps (default two
 * epochs) of the bench's tiny model at hidden size `--hidden` (default 64) on the first `--sentences` sentences (default 8)
 * of each batch, at the batch's length (the pool's free buffers within their budget, bufferPool.ts: at 64 sentences,
 * ~100 MB a length, only a few lengths' buffers stay); a step's host cost is its dispatches' with replay on (or off
 * with `--replay 0`) and prints, per
 * epoch: the steps replayed, the batch lengths seen and how often the length changed; and for the whole run: host
 * ms/step (TrainStep's hostMs: start of a step to its read issued; median and mean), the process's CPU ms/step
 * (process.cpuUsage, user + system) and wall ms/step. `--precision mixed` trains as train.precision: mixed does
 * (float16 products, the default loss scaler; stepPrecision) and prints the steps read as overflows and the last
 * scale. Last, the buffer pool at the end: its bytes, the most in use at once, the budget and what it destroyed. On
 * Dawn's null device (which runs nothing) a step is all host.
 */
import path from 'node:path';
import { BertTokenizer } from '../src/data/tokenizer.js';
import { TwoViewBatchIterator } from '../src/data/batches.js';
import { readAll } from '../src/data/readers.js';
import { AdamW } from '../src/train/adamw.js';
import { MlpHead } from '../src/losses/mlpHead.js';
import { selectBackend } from '../src/model/backend.js';
import { BertModel, siteSeed } from '../src/model/bert.js';
import { parseBertConfig } from '../src/model/config.js';
import { tf } from '../src/model/tf.js';
import { REPLAY_ENV, TrainStep, trainableParams } from '../src/train/step.js';
import { defaultConfig } from '../src/train/config.js';
import { stepPrecision } from '../src/train/loop.js';
import { poolBoundStats, POOL_FREE_ENV } from '../src/kernels/platform/bufferPool.js';
import { BENCH_DEFAULTS, SHARED_DATA, SIZES } from './bench.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string): string => {
  const i = args.indexOf(name);
  return i < 0 ? fallback : args[i + 1] ?? fallback;
};
const batchSize = Number(flag('--batch', '64'));
const maxSeqLen = Number(flag('--max-seq-len', '64'));
const replay = flag('--replay', '1') === '1';
const hidden = Number(flag('--hidden', '64'));
const taken = Number(flag('--sentences', '8'));

const c = defaultConfig();
const precisionName = flag('--precision', 'fp32');
if (precisionName !== 'fp32' && precisionName !== 'mixed') throw new Error(`--precision fp32 or mixed, got ${precisionName}`);
c.train.precision = precisionName;
const sentences = (await readAll(path.join(SHARED_DATA, 'wiki1m-head.txt'))).lines.map((l) => l.text);
const tokenizer = await BertTokenizer.fromDir(path.join(SHARED_DATA, 'bert-base-uncased'));
const batches = new TwoViewBatchIterator({ sentences, tokenizer, batchSize, maxSeqLen, seed: c.train.seed });
const steps = Number(flag('--steps', String(2 * batches.stepsPerEpoch)));

const d = BENCH_DEFAULTS;
const sz = SIZES.tiny;
await selectBackend('webgpu');
const model = BertModel.random(parseBertConfig({ vocab_size: tokenizer.vocabSize, hidden_size: hidden, num_hidden_layers: sz.layers,
  num_attention_heads: sz.heads, intermediate_size: 4 * hidden, max_position_embeddings: 512 }, 'replay-shapes'), d.seed);
const head = new MlpHead(hidden, { seed: d.seed + 1 });
const optimizer = new AdamW(trainableParams(model, head), { beta1: d.beta1, beta2: d.beta2, eps: d.eps, weightDecay: d.weightDecay });
const objective = { ...c.objective, minLayer: sz.minLayer, maxLayer: sz.maxLayer };
delete process.env[REPLAY_ENV];
const precision = stepPrecision(c);
const step = new TrainStep(model, head, optimizer, objective, precision, replay);

const epochs: { steps: number; replayed: number; lengths: Map<number, number>; changes: number }[] = [];
const host: number[] = [];
let overflows = 0;
let lastLength = -1;
const cpu0 = process.cpuUsage();
const wall0 = performance.now();
for (let i = 0; i < steps; i++) {
  const b = batches.next().value;
  const T = b.inputIds[0]!.length;
  const rows = { inputIds: b.inputIds.slice(0, 2 * taken), attentionMask: b.attentionMask.slice(0, 2 * taken) }; // [2 taken, T]
  const e = (epochs[b.epoch] ??= { steps: 0, replayed: 0, lengths: new Map(), changes: 0 });
  const before = step.replayStats()?.replayed ?? 0;
  // The trainer's warmup-then-decay schedule, roughly: another learning rate every step.
  const lr = d.learningRate * Math.min((i + 1) / 20, 1 - i / (2 * steps));
  const out = await step.run(rows, { lr, maxGradNorm: d.maxGradNorm, dropoutSeed: siteSeed(d.seed, 2 * i), amiSeed: siteSeed(d.seed, 2 * i + 1) });
  host.push(out.hostMs);
  if (out.overflow) overflows += 1;
  e.steps += 1;
  if ((step.replayStats()?.replayed ?? 0) > before) e.replayed += 1;
  e.lengths.set(T, (e.lengths.get(T) ?? 0) + 1);
  if (lastLength !== -1 && T !== lastLength) e.changes += 1;
  lastLength = T;
}
const wall = performance.now() - wall0;
const cpu = process.cpuUsage(cpu0);
const sorted = [...host].sort((a, b) => a - b);
const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
console.log(`tiny at hidden ${hidden}, ${taken} sentences of batches of ${batchSize}, maxSeqLen ${maxSeqLen}, ${steps} steps on ${tf.getBackend()}, precision ${precisionName}, replay ${replay ? 'on' : 'off'}; ` +
  `load average at the end ${(await import('node:os')).loadavg().map((x) => x.toFixed(1)).join(' ')}`);
for (const [k, e] of epochs.entries()) {
  const lengths = [...e.lengths].sort((a, b) => b[1] - a[1]).map(([t, n]) => `${t}:${n}`).join(' ');
  console.log(`epoch ${k}: ${e.replayed} of ${e.steps} steps replayed; length changed ${e.changes} times; lengths (T:batches) ${lengths}`);
}
console.log(`host ms/step median ${sorted[sorted.length >> 1]!.toFixed(2)}, mean ${mean(host).toFixed(2)}; ` +
  `CPU ms/step ${((cpu.user + cpu.system) / 1000 / steps).toFixed(2)}; wall ms/step ${(wall / steps).toFixed(2)}`);
if (precision.scaler !== null) console.log(`${overflows} steps read as overflows; loss scale at the end ${precision.scaler.scale}`);
console.log(`replayer: ${JSON.stringify(step.replayStats())}`);
const pool = (tf.backend() as unknown as { bufferManager: { numBytesAllocated: number; numBytesUsed: number } }).bufferManager;
const bound = poolBoundStats(tf.backend() as unknown as { bufferManager: unknown });
const mb = (x: number) => (x / 2 ** 20).toFixed(1);
console.log(`buffer pool (${POOL_FREE_ENV}): ${mb(pool.numBytesAllocated)} MiB at the end, ${mb(pool.numBytesUsed)} in use; ` +
  (bound === undefined ? 'unbounded' : `most in use at once ${mb(bound.peakUsed)} MiB, free budget ${Number.isFinite(bound.budget) ? `${mb(bound.budget)} MiB` : 'unbounded'}, ` +
  `${bound.destroyed} buffers destroyed (${mb(bound.destroyedBytes)} MiB)`));
process.exit(0);
