/**
 * The CBLAS products engine (src/kernels/platform/cblas.ts) against a plain JavaScript product in float64: every
 * transpose pair, broadcast and equal batches, odd sizes, products written into views inside a larger array (the wasm
 * heap's case), and a grid of products on strided blocks inside packed arrays (gemmGrid, the attention kernels'); the
 * in-place adds (addRowVector, axpy) bit for bit against float32 loops; and the engine selection of the host backends (src/kernels/stock/host.ts): NATIVE_GEMM_ENV's choices,
 * and the fallback to MLAS, with one line saying why, when CBLAS_ENV names a library that does not exist.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { Cblas, CBLAS_ENV, concurrentCallsSafe } from '../src/kernels/platform/cblas.js';
import type { Shape3 } from '../src/kernels/platform/nativeGemm.js';
import { hostMatMulEngine, loadNativeGemm, NATIVE_GEMM_ENV, parseNativeGemmChoice, useNativeGemm } from '../src/kernels/stock/index.js';
import { selectBackend } from '../src/model/backend.js';
import { HOST_THREADS_ENV, hostCores } from '../src/kernels/platform/simdThreads.js';
import { ROOT, seededValues, SKIP_NO_CBLAS, srcImport } from './helpers.js';

/** op(a) @ op(b) in float64, and the sum of |terms| of each element (the scale its rounding error goes with). */
function reference(a: Float32Array, [ba, ra, ca]: Shape3, ta: boolean, b: Float32Array, [bb, rb, cb]: Shape3, tb: boolean) {
  const batch = Math.max(ba, bb);
  const M = ta ? ca : ra;
  const K = ta ? ra : ca;
  const N = tb ? rb : cb;
  const value = new Float64Array(batch * M * N);
  const scale = new Float64Array(batch * M * N);
  for (let i = 0; i < batch; i++) {
    const ao = (ba === 1 ? 0 : i) * ra * ca;
    const bo = (bb === 1 ? 0 : i) * rb * cb;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        let abs = 0;
        for (let k = 0; k < K; k++) {
          const t = a[ao + (ta ? k * ca + m : m * ca + k)]! * b[bo + (tb ? n * cb + k : k * cb + n)]!;
          s += t;
          abs += Math.abs(t);
        }
        value[(i * M + m) * N + n] = s;
        scale[(i * M + m) * N + n] = abs;
      }
    }
  }
  return { value, scale, dims: [batch, M, N] as const };
}

/** Stored shape of an operand whose op() is [batch, rows, cols]. */
function stored(batch: number, rows: number, cols: number, flip: boolean): Shape3 {
  return flip ? [batch, cols, rows] : [batch, rows, cols];
}

const size = ([b, r, c]: Shape3): number => b * r * c;

describe('Cblas: products against a JavaScript reference (1e-5 of each element\'s sum of |terms|)', { skip: SKIP_NO_CBLAS }, () => {
  // [batchA, batchB, M, K, N]
  const cases: [string, number, number, number, number, number][] = [
    ['1 x 1 x 1', 1, 1, 1, 1, 1],
    ['odd sizes', 1, 1, 7, 5, 3],
    ['several kernel tiles, odd', 1, 1, 70, 129, 33],
    ['equal batches', 4, 4, 5, 6, 3],
    ['b broadcast (one call over the batch where a is not transposed)', 3, 1, 17, 33, 65],
    ['a broadcast', 1, 4, 9, 11, 13],
    ['a row, as the leading-axis Sum uses', 1, 1, 1, 300, 7],
  ];
  const cblas = SKIP_NO_CBLAS === false ? Cblas.load(2) : undefined;
  for (const [name, ba, bb, M, K, N] of cases) {
    for (const ta of [false, true]) {
      for (const tb of [false, true]) {
        test(`${name}: [${ba}, ${M}, ${K}] @ [${bb}, ${K}, ${N}], transA ${ta}, transB ${tb}`, () => {
          const aShape = stored(ba, M, K, ta);
          const bShape = stored(bb, K, N, tb);
          const a = seededValues(size(aShape), M * 31 + K);
          const b = seededValues(size(bShape), N * 17 + K);
          const ref = reference(a, aShape, ta, b, bShape, tb);
          // written into a view inside a larger array, as into the wasm heap: nothing outside it changes
          const heap = new Float32Array(ref.value.length + 10).fill(7);
          const out = heap.subarray(5, 5 + ref.value.length);
          cblas!.matMul(a, aShape, ta, b, bShape, tb, out);
          assert.deepEqual([...heap.subarray(0, 5), ...heap.subarray(5 + ref.value.length)], new Array(10).fill(7));
          for (let i = 0; i < out.length; i++) {
            assert.ok(Math.abs(out[i]! - ref.value[i]!) <= 1e-5 * ref.scale[i]!, `element ${i}: ${out[i]} vs ${ref.value[i]}`);
          }
          const fresh = cblas!.matMulToArray(a, aShape, ta, b, bShape, tb);
          assert.deepEqual(new Int32Array(fresh.buffer), new Int32Array(Float32Array.from(out).buffer));
        });
      }
    }
  }

  test('an empty inner dimension gives zeros; views that do not hold their shape are refused', () => {
    const out = new Float32Array(6).fill(3);
    cblas!.matMul(new Float32Array(0), [1, 2, 0], false, new Float32Array(0), [1, 0, 3], false, out);
    assert.deepEqual(Array.from(out), [0, 0, 0, 0, 0, 0]);
    assert.throws(() => cblas!.matMul(new Float32Array(5), [1, 2, 3], false, new Float32Array(12), [1, 3, 4], false, new Float32Array(8)), /views of 5, 12, 8 elements/);
    assert.throws(() => cblas!.matMul(new Float32Array(6), [1, 2, 3], false, new Float32Array(12), [1, 4, 3], false, new Float32Array(8)), /inner dims/);
  });

  test('gemmGrid: a product per (batch, head) on blocks inside packed arrays, as the attention kernels use it', () => {
    // q k^T and dv = p^T dc per head from packed qkv [B, T, 3H], dc [B, T, H], p [B, nh, T, T]; T odd, dh not a power of 2
    const [B, nh, T, dh] = [2, 3, 5, 6];
    const H = nh * dh;
    const qkv = seededValues(B * T * 3 * H, 1);
    const p = seededValues(B * nh * T * T, 2);
    const dc = seededValues(B * T * H, 3);
    /** The T x cols block at `offset` with rows `ld` apart, copied out dense. */
    const block = (x: Float32Array, offset: number, ld: number, rows: number, cols: number) => {
      const out = new Float32Array(rows * cols);
      for (let r = 0; r < rows; r++) out.set(x.subarray(offset + r * ld, offset + r * ld + cols), r * cols);
      return out;
    };
    const scores = new Float32Array(B * nh * T * T);
    cblas!.gemmGrid([B, nh], false, true, T, T, dh, 0.5,
      { data: qkv, offset: 0, ld: 3 * H, step: [T * 3 * H, dh] }, { data: qkv, offset: H, ld: 3 * H, step: [T * 3 * H, dh] },
      { data: scores, offset: 0, ld: T, step: [nh * T * T, T * T] });
    const dqkv = new Float32Array(B * T * 3 * H).fill(7);
    cblas!.gemmGrid([B, nh], true, false, T, dh, T, 1, { data: p, offset: 0, ld: T, step: [nh * T * T, T * T] },
      { data: dc, offset: 0, ld: H, step: [T * H, dh] }, { data: dqkv, offset: 2 * H, ld: 3 * H, step: [T * 3 * H, dh] });
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < nh; h++) {
        const z = b * nh + h;
        const q = block(qkv, b * T * 3 * H + h * dh, 3 * H, T, dh);
        const k = block(qkv, b * T * 3 * H + H + h * dh, 3 * H, T, dh);
        const ref = reference(q, [1, T, dh], false, k, [1, T, dh], true);
        const got = scores.subarray(z * T * T, (z + 1) * T * T);
        got.forEach((v, i) => assert.ok(Math.abs(v - 0.5 * ref.value[i]!) <= 1e-5 * ref.scale[i]!, `scores of head ${z}, element ${i}`));
        const refDv = reference(p.subarray(z * T * T, (z + 1) * T * T), [1, T, T], true, block(dc, b * T * H + h * dh, H, T, dh), [1, T, dh], false);
        const dv = block(dqkv, b * T * 3 * H + 2 * H + h * dh, 3 * H, T, dh);
        dv.forEach((v, i) => assert.ok(Math.abs(v - refDv.value[i]!) <= 1e-5 * refDv.scale[i]!, `dv of head ${z}, element ${i}`));
      }
    }
    // parts 0 and 1 of every row untouched
    for (let r = 0; r < B * T; r++) assert.ok(dqkv.subarray(r * 3 * H, r * 3 * H + 2 * H).every((v) => v === 7), `row ${r}: q and k parts untouched`);
    // a block past the array's end is refused before any product runs
    assert.throws(() => cblas!.gemmGrid([B, nh], false, false, T, dh, T, 1, { data: p, offset: 0, ld: T, step: [nh * T * T, T * T] },
      { data: dc, offset: 1, ld: H, step: [T * H, dh] }, { data: dqkv, offset: 0, ld: 3 * H, step: [T * 3 * H, dh] }),
    /gemmGrid: b's 5 x 6 blocks \(offset 1, ld 18, steps 90,6\) over a 2 x 3 grid end past its 180 elements/);
  });

  test('gemmGrid: the entries cut between the calling thread and a worker give the bits of one thread; later products keep their threads', () => {
    /** q k^T per (batch, head) of a packed qkv [B, T, 3H] on `lib`. */
    const grid = (lib: Cblas, [B, nh, T, dh]: readonly [number, number, number, number]) => {
      const H = nh * dh;
      const qkv = seededValues(B * T * 3 * H, 4);
      const scores = new Float32Array(B * nh * T * T);
      lib.gemmGrid([B, nh], false, true, T, T, dh, 0.25,
        { data: qkv, offset: 0, ld: 3 * H, step: [T * 3 * H, dh] }, { data: qkv, offset: H, ld: 3 * H, step: [T * 3 * H, dh] },
        { data: scores, offset: 0, ld: T, step: [nh * T * T, T * T] });
      return scores;
    };
    // a product whose bits depend on the library's thread count (OpenBLAS: 1 and 2 threads round apart here)
    const a = seededValues(256 * 192, 5);
    const b = seededValues(192 * 160, 6);
    const two = Cblas.load(2);
    const product = () => two.matMulToArray(a, [1, 256, 192], false, b, [1, 192, 160], false);
    const before = product();
    // [8, 4] entries of 32 x 32 x 16, and [96, 40] of 3 x 3 x 2: more calls than the workers' jobs hold at once
    for (const dims of [[8, 4, 32, 16], [96, 40, 3, 2]] as const) {
      const one = grid(Cblas.load(1), dims);
      assert.ok(one.some((v) => v !== 0));
      assert.deepEqual(grid(two, dims), one, `grid [${dims}]`);
      assert.deepEqual(product(), before, `a product after the grid [${dims}] runs on its two threads again`);
    }
  });

  test('the grid is cut among threads only where the library may be called from two at once', () => {
    assert.equal(concurrentCallsSafe(null), true, 'not OpenBLAS (MKL, BLIS)');
    assert.equal(concurrentCallsSafe(1), true, 'OpenBLAS, pthreads build');
    assert.equal(concurrentCallsSafe(0), false, 'OpenBLAS, sequential build');
    assert.equal(concurrentCallsSafe(2), false, 'OpenBLAS, OpenMP build');
  });

  test('addRowVector and axpy give the bits of the float32 loops, on one and two threads, on views inside larger arrays', () => {
    // [rows, C] past the libraries' threading thresholds, inside arrays with guard elements either side
    for (const [rows, C] of [[3, 5], [700, 129]] as const) {
      for (const threads of [1, 2]) {
        const lib = Cblas.load(threads);
        const n = rows * C;
        const outer = seededValues(n + 10, 1);
        const view = outer.subarray(3, 3 + n);
        const before = Float32Array.from(outer);
        const v = seededValues(C, 2);
        lib.addRowVector(view, v);
        const expect = Float32Array.from(before);
        for (let i = 0; i < n; i++) expect[3 + i] = Math.fround(before[3 + i]! + v[i % C]!);
        assert.deepEqual(outer, expect, `addRowVector [${rows}, ${C}], ${threads} thread(s)`);
        const x = seededValues(n, 3);
        for (const alpha of [1, -1]) {
          const y = Float32Array.from(before);
          lib.axpy(alpha, x, y.subarray(3, 3 + n));
          const want = Float32Array.from(before);
          for (let i = 0; i < n; i++) want[3 + i] = Math.fround(alpha === 1 ? before[3 + i]! + x[i]! : before[3 + i]! - x[i]!);
          assert.deepEqual(y, want, `axpy ${alpha}, ${n} elements, ${threads} thread(s)`);
        }
      }
    }
    assert.throws(() => cblas!.addRowVector(new Float32Array(7), new Float32Array(3)), /7 elements are not rows of 3/);
    assert.throws(() => cblas!.axpy(1, new Float32Array(3), new Float32Array(4)), /x has 3 elements, y 4/);
  });

  /** In a fresh process with HOST_THREADS_ENV=`threads`: a default Cblas's count, what it set on the library, the backend line's. */
  function cblasThreadsIn(threads: string): { threads?: number; before?: number; set?: number; line?: string; mlas?: number | null; error?: string } {
    const script = `${srcImport('Cblas', 'kernels/platform/cblas.ts')}
      ${srcImport('describeSelection, selectBackend', 'model/backend.ts')}
      let cblas;
      try { cblas = Cblas.load(); } catch (err) { console.log(JSON.stringify({ error: err.message })); process.exit(0); }
      const before = cblas.librarySetThreads;
      const a = new Float32Array(64 * 64).fill(1);
      cblas.matMulToArray(a, [1, 64, 64], false, a, [1, 64, 64], false);
      const line = describeSelection(await selectBackend('cpu')).split('\\n').find((l) => l.includes('dense products:')).trim();
      ${srcImport('NativeOps', 'kernels/platform/nativeOps.ts')}
      let mlas = null;
      try { mlas = NativeOps.load().threads; } catch {}
      console.log(JSON.stringify({ threads: cblas.threads, before, set: cblas.librarySetThreads, line, mlas }));`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script],
      { cwd: ROOT, encoding: 'utf8', env: { ...process.env, [HOST_THREADS_ENV]: threads } });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as ReturnType<typeof cblasThreadsIn>;
  }

  /** Checks that HOST_THREADS_ENV=n gives a default Cblas n threads, set on the library at its first product, and the backend line's n. */
  function checkCblasThreads(n: number): void {
    const got = cblasThreadsIn(String(n));
    assert.equal(got.error, undefined, `${HOST_THREADS_ENV}=${n}`);
    assert.equal(got.before, undefined, `${HOST_THREADS_ENV}=${n}: nothing set before the first product`);
    assert.equal(got.threads, n, `${HOST_THREADS_ENV}=${n}: the Cblas's count`);
    assert.equal(got.set, n, `${HOST_THREADS_ENV}=${n}: the count set on the library`);
    assert.match(got.line!, new RegExp(`^dense products: CBLAS .*, ${n} threads? \\(`));
    if (got.mlas !== null) assert.equal(got.mlas, n, `${HOST_THREADS_ENV}=${n}: onnxruntime-node MLAS's count (the fallback engine)`);
  }

  test(`${HOST_THREADS_ENV}=1 keeps the library on one thread, as the SIMD loops; a value that is no thread count is refused`, () => {
    checkCblasThreads(1);
    assert.deepEqual(cblasThreadsIn('0'), { error: `${HOST_THREADS_ENV}=0: expected a whole number >= 1` });
  });

  test(`${HOST_THREADS_ENV}=2 gives the library two threads`, { skip: hostCores() < 2 ? `one core here (hostCores() ${hostCores()})` : false }, () => {
    checkCblasThreads(2);
  });

  test('one and two threads give the same product', () => {
    const a = seededValues(256 * 192, 1);
    const b = seededValues(192 * 160, 2);
    const one = Cblas.load(1).matMulToArray(a, [1, 256, 192], false, b, [1, 192, 160], false);
    const two = Cblas.load(2).matMulToArray(a, [1, 256, 192], false, b, [1, 192, 160], false);
    assert.ok(one.every((v, i) => Math.abs(v - two[i]!) <= 1e-5 * (Math.abs(v) + 1)));
  });
});

describe('host products engine selection', () => {
  test(`${NATIVE_GEMM_ENV}: auto (default), cblas, mlas, 0; anything else is refused`, () => {
    assert.equal(parseNativeGemmChoice(undefined), 'auto');
    assert.equal(parseNativeGemmChoice('1'), 'auto');
    assert.equal(parseNativeGemmChoice('cblas'), 'cblas');
    assert.equal(parseNativeGemmChoice('mlas'), 'mlas');
    assert.equal(parseNativeGemmChoice('0'), 'off');
    assert.throws(() => parseNativeGemmChoice('openblas'), new RegExp(`${NATIVE_GEMM_ENV}='openblas': expected auto, cblas, mlas or 0`));
  });

  test('each choice names its engine; a thread count gives an instance of its own', { skip: SKIP_NO_CBLAS }, async () => {
    await selectBackend('wasm');
    try {
      assert.equal(useNativeGemm('cblas'), true);
      assert.match(hostMatMulEngine('wasm'), /^CBLAS OpenBLAS \d+\.\d+\.\d+ .*\(libopenblas\.so\.0\), \d+ threads?$/);
      assert.equal(useNativeGemm('mlas'), true);
      assert.match(hostMatMulEngine('wasm'), /^onnxruntime-node MLAS, \d+ threads?$/);
      assert.equal(useNativeGemm('off'), false);
      assert.equal(hostMatMulEngine('wasm'), 'XNNPACK (native GEMM switched off)');
      assert.equal(hostMatMulEngine('cpu'), 'the stock JavaScript loop (native GEMM switched off)');
      assert.equal(loadNativeGemm('auto', 1).gemm?.threads, 1);
    } finally {
      useNativeGemm('auto');
    }
  });

  /** The backend line `dense products: ...` of a fresh process selecting `backend` with `env`. */
  function denseProductsLine(backend: 'wasm' | 'cpu', env: Record<string, string>): string {
    const script = `import { describeSelection, selectBackend } from './src/model/backend.ts';
      console.log(describeSelection(await selectBackend('${backend}')));`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, ...env } });
    assert.equal(r.status, 0, r.stderr);
    const line = r.stdout.split('\n').find((l) => l.trim().startsWith('dense products:'));
    assert.ok(line !== undefined, r.stdout);
    return line.trim();
  }

  const missing = '/nonexistent/libopenblas.so.0';
  test(`${CBLAS_ENV} naming a missing library: products on MLAS, the backend line says why`, () => {
    const line = denseProductsLine('cpu', { [CBLAS_ENV]: missing });
    assert.match(line, new RegExp(`^dense products: onnxruntime-node MLAS, \\d+ threads? \\(CBLAS not used: ${CBLAS_ENV}=${missing} did not load: `));
  });

  test(`${NATIVE_GEMM_ENV}=cblas with no library: wasm products on XNNPACK, the backend line says why`, () => {
    const line = denseProductsLine('wasm', { [CBLAS_ENV]: missing, [NATIVE_GEMM_ENV]: 'cblas' });
    assert.match(line, new RegExp(`^dense products: XNNPACK \\(CBLAS not used: ${CBLAS_ENV}=${missing} did not load`));
  });
});
