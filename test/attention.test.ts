/**
 * kernels/attention: the fused kernels (probabilities and context forward; the gradients of q, k and v of a loss using
 * both outputs, so the probabilities' gradient is the sum of the context's and the loss's, as where AMI uses them)
 * against the composed ops, within 1e-5 (relative above 1): on cpu and wasm the host kernels (host.ts, where CBLAS
 * runs the host products), on webgpu the WGSL ones. Shapes exercise the webgpu kernels' blocks of 32: T = 3, 7, 12 and
 * 16 (one partial block) and 33 (a second block of one row and one key, two passes of the online softmax); 7 and 33 no
 * multiple of 4 (the host kernels' SIMD softmax loops with a row tail, and SIMD dropout's tail), 12 and 16 multiples
 * of 4 (those loops without a tail), 3 shorter than a vector (their JavaScript softmax loops); head sizes below and
 * above 32 (one and two inner steps), 2 to 4 heads; the
 * mask pads the tail of some rows and the whole of one (uniform probabilities); dropout off and at 0.1 (the same
 * mask as seededDropout's: the same probabilities dropped). On cpu without CBLAS, the composed ops with the split
 * into heads as one kernel (and its gradient as one) give the stock ops' values bit for bit. On every backend, the
 * op leaks no tensors. webgpu cases are skipped (with the reason) where no WebGPU adapter exists, the host kernels'
 * where no CBLAS library is installed (outside CI).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  ATTENTION, ATTENTION_CONTEXT, ATTENTION_CONTEXT_GRAD, ATTENTION_GRAD, ATTENTION_PROBS, ATTENTION_PROBS_GRAD, MERGE_HEADS, selfAttention,
  selfAttentionContext, SPLIT_HEADS,
  type AttentionOptions,
} from '../src/kernels/attention/index.js';
import { NATIVE_GEMM_ENV, parseNativeGemmChoice, useNativeGemm, type NativeGemmChoice } from '../src/kernels/stock/index.js';
import { selectBackend } from '../src/model/backend.js';
import { tf } from '../src/model/tf.js';
import { computedBy, maxScaledDiff, seededValues, SKIP_NO_CBLAS, webgpuSkipReason, withWebgpuPrograms } from './helpers.js';

const TOL = 1e-5;
/** The additive mask value at padding (bert.ts). */
const MASK_VALUE = -3.4028234663852886e38;
const SEED = 1234;

const WEBGPU_SKIP = await webgpuSkipReason();

interface Case {
  B: number;
  T: number;
  heads: number;
  dh: number;
  rate: number;
}

const CASES: Case[] = [
  { B: 3, T: 7, heads: 2, dh: 8, rate: 0 },
  { B: 3, T: 7, heads: 3, dh: 20, rate: 0.1 },
  { B: 3, T: 33, heads: 4, dh: 40, rate: 0 },
  { B: 3, T: 33, heads: 2, dh: 16, rate: 0.1 },
  { B: 3, T: 12, heads: 2, dh: 8, rate: 0.1 },
  { B: 2, T: 16, heads: 3, dh: 20, rate: 0 },
  { B: 3, T: 3, heads: 2, dh: 8, rate: 0.1 },
];

/** Real-token counts per row: B - 1 rows padded at the tail by varying amounts, the last row fully padded. */
function attentionMask(B: number, T: number): tf.Tensor4D {
  const m = new Float32Array(B * T);
  for (let b = 0; b < B; b++) {
    const real = b === B - 1 ? 0 : T - ((b * 3) % Math.max(1, T - 1));
    for (let t = 0; t < T; t++) m[b * T + t] = t < real ? 0 : MASK_VALUE;
  }
  return tf.tensor4d(m, [B, 1, 1, T]);
}

/**
 * context, probs and the q, k and v parts of d/dqkv of sum(context * w1) + sum(probs * w2), flattened, for q, k, v
 * packed side by side in qkv [B, T, 3H]; tensors disposed.
 */
async function run(c: Case): Promise<Float32Array[]> {
  const H = c.heads * c.dh;
  const n = c.B * c.T * H;
  const parts = [1, 2, 3].map((s) => tf.tensor3d(seededValues(n, s), [c.B, c.T, H]));
  const qkv = tf.concat(parts, 2) as tf.Tensor3D; // [B, T, 3H]
  const mask = attentionMask(c.B, c.T);
  const w1 = tf.tensor3d(seededValues(n, 4), [c.B, c.T, H]);
  const w2 = tf.tensor4d(seededValues(c.B * c.heads * c.T * c.T, 5), [c.B, c.heads, c.T, c.T]);
  const opts: AttentionOptions = { heads: c.heads, scale: 1 / Math.sqrt(c.dh), rate: c.rate, seed: SEED };
  const attend = (x: tf.Tensor) => selfAttention(x as tf.Tensor3D, mask, opts);
  const results = tf.tidy(() => {
    const { context, probs } = attend(qkv);
    const [dqkv] = tf.grads((x: tf.Tensor) => {
      const o = attend(x);
      return tf.add(tf.sum(tf.mul(o.context, w1)), tf.sum(tf.mul(o.probs, w2)));
    })([qkv]);
    return [context, probs, ...tf.split(dqkv!, 3, 2)];
  });
  const data = await Promise.all(results.map(async (t) => Float32Array.from((await t.data()) as Float32Array)));
  tf.dispose([...parts, qkv, mask, w1, w2, ...results]);
  return data;
}

const NAMES = ['context', 'probs', 'dq', 'dk', 'dv'];

/**
 * Runs `f`, counting the zero arrays the engine makes for the gradient of a kernel output that nothing read (a
 * makeTensor of [B, nh, T, T] zeros: the attention probabilities' shape) until `count()` is called.
 */
function countZeroGradients<T>(f: () => T): { result: T; count: () => number } {
  const engine = tf.engine() as unknown as { makeTensor: (values: unknown, shape: number[], dtype: string) => tf.Tensor };
  const makeTensor = engine.makeTensor;
  let made = 0;
  engine.makeTensor = function (this: unknown, values, shape, dtype) {
    if (shape.length === 4 && values instanceof Float32Array && values.every((v) => v === 0)) made++;
    return makeTensor.call(this, values, shape, dtype);
  };
  const result = f();
  return { result, count: () => { engine.makeTensor = makeTensor; return made; } };
}
/** The host's one op and its gradient; the webgpu kernels' four (their programs are checked by name below). */
const HOST_KERNELS = [ATTENTION, ATTENTION_GRAD];
const WEBGPU_KERNELS = [ATTENTION_PROBS, ATTENTION_CONTEXT, ATTENTION_CONTEXT_GRAD, ATTENTION_PROBS_GRAD];

/** `f` with the host products on `choice`'s engine, then back on the one the environment chooses (backend.ts). */
async function withHostProducts<T>(choice: NativeGemmChoice, f: () => Promise<T>): Promise<T> {
  useNativeGemm(choice);
  try {
    return await f();
  } finally {
    useNativeGemm(parseNativeGemmChoice(process.env[NATIVE_GEMM_ENV]));
  }
}

/** Each output within TOL of the reference; with dropout, the probabilities dropped at the same places. */
function assertMatches(got: Float32Array[], ref: Float32Array[], rate: number): void {
  got.forEach((v, i) => {
    const d = maxScaledDiff(v, ref[i]!);
    assert.ok(d < TOL, `${NAMES[i]}: ${d}`);
  });
  if (rate > 0) got[1]!.forEach((p, i) => assert.equal(p === 0, ref[1]![i] === 0, `probs element ${i}: ${p} vs ${ref[1]![i]}`));
}

describe('selfAttention', () => {
  for (const c of CASES) {
    const label = `B ${c.B}, T ${c.T}, ${c.heads} heads of ${c.dh}, dropout ${c.rate}`;

    for (const backend of ['cpu', 'wasm'] as const) {
      test(`${backend} ${label}: rows of the undropped probabilities sum to 1, padded keys get 0, no tensor leaks`, async () => {
        await selectBackend(backend);
        const before = tf.memory().numTensors;
        const [, probs] = await run({ ...c, rate: 0 });
        assert.equal(tf.memory().numTensors, before, 'no tensor leaks');
        const mask = attentionMask(c.B, c.T);
        const m = mask.dataSync();
        mask.dispose();
        for (let b = 0; b < c.B; b++) {
          const fullyPadded = b === c.B - 1;
          for (let h = 0; h < c.heads; h++) {
            for (let i = 0; i < c.T; i++) {
              const row = probs!.subarray(((b * c.heads + h) * c.T + i) * c.T, ((b * c.heads + h) * c.T + i + 1) * c.T);
              assert.ok(Math.abs(row.reduce((s, x) => s + x, 0) - 1) < 1e-5, 'rows sum to 1');
              row.forEach((p, j) => {
                if (fullyPadded) assert.ok(Math.abs(p - 1 / c.T) < 1e-6, 'a fully padded row is uniform');
                else if (m[b * c.T + j] !== 0) assert.equal(p, 0, 'padded keys get 0');
              });
            }
          }
        }
      });

      test(`${backend} (fused host kernels) ${label}: context, probs and the gradients of q, k, v match the composed ops within ${TOL}`,
        { skip: SKIP_NO_CBLAS }, async () => {
          await selectBackend(backend);
          const got = await withHostProducts('cblas', async () => {
            const before = tf.memory().numTensors;
            const profile = await tf.profile(() => run(c));
            assert.equal(tf.memory().numTensors, before, 'no tensor leaks');
            for (const k of HOST_KERNELS) assert.ok(profile.kernelNames.includes(k), `${k} ran: ${profile.kernelNames}`);
            for (const k of [...WEBGPU_KERNELS, SPLIT_HEADS, MERGE_HEADS, 'Softmax', 'Transpose']) assert.ok(!profile.kernelNames.includes(k), `${k} ran: ${profile.kernelNames}`);
            return run(c);
          });
          const ref = await computedBy('composite', () => run(c));
          assertMatches(got, ref, c.rate);
        });
    }

    test(`cpu without CBLAS ${label}: the composed ops run; the split into heads as one kernel (and its gradient as one) gives the stock split and transposes' values bit for bit`, async () => {
      await selectBackend('cpu');
      await withHostProducts('off', async () => {
        const before = tf.memory().numTensors;
        const profile = await tf.profile(() => run(c));
        assert.equal(tf.memory().numTensors, before, 'no tensor leaks');
        for (const k of [SPLIT_HEADS, MERGE_HEADS]) assert.ok(profile.kernelNames.includes(k), `${k} ran: ${profile.kernelNames}`);
        for (const k of [...HOST_KERNELS, ...WEBGPU_KERNELS]) assert.ok(!profile.kernelNames.includes(k), `${k} ran: ${profile.kernelNames}`);
        assert.equal(profile.kernelNames.filter((k) => k === 'SplitV').length, 1, 'one stock split ran (the test\'s own, of dqkv)');
        const ref = await computedBy('composite', () => run(c));
        const got = await run(c);
        got.forEach((v, i) => assert.deepEqual(v, ref[i], `${NAMES[i]} differs`));
      });
    });

    for (const backend of ['cpu', 'wasm'] as const) {
      test(`${backend} ${label}: selfAttentionContext gives selfAttention's context and gradient of qkv bit for bit, and makes no zero gradient of the probabilities`, async () => {
        await selectBackend(backend);
        const H = c.heads * c.dh;
        const n = c.B * c.T * H;
        const qkv = tf.concat([1, 2, 3].map((s) => tf.tensor3d(seededValues(n, s), [c.B, c.T, H])), 2) as tf.Tensor3D;
        const mask = attentionMask(c.B, c.T);
        const w = tf.tensor3d(seededValues(n, 4), [c.B, c.T, H]);
        const opts: AttentionOptions = { heads: c.heads, scale: 1 / Math.sqrt(c.dh), rate: c.rate, seed: SEED };
        const both = async (attend: (x: tf.Tensor3D) => tf.Tensor3D): Promise<Float32Array[]> => {
          const [context, dqkv] = tf.tidy(() => [attend(qkv), tf.grad((x: tf.Tensor) => tf.sum(tf.mul(attend(x as tf.Tensor3D), w)))(qkv)]);
          const out = await Promise.all([context!, dqkv!].map(async (t) => Float32Array.from((await t.data()) as Float32Array)));
          tf.dispose([context!, dqkv!]);
          return out;
        };
        const want = await both((x) => selfAttention(x, mask, opts).context);
        const before = tf.memory().numTensors;
        const zeros = countZeroGradients(() => both((x) => selfAttentionContext(x, mask, opts)));
        const got = await zeros.result;
        assert.equal(tf.memory().numTensors, before, 'no tensor leaks');
        assert.equal(zeros.count(), 0, 'no gradient of an output nothing read was made');
        got.forEach((v, i) => assert.deepEqual(v, want[i], `${['context', 'dqkv'][i]} differs`));
        tf.dispose([qkv, mask, w]);
      });
    }

    test(`webgpu (fused) ${label}: context, probs and the gradients of q, k, v match the composed ops on cpu within ${TOL}`,
      { skip: WEBGPU_SKIP }, async () => {
        await selectBackend('cpu');
        const ref = await computedBy('composite', () => run(c));
        await selectBackend('webgpu');
        const before = tf.memory().numTensors;
        const { result: got, programs } = await withWebgpuPrograms(() => run(c));
        const seen = new Set(programs);
        assert.equal(tf.memory().numTensors, before, 'no tensor leaks');
        await selectBackend('cpu');
        for (const key of ['micseAttentionProbs', 'micseAttentionContext', 'micseAttentionDScores',
          'micseAttentionDqDk', 'micseAttentionDProbsDv']) {
          assert.ok(seen.has(key), `the fused kernel ${key} ran`);
        }
        const backward = ['micseAttentionDScores', 'micseAttentionDqDk', 'micseAttentionDProbsDv'];
        assert.equal(programs.filter((p) => backward.includes(p)).length, 3, `3 dispatches backward: ${programs.join(', ')}`);
        assert.ok(!seen.has('softmax') && !seen.has('transpose'), 'no stock softmax or transpose ran');
        assertMatches(got, ref, c.rate);
      });
  }
});
