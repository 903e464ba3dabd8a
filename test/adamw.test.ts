/**
 * The fused AdamW kernels (src/kernels/adamw/index.ts) against the composite TF.js ops they replace, on cpu and
 * wasm (bit for bit) and webgpu (within 1e-5 relative): parameters, both moments and the returned gradient norm
 * after several steps, with weight decay on and off and clipping active, inactive and off; plus a flat tensor count,
 * the fused norm of arbitrary gradients against a float64 one, and the loss gate (a non-finite gate leaves p, m
 * and v as they were, a finite one changes nothing).
 *
 * The update comparisons use gradients on a 1/64 grid (|g| <= 1/4): their squares and every partial sum of them
 * are exact in float32, so every summation order gives the same norm and the comparison is of the update
 * arithmetic. (With arbitrary gradients the stock wasm Sum, a sequential float32 sum, is itself ~4e-6 off over 77k
 * elements, while the fused norm sums in double.)
 * webgpu runs where `selectBackend('webgpu')` finds an adapter (locally: `source scratch/lvp.env` for lavapipe).
 */
import assert from 'node:assert/strict';
import { after, describe, it, type TestContext } from 'node:test';
import { selectBackend } from '../src/model/backend.js';
import { tf } from '../src/model/tf.js';
import { AdamW } from '../src/train/adamw.js';
import { fusedGradNorm, type AdamWStepScalars } from '../src/kernels/adamw/index.js';
import { NATIVE_GEMM_ENV, parseNativeGemmChoice, useNativeGemm } from '../src/kernels/stock/index.js';
import { adamwHost, clipCoefficient, gradNormHost } from '../src/kernels/adamw/host.js';
import { simdFor, SIMD_LANES } from '../src/kernels/adamw/simd.js';
import { computedBy, type Implementation } from './helpers.js';

/**
 * Shapes chosen to exercise the kernels' edges: sizes not a multiple of a workgroup nor of the 4 SIMD lanes (and
 * one below 4), one larger than the 256 x 256 invocations of a webgpu sum-of-squares dispatch, more parameters
 * than one in-place update dispatch takes (3 on a device with 16 storage buffers, so parameters of very different
 * sizes share a dispatch), and names with and without weight decay.
 */
const PARAMS: readonly [string, number[]][] = [
  ['embeddings.word_embeddings.weight', [300, 257]],
  ['encoder.layer.0.attention.self.query.weight', [16, 16]],
  ['encoder.layer.0.attention.self.query.bias', [16]],
  ['encoder.layer.0.output.LayerNorm.weight', [16]],
  ['encoder.layer.0.output.LayerNorm.bias', [16]],
  ['encoder.layer.0.intermediate.dense.weight', [7, 13]],
  ['encoder.layer.0.intermediate.dense.bias', [13]],
  ['head.dense.weight', [33, 5]],
  ['head.dense.bias', [1]],
];
const STEPS = 4;
/** Gradients are integers in [-GRID_MAX, GRID_MAX] divided by GRID: 77k squares sum below 2^24 grid units. */
const GRID = 64;
const GRID_MAX = 16;
const GRID_STD = 6;
const LR = 1e-2;
const SEED = 11;
/**
 * Tolerance of the webgpu comparisons, relative to max(|value|, WEBGPU_FLOOR * the tensor's largest magnitude):
 * a GPU compiler may fuse a multiply-add, and WGSL's division and sqrt are not correctly rounded (division within
 * 2.5 ULP), so a moment that cancels to near zero (b1 m = -(1 - b1) g) differs by a few ULP of the tensor's
 * scale, not of its own size. On an H200 (NVIDIA Vulkan) the largest differences after 4 steps were 4.6e-6 of a
 * parameter and 3e-5 relative (1e-3 floor) on the moments; lavapipe stays within 1e-6.
 */
const REL_TOL = 1e-5;
const WEBGPU_FLOOR = 0.05;
/** The host backends' floor (they are compared bit for bit; the floor only shapes the error message). */
const REL_FLOOR = 1e-3;

interface Case {
  label: string;
  weightDecay: number;
  /** 0: no clipping; small: clipping active; large: clipping computed but inactive (coef 1). */
  maxNorm: number;
}
const CASES: readonly Case[] = [
  { label: 'decay on, clipping active', weightDecay: 0.01, maxNorm: 1 },
  { label: 'decay on, clipping inactive', weightDecay: 0.01, maxNorm: 1e6 },
  { label: 'decay off, clipping active', weightDecay: 0, maxNorm: 0.5 },
  { label: 'decay off, no clipping', weightDecay: 0, maxNorm: 0 },
];

interface Run {
  p: Map<string, Float32Array>;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
  norms: number[];
  /** tf.memory().numTensors after each step. */
  counts: number[];
}

/** A seeded gradient on the 1/GRID grid.  -> [shape] */
function gridGradient(shape: number[], seed: number): tf.Tensor {
  return tf.tidy(() => tf.div(tf.clipByValue(tf.round(tf.randomNormal(shape, 0, GRID_STD, 'float32', seed)), -GRID_MAX, GRID_MAX), GRID));
}

/** Runs STEPS updates of fresh parameters with seeded gradients (the same for every implementation). */
async function run(c: Case, implementation: Implementation): Promise<Run> {
  const params = PARAMS.map(([name, shape], i) => ({ name, variable: tf.variable(tf.randomNormal(shape, 0, 1, 'float32', SEED + i)) }));
  const opt = new AdamW(params, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: c.weightDecay });
  const norms: number[] = [];
  const counts: number[] = [];
  for (let step = 0; step < STEPS; step++) {
    const grads = new Map(PARAMS.map(([name, shape], i) => [name, gridGradient(shape, SEED + 1000 * (step + 1) + i)] as [string, tf.Tensor]));
    const norm = computedBy(implementation, () => opt.apply(grads, LR * (step + 1), c.maxNorm));
    norms.push((await norm.data())[0]!);
    tf.dispose([norm, ...grads.values()]);
    counts.push(tf.memory().numTensors);
  }
  const read = async (m: Map<string, tf.Variable>): Promise<Map<string, Float32Array>> =>
    new Map(await Promise.all([...m].map(async ([k, x]) => [k, (await x.data()) as Float32Array] as const)));
  const out = {
    p: await read(new Map(params.map((p) => [p.name, p.variable]))),
    m: await read(opt.m),
    v: await read(opt.v),
    norms, counts,
  };
  opt.dispose();
  tf.dispose(params.map((p) => p.variable));
  return out;
}

/** max over elements of |a - b| / max(|b|, floor * max|b|). */
function relErr(a: Float32Array, b: Float32Array, floor: number): number {
  let scale = 0;
  for (const x of b) scale = Math.max(scale, Math.abs(x));
  let worst = 0;
  for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / Math.max(Math.abs(b[i]!), floor * scale, Number.MIN_VALUE));
  return worst;
}

function compare(fused: Run, composite: Run, tol: number, floor: number, what: string): void {
  for (const part of ['p', 'm', 'v'] as const) {
    for (const [name, want] of composite[part]) {
      const got = fused[part].get(name)!;
      assert.equal(got.length, want.length);
      const err = relErr(got, want, floor);
      assert.ok(err <= tol, `${what}: ${part}[${name}] relative error ${err} > ${tol}`);
    }
  }
  fused.norms.forEach((n, i) => {
    const err = Math.abs(n - composite.norms[i]!) / composite.norms[i]!;
    assert.ok(err <= tol, `${what}: gradient norm at step ${i + 1}: ${n} vs ${composite.norms[i]} (relative ${err})`);
  });
  // The first step may allocate kernel-internal state; from then on the count is flat.
  assert.ok(fused.counts.slice(1).every((x) => x === fused.counts[1]), `${what}: tensor counts ${fused.counts.join(', ')}`);
}

type Backend = 'cpu' | 'wasm' | 'webgpu';

/**
 * Activates `backend`; false (the test is skipped with the reason) where webgpu has no adapter. Called inside each
 * test, not at load: activating webgpu while another test is running would race with its backend switch.
 */
async function activate(t: TestContext, backend: Backend): Promise<boolean> {
  if (backend !== 'webgpu') {
    await selectBackend(backend);
    return true;
  }
  try {
    await selectBackend(backend);
    return true;
  } catch (err) {
    t.skip(`webgpu unavailable: ${(err as Error).message}`);
    return false;
  }
}

function backendSuite(backend: Backend, tol: number): void {
  describe(`fused AdamW on ${backend}`, () => {
    for (const c of CASES) {
      it(`${c.label}: p, m, v and the norm match the composite ops${tol === 0 ? ' bit for bit' : ` within ${tol} relative`}`, async (t) => {
        if (!(await activate(t, backend))) return;
        const composite = await run(c, 'composite');
        const fused = await run(c, 'fused');
        compare(fused, composite, tol, backend === 'webgpu' ? WEBGPU_FLOOR : REL_FLOOR, `${backend}, ${c.label}`);
        // The fused path did change the parameters (so the comparison is not of two untouched copies).
        const [name, shape] = PARAMS[0]!;
        const init = tf.randomNormal(shape, 0, 1, 'float32', SEED);
        assert.ok(relErr(fused.p.get(name)!, (await init.data()) as Float32Array, REL_FLOOR) > 1e-4);
        init.dispose();
      });
    }

    for (const implementation of ['fused', 'composite'] as const) {
      it(`${implementation}: a non-finite gate (NaN, Infinity) leaves p, m and v as they were; a finite gate updates as no gate does`, async (t) => {
        if (!(await activate(t, backend))) return;
        const fresh = (): { params: { name: string; variable: tf.Variable }[]; opt: AdamW } => {
          const params = PARAMS.map(([name, shape], i) => ({ name, variable: tf.variable(tf.randomNormal(shape, 0, 1, 'float32', SEED + i)) }));
          return { params, opt: new AdamW(params, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 }) };
        };
        const grads = (step: number): Map<string, tf.Tensor> =>
          new Map(PARAMS.map(([name, shape], i) => [name, gridGradient(shape, SEED + 1000 * step + i)] as [string, tf.Tensor]));
        const state = async (r: ReturnType<typeof fresh>): Promise<Float32Array[]> => Promise.all(
          [...r.params.map((p) => p.variable), ...r.opt.m.values(), ...r.opt.v.values()].map(async (x) => Float32Array.from((await x.data()) as Float32Array)));
        const applyOnce = async (r: ReturnType<typeof fresh>, step: number, gate?: number): Promise<void> => {
          const g = grads(step);
          const gateTensor = gate === undefined ? undefined : tf.scalar(gate);
          tf.dispose([computedBy(implementation, () => r.opt.apply(g, LR, 1, gateTensor)), ...g.values(), ...(gateTensor === undefined ? [] : [gateTensor])]);
        };

        const gated = fresh();
        await applyOnce(gated, 1); // moments away from zero, so "unchanged" is not "still zero"
        const before = await state(gated);
        const count = tf.memory().numTensors;
        for (const bad of [NaN, Infinity, -Infinity]) {
          await applyOnce(gated, 2, bad);
          gated.opt.revertStep();
          const after = await state(gated);
          after.forEach((x, i) => assert.deepEqual(x, before[i], `gate ${bad}: tensor ${i} changed`));
        }
        assert.equal(gated.opt.step, 1);
        assert.equal(tf.memory().numTensors, count, 'gated-off updates leave no tensors behind');
        await applyOnce(gated, 2, 2.5);

        const plain = fresh();
        await applyOnce(plain, 1);
        await applyOnce(plain, 2);
        const [got, want] = [await state(gated), await state(plain)];
        got.forEach((x, i) => assert.deepEqual(x, want[i], `finite gate: tensor ${i} differs from the ungated update`));
        for (const r of [gated, plain]) {
          r.opt.dispose();
          tf.dispose(r.params.map((p) => p.variable));
        }
      });
    }

    it('the fused gradient norm of 31 gradients (3 webgpu dispatches at 14 a dispatch, 6 at 6) is within 1e-5 of a float64 norm', async (t) => {
      if (!(await activate(t, backend))) return;
      const grads = Array.from({ length: 31 }, (_, i) => tf.randomNormal([17 + 13 * i], 0, 0.1, 'float32', SEED + 50 + i));
      let sq = 0;
      for (const g of grads) for (const x of (await g.data()) as Float32Array) sq += x * x;
      const norm = fusedGradNorm(grads);
      const got = (await norm.data())[0]!;
      assert.ok(Math.abs(got - Math.sqrt(sq)) / Math.sqrt(sq) <= REL_TOL, `${got} vs float64 ${Math.sqrt(sq)}`);
      tf.dispose([norm, ...grads]);
    });

    it('the fused gradient norm of arbitrary gradients is within 1e-6 of a float64 norm', async (t) => {
      if (!(await activate(t, backend))) return;
      const grads = PARAMS.map(([, shape], i) => tf.randomNormal(shape, 0, 0.1, 'float32', SEED + 7 + i));
      let sq = 0;
      for (const g of grads) for (const x of (await g.data()) as Float32Array) sq += x * x;
      const exact = Math.sqrt(sq);
      const params = PARAMS.map(([name, shape]) => ({ name, variable: tf.variable(tf.zeros(shape)) }));
      const opt = new AdamW(params, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
      const norm = opt.apply(new Map(PARAMS.map(([name], i) => [name, grads[i]!])), LR, 1);
      const got = (await norm.data())[0]!;
      assert.ok(Math.abs(got - exact) / exact <= REL_TOL, `${got} vs float64 ${exact}`);
      tf.dispose([norm, ...grads, ...params.map((p) => p.variable)]);
      opt.dispose();
    });
  });
}

describe('host loops', () => {
  it('the gradient norm sums float32 squares per gradient and the sums in float32', () => {
    const a = Float32Array.from([3, 4]);
    const b = Float32Array.from([12]);
    assert.equal(gradNormHost([a, b]), 13);
    assert.equal(gradNormHost([]), 0);
  });

  it('one update by hand: clipping, decay and bias correction', () => {
    const out = [new Float32Array(1), new Float32Array(1), new Float32Array(1)] as const;
    const s = { beta1: 0.9, beta2: 0.999, eps: 1e-8, decay: 1 - 0.1 * 0.5, bc2Sqrt: Math.sqrt(1 - 0.999), stepSize: 0.1 / (1 - 0.9), maxNorm: 1 };
    // norm 4 clips g = 2 to 2 * 1 / (4 + 1e-6); m, v start at 1 and 0.5.
    adamwHost(Float32Array.from([1]), Float32Array.from([2]), Float32Array.from([1]), Float32Array.from([0.5]), 4, s, ...out);
    const g = 2 / (4 + 1e-6);
    const m = 0.9 + 0.1 * g;
    const v = 0.999 * 0.5 + 0.001 * g * g;
    const p = 0.95 - (m / (Math.sqrt(v) / Math.sqrt(0.001) + 1e-8)) * (0.1 / 0.1);
    assert.ok(Math.abs(out[1][0]! - m) < 1e-6, `m ${out[1][0]} vs ${m}`);
    assert.ok(Math.abs(out[2][0]! - v) < 1e-6, `v ${out[2][0]} vs ${v}`);
    assert.ok(Math.abs(out[0][0]! - p) < 1e-6, `p ${out[0][0]} vs ${p}`);
  });
});

describe('WebAssembly SIMD loops (the wasm kernels)', () => {
  it('compile here, and give the scalar loop\'s update bit for bit and its sum of squares within 1e-12', () => {
    const PAGE_BYTES = 65536;
    const n = 4096; // elements per array; 7 arrays
    const memory = new WebAssembly.Memory({ initial: Math.ceil((7 * n * 4) / PAGE_BYTES) });
    const simd = simdFor(memory);
    assert.ok(simd !== null, 'Node >= 20 has WebAssembly SIMD: the module must compile');
    const heap = new Float32Array(memory.buffer);
    const [p, g, m, v, pOut, mOut, vOut] = Array.from({ length: 7 }, (_, k) => heap.subarray(k * n, (k + 1) * n)) as Float32Array[];
    let x = 12345;
    const rand = (): number => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648) - 0.5;
    for (let i = 0; i < n; i++) {
      p![i] = rand();
      g![i] = rand() * 1e-2;
      m![i] = rand() * 1e-3;
      v![i] = Math.abs(rand()) * 1e-5;
    }
    const s: AdamWStepScalars = { beta1: 0.9, beta2: 0.999, eps: 1e-8, decay: 0.999, bc2Sqrt: Math.sqrt(1 - 0.999 ** 3), stepSize: 1e-3 / (1 - 0.9 ** 3), maxNorm: 1 };
    const f = Math.fround;
    const norm = 3.7;
    const coef = clipCoefficient(norm, s.maxNorm);
    simd.adamw(0, 4 * n, 8 * n, 12 * n, 16 * n, 20 * n, 24 * n, n / SIMD_LANES,
      coef, f(0.9), f(1 - 0.9), f(0.999), f(1 - 0.999), f(s.decay), f(s.bc2Sqrt), f(s.eps), f(s.stepSize));
    const want = [new Float32Array(n), new Float32Array(n), new Float32Array(n)] as const;
    adamwHost(p!, g!, m!, v!, norm, s, ...want);
    assert.deepEqual([pOut, mOut, vOut], [...want]);
    let sq = 0;
    for (const gi of g!) sq += f(gi * gi);
    const got = simd.sumsq(4 * n, n / SIMD_LANES);
    assert.ok(Math.abs(got - sq) / sq < 1e-12, `${got} vs ${sq}`);
  });
});

describe('in-place update on cpu', () => {
  it("from a parameter's second update on, p, m and v keep their arrays; a caller's array given to tf.tensor is never written", async () => {
    await selectBackend('cpu');
    const [name, shape] = PARAMS[0]!;
    const size = shape[0]! * shape[1]!;
    const given = Float32Array.from({ length: size }, (_, i) => Math.sin(i));
    const copy = Float32Array.from(given);
    const initial = tf.tensor(given, shape);
    const variable = tf.variable(initial);
    initial.dispose();
    const opt = new AdamW([{ name, variable }], { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 });
    const arrays = (): unknown[] => [variable, opt.m.get(name)!, opt.v.get(name)!].map((x) => tf.backend().readSync(x.dataId));
    const seen: unknown[][] = [];
    for (let step = 0; step < 3; step++) {
      const g = gridGradient(shape, SEED + step);
      tf.dispose([opt.apply(new Map([[name, g]]), LR, 1), g]);
      seen.push(arrays());
    }
    assert.deepEqual(given, copy, "the caller's array is unchanged");
    assert.ok(seen[0]!.every((a) => a !== given), 'the first update made new arrays');
    seen[2]!.forEach((a, k) => assert.equal(a, seen[0]![k], `array ${k} was replaced after the first update`));
    opt.dispose();
    variable.dispose();
  });
});

describe('in-place update on wasm', () => {
  it('from a parameter\'s second update on, p, m and v keep their heap blocks and get the kernel\'s update bit for bit; a parameter a clone shares takes the kernel, the clone unchanged', async () => {
    await selectBackend('wasm');
    const offsets = (xs: tf.Tensor[]): number[] =>
      xs.map((x) => (tf.backend() as unknown as { dataIdMap: { get(id: object): { memoryOffset: number } } }).dataIdMap.get(x.dataId).memoryOffset);
    const setUp = () => {
      const params = PARAMS.map(([name, shape], i) => ({ name, variable: tf.variable(tf.randomNormal(shape, 0, 1, 'float32', SEED + i)) }));
      return { params, opt: new AdamW(params, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 }) };
    };
    const state = (r: ReturnType<typeof setUp>): tf.Tensor[] => [...r.params.map((p) => p.variable), ...r.opt.m.values(), ...r.opt.v.values()];
    const inPlace = setUp();
    const kernel = setUp();
    const clones = kernel.params.map((p) => p.variable.clone()); // each variable's block shared: refCount 2
    const cloneValues = await Promise.all(clones.map(async (c) => Float32Array.from((await c.data()) as Float32Array)));
    let blocks: number[] = [];
    for (let step = 0; step < 3; step++) {
      for (const r of [inPlace, kernel]) {
        const g = new Map(PARAMS.map(([name, shape], i) => [name, gridGradient(shape, SEED + 100 * step + i)] as [string, tf.Tensor]));
        tf.dispose([r.opt.apply(g, LR, 1), ...g.values()]);
      }
      // from the second update on (tf.variable shares its initial value's block, so the first update makes new ones)
      if (step === 0) blocks = offsets(state(inPlace));
    }
    assert.deepEqual(offsets(state(inPlace)), blocks, 'p, m and v were updated where they are');
    const [a, b] = await Promise.all([inPlace, kernel].map((r) => Promise.all(state(r).map(async (x) => Float32Array.from((await x.data()) as Float32Array)))));
    a!.forEach((x, i) => assert.deepEqual(x, b![i], `tensor ${i} differs between the in-place update and the kernel`));
    for (const [i, c] of clones.entries()) assert.deepEqual(Float32Array.from((await c.data()) as Float32Array), cloneValues[i], `clone ${i} changed`);
    tf.dispose(clones);
    for (const r of [inPlace, kernel]) {
      r.opt.dispose();
      for (const p of r.params) p.variable.dispose();
    }
  });
});

describe('in-place update on wasm with XNNPACK products', () => {
  after(() => {
    useNativeGemm(parseNativeGemmChoice(process.env[NATIVE_GEMM_ENV]));
  });
  it('a product with the parameter on the right after its in-place update multiplies its new values, not the operator XNNPACK cached on it', async () => {
    await selectBackend('wasm');
    assert.equal(useNativeGemm('off'), false, 'products on XNNPACK');
    const w = tf.variable(tf.randomNormal([16, 8], 0, 1, 'float32', SEED));
    const opt = new AdamW([{ name: 'w', variable: w }], { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
    const x = tf.randomNormal([4, 16], 0, 1, 'float32', SEED + 1);
    const offset = (): number => (tf.backend() as unknown as { dataIdMap: { get(id: object): { memoryOffset: number } } }).dataIdMap.get(w.dataId).memoryOffset;
    let block = -1;
    for (let step = 0; step < 3; step++) {
      tf.dispose(tf.matMul(x, w)); // XNNPACK packs w and caches the operator on its tensor id
      const g = new Map([['w', gridGradient([16, 8], SEED + 10 + step)] as [string, tf.Tensor]]);
      tf.dispose([opt.apply(g, LR, 1), ...g.values()]);
      if (step === 0) block = offset();
      const got = (await tf.matMul(x, w).data()) as Float32Array;
      const fresh = tf.tensor2d((await w.data()) as Float32Array, [16, 8]); // w's values in a tensor of their own
      const want = (await tf.matMul(x, fresh).data()) as Float32Array;
      fresh.dispose();
      assert.deepEqual(Float32Array.from(got), Float32Array.from(want), `step ${step + 1}: x @ w after the update`);
    }
    assert.equal(offset(), block, 'w was updated where it is (the in-place path ran)');
    opt.dispose();
    tf.dispose([w, x]);
  });
});

backendSuite('cpu', 0);
backendSuite('wasm', 0);
backendSuite('webgpu', REL_TOL);
