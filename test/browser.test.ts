/**
 * The browser bundle (issue 18) in headless Chromium, on webgpu (SwiftShader) and wasm: embed equals Node's.
 * Needs `npm run build` first (npm test runs it) and Chromium.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'puppeteer-core';
import { selectBackend } from '../src/model/backend.js';
import { embed } from '../src/model/embed.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { launchChromium, openPage, serveStatic, SKIP_NO_CHROMIUM } from './browserHarness.js';
import { HAS_SHARED, ROOT, shared, SKIP_NO_SHARED } from './helpers.js';

const SENTENCES = ['a man is playing a guitar .', 'hello', 'café déjà vu', 'two dogs are running through a field of tall grass near the river bank .'];
const TOL = 1e-5;
const PAGE = `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><script type="module">
import * as micse from '/dist/micse.js';
window.micse = micse;
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

  before(async () => {
    assert.ok(existsSync(path.join(ROOT, 'dist', 'browser', 'micse.js')), 'dist/browser/micse.js is missing: run `npm run build` first');
    if (!HAS_SHARED) return;
    server = await serveStatic({ '/dist/': path.join(ROOT, 'dist', 'browser'), '/model/': shared('hf-reference', 'tiny-h32-l4') }, { '/': PAGE });
    browser = await launchChromium();
    await selectBackend('cpu');
    const p = await loadPretrained(shared('hf-reference', 'tiny-h32-l4'));
    nodeVectors = await embed(p.model, p.tokenizer, SENTENCES);
    p.model.dispose();
  });
  after(async () => {
    await browser?.close();
    await server?.close();
  });

  for (const backend of ['webgpu', 'wasm'] as const) {
    it(`${backend}: loadPretrained(URL) + embed equal Node's within ${TOL}`, async () => {
      const errors: string[] = [];
      const page = await openPage(browser!, server!.url + '/', errors);
      await page.waitForFunction('window.micseReady === true');
      const got = await page.evaluate(async (b: string, sentences: string[]) => {
        const m = (window as unknown as { micse: typeof import('../src/browser/index.js') }).micse;
        const sel = await m.selectBackend(b as 'webgpu' | 'wasm');
        const { model, tokenizer } = await m.loadPretrained('/model/');
        const vectors = await m.embed(model, tokenizer, sentences);
        model.dispose();
        return { backend: sel.tfBackend, vectors };
      }, backend, SENTENCES);
      await page.close();
      assert.equal(got.backend, backend);
      const diff = maxAbsDiff(got.vectors, nodeVectors);
      assert.ok(diff <= TOL, `${backend}: max |browser - node| ${diff}`);
      assert.deepEqual(errors, []);
    });
  }
});
