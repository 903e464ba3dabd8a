/**
 * The host SIMD loops on several threads (src/kernels/platform/simdThreads.ts): every loop cut among threads on a
 * shared memory gives the bits it gives on one thread (an unshared memory), including uneven cuts (3 threads) and the
 * element-index offsets of dropout; a worker's failure reaches the caller, and one that cannot start leaves the loops on
 * the calling thread with the reason; a watchdog thread that cannot start is kept for the process (later pools start no
 * thread, the same reason given); a worker whose thread stops mid-call (process.exit, a throw outside its job,
 * terminate()) ends that call with an error within seconds, and later calls run on the calling thread with the same
 * bits, the reason kept, the host's threads and the backend line's then 1; splitRuns's cuts; under Node with more
 * than one core the wasm backend starts its threaded build (a shared heap the loops run on from both threads), with
 * MICSE_HOST_THREADS=1 its unthreaded one, and a value that is no thread count stops the backend's selection; where
 * the threaded build fails to start the unthreaded one runs, the backend line alone saying why; that build starts no
 * worker of its own, whatever core count os.cpus() reports (the process exits by itself); a call
 * whose part cannot be written to its worker's job runs nothing. The pools' shared work queue (more parts than threads):
 * 2,000 calls mixing assigned and shared parts, uneven and some empty, give one thread's bits on 2 and 4 threads (more
 * than the cores); a call runs in rounds where its parts or their calls exceed a round's, and a part too big for one is
 * an error naming its size; a part's failure on a worker or on the caller fails the call, every other part run and
 * later calls right; a worker stopped during a shared call of many parts ends it within seconds. The tests that could
 * hang run in a child process with a timeout.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { describe, test } from 'node:test';
import {
  heapSimdHost, layerNormGradScratch, simdBinary, simdDropout, simdGelu, simdGeluGrad, simdLayerNorm, simdLayerNormGrad,
  simdResidualLayerNorm, simdResidualLayerNormGrad, simdSegmentSum, simdSoftmaxGradRows, simdSoftmaxRows, type SimdHost,
} from '../src/kernels/platform/hostSimd.js';
import {
  cgroupCpuQuota, HOST_THREADS_ENV, hostCores, hostThreadsAvailable, hostThreadsFailure, jobCallsMax, nativeThreads, simdThreads, splitRuns, THREAD_MIN_ELEMENTS,
} from '../src/kernels/platform/simdThreads.js';
import { heapMemory, type WasmBackend } from '../src/kernels/platform/hostBackend.js';
import { describeSelection, selectBackend } from '../src/model/backend.js';
import { tf } from '../src/model/tf.js';
import { ROOT, seededValues, srcImport } from './helpers.js';

/** Elements of each array: three threads' worth and a ragged end (not a multiple of a row, a group or a slab). */
const N = 3 * THREAD_MIN_ELEMENTS + 4 * 1000 + 3;
const H = 256;
const T = 32;
const MASK_ROWS = 4 * T; // heads x query rows of one batch entry
const PAGE = 65536;

/** A memory laid out as consecutive float32 arrays of the given lengths (16-byte aligned). */
function arraysOn(memory: WebAssembly.Memory, lengths: number[]): Float32Array[] {
  let at = 0;
  return lengths.map((n) => {
    const a = new Float32Array(memory.buffer, at, n);
    at += Math.ceil((n * 4) / 16) * 16;
    return a;
  });
}

/** Runs every split loop on `host` over `memory`, returning the outputs. */
function everyLoop(memory: WebAssembly.Memory, host: SimdHost): Float32Array[] {
  const rows = Math.floor(N / H);
  const slabs = Math.floor(N / (MASK_ROWS * T));
  const SEGMENTS = 37;
  const [x, y, dy, dx, sum, prod, drop, ln, gamma, beta, res, s, yr, sm, mask, p, dp, lnDx, lnDg, lnDb, rDs, rDx, rDg, rDb, scratch, idBits, seg] = arraysOn(memory,
    [N, N, N, N, N, N, N, rows * H, H, H, rows * H, rows * H, rows * H, slabs * MASK_ROWS * T, slabs * T, rows * H, rows * H,
      rows * H, H, H, rows * H, rows * H, H, H, layerNormGradScratch(H, rows * H), rows, SEGMENTS * H]) as Float32Array[];
  // segment ids with repeats, and ones outside [0, SEGMENTS) (dropped)
  const ids = new Int32Array(idBits!.buffer, idBits!.byteOffset, rows);
  ids.forEach((_, i) => void (ids[i] = i % 11 === 0 ? -1 : i % 17 === 0 ? SEGMENTS : (i * 7) % SEGMENTS));
  x!.set(seededValues(N, 1).map((v) => 6 * v));
  dy!.set(seededValues(N, 2));
  gamma!.set(seededValues(H, 3).map((v) => 1 + v));
  beta!.set(seededValues(H, 4));
  res!.set(seededValues(rows * H, 5));
  sm!.set(seededValues(sm!.length, 6).map((v) => 8 * v));
  mask!.set(seededValues(mask!.length, 7).map((v) => (v > 0.6 ? -1e9 : 0)));
  p!.set(seededValues(p!.length, 8).map((v) => Math.abs(v)));
  dp!.set(seededValues(dp!.length, 9));
  const whole = N - (N % 4);
  assert.equal(simdGelu(host, x!, y!), whole);
  assert.equal(simdGeluGrad(host, x!, dy!, dx!), whole);
  assert.equal(simdBinary(host, 'add', x!, dy!, sum!), whole);
  assert.equal(simdBinary(host, 'mul', x!, dy!, prod!), whole);
  assert.equal(simdDropout(host, x!, drop!, 0x12345, 0x6789a, 0.1, 1 / 0.9), whole);
  simdLayerNorm(host, x!.subarray(0, rows * H), gamma!, beta!, 1e-12, ln!);
  simdResidualLayerNorm(host, x!.subarray(0, rows * H), res!, gamma!, beta!, 1e-12, { k1: 7, k2: 11, rate: 0.1, scale: 1 / 0.9 }, s!, yr!);
  simdSoftmaxRows(host, sm!, mask!, T, MASK_ROWS, 0.125);
  simdSoftmaxGradRows(host, p!, dp!, T);
  const rowsOf = (a: Float32Array) => a.subarray(0, rows * H);
  simdLayerNormGrad(host, rowsOf(x!), gamma!, rowsOf(dy!), 1e-12, lnDx!, lnDg!, lnDb!, scratch!);
  simdResidualLayerNormGrad(host, rowsOf(x!), gamma!, rowsOf(dy!), 1e-12, { k1: 7, k2: 11, rate: 0.1, scale: 1 / 0.9 }, rDs!, rDx!, rDg!, rDb!, scratch!);
  seg!.fill(NaN); // every element written
  simdSegmentSum(host, rowsOf(x!), ids, seg!, H);
  return [y, dx, sum, prod, drop, ln, s, yr, sm, p, lnDx, lnDg, lnDb, rDs, rDx, rDg, rDb, seg].map((a) => a!.slice());
}

const PAGES = Math.ceil((29 * N * 4) / PAGE);

/** A shared memory whose loops run on `threads` threads (HOST_THREADS_ENV while its pool starts). */
function sharedHost(threads: number): { memory: WebAssembly.Memory; host: SimdHost } {
  const memory = new WebAssembly.Memory({ initial: PAGES, maximum: PAGES, shared: true });
  const before = process.env[HOST_THREADS_ENV];
  process.env[HOST_THREADS_ENV] = String(threads);
  try {
    const host = heapSimdHost(memory);
    assert.notEqual(host, null);
    return { memory, host: host! };
  } finally {
    if (before === undefined) delete process.env[HOST_THREADS_ENV];
    else process.env[HOST_THREADS_ENV] = before;
  }
}

/**
 * Child-script lines that replace node:worker_threads' Worker (for the pools' ESM import too) by a subclass whose
 * constructor runs `body` (`source`, `options` and the script's `made` array in scope; it calls super itself), and
 * define `require` from ROOT.
 */
const patchedWorker = (body: string): string => `
  const { createRequire, syncBuiltinESMExports } = await import('node:module');
  const require = createRequire(${JSON.stringify(ROOT + '/')});
  const threads = require('node:worker_threads');
  const Real = threads.Worker;
  const made = [];
  threads.Worker = class extends Real {
    constructor(source, options) {${body}
    }
  };
  syncBuiltinESMExports();`;

describe('host SIMD loops on threads', () => {
  test('splitRuns cuts n units into at most `parts` runs of at least `min` units, covering them in order', () => {
    assert.deepEqual(splitRuns(10, 2), [[0, 5], [5, 10]]);
    assert.deepEqual(splitRuns(10, 3), [[0, 3], [3, 6], [6, 10]]);
    assert.deepEqual(splitRuns(10, 4, 4), [[0, 5], [5, 10]]);
    assert.deepEqual(splitRuns(3, 2, 4), [[0, 3]]);
    assert.deepEqual(splitRuns(0, 2), []);
    assert.deepEqual(splitRuns(2, 8), [[0, 1], [1, 2]]);
  });

  test('every split loop on 2 and 3 threads gives the bits of one thread', () => {
    const unshared = new WebAssembly.Memory({ initial: PAGES });
    const one = heapSimdHost(unshared)!;
    assert.equal(one.threads, 1);
    const want = everyLoop(unshared, one);
    for (const threads of [2, 3]) {
      const { memory, host } = sharedHost(threads);
      assert.equal(host.threads, threads);
      const got = everyLoop(memory, host);
      got.forEach((g, i) => {
        assert.ok(g.some((v) => v !== 0), `output ${i} is all zeros`);
        assert.deepEqual(g, want[i], `output ${i} differs on ${threads} threads`);
      });
    }
  });

  test("a worker's failure reaches the caller, and the threads run the next call", () => {
    const { memory, host } = sharedHost(2);
    const outside = memory.buffer.byteLength; // past the end: the worker's call traps
    assert.throws(() => host.callSplit([], [], () => [[], [{ fn: 'gelu', args: [outside, outside, 4] }]]),
      /a host SIMD worker thread failed: .*out of bounds/);
    const [x, y] = arraysOn(memory, [8, 8]);
    x!.set([0, 1, 2, 3, -1, -2, -3, 4]);
    host.callSplit([x!], [y!], ([xa, ya]) => [[{ fn: 'gelu', args: [xa!, ya!, 1] }], [{ fn: 'gelu', args: [xa! + 16, ya! + 16, 1] }]]);
    assert.ok(Math.abs(y![1]! - 0.8413447) < 1e-6 && Math.abs(y![7]! - 3.9998734) < 1e-5, `gelu on two threads gave ${y!.join(', ')}`);
  });

  test('more parts than threads are shared: each part runs once, on whichever thread takes it, over as many rounds as the queue needs; a part\'s failure reaches the caller', () => {
    const { memory, host } = sharedHost(2);
    const parts = 3000; // more than one queue holds (2047 parts)
    const [x, y] = arraysOn(memory, [4 * parts, 4 * parts]);
    x!.set(seededValues(4 * parts, 11).map((v) => 6 * v));
    const unshared = new WebAssembly.Memory({ initial: PAGES });
    const [ux, uy] = arraysOn(unshared, [4 * parts, 4 * parts]);
    ux!.set(x!);
    simdGelu(heapSimdHost(unshared)!, ux!, uy!);
    for (let round = 0; round < 2; round++) {
      y!.fill(0);
      host.callSplit([x!], [y!], ([xa, ya]) => Array.from({ length: parts }, (_, i) => [{ fn: 'gelu', args: [xa! + 16 * i, ya! + 16 * i, 1] }]));
      assert.deepEqual(y, uy, `round ${round}: the shared parts give the one-thread bits`);
    }
    const outside = memory.buffer.byteLength;
    assert.throws(() => host.callSplit([], [], () => Array.from({ length: 64 }, (_, i) =>
      [{ fn: 'gelu', args: i === 40 ? [outside, outside, 4] : [0, 0, 0] }])), /out of bounds/);
    y!.fill(0);
    host.callSplit([x!], [y!], ([xa, ya]) => Array.from({ length: parts }, (_, i) => [{ fn: 'gelu', args: [xa! + 16 * i, ya! + 16 * i, 1] }]));
    assert.deepEqual(y, uy, 'after a failed part, the next shared call');
  });

  test('a call with a part that cannot be written to its worker\'s job (too many calls) throws before any thread runs a part', () => {
    const { memory, host } = sharedHost(3);
    const [x, y] = arraysOn(memory, [4 * 64, 4 * 64]);
    x!.set(seededValues(4 * 64, 12).map((v) => 6 * v));
    const gelu = { fn: 'gelu' as const, args: [x!.byteOffset, y!.byteOffset, 64] };
    assert.throws(() => host.callSplit([], [], () => [[gelu], new Array(jobCallsMax(3)).fill(gelu), new Array(jobCallsMax(3) + 1).fill(gelu)]),
      /^Error: simdThreads: a part's calls take more than the 16383 slots of a worker's job$/);
    host.callSplit([], [], () => [[], [], []]); // returns once the workers are idle
    assert.ok(y!.every((v) => v === 0), 'a part of the call that threw was run');
  });

  test('a worker whose thread stops mid-call ends the call with an error; later calls run on the calling thread (the threads given as 1) with the same bits, the reason kept', { timeout: 90_000 }, () => {
    // In a child process, so that a stop nothing sees (the caller blocked for ever) ends in execFileSync's timeout.
    const script = `
      const { createRequire } = await import('node:module');
      ${srcImport('heapSimdHost, simdGelu', 'kernels/platform/hostSimd.ts')}
      ${srcImport('hostThreadsFailure, jobCallsMax, nativeThreads, stopHostWorker, THREAD_MIN_ELEMENTS', 'kernels/platform/simdThreads.ts')}
      const n = 4 * THREAD_MIN_ELEMENTS + 3;
      const pages = Math.ceil((2 * n * 4) / 65536) + 1;
      const setUp = (shared) => {
        const memory = new WebAssembly.Memory(shared ? { initial: pages, maximum: pages, shared } : { initial: pages });
        const x = new Float32Array(memory.buffer, 0, n), y = new Float32Array(memory.buffer, Math.ceil(n / 4) * 16, n);
        x.set(Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) * 4));
        return { memory, host: heapSimdHost(memory), x, y };
      };
      const one = setUp(false);
      simdGelu(one.host, one.x, one.y);
      const got = {};
      for (const how of ['exit', 'throw', 'terminate']) {
        const { memory, host, x, y } = setUp(true);
        const armed = stopHostWorker(memory, how);
        // the worker's part: the second half, over and over (long enough that terminate() finds it running)
        const half = 4 * Math.floor(n / 8);
        const before = host.threads;
        const started = Date.now();
        let error = null;
        try {
          host.callSplit([x], [y], ([xa, ya]) => [[{ fn: 'gelu', args: [xa, ya, half / 4] }],
            new Array(jobCallsMax(3)).fill({ fn: 'gelu', args: [xa + 4 * half, ya + 4 * half, (n - half) >> 2] })]);
        } catch (err) {
          error = err.message;
        }
        const ms = Date.now() - started;
        y.fill(0);
        simdGelu(host, x, y);
        got[how] = { armed, before, threads: host.threads, error, ms, same: y.every((v, i) => Object.is(v, one.y[i])), failure: hostThreadsFailure() };
      }
      {
        // a shared queue (more parts than threads): the worker terminated while the caller runs its first part
        const { memory, host, x, y } = setUp(true);
        const armed = stopHostWorker(memory, 'terminate');
        const parts = 64, groups = Math.floor(n / 4 / parts);
        const before = host.threads;
        const started = Date.now();
        let error = null;
        try {
          host.callSplit([x], [y], ([xa, ya]) => Array.from({ length: parts }, (_, i) => [{ fn: 'gelu', args: [xa + 16 * groups * i, ya + 16 * groups * i, groups] }]));
        } catch (err) {
          error = err.message;
        }
        const ms = Date.now() - started;
        const whole = y.slice(0, 4 * groups * parts).every((v, i) => Object.is(v, one.y[i]));
        y.fill(0);
        simdGelu(host, x, y);
        got.shared = { armed, before, threads: host.threads, error, whole, ms, same: y.every((v, i) => Object.is(v, one.y[i])), failure: hostThreadsFailure() };
      }
      const require = createRequire(${JSON.stringify(ROOT + '/')});
      let koffiPath = null;
      try { koffiPath = require.resolve('koffi'); } catch {}
      if (koffiPath !== null && process.platform === 'linux') {
        const koffi = require(koffiPath);
        const memset = koffi.load('libc.so.6').func('void *memset(uintptr_t, int, size_t)');
        const pool = nativeThreads(koffiPath, 'libc.so.6', { memset: 'void *memset(uintptr_t, int, size_t)' });
        const bytes = new Uint8Array(32);
        const at = Number(koffi.address(bytes));
        const local = (calls) => calls.forEach((c) => memset(...c.args));
        const armed = stopHostWorker('libc.so.6', 'exit');
        const before = pool.count;
        let error = null;
        try {
          pool.run([[], [{ fn: 'memset', args: [at, 1, 8] }]], local);
        } catch (err) {
          error = err.message;
        }
        pool.run([[{ fn: 'memset', args: [at, 2, 8] }], [{ fn: 'memset', args: [at + 8, 3, 8] }]], local);
        got.native = { armed, before, error, count: pool.count, bytes: [...bytes], failure: hostThreadsFailure('native') };
      }
      console.log(JSON.stringify(got));`;
    let out: string;
    try {
      out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script],
        { env: { ...process.env, [HOST_THREADS_ENV]: '2' }, encoding: 'utf8', timeout: 60_000 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ETIMEDOUT') throw err;
      assert.fail('the child ran 60 s and was killed: a call waited for a stopped worker');
    }
    type Outcome = { armed: number; before: number; threads: number; error: string | null; ms: number; same: boolean; failure: string | null };
    const got = JSON.parse(out.trim().split('\n').at(-1)!) as Record<string, Outcome> &
      { native?: { armed: number; before: number; count: number; error: string | null; bytes: number[]; failure: string | null } };
    const causes = { exit: 'it exited with code 7', throw: 'it threw outside its job: stopHostWorker', terminate: 'its thread ended with no word from it' };
    for (const [how, cause] of Object.entries(causes)) {
      const r = got[how]!;
      assert.equal(r.armed, 1, `${how}: the memory's one pool`);
      assert.equal(r.before, 2, `${how}: the host's threads before the stop`);
      assert.equal(r.threads, 1, `${how}: the host's threads once its pool is retired`);
      assert.ok((r.error ?? '').startsWith(`a host SIMD worker thread stopped during a call, its part unfinished: ${cause}`), `${how}: the call gave ${r.error}`);
      assert.match(r.error!, /; later calls run on the calling thread alone$/);
      assert.ok(r.ms < 10_000, `${how}: the call ended after ${r.ms} ms`);
      assert.equal(r.same, true, `${how}: the next call's bits differ from one thread's`);
      assert.ok((r.failure ?? '').startsWith(`a host SIMD worker thread stopped: ${cause}`), `${how}: hostThreadsFailure() is ${r.failure}`);
      assert.match(r.failure!, /; its pool's calls run on the calling thread alone$/);
    }
    // the shared queue: either the terminated worker held a part (the error) or the caller and the worker's earlier
    // parts did them all (every element written); later calls on the calling thread, the reason kept
    const shared = got['shared']! as Outcome & { whole: boolean };
    assert.equal(shared.armed, 1);
    assert.deepEqual([shared.before, shared.threads], [2, 1], 'shared: the host\'s threads before the stop, and once its pool is retired');
    assert.ok(shared.error === null ? shared.whole : shared.error.startsWith(`a host SIMD worker thread stopped during a call, its part unfinished: ${causes.terminate}`),
      `shared: the call gave ${shared.error}`);
    assert.ok(shared.ms < 10_000, `shared: the call ended after ${shared.ms} ms`);
    assert.equal(shared.same, true, 'shared: the next call\'s bits differ from one thread\'s');
    assert.ok((shared.failure ?? '').startsWith(`a host SIMD worker thread stopped: ${causes.terminate}`), `shared: hostThreadsFailure() is ${shared.failure}`);
    if (got.native !== undefined) {
      assert.equal(got.native.armed, 1);
      assert.deepEqual([got.native.before, got.native.count], [2, 1], 'native: the pool\'s count before the stop, and once it is retired');
      assert.match(got.native.error ?? '', /^a host native worker thread stopped during a call, its part unfinished: it exited with code 7; /);
      assert.deepEqual(got.native.bytes, [...new Array(8).fill(2), ...new Array(8).fill(3), ...new Array(16).fill(0)]);
      assert.match(got.native.failure ?? '', /^a host native worker thread stopped: it exited with code 7; /);
    }
  });

  test('after a worker of the wasm heap stops, the backend line gives its loops 1 thread and says why', () => {
    const script = `
      ${srcImport('describeSelection, selectBackend', 'model/backend.ts')}
      ${srcImport('heapMemory', 'kernels/platform/hostBackend.ts')}
      ${srcImport('heapSimdHost', 'kernels/platform/hostSimd.ts')}
      ${srcImport('stopHostWorker', 'kernels/platform/simdThreads.ts')}
      ${srcImport('tf', 'model/tf.ts')}
      const sel = await selectBackend('wasm');
      const memory = heapMemory(tf.backend());
      const host = heapSimdHost(memory);
      const line = () => describeSelection(sel).split('\\n').find((l) => l.includes('wasm:')).trim();
      const before = { threads: host.threads, line: line() };
      const armed = stopHostWorker(memory, 'exit');
      let error = null;
      try {
        host.callSplit([], [], () => [[], [{ fn: 'gelu', args: [0, 0, 0] }]]);
      } catch (err) {
        error = err.message;
      }
      console.log(JSON.stringify({ before, armed, error, after: { threads: host.threads, line: line() } }));`;
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script],
      { env: { ...process.env, [HOST_THREADS_ENV]: '2' }, encoding: 'utf8', timeout: 60_000 });
    const got = JSON.parse(out.trim().split('\n').at(-1)!) as
      { before: { threads: number; line: string }; armed: number; error: string | null; after: { threads: number; line: string } };
    assert.equal(got.before.threads, 2);
    assert.match(got.before.line, /; GELU, LayerNorm, dropout, AdamW: WebAssembly SIMD loops on the shared heap, 2 threads \(MICSE_HOST_THREADS\)$/);
    assert.ok(got.armed >= 1, 'the heap\'s pools armed');
    assert.match(got.error ?? '', /^a host SIMD worker thread stopped during a call, its part unfinished: it exited with code 7; /);
    assert.equal(got.after.threads, 1);
    assert.match(got.after.line, /; GELU, LayerNorm, dropout, AdamW: WebAssembly SIMD loops on the shared heap, 1 thread \(MICSE_HOST_THREADS; a host SIMD worker thread stopped: it exited with code 7; its pool's calls run on the calling thread alone\)$/);
  });

  test('a worker thread that cannot be made: the workers made are ended, the pool runs on the calling thread with the reason, nothing throws', { timeout: 60_000 }, () => {
    // A child process whose second worker's Worker constructor throws (as at the thread limit), with 3 host threads.
    const script = `
      ${patchedWorker(`
        const index = options.workerData.index;
        if (index === 1) throw new Error('thread limit reached (test)');
        super(source, options);
        if (index !== undefined) made.push(this);`)}
      ${srcImport('heapSimdHost', 'kernels/platform/hostSimd.ts')}
      ${srcImport('hostThreadsFailure', 'kernels/platform/simdThreads.ts')}
      let error = null, host = null;
      try {
        host = heapSimdHost(new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true }));
      } catch (err) {
        error = err.message;
      }
      const exits = await Promise.all(made.map((w) => new Promise((resolve) => {
        const timer = setTimeout(() => resolve('running'), 10_000);
        w.once('exit', () => { clearTimeout(timer); resolve('ended'); });
      })));
      console.log(JSON.stringify({ error, threads: host?.threads ?? null, failure: hostThreadsFailure(), exits }));`;
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script],
      { env: { ...process.env, [HOST_THREADS_ENV]: '3' }, encoding: 'utf8', timeout: 40_000 });
    const got = JSON.parse(out.trim().split('\n').at(-1)!) as { error: string | null; threads: number | null; failure: string | null; exits: string[] };
    assert.deepEqual(got, { error: null, threads: 1, failure: '2 host SIMD worker threads did not start: thread limit reached (test)', exits: ['ended'] });
  });

  test('a watchdog thread that does not start is kept for the process: later pools, SIMD and native, start no thread and give the same reason at once', { timeout: 90_000 }, () => {
    /**
     * A child process whose watchdog thread cannot be made (`construct`: its Worker constructor throws, as at the
     * thread limit) or throws in its setup (`setup`); it makes two SIMD pools and a native one, each on the calling
     * thread alone, and reports for each the threads, the ms, the Workers constructed and hostThreadsFailure.
     */
    const child = (how: 'construct' | 'setup') => {
      const script = `
        ${patchedWorker(`
          const watchdog = !('index' in options.workerData);
          made.push(watchdog ? 'watchdog' : 'worker');
          if (watchdog && ${JSON.stringify(how)} === 'construct') throw new Error('thread limit reached (test)');
          super(watchdog ? "require('node:worker_threads').parentPort.on = () => { throw new Error('no port (test)'); };\\n" + source : source, options);`)}
        ${srcImport('heapSimdHost', 'kernels/platform/hostSimd.ts')}
        ${srcImport('hostThreadsFailure, nativeThreads', 'kernels/platform/simdThreads.ts')}
        const simd = [];
        for (let i = 0; i < 2; i++) {
          const started = Date.now();
          const host = heapSimdHost(new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true }));
          simd.push({ threads: host.threads, ms: Date.now() - started, made: made.splice(0), failure: hostThreadsFailure() });
        }
        let native = null;
        let koffiPath = null;
        try { koffiPath = require.resolve('koffi'); } catch {}
        if (koffiPath !== null && process.platform === 'linux') {
          const pool = nativeThreads(koffiPath, 'libc.so.6', { memset: 'void *memset(uintptr_t, int, size_t)' });
          native = { pool: pool === null ? null : pool.count, made: made.splice(0), failure: hostThreadsFailure('native') };
        }
        console.log(JSON.stringify({ simd, native }));`;
      let out: string;
      try {
        out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script],
          { env: { ...process.env, [HOST_THREADS_ENV]: '2' }, encoding: 'utf8', timeout: 40_000 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ETIMEDOUT') throw err;
        assert.fail(`${how}: the child ran 40 s and was killed: a pool waited for the watchdog's start`);
      }
      return JSON.parse(out.trim().split('\n').at(-1)!) as {
        simd: { threads: number; ms: number; made: string[]; failure: string | null }[];
        native: { pool: number | null; made: string[]; failure: string | null } | null;
      };
    };
    for (const [how, cause, first] of [['construct', 'thread limit reached (test)', ['watchdog']], ['setup', 'no port (test)', ['watchdog', 'worker']]] as const) {
      const got = child(how);
      const reason = `the watchdog thread: ${cause}`;
      const [a, b] = got.simd;
      assert.equal(a!.threads, 1, `${how}: the first pool's threads`);
      assert.deepEqual(a!.made, first, `${how}: the first pool's Workers`);
      assert.equal(a!.failure, `1 host SIMD worker thread did not start: ${reason}`, `${how}: the first pool`);
      assert.ok(a!.ms < 10_000, `${how}: the first pool took ${a!.ms} ms`);
      assert.equal(b!.threads, 1, `${how}: the second pool's threads`);
      assert.deepEqual(b!.made, [], `${how}: the second pool starts no thread`);
      assert.equal(b!.failure, a!.failure, `${how}: the second pool's reason`);
      assert.ok(b!.ms < 1_000, `${how}: the second pool took ${b!.ms} ms`);
      if (got.native !== null) {
        assert.deepEqual(got.native, { pool: null, made: [], failure: `1 host native worker thread did not start: ${reason}` }, `${how}: the native pool`);
      }
    }
  });

  test('a worker that cannot instantiate the module is found when the pool is made: no pool, the loops on the calling thread, the reason kept', (t) => {
    if (!hostThreadsAvailable()) {
      t.skip('one host thread here: no pool is made');
      return;
    }
    // A module importing env.f besides the shared memory: the workers pass only the memory, so instantiating fails.
    const bytes = new Uint8Array([
      0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
      0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // types: () -> ()
      0x02, 0x18, 0x02, 0x03, 0x65, 0x6e, 0x76, 0x01, 0x66, 0x00, 0x00, // imports: env.f (type 0)
      0x03, 0x65, 0x6e, 0x76, 0x06, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79, 0x02, 0x03, 0x01, 0x01, // env.memory, shared, 1..1 page
    ]);
    const memory = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
    assert.equal(simdThreads(new WebAssembly.Module(bytes), memory, []), null);
    assert.match(hostThreadsFailure() ?? '', /^\d+ host SIMD worker threads? did not start: .*(LinkError|Import #0|function import)/i);
  });

  test('native threads call a library\'s functions on the caller\'s memory by address, assigned or shared; a library that does not load leaves no pool, the reason kept', (t) => {
    if (!hostThreadsAvailable() || process.platform !== 'linux') {
      t.skip(!hostThreadsAvailable() ? 'one host thread here: no pool is made' : 'libc.so.6 is the Linux C library');
      return;
    }
    const require = createRequire(import.meta.url);
    let koffiPath: string;
    try {
      koffiPath = require.resolve('koffi');
    } catch {
      t.skip('koffi is not installed');
      return;
    }
    const koffi = require(koffiPath) as { address(value: unknown): bigint; load(path: string): { func(declaration: string): (...args: number[]) => unknown } };
    const pool = nativeThreads(koffiPath, 'libc.so.6', { memset: 'void *memset(uintptr_t, int, size_t)' });
    assert.notEqual(pool, null, hostThreadsFailure('native') ?? '');
    const bytes = new Uint8Array(32);
    const at = Number(koffi.address(bytes));
    pool!.run([[], [{ fn: 'memset', args: [at + 8, 7, 16] }]], () => undefined);
    assert.deepEqual([...bytes], [...new Array(8).fill(0), ...new Array(16).fill(7), ...new Array(8).fill(0)]);
    assert.throws(() => pool!.run([[], [{ fn: 'memset', args: [at, 7] }]], () => undefined), /a host native worker thread failed: /);
    // more parts than threads (two queue rounds): the native workers and the caller share them
    const memset = koffi.load('libc.so.6').func('void *memset(uintptr_t, int, size_t)');
    const many = new Uint8Array(3000);
    const base = Number(koffi.address(many));
    pool!.run(Array.from({ length: many.length }, (_, k) => [{ fn: 'memset', args: [base + k, (k % 255) + 1, 1] }]),
      (calls) => calls.forEach((c) => memset(...c.args)));
    assert.ok(many.every((v, k) => v === (k % 255) + 1), 'a byte of the shared native call is not its part\'s');
    assert.equal(nativeThreads(koffiPath, '/nonexistent/libmissing.so', { f: 'void f()' }), null);
    assert.match(hostThreadsFailure('native') ?? '', /^\d+ host native worker threads? did not start: .*libmissing/);
    assert.doesNotMatch(hostThreadsFailure() ?? '', /native/, 'the SIMD pools\' failure is kept apart');
  });

  test("the cgroup CPU quota caps the host's cores: v2's cpu.max of the process's group, else v1's cfs quota and period", () => {
    const files = (f: Record<string, string>) => (file: string): string | null => f[file] ?? null;
    const v2 = (max: string) => files({ '/proc/self/cgroup': '0::/app.slice/run.scope\n', '/sys/fs/cgroup/app.slice/run.scope/cpu.max': max });
    assert.equal(cgroupCpuQuota(v2('max 100000\n')), null);
    assert.equal(cgroupCpuQuota(v2('200000 100000\n')), 2);
    assert.equal(cgroupCpuQuota(v2('150000 100000')), 2);
    assert.equal(cgroupCpuQuota(v2('50000 100000')), 1);
    const v1 = (quota: string) => files({
      '/proc/self/cgroup': '12:pids:/x\n4:cpu,cpuacct:/docker/abc\n0::/\n',
      '/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us': quota, '/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us': '100000\n',
    });
    assert.equal(cgroupCpuQuota(v1('-1\n')), null);
    assert.equal(cgroupCpuQuota(v1('300000\n')), 3);
    assert.equal(cgroupCpuQuota(files({})), null);
    assert.ok(hostCores() >= 1);
  });

  test('under Node the wasm backend runs its threaded build, the loops on its shared heap on every core; MICSE_HOST_THREADS=1 keeps the unthreaded build', async (t) => {
    const sel = await selectBackend('wasm');
    const memory = heapMemory(tf.backend() as unknown as WasmBackend);
    const cores = hostCores();
    if (cores === 1) {
      t.skip('one core here: the wasm backend keeps its unthreaded build');
      await selectBackend('cpu');
      return;
    }
    assert.ok(memory?.buffer instanceof SharedArrayBuffer, describeSelection(sel));
    assert.match(describeSelection(sel), /wasm: threaded SIMD build, XNNPACK on 1 thread; .* shared heap, \d threads/);
    assert.equal(heapSimdHost(memory)!.threads, cores, describeSelection(sel));
    await selectBackend('cpu');
    const script = "const { selectBackend, describeSelection } = await import('./src/model/backend.ts'); console.log(describeSelection(await selectBackend('wasm')));";
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script],
      { env: { ...process.env, [HOST_THREADS_ENV]: '1' }, encoding: 'utf8' });
    assert.match(out, /wasm: SIMD build, one thread; .* heap, 1 thread /);
    const bad = "const { selectBackend } = await import('./src/model/backend.ts'); await selectBackend('cpu').catch((err) => console.log(err.message));";
    const said = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', bad],
      { env: { ...process.env, [HOST_THREADS_ENV]: '0' }, encoding: 'utf8' });
    assert.match(said, /cpu: MICSE_HOST_THREADS=0: expected a whole number >= 1\)/);
  });

  test('a threaded wasm build that fails to start: the unthreaded one runs, and the backend line alone says why (no TF.js warning of its own)', () => {
    // The threaded build's heap is a shared WebAssembly.Memory: refusing to make one fails its start.
    const noShared = 'data:text/javascript,const M = WebAssembly.Memory; WebAssembly.Memory = function (d) { ' +
      "if (d && d.shared) throw new RangeError('shared memory refused (test)'); return new M(d); }; WebAssembly.Memory.prototype = M.prototype;";
    const script = "const { selectBackend, describeSelection } = await import('./src/model/backend.ts'); console.log(describeSelection(await selectBackend('wasm')));";
    const r = spawnSync(process.execPath, ['--import', noShared, '--import', 'tsx', '--input-type=module', '-e', script],
      { env: { ...process.env, [HOST_THREADS_ENV]: '2' }, encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /wasm: SIMD build, one thread \(the threaded build did not start: RangeError: shared memory refused \(test\)\); /);
    // TF.js's warnings of the failure (its line, then the error's stack) are not printed.
    assert.doesNotMatch(r.stdout + r.stderr, /Initialization of backend|at new WebAssembly\.Memory/);
  });

  test('the threaded wasm build starts no worker of its own: the process exits by itself where os.cpus() reports 16 cores, and the global Worker is as before', () => {
    // tfjs-backend-wasm would give XNNPACK half of os.cpus() and start a pthread per extra thread, each holding the process open.
    const sixteen = "data:text/javascript,import os from 'node:os'; const c = os.cpus()[0]; os.cpus = () => Array(16).fill(c);";
    const script = [
      "const { selectBackend, describeSelection } = await import('./src/model/backend.ts');",
      "const { tf } = await import('./src/model/tf.ts');",
      "const line = describeSelection(await selectBackend('wasm'));",
      "const a = tf.randomNormal([64, 64]);",
      "const y = tf.matMul(a, a).sum().dataSync()[0];",
      "console.log(JSON.stringify({ line, finite: Number.isFinite(y), worker: typeof globalThis.Worker }));",
    ].join(' ');
    const out = execFileSync(process.execPath, ['--import', sixteen, '--import', 'tsx', '--input-type=module', '-e', script],
      { env: { ...process.env, [HOST_THREADS_ENV]: '2' }, encoding: 'utf8', timeout: 60_000 });
    const got = JSON.parse(out.trim().split('\n').at(-1)!) as { line: string; finite: boolean; worker: string };
    assert.match(got.line, /wasm: threaded SIMD build, XNNPACK on 1 thread; .* shared heap, 2 threads/);
    assert.equal(got.finite, true);
    assert.equal(got.worker, 'undefined');
  });
});

/**
 * Runs `script` (an ES module; `srcImport` lines for what it needs) in a child process with HOST_THREADS_ENV
 * `threads`, and returns the JSON of its last line of output; a child that runs `timeoutMs` fails the test (a call
 * waiting for ever), instead of holding the suite.
 */
function childJson<T>(script: string, threads: number, timeoutMs: number): T {
  let out: string;
  try {
    out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script],
      { env: { ...process.env, [HOST_THREADS_ENV]: String(threads) }, encoding: 'utf8', timeout: timeoutMs });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ETIMEDOUT') throw err;
    assert.fail(`the child ran ${timeoutMs / 1000} s and was killed: a call waited for ever`);
  }
  return JSON.parse(out.trim().split('\n').at(-1)!) as T;
}

/**
 * Child-script JavaScript of `hostOn(threads, pages)`: a shared memory of `pages` pages whose SIMD host has a pool of
 * `threads` threads (HOST_THREADS_ENV while it is made); and `bitsOf(a)`, a Float32Array's bits.
 */
const HOST_ON = `
  ${srcImport('heapSimdHost', 'kernels/platform/hostSimd.ts')}
  const hostOn = (threads, pages) => {
    process.env.${HOST_THREADS_ENV} = String(threads);
    const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
    return { memory, host: heapSimdHost(memory) };
  };
  const bitsOf = (a) => new Uint32Array(a.buffer, a.byteOffset, a.length);`;

describe('the host pools\' shared work queue', () => {
  test('2,000 calls mixing assigned and shared parts (1 to 300 of them, uneven, some empty) give the one-thread bits on 2 and 4 threads', { timeout: 90_000 }, () => {
    const script = `
      ${HOST_ON}
      ${srcImport('simdBinary, simdGelu', 'kernels/platform/hostSimd.ts')}
      const G = 4096; // SIMD groups of each array
      const pages = Math.ceil((4 * 16 * G) / 65536) + 1;
      let seed = 12345;
      const rand = (n) => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return Math.floor((seed / 2 ** 32) * n); };
      const arrays = (memory) => {
        const at = (k) => new Float32Array(memory.buffer, 16 * G * k, 4 * G);
        return { x: at(0), d: at(1), y: at(2), s: at(3) };
      };
      const one = arrays(new WebAssembly.Memory({ initial: pages }));
      one.x.set(Float32Array.from({ length: 4 * G }, (_, i) => Math.sin(i * 0.37) * 5));
      one.d.set(Float32Array.from({ length: 4 * G }, (_, i) => Math.cos(i * 0.11)));
      {
        const memory = new WebAssembly.Memory({ initial: pages });
        const a = arrays(memory);
        a.x.set(one.x); a.d.set(one.d);
        const host = heapSimdHost(memory);
        simdGelu(host, a.x, a.y);
        simdBinary(host, 'add', a.x, a.d, a.s);
        one.y.set(a.y); one.s.set(a.s);
      }
      const wantY = bitsOf(one.y), wantS = bitsOf(one.s);
      const NAN = 0x7fc00001; // the outputs' fill: a quiet NaN no loop writes
      const got = {};
      for (const threads of [2, 4]) {
        const { memory, host } = hostOn(threads, pages);
        const a = arrays(memory);
        a.x.set(one.x); a.d.set(one.d);
        const y = bitsOf(a.y), s = bitsOf(a.s);
        let bad = null, shared = 0, assigned = 0;
        for (let call = 0; call < 2000 && bad === null; call++) {
          // every third call as many parts as threads at most (assigned), else 1 to 300 (mostly shared, often one
          // shared call after another: workers woken for a queue while still finishing the last)
          const parts = call % 3 === 0 ? 1 + rand(threads) : 1 + rand(300);
          if (parts > threads) shared++; else assigned++;
          const first = rand(G), end = first + rand(G - first + 1);
          const bounds = [first, ...Array.from({ length: parts - 1 }, () => first + rand(end - first + 1)).sort((p, q) => p - q), end];
          y.fill(NAN); s.fill(NAN);
          const plan = bounds.slice(1).map((g1, k) => {
            const g0 = bounds[k], mid = g0 + rand(g1 - g0 + 1);
            // a part's gelu as two calls (either may be empty), or one call a group where the part is short
            const gelu = g1 - g0 <= 64 && rand(4) === 0
              ? Array.from({ length: g1 - g0 }, (_, i) => ({ fn: 'gelu', args: [a.x.byteOffset + 16 * (g0 + i), a.y.byteOffset + 16 * (g0 + i), 1] }))
              : [[g0, mid], [mid, g1]].map(([p, q]) => ({ fn: 'gelu', args: [a.x.byteOffset + 16 * p, a.y.byteOffset + 16 * p, q - p] }));
            return rand(8) === 0 ? [] : [...gelu, { fn: 'add', args: [a.x.byteOffset + 16 * g0, a.d.byteOffset + 16 * g0, a.s.byteOffset + 16 * g0, g1 - g0] }];
          });
          host.callSplit([], [], () => plan);
          const done = new Set(bounds.slice(1).flatMap((g1, k) => plan[k].length === 0 ? [] : [k]));
          for (let k = 0; k < parts && bad === null; k++) {
            for (let i = 4 * bounds[k]; i < 4 * bounds[k + 1] && bad === null; i++) {
              const written = done.has(k);
              if (y[i] !== (written ? wantY[i] : NAN) || s[i] !== (written ? wantS[i] : NAN)) bad = { call, parts, part: k, element: i };
            }
          }
          for (const out of [y, s]) if (bad === null && (out.subarray(0, 4 * first).some((v) => v !== NAN) || out.subarray(4 * end).some((v) => v !== NAN))) bad = { call, parts, outside: true };
        }
        got[threads] = { threads: host.threads, bad, shared, assigned };
      }
      console.log(JSON.stringify(got));`;
    const got = childJson<Record<string, { threads: number; bad: unknown; shared: number; assigned: number }>>(script, 2, 60_000);
    for (const threads of [2, 4]) {
      const r = got[threads]!;
      assert.equal(r.bad, null, `${threads} threads: a call's output differs from one thread's: ${JSON.stringify(r.bad)}`);
      assert.equal(r.threads, threads);
      assert.ok(r.shared > 1200 && r.assigned > 600, `${threads} threads: ${r.shared} shared calls, ${r.assigned} assigned`);
    }
  });
  test('a call of more parts than a queue round holds (2047), or of more calls than its slots hold, runs in rounds with the one-thread bits; a part too big for a round alone is an error naming its size, and later calls run', { timeout: 90_000 }, () => {
    const script = `
      ${HOST_ON}
      ${srcImport('simdGelu', 'kernels/platform/hostSimd.ts')}
      const G = 16384; // SIMD groups of each array
      const pages = Math.ceil((3 * 16 * G) / 65536) + 1;
      const arrays = (memory) => {
        const at = (k) => new Float32Array(memory.buffer, 16 * G * k, 4 * G);
        return { x: at(0), y: at(1), s: at(2) };
      };
      const unshared = new WebAssembly.Memory({ initial: pages });
      const one = arrays(unshared);
      one.x.set(Float32Array.from({ length: 4 * G }, (_, i) => Math.sin(i * 0.37) * 5));
      simdGelu(heapSimdHost(unshared), one.x, one.y);
      one.s.set(one.x.map((v) => v + v));
      const wantY = bitsOf(one.y), wantS = bitsOf(one.s);
      const NAN = 0x7fc00001;
      const got = {};
      for (const threads of [2, 3]) {
        const { memory, host } = hostOn(threads, pages);
        const a = arrays(memory);
        a.x.set(one.x);
        const y = bitsOf(a.y), s = bitsOf(a.s);
        // a call a group: gelu into y (5 queue slots: index, count, 3 arguments) or x + x into s (6 slots)
        const gelu = (g) => ({ fn: 'gelu', args: [a.x.byteOffset + 16 * g, a.y.byteOffset + 16 * g, 1] });
        const add = (g) => ({ fn: 'add', args: [a.x.byteOffset + 16 * g, a.x.byteOffset + 16 * g, a.s.byteOffset + 16 * g, 1] });
        // parts of [gelu calls, add calls] on consecutive groups from 0: whether every group they cover has the
        // one-thread bits and every other is untouched
        const check = (sizes) => {
          y.fill(NAN); s.fill(NAN);
          let g = 0, h = 0;
          const plan = sizes.map(([geluCalls, addCalls = 0]) => [...Array.from({ length: geluCalls }, () => gelu(g++)), ...Array.from({ length: addCalls }, () => add(h++))]);
          host.callSplit([], [], () => plan);
          return y.every((v, i) => v === (i < 4 * g ? wantY[i] : NAN)) && s.every((v, i) => v === (i < 4 * h ? wantS[i] : NAN));
        };
        const r = {};
        // one round of the most parts, and more
        for (const parts of [2047, 2048, 4095, 5000]) r['parts' + parts] = check(new Array(parts).fill([1]));
        // 400 parts of 40 calls (201 slots each): more than a round's 65,536 slots
        r.slots = check(new Array(400).fill([30, 10]));
        // a round's slots: 2, then per part 1 + its calls'; a part of 13,103 gelu and 3 add calls fills a round
        // exactly (2 + 1 + 65,515 + 18), the parts after it the next
        r.fillsRound = check([[13103, 3], [1], [1, 1], [2]]);
        let error = null;
        try {
          // 13,102 gelu and 4 add calls: 65,535 slots, with a round's 2 one more than it holds
          host.callSplit([], [], () => [[gelu(0)], [...new Array(13102).fill(gelu(1)), ...new Array(4).fill(add(2))], [gelu(3)], [gelu(4)]]);
        } catch (err) {
          error = err.message;
        }
        r.after = check([[7], [1, 1], [2], [], [5], [3, 2]]) && check([[9], [9]]);
        got[threads] = { ...r, error, threads: host.threads };
      }
      console.log(JSON.stringify(got));`;
    const got = childJson<Record<string, Record<string, boolean | string | number | null>>>(script, 2, 60_000);
    for (const threads of [2, 3]) {
      const r = got[threads]!;
      for (const name of ['parts2047', 'parts2048', 'parts4095', 'parts5000', 'slots', 'fillsRound', 'after']) {
        assert.equal(r[name], true, `${threads} threads, ${name}: the outputs differ from one thread's`);
      }
      assert.equal(r['error'], 'simdThreads: a part of 65535 queue slots, more than the 65534 a queue round holds');
      assert.equal(r['threads'], threads);
    }
  });
  test('a shared part that throws, on a worker or on the caller, fails the call with that error; every other part still runs, and later calls, assigned and shared, give the right bits on every thread', { timeout: 90_000 }, () => {
    // A module of two exports on a shared page: trap() (unreachable) and put(address, value) (an i32 store).
    const module = [
      0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
      0x01, 0x09, 0x02, 0x60, 0x00, 0x00, 0x60, 0x02, 0x7f, 0x7f, 0x00, // types: () -> (), (i32, i32) -> ()
      0x02, 0x10, 0x01, 0x03, 0x65, 0x6e, 0x76, 0x06, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79, 0x02, 0x03, 0x01, 0x01, // env.memory, shared, 1..1 page
      0x03, 0x03, 0x02, 0x00, 0x01, // functions: trap, put
      0x07, 0x0e, 0x02, 0x04, 0x74, 0x72, 0x61, 0x70, 0x00, 0x00, 0x03, 0x70, 0x75, 0x74, 0x00, 0x01, // exports
      0x0a, 0x0f, 0x02, 0x03, 0x00, 0x00, 0x0b, 0x09, 0x00, 0x20, 0x00, 0x20, 0x01, 0x36, 0x02, 0x00, 0x0b, // code
    ];
    const script = `
      ${srcImport('simdThreads', 'kernels/platform/simdThreads.ts')}
      const module = new WebAssembly.Module(new Uint8Array(${JSON.stringify(module)}));
      const nap = new Int32Array(new SharedArrayBuffer(4));
      const got = {};
      for (const threads of [2, 4]) {
        process.env.${HOST_THREADS_ENV} = String(threads);
        const memory = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
        const pool = simdThreads(module, memory, ['trap', 'put']);
        const ints = new Int32Array(memory.buffer);
        const put = (k, v) => ({ fn: 'put', args: [4 * k, v] });
        const trap = { fn: 'trap', args: [] };
        // the caller's parts: puts here; how = 'skip' passes over a trap (napping 1 ms: the workers take most
        // parts), 'throw' throws after the part's puts
        let localParts = 0;
        const local = (how) => (calls) => {
          localParts++;
          for (const c of calls) if (c.fn === 'put') ints[c.args[0] / 4] = c.args[1];
          if (how === 'skip') Atomics.wait(nap, 0, 0, 1);
          else throw new Error('caller part ' + calls[0].args[0] / 4);
        };
        // parts puts of value base + k at k, the rest of the page's first 4096 words 0
        const check = (parts, base) => {
          ints.fill(0, 0, 4096);
          pool.run(Array.from({ length: parts }, (_, k) => [put(k, base + k)]), local('skip'));
          return ints.subarray(0, 4096).every((v, k) => v === (k < parts ? base + k : 0));
        };
        const failing = (parts, onWorkers, here) => {
          // tries until the failing side took a part (each call: every part a put, then a trap on the workers)
          for (let attempt = 0; attempt < 20; attempt++) {
            ints.fill(0, 0, 4096);
            localParts = 0;
            let error = null;
            try {
              pool.run(Array.from({ length: parts }, (_, k) => onWorkers ? [put(k, k + 1), trap] : [put(k, k + 1)]), local(here));
            } catch (err) {
              error = err.message;
            }
            const every = ints.subarray(0, 4096).every((v, k) => v === (k < parts ? k + 1 : 0));
            if (error !== null && (here !== 'throw' || localParts > 0)) return { error, every, after: [check(threads, 100), check(300, 200), check(3000, 500)] };
          }
          return { error: 'no part failed in 20 calls' };
        };
        got[threads] = {
          count: pool.count, onWorkers: failing(64, true, 'skip'), here: failing(2000, false, 'throw'), both: failing(2000, true, 'throw'),
          countAfter: pool.count,
        };
      }
      console.log(JSON.stringify(got));`;
    type Failed = { error: string; every?: boolean; after?: boolean[] };
    const got = childJson<Record<string, { count: number; countAfter: number } & Record<'onWorkers' | 'here' | 'both', Failed>>>(script, 2, 60_000);
    for (const threads of [2, 4]) {
      const r = got[threads]!;
      assert.deepEqual([r.count, r.countAfter], [threads, threads], `${threads} threads: the pool's threads before and after (a part's failure retires nothing)`);
      for (const [name, error] of [['onWorkers', /^a host SIMD worker thread failed: unreachable$/], ['here', /^caller part \d+$/], ['both', /^caller part \d+$/]] as const) {
        const f = r[name];
        assert.match(f.error, error, `${threads} threads, ${name}: the call's error`);
        assert.equal(f.every, true, `${threads} threads, ${name}: every part ran`);
        assert.deepEqual(f.after, [true, true, true], `${threads} threads, ${name}: later calls (assigned, shared, shared in two rounds)`);
      }
    }
  });
  test('a worker stopped (exit, a throw outside its job, terminate) during a shared call of 3,000 parts on 2 and 4 threads: the call ends within seconds, with every part done or the stop\'s error, and later calls run on the calling thread with the one-thread bits', { timeout: 90_000 }, () => {
    const script = `
      ${HOST_ON}
      ${srcImport('simdGelu', 'kernels/platform/hostSimd.ts')}
      ${srcImport('hostThreadsFailure, stopHostWorker', 'kernels/platform/simdThreads.ts')}
      const PARTS = 3000, GROUPS = 16, REPEAT = 40; // queue rounds by parts and by slots
      const n = 4 * GROUPS * PARTS;
      const pages = Math.ceil((2 * 4 * n) / 65536) + 1;
      const arrays = (memory) => ({ x: new Float32Array(memory.buffer, 0, n), y: new Float32Array(memory.buffer, 4 * n, n) });
      const unshared = new WebAssembly.Memory({ initial: pages });
      const one = arrays(unshared);
      one.x.set(Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) * 5));
      simdGelu(heapSimdHost(unshared), one.x, one.y);
      const want = bitsOf(one.y);
      const got = {};
      for (const threads of [2, 4]) {
        for (const how of ['exit', 'throw', 'terminate']) {
          const { memory, host } = hostOn(threads, pages);
          const a = arrays(memory);
          a.x.set(one.x);
          const armed = stopHostWorker(memory, how);
          const before = host.threads;
          const started = Date.now();
          let error = null;
          try {
            // each part's gelu REPEAT times (the same bits), so that terminate() is likely to find a part running
            host.callSplit([a.x], [a.y], ([xa, ya]) => Array.from({ length: PARTS }, (_, k) =>
              new Array(REPEAT).fill({ fn: 'gelu', args: [xa + 16 * GROUPS * k, ya + 16 * GROUPS * k, GROUPS] })));
          } catch (err) {
            error = err.message;
          }
          const ms = Date.now() - started;
          const whole = bitsOf(a.y).every((v, i) => v === want[i]);
          a.y.fill(0);
          simdGelu(host, a.x, a.y);
          got[threads + ' ' + how] = { armed, before, error, whole, ms, threads: host.threads, same: bitsOf(a.y).every((v, i) => v === want[i]), failure: hostThreadsFailure() };
        }
      }
      console.log(JSON.stringify(got));`;
    type Outcome = { armed: number; before: number; error: string | null; whole: boolean; ms: number; threads: number; same: boolean; failure: string | null };
    const got = childJson<Record<string, Outcome>>(script, 2, 60_000);
    const causes = { exit: 'it exited with code 7', throw: 'it threw outside its job: stopHostWorker', terminate: 'its thread ended with no word from it' };
    for (const threads of [2, 4]) {
      for (const [how, cause] of Object.entries(causes)) {
        const r = got[`${threads} ${how}`]!;
        const what = `${threads} threads, ${how}`;
        assert.deepEqual([r.armed, r.before, r.threads], [1, threads, 1], `${what}: the pools armed, the host's threads before, and after the stop`);
        if (how === 'terminate') {
          // the terminated worker held a part (the error), or the other threads did every part
          assert.ok(r.error === null ? r.whole : r.error.startsWith(`a host SIMD worker thread stopped during a call, its part unfinished: ${cause}`), `${what}: the call gave ${r.error}`);
        } else {
          // the worker stops as its job starts, holding no part: the others do every part
          assert.deepEqual([r.error, r.whole], [null, true], `${what}: the call's error, and whether every part was done`);
        }
        assert.ok(r.ms < 10_000, `${what}: the call ended after ${r.ms} ms`);
        assert.equal(r.same, true, `${what}: the next call's bits differ from one thread's`);
        assert.ok((r.failure ?? '').startsWith(`a host SIMD worker thread stopped: ${cause}`), `${what}: hostThreadsFailure() is ${r.failure}`);
      }
    }
  });
});
