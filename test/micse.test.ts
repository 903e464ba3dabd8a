/**
 * The whole miCSE objective on a tiny random BERT: the two view modes agree with dropout off, a finite-difference
 * check of the gradient of the total loss, config validation, the simcse style, and tensor hygiene.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { UserError } from '../src/errors.js';
import { MlpHead } from '../src/losses/mlpHead.js';
import { micseLoss, type MicseBatch, type MicseConfig, type MicseEncoder } from '../src/losses/micse.js';
import { TRAIN_POOLERS, type TrainPooler } from '../src/losses/micseOptions.js';
import { defaultConfig, mergeConfig } from '../src/train/config.js';
import { OBJECTIVE } from './helpers.js';
import { BertModel, packQkv, qkvPart, unpackQkv } from '../src/model/bert.js';
import { bertWeightTable } from '../src/model/weights.js';
import type { BertConfig } from '../src/model/config.js';
import { useNativeGemm } from '../src/kernels/stock/index.js';
import { selectBackend } from '../src/model/backend.js';
import { tf } from '../src/model/tf.js';
import { Rng } from '../src/data/rng.js';

const TINY: BertConfig = {
  vocabSize: 50,
  hiddenSize: 16,
  numHiddenLayers: 4,
  numAttentionHeads: 2,
  intermediateSize: 32,
  hiddenAct: 'gelu',
  hiddenDropoutProb: 0.1,
  attentionProbsDropoutProb: 0.1,
  maxPositionEmbeddings: 16,
  typeVocabSize: 2,
  layerNormEps: 1e-12,
  padTokenId: 0,
  // Far larger than BERT's 0.02, so that attention is far from uniform: with near-uniform attention the centred
  // log-probabilities are tiny differences of nearly equal numbers, and float32 finite differences of the AMI
  // become noise.
  initializerRange: 0.3,
};

/** Deterministic pseudo-random numbers in [0, 1) from the project's PRNG. */
function rng(seed: number): () => number {
  const r = Rng.fromSeed(seed);
  return () => r.nextFloat();
}

/**
 * 3 sentences of lengths 6, 4, 5 padded to T = 6, each twice (interleaved). The two rows of a sentence get
 * different tokens (same length), so that with dropout off the views still differ and the AMI is not saturated.
 */
function makeBatch(): { ids: number[][]; mask: number[][] } {
  const next = rng(5);
  const lengths = [6, 4, 5];
  const ids: number[][] = [];
  const mask: number[][] = [];
  for (const len of lengths) {
    for (let view = 0; view < 2; view++) {
      ids.push(Array.from({ length: 6 }, (_, t) => (t === 0 ? 2 : t < len ? 3 + Math.floor(next() * 45) : 0)));
      mask.push(Array.from({ length: 6 }, (_, t) => (t < len ? 1 : 0)));
    }
  }
  return { ids, mask };
}

let model: BertModel;
let head: MlpHead;
let batch: MicseBatch;

/** AMI over layers [1, 3), 20 samples per row (every row has at least 24 valid entries): the sampling path. */
const BASE: MicseConfig = { ...OBJECTIVE, minLayer: 1, maxLayer: 3, targetSamples: 20, lambda: 1, seed: 77, training: false };

before(async () => {
  await selectBackend('cpu');
  // The stock products: their bits do not depend on the batch's rows, which the views test compares exactly.
  useNativeGemm('off');
  model = BertModel.random(TINY, 3);
  head = new MlpHead(TINY.hiddenSize, { seed: 4 });
  const { ids, mask } = makeBatch();
  batch = { inputIds: tf.tensor2d(ids, undefined, 'int32'), attentionMask: tf.tensor2d(mask, undefined, 'int32') };
});

after(() => {
  model.dispose();
  head.dispose();
  tf.dispose([batch.inputIds, batch.attentionMask]);
});

function values(r: ReturnType<typeof micseLoss>): { loss: number; infoNCE: number; ami: number | null } {
  const out = { loss: r.loss.dataSync()[0]!, infoNCE: r.infoNCE.dataSync()[0]!, ami: r.ami === null ? null : r.ami.dataSync()[0]! };
  tf.dispose([r.loss, r.infoNCE, ...(r.ami === null ? [] : [r.ami]), ...(r.amiDrawn === null ? [] : [r.amiDrawn])]);
  return out;
}

describe('micseLoss', () => {
  test('interleaved and separate views agree exactly with dropout off (every pooler)', () => {
    for (const pooler of TRAIN_POOLERS) {
      const cfg: MicseConfig = { ...BASE, pooler, head };
      const a = micseLoss(model, batch, { ...cfg, views: 'interleaved' });
      const b = micseLoss(model, batch, { ...cfg, views: 'separate' });
      assert.deepEqual(Array.from(a.amiDrawn!.dataSync()), [2 * 2 * 3, 20], 'AMI rows and samples');
      assert.deepEqual(Array.from(b.amiDrawn!.dataSync()), [2 * 2 * 3, 20], 'AMI rows and samples');
      const va = values(a);
      const vb = values(b);
      assert.deepEqual(vb, va, `pooler ${pooler}`);
      assert.ok(Number.isFinite(va.loss) && va.ami !== null && va.ami < 0, `pooler ${pooler}: ${JSON.stringify(va)}`);
      assert.ok(Math.abs(va.loss - (va.infoNCE + va.ami)) < 1e-6, 'loss = alpha * infoNCE + lambda * ami');
    }
  });

  test('alpha and lambda weight the parts', () => {
    const r = values(micseLoss(model, batch, { ...BASE, head, alpha: 0.5, lambda: 3 }));
    assert.ok(Math.abs(r.loss - (0.5 * r.infoNCE + 3 * r.ami!)) < 1e-6);
  });

  test('training mode: seeded dropout is reproducible, and both view modes give finite losses', () => {
    for (const views of ['interleaved', 'separate'] as const) {
      const cfg: MicseConfig = { ...BASE, head, views, training: true, dropoutSeed: 11 };
      const a = values(micseLoss(model, batch, cfg));
      const b = values(micseLoss(model, batch, cfg));
      assert.deepEqual(a, b, `${views}: same dropoutSeed, same loss`);
      const off = values(micseLoss(model, batch, { ...cfg, training: false }));
      assert.notEqual(a.loss, off.loss, `${views}: dropout changes the loss`);
      assert.ok(Number.isFinite(a.loss));
    }
  });

  test("style 'simcse': no attentions requested, ami null, lambda ignored", () => {
    const seen: (boolean | undefined)[] = [];
    const spy: MicseEncoder = {
      config: model.config,
      forward: (inputs, opts) => {
        seen.push(opts?.outputAttentions);
        return model.forward(inputs, opts);
      },
    };
    // An odd layer span is irrelevant for simcse: it must not be validated.
    const r = micseLoss(spy, batch, { ...BASE, head, style: 'simcse', lambda: 5, minLayer: 0, maxLayer: 3 });
    assert.equal(r.ami, null);
    assert.equal(r.amiDrawn, null);
    assert.deepEqual(seen, [false]);
    const v = values(r);
    assert.equal(v.loss, v.infoNCE);
  });

  test('invalid configurations are UserErrors that say why', () => {
    const bad = (cfg: Partial<MicseConfig>, re: RegExp): void => {
      assert.throws(() => micseLoss(model, batch, { ...BASE, head, ...cfg }), (err: unknown) => err instanceof UserError && re.test(err.message));
    };
    bad({ minLayer: 1, maxLayer: 4 }, /selects 3 layer\(s\), but the count must be even/);
    bad({ minLayer: 0, maxLayer: 6 }, /0 <= minLayer < maxLayer <= 4 \(the model has 4 layers/);
    bad({ minLayer: 3, maxLayer: 1 }, /0 <= minLayer < maxLayer/);
    // The defaults (layers 7..10 of bert-base) do not fit a 4-layer model.
    bad({ minLayer: OBJECTIVE.minLayer, maxLayer: OBJECTIVE.maxLayer }, /\[7, 11\).*the model has 4 layers/);
    bad({ pooler: 'cls', head: null }, /needs the training MLP head/);
    // Selection, evaluation and exports use the raw [CLS]: a mean-pooled objective is refused, not trained on a vector never used.
    bad({ pooler: 'mean' as TrainPooler }, /objective.pooler must be one of cls, cls_before_pooler; got 'mean'/);
    assert.throws(() => mergeConfig(defaultConfig(), { objective: { pooler: 'mean' } }, 'run.yaml'),
      (err: unknown) => err instanceof UserError && /^run.yaml: objective.pooler must be one of cls, cls_before_pooler, got 'mean'/.test(err.message));
    bad({ temperature: 0 }, /temperature must be a positive number/);
    bad({ views: 'both' as unknown as MicseConfig['views'] }, /views must be one of interleaved, separate/);
    const odd = { inputIds: tf.zeros([3, 6], 'int32') as tf.Tensor2D, attentionMask: tf.ones([3, 6], 'int32') as tf.Tensor2D };
    assert.throws(() => micseLoss(model, odd, { ...BASE, head }), /every sentence twice/);
    tf.dispose([odd.inputIds, odd.attentionMask]);
  });

  test('finite-difference check of the gradient of the whole loss (dropout off, pinned draw)', () => {
    const vars = [...model.trainableVariables(), ...head.variables()];
    for (const [label, cfg] of [
      ['alpha 1, lambda 1, interleaved', { ...BASE, head }],
      ['AMI only (alpha 0), separate', { ...BASE, head, alpha: 0, views: 'separate' }],
    ] as const) {
      const f = (): tf.Scalar => micseLoss(model, batch, cfg).loss;
      const { grads } = tf.variableGrads(f, vars);
      const next = rng(label.length);
      for (let trial = 0; trial < 2; trial++) {
        // A random direction over every weight, each entry scaled to its weight's size (rms, at least 0.02);
        // directional derivative g . d against a Richardson-extrapolated central difference (error O(h^4)). Drawn
        // per Hugging Face weight in table order, then packed as the model holds them (q, k, v side by side), so
        // the directions do not depend on how the variables are laid out.
        const draw = (v: tf.Tensor): tf.Tensor => tf.tidy(() => {
          const scale = Math.max(Math.sqrt(tf.mean(tf.square(v)).dataSync()[0]!), 0.02);
          return tf.tensor(Float32Array.from({ length: v.size }, () => (next() * 2 - 1) * scale), v.shape);
        });
        const named = new Map(bertWeightTable(TINY).filter((spec) => !spec.name.startsWith('pooler.')).map((spec) => {
          const q = qkvPart(spec.name);
          const v = q === null ? model.weights.get(spec.name)! : unpackQkv(model.weights.get(q.packed)!, q);
          const d = draw(v);
          if (q !== null) v.dispose();
          return [spec.name, d] as const;
        }));
        const packedDirs = packQkv(named);
        const dirs = [...model.trainableWeights().map(([name]) => packedDirs.get(name)!), ...head.variables().map(draw)];
        tf.dispose([...named.values()].filter((t) => !dirs.includes(t)));
        const analytic = vars.reduce((s, v, i) => s + tf.tidy(() => tf.sum(tf.mul(grads[v.name]!, dirs[i]!)).dataSync()[0]!), 0);
        const originals = vars.map((v) => v.clone());
        const at = (h: number): number => {
          vars.forEach((v, i) => v.assign(tf.tidy(() => tf.add(originals[i]!, tf.mul(dirs[i]!, h)))));
          return tf.tidy(() => f().dataSync()[0]!);
        };
        const central = (h: number): number => (at(h) - at(-h)) / (2 * h);
        const h = 2e-2;
        const numeric = (4 * central(h / 2) - central(h)) / 3;
        vars.forEach((v, i) => v.assign(originals[i]!));
        const err = Math.abs(numeric - analytic);
        assert.ok(Math.abs(analytic) > 1e-3, `${label}: the check needs a non-trivial gradient (g . d = ${analytic})`);
        // 1%: the float32 loss limits the difference quotient (direction 1 of the interleaved case sits at ~0.5%
        // with every draw tried); a wrong gradient term is off by far more.
        assert.ok(err <= 1e-2 * Math.abs(analytic) + 1e-5,
          `${label}, direction ${trial}: analytic ${analytic}, finite difference ${numeric} (abs error ${err})`);
        tf.dispose([...dirs, ...originals]);
      }
      tf.dispose(Object.values(grads));
    }
  });

  test('no tensor leak across 50 evaluations (values and gradients, both view modes and styles)', () => {
    const vars = [...model.trainableVariables(), ...head.variables()];
    const start = tf.memory().numTensors;
    for (let i = 0; i < 50; i++) {
      const cfg: MicseConfig = {
        ...BASE,
        head,
        views: i % 2 === 0 ? 'interleaved' : 'separate',
        style: i % 5 === 4 ? 'simcse' : 'micse',
        training: true,
        dropoutSeed: i,
        seed: i,
      };
      const r = micseLoss(model, batch, cfg);
      tf.dispose([r.loss, r.infoNCE, ...(r.ami === null ? [] : [r.ami]), ...(r.amiDrawn === null ? [] : [r.amiDrawn])]);
      if (i % 5 === 0) {
        tf.tidy(() => {
          tf.variableGrads(() => {
            const out = micseLoss(model, batch, cfg);
            return out.loss;
          }, vars);
        });
      }
    }
    assert.equal(tf.memory().numTensors, start);
  });
});
