/**
 * The two shapes of WebGPU program this project's kernels are made of (kernels/dropout, kernels/layerNorm, kernels/adamw),
 * written once. Both run through WebGPUBackend.runWebGPUProgram, which compiles `getUserCode()` after a header
 * it generates: the uniforms struct (with `size` when `size` is set), `result`, one read-only array per input
 * named as in `variableNames`, the builtins as module-scope `localId`/`localIndex`/`workgroupId`/`numWorkgroups`,
 * and a `fn main(index)` called with the flat global index.
 */
import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { tf } from '../../model/tf.js';
import { bindGroupCacheOf } from './bindGroupCache.js';

export interface ElementwiseSpec {
  shaderKey: string;
  /** Output shape; one invocation per output element. */
  shape: number[];
  variableNames: string[];
  /** Invocations per workgroup. */
  workgroup: number;
  /** Uniform fields after the generated ones, e.g. `'k1 : u32, rate : f32,'`. */
  uniforms?: string;
  /** WGSL placed before `main` (helper functions). */
  preamble?: string;
  /** The body run for each `index < uniforms.size`. */
  body: string;
}

/**
 * One invocation per output element, flat: `fn main(index) { if (index < uniforms.size) { body } }`. The dispatch
 * is the element count over the workgroup; the backend reshapes it past the per-dimension limit and `index` stays
 * the flat index.
 */
export function elementwiseProgram(s: ElementwiseSpec): WebGPUProgram {
  const program: WebGPUProgram = {
    variableNames: s.variableNames,
    outputShape: s.shape,
    shaderKey: s.shaderKey,
    dispatchLayout: { x: s.shape.map((_, i) => i) },
    dispatch: [Math.ceil(tf.util.sizeFromShape(s.shape) / s.workgroup), 1, 1],
    workgroupSize: [s.workgroup, 1, 1],
    size: true,
    getUserCode: () => `${s.preamble ?? ''}
  fn main(index : i32) {
    if (index < uniforms.size) {
      ${s.body}
    }
  }`,
  };
  if (s.uniforms !== undefined) program.uniforms = s.uniforms;
  return program;
}

/**
 * WGSL of `fn name(v : f32) -> f32`: the tree sum of `v` over a 1-D workgroup of `size` invocations (a power of
 * two), returned to every invocation. It has barriers, so every invocation must call it (uniform control flow); it
 * ends with one, so it may be called again.
 */
export function workgroupSumWgsl(name: string, size: number): string {
  if (!Number.isInteger(Math.log2(size))) throw new Error(`workgroupSumWgsl: size ${size} is not a power of two`);
  return `
  var<workgroup> ${name}Partials : array<f32, ${size}>;
  fn ${name}(v : f32) -> f32 {
    ${name}Partials[localIndex] = v;
    workgroupBarrier();
    for (var half = ${size / 2}u; half > 0u; half = half / 2u) {
      if (localIndex < half) { ${name}Partials[localIndex] = ${name}Partials[localIndex] + ${name}Partials[localIndex + half]; }
      workgroupBarrier();
    }
    let total = ${name}Partials[0];
    workgroupBarrier();
    return total;
  }`;
}

// ---------------------------------------------------------------------------------------------------------------
// Raw dispatches: programs with several outputs
//
// A TF.js WebGPU program has one output. Where a backward pass yields two tensors from the same reads (dq and dk
// of attention, dgamma and dbeta of LayerNorm), `recordRaw` records one dispatch of a whole WGSL module of our
// own into the backend's command encoder, writing any number of outputs the backend allocated. This reaches into
// tfjs-backend-webgpu 4.x internals, typed by `BackendInternals`; kernels/adamw/webgpu.ts records the same way.
// ---------------------------------------------------------------------------------------------------------------

/** What raw recording uses of a WebGPUBackend beyond its public type (tfjs-backend-webgpu 4.x). */
export interface BackendInternals {
  device: GPUDevice;
  queue: GPUQueue;
  tensorMap: { get(dataId: object): { resource: unknown; values: unknown; refCount: number } | undefined };
  bufferManager: { acquireBuffer(size: number, usage: number): GPUBuffer };
  makeTensorInfo(shape: number[], dtype: 'float32'): tf.TensorInfo;
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

export function internalsOf(backend: unknown): BackendInternals {
  return backend as BackendInternals;
}

/**
 * The GPU buffer of `x` (uploaded first if its values are still on the host; an upload ends the backend's compute
 * pass, so take every buffer before recording), marked as used by the queue: disposing `x` right after only defers
 * its release until the submit, as the backend does for its own programs.
 */
export function bufferOf(b: BackendInternals, x: tf.TensorInfo): GPUBuffer {
  b.uploadToGPU(x.dataId);
  b.commandQueueOwnedIds.add(x.dataId);
  return b.tensorMap.get(x.dataId)!.resource as GPUBuffer;
}

/** A pooled uniform buffer holding `data`, released at the next submit like the backend's own uniforms. */
export function uniformBufferOf(b: BackendInternals, data: ArrayBuffer): GPUBuffer {
  const buffer = b.bufferManager.acquireBuffer(data.byteLength, GPUBufferUsage.COPY_DST | GPUBufferUsage.UNIFORM);
  b.queue.writeBuffer(buffer, 0, data);
  b.uniformPendingDisposal.push(buffer);
  return buffer;
}

let rawDispatches = 0;
const rawObservers = new Set<(key: string) => void>();

/** Dispatches recorded outside the backend's runWebGPUProgram since load (raw programs and the in-place AdamW). */
export function rawDispatchCount(): number {
  return rawDispatches;
}

/**
 * Calls `f` with the key of every raw dispatch until the returned function is called (tests count them; the
 * in-place AdamW's keys end in `/k`, its k parameters updated by that dispatch).
 */
export function observeRawDispatches(f: (key: string) => void): () => void {
  rawObservers.add(f);
  return () => rawObservers.delete(f);
}

/**
 * Records `dispatches` (set, bind group, workgroups each) into the backend's compute pass, then submits where the
 * backend would (WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE dispatches a pass). Observers see each dispatch's own key, else `key`.
 */
export function recordDispatches(b: BackendInternals, key: string,
  dispatches: { pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; offsets?: number[]; grid: [number, number, number]; key?: string }[]): void {
  b.ensureCommandEncoderReady();
  if (b.computePassEncoder === null) b.computePassEncoder = b.commandEncoder.beginComputePass();
  const pass = b.computePassEncoder;
  for (const d of dispatches) {
    pass.setPipeline(d.pipeline);
    pass.setBindGroup(0, d.bindGroup, d.offsets ?? []);
    pass.dispatchWorkgroups(...d.grid);
    rawDispatches += 1;
    for (const f of rawObservers) f(d.key ?? key);
  }
  b.dispatchCountInPass += dispatches.length;
  if (b.dispatchCountInPass >= Number(tf.env().get('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE'))) {
    b.endComputePassEncoder();
    b.submitQueue();
  }
}

/** A raw program: a whole WGSL module whose entry point is `main`. */
export interface RawProgram {
  /** Pipeline cache key: one per distinct `code`. */
  key: string;
  /** Bindings: the inputs at 0.., read-only storage; the outputs after them, read-write; the uniforms (if any) last. */
  code: () => string;
}

/** Per device, compiled raw pipelines by key. */
const rawPipelines = new WeakMap<GPUDevice, Map<string, GPUComputePipeline>>();

function rawPipeline(device: GPUDevice, p: RawProgram): GPUComputePipeline {
  let byKey = rawPipelines.get(device);
  if (byKey === undefined) rawPipelines.set(device, (byKey = new Map()));
  let pipeline = byKey.get(p.key);
  if (pipeline === undefined) {
    pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: p.code() }), entryPoint: 'main' } });
    byKey.set(p.key, pipeline);
  }
  return pipeline;
}

/**
 * Scalar uniforms (each one i32, u32 or f32: the `Uniforms` list a TF.js program takes, every entry of length 1)
 * packed as a WGSL struct of those fields in order, padded to 16 bytes.
 */
export function packUniforms(fields: { type: 'int32' | 'uint32' | 'float32'; data: number[] }[]): ArrayBuffer {
  const data = new ArrayBuffer(Math.max(16, Math.ceil((4 * fields.length) / 16) * 16));
  const view = new DataView(data);
  fields.forEach((f, i) => {
    if (f.data.length !== 1) throw new Error(`packUniforms: field ${i} has ${f.data.length} values; scalars only`);
    if (f.type === 'float32') view.setFloat32(4 * i, f.data[0]!, true);
    else if (f.type === 'uint32') view.setUint32(4 * i, f.data[0]!, true);
    else view.setInt32(4 * i, f.data[0]!, true);
  });
  return data;
}

/**
 * One dispatch of `program` over `grid` workgroups: reads `inputs`, writes new float32 tensors of `outputShapes`
 * (returned in order; their contents are what the program writes, so it must write every element).
 */
export function recordRaw(backend: unknown, program: RawProgram, inputs: tf.TensorInfo[], outputShapes: number[][],
  grid: [number, number, number], uniforms?: ArrayBuffer): tf.TensorInfo[] {
  const b = internalsOf(backend);
  const limit = b.device.limits.maxComputeWorkgroupsPerDimension;
  if (grid.some((n) => n > limit)) throw new Error(`${program.key}: grid [${grid}] exceeds this device's ${limit} workgroups per dimension`);
  const outputs = outputShapes.map((shape) => b.makeTensorInfo(shape, 'float32'));
  const buffers = [...inputs, ...outputs].map((x) => bufferOf(b, x));
  const pipeline = rawPipeline(b.device, program);
  recordDispatches(b, program.key, [{ pipeline, bindGroup: bindGroupFor(b, pipeline, () => pipeline.getBindGroupLayout(0), buffers, uniforms), grid }]);
  return outputs;
}

/**
 * A bind group of `buffers` at bindings 0.. and, when given, a uniform buffer holding `uniforms` after them: from the
 * backend's bind-group cache when it has one (bindGroupCache.ts), else made now with a pooled uniform buffer
 * released at the next submit. `owner` (the pipeline, or the layout) names the layout in the cache's key.
 */
export function bindGroupFor(b: BackendInternals, owner: object, layoutOf: () => GPUBindGroupLayout, buffers: readonly GPUBuffer[],
  uniforms?: ArrayBuffer): GPUBindGroup {
  const cache = bindGroupCacheOf(b);
  if (cache !== undefined) return cache.bindGroup(owner, layoutOf, buffers, uniforms);
  const entries: GPUBindGroupEntry[] = buffers.map((buffer, binding) => ({ binding, resource: { buffer } }));
  if (uniforms !== undefined) entries.push({ binding: buffers.length, resource: { buffer: uniformBufferOf(b, uniforms) } });
  return b.device.createBindGroup({ layout: layoutOf(), entries });
}

/**
 * A grid of `n` workgroups within the device's per-dimension limit: [x, y, 1] with x * y >= n. A raw program reads
 * its linear index as wid.y * nwg.x + wid.x and does nothing past n.
 */
export function linearGrid(backend: unknown, n: number): [number, number, number] {
  const x = Math.min(n, internalsOf(backend).device.limits.maxComputeWorkgroupsPerDimension);
  return [x, Math.ceil(n / x), 1];
}

/** WGSL bindings of a raw program: `inputs` read-only, then `outputs` read-write, then `uniforms : Uniforms` (fields as given). */
export function rawBindings(inputs: string[], outputs: string[], uniformFields?: string): string {
  const lines = [
    ...inputs.map((n, i) => `@group(0) @binding(${i}) var<storage, read> ${n} : array<f32>;`),
    ...outputs.map((n, i) => `@group(0) @binding(${inputs.length + i}) var<storage, read_write> ${n} : array<f32>;`),
  ];
  if (uniformFields !== undefined) {
    lines.unshift(`struct Uniforms { ${uniformFields} };`);
    lines.push(`@group(0) @binding(${inputs.length + outputs.length}) var<uniform> uniforms : Uniforms;`);
  }
  return lines.join('\n');
}
