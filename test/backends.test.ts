/**
 * Backend equivalence: the kernels src/kernels/stock/index.ts registers give the stock kernels' numbers, and one miCSE
 * training step (loss and every gradient) agrees within 1e-4 across the cpu and wasm backends.
 *
 * Op level: each replaced kernel (wasm and cpu BatchMatMul, Unpack, Sum, GatherV2, Slice, SplitV, Concat; wasm
 * Identity, UnsortedSegmentSum, order-keeping Transpose; cpu Transpose, PadV2, Add, Sub, Multiply, RealDiv, Softmax) against the same backend's stock kernel
 * (captured before any selection registers ours: nothing registers on import) on shapes that reach every branch
 * (transpose flags, batched, b unbatched, broadcast batch, leading/other axes); wasm BatchMatMul with each of its engines (the
 * system's CBLAS, onnxruntime-node's MLAS and the XNNPACK fallback), cpu BatchMatMul on both native engines.
 * The scatter-add that replaces UnsortedSegmentSum is checked against the stock cpu kernel on a small vocabulary
 * (the stock kernel takes minutes at BERT's 30,522 rows), so it can serve as the step's reference below.
 * Step level: micseLoss (dropout on, seeded, AMI over layers 2..3) + tf.variableGrads on the shared tiny-h32-l4
 * checkpoint: cpu with stock kernels (plus the scatter-add) is the reference; cpu and wasm with the fast kernels
 * must match it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DataType, type GraphSpec } from '../src/kernels/platform/onnxProto.js';
import { MlpHead } from '../src/losses/mlpHead.js';
import { micseLoss } from '../src/losses/micse.js';
import { selectBackend } from '../src/model/backend.js';
import { fastKernelNames, registerFastKernels, useNativeGemm, hostMatMulEngine } from '../src/kernels/stock/index.js';
import { NativeOps, releaseBuffer } from '../src/kernels/platform/nativeOps.js';
import { HOST_MALLOC_ENV, hostMallocState } from '../src/kernels/platform/hostMalloc.js';
import { poisonUninitialized, type CpuBackend } from '../src/kernels/platform/hostBackend.js';
import { spawnSync } from 'node:child_process';
import { loadPretrained } from '../src/model/pretrained.js';
import { tf } from '../src/model/tf.js';
import { maxAbsDiff, OBJECTIVE, seededValues, ROOT, shared, SKIP_NO_CBLAS, SKIP_NO_LIBC, SKIP_NO_SHARED, srcImport } from './helpers.js';

const TOL = 1e-4;

function rand(shape: number[], seed: number): tf.Tensor {
  return tf.tensor(seededValues(shape.reduce((p, d) => p * d, 1), seed), shape);
}

// The stock kernels stock/ replaces, as TF.js registered them: the wasm package registers its kernels when imported,
// and nothing of ours is registered before a backend is selected.
await import('@tensorflow/tfjs-backend-wasm');
const STOCK = new Map((['cpu', 'wasm'] as const).flatMap((backend) => fastKernelNames(backend).map((name) =>
  [`${name}/${backend}`, tf.getKernel(name, backend)] as const)));
// The wasm package's import made wasm the highest-priority backend, not yet initialised: select one.
await selectBackend('cpu');

/** Puts TF.js's stock kernels back in place of the replacements on `backend` (registerFastKernels swaps them back). */
function useStockKernels(backend: 'cpu' | 'wasm'): void {
  for (const name of fastKernelNames(backend)) {
    if (tf.getKernel(name, backend) !== undefined) tf.unregisterKernel(name, backend);
    const stock = STOCK.get(`${name}/${backend}`);
    if (stock !== undefined) tf.registerKernel(stock);
  }
}

/** Runs `f` with the fast kernels and with the stock ones on `backend`; returns both results as flat arrays. */
async function fastAndStock(backend: 'cpu' | 'wasm', f: () => tf.Tensor | tf.Tensor[]): Promise<{ fast: Float32Array[]; stock: Float32Array[] }> {
  await selectBackend(backend);
  const run = async () => {
    const out = tf.tidy(f);
    const list = Array.isArray(out) ? out : [out];
    const data = await Promise.all(list.map(async (t) => Float32Array.from((await t.data()) as Float32Array)));
    tf.dispose(list);
    return data;
  };
  registerFastKernels(backend);
  const fast = await run();
  useStockKernels(backend);
  try {
    return { fast, stock: await run() };
  } finally {
    registerFastKernels(backend);
  }
}

/** Each case run with the fast kernels and with the stock ones on `backend`: every output the same. */
async function assertFastIsStock(backend: 'cpu' | 'wasm', cases: readonly [string, () => tf.Tensor | tf.Tensor[]][]): Promise<void> {
  for (const [name, f] of cases) {
    const { fast, stock } = await fastAndStock(backend, f);
    assert.equal(fast.length, stock.length, name);
    fast.forEach((v, i) => assert.deepEqual(v, stock[i]!, `${name}, output ${i}`));
  }
}

describe('replaced kernels match the stock kernels', () => {
  const matMulCases: [string, number[], number[], boolean, boolean][] = [
    ['2D', [7, 5], [5, 3], false, false],
    ['2D transposeA', [5, 7], [5, 3], true, false],
    ['2D transposeB', [7, 5], [3, 5], false, true],
    ['2D both', [5, 7], [3, 5], true, true],
    ['batched 4D (attention scores)', [2, 3, 6, 4], [2, 3, 6, 4], false, true],
    ['batched 4D (context)', [2, 3, 6, 6], [2, 3, 6, 4], false, false],
    ['batched transposeA', [4, 6, 5], [4, 6, 3], true, false],
    ['b unbatched', [4, 6, 5], [5, 3], false, false],
    ['b unbatched, transposeB', [4, 6, 5], [3, 5], false, true],
    ['broadcast a', [1, 6, 5], [4, 5, 3], false, false],
    ['broadcast a, both flags', [1, 5, 6], [4, 3, 5], true, true],
    ['broadcast b, transposeA', [4, 5, 6], [1, 5, 3], true, false],
    ['GEMM-sized (several MLAS tiles), transposeB', [3, 70, 129], [1, 33, 129], false, true],
  ];
  // Every product engine: the system's CBLAS (the default), onnxruntime-node's MLAS and XNNPACK (their fallbacks).
  for (const choice of ['cblas', 'mlas', 'off'] as const) {
    const native = choice !== 'off';
    const engine = native ? `native GEMM, ${choice}` : 'XNNPACK';
    const skip = choice === 'cblas' ? SKIP_NO_CBLAS : false;
    const withEngine = async <T>(host: 'wasm' | 'cpu', f: () => Promise<T>): Promise<T> => {
      await selectBackend(host);
      assert.equal(useNativeGemm(choice), native, `useNativeGemm(${choice}): ${hostMatMulEngine(host)}`);
      try {
        return await f();
      } finally {
        useNativeGemm('auto');
      }
    };
    for (const [name, sa, sb, ta, tb] of matMulCases) {
      if (native) {
        test(`cpu BatchMatMul (${engine}): ${name}`, { skip }, async () => {
          const a = rand(sa, 1);
          const b = rand(sb, 2);
          const { fast, stock } = await withEngine('cpu', () => fastAndStock('cpu', () => tf.matMul(a, b, ta, tb)));
          a.dispose();
          b.dispose();
          assert.ok(maxAbsDiff(fast[0]!, stock[0]!) < 1e-4, `max diff ${maxAbsDiff(fast[0]!, stock[0]!)}`);
        });
      }
      test(`wasm BatchMatMul (${engine}): ${name}`, { skip }, async () => {
        const a = rand(sa, 1);
        const b = rand(sb, 2);
        const { fast, stock } = await withEngine('wasm', () => fastAndStock('wasm', () => tf.matMul(a, b, ta, tb)));
        a.dispose();
        b.dispose();
        assert.ok(maxAbsDiff(fast[0]!, stock[0]!) < 1e-4, `max diff ${maxAbsDiff(fast[0]!, stock[0]!)}`);
      });
    }

    test(`wasm BatchMatMul (${engine}) gradients (all four flag combinations)`, { skip }, async () => {
      const a = rand([3, 4, 5], 3);
      const b = rand([3, 5, 6], 4);
      const { fast, stock } = await withEngine('wasm', () => fastAndStock('wasm', () => {
        const g = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.square(tf.matMul(tf.matMul(x, y), y, false, true))));
        return g([a, b]);
      }));
      a.dispose();
      b.dispose();
      fast.forEach((f, i) => assert.ok(maxAbsDiff(f, stock[i]!) < 1e-4, `grad ${i}: max diff ${maxAbsDiff(f, stock[i]!)}`));
    });
  }

  test('NativeOps runs a graph in place on the given views (and rejects a wrong output shape)', () => {
    const ops = NativeOps.shared();
    const graph = (): GraphSpec => ({
      name: 'square', initializers: [], nodes: [{ opType: 'Mul', inputs: ['x', 'x'], outputs: ['y'], name: 'mul' }],
      inputs: [{ name: 'x', elemType: DataType.FLOAT, shape: ['n'] }], outputs: [{ name: 'y', elemType: DataType.FLOAT, shape: ['n'] }],
    });
    const heap = new Float32Array(8);
    heap.set([1, -2, 3], 1);
    ops.run('test_square', graph, { x: { data: heap.subarray(1, 4), dims: [3] } }, { y: { data: heap.subarray(5, 8), dims: [3] } });
    assert.deepEqual(Array.from(heap), [0, 1, -2, 3, 0, 1, 4, 9]);
    assert.throws(() => ops.run('test_square', graph, { x: { data: heap.subarray(1, 4), dims: [3] } }, { y: { data: heap.subarray(5, 7), dims: [2] } }));
  });

  test('NativeOps.runToArrays gives the bits run writes in place, in arrays of their own; releaseBuffer detaches', () => {
    const ops = NativeOps.shared();
    const graph = (): GraphSpec => ({
      name: 'mulAdd', initializers: [],
      nodes: [{ opType: 'Mul', inputs: ['x', 'y'], outputs: ['p'], name: 'mul' }, { opType: 'Add', inputs: ['p', 'x'], outputs: ['s'], name: 'add' }],
      inputs: [{ name: 'x', elemType: DataType.FLOAT, shape: ['n'] }, { name: 'y', elemType: DataType.FLOAT, shape: ['n'] }],
      outputs: [{ name: 'p', elemType: DataType.FLOAT, shape: ['n'] }, { name: 's', elemType: DataType.FLOAT, shape: ['n'] }],
    });
    const x = Float32Array.from(rand([1000], 21).dataSync());
    const y = Float32Array.from(rand([1000], 22).dataSync());
    const p = new Float32Array(1000);
    const s = new Float32Array(1000);
    ops.run('test_mulAdd', graph, { x: { data: x, dims: [1000] }, y: { data: y, dims: [1000] } }, { p: { data: p, dims: [1000] }, s: { data: s, dims: [1000] } });
    const got = ops.runToArrays('test_mulAdd', graph, { x: { data: x, dims: [1000] }, y: { data: y, dims: [1000] } }, ['s', 'p']);
    assert.deepEqual(new Int32Array(got['p']!.buffer), new Int32Array(p.buffer));
    assert.deepEqual(new Int32Array(got['s']!.buffer), new Int32Array(s.buffer));
    assert.notEqual(got['p']!.buffer, got['s']!.buffer);
    const buffer = got['p']!.buffer;
    releaseBuffer(buffer);
    assert.equal(buffer.byteLength, 0);
    assert.equal(x.length, 1000); // the inputs are untouched
  });

  for (const choice of ['cblas', 'mlas'] as const) {
    test(`cpu BatchMatMul on the native GEMM (${choice}) gives the bits of the product written in place (the wasm path)`, { skip: choice === 'cblas' ? SKIP_NO_CBLAS : false }, async () => {
      const a = rand([4, 33, 70], 23);
      const b = rand([129, 70], 24); // transposed: [70, 129]
      const outs: Int32Array[] = [];
      try {
        for (const host of ['cpu', 'wasm'] as const) {
          await selectBackend(host);
          assert.ok(useNativeGemm(choice), hostMatMulEngine(host));
          const c = tf.matMul(tf.tensor(a.dataSync(), a.shape), tf.tensor(b.dataSync(), b.shape), false, true);
          outs.push(new Int32Array(Float32Array.from(c.dataSync()).buffer));
        }
      } finally {
        useNativeGemm('auto');
      }
      assert.deepEqual(outs[0], outs[1]);
    });
  }

  test('the wasm and cpu backends run their products on the system CBLAS by default, else on MLAS', async () => {
    const expected = SKIP_NO_CBLAS === false ? /^CBLAS OpenBLAS/ : /^onnxruntime-node MLAS, \d+ threads? \(CBLAS not used: /;
    await selectBackend('wasm');
    assert.match(hostMatMulEngine('wasm'), expected);
    await selectBackend('cpu');
    assert.match(hostMatMulEngine('cpu'), expected);
  });

  test('selecting cpu keeps freed C-heap blocks for reuse where glibc and koffi are (platform/hostMalloc.ts): a 64 MB array made again faults in no fresh pages', async (t) => {
    await selectBackend('cpu');
    const skip = SKIP_NO_LIBC !== false ? SKIP_NO_LIBC : process.env[HOST_MALLOC_ENV] === '0' ? `${HOST_MALLOC_ENV}=0` : false;
    if (skip !== false) {
      t.skip(skip);
      return;
    }
    assert.match(hostMallocState() ?? '', /^freed blocks kept/);
    const n = 16 << 20; // 64 MB of floats, above glibc's largest mmap threshold
    const cycle = (): void => {
      const a = new Float32Array(n);
      a.fill(1); // every page touched
      releaseBuffer(a.buffer); // freed now, not at the next collection
    };
    cycle();
    const before = process.resourceUsage().minorPageFault;
    for (let i = 0; i < 8; i++) cycle();
    const faults = process.resourceUsage().minorPageFault - before;
    // Fresh mmaps would fault in 16,384 pages of 4 KB a cycle; reused heap memory is resident already.
    assert.ok(faults < (n * 4) / 4096, `${faults} page faults over 8 cycles`);
  });

  test("selecting wasm leaves no process error listeners of Emscripten's: a later unhandled rejection is printed as itself, not under the module's source", () => {
    const script = `
      ${srcImport('selectBackend', 'model/backend.ts')}
      const count = () => process.listenerCount('uncaughtException') + process.listenerCount('unhandledRejection');
      const before = count();
      await selectBackend('wasm');
      console.log(JSON.stringify({ before, after: count() }));
      Promise.reject(new Error('a rejection of the caller'));`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' });
    assert.deepEqual(JSON.parse(r.stdout.trim()), { before: 0, after: 0 });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /Error: a rejection of the caller/);
    assert.ok(r.stderr.length < 2000, `stderr is ${r.stderr.length} characters: ${r.stderr.slice(0, 200)}`);
  });

  test("Dawn's notices about lowered limits are held back from stderr (platform/nativeStderr.ts); everything else printed to fd 2 comes out, in order, also when the call throws", { skip: SKIP_NO_LIBC }, () => {
    // fs.writeSync(2) writes to file descriptor 2 as Dawn's native code does.
    const notice = (kind: string, from: number): string =>
      `Warning: maxDynamic${kind}BuffersPerPipelineLayout artificially reduced from ${from} to 16 to fit dynamic offset allocation limit.\n`;
    const script = `
      import fs from 'node:fs';
      ${srcImport('DAWN_LIMIT_NOTICE, withStderrFiltered', 'kernels/platform/nativeStderr.ts')}
      const fds = () => fs.readdirSync('/proc/self/fd').length;
      const open = fds();
      fs.writeSync(2, 'before\\n');
      const value = await withStderrFiltered(DAWN_LIMIT_NOTICE, async () => {
        fs.writeSync(2, ${JSON.stringify(notice('Uniform', 1000000))});
        fs.writeSync(2, 'a line of its own\\n');
        await new Promise((resolve) => setTimeout(resolve, 10));
        fs.writeSync(2, ${JSON.stringify(notice('Storage', 500000))});
        process.stderr.write('from JavaScript\\n');
        return 7;
      });
      fs.writeSync(2, 'after ' + value + '\\n');
      await withStderrFiltered(DAWN_LIMIT_NOTICE, async () => {
        fs.writeSync(2, 'in a call that throws\\n');
        throw new Error('boom');
      }).catch((err) => fs.writeSync(2, 'caught ' + err.message + '\\n'));
      console.log(JSON.stringify({ open, now: fds() }));`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, 'before\na line of its own\nfrom JavaScript\nafter 7\nin a call that throws\ncaught boom\n');
    const { open, now } = JSON.parse(r.stdout.trim()) as { open: number; now: number };
    assert.equal(now, open, 'file descriptors left open');
  });

  for (const host of ['wasm', 'cpu'] as const) {
    test(`${host} Unpack (tf.unstack) on every axis`, async () => {
      const x = rand([3, 2, 4, 5], 5);
      for (let axis = 0; axis < 4; axis++) {
        const { fast, stock } = await fastAndStock(host, () => tf.unstack(x, axis));
        assert.equal(fast.length, x.shape[axis]);
        fast.forEach((f, i) => assert.deepEqual(f, stock[i]!, `axis ${axis}, output ${i}`));
      }
      x.dispose();
    });

    test(`${host} Sum over leading axes (fast path) and other axes (stock path)`, async () => {
      const x = rand([4, 3, 5], 6);
      const cases: [number | number[], boolean][] = [[0, false], [[0, 1], true], [[1, 0], false], [1, false], [-1, true], [[0, 2], false], [[0, 1, 2], false]];
      for (const [axis, keepDims] of cases) {
        const { fast, stock } = await fastAndStock(host, () => tf.sum(x, axis, keepDims));
        assert.ok(maxAbsDiff(fast[0]!, stock[0]!) < 1e-5, `axis ${JSON.stringify(axis)}: ${maxAbsDiff(fast[0]!, stock[0]!)}`);
      }
      x.dispose();
    });

    test(`${host} SplitV (tf.split) equals the stock kernel: every axis, equal and given sizes, int32 and bool`, async () => {
      const x = rand([4, 6, 9], 19);
      const ints = tf.tensor2d([[-1, 2 ** 31 - 1, 3, 4], [-(2 ** 31), 5, 6, 7]], undefined, 'int32');
      const bools = tf.tensor2d([[true, false, true, true], [false, false, true, false]], undefined, 'bool');
      const cases: [string, () => tf.Tensor[]][] = [
        ['q, k, v of a packed projection (last axis, 3 equal parts)', () => tf.split(x, 3, 2)],
        ['axis 0, two parts', () => tf.split(x, 2, 0)],
        ['axis 1, given sizes with -1', () => tf.split(x, [1, -1, 2], 1)],
        ['an empty part', () => tf.split(x, [0, 9], 2)],
        ['int32 columns', () => tf.split(ints, [1, 3], 1)],
        ['bool columns', () => tf.split(bools, 2, 1)],
      ];
      await assertFastIsStock(host, cases);
      tf.dispose([x, ints, bools]);
    });
  }

  for (const host of ['wasm', 'cpu'] as const) {
    test(`${host} Pack (tf.stack) equals the stock kernel: every axis, a negative axis, one input, int32 and bool`, async () => {
      const maps = [rand([2, 3, 4, 4], 27), rand([2, 3, 4, 4], 28), rand([2, 3, 4, 4], 29)];
      const ints = [tf.tensor1d([-1, 2 ** 31 - 1], 'int32'), tf.tensor1d([-(2 ** 31), 5], 'int32')];
      const bools = [tf.tensor2d([[true, false]], undefined, 'bool'), tf.tensor2d([[false, true]], undefined, 'bool')];
      const cases: [string, () => tf.Tensor][] = [
        ...[0, 1, 2, 3, 4].map((axis): [string, () => tf.Tensor] => [`attention maps, axis ${axis}`, () => tf.stack(maps, axis)]),
        ['axis -1', () => tf.stack(maps, -1)],
        ['one input', () => tf.stack([maps[0]!], 0)],
        ['int32', () => tf.stack(ints, 1)],
        ['bool', () => tf.stack(bools, 0)],
      ];
      await assertFastIsStock(host, cases);
      tf.dispose([...maps, ...ints, ...bools]);
    });

    test(`${host} Concat equals the stock kernel: every axis, an empty input, one input, int32 and bool`, async () => {
      const parts = [rand([4, 6, 3], 22), rand([4, 6, 2], 23), rand([4, 6, 5], 24)];
      const rows = [rand([2, 6, 3], 25), rand([3, 6, 3], 26)];
      const empty = tf.zeros([4, 6, 0]);
      const ints = [tf.tensor2d([[-1, 2 ** 31 - 1]], undefined, 'int32'), tf.tensor2d([[-(2 ** 31), 5]], undefined, 'int32')];
      const bools = [tf.tensor2d([[true], [false]], undefined, 'bool'), tf.tensor2d([[false, true], [true, true]], undefined, 'bool')];
      const cases: [string, () => tf.Tensor][] = [
        ['q, k, v gradients (last axis)', () => tf.concat(parts, 2)],
        ['axis 0', () => tf.concat(rows, 0)],
        ['axis 1', () => tf.concat([parts[0]!, parts[0]!], 1)],
        ['with an empty input', () => tf.concat([parts[0]!, empty, parts[1]!], 2)],
        ['one input', () => tf.concat([parts[2]!], 2)],
        ['int32 rows', () => tf.concat(ints, 0)],
        ['bool columns', () => tf.concat(bools, 1)],
      ];
      await assertFastIsStock(host, cases);
      tf.dispose([...parts, ...rows, empty, ...ints, ...bools]);
    });
  }

  test('cpu PadV2 equals the stock kernel: slice gradients, every side, a non-zero constant, int32', async () => {
    const x = rand([3, 1, 8], 27);
    const ints = tf.tensor2d([[-1, 2 ** 31 - 1], [-(2 ** 31), 5]], undefined, 'int32');
    const cases: [string, () => tf.Tensor][] = [
      ['one view of an interleaved batch', () => tf.pad(x, [[0, 0], [0, 1], [0, 0]])],
      ['every side', () => tf.pad(x, [[1, 2], [2, 0], [3, 1]])],
      ['constant 1.5', () => tf.pad(x, [[0, 1], [0, 0], [2, 2]], 1.5)],
      ['int32', () => tf.pad(ints, [[1, 0], [0, 2]], 7)],
    ];
    await assertFastIsStock('cpu', cases);
    tf.dispose([x, ints]);
  });

  test('cpu Transpose equals the stock kernel (head transposes, 2-D, size-1 axes, identity, int32 bits, bool); order-keeping ones share the buffer', async () => {
    const x = rand([2, 5, 3, 4], 20);
    const ones = rand([1, 3, 1, 4], 21);
    const ints = tf.tensor2d([[-1, 2 ** 31 - 1, 3], [-(2 ** 31), 5, 6]], undefined, 'int32');
    const bools = tf.tensor3d([[[true, false], [false, true], [true, true]]], undefined, 'bool');
    const cases: [string, () => tf.Tensor][] = [
      ['to heads [0, 2, 1, 3]', () => tf.transpose(x, [0, 2, 1, 3])],
      ['reversed', () => tf.transpose(x, [3, 2, 1, 0])],
      ['[0, 3, 1, 2]', () => tf.transpose(x, [0, 3, 1, 2])],
      ['2-D', () => tf.transpose(tf.reshape(x, [10, 12]))],
      ['size-1 axes', () => tf.transpose(ones, [2, 3, 0, 1])],
      ['identity', () => tf.transpose(x, [0, 1, 2, 3])],
      ['int32', () => tf.transpose(ints)],
      ['bool', () => tf.transpose(bools, [2, 0, 1])],
    ];
    await assertFastIsStock('cpu', cases);
    tf.dispose([x, ones, ints, bools]);
    // An order-keeping permutation shares the input's buffer: each tensor outlives the other.
    const y = rand([3, 1, 4], 28);
    const shared = tf.transpose(y, [1, 0, 2]);
    y.dispose();
    assert.deepEqual(shared.shape, [1, 3, 4]);
    assert.deepEqual(Float32Array.from(await shared.data()), seededValues(12, 28));
    shared.dispose();
  });

  test('wasm Transpose: order-keeping permutations share the buffer, the others are the stock kernel', async () => {
    const x = rand([2, 5, 3, 4], 22);
    for (const perm of [[0, 1, 2, 3], [0, 2, 1, 3], [3, 2, 1, 0]]) {
      const { fast, stock } = await fastAndStock('wasm', () => tf.transpose(x, perm));
      assert.deepEqual(fast[0], stock[0], `[${perm}]`);
    }
    tf.dispose(x);
    await selectBackend('wasm');
    const y = rand([3, 1, 4], 29);
    const before = tf.memory().numDataBuffers;
    const shared = tf.transpose(y, [1, 0, 2]);
    assert.equal(tf.memory().numDataBuffers, before, 'no new buffer');
    y.dispose();
    assert.deepEqual(shared.shape, [1, 3, 4]);
    assert.deepEqual(Float32Array.from(await shared.data()), seededValues(12, 29));
    shared.dispose();
  });

  test('wasm Sum over an empty leading axis is zeros (the stock kernel returns whatever the heap held)', async () => {
    await selectBackend('wasm');
    const junk = tf.fill([4096], 7); // leaves non-zero bytes where the next allocations may land
    junk.dispose();
    const x = tf.zeros([0, 2, 3]);
    const s = tf.sum(x, 0);
    assert.deepEqual(Array.from(await s.data()), [0, 0, 0, 0, 0, 0]);
    tf.dispose([x, s]);
  });

  test('wasm Sum over leading axes of a large tensor: as a product with ones (native GEMM) and as a loop', async () => {
    const x = rand([64, 16, 40], 13); // 40,960 elements: above the native threshold
    try {
      for (const choice of ['cblas', 'mlas', 'off'] as const) {
        if (choice === 'cblas' && SKIP_NO_CBLAS !== false) continue;
        const native = choice !== 'off';
        await selectBackend('wasm');
        assert.equal(useNativeGemm(choice), native);
        for (const [axis, keepDims] of [[0, false], [[0, 1], true]] as const) {
          const { fast, stock } = await fastAndStock('wasm', () => tf.sum(x, axis as number | number[], keepDims));
          assert.ok(maxAbsDiff(fast[0]!, stock[0]!) < 1e-4, `native ${native}, axis ${JSON.stringify(axis)}: ${maxAbsDiff(fast[0]!, stock[0]!)}`);
        }
      }
    } finally {
      useNativeGemm('auto');
      x.dispose();
    }
  });

  test('wasm Identity shares the buffer: same values, and each tensor outlives the other', async () => {
    const x = rand([3, 4], 14);
    const { fast, stock } = await fastAndStock('wasm', () => tf.clone(x)); // tf.clone runs the Identity kernel
    assert.deepEqual(fast[0], stock[0]);
    const copy = tf.clone(x);
    x.dispose();
    assert.deepEqual(Float32Array.from(await copy.data()), seededValues(12, 14));
    const again = tf.clone(copy);
    copy.dispose();
    assert.deepEqual(Float32Array.from(await again.data()), seededValues(12, 14));
    again.dispose();
    const ints = tf.tensor1d([-1, 2 ** 31 - 1, -(2 ** 31)], 'int32');
    const intCopy = tf.clone(ints);
    assert.deepEqual(Array.from(await intCopy.data()), [-1, 2 ** 31 - 1, -(2 ** 31)]);
    tf.dispose([ints, intCopy]);
  });

  for (const host of ['wasm', 'cpu'] as const) {
    test(`${host} GatherV2: row copies on axis 0 (float32, int32 with NaN-pattern bits, 1-D); other axes keep the stock kernel`, async () => {
      const table = rand([7, 3, 2], 15);
      const ints = tf.tensor2d([[-1, 5], [2 ** 31 - 1, -(2 ** 31)], [0, -7]], undefined, 'int32');
      const flat = rand([50], 16);
      const intFlat = tf.tensor1d([-1, 2 ** 31 - 1, -(2 ** 31), 3], 'int32');
      const ids2 = tf.tensor2d([[6, 0, 0], [3, 1, 6]], undefined, 'int32');
      const ids1 = tf.tensor1d([2, 0, 2, 1], 'int32');
      const cases: [string, () => tf.Tensor][] = [
        ['table rows', () => tf.gather(table, ids2)],
        ['int32 rows', () => tf.gather(ints, ids1)],
        ['1-D', () => tf.gather(flat, ids2)],
        ['int32 1-D', () => tf.gather(intFlat, ids1)],
        ['axis 1 (stock)', () => tf.gather(table, ids1, 1)],
      ];
      await assertFastIsStock(host, cases);
      const intRows = tf.gather(ints, ids1);
      assert.deepEqual(Array.from(await intRows.data()), [0, -7, -1, 5, 0, -7, 2 ** 31 - 1, -(2 ** 31)]);
      const intElems = tf.gather(intFlat, ids1);
      assert.deepEqual(Array.from(await intElems.data()), [-(2 ** 31), -1, -(2 ** 31), 2 ** 31 - 1]);
      intElems.dispose();
      assert.throws(() => tf.gather(table, tf.tensor1d([7], 'int32')), /index value 7/);
      tf.dispose([table, ints, flat, intFlat, ids2, ids1, intRows]);
    });

    test(`${host} Slice (block copies) equals the stock kernel: strided, contiguous, whole dims, int32 and bool`, async () => {
      const x = rand([4, 5, 6, 3], 18);
      const ints = tf.tensor2d([[-1, 2 ** 31 - 1, 3], [-(2 ** 31), 5, 6]], undefined, 'int32');
      const bools = tf.tensor2d([[true, false, true], [false, false, true]], undefined, 'bool');
      const cases: [string, () => tf.Tensor][] = [
        ['[CLS] rows', () => tf.slice(x, [0, 0, 0, 0], [4, 1, 6, 3])],
        ['inner window', () => tf.slice(x, [1, 2, 1, 1], [2, 3, 4, 2])],
        ['contiguous block', () => tf.slice(x, [1, 0, 0, 0], [2, -1, -1, -1])],
        ['last axis', () => tf.slice(x, [0, 0, 0, 2], [-1, -1, -1, 1])],
        ['everything', () => tf.slice(x, 0, -1)],
        ['empty', () => tf.slice(x, [1, 1, 1, 1], [0, 2, 2, 2])],
        ['int32 column', () => tf.slice(ints, [0, 1], [2, 1])],
        ['bool window', () => tf.slice(bools, [0, 1], [2, 2])],
      ];
      await assertFastIsStock(host, cases);
      tf.dispose([x, ints, bools]);
    });
  }

  test('wasm UnsortedSegmentSum (in-heap scatter-add) equals the stock cpu kernel', async () => {
    const ids = [1, 4, 4, 9, 0, -1]; // -1 is dropped, as in TensorFlow
    await selectBackend('cpu');
    useStockKernels('cpu');
    const reference = tf.tidy(() => tf.unsortedSegmentSum(tf.tensor(seededValues(24, 17), [6, 4]), tf.tensor1d(ids, 'int32'), 10));
    const stock = Float32Array.from(await reference.data());
    reference.dispose();
    registerFastKernels('cpu');
    await selectBackend('wasm');
    const x = rand([6, 4], 17);
    const segs = tf.tensor1d(ids, 'int32');
    const got = tf.unsortedSegmentSum(x, segs, 10);
    assert.deepEqual(got.shape, [10, 4]);
    assert.ok(maxAbsDiff(Float32Array.from(await got.data()), stock) < 1e-6);
    tf.dispose([x, segs, got]);
  });

  const binaryCases: [number[], number[]][] = [[[3, 4], [3, 4]], [[2, 3, 4, 5], [2, 1, 1, 5]], [[3, 4], [4]], [[4], [3, 4]], [[3, 1], [1, 4]],
    [[2, 3, 4], [2, 3, 1]], [[2, 3, 4], []], [[], [2, 3]], [[1, 1], [1]], [[2, 1, 3], [4, 1]],
    // same shapes past the staged SIMD loop's threshold: several staging chunks, a tail of n % 4 elements
    [[3, 1 << 18], [3, 1 << 18]], [[4099, 3], [4099, 3]]];
  // Same-shape Add and Sub run as a copy and cblas_saxpy where CBLAS runs the products (cpu and wasm), else on cpu
  // the staged SIMD loop: both paths, each against the stock kernel (wasm without CBLAS is the stock kernel).
  for (const [kernel, op] of [['Add', tf.add], ['Sub', tf.sub], ['Multiply', tf.mul], ['RealDiv', tf.div]] as const) {
    for (const host of kernel === 'Add' || kernel === 'Sub' ? ['cpu', 'wasm'] as const : ['cpu'] as const) {
      for (const engine of host === 'wasm' ? ['cblas'] as const : ['cblas', 'off'] as const) {
        test(`${host} ${kernel} with broadcasting equals the stock kernel bit for bit (products engine: ${engine})`,
          { skip: engine === 'cblas' ? SKIP_NO_CBLAS : false }, async () => {
            await selectBackend(host);
            useNativeGemm(engine);
            try {
              for (const [sa, sb] of binaryCases) {
                const a = rand(sa, 10);
                const b = tf.tidy(() => tf.add(rand(sb, 11), 1.5)); // away from 0 for RealDiv
                const { fast, stock } = await fastAndStock(host, () => op(a, b));
                tf.dispose([a, b]);
                assert.deepEqual(fast[0], stock[0], `[${sa}] ${kernel} [${sb}]`);
              }
            } finally {
              useNativeGemm('auto');
            }
          });
      }
    }
  }

  test('cpu: a disposed kernel output\'s buffer serves the next array of its size; not one read out (dataSync) or still viewed by another tensor', async () => {
    await selectBackend('cpu');
    registerFastKernels('cpu');
    const b = tf.backend() as unknown as CpuBackend;
    const valuesOf = (t: tf.Tensor) => b.data.get(t.dataId).values as Float32Array;
    const x = rand([64, 32], 30);
    const first = tf.add(x, x); // the same-shape Add: an uninitialized array
    const buffer = valuesOf(first).buffer;
    first.dispose();
    const second = tf.sub(x, x);
    assert.equal(valuesOf(second).buffer, buffer, 'the disposed output\'s buffer is reused');
    // read out: the reader keeps it
    const read = second.dataSync();
    const readCopy = Float32Array.from(read);
    second.dispose();
    const third = tf.add(x, x);
    assert.notEqual(valuesOf(third).buffer, buffer, 'a buffer read out is not reused');
    assert.deepEqual(read, readCopy, 'what dataSync gave stays');
    // a stock kernel's view of the buffer (the stock Slice of contiguous rows) keeps it held
    const held = valuesOf(third).buffer;
    useStockKernels('cpu');
    const rows = tf.slice(third, [0, 0], [16, 32]);
    registerFastKernels('cpu');
    assert.equal(valuesOf(rows).buffer, held, 'the stock Slice gave a view of its input\'s buffer');
    const rowsCopy = Float32Array.from(valuesOf(rows));
    third.dispose();
    const fourth = tf.add(x, x);
    assert.notEqual(valuesOf(fourth).buffer, held, 'a buffer another tensor still views is not reused');
    assert.deepEqual(valuesOf(rows), rowsCopy, 'the view keeps its values');
    rows.dispose();
    const fifth = tf.sub(x, x);
    assert.equal(valuesOf(fifth).buffer, held, 'reused once its last holder is disposed');
    tf.dispose([x, fourth, fifth]);
  });

  test('cpu Softmax (last axis) matches the stock kernel; other axes and masked rows too', async () => {
    const x = tf.tidy(() => tf.mul(rand([2, 3, 7], 12), 8));
    const masked = tf.tidy(() => tf.add(x, tf.mul(tf.tensor([0, 0, 0, 0, 1, 1, 1]), -3.4028234663852886e38)));
    for (const [t, dim] of [[x, -1], [x, 2], [masked, -1]] as const) {
      const { fast, stock } = await fastAndStock('cpu', () => tf.softmax(t, dim));
      assert.ok(maxAbsDiff(fast[0]!, stock[0]!) < 1e-7, `max diff ${maxAbsDiff(fast[0]!, stock[0]!)}`);
    }
    tf.dispose([x, masked]);
  });

  test('scatter-add UnsortedSegmentSum equals the stock cpu kernel (small vocabulary)', async () => {
    const table = rand([11, 3], 7);
    const ids = tf.tensor2d([[1, 4, 4], [10, 0, 1]], undefined, 'int32');
    const { fast, stock } = await fastAndStock('cpu', () => tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.gather(t, ids), rand([2, 3, 3], 8))))(table));
    table.dispose();
    ids.dispose();
    assert.ok(maxAbsDiff(fast[0]!, stock[0]!) < 1e-6);
  });

  test('registering twice keeps one wrapper (no wrapper of a wrapper) and unregistering restores the stock kernels', async () => {
    await selectBackend('wasm');
    const names = registerFastKernels('wasm');
    registerFastKernels('wasm');
    assert.deepEqual(names, fastKernelNames('wasm'));
    const x = rand([2, 3, 4], 9);
    const y = tf.tidy(() => tf.sum(tf.matMul(x, x, false, true)));
    assert.ok(Number.isFinite((await y.data())[0]!));
    tf.dispose([x, y]);
  });
});

describe('one miCSE training step agrees across backends', { skip: SKIP_NO_SHARED }, () => {
  let loaded: Awaited<ReturnType<typeof loadPretrained>>;
  let head: MlpHead;
  let vars: tf.Variable[];
  const sentences = ['a man is playing a guitar .', 'the cat sat on the mat', 'kids play in the park near the river today', 'stocks fell'];

  before(async () => {
    await selectBackend('cpu');
    loaded = await loadPretrained(shared('hf-reference', 'tiny-h32-l4'));
    head = new MlpHead(loaded.config.hiddenSize, { seed: 3 });
    vars = [...loaded.model.trainableVariables(), head.weight, head.bias];
  });
  after(() => {
    head.dispose();
    loaded.model.dispose();
  });

  /** Loss and all gradients (flattened, in `vars` order) of one seeded training-mode micseLoss. */
  async function step(): Promise<{ loss: number; grads: Float32Array[] }> {
    const enc = loaded.tokenizer.encodeBatch(sentences.flatMap((s) => [s, s]), { maxLength: 16 });
    const before = tf.memory().numTensors;
    const { value, grads } = tf.variableGrads(() => {
      const batch = { inputIds: tf.tensor2d(enc.inputIds, undefined, 'int32'), attentionMask: tf.tensor2d(enc.attentionMask, undefined, 'int32') };
      return micseLoss(loaded.model, batch, { ...OBJECTIVE, minLayer: 2, maxLayer: 4, targetSamples: 20, head, dropoutSeed: 11, seed: 12 }).loss;
    }, vars);
    const loss = (await value.data())[0]!;
    const out = await Promise.all(vars.map(async (v) => Float32Array.from((await grads[v.name]!.data()) as Float32Array)));
    tf.dispose([value, ...Object.values(grads)]);
    assert.equal(tf.memory().numTensors, before, 'the step leaks no tensors');
    return { loss, grads: out };
  }

  test('cpu (stock kernels + scatter-add) vs cpu and wasm with the fast kernels: loss and gradients within 1e-4', async () => {
    await selectBackend('cpu');
    useStockKernels('cpu');
    registerFastKernels('cpu'); // the scatter-add only: the stock gather gradient takes minutes at 30,522 rows
    const reference = await step();
    assert.ok(Number.isFinite(reference.loss));
    for (const backend of ['cpu', 'wasm'] as const) {
      await selectBackend(backend);
      registerFastKernels(backend);
      const got = await step();
      assert.ok(Math.abs(got.loss - reference.loss) < TOL, `${backend}: loss ${got.loss} vs ${reference.loss}`);
      got.grads.forEach((g, i) => {
        const d = maxAbsDiff(g, reference.grads[i]!);
        assert.ok(d < TOL, `${backend}: gradient of ${vars[i]!.name} differs by ${d}`);
      });
    }
  });

  test('cpu kernels write every element of their outputs: the step over NaN-filled fresh arrays gives the same bits', async () => {
    await selectBackend('cpu');
    registerFastKernels('cpu');
    const plain = await step();
    poisonUninitialized(true);
    let poisoned: Awaited<ReturnType<typeof step>>;
    try {
      poisoned = await step();
    } finally {
      poisonUninitialized(false);
    }
    assert.equal(poisoned.loss, plain.loss);
    poisoned.grads.forEach((g, i) => assert.deepEqual(g, plain.grads[i], `gradient of ${vars[i]!.name}`));
  });
});
