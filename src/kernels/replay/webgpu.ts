/**
 * A webgpu training step recorded once at the GPU command level and replayed while its batch shape repeats.
 *
 * Why: a tiny or small step is bound by the host: ~180 dispatches, each through TF.js's autograd tape, the kernel
 * functions and the backend's recording. With the bind groups kept across steps (bindGroupCache.ts) and the buffer
 * pool ordered, a step of one shape issues the same commands over the same buffers every step: setPipeline,
 * setBindGroup, dispatchWorkgroups, copies, queue writes of uniforms, the upload of the batch (and with a loss
 * scaler of the scale and its reciprocal: 4-byte staging buffers written at their creation), the one read. A replay
 * issues those commands again, without the JavaScript that built them (tf.variableGrads over the loss, AdamW.apply).
 *
 * How a step becomes replayable (StepReplay.record, then template):
 * - While a step runs normally, every call on the WebGPU objects (device, queue, command and compute-pass encoders,
 *   buffers) is recorded, with the bytes of each queue write and of each buffer written through a mapping at
 *   creation (the backend's upload staging), and the step's per-step values are logged (index.ts beside).
 * - A recorded step and the last one recorded of the same key (batch shape, clipping norm; steps of other keys may
 *   have run between them) give a template of that key when: their commands are the same calls on the same objects
 *   (a buffer the step creates and destroys counts by its place); each step left the buffer pool's free lists and
 *   the live tensor count as it found them; the step ends with its one read (a mapAsync); every bind group it binds
 *   is one of the bind-group cache's, and none of their uniform buffers is written after a dispatch bound it; and
 *   every 32-bit word of written data that differs between the two is explained: a whole upload equal to the
 *   batch's input ids or attention mask in both steps, or a word equal in both steps to a logged value of the same
 *   key. A write of a cache entry's uniforms that one step made before binding it and the other did not need (it
 *   found those bytes there: the first step of a shape after another shape's rewrote the entry) is left out of
 *   both. The template keeps the second step's commands, its pool at the start, and the uniform bytes of the bind
 *   groups it binds without writing them first.
 * - StepReplay keeps a template and a last recording per key, for the MAX_TEMPLATES keys used last, so that batch
 *   shapes that alternate are each replayed.
 * - A replay (StepReplay.replay) of key K checks that nothing but recorded or replayed steps took or gave back a
 *   pool buffer since the last step ended (anything else run on the backend does: an evaluation, a checkpoint's
 *   read, which also leaves host copies of the variables that only a normal step's AdamW drops); that tf.profile is
 *   off; that the bind-group cache is on and has not started over since the template was made (a restart destroys
 *   the uniform buffers the template binds); that the pool's used count and the live tensor count are the
 *   template's and each of the template's free lists is the top of the pool's list of its key (poolHolds: so a
 *   normal step would get the same buffers; steps of other keys and evaluations add buffers to the pool and move no
 *   live tensor); that every logged value that was the same in both
 *   recorded steps still is at the new roots; it computes the new words from the formulas and the new batch, writes
 *   back the uniform bytes of the bind groups the template binds without writing where they are not the template's
 *   (a step of another shape rewrote the cache entry over the same buffers; the cache's own rewrite would write the
 *   same bytes), then issues the template's commands with them and maps its read buffer.
 * A check of the backend's state failing ("not now"): the step runs normally and is recorded, and the template is
 * kept; a check of the template failing (a steady value changed, a cache restart): the template is dropped too.
 * Either way two recorded steps of the key make a template again. Other keys' templates are not touched.
 *
 * After a replay, TF.js's state is what the normal step leaves: the variables and AdamW's moments hold the updated
 * values in their own buffers (the in-place AdamW), no tensor was made, the pool is as it was; the bind-group
 * cache is told the uniform bytes written (bindGroupCache uniformWritten). The caller advances AdamW's step count.
 */
import { tf } from '../../model/tf.js';
import { bindGroupCacheOf, type BindGroupCache } from '../platform/bindGroupCache.js';
import { touchPoolKeys } from '../platform/bufferPool.js';
import { beginStepValues, endStepValues, wordOf, type StepRoots, type StepValue } from './index.js';
import { internalsOf, type BackendInternals } from '../platform/webgpuPrograms.js';

/** A buffer that outlives the step, or the index of one the step created (in creation order). */
type Ref = GPUBuffer | number;

type Op =
  | { k: 'encoder'; i: number }
  | { k: 'pass'; e: number; i: number }
  | { k: 'pipeline'; p: number; pipeline: GPUComputePipeline }
  | { k: 'bind'; p: number; index: number; group: GPUBindGroup; offsets: number[] }
  | { k: 'dispatch'; p: number; x: number; y: number; z: number }
  | { k: 'end'; p: number }
  | { k: 'copy'; e: number; src: Ref; srcOffset: number; dst: Ref; dstOffset: number; size: number }
  | { k: 'clear'; e: number; buffer: Ref; offset: number; size: number | undefined }
  | { k: 'finish'; e: number; i: number }
  | { k: 'submit'; cmds: number[] }
  | { k: 'write'; buffer: Ref; offset: number; data: Uint8Array }
  | { k: 'create'; i: number; size: number; usage: number; mapped: boolean; data: Uint8Array | null }
  | { k: 'destroy'; buffer: Ref }
  | { k: 'map'; buffer: Ref };

/** The pool's state between steps: its free lists (in order) and the buffers in use. */
interface PoolState {
  free: Map<string, GPUBuffer[]>;
  used: number;
}

interface Recording {
  key: string;
  roots: StepRoots;
  inputs: Int32Array[];
  ops: Op[];
  values: Map<string, StepValue>;
  /** Why the step cannot be replayed whatever the other step, or null. */
  invalid: string | null;
  poolStart: PoolState;
  poolEnd: PoolState | null;
  /**
   * The cache's uniform buffers the step bound without writing them first, with the bytes they held (uniformReads),
   * or why there are none.
   */
  held: Map<GPUBuffer, Uint32Array> | string;
  tensorsStart: number;
  tensorsEnd: number;
}

/** How a data op's bytes are made at a replay. */
type Patch =
  | { inputs: number[] }
  | { words: { at: number; kind: 'u32' | 'f32'; keys: string[] }[] };

interface Template {
  key: string;
  ops: Op[];
  patches: Map<number, Patch>;
  /** The second recorded step's logged values, by key (their formulas give a replay's words). */
  values: Map<string, StepValue>;
  /** Logged values (of a word kind) that were the same in both recorded steps: a replay needs them unchanged. */
  steady: StepValue[];
  tensors: number;
  /** The pool at the start (and end) of the second recorded step: a replay needs its free lists on top (poolHolds). */
  pool: PoolState;
  /** The bind-group cache's restarts when the template was made (a restart destroys the uniform buffers it binds). */
  clears: number;
  /**
   * The bind groups the commands bind without having written their uniforms first, with their uniform buffers and
   * the bytes the cache held for them: a replay writes those bytes back where a step of another shape rewrote them.
   */
  reads: { group: GPUBindGroup; uniform: GPUBuffer; bytes: Uint32Array }[];
}

/** Templates kept at most, and last recordings (one per key each), the most recently used: 8 batch shapes. */
export const MAX_TEMPLATES = 8;

/** What a StepReplay has done (tests and the bench read it). */
export interface StepReplayStats {
  /** Steps recorded (run normally). */
  recorded: number;
  /** Steps replayed. */
  replayed: number;
  /** Steps replayed, by key (batch shape, clipping norm). */
  replayedByKey: Record<string, number>;
  /** Uniform buffers a replay wrote back before its commands (a step of another shape had rewritten them). */
  writtenBack: number;
  /** Why the last template was not made or the last replay refused, or null. */
  lastRefusal: string | null;
  /** Dispatches a replayed step issues (the template's), or null before the first template. */
  dispatches: number | null;
}

/** Per backend: pool takes and returns so far (a replay needs none since the step it replays). */
const poolEvents = new WeakMap<object, { n: number }>();

/** Counts the pool's acquireBuffer and releaseBuffer calls of `b` (once per backend). */
function countPoolEvents(b: BackendInternals): { n: number } {
  let c = poolEvents.get(b);
  if (c !== undefined) return c;
  poolEvents.set(b, (c = { n: 0 }));
  const pool = b.bufferManager as unknown as PoolInternals;
  const acquire = pool.acquireBuffer.bind(pool);
  const release = pool.releaseBuffer.bind(pool);
  const counter = c;
  pool.acquireBuffer = (...a: Parameters<PoolInternals['acquireBuffer']>) => {
    counter.n += 1;
    return acquire(...a);
  };
  pool.releaseBuffer = (...a: Parameters<PoolInternals['releaseBuffer']>) => {
    counter.n += 1;
    release(...a);
  };
  return c;
}

/** The buffer pool of tfjs-backend-webgpu 4.22.0 (BufferManager). */
interface PoolInternals {
  freeBuffers: Map<string, GPUBuffer[]>;
  numUsedBuffers: number;
  acquireBuffer(size: number, usage: number, mappedAtCreation?: boolean, reuse?: boolean): GPUBuffer;
  releaseBuffer(buffer: GPUBuffer, reuse?: boolean): void;
}

function poolState(b: BackendInternals): PoolState {
  const pool = b.bufferManager as unknown as PoolInternals;
  const free = new Map<string, GPUBuffer[]>();
  for (const [k, list] of pool.freeBuffers) if (list.length > 0) free.set(k, [...list]);
  return { free, used: pool.numUsedBuffers };
}

/**
 * Whether a step that left the pool `t` as it found it gets the same buffers from `now`: the same used count, and
 * each of `t`'s free lists the top of `now`'s list of its key (the pool takes and gives back at the top of a list,
 * LIFO; such a step takes no deeper than `t`'s list holds, or it would have made a buffer and grown the pool, and it
 * takes from no other list). Buffers below them, and other keys' lists, are ones the step never reaches.
 */
function poolHolds(now: PoolState, t: PoolState): boolean {
  if (now.used !== t.used) return false;
  for (const [k, list] of t.free) {
    const other = now.free.get(k);
    const below = (other?.length ?? 0) - list.length;
    if (other === undefined || below < 0 || list.some((x, i) => x !== other[below + i])) return false;
  }
  return true;
}

function samePool(a: PoolState, b: PoolState): boolean {
  if (a.used !== b.used || a.free.size !== b.free.size) return false;
  for (const [k, list] of a.free) {
    const other = b.free.get(k);
    if (other === undefined || other.length !== list.length || list.some((x, i) => x !== other[i])) return false;
  }
  return true;
}

export class StepReplay {
  readonly stats: StepReplayStats = { recorded: 0, replayed: 0, replayedByKey: {}, writtenBack: 0, lastRefusal: null, dispatches: null };
  private readonly b: BackendInternals;
  private readonly events: { n: number };
  /** By key, least recently used first (at most MAX_TEMPLATES each). */
  private readonly recordings = new Map<string, Recording>();
  private readonly templates = new Map<string, Template>();
  /** Pool events when the last step (recorded or replayed, of any key) ended. */
  private eventsAtEnd = -1;

  constructor(backend: unknown) {
    this.b = internalsOf(backend);
    this.events = countPoolEvents(this.b);
  }

  /**
   * Issues the step of `key` again with `roots` and the batch `inputs` (input ids, attention mask: [2B * T] each)
   * and returns its read (the read buffer's floats), or returns null having issued nothing when it cannot (no
   * template of that key, or a check failed: stats.lastRefusal says which); the step must then run normally.
   * A refusal that only means "not now" (the backend's state differs from the template's) keeps the template; one
   * that means the template cannot stand for this step drops it.
   */
  replay(key: string, roots: StepRoots, inputs: Int32Array[]): Promise<Float32Array> | null {
    const t = this.templates.get(key);
    if (t === undefined) return null;
    const wait = (why: string): null => {
      this.stats.lastRefusal = why;
      return null;
    };
    const drop = (why: string): null => {
      this.templates.delete(key);
      return wait(why);
    };
    if ((tf.engine().state as { profiling?: boolean }).profiling === true) return wait('tf.profile is on (it times the kernels a step runs)');
    if (this.events.n !== this.eventsAtEnd) return wait('the buffer pool was used since the last step');
    const cache = bindGroupCacheOf(this.b);
    if (cache === undefined) return wait('the bind-group cache is off');
    if (cache.stats.clears !== t.clears) return drop('the bind-group cache started over since the template was made');
    if (!poolHolds(poolState(this.b), t.pool)) return wait('the buffer pool\'s free lists do not end as they did at the template\'s start');
    if (tf.memory().numTensors !== t.tensors) return wait(`live tensors changed (${t.tensors} -> ${tf.memory().numTensors})`);
    // Uniforms a step of another shape rewrote: written back before the commands, as the cache would for a normal step.
    const rewritten = t.reads.filter((r) => {
      const now = cache.uniformOf(r.group)!.bytes!;
      return now !== r.bytes && !sameBytes(bytesOf(now), bytesOf(r.bytes));
    });
    for (const v of t.steady) {
      if (wordOf(v.kind!, v.formula(roots)) !== wordOf(v.kind!, v.value)) return drop(`${v.key} changed after two steps with the same value`);
    }
    const data = new Map<number, Uint8Array>();
    for (const [i, patch] of t.patches) {
      const op = t.ops[i] as Extract<Op, { data: unknown }>;
      if ('inputs' in patch) {
        const first = inputs[patch.inputs[0]!]!;
        if (patch.inputs.some((j) => !sameBytes(bytesOf(inputs[j]!), bytesOf(first)))) return drop('an upload stood for inputs that now differ');
        if (first.byteLength !== op.data!.byteLength) return drop('an input changed size');
        data.set(i, bytesOf(first));
        continue;
      }
      const bytes = op.data!.slice();
      const words = new Uint32Array(bytes.buffer);
      for (const w of patch.words) {
        const values = w.keys.map((k) => wordOf(w.kind, t.values.get(k)!.formula(roots)));
        if (values.some((x) => x !== values[0])) return drop(`the values a word stood for (${w.keys.join(', ')}) now differ`);
        words[w.at] = values[0]!;
      }
      data.set(i, bytes);
    }
    for (const r of rewritten) {
      this.b.queue.writeBuffer(r.uniform, 0, r.bytes as Uint32Array<ArrayBuffer>);
      cache.uniformWritten(r.uniform, bytesOf(r.bytes));
    }
    this.stats.writtenBack += rewritten.length;
    const read = this.issue(t.ops, data, cache);
    touchPoolKeys(this.b, t.pool.free.keys());
    keep(this.templates, key, t);
    this.stats.replayed += 1;
    this.stats.replayedByKey[key] = (this.stats.replayedByKey[key] ?? 0) + 1;
    this.eventsAtEnd = this.events.n;
    return read;
  }

  /**
   * Runs `run` (the normal step) while recording its GPU commands and logging its per-step values, and makes a
   * template of `key` when this step and the last one recorded of that key allow one (other keys' templates stay).
   */
  async record<T>(key: string, roots: StepRoots, inputs: Int32Array[], run: () => Promise<T>): Promise<T> {
    const rec: Recording = {
      key, roots, inputs, ops: [], values: new Map(), invalid: null,
      poolStart: poolState(this.b), poolEnd: null, held: 'not yet recorded', tensorsStart: tf.memory().numTensors, tensorsEnd: -1,
    };
    const stop = startRecording(rec);
    beginStepValues(roots);
    let result: T;
    try {
      result = await run();
    } finally {
      for (const v of endStepValues()) if (!rec.values.has(v.key)) rec.values.set(v.key, v);
      stop();
    }
    rec.poolEnd = poolState(this.b);
    rec.tensorsEnd = tf.memory().numTensors;
    const cache = bindGroupCacheOf(this.b);
    const reads = cache === undefined ? 'the bind-group cache is off' : uniformReads(rec.ops, cache);
    rec.held = typeof reads === 'string' ? reads : new Map(reads.map((r) => [r.uniform, r.bytes]));
    this.stats.recorded += 1;
    const prev = this.recordings.get(key);
    keep(this.recordings, key, rec);
    if (prev !== undefined) {
      const made = cache === undefined ? 'the bind-group cache is off' : makeTemplate(prev, rec, cache);
      if (typeof made === 'string') this.stats.lastRefusal = made;
      else {
        keep(this.templates, key, made);
        this.stats.lastRefusal = null;
        this.stats.dispatches = made.ops.filter((op) => op.k === 'dispatch').length;
      }
    }
    this.eventsAtEnd = this.events.n;
    return result;
  }

  /** Issues `ops` with the bytes of `data` for its data ops; resolves to the mapped read. */
  private issue(ops: Op[], data: Map<number, Uint8Array>, cache: BindGroupCache): Promise<Float32Array> {
    const { device, queue } = this.b;
    const encoders: GPUCommandEncoder[] = [];
    const passes: GPUComputePassEncoder[] = [];
    const commands: GPUCommandBuffer[] = [];
    const made: GPUBuffer[] = [];
    const buf = (r: Ref): GPUBuffer => (typeof r === 'number' ? made[r]! : r);
    let read: GPUBuffer | null = null;
    ops.forEach((op, i) => {
      switch (op.k) {
        case 'encoder': encoders[op.i] = device.createCommandEncoder(); break;
        case 'pass': passes[op.i] = encoders[op.e]!.beginComputePass(); break;
        case 'pipeline': passes[op.p]!.setPipeline(op.pipeline); break;
        case 'bind': passes[op.p]!.setBindGroup(op.index, op.group, op.offsets); break;
        case 'dispatch': passes[op.p]!.dispatchWorkgroups(op.x, op.y, op.z); break;
        case 'end': passes[op.p]!.end(); break;
        case 'copy': encoders[op.e]!.copyBufferToBuffer(buf(op.src), op.srcOffset, buf(op.dst), op.dstOffset, op.size); break;
        case 'clear': encoders[op.e]!.clearBuffer(buf(op.buffer), op.offset, op.size); break;
        case 'finish': commands[op.i] = encoders[op.e]!.finish(); break;
        case 'submit': queue.submit(op.cmds.map((c) => commands[c]!)); break;
        case 'write': {
          const bytes = data.get(i) ?? op.data;
          const target = buf(op.buffer);
          queue.writeBuffer(target, op.offset, bytes as Uint8Array<ArrayBuffer>);
          if (op.offset === 0) cache.uniformWritten(target, bytes);
          break;
        }
        case 'create': {
          const b = device.createBuffer({ size: op.size, usage: op.usage, mappedAtCreation: op.mapped });
          if (op.mapped) {
            const bytes = data.get(i) ?? op.data!;
            new Uint8Array(b.getMappedRange()).set(bytes.subarray(0, op.size));
            b.unmap();
          }
          made[op.i] = b;
          break;
        }
        case 'destroy': buf(op.buffer).destroy(); break;
        case 'map': read = buf(op.buffer); break;
      }
    });
    const r = read!;
    return r.mapAsync(GPUMapMode.READ).then(() => {
      const values = new Float32Array(r.getMappedRange().slice(0));
      r.unmap();
      return values;
    });
  }
}

/** Puts `value` at `key` in `map` as the most recently used, dropping the least recently used past MAX_TEMPLATES. */
function keep<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key);
  map.set(key, value);
  for (const k of map.keys()) {
    if (map.size <= MAX_TEMPLATES) break;
    map.delete(k);
  }
}

function bytesOf(x: ArrayBufferView): Uint8Array {
  return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * `x`'s commands without its writes of a cache uniform buffer, before any dispatch bound it, of the bytes that `y`
 * found there and bound without writing (`y.held`): the cache's rewrite of an entry a step of another shape had
 * rewritten. A replay writes such bytes back itself (StepReplay.replay), so the two steps compare without them.
 */
function withoutRewrites(x: Recording, y: Recording, cache: BindGroupCache): Op[] {
  const held = y.held;
  if (typeof held === 'string') return x.ops;
  const bound = new Set<GPUBuffer>();
  return x.ops.filter((op) => {
    if (op.k === 'bind') {
      const u = cache.uniformOf(op.group)?.uniform;
      if (u != null) bound.add(u);
    }
    if (op.k !== 'write' || typeof op.buffer === 'number' || op.offset !== 0 || bound.has(op.buffer)) return true;
    const bytes = held.get(op.buffer);
    return bytes === undefined || !sameBytes(bytesOf(bytes), op.data);
  });
}

/**
 * The template of `b`'s commands, checked against `a` (the step of the same key recorded before it; steps of other
 * keys may have run between them) and `cache` (the bind-group cache they bound from); or why there is none. A
 * rewrite of a cache entry that one step made and the other did not need (withoutRewrites) is left out of both.
 */
function makeTemplate(recorded: Recording, last: Recording, cache: BindGroupCache): Template | string {
  const a = { ...recorded, ops: withoutRewrites(recorded, last, cache) };
  const b = { ...last, ops: withoutRewrites(last, recorded, cache) };
  if (a.invalid !== null) return a.invalid;
  if (b.invalid !== null) return b.invalid;
  if (a.key !== b.key) return 'the key changed';
  if (!samePool(a.poolStart, a.poolEnd!) || !samePool(b.poolStart, b.poolEnd!)) return 'the buffer pool was not the same at the start and end of a step';
  if (a.tensorsStart !== a.tensorsEnd || b.tensorsStart !== b.tensorsEnd) return 'the live tensor count was not the same at the start and end of a step';
  if (a.ops.length !== b.ops.length) return `the steps issued ${a.ops.length} and ${b.ops.length} commands`;
  const maps = b.ops.filter((op) => op.k === 'map');
  if (maps.length !== 1 || b.ops.at(-1)!.k !== 'map') return 'the step does not end with its one read';
  const created = new Set<number>();
  for (const op of b.ops) {
    if (op.k === 'create') {
      if (op.mapped && op.data === null) return 'a buffer mapped at creation was not unmapped in the step';
      created.add(op.i);
    }
    if (op.k === 'destroy' && typeof op.buffer === 'number') created.delete(op.buffer);
  }
  if (created.size > 0) return 'the step created a buffer it kept';
  for (const k of a.values.keys()) if (!b.values.has(k)) return `${k} was logged in one step only`;
  for (const k of b.values.keys()) if (!a.values.has(k)) return `${k} was logged in one step only`;
  const patches = new Map<number, Patch>();
  for (let i = 0; i < b.ops.length; i++) {
    const x = a.ops[i]!;
    const y = b.ops[i]!;
    if (!sameOp(x, y)) return `command ${i} differs (${x.k} / ${y.k})`;
    if (y.k !== 'write' && y.k !== 'create') continue;
    const dx = (x as typeof y).data;
    const dy = y.data;
    if (dx === null || dy === null) continue;
    if (dx.byteLength !== dy.byteLength) return `command ${i} wrote ${dx.byteLength} and ${dy.byteLength} bytes`;
    const inputs = b.inputs.map((_, j) => j).filter((j) => sameBytes(dx, bytesOf(a.inputs[j]!)) && sameBytes(dy, bytesOf(b.inputs[j]!)));
    if (inputs.length > 0) {
      patches.set(i, { inputs });
      continue;
    }
    if (sameBytes(dx, dy)) continue;
    if (dy.byteLength % 4 !== 0) return `command ${i} wrote other bytes`;
    const wx = new Uint32Array(dx.slice().buffer);
    const wy = new Uint32Array(dy.slice().buffer);
    const words: { at: number; kind: 'u32' | 'f32'; keys: string[] }[] = [];
    for (let w = 0; w < wy.length; w++) {
      if (wx[w] === wy[w]) continue;
      for (const kind of ['u32', 'f32'] as const) {
        const keys = [...b.values.values()]
          .filter((v) => v.kind === kind && wordOf(kind, v.value) === wy[w] && wordOf(kind, a.values.get(v.key)!.value) === wx[w])
          .map((v) => v.key);
        if (keys.length > 0) {
          words.push({ at: w, kind, keys });
          break;
        }
      }
      if (words.at(-1)?.at !== w) return `word ${w} of command ${i} (${y.k}) differs with no per-step value to explain it`;
    }
    patches.set(i, { words });
  }
  const reads = uniformReads(b.ops, cache);
  if (typeof reads === 'string') return reads;
  const steady = [...b.values.values()].filter((v) => v.kind !== null && wordOf(v.kind, v.value) === wordOf(v.kind, a.values.get(v.key)!.value));
  return {
    key: b.key, ops: b.ops, patches, values: b.values, steady, tensors: b.tensorsEnd, pool: b.poolStart, clears: cache.stats.clears, reads,
  };
}

/**
 * The bind groups `ops` bind before writing their uniform buffers (or without writing them), with the bytes `cache`
 * holds for them now (at the end of the step, as at its start: none is written after it was bound); or why there
 * are none: a bind group not of the cache, a uniform buffer written in part or after a dispatch bound it.
 */
function uniformReads(ops: Op[], cache: BindGroupCache): Template['reads'] | string {
  const written = new Set<GPUBuffer>();
  const read = new Set<GPUBuffer>();
  const reads: Template['reads'] = [];
  for (const op of ops) {
    if (op.k === 'write' && typeof op.buffer !== 'number') {
      const u = cache.uniformAt(op.buffer);
      if (u === undefined) continue;
      if (op.offset !== 0 || op.data.byteLength !== u.bytes?.byteLength) return 'a uniform buffer of the bind-group cache was written in part';
      if (read.has(op.buffer)) return 'a uniform buffer of the bind-group cache was written after a dispatch bound it';
      written.add(op.buffer);
    }
    if (op.k !== 'bind') continue;
    const u = cache.uniformOf(op.group);
    if (u === undefined) return 'a bind group not of the bind-group cache';
    if (u.uniform === null || written.has(u.uniform) || read.has(u.uniform)) continue;
    read.add(u.uniform);
    reads.push({ group: op.group, uniform: u.uniform, bytes: u.bytes! });
  }
  return reads;
}

/** The same call on the same objects (data compared apart). */
function sameOp(x: Op, y: Op): boolean {
  if (x.k !== y.k) return false;
  for (const [k, v] of Object.entries(x)) {
    if (k === 'data') continue;
    const w = (y as Record<string, unknown>)[k];
    if (Array.isArray(v)) {
      if (!Array.isArray(w) || w.length !== v.length || v.some((e, i) => e !== w[i])) return false;
    } else if (v !== w) return false;
  }
  return true;
}

/** The prototypes whose methods a recording wraps, from live objects of `b`'s device. */
function prototypesOf(b: BackendInternals): { device: object; queue: object; encoder: object; pass: object; buffer: object } {
  const encoder = b.device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.end();
  encoder.finish();
  const buffer = b.device.createBuffer({ size: 4, usage: GPUBufferUsage.COPY_DST });
  buffer.destroy();
  return {
    device: Object.getPrototypeOf(b.device) as object, queue: Object.getPrototypeOf(b.queue) as object,
    encoder: Object.getPrototypeOf(encoder) as object, pass: Object.getPrototypeOf(pass) as object, buffer: Object.getPrototypeOf(buffer) as object,
  };
}

const protoCache = new WeakMap<object, ReturnType<typeof prototypesOf>>();

/** The calls a recording refuses (the step is then not replayable): anything a training step does not issue. */
const REFUSED = {
  encoder: ['beginRenderPass', 'copyBufferToTexture', 'copyTextureToBuffer', 'copyTextureToTexture', 'resolveQuerySet', 'writeTimestamp'],
  pass: ['dispatchWorkgroupsIndirect'],
  queue: ['writeTexture', 'copyExternalImageToTexture'],
} as const;

type AnyFn = (this: unknown, ...a: unknown[]) => unknown;

/**
 * Wraps the WebGPU methods of the recorded backend's device to append to `rec.ops`; returns the function that
 * restores them.
 */
function startRecording(rec: Recording): () => void {
  const b = internalsOf(tf.backend());
  let protos = protoCache.get(b.device);
  if (protos === undefined) protoCache.set(b.device, (protos = prototypesOf(b)));
  const restore: (() => void)[] = [];
  const wrap = (proto: object, name: string, f: (orig: AnyFn) => AnyFn): void => {
    const p = proto as Record<string, AnyFn>;
    const orig = p[name]!;
    p[name] = f(orig);
    restore.push(() => { p[name] = orig; });
  };
  const encoders = new WeakMap<object, number>();
  const passes = new WeakMap<object, number>();
  const commands = new WeakMap<object, number>();
  const made = new Map<GPUBuffer, number>();
  const ranges = new Map<GPUBuffer, ArrayBuffer>();
  let nEncoders = 0;
  let nPasses = 0;
  let nCommands = 0;
  const ref = (x: GPUBuffer): Ref => made.get(x) ?? x;
  const ops = rec.ops;
  const refuse = (why: string): void => { rec.invalid ??= why; };

  wrap(protos.device, 'createCommandEncoder', (orig) => function (...a) {
    const r = orig.apply(this, a) as object;
    encoders.set(r, nEncoders);
    ops.push({ k: 'encoder', i: nEncoders++ });
    return r;
  });
  wrap(protos.device, 'createBuffer', (orig) => function (...a) {
    const d = a[0] as GPUBufferDescriptor;
    const r = orig.apply(this, a) as GPUBuffer;
    made.set(r, made.size);
    ops.push({ k: 'create', i: made.size - 1, size: d.size, usage: d.usage, mapped: d.mappedAtCreation === true, data: null });
    return r;
  });
  wrap(protos.encoder, 'beginComputePass', (orig) => function (...a) {
    const d = a[0] as GPUComputePassDescriptor | undefined;
    if (d?.timestampWrites !== undefined) refuse('a compute pass wrote timestamps');
    const r = orig.apply(this, a) as object;
    passes.set(r, nPasses);
    ops.push({ k: 'pass', e: encoders.get(this as object) ?? -1, i: nPasses++ });
    return r;
  });
  wrap(protos.encoder, 'copyBufferToBuffer', (orig) => function (...a) {
    if (a.length !== 5) refuse('copyBufferToBuffer without offsets');
    const [src, so, dst, dOff, size] = a as [GPUBuffer, number, GPUBuffer, number, number];
    ops.push({ k: 'copy', e: encoders.get(this as object) ?? -1, src: ref(src), srcOffset: so, dst: ref(dst), dstOffset: dOff, size });
    return orig.apply(this, a);
  });
  wrap(protos.encoder, 'clearBuffer', (orig) => function (...a) {
    const [buffer, offset, size] = a as [GPUBuffer, number | undefined, number | undefined];
    ops.push({ k: 'clear', e: encoders.get(this as object) ?? -1, buffer: ref(buffer), offset: offset ?? 0, size });
    return orig.apply(this, a);
  });
  wrap(protos.encoder, 'finish', (orig) => function (...a) {
    const r = orig.apply(this, a) as object;
    commands.set(r, nCommands);
    ops.push({ k: 'finish', e: encoders.get(this as object) ?? -1, i: nCommands++ });
    return r;
  });
  wrap(protos.pass, 'setPipeline', (orig) => function (...a) {
    ops.push({ k: 'pipeline', p: passes.get(this as object) ?? -1, pipeline: a[0] as GPUComputePipeline });
    return orig.apply(this, a);
  });
  wrap(protos.pass, 'setBindGroup', (orig) => function (...a) {
    const offsets = a[2];
    if (a.length > 3 || (offsets !== undefined && !Array.isArray(offsets))) refuse('setBindGroup with offsets in a typed array');
    ops.push({ k: 'bind', p: passes.get(this as object) ?? -1, index: a[0] as number, group: a[1] as GPUBindGroup, offsets: [...((offsets as number[] | undefined) ?? [])] });
    return orig.apply(this, a);
  });
  wrap(protos.pass, 'dispatchWorkgroups', (orig) => function (...a) {
    const [x, y, z] = a as [number, number | undefined, number | undefined];
    ops.push({ k: 'dispatch', p: passes.get(this as object) ?? -1, x, y: y ?? 1, z: z ?? 1 });
    return orig.apply(this, a);
  });
  wrap(protos.pass, 'end', (orig) => function (...a) {
    ops.push({ k: 'end', p: passes.get(this as object) ?? -1 });
    return orig.apply(this, a);
  });
  wrap(protos.queue, 'submit', (orig) => function (...a) {
    ops.push({ k: 'submit', cmds: (a[0] as object[]).map((c) => commands.get(c) ?? -1) });
    return orig.apply(this, a);
  });
  wrap(protos.queue, 'writeBuffer', (orig) => function (...a) {
    const [buffer, offset, src, dataOffset, size] = a as [GPUBuffer, number, ArrayBuffer | ArrayBufferView, number | undefined, number | undefined];
    const unit = ArrayBuffer.isView(src) ? ((src as unknown as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1) : 1;
    const whole = ArrayBuffer.isView(src) ? new Uint8Array(src.buffer, src.byteOffset, src.byteLength) : new Uint8Array(src);
    const start = (dataOffset ?? 0) * unit;
    const data = whole.slice(start, size === undefined ? undefined : start + size * unit);
    ops.push({ k: 'write', buffer: ref(buffer), offset, data });
    return orig.apply(this, a);
  });
  wrap(protos.buffer, 'getMappedRange', (orig) => function (...a) {
    const r = orig.apply(this, a) as ArrayBuffer;
    if (made.has(this as GPUBuffer)) {
      if (a.length > 0) refuse('a partial mapped range');
      ranges.set(this as GPUBuffer, r);
    }
    return r;
  });
  wrap(protos.buffer, 'unmap', (orig) => function (...a) {
    const range = ranges.get(this as GPUBuffer);
    if (range !== undefined) {
      const i = made.get(this as GPUBuffer)!;
      const op = ops.find((o) => o.k === 'create' && o.i === i) as Extract<Op, { k: 'create' }>;
      op.data = new Uint8Array(range).slice();
      ranges.delete(this as GPUBuffer);
    }
    return orig.apply(this, a);
  });
  wrap(protos.buffer, 'destroy', (orig) => function (...a) {
    ops.push({ k: 'destroy', buffer: ref(this as GPUBuffer) });
    return orig.apply(this, a);
  });
  wrap(protos.buffer, 'mapAsync', (orig) => function (...a) {
    if (a[0] !== GPUMapMode.READ || a.length > 1) refuse('a mapping other than a whole read');
    ops.push({ k: 'map', buffer: ref(this as GPUBuffer) });
    return orig.apply(this, a);
  });
  for (const [where, names] of Object.entries(REFUSED)) {
    for (const name of names) {
      const proto = protos[where as keyof typeof REFUSED];
      if (typeof (proto as Record<string, unknown>)[name] !== 'function') continue;
      wrap(proto, name, (orig) => function (...a) {
        refuse(`${name} was called`);
        return orig.apply(this, a);
      });
    }
  }
  return () => { for (const r of restore.reverse()) r(); };
}
