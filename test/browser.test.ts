/**
 * The browser bundle (issue 18) in headless Chromium, on webgpu (SwiftShader), wasm and cpu: embed equals Node's, and
 * `train` over sentences in memory gives the per-step losses of Node's trainer (cpu) on the same config and seed,
 * and the trained model's exportFiles('hf') loads in Node and embeds as the page does.
 * Needs `npm run build` first (npm test runs it) and Chromium.
 */
import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'puppeteer-core';
import { loadTrainingSentences } from '../src/data/subset.js';
import { selectBackend } from '../src/model/backend.js';
import { embed } from '../src/model/embed.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { defaultConfig, mergeConfig, type PartialTrainConfig } from '../src/train/config.js';
import { train } from '../src/train/trainer.js';
import { launchChromium, openPage, serveStatic, SKIP_NO_CHROMIUM } from './browserHarness.js';
import { HAS_SHARED, lossComparisonConfig, ROOT, shared, SKIP_NO_SHARED } from './helpers.js';

const SENTENCES = ['a man is playing a guitar .', 'hello', 'café déjà vu', 'two dogs are running through a field of tall grass near the river bank .'];
const TOL = 1e-5;
const STEPS = 8;
// Both backends run all STEPS steps of TRAIN_CONFIG, then a second run, on a fresh copy of the checkpoint, that the
// page aborts (through `signal`) after its first step. webgpu here is SwiftShader (WebGPU on the CPU): its step time
// and per-kernel times are in bench/README.md "In the browser".
/** Relative loss tolerance at step 1 and at step STEPS (linear between): float32 sums differ across backends. */
const LOSS_TOL_FIRST = 1e-4;
const LOSS_TOL_LAST = 1e-3;
/** Lines of ../shared/data/wiki1m-head.txt trained on: 6 steps an epoch. */
const CORPUS_LINES = 48;
/**
 * The training config both sides run (lossComparisonConfig: the whole step at batch 8, AMI on the tiny checkpoint's
 * layers 2..3), over CORPUS_LINES sentences, so the STEPS steps cross an epoch.
 */
const TRAIN_CONFIG = lossComparisonConfig(STEPS);
const PAGE = `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><script type="module">
import * as micse from '/dist/micse.js';
window.micse = micse;
// Bytes back to the test as text (page.evaluate returns JSON).
window.toBase64 = (bytes) => {
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
};
window.micseReady = true;
</script>`;

function maxAbsDiff(a: number[][], b: number[][]): number {
  let m = 0;
  a.forEach((row, i) => row.forEach((x, k) => (m = Math.max(m, Math.abs(x - b[i]![k]!)))));
  return m;
}

describe('browser bundle in headless Chromium', { skip: SKIP_NO_SHARED || SKIP_NO_CHROMIUM }, () => {
  let browser: Browser | undefined;
  let server: Awaited<ReturnType<typeof serveStatic>> | undefined;
  let nodeVectors: number[][] = [];
  let sentences: string[] = [];
  let nodeLosses: number[] = [];
  let tmp = '';

  before(async () => {
    assert.ok(existsSync(path.join(ROOT, 'dist', 'browser', 'micse.js')), 'dist/browser/micse.js is missing: run `npm run build` first');
    if (!HAS_SHARED) return;
    server = await serveStatic({ '/dist/': path.join(ROOT, 'dist', 'browser'), '/model/': shared('hf-reference', 'tiny-h32-l4') }, { pages: { '/': PAGE } });
    browser = await launchChromium();
    await selectBackend('cpu');
    const p = await loadPretrained(shared('hf-reference', 'tiny-h32-l4'));
    nodeVectors = await embed(p.model, p.tokenizer, SENTENCES);
    p.model.dispose();

    // Node's trainer on files: the reference losses, and the sentences exactly as it reads them.
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'micse-browser-'));
    const corpus = path.join(tmp, 'train.txt');
    await fs.writeFile(corpus, (await fs.readFile(shared('wiki1m-head.txt'), 'utf8')).split('\n').slice(0, CORPUS_LINES).join('\n') + '\n');
    sentences = (await loadTrainingSentences({ path: corpus })).sentences;
    const config = mergeConfig(defaultConfig(), {
      ...TRAIN_CONFIG,
      model: { init: shared('hf-reference', 'tiny-h32-l4') },
      data: { ...TRAIN_CONFIG.data, train: corpus, senteval: shared('senteval') },
      train: { ...TRAIN_CONFIG.train, output: path.join(tmp, 'run'), backend: 'cpu' },
    }, 'test');
    await train(config, { quiet: true, log: () => {}, onStep: (l) => nodeLosses.push(l.loss) });
  });
  after(async () => {
    await browser?.close();
    await server?.close();
    if (tmp !== '') await fs.rm(tmp, { recursive: true, force: true });
  });

  for (const backend of ['webgpu', 'wasm', 'cpu'] as const) {
    it(`${backend}: loadPretrained(URL) + embed equal Node's within ${TOL}`, async () => {
      const errors: string[] = [];
      const page = await openPage(browser!, server!.url + '/', errors);
      await page.waitForFunction('window.micseReady === true');
      const got = await page.evaluate(async (b: string, sentences: string[]) => {
        const m = (window as unknown as { micse: typeof import('../src/browser/index.js') }).micse;
        const sel = await m.selectBackend(b as 'webgpu' | 'wasm' | 'cpu');
        const { model, tokenizer } = await m.loadPretrained('/model/');
        const vectors = await m.embed(model, tokenizer, sentences);
        model.dispose();
        return { backend: sel.tfBackend, how: m.describeSelection(sel), vectors };
      }, backend, SENTENCES);
      await page.close();
      assert.equal(got.backend, backend);
      if (backend === 'wasm') {
        // The page is cross-origin isolated: the threaded build, whose heap is shared, with the SIMD loops on it.
        assert.match(got.how, /wasm: threaded SIMD build, .*WebAssembly SIMD loops on the shared heap/, got.how);
      }
      const diff = maxAbsDiff(got.vectors, nodeVectors);
      assert.ok(diff <= TOL, `${backend}: max |browser - node| ${diff}`);
      assert.deepEqual(errors, []);
    });
  }

  for (const backend of ['webgpu', 'wasm'] as const) {
    it(`${backend}: train(config, { sentences, model, tokenizer }) gives Node's per-step losses (all ${STEPS} steps), stops on its signal; its exportFiles('hf') embeds in Node as in the page`, async () => {
      const errors: string[] = [];
      const page = await openPage(browser!, server!.url + '/', errors);
      await page.waitForFunction('window.micseReady === true');
      // No function named by a declaration or an object key in here: tsx wraps those in a helper (__name) the page lacks.
      const got = await page.evaluate(async (b: string, config: PartialTrainConfig, sents: string[], probe: string[]) => {
        const m = (window as unknown as { micse: typeof import('../src/browser/index.js') }).micse;
        await m.selectBackend(b as 'webgpu' | 'wasm');
        const { model, tokenizer } = await m.loadPretrained('/model/');
        const steps: number[] = [];
        const opts = { sentences: sents, model, tokenizer } as Parameters<typeof m.train>[1];
        opts.onStep = (l) => steps.push(l.step);
        const r = await m.train(config, opts);
        const vectors = await m.embed(model, tokenizer, probe);
        const files = await m.exportFiles(model, tokenizer, 'hf');
        model.dispose();
        const exported = Object.fromEntries(Object.entries(files)
          .map(([name, bytes]) => [name, (window as unknown as { toBase64: (b: Uint8Array) => string }).toBase64(bytes)]));
        // A second run, aborted after its first step.
        const fresh = await m.loadPretrained('/model/');
        const stop = new AbortController();
        const stoppedSteps: number[] = [];
        const stopOpts = { sentences: sents, model: fresh.model, tokenizer: fresh.tokenizer, signal: stop.signal } as Parameters<typeof m.train>[1];
        stopOpts.onStep = (l) => {
          stoppedSteps.push(l.step);
          stop.abort();
        };
        const aborted = await m.train(config, stopOpts);
        fresh.model.dispose();
        return { steps, metrics: r.metrics, stopped: r.stopped, replayedSteps: r.replayedSteps, vectors, exported, stoppedSteps, abortedStopped: aborted.stopped };
      }, backend, TRAIN_CONFIG, sentences, SENTENCES);
      await page.close();
      assert.equal(nodeLosses.length, STEPS);
      assert.equal(got.stopped, false);
      // webgpu replays recorded steps while the batch shape repeats (train.webgpuReplay, on by default); the losses
      // below are then those of replayed steps too.
      if (backend === 'webgpu') assert.ok((got.replayedSteps ?? 0) > 0, `webgpu replayed ${got.replayedSteps} steps`);
      else assert.equal(got.replayedSteps, null);
      assert.deepEqual(got.steps, Array.from({ length: STEPS }, (_, i) => i + 1));
      assert.deepEqual([got.stoppedSteps, got.abortedStopped], [[1], true], 'the aborted run stops after the step it was aborted in');
      const losses = got.metrics.map((l) => (l as { loss: number }).loss);
      assert.equal(losses.length, STEPS, 'one metrics line per step (logSteps 1, no STS data given)');
      const lines = got.metrics as { epoch: number; ami: number | null }[];
      assert.ok(lines.every((l) => l.ami !== null), 'every step has its AMI term');
      assert.ok(lines[STEPS - 1]!.epoch > lines[0]!.epoch, 'the steps cross an epoch');
      losses.forEach((loss, i) => {
        const rel = Math.abs(loss - nodeLosses[i]!) / Math.abs(nodeLosses[i]!);
        const tol = LOSS_TOL_FIRST + ((LOSS_TOL_LAST - LOSS_TOL_FIRST) * i) / (STEPS - 1);
        assert.ok(rel <= tol, `${backend} step ${i + 1}: loss ${loss} vs Node's ${nodeLosses[i]} (relative ${rel.toExponential(2)} > ${tol.toExponential(2)})`);
      });

      const dir = path.join(tmp, `exported-${backend}`);
      await fs.mkdir(dir);
      for (const [name, b64] of Object.entries(got.exported)) await fs.writeFile(path.join(dir, name), Buffer.from(b64, 'base64'));
      const p = await loadPretrained(dir);
      const inNode = await embed(p.model, p.tokenizer, SENTENCES);
      p.model.dispose();
      const diff = maxAbsDiff(inNode, got.vectors);
      assert.ok(diff <= TOL, `${backend}: the page's export embeds in Node ${diff} away from the page`);
      assert.ok(maxAbsDiff(inNode, nodeVectors) > 1e-4, 'the exported model is the trained one, not the checkpoint');
      assert.deepEqual(errors, []);
    });
  }
});
