/**
 * src/kernels/platform/gemm.ts: the tile table and the shapes' checks; every variant (tile, transposes, vec4 and
 * scalar forms, subgroups, each epilogue) compiles into a pipeline without a validation error on Dawn's null device
 * (every machine with the `webgpu` package; in a child process where this one has a real adapter), and a TrainStep
 * with MICSE_WEBGPU_GEMM=1 records its encoder's dense layers on it there without a validation error. Values, on a
 * real adapter in Node (a GPU machine, lavapipe; test/gemmCases.ts): every variant of test/gemmChecks.ts within 1e-5
 * of scale of TF.js's webgpu product (with TF.js's add and erf for the epilogues), and kernels/dense's output and
 * gradients with the GEMM on and off, the bit-equal count printed (a GPU compiler may contract the epilogue's
 * arithmetic differently); on SwiftShader they are test/gemm-browser.test.ts's, TF.js's bits. Packable for the GPU
 * machine (bench/device/pack.sh).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { DAWN_OPTIONS_ENV, selectBackend } from '../src/model/backend.js';
import { GEMM_ENV, parseGemmMode, useGemm } from '../src/kernels/gemm/index.js';
import { tf } from '../src/model/tf.js';
import {
  blockCols, blockRows, chooseGemmTile, gemmDims, gemmKey, gemmTileBytes, GEMM_TILES, gemmVec4, gemmWgsl, runGemm,
  type GemmSpec, type GemmTile,
} from '../src/kernels/platform/gemm.js';
import { escapeRegExp, OBJECTIVE, SKIP_NO_CHROMIUM, softwareWebgpuAdapter, webgpuSkipReason } from './helpers.js';
import { BertModel } from '../src/model/bert.js';
import type { BertConfig } from '../src/model/config.js';
import { MlpHead } from '../src/losses/mlpHead.js';
import { AdamW } from '../src/train/adamw.js';
import { TrainStep, trainableParams } from '../src/train/step.js';
import { observeRawDispatches } from '../src/kernels/platform/webgpuPrograms.js';
import { runDenseCase, runGemmCases } from './gemmCases.js';
import { valueCases, checkDenseRun, checkGemmRun, DENSE_SHAPE, EPILOGUES, TOL, TRANSPOSES } from './gemmChecks.js';

/**
 * Set in the child process that runs the pipeline check on Dawn's null device where this process has a real adapter
 * (one navigator.gpu a process).
 */
const NULL_CHILD_ENV = 'MICSE_GEMM_NULL_CHILD';
const NULL_CHILD = process.env[NULL_CHILD_ENV] === '1';
const NULL_DEVICE_SUITE = "gemm on Dawn's null device (pipelines validated, nothing run)";
/** A real WebGPU adapter in Node (a GPU machine; Dawn with a Vulkan driver): false, else why the checks there skip. */
const REAL_SKIP = NULL_CHILD ? 'the null-device child process' : await webgpuSkipReason();
/**
 * The value checks in Node skip on SwiftShader where Chromium is here: test/gemm-browser.test.ts runs the same cases
 * on the same SwiftShader there, and checks TF.js's bits besides.
 */
const VALUES_SKIP = REAL_SKIP !== false ? REAL_SKIP
  : SKIP_NO_CHROMIUM === false && /swiftshader/i.test((await softwareWebgpuAdapter()) ?? '')
    ? 'SwiftShader, which test/gemm-browser.test.ts checks these values on, bit for bit' : false;

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

/**
 * Where this process has a real adapter (one navigator.gpu a process), the null-device checks run in a child process:
 * there hundreds of pipelines compile in no time, and a TrainStep's dispatches are validated without running (its
 * values are the value checks' business, below and in test/gemm-browser.test.ts).
 */
describe("gemm on Dawn's null device, in a child process where this one has a real adapter", { skip: REAL_SKIP !== false ? 'the null-device checks run in this process' : false }, () => {
  test('the null-device checks pass in a child process', () => {
    const env: NodeJS.ProcessEnv = { ...process.env, [NULL_CHILD_ENV]: '1' };
    delete env['NODE_TEST_CONTEXT'];
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=tap', `--test-name-pattern=^${escapeRegExp(NULL_DEVICE_SUITE)}$`,
      fileURLToPath(import.meta.url)], { env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^# pass 3$/m, r.stdout);
  });
});

describe(NULL_DEVICE_SUITE, { skip: REAL_SKIP === false ? 'a real adapter in this process: the checks run in a child process (above)' : false }, () => {
  let skip: string | false = false;
  before(async () => {
    process.env[DAWN_OPTIONS_ENV] = 'backend=null';
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

  test(`a TrainStep with ${GEMM_ENV}=1 runs the large dense layers' three products on the GEMM, without a validation error, tensor count flat`, async (t) => {
    if (skip !== false) return t.skip(skip);
    // 16 sentences x 2 views x 32 tokens = 1,024 rows; hidden 128: every encoder product is at least 2^24 multiply-adds
    const config: BertConfig = { vocabSize: 60, hiddenSize: 128, numHiddenLayers: 2, numAttentionHeads: 2, intermediateSize: 512,
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
    const step = new TrainStep(model, head, optimizer, { ...OBJECTIVE, minLayer: 0, maxLayer: 2, targetSamples: 40, training: true });
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
    // 3 products of each dense layer on the GEMM, 2 steps: the first layer's 4 (qkv, attention output, intermediate
    // with its GELU, output) and the last layer's qkv; past its attention the last layer runs on the 32 [CLS] rows
    // (bert.ts firstTokenOnly), below the GEMM's MIN_SIDE, so on TF.js's products
    assert.equal(gemms, 2 * (4 + 1) * 3);
    assert.equal(counts[0], counts[1], `tensor counts ${counts.join(', ')}`);
  });
});

describe('gemm on a real WebGPU adapter in Node (values)', { skip: VALUES_SKIP }, () => {
  test(`every tile, transpose, form, subgroup choice and epilogue within ${TOL} of TF.js's product; kernels/dense with ${GEMM_ENV} on too`, async () => {
    const cases = valueCases();
    const { ran, equal } = checkGemmRun(cases, await runGemmCases(cases), false);
    for (const activation of ['linear', 'gelu'] as const) checkDenseRun(activation, await runDenseCase(...DENSE_SHAPE, activation), false);
    await selectBackend('cpu');
    console.log(`gemm: ${ran} cases within ${TOL} of TF.js's product, ${equal} of them bit for bit`);
  });
});
