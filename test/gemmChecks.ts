/**
 * What test/gemm.test.ts (Node: the null device, a real adapter) and test/gemm-browser.test.ts (SwiftShader in
 * headless Chromium) share: the GEMM variants whose values are checked, and the checks of a run of them
 * (test/gemmCases.ts runs them on a device).
 */
import assert from 'node:assert/strict';
import { blockCols, blockRows, GEMM_TILES, type GemmEpilogue, type GemmTile } from '../src/kernels/platform/gemm.js';
import type { GemmCase, GemmCaseResult } from './gemmCases.js';

export const TOL = 1e-5;
export const TRANSPOSES = [[false, false], [false, true], [true, false], [true, true]] as const;
export const NONE: GemmEpilogue = { bias: false, gelu: false, keepPre: false, residual: false };
export const EPILOGUES: GemmEpilogue[] = [
  NONE,
  { ...NONE, bias: true },
  { ...NONE, gelu: true },
  { ...NONE, bias: true, gelu: true, keepPre: true },
  { ...NONE, bias: true, residual: true },
  { bias: true, gelu: true, keepPre: true, residual: true },
];
/** The largest tile and a smaller one (the value cases run every transpose and form on these). */
export const MAIN_TILE = GEMM_TILES[1]!; // 128 x 128 x 8, 16 KB: fits every WebGPU device
export const SMALL_TILE = GEMM_TILES[5]!; // 64 x 64 x 8

/**
 * The value cases (each distinct variant is one more SwiftShader compile, the tests' main cost): the main tile
 * in the vec4 form and the small one in the scalar form, each with the four transposes; every other tile with one
 * transpose; subgroups off where quads are transposed (A as stored, B^T); each epilogue once, the forms and transposes
 * rotating. Shapes: no side a multiple of its block (vec4: 260 x 132 x 68; scalar: 203 x 131 x 67).
 */
export function valueCases(): GemmCase[] {
  const shape = (vec4: boolean) => (vec4 ? { M: 260, N: 132, K: 68 } : { M: 203, N: 131, K: 67 });
  const cases: GemmCase[] = [];
  const add = (tile: GemmTile, vec4: boolean, subgroups: boolean, e: GemmEpilogue, [transA, transB]: readonly [boolean, boolean]) =>
    cases.push({ ...shape(vec4), transA, transB, tile, subgroups, ...e });
  for (const t of TRANSPOSES) add(MAIN_TILE, true, true, NONE, t);
  for (const t of TRANSPOSES) add(SMALL_TILE, false, true, NONE, t);
  GEMM_TILES.filter((t) => t !== MAIN_TILE && t !== SMALL_TILE).forEach((tile, i) => add(tile, true, true, NONE, TRANSPOSES[i % 4]!));
  add(MAIN_TILE, true, false, NONE, TRANSPOSES[0]);
  add(MAIN_TILE, true, false, NONE, TRANSPOSES[1]);
  EPILOGUES.slice(1).forEach((e, i) => add(MAIN_TILE, i % 2 === 0, true, e, TRANSPOSES[(i + 1) % 4]!));
  return cases;
}

export type GemmRun = { results: GemmCaseResult[]; subgroups: boolean; errors: string[]; leaked: number };
export type DenseRun = { diffs: number[]; bitEqual: boolean[]; gemmDispatches: number; errors: string[]; leaked: number };

/** Every case within TOL of TF.js's, and with `bits` its bits; returns how many ran and how many were bit-equal. */
export function checkGemmRun(cases: GemmCase[], run: GemmRun, bits: boolean): { ran: number; equal: number } {
  assert.deepEqual(run.errors, [], 'WebGPU validation errors');
  assert.equal(run.leaked, 0, 'tensors left behind');
  const ran = run.results.filter((r) => r.skipped === null).length;
  assert.ok(ran >= cases.length - 1, `${ran} of ${cases.length} cases ran (at most the 32 KB tile is beyond the device's workgroup memory)`);
  cases.forEach((c, i) => {
    const r = run.results[i]!;
    const name = `${c.M}x${c.N}x${c.K} ${c.transA ? 'T' : 'N'}${c.transB ? 'T' : 'N'} ${blockRows(c.tile)}x${blockCols(c.tile)}x${c.tile.bk}` +
      `${c.subgroups ? ' sg' : ''}${c.bias ? ' bias' : ''}${c.gelu ? ' gelu' : ''}${c.keepPre ? '+pre' : ''}${c.residual ? ' res' : ''}`;
    if (r.skipped !== null) return;
    assert.ok(r.scaledDiff <= TOL, `${name}: ${r.scaledDiff} from TF.js's`);
    if (bits) assert.ok(r.bitEqual, `${name}: not TF.js's bits (${r.scaledDiff} apart), though both sum in the same order with fma`);
  });
  return { ran, equal: run.results.filter((r) => r.bitEqual).length };
}

/** kernels/dense's y, dx, dW, db with the GEMM on: within TOL of TF.js's (and with `bits` its bits), 4 GEMM dispatches. */
export function checkDenseRun(activation: string, r: DenseRun, bits: boolean): void {
  assert.deepEqual(r.errors, [], 'WebGPU validation errors');
  assert.equal(r.leaked, 0, 'tensors left behind');
  // y twice (in the gradient's pass and alone) and dx, dW: four products on the GEMM
  assert.equal(r.gemmDispatches, 4, `${activation}: GEMM dispatches`);
  r.diffs.forEach((d, i) => {
    const what = `${activation} ${['y', 'dx', 'dW', 'db'][i]}`;
    assert.ok(d <= TOL, `${what}: ${d} from TF.js's`);
    if (bits) assert.ok(r.bitEqual[i], `${what}: not TF.js's bits (${d} apart)`);
  });
}

/** 264 x 256 x 252: just above kernels/gemm's size threshold (2^24 multiply-adds), no side a multiple of a block. */
export const DENSE_SHAPE = [264, 256, 252] as const;
