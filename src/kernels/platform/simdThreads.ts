/**
 * Worker threads that run a run-time assembled SIMD module's exports (wasmAsm.ts) on a shared WebAssembly.Memory at
 * the same time as the calling thread: the host kernels' element-wise and row loops split over the cores, where
 * their arrays live in a shared memory (the threaded tfjs-backend-wasm build's heap, or the cpu backend's staging
 * memory); or a native library's functions through koffi (nativeThreads: the CBLAS grid of small products,
 * cblas.ts). Node only (worker_threads); one worker per thread beyond the caller's (`hostThreads()`).
 *
 * A call blocks: the caller writes each worker's calls (export index and arguments, as float64) into the worker's
 * shared job array, wakes it (Atomics.notify), runs its own part, then waits for every worker (Atomics.wait). A
 * worker runs its calls in order and reports done, or the first error's message. Every part writes its own
 * elements and rows, so the results are the one-thread loop's bits whatever the thread count.
 *
 * The workers start when the pool is made, which waits until each has instantiated the module (a caller blocked on a
 * worker that never started would wait for ever); where one fails or takes longer than WORKER_START_MS, the loops
 * run on the calling thread alone and hostThreadsFailure() says why.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { IS_NODE } from '../../isNode.js';

/** Overrides the threads the host loops use (the calling thread included; 1: no workers). */
export const HOST_THREADS_ENV = 'MICSE_HOST_THREADS';

let cores: number | undefined;

/**
 * The cores this process may use: os.availableParallelism() (the CPU affinity `taskset` sets), capped by its cgroup's
 * CPU quota (`docker run --cpus`, a Kubernetes CPU limit), which Node 20's libuv does not read. Read once: the
 * backends, CBLAS, MLAS and each pool ask for it.
 */
export function hostCores(): number {
  cores ??= Math.min(os.availableParallelism(), cgroupCpuQuota(readSmallFile) ?? Infinity);
  return cores;
}

function readSmallFile(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

/**
 * The process's cgroup CPU quota in whole cores (rounded up, at least 1), or null where none is set or readable:
 * cgroup v2's cpu.max ("max 100000", "150000 100000") of the process's group (its "0::/path" line in
 * /proc/self/cgroup), else v1's cpu.cfs_quota_us / cpu.cfs_period_us of its cpu controller's group, as libuv reads
 * them (uv_available_parallelism, libuv >= 1.49). `read` returns a file's text or null.
 */
export function cgroupCpuQuota(read: (file: string) => string | null): number | null {
  const lines = (read('/proc/self/cgroup') ?? '').split('\n');
  const cores = (quota: number, period: number): number | null =>
    Number.isFinite(quota) && quota > 0 && Number.isFinite(period) && period > 0 ? Math.max(1, Math.ceil(quota / period)) : null;
  const v2 = lines.find((l) => l.startsWith('0::'));
  if (v2 !== undefined) {
    const max = read(path.posix.join('/sys/fs/cgroup', v2.slice(3).trim(), 'cpu.max'));
    if (max !== null) {
      const [quota, period] = max.trim().split(/\s+/);
      return quota === 'max' ? null : cores(Number(quota), Number(period));
    }
  }
  const v1 = lines.map((l) => l.split(':')).find((f) => f.length >= 3 && f[1]!.split(',').includes('cpu'));
  if (v1 === undefined) return null;
  const group = v1.slice(2).join(':').trim();
  for (const mount of ['/sys/fs/cgroup/cpu', '/sys/fs/cgroup/cpu,cpuacct']) {
    const quota = read(path.posix.join(mount, group, 'cpu.cfs_quota_us'));
    if (quota !== null) return cores(Number(quota.trim()), Number(read(path.posix.join(mount, group, 'cpu.cfs_period_us'))?.trim()));
  }
  return null;
}

/** Threads the host loops use: HOST_THREADS_ENV, else one per core; 1 outside Node. */
export function hostThreads(): number {
  if (!IS_NODE) return 1;
  const named = process.env[HOST_THREADS_ENV];
  if (named === undefined || named === '') return hostCores();
  const n = Number(named);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${HOST_THREADS_ENV}=${named}: expected a whole number >= 1`);
  return n;
}

/** Elements a thread takes at least in the split loops: below this, waking a worker costs about what it saves. */
export const THREAD_MIN_ELEMENTS = 1 << 15;

/** Whether `buffer` is a SharedArrayBuffer (a shared WebAssembly.Memory's, or one that views of it share). */
export function isShared(buffer: ArrayBufferLike): boolean {
  return typeof SharedArrayBuffer !== 'undefined' && buffer instanceof SharedArrayBuffer;
}

/** Whether loops can run on threads here: Node (worker_threads), SharedArrayBuffer, and more than one host thread. */
export function hostThreadsAvailable(): boolean {
  return typeof SharedArrayBuffer !== 'undefined' && hostThreads() > 1;
}

/** One export call: its name and its arguments (byte addresses, counts, float32 scalars). */
export interface ThreadCall<K extends string = string> {
  fn: K;
  args: number[];
}

/** Threads running a module's exports on one shared memory. */
export interface SimdThreads<K extends string = string> {
  /** Threads, the calling one included. */
  readonly count: number;
  /**
   * Runs `parts[0]` here (through `local`) and `parts[i]` on worker i at the same time (parts.length <= count);
   * returns when all are done, throwing a worker's error.
   */
  run(parts: ThreadCall<K>[][], local: (calls: ThreadCall<K>[]) => void): void;
}

/** float64 slots of a worker's job array: [calls, then per call: export index, argument count, arguments...]. */
const JOB_SLOTS = 1 << 14;
/** Calls of `args` arguments each that one job of a worker holds at most. */
export const jobCallsMax = (args: number): number => Math.floor((JOB_SLOTS - 1) / (2 + args));
/** Bytes of a worker's error message. */
const MESSAGE_BYTES = 512;
/**
 * Control words: the job's sequence number (written by the caller, 1 to SEQ_MAX and round again: an int32 word holds
 * it whole, so the caller's count and the word it waits on stay equal), the last one done and whether it failed (by
 * the worker), and the worker's start (by the worker: STARTED once the module is instantiated, else START_FAILED).
 */
const SEQ = 0;
const DONE = 1;
const FAILED = 2;
const START = 3;
const CONTROL_WORDS = 4;
const STARTED = 1;
const START_FAILED = 2;
const SEQ_MAX = 0x7fffffff;
/** How long making a pool waits for its workers to start. */
const WORKER_START_MS = 30_000;

/**
 * A worker: `setup` (CommonJS, run with `eval`) sets `fns`, the functions calls name by index, from `workerData`;
 * then it runs jobs as they come.
 */
const workerSource = (setup: string): string => `
const { workerData } = require('node:worker_threads');
const { control, job, message } = workerData;
const ctrl = new Int32Array(control), calls = new Float64Array(job), msg = new Uint8Array(message);
function report(err) {
  const text = new TextEncoder().encode(String(err && err.message || err).slice(0, ${MESSAGE_BYTES / 4}));
  msg.fill(0); msg.set(text.subarray(0, ${MESSAGE_BYTES}));
}
let fns;
try {
  ${setup}
  Atomics.store(ctrl, ${START}, ${STARTED});
} catch (err) {
  fns = undefined;
  report(err);
  Atomics.store(ctrl, ${START}, ${START_FAILED});
}
Atomics.notify(ctrl, ${START});
let seq = 0;
while (fns !== undefined) {
  Atomics.wait(ctrl, ${SEQ}, seq);
  seq = Atomics.load(ctrl, ${SEQ});
  let failed = 0;
  try {
    for (let k = 0, p = 1; k < calls[0]; k++) {
      const n = calls[p + 1];
      fns[calls[p]](...calls.subarray(p + 2, p + 2 + n));
      p += 2 + n;
    }
  } catch (err) {
    report(err);
    failed = 1;
  }
  Atomics.store(ctrl, ${FAILED}, failed);
  Atomics.store(ctrl, ${DONE}, seq);
  Atomics.notify(ctrl, ${DONE});
}`;

/** Worker setup for a SIMD module: instantiates it on the shared memory (workerData: module, memory, names). */
const WASM_SETUP = `const exports = new WebAssembly.Instance(workerData.module, { env: { memory: workerData.memory } }).exports;
  fns = workerData.names.map((n) => exports[n]);`;
/** Worker setup for a native library's functions: koffi loads it and declares them (workerData: koffi, library, declarations). */
const NATIVE_SETUP = `let lib;
  try {
    lib = require(workerData.koffi).load(workerData.library);
  } catch (err) {
    throw new Error(workerData.library + ': ' + (err && err.message || err));
  }
  fns = workerData.declarations.map((d) => lib.func(d));`;

interface WorkerSlot {
  worker: Worker;
  ctrl: Int32Array;
  calls: Float64Array;
  message: Uint8Array;
  seq: number;
}

function startWorker(setup: string, data: Record<string, unknown>): WorkerSlot {
  const control = new SharedArrayBuffer(CONTROL_WORDS * 4);
  const job = new SharedArrayBuffer(JOB_SLOTS * 8);
  const message = new SharedArrayBuffer(MESSAGE_BYTES);
  // execArgv: none of this process's (`--input-type`, `--import` hooks are for the main script, not this CommonJS)
  const worker = new Worker(workerSource(setup), { eval: true, execArgv: [], workerData: { ...data, control, job, message } });
  worker.unref(); // idle workers never keep the process alive
  worker.on('error', () => undefined); // a worker that cannot start is found by waitForStart, not by an uncaught error
  return { worker, ctrl: new Int32Array(control), calls: new Float64Array(job), message: new Uint8Array(message), seq: 0 };
}

const messageOf = (slot: WorkerSlot): string => new TextDecoder().decode(slot.message.slice()).replace(/\0+$/, '');

/** Waits until every worker has started; returns why one did not, or null. */
function waitForStart(slots: WorkerSlot[]): string | null {
  const deadline = Date.now() + WORKER_START_MS;
  for (const slot of slots) {
    for (let left = WORKER_START_MS; Atomics.load(slot.ctrl, START) === 0 && left > 0; left = deadline - Date.now()) {
      Atomics.wait(slot.ctrl, START, 0, left);
    }
    const state = Atomics.load(slot.ctrl, START);
    if (state === START_FAILED) return messageOf(slot);
    if (state !== STARTED) return `not started within ${WORKER_START_MS / 1000} s`;
  }
  return null;
}

/** The pools' kinds: the SIMD loops' (simdThreads), the native library's (nativeThreads); the words their messages use. */
const POOL_KINDS = { simd: 'host SIMD worker', native: 'host native worker' } as const;
export type PoolKind = keyof typeof POOL_KINDS;

const startFailures = new Map<PoolKind, string>();

/** Why the last pool of `kind`'s workers did not start (its calls run on the calling thread alone), or null. */
export function hostThreadsFailure(kind: PoolKind = 'simd'): string | null {
  return startFailures.get(kind) ?? null;
}

function encode(calls: ThreadCall[], index: ReadonlyMap<string, number>, into: Float64Array): void {
  let p = 1;
  for (const c of calls) {
    if (p + 2 + c.args.length > into.length) throw new Error(`simdThreads: more than ${JOB_SLOTS} job slots`);
    const i = index.get(c.fn);
    if (i === undefined) throw new Error(`simdThreads: no export ${c.fn}`);
    into[p] = i;
    into[p + 1] = c.args.length;
    into.set(c.args, p + 2);
    p += 2 + c.args.length;
  }
  into[0] = calls.length;
}

/**
 * `count` - 1 workers set up by `setup` from `data`, whose functions calls name from `names`, as SimdThreads; null
 * (the reason kept for hostThreadsFailure) where one does not start. `kind` names the workers in their errors.
 */
function startPool<K extends string>(count: number, names: readonly K[], setup: string, data: Record<string, unknown>, kind: PoolKind): SimdThreads<K> | null {
  const what = POOL_KINDS[kind];
  const index = new Map(names.map((n, i) => [n as string, i]));
  const workers = Array.from({ length: count - 1 }, () => startWorker(setup, data));
  const notStarted = waitForStart(workers);
  if (notStarted !== null) {
    for (const w of workers) void w.worker.terminate();
    startFailures.set(kind, `${count - 1} ${what} thread${count === 2 ? '' : 's'} did not start: ${notStarted}`);
    return null;
  }
  return {
    count,
    run(parts, local) {
      if (parts.length > count) throw new Error(`simdThreads: ${parts.length} parts for ${count} threads`);
      const busy = workers.slice(0, parts.length - 1);
      busy.forEach((w, i) => {
        encode(parts[i + 1]!, index, w.calls);
        w.seq = w.seq === SEQ_MAX ? 1 : w.seq + 1;
        Atomics.store(w.ctrl, SEQ, w.seq);
        Atomics.notify(w.ctrl, SEQ);
      });
      let localError: unknown = null;
      try {
        local(parts[0] ?? []);
      } catch (err) {
        localError = err;
      }
      let failure: string | null = null;
      for (const w of busy) {
        for (let done = Atomics.load(w.ctrl, DONE); done !== w.seq; done = Atomics.load(w.ctrl, DONE)) Atomics.wait(w.ctrl, DONE, done);
        if (Atomics.load(w.ctrl, FAILED) !== 0) failure ??= messageOf(w);
      }
      if (localError !== null) throw localError;
      if (failure !== null) throw new Error(`a ${what} thread failed: ${failure}`);
    },
  };
}

const pools = new WeakMap<WebAssembly.Memory, Map<WebAssembly.Module, SimdThreads | null>>();

/**
 * Threads for `module`'s exports `names` on the shared `memory`, started on first use and kept for the process; null
 * where this is not Node or one thread is all there is.
 */
export function simdThreads<K extends string>(module: WebAssembly.Module, memory: WebAssembly.Memory, names: readonly K[]): SimdThreads<K> | null {
  let byModule = pools.get(memory);
  if (byModule === undefined) pools.set(memory, (byModule = new Map()));
  if (byModule.has(module)) return byModule.get(module) as SimdThreads<K> | null;
  const count = hostThreads(); // the memory is shared (the one caller checks): threads run where count > 1
  const pool = count > 1 ? startPool(count, names, WASM_SETUP, { module, memory, names }, 'simd') : null;
  byModule.set(module, pool);
  return pool;
}

const nativePools = new Map<string, SimdThreads | null>();

/**
 * Threads calling functions of the native library `library` through koffi (the package at `koffi`, a resolved path):
 * `declarations` gives each name its koffi declaration. Pointers pass as byte addresses (numbers), so the calls
 * read and write the caller's memory where it is. Started on first use and kept for the process, one pool per
 * library; null where one thread is all there is.
 */
export function nativeThreads<K extends string>(koffi: string, library: string, declarations: Readonly<Record<K, string>>): SimdThreads<K> | null {
  if (nativePools.has(library)) return nativePools.get(library) as SimdThreads<K> | null;
  const count = hostThreads();
  const names = Object.keys(declarations) as K[];
  const pool = count > 1 && typeof SharedArrayBuffer !== 'undefined'
    ? startPool(count, names, NATIVE_SETUP, { koffi, library, declarations: names.map((n) => declarations[n]) }, 'native')
    : null;
  nativePools.set(library, pool);
  return pool;
}

/**
 * Runs `parts` (one list of calls of `exports` per thread) at once on `threads`, else one after another on this
 * thread.
 */
export function runParts<K extends string>(exports: Record<K, unknown>, threads: SimdThreads<K> | null, parts: ThreadCall<K>[][]): void {
  const local = (calls: ThreadCall<K>[]): void => {
    for (const c of calls) (exports[c.fn] as (...args: number[]) => unknown)(...c.args);
  };
  if (threads !== null && parts.length > 1) threads.run(parts, local);
  else parts.forEach(local);
}

/**
 * The calls of `units` units of `unitElements` elements each (SIMD groups, rows, blocks of rows) cut into at most
 * `threads` runs of whole units, each at least THREAD_MIN_ELEMENTS elements (fewer runs where there are few units):
 * `call(first, count)` gives a run's calls; one list per run, as SimdThreads.run and runParts take them.
 */
export function threadParts<K extends string>(units: number, unitElements: number, threads: number,
  call: (first: number, count: number) => ThreadCall<K>[]): ThreadCall<K>[][] {
  return splitRuns(units, threads, Math.ceil(THREAD_MIN_ELEMENTS / unitElements)).map(([a, b]) => call(a, b - a));
}

/** [start, end) of `n` units cut into at most `parts` runs of whole units (fewer where n is small); `min` units at least a run. */
export function splitRuns(n: number, parts: number, min = 1): [number, number][] {
  const k = Math.max(1, Math.min(parts, Math.floor(n / Math.max(1, min))));
  const runs: [number, number][] = [];
  for (let i = 0; i < k; i++) {
    const a = Math.floor((n * i) / k);
    const b = Math.floor((n * (i + 1)) / k);
    if (b > a) runs.push([a, b]);
  }
  return runs;
}
