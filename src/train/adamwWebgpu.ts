/**
 * AdamW on webgpu, in place: one compute dispatch per parameter reads its gradient and writes p, m and v into their
 * own GPU buffers. Same arithmetic, operation by operation, as the kernels in adamwKernels.ts (g clipped by the
 * norm inside the shader, then m', v', p'), so it differs from the composite ops by float rounding only. With a
 * gate (the step's loss), every invocation first reads it and leaves p, m and v as they are when it is not finite:
 * the trainer skips a non-finite step without reading the loss before the update.
 *
 * Why not a TF.js kernel: a tfjs-backend-webgpu program has one output, so an update that yields p', m' and v' is
 * three dispatches, each allocating an output buffer and a uniform buffer and building a bind group (~100 us of host
 * time each on an H200 host, where the step is bound by host time). BERT-base has ~200 parameters: ~600 dispatches
 * a step. Here each parameter costs one bind group and one dispatch, and one uniform buffer serves the whole update
 * (a 256-byte slot per parameter, selected by a dynamic offset).
 *
 * In place is sound only where nothing else holds the buffers: `canUpdateInPlace` requires that p, m and v each be
 * the sole owner of their data (backend refCount 1, no tensor sharing the dataId) and that the four buffers differ;
 * the caller falls back to the composite update otherwise. The dispatches are recorded into the backend's own
 * command encoder, after the kernels that computed the gradients, and the gradient and norm are marked as used by
 * the queue so that disposing them right after `apply` only defers their release until the submit, as the backend
 * does for its own programs. Values the backend cached on the host after a read are dropped (they would be stale).
 *
 * This reaches into tfjs-backend-webgpu 4.x internals (`commandEncoder`, `computePassEncoder`, `tensorMap`,
 * `commandQueueOwnedIds`, `uniformPendingDisposal`, `dispatchCountInPass`), typed below as `BackendInternals`;
 * test/adamw.test.ts compares the result with the composite ops on a real adapter (lavapipe here).
 */
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { tf } from '../model/tf.js';
import { CLIP_EPS, type AdamWStepScalars } from './adamwKernels.js';

/** Invocations per workgroup. */
const WORKGROUP = 256;
/** f32/u32 fields of one parameter's uniform block (see `Update` in the shader). */
const UNIFORM_FIELDS = 12;
const UNIFORM_BYTES = UNIFORM_FIELDS * 4;

const SHADER = `
struct Update {
  n : u32, decay : f32, beta1 : f32, oneMinusBeta1 : f32,
  beta2 : f32, oneMinusBeta2 : f32, bc2Sqrt : f32, eps : f32,
  stepSize : f32, maxNorm : f32, clipEps : f32, gated : u32,
};
@group(0) @binding(0) var<storage, read_write> P : array<f32>;
@group(0) @binding(1) var<storage, read_write> M : array<f32>;
@group(0) @binding(2) var<storage, read_write> V : array<f32>;
@group(0) @binding(3) var<storage, read> G : array<f32>;
@group(0) @binding(4) var<storage, read> N : array<f32>;
@group(0) @binding(5) var<uniform> u : Update;
@group(0) @binding(6) var<storage, read> Gate : array<f32>;

@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>,
        @builtin(local_invocation_index) lid : u32) {
  let i = (wid.y * nwg.x + wid.x) * ${WORKGROUP}u + lid;
  // A gate that is not finite (exponent bits all ones: inf or NaN) skips the update.
  if (i >= u.n || (u.gated != 0u && (bitcast<u32>(Gate[0]) & 0x7f800000u) == 0x7f800000u)) {
    return;
  }
  var g = G[i];
  if (u.maxNorm > 0.0) {
    g = g * min(1.0, u.maxNorm / (N[0] + u.clipEps));
  }
  let m = M[i] * u.beta1 + g * u.oneMinusBeta1;
  let v = V[i] * u.beta2 + (g * g) * u.oneMinusBeta2;
  let denom = sqrt(v) / u.bc2Sqrt + u.eps;
  M[i] = m;
  V[i] = v;
  P[i] = P[i] * u.decay - (m / denom) * u.stepSize;
}`;

/** What this module uses of a WebGPUBackend beyond its public type (tfjs-backend-webgpu 4.x). */
interface BackendInternals {
  device: GPUDevice;
  queue: GPUQueue;
  tensorMap: { get(dataId: object): { resource: unknown; values: unknown; refCount: number } | undefined };
  bufferManager: { acquireBuffer(size: number, usage: number): GPUBuffer };
  uploadToGPU(dataId: object): void;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
  commandEncoder: GPUCommandEncoder;
  computePassEncoder: GPUComputePassEncoder | null;
  commandQueueOwnedIds: WeakSet<object>;
  uniformPendingDisposal: GPUBuffer[];
  dispatchCountInPass: number;
}

interface Pipeline {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
}

const pipelines = new WeakMap<GPUDevice, Pipeline>();

/** Dispatches recorded by this module since load (the bench adds them to the backend's own count). */
let recorded = 0;

export function inPlaceDispatchCount(): number {
  return recorded;
}

function internals(): BackendInternals {
  return tf.backend() as unknown as WebGPUBackend as unknown as BackendInternals;
}

function pipelineFor(device: GPUDevice): Pipeline {
  let p = pipelines.get(device);
  if (p === undefined) {
    const storage = (type: GPUBufferBindingType, binding: number): GPUBindGroupLayoutEntry =>
      ({ binding, visibility: GPUShaderStage.COMPUTE, buffer: { type } });
    const layout = device.createBindGroupLayout({
      entries: [
        storage('storage', 0), storage('storage', 1), storage('storage', 2),
        storage('read-only-storage', 3), storage('read-only-storage', 4),
        { binding: 5, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform', hasDynamicOffset: true } },
        storage('read-only-storage', 6),
      ],
    });
    const pipeline = device.createComputePipeline({
      layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module: device.createShaderModule({ code: SHADER }), entryPoint: 'main' },
    });
    p = { pipeline, layout };
    pipelines.set(device, p);
  }
  return p;
}

/** One parameter's update: the variable, its gradient and moments, and the step's scalars. */
export interface InPlaceUpdate {
  p: tf.Variable;
  g: tf.Tensor;
  m: tf.Variable;
  v: tf.Variable;
  scalars: AdamWStepScalars;
}

/**
 * Whether `p`, `m` and `v` can be overwritten where they are: the active backend is webgpu, all four tensors are
 * float32 with the same (non-zero) element count, p, m and v are the only holders of their data, and no two share a
 * buffer; a gate must be one float32 apart from p, m and v.
 */
export function canUpdateInPlace(p: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, gate?: tf.Scalar): boolean {
  if (tf.getBackend() !== 'webgpu') return false;
  const b = internals();
  const xs = [p, g, m, v];
  if (p.size === 0 || xs.some((x) => x.dtype !== 'float32' || x.size !== p.size)) return false;
  if (new Set(xs.map((x) => x.dataId)).size !== xs.length) return false;
  if (gate !== undefined && (gate.dtype !== 'float32' || gate.size !== 1 || [p, m, v].some((x) => x.dataId === gate.dataId))) return false;
  return [p, m, v].every((x) => b.tensorMap.get(x.dataId)?.refCount === 1);
}

/**
 * Records one dispatch per update (in order) into the backend's command encoder. `norm` is the gradient norm
 * (a [] float32 tensor on the device), read by every dispatch for the clipping coefficient; with a `gate` ([]
 * float32 on the device) that is not finite the dispatches leave every parameter as it is. Call only for updates
 * that passed `canUpdateInPlace`.
 */
export function adamwInPlace(updates: readonly InPlaceUpdate[], norm: tf.Scalar, gate?: tf.Scalar): void {
  if (updates.length === 0) return;
  const b = internals();
  const { pipeline, layout } = pipelineFor(b.device);
  const slot = Math.max(UNIFORM_BYTES, b.device.limits.minUniformBufferOffsetAlignment);
  const maxGroups = b.device.limits.maxComputeWorkgroupsPerDimension;

  // One uniform buffer for all updates, a slot each.
  const block = new ArrayBuffer(slot * updates.length);
  updates.forEach(({ p, scalars: s }, k) => {
    new Uint32Array(block, k * slot, 1)[0] = p.size;
    new Float32Array(block, k * slot + 4, UNIFORM_FIELDS - 2).set([
      s.decay, s.beta1, 1 - s.beta1, s.beta2, 1 - s.beta2, s.bc2Sqrt, s.eps, s.stepSize, s.maxNorm, CLIP_EPS]);
    new Uint32Array(block, k * slot + 4 * (UNIFORM_FIELDS - 1), 1)[0] = gate === undefined ? 0 : 1;
  });
  const uniforms = b.bufferManager.acquireBuffer(block.byteLength, GPUBufferUsage.COPY_DST | GPUBufferUsage.UNIFORM);
  b.queue.writeBuffer(uniforms, 0, block);
  b.uniformPendingDisposal.push(uniforms); // released at the next submit, like the backend's own uniforms

  // Buffers first: an upload (a tensor whose values are still on the host) ends the backend's compute pass.
  const buffer = (x: tf.Tensor): GPUBuffer => {
    b.uploadToGPU(x.dataId);
    b.commandQueueOwnedIds.add(x.dataId);
    return b.tensorMap.get(x.dataId)!.resource as GPUBuffer;
  };
  const normBuffer = buffer(norm);
  const gateBuffer = gate === undefined ? normBuffer : buffer(gate); // ungated: bound, never read
  const bindGroups = updates.map(({ p, g, m, v }) => b.device.createBindGroup({
    layout,
    entries: [
      ...[p, m, v, g].map((x, binding) => ({ binding, resource: { buffer: buffer(x) } })),
      { binding: 4, resource: { buffer: normBuffer } },
      { binding: 5, resource: { buffer: uniforms, size: UNIFORM_BYTES } },
      { binding: 6, resource: { buffer: gateBuffer } },
    ],
  }));
  b.ensureCommandEncoderReady();
  if (b.computePassEncoder === null) b.computePassEncoder = b.commandEncoder.beginComputePass();
  const pass = b.computePassEncoder;
  pass.setPipeline(pipeline);
  updates.forEach(({ p, m, v }, k) => {
    const groups = Math.ceil(p.size / WORKGROUP);
    pass.setBindGroup(0, bindGroups[k]!, [k * slot]);
    const x = Math.min(groups, maxGroups);
    pass.dispatchWorkgroups(x, Math.ceil(groups / x));
    // The host copies a read left behind are stale now.
    for (const t of [p, m, v]) b.tensorMap.get(t.dataId)!.values = null;
  });
  recorded += updates.length;
  b.dispatchCountInPass += updates.length;
  if (b.dispatchCountInPass >= Number(tf.env().get('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE'))) {
    b.endComputePassEncoder();
    b.submitQueue();
  }
}
