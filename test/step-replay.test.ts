/**
 * A webgpu TrainStep replayed from its recorded GPU commands (src/kernels/replay/webgpu.ts, train.webgpuReplay).
 *
 * On a real adapter (SwiftShader under scripts/with-vulkan.mjs; skipped without one): a run with replay gives the
 * losses, gradient norms, parameters and AdamW moments of the same run without it, to the bit (the webgpu step is
 * deterministic: no kernel of it adds in an order that varies), over steps with other batches of
 * the same shape, a changing learning rate, other seeds, a batch of another shape in between and the parameters
 * read between two steps (as a checkpoint does), and over two batch shapes alternating (each keeps its own template;
 * with the buffer pool's free buffers bounded to none, so that each shape's step destroys the other's, too);
 * the steps replayed are the ones expected (a read in between runs the step normally; a step of a shape whose
 * template was made before another shape's buffers joined the pool replays); the tensor count stays flat; replayed
 * steps with a non-finite loss change no parameter and do not count for AdamW; with `precision: mixed` (a loss
 * scaler), steps replay across the scale's growths and backoffs, with the run's values and scales to the bit (the
 * scale's words patched, or the template dropped where they were steady). On Dawn's null device (every machine
 * with the `webgpu` package): steps are replayed without a validation error, and MAX_TEMPLATES batch shapes cycling
 * each replay where one more evicts every key's last recording before its next step.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { MlpHead } from '../src/losses/mlpHead.js';
import { DAWN_OPTIONS_ENV, selectBackend } from '../src/model/backend.js';
import { BertModel, siteSeed } from '../src/model/bert.js';
import type { BertConfig } from '../src/model/config.js';
import { tf } from '../src/model/tf.js';
import { AdamW } from '../src/train/adamw.js';
import { LossScaler } from '../src/train/lossScale.js';
import { REPLAY_ENV, TrainStep, trainableParams, type StepPrecision, type StepRows } from '../src/train/step.js';
import { MAX_TEMPLATES } from '../src/kernels/replay/webgpu.js';
import { poolBoundStats, POOL_FREE_ENV } from '../src/kernels/platform/bufferPool.js';
import { expectNoGpuErrors, maxAbsDiff, OBJECTIVE, ROOT, nullDeviceSkipReason, STEP_IMPORTS, STEP_SETUP, webgpuSkipReason } from './helpers.js';

const WEBGPU_SKIP = await webgpuSkipReason();
const NULL_DEVICE_SKIP = await nullDeviceSkipReason();
delete process.env[REPLAY_ENV]; // the tests say when replay is on

const CONFIG: BertConfig = {
  vocabSize: 60, hiddenSize: 32, numHiddenLayers: 2, numAttentionHeads: 2, intermediateSize: 64, hiddenAct: 'gelu',
  hiddenDropoutProb: 0.1, attentionProbsDropoutProb: 0.1, maxPositionEmbeddings: 32, typeVocabSize: 2, layerNormEps: 1e-12,
  padTokenId: 0, initializerRange: 0.02,
};
const OBJ = { ...OBJECTIVE, minLayer: 0, maxLayer: 2, targetSamples: 40, training: true };

/** `sentences` sentences x 2 views of `tokens` tokens (16 by default); `variant` changes the ids and the lengths. */
function batch(sentences: number, variant: number, tokens = 16): StepRows {
  const inputIds: number[][] = [];
  const attentionMask: number[][] = [];
  for (let s = 0; s < sentences; s++) {
    const len = 4 + ((s * 5 + variant * 3) % 12);
    const row = Array.from({ length: tokens }, (_, t) => (t === 0 ? 2 : t < len ? 3 + ((s * 17 + t * 7 + variant * 13) % 55) : 0));
    const mask = row.map((_, t) => (t < len ? 1 : 0));
    inputIds.push(row, [...row]);
    attentionMask.push(mask, [...mask]);
  }
  return { inputIds, attentionMask };
}

/** A step of the plan: its batch, and whether the parameters are read after it (as a checkpoint reads them). */
interface PlanStep {
  rows: StepRows;
  readAfter?: boolean;
}

interface Run {
  /** Per step: loss, gradient norm, loss scale, overflow (1 or 0). */
  outcomes: number[][];
  /** Per step: replayed or not. */
  replayed: boolean[];
  /** Parameters and moments: after each read and at the end. */
  states: Float32Array[][];
  tensorCounts: number[];
  /** Why the replayer last refused (stats.lastRefusal). */
  refusal: string | null;
  /** Steps replayed by key (stats.replayedByKey). */
  replayedByKey: Record<string, number> | null;
  /** Uniform buffers written back by replays (stats.writtenBack). */
  writtenBack: number;
  /** Pool buffers the bound destroyed during the run (bufferPool.ts). */
  poolDestroyed: number;
}

/** Trains `plan` with replay on or off; with `precision`, `train.precision: mixed` (a fresh loss scaler each run). */
async function train(replay: boolean, plan: PlanStep[], precision?: () => StepPrecision): Promise<Run> {
  await selectBackend('webgpu');
  const model = BertModel.random(CONFIG, 7);
  const head = new MlpHead(CONFIG.hiddenSize, { seed: 3 });
  const optimizer = new AdamW(trainableParams(model, head), { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 });
  const step = new TrainStep(model, head, optimizer, OBJ, precision?.(), replay);
  const state = async () => Promise.all([...optimizer.params.map((p) => p.variable), ...optimizer.m.values(), ...optimizer.v.values()]
    .map(async (x) => Float32Array.from((await x.data()) as Float32Array)));
  const run: Run = { outcomes: [], replayed: [], states: [], tensorCounts: [], refusal: null, replayedByKey: null, writtenBack: 0, poolDestroyed: 0 };
  const destroyed = () => poolBoundStats(tf.backend() as unknown as { bufferManager: unknown })?.destroyed ?? 0;
  const destroyedBefore = destroyed();
  await expectNoGpuErrors(async () => {
    for (const [i, p] of plan.entries()) {
      const before = step.replayStats()?.replayed ?? 0;
      // A warmup-like learning rate: other AdamW step sizes and decays every step.
      const out = await step.run(p.rows, { lr: 1e-5 * (i + 1), maxGradNorm: 1, dropoutSeed: siteSeed(5, i), amiSeed: siteSeed(6, i) });
      assert.ok(out.finite, `step ${i}: ${JSON.stringify(out)}`);
      run.outcomes.push([out.loss, out.gradNorm, out.lossScale, out.overflow ? 1 : 0]);
      run.replayed.push((step.replayStats()?.replayed ?? 0) > before);
      run.tensorCounts.push(tf.memory().numTensors);
      if (p.readAfter === true) run.states.push(await state());
    }
    run.states.push(await state());
  });
  run.refusal = step.replayStats()?.lastRefusal ?? null;
  run.replayedByKey = step.replayStats()?.replayedByKey ?? null;
  run.writtenBack = step.replayStats()?.writtenBack ?? 0;
  run.poolDestroyed = destroyed() - destroyedBefore;
  optimizer.dispose();
  head.dispose();
  model.dispose();
  await selectBackend('cpu');
  return run;
}

function assertSameRun(got: Run, want: Run): void {
  got.outcomes.forEach((o, i) => {
    assert.deepEqual(o, want.outcomes[i], `step ${i}: loss, norm, scale, overflow ${o.join(', ')} vs ${want.outcomes[i]!.join(', ')}`);
  });
  assert.equal(got.states.length, want.states.length);
  got.states.forEach((s, k) => s.forEach((x, j) => {
    const same = Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(want.states[k]![j]!.buffer, want.states[k]![j]!.byteOffset, want.states[k]![j]!.byteLength));
    assert.ok(same, `state read ${k}, tensor ${j} (parameters, then m, then v) differs by ${maxAbsDiff(x, want.states[k]![j]!)}`);
  }));
}

describe('TrainStep replay on a real adapter', { skip: WEBGPU_SKIP }, () => {
  test('7 steps of one shape (4-6 replayed), then a batch of another shape, and a read of the parameters in between: the losses, norms, parameters and moments of the run without replay; tensor count flat', async () => {
    const plan: PlanStep[] = [
      // One shape, other batches, seeds and learning rates.
      ...Array.from({ length: 7 }, (_, i) => ({ rows: batch(4, i % 3) })),
      { rows: batch(3, 0) }, // the last, partial batch of an epoch
      ...Array.from({ length: 4 }, (_, i) => ({ rows: batch(4, i + 1), readAfter: i === 2 })),
      { rows: batch(4, 2) },
    ];
    const want = await train(false, plan);
    const got = await train(true, plan);
    assertSameRun(got, want);
    const why = `replayed: ${JSON.stringify(got.replayed)}; last refusal: ${got.refusal}`;
    // Two recorded steps make a template; the first steps (pipelines compiled, the pool filled) differ from the next.
    assert.deepEqual(got.replayed.slice(0, 2), [false, false], why);
    assert.ok(got.replayed.slice(4, 7).every((r) => r), why);
    // 7 another shape (its buffers join the pool, below the free lists' tops the template's steps take from); 8, 9
    // and 10 replayed, 10 read after; 11 after the read runs normally; 12 replayed.
    assert.deepEqual(got.replayed.slice(7), [false, true, true, true, false, true], why);
    assert.ok(want.replayed.every((r) => !r));
    const counts = got.tensorCounts.slice(0, 7);
    assert.ok(counts.every((c) => c === counts[0]), `tensor counts ${got.tensorCounts.join(', ')}`);
  });

  test('two shapes alternating (A A B B A B A B ...): each keeps its template and is replayed, with a read of the parameters in between; the values of the run without replay, tensor count flat', async () => {
    // A: 4 sentences x 16 tokens; B: 4 sentences x 12 tokens (the trainer pads each batch to its longest row). Some
    // bind groups are over the same buffers in both with other uniforms: a step of one rewrites what the other's
    // template reads, and the replay writes it back.
    const shapes = ['A', 'A', 'B', 'B', ...Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? 'A' : 'B'))];
    const plan: PlanStep[] = shapes.map((s, i) => ({ rows: s === 'A' ? batch(4, i % 3) : batch(4, i % 3, 12), readAfter: i === 9 }));
    const want = await train(false, plan);
    const got = await train(true, plan);
    assertSameRun(got, want);
    const why = `replayed: ${JSON.stringify(got.replayed)}; last refusal: ${got.refusal}`;
    // A shape's first steps record (they fill the pool; which ones depends on what the pool already holds from the
    // tests before); from 7 each shape replays while the other's steps run between; 10, after the read, runs normally.
    const replayed = (shape: string, from: number) => got.replayed.filter((r, i) => r && i >= from && shapes[i] === shape).length;
    assert.ok(replayed('A', 7) >= 1 && replayed('B', 7) >= 2 && replayed('A', 11) >= 1 && replayed('B', 11) >= 1, why);
    assert.equal(got.replayed[10], false, why);
    assert.deepEqual(got.replayedByKey, { '8x16, clip 1': replayed('A', 0), '8x12, clip 1': replayed('B', 0) }, why);
    assert.ok(got.writtenBack > 0, why);
    assert.ok(got.tensorCounts.every((c) => c === got.tensorCounts[0]), `tensor counts ${got.tensorCounts.join(', ')}`);
    // The pool's free buffers bounded to none: each step of the other shape destroys this one's, and what replays
    // still gives the same values.
    process.env[POOL_FREE_ENV] = '0';
    const tight = await train(true, plan).finally(() => delete process.env[POOL_FREE_ENV]);
    assertSameRun(tight, want);
    assert.ok(tight.poolDestroyed > 0, `destroyed ${tight.poolDestroyed}`);
  });

  test('precision mixed (float16 products, dynamic loss scaling): steps are replayed across the scale\'s growths and backoffs, with the losses, norms, scales, parameters and moments of the run without replay', async () => {
    // From 2^24 the float16 products overflow: the scale halves each step down to 2^19, where the gradients are
    // finite; 3 steps later it doubles to 2^20, which overflows again, and so on (GradScaler's oscillation).
    const precision = (): StepPrecision => ({ f16Products: true, scaler: new LossScaler(3, 2 ** 24) });
    const plan: PlanStep[] = Array.from({ length: 14 }, (_, i) => ({ rows: batch(4, i % 3), readAfter: i === 10 }));
    const want = await train(false, plan, precision);
    const got = await train(true, plan, precision);
    assertSameRun(got, want);
    const why = `replayed: ${JSON.stringify(got.replayed)}; outcomes ${JSON.stringify(got.outcomes)}; last refusal: ${got.refusal}`;
    const scale = (i: number) => got.outcomes[i]![2]!;
    const overflow = (i: number) => got.outcomes[i]![3] === 1;
    // Steps replayed at another scale than the step before: after a backoff (an overflow) and after a growth.
    const changed = got.replayed.map((r, i) => r && i > 0 && scale(i) !== scale(i - 1) ? i : -1).filter((i) => i > 0);
    assert.ok(changed.some((i) => overflow(i - 1)), `no replay after a backoff; ${why}`);
    assert.ok(changed.some((i) => !overflow(i - 1)), `no replay after a growth; ${why}`);
    assert.ok(got.replayed.filter((r) => r).length >= 7, why);
    // 11, after the read, runs normally: with 6 (both at 2^19) a template in which the scale is a steady value; 12 is
    // at the grown scale, so that template is dropped and 12 runs normally; 13 replays the template of 11 and 12.
    assert.deepEqual([scale(11), scale(12), scale(13)], [2 ** 19, 2 ** 20, 2 ** 20], why);
    assert.deepEqual(got.replayed.slice(11), [false, false, true], why);
  });

  test('replayed steps with a non-finite loss update nothing (the gate is read on the GPU) and do not count for AdamW', async () => {
    await selectBackend('webgpu');
    const model = BertModel.random(CONFIG, 7);
    const head = new MlpHead(CONFIG.hiddenSize, { seed: 3 });
    const optimizer = new AdamW(trainableParams(model, head), { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 });
    const step = new TrainStep(model, head, optimizer, { ...OBJ, temperature: 1e-45 }, undefined, true);
    const params = () => Promise.all(optimizer.params.map(async (p) => Float32Array.from((await p.variable.data()) as Float32Array)));
    const before = await params();
    for (let i = 0; i < 7; i++) {
      const out = await step.run(batch(4, i % 2), { lr: 1e-4, maxGradNorm: 1, dropoutSeed: siteSeed(5, i), amiSeed: siteSeed(6, i) });
      assert.equal(out.finite, false, `step ${i}`);
    }
    const stats = step.replayStats()!;
    const after = await params();
    const steps = optimizer.step;
    optimizer.dispose();
    head.dispose();
    model.dispose();
    await selectBackend('cpu');
    assert.ok(stats.replayed >= 3, JSON.stringify(stats));
    assert.equal(steps, 0, 'no step counted');
    after.forEach((x, j) => assert.deepEqual(x, before[j], `parameter ${j} changed`));
  });
});

describe("TrainStep replay on Dawn's null device (every machine with the webgpu package)", { skip: NULL_DEVICE_SKIP }, () => {
  test('steps are replayed without a validation error and the tensor count stays flat', () => {
    const script = `
      ${STEP_IMPORTS}
      ${STEP_SETUP}
      const step = new TrainStep(model, head, optimizer, objective, undefined, true);
      device.pushErrorScope('validation');
      const counts = [];
      for (let i = 0; i < 8; i++) {
        await step.run(rows, { lr: 1e-4 * (i + 1), maxGradNorm: 1, dropoutSeed: i, amiSeed: 100 + i });
        counts.push(tf.memory().numTensors);
      }
      const error = await device.popErrorScope();
      console.log(JSON.stringify({ error: error === null ? null : error.message, stats: step.replayStats(), counts }));
    `;
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script,
      JSON.stringify({ config: CONFIG, rows: batch(4, 0), objective: OBJ })],
    { cwd: ROOT, env: { ...process.env, [DAWN_OPTIONS_ENV]: 'backend=null' }, encoding: 'utf8' });
    const r = JSON.parse(out.trim().split('\n').at(-1)!) as { error: string | null; stats: { recorded: number; replayed: number }; counts: number[] };
    assert.equal(r.error, null, 'WebGPU validation error');
    assert.ok(r.stats.replayed >= 4 && r.stats.recorded + r.stats.replayed === 8, JSON.stringify(r.stats));
    assert.ok(r.counts.every((c) => c === r.counts[0]), `tensor counts ${r.counts.join(', ')}`);
  });

  test(`batch shapes cycling: MAX_TEMPLATES (${MAX_TEMPLATES}) of them each replay; one more, and each key's last recording is dropped before its next step`, () => {
    // Each run cycles its shapes (4 sentences x T tokens) five times: a shape's first steps grow the pool, two later
    // recordings of it make its template, and the cycles after replay it, while no more shapes than the bound cycle.
    const script = `
      ${STEP_IMPORTS}
      ${STEP_SETUP}
      const { shapes } = JSON.parse(process.argv[1]);
      const runs = [];
      for (const batches of shapes) {
        const step = new TrainStep(model, head, optimizer, objective, undefined, true);
        for (let i = 0; i < 5 * batches.length; i++) {
          await step.run(batches[i % batches.length], { lr: 1e-4, maxGradNorm: 1, dropoutSeed: i, amiSeed: 100 + i });
        }
        runs.push(step.replayStats());
      }
      console.log(JSON.stringify(runs));
    `;
    const cycle = (n: number) => Array.from({ length: n }, (_, k) => batch(4, 0, 8 + k));
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script,
      JSON.stringify({ config: CONFIG, rows: null, objective: OBJ, shapes: [cycle(MAX_TEMPLATES), cycle(MAX_TEMPLATES + 1)] })],
    { cwd: ROOT, env: { ...process.env, [DAWN_OPTIONS_ENV]: 'backend=null' }, encoding: 'utf8' });
    const [within, past] = JSON.parse(out.trim().split('\n').at(-1)!) as { replayed: number; replayedByKey: Record<string, number> }[];
    const keys = Object.keys(within!.replayedByKey);
    assert.equal(keys.length, MAX_TEMPLATES, JSON.stringify(within));
    assert.ok(keys.every((k) => within!.replayedByKey[k]! >= 1), JSON.stringify(within));
    assert.equal(past!.replayed, 0, JSON.stringify(past));
  });
});
