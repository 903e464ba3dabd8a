/**
 * Acceptance for issue 10 (similarity, semantic search, clustering), on the unique STS-B dev sentences embedded by
 * the shared tiny-h32-l4 checkpoint (wasm backend):
 *   - recall@10 of the usearch index against exact brute-force search >= 0.99; build and search speed printed;
 *   - an interrupted build resumes to the same vectors and texts; a finished one is not redone;
 *   - an index refuses queries from a model with another fingerprint (API and CLI, exit 2);
 *   - clustering is deterministic under a seed, gives every line an id, recovers planted groups, and rejects
 *     empty input and k > n with UserErrors;
 *   - similarity scores are the cosines of `embed`'s vectors.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, promises as fs, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readStsBenchmark } from '../eval/senteval.js';
import { MAX_LINE_BYTES, READ_CHUNK_BYTES } from '../src/data/readers.js';
import { UserError } from '../src/errors.js';
import { FAULT_ENV, FAULT_SIGNAL_ENV } from '../src/faultPoints.js';
import { selectBackend } from '../src/model/backend.js';
import { embed } from '../src/model/embed.js';
import { encodeNpy } from '../src/model/npy.js';
import { loadPretrained, type Pretrained } from '../src/model/pretrained.js';
import { tf } from '../src/model/tf.js';
import { buildIndex } from '../src/use/build.js';
import { INDEX_FILES, INDEX_LOCK_FILE } from '../src/use/indexDir.js';
import { readNpyMatrix } from '../src/use/npyAppend.js';
import { cluster, clusterVectors, UNASSIGNED } from '../src/use/cluster.js';
import { modelFingerprint } from '../src/use/fingerprint.js';
import { MAX_TEXTS_ROW_BYTES, openIndex, readTexts } from '../src/use/search.js';
import { similarity } from '../src/use/similarity.js';
import { pairsFromArgs, readPairsFile } from '../src/use/pairs.js';
import { cosine, exactTopK, normalizeRows, recallAtK, row, toMatrix } from '../src/use/vectors.js';
import { micseHere } from './cliHere.js';
import { deadPid, ROOT, shared, SKIP_NO_SHARED } from './helpers.js';

const MODEL = shared('hf-reference', 'tiny-h32-l4');
const OTHER_MODEL = shared('hf-reference', 'tiny-h64-l2-pretraining');
const K = 10;
/** Every QUERY_STRIDE-th corpus sentence is a query (about 490 queries). */
const QUERY_STRIDE = 6;
const MIN_RECALL = 0.99;
/** Cosines within this of the exact 10th are ties (duplicate or float-equal vectors are interchangeable). */
const TIE_TOLERANCE = 1e-6;

const TMP = mkdtempSync(path.join(os.tmpdir(), 'micse-use-'));
after(() => rmSync(TMP, { recursive: true, force: true }));

function micse(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'micse.js'), ...args], { cwd: TMP, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The last line of a command's stderr (its one-line error). */
const lastLine = (stderr: string) => stderr.trim().split('\n').at(-1);

/**
 * Starts `micse ARGS` (in TMP) stopping at the fault point `point` (MICSE_FAULT_SIGNAL=SIGSTOP): `stopped` resolves
 * once it has stopped there, `done` when it has exited (after SIGCONT).
 */
function startStopping(point: string, ...args: string[]) {
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'micse.js'), ...args],
    { cwd: TMP, env: { ...process.env, [FAULT_ENV]: point, [FAULT_SIGNAL_ENV]: 'SIGSTOP' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  const stopped = new Promise<void>((resolve, reject) => {
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (stderr.includes(`fault point ${point}: stopped`)) resolve();
    });
    child.once('exit', () => reject(new Error(`exited before stopping at ${point}: ${stderr}`)));
  });
  const done = new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) =>
    child.once('close', (status) => resolve({ status, stdout, stderr })));
  return { child, pid: child.pid!, stopped, done };
}

/**
 * Makes every write under `root` through node:fs/promises (the one the code writes with) fail with EROFS, as a
 * read-only folder would for root too (chmod does not stop root); returns the function that undoes it.
 */
function readOnlyUnder(root: string): () => void {
  const api = fs as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const saved = ['writeFile', 'appendFile', 'link', 'symlink', 'rm', 'rmdir', 'unlink', 'mkdir', 'rename', 'copyFile', 'truncate', 'open']
    .map((name) => [name, api[name]!] as const);
  const under = (a: unknown) => typeof a === 'string' && (path.resolve(a) === root || path.resolve(a).startsWith(root + path.sep));
  for (const [name, real] of saved) {
    api[name] = (...args: unknown[]) => {
      const writes = name !== 'open' || (args[1] !== undefined && args[1] !== 'r');
      if (writes && args.slice(0, 2).some(under)) {
        return Promise.reject(Object.assign(new Error(`EROFS: read-only file system, ${name} '${String(args[0])}'`), { code: 'EROFS', syscall: name, path: args[0] }));
      }
      return real.apply(fs, args);
    };
  }
  return () => {
    for (const [name, real] of saved) api[name] = real;
  };
}

it('the .npy codec: encodeNpy (micse embed --format npy) reads back through readNpyMatrix (the index vectors)', async () => {
  const rows = [Float32Array.of(1, -2.5, 3), Float32Array.of(0.125, 1e-7, -0)];
  const file = path.join(TMP, 'codec.npy');
  writeFileSync(file, encodeNpy(rows, 3));
  const m = await readNpyMatrix(file);
  assert.deepEqual([m.rows, m.cols], [2, 3]);
  assert.deepEqual(Array.from(m.data), rows.flatMap((r) => Array.from(r)));
  writeFileSync(file, Buffer.from('not numpy'));
  await assert.rejects(readNpyMatrix(file), (err: unknown) => err instanceof UserError && err.message === `${file}: not a .npy file`);
});

describe('semantic search on the STS-B dev sentences', { skip: SKIP_NO_SHARED }, () => {
  let pretrained: Pretrained;
  let sentences: string[];
  let corpus: string;
  const indexDir = path.join(TMP, 'stsb-index');

  before(async () => {
    await selectBackend('wasm');
    pretrained = await loadPretrained(MODEL);
    const dev = readStsBenchmark(shared('senteval'), 'dev');
    sentences = [...new Set([...dev.s1, ...dev.s2])];
    corpus = path.join(TMP, 'stsb-dev-sentences.txt');
    writeFileSync(corpus, sentences.join('\n') + '\n');
  });
  after(() => pretrained.model.dispose());

  it(`builds a usearch index whose recall@${K} against exact search is >= ${MIN_RECALL}, and prints speeds`, async (t) => {
    const tensors = tf.memory().numTensors;
    const report = await buildIndex(pretrained, { corpus, out: indexDir, chunkSize: 1000 });
    const meta = report.meta;
    assert.equal(meta.count, sentences.length);
    assert.equal(meta.dim, 32);
    assert.equal(meta.ann.library, 'usearch');
    assert.ok(meta.build.sentencesPerSecond > 0 && meta.build.vectorsPerSecond > 0);
    assert.equal(meta.model.fingerprint.sha256, (await modelFingerprint(MODEL, 'cls_before_pooler', 512)).sha256);
    t.diagnostic(`build: ${meta.count} sentences embedded at ${meta.build.sentencesPerSecond.toFixed(0)} sentences/s, ` +
      `indexed at ${meta.build.vectorsPerSecond.toFixed(0)} vectors/s`);

    // The stored vectors are embed()'s, in corpus order, readable by the project's .npy decoder.
    const npy = await readNpyMatrix(path.join(indexDir, INDEX_FILES.vectors));
    assert.deepEqual([npy.rows, npy.cols], [sentences.length, 32]);
    const probe = [0, 1234, sentences.length - 1];
    const ref = await embed(pretrained.model, pretrained.tokenizer, probe.map((i) => sentences[i]!));
    probe.forEach((i, j) => {
      for (let d = 0; d < 32; d++) assert.ok(Math.abs(npy.data[i * 32 + d]! - ref[j]![d]!) < 1e-5, `row ${i} dim ${d}`);
    });
    const texts = readFileSync(path.join(indexDir, INDEX_FILES.texts), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { text: string; line: number });
    assert.deepEqual(texts.map((x) => x.text), sentences);
    assert.deepEqual(texts.slice(0, 3).map((x) => x.line), [1, 2, 3]);

    const index = await openIndex(indexDir, { model: pretrained });
    const queries = sentences.filter((_, i) => i % QUERY_STRIDE === 0);
    const ann = await index.search(queries, K);
    const exact = await index.search(queries, K, { exact: true });
    let strict = 0;
    let ties = 0;
    ann.hits.forEach((hits, i) => {
      assert.equal(hits.length, K);
      strict += recallAtK(hits, exact.hits[i]!, K, 0);
      ties += recallAtK(hits, exact.hits[i]!, K, TIE_TOLERANCE);
    });
    const recallStrict = strict / queries.length;
    const recallTies = ties / queries.length;
    t.diagnostic(`recall@${K} over ${queries.length} queries: ${recallStrict.toFixed(4)} (same ids), ${recallTies.toFixed(4)} (ties within ${TIE_TOLERANCE})`);
    t.diagnostic(`search: ANN ${(ann.searchMs / queries.length).toFixed(3)} ms/query (${((1000 * queries.length) / ann.searchMs).toFixed(0)} queries/s), ` +
      `exact ${(exact.searchMs / queries.length).toFixed(3)} ms/query; query embedding ${(ann.embedMs / queries.length).toFixed(3)} ms/query`);
    assert.ok(recallStrict >= MIN_RECALL, `strict recall@${K} ${recallStrict}`);
    assert.ok(recallTies >= MIN_RECALL, `tie-aware recall@${K} ${recallTies}`);

    // The exact path is the plain brute force over the stored vectors.
    const unit = normalizeRows({ data: npy.data, rows: npy.rows, dim: npy.cols });
    const qv = normalizeRows(toMatrix(await embed(pretrained.model, pretrained.tokenizer, queries.slice(0, 5)), 32));
    for (let i = 0; i < 5; i++) {
      const bf = exactTopK(unit, row(qv, i), K);
      assert.deepEqual(exact.hits[i]!.map((h) => h.id), bf.map((h) => h.id));
    }
    // Hits carry the indexed text and its line.
    const h = exact.hits[0]![0]!;
    assert.equal(h.text, sentences[h.id]);
    assert.equal(h.line, h.id + 1);
    index.dispose();
    assert.equal(tf.memory().numTensors, tensors, 'building and searching leaves no tensors behind');
  });

  it('resumes an interrupted build to the same vectors and texts, and does not redo a finished one', async () => {
    const out = path.join(TMP, 'resumed-index');
    const chunks: number[] = [];
    await assert.rejects(
      buildIndex(pretrained, {
        corpus, out, chunkSize: 500,
        onChunk: (rows) => {
          chunks.push(rows);
          if (rows === 1000) throw new Error('simulated kill after two chunks');
        },
      }),
      /simulated kill/,
    );
    assert.deepEqual(chunks, [500, 1000]);
    const progress = JSON.parse(readFileSync(path.join(out, INDEX_FILES.progress), 'utf8')) as { rows: number };
    assert.equal(progress.rows, 1000);
    await assert.rejects(openIndex(out, { model: null }), (e: unknown) => e instanceof UserError && /interrupted.*rerun/.test(e.message));

    const resumed = await buildIndex(pretrained, { corpus, out, chunkSize: 500, onChunk: (rows) => chunks.push(rows) });
    assert.equal(resumed.resumedRows, 1000);
    assert.equal(chunks[2], 1500, 'the rerun starts at the third chunk');
    assert.equal(resumed.meta.count, sentences.length);
    assert.equal(readFileSync(path.join(out, INDEX_FILES.texts), 'utf8'), readFileSync(path.join(indexDir, INDEX_FILES.texts), 'utf8'));
    const a = await readNpyMatrix(path.join(out, INDEX_FILES.vectors));
    const b = await readNpyMatrix(path.join(indexDir, INDEX_FILES.vectors));
    assert.deepEqual([a.rows, a.cols], [b.rows, b.cols]);
    let maxDiff = 0;
    for (let i = 0; i < a.data.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a.data[i]! - b.data[i]!));
    assert.ok(maxDiff < 1e-5, `resumed vectors differ from a one-shot build by ${maxDiff}`);
    await assert.rejects(fs.access(path.join(out, INDEX_FILES.progress)));

    const again = await buildIndex(pretrained, { corpus, out, chunkSize: 500 });
    assert.equal(again.upToDate, true);
    // Another corpus into the same folder is refused unless forced.
    const small = path.join(TMP, 'small.txt');
    writeFileSync(small, sentences.slice(0, 20).join('\n') + '\n');
    await assert.rejects(buildIndex(pretrained, { corpus: small, out }), (e: unknown) => e instanceof UserError && /already holds an index.*--force/.test(e.message));
  });

  it('refuses queries from a model with another fingerprint; the same weights elsewhere are accepted', async () => {
    // Same architecture, one weight changed: a "retrained" copy.
    const changed = path.join(TMP, 'changed-model');
    const copy = path.join(TMP, 'copied-model');
    for (const dir of [changed, copy]) {
      await fs.mkdir(dir, { recursive: true });
      for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'vocab.txt']) await fs.copyFile(path.join(MODEL, f), path.join(dir, f));
    }
    const weights = path.join(changed, 'model.safetensors');
    await fs.chmod(weights, 0o644);
    const buf = readFileSync(weights);
    buf[buf.length - 1] ^= 0x01;
    writeFileSync(weights, buf);

    for (const other of [changed, OTHER_MODEL]) {
      await assert.rejects(openIndex(indexDir, { model: other }),
        (e: unknown) => e instanceof UserError && /built by model .*tiny-h32-l4 \(fingerprint [0-9a-f]{12}\).*fingerprint [0-9a-f]{12}: embeddings of different models are not comparable/.test(e.message));
    }
    const ok = await openIndex(indexDir, { model: copy });
    const { hits } = await ok.search(['a man is playing a guitar .'], 3);
    assert.equal(hits[0]!.length, 3);
    ok.dispose();

    const r = micse('search', '--backend', 'wasm', '--index', indexDir, '--model', changed, '--query', 'a dog runs');
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /micse: .*fingerprint.*not comparable/);
  });

  it('CLI: index build and search print sentences/s, latency and queries/s', () => {
    const out = path.join(TMP, 'cli-index');
    const small = path.join(TMP, 'cli-corpus.txt');
    writeFileSync(small, sentences.slice(0, 300).join('\n') + '\n\n');
    const b = micse('index', 'build', '--backend', 'wasm', '--model', MODEL, '--corpus', small, '--out', out, '--chunk-size', '128');
    assert.equal(b.status, 0, b.stderr);
    assert.match(b.stdout, /embedded 300 sentences \(dimension 32\) in [\d.]+ s: [\d.]+ sentences\/s/);
    assert.match(b.stdout, /indexed 300 vectors with usearch [\d.]+ HNSW \(M 16, efConstruction 128, ef 128\) in [\d.]+ s: \d+ vectors\/s/);

    const s = micse('search', '--backend', 'wasm', '--index', out, '--query', sentences[7]!, '--query', sentences[8]!, '--top-k', '4', '--json');
    assert.equal(s.status, 0, s.stderr);
    const res = JSON.parse(s.stdout) as { results: { query: string; hits: { id: number; score: number; text: string; line: number }[] }[]; timing: { searchQueriesPerSecond: number } };
    assert.equal(res.results.length, 2);
    assert.equal(res.results[0]!.hits.length, 4);
    assert.ok(res.timing.searchQueriesPerSecond > 0);
    assert.match(s.stderr, /search: 2 queries over 300 sentences by usearch HNSW \(ef 128\): search [\d.]+ ms \([\d.]+ ms\/query, \d+ queries\/s\)/);

    const e = micse('search', '--backend', 'wasm', '--index', out, '--queries', small, '--exact', '--top-k', '1');
    assert.equal(e.status, 0, e.stderr);
    assert.match(e.stdout, /search: 300 queries over 300 sentences by exact cosine/);
    assert.equal(e.stdout.split('\n').filter((l) => l.startsWith('query: ')).length, 300);
  });
});

describe('clustering', { skip: SKIP_NO_SHARED }, () => {
  let pretrained: Pretrained;
  let sentences: string[];
  before(async () => {
    await selectBackend('wasm');
    pretrained = await loadPretrained(MODEL);
    const dev = readStsBenchmark(shared('senteval'), 'dev');
    sentences = [...new Set(dev.s1)].slice(0, 300);
  });
  after(() => pretrained.model.dispose());

  it('k-means is deterministic under a seed and gives every sentence an id in [0, k)', async () => {
    const a = await cluster(pretrained.model, pretrained.tokenizer, sentences, { k: 6, seed: 7 });
    const b = await cluster(pretrained.model, pretrained.tokenizer, sentences, { k: 6, seed: 7 });
    assert.deepEqual(a.assignments, b.assignments);
    assert.equal(a.assignments.length, sentences.length);
    assert.ok(a.assignments.every((c) => Number.isInteger(c) && c >= 0 && c < 6));
    assert.equal(a.clusters.reduce((s, c) => s + c.size, 0), sentences.length);
    for (let i = 1; i < a.clusters.length; i++) assert.ok(a.clusters[i - 1]!.size >= a.clusters[i]!.size, 'ids ordered by size');
    for (const c of a.clusters) assert.ok(c.nearest.length === Math.min(3, c.size) && c.nearest.every((n) => a.assignments[n.id] === c.id));
  });

  it('threshold communities are deterministic and, with min size 1, assign every sentence', async () => {
    const a = await cluster(pretrained.model, pretrained.tokenizer, sentences, { threshold: 0.99999 });
    const b = await cluster(pretrained.model, pretrained.tokenizer, sentences, { threshold: 0.99999 });
    assert.deepEqual(a.assignments, b.assignments);
    assert.ok(a.assignments.every((c) => c >= 0));
  });

  it('recovers planted groups with both methods (community detection as sentence-transformers)', () => {
    // Three tight groups around orthogonal directions in 8 dimensions, sizes 5, 4 and 3, interleaved.
    const centres = [0, 3, 6];
    const sizes = [5, 4, 3];
    const rows: number[][] = [];
    const truth: number[] = [];
    for (let i = 0; i < 12; i++) {
      const g = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 0][i]!;
      const v = Array.from({ length: 8 }, (_, d) => (d === centres[g] ? 1 : 0.05 * Math.sin(7 * i + d)));
      rows.push(v);
      truth.push(g);
    }
    assert.deepEqual([0, 1, 2].map((g) => truth.filter((x) => x === g).length), sizes);
    const m = toMatrix(rows, 8);
    for (const res of [clusterVectors(m, { k: 3, seed: 1 }), clusterVectors(m, { threshold: 0.9 })]) {
      assert.deepEqual(res.assignments, truth, res.method); // largest group = id 0
      assert.deepEqual(res.clusters.map((c) => c.size), sizes);
    }
    // Min community size 4 keeps the groups of 5 and 4; the group of 3 is unassigned.
    const big = clusterVectors(m, { threshold: 0.9, minCommunitySize: 4 });
    assert.deepEqual(big.assignments, truth.map((g) => (g === 2 ? UNASSIGNED : g)));
  });

  it('empty input, k > n and bad options are UserErrors (API and CLI, exit 2)', async () => {
    const isUserError = (re: RegExp) => (e: unknown) => e instanceof UserError && re.test(e.message);
    await assert.rejects(cluster(pretrained.model, pretrained.tokenizer, [], { k: 2 }), isUserError(/no sentences to cluster/));
    await assert.rejects(cluster(pretrained.model, pretrained.tokenizer, ['a', 'b'], { k: 3 }), isUserError(/k = 3 is larger than the number of sentences \(2\)/));
    assert.throws(() => clusterVectors(toMatrix([[1, 0]], 2), { k: 0 }), isUserError(/positive integer/));
    assert.throws(() => clusterVectors(toMatrix([[1, 0]], 2), { k: 1, threshold: 0.5 }), isUserError(/not both/));
    assert.throws(() => clusterVectors(toMatrix([[1, 0]], 2), { threshold: 2 }), isUserError(/\[-1, 1\]/));

    const empty = path.join(TMP, 'empty.txt');
    writeFileSync(empty, '\n  \n');
    const e = await micseHere(['cluster', '--backend', 'wasm', '--model', MODEL, '--input', empty, '-k', '2']);
    assert.equal(e.exitCode, 2, e.message);
    assert.match(e.message, /empty\.txt: no sentences to cluster/);
    const three = path.join(TMP, 'three.txt');
    writeFileSync(three, 'a cat\na dog\na bird\n');
    const k = await micseHere(['cluster', '--backend', 'wasm', '--model', MODEL, '--input', three, '-k', '4']);
    assert.equal(k.exitCode, 2, k.message);
    assert.match(k.message, /micse: -k 4 is larger than the number of sentences \(3\)/);
  });

  it('CLI: cluster writes one id per input line (TSV) and a summary of sizes and central members', () => {
    const input = path.join(TMP, 'cluster-input.txt');
    writeFileSync(input, sentences.slice(0, 40).join('\n') + '\n');
    const out = path.join(TMP, 'clusters.tsv');
    const r = micse('cluster', '--backend', 'wasm', '--model', MODEL, '--input', input, '-k', '3', '--seed', '5', '--output', out);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^k-means \(k 3, seed 5\): 40 sentences in 3 clusters; converged after \d+ iterations$/m);
    assert.equal((r.stdout.match(/^cluster \d: \d+ sentences?; nearest the centroid:$/gm) ?? []).length, 3);
    const lines = readFileSync(out, 'utf8').trim().split('\n');
    assert.equal(lines[0], 'line\tcluster\ttext');
    assert.deepEqual(lines.slice(1).map((l) => Number(l.split('\t')[0])), Array.from({ length: 40 }, (_, i) => i + 1));
    assert.ok(lines.slice(1).every((l) => /^\d+\t[0-2]\t/.test(l)));
    const again = micse('cluster', '--backend', 'wasm', '--model', MODEL, '--input', input, '-k', '3', '--seed', '5', '--output', path.join(TMP, 'again.jsonl'));
    assert.equal(again.status, 0, again.stderr);
    const ids = readFileSync(path.join(TMP, 'again.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { cluster: number }).cluster);
    assert.deepEqual(ids, lines.slice(1).map((l) => Number(l.split('\t')[1])), 'same seed, same ids');
  });
});

describe('similarity', { skip: SKIP_NO_SHARED }, () => {
  let pretrained: Pretrained;
  before(async () => {
    await selectBackend('wasm');
    pretrained = await loadPretrained(MODEL);
  });
  after(() => pretrained.model.dispose());

  it('scores are the cosines of embed() vectors; the CLI pairs sentences two by two', async () => {
    const pairs = pairsFromArgs(['a man is dancing .', 'a man dances .', 'a cat sleeps .', 'stocks fell sharply on monday .']);
    const scored = await similarity(pretrained.model, pretrained.tokenizer, pairs);
    const vecs = await embed(pretrained.model, pretrained.tokenizer, pairs.flat());
    assert.ok(Math.abs(scored[0]!.score - cosine(vecs[0]!, vecs[1]!)) < 1e-6);
    assert.ok(Math.abs(scored[1]!.score - cosine(vecs[2]!, vecs[3]!)) < 1e-6);
    const same = await similarity(pretrained.model, pretrained.tokenizer, [['a b c', 'a b c']]);
    assert.ok(Math.abs(same[0]!.score - 1) < 1e-6);

    const r = micse('similarity', '--backend', 'wasm', '--model', MODEL, '--json', ...pairs.flat());
    assert.equal(r.status, 0, r.stderr);
    const cli = JSON.parse(r.stdout) as { a: string; b: string; score: number }[];
    assert.deepEqual(cli.map((p) => [p.a, p.b]), pairs);
    cli.forEach((p, i) => assert.ok(Math.abs(p.score - scored[i]!.score) < 1e-5));
    // After a lone --, sentences may start with a dash (yargs leaves them out of the positional).
    const dashed = micse('similarity', '--backend', 'wasm', '--model', MODEL, '--json', 'a man is dancing .', '--', '-5 degrees', '-x', 'y');
    assert.equal(dashed.status, 0, dashed.stderr);
    assert.deepEqual((JSON.parse(dashed.stdout) as { a: string; b: string }[]).map((p) => [p.a, p.b]), [['a man is dancing .', '-5 degrees'], ['-x', 'y']]);
    const odd = micse('similarity', '--model', MODEL, 'one', 'two', 'three');
    assert.equal(odd.status, 2);
    assert.match(odd.stderr, /3 sentences given: they are read two by two/);
  });

  it('reads pairs from TSV columns and names a short line', async () => {
    const file = path.join(TMP, 'pairs.tsv');
    writeFileSync(file, 'x\ta b\tc d\n\nx\te f\tg h\n');
    assert.deepEqual(await readPairsFile(file, [1, 2]), [['a b', 'c d'], ['e f', 'g h']]);
    writeFileSync(file, 'a\tb\nonly one\n');
    await assert.rejects(readPairsFile(file), (e: unknown) => e instanceof UserError && /pairs\.tsv:2: 1 TAB-separated column/.test(e.message));
  });
});

describe('texts.jsonl and pairs files are read line by line, READ_CHUNK_BYTES at a time', () => {
  const dir = path.join(TMP, 'streamed');
  mkdirSync(dir, { recursive: true });
  /** The one-line error of a line past `limit` bytes: FILE:LINE, the limit, then `holds` (a regular expression's source), what the file is. */
  const tooLong = (name: string, line: number, limit: number, holds: string): RegExp =>
    new RegExp(`^\\S*${name.replace('.', '\\.')}:${line}: line longer than ${limit} bytes: ${holds}$`);
  const textsHolds = 'an index\'s texts\\.jsonl holds one \\{"text", "line"\\} row per line, and `micse index build` writes none this long';
  const pairsHolds = 'a pairs file holds one TAB-separated sentence pair per line \\(is this a JSON dump, or a compressed or binary file\\?\\)';
  const userError = (re: RegExp) => (e: unknown) => e instanceof UserError && re.test(e.message);

  /** Texts whose rows cross read chunks: the first one's "€" (3 bytes) across the first chunk's end, the second spanning chunks. */
  const chunkCrossing = (): string[] => [
    'a'.repeat(READ_CHUNK_BYTES - 1 - '{"text":"'.length) + '€ first',
    'b'.repeat(READ_CHUNK_BYTES + 12345) + ' é second',
    'third',
  ];

  it('readTexts: rows across chunk boundaries, a character split between chunks, blank lines and CRLF', async () => {
    const texts = chunkCrossing();
    const file = path.join(dir, 'texts.jsonl');
    const body = texts.map((text, i) => JSON.stringify({ text, line: i + 1 })).join('\n\n') + '\r\n';
    writeFileSync(file, body);
    assert.equal(Buffer.from(body).indexOf('€'), READ_CHUNK_BYTES - 1, 'the "€" starts in the first chunk and ends in the second');
    assert.deepEqual(await readTexts(file, 3), texts.map((text, i) => ({ text, line: i + 1 })));
  });

  it('readTexts: bad rows, a row count other than meta.json\'s and a row past MAX_TEXTS_ROW_BYTES are UserErrors naming the file (and line)', async () => {
    const file = path.join(dir, 'bad.jsonl');
    const ok = JSON.stringify({ text: 'fine', line: 1 });
    for (const [body, count, re] of [
      [`${ok}\n\n{"text": "x", "li\n`, 2, /bad\.jsonl:3: invalid JSON$/],
      [`${ok}\r\n5\r\n`, 2, /bad\.jsonl:2: not a \{"text", "line"\} row$/],
      [`${ok}\n{"text": 5, "line": 2}\n`, 2, /bad\.jsonl:2: not a \{"text", "line"\} row$/],
      [`${ok}\n${ok}\n`, 3, /bad\.jsonl: 2 rows, meta\.json says 3$/],
    ] as const) {
      writeFileSync(file, body);
      await assert.rejects(readTexts(file, count), userError(re), body);
    }
    // The longest row buildIndex writes (a MAX_LINE_BYTES line of characters JSON escapes to six bytes) is read.
    const longest = '\u0001'.repeat(MAX_LINE_BYTES);
    writeFileSync(file, `${ok}\n${JSON.stringify({ text: longest, line: 9_007_199_254_740_991 })}\n`);
    assert.ok(Buffer.byteLength(JSON.stringify({ text: longest, line: 9_007_199_254_740_991 })) <= MAX_TEXTS_ROW_BYTES);
    assert.equal((await readTexts(file, 2))[1]!.text, longest);
    writeFileSync(file, `${ok}\n${'x'.repeat(MAX_TEXTS_ROW_BYTES + 1)}\n${ok}\n`);
    await assert.rejects(readTexts(file, 3), userError(tooLong('bad.jsonl', 2, MAX_TEXTS_ROW_BYTES, textsHolds)));
  });

  it('readPairsFile: BOM, CRLF, blank lines and lines across chunk boundaries; a short or overlong line named (CLI: exit 2)', async () => {
    const [a, b, c] = chunkCrossing();
    const file = path.join(dir, 'pairs.tsv');
    writeFileSync(file, `\ufeff${a}\tx\r\n\r\n  \n${b}\t${c}\n${c}\t${c}`);
    assert.deepEqual(await readPairsFile(file), [[a, 'x'], [b, c], [c, c]]);
    writeFileSync(file, `${a}\tx\n\n${b}\n`);
    await assert.rejects(readPairsFile(file), userError(/pairs\.tsv:3: 1 TAB-separated column\(s\), need column 1 \(0-based\)$/));
    writeFileSync(file, `a\tb\n${'z'.repeat(MAX_LINE_BYTES + 1)}\tb\nc\td\n`);
    await assert.rejects(readPairsFile(file), userError(tooLong('pairs.tsv', 2, MAX_LINE_BYTES, pairsHolds)));
    const r = await micseHere(['similarity', '--pairs', file, '--model', path.join(dir, 'no-model')]);
    assert.equal(r.exitCode, 2, r.message);
    assert.match(r.message.replace(/^micse: /, ''), tooLong('pairs.tsv', 2, MAX_LINE_BYTES, pairsHolds));
    await assert.rejects(readPairsFile(path.join(dir, 'missing.tsv')), userError(/^cannot read pairs file \S*missing\.tsv: ENOENT$/));
    writeFileSync(file, '\n\r\n');
    await assert.rejects(readPairsFile(file), userError(/pairs\.tsv: no pairs \(the file is empty\)$/));
  });
});

describe('index folders holding something else, or damaged: exit 2 naming the file, nothing overwritten', { skip: SKIP_NO_SHARED }, () => {
  const dir = path.join(TMP, 'bad-folders');
  const corpus = path.join(dir, 'four.txt');
  before(() => {
    mkdirSync(dir, { recursive: true });
    writeFileSync(corpus, 'a cat sits on the mat\na dog runs in the park\nthe sun is hot today\nrain falls on the town\n');
  });
  const build = (out: string, ...more: string[]) => micse('index', 'build', '--backend', 'wasm', '--model', MODEL, '--corpus', corpus, '--out', out, ...more);
  /** build's command line in this process (micseHere): for the checks that need no process of their own. */
  const buildHere = (out: string, ...more: string[]) => micseHere(['index', 'build', '--backend', 'wasm', '--model', MODEL, '--corpus', corpus, '--out', out, ...more]);

  it('index build refuses a meta.json that is not an index\'s (another tool\'s, or cut short), and --force replaces it', async () => {
    for (const [name, text, why] of [['other-meta', '{"mine":1}\n', /not an index's meta\.json \(format is undefined/], ['cut-meta', '{"format":', /invalid JSON/]] as const) {
      const out = path.join(dir, name);
      mkdirSync(out);
      writeFileSync(path.join(out, INDEX_FILES.meta), text);
      const r = await buildHere(out);
      assert.equal(r.exitCode, 2, r.message);
      assert.match(r.message, new RegExp(`^micse: ${path.join(out, INDEX_FILES.meta)}: .*--force`));
      assert.match(r.message, why);
      assert.equal(readFileSync(path.join(out, INDEX_FILES.meta), 'utf8'), text, 'left as it was');
    }
    const forced = await buildHere(path.join(dir, 'other-meta'), '--force');
    assert.equal(forced.exitCode, 0, forced.message);
  });

  it('index build refuses a non-empty folder that is not an index (no meta.json or progress.json) unless --force', async () => {
    const out = path.join(dir, 'not-an-index');
    mkdirSync(out);
    const held = { [INDEX_FILES.texts]: 'my notes\n', [INDEX_FILES.vectors]: 'my vectors', 'config.yaml': 'a: 1\n' };
    for (const [f, text] of Object.entries(held)) writeFileSync(path.join(out, f), text);
    const r = await buildHere(out);
    assert.equal(r.exitCode, 2, r.message);
    assert.match(r.message, new RegExp(`^micse: ${out}: not empty \\(3 entries\\) and not an index \\(no meta\\.json or progress\\.json\\); pass --force to replace it, or choose another --out\\. Nothing was written$`));
    for (const [f, text] of Object.entries(held)) assert.equal(readFileSync(path.join(out, f), 'utf8'), text, `${f} left as it was`);
    const forced = await buildHere(out, '--force');
    assert.equal(forced.exitCode, 0, forced.message);
    const empty = path.join(dir, 'empty-folder');
    mkdirSync(empty);
    assert.equal((await buildHere(empty)).exitCode, 0, 'an empty folder is fine');
  });

  it('index build --force replaces the folder whole once the new index is complete; a failed or killed rebuild leaves the old one', async () => {
    const out = path.join(dir, 'forced');
    const three = path.join(dir, 'three.txt');
    writeFileSync(three, 'one fish\ntwo fish\nred fish\n');
    const binary = path.join(dir, 'binary.txt');
    writeFileSync(binary, Buffer.from('\0\0\n\0'));
    const run = (corpusFile: string, env: Record<string, string> = {}, ...more: string[]) => spawnSync(process.execPath,
      [path.join(ROOT, 'bin', 'micse.js'), 'index', 'build', '--backend', 'wasm', '--model', MODEL, '--corpus', corpusFile, '--out', out, ...more],
      { cwd: TMP, encoding: 'utf8', env: { ...process.env, ...env } });
    // The index's files and the rest, without the lock a killed build leaves (taken over by the next build).
    const snapshot = () => Object.fromEntries(readdirSync(out).filter((f) => f !== INDEX_LOCK_FILE).sort()
      .map((f) => [f, readFileSync(path.join(out, f)).toString('base64')]));
    const siblings = () => readdirSync(dir).filter((f) => f.startsWith('forced.'));
    const lock = path.join(out, INDEX_LOCK_FILE);
    assert.equal(run(corpus).status, 0);
    writeFileSync(path.join(out, 'notes.txt'), 'mine\n');
    const old = snapshot();

    // A corpus that cannot be read: refused before anything is written.
    const bad = run(binary, {}, '--force');
    assert.equal(bad.status, 2, bad.stderr);
    assert.match(bad.stderr, /^micse: \S*binary\.txt:1: NUL byte, not text/m);
    assert.deepEqual(snapshot(), old, 'the old index is whole');
    // A corpus inside --out would be removed with it.
    writeFileSync(path.join(out, 'inside.txt'), 'a b\nc d\n');
    const inside = run(path.join(out, 'inside.txt'), {}, '--force');
    assert.equal(inside.status, 2, inside.stderr);
    assert.match(inside.stderr, /^micse: --out \S*forced overlaps the corpus \(\S*inside\.txt\), which replacing it would remove; choose another --out\. Nothing was written$/m);
    rmSync(path.join(out, 'inside.txt'));
    assert.deepEqual(snapshot(), old);

    // Killed with the new index complete beside --out, or with --out moved aside: --out still holds the old index
    // (a search works), or the next build puts it back; what the kills left is removed.
    const staged = run(three, { [FAULT_ENV]: 'index:staged' }, '--force');
    assert.equal(staged.signal, 'SIGKILL', staged.stderr);
    assert.deepEqual(snapshot(), old);
    assert.equal(readFileSync(lock, 'utf8'), `${staged.pid}\n`, 'the killed build\'s lock is left');
    assert.equal(micse('search', '--backend', 'wasm', '--index', out, '--query', 'a cat').status, 0);
    const aside = run(three, { [FAULT_ENV]: 'index:moved-aside' }, '--force');
    assert.equal(aside.signal, 'SIGKILL', aside.stderr);
    assert.equal(existsSync(out), false);
    assert.deepEqual(siblings().map((f) => f.replace(/\d+$/, 'PID')).sort(), ['forced.old-index-PID', 'forced.tmp-index-PID']);
    const again = run(corpus);
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stdout, /already an index of these 4 sentences by this model; nothing to do/);
    assert.deepEqual(snapshot(), old);
    assert.deepEqual(siblings(), []);
    assert.equal(existsSync(lock), false, 'the stale lock was taken over and released');

    // A rebuild that completes: the new index alone, the files that were not the index's gone with the old one.
    const forced = run(three, {}, '--force');
    assert.equal(forced.status, 0, forced.stderr);
    assert.deepEqual(readdirSync(out).sort(), [INDEX_FILES.ann, INDEX_FILES.meta, INDEX_FILES.texts, INDEX_FILES.vectors]);
    const meta = JSON.parse(readFileSync(path.join(out, INDEX_FILES.meta), 'utf8')) as { count: number; corpus: { path: string } };
    assert.deepEqual([meta.count, meta.corpus.path], [3, three]);
    assert.deepEqual(siblings(), []);
  });

  it('index build --force and export --force refuse an output that is or holds the current folder, or holds the model, before reading anything', async () => {
    const parent = path.join(dir, 'holds-cwd');
    const cwd = path.join(parent, 'work');
    mkdirSync(cwd, { recursive: true });
    writeFileSync(path.join(cwd, 'keep.txt'), 'mine\n');
    writeFileSync(path.join(parent, 'keep.txt'), 'mine too\n');
    const listing = () => [readdirSync(parent).sort(), readdirSync(cwd).sort(), readdirSync(dir).filter((f) => f.startsWith('holds-cwd.'))];
    const before = listing();
    // A corpus that does not exist: the refusal comes before it is read.
    const missing = path.join(dir, 'no-such-corpus.txt');
    for (const [out, is] of [['.', 'is'], ['..', 'holds'], [cwd, 'is'], [dir, 'holds']] as const) {
      const r = await micseHere(['index', 'build', '--backend', 'wasm', '--model', MODEL, '--corpus', missing, '--out', out, '--force'], cwd);
      assert.deepEqual(r, { exitCode: 2, message: `micse: --out ${out} ${is} the current folder (${cwd}), which replacing it would remove; choose another --out. Nothing was written` });
    }
    const exported = await micseHere(['export', '--backend', 'wasm', '--checkpoint', MODEL, '--output', '.', '--format', 'hf', '--force'], cwd);
    assert.deepEqual(exported, { exitCode: 2, message: `micse: --output ${cwd} is the current folder (${cwd}), which replacing it would remove; choose another --output. Nothing was written` });
    assert.deepEqual(listing(), before, 'nothing written or removed');
    // An --out that holds the model folder (a copy: the shared one is never at risk).
    const withModel = path.join(dir, 'holds-model');
    const model = path.join(withModel, 'tiny');
    cpSync(MODEL, model, { recursive: true });
    const r = micse('index', 'build', '--backend', 'wasm', '--model', model, '--corpus', corpus, '--out', withModel, '--force');
    assert.equal(r.status, 2, r.stderr);
    assert.equal(lastLine(r.stderr), `micse: --out ${withModel} overlaps the model (${model}), which replacing it would remove; choose another --out. Nothing was written`);
    assert.deepEqual(readdirSync(withModel), ['tiny']);
    assert.deepEqual(readdirSync(model).sort(), readdirSync(MODEL).sort());
  });

  it('index build holds a lock on --out: a second build is refused naming the first one\'s pid, a dead build\'s lock is taken over', async () => {
    const out = path.join(dir, 'locked');
    assert.equal(build(out).status, 0);
    const files = [INDEX_FILES.ann, INDEX_FILES.meta, INDEX_FILES.texts, INDEX_FILES.vectors];
    assert.deepEqual(readdirSync(out).sort(), files, 'the lock is gone when the build returns');
    // A running build's lock (a live process's pid): refused, for a resume and for --force alike, nothing changed.
    const holder = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      const lock = path.join(out, INDEX_LOCK_FILE);
      writeFileSync(lock, `${holder.pid}\n`);
      const before = Object.fromEntries(files.map((f) => [f, readFileSync(path.join(out, f)).toString('base64')]));
      for (const more of [[], ['--force']]) {
        const r = build(out, ...more);
        assert.equal(r.status, 2, r.stderr);
        assert.equal(lastLine(r.stderr), `micse: ${out}: in use by another index build (pid ${holder.pid}, lock ${lock}); wait for it to finish or stop it`);
      }
      assert.deepEqual(Object.fromEntries(files.map((f) => [f, readFileSync(path.join(out, f)).toString('base64')])), before);
      assert.equal(readFileSync(lock, 'utf8'), `${holder.pid}\n`, 'the holder\'s lock is left alone');
      const opened = await openIndex(out, { model: null });
      assert.equal(opened.size, 4, 'search reads an index whose build holds the lock');
    } finally {
      holder.kill();
    }
    await new Promise((resolve) => holder.once('exit', resolve));
    // Its process is gone: the lock is stale, taken over, and the forced rebuild swaps in a folder without it.
    const forced = build(out, '--force');
    assert.equal(forced.status, 0, forced.stderr);
    assert.deepEqual(readdirSync(out).sort(), files);
    assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('locked.')), []);
  });

  it('index build of an up-to-date index in a folder it cannot write, holding a killed build\'s lock: nothing to do, exit 0, no lock taken', async (t) => {
    if (process.getuid?.() === 0) return t.skip('running as root, where chmod 0555 does not stop writes (the next test covers it with writes made to fail)');
    const out = path.join(dir, 'read-only-index');
    assert.equal(build(out).status, 0);
    writeFileSync(path.join(out, INDEX_LOCK_FILE), `${await deadPid()}\n`);
    const files = readdirSync(out).sort();
    chmodSync(out, 0o555);
    try {
      const r = build(out);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /already an index of these 4 sentences by this model; nothing to do/);
      assert.deepEqual(readdirSync(out).sort(), files, 'nothing written, the stale lock left');
    } finally {
      chmodSync(out, 0o755);
    }
  });

  it('index build of an up-to-date index holding a killed build\'s lock: nothing to do; the lock goes where the folder can be written', async () => {
    const out = path.join(dir, 'stale-lock');
    assert.equal(build(out).status, 0);
    const lock = path.join(out, INDEX_LOCK_FILE);
    const dead = await deadPid();
    writeFileSync(lock, `${dead}\n`);
    const files = readdirSync(out).sort();
    const pretrained = await loadPretrained(MODEL);
    try {
      const restore = readOnlyUnder(out);
      let report;
      try {
        report = await buildIndex(pretrained, { corpus, out });
      } finally {
        restore();
      }
      assert.equal(report.upToDate, true);
      assert.deepEqual(readdirSync(out).sort(), files, 'nothing written, the stale lock left');
      assert.equal(readFileSync(lock, 'utf8'), `${dead}\n`);
      const writable = await buildIndex(pretrained, { corpus, out });
      assert.equal(writable.upToDate, true);
      assert.equal(existsSync(lock), false, 'the stale lock removed');
    } finally {
      pretrained.model.dispose();
    }
  });

  it('index build --force: a build started between its two renames goes away again and the rebuild publishes; search says what a kill there left', async () => {
    const out = path.join(dir, 'swap');
    const three = path.join(dir, 'three-swap.txt');
    writeFileSync(three, 'one fish\ntwo fish\nred fish\n');
    const args = (corpusFile: string, ...more: string[]) => ['index', 'build', '--backend', 'wasm', '--model', MODEL, '--corpus', corpusFile, '--out', out, ...more];
    const count = () => (JSON.parse(readFileSync(path.join(out, INDEX_FILES.meta), 'utf8')) as { count: number }).count;
    const siblings = () => readdirSync(dir).filter((f) => f.startsWith('swap.'));
    const indexFiles = [INDEX_FILES.ann, INDEX_FILES.meta, INDEX_FILES.texts, INDEX_FILES.vectors];
    const search = () => micse('search', '--backend', 'wasm', '--index', out, '--query', 'a cat');
    assert.equal(build(out).status, 0);

    // A rebuild stopped between its renames: search says it is being replaced; a build is refused naming it and
    // leaves no folder; a build stopped holding the lock in the folder it made is waited for, then goes away.
    const a = startStopping('index:moved-aside', ...args(three, '--force'));
    const b = { child: null as ReturnType<typeof startStopping>['child'] | null };
    try {
      await a.stopped;
      assert.equal(existsSync(out), false);
      const s = search();
      assert.equal(s.status, 2, s.stderr);
      assert.equal(lastLine(s.stderr), `micse: ${out}: being replaced by a running \`micse index build --force\` (pid ${a.pid}); retry when it has finished`);
      const refused = micse(...args(corpus));
      assert.equal(refused.status, 2, refused.stderr);
      assert.match(lastLine(refused.stderr)!, RegExp(`^micse: ${out}: in use by another index build \\(pid ${a.pid}, swapping in a rebuilt index from ${out}\\.(tmp|old)-index-${a.pid}\\); wait for it to finish or stop it$`));
      assert.equal(existsSync(out), false, 'the refused build removed the folder it made');
      const locked = startStopping('index:locked', ...args(corpus));
      b.child = locked.child;
      await locked.stopped;
      assert.deepEqual(readdirSync(out), [INDEX_LOCK_FILE]);
      a.child.kill('SIGCONT');
      await new Promise((resolve) => setTimeout(resolve, 1000));
      assert.equal(a.child.exitCode, null, 'the rebuild waits for the build holding --out');
      locked.child.kill('SIGCONT');
      const [ra, rb] = await Promise.all([a.done, locked.done]);
      assert.equal(ra.status, 0, ra.stderr);
      assert.equal(rb.status, 2, rb.stderr);
      assert.match(lastLine(rb.stderr)!, RegExp(`^micse: ${out}: in use by another index build \\(pid ${a.pid}, `));
    } finally {
      for (const c of [a.child, b.child]) if (c !== null && c.exitCode === null) c.kill('SIGKILL');
    }
    assert.equal(count(), 3);
    assert.deepEqual(readdirSync(out).sort(), indexFiles);
    assert.deepEqual(siblings(), []);

    // A build killed holding the lock in the folder it made: the rebuild removes its lock and publishes.
    const again = startStopping('index:moved-aside', ...args(corpus, '--force'));
    try {
      await again.stopped;
      const killed = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'micse.js'), ...args(three)], { cwd: TMP, encoding: 'utf8', env: { ...process.env, [FAULT_ENV]: 'index:locked' } });
      assert.equal(killed.signal, 'SIGKILL', killed.stderr);
      assert.deepEqual(readdirSync(out), [INDEX_LOCK_FILE]);
      again.child.kill('SIGCONT');
      const r = await again.done;
      assert.equal(r.status, 0, r.stderr);
    } finally {
      if (again.child.exitCode === null) again.child.kill('SIGKILL');
    }
    assert.equal(count(), 4);
    assert.deepEqual(readdirSync(out).sort(), indexFiles);
    assert.deepEqual(siblings(), []);

    // A rebuild killed between its renames: search names the command that puts the previous index back, which does.
    const cut = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'micse.js'), ...args(three, '--force')], { cwd: TMP, encoding: 'utf8', env: { ...process.env, [FAULT_ENV]: 'index:moved-aside' } });
    assert.equal(cut.signal, 'SIGKILL', cut.stderr);
    const s = search();
    assert.equal(s.status, 2, s.stderr);
    const repair = `micse index build --model ${MODEL} --corpus ${corpus} --out ${out}`;
    assert.equal(lastLine(s.stderr), `micse: ${out}: missing: a \`micse index build --force\` into it was killed between its two renames, ` +
      `leaving the previous index in ${out}.old-index-${cut.pid}; run \`${repair}\` to put it back`);
    const repaired = micse(...repair.split(' ').slice(1), '--backend', 'wasm');
    assert.equal(repaired.status, 0, repaired.stderr);
    assert.match(repaired.stdout, /already an index of these 4 sentences by this model; nothing to do/);
    assert.equal(search().status, 0);
    assert.deepEqual(siblings(), []);
  });

  it('buildIndex: two builds into one folder at once in one process: one is refused, the other builds', async () => {
    const pretrained = await loadPretrained(MODEL);
    try {
      const out = path.join(dir, 'twice');
      const results = await Promise.allSettled([buildIndex(pretrained, { corpus, out }), buildIndex(pretrained, { corpus, out })]);
      const refused = results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason as unknown);
      assert.equal(refused.length, 1, refused.map(String).join("; "));
      assert.ok(refused[0] instanceof UserError);
      assert.equal(refused[0].message, `${out}: in use by another index build (pid ${process.pid}, lock ${path.join(out, INDEX_LOCK_FILE)}); wait for it to finish or stop it`);
      assert.deepEqual(readdirSync(out).sort(), [INDEX_FILES.ann, INDEX_FILES.meta, INDEX_FILES.texts, INDEX_FILES.vectors]);
      // A build into a new folder that fails before writing the index (an empty corpus) leaves no folder behind.
      const none = path.join(dir, 'never-made');
      const empty = path.join(dir, 'empty.txt');
      writeFileSync(empty, '');
      await assert.rejects(buildIndex(pretrained, { corpus: empty, out: none }), /no sentences to index/);
      assert.equal(existsSync(none), false);
    } finally {
      pretrained.model.dispose();
    }
  });

  it('search on an index with a damaged file: exit 2 naming the file and what is wrong', async () => {
    const good = path.join(dir, 'good-index');
    assert.equal(build(good).status, 0);
    const ann = INDEX_FILES.ann;
    const rebuild = '; rebuild the index with `micse index build --force`';
    // An index built before meta.json recorded the usearch file's size: the file is checked by its own headers.
    const unrecorded = async (idx: string) => {
      const meta = JSON.parse(readFileSync(path.join(idx, INDEX_FILES.meta), 'utf8')) as { ann: Record<string, unknown> };
      delete meta.ann['bytes'];
      writeFileSync(path.join(idx, INDEX_FILES.meta), JSON.stringify(meta));
    };
    // 4 vectors of 32 float32 after an 8-byte matrix header: the 64-byte head at 520, the graph header at 584, levels at 624.
    const annSize = (await fs.stat(path.join(good, ann))).size;
    const patch = async (idx: string, at: number, bytes: number[]) => {
      const fh = await fs.open(path.join(idx, ann), 'r+');
      await fh.write(Buffer.from(bytes), 0, bytes.length, at);
      await fh.close();
    };
    const cases: [string, (idx: string) => Promise<void>, RegExp, string[]][] = [
      ['ann-cut-100', (idx) => fs.truncate(path.join(idx, ann), 100), RegExp(`index\\.usearch: corrupt or truncated \\(100 bytes, meta\\.json says \\d+\\)${rebuild}`), []],
      ['ann-cut-1000', (idx) => fs.truncate(path.join(idx, ann), 1000), RegExp(`index\\.usearch: corrupt or truncated \\(1000 bytes, meta\\.json says \\d+\\)${rebuild}`), []],
      ['old-ann-cut-100', async (idx) => { await unrecorded(idx); await fs.truncate(path.join(idx, ann), 100); },
        RegExp(`index\\.usearch: corrupt or truncated \\(100 bytes, too short for its 4 vectors and head at byte 520\\)${rebuild}`), []],
      ['old-ann-cut-1000', async (idx) => { await unrecorded(idx); await fs.truncate(path.join(idx, ann), 1000); },
        RegExp(`index\\.usearch: corrupt or truncated \\(1000 bytes, its headers imply ${annSize}\\)${rebuild}`), []],
      ['old-ann-cut-1', async (idx) => { await unrecorded(idx); await fs.truncate(path.join(idx, ann), annSize - 1); },
        RegExp(`index\\.usearch: corrupt or truncated \\(${annSize - 1} bytes, its headers imply ${annSize}\\)${rebuild}`), []],
      ['old-ann-extra', async (idx) => { await unrecorded(idx); await fs.appendFile(path.join(idx, ann), 'x'); },
        RegExp(`index\\.usearch: corrupt or truncated \\(${annSize + 1} bytes, its headers imply ${annSize}\\)${rebuild}`), []],
      ['old-ann-magic', async (idx) => { await unrecorded(idx); await patch(idx, 520, [0x55]); },
        RegExp(`index\\.usearch: corrupt or truncated \\(no "usearch" mark at byte 520\\)${rebuild}`), []],
      ['old-ann-level', async (idx) => { await unrecorded(idx); await patch(idx, 624, [99, 0]); },
        RegExp(`index\\.usearch: corrupt or truncated \\(node 0 at level 99, the graph's levels are 0 \\.\\. \\d+\\)${rebuild}`), []],
      ['ann-missing', (idx) => fs.rm(path.join(idx, ann)), /index\.usearch: no such file or directory \(ENOENT\)/, []],
      ['vectors-cut', (idx) => fs.truncate(path.join(idx, INDEX_FILES.vectors), 200), /vectors\.npy: truncated \(200 bytes, header says 4 x 32\)/, ['--exact']],
      ['texts-bad-json', (idx) => fs.appendFile(path.join(idx, INDEX_FILES.texts), '{"text": "x", "li\n'), /texts\.jsonl:5: invalid JSON/, []],
      ['texts-long-row', (idx) => fs.appendFile(path.join(idx, INDEX_FILES.texts), 'x'.repeat(MAX_TEXTS_ROW_BYTES + 1)),
        RegExp(`texts\\.jsonl:5: line longer than ${MAX_TEXTS_ROW_BYTES} bytes: an index's texts\\.jsonl holds one \\{"text", "line"\\} row per line, and \`micse index build\` writes none this long`), []],
      ['texts-bad-row', (idx) => fs.writeFile(path.join(idx, INDEX_FILES.texts), readFileSync(path.join(good, INDEX_FILES.texts), 'utf8').replace(/^.*\n/, '5\n')), /texts\.jsonl:1: not a \{"text", "line"\} row/, []],
      ['meta-cut', (idx) => fs.truncate(path.join(idx, INDEX_FILES.meta), 100), /meta\.json: invalid JSON \(.*\)/, []],
      ['meta-no-count', async (idx) => {
        const meta = JSON.parse(readFileSync(path.join(idx, INDEX_FILES.meta), 'utf8')) as Record<string, unknown>;
        delete meta['count'];
        writeFileSync(path.join(idx, INDEX_FILES.meta), JSON.stringify(meta));
      }, /meta\.json: count is missing, expected a number/, []],
      ['meta-model-number', async (idx) => {
        const meta = JSON.parse(readFileSync(path.join(idx, INDEX_FILES.meta), 'utf8')) as Record<string, unknown>;
        writeFileSync(path.join(idx, INDEX_FILES.meta), JSON.stringify({ ...meta, model: 5 }));
      }, /meta\.json: model is 5, expected an object/, []],
      ['meta-model-path-number', async (idx) => {
        const meta = JSON.parse(readFileSync(path.join(idx, INDEX_FILES.meta), 'utf8')) as { model: Record<string, unknown> };
        writeFileSync(path.join(idx, INDEX_FILES.meta), JSON.stringify({ ...meta, model: { ...meta.model, path: 5 } }));
      }, /meta\.json: model\.path is 5, expected a string/, []],
    ];
    for (const [name, damage, message, flags] of cases) {
      const idx = path.join(dir, name);
      await fs.cp(good, idx, { recursive: true });
      await damage(idx);
      const r = await micseHere(['search', '--backend', 'wasm', '--index', idx, '--query', 'a cat', ...flags]);
      assert.equal(r.exitCode, 2, `${name}: ${r.message}`);
      assert.match(r.message, new RegExp(`^micse: (cannot read )?${idx}/${message.source}$`), name);
    }
  });
});
