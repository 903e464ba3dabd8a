/**
 * The webgpu bind-group cache (src/kernels/platform/bindGroupCache.ts), without a GPU: its uniform layout is the
 * backend's makeUniforms' byte for byte, and its bookkeeping (reuse, rewrite only outside the command buffer being
 * recorded, starting over at its bound) on a recording stand-in for the device. The cache on a real device: the
 * null-device test in test/webgpu.test.ts (no bind group made once a step repeats, no validation error).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { BindGroupCache, packProgramUniforms } from '../src/kernels/platform/bindGroupCache.js';

// The WebGPU enums the code under test reads (absent in Node without the webgpu package's globals).
const g = globalThis as { GPUBufferUsage?: object };
g.GPUBufferUsage ??= { MAP_READ: 1, MAP_WRITE: 2, COPY_SRC: 4, COPY_DST: 8, INDEX: 16, VERTEX: 32, UNIFORM: 64, STORAGE: 128 };

type Field = { type: 'int32' | 'uint32' | 'float32'; data: number[] };

/** The bytes tfjs-backend-webgpu's own makeUniforms writes for `fields`. */
function backendUniformBytes(fields: Field[]): Uint8Array {
  let written: Uint8Array | undefined;
  const self = {
    bufferManager: { acquireBuffer: () => ({}) },
    queue: { writeBuffer: (_b: unknown, _o: number, data: ArrayBuffer, offset: number, size: number) => (written = new Uint8Array(data, offset, size).slice()) },
    uniformPendingDisposal: [] as unknown[],
  };
  const makeUniforms = (WebGPUBackend.prototype as unknown as { makeUniforms(this: unknown, f: Field[]): unknown }).makeUniforms;
  makeUniforms.call(self, fields.map((f) => ({ ...f, data: [...f.data] })));
  return written!;
}

describe('bind-group cache', () => {
  test("program uniforms are laid out as the backend's makeUniforms lays them out", () => {
    const f = (type: Field['type'], ...data: number[]): Field => ({ type, data });
    const cases: Field[][] = [
      [f('float32', NaN), f('float32', Infinity)],
      [f('float32', NaN), f('float32', Infinity), f('int32', 4, 5), f('int32', 5, 1), f('int32', 7), f('int32', 1), f('int32', 28)],
      [f('float32', NaN), f('int32', 2, 3, 4), f('int32', 12, 4, 1), f('int32', 24), f('float32', 0.5)],
      [f('int32', 1, 2, 3, 4), f('int32', 2, 3, 4, 5, 6), f('int32', 7), f('int32', 1, 2, 3, 4, 5, 6), f('uint32', 9), f('float32', -1.25)],
      [f('int32', 1, 2, 3, 4, 5), f('int32', 3, 4), f('uint32', 2 ** 31 + 5)],
      [f('int32'), f('float32', 3)],
    ];
    for (const fields of cases) {
      assert.deepEqual(new Uint8Array(packProgramUniforms(fields)), backendUniformBytes(fields), JSON.stringify(fields));
    }
  });

  /** A stand-in device and queue that record what the cache asks of them. */
  function recordingDevice() {
    const log = { bindGroups: 0, buffers: [] as { destroyed: boolean; data: Uint32Array | null }[], writes: 0 };
    const device = {
      createBindGroup: () => ({ id: ++log.bindGroups }),
      createBuffer: ({ size }: { size: number }) => {
        const b = { size, destroyed: false, data: null as Uint32Array | null, destroy() { b.destroyed = true; } };
        log.buffers.push(b);
        return b;
      },
    };
    const queue = {
      writeBuffer: (b: { data: Uint32Array | null }, _o: number, data: ArrayBuffer) => {
        b.data = new Uint32Array(data.slice(0));
        log.writes += 1;
      },
    };
    return { log, cache: new BindGroupCache(device as unknown as GPUDevice, queue as unknown as GPUQueue) };
  }

  test('same buffers and bytes: the same bind group; other bytes: rewritten only once the last use is submitted', () => {
    const { log, cache } = recordingDevice();
    const pipeline = {};
    const layout = () => ({}) as GPUBindGroupLayout;
    const [x, y, z] = [{}, {}, {}] as GPUBuffer[];
    const u = (...v: number[]) => Uint32Array.from(v).buffer;
    const first = cache.bindGroup(pipeline, layout, [x!, y!], u(1, 2));
    assert.equal(cache.bindGroup(pipeline, layout, [x!, y!], u(1, 2)), first, 'same buffers and uniforms: reused');
    assert.notEqual(cache.bindGroup(pipeline, layout, [y!, x!], u(1, 2)), first, 'other binding order: another bind group');
    assert.notEqual(cache.bindGroup({}, layout, [x!, y!], u(1, 2)), first, 'another pipeline: another bind group');
    // Other uniforms while `first` is in the command buffer being recorded: a second entry, `first` untouched.
    const second = cache.bindGroup(pipeline, layout, [x!, y!], u(3, 4));
    assert.notEqual(second, first);
    assert.deepEqual([...log.buffers[0]!.data!], [1, 2]);
    assert.equal(cache.bindGroup(pipeline, layout, [x!, y!], u(1, 2)), first, 'both kept');
    assert.equal(cache.bindGroup(pipeline, layout, [x!, y!], u(3, 4)), second);
    // After the submit, new bytes are written into an entry's own uniform buffer.
    cache.submitted();
    const writes = log.writes;
    assert.equal(cache.bindGroup(pipeline, layout, [x!, y!], u(5, 6)), first);
    assert.equal(log.writes, writes + 1);
    assert.deepEqual([...log.buffers[0]!.data!], [5, 6]);
    // `first` is recorded again now, so other bytes go to `second`, and then to a new entry.
    assert.equal(cache.bindGroup(pipeline, layout, [x!, y!], u(7, 8)), second);
    const made = log.bindGroups;
    cache.bindGroup(pipeline, layout, [x!, y!], u(9, 9));
    assert.equal(log.bindGroups, made + 1);
    assert.deepEqual({ ...cache.stats }, { hits: 3, rewrites: 2, misses: 5, clears: 0 });
    // No uniforms: keyed by the buffers alone.
    const plain = cache.bindGroup(pipeline, layout, [z!]);
    assert.equal(cache.bindGroup(pipeline, layout, [z!]), plain);
  });

  test('at its bound the cache starts over; the old uniform buffers are destroyed at the next submit, not before', () => {
    const { log, cache } = recordingDevice();
    const layout = () => ({}) as GPUBindGroupLayout;
    const bound = 8192;
    for (let i = 0; i <= bound; i++) cache.bindGroup({}, layout, [], Uint32Array.of(i).buffer);
    assert.equal(cache.stats.clears, 1);
    assert.equal(log.buffers.filter((b) => b.destroyed).length, 0, 'still recorded in the open command buffer');
    cache.submitted();
    assert.equal(log.buffers.filter((b) => b.destroyed).length, bound);
    assert.equal(log.buffers.at(-1)!.destroyed, false, "the new cache's entry");
  });
});
