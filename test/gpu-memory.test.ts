/**
 * The webgpu device's memory: the bound on the buffer pool's free buffers and its purge after an out-of-memory
 * error (src/kernels/platform/bufferPool.ts), and the reads that report the error (gpuMemory.ts).
 *
 * On tfjs-backend-webgpu's own BufferManager over a device that only counts (no GPU): an allocation that finds no
 * free buffer of its key destroys the free lists used least recently, whole, until the free bytes are within the
 * budget, never its own key; a replayed step's keys (touchPoolKeys) count as used; the default budget follows the
 * most bytes in use at once, with a floor; `unbounded` keeps everything; POOL_FREE_ENV's text is checked; after an
 * out-of-memory error the free buffers are destroyed, and the buffers in use then when given back. A read, and a
 * synchronous read, after the device reported the error throw GpuOutOfMemoryError once.
 * On Dawn's null device (a 512 MiB device): a model trained over batch lengths cycling 8..64 stays within the
 * device, where TF.js's own pool, which keeps every length's buffers, runs out of it; after a step too big for the
 * device, smaller steps run without a device error.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { BufferManager } from '@tensorflow/tfjs-backend-webgpu/dist/buffer_manager.js';
import { boundBufferPool, MIN_FREE_BYTES, parsePoolBound, poolBoundStats, POOL_FREE_ENV, touchPoolKeys, type PoolBound } from '../src/kernels/platform/bufferPool.js';
import { GpuOutOfMemoryError, watchOutOfMemory } from '../src/kernels/platform/gpuMemory.js';
import { DAWN_OPTIONS_ENV } from '../src/model/backend.js';
import type { BertConfig } from '../src/model/config.js';
import { nullDeviceSkipReason, OBJECTIVE, ROOT, STEP_IMPORTS, STEP_SETUP } from './helpers.js';

const NULL_DEVICE_SKIP = await nullDeviceSkipReason();

/** A buffer of the counting device: its size, usage and whether it was destroyed. */
interface FakeBuffer {
  size: number;
  usage: number;
  destroyed: boolean;
  destroy(): void;
}

const USAGE = 140; // STORAGE | COPY_SRC | COPY_DST, the backend's default
const MiB = 2 ** 20;

/** TF.js's BufferManager over a device whose createBuffer makes FakeBuffers, bounded by `bound`. */
function boundPool(bound: PoolBound) {
  const made: FakeBuffer[] = [];
  const device = {
    createBuffer({ size, usage }: { size: number; usage: number }): FakeBuffer {
      const b: FakeBuffer = { size, usage, destroyed: false, destroy() { this.destroyed = true; } };
      made.push(b);
      return b;
    },
  };
  const pool = new BufferManager(device as unknown as GPUDevice);
  const listeners: ((e: Event) => void)[] = [];
  const backend = { bufferManager: pool, device: { addEventListener: (_type: string, f: (e: Event) => void) => listeners.push(f) } as unknown as GPUDevice };
  boundBufferPool(backend, bound);
  /** The device reports `error` as an uncaptured error. */
  const report = (error: object): void => listeners.forEach((f) => f({ error } as unknown as Event));
  const take = (mb: number, n = 1): GPUBuffer[] => Array.from({ length: n }, () => pool.acquireBuffer(mb * MiB, USAGE));
  const give = (buffers: GPUBuffer[]): void => buffers.forEach((b) => pool.releaseBuffer(b));
  const free = (): number => pool.numBytesAllocated - pool.numBytesUsed;
  return { pool, backend, made, take, give, free, report };
}

describe('the buffer pool bound', () => {
  test('a miss destroys the free lists used least recently, whole, until the free bytes are within the budget; never its own key', () => {
    const p = boundPool({ bytes: 10 * MiB });
    p.give(p.take(1, 4)); // key 1 MiB: 4 free
    p.give(p.take(2, 2)); // key 2 MiB: 2 free
    p.give(p.take(3, 1)); // key 3 MiB: 1 free; 11 MiB free in all, over the budget (nothing destroyed until a miss)
    assert.equal(p.free(), 11 * MiB);
    assert.equal(p.made.filter((b) => b.destroyed).length, 0);
    const held = p.take(5); // a miss: the 1 MiB list (least recent) goes whole, 7 MiB stay free
    assert.deepEqual(p.made.filter((b) => b.destroyed).map((b) => b.size / MiB), [1, 1, 1, 1]);
    assert.equal(p.free(), 7 * MiB);
    assert.equal(p.pool.numBytesAllocated, 12 * MiB);
    assert.equal(p.pool.getNumFreeBuffers(), 3);
    assert.deepEqual(poolBoundStats(p.backend), { budget: 10 * MiB, peakUsed: 5 * MiB, destroyed: 4, destroyedBytes: 4 * MiB, purges: 0 });
    // A hit takes from its list and destroys nothing, however full the pool is.
    p.give(held);
    p.give([p.take(2)[0]!]);
    assert.equal(p.made.filter((b) => b.destroyed).length, 4);
    // The buffers left are reused: no buffer is made for keys whose lists still hold one.
    const before = p.made.length;
    p.give([...p.take(2, 2), ...p.take(3), ...p.take(5)]);
    assert.equal(p.made.length, before);
  });

  test('the allocation\'s own key is kept, and a key a replayed step ran over (touchPoolKeys) counts as used', () => {
    const p = boundPool({ bytes: 4 * MiB });
    p.give(p.take(4)); // key 4: used first
    p.give(p.take(3)); // key 3
    touchPoolKeys(p.backend, [`${4 * MiB}_${USAGE}`]); // key 4 is now the most recent
    const [a, b] = p.take(1, 2); // the second is a miss of key 1 with 7 MiB free: key 3 goes, key 4 stays
    assert.deepEqual(p.made.filter((x) => x.destroyed).map((x) => x.size / MiB), [3]);
    p.give([a!, b!]);
    p.take(2); // 6 MiB free: key 4 goes next (key 1 was used after it), within the budget after it
    assert.deepEqual(p.made.filter((x) => x.destroyed).map((x) => x.size / MiB), [4, 3]); // in the order they were made
    assert.equal(p.free(), 2 * MiB);
  });

  test('by default the budget is the most bytes in use at once, at least MIN_FREE_BYTES; unbounded keeps every buffer', () => {
    const p = boundPool('peak');
    assert.equal(poolBoundStats(p.backend)!.budget, MIN_FREE_BYTES);
    const big = p.take(200, 2); // 400 MiB in use at once
    assert.equal(poolBoundStats(p.backend)!.budget, 400 * MiB);
    p.give(big);
    p.give(p.take(150)); // 550 MiB free, then a miss: the 200 MiB list goes (least recent), 150 stay
    p.take(1);
    assert.equal(p.free(), 150 * MiB);
    const u = boundPool('unbounded');
    for (let mb = 1; mb <= 20; mb++) u.give(u.take(mb * 20));
    assert.equal(u.made.filter((b) => b.destroyed).length, 0);
    assert.equal(poolBoundStats(u.backend)!.budget, Infinity);
  });

  test('after an out-of-memory error the free buffers are destroyed, and the buffers in use then when they are given back; later ones are reused', () => {
    const p = boundPool('unbounded');
    p.give(p.take(1, 3));
    const held = p.take(2, 2);
    /** A GPUOutOfMemoryError as the webgpu package makes one, where the global class is not defined (this process). */
    class GPUOutOfMemoryError {
      readonly message = 'Out of memory.';
    }
    p.report(new (class GPUValidationError { readonly message = 'Invalid Buffer'; })());
    assert.equal(p.made.filter((b) => b.destroyed).length, 0, 'another error purges nothing');
    p.report(new GPUOutOfMemoryError());
    assert.deepEqual(p.made.filter((b) => b.destroyed).map((b) => b.size / MiB), [1, 1, 1]);
    assert.equal(p.pool.getNumFreeBuffers(), 0);
    const after = p.take(2); // made after the error
    p.give(held);
    assert.deepEqual(p.made.filter((b) => b.destroyed).map((b) => b.size / MiB), [1, 1, 1, 2, 2]);
    assert.equal(p.pool.numBytesAllocated, 2 * MiB);
    p.give(after);
    assert.equal(p.take(2)[0], after[0], 'a buffer made after the error is reused');
    assert.deepEqual(poolBoundStats(p.backend), { budget: Infinity, peakUsed: 6 * MiB, destroyed: 5, destroyedBytes: 7 * MiB, purges: 1 });
  });

  test(`${POOL_FREE_ENV}: MiB, unbounded or the default; anything else is an error naming the variable`, () => {
    assert.equal(parsePoolBound(undefined), 'peak');
    assert.equal(parsePoolBound(''), 'peak');
    assert.equal(parsePoolBound('unbounded'), 'unbounded');
    assert.deepEqual(parsePoolBound('0'), { bytes: 0 });
    assert.deepEqual(parsePoolBound('1.5'), { bytes: 1.5 * MiB });
    for (const bad of ['-1', 'lots', 'Infinity']) {
      assert.throws(() => parsePoolBound(bad), new RegExp(`${POOL_FREE_ENV}='${bad}': expected MiB`));
    }
  });
});

/** A backend whose reads watchOutOfMemory wraps, over a device whose uncaptured errors `report` raises. */
function watchedReads() {
  const listeners: ((e: Event) => void)[] = [];
  const device = { addEventListener: (_type: string, f: (e: Event) => void) => listeners.push(f) } as unknown as GPUDevice;
  const backend = { read: async (_id: object): Promise<unknown> => new Float32Array(1), readSync: (_id: object): unknown => new Float32Array(1) };
  watchOutOfMemory(device, backend);
  const report = (error: object): void => listeners.forEach((f) => f({ error, preventDefault() {} } as unknown as Event));
  return { backend, report };
}

describe('the reads after an out-of-memory error', () => {
  test('read and readSync throw GpuOutOfMemoryError once the device reported one, once', async () => {
    const { backend, report } = watchedReads();
    class GPUOutOfMemoryError {
      readonly message = 'Out of memory.\n - While calling [Device].CreateBuffer';
    }
    assert.ok(backend.readSync({}) instanceof Float32Array);
    report(new GPUOutOfMemoryError());
    assert.throws(() => backend.readSync({}), (err: unknown) => err instanceof GpuOutOfMemoryError && /in a computation \(Out of memory\.\)/.test(err.message));
    assert.ok(backend.readSync({}) instanceof Float32Array, 'thrown once');
    report(new GPUOutOfMemoryError());
    await assert.rejects(backend.read({}), GpuOutOfMemoryError);
    assert.ok((await backend.read({})) instanceof Float32Array, 'thrown once');
  });

  test('a buffer past the device\'s limits is reported the same way, naming the limit; another validation error is not', async () => {
    const { backend, report } = watchedReads();
    class GPUValidationError {
      constructor(readonly message: string) {}
    }
    report(new GPUValidationError('[Invalid Buffer (unlabeled)] is invalid due to a previous error.'));
    assert.ok((await backend.read({})) instanceof Float32Array);
    report(new GPUValidationError('Buffer size (1098304000) exceeds the max buffer size limit (268435456).\n - While calling [Device].CreateBuffer([BufferDescriptor ""]).'));
    await assert.rejects(backend.read({}), (err: unknown) => err instanceof GpuOutOfMemoryError && err.message ===
      'a tensor in a computation is larger than the webgpu device allows in one buffer (Buffer size (1098304000) exceeds the max buffer size ' +
      'limit (268435456).): lower the batch size (train.batchSize, or --batch-size) or the sequence length (data.maxSeqLen, or --max-length), ' +
      'or choose another backend (--backend)');
  });
});

/** A two-layer BERT config of the null-device tests. */
function bert(hiddenSize: number, numAttentionHeads: number, intermediateSize: number, maxPositionEmbeddings: number): BertConfig {
  return {
    vocabSize: 60, hiddenSize, numHiddenLayers: 2, numAttentionHeads, intermediateSize, hiddenAct: 'gelu', hiddenDropoutProb: 0.1,
    attentionProbsDropoutProb: 0.1, maxPositionEmbeddings, typeVocabSize: 2, layerNormEps: 1e-12, padTokenId: 0, initializerRange: 0.02,
  };
}

/**
 * Runs `body` after STEP_IMPORTS and STEP_SETUP (a model of `config`) in a child process on Dawn's null device, with
 * `rowsOf(n, T)` defined (n rows of T tokens); returns its last line of output, parsed.
 */
function onNullDevice<T>(config: BertConfig, body: string, env: NodeJS.ProcessEnv = {}): T {
  const script = `
    ${STEP_IMPORTS}
    ${STEP_SETUP}
    const rowsOf = (n, T) => {
      const b = { inputIds: [], attentionMask: [] };
      for (let s = 0; s < n; s++) b.inputIds.push(Array.from({ length: T }, (_, t) => (t === 0 ? 2 : 3 + ((s + t) % 50)))), b.attentionMask.push(Array(T).fill(1));
      return b;
    };
    ${body}`;
  const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script,
    JSON.stringify({ config, rows: null, objective: { ...OBJECTIVE, minLayer: 0, maxLayer: 2, targetSamples: 40, training: true } })],
  { cwd: ROOT, env: { ...process.env, [DAWN_OPTIONS_ENV]: 'backend=null', ...env }, encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').at(-1)!) as T;
}

describe("the buffer pool bound on Dawn's null device (a 512 MiB device)", { skip: NULL_DEVICE_SKIP }, () => {
  test('training over batch lengths 8..64 stays within the device; without the bound the pool runs out of it', () => {
    const body = `
      const { poolBoundStats } = await import(${JSON.stringify(new URL('../src/kernels/platform/bufferPool.ts', import.meta.url).href)});
      let oom = null;
      device.addEventListener('uncapturederror', (e) => { oom ??= e.error.message.split('\\n')[0]; e.preventDefault(); });
      const step = new TrainStep(model, head, optimizer, objective, undefined, false);
      let steps = 0;
      for (let T = 8; T <= 64 && oom === null; T += 2) {
        await step.run(rowsOf(32, T), { lr: 1e-4, maxGradNorm: 1, dropoutSeed: T, amiSeed: T }).catch((err) => { oom ??= String(err); });
        steps += 1;
      }
      const pool = tf.backend().bufferManager;
      console.log(JSON.stringify({ oom, steps, allocated: pool.numBytesAllocated, stats: poolBoundStats(tf.backend()) ?? null }));
    `;
    type Run = { oom: string | null; steps: number; allocated: number; stats: { budget: number; destroyed: number } | null };
    const bounded = onNullDevice<Run>(bert(64, 4, 256, 64), body, { [POOL_FREE_ENV]: '' });
    assert.equal(bounded.oom, null, JSON.stringify(bounded));
    assert.equal(bounded.steps, 29);
    assert.ok(bounded.stats!.destroyed > 0 && bounded.allocated < 512 * MiB, JSON.stringify(bounded));
    const unbounded = onNullDevice<Run>(bert(64, 4, 256, 64), body, { [POOL_FREE_ENV]: 'unbounded' });
    assert.match(unbounded.oom ?? '', /Out of memory/, JSON.stringify(unbounded));
  });

  test('a step too big for the device, then smaller ones: they run without a validation error (no buffer made while it ran out is reused)', () => {
    const r = onNullDevice<{ error: string | null; later: string[]; outcomes: (boolean | string)[]; replayed: number }>(bert(32, 2, 64, 32), `
      const step = new TrainStep(model, head, optimizer, objective, undefined, true);
      const run = (rows, i) => step.run(rows, { lr: 1e-4, maxGradNorm: 1, dropoutSeed: i, amiSeed: 100 + i });
      let error = null;
      await run(rowsOf(8192, 32), 0).catch((err) => { error = err.message; });
      const later = [];
      device.addEventListener('uncapturederror', (e) => later.push(e.error.message.split('\\n')[0]));
      const outcomes = [];
      for (let i = 1; i < 7; i++) outcomes.push(await run(rowsOf(32, 32), i).then((o) => o.finite, (err) => err.message));
      console.log(JSON.stringify({ error, later, outcomes, replayed: step.replayStats().replayed }));
    `);
    assert.match(r.error ?? '', /ran out of memory in a training step of 8192 rows x 32 tokens/, JSON.stringify(r));
    assert.deepEqual(r.later, [], 'device errors in the smaller steps');
    assert.deepEqual(r.outcomes, [true, true, true, true, true, true], JSON.stringify(r));
    assert.ok(r.replayed >= 1, JSON.stringify(r));
  });
});
