/**
 * The wasm backend in each configuration a user can end up in gives the cpu backend's training losses: host threads
 * (MICSE_HOST_THREADS=1, tfjs-backend-wasm's unthreaded build; 2, its threaded build with the SIMD loops on worker
 * threads) by the dense products' engine (MICSE_NATIVE_GEMM: cblas, the system's OpenBLAS; mlas, onnxruntime-node's
 * MLAS; 0, TF.js's own XNNPACK, the engine of every browser page). Each configuration trains the tiny checkpoint a
 * few miCSE steps in a child process of its own, which reports its backend line and per-step losses; the line must
 * name the threads and engine asked for, and every loss must be the cpu run's within a tolerance. From the second
 * update on, AdamW updates the weights in place, so a backend whose products keep reading the weights' old values
 * (XNNPACK's packed-weight cache) drifts from the cpu run's losses.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { HOST_THREADS_ENV } from '../src/kernels/platform/simdThreads.js';
import { loadNativeGemm, NATIVE_GEMM_ENV } from '../src/kernels/stock/host.js';
import { defaultConfig, mergeConfig, type TrainConfig } from '../src/train/config.js';
import { lossComparisonConfig, ROOT, shared, SKIP_NO_CBLAS, SKIP_NO_SHARED, srcImport, testTempDir } from './helpers.js';

const STEPS = 6;
/**
 * Relative loss tolerance at step 1 and at step STEPS (linear between). Measured on a 2-core x86-64 machine (OpenBLAS,
 * onnxruntime-node 1.21.0): every configuration within 2.4e-7 of cpu at step 1 and 1.3e-6 at most by step 6 (XNNPACK),
 * 40-75x under these; the stale packed weights of XNNPACK's cache (AdamW's in-place update not re-registered) gave
 * 2.9e-4 at step 2 and 2e-3 to 5.5e-3 at steps 3, 4 and 6, 10x and more over them.
 */
const LOSS_TOL_FIRST = 1e-5;
const LOSS_TOL_LAST = 1e-4;
/** STS-B dev pairs of the children's senteval folder: the run's evaluation before its first step scores them (not what this test checks). */
const DEV_PAIRS = 16;
/** The children running at once: the suite runs on 2 cores, and a child of the threaded build keeps both busy. */
const PARALLEL = 2;
/**
 * browser.test.ts's training config (lossComparisonConfig), over a subset of ../shared's corpus one epoch of STEPS
 * steps long. The run is planned one step longer and stopped after STEPS (TrainOptions.stopAfter), which skips a
 * finished run's STS-B dev evaluation, checkpoint and curves (seconds a child).
 */
const TRAIN_CONFIG = lossComparisonConfig(STEPS + 1, 8 * STEPS);

/** Why MLAS cannot run here (onnxruntime-node did not load), or false; as SKIP_NO_CBLAS, CI fails instead of skipping. */
const SKIP_NO_MLAS: string | false = (() => {
  const { gemm, why } = loadNativeGemm('mlas', 1);
  if (gemm !== undefined || process.env['CI'] === 'true') return false;
  return `${why.join('; ')}: skipped outside CI`;
})();

/** What a child reports: its backend line (describeSelection) and the loss of every step. */
interface Run {
  line: string;
  losses: number[];
}

/** Trains the JSON config in argv[1] for STEPS steps and prints `Run` as JSON on its last line. */
const CHILD = `${srcImport('train', 'train/trainer.ts')}
const losses = [];
let line = '';
await train(JSON.parse(process.argv[1]), {
  quiet: true, stopAfter: ${STEPS}, log: (l) => { if (l.startsWith('backend:')) line = l; }, onStep: (m) => losses.push(m.loss),
});
console.log(JSON.stringify({ line, losses }));`;

/** Runs CHILD on `config` with `env` over this process's environment less the two switches; resolves with its report. */
function trainInChild(config: TrainConfig, env: Record<string, string>): Promise<Run> {
  const base = { ...process.env };
  delete base[HOST_THREADS_ENV];
  delete base[NATIVE_GEMM_ENV];
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', CHILD, JSON.stringify(config)],
    { cwd: ROOT, env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.once('error', reject).once('close', (code) => {
      if (code !== 0) reject(new Error(`child exited with ${code}: ${stderr.trim()}`));
      else resolve(JSON.parse(stdout.trim().split('\n').at(-1)!) as Run);
    });
  });
}

/** `tasks` run at most `limit` at a time; each result (or error) in the order given. */
function pooled<T>(tasks: (() => Promise<T>)[], limit: number): Promise<T>[] {
  let running = 0;
  const waiting: (() => void)[] = [];
  return tasks.map(async (task) => {
    if (running >= limit) await new Promise<void>((resolve) => waiting.push(resolve));
    running++;
    try {
      return await task();
    } finally {
      running--;
      waiting.shift()?.();
    }
  });
}

interface Configuration {
  threads: 1 | 2;
  gemm: 'cblas' | 'mlas' | '0';
}

const CONFIGURATIONS: Configuration[] = ([1, 2] as const).flatMap((threads) => (['cblas', 'mlas', '0'] as const).map((gemm) => ({ threads, gemm })));
const name = (c: Configuration): string => `${HOST_THREADS_ENV}=${c.threads} ${NATIVE_GEMM_ENV}=${c.gemm}`;
const skipOf = (c: Configuration): string | false => (c.gemm === 'cblas' ? SKIP_NO_CBLAS : c.gemm === 'mlas' ? SKIP_NO_MLAS : false);

/** The backend line's build and engine for `c`. */
function expectedLine(c: Configuration): RegExp[] {
  const build = c.threads === 1
    ? /\n {2}wasm: SIMD build, one thread; GELU, LayerNorm, dropout, AdamW: WebAssembly SIMD loops on the heap, 1 thread \(/
    : /\n {2}wasm: threaded SIMD build, XNNPACK on 1 thread; GELU, LayerNorm, dropout, AdamW: WebAssembly SIMD loops on the shared heap, 2 threads \(/;
  const engine = c.gemm === 'cblas' ? `CBLAS [^\\n]*, ${c.threads} threads? \\(`
    : c.gemm === 'mlas' ? `onnxruntime-node MLAS, ${c.threads} threads? \\(` : 'XNNPACK \\(';
  return [/^backend: wasm \(TF\.js 'wasm'\)\n/, build, new RegExp(`\\n {2}dense products: ${engine}`)];
}

describe('wasm in every host-thread and product-engine configuration trains as cpu does', { skip: SKIP_NO_SHARED }, () => {
  const tmp = testTempDir('wasm-configs');
  const senteval = path.join(tmp, 'senteval');
  const configFor = (run: string, backend: 'cpu' | 'wasm'): TrainConfig => mergeConfig(defaultConfig(), {
    ...TRAIN_CONFIG,
    model: { init: shared('hf-reference', 'tiny-h32-l4') },
    data: { ...TRAIN_CONFIG.data, train: shared('wiki1m-head.txt'), senteval },
    train: { ...TRAIN_CONFIG.train, output: path.join(tmp, run), backend },
  }, 'test');
  const runs = new Map<string, Promise<Run>>();

  before(() => {
    const stsb = path.join(senteval, 'STS', 'STSBenchmark');
    mkdirSync(stsb, { recursive: true });
    const dev = readFileSync(shared('senteval', 'STS', 'STSBenchmark', 'sts-dev.csv'), 'utf8').split('\n').slice(0, DEV_PAIRS);
    writeFileSync(path.join(stsb, 'sts-dev.csv'), dev.join('\n') + '\n');
    const wanted = CONFIGURATIONS.filter((c) => skipOf(c) === false);
    const results = pooled([
      () => trainInChild(configFor('cpu', 'cpu'), {}),
      ...wanted.map((c) => () => trainInChild(configFor(`wasm-${c.threads}-${c.gemm}`, 'wasm'),
        { [HOST_THREADS_ENV]: String(c.threads), [NATIVE_GEMM_ENV]: c.gemm })),
    ], PARALLEL);
    // Each test awaits its own run; the rejections are seen there.
    results.forEach((r) => r.catch(() => undefined));
    runs.set('cpu', results[0]!);
    wanted.forEach((c, i) => runs.set(name(c), results[i + 1]!));
  });

  for (const c of CONFIGURATIONS) {
    test(`${name(c)}: the backend line names them; every step's loss is the cpu run's`, { skip: skipOf(c) }, async () => {
      const cpu = await runs.get('cpu')!;
      const got = await runs.get(name(c))!;
      for (const re of expectedLine(c)) assert.match(got.line, re);
      assert.equal(cpu.losses.length, STEPS);
      assert.equal(got.losses.length, STEPS);
      const rel = got.losses.map((loss, i) => Math.abs(loss - cpu.losses[i]!) / Math.abs(cpu.losses[i]!));
      rel.forEach((r, i) => {
        const tol = LOSS_TOL_FIRST + ((LOSS_TOL_LAST - LOSS_TOL_FIRST) * i) / (STEPS - 1);
        assert.ok(r <= tol, `step ${i + 1}: loss ${got.losses[i]} vs cpu's ${cpu.losses[i]} (relative ${r.toExponential(2)} > ${tol.toExponential(2)})`);
      });
    });
  }
});
