/**
 * src/kernels/platform/gemm.ts: the tile table and the shapes' checks; every variant (tile, transposes, vec4 and
 * scalar forms, subgroups, each epilogue) compiles into a pipeline without a validation error on Dawn's null device
 * (Node, every machine with the `webgpu` package; the real adapter where Node has one), and a TrainStep with
 * MICSE_WEBGPU_GEMM=1 runs its encoder's dense layers on it there. Values (test/gemmCases.ts): on SwiftShader in
 * headless Chromium every variant gives TF.js's webgpu product (with TF.js's add and erf for the epilogues) bit for
 * bit, both summing in order with fma, and so do kernels/dense's output and gradients with the GEMM on and off; on a
 * real adapter in Node (a GPU machine) the same within 1e-5 of scale (its compiler may contract the epilogue's
 * arithmetic differently; the bit-equal count is printed).
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser } from 'puppeteer-core';
import * as esbuild from 'esbuild';
import { DAWN_OPTIONS_ENV, selectBackend } from '../src/model/backend.js';
import { GEMM_ENV, parseGemmMode, useGemm } from '../src/kernels/gemm/index.js';
import { tf } from '../src/model/tf.js';
import {
  blockCols, blockRows, chooseGemmTile, gemmDims, gemmKey, gemmTileBytes, GEMM_TILES, gemmVec4, gemmWgsl, runGemm,
  type GemmEpilogue, type GemmSpec, type GemmTile,
} from '../src/kernels/platform/gemm.js';
import { launchChromium, openPage, serveStatic, SKIP_NO_CHROMIUM } from './browserHarness.js';
import { OBJECTIVE, ROOT, testTempDir, webgpuSkipReason } from './helpers.js';
import { BertModel } from '../src/model/bert.js';
import type { BertConfig } from '../src/model/config.js';
import { MlpHead } from '../src/losses/mlpHead.js';
import { AdamW } from '../src/train/adamw.js';
import { TrainStep, trainableParams } from '../src/train/step.js';
import { observeRawDispatches } from '../src/kernels/platform/webgpuPrograms.js';
import { runDenseCase, runGemmCases, type GemmCase, type GemmCaseResult } from './gemmCases.js';
// @ts-expect-error: a plain .mjs module without types
import { nodeOnlyStubs } from '../scripts/nodeOnlyStubs.mjs';

const TOL = 1e-5;
/** A real WebGPU adapter in Node (a GPU machine; Dawn with a Vulkan driver): false, else why the checks there skip. */
const REAL_SKIP = await webgpuSkipReason();
const TRANSPOSES = [[false, false], [false, true], [true, false], [true, true]] as const;
const NONE: GemmEpilogue = { bias: false, gelu: false, keepPre: false, residual: false };
const EPILOGUES: GemmEpilogue[] = [
  NONE,
  { ...NONE, bias: true },
  { ...NONE, gelu: true },
  { ...NONE, bias: true, gelu: true, keepPre: true },
  { ...NONE, bias: true, residual: true },
  { bias: true, gelu: true, keepPre: true, residual: true },
];
/** The largest tile and a smaller one (the browser cases run every transpose and form on these). */
const MAIN_TILE = GEMM_TILES[1]!; // 128 x 128 x 8, 16 KB: fits every WebGPU device
const SMALL_TILE = GEMM_TILES[5]!; // 64 x 64 x 8

describe('gemm tiles and shapes', () => {
  test('the table: 128 x 128 blocks where there are enough of them, smaller ones where not, none beyond the device', () => {
    assert.deepEqual(GEMM_TILES.map((t) => [blockRows(t), blockCols(t), t.bk, gemmTileBytes(t)]),
      [[128, 128, 16, 32768], [128, 128, 8, 16384], [128, 64, 16, 24576], [128, 64, 8, 12288], [64, 64, 16, 16384], [64, 64, 8, 8192]]);
    // BERT-base's step: the forward products (4,096 rows), and the weight gradients (768 or 3,072 rows).
    const pick = (M: number, N: number, bytes: number) => { const t = chooseGemmTile(M, N, bytes)!; return [blockRows(t), blockCols(t), t.bk]; };
    assert.deepEqual(pick(4096, 3072, 49152), [128, 128, 16]);
    assert.deepEqual(pick(4096, 3072, 16384), [128, 128, 8]);
    assert.deepEqual(pick(4096, 768, 49152), [128, 64, 16]);
    assert.deepEqual(pick(768, 2304, 16384), [64, 64, 16]);
    assert.deepEqual(pick(100, 100, 16384), [64, 64, 16], 'too few blocks of any size: the smallest');
    assert.equal(chooseGemmTile(4096, 4096, 4096), null);
  });

  test('vec4 form only where every contiguous side and N are multiples of 4; shapes that do not multiply are refused', () => {
    assert.equal(gemmVec4(4096, 768, 3072, false, false), true);
    assert.equal(gemmVec4(4097, 768, 3072, false, true), true, 'M is never contiguous unless A is transposed');
    assert.equal(gemmVec4(4097, 768, 3072, true, false), false);
    assert.equal(gemmVec4(64, 64, 70, false, false), false);
    assert.equal(gemmVec4(64, 66, 64, false, true), false, 'C is bound as vec4s too');
    assert.deepEqual(gemmDims([5, 3], [4, 3], false, true), [5, 4, 3]);
    assert.deepEqual(gemmDims([3, 5], [3, 4], true, false), [5, 4, 3]);
    assert.throws(() => gemmDims([5, 3], [4, 3], false, false), /gemm: inner sizes differ: \[5,3\] x \[4,3\]/);
  });

  test(`${GEMM_ENV}: unset and 0 are off, 1 on, nosubgroups on without them; anything else names the variable`, () => {
    assert.deepEqual([undefined, '', '0', '1', 'nosubgroups'].map(parseGemmMode), ['off', 'off', 'off', 'on', 'nosubgroups']);
    assert.throws(() => parseGemmMode('yes'), new RegExp(`^Error: ${GEMM_ENV}='yes': expected 0, 1 or nosubgroups$`));
  });
});

/** Every variant's spec on `tile`: 4 transposes x 2 forms x subgroups on and off x each epilogue. */
function variants(tile: GemmTile, subgroups: boolean): GemmSpec[] {
  return TRANSPOSES.flatMap(([transA, transB]) => [true, false].flatMap((vec4) => [false, ...(subgroups ? [true] : [])].flatMap((sg) =>
    EPILOGUES.map((epilogue) => ({ transA, transB, tile, vec4, subgroups: sg, epilogue })))));
}

describe("gemm on Dawn's null device, or the real adapter where Node has one (pipelines validated)", () => {
  let skip: string | false = false;
  before(async () => {
    // Only where no navigator.gpu was made (one a process): with a real adapter these checks run on it.
    if (REAL_SKIP !== false) process.env[DAWN_OPTIONS_ENV] = 'backend=null';
    try {
      await selectBackend('webgpu');
    } catch (err) {
      skip = `no webgpu package or Dawn here (${(err as Error).message.split('\n')[0]})`;
    }
  });
  after(async () => {
    delete process.env[DAWN_OPTIONS_ENV];
    await selectBackend('cpu');
  });

  test('every tile, transpose, form, subgroup choice and epilogue makes a pipeline without a validation error', async (t) => {
    if (skip !== false) return t.skip(skip);
    // Hundreds of pipelines: instant on the null device, minutes of compiling on a software adapter.
    if (REAL_SKIP === false) return t.skip('a real adapter: the value checks below compile their variants; the null device checks them all');
    const device = (tf.backend() as unknown as { device: GPUDevice }).device;
    const sg = device.features.has('subgroups');
    const fitting = GEMM_TILES.filter((x) => gemmTileBytes(x) <= device.limits.maxComputeWorkgroupStorageSize);
    assert.ok(fitting.length >= 4, 'the 16 KB every device has holds four of the tiles');
    const specs = fitting.flatMap((tile) => variants(tile, sg));
    assert.equal(new Set(specs.map(gemmKey)).size, specs.length, 'one key per variant');
    device.pushErrorScope('validation');
    for (const s of specs) {
      device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: gemmWgsl(s) }), entryPoint: 'main' } });
    }
    const error = await device.popErrorScope();
    assert.equal(error?.message ?? null, null);
  });

  test('runGemm records a dispatch with its bindings (bias, residual, the value before GELU) without an error; bad shapes are refused', async (t) => {
    if (skip !== false) return t.skip(skip);
    const device = (tf.backend() as unknown as { device: GPUDevice }).device;
    const before = tf.memory().numTensors;
    device.pushErrorScope('validation');
    const [a, b, bias, res] = [tf.zeros([300, 64]), tf.zeros([96, 64]), tf.zeros([96]), tf.zeros([300, 96])];
    const out = runGemm(tf.backend(), a, b, { transA: false, transB: true, bias, residual: res, gelu: true, keepPre: true });
    assert.deepEqual(out.map((o) => o.shape), [[300, 96], [300, 96]]);
    const y = out.map((o) => tf.engine().makeTensorFromTensorInfo(o));
    await y[0]!.data();
    assert.throws(() => runGemm(tf.backend(), a, b, { transA: false, transB: false }), /gemm: inner sizes differ/);
    assert.throws(() => runGemm(tf.backend(), a, b, { transA: false, transB: true, bias: res }), /gemm: bias \[300,96\] is not \[96\]/);
    assert.throws(() => runGemm(tf.backend(), a, b, { transA: false, transB: true, tile: { wx: 16, wy: 16, rm: 4, rn: 4, bk: 32 } }),
      new RegExp(`needs 131072 bytes of workgroup memory; this device has ${device.limits.maxComputeWorkgroupStorageSize}`));
    tf.dispose([a, b, bias, res, ...y]);
    const error = await device.popErrorScope();
    assert.equal(error?.message ?? null, null);
    assert.equal(tf.memory().numTensors, before);
  });

  test(`a TrainStep with ${GEMM_ENV}=1 runs every encoder dense layer's three products on the GEMM, without a validation error, tensor count flat`, async (t) => {
    if (skip !== false) return t.skip(skip);
    // 16 sentences x 2 views x 32 tokens = 1,024 rows; hidden 128: every encoder product is at least 2^24 multiply-adds
    const config: BertConfig = { vocabSize: 60, hiddenSize: 128, numHiddenLayers: 4, numAttentionHeads: 2, intermediateSize: 512,
      hiddenAct: 'gelu', hiddenDropoutProb: 0.1, attentionProbsDropoutProb: 0.1, maxPositionEmbeddings: 32, typeVocabSize: 2,
      layerNormEps: 1e-12, padTokenId: 0, initializerRange: 0.02 };
    const inputIds: number[][] = [];
    const attentionMask: number[][] = [];
    for (let s = 0; s < 16; s++) {
      const row = Array.from({ length: 32 }, (_, i) => (i === 0 ? 2 : 3 + ((s * 17 + i * 7) % 55)));
      inputIds.push(row, [...row]);
      attentionMask.push(row.map(() => 1), row.map(() => 1));
    }
    const model = BertModel.random(config, 7);
    const head = new MlpHead(config.hiddenSize, { seed: 3 });
    const optimizer = new AdamW(trainableParams(model, head), { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 });
    const step = new TrainStep(model, head, optimizer, { ...OBJECTIVE, minLayer: 2, maxLayer: 4, targetSamples: 40, training: true });
    const device = (tf.backend() as unknown as { device: GPUDevice }).device;
    let gemms = 0;
    const stop = observeRawDispatches((key) => { if (key.startsWith('micseGemm')) gemms += 1; });
    useGemm('on');
    const counts: number[] = [];
    device.pushErrorScope('validation');
    try {
      for (let i = 0; i < 2; i++) {
        await step.run({ inputIds, attentionMask }, { lr: 1e-4, maxGradNorm: 1, dropoutSeed: i, amiSeed: 100 + i });
        counts.push(tf.memory().numTensors);
      }
    } finally {
      useGemm('off');
      stop();
    }
    const error = await device.popErrorScope();
    optimizer.dispose();
    head.dispose();
    model.dispose();
    assert.equal(error?.message ?? null, null);
    // 4 layers x 4 dense layers (qkv, attention output, intermediate with its GELU, output) x 3 products, 2 steps
    assert.equal(gemms, 2 * 4 * 4 * 3);
    assert.equal(counts[0], counts[1], `tensor counts ${counts.join(', ')}`);
  });
});

/**
 * The browser cases (each distinct variant is one more SwiftShader compile, the test's main cost): the main tile
 * in the vec4 form and the small one in the scalar form, each with the four transposes; every other tile with one
 * transpose; subgroups off where quads are transposed (A as stored, B^T); each epilogue once, the forms and transposes
 * rotating. Shapes: no side a multiple of its block (vec4: 260 x 132 x 68; scalar: 203 x 131 x 67).
 */
function browserCases(): GemmCase[] {
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

/** test/gemmCases.ts bundled for a page (the browser bundle's stubs for Node-only modules). */
async function bundlePage(dir: string): Promise<void> {
  const require = createRequire(import.meta.url);
  const tfjsDir = path.join(ROOT, 'node_modules', '@tensorflow');
  const versions = Object.fromEntries(readdirSync(tfjsDir).filter((n) => !n.startsWith('.'))
    .map((n) => { try { return [`@tensorflow/${n}`, (require(`@tensorflow/${n}/package.json`) as { version: string }).version]; } catch { return null; } })
    .filter((e): e is [string, string] => e !== null));
  await esbuild.build({
    entryPoints: [path.join(ROOT, 'test', 'gemmCases.ts')], outfile: path.join(dir, 'gemm.js'), bundle: true, format: 'esm',
    platform: 'browser', target: 'es2022', logLevel: 'warning',
    define: { 'process.env': '{}', MICSE_BUNDLED_VERSIONS: JSON.stringify(versions) }, plugins: [nodeOnlyStubs()],
  });
}

type GemmRun = { results: GemmCaseResult[]; subgroups: boolean; errors: string[]; leaked: number };
type DenseRun = { diffs: number[]; bitEqual: boolean[]; gemmDispatches: number; errors: string[]; leaked: number };

/** Every case within TOL of TF.js's, and with `bits` its bits; returns how many ran and how many were bit-equal. */
function checkGemmRun(cases: GemmCase[], run: GemmRun, bits: boolean): { ran: number; equal: number } {
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
function checkDenseRun(activation: string, r: DenseRun, bits: boolean): void {
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
const DENSE_SHAPE = [264, 256, 252] as const;

describe('gemm on a real WebGPU adapter in Node (values)', { skip: REAL_SKIP }, () => {
  test(`every tile, transpose, form, subgroup choice and epilogue within ${TOL} of TF.js's product; kernels/dense with ${GEMM_ENV} on too`, async () => {
    const cases = browserCases();
    const { ran, equal } = checkGemmRun(cases, await runGemmCases(cases), false);
    for (const activation of ['linear', 'gelu'] as const) checkDenseRun(activation, await runDenseCase(...DENSE_SHAPE, activation), false);
    await selectBackend('cpu');
    console.log(`gemm: ${ran} cases within ${TOL} of TF.js's product, ${equal} of them bit for bit`);
  });
});

describe('gemm on SwiftShader in headless Chromium (values)', { skip: SKIP_NO_CHROMIUM }, () => {
  let browser: Browser | undefined;
  let server: Awaited<ReturnType<typeof serveStatic>> | undefined;
  const dir = testTempDir('gemm-page');
  before(async () => {
    await bundlePage(dir);
    server = await serveStatic({ '/js/': dir }, { pages: { '/': '<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><script type="module" src="/js/gemm.js"></script>' } });
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await server?.close();
  });

  test(`every tile, transpose, form, subgroup choice and epilogue gives TF.js's product bit for bit (same summation order)`, async () => {
    const errors: string[] = [];
    const page = await openPage(browser!, server!.url + '/', errors);
    await page.waitForFunction('typeof window.runGemmCases === "function"');
    const cases = browserCases();
    const run = await page.evaluate((c: GemmCase[]) => (window as unknown as { runGemmCases: typeof runGemmCases }).runGemmCases(c), cases);
    await page.close();
    assert.deepEqual(errors, []);
    assert.ok(run.subgroups, "SwiftShader's adapter has subgroups: the subgroup variant ran");
    checkGemmRun(cases, run, true);
  });

  test(`kernels/dense with ${GEMM_ENV} on: y and the gradients in x, W and b are TF.js's bit for bit, linear and GELU`, async () => {
    const errors: string[] = [];
    const page = await openPage(browser!, server!.url + '/', errors);
    await page.waitForFunction('typeof window.runDenseCase === "function"');
    for (const activation of ['linear', 'gelu'] as const) {
      const r = await page.evaluate((shape: readonly number[], a: 'linear' | 'gelu') =>
        (window as unknown as { runDenseCase: typeof runDenseCase }).runDenseCase(shape[0]!, shape[1]!, shape[2]!, a), DENSE_SHAPE, activation);
      checkDenseRun(activation, r, true);
    }
    await page.close();
    assert.deepEqual(errors, []);
  });
});
