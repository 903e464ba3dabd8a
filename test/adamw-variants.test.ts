/**
 * `optim.variant`: three AdamW steps of each variant against values computed by hand (float64, following
 * torch.optim.AdamW and transformers 4.22's `AdamW.step` line by line; the literals below are those numbers), on the
 * cpu backend through the fused kernels and the composite ops. eps is 1e-3 so the two variants differ by far more
 * than the tolerance: a variant that fell back to the other's arithmetic fails.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { selectBackend } from '../src/model/backend.js';
import { tf } from '../src/model/tf.js';
import { AdamW, type AdamWVariant } from '../src/train/adamw.js';
import { computedBy, type Implementation } from './helpers.js';

const LR = 0.1;
const BETA1 = 0.9;
const BETA2 = 0.999;
const EPS = 1e-3;
const P0 = [0.5, -1.0, 2.0];
const GRADS = [[0.02, -0.5, 0.001], [0.01, 0.3, -0.002], [-0.04, 0.1, 0.003]];
/** float32 parameters against float64 hand values. */
const TOL = 2e-6;

/** torch.optim.AdamW: p *= 1 - lr wd; m, v; p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps). */
function torchByHand(wd: number): number[] {
  const p = [...P0];
  const m = [0, 0, 0];
  const v = [0, 0, 0];
  GRADS.forEach((g, k) => {
    const t = k + 1;
    for (let i = 0; i < p.length; i++) {
      p[i] = p[i]! * (1 - LR * wd);
      m[i] = BETA1 * m[i]! + (1 - BETA1) * g[i]!;
      v[i] = BETA2 * v[i]! + (1 - BETA2) * g[i]! ** 2;
      p[i] = p[i]! - (LR / (1 - BETA1 ** t)) * (m[i]! / (Math.sqrt(v[i]!) / Math.sqrt(1 - BETA2 ** t) + EPS));
    }
  });
  return p;
}

/** transformers 4.22 AdamW: m, v; denom = sqrt(v) + eps; p -= lr sqrt(bc2) / bc1 * m / denom; p -= lr wd p. */
function hfByHand(wd: number): number[] {
  const p = [...P0];
  const m = [0, 0, 0];
  const v = [0, 0, 0];
  GRADS.forEach((g, k) => {
    const t = k + 1;
    for (let i = 0; i < p.length; i++) {
      m[i] = BETA1 * m[i]! + (1 - BETA1) * g[i]!;
      v[i] = BETA2 * v[i]! + (1 - BETA2) * g[i]! ** 2;
      const stepSize = (LR * Math.sqrt(1 - BETA2 ** t)) / (1 - BETA1 ** t);
      p[i] = p[i]! - stepSize * (m[i]! / (Math.sqrt(v[i]!) + EPS));
      p[i] = p[i]! - LR * wd * p[i]!;
    }
  });
  return p;
}

/** The hand computations' results, written out (python3 float64 gave the same digits). */
const EXPECTED: Record<AdamWVariant, Record<string, number[]>> = {
  torch: {
    '0': [0.33697401264125876, -0.877324720514097, 1.9489628392449654],
    '0.1': [0.3248954732514873, -0.8498007831117991, 1.890331560664239],
  },
  hf: {
    '0': [0.4348632503741789, -0.8841936230046381, 1.9957213190612877],
    '0.1': [0.4218095562424297, -0.8576834253366943, 1.9363985624068105],
  },
};

function threeSteps(variant: AdamWVariant, weightDecay: number, implementation: Implementation): number[] {
  const w = tf.tidy(() => tf.variable(tf.tensor1d(P0), true));
  const opt = new AdamW([{ name: 'encoder.layer.0.intermediate.dense.weight', variable: w }],
    { variant, beta1: BETA1, beta2: BETA2, eps: EPS, weightDecay });
  try {
    for (const g of GRADS) {
      const grad = tf.tensor1d(g);
      tf.dispose([computedBy(implementation, () => opt.apply(new Map([['encoder.layer.0.intermediate.dense.weight', grad]]), LR, 0)), grad]);
    }
    return Array.from(w.dataSync());
  } finally {
    opt.dispose();
    w.dispose();
  }
}

function assertClose(got: number[], want: number[], what: string): void {
  got.forEach((x, i) => assert.ok(Math.abs(x - want[i]!) <= TOL, `${what}[${i}]: ${x} vs ${want[i]} (tolerance ${TOL})`));
}

describe('AdamW variants: three steps against hand-computed values', () => {
  before(async () => {
    await selectBackend('cpu');
  });

  test('the hand computations are the written-out numbers, and the variants differ by far more than the tolerance', () => {
    for (const wd of [0, 0.1]) {
      assertClose(torchByHand(wd), EXPECTED.torch[String(wd)]!, `torch wd ${wd}`);
      assertClose(hfByHand(wd), EXPECTED.hf[String(wd)]!, `hf wd ${wd}`);
      const gap = Math.max(...EXPECTED.torch[String(wd)]!.map((x, i) => Math.abs(x - EXPECTED.hf[String(wd)]![i]!)));
      assert.ok(gap > 1000 * TOL, `variants differ by ${gap}`);
    }
  });

  for (const variant of ['torch', 'hf'] as const) {
    for (const implementation of ['fused', 'composite'] as const) {
      test(`${variant}, ${implementation}: weight decay 0 and 0.1`, () => {
        for (const wd of [0, 0.1]) assertClose(threeSteps(variant, wd, implementation), EXPECTED[variant][String(wd)]!, `${variant} wd ${wd}`);
      });
    }
  }

  test('no tensor is left behind', () => {
    threeSteps('hf', 0.1, 'fused'); // kernels may cache constants on first use
    const before = tf.memory().numTensors;
    threeSteps('hf', 0.1, 'fused');
    threeSteps('torch', 0.1, 'composite');
    assert.equal(tf.memory().numTensors, before);
  });
});
