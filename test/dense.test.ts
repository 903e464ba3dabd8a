/**
 * kernels/dense: on cpu and on wasm with CBLAS (the product with the bias added in place) the value and the gradients with respect to x, W
 * and b of `dense(x, W, b)` equal the stock MatMul + Add's bit for bit; on webgpu (the fused product and the
 * one-dispatch column sum of the bias gradient) they equal cpu's stock MatMul + Add within 1e-5 relative to the
 * tensor's largest magnitude. Shapes exercise the column-sum kernel's workgroup (8 columns x 32
 * row lanes): rows below, between and above multiples of 32, columns not a multiple of 4 or 8 and across several
 * workgroups. On both backends the op leaks no tensors. webgpu cases are skipped (with the reason) where no WebGPU
 * adapter exists.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { selectBackend } from '../src/model/backend.js';
import { dense, DENSE } from '../src/kernels/dense/index.js';
import { tf } from '../src/model/tf.js';
import { computedBy, maxScaledDiff, seededValues, SKIP_NO_CBLAS, webgpuSkipReason, withWebgpuPrograms } from './helpers.js';

const TOL = 1e-5;

const WEBGPU_SKIP = await webgpuSkipReason();

interface Case {
  N: number;
  inDim: number;
  outDim: number;
}

const CASES: Case[] = [
  { N: 7, inDim: 5, outDim: 3 },
  { N: 45, inDim: 16, outDim: 13 },
  { N: 300, inDim: 64, outDim: 70 },
  { N: 1031, inDim: 24, outDim: 771 },
];

const NAMES = ['y', 'dx', 'dW', 'db'];

/** y and its gradients wrt x, W, b for the upstream gradient dy (seeded), flattened; tensors disposed. */
async function run(c: Case): Promise<Float32Array[]> {
  const x = tf.tensor2d(seededValues(c.N * c.inDim, 1), [c.N, c.inDim]);
  const w = tf.tensor2d(seededValues(c.inDim * c.outDim, 2), [c.inDim, c.outDim]);
  const b = tf.tensor1d(seededValues(c.outDim, 3));
  const dy = tf.tensor2d(seededValues(c.N * c.outDim, 4), [c.N, c.outDim]);
  const results = tf.tidy(() => {
    const grads = tf.grads((xi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor) =>
      dense(xi as tf.Tensor2D, wi as tf.Tensor2D, bi as tf.Tensor1D))([x, w, b], dy);
    return [dense(x, w, b), ...grads];
  });
  const data = await Promise.all(results.map(async (t) => Float32Array.from((await t.data()) as Float32Array)));
  tf.dispose([x, w, b, dy, ...results]);
  return data;
}

describe('dense', () => {
  for (const c of CASES) {
    const label = `x [${c.N}, ${c.inDim}], W [${c.inDim}, ${c.outDim}]`;

    for (const host of ['cpu', 'wasm'] as const) {
      test(`${host} ${label}: y and the gradients of x, W, b equal the stock MatMul + Add's bit for bit, with the kernel; no tensor leaks`,
        { skip: host === 'wasm' ? SKIP_NO_CBLAS : false }, async () => {
          await selectBackend(host);
          const before = tf.memory().numTensors;
          const profile = await tf.profile(() => run(c));
          assert.equal(tf.memory().numTensors, before, 'no tensor leaks');
          assert.ok(profile.kernelNames.includes(DENSE), `the ${host} kernel ran: ${profile.kernelNames}`);
          const ref = await computedBy('composite', () => run(c));
          const got = await run(c);
          got.forEach((v, i) => assert.deepEqual(v, ref[i], `${NAMES[i]} differs`));
        });
    }

    test(`webgpu ${label}: y and the gradients of x, W, b match cpu within ${TOL}; the bias gradient is one column sum, `
      + `W is transposed once (dx's product without the transpose flag)`,
      { skip: WEBGPU_SKIP }, async () => {
        await selectBackend('cpu');
        const ref = await computedBy('composite', () => run(c));
        await selectBackend('webgpu');
        const before = tf.memory().numTensors;
        const { result: got, programs: seen } = await withWebgpuPrograms(() => run(c));
        assert.equal(tf.memory().numTensors, before, 'no tensor leaks');
        await selectBackend('cpu');
        assert.equal(seen.filter((k) => k === 'micseColumnSum').length, 1, 'the bias gradient ran as one column sum');
        assert.ok(!seen.some((k) => k.startsWith('reduce')), `no stock reduction ran: ${seen}`);
        assert.equal(seen.filter((k) => k.startsWith('transpose')).length, 1, `one transpose (W's, for dx): ${seen}`);
        got.forEach((v, i) => {
          const d = maxScaledDiff(v, ref[i]!, 0); // floor 0: relative to the reference's largest magnitude
          assert.ok(d < TOL, `${NAMES[i]}: ${d}`);
        });
      });
  }
});
