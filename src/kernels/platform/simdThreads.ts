/**
 * Worker threads that run a run-time assembled SIMD module's exports (wasmAsm.ts) on a shared WebAssembly.Memory at
 * the same time as the calling thread: the host kernels' element-wise and row loops split over the cores, where
 * their arrays live in a shared memory (the threaded tfjs-backend-wasm build's heap, or the cpu backend's staging
 * memory); or a native library's functions through koffi (nativeThreads: the CBLAS grid of small products,
 * cblas.ts). Node only (worker_threads); one worker per thread beyond the caller's (`hostThreads()`).
 *
 * A call blocks, in one of two ways (SimdThreads.run):
 * - parts assigned (no more parts than threads): the caller writes each worker's calls (export index and arguments,
 *   as float64) into the worker's shared job array, wakes it (Atomics.notify), runs its own part, then waits for
 *   every worker (Atomics.wait). A worker runs its calls in order and reports done, or the first error's message.
 * - parts shared (more parts than threads: the split loops cut into SHARE_PARTS parts a thread): the caller writes
 *   every part into the pool's queue, wakes the workers, and every thread, the caller first, takes the next part not
 *   yet taken (a compare-and-swap on one word) until none is left; the caller then waits until every part is done.
 *   So a thread that starts late (a worker waking, or one the scheduler gives another process's time) takes fewer
 *   parts instead of holding the others up, and the caller never waits for a worker that took none: a worker that
 *   wakes after the queue is done, or for an earlier queue, finds the queue's word changed and takes nothing.
 * Every part writes its own elements and rows, so the results are the one-thread loop's bits whatever the thread
 * count and whichever thread runs a part.
 *
 * The workers start when the pool is made, which waits until each has instantiated the module (a caller blocked on a
 * worker that never started would wait for ever); where one cannot be made, fails or takes longer than WORKER_START_MS, the loops
 * run on the calling thread alone and hostThreadsFailure() says why. A watchdog (below) that does not start is
 * remembered for the process: later pools run on the calling thread at once, with the same reason.
 *
 * A worker whose thread stops (an error outside its job's try, process.exit in it, terminate(), running out of
 * memory) would leave its caller waiting for ever: the caller is blocked, so the Worker's 'exit' event, which comes
 * through the caller's event loop, cannot reach it. So a stop marks the worker's control words as DIED (its cause in
 * a message) and sets its DONE word to STOPPED, which wakes a caller waiting on it:
 * - from inside the worker where it can: its loop's catch (an error outside the job's try) and its process 'exit'
 *   handler (process.exit, which a worker's thread obeys by stopping) say why;
 * - from a watchdog, one thread per process that runs nothing but event handlers: each worker holds one end of a
 *   MessageChannel whose other end the watchdog listens on, and a worker's end closes when its thread is torn down
 *   whatever stopped it (terminate() and out-of-memory run no JavaScript in the worker), after its last write to the
 *   memory. The watchdog's 'close' handler marks the worker the same way (the first mark's cause is kept).
 * No timeout is involved: a job may take as long as it takes, the caller sleeps in Atomics.wait, and a call pays
 * one Atomics.load per worker it gives a job, to see whether that worker stopped since the last call. The watchdog
 * (unref'd, as the workers are) is reachable from this module only and runs no code of the pools'; were it stopped,
 * only the stops its workers say themselves would be seen.
 *
 * A pool with a stopped worker is retired: it posts no more jobs, its other workers are terminated, its count is 1,
 * and its calls run every part on the calling thread in turn (the same bits: each part writes its own elements), with
 * hostThreadsFailure(kind) saying why. A stop seen before a call posts its jobs loses nothing: that call runs on the
 * calling thread. A stop seen while the caller waits for a job throws, after the other workers' parts are done,
 * naming the workers' kind and the cause: the stopped part is not re-run on the caller, because a part may read what
 * it writes (softmax rows and the element-wise loops in place, sgemm with beta != 0), and one cut short has written
 * an unknown share of its outputs. (A shared queue whose every part was done in spite of the stop returns; the pool
 * is retired.) A stop also wakes a caller waiting for a shared queue (the pool's STATE word). stopHostWorker is the
 * tests' way to stop a worker.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MessageChannel, Worker } from 'node:worker_threads';
import { firstLineOf } from '../../errors.js';
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
  /** Threads, the calling one included: 1 once the pool is retired (its calls run on the calling thread). */
  readonly count: number;
  /**
   * Runs the parts at the same time: with no more parts than threads, `parts[0]` here (through `local`) and
   * `parts[i]` on worker i; with more, each part on whichever thread takes it first (the caller's through `local`),
   * the parts taken in order (the module comment's shared queue). Returns when all are done, throwing a worker's
   * error, or an error where a worker's thread stopped during the call (the pool then runs every part of later calls
   * here, in turn).
   */
  run(parts: ThreadCall<K>[][], local: (calls: ThreadCall<K>[]) => void): void;
}

/** float64 slots of a worker's job array: [calls, then per call: export index, argument count, arguments...]. */
const JOB_SLOTS = 1 << 14;
/** Calls of `args` arguments each that one job of a worker holds at most. */
export const jobCallsMax = (args: number): number => Math.floor((JOB_SLOTS - 1) / (2 + args));
/** Bytes of a worker's error message, and of the cause of its stop. */
const MESSAGE_BYTES = 512;
/**
 * Control words: the job's sequence number (written by the caller, 1 to SEQ_MAX and round again), the last one done
 * (by the worker; STOPPED once its thread stops) and whether it failed (by the worker), the worker's start (by the
 * worker: STARTED once the module is instantiated; START_FAILED where it stops before), DIED (set once, by whoever
 * marks the stop first, who writes its cause), and FAULT (set by stopHostWorker: how the next job stops the worker).
 */
const SEQ = 0;
const DONE = 1;
const FAILED = 2;
const START = 3;
const DIED = 4;
const FAULT = 5;
const CONTROL_WORDS = 6;
const STARTED = 1;
const START_FAILED = 2;
/** DONE of a worker whose thread stopped: no sequence number is negative. */
const STOPPED = -1;
const SEQ_MAX = 0x7fffffff;
/** FAULT: the worker calls process.exit(FAULT_EXIT_CODE), or throws outside its job's try. */
const FAULT_EXIT = 1;
const FAULT_THROW = 2;
const FAULT_EXIT_CODE = 7;
/** How long making a pool waits for its workers (and the watchdog) to start. */
const WORKER_START_MS = 30_000;

/**
 * Parts a thread the split loops are cut into (threadParts with `threads * SHARE_PARTS`), for the shared queue: the
 * threads' shares even out within a part, at one compare-and-swap a part.
 */
export const SHARE_PARTS = 8;

/** Parts to cut a split loop into for `threads` threads: SHARE_PARTS a thread where there are several, else 1. */
export const sharedParts = (threads: number): number => (threads > 1 ? threads * SHARE_PARTS : 1);
/**
 * The pool's words for its shared queue: CLAIM (the queue's number << PART_BITS | the next part not taken; queue 0
 * while the caller writes the next queue), NPARTS,
 * STATE (parts done, plus STOP_UNIT for each worker stop), FAILED_BY (1 + the index of the first worker whose part
 * threw, 0 for none).
 */
const CLAIM = 0;
const NPARTS = 1;
const STATE = 2;
const FAILED_BY = 3;
const POOL_WORDS = 4;
const PART_BITS = 11;
/** Parts a shared queue holds at most; its number wraps below 2^20, so CLAIM stays a positive int32. */
const PART_MASK = (1 << PART_BITS) - 1;
const QUEUE_MAX = (1 << (31 - PART_BITS)) - 1;
const STOP_UNIT = 1 << 20;
/** float64 slots of a pool's queue: [unused, part offsets (parts + 1), then per call: export index, argument count, arguments...]. */
const QUEUE_SLOTS = 1 << 16;

/**
 * JavaScript that the workers and the watchdog share: `text(into, what)` writes a message into a byte buffer;
 * `stopped(ctrl, cause, why)` marks a worker's thread stopped (the first mark writes `why` into `cause`, fails a start
 * still pending, and sets DONE to STOPPED, waking whoever waits on either word).
 */
const STOP_SOURCE = `
function text(into, what) {
  const bytes = new TextEncoder().encode(String(what).slice(0, ${MESSAGE_BYTES / 4}));
  into.fill(0); into.set(bytes.subarray(0, ${MESSAGE_BYTES}));
}
function stopped(ctrl, cause, why, pool) {
  if (Atomics.compareExchange(ctrl, ${DIED}, 0, 1) !== 0) return;
  text(cause, why);
  Atomics.compareExchange(ctrl, ${START}, 0, ${START_FAILED});
  Atomics.store(ctrl, ${DONE}, ${STOPPED});
  Atomics.notify(ctrl, ${START});
  Atomics.notify(ctrl, ${DONE});
  Atomics.add(pool, ${STATE}, ${STOP_UNIT});
  Atomics.notify(pool, ${STATE});
}
const messageOf = (err) => String(err && err.message || err);`;

/** Largest argument count the workers pass without a spread (cblas_sgemm's 14). */
const INVOKE_ARGS = 14;
/**
 * JavaScript of `invoke(f, a, p, n)`: f called with the n float64 of a from p, each count up to INVOKE_ARGS one plain
 * call (a spread of a subarray makes a view and iterates it).
 */
const INVOKE_SOURCE = `
function invoke(f, a, p, n) {
  switch (n) {
${Array.from({ length: INVOKE_ARGS + 1 }, (_, n) => `    case ${n}: return f(${Array.from({ length: n }, (_, i) => `a[p + ${i}]`).join(', ')});`).join('\n')}
    default: return f(...a.subarray(p, p + n));
  }
}`;

/**
 * A worker: `setup` (CommonJS, run with `eval`) sets `fns`, the functions calls name by index, from `workerData`;
 * then it runs jobs as they come. `port` is the worker's end of its channel to the watchdog: it stays open (and
 * reachable) while the thread lives.
 */
const workerSource = (setup: string): string => `
const { workerData } = require('node:worker_threads');
const { control, job, message, cause, port, index } = workerData;
const ctrl = new Int32Array(control), calls = new Float64Array(job), msg = new Uint8Array(message), why = new Uint8Array(cause);
const pool = new Int32Array(workerData.pool), queue = new Float64Array(workerData.queue);
${STOP_SOURCE}
${INVOKE_SOURCE}
process.on('exit', (code) => stopped(ctrl, why, 'it exited with code ' + code, pool));
let fns;
try {
  ${setup}
  Atomics.store(ctrl, ${START}, ${STARTED});
  Atomics.notify(ctrl, ${START});
} catch (err) {
  fns = undefined;
  stopped(ctrl, why, messageOf(err), pool);
}
// The parts of shared queue number q: taken one at a time while CLAIM holds q and parts are left.
function shareQueue(q) {
  for (;;) {
    const w = Atomics.load(pool, ${CLAIM});
    if (w >>> ${PART_BITS} !== q) return;
    const part = w & ${PART_MASK};
    const parts = Atomics.load(pool, ${NPARTS});
    if (part >= parts) return;
    if (Atomics.compareExchange(pool, ${CLAIM}, w, w + 1) !== w) continue;
    try {
      for (let p = queue[1 + part], end = queue[2 + part]; p < end;) {
        const n = queue[p + 1];
        invoke(fns[queue[p]], queue, p + 2, n);
        p += 2 + n;
      }
    } catch (err) {
      if (Atomics.compareExchange(pool, ${FAILED_BY}, 0, index + 1) === 0) text(msg, messageOf(err));
    }
    if ((Atomics.add(pool, ${STATE}, 1) + 1) % ${STOP_UNIT} === parts) Atomics.notify(pool, ${STATE});
  }
}
let seq = 0;
try {
  while (fns !== undefined) {
    Atomics.wait(ctrl, ${SEQ}, seq);
    seq = Atomics.load(ctrl, ${SEQ});
    if (ctrl[${FAULT}] !== 0) {
      if (ctrl[${FAULT}] === ${FAULT_EXIT}) process.exit(${FAULT_EXIT_CODE});
      throw new Error('stopHostWorker: a throw outside the job');
    }
    let failed = 0;
    if (calls[0] < 0) {
      shareQueue(calls[1]);
    } else {
      try {
        for (let k = 0, p = 1; k < calls[0]; k++) {
          const n = calls[p + 1];
          invoke(fns[calls[p]], calls, p + 2, n);
          p += 2 + n;
        }
      } catch (err) {
        text(msg, messageOf(err));
        failed = 1;
      }
    }
    Atomics.store(ctrl, ${FAILED}, failed);
    Atomics.store(ctrl, ${DONE}, seq);
    Atomics.notify(ctrl, ${DONE});
  }
} catch (err) {
  stopped(ctrl, why, 'it threw outside its job: ' + messageOf(err), pool);
}
port; // kept: its closing is the watchdog's word that this thread stopped`;

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

/**
 * The watchdog: each message registers a worker (its channel's other end and its control words); when that end
 * closes, the worker's thread has stopped, and it is marked so. Its own START word says it runs, or its cause (in
 * workerData.cause) why its setup threw.
 */
const WATCHDOG_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
${STOP_SOURCE}
const ctrl = new Int32Array(workerData.control);
const watched = new Set(); // the ports, reachable while their workers run
try {
  parentPort.on('message', ({ port, control, cause, pool }) => {
    const ctrl = new Int32Array(control), why = new Uint8Array(cause), words = new Int32Array(pool);
    watched.add(port);
    port.on('message', () => undefined); // starts the port, so that its 'close' comes
    port.once('close', () => {
      watched.delete(port);
      stopped(ctrl, why, 'its thread ended with no word from it (terminated, or out of memory)', words);
    });
  });
  Atomics.store(ctrl, ${START}, ${STARTED});
  Atomics.notify(ctrl, ${START});
} catch (err) {
  stopped(ctrl, new Uint8Array(workerData.cause), messageOf(err), new Int32Array(${POOL_WORDS}));
}`;

/** A thread's control words and the cause of its stop, as waitForStart reads them. */
interface Started {
  ctrl: Int32Array;
  cause: Uint8Array;
}

interface WorkerSlot extends Started {
  worker: Worker;
  calls: Float64Array;
  message: Uint8Array;
  seq: number;
}

interface Watchdog extends Started {
  worker: Worker;
}

const shared = (bytes: number) => new SharedArrayBuffer(bytes);

// execArgv: none of this process's (`--input-type`, `--import` hooks are for the main script, not this CommonJS)
const workerOptions = (): { eval: true; execArgv: string[] } => ({ eval: true, execArgv: [] });

let watchdog: Watchdog | undefined;
/**
 * Why the watchdog did not start (`the watchdog thread: ` and the cause), kept for the process: a pool made after it
 * runs its calls on the calling thread at once, not waiting WORKER_START_MS for the watchdog again. Null until then.
 */
let watchdogFailure: string | null = null;

/**
 * The process's watchdog, started on first use; unref'd, as the workers are: it never keeps the process alive. Or,
 * once it failed to start (its thread could not be made here, or a pool's wait for it gave up: startPool), why.
 */
function theWatchdog(): Watchdog | string {
  if (watchdogFailure !== null) return watchdogFailure;
  if (watchdog !== undefined) return watchdog;
  const control = shared(CONTROL_WORDS * 4);
  const cause = shared(MESSAGE_BYTES);
  let worker: Worker;
  try {
    worker = new Worker(WATCHDOG_SOURCE, { ...workerOptions(), workerData: { control, cause } });
  } catch (err) {
    // a thread that cannot be made (ERR_WORKER_INIT_FAILED: the process's or its cgroup's thread limit)
    return (watchdogFailure = `the watchdog thread: ${firstLineOf(err)}`);
  }
  worker.unref();
  worker.on('error', () => undefined); // one that cannot start is found by waitForStart
  return (watchdog = { worker, ctrl: new Int32Array(control), cause: new Uint8Array(cause) });
}

/** A pool's shared queue: its words (POOL_WORDS) and its slots (QUEUE_SLOTS float64). */
interface PoolQueue {
  words: SharedArrayBuffer;
  slots: SharedArrayBuffer;
}

function startWorker(setup: string, data: Record<string, unknown>, dog: Watchdog, queue: PoolQueue, index: number): WorkerSlot {
  const control = shared(CONTROL_WORDS * 4);
  const job = shared(JOB_SLOTS * 8);
  const message = shared(MESSAGE_BYTES);
  const cause = shared(MESSAGE_BYTES);
  const { port1, port2 } = new MessageChannel();
  dog.worker.postMessage({ port: port1, control, cause, pool: queue.words }, [port1]);
  const worker = new Worker(workerSource(setup), {
    ...workerOptions(),
    workerData: { ...data, control, job, message, cause, port: port2, pool: queue.words, queue: queue.slots, index },
    transferList: [port2],
  });
  worker.unref(); // idle workers never keep the process alive
  worker.on('error', () => undefined); // a worker's stop is found through its control words, not by an uncaught error
  return {
    worker, ctrl: new Int32Array(control), calls: new Float64Array(job), message: new Uint8Array(message), cause: new Uint8Array(cause), seq: 0,
  };
}

const textOf = (bytes: Uint8Array): string => new TextDecoder().decode(bytes.slice()).replace(/\0+$/, '');

/** Waits until every thread of `slots` has started; returns why one did not (`names[i]: ` before it where named), or null. */
function waitForStart(slots: Started[], names: readonly string[] = []): string | null {
  const deadline = Date.now() + WORKER_START_MS;
  for (const [i, slot] of slots.entries()) {
    for (let left = WORKER_START_MS; Atomics.load(slot.ctrl, START) === 0 && left > 0; left = deadline - Date.now()) {
      Atomics.wait(slot.ctrl, START, 0, left);
    }
    const state = Atomics.load(slot.ctrl, START);
    const who = names[i] === undefined ? '' : `${names[i]}: `;
    if (state === START_FAILED) return who + textOf(slot.cause);
    if (state !== STARTED) return `${who}not started within ${WORKER_START_MS / 1000} s`;
  }
  return null;
}

/** The pools' kinds: the SIMD loops' (simdThreads), the native library's (nativeThreads); the words their messages use. */
const POOL_KINDS = { simd: 'host SIMD worker', native: 'host native worker' } as const;
export type PoolKind = keyof typeof POOL_KINDS;

const failures = new Map<PoolKind, string>();

/**
 * Why the last pool of `kind` whose workers did not start, or whose worker stopped, runs its calls on the calling
 * thread alone; or null.
 */
export function hostThreadsFailure(kind: PoolKind = 'simd'): string | null {
  return failures.get(kind) ?? null;
}

/** Writes call `c` at slot p of `into` (export index, argument count, arguments); returns the slot after it. */
function encodeCall(c: ThreadCall, index: ReadonlyMap<string, number>, into: Float64Array, p: number): number {
  const i = index.get(c.fn);
  if (i === undefined) throw new Error(`simdThreads: no export ${c.fn}`);
  const args = c.args;
  into[p] = i;
  into[p + 1] = args.length;
  for (let j = 0; j < args.length; j++) into[p + 2 + j] = args[j]!; // a loop: TypedArray.set from an array costs more here
  return p + 2 + args.length;
}

function encode(calls: ThreadCall[], index: ReadonlyMap<string, number>, into: Float64Array): void {
  let p = 1;
  for (const c of calls) {
    if (p + 2 + c.args.length > into.length) throw new Error(`simdThreads: a part's calls take more than the ${JOB_SLOTS - 1} slots of a worker's job`);
    p = encodeCall(c, index, into, p);
  }
  into[0] = calls.length;
}

/**
 * Writes `parts` into a shared queue's slots (QUEUE_SLOTS layout); returns how many of them, from the first, fit (at
 * least one part, which must fit alone: a part of its offset and its calls' slots, QUEUE_SLOTS - 2 at most).
 */
function encodeQueue(parts: ThreadCall[][], index: ReadonlyMap<string, number>, into: Float64Array): number {
  let fit = 0;
  let size = 2; // the unused slot and the end offset
  for (const part of parts) {
    if (fit === PART_MASK) break;
    let more = 1;
    for (const c of part) more += 2 + c.args.length;
    if (size + more > into.length) {
      if (fit === 0) throw new Error(`simdThreads: a part of ${more} queue slots, more than the ${into.length - size} a queue round holds`);
      break;
    }
    size += more;
    fit++;
  }
  let p = fit + 2;
  for (let k = 0; k < fit; k++) {
    into[1 + k] = p;
    for (const c of parts[k]!) p = encodeCall(c, index, into, p);
  }
  into[1 + fit] = p;
  return fit;
}

/** A pool's workers, for stopHostWorker. */
const poolWorkers = new WeakMap<SimdThreads, readonly WorkerSlot[]>();

/**
 * `count` - 1 workers set up by `setup` from `data`, whose functions calls name from `names`, as SimdThreads; null
 * (the reason kept for hostThreadsFailure) where one does not start. `kind` names the workers in their errors.
 */
function startPool<K extends string>(count: number, names: readonly K[], setup: string, data: Record<string, unknown>, kind: PoolKind): SimdThreads<K> | null {
  const what = POOL_KINDS[kind];
  const index = new Map(names.map((n, i) => [n as string, i]));
  const didNotStart = (why: string): null => {
    failures.set(kind, `${count - 1} ${what} thread${count === 2 ? '' : 's'} did not start: ${why}`);
    return null;
  };
  const dog = theWatchdog();
  if (typeof dog === 'string') return didNotStart(dog);
  const queue: PoolQueue = { words: shared(POOL_WORDS * 4), slots: shared(QUEUE_SLOTS * 8) };
  const words = new Int32Array(queue.words);
  const slots = new Float64Array(queue.slots);
  const workers: WorkerSlot[] = [];
  for (let i = 0; i < count - 1; i++) {
    try {
      workers.push(startWorker(setup, data, dog, queue, i));
    } catch (err) {
      // a thread that cannot be made (ERR_WORKER_INIT_FAILED: the process's or its cgroup's thread limit)
      for (const w of workers) void w.worker.terminate();
      return didNotStart(firstLineOf(err));
    }
  }
  const notStarted = waitForStart([dog, ...workers], ['the watchdog thread']);
  if (notStarted !== null) {
    for (const w of workers) void w.worker.terminate();
    if (Atomics.load(dog.ctrl, START) !== STARTED) watchdogFailure = notStarted; // the watchdog's own: kept for the process
    return didNotStart(notStarted);
  }
  /** Why the pool is retired (the cause of a worker's stop), or null while its workers run. */
  let retired: string | null = null;
  const retire = (w: WorkerSlot): string => {
    retired = textOf(w.cause);
    failures.set(kind, `a ${what} thread stopped: ${retired}; its pool's calls run on the calling thread alone`);
    for (const x of workers) void x.worker.terminate();
    return retired;
  };
  /** The shared queues' number, 1 to QUEUE_MAX and round again. */
  let queueNumber = 0;
  const post = (w: WorkerSlot): void => {
    w.seq = w.seq === SEQ_MAX ? 1 : w.seq + 1;
    Atomics.store(w.ctrl, SEQ, w.seq);
    Atomics.notify(w.ctrl, SEQ);
  };
  /** Waits until `w` has finished its last job; returns its DONE word (its seq, or STOPPED). */
  const idle = (w: WorkerSlot): number => {
    let done = Atomics.load(w.ctrl, DONE);
    while (done !== w.seq && done !== STOPPED) {
      Atomics.wait(w.ctrl, DONE, done);
      done = Atomics.load(w.ctrl, DONE);
    }
    return done;
  };
  const stoppedDuring = (gone: WorkerSlot, localError: unknown): Error =>
    new Error(`a ${what} thread stopped during a call, its part unfinished: ${retire(gone)}; later calls run on the calling thread alone`,
      localError === null ? undefined : { cause: localError });

  /** `parts` (more than the threads) by the shared queue, as many rounds as the queue needs. */
  const share = (parts: ThreadCall<K>[][], local: (calls: ThreadCall<K>[]) => void): void => {
    for (let first = 0; first < parts.length;) {
      if (retired !== null) {
        for (const part of parts.slice(first)) local(part);
        return;
      }
      // CLAIM closed (queue 0, which no worker is given) before the slots and NPARTS change: a worker that read the
      // last queue's word takes nothing from this one (its compare-and-swap fails)
      Atomics.store(words, CLAIM, 0);
      const n = encodeQueue(parts.slice(first), index, slots);
      shareRound(parts.slice(first, first + n), local);
      first += n;
    }
  };
  const shareRound = (parts: ThreadCall<K>[][], local: (calls: ThreadCall<K>[]) => void): void => {
    const n = parts.length;
    queueNumber = queueNumber === QUEUE_MAX ? 1 : queueNumber + 1;
    Atomics.store(words, NPARTS, n);
    Atomics.store(words, STATE, 0);
    Atomics.store(words, FAILED_BY, 0);
    Atomics.store(words, CLAIM, queueNumber << PART_BITS);
    // Every worker gets the queue, idle or not: a worker reads its job words only as it wakes, before it takes a
    // part, so one still finishing the last queue (it has taken its last part; its DONE word not yet written) or
    // not yet woken for it reads this queue's number, and takes this queue's parts, or none.
    for (const w of workers) {
      w.calls[0] = -1;
      w.calls[1] = queueNumber;
      post(w);
    }
    let localError: unknown = null;
    for (;;) {
      const claim = Atomics.load(words, CLAIM);
      const part = claim & PART_MASK;
      if (part >= n) break;
      if (Atomics.compareExchange(words, CLAIM, claim, claim + 1) !== claim) continue;
      try {
        local(parts[part]!);
      } catch (err) {
        localError ??= err;
      }
      Atomics.add(words, STATE, 1);
    }
    let state = Atomics.load(words, STATE);
    while (state % STOP_UNIT < n && state < STOP_UNIT) {
      Atomics.wait(words, STATE, state);
      state = Atomics.load(words, STATE);
    }
    if (state >= STOP_UNIT) {
      // A worker stopped: the live ones finish the parts they took (every part is taken by now), then the stop is
      // an error where a part was left undone.
      let gone: WorkerSlot | null = null;
      for (const w of workers) if (idle(w) === STOPPED) gone ??= w;
      if (gone !== null) {
        if (Atomics.load(words, STATE) % STOP_UNIT < n) throw stoppedDuring(gone, localError);
        retire(gone);
      }
    }
    if (localError !== null) throw localError;
    const failedBy = Atomics.load(words, FAILED_BY);
    if (failedBy !== 0) throw new Error(`a ${what} thread failed: ${textOf(workers[failedBy - 1]!.message)}`);
  };

  /** `parts` (at most the threads) assigned: parts[0] here, parts[i] on worker i. */
  const assign = (parts: ThreadCall<K>[][], local: (calls: ThreadCall<K>[]) => void): void => {
    const busy = workers.slice(0, parts.length - 1);
    // A worker may still be finishing a shared queue's part: its job array is written once it is idle.
    for (let i = 0; retired === null && i < busy.length; i++) if (idle(busy[i]!) === STOPPED) retire(busy[i]!);
    if (retired !== null) {
      for (const part of parts) local(part);
      return;
    }
    // Every job written before any is posted: a part that cannot be written (an unknown export, more than JOB_SLOTS)
    // throws with no thread running.
    busy.forEach((w, i) => encode(parts[i + 1]!, index, w.calls));
    for (const w of busy) post(w);
    let localError: unknown = null;
    try {
      local(parts[0] ?? []);
    } catch (err) {
      localError = err;
    }
    let failure: string | null = null;
    let gone: WorkerSlot | null = null;
    for (const w of busy) {
      if (idle(w) === STOPPED) gone ??= w;
      else if (Atomics.load(w.ctrl, FAILED) !== 0) failure ??= textOf(w.message);
    }
    if (gone !== null) throw stoppedDuring(gone, localError);
    if (localError !== null) throw localError;
    if (failure !== null) throw new Error(`a ${what} thread failed: ${failure}`);
  };

  const pool: SimdThreads<K> = {
    get count() {
      return retired === null ? count : 1;
    },
    run(parts, local) {
      if (parts.length <= count) {
        assign(parts, local);
        return;
      }
      for (let i = 0; retired === null && i < workers.length; i++) if (Atomics.load(workers[i]!.ctrl, DONE) === STOPPED) retire(workers[i]!);
      if (retired !== null) {
        for (const part of parts) local(part);
        return;
      }
      share(parts, local);
    },
  };
  poolWorkers.set(pool, workers);
  return pool;
}

/** How stopHostWorker stops a worker. */
export type WorkerStop = 'exit' | 'throw' | 'terminate';

/**
 * For the tests of a worker's stop: stops the first worker of the pools on `on` (a shared memory's SIMD pools, or
 * the native pool of the library at that path) in their next call that gives it a job. 'exit' makes the worker call
 * process.exit(7) as the job starts and 'throw' makes it throw outside the job's try then (both said from inside the
 * worker); 'terminate' has the caller terminate() it once the job is posted (nothing runs in the worker then: the
 * watchdog sees it go). Returns the pools it armed.
 */
export function stopHostWorker(on: WebAssembly.Memory | string, how: WorkerStop): number {
  const found = typeof on === 'string' ? [nativePools.get(on)] : [...(pools.get(on)?.values() ?? [])];
  let armed = 0;
  for (const pool of found) {
    const first = pool === null || pool === undefined ? undefined : poolWorkers.get(pool)?.[0];
    if (pool === null || pool === undefined || first === undefined) continue;
    armed++;
    if (how !== 'terminate') {
      Atomics.store(first.ctrl, FAULT, how === 'exit' ? FAULT_EXIT : FAULT_THROW);
      continue;
    }
    const run = pool.run;
    pool.run = (parts, local) => {
      pool.run = run;
      run(parts, (calls) => {
        void first.worker.terminate();
        local(calls);
      });
    };
  }
  return armed;
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
 * Runs `parts` (lists of calls of `exports`: one per thread, or more, which the threads share) at once on `threads`,
 * else one after another on this thread.
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
