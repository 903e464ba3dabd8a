/**
 * Shared test helpers: the read-only ../shared folder and its skip rule ($MICSE_SHARED_DIR replaces ../shared:
 * bench/device/run.sh points it at the copy of the shared data it carries to a GPU machine); whether a WebGPU
 * adapter exists here, and whether a CBLAS library does; seeded test values and the element-wise comparison the backend tests use.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { selectBackend, softwareAdapter } from '../src/model/backend.js';
import { tf } from '../src/model/tf.js';
import { defaultConfig, mergeConfig, type PartialTrainConfig, type TrainConfig } from '../src/train/config.js';
import { Cblas } from '../src/kernels/platform/cblas.js';
import { observeRawDispatches } from '../src/kernels/platform/webgpuPrograms.js';
import { withComposedOps } from '../src/kernels/registry.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const SHARED = path.resolve(process.env['MICSE_SHARED_DIR'] || path.join(ROOT, '..', 'shared'));
export const SHARED_DATA = path.join(SHARED, 'data');
export const HAS_SHARED = existsSync(SHARED_DATA);
/** Pass as `{ skip: SKIP_NO_SHARED }` to tests that read ../shared. */
/**
 * Why the tests of the CBLAS products engine are skipped (no CBLAS library on this machine, outside CI), or false:
 * CI installs OpenBLAS (.ci/run), so there a missing library fails them.
 */
export const SKIP_NO_CBLAS: string | false = (() => {
  try {
    Cblas.load(1);
    return false;
  } catch (err) {
    return process.env['CI'] === 'true' ? false : `${(err as Error).message} (apt-get install -y libopenblas0-pthread): skipped outside CI`;
  }
})();

/**
 * Why the tests of what goes through glibc's functions (src/kernels/platform/libc.ts: malloc's tuning, fd 2 held
 * around Dawn's adapter discovery) are skipped, or false: they need glibc and koffi (an optional dependency).
 */
export const SKIP_NO_LIBC: string | false = (() => {
  const glibc = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime;
  let koffi = true;
  try {
    createRequire(import.meta.url).resolve('koffi');
  } catch {
    koffi = false;
  }
  return glibc !== undefined && koffi ? false : `glibc ${glibc ?? 'absent'}, koffi ${koffi ? 'installed' : 'absent'}: skipped`;
})();

export const SKIP_NO_SHARED: string | false = HAS_SHARED
  ? false
  : `../shared is absent (expected at ${SHARED}): tests that read the shared reference data are skipped`;

/** How the ops compute: `fused`, by their kernels where the backend has them; `composite`, by their composed ops alone. */
export type Implementation = 'fused' | 'composite';

/** `f()` computed as `implementation` says (`composite`: inside the kernels layer's withComposedOps). */
export function computedBy<T>(implementation: Implementation, f: () => T): T {
  return implementation === 'composite' ? withComposedOps(f) : f();
}

/** The training config's objective with its defaults (src/train/config.ts SCHEMA), which the losses take resolved. */
export const OBJECTIVE = defaultConfig().objective;
/** The AMI options that are objective keys, at their defaults. */
export const AMI_DEFAULTS = { targetSamples: OBJECTIVE.targetSamples, nanValue: OBJECTIVE.nanValue, rhoEps: OBJECTIVE.rhoEps };

export function shared(...parts: string[]): string {
  return path.join(SHARED_DATA, ...parts);
}

/**
 * The training config of the tests that compare a backend's per-step losses with the cpu run's (browser.test.ts,
 * wasm-configs.test.ts): the whole miCSE step (dropout, InfoNCE, AMI on layers 2..3 of the tiny checkpoint's 4, AdamW
 * with clipping) at batch 8 and seed 42, every step's loss logged, no evaluation; `maxSteps` steps planned, and
 * `count` corpus lines where given (else the corpus' own).
 */
export function lossComparisonConfig(maxSteps: number, count?: number) {
  return {
    data: { maxSeqLen: 32, ...(count === undefined ? {} : { count }) },
    objective: { style: 'micse', lambda: 1e-3, minLayer: 2, maxLayer: 4 },
    optim: { learningRate: 5e-4 },
    train: { batchSize: 8, maxSteps, evalSteps: 1000, finalEval: false, seed: 42, logSteps: 1 },
  } satisfies PartialTrainConfig;
}

/** A very small random-init run on the shared data (cpu backend: bitwise reproducible), `overrides` merged last. */
export function microConfig(output: string, overrides: Record<string, Record<string, unknown>> = {}): TrainConfig {
  const base = mergeConfig(defaultConfig(), {
    model: {
      init: 'random', tokenizer: shared('bert-base-uncased'),
      config: { hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32, max_position_embeddings: 64 },
    },
    data: { train: shared('wiki1m-head.txt'), count: 48, maxSeqLen: 16, senteval: shared('senteval') },
    objective: { minLayer: 0, maxLayer: 2, lambda: 0.01 },
    optim: { learningRate: 1e-3 },
    train: { batchSize: 8, maxSteps: 12, evalSteps: 4, evalBatchSize: 512, backend: 'cpu', output, finalEval: false, seed: 7 },
  }, 'test');
  return mergeConfig(base, overrides, 'test');
}

/**
 * Trains `config(dir/full)` through, and `config(dir/resumed)` stopped after `stopAfter` steps (past a checkpoint)
 * and resumed; asserts that both end with the same checkpoint files, to the bit, and the same metrics.jsonl
 * (throughput aside).
 */
export async function assertExactResume(config: (output: string) => TrainConfig, dir: string, stopAfter: number): Promise<void> {
  const { train } = await import('../src/train/trainer.js');
  const quiet = { quiet: true, log: () => undefined };
  const metrics = (run: string) => readFileSync(path.join(run, 'metrics.jsonl'), 'utf8').trim().split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>).map(({ sentencesPerSecond: _, ...rest }) => rest);
  const full = path.join(dir, 'full');
  const resumed = path.join(dir, 'resumed');
  await train(config(full), quiet);
  await train(config(resumed), { ...quiet, stopAfter });
  await train(config(resumed), { ...quiet, resume: true });
  for (const f of ['model.safetensors', 'mlp_head.safetensors', 'optimizer.safetensors']) {
    assert.ok(readFileSync(path.join(full, 'last', f)).equals(readFileSync(path.join(resumed, 'last', f))),
      `${f} differs between the uninterrupted and the resumed run`);
  }
  assert.deepEqual(metrics(resumed), metrics(full));
}

/**
 * A fresh `micse-<name>-*` directory under the system temp folder, removed with everything in it when the calling
 * test file's tests end. Call it at a test file's top level; tests make their own folders inside it.
 */
export function testTempDir(name: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), `micse-${name}-`));
  after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A child script's line importing `names` from src/`rel` (the TypeScript sources, run under tsx). */
export const srcImport = (names: string, rel: string): string =>
  `const { ${names} } = await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'src', rel)).href)});`;
/** What a child script needs to build a TrainStep on webgpu. */
export const STEP_IMPORTS = [['selectBackend', 'model/backend.ts'], ['tf', 'model/tf.ts'], ['BertModel', 'model/bert.ts'],
  ['MlpHead', 'losses/mlpHead.ts'], ['AdamW', 'train/adamw.ts'], ['TrainStep, trainableParams', 'train/step.ts']]
  .map(([names, rel]) => srcImport(names!, rel!)).join('\n');
/**
 * After STEP_IMPORTS: `config`, `rows` and `objective` from the script's JSON argument, webgpu selected, its `device`,
 * and a seeded `model`, `head` and `optimizer` for a TrainStep.
 */
export const STEP_SETUP = `
const { config, rows, objective } = JSON.parse(process.argv[1]);
await selectBackend('webgpu');
const device = tf.backend().device;
const model = BertModel.random(config, 7);
const head = new MlpHead(config.hiddenSize, { seed: 3 });
const optimizer = new AdamW(trainableParams(model, head), { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 });`;

/**
 * false when the npm `webgpu` package and tsx are both here, else why not: the null-device tests run a child
 * `node --import tsx` on the TypeScript sources (tsx is absent where a bundled copy of a test runs).
 */
export async function nullDeviceSkipReason(): Promise<string | false> {
  return import('webgpu' as string).then(() => {
    try {
      createRequire(import.meta.url).resolve(['tsx'][0]!);
      return false as const;
    } catch {
      return 'tsx is not installed here (a bundled copy of this test): the child processes run the TypeScript sources';
    }
  }, (err: Error) => `the optional npm package \`webgpu\` is not installed (${err.message.split('\n')[0]})`);
}

/** The pid of a process that has exited (for a lock naming a dead process). */
export async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid!;
}

/** What `micseLoads` saw: the exit code and output of bin/micse.js, and the URL of every module it loaded. */
export interface MicseLoads {
  code: number | null;
  stdout: string;
  stderr: string;
  urls: string[];
}

/**
 * Runs bin/micse.js (or the copy `bin`) with `argv` from `cwd` in a process of its own, under a resolve hook that
 * records the URL of every module it loads (a bare specifier as the file it resolves to). NODE_OPTIONS is cleared,
 * so that nothing but the hook is preloaded.
 */
export async function micseLoads(argv: readonly string[], cwd: string, bin = path.join(ROOT, 'bin', 'micse.js')): Promise<MicseLoads> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'micse-loads-'));
  try {
    const hooks = path.join(dir, 'hooks.mjs');
    const register = path.join(dir, 'register.mjs');
    const loaded = path.join(dir, 'loaded.txt');
    writeFileSync(hooks, `import { appendFileSync } from 'node:fs';
export async function resolve(spec, ctx, next) { const r = await next(spec, ctx); appendFileSync(${JSON.stringify(loaded)}, r.url + '\\n'); return r; }\n`);
    writeFileSync(register, `import { register } from 'node:module'; register(${JSON.stringify(pathToFileURL(hooks).href)});\n`);
    const child = spawn(process.execPath, ['--import', pathToFileURL(register).href, bin, ...argv],
      { cwd, env: { ...process.env, NODE_OPTIONS: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve, reject) => child.once('error', reject).once('close', resolve));
    const urls = existsSync(loaded) ? readFileSync(loaded, 'utf8').split('\n').filter((u) => u !== '') : [];
    return { code, stdout, stderr, urls };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `s` with the characters a regular expression reads specially escaped, to match it literally. */
export const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The Chromium the browser tests drive (test/browserHarness.ts). */
export const CHROMIUM = process.env['MICSE_CHROMIUM'] || '/usr/bin/chromium';
/** Pass as `{ skip }` to tests that drive Chromium. */
export const SKIP_NO_CHROMIUM: string | false = existsSync(CHROMIUM)
  ? false
  : `no Chromium at ${CHROMIUM} (apt-get install chromium, or set MICSE_CHROMIUM): the browser tests are skipped`;

/**
 * false when `selectBackend('webgpu')` works here, else the reason to pass as `{ skip }` (no Vulkan driver, as on
 * CI). Leaves the cpu backend selected.
 */
export async function webgpuSkipReason(): Promise<string | false> {
  try {
    await selectBackend('webgpu');
    return false;
  } catch (err) {
    return `no WebGPU here (${(err as Error).message.split('\n')[0]}): the webgpu checks are skipped`;
  } finally {
    await selectBackend('cpu');
  }
}

/**
 * The webgpu adapter's description when it is a software one (SwiftShader, as under scripts/with-vulkan.mjs), else
 * null. WGSL does not require IEEE infinities and NaNs, and on SwiftShader an Infinity input to the AMI gives a finite
 * value, so checks of non-finite inputs hold on hardware adapters only.
 */
export async function softwareWebgpuAdapter(): Promise<string | null> {
  const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  return softwareAdapter(await gpu?.requestAdapter());
}

/** `n` seeded values in [-1, 1) (a 32-bit LCG: the same on every machine). */
export function seededValues(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 31) - 1);
}

/** max |a[i] - b[i]|; the lengths must be equal. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'lengths differ');
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/**
 * Runs `f` on the webgpu backend (already active) inside validation and out-of-memory error scopes and fails with the first
 * error: Dawn only prints such errors (the command buffer is dropped, results are silently stale), so a test that
 * records its own GPU commands must look for them.
 */
export async function expectNoGpuErrors<T>(f: () => Promise<T>): Promise<T> {
  const device = (tf.backend() as unknown as { device: GPUDevice }).device;
  device.pushErrorScope('validation');
  device.pushErrorScope('out-of-memory');
  const result = await f();
  const errors = [await device.popErrorScope(), await device.popErrorScope()].filter((e) => e !== null);
  assert.deepEqual(errors.map((e) => e.message), [], 'WebGPU errors');
  return result;
}

/**
 * max |a - b| / max(floor, max |b|): the difference relative to the reference's scale, absolute below `floor` (the
 * default 1; with 0, relative however small the reference, and the plain difference where b is all zeros).
 */
export function maxScaledDiff(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1): number {
  assert.equal(a.length, b.length, 'lengths differ');
  let m = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    m = Math.max(m, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return m / (Math.max(floor, scale) || 1);
}

/**
 * Runs `f` on the webgpu backend (already active) and returns its result with the programs it dispatched, in order:
 * those through runWebGPUProgram, each named by its shader key up to the first `_` (e.g. `micseColumnSum`,
 * `transpose`), and the raw ones (webgpuPrograms.ts recordRaw, the in-place AdamW) by their keys.
 */
export async function withWebgpuPrograms<T>(f: () => T | Promise<T>): Promise<{ result: T; programs: string[] }> {
  const backend = tf.backend() as unknown as { runWebGPUProgram: (p: { shaderKey: string }, ...rest: unknown[]) => unknown };
  const original = backend.runWebGPUProgram;
  const programs: string[] = [];
  backend.runWebGPUProgram = function (p, ...rest) {
    programs.push(p.shaderKey.split('_')[0]!);
    return original.call(this, p, ...rest);
  };
  const stop = observeRawDispatches((key) => programs.push(key));
  try {
    return { result: await f(), programs };
  } finally {
    stop();
    backend.runWebGPUProgram = original;
  }
}

/** Runs `f`, counting the in-place AdamW's dispatches and the parameters they updated (their keys end in `/k`). */
export async function countInPlace<T>(f: () => Promise<T>): Promise<{ result: T; updates: number; dispatches: number }> {
  let updates = 0;
  let dispatches = 0;
  const stop = observeRawDispatches((key) => {
    const m = /^micseAdamWInPlace\/(\d+)$/.exec(key);
    if (m === null) return;
    dispatches += 1;
    updates += Number(m[1]);
  });
  try {
    const result = await f();
    return { result, updates, dispatches };
  } finally {
    stop();
  }
}
