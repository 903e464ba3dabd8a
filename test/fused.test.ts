/**
 * kernels/layerNorm: LayerNorm and GELU kernels (forward and every gradient) against the same math composed of stock ops
 * on the cpu backend, on cpu, wasm and (where a WebGPU adapter exists; skipped with the reason otherwise) webgpu.
 * Rows of several sizes exercise the workgroup loops (H below, equal to and above the 64 threads of a row), and
 * more than 64 rows the chunked column sums of the webgpu backward pass. On cpu and wasm the same shapes exercise
 * the WebAssembly SIMD loops (hostSimd.ts): H % 4 != 0 (the JavaScript fallback), element counts % 4 != 0 (the
 * scalar tail), several 64-row blocks of the LayerNorm backward pass and, with > 2^18 elements, several chunks of
 * the cpu backend's staging memory; GELU also at extreme arguments (exp's cut-off, signed zeros, +-1e30); the
 * loops on a shared memory (the threaded wasm build's heap in a cross-origin isolated page) as on an unshared one.
 * addLayerNorm (LayerNorm(dropout(x) + residual)), with and without dropout: on cpu and wasm its kernels give the very
 * numbers of seededDropout + tf.add + layerNorm, on webgpu its fused kernels within TOL of cpu (value and the gradients with
 * respect to x, residual, gamma and beta); and how many dispatches the webgpu LayerNorm kernels issue.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { selectBackend } from '../src/model/backend.js';
import { gelu } from '../src/kernels/gelu/index.js';
import { addLayerNorm, layerNorm, RESIDUAL_LAYER_NORM, RESIDUAL_LAYER_NORM_GRAD } from '../src/kernels/layerNorm/index.js';
import { heapSimdHost, simdGelu, simdLayerNorm, stagingSimdHost } from '../src/kernels/platform/hostSimd.js';
import { seededDropout } from '../src/kernels/dropout/index.js';
import { tf } from '../src/model/tf.js';
import { maxScaledDiff, seededValues, webgpuSkipReason, withWebgpuPrograms } from './helpers.js';

/**
 * Bound on maxScaledDiff (helpers.ts: absolute below 1, relative above). dgamma and dbeta are float32 sums over
 * the rows in different orders (each backend's reduction), so their error grows with their size (~2.5e-5 absolute
 * for sums near 20 over 525 rows).
 */
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

  test('the SIMD loops run on a shared memory (the threaded wasm build\'s heap) and give the bits they give on an unshared one', () => {
    const n = 4096;
    const run = (memory: WebAssembly.Memory): Float32Array[] => {
      const host = heapSimdHost(memory);
      assert.notEqual(host, null, `no SIMD loops on a ${memory.buffer.constructor.name} memory`);
      const x = new Float32Array(memory.buffer, 0, n);
      x.set(seededValues(n, 7).map((v) => 4 * v));
      const y = new Float32Array(memory.buffer, 4 * n, n);
      const ln = new Float32Array(memory.buffer, 8 * n, n);
      const gamma = new Float32Array(memory.buffer, 12 * n, 64).fill(1.5);
      const beta = new Float32Array(memory.buffer, 12 * n + 256, 64).fill(-0.25);
      assert.equal(simdGelu(host!, x, y), n);
      simdLayerNorm(host!, x, gamma, beta, 1e-12, ln);
      return [y.slice(), ln.slice()];
    };
    const shared = new WebAssembly.Memory({ initial: 1, maximum: 4, shared: true });
    assert.ok(shared.buffer instanceof SharedArrayBuffer);
    const [sharedY, sharedLn] = run(shared);
    const [y, ln] = run(new WebAssembly.Memory({ initial: 1 }));
    assert.deepEqual(sharedY, y);
    assert.deepEqual(sharedLn, ln);
    assert.ok(y!.some((v) => v !== 0) && ln!.some((v) => v !== 0));
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

});

/** Dropout settings of the addLayerNorm cases: none (rate 0, the seed unused), and BERT's hidden dropout. */
const DROPOUTS = [{ rate: 0, seed: 5 }, { rate: 0.1, seed: 7 }, { rate: 0.5, seed: 123456789 }];

type AddLnFn = (x: tf.Tensor, residual: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor) => tf.Tensor;

/** Output and gradients w.r.t. x, residual, gamma and beta of sum(f(..) * dy), flattened. */
async function addLnOutputs(f: AddLnFn, shape: number[]): Promise<Float32Array[]> {
  const H = shape[shape.length - 1]!;
  const n = shape.reduce((a, b) => a * b, 1);
  const inputs = tf.tidy(() => [
    tf.add(tf.mul(tf.tensor(seededValues(n, 1), shape), 3), 0.5), // x
    tf.tensor(seededValues(n, 5), shape), // residual
    tf.add(tf.tensor(seededValues(H, 2)), 1), // gamma
    tf.tensor(seededValues(H, 3)), // beta
  ]);
  const dy = tf.tensor(seededValues(n, 4), shape);
  const results = tf.tidy(() => {
    const [x, residual, gamma, beta] = inputs as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
    return [
      f(x, residual, gamma, beta),
      ...tf.grads((a: tf.Tensor, r: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(f(a, r, g, b), dy)))(inputs),
    ];
  });
  const data = await Promise.all(results.map(async (t) => Float32Array.from((await t.data()) as Float32Array)));
  tf.dispose([...inputs, dy, ...results]);
  return data;
}

describe('addLayerNorm = LayerNorm(dropout(x) + residual)', () => {
  // [7, 5]: H odd, fewer rows than a column chunk; [2, 33, 130]: H % 4 != 0 above the 64 threads of a row, 66 rows;
  // [3, 50, 40]: 150 rows, several column chunks and a partial last one
  const shapes = [[7, 5], [2, 33, 130], [3, 50, 40]];
  const names = ['y', 'dx', 'dresidual', 'dgamma', 'dbeta'];
  const eps = 1e-12;

  for (const backend of ['cpu', 'wasm'] as const) {
    for (const d of DROPOUTS) {
      test(`${backend}, rate ${d.rate}: its kernels give the numbers of seededDropout + tf.add + layerNorm exactly`, async () => {
        await selectBackend(backend);
        // and [2, 700, 200]: H % 4 == 0 over several row chunks of the SIMD loops and of the cpu staging memory
        for (const shape of [...shapes, [2, 700, 200]]) {
          const want = await addLnOutputs((x, r, g, b) => layerNorm(tf.add(seededDropout(x, d.rate, d.seed), r), g, b, eps), shape);
          const before = tf.memory().numTensors;
          const profile = await tf.profile(async () => addLnOutputs((x, r, g, b) => addLayerNorm(x, r, g, b, eps, d), shape));
          const got = profile.result as Float32Array[];
          assert.equal(tf.memory().numTensors, before, 'no tensor leaks');
          assert.ok([RESIDUAL_LAYER_NORM, RESIDUAL_LAYER_NORM_GRAD].every((k) => profile.kernelNames.includes(k)), `the kernels ran: ${profile.kernelNames}`);
          got.forEach((v, i) => assert.deepEqual(v, want[i], `[${shape}] ${names[i]}`));
        }
        await selectBackend('cpu');
      });
    }
  }

  for (const backend of BACKENDS.filter((b) => b !== 'cpu')) {
    for (const d of DROPOUTS) {
      for (const shape of shapes) {
        test(`${backend}, rate ${d.rate} [${shape}]: y, dx, dresidual, dgamma, dbeta within ${TOL} of cpu (relative above 1)`, async () => {
          await selectBackend('cpu');
          const ref = await addLnOutputs((x, r, g, b) => addLayerNorm(x, r, g, b, eps, d), shape);
          await selectBackend(backend);
          const before = tf.memory().numTensors;
          const got = await addLnOutputs((x, r, g, b) => addLayerNorm(x, r, g, b, eps, d), shape);
          assert.equal(tf.memory().numTensors, before, 'no tensor leaks');
          await selectBackend('cpu');
          got.forEach((v, i) => assert.ok(maxScaledDiff(v, ref[i]!) < TOL, `${names[i]}: ${maxScaledDiff(v, ref[i]!)}`));
          if (d.rate > 0) {
            // the mask is seededDropout's: dropped elements of x get exactly zero gradient on both backends
            const dropped = ref[1]!.reduce((c, v, i) => c + (v === 0 && got[1]![i] === 0 ? 1 : 0), 0);
            assert.ok(dropped > 0, 'some elements dropped');
          }
        });
      }
    }
  }

  test('addLayerNorm rejects x and residual of different shapes', () => {
    const x = tf.zeros([2, 4]);
    const r = tf.zeros([4, 2]);
    const g = tf.ones([4]);
    assert.throws(() => addLayerNorm(x, r, g, g, 1e-12, { rate: 0, seed: 0 }), /x and residual must have one shape/);
    tf.dispose([x, r, g]);
  });
});

describe('webgpu LayerNorm kernels: dispatches', { skip: await webgpuSkipReason() }, () => {
  /** WebGPU programs `f` runs (f's tensors disposed). */
  async function dispatches(f: () => tf.Tensor[]): Promise<number> {
    const { result, programs } = await withWebgpuPrograms(() => tf.tidy(f));
    tf.dispose(result);
    return programs.length;
  }

  test('layerNorm 1 forward, 3 backward; addLayerNorm 1 forward, 3 backward (x\'s gradient, the dropout of ds, included)', async () => {
    await selectBackend('webgpu');
    const [x, r, dy] = [1, 2, 3].map((seed) => tf.tensor(seededValues(150 * 40, seed), [150, 40]));
    const g = tf.ones([40]);
    const attrs = { eps: 1e-12 };
    const counts = {
      layerNorm: await dispatches(() => [layerNorm(x!, g, g, 1e-12)]),
      layerNormGrad: await dispatches(() => tf.engine().runKernel('MicseLayerNormGrad', { x: x!, gamma: g, dy: dy! }, attrs) as tf.Tensor[]),
      addLayerNorm: await dispatches(() => [addLayerNorm(x!, r!, g, g, 1e-12, { rate: 0.1, seed: 1 })]),
      addLayerNormGrad: await dispatches(() => tf.engine().runKernel('MicseAddLayerNormGrad', { x: x!, residual: r!, gamma: g, dy: dy! },
        { ...attrs, rate: 0.1, seed: 1 }) as tf.Tensor[]),
    };
    tf.dispose([x!, r!, dy!, g]);
    await selectBackend('cpu');
    assert.deepEqual(counts, { layerNorm: 1, layerNormGrad: 3, addLayerNorm: 1, addLayerNormGrad: 3 });
  });
});

describe('fused LayerNorm: argument checks', () => {
  test('layerNorm rejects gamma/beta of the wrong size, naming the shapes', () => {
    const x = tf.zeros([2, 4]);
    const g = tf.ones([3]);
    assert.throws(() => layerNorm(x, g, g, 1e-12), /gamma and beta must be \[4\] for x of shape \[2,4\]; got \[3\]/);
    tf.dispose([x, g]);
  });
});
