/**
 * A bound on the free buffers of the webgpu backend's buffer pool.
 *
 * Why: tfjs-backend-webgpu's BufferManager (4.22.0) keeps every buffer it makes. A released buffer waits in the free
 * list of its size and usage for an allocation of exactly that size, and is destroyed only with the backend. A
 * training run's batches come in every length up to data.maxSeqLen, and its evaluations in others; each length's
 * step makes buffers of its own sizes, so without a bound the pool grows with the number of lengths seen, to the
 * sum of their steps' working sets, until the device runs out of memory.
 *
 * Here: when an allocation finds no free buffer of its key (size and usage) and the pool's free bytes are over the
 * budget, the free lists of the keys used least recently are destroyed, a whole list at a time, oldest first, until
 * the free bytes are within it. A key is used when an allocation takes one of its buffers, or when a replayed step
 * (kernels/replay/webgpu.ts, which takes nothing from the pool) runs over its free list (touchPoolKeys). A buffer in
 * a free list belongs to no tensor and to no command not yet submitted (the backend gives a buffer back after the
 * submit of the commands that use it), and WebGPU lets a buffer be destroyed while submitted work that uses it has
 * not finished. Results are unchanged: an allocation gets a new buffer where it would have reused one.
 *
 * The budget: POOL_FREE_ENV, in MiB; by default FREE_PER_PEAK times the most bytes the pool has had in use at once,
 * and at least MIN_FREE_BYTES; `unbounded`: TF.js's own pool.
 *
 * After the device runs out of memory (a GPUOutOfMemoryError, or a buffer past its limits: gpuMemory.ts), some
 * buffers of the pool are invalid: their creation failed, and any command that binds one fails. WebGPU does not say which. So the pool is purged: its
 * free buffers are destroyed at once, and every buffer in use then is destroyed when it is given back instead of
 * waiting for reuse. A caller that catches the error, frees memory or lowers its batch and goes on gets only buffers
 * made after it; without the purge the next allocations of those sizes could take an invalid buffer and compute
 * nothing, silently. Buffers in use stay usable (the model's weights are valid buffers).
 */
import { isAllocationError } from './gpuMemory.js';

/** Environment variable: the pool's free bytes kept at most, in MiB, or `unbounded`. */
export const POOL_FREE_ENV = 'MICSE_WEBGPU_POOL_FREE_MB';
/** The default budget, in the most bytes the pool has had in use at once. */
export const FREE_PER_PEAK = 1;
/** The default budget's floor. */
export const MIN_FREE_BYTES = 256 * 2 ** 20;

/** How the pool is bounded: free bytes at most `bytes`, or by default (`peak`), or not at all. */
export type PoolBound = { bytes: number } | 'peak' | 'unbounded';

/** The bound POOL_FREE_ENV asks for (undefined or empty: the default). */
export function parsePoolBound(text: string | undefined): PoolBound {
  if (text === undefined || text.trim() === '') return 'peak';
  if (text.trim() === 'unbounded') return 'unbounded';
  const mb = Number(text);
  if (!Number.isFinite(mb) || mb < 0) throw new Error(`${POOL_FREE_ENV}='${text}': expected MiB of free buffers to keep (a number >= 0) or unbounded`);
  return { bytes: Math.round(mb * 2 ** 20) };
}

/** The buffer pool of tfjs-backend-webgpu 4.22.0 (BufferManager), as far as the bound reads and changes it. */
interface PoolInternals {
  freeBuffers: Map<string, GPUBuffer[]>;
  numFreeBuffers: number;
  numBytesUsed: number;
  numBytesAllocated: number;
  usedBuffers: Map<string, GPUBuffer[]>;
  acquireBuffer(size: number, usage: number, mappedAtCreation?: boolean, reuse?: boolean): GPUBuffer;
  releaseBuffer(buffer: GPUBuffer, reuse?: boolean): void;
}

/** What a bound pool has done (tests and the bench read it). */
export interface PoolBoundStats {
  /** The budget in force now, in bytes (Infinity: unbounded). */
  budget: number;
  /** The most bytes in use at once. */
  peakUsed: number;
  /** Buffers destroyed, and their bytes (the budget's and the purges'). */
  destroyed: number;
  destroyedBytes: number;
  /** Purges after the device ran out of memory. */
  purges: number;
}

class BoundPool {
  readonly stats: PoolBoundStats;
  bound: PoolBound;
  /** Keys by their last use, least recent first (a use deletes and sets the key). */
  private readonly lastUse = new Map<string, true>();
  /** Buffers in use at a purge: destroyed when given back (condemns). */
  private readonly condemned = new WeakSet<GPUBuffer>();

  constructor(private readonly pool: PoolInternals, bound: PoolBound) {
    this.bound = bound;
    this.stats = { budget: 0, peakUsed: pool.numBytesUsed, destroyed: 0, destroyedBytes: 0, purges: 0 };
    this.stats.budget = this.budget();
  }

  setBound(bound: PoolBound): void {
    this.bound = bound;
    this.stats.budget = this.budget();
  }

  private budget(): number {
    if (this.bound === 'unbounded') return Infinity;
    if (this.bound === 'peak') return Math.max(MIN_FREE_BYTES, FREE_PER_PEAK * this.stats.peakUsed);
    return this.bound.bytes;
  }

  use(key: string): void {
    this.lastUse.delete(key);
    this.lastUse.set(key, true);
  }

  /** Before an allocation of `key` that finds its free list empty: destroys least recently used free lists. */
  trim(key: string): void {
    const p = this.pool;
    if (p.numBytesAllocated - p.numBytesUsed <= this.stats.budget) return;
    for (const k of this.lastUse.keys()) {
      if (k === key) continue;
      const list = p.freeBuffers.get(k);
      if (list === undefined || list.length === 0) continue;
      this.destroyFree(list);
      if (p.numBytesAllocated - p.numBytesUsed <= this.stats.budget) return;
    }
  }

  /** Destroys the buffers of a free list and empties it. */
  private destroyFree(list: GPUBuffer[]): void {
    for (const b of list) {
      this.pool.numBytesAllocated -= b.size;
      this.stats.destroyed += 1;
      this.stats.destroyedBytes += b.size;
      b.destroy();
    }
    this.pool.numFreeBuffers -= list.length;
    list.length = 0;
  }

  /** After the device ran out of memory (module comment). */
  purge(): void {
    this.stats.purges += 1;
    for (const list of this.pool.freeBuffers.values()) this.destroyFree(list);
    for (const list of this.pool.usedBuffers.values()) for (const b of list) this.condemned.add(b);
  }

  /** Whether `buffer`, given back, is destroyed rather than kept for reuse. */
  condemns(buffer: GPUBuffer): boolean {
    if (!this.condemned.has(buffer)) return false;
    this.condemned.delete(buffer);
    this.stats.destroyed += 1;
    this.stats.destroyedBytes += buffer.size;
    return true;
  }

  afterAcquire(): void {
    const used = this.pool.numBytesUsed;
    if (used > this.stats.peakUsed) {
      this.stats.peakUsed = used;
      if (this.bound === 'peak') this.stats.budget = this.budget();
    }
  }
}

/** The bound pools, by their BufferManager. */
const pools = new WeakMap<object, BoundPool>();

/** The backend's pool and device, as tfjs-backend-webgpu 4.22.0's WebGPUBackend has them. */
interface HasPool {
  bufferManager: unknown;
  device: Pick<GPUDevice, 'addEventListener'>;
}

/**
 * Bounds the free buffers of `backend`'s pool (a WebGPUBackend) by `b` (see the module comment); a later call
 * changes the bound of the same pool.
 */
export function boundBufferPool(backend: HasPool, b: PoolBound): void {
  const pool = backend.bufferManager as PoolInternals;
  const existing = pools.get(pool);
  if (existing !== undefined) {
    existing.setBound(b);
    return;
  }
  const state = new BoundPool(pool, b);
  pools.set(pool, state);
  backend.device.addEventListener('uncapturederror', (e) => {
    if (isAllocationError((e as GPUUncapturedErrorEvent).error)) state.purge();
  });
  const release = pool.releaseBuffer.bind(pool);
  pool.releaseBuffer = (buffer, reuse = true) => release(buffer, reuse && !state.condemns(buffer));
  const acquire = pool.acquireBuffer.bind(pool);
  pool.acquireBuffer = (size, usage, mappedAtCreation = false, reuse = true) => {
    const key = `${size}_${usage}`;
    state.use(key);
    if (!reuse || (pool.freeBuffers.get(key)?.length ?? 0) === 0) state.trim(key);
    const buffer = acquire(size, usage, mappedAtCreation, reuse);
    state.afterAcquire();
    return buffer;
  };
}

/** Marks the pool's free lists of `keys` used now (a replayed step runs over them without taking them). */
export function touchPoolKeys(backend: Pick<HasPool, 'bufferManager'>, keys: Iterable<string>): void {
  const state = pools.get(backend.bufferManager as object);
  if (state === undefined) return;
  for (const k of keys) state.use(k);
}

/** What the bound of `backend`'s pool has done, or undefined when it has none. */
export function poolBoundStats(backend: Pick<HasPool, 'bufferManager'>): PoolBoundStats | undefined {
  return pools.get(backend.bufferManager as object)?.stats;
}

/** The bound of `backend`'s pool in words, for the backend's description. */
export function describePoolBound(backend: Pick<HasPool, 'bufferManager'>): string {
  const state = pools.get(backend.bufferManager as object);
  if (state === undefined || state.bound === 'unbounded') return 'keeps every buffer (unbounded)';
  if (state.bound === 'peak') return `free buffers kept to ${FREE_PER_PEAK}x the most in use at once, at least ${MIN_FREE_BYTES / 2 ** 20} MiB`;
  return `free buffers kept to ${state.bound.bytes / 2 ** 20} MiB`;
}
