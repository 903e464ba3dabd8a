/**
 * A static http server on 127.0.0.1 for the demo page (`micse demo`) and the browser tests. Every answer carries
 * COOP/COEP, so the page is cross-origin isolated and the wasm backend may run threads.
 */
import { promises as fs } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.json': 'application/json',
  '.wasm': 'application/wasm', '.map': 'application/json', '.txt': 'text/plain; charset=utf-8', '.css': 'text/css',
  '.csv': 'text/csv; charset=utf-8', '.tsv': 'text/tab-separated-values; charset=utf-8', '.png': 'image/png', '.svg': 'image/svg+xml',
};

export const ISOLATION_HEADERS = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' } as const;

export interface StaticServer {
  url: string;
  close(): Promise<void>;
}

/**
 * Serves each URL prefix of `mounts` from its folder (`/` -> index.html), and `pages` (URL path -> HTML) as given,
 * on 127.0.0.1:`port` (0: a free one).
 */
export async function serveStatic(mounts: Record<string, string>, opts: { port?: number; pages?: Record<string, string> } = {}): Promise<StaticServer> {
  const pages = opts.pages ?? {};
  const server = http.createServer((req, res) => {
    void (async () => {
      const urlPath = decodeURIComponent(new URL(req.url ?? '/', 'http://127.0.0.1').pathname);
      const headers = { ...ISOLATION_HEADERS, 'Cache-Control': 'no-store' };
      if (pages[urlPath] !== undefined) {
        res.writeHead(200, { ...headers, 'Content-Type': TYPES['.html']! }).end(pages[urlPath]);
        return;
      }
      const prefix = Object.keys(mounts).filter((p) => urlPath.startsWith(p)).sort((a, b) => b.length - a.length)[0];
      let file = prefix === undefined ? undefined : path.join(mounts[prefix]!, urlPath.slice(prefix.length));
      if (file === undefined || urlPath.split('/').includes('..')) {
        res.writeHead(404, headers).end();
        return;
      }
      if (urlPath.endsWith('/')) file = path.join(file, 'index.html');
      try {
        const body = await fs.readFile(file);
        res.writeHead(200, { ...headers, 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream' }).end(body);
      } catch {
        res.writeHead(404, headers).end();
      }
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
