/**
 * src/kernels/platform/gemm.ts's values on SwiftShader in headless Chromium (test/gemmCases.ts bundled into a page,
 * with the browser bundle's stubs for Node-only modules): every variant of test/gemmChecks.ts gives TF.js's webgpu
 * product (with TF.js's add and erf for the epilogues) bit for bit, both summing in order with fma, and so do
 * kernels/dense's output and gradients with MICSE_WEBGPU_GEMM on and off. Apart from test/gemm.test.ts so that file
 * can be packed for the GPU machine (no Chromium, esbuild or puppeteer there).
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser } from 'puppeteer-core';
import * as esbuild from 'esbuild';
import { GEMM_ENV } from '../src/kernels/gemm/index.js';
import { launchChromium, openPage, serveStatic, SKIP_NO_CHROMIUM } from './browserHarness.js';
import { ROOT, testTempDir } from './helpers.js';
import type { GemmCase, runDenseCase, runGemmCases } from './gemmCases.js';
import { valueCases, checkDenseRun, checkGemmRun, DENSE_SHAPE } from './gemmChecks.js';
// @ts-expect-error: a plain .mjs module without types
import { nodeOnlyStubs } from '../scripts/nodeOnlyStubs.mjs';

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
    const cases = valueCases();
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
