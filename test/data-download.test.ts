import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { UserError } from '../src/errors.js';
import { datasetFiles, downloadFile } from '../src/data/download.js';

const dir = mkdtempSync(path.join(tmpdir(), 'micse-download-'));
const payload = Buffer.from(Array.from({ length: 20_000 }, (_, i) => `line ${i} of the served corpus\n`).join(''));
const payloadSha = createHash('sha256').update(payload).digest('hex');
/** Requests seen by the server: path and Range header. */
const seen: { path: string; range: string | undefined }[] = [];
let server: Server;
let base = '';
const silent = { progress: false, stream: { write: () => true } as unknown as NodeJS.WriteStream };

before(async () => {
  server = createServer((req, res) => {
    seen.push({ path: req.url ?? '', range: req.headers.range });
    if (req.url === '/missing') {
      res.writeHead(404).end();
      return;
    }
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (req.url === '/file' && range !== null) {
      const start = Number(range[1]);
      if (start >= payload.length) {
        res.writeHead(416, { 'content-range': `bytes */${payload.length}` }).end();
        return;
      }
      res.writeHead(206, { 'content-range': `bytes ${start}-${payload.length - 1}/${payload.length}`, 'content-length': payload.length - start });
      res.end(payload.subarray(start));
      return;
    }
    if (req.url === '/flaky') {
      // sends the headers for the whole file, then half of it, then drops the connection
      res.writeHead(200, { 'content-length': payload.length });
      res.write(payload.subarray(0, 7000), () => setTimeout(() => res.destroy(), 100)); // let the client take the bytes first
      return;
    }
    res.writeHead(200, { 'content-length': payload.length }); // /file without Range, /norange always ignores Range
    res.end(payload);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => {
  server.close();
  rmSync(dir, { recursive: true, force: true });
});

test('full download: bytes, sha256 recorded beside the file, second run verifies and skips', async () => {
  const target = path.join(dir, 'a', 'full.txt');
  const r = await downloadFile({ url: `${base}/file`, target, sha256: null }, silent);
  assert.equal(r.status, 'downloaded');
  assert.deepEqual(readFileSync(target), payload);
  assert.equal(r.sha256, payloadSha);
  assert.equal(readFileSync(`${target}.sha256`, 'utf8'), `${payloadSha}  full.txt\n`);
  assert.equal(existsSync(`${target}.part`), false);
  const n = seen.length;
  const again = await downloadFile({ url: `${base}/file`, target, sha256: null }, silent);
  assert.equal(again.status, 'present');
  assert.equal(seen.length, n, 'no request when present');
  writeFileSync(target, 'tampered');
  await assert.rejects(downloadFile({ url: `${base}/file`, target, sha256: null }, silent), /exists but its sha256 is/);
  const forced = await downloadFile({ url: `${base}/file`, target, sha256: null }, { ...silent, force: true });
  assert.equal(forced.status, 'downloaded');
  assert.deepEqual(readFileSync(target), payload);
});

test('resume: a .part file is continued with an HTTP Range request', async () => {
  const target = path.join(dir, 'resume.txt');
  writeFileSync(`${target}.part`, payload.subarray(0, 12_345));
  const before = seen.length;
  const r = await downloadFile({ url: `${base}/file`, target, sha256: payloadSha }, silent);
  assert.equal(r.status, 'resumed');
  assert.deepEqual(seen.slice(before), [{ path: '/file', range: 'bytes=12345-' }]);
  assert.deepEqual(readFileSync(target), payload);
});

test('resume: a complete .part (416) is finished without a body; a server ignoring Range restarts', async () => {
  const t1 = path.join(dir, 'complete.txt');
  writeFileSync(`${t1}.part`, payload);
  assert.equal((await downloadFile({ url: `${base}/file`, target: t1, sha256: payloadSha }, silent)).sha256, payloadSha);
  const t2 = path.join(dir, 'norange.txt');
  writeFileSync(`${t2}.part`, 'garbage that must not stay');
  await downloadFile({ url: `${base}/norange`, target: t2, sha256: payloadSha }, silent);
  assert.deepEqual(readFileSync(t2), payload);
});

test('interrupted transfer keeps the .part and says so; the rerun resumes', async () => {
  const target = path.join(dir, 'flaky.txt');
  await assert.rejects(
    downloadFile({ url: `${base}/flaky`, target, sha256: null }, silent),
    (e: unknown) => e instanceof UserError && e.message.includes(`${base}/flaky`) && /rerun to resume/.test(e.message),
  );
  const kept = readFileSync(`${target}.part`);
  assert.ok(kept.length > 0 && kept.length <= 7000);
  assert.deepEqual(kept, payload.subarray(0, kept.length));
  // the same file is also served with Range support at /file: resume from there
  const r = await downloadFile({ url: `${base}/file`, target, sha256: payloadSha }, silent);
  assert.equal(r.status, 'resumed');
  assert.deepEqual(readFileSync(target), payload);
});

test('offline / unreachable: UserError naming the URL and the target path', async () => {
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const url = `http://127.0.0.1:${port}/wiki1m_for_simcse.txt`;
  const target = path.join(dir, 'offline.txt');
  await assert.rejects(
    downloadFile({ url, target, sha256: null }, silent),
    (e: unknown) => e instanceof UserError && e.message.includes(url) && e.message.includes(target) && /ECONNREFUSED/.test(e.message),
  );
  await assert.rejects(downloadFile({ url: `${base}/missing`, target, sha256: null }, silent), /HTTP 404/);
});

test('checksum mismatch deletes the part and fails', async () => {
  const target = path.join(dir, 'bad.txt');
  await assert.rejects(downloadFile({ url: `${base}/file`, target, sha256: '0'.repeat(64) }, silent), /sha256 of the download is/);
  assert.equal(existsSync(`${target}.part`), false);
  assert.equal(existsSync(target), false);
});

test('dataset file lists use the documented URLs', () => {
  assert.deepEqual(datasetFiles('wiki1m', 'd').map((s) => [s.url, s.target]), [
    ['https://huggingface.co/datasets/princeton-nlp/datasets-for-simcse/resolve/main/wiki1m_for_simcse.txt', path.join('d', 'wiki1m_for_simcse.txt')],
  ]);
  const few = datasetFiles('fewshot-subsets', 'd');
  assert.equal(few.length, 36);
  assert.ok(few.some((s) => s.url.endsWith('/raw/main/wiki_subset_1M_000.0064percent_seed48.txt')));
  assert.ok(few.some((s) => s.url.endsWith('/resolve/main/wiki_subset_1M_010.00percent_seed52.txt')));
  assert.ok(few.some((s) => s.url.endsWith('/resolve/main/wiki_subset_1M_100.00percent.txt')));
});
