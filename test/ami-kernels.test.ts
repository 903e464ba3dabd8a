/**
 * kernels/ami: the WebGPU attention MI against the stock-op path on the cpu backend (skipped with the reason
 * where no WebGPU adapter exists), and the host kernels (cpu, wasm) against the same stock ops. The draw must give the same positions in the same order as seededUniform + where
 * + tf.topk on cpu (rows with fewer valid positions than samples, empty and full rows, equal keys split by the
 * selection and ordered by index); the AMI value and `drawn` must agree within 1e-5 (relative; the gradient within
 * GRAD_TOL) on padded softmax attentions in the main regime, the fallback regime (with an empty row) and above the
 * draw kernel's sample limit (stock ops on webgpu too), with a stable tensor count.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { attentionMutualInformation, rankSamplePositions } from '../src/losses/attentionMI.js';
import { AMI_DRAW_MAX_SAMPLES } from '../src/kernels/ami/index.js';
import { withComposedOps } from '../src/kernels/registry.js';
import { selectBackend } from '../src/model/backend.js';
import { uniformArray } from '../src/kernels/dropout/index.js';
import { tf } from '../src/model/tf.js';
import { AMI_DEFAULTS, seededValues, softwareWebgpuAdapter, webgpuSkipReason } from './helpers.js';

const TOL = 1e-5;
/**
 * The gradient's tolerance (max |diff| / max |cpu|): dx = (dcx - mean dcx) / x at the drawn samples, where dcx is a
 * difference of nearly equal terms and 1 / x is large, amplifies the 1-ulp differences between WGSL's log and the
 * cpu backend's (float64 Math.log rounded): the stock webgpu ops differ from cpu by the same ~1.2e-5 on these inputs,
 * while the kernels differ from the stock webgpu ops by < 1e-6 (measured when this test was written).
 */
const GRAD_TOL = 3e-5;
const SKIP = await webgpuSkipReason();
const SOFTWARE = SKIP === false ? await softwareWebgpuAdapter() : null;

/** `f` on cpu and on webgpu (numbers read back), with the tensor count checked stable on webgpu. */
async function onBoth<T>(f: () => Promise<T>): Promise<{ cpu: T; webgpu: T }> {
  await selectBackend('cpu');
  const cpu = await f();
  await selectBackend('webgpu');
  const before = tf.memory().numTensors;
  const webgpu = await f();
  assert.equal(tf.memory().numTensors, before, 'no tensor leaks on webgpu');
  await selectBackend('cpu');
  return { cpu, webgpu };
}

/** rankSamplePositions of a host validity matrix, read back. */
async function ranked(valid: boolean[][], samples: number, seed: number): Promise<number[]> {
  const v = tf.tensor2d(valid.map((row) => row.map((b) => (b ? 1 : 0))), undefined, 'bool');
  const pos = rankSamplePositions(v, samples, seed);
  const out = Array.from(await pos.data());
  tf.dispose([v, pos]);
  return out;
}

/**
 * A seed and row whose valid keys (uniformArray, flat index r*N + c) hold two equal keys at sorted ranks p, p + 1
 * (key descending) with p + 2 <= maxSamples: drawing p + 1 splits the tie, p + 2 takes both.
 */
function findTie(valid: boolean[][], maxSamples: number): { seed: number; p: number } {
  const R = valid.length;
  const N = valid[0]!.length;
  for (let seed = 1; seed < 1000; seed++) {
    const keys = uniformArray(R * N, seed);
    for (let r = 0; r < R; r++) {
      const sorted = valid[r]!.flatMap((ok, c) => (ok ? [keys[r * N + c]!] : [])).sort((a, b) => b - a);
      for (let p = 0; p + 2 <= maxSamples && p + 1 < sorted.length; p++) {
        if (sorted[p] === sorted[p + 1]) return { seed, p };
      }
    }
  }
  throw new Error('no tie found');
}

/** The draw cases: N = 700 columns (several 256-column chunks per webgpu thread) in partial, empty and full rows. */
const DRAW_N = 700;
const DRAW_U = seededValues(5 * DRAW_N, 3);
const DRAW_ROWS = [
  Array.from({ length: DRAW_N }, (_, c) => DRAW_U[c]! > 0.2), // most valid
  Array.from({ length: DRAW_N }, () => false), // empty: all invalid, in index order
  Array.from({ length: DRAW_N }, () => true), // full
  Array.from({ length: DRAW_N }, (_, c) => DRAW_U[DRAW_N + c]! > 0.9), // ~35 valid: the rest invalid, in index order
  Array.from({ length: DRAW_N }, (_, c) => c % 3 === 0),
];
/** Samples drawn: 1, some, all valid, N (those the draw kernel takes). */
const DRAW_SAMPLES = [1, 40, 150, DRAW_N].filter((s) => s <= AMI_DRAW_MAX_SAMPLES);
/** 4096 columns: about one pair of equal 24-bit keys per row (findTie picks a seed with one in reach). */
const TIE_ROWS = Array.from({ length: 3 }, (_, r) => Array.from({ length: 4096 }, (_, c) => (c + r) % 7 !== 0));

describe('webgpu AMI draw: the positions and order of seededUniform + where + tf.topk on cpu', { skip: SKIP }, () => {
  test('partial, empty and full rows; samples 1, some, all valid, N', async () => {
    const valid = DRAW_ROWS;
    for (const samples of DRAW_SAMPLES) {
      const { cpu, webgpu } = await onBoth(() => ranked(valid, samples, 17));
      assert.deepEqual(webgpu, cpu, `samples ${samples}`);
    }
  });

  test('equal keys: split by the selection (lowest index taken) and ordered by index', async () => {
    const valid = TIE_ROWS;
    const { seed, p } = findTie(valid, AMI_DRAW_MAX_SAMPLES);
    for (const samples of [p + 1, p + 2]) {
      const { cpu, webgpu } = await onBoth(() => ranked(valid, samples, seed));
      assert.deepEqual(webgpu, cpu, `samples ${samples} (tie at ranks ${p}, ${p + 1}), seed ${seed}`);
    }
  });
});

/**
 * Softmax attentions `[2B, L, H, T, T]` computed on cpu (both backends then start from the same numbers), sentence b padded to T - b tokens (padded queries and keys 0 in both views);
 * with `emptyRow`, sentence 1's view 2 is all zero in layers 0 and 2, head 1 (regrouped row (1*H + 1)*2 + 0 has no valid entry).
 */
async function paddedAttentions(shape: [number, number, number, number, number], emptyRow: boolean): Promise<Float32Array> {
  const [twoB, L, H, T] = shape;
  await selectBackend('cpu');
  const att = tf.tidy(() => {
    // View 2's logits are view 1's plus noise (as two dropout views): rho well away from 0, where I = -0.5 log(1 - rho^2)
    // is not a tiny difference (near rho = 0 float32 rounding of the sums alone moves it by ~1e-4 relative).
    const half = [twoB / 2, 1, L, H, T, T];
    const logits = tf.mul(tf.tensor(seededValues(twoB * L * H * T * T / 2, 5), half), 3);
    const noise = tf.mul(tf.tensor(seededValues(twoB * L * H * T * T / 2, 6), half), 0.5);
    const a = tf.softmax(tf.reshape(tf.concat([logits, tf.add(logits, noise)], 1), shape), -1);
    const keep = tf.buffer(shape, 'float32');
    for (let s = 0; s < twoB; s++) {
      const len = T - Math.min(T - 2, s >> 1);
      for (let l = 0; l < L; l++) {
        for (let h = 0; h < H; h++) {
          const empty = emptyRow && s === 3 && l % 2 === 0 && h === 1;
          for (let t = 0; t < T; t++) for (let z = 0; z < T; z++) keep.set(!empty && t < len && z < len ? 1 : 0, s, l, h, t, z);
        }
      }
    }
    return tf.mul(a, keep.toTensor());
  });
  const values = (await att.data()) as Float32Array;
  att.dispose();
  return values;
}

/** max |a - b| / max |b| (relative to the reference's largest entry). */
function scaledDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    m = Math.max(m, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return scale > 0 ? m / scale : m;
}

/** The value/gradient cases, each run on every backend with the AMI kernels. */
const cases: { name: string; shape: [number, number, number, number, number]; targetSamples: number; emptyRow: boolean; drawn: [number, number] }[] = [
  // R = 2*3*4 = 24 rows, N = 2*64 = 128: unpadded sentences' rows (128 valid) are full
  { name: 'main regime', shape: [8, 4, 3, 8, 8], targetSamples: 100, emptyRow: false, drawn: [6, 100] },
  // no row has 300: every non-empty row, min count (sentence 3: 5 tokens, 2 * 25 valid) samples each
  { name: 'fallback regime with an empty row', shape: [8, 4, 3, 8, 8], targetSamples: 300, emptyRow: true, drawn: [23, 50] },
  // N = 576 columns: several columns per thread; one row drawn per (sentence, head, parity)
  { name: 'main regime, T = 24', shape: [4, 2, 2, 24, 24], targetSamples: 150, emptyRow: false, drawn: [8, 150] },
  // S = 1100 > AMI_DRAW_MAX_SAMPLES: the stock ops on webgpu too (sentence 0's 2 rows of 1152 valid are full)
  { name: 'above the draw kernel limit', shape: [4, 4, 1, 24, 24], targetSamples: 1100, emptyRow: false, drawn: [2, 1100] },
];

describe('webgpu AMI value, drawn and gradient match the cpu stock ops', { skip: SKIP }, () => {
  for (const c of cases) {
    test(`${c.name}: [${c.shape}], targetSamples ${c.targetSamples}`, async () => {
      const values = await paddedAttentions(c.shape, c.emptyRow);
      const { cpu, webgpu } = await onBoth(async () => {
        const att = tf.tensor(values, c.shape);
        const opts = { ...AMI_DEFAULTS, targetSamples: c.targetSamples, seed: 41 };
        const r = attentionMutualInformation(att, opts);
        const g = tf.grad((a: tf.Tensor) => attentionMutualInformation(a, opts).value)(att);
        const out = { value: (await r.value.data())[0]!, drawn: Array.from(await r.drawn.data()), grad: await g.data() };
        tf.dispose([att, r.value, r.drawn, g]);
        return out;
      });
      assert.deepEqual(cpu.drawn, c.drawn, 'cpu rows and samples');
      assert.deepEqual(webgpu.drawn, cpu.drawn, 'rows and samples');
      assert.ok(cpu.value !== 0, 'a non-trivial value');
      assert.ok(Math.abs(webgpu.value - cpu.value) <= TOL * Math.abs(cpu.value), `value ${webgpu.value} vs ${cpu.value}`);
      assert.ok(scaledDiff(webgpu.grad, cpu.grad) <= GRAD_TOL, `gradient: ${scaledDiff(webgpu.grad, cpu.grad)}`);
    });
  }

  test('nothing to draw (all zero) and a non-finite input: 0 and nanValue, as on cpu', async (t) => {
    const { cpu, webgpu } = await onBoth(async () => {
      const zeros = tf.zeros([4, 2, 2, 4, 4]);
      const inf = tf.tidy(() => tf.concat([tf.fill([1, 2, 2, 4, 4], Infinity), tf.fill([3, 2, 2, 4, 4], 0.25)]));
      const z = attentionMutualInformation(zeros, { ...AMI_DEFAULTS, seed: 1 });
      const gz = tf.grad((a: tf.Tensor) => attentionMutualInformation(a, { ...AMI_DEFAULTS, seed: 1 }).value)(zeros);
      const n = attentionMutualInformation(inf, { ...AMI_DEFAULTS, seed: 1, nanValue: 42 });
      const out = [(await z.value.data())[0], Array.from(await z.drawn.data()), Array.from(await gz.data()).every((v) => v === 0),
        (await n.value.data())[0]];
      tf.dispose([zeros, inf, z.value, z.drawn, gz, n.value, n.drawn]);
      return out;
    });
    assert.deepEqual(cpu, [0, [0, 0], true, 42]);
    if (SOFTWARE === null) {
      assert.deepEqual(webgpu, cpu);
    } else {
      // An Infinity input gives a finite AMI on SwiftShader, where IEEE arithmetic gives NaN: that case holds on
      // hardware adapters only (helpers.ts softwareWebgpuAdapter).
      assert.deepEqual(webgpu.slice(0, 3), cpu.slice(0, 3));
      t.diagnostic(`non-finite input not compared on the software adapter ${SOFTWARE}`);
    }
  });
});

/**
 * `f` (synchronous: every op runs inside it) with the AMI kernels on `backend`, and by the composed stock ops on cpu
 * (the reference), the tensor count checked stable on `backend`.
 */
async function hostAndComposed<T>(backend: 'cpu' | 'wasm', f: () => T): Promise<{ kernels: T; composed: T }> {
  await selectBackend('cpu');
  const composed = withComposedOps(f);
  await selectBackend(backend);
  const before = tf.memory().numTensors;
  const kernels = f();
  assert.equal(tf.memory().numTensors, before, `no tensor leaks on ${backend}`);
  await selectBackend('cpu');
  return { kernels, composed };
}

function rankedSync(valid: boolean[][], samples: number, seed: number): number[] {
  return tf.tidy(() => Array.from(rankSamplePositions(tf.tensor2d(valid.map((row) => row.map((b) => (b ? 1 : 0))), undefined, 'bool'), samples, seed).dataSync()));
}

for (const backend of ['cpu', 'wasm'] as const) {
  describe(`${backend} AMI kernels: the draw, value, drawn and gradient of the stock ops`, () => {
    test('draw: partial, empty and full rows; samples 1, some, all valid, N; equal keys split and ordered by index', async () => {
      const valid = DRAW_ROWS;
      for (const samples of DRAW_SAMPLES) {
        const { kernels, composed } = await hostAndComposed(backend, () => rankedSync(valid, samples, 17));
        assert.deepEqual(kernels, composed, `samples ${samples}`);
      }
      const { seed, p } = findTie(TIE_ROWS, AMI_DRAW_MAX_SAMPLES);
      for (const samples of [p + 1, p + 2]) {
        const { kernels, composed } = await hostAndComposed(backend, () => rankedSync(TIE_ROWS, samples, seed));
        assert.deepEqual(kernels, composed, `samples ${samples} (tie at ranks ${p}, ${p + 1}), seed ${seed}`);
      }
    });

    for (const c of cases) {
      test(`${c.name}: [${c.shape}], targetSamples ${c.targetSamples}`, async () => {
        const values = await paddedAttentions(c.shape, c.emptyRow);
        const { kernels, composed } = await hostAndComposed(backend, () => tf.tidy(() => {
          const att = tf.tensor(values, c.shape);
          const opts = { ...AMI_DEFAULTS, targetSamples: c.targetSamples, seed: 41 };
          const r = attentionMutualInformation(att, opts);
          const g = tf.grad((a: tf.Tensor) => attentionMutualInformation(a, opts).value)(att);
          return { value: r.value.dataSync()[0]!, drawn: Array.from(r.drawn.dataSync()), grad: g.dataSync() as Float32Array };
        }));
        assert.deepEqual(composed.drawn, c.drawn, 'stock rows and samples');
        assert.deepEqual(kernels.drawn, composed.drawn, 'rows and samples');
        assert.ok(composed.value !== 0, 'a non-trivial value');
        assert.ok(Math.abs(kernels.value - composed.value) <= TOL * Math.abs(composed.value), `value ${kernels.value} vs ${composed.value}`);
        assert.ok(scaledDiff(kernels.grad, composed.grad) <= GRAD_TOL, `gradient: ${scaledDiff(kernels.grad, composed.grad)}`);
      });
    }

    test('nothing to draw (all zero) and a non-finite input: 0 and nanValue, as the stock ops', async () => {
      const { kernels, composed } = await hostAndComposed(backend, () => tf.tidy(() => {
        const zeros = tf.zeros([4, 2, 2, 4, 4]);
        const inf = tf.concat([tf.fill([1, 2, 2, 4, 4], Infinity), tf.fill([3, 2, 2, 4, 4], 0.25)]);
        const z = attentionMutualInformation(zeros, { ...AMI_DEFAULTS, seed: 1 });
        const gz = tf.grad((a: tf.Tensor) => attentionMutualInformation(a, { ...AMI_DEFAULTS, seed: 1 }).value)(zeros);
        const n = attentionMutualInformation(inf, { ...AMI_DEFAULTS, seed: 1, nanValue: 42 });
        return [z.value.dataSync()[0], Array.from(z.drawn.dataSync()), Array.from(gz.dataSync()).every((v) => v === 0), n.value.dataSync()[0]];
      }));
      assert.deepEqual(composed, [0, [0, 0], true, 42]);
      assert.deepEqual(kernels, composed);
    });
  });
}
