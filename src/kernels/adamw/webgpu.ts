/**
 * AdamW on webgpu, in place: each compute dispatch reads the gradients of up to `paramsPerDispatch` parameters and
 * writes their p, m and v into their own GPU buffers. Same arithmetic, operation by operation, as the kernels in
 * kernels/adamw (g clipped by the norm inside the shader, then m', v', p'), so it differs from the composite ops
 * by float rounding only. With a gate (the step's loss), every invocation first reads it and leaves p, m and v as
 * they are when it is not finite: the trainer skips a non-finite step without reading the loss before the update.
 *
 * Why not a TF.js kernel: a tfjs-backend-webgpu program has one output, so an update that yields p', m' and v' is
 * three dispatches, each allocating an output buffer and a uniform buffer and building a bind group (host time that
 * bound the step on a GPU: bench/README.md). BERT-base has ~200 parameters: ~600 dispatches
 * a step. Here a dispatch binds four buffers per parameter, so the parameters it takes are bounded by the device's
 * storage buffers per stage: 3 with the 16 that backend.ts asks for (1 with WebGPU's default 8), 51 dispatches at
 * BERT-base. Each dispatch has its uniforms (the shared scalars, then each parameter's size, first workgroup in the
 * dispatch's grid and decay) in a bind group from webgpuPrograms.ts `bindGroupFor` (kept across steps).
 *
 * In place is sound only where nothing else holds the buffers: `canUpdateInPlace` requires that p, m and v each be
 * the sole owner of their data (backend refCount 1, no tensor sharing the dataId) and that the four buffers differ;
 * the caller falls back to the composite update otherwise. The dispatches are recorded into the backend's own
 * command encoder, after the kernels that computed the gradients, and the gradient and norm are marked as used by
 * the queue so that disposing them right after `apply` only defers their release until the submit, as the backend
 * does for its own programs. Values the backend cached on the host after a read are dropped (they would be stale).
 *
 * This reaches into tfjs-backend-webgpu 4.x internals through webgpuPrograms.ts's raw-dispatch helpers (as the
 * multi-output programs there do); test/adamw.test.ts compares the result with the composite ops on a real adapter
 * (lavapipe or a GPU).
 */
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { tf } from '../../model/tf.js';
import { kernelOn, registerOp } from '../registry.js';
import { bindGroupFor, bufferOf, internalsOf, recordDispatches, workgroupSumWgsl } from '../platform/webgpuPrograms.js';
import { assertFloat32, CLIP_EPS, GRAD_NORM_KERNEL, inPlaceTensorsAllow, type InPlaceUpdate } from './scalars.js';

type KernelFunc = tf.KernelConfig['kernelFunc'];

/** Invocations per workgroup. */
const WORKGROUP = 256;
/** Bytes of the uniform block's shared fields (`Update` up to `params`) and of one parameter's entry (`Param`). */
const SHARED_UNIFORM_BYTES = 48;
const PARAM_UNIFORM_BYTES = 16;
/** Storage buffers of a dispatch besides the parameters' four each: the norm and the gate. */
const SHARED_STORAGE_BUFFERS = 2;
const STORAGE_PER_PARAM = 4;

/**
 * The update of `k` parameters in one dispatch. Parameter j binds P, M, V (read-write) and G at 4j..4j+3, then the
 * norm, the gate and the uniforms. Its workgroups are [firstGroup_j, firstGroup_j + ceil(n_j / WORKGROUP)) of the
 * dispatch's (flattened) grid; each invocation finds its parameter and updates one element of it.
 */
function shaderFor(k: number): string {
  const slots = Array.from({ length: k }, (_, j) => j);
  const bindings = slots.map((j) => `
@group(0) @binding(${4 * j}) var<storage, read_write> P${j} : array<f32>;
@group(0) @binding(${4 * j + 1}) var<storage, read_write> M${j} : array<f32>;
@group(0) @binding(${4 * j + 2}) var<storage, read_write> V${j} : array<f32>;
@group(0) @binding(${4 * j + 3}) var<storage, read> G${j} : array<f32>;`).join('');
  // One function per parameter: WGSL cannot pass a storage array to a function.
  const updates = slots.map((j) => `
fn update${j}(i : u32, decay : f32) {
  var g = G${j}[i];
  if (u.maxNorm > 0.0) {
    g = g * min(1.0, u.maxNorm / (N[0] + u.clipEps));
  }
  let m = M${j}[i] * u.beta1 + g * u.oneMinusBeta1;
  let v = V${j}[i] * u.beta2 + (g * g) * u.oneMinusBeta2;
  let denom = sqrt(v) / u.bc2Sqrt + u.eps;
  M${j}[i] = m;
  V${j}[i] = v;
  P${j}[i] = P${j}[i] * decay - (m / denom) * u.stepSize;
}`).join('');
  return `
struct Param { n : u32, firstGroup : u32, decay : f32, unused : f32 };
struct Update {
  beta1 : f32, oneMinusBeta1 : f32, beta2 : f32, oneMinusBeta2 : f32,
  bc2Sqrt : f32, eps : f32, stepSize : f32, maxNorm : f32,
  clipEps : f32, gated : u32, unused0 : u32, unused1 : u32,
  params : array<Param, ${k}>,
};
${bindings}
@group(0) @binding(${4 * k}) var<storage, read> N : array<f32>;
@group(0) @binding(${4 * k + 1}) var<storage, read> Gate : array<f32>;
@group(0) @binding(${4 * k + 2}) var<uniform> u : Update;
${updates}

@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>,
        @builtin(local_invocation_index) lid : u32) {
  // A gate that is not finite (exponent bits all ones: inf or NaN) skips the update.
  if (u.gated != 0u && (bitcast<u32>(Gate[0]) & 0x7f800000u) == 0x7f800000u) {
    return;
  }
  let group = wid.y * nwg.x + wid.x;
  var j = 0u;
  for (var s = 1u; s < ${k}u; s = s + 1u) {
    if (group >= u.params[s].firstGroup) { j = s; }
  }
  let i = (group - u.params[j].firstGroup) * ${WORKGROUP}u + lid;
  if (i >= u.params[j].n) {
    return;
  }
  switch j {
    ${slots.map((j) => `case ${j}u: { update${j}(i, u.params[${j}].decay); }`).join('\n    ')}
    default: {}
  }
}`;
}

interface Pipeline {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
}

/** Per device, the pipeline updating k parameters a dispatch, by k. */
const pipelines = new WeakMap<GPUDevice, Map<number, Pipeline>>();

/** Parameters one dispatch updates on `device`: four storage buffers each, plus the norm and the gate. */
export function paramsPerDispatch(device: GPUDevice): number {
  return Math.max(1, Math.floor((device.limits.maxStorageBuffersPerShaderStage - SHARED_STORAGE_BUFFERS) / STORAGE_PER_PARAM));
}

function pipelineFor(device: GPUDevice, k: number): Pipeline {
  let byK = pipelines.get(device);
  if (byK === undefined) pipelines.set(device, (byK = new Map()));
  let p = byK.get(k);
  if (p === undefined) {
    const entry = (binding: number, type: GPUBufferBindingType): GPUBindGroupLayoutEntry =>
      ({ binding, visibility: GPUShaderStage.COMPUTE, buffer: { type } });
    const layout = device.createBindGroupLayout({
      entries: [
        ...Array.from({ length: k }, (_, j) => [
          entry(4 * j, 'storage'), entry(4 * j + 1, 'storage'), entry(4 * j + 2, 'storage'), entry(4 * j + 3, 'read-only-storage'),
        ]).flat(),
        entry(4 * k, 'read-only-storage'), entry(4 * k + 1, 'read-only-storage'), entry(4 * k + 2, 'uniform'),
      ],
    });
    const pipeline = device.createComputePipeline({
      layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module: device.createShaderModule({ code: shaderFor(k) }), entryPoint: 'main' },
    });
    p = { pipeline, layout };
    byK.set(k, p);
  }
  return p;
}

/**
 * Whether `p`, `m` and `v` can be overwritten where they are: the active backend is webgpu with this project's
 * kernels registered, all four tensors are float32 with the same (non-zero) element count, p, m and v are the only
 * holders of their data, and no two share a buffer; a gate must be one float32 apart from p, m and v.
 */
export function canUpdateInPlace(p: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, gate?: tf.Scalar): boolean {
  if (tf.getBackend() !== 'webgpu' || !kernelOn(GRAD_NORM_KERNEL)) return false; // the kernels registered: internals checked
  if (!inPlaceTensorsAllow(p, g, m, v, gate)) return false;
  const b = internalsOf(tf.backend());
  return [p, m, v].every((x) => b.tensorMap.get(x.dataId)?.refCount === 1);
}

/** The fields of an update's scalars that a dispatch shares (all but the decay). */
const SHARED_SCALARS = ['beta1', 'beta2', 'eps', 'bc2Sqrt', 'stepSize', 'maxNorm'] as const;

/**
 * `updates` in order, cut into dispatches of at most `perDispatch`: a cut also comes before an update whose shared
 * scalars differ from the dispatch's, or whose buffers meet the dispatch's where one of them is written (a buffer
 * may be bound twice in a dispatch only read-only).
 */
function dispatchGroups(updates: readonly InPlaceUpdate[], perDispatch: number): InPlaceUpdate[][] {
  const groups: InPlaceUpdate[][] = [];
  let group: InPlaceUpdate[] = [];
  let bound = new Set<object>();
  let written = new Set<object>();
  for (const u of updates) {
    const writes = [u.p, u.m, u.v].map((x) => x.dataId);
    const cut = group.length === perDispatch
      || (group.length > 0 && SHARED_SCALARS.some((f) => u.scalars[f] !== group[0]!.scalars[f]))
      || writes.some((id) => bound.has(id)) || written.has(u.g.dataId);
    if (cut) {
      groups.push(group);
      group = [];
      bound = new Set();
      written = new Set();
    }
    group.push(u);
    for (const id of writes) {
      bound.add(id);
      written.add(id);
    }
    bound.add(u.g.dataId);
  }
  groups.push(group);
  return groups;
}

/**
 * Records the updates into the backend's command encoder, `paramsPerDispatch(device)` parameters a dispatch (in
 * order). `norm` is the gradient norm (a [] float32 tensor on the device), read by every dispatch for the clipping
 * coefficient; with a `gate` ([] float32 on the device) that is not finite the dispatches leave every parameter as
 * it is. Call only for updates that passed `canUpdateInPlace`.
 */
export function adamwInPlace(updates: readonly InPlaceUpdate[], norm: tf.Scalar, gate?: tf.Scalar): void {
  if (updates.length === 0) return;
  const b = internalsOf(tf.backend());
  const groups = dispatchGroups(updates, paramsPerDispatch(b.device));
  const maxGroups = b.device.limits.maxComputeWorkgroupsPerDimension;

  // Each dispatch's uniforms: the shared scalars, then each parameter's size, first workgroup and decay.
  // `workgroups[d]` is dispatch d's total.
  const blocks = groups.map((group) => {
    const block = new ArrayBuffer(SHARED_UNIFORM_BYTES + group.length * PARAM_UNIFORM_BYTES);
    const s = group[0]!.scalars;
    new Float32Array(block, 0, 9).set([s.beta1, 1 - s.beta1, s.beta2, 1 - s.beta2, s.bc2Sqrt, s.eps, s.stepSize, s.maxNorm, CLIP_EPS]);
    new Uint32Array(block, 36, 1)[0] = gate === undefined ? 0 : 1;
    let first = 0;
    group.forEach((u, j) => {
      const at = SHARED_UNIFORM_BYTES + j * PARAM_UNIFORM_BYTES;
      new Uint32Array(block, at, 2).set([u.p.size, first]);
      new Float32Array(block, at + 8, 1)[0] = u.scalars.decay;
      first += Math.ceil(u.p.size / WORKGROUP);
    });
    return { block, workgroups: first };
  });

  // Buffers first: an upload (a tensor whose values are still on the host) ends the backend's compute pass.
  const buffer = (x: tf.Tensor): GPUBuffer => bufferOf(b, x);
  const normBuffer = buffer(norm);
  const gateBuffer = gate === undefined ? normBuffer : buffer(gate); // ungated: bound, never read
  recordDispatches(b, 'micseAdamWInPlace', groups.map((group, d) => {
    const { pipeline, layout } = pipelineFor(b.device, group.length);
    const buffers = [...group.flatMap(({ p, m, v, g }) => [p, m, v, g].map(buffer)), normBuffer, gateBuffer];
    const { block, workgroups } = blocks[d]!;
    const x = Math.min(workgroups, maxGroups);
    return { pipeline, bindGroup: bindGroupFor(b, layout, () => layout, buffers, block),
      grid: [x, Math.ceil(workgroups / x), 1] as [number, number, number], key: `micseAdamWInPlace/${group.length}` };
  }));
  // The host copies a read left behind are stale now.
  for (const { p, m, v } of updates) for (const t of [p, m, v]) b.tensorMap.get(t.dataId)!.values = null;
}

// ---------------------------------------------------------------------------------------------------------------
// The gradient norm (a TF.js kernel)
//
// tfjs-backend-webgpu generates each shader's header: `result` (the one output, binding 0), one read-only array
// per name in `variableNames`, and a `uniforms` struct with every input's shape (`<name>Shape`), the output shape,
// `size` when `size` is set, then the program's own `uniforms` fields. `main(index)` is called with the flat
// invocation index (getMainHeaderString('index') spells the same signature); `localIndex`, `workgroupId` and
// `numWorkgroups` are module-scope copies of the builtins. All tensors are bound flat ([n]).
// ---------------------------------------------------------------------------------------------------------------

/**
 * Invocations per workgroup of the sum-of-squares programs (a power of two: tree reduction in shared memory). 64:
 * each workgroup ends in a tree sum, whose barriers a CPU WebGPU (SwiftShader) pays per thread, running the threads
 * in turn; 256 workgroups of 64 still give a GPU 16K threads.
 */
const REDUCE_WORKGROUP = 64;
/** Workgroups of a sum-of-squares program: each writes one partial sum, so the partials are [REDUCE_PARTIALS]. */
const REDUCE_PARTIALS = 256;
/** Gradients per sum-of-squares dispatch: the device's storage buffers per stage minus the output and the running partials. */
function gradsPerDispatch(device: GPUDevice): number {
  return device.limits.maxStorageBuffersPerShaderStage - 2;
}

function flat(x: tf.TensorInfo): tf.TensorInfo {
  return { dataId: x.dataId, shape: [tf.util.sizeFromShape(x.shape)], dtype: x.dtype };
}

/** The workgroup's tree sum of a value, returned to every invocation (it has barriers: all must call it). */
const WORKGROUP_SUM = workgroupSumWgsl('workgroupSum', REDUCE_WORKGROUP);

/**
 * Partial sums of squares over up to gradsPerDispatch() gradients, added to the previous partials if any:
 *   [Prev [W]], G0 [n0], .., Gk [nk] -> [W],  W = REDUCE_PARTIALS workgroups, each striding over every gradient.
 */
class SumSquaresProgram implements WebGPUProgram {
  readonly outputShape = [REDUCE_PARTIALS];
  shaderKey: string;
  readonly dispatchLayout = { x: [0] };
  dispatch: [number, number, number] = [REDUCE_PARTIALS, 1, 1];
  readonly workgroupSize: [number, number, number] = [REDUCE_WORKGROUP, 1, 1];
  readonly variableNames: string[];
  private readonly grads: string[];

  constructor(count: number, private readonly hasPrev: boolean) {
    this.grads = Array.from({ length: count }, (_, i) => `G${i}`);
    this.variableNames = hasPrev ? ['Prev', ...this.grads] : this.grads;
    this.shaderKey = `micse_sumsq_${count}_${hasPrev}`;
  }

  getUserCode(): string {
    const loops = this.grads.map((name) => `
          for (var i = index; i < uniforms.${name.toLowerCase()}Shape; i = i + stride) {
            let x = ${name}[i];
            acc = acc + x * x;
          }`).join('');
    return `
      ${WORKGROUP_SUM}
      fn main(index : i32) {
        let stride = i32(numWorkgroups.x) * ${REDUCE_WORKGROUP};
        var acc = 0.0;
        ${loops}
        let total = workgroupSum(acc);
        if (localIndex == 0u) {
          setOutputAtIndex(i32(workgroupId.x), ${this.hasPrev ? 'Prev[workgroupId.x] + ' : ''}total);
        }
      }`;
  }
}

/** sqrt(sum of the partials).  Partials [W] -> [1] */
class NormProgram implements WebGPUProgram {
  readonly outputShape = [1];
  shaderKey = 'micse_norm';
  readonly dispatchLayout = { x: [0] };
  dispatch: [number, number, number] = [1, 1, 1];
  readonly workgroupSize: [number, number, number] = [REDUCE_WORKGROUP, 1, 1];
  readonly variableNames = ['Partials'];

  getUserCode(): string {
    return `
      ${WORKGROUP_SUM}
      fn main(index : i32) {
        var acc = 0.0;
        for (var i = index; i < uniforms.partialsShape; i = i + ${REDUCE_WORKGROUP}) {
          acc = acc + Partials[i];
        }
        let total = workgroupSum(acc);
        if (localIndex == 0u) {
          setOutputAtIndex(0, sqrt(total));
        }
      }`;
  }
}

const webgpuGradNorm: KernelFunc = ({ inputs, backend }) => {
  const b = backend as unknown as WebGPUBackend;
  const grads = (Object.values(inputs) as tf.TensorInfo[]).filter((g) => tf.util.sizeFromShape(g.shape) > 0);
  assertFloat32(GRAD_NORM_KERNEL, grads);
  const perDispatch = gradsPerDispatch(b.device);
  let partials: tf.TensorInfo | undefined;
  for (let i = 0; i < grads.length || partials === undefined; i += perDispatch) {
    const chunk = grads.slice(i, i + perDispatch).map(flat);
    const prev = partials;
    const program = new SumSquaresProgram(chunk.length, prev !== undefined);
    partials = b.runWebGPUProgram(program, prev === undefined ? chunk : [prev, ...chunk], 'float32');
    if (prev !== undefined) b.disposeData(prev.dataId);
  }
  const norm = b.runWebGPUProgram(new NormProgram(), [partials], 'float32');
  b.disposeData(partials.dataId);
  return { dataId: norm.dataId, shape: [], dtype: 'float32' };
};

/** Registers the gradient-norm kernel of `backendName` if it is webgpu (the update runs in place: adamwInPlace). */
export function registerAdamWWebgpu(backendName: string): void {
  registerOp(backendName, { webgpu: { [GRAD_NORM_KERNEL]: webgpuGradNorm } });
}
