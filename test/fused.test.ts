/**
 * fused.ts: LayerNorm and GELU kernels (forward and every gradient) against the same math composed of stock ops
 * on the cpu backend, on cpu, wasm and (where a WebGPU adapter exists; skipped with the reason otherwise) webgpu.
 * Rows of several sizes exercise the workgroup loops (H below, equal to and above the 64 threads of a row), and
 * more than 64 rows the chunked column sums of the webgpu backward pass. On cpu and wasm the same shapes exercise
 * the WebAssembly SIMD loops (hostSimd.ts): H % 4 != 0 (the JavaScript fallback), element counts % 4 != 0 (the
 * scalar tail), several 64-row blocks of the LayerNorm backward pass and, with > 2^18 elements, several chunks of
 * the cpu backend's staging memory; GELU also at extreme arguments (exp's cut-off, signed zeros, +-1e30).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { selectBackend } from '../src/model/backend.js';
import { gelu, layerNorm } from '../src/model/fused.js';
import { stagingSimdHost } from '../src/model/hostSimd.js';
import { tf } from '../src/model/tf.js';
import { seededValues, webgpuSkipReason } from './helpers.js';

const TOL = 1e-5;

const BACKENDS = ['cpu', 'wasm', ...((await webgpuSkipReason()) === false ? ['webgpu' as const] : [])] as const;

type Fn = (x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor) => tf.Tensor;

const composedLayerNorm = (eps: number): Fn => (x, gamma, beta) => {
  const { mean, variance } = tf.moments(x, -1, true);
  return tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, eps))), gamma), beta);
};
const composedGelu: Fn = (x) => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2))));

/** Output and gradients (w.r.t. x, and gamma/beta when `withParams`) of sum(f(x) * dy), flattened. */
async function outputs(f: Fn, shape: number[], withParams: boolean): Promise<Float32Array[]> {
  const H = shape[shape.length - 1]!;
  const n = shape.reduce((a, b) => a * b, 1);
  const x = tf.tidy(() => tf.add(tf.mul(tf.tensor(seededValues(n, 1), shape), 3), 0.5));
  const gamma = tf.tidy(() => tf.add(tf.tensor(seededValues(H, 2)), 1));
  const beta = tf.tensor(seededValues(H, 3));
  const dy = tf.tensor(seededValues(n, 4), shape);
  const loss = (a: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(f(a, g, b), dy));
  const results = tf.tidy(() => [
    f(x, gamma, beta),
    ...(withParams ? tf.grads(loss)([x, gamma, beta]) : [tf.grad((a: tf.Tensor) => loss(a, gamma, beta))(x)]),
  ]);
  const data = await Promise.all(results.map(async (t) => Float32Array.from((await t.data()) as Float32Array)));
  tf.dispose([x, gamma, beta, dy, ...results]);
  return data;
}

/**
 * max |a - b| / max(1, max |b|): absolute below 1, relative above. dgamma and dbeta are float32 sums over the rows
 * in different orders (each backend's reduction), so their error grows with their size (~2.5e-5 absolute for
 * sums near 20 over 525 rows).
 */
function maxScaledDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  let scale = 1;
  for (let i = 0; i < a.length; i++) {
    m = Math.max(m, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return m / scale;
}

describe('fused LayerNorm and GELU match the composed ops', () => {
  // [3, 50, 40]: 150 rows, 3 column-sum chunks; [3, 175, 512]: 268,800 elements, 2 staging chunks of 512 rows
  const shapes = [[7, 5], [2, 3, 64], [4, 9, 200], [3, 50, 40], [3, 175, 512]];
  for (const backend of BACKENDS) {
    for (const shape of shapes) {
      test(`${backend} [${shape}]: layerNorm (y, dx, dgamma, dbeta) and gelu (y, dx) within ${TOL} (relative above 1)`, async () => {
        const names = ['y', 'dx', 'dgamma', 'dbeta'];
        await selectBackend('cpu');
        const refLn = await outputs(composedLayerNorm(1e-12), shape, true);
        const refGelu = await outputs(composedGelu, shape, false);
        await selectBackend(backend);
        const before = tf.memory().numTensors;
        const ln = await outputs((x, g, b) => layerNorm(x, g, b, 1e-12), shape, true);
        const ge = await outputs((x) => gelu(x), shape, false);
        assert.equal(tf.memory().numTensors, before, 'no tensor leaks');
        await selectBackend('cpu');
        ln.forEach((v, i) => assert.ok(maxScaledDiff(v, refLn[i]!) < TOL, `layerNorm ${names[i]}: ${maxScaledDiff(v, refLn[i]!)}`));
        ge.forEach((v, i) => assert.ok(maxScaledDiff(v, refGelu[i]!) < TOL, `gelu ${names[i]}: ${maxScaledDiff(v, refGelu[i]!)}`));
      });
    }
  }

  for (const backend of BACKENDS) {
    test(`${backend}: the fused kernels are the ones that run (forward and gradient), not the composed fallback`, async () => {
      await selectBackend(backend);
      const x = tf.tensor(seededValues(4 * 8, 1), [4, 8]);
      const g = tf.ones([8]);
      const b = tf.zeros([8]);
      const info = await tf.profile(() => tf.tidy(() => [
        ...tf.grads((a: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => tf.sum(layerNorm(a, gg, bb, 1e-12)))([x, g, b]),
        tf.grad((a: tf.Tensor) => tf.sum(gelu(a)))(x),
      ]));
      tf.dispose(info.result as tf.Tensor[]);
      tf.dispose([x, g, b]);
      await selectBackend('cpu');
      for (const k of ['MicseLayerNorm', 'MicseLayerNormGrad', 'MicseGelu', 'MicseGeluGrad']) {
        assert.ok(info.kernelNames.includes(k), `${k} did not run on ${backend}; ran: ${info.kernelNames.join(', ')}`);
      }
    });
  }

  test('wasm SIMD compiles here, so the cpu and wasm kernels above ran the SIMD loops', () => {
    assert.notEqual(stagingSimdHost(), null);
  });

  for (const backend of ['cpu', 'wasm'] as const) {
    test(`${backend}: gelu and its gradient at extreme arguments match the composed ops`, async () => {
      const xs = Float32Array.from([-1e30, -60, -13.2, -12, -9.5, -5, -1e-8, -0, 0, 1e-8, 0.7, 5, 9.5, 12, 13.2, 60, 1e30, 3e38, -3e38, 2]);
      const run = (f: (x: tf.Tensor) => tf.Tensor): Promise<Float32Array[]> => {
        const x = tf.tensor(xs);
        const [y, dx] = tf.tidy(() => [f(x), tf.grad(f)(x)]);
        return Promise.all([y!, dx!].map(async (t) => Float32Array.from((await t.data()) as Float32Array)))
          .finally(() => tf.dispose([x, y!, dx!]));
      };
      await selectBackend('cpu');
      const ref = await run((x) => composedGelu(x, x, x));
      await selectBackend(backend);
      const got = await run((x) => gelu(x));
      await selectBackend('cpu');
      for (const [k, name] of ['y', 'dx'].entries()) {
        xs.forEach((v, i) => {
          const [a, b] = [got[k]![i]!, ref[k]![i]!];
          assert.ok(Math.abs(a - b) <= TOL * Math.max(1, Math.abs(b)), `gelu ${name}(${v}): ${a} vs ${b}`);
        });
      }
    });
  }

  test('layerNorm rejects gamma/beta of the wrong size, naming the shapes', () => {
    const x = tf.zeros([2, 4]);
    const g = tf.ones([3]);
    assert.throws(() => layerNorm(x, g, g, 1e-12), /gamma and beta must be \[4\] for x of shape \[2,4\]; got \[3\]/);
    tf.dispose([x, g]);
  });
});
