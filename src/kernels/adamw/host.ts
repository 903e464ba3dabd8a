/**
 * The AdamW kernels of the host backends (cpu, wasm; the op is index.ts, the webgpu kernels webgpu.ts):
 *
 *   MicseGradNorm  inputs g0..gk (any shapes)  -> [] ||(g0, .., gk)||_2                    cpu, wasm, webgpu
 *   MicseAdamW     inputs p, g, m, v (shape S), norm [], [gate []]  -> [p', m', v'] (shape S each)   cpu, wasm
 *                  (with a gate that is not finite the outputs are p, m and v unchanged)
 *
 * Why: the composite update is ~14 TF.js ops per parameter and the norm 2 more; on WebGPU each op is a kernel
 * dispatch with a large fixed cost (BERT-base has ~200 parameters), on the host backends each op is one more pass
 * over the arrays. Here the whole update of one parameter is one kernel, and the norm of all gradients one kernel
 * (on webgpu one dispatch per 14 gradients; 6 where the device keeps the default 8 storage buffers). On webgpu the
 * update is not a TF.js kernel: a program there has a single output, so kernels/adamw/webgpu.ts writes p, m and v in place,
 * several parameters a dispatch, instead.
 *
 * The arithmetic is the composite code's, operation by operation in float32 (the clipping coefficient is computed
 * from the norm inside the kernel, as `min(1, maxNorm / (norm + CLIP_EPS))`):
 *   g  = gRaw * coef
 *   m' = m * b1 + g * (1 - b1)
 *   v' = v * b2 + (g * g) * (1 - b2)
 *   p' = p * decay - (m' / (sqrt(v') / bc2Sqrt + eps)) * stepSize        decay = 1 - lr * wd (1: no decay)
 * On cpu without wasm SIMD every step is rounded to float32 (Math.fround); otherwise a WebAssembly SIMD loop
 * (kernels/adamw/simd.ts) does the same float32 operations four lanes at a time, directly on the wasm backend's heap, and on
 * chunks copied through a private staging memory for cpu's JS arrays. Either way the update equals the
 * stock kernels' composite bit for bit. The norm sums the float32 squares of each gradient in double (where wasm SIMD
 * runs in four double lanes: on wasm's heap, and through the staging memory on cpu) and the per-gradient sums in
 * float32, as the cpu Sum and AddN kernels do (their one double accumulator may round differently); the stock wasm Sum
 * accumulates in float32, so there the norms differ by its rounding. webgpu differs from its stock kernels by
 * float rounding only (the norm's summation order; a GPU compiler may fuse a multiply-add); so does the in-place
 * update of kernels/adamw/webgpu.ts, which follows the same order.
 */
import { heapMemory, heapOffset, heapView, valuesChangedInPlace, type CpuBackend, type WasmBackend } from '../platform/hostBackend.js';
import { tf } from '../../model/tf.js';
import { kernelOn, registerOp } from '../registry.js';
import { ADAMW_KERNEL, assertFloat32, CLIP_EPS, GRAD_NORM_KERNEL, inPlaceTensorsAllow, type AdamWStepScalars, type InPlaceUpdate } from './scalars.js';
import { simdFor, SIMD_LANES, type AdamWSimd } from './simd.js';
import { runParts, sharedParts, threadParts, type SimdThreads, type ThreadCall } from '../platform/simdThreads.js';
import { V128_BYTES } from '../platform/wasmAsm.js';

type KernelFunc = tf.KernelConfig['kernelFunc'];

const f32 = Math.fround;

/** min(1, maxNorm / (norm + CLIP_EPS)) in float32, as the composite tf.minimum(1, tf.div(maxNorm, tf.add(norm, CLIP_EPS))). */
export function clipCoefficient(norm: number, maxNorm: number): number {
  if (maxNorm <= 0) return 1;
  return Math.min(1, f32(f32(maxNorm) / f32(norm + f32(CLIP_EPS))));
}

// ---------------------------------------------------------------------------------------------------------------
// Host loops (cpu and wasm)
// ---------------------------------------------------------------------------------------------------------------

/** sum of the float32 squares of `g`, accumulated in double (the cpu Sum kernel over tf.square). */
function sumSquares(g: Float32Array): number {
  let s = 0;
  for (let i = 0; i < g.length; i++) s += f32(g[i]! * g[i]!);
  return s;
}

/** sqrt of the per-gradient sums of squares, each rounded to float32 and added in float32 in order (the cpu AddN). */
function normFromSums(sums: readonly number[]): number {
  let total = 0;
  for (const s of sums) total = f32(total + f32(s));
  return f32(Math.sqrt(total));
}

/** ||grads||_2 as the cpu kernel computes it. */
export function gradNormHost(grads: readonly Float32Array[]): number {
  return normFromSums(grads.map(sumSquares));
}

/** The float32 constants of one update, in the argument order of the SIMD loop. */
function updateConstants(norm: number, s: AdamWStepScalars): [number, number, number, number, number, number, number, number, number] {
  return [clipCoefficient(norm, s.maxNorm), f32(s.beta1), f32(1 - s.beta1), f32(s.beta2), f32(1 - s.beta2), f32(s.decay), f32(s.bc2Sqrt), f32(s.eps), f32(s.stepSize)];
}

/**
 * One AdamW update over flat arrays of equal length; writes pOut, mOut, vOut, which may be p, m and v themselves
 * (element i is read before it is written).
 */
export function adamwHost(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, norm: number, s: AdamWStepScalars,
  pOut: Float32Array, mOut: Float32Array, vOut: Float32Array): void {
  const [coef, b1, oneMinusB1, b2, oneMinusB2, decay, bc2Sqrt, eps, stepSize] = updateConstants(norm, s);
  for (let i = 0; i < p.length; i++) {
    const gi = f32(g[i]! * coef);
    const mi = f32(f32(m[i]! * b1) + f32(gi * oneMinusB1));
    const vi = f32(f32(v[i]! * b2) + f32(f32(gi * gi) * oneMinusB2));
    const denom = f32(f32(f32(Math.sqrt(vi)) / bc2Sqrt) + eps);
    pOut[i] = f32(p[i]! * decay) - f32(f32(mi / denom) * stepSize);
    mOut[i] = mi;
    vOut[i] = vi;
  }
}

type AdamWInputs = Record<'p' | 'g' | 'm' | 'v' | 'norm', tf.TensorInfo> & { gate?: tf.TensorInfo };

const cpuGradNorm: KernelFunc = ({ inputs, backend }) => {
  const b = backend as unknown as CpuBackend;
  const grads = Object.values(inputs) as tf.TensorInfo[];
  assertFloat32(GRAD_NORM_KERNEL, grads);
  const arrays = grads.map((g) => b.data.get(g.dataId).values as Float32Array);
  const stage = cpuStaging();
  const norm = stage === null ? gradNormHost(arrays) : normFromSums(arrays.map((g) => sumSquaresStaged(stage, g)));
  return b.makeTensorInfo([], 'float32', Float32Array.of(norm));
};

/**
 * Elements of each array the cpu update copies through its staging memory per call (a multiple of SIMD_LANES):
 * 7 arrays of 256 KB, small enough to stay in cache between the copy in, the loop and the copy out.
 */
const CPU_STAGE_CHUNK = 1 << 16;

const WASM_PAGE_BYTES = 65536;

/** A private memory of 7 chunks (p, g, m, v in; p', m', v' out) and the SIMD loops instantiated on it. */
interface CpuStage {
  f32: Float32Array;
  simd: AdamWSimd;
}

let cpuStage: CpuStage | null | undefined;
/** The process's staging memory for the cpu update (made on first use), or null without wasm SIMD. */
function cpuStaging(): CpuStage | null {
  if (cpuStage !== undefined) return cpuStage;
  const bytes = 7 * CPU_STAGE_CHUNK * Float32Array.BYTES_PER_ELEMENT;
  const memory = new WebAssembly.Memory({ initial: Math.ceil(bytes / WASM_PAGE_BYTES) });
  const simd = simdFor(memory);
  return (cpuStage = simd === null ? null : { f32: new Float32Array(memory.buffer), simd });
}

/**
 * adamwHost's update, four lanes at a time: chunks of p, g, m, v are copied into the staging memory, updated by the
 * wasm loop and copied out (the copies cost far less than the scalar loop's Math.fround per operation, which made
 * BERT-base's word-embedding update the slowest kernel of a cpu step). Same float32 operations, same bits.
 */
function adamwStaged(stage: CpuStage, ins: readonly Float32Array[], norm: number, s: AdamWStepScalars,
  outs: readonly Float32Array[]): void {
  const n = ins[0]!.length;
  const whole = n - (n % SIMD_LANES);
  const constants = updateConstants(norm, s);
  const C = CPU_STAGE_CHUNK;
  const at = (k: number): number => k * C * Float32Array.BYTES_PER_ELEMENT; // byte address of chunk k
  for (let off = 0; off < whole; off += C) {
    const len = Math.min(C, whole - off);
    ins.forEach((a, k) => stage.f32.set(a.subarray(off, off + len), k * C));
    stage.simd.adamw(at(0), at(1), at(2), at(3), at(4), at(5), at(6), len / SIMD_LANES, ...constants);
    outs.forEach((a, k) => a.set(stage.f32.subarray((4 + k) * C, (4 + k) * C + len), off));
  }
  const [p, g, m, v] = ins.map((a) => a.subarray(whole)) as [Float32Array, Float32Array, Float32Array, Float32Array];
  const [po, mo, vo] = outs.map((a) => a.subarray(whole)) as [Float32Array, Float32Array, Float32Array];
  adamwHost(p, g, m, v, norm, s, po, mo, vo);
}

/**
 * sumSquares four lanes at a time (the wasm norm's loop, four double accumulators): chunks of g copied into the
 * staging memory; the rest (n % 4) by sumSquares.
 */
function sumSquaresStaged(stage: CpuStage, g: Float32Array): number {
  const whole = g.length - (g.length % SIMD_LANES);
  let sum = 0;
  for (let off = 0; off < whole; off += CPU_STAGE_CHUNK) {
    const len = Math.min(CPU_STAGE_CHUNK, whole - off);
    stage.f32.set(g.subarray(off, off + len), 0);
    sum += stage.simd.sumsq(0, len / SIMD_LANES);
  }
  return sum + sumSquares(g.subarray(whole));
}

/** adamwHost's update of ins = [p, g, m, v] into outs = [p', m', v'] (which may be p, m, v), staged where wasm SIMD runs. */
function adamwCpu(ins: readonly Float32Array[], norm: number, s: AdamWStepScalars, outs: readonly Float32Array[]): void {
  const stage = cpuStaging();
  if (stage !== null) adamwStaged(stage, ins, norm, s, outs);
  else adamwHost(ins[0]!, ins[1]!, ins[2]!, ins[3]!, norm, s, outs[0]!, outs[1]!, outs[2]!);
}

/**
 * The arrays the cpu update made (its p', m', v'). Only these are overwritten in place (`adamwInPlaceCpu`): an
 * array that came from elsewhere (a tf.tensor made from the caller's Float32Array shares it on cpu) is left alone,
 * so a parameter's first update makes new arrays and the later ones reuse them.
 */
const cpuUpdateArrays = new WeakSet<Float32Array>();

const cpuAdamW: KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backend as unknown as CpuBackend;
  const { p, g, m, v, norm, gate } = inputs as AdamWInputs;
  assertFloat32(ADAMW_KERNEL, [p, g, m, v, norm, ...(gate === undefined ? [] : [gate])]);
  const read = (x: tf.TensorInfo): Float32Array => b.data.get(x.dataId).values as Float32Array;
  const n = tf.util.sizeFromShape(p.shape);
  const outs = [new Float32Array(n), new Float32Array(n), new Float32Array(n)] as const;
  if (gate !== undefined && !Number.isFinite(read(gate)[0]!)) [p, m, v].forEach((x, k) => outs[k]!.set(read(x)));
  else adamwCpu([read(p), read(g), read(m), read(v)], read(norm)[0]!, attrs as unknown as AdamWStepScalars, outs);
  for (const o of outs) cpuUpdateArrays.add(o);
  return outs.map((o) => b.makeTensorInfo(p.shape.slice(), 'float32', o));
};

/**
 * Whether `p`, `m` and `v` can be overwritten where they are on cpu: the active backend is cpu with this project's
 * kernels registered, all four float32 with the same (non-zero) element count and four different dataIds and arrays,
 * p, m and v each the only holder of its data (backend refCount 1: no reshape, clone or saved copy shares it) and
 * each an array an earlier update made (cpuUpdateArrays); a gate apart from p, m and v. Values read from a tensor on
 * cpu are its array itself, so code that keeps a parameter's `dataSync()` across a step sees it change, as it would
 * see a webgpu buffer change; the project's readers copy (checkpoint.ts, BertModel.exportTensors).
 */
export function canUpdateInPlaceCpu(p: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, gate?: tf.Scalar): boolean {
  if (tf.getBackend() !== 'cpu' || !kernelOn(ADAMW_KERNEL)) return false;
  if (!inPlaceTensorsAllow(p, g, m, v, gate)) return false;
  const b = tf.backend() as unknown as CpuBackend;
  const xs = [p, g, m, v];
  const arrays = xs.map((x) => b.data.get(x.dataId).values);
  if (new Set(arrays).size !== xs.length) return false;
  return [p, m, v].every((x, k) => {
    const a = arrays[k === 0 ? 0 : k + 1];
    return b.data.get(x.dataId).refCount === 1 && a instanceof Float32Array && a.length === p.size && cpuUpdateArrays.has(a);
  });
}

/**
 * The updates (each passed `canUpdateInPlaceCpu`) with p, m and v overwritten in place: the kernel's arithmetic
 * (same bits), without three new arrays a parameter (1.3 GB a step at BERT-base). With a `gate` that is not finite
 * nothing changes.
 */
export function adamwInPlaceCpu(updates: readonly InPlaceUpdate[], norm: tf.Scalar, gate?: tf.Scalar): void {
  if (updates.length === 0) return;
  const b = tf.backend() as unknown as CpuBackend;
  const read = (x: tf.TensorInfo): Float32Array => b.data.get(x.dataId).values as Float32Array;
  if (gate !== undefined && !Number.isFinite(read(gate)[0]!)) return;
  const normValue = read(norm)[0]!;
  for (const { p, g, m, v, scalars } of updates) {
    const [pa, ma, va] = [read(p), read(m), read(v)];
    adamwCpu([pa, read(g), ma, va], normValue, scalars, [pa, ma, va]);
  }
}

/**
 * Whether `p`, `m` and `v` can be overwritten where they are on wasm: the active backend is wasm with this project's
 * kernels registered and the SIMD loops on its heap, the four tensors as inPlaceTensorsAllow asks, and p, m and v
 * each the only holder of its heap block (backend refCount 1: no clone or saved copy shares it; values read from a
 * wasm tensor are copies, so no reader sees them change).
 */
export function canUpdateInPlaceWasm(p: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, gate?: tf.Scalar): boolean {
  if (tf.getBackend() !== 'wasm' || !kernelOn(ADAMW_KERNEL) || !inPlaceTensorsAllow(p, g, m, v, gate)) return false;
  const b = tf.backend() as unknown as WasmBackend;
  return wasmSimd(b) !== null && [p, m, v].every((x) => b.dataIdMap.get(x.dataId).refCount === 1);
}

/**
 * The updates (each passed `canUpdateInPlaceWasm`) with p, m and v overwritten in place on the heap: the kernel's
 * arithmetic (same bits), every parameter's runs of groups in one job the heap's threads share (no kernel call, no
 * three new blocks a parameter), the n % 4 elements after in JavaScript; then p, m and v are made known as changed
 * (valuesChangedInPlace: no XNNPACK operator keeps p's old values). With a `gate` that is not finite nothing
 * changes.
 */
export function adamwInPlaceWasm(updates: readonly InPlaceUpdate[], norm: tf.Scalar, gate?: tf.Scalar): void {
  if (updates.length === 0) return;
  const b = tf.backend() as unknown as WasmBackend;
  if (gate !== undefined && !Number.isFinite(heapView(b, gate)[0]!)) return;
  const normValue = heapView(b, norm)[0]!;
  const simd = wasmSimd(b)!;
  const threads = simdFor.threads(heapMemory(b));
  runParts(simd, threads, updates.flatMap(({ p, g, m, v, scalars }) => adamwParts(b, [p, g, m, v], [p, m, v], normValue, scalars, threads)));
  for (const { p, g, m, v, scalars } of updates) {
    adamwRest(b, [p, g, m, v], [p, m, v], normValue, scalars, Math.floor(p.size / SIMD_LANES));
    for (const x of [p, m, v]) valuesChangedInPlace(b, x); // no XNNPACK product keeps their old values packed
  }
}

/**
 * One update's SIMD loop on the heap as parts the heap's threads share: runs of the whole groups of `ins` (p, g, m,
 * v) into `outs` (p', m', v', which may be p, m and v themselves).
 */
function adamwParts(b: WasmBackend, ins: readonly tf.TensorInfo[], outs: readonly tf.TensorInfo[], normValue: number, s: AdamWStepScalars,
  threads: SimdThreads<keyof AdamWSimd> | null): ThreadCall<keyof AdamWSimd>[][] {
  const groups = Math.floor(tf.util.sizeFromShape(ins[0]!.shape) / SIMD_LANES);
  const addresses = [...ins, ...outs].map((x) => heapOffset(b, x));
  const constants = updateConstants(normValue, s);
  return threadParts(groups, SIMD_LANES, sharedParts(threads?.count ?? 1),
    (first, n): ThreadCall<keyof AdamWSimd>[] => [{ fn: 'adamw', args: [...addresses.map((a) => a + first * V128_BYTES), n, ...constants] }]);
}

/** One update's elements after its first `groups` SIMD groups (all of them with 0), in JavaScript: the same bits. */
function adamwRest(b: WasmBackend, ins: readonly tf.TensorInfo[], outs: readonly tf.TensorInfo[], normValue: number, s: AdamWStepScalars,
  groups: number): void {
  const done = groups * SIMD_LANES;
  const [pv, gv, mv, vv] = ins.map((x) => heapView(b, x, done));
  const [po, mo, vo] = outs.map((x) => heapView(b, x, done));
  adamwHost(pv!, gv!, mv!, vv!, normValue, s, po!, mo!, vo!);
}

/** The SIMD loops over this backend's heap, or null (then the JavaScript loops do all elements). */
function wasmSimd(b: WasmBackend): AdamWSimd | null {
  return simdFor(heapMemory(b));
}

const wasmGradNorm: KernelFunc = ({ inputs, backend }) => {
  const b = backend as unknown as WasmBackend;
  const grads = Object.values(inputs) as tf.TensorInfo[];
  assertFloat32(GRAD_NORM_KERNEL, grads);
  const out = b.makeOutput([], 'float32');
  const simd = wasmSimd(b);
  const groupsOf = (g: tf.TensorInfo): number => (simd === null ? 0 : Math.floor(tf.util.sizeFromShape(g.shape) / SIMD_LANES));
  // Each gradient's SIMD sum (a float64 into `scratch`; 2 float32 slots, 8-byte aligned past the first) is one part
  // the heap's threads share: each sum is the one-thread loop's, so the norm is too.
  const scratch = b.makeOutput([2 * grads.length + 1], 'float32');
  const at = heapOffset(b, scratch);
  const base = at + (at % 8);
  const threads = simdFor.threads(heapMemory(b));
  if (simd !== null) {
    runParts(simd, threads, grads.map((g, i): ThreadCall<keyof AdamWSimd>[] => [{ fn: 'sumsqTo', args: [heapOffset(b, g), groupsOf(g), base + 8 * i] }]));
  }
  // views taken after the allocations above (see hostBackend.ts)
  const simdSums = new Float64Array(heapView(b, scratch).buffer, base, grads.length);
  const sums = grads.map((g, i) => (simd === null ? 0 : simdSums[i]!) + sumSquares(heapView(b, g, groupsOf(g) * SIMD_LANES)));
  b.disposeData(scratch.dataId);
  heapView(b, out)[0] = normFromSums(sums);
  return out;
};

const wasmAdamW: KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backend as unknown as WasmBackend;
  const { p, g, m, v, norm, gate } = inputs as AdamWInputs;
  assertFloat32(ADAMW_KERNEL, [p, g, m, v, norm, ...(gate === undefined ? [] : [gate])]);
  const s = attrs as unknown as AdamWStepScalars;
  const outs = [0, 1, 2].map(() => b.makeOutput(p.shape.slice(), 'float32')) as [tf.TensorInfo, tf.TensorInfo, tf.TensorInfo];
  // views taken after the allocations above (see hostBackend.ts)
  if (gate !== undefined && !Number.isFinite(heapView(b, gate)[0]!)) {
    [p, m, v].forEach((x, k) => heapView(b, outs[k]!).set(heapView(b, x)));
    return outs;
  }
  const normValue = heapView(b, norm)[0]!;
  const simd = wasmSimd(b);
  const groups = simd === null ? 0 : Math.floor(tf.util.sizeFromShape(p.shape) / SIMD_LANES);
  const ins = [p, g, m, v];
  // runs of whole groups, shared by the heap's threads where it is shared; the rest, n % 4 elements (all of them
  // without SIMD), in JavaScript: the same bits
  if (groups > 0) {
    const threads = simdFor.threads(heapMemory(b));
    runParts(simd!, threads, adamwParts(b, ins, outs, normValue, s, threads));
  }
  adamwRest(b, ins, outs, normValue, s, groups);
  return outs;
};

/** Registers the gradient-norm and update kernels of `backendName` if it is cpu or wasm. */
export function registerAdamWHost(backendName: string): void {
  registerOp(backendName, {
    cpu: { [GRAD_NORM_KERNEL]: cpuGradNorm, [ADAMW_KERNEL]: cpuAdamW },
    wasm: { [GRAD_NORM_KERNEL]: wasmGradNorm, [ADAMW_KERNEL]: wasmAdamW },
  });
}
