/**
 * The losses against the shared reference cases (values, gradients, rows, samples), the AMI draw's statistics
 * and reproducibility, the documented edge cases, the MLP head, tensor hygiene, and InfoNCE's fused webgpu kernels
 * against the composed ops (where an adapter is found; locally `source scratch/lvp.env` for lavapipe).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import {
  attentionMutualInformation,
  drawSamplePositions,
  infoNCE,
  MlpHead,
  regroupAttention,
} from '../src/losses/index.js';
import { tf } from '../src/model/tf.js';
import { AMI_DEFAULTS, HAS_SHARED, maxScaledDiff, seededValues, SKIP_NO_SHARED, shared, webgpuSkipReason, withWebgpuPrograms } from './helpers.js';
import { INFONCE_MAX_D } from '../src/kernels/infoNCE/index.js';
import { selectBackend } from '../src/model/backend.js';
import { Rng } from '../src/data/rng.js';

/** rows and samples of an AMI result (reads its `drawn` tensor and disposes it). */
function drawnOf(r: { drawn: tf.Tensor1D }): { rows: number; samples: number } {
  const [rows, samples] = r.drawn.dataSync();
  r.drawn.dispose();
  return { rows: rows!, samples: samples! };
}

type Nested = number | Nested[];

interface LossCase {
  name: string;
  B: number;
  L: number;
  H: number;
  T: number;
  temperature: number;
  targetSamples: number;
  attention: Nested;
  z1: number[][];
  z2: number[][];
  expected: {
    ami: number;
    amiRows: number;
    amiSamples: number;
    amiGradAttention: Nested;
    infoNCE: number;
    infoNCEGradZ1: number[][];
    infoNCEGradZ2: number[][];
  };
}

function loadCases(): LossCase[] {
  if (!HAS_SHARED) return [];
  const raw = JSON.parse(readFileSync(shared('loss-reference', 'micse-loss-cases.json'), 'utf8')) as { cases: LossCase[] };
  return raw.cases;
}

function flat(x: Nested): number[] {
  return Array.isArray(x) ? x.flatMap(flat) : [x];
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, atol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < actual.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  assert.ok(worst <= atol, `${what}: max abs error ${worst} at ${at} (got ${actual[at]}, expected ${expected[at]}) > ${atol}`);
}

function assertRelClose(actual: number, expected: number, rtol: number, what: string): void {
  const rel = Math.abs(actual - expected) / Math.abs(expected);
  assert.ok(rel <= rtol, `${what}: got ${actual}, expected ${expected} (relative error ${rel} > ${rtol})`);
}

/** Host regrouping in float64 straight from the einops index formula: attention[2b+i][2j+m][k][t][z]. */
function hostRegroup(values: ArrayLike<number>, shape: number[]): { x: Float64Array[]; y: Float64Array[] } {
  const [twoB, L, H, T] = shape as [number, number, number, number];
  const B = twoB / 2;
  const J = L / 2;
  const N = J * T * T;
  const x: Float64Array[] = [];
  const y: Float64Array[] = [];
  const at = (s: number, l: number, k: number, t: number, z: number): number => values[(((s * L + l) * H + k) * T + t) * T + z]!;
  for (let b = 0; b < B; b++) {
    for (let k = 0; k < H; k++) {
      for (let m = 0; m < 2; m++) {
        const rx = new Float64Array(N);
        const ry = new Float64Array(N);
        for (let j = 0; j < J; j++) {
          for (let t = 0; t < T; t++) {
            for (let z = 0; z < T; z++) {
              const c = j * T * T + t * T + z;
              rx[c] = at(2 * b, 2 * j + m, k, t, z);
              ry[c] = at(2 * b + 1, 2 * j + m, k, t, z);
            }
          }
        }
        x.push(rx);
        y.push(ry);
      }
    }
  }
  return { x, y };
}

/**
 * Host float64 AMI given the draw (positions per kept row), following METHOD.md (with this project's documented
 * handling of empty rows and the rho clamp). Returns the kept rows too.
 */
function hostAMI(
  values: ArrayLike<number>,
  shape: number[],
  targetSamples: number,
  positions: ((keptRowIdx: number, validPositions: number[], samples: number) => number[]) | number[][],
): { value: number; kept: number[]; samples: number } {
  const { x, y } = hostRegroup(values, shape);
  const N = x[0]!.length;
  const valid = x.map((rx, r) => Array.from(rx, (v, c) => v > 0 && y[r]![c]! > 0));
  const counts = valid.map((row) => row.filter(Boolean).length);
  let kept = counts.map((_, r) => r).filter((r) => counts[r]! >= targetSamples);
  let samples = targetSamples;
  let scaleRows = kept;
  if (kept.length === 0) {
    kept = counts.map((_, r) => r).filter((r) => counts[r]! > 0);
    samples = kept.length === 0 ? 0 : Math.min(targetSamples, ...kept.map((r) => counts[r]!));
    scaleRows = counts.map((_, r) => r);
  }
  if (samples === 0) return { value: 0, kept: [], samples: 0 };
  const validSum = scaleRows.reduce((s, r) => s + counts[r]!, 0);
  const scale = (validSum / (scaleRows.length * N)) ** 2 + 1e-6;
  let sumI = 0;
  kept.forEach((r, i) => {
    const validPos = valid[r]!.flatMap((v, c) => (v ? [c] : []));
    const pos = Array.isArray(positions) ? positions[i]! : positions(i, validPos, samples);
    const lx = pos.map((c) => Math.log(x[r]![c]!));
    const ly = pos.map((c) => Math.log(y[r]![c]!));
    const mx = lx.reduce((a, b) => a + b, 0) / lx.length;
    const my = ly.reduce((a, b) => a + b, 0) / ly.length;
    const cx = lx.map((v) => v - mx);
    const cy = ly.map((v) => v - my);
    const dot = cx.reduce((s, v, q) => s + v * cy[q]!, 0);
    const nx = Math.max(Math.sqrt(cx.reduce((s, v) => s + v * v, 0)), 1e-6);
    const ny = Math.max(Math.sqrt(cy.reduce((s, v) => s + v * v, 0)), 1e-6);
    const rho = Math.min(Math.max(dot / (nx * ny), -(1 - 1e-6)), 1 - 1e-6);
    sumI += -0.5 * Math.log((1 - rho) * (1 + rho));
  });
  return { value: (-sumI / kept.length) * scale, kept, samples };
}

/** Deterministic pseudo-random numbers in [0, 1) from the project's PRNG. */
function rng(seed: number): () => number {
  const r = Rng.fromSeed(seed);
  return () => r.nextFloat();
}

/** Softmax-normalised random attention [2B, L, H, T, T] with a fraction of entries zeroed (dropout-like). */
function randomAttention(shape: [number, number, number, number, number], zeroFrac: number, seed: number): Float32Array {
  const next = rng(seed);
  const T = shape[4];
  const out = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let row = 0; row < out.length / T; row++) {
    let sum = 0;
    for (let z = 0; z < T; z++) {
      const v = Math.exp(3 * next());
      out[row * T + z] = v;
      sum += v;
    }
    for (let z = 0; z < T; z++) out[row * T + z] = next() < zeroFrac ? 0 : out[row * T + z]! / sum / (1 - zeroFrac);
  }
  return out;
}

/** Upper/lower chi-square quantiles via Wilson-Hilferty; z is the standard normal quantile. */
function chiSquareQuantile(df: number, z: number): number {
  const c = 2 / (9 * df);
  return df * (1 - c + z * Math.sqrt(c)) ** 3;
}
const Z_0999 = 3.0902323061678132; // standard normal quantile at 0.999

before(async () => {
  await selectBackend('cpu');
});

describe('reference cases (../shared/data/loss-reference/micse-loss-cases.json)', { skip: SKIP_NO_SHARED }, () => {
  for (const c of loadCases()) {
    test(`${c.name}: AMI value, rows, samples and gradient`, () => {
      const att = tf.tensor(flat(c.attention), [2 * c.B, c.L, c.H, c.T, c.T], 'float32');
      const opts = { ...AMI_DEFAULTS, targetSamples: c.targetSamples, seed: 1 };
      const r = attentionMutualInformation(att, opts);
      assertRelClose(r.value.dataSync()[0]!, c.expected.ami, 1e-5, 'ami');
      assert.deepEqual(drawnOf(r), { rows: c.expected.amiRows, samples: c.expected.amiSamples });
      const g = tf.grad((a: tf.Tensor) => attentionMutualInformation(a, opts).value)(att);
      assertClose(g.dataSync(), flat(c.expected.amiGradAttention), 1e-5, 'd ami / d attention');
      // The float64 host implementation used by the sampling tests agrees too.
      const host = hostAMI(flat(c.attention), att.shape, c.targetSamples, (_i, validPos, s) => validPos.slice(0, s));
      assertRelClose(host.value, c.expected.ami, 1e-9, 'host ami');
      tf.dispose([att, r.value, g]);
    });

    test(`${c.name}: InfoNCE value and gradients`, () => {
      const z1 = tf.tensor2d(c.z1);
      const z2 = tf.tensor2d(c.z2);
      const v = infoNCE(z1, z2, c.temperature);
      assertRelClose(v.dataSync()[0]!, c.expected.infoNCE, 1e-5, 'infoNCE');
      const [g1, g2] = tf.grads((a: tf.Tensor, b: tf.Tensor) => infoNCE(a as tf.Tensor2D, b as tf.Tensor2D, c.temperature))([z1, z2]);
      assertClose(g1!.dataSync(), flat(c.expected.infoNCEGradZ1), 1e-5, 'd infoNCE / d z1');
      assertClose(g2!.dataSync(), flat(c.expected.infoNCEGradZ2), 1e-5, 'd infoNCE / d z2');
      tf.dispose([z1, z2, v, g1!, g2!]);
    });
  }
});

describe('regrouping', () => {
  test('matches the einops index formula (row (b*H + k)*2 + m, column j*T*T + t*T + z)', () => {
    const shape: [number, number, number, number, number] = [4, 4, 3, 2, 2];
    const values = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => i);
    const att = tf.tensor(values, shape);
    const { x, y } = regroupAttention(att);
    const host = hostRegroup(values, shape);
    assert.deepEqual(x.arraySync(), host.x.map((r) => Array.from(r)));
    assert.deepEqual(y.arraySync(), host.y.map((r) => Array.from(r)));
    tf.dispose([att, x, y]);
  });

  test('odd layer count or odd first dimension is rejected with a reason', () => {
    const odd = tf.ones([2, 3, 1, 2, 2]);
    assert.throws(() => attentionMutualInformation(odd, AMI_DEFAULTS), /number of layers \(3\) must be even/);
    const oddB = tf.ones([3, 2, 1, 2, 2]);
    assert.throws(() => attentionMutualInformation(oddB, AMI_DEFAULTS), /must be even: two views/);
    tf.dispose([odd, oddB]);
  });
});

describe('sampling regime (rows with >= 150 valid entries)', () => {
  // 2 layers, T = 16: each row holds one 16 x 16 map (256 entries).
  const shape: [number, number, number, number, number] = [6, 2, 2, 16, 16];
  // Sentence 0 has more dropped entries (about 108 valid per row: its rows are filtered out), sentences 1 and 2
  // fewer (about 198 valid per row: kept).
  const values = new Float32Array(shape.reduce((a, b) => a * b, 1));
  [0.35, 0.1, 0.1].forEach((zeroFrac, b) => {
    const part = randomAttention([2, 2, 2, 16, 16], zeroFrac, 7 + b);
    values.set(part, b * part.length);
  });

  test('draws are distinct, valid in both views, increasing, 150 per kept row; same seed same draw', () => {
    const att = tf.tensor(values, shape);
    const host = hostRegroup(values, shape);
    const valid = host.x.map((rx, r) => Array.from(rx, (v, c) => (v > 0 && host.y[r]![c]! > 0 ? 1 : 0)));
    const kept = valid.map((row, r) => (row.reduce((a: number, b) => a + b, 0) >= 150 ? r : -1)).filter((r) => r >= 0);
    assert.ok(kept.length >= 2 && kept.length < valid.length, `test input should keep some rows and drop others (kept ${kept.length})`);
    // The loss draws over all rows and keeps the kept ones: the same here, so the seeded loss can be pinned below.
    const validAll = tf.tensor2d(valid, undefined, 'int32');
    const drawAll = drawSamplePositions(validAll, 150, 123);
    const draw = kept.map((r) => (drawAll.arraySync() as number[][])[r]!);
    const drawT = tf.tensor2d(draw, undefined, 'int32');
    for (const [i, row] of draw.entries()) {
      assert.equal(row.length, 150);
      for (let s = 0; s < row.length; s++) {
        assert.equal(valid[kept[i]!]![row[s]!], 1, `row ${i}: position ${row[s]} is not valid in both views`);
        if (s > 0) assert.ok(row[s]! > row[s - 1]!, `row ${i}: positions not strictly increasing at ${s}`);
      }
    }
    const again = drawSamplePositions(validAll, 150, 123);
    assert.deepEqual(again.arraySync(), drawAll.arraySync(), 'same seed, same draw');
    const other = drawSamplePositions(validAll, 150, 124);
    assert.notDeepEqual(other.arraySync(), drawAll.arraySync(), 'another seed, another draw');

    // The loss with seed 123 draws exactly this (same keys shape), and sampleIndices reproduces it exactly.
    const bySeed = attentionMutualInformation(att, { ...AMI_DEFAULTS, seed: 123 });
    const byTensor = attentionMutualInformation(att, { ...AMI_DEFAULTS, sampleIndices: drawT });
    const byArray = attentionMutualInformation(att, { ...AMI_DEFAULTS, sampleIndices: draw });
    assert.deepEqual(drawnOf(bySeed), { rows: kept.length, samples: 150 });
    const v = bySeed.value.dataSync()[0]!;
    assert.equal(byTensor.value.dataSync()[0], v);
    assert.equal(byArray.value.dataSync()[0], v);
    const ref = hostAMI(values, shape, 150, draw);
    assert.deepEqual(ref.kept, kept);
    assertRelClose(v, ref.value, 1e-5, 'ami vs float64 host');
    assert.ok(!drawT.isDisposed, 'a caller-owned sampleIndices tensor is not disposed');
    assert.throws(() => attentionMutualInformation(att, { ...AMI_DEFAULTS, sampleIndices: draw.slice(1) }), /sampleIndices must be \[rows, samples\]/);
    tf.dispose([att, validAll, drawAll, drawT, again, other, bySeed.value, byTensor.value, byArray.value, byTensor.drawn, byArray.drawn]);
  });

  test('gradient flows through the drawn entries of both views only', () => {
    const att = tf.tensor(values, shape);
    const g = tf.grad((a: tf.Tensor) => attentionMutualInformation(a, { ...AMI_DEFAULTS, seed: 5 }).value)(att);
    const gx = regroupAttention(g);
    const ax = regroupAttention(att);
    const [gX, gY, aX, aY] = [gx.x, gx.y, ax.x, ax.y].map((t) => t.arraySync());
    const r = attentionMutualInformation(att, { ...AMI_DEFAULTS, seed: 5 });
    let nonzeroRows = 0;
    for (let row = 0; row < gX!.length; row++) {
      const nzX = gX![row]!.filter((v) => v !== 0).length;
      const nzY = gY![row]!.filter((v) => v !== 0).length;
      const validCount = aX![row]!.filter((v, c) => v > 0 && aY![row]![c]! > 0).length;
      if (validCount >= 150) {
        assert.equal(nzX, 150, `row ${row}: view-1 gradient entries`);
        assert.equal(nzY, 150, `row ${row}: view-2 gradient entries`);
        nonzeroRows++;
      } else {
        assert.equal(nzX + nzY, 0, `row ${row} is filtered out and must get no gradient`);
      }
      for (let c = 0; c < gX![row]!.length; c++) {
        if (gX![row]![c] !== 0) assert.ok(aX![row]![c]! > 0 && aY![row]![c]! > 0, 'gradient only at valid positions');
      }
    }
    assert.equal(nonzeroRows, drawnOf(r).rows);
    tf.dispose([att, g, gx.x, gx.y, ax.x, ax.y, r.value]);
  });

  test('each valid position is drawn uniformly often over 2,000 draws (chi-square, p = 0.001 both tails)', () => {
    const N = 256;
    const draws = 2000;
    const samples = 150;
    const next = rng(99);
    const validRow = Array.from({ length: N }, () => (next() < 0.8 ? 1 : 0));
    const M = validRow.reduce((a: number, b) => a + b, 0);
    assert.ok(M > samples);
    // 2,000 independent draws at once: 2,000 rows with the same valid mask.
    const valid = tf.tidy(() => tf.tile(tf.tensor2d([validRow], [1, N], 'int32'), [draws, 1]));
    const pos = drawSamplePositions(valid as tf.Tensor2D, samples, 2024);
    const flatPos = pos.dataSync();
    const freq = new Float64Array(N);
    for (let i = 0; i < draws; i++) {
      const base = i * samples;
      for (let s = 0; s < samples; s++) {
        const p = flatPos[base + s]!;
        assert.equal(validRow[p], 1, 'drawn position must be valid');
        if (s > 0) assert.ok(p > flatPos[base + s - 1]!, 'increasing and distinct');
        freq[p]!++;
      }
    }
    // Inclusion indicators of a uniform size-S subset of M items: Var = p(1-p), Cov = -p(1-p)/(M-1), so
    // sum_j (f_j - n p)^2 / (n p (1-p) M/(M-1)) is asymptotically chi-square with M - 1 degrees of freedom.
    const p = samples / M;
    let stat = 0;
    for (let j = 0; j < N; j++) {
      if (validRow[j] === 0) {
        assert.equal(freq[j], 0, 'invalid position drawn');
        continue;
      }
      stat += (freq[j]! - draws * p) ** 2;
    }
    stat /= (draws * p * (1 - p) * M) / (M - 1);
    const df = M - 1;
    const hi = chiSquareQuantile(df, Z_0999);
    const lo = chiSquareQuantile(df, -Z_0999);
    assert.ok(stat < hi && stat > lo, `chi-square ${stat.toFixed(1)} outside [${lo.toFixed(1)}, ${hi.toFixed(1)}] (df ${df})`);
    tf.dispose([valid, pos]);
  });
});

describe('edge cases', () => {
  test('rho = +1 and rho = -1 give a finite value (clamped) and a finite gradient', () => {
    const shape: [number, number, number, number, number] = [2, 2, 1, 4, 4];
    const base = randomAttention([1, 2, 1, 4, 4], 0, 3);
    const same = new Float32Array(2 * base.length);
    same.set(base, 0);
    same.set(base, base.length); // view 2 = view 1: rho = 1 on every row
    const mirror = new Float32Array(2 * base.length);
    mirror.set(base, 0);
    mirror.set(base.map((v) => 0.001 / v), base.length); // log y = const - log x: rho = -1
    for (const values of [same, mirror]) {
      const att = tf.tensor(values, shape);
      const r = attentionMutualInformation(att, AMI_DEFAULTS);
      const v = r.value.dataSync()[0]!;
      assert.ok(Number.isFinite(v), `value ${v} must be finite`);
      const eps = AMI_DEFAULTS.rhoEps;
      const bound = Math.fround(1 - eps); // the clamp bound as float32 holds it
      const maxI = -0.5 * Math.log((1 - bound) * (1 + bound));
      assert.ok(Math.abs(v + maxI * (1 + 1e-6)) < 1e-5 * maxI, `value ${v} should be the clamped -I_max * scale (${-maxI})`);
      const g = tf.grad((a: tf.Tensor) => attentionMutualInformation(a, AMI_DEFAULTS).value)(att);
      assert.ok(g.dataSync().every(Number.isFinite), 'gradient must be finite');
      tf.dispose([att, r.value, g]);
    }
  });

  test('zero samples (all-zero attention) gives 0, rows 0, samples 0 and a zero gradient', () => {
    const att = tf.zeros([4, 2, 2, 3, 3]);
    const r = attentionMutualInformation(att, AMI_DEFAULTS);
    assert.equal(r.value.dataSync()[0], 0);
    assert.deepEqual(drawnOf(r), { rows: 0, samples: 0 });
    const g = tf.grad((a: tf.Tensor) => attentionMutualInformation(a, AMI_DEFAULTS).value)(att);
    assert.ok(g.dataSync().every((v) => v === 0));
    tf.dispose([att, r.value, g]);
  });

  test('a fully padded row is left out in the fallback regime instead of zeroing the whole loss', () => {
    const shape: [number, number, number, number, number] = [4, 2, 2, 5, 5];
    const values = randomAttention(shape, 0.1, 11);
    // Sentence 1, view 2, layer 0 (m = 0), head 1: all zero -> regrouped row (1*2 + 1)*2 + 0 = 6 is empty.
    const [, L, H, T] = shape;
    const off = (((3 * L + 0) * H + 1) * T) * T;
    values.fill(0, off, off + T * T);
    const att = tf.tensor(values, shape);
    const r = attentionMutualInformation(att, { ...AMI_DEFAULTS, seed: 3 });
    const drawn = drawnOf(r);
    assert.equal(drawn.rows, 2 * H * 2 - 1, 'the empty row is excluded');
    const ref = hostAMI(values, shape, 150, (_i, validPos, s) => validPos.slice(0, s));
    assert.equal(drawn.samples, ref.samples);
    assert.ok(drawn.samples > 0);
    assert.ok(!ref.kept.includes(6));
    // Pin a draw (the first `samples` valid positions of each kept row) to compare with the host value.
    const { x, y } = hostRegroup(values, shape);
    const pinned = ref.kept.map((row) => x[row]!.reduce<number[]>((acc, v, c) => (v > 0 && y[row]![c]! > 0 ? [...acc, c] : acc), []).slice(0, drawn.samples));
    const p = attentionMutualInformation(att, { ...AMI_DEFAULTS, sampleIndices: pinned });
    assertRelClose(p.value.dataSync()[0]!, ref.value, 1e-5, 'ami with an empty row');
    tf.dispose([att, r.value, p.value, p.drawn]);
  });

  test('non-finite input maps to nanValue', () => {
    const values = randomAttention([2, 2, 1, 4, 4], 0, 5);
    values[3] = Number.POSITIVE_INFINITY;
    const att = tf.tensor(values, [2, 2, 1, 4, 4]);
    const r = attentionMutualInformation(att, { ...AMI_DEFAULTS, nanValue: 42 });
    assert.equal(r.value.dataSync()[0], 42);
    tf.dispose([att, r.value]);
  });
});

describe('MlpHead', () => {
  test('init, apply = tanh(x W^T + b), named weights in [out, in] layout', () => {
    const H = 64;
    const head = new MlpHead(H, { seed: 17 });
    const head2 = new MlpHead(H, { seed: 17 });
    const w = Array.from(head.weight.dataSync());
    assert.deepEqual(head.weight.shape, [H, H]);
    assert.deepEqual(head.bias.shape, [H]);
    assert.deepEqual(Array.from(head2.weight.dataSync()), Array.from(w), 'same seed, same init');
    const mean = w.reduce((a, b) => a + b, 0) / w.length;
    const std = Math.sqrt(w.reduce((a, b) => a + (b - mean) ** 2, 0) / w.length);
    assert.ok(Math.abs(std - 0.02) < 0.002, `init std ${std}`);
    assert.ok(head.bias.dataSync().every((v) => v === 0), 'zero bias');
    const named = head.namedWeights();
    assert.deepEqual(Object.keys(named).sort(), ['mlp.dense.bias', 'mlp.dense.weight']);
    assert.equal(named['mlp.dense.weight'], head.weight);
    assert.deepEqual(head.variables(), [head.weight, head.bias]);

    // Non-symmetric weight so [out, in] vs [in, out] matters.
    const wt = tf.tensor2d(Array.from({ length: H * H }, (_, i) => ((i * 37) % 101) / 1000 - 0.05), [H, H]);
    const bt = tf.tensor1d(Array.from({ length: H }, (_, i) => i / 100));
    head.assignWeights({ 'mlp.dense.weight': wt, 'mlp.dense.bias': bt });
    const xs = Array.from({ length: 2 * H }, (_, i) => Math.sin(i));
    const x = tf.tensor2d(xs, [2, H]);
    const out = head.apply(x);
    assert.deepEqual(out.shape, [2, H]);
    const W = wt.arraySync();
    const bb = bt.dataSync();
    const expected: number[] = [];
    for (let r = 0; r < 2; r++) {
      for (let o = 0; o < H; o++) {
        let s = bb[o]!;
        for (let i = 0; i < H; i++) s += xs[r * H + i]! * W[o]![i]!;
        expected.push(Math.tanh(s));
      }
    }
    assertClose(out.dataSync(), expected, 1e-5, 'mlp output');
    const before = tf.memory().numTensors;
    head.dispose();
    head2.dispose();
    assert.equal(tf.memory().numTensors, before - 4, 'dispose frees both variables of each head');
    tf.dispose([wt, bt, x, out]);
  });
});

describe('tensor hygiene', () => {
  test('no tensor leak across 50 evaluations (values, gradients, draws)', () => {
    const shape: [number, number, number, number, number] = [4, 2, 2, 16, 16];
    const att = tf.tensor(randomAttention(shape, 0.1, 21), shape);
    const z1 = tf.randomNormal([2, 8], 0, 1, 'float32', 1) as tf.Tensor2D;
    const z2 = tf.randomNormal([2, 8], 0, 1, 'float32', 2) as tf.Tensor2D;
    const head = new MlpHead(8, { seed: 1 });
    const gradFn = tf.grad((a: tf.Tensor) => attentionMutualInformation(a, { ...AMI_DEFAULTS, seed: 9 }).value);
    const start = tf.memory().numTensors;
    for (let i = 0; i < 50; i++) {
      const r = attentionMutualInformation(att, { ...AMI_DEFAULTS, seed: i });
      tf.dispose([r.value, r.drawn]);
      const fallback = attentionMutualInformation(att, { ...AMI_DEFAULTS, targetSamples: 300, seed: i });
      tf.dispose([fallback.value, fallback.drawn]);
      tf.tidy(() => {
        infoNCE(head.apply(z1), head.apply(z2), 0.05);
        gradFn(att);
        tf.variableGrads(() => infoNCE(head.apply(z1), z2, 0.05), head.variables());
      });
    }
    assert.equal(tf.memory().numTensors, start);
    head.dispose();
    tf.dispose([att, z1, z2]);
  });
});

describe('InfoNCE on webgpu (fused kernels, kernels/infoNCE) against the composed ops on cpu', { skip: await webgpuSkipReason() }, () => {
  /** loss and the gradients of (upstream) 1.7 * loss with respect to z1 and z2, as flat arrays. */
  async function lossAndGrads(z1v: Float32Array, z2v: Float32Array, shape: [number, number], temperature: number): Promise<Float32Array[]> {
    const z1 = tf.tensor2d(z1v, shape);
    const z2 = tf.tensor2d(z2v, shape);
    const f = (a: tf.Tensor, b: tf.Tensor) => tf.mul(infoNCE(a as tf.Tensor2D, b as tf.Tensor2D, temperature), 1.7) as tf.Scalar;
    const { value, grads } = tf.valueAndGrads(f)([z1, z2]);
    const out = await Promise.all([value, ...grads].map(async (t) => Float32Array.from((await t.data()) as Float32Array)));
    tf.dispose([z1, z2, value, ...grads]);
    return out;
  }

  // B above one workgroup's 256 threads, D at the fused kernels' limit and one past it (the composed fallback).
  for (const [B, D] of [[3, 5], [64, 128], [300, 130], [5, INFONCE_MAX_D], [4, INFONCE_MAX_D + 1]] as const) {
    test(`B ${B}, D ${D}: loss and both gradients within 1e-5 of their scale`, async () => {
      const z1 = seededValues(B * D, 11 + B);
      const z2 = seededValues(B * D, 12 + D);
      for (let k = 0; k < D; k++) z2[k] = z1[k]! * 0.9 + z2[k]! * 0.1; // a near-duplicate pair: a sharp softmax row
      await selectBackend('cpu');
      const want = await lossAndGrads(z1, z2, [B, D], 0.05);
      await selectBackend('webgpu');
      const before = tf.memory().numTensors;
      const { result: got, programs } = await withWebgpuPrograms(() => lossAndGrads(z1, z2, [B, D], 0.05));
      const after = tf.memory().numTensors;
      await selectBackend('cpu');
      assert.equal(after, before, 'no tensor leaks');
      const fused = programs.filter((p) => p.startsWith('micseInfoNCE')).length;
      assert.equal(fused, D <= INFONCE_MAX_D ? 6 : 0, `fused dispatches: ${programs.join(', ')}`);
      ['loss', 'dz1', 'dz2'].forEach((name, i) => {
        // relative to the tensor's largest magnitude (the gradients are ~1e-3: an absolute bound would say little)
        const d = maxScaledDiff(got[i]!, want[i]!, 0);
        assert.ok(d < 1e-5, `${name}: ${d} of the largest magnitude`);
      });
    });
  }
});
