/**
 * Device-resident randomness and the WebGPU training step.
 *
 * kernels/dropout: `seededUniform` and `seededDropout` give the same bits on every backend (cpu, wasm and, where a
 * WebGPU adapter exists, webgpu) as the host formula `uniformArray`; dropout's gradient is dropout of dy with the
 * same mask; the stream is uniform and seeds are independent.
 * WebGPU (skipped with the reason when `selectBackend('webgpu')` fails, e.g. no Vulkan driver, as on CI): one
 * seeded training-mode miCSE loss (dropout on, AMI in its sampling regime) and every gradient agree with the cpu
 * backend within 1e-4, two full TrainSteps (AdamW updating in place) leave parameters and moments within 1e-4 of
 * the cpu backend's without a WebGPU validation error, and TrainSteps read the GPU once a step (asynchronously)
 * and keep the tensor count flat; a step with a non-finite loss changes no parameter (the gate is read on the GPU).
 * A training run stopped after a checkpoint and resumed ends with the uninterrupted run's weights, moments and
 * metrics to the bit. Random-init models throughout; only that resume test reads ../shared (the tokenizer,
 * wiki1m-head.txt and STS-B dev, skipped without it; bench/device/pack.sh carries those parts to a GPU machine).
 */
import assert from 'node:assert/strict';
import { existsSync, promises as fs, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { MlpHead } from '../src/losses/mlpHead.js';
import { micseLoss } from '../src/losses/micse.js';
import { DAWN_OPTIONS_ENV, describeSelection, selectBackend } from '../src/model/backend.js';
import { BertModel } from '../src/model/bert.js';
import type { BertConfig } from '../src/model/config.js';
import { SEEDED_DROPOUT, seededDropout, seededUniform, uniformArray } from '../src/kernels/dropout/index.js';
import { tf } from '../src/model/tf.js';
import {
  assertExactResume, countInPlace, expectNoGpuErrors, maxAbsDiff, microConfig, OBJECTIVE, ROOT, nullDeviceSkipReason, seededValues, shared, SKIP_NO_SHARED, softwareWebgpuAdapter, srcImport,
  STEP_IMPORTS, STEP_SETUP, testTempDir, webgpuSkipReason, withWebgpuPrograms,
} from './helpers.js';
import { AdamW } from '../src/train/adamw.js';
import { Rng } from '../src/data/rng.js';
import { TrainStep, trainableParams } from '../src/train/step.js';
import { paramsPerDispatch } from '../src/kernels/adamw/webgpu.js';

const TOL = 1e-4;

const WEBGPU_SKIP = await webgpuSkipReason();
const NULL_DEVICE_SKIP = await nullDeviceSkipReason();
const BACKENDS = ['cpu', 'wasm', ...(WEBGPU_SKIP === false ? ['webgpu' as const] : [])] as const;

async function read(t: tf.Tensor): Promise<Float32Array> {
  const v = Float32Array.from((await t.data()) as Float32Array);
  t.dispose();
  return v;
}

describe('counter-based random numbers (kernels/dropout)', () => {
  test('uniform stream: mean, variance, 16-bin chi-square and independence of neighbouring seeds', () => {
    const n = 1 << 20;
    const u = uniformArray(n, 5);
    const bins = new Array<number>(16).fill(0);
    let sum = 0;
    let sq = 0;
    for (const x of u) {
      assert.ok(x >= 0 && x < 1);
      bins[Math.floor(x * 16)]! += 1;
      sum += x;
      sq += x * x;
    }
    const mean = sum / n;
    assert.ok(Math.abs(mean - 0.5) < 2e-3, `mean ${mean}`);
    assert.ok(Math.abs(sq / n - mean * mean - 1 / 12) < 2e-3, 'variance 1/12');
    const e = n / 16;
    const chi2 = bins.reduce((s, b) => s + (b - e) ** 2 / e, 0);
    assert.ok(chi2 < 37.7, `chi-square ${chi2} over 15 degrees of freedom (p = 0.001 bound 37.7)`);
    for (const [s1, s2] of [[5, 6], [0, 1], [5, 5 ^ 1 << 30]]) {
      const a = uniformArray(n, s1!);
      const b = uniformArray(n, s2!);
      let c = 0;
      for (let i = 0; i < n; i++) c += (a[i]! - 0.5) * (b[i]! - 0.5);
      const corr = (c / n) * 12;
      assert.ok(Math.abs(corr) < 5e-3, `seeds ${s1} and ${s2}: correlation ${corr}`);
    }
  });

  for (const backend of BACKENDS) {
    test(`${backend}: seededUniform and seededDropout give the host formula's exact bits; the gradient is dropout of dy`, async () => {
      await selectBackend(backend);
      const shape = [3, 7, 129];
      const n = 3 * 7 * 129;
      assert.deepEqual(await read(seededUniform(shape, 42)), uniformArray(n, 42));
      const xs = Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 3);
      const x = tf.tensor(xs, shape);
      const rate = 0.1;
      const u = uniformArray(n, 9);
      const scale = Math.fround(1 / (1 - rate));
      const expected = Float32Array.from(xs, (v, i) => (u[i]! >= Math.fround(rate) ? Math.fround(v * scale) : 0));
      assert.deepEqual(await read(seededDropout(x, rate, 9)), expected);
      const dy = tf.tensor(Float32Array.from({ length: n }, (_, i) => Math.cos(i)), shape);
      const g = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(seededDropout(a, rate, 9), dy)))(x);
      const dys = await dy.data();
      const expectedGrad = Float32Array.from(dys, (v, i) => (u[i]! >= Math.fround(rate) ? Math.fround(v * scale) : 0));
      assert.ok(maxAbsDiff(await read(g), expectedGrad) < 1e-6);
      const dropped = expected.filter((v, i) => v === 0 && xs[i] !== 0).length / n;
      assert.ok(Math.abs(dropped - rate) < 0.02, `dropped fraction ${dropped}`);
      tf.dispose([x, dy]);
      await selectBackend('cpu');
    });
  }

  test('without a dropout kernel (the composed fallback) output and gradient are the kernel\'s bits, non-finite inputs included', async () => {
    await selectBackend('cpu');
    const xs = Float32Array.from({ length: 4099 }, (_, i) => [NaN, Infinity, -Infinity, 0, -0, 1.5][i % 6]! * (i % 5 === 0 ? 1 : 3));
    const x = tf.tensor(xs, [4099]);
    const dy = tf.tensor(Float32Array.from(xs).reverse(), [4099]);
    const run = async (): Promise<Float32Array[]> => {
      const g = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(seededDropout(a, 0.25, 3), dy)))(x);
      return [await read(seededDropout(x, 0.25, 3)), await read(seededDropout(dy, 0.25, 3)), await read(g)];
    };
    const [y, dyDropped, grad] = await run();
    const kernel = tf.getKernel(SEEDED_DROPOUT, 'cpu')!;
    tf.unregisterKernel(SEEDED_DROPOUT, 'cpu');
    try {
      const [yFallback, dyFallback, gradFallback] = await run();
      assert.deepEqual(yFallback, y);
      assert.deepEqual(dyFallback, dyDropped);
      assert.deepEqual(gradFallback, grad);
      assert.ok(y.some((v, i) => v === 0 && !Number.isFinite(xs[i]!)), 'some non-finite input was dropped');
    } finally {
      tf.registerKernel(kernel);
      tf.dispose([x, dy]);
    }
  });

  // The host backends' SIMD loop (hostSimd.ts) goes over 4 elements at a time and, on cpu, in staging chunks of
  // 2^18: 2^18 + 5 elements cross a chunk boundary and leave a scalar tail.
  for (const backend of ['cpu', 'wasm'] as const) {
    test(`${backend}: seededDropout over 2^18 + 5 elements keeps the host formula's exact bits`, async () => {
      await selectBackend(backend);
      const n = 2 ** 18 + 5;
      const xs = Float32Array.from({ length: n }, (_, i) => (i % 7) - 3.25);
      const rate = 0.3;
      const u = uniformArray(n, 77);
      const scale = Math.fround(1 / (1 - rate));
      const expected = Float32Array.from(xs, (v, i) => (u[i]! >= Math.fround(rate) ? Math.fround(v * scale) : 0));
      const x = tf.tensor(xs);
      assert.deepEqual(await read(seededDropout(x, rate, 77)), expected);
      x.dispose();
      await selectBackend('cpu');
    });
  }
});

const CONFIG: BertConfig = {
  vocabSize: 60,
  hiddenSize: 32,
  numHiddenLayers: 4,
  numAttentionHeads: 2,
  intermediateSize: 64,
  hiddenAct: 'gelu',
  hiddenDropoutProb: 0.1,
  attentionProbsDropoutProb: 0.1,
  maxPositionEmbeddings: 32,
  typeVocabSize: 2,
  layerNormEps: 1e-12,
  padTokenId: 0,
  initializerRange: 0.3,
};

/** 4 sentences of lengths 12, 9, 16, 5 padded to 16, each twice (interleaved views). */
function rows(): { inputIds: number[][]; attentionMask: number[][] } {
  const lengths = [12, 9, 16, 5];
  const inputIds: number[][] = [];
  const attentionMask: number[][] = [];
  lengths.forEach((len, s) => {
    const row = Array.from({ length: 16 }, (_, t) => (t === 0 ? 2 : t < len ? 3 + ((s * 17 + t * 7) % 55) : 0));
    inputIds.push(row, [...row]);
    const mask = row.map((_, t) => (t < len ? 1 : 0));
    attentionMask.push(mask, [...mask]);
  });
  return { inputIds, attentionMask };
}

describe('WebGPU training step', { skip: WEBGPU_SKIP }, () => {
  let model: BertModel;
  let head: MlpHead;
  let vars: tf.Variable[];
  const objective = { ...OBJECTIVE, minLayer: 2, maxLayer: 4, targetSamples: 40, training: true };

  before(async () => {
    await selectBackend('cpu');
    model = BertModel.random(CONFIG, 7);
    head = new MlpHead(CONFIG.hiddenSize, { seed: 3 });
    vars = [...model.trainableVariables(), head.weight, head.bias];
  });
  after(() => {
    head.dispose();
    model.dispose();
  });

  async function lossAndGrads(): Promise<{ loss: number; grads: Float32Array[] }> {
    const r = rows();
    const { value, grads } = tf.variableGrads(() => {
      const batch = { inputIds: tf.tensor2d(r.inputIds, undefined, 'int32'), attentionMask: tf.tensor2d(r.attentionMask, undefined, 'int32') };
      return micseLoss(model, batch, { ...objective, head, dropoutSeed: 11, seed: 12 }).loss;
    }, vars);
    const loss = (await value.data())[0]!;
    const out = await Promise.all(vars.map((v) => read(grads[v.name]!)));
    value.dispose();
    return { loss, grads: out };
  }

  test('the backend line names the adapter, and says when it is a software one', async () => {
    const line = describeSelection(await selectBackend('webgpu'));
    assert.match(line, /\n  adapter: \S/);
    assert.equal(line.includes('(a software adapter: WebGPU on the CPU)'), (await softwareWebgpuAdapter()) !== null, line);
    await selectBackend('cpu');
  });

  test('UnsortedSegmentSum (the embedding gradient, kernels/stock on webgpu): the cpu sums to the bit, repeated ids summed in row order, ids out of range dropped', async () => {
    const rng = Rng.fromSeed(11);
    // The rows of a tiny batch, and 600 rows over 9 ids (chains of ~65 rows: [CLS], [SEP] and padding in a batch).
    const cases = [
      { ids: [0, 2, 2, 1, 0, 3, 3, 0, 1, -1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 9], inner: 6, segments: 4 },
      { ids: Array.from({ length: 600 }, () => Math.floor(rng.nextFloat() * 9) - 1), inner: 7, segments: 8 },
    ];
    for (const { ids, inner, segments } of cases) {
      const values = seededValues(ids.length * inner, 5).map((v, i) => v * 10 ** ((i % 5) - 2)); // magnitudes 0.01 .. 100: the order shows
      const run = async (backend: 'cpu' | 'webgpu') => {
        await selectBackend(backend);
        const out = tf.tidy(() => tf.unsortedSegmentSum(tf.tensor2d(values, [ids.length, inner]), tf.tensor1d(ids, 'int32'), segments));
        const r = { shape: out.shape, data: await out.data() };
        out.dispose();
        return r;
      };
      const want = await run('cpu');
      const got = await run('webgpu');
      const again = await run('webgpu');
      await selectBackend('cpu');
      assert.deepEqual(got.shape, [segments, inner]);
      assert.deepEqual(got.data, want.data, `${ids.length} rows: webgpu and cpu differ by up to ${maxAbsDiff(got.data, want.data)}`);
      assert.deepEqual(again.data, got.data);
    }
  });

  test('UnsortedSegmentSum sorts the rows by id (radix passes, 2 + 3 a pass dispatches): the cpu sums to the bit over heavy repeats, ' +
    'distinct ids, edge ids and odd row counts', async () => {
    const rng = Rng.fromSeed(12);
    const word = (vocab: number) => rng.nextInt(vocab);
    /** `n` ids: the lists `next` gives, one after another, cut at n. */
    const cycle = (n: number, next: () => number[]) => {
      const ids: number[] = [];
      while (ids.length < n) ids.push(...next());
      return ids.slice(0, n);
    };
    /** `sentences` of `length` tokens: [CLS] (101) first, words, [SEP] (102), then [PAD] (0) to the end. */
    const batchIds = (sentences: number, length: number, vocab: number) => cycle(sentences * length, () => {
      const words = 1 + rng.nextInt(length / 4);
      return Array.from({ length }, (_, t) => (t === 0 ? 101 : t <= words ? 1000 + word(vocab - 1000) : t === words + 1 ? 102 : 0));
    });
    const cases = [
      // [PAD] thousands of times, [CLS] every 32 rows, BERT's vocabulary (2 passes of 8 bits)
      { name: 'batch-like', ids: batchIds(160, 32, 30522), inner: 5, segments: 30522 },
      { name: 'all ids distinct', ids: rng.permutation(3001), inner: 3, segments: 3001 },
      { name: 'a single id', ids: new Array<number>(1000).fill(7), inner: 4, segments: 8 },
      // keys 0..256 take 9 bits: 2 passes of 5; 255 ids: 1 pass of 8; 250,002 ids: 3 passes of 6
      { name: 'ids at 0 and numSegments-1 (256)', ids: cycle(700, () => [0, 255, word(256), -1, 256, 2 ** 31 - 1]), inner: 3, segments: 256 },
      { name: 'ids at 0 and numSegments-1 (255)', ids: cycle(700, () => [0, 254, word(255), -5, 255]), inner: 3, segments: 255 },
      { name: 'ids at 0 and numSegments-1 (250,002)', ids: cycle(900, () => [0, 250001, word(250002), 250002]), inner: 2, segments: 250002 },
      // rows not a multiple of the workgroup (64) or of a radix block
      ...[1, 63, 255, 257, 513].map((rows) => ({ name: `${rows} rows`, ids: cycle(rows, () => [word(40)]), inner: 3, segments: 40 })),
      { name: 'larger', ids: batchIds(512, 32, 30522), inner: 8, segments: 30522 },
    ];
    for (const { name, ids, inner, segments } of cases) {
      const values = seededValues(ids.length * inner, 9).map((v, i) => v * 10 ** ((i % 7) - 3)); // magnitudes 0.001 .. 1000: the order shows
      const run = async (backend: 'cpu' | 'webgpu') => {
        await selectBackend(backend);
        const dataIds = tf.backend().numDataIds(); // the kernel's own buffers (counts, pairs) included
        const sum = () => tf.tidy(() => tf.unsortedSegmentSum(tf.tensor2d(values, [ids.length, inner]), tf.tensor1d(ids, 'int32'), segments));
        const { result: out, programs } = backend === 'webgpu' ? await withWebgpuPrograms(sum) : { result: sum(), programs: [] };
        const r = { shape: out.shape, data: await out.data(), programs: programs.length };
        out.dispose();
        assert.equal(tf.backend().numDataIds(), dataIds, `${name}: ${backend} data left behind`);
        return r;
      };
      const want = await run('cpu');
      const got = await run('webgpu');
      await selectBackend('cpu');
      assert.deepEqual(got.shape, [segments, inner]);
      assert.deepEqual(got.data, want.data, `${name} (${ids.length} rows): webgpu and cpu differ by up to ${maxAbsDiff(got.data, want.data)}`);
      const bits = 32 - Math.clz32(segments);
      assert.equal(got.programs, 2 + 3 * Math.ceil(bits / 8), `${name}: dispatches`);
    }
    assert.equal(cases.at(-1)!.ids.length, 16384);
  });

  test('loss (dropout on, AMI sampling regime) and every gradient: webgpu vs cpu within 1e-4', async () => {
    await selectBackend('cpu');
    const reference = await lossAndGrads();
    assert.ok(Number.isFinite(reference.loss));
    await selectBackend('webgpu');
    const got = await lossAndGrads();
    await selectBackend('cpu');
    assert.ok(Math.abs(got.loss - reference.loss) < TOL, `loss ${got.loss} vs ${reference.loss}`);
    got.grads.forEach((g, i) => {
      const d = maxAbsDiff(g, reference.grads[i]!);
      assert.ok(d < TOL, `gradient of ${vars[i]!.name} differs by ${d}`);
    });
  });

  test('two TrainSteps (AdamW in place on webgpu): parameters and both moments within 1e-4 of cpu, no WebGPU error', async () => {
    const STEPS = 2;
    const LR = 1e-5; // Adam's first steps move each weight by ~lr * sign(g): keeps sign flips of ~0 gradients below TOL
    async function train(backend: 'cpu' | 'webgpu'): Promise<Float32Array[]> {
      await selectBackend(backend);
      const m = BertModel.random(CONFIG, 7);
      const h = new MlpHead(CONFIG.hiddenSize, { seed: 3 });
      const optimizer = new AdamW(trainableParams(m, h), { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 });
      const step = new TrainStep(m, h, optimizer, objective);
      for (let i = 0; i < STEPS; i++) await step.run(rows(), { lr: LR, maxGradNorm: 1, dropoutSeed: i, amiSeed: 100 + i });
      const state = [...optimizer.params.map((p) => p.variable), ...optimizer.m.values(), ...optimizer.v.values()];
      const out = await Promise.all(state.map(async (x) => Float32Array.from((await x.data()) as Float32Array)));
      optimizer.dispose();
      h.dispose();
      m.dispose();
      return out;
    }
    const reference = await train('cpu');
    await selectBackend('webgpu');
    const perDispatch = paramsPerDispatch((tf.backend() as unknown as { device: GPUDevice }).device);
    const { result: got, updates, dispatches } = await countInPlace(() => expectNoGpuErrors(async () => train('webgpu')));
    await selectBackend('cpu');
    const params = reference.length / 3;
    assert.equal(updates, STEPS * params, 'every parameter updated in place, once a step');
    assert.equal(dispatches, STEPS * Math.ceil(params / perDispatch), `${perDispatch} parameters a dispatch`);
    got.forEach((x, i) => {
      const d = maxAbsDiff(x, reference[i]!);
      assert.ok(d < TOL, `${['parameter', 'm', 'v'][Math.floor(i / params)]} ${i % params} differs by ${d}`);
    });
  });

  test('TrainStep with AdamW: one asynchronous read a step (loss, parts and gradient norm together, after the update), none synchronous, finite, no tensor growth over 3 steps', async () => {
    await selectBackend('webgpu');
    const optimizer = new AdamW(trainableParams(model, head), { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 });
    const step = new TrainStep(model, head, optimizer, objective);
    // Count the backend's reads (methods live on the prototype: wrap on the instance, delete to restore).
    const backend = tf.backend() as unknown as Record<'read' | 'readSync', (...args: unknown[]) => unknown>;
    const reads = { read: 0, readSync: 0 };
    for (const name of ['read', 'readSync'] as const) {
      const original = backend[name];
      backend[name] = function (this: unknown, ...args: unknown[]) {
        reads[name] += 1;
        return original.apply(this, args);
      };
    }
    const counts: number[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const out = await step.run(rows(), { lr: 1e-4, maxGradNorm: 1, dropoutSeed: i, amiSeed: 100 + i });
        assert.ok(out.finite && Number.isFinite(out.gradNorm), `step ${i}: ${JSON.stringify(out)}`);
        counts.push(tf.memory().numTensors);
      }
    } finally {
      for (const name of ['read', 'readSync'] as const) delete (backend as Partial<typeof backend>)[name];
    }
    optimizer.dispose();
    await selectBackend('cpu');
    assert.deepEqual(reads, { read: 3, readSync: 0 }, 'host reads over 3 steps');
    assert.ok(counts.every((c) => c === counts[0]), `tensor counts ${counts.join(', ')}`);
  });

  test('a TrainStep with a non-finite loss updates nothing in place (the gate is read on the GPU) and reverts the step count', async () => {
    await selectBackend('webgpu');
    const m = BertModel.random(CONFIG, 7);
    const h = new MlpHead(CONFIG.hiddenSize, { seed: 3 });
    const optimizer = new AdamW(trainableParams(m, h), { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 });
    const snapshot = async (): Promise<Float32Array[]> => Promise.all([...optimizer.params.map((p) => p.variable), ...optimizer.m.values(), ...optimizer.v.values()]
      .map(async (x) => Float32Array.from((await x.data()) as Float32Array)));
    // One finite step first, so the moments are not zeros.
    await new TrainStep(m, h, optimizer, objective).run(rows(), { lr: 1e-4, maxGradNorm: 1, dropoutSeed: 1, amiSeed: 101 });
    const before = await snapshot();
    // A temperature this small turns every logit into +-Infinity: the loss is NaN.
    const { result: out, updates } = await countInPlace(() => expectNoGpuErrors(async () => new TrainStep(m, h, optimizer, { ...objective, temperature: 1e-45 })
      .run(rows(), { lr: 1e-4, maxGradNorm: 1, dropoutSeed: 2, amiSeed: 102 })));
    const after = await snapshot();
    assert.ok(updates > 0, 'the update ran in place (and was gated off on the GPU)');
    optimizer.dispose();
    h.dispose();
    m.dispose();
    await selectBackend('cpu');
    assert.equal(out.finite, false);
    assert.ok(Number.isNaN(out.gradNorm));
    assert.equal(optimizer.step, 1, 'the skipped step does not count');
    after.forEach((x, i) => assert.deepEqual(x, before[i], `tensor ${i} changed`));
  });
});

/** A child script's line importing `names` from src/`rel` (the .ts source, run under tsx). */

/**
 * Dawn's null device (`MICSE_DAWN_OPTIONS=backend=null`) accepts every call and runs nothing, on any machine the
 * `webgpu` package loads on (CI has no Vulkan driver, so the tests above skip there). A TrainStep on it still
 * creates every shader module and pipeline of the step, so Dawn validates the WGSL and bind-group layouts of all of
 * this project's webgpu kernels, and the step's host path (in-place AdamW, one read) runs. Values are garbage.
 * In a child process: `navigator.gpu` is created once per process.
 */
const NULL_STEP_SCRIPT = `
${STEP_IMPORTS}
${srcImport('observeRawDispatches', 'kernels/platform/webgpuPrograms.ts')}
${srcImport('bindGroupCacheOf', 'kernels/platform/bindGroupCache.ts')}
let inPlace = 0;
observeRawDispatches((key) => { if (key.startsWith('micseAdamWInPlace/')) inPlace += Number(key.split('/')[1]); });
const { config, rows, objective } = JSON.parse(process.argv[1]);
const sel = await selectBackend('webgpu');
const device = tf.backend().device;
const model = BertModel.random(config, 7);
const head = new MlpHead(config.hiddenSize, { seed: 3 });
const optimizer = new AdamW(trainableParams(model, head), { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 });
const step = new TrainStep(model, head, optimizer, objective);
const backend = tf.backend();
let reads = 0;
const original = backend.read;
backend.read = function (...args) { reads += 1; return original.apply(this, args); };
device.pushErrorScope('validation');
const counts = [];
const bindGroupsMade = [];
for (let i = 0; i < 3; i++) {
  await step.run(rows, { lr: 1e-4 * (i + 1), maxGradNorm: 1, dropoutSeed: i, amiSeed: 100 + i });
  counts.push(tf.memory().numTensors);
  bindGroupsMade.push(bindGroupCacheOf(backend).stats.misses);
}
const error = await device.popErrorScope();
console.log(JSON.stringify({ backend: sel.name, error: error === null ? null : error.message, reads, inPlace,
  params: optimizer.params.length, counts, bindGroupsMade }));
`;

describe('WebGPU training resumed', { skip: WEBGPU_SKIP || SKIP_NO_SHARED }, () => {
  test('a run stopped after a checkpoint and resumed ends with bitwise the weights, moments and metrics of the uninterrupted run', async () => {
    const dir = testTempDir('webgpu-resume');
    // STS-B dev cut to its first 32 pairs: a software adapter embeds the whole of it in minutes.
    const devFile = path.join('STS', 'STSBenchmark', 'sts-dev.csv');
    const senteval = path.join(dir, 'senteval');
    await fs.mkdir(path.dirname(path.join(senteval, devFile)), { recursive: true });
    const dev = (await fs.readFile(shared('senteval', devFile), 'utf8')).split('\n').slice(0, 32);
    await fs.writeFile(path.join(senteval, devFile), dev.join('\n') + '\n');
    try {
      // 6 steps, evaluated and checkpointed at 3 (where the resumed run stops) and 6.
      await assertExactResume((output) => microConfig(output, { data: { senteval }, train: { backend: 'webgpu', maxSteps: 6, evalSteps: 3 } }), dir, 3);
    } finally {
      await selectBackend('cpu');
    }
  });
});

describe("WebGPU on Dawn's null device (every machine with the webgpu package, CI included)", { skip: NULL_DEVICE_SKIP }, () => {
  test('a TrainStep creates every pipeline without a validation error, reads once a step, updates in place, keeps the tensor count flat, reuses its bind groups', () => {
    const objective = { ...OBJECTIVE, minLayer: 2, maxLayer: 4, targetSamples: 40, training: true };
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', NULL_STEP_SCRIPT,
      JSON.stringify({ config: CONFIG, rows: rows(), objective })], { cwd: ROOT, env: { ...process.env, [DAWN_OPTIONS_ENV]: 'backend=null' }, encoding: 'utf8' });
    const r = JSON.parse(out.trim().split('\n').at(-1)!) as { backend: string; error: string | null; reads: number; inPlace: number; params: number;
      counts: number[]; bindGroupsMade: number[] };
    assert.equal(r.backend, 'webgpu');
    assert.equal(r.error, null, 'WebGPU validation error');
    assert.equal(r.reads, 3, 'one read a step');
    assert.equal(r.inPlace, 3 * r.params, 'every parameter updated in place, once a step');
    assert.ok(r.counts.every((c) => c === r.counts[0]), `tensor counts ${r.counts.join(', ')}`);
    // bindGroupCache.ts: once the step repeats (other seeds and learning rate, so other uniforms), no bind group is made.
    assert.ok(r.bindGroupsMade[0]! > 0);
    assert.equal(r.bindGroupsMade[2], r.bindGroupsMade[1], `bind groups made after each step: ${r.bindGroupsMade.join(', ')}`);
  });

  test('train.precision mixed: a TrainStep with float16 product inputs and loss scaling passes validation', () => {
    const script = `
      ${STEP_IMPORTS}
      ${srcImport('LossScaler', 'train/lossScale.ts')}
      ${STEP_SETUP}
      const step = new TrainStep(model, head, optimizer, objective, { f16Products: true, scaler: new LossScaler(2000, 65536) });
      device.pushErrorScope('validation');
      for (let i = 0; i < 2; i++) await step.run(rows, { lr: 1e-4, maxGradNorm: 1, dropoutSeed: i, amiSeed: 100 + i });
      const error = await device.popErrorScope();
      console.log(JSON.stringify({ error: error === null ? null : error.message }));`;
    const objective = { ...OBJECTIVE, minLayer: 2, maxLayer: 4, targetSamples: 40, training: true };
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script,
      JSON.stringify({ config: CONFIG, rows: rows(), objective })], { cwd: ROOT, env: { ...process.env, [DAWN_OPTIONS_ENV]: 'backend=null' }, encoding: 'utf8' });
    const r = JSON.parse(out.trim().split('\n').at(-1)!) as { error: string | null };
    assert.equal(r.error, null, 'WebGPU validation error');
  });

  test('training steps past the device\'s memory: the step during which it ran out throws a UserError saying so and what to lower, without Dawn\'s error lines', () => {
    // One layer with 8192-wide feed-forward activations, 512 rows of 8, 9, 10, ... tokens: a step's activations grow
    // by ~16 MB a token, so the null device's memory runs out before 64 tokens; its reads still resolve (with
    // arbitrary values), so only the device's report tells the step that ran out from the ones before.
    const config = { ...CONFIG, hiddenSize: 64, numHiddenLayers: 1, intermediateSize: 8192, maxPositionEmbeddings: 64 };
    const script = `
      ${STEP_IMPORTS}
      ${srcImport('UserError', 'errors.ts')}
      ${STEP_SETUP}
      const step = new TrainStep(model, head, optimizer, objective);
      const ok = [];
      let error = null;
      for (let T = 8; T <= 64 && error === null; T++) {
        const rows = { inputIds: Array.from({ length: 512 }, () => Array.from({ length: T }, (_, t) => 3 + (t % 50))), attentionMask: Array.from({ length: 512 }, () => Array(T).fill(1)) };
        try { await step.run(rows, { lr: 1e-4, maxGradNorm: 1, dropoutSeed: T, amiSeed: 2 }); ok.push(T); } catch (err) { error = { T, user: err instanceof UserError, message: err.message }; }
      }
      console.log(JSON.stringify({ ok, error }));`;
    const objective = { ...OBJECTIVE, targetSamples: 40, training: true, style: 'simcse' };
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, JSON.stringify({ config, rows: null, objective })],
      { cwd: ROOT, env: { ...process.env, [DAWN_OPTIONS_ENV]: 'backend=null' }, encoding: 'utf8' });
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { ok: number[]; error: { T: number; user: boolean; message: string } | null };
    assert.ok(out.error !== null && out.ok.length > 0, r.stdout);
    assert.deepEqual(out.ok, Array.from({ length: out.error.T - 8 }, (_, k) => 8 + k));
    assert.deepEqual(out.error, {
      T: out.error.T,
      user: true,
      message: `the webgpu device ran out of memory in a training step of 512 rows x ${out.error.T} tokens (Out of memory.): lower train.batchSize or ` +
        'data.maxSeqLen, or choose another backend (--backend)',
    });
    assert.doesNotMatch(r.stderr, /Out of memory|While calling|Invalid/, r.stderr);
  });

  test('micse train whose evaluation runs out of the device\'s memory: exit 2 and one line saying what to lower', { skip: SKIP_NO_SHARED }, () => {
    // configs/tiny.yaml at 64 tokens and 2048 sentences an evaluation batch: STS-B dev's embedding at step 0 needs
    // more than the null device's 512 MiB.
    const out = testTempDir('webgpu-oom');
    const r = spawnSync(process.execPath, ['bin/micse.js', 'train', '--config', 'configs/tiny.yaml', '--set', 'train.backend=webgpu',
      '--set', 'data.maxSeqLen=64', '--set', 'train.evalBatchSize=2048', '--set', `train.output=${path.join(out, 'run')}`],
    { cwd: ROOT, env: { ...process.env, [DAWN_OPTIONS_ENV]: 'backend=null' }, encoding: 'utf8' });
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stderr.trim().split('\n').at(-1), 'micse: the webgpu device ran out of memory in the STS-B dev evaluation ' +
      '(train.evalBatchSize 2048 sentences a batch) (Out of memory.): lower train.evalBatchSize, or choose another backend (--backend)');
    assert.doesNotMatch(r.stderr, /While calling|internal error/, r.stderr);
  });

  test('micse embed with a batch whose tensors pass the device\'s buffer limits: exit 2 and one line naming the limit, no Dawn output', { skip: SKIP_NO_SHARED }, () => {
    const dir = testTempDir('webgpu-limit');
    const input = path.join(dir, 'in.txt');
    writeFileSync(input, readFileSync(shared('wiki1m-head.txt'), 'utf8').split('\n').slice(0, 4000).join('\n') + '\n');
    const r = spawnSync(process.execPath, ['bin/micse.js', 'embed', '--model', shared('hf-reference', 'tiny-h32-l4'), '--input', input,
      '--output', path.join(dir, 'out.jsonl'), '--backend', 'webgpu', '--batch-size', '4000'],
    { cwd: ROOT, env: { ...process.env, [DAWN_OPTIONS_ENV]: 'backend=null' }, encoding: 'utf8' });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr.trim().split('\n').at(-1)!, /^micse: a tensor in a computation is larger than the webgpu device allows in one buffer \((Binding size|Buffer size) \(\d+\).*\): lower the batch size/);
    assert.doesNotMatch(r.stderr, /While calling|validation:/, r.stderr);
    assert.equal(existsSync(path.join(dir, 'out.jsonl')), false, 'no output written');
  });

  test(`an adapter option that matches nothing: the error names ${DAWN_OPTIONS_ENV}, and auto goes on past webgpu`, () => {
    const script = `
      ${srcImport('selectBackend, describeSelection', 'model/backend.ts')}
      let explicit = '';
      try { await selectBackend('webgpu'); } catch (err) { explicit = err.message; }
      console.log(JSON.stringify({ explicit, auto: describeSelection(await selectBackend('auto')) }));`;
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script],
      { cwd: ROOT, env: { ...process.env, [DAWN_OPTIONS_ENV]: 'adapter=no-such-adapter-xyz' }, encoding: 'utf8' });
    const r = JSON.parse(out.trim().split('\n').at(-1)!) as { explicit: string; auto: string };
    assert.match(r.explicit, new RegExp(`webgpu: .*${DAWN_OPTIONS_ENV}=adapter=no-such-adapter-xyz`));
    assert.doesNotMatch(r.auto, /^backend: webgpu/);
    assert.match(r.auto, new RegExp(`skipped webgpu: .*${DAWN_OPTIONS_ENV}=adapter=no-such-adapter-xyz`));
  });

  test('auto prints no Dawn trace on stderr; a missing GPU is said once, in the backend line', () => {
    const script = `
      ${srcImport('selectBackend, describeSelection', 'model/backend.ts')}
      console.log(JSON.stringify(describeSelection(await selectBackend('auto'))));`;
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env[DAWN_OPTIONS_ENV];
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '');
    const line = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as string;
    if (!line.startsWith('backend: webgpu')) assert.equal(line.match(/skipped webgpu: /g)?.length, 1, line);
  });
});
