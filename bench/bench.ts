/**
 * `npm run bench -- [--backend B] [--size tiny|small|base] [--steps N] [--precision fp32|mixed] [--json]` (`--browser`: bench/browser.ts): times one miCSE training step
 * exactly as the trainer takes it, the embedding throughput of `embed()`, and peak RSS; then runs the same step
 * in PyTorch (bench/reference.py) and prints both side by side with their ratio.
 *
 * The step (src/train/step.ts TrainStep, which the trainer runs):
 *   inputs [2B, T] int32, rows interleaved by view  ->  tf.variableGrads(micseLoss(model, inputs, objective))
 *   (forward with dropout over the 2B rows, InfoNCE on the MLP-head [CLS] vectors, lambda * AMI over layers
 *   [minLayer, maxLayer)) -> AdamW.apply(grads, lr, maxGradNorm) (clipping, decoupled decay, bias correction).
 * Loss, its parts and the gradient norm are read back every step, as the trainer does for its metrics.
 *
 * Sizes (vocab 30,522, intermediate 4H, seq 32, every token real):
 *   tiny  = 2 layers, hidden 128, 2 heads, batch 32 (64 rows), AMI layers [0, 2)
 *   small = 4 layers, hidden 256, 4 heads, batch 64 (128 rows), AMI layers [2, 4)
 *   base  = BERT-base: 12 layers, hidden 768, 12 heads, batch 64 (128 rows), AMI layers [7, 11)
 *
 * Embedding throughput: `embed()` (tokenise, sort, eval-mode forward, [CLS] pooling, download) over
 * `--embed-sentences` lines of ../shared/data/wiki1m-head.txt truncated to `seqLen` tokens, batch 128, with the
 * bert-base-uncased tokenizer; without those files the forward + pooling of the same shape is timed instead.
 * $MICSE_SHARED_DIR replaces ../shared (bench/device/run.sh points it at the copy it carries to a GPU machine).
 *
 * Machine: each side first times an SGEMM ([1024, 1024] @ [1024, 1024] float32) at 1 and 2 threads, TF.js through the
 * native GEMM its cpu and wasm backends use, PyTorch through torch.mm, and reports the process's CPU time per step
 * beside the wall time, so that reports from machines whose cores add more or less GEMM throughput (or that carry
 * other jobs) can be told apart. PyTorch takes 2 threads, or fewer where the process may use fewer cores.
 *
 * Memory: peak RSS of the process and, on a GPU backend, the GPU memory tf.memory() reports (webgpu: bytes held by
 * live tensors after each step, and the buffer pool, which only grows and so is the peak). `--reference-device cuda`
 * runs the PyTorch side on the GPU: fp32 with TF32 off for the ratio, and a TF32 figure beside it.
 *
 * Every read of a tensor is `await t.data()`: on webgpu under Node `dataSync()` / `arraySync()` throw.
 */
import { spawnSync } from 'node:child_process';
import v8 from 'node:v8';
import vm from 'node:vm';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BertTokenizer } from '../src/data/tokenizer.js';
import { MlpHead } from '../src/losses/mlpHead.js';
import { describeSelection, webgpuAdapterName } from '../src/model/backend.js';
import { BACKEND_NAMES, type BackendName } from '../src/model/backendNames.js';
import { BertModel } from '../src/model/bert.js';
import { parseBertConfig } from '../src/model/config.js';
import { embed } from '../src/model/embed.js';
import { pool } from '../src/model/pooling.js';
import { UserError } from '../src/errors.js';
import { tf } from '../src/model/tf.js';
import { defaultConfig, PRECISIONS } from '../src/train/config.js';
import { stepPrecision } from '../src/train/loop.js';
import { AdamW } from '../src/train/adamw.js';
import { REPLAY_ENV, selectTrainingBackend, TrainStep, trainableParams, wasmHeapShortfall } from '../src/train/step.js';
import { rawDispatchCount } from '../src/kernels/platform/webgpuPrograms.js';
import { MLAS_LIBRARY } from '../src/kernels/platform/nativeGemm.js';
import { loadNativeGemm, NATIVE_GEMM_ENV, parseNativeGemmChoice, type NativeGemmChoice } from '../src/kernels/stock/index.js';
import { releaseFreedHostMemory } from '../src/kernels/platform/hostMalloc.js';
import { dropRecycledBuffers } from '../src/kernels/platform/hostBackend.js';
import { hostCores } from '../src/kernels/platform/simdThreads.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** ../shared beside the checkout, or $MICSE_SHARED_DIR. */
export const SHARED_DATA = path.join(process.env['MICSE_SHARED_DIR'] || path.resolve(HERE, '..', '..', 'shared'), 'data');
const BYTES_PER_MB = 2 ** 20;

export const SIZES = {
  tiny: { layers: 2, hidden: 128, heads: 2, batch: 32, seqLen: 32, minLayer: 0, maxLayer: 2 },
  small: { layers: 4, hidden: 256, heads: 4, batch: 64, seqLen: 32, minLayer: 2, maxLayer: 4 },
  base: { layers: 12, hidden: 768, heads: 12, batch: 64, seqLen: 32, minLayer: 7, maxLayer: 11 },
} as const;
export type SizeName = keyof typeof SIZES;

/** Every constant of the bench, with its default. */
const TRAIN_DEFAULTS = defaultConfig();

export const BENCH_DEFAULTS = {
  backend: 'auto' as BackendName,
  size: 'tiny' as SizeName,
  /**
   * Timed steps by size (the median is reported; `--steps` sets it for any size): a tiny step and PyTorch's scatter
   * several-fold between steps on a shared 2-core machine, so the cheap sizes time more of them.
   */
  steps: { tiny: 20, small: 10, base: 3 } satisfies Record<SizeName, number>,
  /** Untimed steps first (kernel setup, XNNPACK operator creation, V8 warm-up). */
  warmup: 1,
  vocabSize: 30522,
  seed: 42,
  /** The trainer's defaults (src/train/config.ts SCHEMA): lr, AdamW, clipping, InfoNCE temperature, AMI weight. */
  learningRate: TRAIN_DEFAULTS.optim.learningRate,
  beta1: TRAIN_DEFAULTS.optim.beta1,
  beta2: TRAIN_DEFAULTS.optim.beta2,
  eps: TRAIN_DEFAULTS.optim.eps,
  weightDecay: TRAIN_DEFAULTS.optim.weightDecay,
  maxGradNorm: TRAIN_DEFAULTS.optim.maxGradNorm,
  temperature: TRAIN_DEFAULTS.objective.temperature,
  lambda: TRAIN_DEFAULTS.objective.lambda,
  /** Sentences embedded for the throughput figure, in batches of embedBatch. */
  embedSentences: 512,
  embedBatch: 128,
  /** Run bench/reference.py too. */
  reference: true,
  python: 'python3',
  referenceDevice: 'cpu' as ReferenceDevice,
  /** PyTorch's threads on the CPU: this many, or fewer where the process may use fewer cores (`taskset`, a cgroup
   * quota), as the native GEMM takes hostCores() threads. */
  referenceThreads: 2,
  /** Kernels listed by --profile. */
  profileTopKernels: 20,
  /** The SGEMM probe of each side (the machine's matrix-product rate): [n, n] @ [n, n] float32, best of `repeats`
   * products at each thread count. */
  sgemmProbe: { n: 1024, repeats: 5, threads: [1, 2] },
} as const;

/** Step index (it seeds dropout and AMI sampling) of the --profile steps, apart from the timed steps'. */
const PROFILE_STEP_INDEX = 10_000;

export const REFERENCE_DEVICES = ['cpu', 'cuda'] as const;
export type ReferenceDevice = (typeof REFERENCE_DEVICES)[number];

export interface BenchOptions {
  backend: BackendName;
  size: SizeName;
  steps: number;
  warmup: number;
  json: boolean;
  reference: boolean;
  profile: boolean;
  embedSentences: number;
  python: string;
  /** Where bench/reference.py runs PyTorch. */
  referenceDevice: ReferenceDevice;
  /** Also write the JSON report here (the table still goes to stdout). */
  jsonOut: string | null;
  /** TF.js environment flags set after the backend is selected (`--tf-flag NAME=VALUE`, repeatable). */
  tfFlags: Record<string, number | boolean | string>;
  /** train.precision of the TF.js step (`--precision`; mixed: float16 product inputs and loss scaling). */
  precision: (typeof PRECISIONS)[number];
}

/** A side's matrix-product rate on this machine (TF.js: the native GEMM its cpu and wasm backends use; PyTorch: its
 * BLAS), so that reports from different machines can be told apart. */
export interface SgemmProbe {
  /** The library and the product timed. */
  what: string;
  /** GFLOP/s at each thread count of BENCH_DEFAULTS.sgemmProbe.threads. */
  rates: { threads: number; gflops: number }[];
}

/** GPU memory of one side, in MB (2^20 bytes). */
export interface GpuMemory {
  /** Most bytes held by live tensors (TF.js: sampled after each step; PyTorch: torch.cuda.max_memory_allocated). */
  peakInUseMb: number;
  /** Bytes the allocator holds (TF.js webgpu: the buffer pool; PyTorch: torch.cuda.max_memory_reserved). */
  poolMb: number;
  what: string;
}

/** What one step costs in calls (--profile). */
export interface StepCounts {
  /** TF.js kernels run (tf.profile). */
  kernels: number;
  /** Summed kernel time (GPU timestamps on webgpu when the device offers them; wall time on cpu/wasm). */
  kernelMs: number;
  /** Tensor reads through the backend (read + readSync): each waits for the device on a GPU backend. */
  hostReads: number;
  /** Of those, synchronous (readSync: dataSync/arraySync). */
  syncReads: number;
  /** webgpu only: GPU-to-host downloads, compute dispatches, queue submits, host-to-GPU uploads of tensor values. */
  gpuDownloads: number | null;
  dispatches: number | null;
  submits: number | null;
  uploads: number | null;
  /** Wall time of the counted step (unprofiled). */
  stepMs: number;
}

export interface SideResult {
  impl: string;
  backend: string;
  /** Median over the timed steps. */
  msPerStep: number;
  stepsMs: number[];
  /** Median CPU time of the process over a timed step (every thread: user + system), less sensitive than the wall
   * time to other jobs on the machine. */
  cpuMsPerStep: number;
  sgemm: SgemmProbe | { skipped: string };
  /** Training sentences (B, not 2B rows) per second at the median step time. */
  trainSentencesPerSecond: number;
  embedSentencesPerSecond: number;
  embedWhat: string;
  peakRssMb: number;
  /** Absent on host backends (cpu, wasm) and PyTorch on CPU. */
  gpuMemory?: GpuMemory;
  /** PyTorch on cuda: median ms/step with TF32 matmuls allowed (msPerStep is fp32, TF32 off). */
  tf32MsPerStep?: number;
  /** PyTorch on cuda, or with --precision mixed: median ms/step under bf16 autocast (AMP), TF32 off. */
  ampMsPerStep?: number;
  /** TF.js: median ms from a step's start until its one read was issued (TrainStep's hostMs): the host's share. */
  hostMsPerStep?: number;
  /** --profile: the calls of one step. */
  stepCounts?: StepCounts;
  loss: number;
  notes: string[];
}

export interface BenchReport {
  date: string;
  machine: string;
  size: SizeName;
  config: (typeof SIZES)[SizeName] & { vocabSize: number };
  /** train.precision of the TF.js side. */
  precision: BenchOptions['precision'];
  tfjs: SideResult;
  reference: SideResult | { skipped: string };
  /** tfjs ms/step divided by reference ms/step (lower is better; see RATIO_TARGETS). */
  ratio: number | null;
  /** tfjs ms/step divided by PyTorch's TF32 ms/step (cuda only). */
  ratioTf32: number | null;
  /** TF.js ms/step over PyTorch's AMP (bf16 autocast) ms/step; null without that figure. */
  ratioAmp: number | null;
}

/** The speed targets the ratio is read against: on the CPU (issue #21) the wasm backend at tiny and small, the cpu
 * backend at BERT-base, against PyTorch on the same cores; on a GPU (issue #9) against PyTorch fp32 (TF32 off) for
 * BERT-base. */
const RATIO_TARGETS = { wasm: 0.6, cpu: 1.0, gpu: 2 } as const;
/** TF.js backends whose step runs on a GPU. */
const GPU_BACKENDS = ['webgpu', 'tensorflow-gpu', 'webgl'];

function ratioTarget(backendLabel: string): string {
  if (GPU_BACKENDS.some((b) => backendLabel.startsWith(b))) return `target <= ${RATIO_TARGETS.gpu}x on GPU (fp32, BERT-base)`;
  if (backendLabel.startsWith('wasm')) return `target <= ${RATIO_TARGETS.wasm}x on wasm (tiny, small)`;
  return `target <= ${RATIO_TARGETS.cpu}x on the CPU (cpu backend at base)`;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function peakRssMb(): number {
  return process.resourceUsage().maxRSS / 1024; // maxRSS is in KiB
}

export function machineDescription(): string {
  const cpus = os.cpus();
  return `${cpus[0]?.model ?? 'unknown CPU'} x${cpus.length}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${os.platform()} ${os.release()}, Node ${process.version}`;
}

/** Seeded token ids in [1000, vocab): [2B, T], each sentence's two rows identical ([CLS] first, [SEP] last). */
export function makeBatch(B: number, T: number, vocab: number, seed: number): number[][] {
  let s = seed >>> 0;
  const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const rows: number[][] = [];
  for (let b = 0; b < B; b++) {
    const row = Array.from({ length: T }, () => 1000 + Math.floor(next() * (vocab - 1000)));
    row[0] = 101;
    row[T - 1] = 102;
    rows.push(row, [...row]);
  }
  return rows;
}


async function embedThroughput(model: BertModel, sz: (typeof SIZES)[SizeName], count: number): Promise<{ sps: number; what: string }> {
  const d = BENCH_DEFAULTS;
  const tokDir = path.join(SHARED_DATA, 'bert-base-uncased');
  const corpus = path.join(SHARED_DATA, 'wiki1m-head.txt');
  if (existsSync(tokDir) && existsSync(corpus)) {
    const tokenizer = await BertTokenizer.fromDir(tokDir);
    const lines = readFileSync(corpus, 'utf8').split('\n').filter((l) => l.trim() !== '');
    const sentences = Array.from({ length: count }, (_, i) => lines[i % lines.length]!);
    await embed(model, tokenizer, sentences.slice(0, d.embedBatch), { batchSize: d.embedBatch, maxLength: sz.seqLen }); // warm-up
    const t0 = performance.now();
    await embed(model, tokenizer, sentences, { batchSize: d.embedBatch, maxLength: sz.seqLen });
    return { sps: (count * 1000) / (performance.now() - t0), what: `embed() on wiki1m-head lines, max ${sz.seqLen} tokens, batch ${d.embedBatch}` };
  }
  const ids = makeBatch(d.embedBatch / 2, sz.seqLen, d.vocabSize, d.seed);
  const run = async () => {
    const v = tf.tidy(() => {
      const inputIds = tf.tensor2d(ids, undefined, 'int32');
      const attentionMask = tf.onesLike(inputIds) as tf.Tensor2D;
      return pool(model.forward({ inputIds, attentionMask }, { firstTokenOnly: true }).lastHiddenState, attentionMask, 'cls_before_pooler');
    });
    await v.data();
    v.dispose();
  };
  await run();
  const batches = Math.max(1, Math.round(count / d.embedBatch));
  const t0 = performance.now();
  for (let i = 0; i < batches; i++) await run();
  return { sps: (batches * d.embedBatch * 1000) / (performance.now() - t0), what: `forward + [CLS] pooling of ${d.embedBatch} x ${sz.seqLen} (no tokenizer at ${tokDir})` };
}

/**
 * Backend methods counted over one step by --profile. Host reads: `read` (await t.data()) and `readSync`
 * (dataSync/arraySync). webgpu's own: `getBufferData` (a GPU-to-host download, i.e. a wait for the queue),
 * `recordAndSubmit` (one compute dispatch; the dispatches recorded outside it, the in-place AdamW's and the
 * multi-output programs', are added from webgpuPrograms.ts's count), `submitQueue` (one queue submit), `uploadToGPU`
 * (called for every program input and output: counted only when it copies host values into a new buffer).
 */
const COUNTED_METHODS = ['read', 'readSync', 'getBufferData', 'recordAndSubmit', 'submitQueue', 'uploadToGPU'] as const;
type CountedMethod = (typeof COUNTED_METHODS)[number];

/** webgpu's per-tensor record, as far as uploadToGPU looks at it. */
interface WebgpuTensorData {
  resource: unknown;
  values: unknown;
}

/** Whether a call of `name` with `args` on `backend` is counted (default: every call). */
function counts(name: CountedMethod, backend: Record<string, unknown>, args: unknown[]): boolean {
  if (name !== 'uploadToGPU') return true;
  const tensorMap = backend['tensorMap'] as { get(dataId: unknown): WebgpuTensorData | undefined } | undefined;
  const data = tensorMap?.get(args[0]);
  return data !== undefined && data.resource == null && data.values != null;
}

/**
 * Runs `f` with every method of COUNTED_METHODS that the active backend has wrapped in a call counter, then puts
 * the backend's own methods back. Methods the backend lacks are absent from the result.
 */
async function countBackendCalls(f: () => Promise<unknown>): Promise<Map<CountedMethod, number>> {
  const backend = tf.backend() as unknown as Record<string, unknown>;
  const calls = new Map<CountedMethod, number>();
  const restore: (() => void)[] = [];
  for (const name of COUNTED_METHODS) {
    const original = backend[name];
    if (typeof original !== 'function') continue;
    const own = Object.prototype.hasOwnProperty.call(backend, name);
    calls.set(name, 0);
    backend[name] = function (this: unknown, ...args: unknown[]): unknown {
      if (counts(name, backend, args)) calls.set(name, calls.get(name)! + 1);
      return (original as (...a: unknown[]) => unknown).apply(this, args);
    };
    restore.push(() => (own ? (backend[name] = original) : delete backend[name]));
  }
  try {
    await f();
  } finally {
    for (const r of restore) r();
  }
  return calls;
}

/**
 * One profiled step (tf.profile: every TF.js kernel with its time, the top ones by summed time listed), then one
 * unprofiled step with the backend's calls counted (profiling changes them: webgpu submits each timed kernel alone).
 */
async function profileStep(step: () => Promise<unknown>, log: (l: string) => void): Promise<StepCounts> {
  const info = await tf.profile(async () => {
    await step();
    return [];
  });
  const byName = new Map<string, { ms: number; calls: number }>();
  let kernelMs = 0;
  for (const k of info.kernels) {
    const e = byName.get(k.name) ?? { ms: 0, calls: 0 };
    const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    e.ms += ms;
    e.calls += 1;
    kernelMs += ms;
    byName.set(k.name, e);
  }
  const timestamps = (tf.backend() as { supportTimestampQuery?: boolean }).supportTimestampQuery;
  const timing = tf.getBackend() === 'webgpu'
    ? (timestamps === true ? 'GPU timestamps per kernel' : 'no timestamp-query on this device: kernel times read 0')
    : 'synchronous wall time per kernel';
  const rows = [...byName.entries()].sort((a, b) => b[1].ms - a[1].ms).slice(0, BENCH_DEFAULTS.profileTopKernels);
  log([`kernel profile (one step; ${timing}): ${info.kernels.length} kernels, ${kernelMs.toFixed(1)} ms summed`,
    ...rows.map(([n, e]) => `  ${n.padEnd(24)} ${e.ms.toFixed(1).padStart(9)} ms  ${String(e.calls).padStart(6)} calls`)].join('\n'));

  const t0 = performance.now();
  const rawBefore = rawDispatchCount();
  const calls = await countBackendCalls(step);
  const stepMs = performance.now() - t0;
  const get = (m: CountedMethod): number | null => calls.get(m) ?? null;
  // The in-place AdamW and the multi-output programs (webgpuPrograms.ts recordRaw) dispatch outside recordAndSubmit.
  const dispatches = get('recordAndSubmit') === null ? null : get('recordAndSubmit')! + rawDispatchCount() - rawBefore;
  const counts: StepCounts = {
    kernels: info.kernels.length, kernelMs, hostReads: (get('read') ?? 0) + (get('readSync') ?? 0), syncReads: get('readSync') ?? 0,
    gpuDownloads: get('getBufferData'), dispatches, submits: get('submitQueue'), uploads: get('uploadToGPU'), stepMs,
  };
  log(`step calls (one unprofiled step, ${stepMs.toFixed(0)} ms): ${formatCounts(counts)}`);
  return counts;
}

function formatCounts(c: StepCounts): string {
  const gpu = c.dispatches === null ? '' : `; ${c.dispatches} GPU dispatches, ${c.submits} queue submits, ${c.gpuDownloads} GPU-to-host downloads, ${c.uploads} host-to-GPU uploads`;
  return `${c.kernels} TF.js kernels, ${c.hostReads} host reads (${c.syncReads} synchronous)${gpu}`;
}

/** tf.memory()'s GPU fields: webgpu has numBytesInGPU and numBytesAllocatedInGPU (webgl: numBytesInGPUAllocated). */
function gpuBytes(): { inUse: number; pool: number } | null {
  const m = tf.memory() as tf.MemoryInfo & { numBytesInGPU?: number; numBytesAllocatedInGPU?: number; numBytesInGPUAllocated?: number };
  if (typeof m.numBytesInGPU !== 'number') return null;
  return { inUse: m.numBytesInGPU, pool: m.numBytesAllocatedInGPU ?? m.numBytesInGPUAllocated ?? m.numBytesInGPU };
}

/**
 * The rate of the native GEMM `choice` gives (default: NATIVE_GEMM_ENV's, the one the cpu and wasm backends' step
 * runs on) at each thread count of BENCH_DEFAULTS.sgemmProbe, on instances of its own (released after).
 */
export function probeSgemm(choice: NativeGemmChoice = parseNativeGemmChoice(process.env[NATIVE_GEMM_ENV])): SgemmProbe | { skipped: string } {
  const { n, repeats, threads } = BENCH_DEFAULTS.sgemmProbe;
  const a = new Float32Array(n * n).map((_, i) => ((i * 7919) % 1000) / 1000 - 0.5); // [n, n]
  const b = a.slice().reverse(); // [n, n]
  const out = new Float32Array(n * n);
  const rates: SgemmProbe['rates'] = [];
  let library = '';
  for (const t of threads) {
    const { gemm, why } = loadNativeGemm(choice, t);
    if (gemm === undefined) return { skipped: why.join('; ') };
    library = gemm.library;
    try {
      let best = Infinity;
      for (let r = 0; r <= repeats; r++) { // r = 0 builds MLAS's session, starts OpenBLAS's threads
        const t0 = performance.now();
        gemm.matMul(a, [1, n, n], false, b, [1, n, n], false, out);
        if (r > 0) best = Math.min(best, performance.now() - t0);
      }
      rates.push({ threads: t, gflops: (2 * n ** 3) / (best * 1e6) });
    } finally {
      gemm.dispose();
    }
  }
  return { what: `${library} (the cpu and wasm backends' native GEMM), [${n}, ${n}] @ [${n}, ${n}] float32, best of ${repeats}`, rates };
}

export async function benchTfjs(o: BenchOptions, log: (l: string) => void): Promise<SideResult> {
  const d = BENCH_DEFAULTS;
  const sz = SIZES[o.size];
  const sgemm = probeSgemm();
  log(`SGEMM probe: ${'skipped' in sgemm ? '' : `${sgemm.what}: `}${formatSgemm(sgemm)}`);
  if (!('skipped' in sgemm) && !sgemm.what.startsWith(MLAS_LIBRARY)) log(`SGEMM probe of MLAS, for comparison: ${formatSgemm(probeSgemm('mlas'))}`);
  const cfg = parseBertConfig({
    vocab_size: d.vocabSize, hidden_size: sz.hidden, num_hidden_layers: sz.layers, num_attention_heads: sz.heads,
    intermediate_size: 4 * sz.hidden, max_position_embeddings: 512,
  }, 'bench');
  // As the trainer selects: auto passes over wasm where the step would not fit its heap (base).
  const { selection, built: { model }, warning } = await selectTrainingBackend(o.backend,
    async () => ({ model: BertModel.random(cfg, d.seed) }), (m) => wasmHeapShortfall(m, sz.batch, sz.seqLen));
  log(describeSelection(selection));
  if (warning !== null) log(warning);
  for (const [name, value] of Object.entries(o.tfFlags)) {
    tf.env().set(name, value);
    log(`TF.js flag ${name} = ${String(value)}`);
  }
  const head = new MlpHead(sz.hidden, { seed: d.seed + 1 });
  // The trainer's parameter list, optimiser and step (src/train/step.ts).
  const optimizer = new AdamW(trainableParams(model, head), { beta1: d.beta1, beta2: d.beta2, eps: d.eps, weightDecay: d.weightDecay });
  const step = new TrainStep(model, head, optimizer, {
    ...TRAIN_DEFAULTS.objective, style: 'micse', temperature: d.temperature, lambda: d.lambda, minLayer: sz.minLayer, maxLayer: sz.maxLayer, pooler: 'cls',
  }, stepPrecision({ ...TRAIN_DEFAULTS, train: { ...TRAIN_DEFAULTS.train, precision: o.precision } }), TRAIN_DEFAULTS.train.webgpuReplay);
  if (o.precision !== TRAIN_DEFAULTS.train.precision) log(`precision: ${o.precision}`);
  const batch = makeBatch(sz.batch, sz.seqLen, d.vocabSize, d.seed);
  const rows = { inputIds: batch, attentionMask: batch.map((r) => r.map(() => 1)) };
  const hostMs: number[] = [];
  const trainerStep = async (i: number): Promise<number> => {
    const out = await step.run(rows, { lr: d.learningRate, maxGradNorm: d.maxGradNorm, dropoutSeed: i * 2 + 1, amiSeed: i * 2 + 2 });
    hostMs.push(out.hostMs);
    return out.loss;
  };

  const notes: string[] = [];
  let loss = NaN;
  for (let i = 0; i < o.warmup; i++) {
    const t0 = performance.now();
    loss = await trainerStep(i);
    log(`  tfjs warm-up step ${i + 1}/${o.warmup}: ${(performance.now() - t0).toFixed(0)} ms, loss ${loss.toFixed(4)}`);
  }
  const before = tf.memory().numTensors;
  const replayedInWarmup = step.replayStats()?.replayed ?? 0;
  hostMs.length = 0; // the timed steps' only
  const stepsMs: number[] = [];
  const cpuMs: number[] = [];
  const gpuSamples: { inUse: number; pool: number }[] = [];
  for (let i = 0; i < o.steps; i++) {
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    loss = await trainerStep(o.warmup + i);
    stepsMs.push(performance.now() - t0);
    const cpu = process.cpuUsage(cpu0);
    cpuMs.push((cpu.user + cpu.system) / 1000);
    const g = gpuBytes();
    if (g !== null) gpuSamples.push(g);
    log(`  tfjs step ${i + 1}/${o.steps}: ${stepsMs[i]!.toFixed(0)} ms (host ${hostMs.at(-1)!.toFixed(0)}), loss ${loss.toFixed(4)}` +
      (g === null ? '' : `, GPU ${(g.inUse / BYTES_PER_MB).toFixed(0)} MB live / ${(g.pool / BYTES_PER_MB).toFixed(0)} MB pool`));
  }
  const hostMsPerStep = median(hostMs);
  const replay = step.replayStats();
  if (replay !== null) {
    // A replay needs two recorded steps alike, which the buffer pool allows from the third step on, and the first
    // replay builds its template: timed steps before that are recorded ones (src/kernels/replay/webgpu.ts).
    const timed = replay.replayed - replayedInWarmup;
    notes.push(`step replay (${REPLAY_ENV}): ${timed} of the ${o.steps} timed steps replayed, ${replay.recorded} steps recorded in all, ` +
      `${replay.dispatches ?? 'no'} dispatches a replayed step` +
      (timed === o.steps ? '' : `; the timed steps include recorded ones (more --warmup steps time replays alone)` +
        (replay.lastRefusal === null ? '' : `; the last step not replayed: ${replay.lastRefusal}`)));
    log(`  ${notes.at(-1)!}`);
  }
  const leaked = tf.memory().numTensors - before;
  if (leaked !== 0) notes.push(`${leaked} tensors leaked over ${o.steps} steps`);
  const stepCounts = o.profile ? await profileStep(() => trainerStep(PROFILE_STEP_INDEX), log) : undefined;
  const emb = await embedThroughput(model, sz, o.embedSentences);
  const ms = median(stepsMs);
  const adapter = selection.name === 'webgpu' ? webgpuAdapterName() : null;
  const result: SideResult = {
    impl: `TF.js ${tf.version.tfjs}`, backend: adapter === null ? selection.name : `${selection.name}: ${adapter}`, msPerStep: ms, stepsMs, cpuMsPerStep: median(cpuMs), sgemm, hostMsPerStep,
    trainSentencesPerSecond: (sz.batch * 1000) / ms, embedSentencesPerSecond: emb.sps, embedWhat: emb.what, peakRssMb: peakRssMb(), loss, notes,
    ...(gpuSamples.length === 0 ? {} : {
      gpuMemory: {
        peakInUseMb: Math.max(...gpuSamples.map((g) => g.inUse)) / BYTES_PER_MB, poolMb: Math.max(...gpuSamples.map((g) => g.pool)) / BYTES_PER_MB,
        what: 'tf.memory(): most bytes of live tensors after a step / the buffer pool (it only grows: the peak)',
      },
    }),
    ...(stepCounts === undefined ? {} : { stepCounts }),
  };
  optimizer.dispose();
  head.dispose();
  model.dispose();
  return result;
}

/**
 * The TF.js side's memory back to the system before PyTorch starts beside it: the arrays kept for reuse dropped
 * (kernels/platform/hostBackend.ts), a full collection frees them and the disposed tensors' arrays, then the C
 * heap's free memory goes back (the cpu backend keeps it otherwise: kernels/platform/hostMalloc.ts; a BERT-base pair
 * ran out of memory on a 24 GB machine without this).
 */
function releaseHostMemory(): void {
  dropRecycledBuffers();
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
  releaseFreedHostMemory();
}

/** Runs bench/reference.py; a missing python3 or torch is a skip with the reason, not a failure. */
export function runReference(o: BenchOptions, log: (l: string) => void): SideResult | { skipped: string } {
  const script = path.join(HERE, 'reference.py');
  const { n, repeats, threads } = BENCH_DEFAULTS.sgemmProbe;
  const args = [script, '--size', o.size, '--steps', String(o.steps), '--warmup', String(o.warmup),
    '--embed-sentences', String(o.embedSentences), '--device', o.referenceDevice,
    '--threads', String(Math.min(BENCH_DEFAULTS.referenceThreads, hostCores())),
    '--sgemm-n', String(n), '--sgemm-repeats', String(repeats), '--sgemm-threads', threads.join(','), '--json',
    ...(o.precision === 'mixed' ? ['--amp'] : [])];
  // Debian's python3-torch lives under /usr/bin/python3, which a pyenv or venv python3 on PATH hides.
  const pythons = o.python === BENCH_DEFAULTS.python ? [o.python, ...PYTHON_FALLBACKS] : [o.python];
  const reasons: string[] = [];
  for (const py of pythons) {
    log(`running ${py} ${args.map((a) => path.relative(process.cwd(), a) || a).join(' ')}`);
    const r = spawnSync(py, args, { encoding: 'utf8', maxBuffer: 64 * 2 ** 20 });
    if (r.error !== undefined) {
      reasons.push(`${py} could not be started (${r.error.message})`);
      continue;
    }
    const lines = r.stdout.trim().split('\n');
    if (r.status === 3) {
      reasons.push(lines.at(-1) ?? `${py}: torch is not installed`);
      continue;
    }
    if (r.status !== 0) return { skipped: `reference.py exited ${r.status}: ${(r.stderr.trim().split('\n').at(-1) ?? '').slice(0, 300)}` };
    for (const l of r.stderr.trim().split('\n')) if (l.trim() !== '') log(`  ${l}`);
    return JSON.parse(lines.at(-1)!) as SideResult;
  }
  return { skipped: reasons.join('; ') };
}

/** Tried after `python3` when it cannot import torch. */
const PYTHON_FALLBACKS = ['/usr/bin/python3'];

function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** `64 / 121` (GFLOP/s at each thread count probed), or why there is no figure. */
function formatSgemm(p: SgemmProbe | { skipped: string }): string {
  return 'skipped' in p ? `skipped (${p.skipped})` : p.rates.map((r) => fmt(r.gflops)).join(' / ');
}

export function formatReport(r: BenchReport): string {
  const c = r.config;
  const head = `${r.date}, ${r.machine}\nsize ${r.size}: ${c.layers} layers, hidden ${c.hidden}, ${c.heads} heads, batch ${c.batch} (x2 views), seq ${c.seqLen}, vocab ${c.vocabSize}`;
  const sides: SideResult[] = [r.tfjs, ...('skipped' in r.reference ? [] : [r.reference])];
  const rows = [
    ['', ...sides.map((s) => `${s.impl} (${s.backend})`)],
    ['ms/step (median)', ...sides.map((s) => fmt(s.msPerStep))],
    ...(sides.some((s) => s.tf32MsPerStep !== undefined)
      ? [['ms/step, TF32 matmuls', ...sides.map((s) => (s.tf32MsPerStep === undefined ? '-' : fmt(s.tf32MsPerStep)))]] : []),
    ...(sides.some((s) => s.ampMsPerStep !== undefined)
      ? [['ms/step, AMP (bf16 autocast)', ...sides.map((s) => (s.ampMsPerStep === undefined ? '-' : fmt(s.ampMsPerStep)))]] : []),
    ['process CPU ms/step (all threads)', ...sides.map((s) => fmt(s.cpuMsPerStep))],
    [`SGEMM GFLOP/s (${BENCH_DEFAULTS.sgemmProbe.threads.join(' / ')} threads)`, ...sides.map((s) => formatSgemm(s.sgemm))],
    ['host ms/step (to the read)', ...sides.map((s) => (s.hostMsPerStep === undefined ? '-' : fmt(s.hostMsPerStep)))],
    ['train sentences/s', ...sides.map((s) => fmt(s.trainSentencesPerSecond, 1))],
    ['embed sentences/s', ...sides.map((s) => fmt(s.embedSentencesPerSecond))],
    ['peak RSS MB', ...sides.map((s) => fmt(s.peakRssMb))],
    ...(sides.some((s) => s.gpuMemory !== undefined)
      ? [['GPU MB in use / pool', ...sides.map((s) => (s.gpuMemory === undefined ? '-' : `${fmt(s.gpuMemory.peakInUseMb)} / ${fmt(s.gpuMemory.poolMb)}`))]] : []),
    ['loss (last step)', ...sides.map((s) => s.loss.toFixed(4))],
  ];
  const widths = rows[0]!.map((_, j) => Math.max(...rows.map((row) => row[j]!.length)));
  const table = rows.map((row) => row.map((cell, j) => (j === 0 ? cell.padEnd(widths[j]!) : cell.padStart(widths[j]!))).join('  ')).join('\n');
  const tail = 'skipped' in r.reference
    ? [`reference skipped: ${r.reference.skipped}`]
    : [`ratio TF.js / PyTorch (ms/step): ${r.ratio!.toFixed(2)}x  (${ratioTarget(r.tfjs.backend)})`,
      ...(r.ratioTf32 === null ? [] : [`ratio TF.js / PyTorch with TF32 (ms/step): ${r.ratioTf32.toFixed(2)}x`]),
      ...(r.ratioAmp === null ? [] : [`ratio TF.js (precision ${r.precision}) / PyTorch AMP (ms/step): ${r.ratioAmp.toFixed(2)}x`])];
  const counts = sides.flatMap((s) => (s.stepCounts === undefined ? [] : [`one step (${s.impl}): ${formatCounts(s.stepCounts)}`]));
  const notes = sides.flatMap((s) => s.notes.map((n) => `note (${s.impl}): ${n}`));
  const embedNotes = sides.map((s) => `embed (${s.impl}): ${s.embedWhat}`);
  const sgemmNotes = sides.flatMap((s) => ('skipped' in s.sgemm ? [] : [`SGEMM (${s.impl}): ${s.sgemm.what}`]));
  const memNotes = sides.flatMap((s) => (s.gpuMemory === undefined ? [] : [`GPU memory (${s.impl}): ${s.gpuMemory.what}`]));
  return [head, table, ...tail, ...counts, ...embedNotes, ...sgemmNotes, ...memNotes, ...notes].join('\n');
}

function parseArgs(argv: string[]): BenchOptions {
  const d = BENCH_DEFAULTS;
  const o: BenchOptions = { backend: d.backend, size: d.size, steps: 0, warmup: d.warmup, json: false, reference: d.reference,
    profile: false, embedSentences: d.embedSentences, python: d.python, referenceDevice: d.referenceDevice, jsonOut: null, tfFlags: {},
    precision: TRAIN_DEFAULTS.train.precision };
  const int = (flag: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`${flag} needs an integer >= ${min}; got '${v}'`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1];
    switch (a) {
      case '--backend':
        if (!(BACKEND_NAMES as readonly string[]).includes(v ?? '')) throw new Error(`--backend must be one of ${BACKEND_NAMES.join(', ')}; got '${v}'`);
        o.backend = v as BackendName; i++; break;
      case '--size':
        if (!(v !== undefined && v in SIZES)) throw new Error(`--size must be one of ${Object.keys(SIZES).join(', ')}; got '${v}'`);
        o.size = v as SizeName; i++; break;
      case '--steps': o.steps = int(a, v, 1); i++; break;
      case '--warmup': o.warmup = int(a, v, 0); i++; break;
      case '--embed-sentences': o.embedSentences = int(a, v, 1); i++; break;
      case '--python': if (v === undefined) throw new Error('--python needs a path'); o.python = v; i++; break;
      case '--reference-device':
        if (!(REFERENCE_DEVICES as readonly string[]).includes(v ?? '')) throw new Error(`--reference-device must be one of ${REFERENCE_DEVICES.join(', ')}; got '${v}'`);
        o.referenceDevice = v as ReferenceDevice; i++; break;
      case '--precision':
        if (!(PRECISIONS as readonly string[]).includes(v ?? '')) throw new Error(`--precision must be one of ${PRECISIONS.join(', ')}; got '${v}'`);
        o.precision = v as BenchOptions['precision']; i++; break;
      case '--json-out': if (v === undefined) throw new Error('--json-out needs a path'); o.jsonOut = v; i++; break;
      case '--tf-flag': {
        const m = /^([A-Z0-9_]+)=(.+)$/.exec(v ?? '');
        if (m === null) throw new Error(`--tf-flag needs NAME=VALUE (e.g. WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE=64); got '${v}'`);
        const raw = m[2]!;
        o.tfFlags[m[1]!] = raw === 'true' ? true : raw === 'false' ? false : Number.isFinite(Number(raw)) ? Number(raw) : raw;
        i++;
        break;
      }
      case '--json': o.json = true; break;
      case '--profile': o.profile = true; break;
      case '--no-reference': o.reference = false; break;
      case '--help':
        process.stdout.write('npm run bench -- [--backend auto|wasm|cpu|webgpu|tensorflow|tensorflow-gpu] [--size tiny|small|base] ' +
          '[--steps N] [--warmup N] [--embed-sentences N] [--no-reference] [--python PATH] [--reference-device cpu|cuda] ' +
          '[--profile] [--json] [--json-out PATH] [--tf-flag NAME=VALUE ...] [--precision fp32|mixed]\n');
        process.exit(0);
      default: throw new Error(`unknown option '${a}' (see --help)`);
    }
  }
  if (o.steps === 0) o.steps = d.steps[o.size];
  return o;
}

async function main(): Promise<void> {
  if (process.argv.includes('--browser')) {
    const { benchBrowser } = await import('./browser.js');
    await benchBrowser(process.argv.slice(2).filter((a) => a !== '--browser'), SIZES);
    return;
  }
  let o: BenchOptions;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const log = (l: string) => process.stderr.write(l + '\n');
  const sz = SIZES[o.size];
  let tfjs: SideResult;
  try {
    tfjs = await benchTfjs(o, log);
    releaseHostMemory();
  } catch (err) {
    if (!(err instanceof UserError)) throw err;
    process.stderr.write(`bench: ${err.message}\n`);
    process.exit(err.exitCode);
  }
  const reference = o.reference ? runReference(o, log) : { skipped: '--no-reference' };
  const report: BenchReport = {
    date: new Date().toISOString(), machine: machineDescription(), size: o.size, config: { ...sz, vocabSize: BENCH_DEFAULTS.vocabSize }, precision: o.precision,
    tfjs, reference, ratio: 'skipped' in reference ? null : tfjs.msPerStep / reference.msPerStep,
    ratioTf32: 'skipped' in reference || reference.tf32MsPerStep === undefined ? null : tfjs.msPerStep / reference.tf32MsPerStep,
    ratioAmp: 'skipped' in reference || reference.ampMsPerStep === undefined ? null : tfjs.msPerStep / reference.ampMsPerStep,
  };
  if (o.jsonOut !== null) writeFileSync(o.jsonOut, JSON.stringify(report, null, 2) + '\n');
  process.stdout.write((o.json ? JSON.stringify(report, null, 2) : formatReport(report)) + '\n');
  // On webgpu, Dawn keeps the process alive while its instance (navigator.gpu) lives. Writes to files and pipes are
  // synchronous on Linux, so exiting here loses no output.
  process.exit(0);
}

// Run as a script (npx tsx bench/bench.ts, or the device payload's bench.mjs); not when another bench script imports
// it, nor inside another script's bundle (there import.meta.url is that script's too).
const entry = process.argv[1] === undefined ? '' : path.resolve(process.argv[1]);
if (entry === fileURLToPath(import.meta.url) && /^bench\.(ts|mjs)$/.test(path.basename(entry))) await main();
