/**
 * `npm run bench -- --browser [--size tiny|small] [--steps N] [--warmup N] [--sides a,b,...] [--rounds N] [--profile]`: the same training
 * step (trainInMemory: the trainer's loop and TrainStep) timed in this Node process and in headless Chromium
 * (dist/browser/micse.js, after `npm run build`), in one run. A random-init model of the bench size with the
 * bert-base-uncased tokenizer, batches of ../shared/data/wiki1m-head.txt truncated to 32 tokens. Prints ms per step
 * (median over the timed steps) per side, and how each side runs its products and element-wise kernels
 * (describeSelection). WebGPU in headless Chromium here is SwiftShader (on the CPU). `--rounds N` runs the sides N
 * times in turn (A B C A B C ...), each with its own warm-up, and takes the median over all rounds' timed steps: on
 * a machine shared with other jobs, every side then meets the same spread of load. `--profile` runs the page sides
 * under tf.profile (on webgpu: GPU timestamps per TF.js kernel; raw dispatches, such as the in-place AdamW, are not
 * timed apart) and prints each side's kernels by time per timed step; profiling submits each kernel alone, so the
 * profiled step times are not the unprofiled ones.
 *
 * Sides (`--sides`, default all):
 *   node-wasm          Node, wasm backend, products on onnxruntime-node's native SGEMM (the default in Node);
 *   node-wasm-xnnpack  Node, wasm backend, products on XNNPACK (the native GEMM switched off: what a page has);
 *   node-cpu           Node, cpu backend (native SGEMM products);
 *   chromium-wasm      the page as served (cross-origin isolated: tfjs-backend-wasm's threaded SIMD build; XNNPACK
 *                      on half the logical cores, at most 8: the package's cap);
 *   chromium-wasm-1t   the page with WASM_HAS_MULTITHREAD_SUPPORT false (TF.js's URL flag `?tfjsflags=`): the
 *                      single-threaded SIMD build;
 *   chromium-webgpu    the page on WebGPU (SwiftShader here).
 */
import os from 'node:os';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { BertTokenizer } from '../src/data/tokenizer.js';
import { describeSelection, selectBackend } from '../src/model/backend.js';
import { BertModel } from '../src/model/bert.js';
import { parseBertConfig } from '../src/model/config.js';
import { serveStatic } from '../src/browser/serve.js';
import { NATIVE_GEMM_ENV, parseNativeGemmChoice, useNativeGemm } from '../src/kernels/stock/index.js';
import type { PartialTrainConfig } from '../src/train/config.js';
import { trainInMemory } from '../src/train/memory.js';
import { launchChromium, openPage } from '../test/browserHarness.js';
import type { SIZES as BenchSizes, SizeName } from './bench.js';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const SHARED_DATA = path.join(process.env['MICSE_SHARED_DIR'] || path.join(ROOT, '..', 'shared'), 'data');

/** Backend and the products' engine (auto: as selectBackend sets it). */
const NODE_SIDES = { 'node-wasm': ['wasm', 'auto'], 'node-wasm-xnnpack': ['wasm', 'off'], 'node-cpu': ['cpu', 'auto'] } as const;
/** Backend and the page's query string. */
const PAGE_SIDES = {
  'chromium-wasm': ['wasm', ''],
  'chromium-wasm-1t': ['wasm', '?tfjsflags=WASM_HAS_MULTITHREAD_SUPPORT:false'],
  'chromium-webgpu': ['webgpu', ''],
} as const;
type Side = keyof typeof NODE_SIDES | keyof typeof PAGE_SIDES;
const SIDES = [...Object.keys(NODE_SIDES), ...Object.keys(PAGE_SIDES)] as Side[];

function benchConfig(s: (typeof BenchSizes)[SizeName], steps: number) {
  return {
    model: { hidden_size: s.hidden, num_hidden_layers: s.layers, num_attention_heads: s.heads, intermediate_size: 4 * s.hidden },
    train: {
      data: { maxSeqLen: s.seqLen },
      objective: { style: 'micse', lambda: 0.1, minLayer: s.minLayer, maxLayer: s.maxLayer },
      train: { batchSize: s.batch, maxSteps: steps, evalSteps: 1_000_000, seed: 42 },
    } satisfies PartialTrainConfig,
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** ms per step after `warmup` steps, from the onStep times. */
function stepTimes(times: number[], warmup: number): number[] {
  return times.slice(warmup + 1).map((t, i) => t - times[warmup + i]!);
}

const PAGE = `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><script type="module">
import * as m from '/dist/micse.js';
window.runBench = async (backend, cfg, sentences, texts, profile) => {
  const how = m.describeSelection(await m.selectBackend(backend));
  const tokenizer = m.BertTokenizer.fromTexts(texts, '/tokenizer');
  const model = m.BertModel.random(m.parseBertConfig({ vocab_size: tokenizer.vocabSize, ...cfg.model }, 'bench'), 0);
  const times = [];
  // With profile: the profile's kernel count at each step's end (the engine's live profile), to split it by step.
  const ends = [];
  const run = async () => {
    await m.train(cfg.train, { sentences, model, tokenizer, onStep: () => {
      times.push(performance.now());
      if (profile) ends.push(m.tf.engine().state.activeProfile.kernels.length);
    } });
    return [];
  };
  let kernels = [];
  if (profile) {
    const info = await m.tf.profile(run);
    kernels = await Promise.all(info.kernels.map(async (k) => {
      const ms = await k.kernelTimeMs;
      return { name: k.name, ms: typeof ms === 'number' ? ms : 0 };
    }));
  } else await run();
  model.dispose();
  return { times, how, kernels, ends };
};
window.ready = true;
</script>`;

/** `SIZES` is bench.ts's (passed in: bench.ts imports this module while its own top-level await runs). */
export async function benchBrowser(argv: string[], SIZES: typeof BenchSizes): Promise<void> {
  let size: SizeName = 'tiny';
  let steps = 6;
  let warmup = 1;
  let sides: Side[] = SIDES;
  let rounds = 1;
  let profile = false;
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, v] = [argv[i], argv[i + 1]];
    if (flag === '--profile') {
      profile = true;
      i -= 1;
    } else if (flag === '--size' && v !== undefined && v in SIZES) size = v as SizeName;
    else if (flag === '--steps' && Number.isInteger(Number(v)) && Number(v) >= 2) steps = Number(v);
    else if (flag === '--warmup' && Number.isInteger(Number(v)) && Number(v) >= 0) warmup = Number(v);
    else if (flag === '--rounds' && Number.isInteger(Number(v)) && Number(v) >= 1) rounds = Number(v);
    else if (flag === '--sides' && v !== undefined && v.split(',').every((s) => (SIDES as string[]).includes(s))) sides = v.split(',') as Side[];
    else throw new Error(`bench --browser: unknown or bad option ${flag} ${v ?? ''} (--size tiny|small|base, --steps N >= 2, --warmup N, --sides ${SIDES.join(',')}, --rounds N, --profile)`);
  }
  const cfg = benchConfig(SIZES[size], warmup + steps + 1);
  const sentences = readFileSync(path.join(SHARED_DATA, 'wiki1m-head.txt'), 'utf8').split('\n').filter((l) => l.trim() !== '').slice(0, 4096);
  const texts = Object.fromEntries(['vocab.txt', 'tokenizer_config.json'].map((f) => [f, readFileSync(path.join(SHARED_DATA, 'bert-base-uncased', f), 'utf8')]));
  const load = () => os.loadavg().map((l) => l.toFixed(1)).join(' ');
  process.stderr.write(`bench --browser: size ${size}, ${steps} timed steps after ${warmup} warm-up, ${rounds} round(s), load average ${load()} on ${os.cpus().length} cores\n`);
  const timed = new Map<Side, { steps: number[]; how: string }>();
  /** Per page side, kernel name -> profiled ms summed over the timed steps, and the timed steps counted. */
  const profiled = new Map<Side, { ms: Map<string, number>; steps: number }>();
  const record = (side: Side, times: number[], how: string) => {
    const st = stepTimes(times, warmup);
    const row = timed.get(side) ?? { steps: [], how };
    row.steps.push(...st);
    timed.set(side, row);
    process.stderr.write(`  ${side}: ${median(st).toFixed(0)} ms/step (load ${load()})\n${how.replace(/^/gm, '    ')}\n`);
  };

  const server = await serveStatic({ '/dist/': path.join(ROOT, 'dist', 'browser') }, { pages: { '/': PAGE } });
  const browser = sides.some((s) => s in PAGE_SIDES) ? await launchChromium({ dawnDefaults: true }) : undefined;
  try {
    for (let round = 0; round < rounds; round++) {
      for (const side of sides) {
        if (side in NODE_SIDES) {
          const [backend, engine] = NODE_SIDES[side as keyof typeof NODE_SIDES];
          const sel = await selectBackend(backend);
          useNativeGemm(engine === 'auto' ? parseNativeGemmChoice(process.env[NATIVE_GEMM_ENV]) : engine);
          const tokenizer = BertTokenizer.fromTexts(texts, 'bert-base-uncased');
          const model = BertModel.random(parseBertConfig({ vocab_size: tokenizer.vocabSize, ...cfg.model }, 'bench'), 0);
          const times: number[] = [];
          await trainInMemory(cfg.train, { sentences, model, tokenizer, onStep: () => times.push(performance.now()) });
          model.dispose();
          record(side, times, describeSelection(sel));
          continue;
        }
        const [backend, query] = PAGE_SIDES[side as keyof typeof PAGE_SIDES];
        const errors: string[] = [];
        const page = await openPage(browser!, `${server.url}/${query}`, errors);
        await page.waitForFunction('window.ready === true');
        const got = (await page.evaluate(`window.runBench(${JSON.stringify(backend)}, ${JSON.stringify(cfg)}, ` +
          `${JSON.stringify(sentences)}, ${JSON.stringify(texts)}, ${profile})`)) as
          { times: number[]; how: string; kernels: { name: string; ms: number }[]; ends: number[] };
        await page.close();
        if (errors.length > 0) throw new Error(`${side}: ${errors.join('; ')}`);
        record(side, got.times, got.how);
        if (profile) {
          // The timed steps are those after the warm-up ones (stepTimes): kernels from the end of step `warmup + 1`.
          const row = profiled.get(side) ?? { ms: new Map<string, number>(), steps: 0 };
          for (const k of got.kernels.slice(got.ends[warmup]!)) row.ms.set(k.name, (row.ms.get(k.name) ?? 0) + k.ms);
          row.steps += got.ends.length - warmup - 1;
          profiled.set(side, row);
        }
      }
    }
  } finally {
    await browser?.close();
    await server.close();
  }
  const rows = [...timed].map(([side, r]) => ({ side, ms: median(r.steps), steps: r.steps }));
  process.stdout.write(`| side | ms/step (median) | steps (ms) |\n|---|---|---|\n` +
    rows.map((r) => `| ${r.side} | ${r.ms.toFixed(0)} | ${r.steps.map((x) => x.toFixed(0)).join(', ')} |`).join('\n') +
    `\n\nsize ${size}, load average after: ${load()}\n`);
  for (const [side, row] of profiled) {
    const perStep = [...row.ms].map(([name, ms]) => [name, ms / row.steps] as const).sort((a, b) => b[1] - a[1]);
    const total = perStep.reduce((a, [, ms]) => a + ms, 0);
    process.stdout.write(`\n${side}, tf.profile over ${row.steps} timed steps: ${total.toFixed(0)} ms of kernel time a step\n` +
      `| kernel | ms/step |\n|---|---|\n${perStep.filter(([, ms]) => ms >= 1).map(([n, ms]) => `| ${n} | ${ms.toFixed(0)} |`).join('\n')}\n`);
  }
}
