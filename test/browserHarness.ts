/**
 * Headless Chromium for the browser tests: a static http server on 127.0.0.1 (with COOP/COEP, so a page is
 * cross-origin isolated and wasm may run threads) and puppeteer-core on /usr/bin/chromium with SwiftShader's WebGPU
 * adapter (../shared/docs/BROWSER-NOTES.md).
 */
import { existsSync, promises as fs } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';

export const CHROMIUM = process.env['MICSE_CHROMIUM'] || '/usr/bin/chromium';
/** Pass as `{ skip }` to tests that drive Chromium. */
export const SKIP_NO_CHROMIUM: string | false = existsSync(CHROMIUM)
  ? false
  : `no Chromium at ${CHROMIUM} (apt-get install chromium, or set MICSE_CHROMIUM): the browser tests are skipped`;

const TYPES: Record<string, string> = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.json': 'application/json', '.wasm': 'application/wasm',
  '.map': 'application/json', '.txt': 'text/plain', '.css': 'text/css', '.csv': 'text/csv', '.tsv': 'text/tab-separated-values',
};

/** Serves each URL prefix of `mounts` from its folder (or one file); extra routes answer with their own bodies. */
export async function serveStatic(mounts: Record<string, string>, pages: Record<string, string> = {}): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    void (async () => {
      const urlPath = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
      const headers = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp', 'Cache-Control': 'no-store' };
      if (pages[urlPath] !== undefined) {
        res.writeHead(200, { ...headers, 'Content-Type': 'text/html' }).end(pages[urlPath]);
        return;
      }
      const prefix = Object.keys(mounts).filter((p) => urlPath.startsWith(p)).sort((a, b) => b.length - a.length)[0];
      const file = prefix === undefined ? undefined : path.join(mounts[prefix]!, urlPath.slice(prefix.length));
      if (file === undefined || file.includes('..')) {
        res.writeHead(404, headers).end();
        return;
      }
      try {
        const body = await fs.readFile(file);
        res.writeHead(200, { ...headers, 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream' }).end(body);
      } catch {
        res.writeHead(404, headers).end();
      }
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

export async function launchChromium(): Promise<Browser> {
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // SwiftShader's WebGPU runs on the CPU: one page call may take minutes on a busy machine.
    protocolTimeout: 600_000,
    args: ['--no-sandbox', '--enable-unsafe-webgpu', '--enable-unsafe-swiftshader', '--use-webgpu-adapter=swiftshader', '--enable-features=Vulkan'],
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
