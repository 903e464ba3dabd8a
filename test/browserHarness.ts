/**
 * Headless Chromium for the browser tests: puppeteer-core on /usr/bin/chromium with SwiftShader's WebGPU adapter
 * (../shared/docs/BROWSER-NOTES.md), pages served by src/browser/serve.ts.
 */
import puppeteer, { type Browser, type Page } from 'puppeteer-core';

import { CHROMIUM } from './helpers.js';
// @ts-expect-error: a plain .mjs module without types
import { TEST_DAWN_FEATURES } from '../scripts/dawnTestToggles.mjs';

export { serveStatic } from '../src/browser/serve.js';
export { SKIP_NO_CHROMIUM } from './helpers.js';

/**
 * Chromium with SwiftShader's WebGPU; with `dawnDefaults` false (the tests) also the tests' Dawn toggles
 * (scripts/dawnTestToggles.mjs), true (the bench) as a user's browser runs.
 */
export async function launchChromium({ dawnDefaults = false }: { dawnDefaults?: boolean } = {}): Promise<Browser> {
  const toggles = dawnDefaults ? [] : [`--enable-dawn-features=${(TEST_DAWN_FEATURES as string[]).join(',')}`];
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // SwiftShader's WebGPU runs on the CPU: one page call may take minutes on a busy machine.
    protocolTimeout: 600_000,
    args: ['--no-sandbox', '--enable-unsafe-webgpu', '--enable-unsafe-swiftshader', '--use-webgpu-adapter=swiftshader', '--enable-features=Vulkan', ...toggles],
  });
}

/**
 * A checkpoint's optional files (loadPretrained asks for each; the shared checkpoints lack some): their 404s are
 * the answer "absent", which Chromium still logs as a console error.
 */
const OPTIONAL_FILE_404 = /\/(special_tokens_map|tokenizer_config|tokenizer)\.json$|\/vocab\.txt$/;

/** Opens `url` in a new page; console errors (but 404s of optional checkpoint files) and page errors go to `errors`. */
export async function openPage(browser: Browser, url: string, errors: string[] = []): Promise<Page> {
  const page = await browser.newPage();
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (/status of 404/.test(m.text()) && OPTIONAL_FILE_404.test(m.location().url ?? '')) return;
    errors.push(`${m.text()} (${m.location().url ?? 'page'})`);
  });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  return page;
}
