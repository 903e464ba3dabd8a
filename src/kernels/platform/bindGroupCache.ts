/**
 * Bind groups and uniform buffers kept across steps on the webgpu backend.
 *
 * Why: tfjs-backend-webgpu 4.x records every program (recordAndSubmit) by packing its uniforms into a fresh pooled
 * uniform buffer, writing it with queue.writeBuffer and creating a new bind group, then releasing the uniform buffer
 * at the next submit. Those calls are most of the host's time per dispatch, while a training step records the same
 * programs over the same pooled buffers with the same uniforms step after step (the buffer pool hands the same
 * buffers back when the allocations repeat). Here a dispatch's bind group is looked up by (pipeline, buffers in
 * binding order) and kept with a uniform buffer of its own:
 * - same uniform bytes as when it was made: the dispatch is setPipeline, setBindGroup, dispatchWorkgroups;
 * - other bytes (a seed, a learning rate): they are written into its uniform buffer, unless that bind group is
 *   already recorded in the command buffer not yet submitted (the write would reach that dispatch too), in which
 *   case another entry is made for the same buffers.
 * The programs, their buffers and the uniform bytes are what they would be without the cache, so results are bit
 * for bit the same. The cache holds at most MAX_ENTRIES bind groups; past that it starts over (its uniform buffers
 * are destroyed after the next submit, when no recorded dispatch can still use them).
 *
 * `MICSE_WEBGPU_BIND_GROUP_CACHE=0` turns it off (the backend's own recordAndSubmit for every program).
 * Timed programs (tf.profile, tf.time) and the backend's pixel programs keep the backend's own path.
 */
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { tf } from '../../model/tf.js';
import { internalsOf, type BackendInternals } from './webgpuPrograms.js';

export const BIND_GROUP_CACHE_ENV = 'MICSE_WEBGPU_BIND_GROUP_CACHE';
/** Bind groups kept at most (each with a uniform buffer of a few hundred bytes); a step of BERT-base records ~600. */
const MAX_ENTRIES = 8192;

interface Entry {
  bindGroup: GPUBindGroup;
  /** The entry's own uniform buffer and what it holds; null for a program without uniforms. */
  uniform: GPUBuffer | null;
  bytes: Uint32Array | null;
  /** The submit count when it was last recorded: equal to the cache's, it is in the command buffer being recorded. */
  epoch: number;
}

/** A kept bind group's uniform buffer and the bytes the cache knows it holds (null: a program without uniforms). */
export interface CachedUniform {
  readonly uniform: GPUBuffer | null;
  readonly bytes: Uint32Array | null;
}

/** What the cache has done since it was made (tests and the bench read it). */
export interface BindGroupCacheStats {
  /** Bind groups reused with their uniforms as they were. */
  hits: number;
  /** Bind groups reused after writing new uniform bytes. */
  rewrites: number;
  /** Bind groups made. */
  misses: number;
  /** Times the cache started over at MAX_ENTRIES. */
  clears: number;
}

/** One backend's cache. */
export class BindGroupCache {
  readonly stats: BindGroupCacheStats = { hits: 0, rewrites: 0, misses: 0, clears: 0 };
  /** Off: the backend records as it would without the cache (useBindGroupCache). */
  enabled = true;
  private readonly ids = new WeakMap<object, number>();
  private nextId = 1;
  private entries = new Map<string, Entry[]>();
  /** The entries by their uniform buffer. */
  private byUniform = new Map<GPUBuffer, Entry>();
  /** The entries by their bind group. */
  private byGroup = new Map<GPUBindGroup, Entry>();
  private count = 0;
  /** Queue submits seen. */
  private epoch = 0;
  /** Uniform buffers of a cleared cache, destroyed at the next submit. */
  private retired: GPUBuffer[] = [];

  constructor(private readonly device: GPUDevice, private readonly queue: GPUQueue) {}

  /** A number per object, in the order the cache first saw them. */
  rank(x: object): number {
    return this.id(x);
  }

  private id(x: object): number {
    let n = this.ids.get(x);
    if (n === undefined) this.ids.set(x, (n = this.nextId++));
    return n;
  }

  /** Call after every queue submit of the backend's command encoder. */
  submitted(): void {
    this.epoch += 1;
    if (this.retired.length > 0) {
      for (const b of this.retired) b.destroy();
      this.retired = [];
    }
  }

  /**
   * A bind group of the layout `layoutOf()` gives (`owner`, the pipeline or the layout, names it in the key; the
   * layout is asked for only when a bind group is made) binding `buffers` at 0.. and, when `uniforms` is given, a
   * uniform buffer holding those bytes after them.
   */
  bindGroup(owner: object, layoutOf: () => GPUBindGroupLayout, buffers: readonly GPUBuffer[], uniforms?: ArrayBuffer): GPUBindGroup {
    let key = String(this.id(owner));
    for (const b of buffers) key += ',' + this.id(b);
    const bytes = uniforms === undefined ? null : new Uint32Array(uniforms);
    let list = this.entries.get(key);
    if (list !== undefined) {
      let free: Entry | undefined;
      for (const e of list) {
        if (bytes === null || sameBytes(e.bytes!, bytes)) {
          e.epoch = this.epoch;
          this.stats.hits += 1;
          return e.bindGroup;
        }
        if (e.epoch !== this.epoch && free === undefined) free = e;
      }
      if (free !== undefined) {
        this.queue.writeBuffer(free.uniform!, 0, uniforms!);
        free.bytes = bytes;
        free.epoch = this.epoch;
        this.stats.rewrites += 1;
        return free.bindGroup;
      }
    }
    if (this.count >= MAX_ENTRIES) {
      for (const l of this.entries.values()) for (const e of l) if (e.uniform !== null) this.retired.push(e.uniform);
      this.entries = new Map();
      this.byUniform = new Map();
      this.byGroup = new Map();
      this.count = 0;
      this.stats.clears += 1;
      list = undefined;
    }
    let uniform: GPUBuffer | null = null;
    const entries: GPUBindGroupEntry[] = buffers.map((buffer, binding) => ({ binding, resource: { buffer } }));
    if (uniforms !== undefined) {
      uniform = this.device.createBuffer({ size: uniforms.byteLength, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.UNIFORM });
      this.queue.writeBuffer(uniform, 0, uniforms);
      entries.push({ binding: buffers.length, resource: { buffer: uniform } });
    }
    const entry: Entry = { bindGroup: this.device.createBindGroup({ layout: layoutOf(), entries }), uniform, bytes, epoch: this.epoch };
    if (list === undefined) this.entries.set(key, (list = []));
    list.push(entry);
    if (uniform !== null) this.byUniform.set(uniform, entry);
    this.byGroup.set(entry.bindGroup, entry);
    this.count += 1;
    this.stats.misses += 1;
    return entry.bindGroup;
  }

  /**
   * Tells the cache that `bytes` were written into `buffer` outside it (a replayed step, kernels/replay/webgpu.ts), so that a
   * later lookup compares its uniforms with what the buffer holds.
   */
  uniformWritten(buffer: GPUBuffer, bytes: Uint8Array): void {
    const e = this.byUniform.get(buffer);
    if (e !== undefined && bytes.byteLength === e.bytes?.byteLength) e.bytes = new Uint32Array(bytes.slice().buffer);
  }

  /** The uniform buffer of `group` and what it holds, or undefined when `group` is not one of the cache's kept bind groups. */
  uniformOf(group: GPUBindGroup): CachedUniform | undefined {
    return this.byGroup.get(group);
  }

  /** The uniform entry of `buffer` when it is one of the cache's uniform buffers, else undefined. */
  uniformAt(buffer: GPUBuffer): CachedUniform | undefined {
    return this.byUniform.get(buffer);
  }
}

function sameBytes(a: Uint32Array, b: Uint32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const caches = new WeakMap<object, BindGroupCache>();

/** The cache of `backend` (a WebGPUBackend) when useBindGroupCache turned it on, else undefined. */
export function bindGroupCacheOf(backend: unknown): BindGroupCache | undefined {
  const c = caches.get(backend as object);
  return c?.enabled === true ? c : undefined;
}

/** A uniform field of a TF.js program: the backend's `ProgramUniform` entries (1 to 6 values each). */
type UniformField = { type: 'int32' | 'uint32' | 'float32'; data: number[] };

/**
 * A program's uniforms laid out as the backend's makeUniforms lays them out (tfjs-backend-webgpu 4.22.0: WGSL
 * alignment of scalars and vectors, fields after a 5- or 6-vector aligned to 16 bytes, the total rounded to the
 * largest alignment). test/webgpu.test.ts compares the bytes with makeUniforms' own.
 */
export function packProgramUniforms(fields: UniformField[]): ArrayBuffer {
  let offset = 0;
  let previousLength = 0;
  let maxAlignment = 1;
  const offsets: number[] = [];
  for (const f of fields) {
    const n = f.data.length === 0 ? 1 : f.data.length;
    if (n > 6) throw new Error(`packProgramUniforms: a field of ${n} values; at most 6`);
    let alignment = n === 1 ? 4 : n === 2 ? 8 : 16;
    if (previousLength === 5 || previousLength === 6) alignment = 16;
    maxAlignment = Math.max(maxAlignment, alignment);
    offset = Math.ceil(offset / alignment) * alignment;
    previousLength = n;
    offsets.push(offset);
    offset += 4 * n;
  }
  const data = new ArrayBuffer(Math.ceil(offset / maxAlignment) * maxAlignment);
  fields.forEach((f, i) => {
    const values = f.data.length === 0 ? [1] : f.data;
    const at = offsets[i]!;
    if (f.type === 'int32') new Int32Array(data, at, values.length).set(values);
    else if (f.type === 'uint32') new Uint32Array(data, at, values.length).set(values);
    else new Float32Array(data, at, values.length).set(values);
  });
  return data;
}

/** The uniforms recordAndSubmit gives a program (not a pixel program): NaN, Infinity, every shape and its strides, the size, its own. */
export function programUniforms(program: WebGPUProgram, inputs: tf.TensorInfo[], output: tf.TensorInfo, own?: UniformField[]): UniformField[] {
  const fields: UniformField[] = [{ type: 'float32', data: [NaN] }, { type: 'float32', data: [Infinity] }];
  for (const t of [...inputs, output]) {
    fields.push({ type: 'int32', data: t.shape }, { type: 'int32', data: tf.util.computeStrides(t.shape) });
  }
  if (program.size) {
    const size = tf.util.sizeFromShape(program.outputShape);
    fields.push({ type: 'int32', data: [program.outputComponent ? size / program.outputComponent : size] });
  }
  return own === undefined ? fields : [...fields, ...own];
}

/** What the cached recordAndSubmit reads of a backend beyond BackendInternals (tfjs-backend-webgpu 4.22.0). */
interface RecordingBackend extends BackendInternals {
  recordAndSubmit(program: WebGPUProgram, output: tf.TensorInfo, inputs: tf.TensorInfo[], uniforms?: UniformField[]): void;
  /** Set while tf.time or tf.profile runs (then each program is timed alone: the backend's own path). */
  activeTimers?: unknown;
}

/** The pool's free lists, per size and usage (tfjs-backend-webgpu 4.22.0 BufferManager: acquireBuffer pops the last). */
interface PoolInternals {
  freeBuffers: Map<string, GPUBuffer[]>;
  releaseBuffer(buffer: GPUBuffer, reuse?: boolean): void;
}

/**
 * Makes a buffer pool hand out, while `cache` is on, of the free buffers of a size the one it saw first: its free lists are
 * kept sorted, first-seen last (acquireBuffer pops the last). The backend's own pool returns the one freed last, and
 * since a step frees its buffers in another order than it took them, the same allocation got another buffer each
 * step, and so another bind group. Sorted, the free buffers at the start of a step are the same set every step, and
 * the same allocations get the same buffers.
 */
function orderPool(pool: PoolInternals, cache: BindGroupCache): void {
  const release = pool.releaseBuffer.bind(pool);
  const rank = (b: GPUBuffer): number => cache.rank(b);
  pool.releaseBuffer = (buffer: GPUBuffer, reuse = true) => {
    release(buffer, reuse);
    if (!reuse || !cache.enabled) return;
    const list = pool.freeBuffers.get(`${buffer.size}_${buffer.usage}`);
    if (list === undefined || list.at(-1) !== buffer) return;
    const r = rank(buffer);
    let i = list.length - 1;
    while (i > 0 && rank(list[i - 1]!) < r) {
      list[i] = list[i - 1]!;
      i -= 1;
    }
    list[i] = buffer;
  };
}

/**
 * Turns the cache on or off for the programs `backend` records from now on. The first call that turns it on makes
 * the cache, wraps the backend's recordAndSubmit and submitQueue and orders its buffer pool (orderPool); off, the
 * backend's own recording runs (the cache is kept for a later on).
 */
export function useBindGroupCache(backend: WebGPUBackend, on: boolean): void {
  let cache = caches.get(backend);
  if (cache !== undefined || !on) {
    if (cache !== undefined) cache.enabled = on;
    return;
  }
  const b = internalsOf(backend) as RecordingBackend;
  const c = (cache = new BindGroupCache(b.device, b.queue));
  caches.set(backend, c);
  orderPool(b.bufferManager as unknown as PoolInternals, c);
  const own = b.recordAndSubmit.bind(b);
  const submit = b.submitQueue.bind(b);
  b.submitQueue = () => {
    submit();
    c.submitted();
  };
  b.recordAndSubmit = (program, output, inputs, programUniform) => {
    const pipeline = program.pipeline;
    if (!c.enabled || b.activeTimers != null || program.pixelsOpType != null || pipeline === undefined || pipeline instanceof Promise) {
      own(program, output, inputs, programUniform);
      return;
    }
    const buffers: GPUBuffer[] = [];
    for (const t of [output, ...inputs]) {
      const resource = b.tensorMap.get(t.dataId)?.resource;
      if (!(resource instanceof GPUBuffer)) {
        own(program, output, inputs, programUniform);
        return;
      }
      buffers.push(resource);
    }
    const uniforms = packProgramUniforms(programUniforms(program, inputs, output, programUniform));
    const bindGroup = c.bindGroup(pipeline, () => pipeline.getBindGroupLayout(0), buffers, uniforms);
    for (const t of inputs) b.commandQueueOwnedIds.add(t.dataId);
    b.commandQueueOwnedIds.add(output.dataId);
    b.ensureCommandEncoderReady();
    if (b.computePassEncoder === null) b.computePassEncoder = b.commandEncoder.beginComputePass({});
    const pass = b.computePassEncoder;
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    const [x, y, z] = program.dispatch;
    pass.dispatchWorkgroups(x, y, z);
    b.dispatchCountInPass += 1;
    if (Number(tf.env().get('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE')) <= b.dispatchCountInPass) {
      b.endComputePassEncoder();
      b.submitQueue();
    }
  };
}
