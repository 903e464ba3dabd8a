/**
 * The Hugging Face cache through @huggingface/hub: the Python layout (blobs/, snapshots/<sha>/ links, refs/<revision>)
 * is read offline and written on download, the token is sent, and a refusal is one line; an interrupted download
 * keeps its `.incomplete` blob and the next run continues it with a Range request, with a progress line. A local HTTP
 * server stands in for the Hub (HF_ENDPOINT); nothing reaches the network.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { UserError } from '../src/errors.js';
import { resolveModelDir } from '../src/model/hub.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { loadSweep } from '../src/sweep/grid.js';
import { checkSweepInputs } from '../src/sweep/inputs.js';
import { shared, SKIP_NO_SHARED, testTempDir } from './helpers.js';

const TMP = testTempDir('hub');
const SHA = '0123456789abcdef0123456789abcdef01234567';
const FILES = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'];
const ENV_KEYS = ['HF_ENDPOINT', 'HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_HUB_OFFLINE', 'HF_HUB_CACHE'] as const;

/** A Python-written cache entry made by hand: blobs/<hash>, snapshots/<sha>/<file> -> ../../blobs/<hash>, refs/main. */
async function pythonLayout(cache: string, modelId: string): Promise<string> {
  const repo = path.join(cache, `models--${modelId.replace('/', '--')}`);
  const snap = path.join(repo, 'snapshots', SHA);
  await fs.mkdir(path.join(repo, 'blobs'), { recursive: true });
  await fs.mkdir(snap, { recursive: true });
  await fs.mkdir(path.join(repo, 'refs'));
  await fs.writeFile(path.join(repo, 'refs', 'main'), SHA);
  for (const f of FILES) {
    const bytes = await fs.readFile(shared('hf-reference', 'tiny-h32-l4', f));
    const hash = createHash('sha256').update(bytes).digest('hex');
    await fs.writeFile(path.join(repo, 'blobs', hash), bytes);
    await fs.symlink(path.join('..', '..', 'blobs', hash), path.join(snap, f));
  }
  return snap;
}

interface Stub {
  server: Server;
  url: string;
  requests: { method: string; url: string; auth: string | undefined; range: string | undefined }[];
  status: number;
  /** When set, a download of a larger file sends its full length in the headers, then this many bytes, then drops the connection. */
  cutAfter: number | null;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/**
 * The Hub API calls for one model: revision info, paths-info (model.safetensors as an LFS file, with its sha256),
 * resolve (with Range). `files` defaults to the tiny reference checkpoint.
 */
async function stubHub(modelId: string, files?: Map<string, Buffer>): Promise<Stub> {
  if (files === undefined) {
    files = new Map<string, Buffer>();
    for (const f of FILES) files.set(f, await fs.readFile(shared('hf-reference', 'tiny-h32-l4', f)));
  }
  const served = files;
  const oid = sha256;
  const stub: Stub = { server: createServer(), url: '', requests: [], status: 200, cutAfter: null };
  const body = async (req: IncomingMessage) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  };
  stub.server.on('request', (req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://stub');
      stub.requests.push({ method: req.method ?? '', url: url.pathname, auth: req.headers.authorization, range: req.headers.range });
      if (stub.status !== 200) {
        res.writeHead(stub.status, { 'Content-Type': 'application/json' }).end(JSON.stringify({ error: 'Access to model is restricted.' }));
        return;
      }
      const json = (v: unknown) => res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(v));
      if (url.pathname === `/api/models/${modelId}/revision/main`) {
        json({ _id: 'x', id: modelId, sha: SHA, private: true, gated: 'manual', downloads: 0, likes: 0, lastModified: '2024-01-01T00:00:00.000Z',
          siblings: [...served.keys(), 'README.md'].map((rfilename) => ({ rfilename })) });
      } else if (url.pathname === `/api/models/${modelId}/paths-info/${SHA}`) {
        const { paths } = JSON.parse(await body(req)) as { paths: string[] };
        json(paths.filter((p) => served.has(p)).map((p) => {
          const bytes = served.get(p)!;
          const lfs = p === 'model.safetensors' ? { lfs: { oid: sha256(bytes), size: bytes.length, pointerSize: 134 } } : {};
          return { path: p, type: 'file', oid: oid(bytes), size: bytes.length, ...lfs };
        }));
      } else if (url.pathname.startsWith(`/${modelId}/resolve/${SHA}/`) && served.has(url.pathname.split('/').pop()!)) {
        const bytes = served.get(url.pathname.split('/').pop()!)!;
        const etag = `"${oid(bytes)}"`;
        const from = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
        if (req.headers.range === 'bytes=0-0') {
          res.writeHead(206, { ETag: etag, 'Content-Range': `bytes 0-0/${bytes.length}`, 'Content-Length': '1' }).end(bytes.subarray(0, 1));
        } else if (stub.cutAfter !== null && bytes.length > stub.cutAfter) {
          res.writeHead(200, { ETag: etag, 'Content-Length': String(bytes.length) });
          res.write(bytes.subarray(0, stub.cutAfter), () => setTimeout(() => res.destroy(), 100)); // let the client take the bytes first
        } else if (from !== null) {
          const start = Number(from[1]);
          res.writeHead(206, { ETag: etag, 'Content-Range': `bytes ${start}-${bytes.length - 1}/${bytes.length}`, 'Content-Length': String(bytes.length - start) })
            .end(bytes.subarray(start));
        } else {
          res.writeHead(200, { ETag: etag, 'Content-Length': String(bytes.length) }).end(bytes);
        }
      } else {
        res.writeHead(404, { 'X-Error-Code': 'EntryNotFound' }).end();
      }
    })();
  });
  await new Promise<void>((resolve) => stub.server.listen(0, '127.0.0.1', resolve));
  stub.url = `http://127.0.0.1:${(stub.server.address() as AddressInfo).port}`;
  return stub;
}

describe('the Hugging Face cache in the Python layout', { skip: SKIP_NO_SHARED }, () => {
  const saved = new Map(ENV_KEYS.map((k) => [k, process.env[k]]));
  let stub: Stub;
  before(async () => {
    stub = await stubHub('org/gated-bert');
    for (const k of ENV_KEYS) delete process.env[k];
  });
  after(async () => {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await new Promise((resolve) => stub.server.close(resolve));
  });

  it('a cache huggingface_hub wrote (blobs, snapshot links, refs/main) is read offline', async () => {
    const cache = await fs.mkdtemp(path.join(TMP, 'py-'));
    const snap = await pythonLayout(cache, 'org/tiny-bert');
    assert.equal(await resolveModelDir('org/tiny-bert', { cacheDir: cache, offline: true }), snap);
    const { model } = await loadPretrained('org/tiny-bert', { cacheDir: cache, offline: true });
    assert.equal(model.config.hiddenSize, 32);
    model.dispose();
  });

  it('the layout this project wrote before (snapshots/main, no blobs) is still read offline', async () => {
    const cache = await fs.mkdtemp(path.join(TMP, 'old-'));
    const snap = path.join(cache, 'models--org--tiny-bert', 'snapshots', 'main');
    await fs.mkdir(snap, { recursive: true });
    for (const f of FILES) await fs.copyFile(shared('hf-reference', 'tiny-h32-l4', f), path.join(snap, f));
    assert.equal(await resolveModelDir('org/tiny-bert', { cacheDir: cache, offline: true }), snap);
  });

  it('a download writes blobs, snapshots/<sha> links and refs/main, sending HF_TOKEN; then it is read offline', async () => {
    const cache = await fs.mkdtemp(path.join(TMP, 'dl-'));
    process.env['HF_ENDPOINT'] = stub.url;
    process.env['HF_TOKEN'] = 'hf_test_token';
    stub.requests.length = 0;
    stub.status = 200;
    const repo = path.join(cache, 'models--org--gated-bert');
    const snap = await resolveModelDir('org/gated-bert', { cacheDir: cache });
    assert.equal(snap, path.join(repo, 'snapshots', SHA));
    assert.equal((await fs.readFile(path.join(repo, 'refs', 'main'), 'utf8')).trim(), SHA);
    assert.deepEqual((await fs.readdir(snap)).sort(), [...FILES].sort(), 'only the checkpoint files (no README.md)');
    for (const f of FILES) {
      const link = path.join(snap, f);
      assert.ok((await fs.lstat(link)).isSymbolicLink(), `${f} is a link`);
      assert.equal(path.dirname(path.resolve(snap, await fs.readlink(link))), path.join(repo, 'blobs'));
      assert.deepEqual(await fs.readFile(link), await fs.readFile(shared('hf-reference', 'tiny-h32-l4', f)));
    }
    assert.ok(stub.requests.length > 0 && stub.requests.every((r) => r.auth === 'Bearer hf_test_token'), JSON.stringify(stub.requests));
    const before = stub.requests.length;
    process.env['HF_HUB_OFFLINE'] = '1';
    try {
      assert.equal(await resolveModelDir('org/gated-bert', { cacheDir: cache }), snap);
    } finally {
      delete process.env['HF_HUB_OFFLINE'];
    }
    assert.equal(await resolveModelDir('org/gated-bert', { cacheDir: cache }), snap, 'online, a cached snapshot is used as is');
    assert.equal(stub.requests.length, before, 'no request once cached');
  });

  it('an interrupted download keeps blobs/<sha256>.incomplete; the next run continues it with a Range request and a progress line', async () => {
    const cache = await fs.mkdtemp(path.join(TMP, 'resume-'));
    const weights = randomBytes(3 << 20); // over PROGRESS_MIN_BYTES: the one file with a progress line
    const files = new Map([['config.json', await fs.readFile(shared('hf-reference', 'tiny-h32-l4', 'config.json'))], ['model.safetensors', weights]]);
    const big = await stubHub('org/big-bert', files);
    process.env['HF_ENDPOINT'] = big.url;
    delete process.env['HF_TOKEN'];
    const repo = path.join(cache, 'models--org--big-bert');
    const part = path.join(repo, 'blobs', `${sha256(weights)}.incomplete`);
    const stderr: string[] = [];
    const write = process.stderr.write;
    try {
      big.cutAfter = 1 << 20;
      await assert.rejects(resolveModelDir('org/big-bert', { cacheDir: cache }), (err: Error) => {
        assert.ok(err instanceof UserError, String(err));
        assert.match(err.message, /^org\/big-bert: could not download model\.safetensors from .*; (\d+) bytes are kept in .*\.incomplete, run again to resume\); put /);
        return true;
      });
      const kept = await fs.readFile(part);
      assert.ok(kept.length > 0 && kept.length <= 1 << 20, `${kept.length} bytes kept`);
      assert.deepEqual(kept, weights.subarray(0, kept.length));
      assert.ok(!existsSync(path.join(repo, 'refs', 'main')), 'no ref before every file is there');

      big.cutAfter = null;
      big.requests.length = 0;
      process.stderr.write = ((chunk: string | Uint8Array) => (stderr.push(String(chunk)), true)) as typeof process.stderr.write;
      const snap = await resolveModelDir('org/big-bert', { cacheDir: cache, progress: true });
      process.stderr.write = write;
      assert.deepEqual(big.requests.filter((r) => r.url.endsWith('/model.safetensors')).map((r) => r.range), [`bytes=${kept.length}-`],
        'the weights are fetched once, from where the part ends');
      assert.deepEqual(await fs.readFile(path.join(snap, 'model.safetensors')), weights);
      assert.ok(!existsSync(part), 'no .incomplete left');
      assert.equal((await fs.readFile(path.join(repo, 'refs', 'main'), 'utf8')).trim(), SHA);
      const lines = stderr.join('').split('\n');
      assert.ok(lines.some((l) => new RegExp(`^org/big-bert model\\.safetensors ${3 << 20}/${3 << 20} .* in \\d+s$`).test(l)), stderr.join(''));
      assert.ok(!lines.some((l) => l.startsWith('org/big-bert config.json')), `no progress line for a small file: ${stderr.join('')}`);

      // A part that is not a prefix of the file: the Hub's sha256 catches it, the part is deleted and the rerun starts over.
      const cache2 = await fs.mkdtemp(path.join(TMP, 'badpart-'));
      const part2 = path.join(cache2, 'models--org--big-bert', 'blobs', `${sha256(weights)}.incomplete`);
      await fs.mkdir(path.dirname(part2), { recursive: true });
      await fs.writeFile(part2, Buffer.alloc(1000, 7));
      await assert.rejects(resolveModelDir('org/big-bert', { cacheDir: cache2, progress: false }),
        /^UserError: org\/big-bert: could not download model\.safetensors from .* \(its sha256 is [0-9a-f]{64}, the Hub says [0-9a-f]{64}; the partial file was deleted, run again\)/);
      assert.ok(!existsSync(part2));
      assert.deepEqual(await fs.readFile(path.join(await resolveModelDir('org/big-bert', { cacheDir: cache2, progress: false }), 'model.safetensors')), weights);
    } finally {
      process.stderr.write = write;
      await new Promise((resolve) => big.server.close(resolve));
    }
  });

  it('with no Hub to reach, a name not cached is one line naming the model, the endpoint and where to put the files', async () => {
    const cache = await fs.mkdtemp(path.join(TMP, 'nonet-'));
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const endpoint = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
    await new Promise((resolve) => closed.close(resolve));
    process.env['HF_ENDPOINT'] = endpoint;
    await assert.rejects(resolveModelDir('org/gated-bert', { cacheDir: cache }), (err: Error) => {
      assert.ok(err instanceof UserError, String(err));
      assert.equal(err.message, `org/gated-bert: could not look up revision main from ${endpoint} (ECONNREFUSED); put config.json and ` +
        `model.safetensors plus tokenizer.json or vocab.txt in ${path.join(cache, 'models--org--gated-bert', 'snapshots', 'main')} (or pass a local checkpoint directory)`);
      return true;
    });
  });

  for (const status of [401, 403]) {
    it(`HTTP ${status} from the Hub is one line naming the model and asking for a token; nothing is cached`, async () => {
      const cache = await fs.mkdtemp(path.join(TMP, 'denied-'));
      process.env['HF_ENDPOINT'] = stub.url;
      delete process.env['HF_TOKEN'];
      stub.status = status;
      try {
        await assert.rejects(resolveModelDir('org/gated-bert', { cacheDir: cache }), (err: Error) => {
          assert.ok(err instanceof UserError, String(err));
          assert.doesNotMatch(err.message, /\n/);
          assert.match(err.message, new RegExp(`^org/gated-bert: .*HTTP ${status}.*a token is needed: set HF_TOKEN`));
          return true;
        });
        assert.deepEqual(await fs.readdir(cache), []);
      } finally {
        stub.status = 200;
      }
    });
  }
});

describe('the sweep input check probes the Hub with the token', () => {
  it('without HF_TOKEN a 401 says a token is needed; with it the gated model counts as reachable', async () => {
    const dir = await fs.mkdtemp(path.join(TMP, 'sweep-'));
    const saved = new Map(ENV_KEYS.map((k) => [k, process.env[k]]));
    const server = createServer((req, res) => res.writeHead(req.headers.authorization === 'Bearer hf_sweep' ? 200 : 401).end());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      for (const k of ENV_KEYS) delete process.env[k];
      process.env['HF_HUB_CACHE'] = path.join(dir, 'hf');
      process.env['HF_ENDPOINT'] = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const file = path.join(dir, 'sweep.yaml');
      await fs.writeFile(file, ['base:', '  model: {init: acme/gated}', `  data: {senteval: ${JSON.stringify(path.join(dir, 'senteval'))}}`,
        'grid:', '  train.seed: [1]', ''].join('\n'));
      const sweep = await loadSweep(file);
      const report = async () => checkSweepInputs(sweep, path.join(dir, 'out')).then(() => '', (e: Error) => e.message);
      assert.match(await report(), /^ {2}model acme\/gated \(1 point\): not in the Hugging Face cache .* cannot be fetched \(HTTP 401: .*a token is needed: set HF_TOKEN/m);
      process.env['HF_TOKEN'] = 'hf_sweep';
      assert.doesNotMatch(await report(), /model acme\/gated/);
    } finally {
      for (const [k, v] of saved) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
