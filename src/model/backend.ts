/**
 * Run-time backend selection. The native TensorFlow bindings (`@tensorflow/tfjs-node[-gpu]`) and the WebGPU
 * adapter for Node (`webgpu`) are optional: they are tried and skipped with a reason when they cannot load.
 * This is the only module that knows which backend is active and which kernels were replaced.
 */
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { createRequire } from 'node:module';
import path from 'node:path';
import { registerKernels } from '../kernels/index.js';
import { hostMatMulEngine, NATIVE_GEMM_ENV, parseNativeGemmChoice, useNativeGemm } from '../kernels/stock/index.js';
import { watchOutOfMemory } from '../kernels/platform/gpuMemory.js';
import { CBLAS_ENV } from '../kernels/platform/cblas.js';
import { activeMatmulTile, describeMatmulTile, MATMUL_TILE_ENV, parseMatmulTile, useMatmulTile } from '../kernels/platform/matmulTiles.js';
import { BIND_GROUP_CACHE_ENV, bindGroupCacheOf, useBindGroupCache } from '../kernels/platform/bindGroupCache.js';
import { boundBufferPool, describePoolBound, parsePoolBound, POOL_FREE_ENV } from '../kernels/platform/bufferPool.js';
import { heapMemory, recycleOnDispose, skipCpuBanner, type CpuBackend, type WasmBackend } from '../kernels/platform/hostBackend.js';
import { heapSimdHost } from '../kernels/platform/hostSimd.js';
import { HOST_THREADS_ENV, hostThreads, hostThreadsAvailable, hostThreadsFailure, isShared } from '../kernels/platform/simdThreads.js';
import { withThreadedWasm } from '../kernels/platform/wasmThreadedNode.js';
import { hostMallocState, keepFreedHostMemory } from '../kernels/platform/hostMalloc.js';
import { DAWN_LIMIT_NOTICE, withStderrFiltered } from '../kernels/platform/nativeStderr.js';
import { activeGemmMode, describeGemmMode, GEMM_ENV, parseGemmMode, useGemm } from '../kernels/gemm/index.js';
import { didYouMean, UserError } from '../errors.js';
import { BACKEND_NAMES, type BackendName } from './backendNames.js';
import { tf } from './tf.js';
import { IS_NODE } from '../isNode.js';

/**
 * Options for the npm `webgpu` package's `create()` (Dawn's), separated by spaces: e.g. `adapter=H200` picks an
 * adapter whose name contains H200, `backend=vulkan` a Dawn backend, `enable-dawn-features=a,b` Dawn toggles;
 * `backend=null` gives a device that runs nothing (results are garbage), which measures the host's share of a step.
 */
export const DAWN_OPTIONS_ENV = 'MICSE_DAWN_OPTIONS';

/**
 * Storage buffers per shader stage asked of a WebGPU device, where the adapter allows (WebGPU's default is 8). The
 * in-place AdamW binds four per parameter and the gradient norm one per gradient, so more of them fit one dispatch.
 */
const WEBGPU_STORAGE_BUFFERS = 16;

/** The order `auto` tries. */
export const AUTO_ORDER: readonly Exclude<BackendName, 'auto'>[] = ['tensorflow-gpu', 'tensorflow', 'webgpu', 'wasm', 'cpu'];

export interface BackendAttempt {
  name: Exclude<BackendName, 'auto'>;
  ok: boolean;
  reason: string;
}

export interface BackendSelection {
  /** What the user asked for. */
  requested: BackendName;
  /** Which one is active. */
  name: Exclude<BackendName, 'auto'>;
  /** The TF.js backend id (`tensorflow`, `webgpu`, `wasm`, `cpu`). */
  tfBackend: string;
  /** Every backend tried, in order, with why it was taken or skipped. */
  attempts: BackendAttempt[];
  /** Kernels this project registered over the backend's own. */
  replacedKernels: string[];
  /** Why the backend runs TF.js's stock kernels only (src/kernels/platform/internals.ts), or null. */
  stockOnly: string | null;
}

/** Where the wasm backend's .wasm files are: set by the browser bundle (beside itself); else node_modules'. */
let wasmBinaryPrefix: string | undefined;

/** Makes the wasm backend load its .wasm binaries from `prefix` (a URL or folder ending in '/'). */
export function setWasmBinaryPrefix(prefix: string): void {
  wasmBinaryPrefix = prefix;
}

function message(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.split('\n')[0]!.slice(0, 300);
}

async function activate(tfName: string): Promise<void> {
  const ok = await tf.setBackend(tfName);
  if (!ok) throw new Error(`tf.setBackend('${tfName}') returned false`);
  await tf.ready();
}

/**
 * Runs `attempt` (an activation of TF.js's backend `tfName` that has a fallback) and resolves with null, or with why
 * it failed: the first line of the error TF.js's engine caught in the backend's initialization, which it warns on the
 * console after "Initialization of backend NAME failed" and which are held off the console here (the fallback says
 * the reason in one line instead), else `attempt`'s own error. Other console warnings meanwhile pass through.
 */
async function attemptQuietly(tfName: string, attempt: () => Promise<void>): Promise<string | null> {
  const warn = console.warn;
  /** The initialization's error: null before the engine's warning, '' between it and the warning of the error. */
  let caught: string | null = null;
  let errorNext = false;
  console.warn = (...args: unknown[]): void => {
    if (errorNext) {
      errorNext = false;
      caught = message(args[0]);
    } else if (args.length === 1 && args[0] === `Initialization of backend ${tfName} failed`) {
      errorNext = true;
      caught = '';
    } else {
      warn.apply(console, args);
    }
  };
  try {
    await attempt();
    return null;
  } catch (err) {
    return caught || message(err);
  } finally {
    console.warn = warn;
  }
}

/** The process events whose listeners tfjs-backend-wasm's Emscripten module adds (see withoutAddedProcessListeners). */
const PROCESS_ERROR_EVENTS = ['uncaughtException', 'unhandledRejection'] as const;

/**
 * Runs `f` (the wasm backend's start) and takes off the 'uncaughtException' and 'unhandledRejection' listeners added
 * meanwhile. tfjs-backend-wasm's Emscripten module adds listeners that rethrow, so every later uncaught error of the
 * process was printed under the module's whole minified source (~38 KB) instead of its own message and stack; without
 * them Node does what they did (prints the error, exits with 1). tfjs-backend-wasm takes them off only when the
 * backend is disposed. Outside Node, `f` runs as it is.
 */
async function withoutAddedProcessListeners(f: () => Promise<void>): Promise<void> {
  if (!IS_NODE) return f();
  // The EventEmitter view: process's own typings have one overload per event name.
  type Listener = (...args: never[]) => unknown;
  const events = process as unknown as { listeners(e: string): Listener[]; removeListener(e: string, l: Listener): void };
  const before = new Map(PROCESS_ERROR_EVENTS.map((e) => [e, new Set(events.listeners(e))]));
  try {
    await f();
  } finally {
    for (const e of PROCESS_ERROR_EVENTS) {
      for (const l of events.listeners(e)) if (!before.get(e)!.has(l)) events.removeListener(e, l);
    }
  }
}

/**
 * Tries one backend; throws with the reason when it cannot be used. Returns the TF.js backend id. With `auto`, a
 * software WebGPU adapter (SwiftShader, llvmpipe: WebGPU run on the CPU, many times slower than wasm) is passed over;
 * naming webgpu uses it.
 */
async function tryBackend(name: Exclude<BackendName, 'auto'>, auto: boolean): Promise<string> {
  switch (name) {
    case 'tensorflow-gpu':
    case 'tensorflow': {
      const pkg = name === 'tensorflow-gpu' ? '@tensorflow/tfjs-node-gpu' : '@tensorflow/tfjs-node';
      try {
        await import(pkg);
      } catch (err) {
        throw new Error(`${pkg} is not installed or its native library failed to load (${message(err)}); ` +
          `install it with \`npm install ${pkg}\` on a machine with internet access`);
      }
      await activate('tensorflow');
      return 'tensorflow';
    }
    case 'webgpu': {
      const dawnOptions = process.env[DAWN_OPTIONS_ENV] ?? '';
      const withOptions = dawnOptions.trim() === '' ? '' : ` (with ${DAWN_OPTIONS_ENV}=${dawnOptions})`;
      const g = globalThis as { navigator?: { gpu?: unknown } };
      if (g.navigator?.gpu === undefined) {
        const options = dawnOptions.split(/\s+/).filter((o) => o !== '');
        const noVulkan = missingVulkanLoader(options);
        if (noVulkan !== null) throw new Error(`no Vulkan loader for Dawn${withOptions}: ${noVulkan}`);
        let dawn: { create: (opts: string[]) => unknown; globals: Record<string, unknown> };
        try {
          dawn = (await import('webgpu' as string)) as typeof dawn;
        } catch (err) {
          throw new Error(`no navigator.gpu and the npm package \`webgpu\` (Dawn for Node) is not installed (${message(err)})`);
        }
        Object.assign(globalThis, dawn.globals);
        Object.defineProperty(globalThis, 'navigator', { value: { gpu: dawn.create(options) }, configurable: true });
      }
      await registerWebgpu();
      const nav = (globalThis as { navigator: { gpu: { requestAdapter(): Promise<unknown> } } }).navigator;
      let adapter: unknown;
      try {
        // Dawn discovers the adapters here, printing its notices about lowered limits (platform/nativeStderr.ts).
        adapter = await withStderrFiltered(DAWN_LIMIT_NOTICE, () => nav.gpu.requestAdapter());
      } catch (err) {
        throw new Error(`navigator.gpu.requestAdapter() failed${withOptions}: ${message(err)}`);
      }
      if (adapter === null || adapter === undefined) throw new Error(`navigator.gpu.requestAdapter() found no GPU adapter${withOptions}`);
      const software = softwareAdapter(adapter);
      if (auto && software !== null) {
        throw new Error(`the only adapter is a software one (${software}${withOptions}): WebGPU on the CPU is slower than wasm; name webgpu to use it`);
      }
      await activate('webgpu');
      return 'webgpu';
    }
    case 'wasm': {
      const wasm = await import('@tensorflow/tfjs-backend-wasm');
      wasm.setWasmPaths(wasmBinaryPrefix ??
        path.dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm')) + path.sep);
      await withoutAddedProcessListeners(async () => {
        if (tf.findBackend('wasm') === null && hostThreadsAvailable()) {
          // The threaded build, for its shared heap (src/kernels/platform/wasmThreadedNode.ts), XNNPACK on one thread
          // (the cores go to the native SGEMM and the split loops); the unthreaded build if it fails.
          wasm.setThreadsCount(1);
          wasmThreadedFailure = await attemptQuietly('wasm', () => withThreadedWasm(() => activate('wasm')));
          if (wasmThreadedFailure !== null) await activate('wasm');
        } else {
          await activate('wasm');
        }
      });
      wasmThreads = wasm.getThreadsCount();
      // Dense products on a native SGEMM (kernels/stock: the system's CBLAS, else onnxruntime-node's MLAS); XNNPACK otherwise.
      useNativeGemm(parseNativeGemmChoice(process.env[NATIVE_GEMM_ENV]));
      return 'wasm';
    }
    case 'cpu':
      hostThreads(); // a bad HOST_THREADS_ENV stops here, not in the first kernel that splits a loop
      await activate('cpu');
      // The selection's line says why cpu runs: no tfjs-node banner at its first tensor.
      skipCpuBanner(tf.backend());
      // The same native SGEMM; the stock JavaScript loop otherwise.
      useNativeGemm(parseNativeGemmChoice(process.env[NATIVE_GEMM_ENV]));
      // Every cpu tensor is a fresh C-heap array: freed ones reused instead of fresh pages (platform/hostMalloc.ts);
      // the kernels' own arrays come back for reuse when their last tensor goes (platform/hostBackend.ts).
      keepFreedHostMemory();
      recycleOnDispose(tf.backend() as unknown as CpuBackend);
      return 'cpu';
  }
}

/** adapterWords of the adapter the webgpu backend's factory took; null before it ran. */
let webgpuAdapter: string | null = null;

/** The active webgpu backend's adapter in a few words (vendor, architecture, description), or null before one exists. */
export function webgpuAdapterName(): string | null {
  return webgpuAdapter;
}

/** A navigator.gpu adapter's info (null or undefined for none; `isFallbackAdapter` is newer than these typings). */
function adapterInfo(adapter: unknown): (GPUAdapterInfo & { isFallbackAdapter?: boolean }) | undefined {
  return (adapter as { info?: GPUAdapterInfo & { isFallbackAdapter?: boolean } } | null | undefined)?.info;
}

/** An adapter in a few words: vendor, architecture, description, and whether it is a software one. */
function adapterWords(adapter: unknown): string {
  const info = adapterInfo(adapter);
  const words = [info?.vendor, info?.architecture, info?.description].filter((x) => x !== undefined && x !== '').join(', ');
  const nullDevice = (process.env[DAWN_OPTIONS_ENV] ?? '').split(/\s+/).includes('backend=null');
  return `${words || (nullDevice ? `Dawn's null device (${DAWN_OPTIONS_ENV}: every call accepted, nothing run)` : 'no adapter info')}` +
    `${softwareAdapter(adapter) !== null ? ' (a software adapter: WebGPU on the CPU)' : ''}`;
}

/** The adapter's description when it is a software one (SwiftShader, llvmpipe: WebGPU run on the CPU), else null. */
export function softwareAdapter(adapter: unknown): string | null {
  const info = adapterInfo(adapter);
  return info?.isFallbackAdapter === true ? (info.description || info.architecture) : null;
}

/**
 * Why Dawn would find no Vulkan driver loader on this Linux machine (the dlopen error), or null: elsewhere, with a
 * Dawn backend other than Vulkan asked for, or when the loader loads. Dawn prints a native trace to stderr when the
 * loader is missing; checking first keeps a normal run quiet and the reason in the backend line.
 */
function missingVulkanLoader(dawnOptions: readonly string[]): string | null {
  if (process.platform !== 'linux') return null;
  const backendOption = dawnOptions.find((o) => o.startsWith('backend='));
  if (backendOption !== undefined && backendOption !== 'backend=vulkan') return null;
  try {
    process.dlopen({ exports: {} }, 'libvulkan.so.1');
  } catch (err) {
    // A library that loads but is no Node addon fails to "self-register": the loader is there.
    if (!/did not self-register/.test(message(err))) return message(err);
  }
  return null;
}

/**
 * tfjs-backend-webgpu's flag that fixes the program of its products (-1, the default: chosen by shape), and its
 * small-output program's number (MatMulProgramType.MatMulSmallOutputSizeProgram), which a software adapter uses for
 * every product. There a short run is mostly pipeline compiles: TF.js compiles a program per product form
 * (transposes, fused bias and activation, whether the sides fit its tile), and SwiftShader takes 1.0-1.5 s for the
 * packed program (up to 8 x 8 threads of 4 x 4 vec4 outputs) against ~0.3 s for the small-output one (16 x 16
 * threads, an output each). The packed program runs a product 1-5x faster, which pays back its compiles only after
 * 12-40 steps of the tests' tiny models (bench/README.md); the reduction program TF.js picks below 128 outputs runs
 * 100x and more slower (a workgroup barrier is a switch between CPU threads' coroutines there). Set by the factory,
 * not where a flag was already given.
 */
export const MATMUL_PROGRAM_FLAG = 'WEBGPU_MATMUL_PROGRAM_TYPE';
const MATMUL_SMALL_OUTPUT = 2;

/**
 * Registers TF.js's webgpu backend with a factory that asks the device for WEBGPU_STORAGE_BUFFERS storage buffers per
 * stage (capped by the adapter) and the `subgroups` feature where the adapter has it, besides what
 * tfjs-backend-webgpu's own factory asks (base.ts: its workgroup, buffer size and dispatch limits, timestamp
 * queries), which it otherwise equals, and on a software adapter the small-output program for every product
 * (MATMUL_PROGRAM_FLAG). Does nothing once the backend exists.
 */
async function registerWebgpu(): Promise<void> {
  const { WebGPUBackend } = await import('@tensorflow/tfjs-backend-webgpu');
  if (tf.engine().registry['webgpu'] !== undefined) return;
  tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', async () => {
    const gpu = (globalThis as unknown as { navigator: { gpu: GPU } }).navigator.gpu;
    const adapter = await gpu.requestAdapter({ powerPreference: tf.env().getBool('WEBGPU_USE_LOW_POWER_GPU') ? 'low-power' : 'high-performance' });
    if (adapter === null) throw new Error('navigator.gpu.requestAdapter() found no GPU adapter');
    const l = adapter.limits;
    const device = await adapter.requestDevice({
      // 'subgroups' (kernels' subgroup variants, platform/gemm.ts) is newer than the GPUFeatureName of these typings.
      requiredFeatures: ['timestamp-query', 'bgra8unorm-storage', 'subgroups'].filter((f) => adapter.features.has(f)) as GPUFeatureName[],
      requiredLimits: {
        maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
        maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
        maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
        maxBufferSize: l.maxBufferSize,
        maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
        maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
        maxStorageBuffersPerShaderStage: Math.min(WEBGPU_STORAGE_BUFFERS, l.maxStorageBuffersPerShaderStage),
      },
    });
    webgpuAdapter = adapterWords(adapter);
    if (softwareAdapter(adapter) !== null && tf.env().getNumber(MATMUL_PROGRAM_FLAG) < 0) tf.env().set(MATMUL_PROGRAM_FLAG, MATMUL_SMALL_OUTPUT);
    const backend = new WebGPUBackend(device, adapterInfo(adapter));
    watchOutOfMemory(device, backend);
    return backend;
  }, 3);
}

let current: BackendSelection | undefined;
/** XNNPACK's threads in the active wasm backend (tfjs-backend-wasm's count, the calling thread included). */
let wasmThreads = 1;
/** Why the threaded wasm build did not start under Node, where it was tried; else null. */
let wasmThreadedFailure: string | null = null;

/**
 * Which tfjs-backend-wasm build runs (Node with more than one core and a cross-origin isolated page get the threaded
 * one, whose heap is a shared memory; other pages the unthreaded one) and where the element-wise kernels run on its
 * heap, on how many threads.
 */
function describeWasmBuild(): string {
  const memory = heapMemory(tf.backend() as unknown as WasmBackend);
  const shared = memory !== undefined && isShared(memory.buffer);
  const simd = tf.env().getBool('WASM_HAS_SIMD_SUPPORT');
  const plural = (n: number): string => `${n} thread${n === 1 ? '' : 's'}`;
  const build = shared ? `threaded${simd ? ' SIMD' : ''} build, XNNPACK on ${plural(wasmThreads)}` : `${simd ? 'SIMD' : 'plain'} build, one thread`;
  const failed = wasmThreadedFailure !== null ? ` (the threaded build did not start: ${wasmThreadedFailure})` : '';
  const host = heapSimdHost(memory);
  const threadsFailure = hostThreadsFailure();
  const loops = host !== null
    ? `WebAssembly SIMD loops on the ${shared ? 'shared ' : ''}heap, ${plural(host.threads)} (${HOST_THREADS_ENV}${threadsFailure === null ? '' : `; ${threadsFailure}`})`
    : 'JavaScript loops (no wasm SIMD here)';
  return `wasm: ${build}${failed}; GELU, LayerNorm, dropout, AdamW: ${loops}`;
}

/** Backends `auto` must pass over, with the reason it reports for each (e.g. a model too large for wasm's heap). */
export type BackendExclusions = Partial<Record<Exclude<BackendName, 'auto'>, string>>;

/**
 * Activates `requested` (or, for `auto`, the first that works of tensorflow-gpu, tensorflow, webgpu, wasm, cpu,
 * passing over `exclude`) and registers the kernels it lacks. An explicit name that cannot load is an error carrying
 * the reason.
 */
export async function selectBackend(requested: BackendName = 'auto', exclude: BackendExclusions = {}): Promise<BackendSelection> {
  if (!(BACKEND_NAMES as readonly string[]).includes(requested)) {
    throw new UserError(`unknown backend '${String(requested)}'${didYouMean(String(requested), BACKEND_NAMES)}; valid: ${BACKEND_NAMES.join(', ')}`);
  }
  const excluded = requested === 'auto' ? Object.keys(exclude) : [];
  if (current !== undefined && (current.requested === requested || current.name === requested) && !excluded.includes(current.name)) return current;
  const order = requested === 'auto' ? AUTO_ORDER : [requested];
  const attempts: BackendAttempt[] = [];
  for (const name of order) {
    const why = requested === 'auto' ? exclude[name] : undefined;
    if (why !== undefined) {
      attempts.push({ name, ok: false, reason: why });
      continue;
    }
    try {
      const tfBackend = await tryBackend(name, requested === 'auto');
      const kernels = registerKernels(tfBackend);
      if (tfBackend === 'webgpu' && kernels.stockOnly === null) {
        useMatmulTile(tf.backend() as unknown as WebGPUBackend, parseMatmulTile(process.env[MATMUL_TILE_ENV]));
        useGemm(parseGemmMode(process.env[GEMM_ENV]));
        useBindGroupCache(tf.backend() as unknown as WebGPUBackend, process.env[BIND_GROUP_CACHE_ENV] !== '0');
        boundBufferPool(tf.backend() as unknown as WebGPUBackend, parsePoolBound(process.env[POOL_FREE_ENV]));
      }
      attempts.push({ name, ok: true, reason: requested === 'auto' ? 'first available in the auto order' : 'requested' });
      current = { requested, name, tfBackend, attempts, replacedKernels: kernels.replaced, stockOnly: kernels.stockOnly };
      return current;
    } catch (err) {
      attempts.push({ name, ok: false, reason: message(err) });
    }
  }
  const why = attempts.map((a) => `${a.name}: ${a.reason}`).join('; ');
  throw new Error(`no usable TF.js backend (${why})`);
}

/** The active selection, selecting `cpu`-or-better (`auto`) on first use. */
export async function ensureBackend(): Promise<BackendSelection> {
  return current ?? selectBackend('auto');
}

/** One line per attempt, for logs: which backend was taken and why the others were skipped. */
export function describeSelection(sel: BackendSelection): string {
  const lines = [`backend: ${sel.name} (TF.js '${sel.tfBackend}')`];
  for (const a of sel.attempts) if (!a.ok) lines.push(`  skipped ${a.name}: ${a.reason}`);
  if (sel.stockOnly !== null) lines.push(`  kernels: TF.js's stock only (${sel.stockOnly})`);
  if (sel.replacedKernels.length > 0) lines.push(`  replaced kernels: ${sel.replacedKernels.join(', ')}`);
  if (sel.tfBackend === 'wasm' && sel.stockOnly === null && tf.getBackend() === 'wasm') lines.push(`  ${describeWasmBuild()}`);
  if (sel.tfBackend === 'wasm' || sel.tfBackend === 'cpu') lines.push(`  dense products: ${hostMatMulEngine(sel.tfBackend)} (${NATIVE_GEMM_ENV}, ${CBLAS_ENV})`);
  if (sel.tfBackend === 'cpu') lines.push(`  host memory: ${hostMallocState() ?? 'not set'}`);
  if (sel.tfBackend === 'webgpu' && webgpuAdapter !== null) lines.push(`  adapter: ${webgpuAdapter}`);
  if (sel.tfBackend === 'webgpu' && sel.stockOnly === null) {
    lines.push(`  matmul tile: ${describeMatmulTile(activeMatmulTile())} (${MATMUL_TILE_ENV})`);
    lines.push(`  dense layers' products: ${describeGemmMode(activeGemmMode())} (${GEMM_ENV})`);
    lines.push(`  bind groups: ${bindGroupCacheOf(tf.backend()) === undefined ? 'made per dispatch' : 'kept across steps'} (${BIND_GROUP_CACHE_ENV})`);
    lines.push(`  buffer pool: ${describePoolBound(tf.backend() as unknown as WebGPUBackend)} (${POOL_FREE_ENV})`);
  }
  return lines.join('\n');
}
