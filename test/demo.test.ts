/**
 * The demo page (issue 18) end to end in headless Chromium, on wasm: load the shared tiny checkpoint by URL, paste
 * sentences, train a few steps (STS-B dev before and after), similarity, search, export a zip; no console error.
 * Screenshots the page after training (into the test's temp folder; MICSE_DEMO_SCREENSHOT=docs/demo.png refreshes the
 * README's). Needs `npm run build` first (npm test runs it) and Chromium.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'puppeteer-core';
import { launchChromium, openPage, serveStatic, SKIP_NO_CHROMIUM } from './browserHarness.js';
import { ROOT, shared, SKIP_NO_SHARED } from './helpers.js';

const DEMO = path.join(ROOT, 'dist', 'demo');
const STEPS = 8;

/** The entry names of a zip archive (its local file headers). */
function zipNames(buf: Buffer): string[] {
  const names: string[] = [];
  let at = 0;
  while (buf.readUInt32LE(at) === 0x04034b50) {
    const size = buf.readUInt32LE(at + 18);
    const nameLen = buf.readUInt16LE(at + 26);
    const extraLen = buf.readUInt16LE(at + 28);
    names.push(buf.subarray(at + 30, at + 30 + nameLen).toString('utf8'));
    at += 30 + nameLen + extraLen + size;
  }
  return names;
}

describe('demo page in headless Chromium', { skip: SKIP_NO_SHARED || SKIP_NO_CHROMIUM }, () => {
  let browser: Browser | undefined;
  let server: Awaited<ReturnType<typeof serveStatic>> | undefined;
  let downloads = '';
  before(async () => {
    assert.ok(existsSync(path.join(DEMO, 'index.html')), 'dist/demo/index.html is missing: run `npm run build` first');
    server = await serveStatic({ '/': DEMO, '/model/': shared('hf-reference', 'tiny-h32-l4') });
    browser = await launchChromium();
    downloads = await fs.mkdtemp(path.join(os.tmpdir(), 'micse-demo-'));
  });
  after(async () => {
    await browser?.close();
    await server?.close();
    if (downloads !== '') await fs.rm(downloads, { recursive: true, force: true });
  });

  it('load a checkpoint, train, STS-B dev before/after, similarity, search and a zip export, with no console error', async () => {
    const errors: string[] = [];
    const page = await openPage(browser!, `${server!.url}/`, errors);
    await page.setViewport({ width: 1150, height: 900 });
    const cdp = await page.createCDPSession();
    await cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: downloads, eventsEnabled: true });
    // The zip is read once Chromium says its download completed (the file appears before all of it is written).
    const downloaded = new Promise<void>((resolve, reject) => {
      cdp.on('Browser.downloadProgress', (e) => {
        if (e.state === 'completed') resolve();
        else if (e.state === 'canceled') reject(new Error('the zip download was canceled'));
      });
    });
    await page.waitForSelector('body[data-ready="true"]');
    assert.notEqual(await page.$eval('#backend-name', (e) => e.textContent), '-', 'the backend in use is shown');

    await page.select('#backend', 'wasm');
    await page.click('#backend-apply');
    await page.waitForFunction(() => document.getElementById('backend-name')!.textContent === 'wasm');

    await page.type('#ckpt-url', '/model/');
    await page.click('#ckpt-load');
    await page.waitForFunction(() => /4 layers/.test(document.getElementById('ckpt-info')!.textContent ?? ''));
    assert.equal(await page.$eval('#preset', (e) => (e as HTMLSelectElement).value), 'tiny', 'a 4-layer model gets the small-model preset');

    const sentences = (await fs.readFile(shared('wiki1m-head.txt'), 'utf8')).split('\n').filter((l) => l.trim() !== '').slice(0, 64);
    await page.$eval('#sentences', (e, text) => {
      (e as HTMLTextAreaElement).value = text;
      e.dispatchEvent(new Event('input'));
    }, sentences.join('\n'));
    await page.$eval('#steps', (e, n) => {
      (e as HTMLInputElement).value = n;
      e.dispatchEvent(new Event('change'));
    }, String(STEPS));

    await page.click('#train');
    await page.waitForFunction(() => document.body.dataset['trained'] !== undefined || document.getElementById('error')!.textContent !== '',
      { timeout: 300_000 });
    assert.equal(await page.$eval('#error', (e) => e.textContent), '', 'training ran without an error');
    assert.equal(await page.$eval('body', (e) => e.dataset['trained']), String(STEPS));
    assert.match(await page.$eval('#p-step', (e) => e.textContent ?? ''), new RegExp(`^${STEPS}/${STEPS}$`));
    assert.match(await page.$eval('#p-loss', (e) => e.textContent ?? ''), /^\d+\.\d{4}$/);
    assert.match(await page.$eval('#sts-result', (e) => e.textContent ?? ''), /before -?\d+\.\d\d, after -?\d+\.\d\d/);

    await page.type('#sim-a', 'a man is playing a guitar .');
    await page.type('#sim-b', 'a person plays the guitar .');
    await page.click('#sim');
    await page.waitForFunction(() => /cosine/.test(document.getElementById('sim-result')!.textContent ?? ''));
    await page.type('#query', sentences[3]!);
    await page.click('#search');
    await page.waitForFunction(() => document.querySelectorAll('#hits tr').length === 5);
    assert.equal(await page.$eval('#hits tr td:nth-child(2)', (e) => e.textContent), sentences[3], 'a sentence is its own nearest neighbour');

    const shot = process.env['MICSE_DEMO_SCREENSHOT'] ? path.resolve(ROOT, process.env['MICSE_DEMO_SCREENSHOT']) : path.join(downloads, 'demo.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok((await fs.stat(shot)).size > 10_000, 'a screenshot of the trained page');

    await page.click('#export');
    await page.waitForSelector('body[data-exported]');
    await downloaded;
    const zipFile = path.join(downloads, 'micse-hf.zip');
    assert.deepEqual(zipNames(await fs.readFile(zipFile)).sort(),
      ['config.json', 'model.safetensors', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.txt']);

    assert.equal(await page.$eval('#error', (e) => e.textContent), '', 'no error shown in the page');
    assert.deepEqual(errors, []);
    await page.close();
  });

  it('a CSV upload is read as the trainer reads it: a quoted field keeps its newline; a malformed file shows its line', async () => {
    const errors: string[] = [];
    const page = await openPage(browser!, `${server!.url}/`, errors);
    await page.waitForSelector('body[data-ready="true"]');
    const csv = path.join(downloads, 'upload.csv');
    await fs.writeFile(csv, 'id,sent0\r\n1,"a quoted field, with a comma\r\nand a newline"\r\n\r\n2,plain\r\n');
    await page.type('#sent-column', 'sent0');
    const input = await page.$('#sent-file');
    await (input as unknown as { uploadFile(p: string): Promise<void> }).uploadFile(csv);
    await page.waitForFunction(() => /^2 sentences/.test(document.getElementById('sent-info')!.textContent ?? ''));
    assert.equal(await page.$eval('#error', (e) => e.textContent), '');
    // "2 sentences": the quoted newline did not split a record. The textarea shows them one after the other (its
    // value normalises line ends to \n).
    assert.equal(await page.$eval('#sentences', (e) => (e as HTMLTextAreaElement).value), 'a quoted field, with a comma\nand a newline\nplain');

    const bad = path.join(downloads, 'bad.csv');
    await fs.writeFile(bad, 'id,sent0\n1,ok\n2,"never closed\n3,x\n');
    await (input as unknown as { uploadFile(p: string): Promise<void> }).uploadFile(bad);
    await page.waitForFunction(() => /bad\.csv:3: malformed CSV/.test(document.getElementById('error')!.textContent ?? ''));
    assert.deepEqual(errors, []);
    await page.close();
  });

  it('an action without its input shows the error in the page', async () => {
    const errors: string[] = [];
    const page = await openPage(browser!, `${server!.url}/`, errors);
    await page.waitForSelector('body[data-ready="true"]');
    await page.click('#train');
    await page.waitForFunction(() => document.getElementById('error')!.textContent === 'load a checkpoint first');
    await page.type('#ckpt-url', '/no-such-model/');
    await page.click('#ckpt-load');
    await page.waitForFunction(() => /no-such-model\/config\.json: missing/.test(document.getElementById('error')!.textContent ?? ''));
    await page.close();
  });

});

describe('npx micse demo', () => {
  it('serves the built page on 127.0.0.1 with COOP/COEP until stopped', async () => {
    const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'micse.js'), 'demo', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /(http:\/\/127\.0\.0\.1:\d+\/)/.exec(out);
          if (m !== null) resolve(m[1]!);
        });
        child.once('exit', (code) => reject(new Error(`micse demo exited with ${code}`)));
      });
      const res = await fetch(url);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('cross-origin-opener-policy'), 'same-origin');
      assert.equal(res.headers.get('cross-origin-embedder-policy'), 'require-corp');
      assert.match(await res.text(), /<script type="module" src="\.\/demo\.js">/);
    } finally {
      child.kill('SIGTERM');
    }
    const code = await new Promise((resolve) => (child.exitCode !== null ? resolve(child.exitCode) : child.once('exit', resolve)));
    assert.equal(code, 0, 'SIGTERM closes the server and exits 0');
  });
});
