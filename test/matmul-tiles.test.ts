/**
 * matmulTiles.ts: MICSE_WEBGPU_MATMUL_TILE is parsed with messages naming it; on webgpu the default tile (8 x 8
 * threads, 4 x 8 outputs each) is the one compiled for large vec4 products, and every product (plain, fused with a
 * bias, either operand transposed, sides that are and are not multiples of the tile, a batch) gives TF.js's own
 * tile's numbers bit for bit and the cpu backend's within 1e-5 of scale. webgpu cases are skipped (with the reason)
 * where no WebGPU adapter exists.
 */
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MATMUL_PROGRAM_FLAG, selectBackend } from '../src/model/backend.js';
import { DEFAULT_MATMUL_TILE, matmulTileBytes, MATMUL_TILE_ENV, parseMatmulTile, useMatmulTile } from '../src/kernels/platform/matmulTiles.js';
import { tf } from '../src/model/tf.js';
import { expectNoGpuErrors, maxScaledDiff, seededValues, webgpuSkipReason } from './helpers.js';

const TOL = 1e-5;
/** tfjs-backend-webgpu's MatMulProgramType.MatMulPackedProgram, for MATMUL_PROGRAM_FLAG. */
const MATMUL_PACKED = 3;
const WEBGPU_SKIP = await webgpuSkipReason();

describe('MICSE_WEBGPU_MATMUL_TILE', () => {
  test('unset is the default tile, tfjs is TF.js own, wx,wy,rows a tile', () => {
    assert.deepEqual(parseMatmulTile(undefined), DEFAULT_MATMUL_TILE);
    assert.deepEqual(parseMatmulTile(''), DEFAULT_MATMUL_TILE);
    assert.equal(parseMatmulTile('tfjs'), null);
    assert.deepEqual(parseMatmulTile('16, 16, 8'), { workgroup: [16, 16], rows: 8 });
    // A 64 x 32 tile of A and a 32 x 32 tile of B: within WebGPU's default 16 KB of workgroup memory.
    assert.equal(matmulTileBytes(DEFAULT_MATMUL_TILE), 12 * 1024);
    assert.equal(matmulTileBytes({ workgroup: [16, 16], rows: 8 }), 48 * 1024);
  });

  test('anything else is an error naming the variable and the reason', () => {
    for (const [text, why] of [['8,8', /expected wx,wy,rows/], ['8,8,6', /powers of two/], ['default', /or tfjs/],
      ['32,16,4', /512 threads/], ['2,16,4', /multiple of wy/]] as const) {
      assert.throws(() => parseMatmulTile(text), (e: Error) => e.message.startsWith(`${MATMUL_TILE_ENV}='${text}'`) && why.test(e.message), text);
    }
  });
});

// [batch or 0 for 2-D, M, K, N, transposeA, transposeB, bias]
type Case = [number, number, number, number, boolean, boolean, boolean];
const CASES: Case[] = [
  [0, 512, 96, 384, false, false, true], // fits the tile, fused bias
  [0, 300, 72, 260, false, false, false], // sides not multiples of 64 or 32
  [0, 256, 512, 256, true, false, false], // transposed A: TF.js's tile
  [0, 512, 128, 256, false, true, false], // transposed B
  [0, 1030, 64, 520, false, false, true],
  [3, 260, 40, 256, false, false, false], // batched
  [0, 300, 70, 260, false, false, false], // K not a multiple of 4: the scalar program, untouched
];

async function products(): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (const [i, [batch, M, K, N, ta, tb, bias]] of CASES.entries()) {
    const lead = batch > 0 ? [batch] : [];
    const aShape = [...lead, ...(ta ? [K, M] : [M, K])];
    const bShape = [...lead, ...(tb ? [N, K] : [K, N])];
    const y = tf.tidy(() => {
      const a = tf.tensor(seededValues(aShape.reduce((p, d) => p * d, 1), 10 + i), aShape);
      const b = tf.tensor(seededValues(bShape.reduce((p, d) => p * d, 1), 20 + i), bShape);
      return bias ? tf.fused.matMul({ a, b, transposeA: ta, transposeB: tb, bias: tf.tensor1d(seededValues(N, 30 + i)) })
        : tf.matMul(a, b, ta, tb);
    });
    out.push(Float32Array.from((await y.data()) as Float32Array));
    y.dispose();
  }
  return out;
}

describe('webgpu matmul tile', { skip: WEBGPU_SKIP }, () => {
  test('the default tile is compiled for large products and gives TF.js own numbers exactly, and cpu within 1e-5', async () => {
    await selectBackend('cpu');
    const cpu = await products();
    await selectBackend('webgpu');
    const backend = tf.backend() as unknown as WebGPUBackend;
    const pipelines = (): string[] => Object.keys((backend as unknown as { pipelineCache: object }).pipelineCache);
    const before = tf.memory().numTensors;
    // The packed program, which the tile is for: TF.js's choice for these products on a GPU, not a software adapter's.
    const program = tf.env().getNumber(MATMUL_PROGRAM_FLAG);
    tf.env().set(MATMUL_PROGRAM_FLAG, MATMUL_PACKED);
    try {
      useMatmulTile(backend, null);
      const stock = await expectNoGpuErrors(products);
      useMatmulTile(backend, DEFAULT_MATMUL_TILE);
      const tiled = await expectNoGpuErrors(products);
      assert.equal(tf.memory().numTensors, before, 'no tensor leaks');
      assert.ok(pipelines().some((k) => k.startsWith('matMulPacked_4,8,1_') && k.includes('_8,8,1')),
        'a program with 4 x 8 outputs a thread was compiled');
      CASES.forEach((c, i) => {
        assert.deepEqual(tiled[i], stock[i], `case ${c}: the same bits as TF.js's tile`);
        assert.ok(maxScaledDiff(tiled[i]!, cpu[i]!) < TOL, `case ${c}: ${maxScaledDiff(tiled[i]!, cpu[i]!)} from cpu`);
      });
    } finally {
      tf.env().set(MATMUL_PROGRAM_FLAG, program);
      useMatmulTile(backend, parseMatmulTile(process.env[MATMUL_TILE_ENV]));
    }
  });

  test('a tile larger than the device allows is refused with the sizes', async () => {
    await selectBackend('webgpu');
    const backend = tf.backend() as unknown as WebGPUBackend;
    const limit = backend.device.limits.maxComputeWorkgroupStorageSize;
    // 16 x 16 threads, 16 rows each: 64 x 256 of A and 64 x 64 of B, 80 KB (no WebGPU device allows that much).
    const tile = { workgroup: [16, 16] as [number, number], rows: 16 };
    assert.ok(matmulTileBytes(tile) > limit);
    assert.throws(() => useMatmulTile(backend, tile), new RegExp(`needs ${matmulTileBytes(tile)} bytes of workgroup memory; this device has ${limit}`));
  });
});
