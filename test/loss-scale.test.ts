/**
 * train.precision mixed on the host backends: float16 rounding (kernels/f16) against an exhaustive float16 table,
 * on cpu and wasm; the loss scaler (src/train/lossScale.ts) as PyTorch's GradScaler updates it; a TrainStep with
 * loss scaling and float32 products gives fp32's weights bit for bit; an overflowing step changes nothing, halves
 * the scale and does not count, and the scale grows back; the config keys and the refusal where no rounding kernel
 * exists.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { roundF16Bits, roundToF16 } from '../src/kernels/f16/index.js';
import { MlpHead } from '../src/losses/mlpHead.js';
import { selectBackend } from '../src/model/backend.js';
import { BertModel } from '../src/model/bert.js';
import type { BertConfig } from '../src/model/config.js';
import { tf } from '../src/model/tf.js';
import { AdamW } from '../src/train/adamw.js';
import { defaultConfig, mergeConfig, checkConsistency } from '../src/train/config.js';
import { stepPrecision } from '../src/train/loop.js';
import { LossScaler } from '../src/train/lossScale.js';
import { TrainStep, trainableParams, type StepPrecision } from '../src/train/step.js';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { train } from '../src/train/trainer.js';
import { microConfig, OBJECTIVE, SKIP_NO_SHARED, testTempDir, webgpuSkipReason } from './helpers.js';

const WEBGPU_SKIP = await webgpuSkipReason();

/** float16 bits -> value. */
function f16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return m === 0 ? sign * Infinity : NaN;
  return e === 0 ? sign * m * 2 ** -24 : sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** The finite non-negative float16 values, ascending (index = bits). */
const F16 = Array.from({ length: 0x7c00 }, (_, h) => f16Value(h));

/** Reference: `x` (a float32 value) to the nearest float16, ties to the even bit pattern, as a number. */
function nearestF16(x: number): number {
  if (!Number.isFinite(x)) return x;
  const a = Math.abs(x);
  if (a >= 65520) return Math.sign(x) * Infinity;
  let lo = 0;
  let hi = F16.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (F16[mid]! <= a) lo = mid;
    else hi = mid;
  }
  const [dl, dh] = [a - F16[lo]!, F16[hi]! - a];
  const pick = dl < dh ? lo : dh < dl ? hi : (lo % 2 === 0 ? lo : hi);
  return (x < 0 || Object.is(x, -0) ? -1 : 1) * F16[pick]!;
}

const bitsOf = (x: number): number => new Uint32Array(Float32Array.of(x).buffer)[0]!;
const valueOf = (b: number): number => new Float32Array(Uint32Array.of(b).buffer)[0]!;

/** Float32 values around every float16: each one, the midpoints to its neighbours and the float32s beside them. */
function probeValues(): Float32Array {
  const out: number[] = [];
  for (let h = 0; h < F16.length; h++) {
    const v = F16[h]!;
    const next = h + 1 < F16.length ? F16[h + 1]! : 65536;
    const mid = Math.fround((v + next) / 2);
    for (const x of [v, mid, valueOf(bitsOf(mid) + 1), valueOf(Math.max(0, bitsOf(mid) - 1))]) out.push(x, -x);
  }
  out.push(65519.99, 65520, 1e6, 3e38, Infinity, -Infinity, NaN, 1e-9, -3e-8, 2 ** -25, 2 ** -25 * 1.0001, 2 ** -24 * 1.5);
  return Float32Array.from(out);
}

after(async () => {
  await selectBackend('cpu');
});

const TMP = testTempDir('loss-scale');

describe('float16 rounding (kernels/f16)', () => {
  const xs = probeValues();

  test('roundF16Bits is nearest-even float16 for every float16, every midpoint, their neighbours and the range ends', () => {
    for (const x of xs) {
      const got = valueOf(roundF16Bits(bitsOf(x)));
      const want = nearestF16(x);
      if (Number.isNaN(want)) assert.ok(Number.isNaN(got));
      else assert.ok(Object.is(got, Math.fround(want)), `${x}: got ${got}, want ${want}`);
    }
  });

  // webgpu: on SwiftShader in CI; WGSL's own f32(f16(x)) would fail here on lavapipe, which folds it to x.
  for (const backend of ['cpu', 'wasm', 'webgpu'] as const) {
    test(`the ${backend} kernel and its gradient round as roundF16Bits does`, { skip: backend === 'webgpu' ? WEBGPU_SKIP : false }, async () => {
      await selectBackend(backend);
      const x = tf.tensor1d(xs);
      const want = Uint32Array.from(new Uint32Array(xs.buffer), (b) => roundF16Bits(b));
      const y = roundToF16(x);
      assert.deepEqual(new Uint32Array(((await y.data()) as Float32Array).slice().buffer), want);
      const g = tf.grad((t: tf.Tensor) => roundToF16(t).mul(tf.scalar(1)))(tf.zerosLike(x));
      // d/dx of roundToF16(x) * 1 at dy = 1 is round(1) = 1; with dy = x it is round(x):
      assert.ok(((await g.data()) as Float32Array).every((v) => v === 1));
      const gx = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(roundToF16(t), tf.tensor1d(xs))))(tf.zerosLike(x));
      assert.deepEqual(new Uint32Array(((await gx.data()) as Float32Array).slice().buffer), want);
      tf.dispose([x, y, g, gx]);
    });
  }
});

describe('loss scaling (train.precision mixed)', () => {
  test('the scaler halves on an overflow and doubles after growthInterval good steps in a row (GradScaler)', () => {
    const s = new LossScaler(3, 2 ** 16);
    s.update(false);
    assert.deepEqual(s.state(), { scale: 2 ** 15, goodSteps: 0 });
    s.update(true);
    s.update(true);
    assert.equal(s.scale, 2 ** 15);
    s.update(false);
    assert.deepEqual(s.state(), { scale: 2 ** 14, goodSteps: 0 }, 'an overflow resets the run of good steps');
    for (let i = 0; i < 3; i++) s.update(true);
    assert.deepEqual(s.state(), { scale: 2 ** 15, goodSteps: 0 });
    assert.deepEqual(new LossScaler(3, 1, { scale: 8, goodSteps: 2 }).state(), { scale: 8, goodSteps: 2 }, 'a resumed state wins');
  });

  const CONFIG: BertConfig = {
    vocabSize: 60, hiddenSize: 32, numHiddenLayers: 4, numAttentionHeads: 2, intermediateSize: 64, hiddenAct: 'gelu',
    hiddenDropoutProb: 0.1, attentionProbsDropoutProb: 0.1, maxPositionEmbeddings: 32, typeVocabSize: 2, layerNormEps: 1e-12,
    padTokenId: 0, initializerRange: 0.3,
  };
  const ROWS = (() => {
    const inputIds: number[][] = [];
    const attentionMask: number[][] = [];
    [12, 9, 16, 5].forEach((len, s) => {
      const row = Array.from({ length: 16 }, (_, t) => (t === 0 ? 2 : t < len ? 3 + ((s * 17 + t * 7) % 55) : 0));
      inputIds.push(row, [...row]);
      const mask = row.map((_, t) => (t < len ? 1 : 0));
      attentionMask.push(mask, [...mask]);
    });
    return { inputIds, attentionMask };
  })();
  const OBJ = { ...OBJECTIVE, minLayer: 2, maxLayer: 4, targetSamples: 40 };

  /** A fresh model, head and optimizer with a TrainStep of `precision`; `weights()` reads every parameter's bits. */
  function setup(precision?: StepPrecision) {
    const model = BertModel.random(CONFIG, 7);
    const head = new MlpHead(CONFIG.hiddenSize, { seed: 3 });
    const optimizer = new AdamW(trainableParams(model, head), { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 });
    const step = new TrainStep(model, head, optimizer, OBJ, precision);
    const weights = async () => Promise.all(optimizer.params.map(async (p) => new Uint32Array(((await p.variable.data()) as Float32Array).slice().buffer)));
    const run = (i: number) => step.run(ROWS, { lr: 1e-3, maxGradNorm: 1, dropoutSeed: 11 + i, amiSeed: 50 + i });
    const dispose = () => { optimizer.dispose(); head.dispose(); model.dispose(); };
    return { optimizer, weights, run, dispose };
  }

  for (const backend of ['cpu', 'wasm'] as const) {
    test(`${backend}: loss scaling with float32 products trains fp32's weights bit for bit; an overflow step is skipped and the scale halves, then grows back`, async () => {
      await selectBackend(backend);
      const fp32 = setup();
      const scaler = new LossScaler(2, 2 ** 12);
      const scaled = setup({ f16Products: false, scaler });
      const tensors: number[] = [];
      for (let i = 0; i < 3; i++) {
        const [a, b] = [await fp32.run(i), await scaled.run(i)];
        tensors.push(tf.memory().numTensors);
        assert.equal(b.overflow, false);
        assert.equal(b.loss, a.loss, 'the reported loss is the unscaled one');
        assert.equal(b.gradNorm, a.gradNorm, 'the unscaled gradients');
      }
      assert.deepEqual(await scaled.weights(), await fp32.weights(), 'same weights after 3 steps');
      assert.ok(tensors.every((n) => n === tensors[0]), `tensor counts ${tensors.join(', ')}: every tensor a step makes is freed`);
      assert.equal(scaler.scale, 2 ** 13, 'grown once after 2 good steps (the third is 1 of the next 2)');

      // Scaled to the top of float32's range: the backward pass (InfoNCE's 1 / temperature = 20 first) overflows it,
      // the update is gated off.
      scaler.scale = 2 ** 127;
      scaler.goodSteps = 0;
      const before = await scaled.weights();
      const out = await scaled.run(3);
      assert.equal(out.finite, true);
      assert.equal(out.overflow, true);
      assert.ok(Number.isNaN(out.gradNorm));
      assert.equal(out.lossScale, 2 ** 127);
      assert.equal(scaler.scale, 2 ** 126, 'halved');
      assert.equal(scaled.optimizer.step, 3, 'the skipped step does not count');
      assert.deepEqual(await scaled.weights(), before, 'nothing changed');
      // From a usable scale it grows back: two good steps, one doubling.
      scaler.scale = 2 ** 8;
      const grown = [await scaled.run(4), await scaled.run(5)].map((o) => [o.overflow, o.lossScale]);
      assert.deepEqual(grown, [[false, 2 ** 8], [false, 2 ** 8]]);
      assert.equal(scaler.scale, 2 ** 9);
      fp32.dispose();
      scaled.dispose();
    });
  }

  test('float16 product inputs: a step trains, its loss within float16 rounding of fp32\'s', async () => {
    await selectBackend('cpu');
    const fp32 = setup();
    const mixed = setup({ f16Products: true, scaler: new LossScaler(2000, 2 ** 16) });
    const [a, b] = [await fp32.run(0), await mixed.run(0)];
    assert.notEqual(b.loss, a.loss, 'the rounding changes the numbers');
    assert.ok(Math.abs(b.loss - a.loss) < 1e-2 * Math.abs(a.loss), `${b.loss} vs ${a.loss}`);
    fp32.dispose();
    mixed.dispose();
  });

  test('config: precision fp32 or mixed, the loss scale a power of two; mixed refused where no rounding kernel is registered', async () => {
    const c = mergeConfig(defaultConfig(), { train: { precision: 'mixed', lossScale: 1024 } }, 'x.yaml');
    assert.equal(c.train.precision, 'mixed');
    assert.equal(defaultConfig().train.precision, 'fp32');
    assert.throws(() => mergeConfig(defaultConfig(), { train: { precision: 'fp16' } }, 'x.yaml'), /x.yaml: train.precision must be one of fp32, mixed, got 'fp16'/);
    assert.throws(() => checkConsistency(mergeConfig(defaultConfig(), { train: { lossScale: 1000 } }, 'x.yaml'), 'x.yaml'),
      /^UserError: x.yaml: train.lossScale must be a power of two .*got 1000$/);
    // A backend with none of this project's kernels (registered under another name).
    const { MathBackendCPU } = await import('@tensorflow/tfjs-backend-cpu');
    tf.registerBackend('plain-cpu', () => new MathBackendCPU(), -1);
    await tf.setBackend('plain-cpu');
    try {
      assert.throws(() => stepPrecision(c), /^UserError: x\.yaml \(train\.precision: "mixed"\): train\.precision is mixed, but backend plain-cpu has no float16 rounding kernel/);
      assert.equal(stepPrecision(defaultConfig()).scaler, null);
    } finally {
      await tf.setBackend('cpu');
      tf.removeBackend('plain-cpu');
    }
  });
});

describe('train.precision mixed in the trainer', { skip: SKIP_NO_SHARED }, () => {
  test('the loss scale is logged, checkpointed, and a resumed run continues it: its metrics equal the uninterrupted run\'s', async () => {
    const config = (output: string) => microConfig(output, { train: { maxSteps: 8, evalSteps: 4, precision: 'mixed', lossScaleGrowthInterval: 3 } });
    const read = async (run: string) => (await fs.readFile(path.join(run, 'metrics.jsonl'), 'utf8')).trim().split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>).map(({ sentencesPerSecond: _, ...rest }) => rest);
    const full = path.join(TMP, 'full');
    await train(config(full), { quiet: true, log: () => undefined });
    const lines = await read(full);
    const scales = lines.filter((l) => l['loss'] !== undefined).map((l) => [l['lossScale'], l['overflow'] ?? false]);
    // Doubling after every 3 steps without an overflow (none at this size): steps 1-3 at 2^16, 4-6 at 2^17, 7-8 at 2^18.
    assert.deepEqual(scales, [1, 2, 3, 4, 5, 6, 7, 8].map((s) => [2 ** (16 + Math.floor((s - 1) / 3)), false]));
    const state = JSON.parse(await fs.readFile(path.join(full, 'last', 'trainer_state.json'), 'utf8')) as { lossScale?: unknown };
    assert.deepEqual(state.lossScale, { scale: 2 ** 18, goodSteps: 2 });
    const resumed = path.join(TMP, 'resumed');
    await train(config(resumed), { quiet: true, log: () => undefined, stopAfter: 4 });
    await train(config(resumed), { resume: true, quiet: true, log: () => undefined });
    assert.deepEqual(await read(resumed), lines);
  });
});
