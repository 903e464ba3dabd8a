/**
 * ANN library comparison (a script, not a test): usearch vs hnswlib-node on the same sentence embeddings.
 * Embeds the unique STS-B dev sentences (or any one-sentence-per-line `--corpus`) with a checkpoint, then for each
 * library and parameter set measures
 *   - build throughput (vectors/s added to the index, single thread, so the two are comparable),
 *   - query latency (one query at a time, mean ms and queries/s),
 *   - recall@10 against exact brute-force cosine (strict: same ids; tie-aware: a hit scoring at least the exact
 *     10th score, as duplicate sentences have equal vectors).
 * Both indexes use cosine on the same float32 vectors. The numbers behind the choice are in README (section
 * "Similarity, semantic search and clustering").
 * Run: node --import tsx bench/ann.ts [--model DIR] [--corpus FILE] [--queries N] [--backend wasm]
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import hnswlib from 'hnswlib-node';
import usearch from 'usearch';
import { readAll } from '../src/data/readers.js';
import { readStsBenchmark } from '../eval/senteval.js';
import { selectBackend } from '../src/model/backend.js';
import type { BackendName } from '../src/model/backendNames.js';
import { embed } from '../src/model/embed.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { exactTopK, normalizeRows, recallAtK, row, toMatrix, type Matrix, type Neighbor } from '../src/use/vectors.js';

const SHARED_DATA = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'shared', 'data');
const DEFAULT_MODEL = path.join(SHARED_DATA, 'hf-reference', 'tiny-h32-l4');
const DEFAULT_SENTEVAL = path.join(SHARED_DATA, 'senteval');
/** Queries drawn (evenly spaced) from the corpus itself. */
const DEFAULT_QUERIES = 500;
const K = 10;
/** Scores within this of the exact 10th count as ties. */
const TIE_TOLERANCE = 1e-6;
/** (M / connectivity, efConstruction / expansion_add, efSearch / expansion_search) settings tried. */
const SETTINGS: readonly [number, number, number][] = [
  [16, 128, 64],
  [16, 128, 128],
  [16, 200, 256],
  [32, 200, 128],
  [32, 200, 256],
];

const { values: args } = parseArgs({
  options: {
    model: { type: 'string', default: DEFAULT_MODEL },
    corpus: { type: 'string' },
    queries: { type: 'string', default: String(DEFAULT_QUERIES) },
    backend: { type: 'string', default: 'wasm' },
  },
});

async function sentences(): Promise<string[]> {
  if (args.corpus !== undefined) return (await readAll(args.corpus)).lines.map((l) => l.text);
  const dev = readStsBenchmark(DEFAULT_SENTEVAL, 'dev');
  return [...new Set([...dev.s1, ...dev.s2])];
}

interface Result {
  lib: string;
  m: number;
  efC: number;
  efS: number;
  buildPerS: number;
  queryMs: number;
  recallStrict: number;
  recallTies: number;
}

function measure(lib: string, m: number, efC: number, efS: number, data: Matrix, queries: number[], exact: Neighbor[][],
  build: () => void, search: (q: Float32Array) => Neighbor[]): Result {
  const t0 = performance.now();
  build();
  const buildS = (performance.now() - t0) / 1000;
  let strict = 0;
  let ties = 0;
  const t1 = performance.now();
  const found = queries.map((qi) => search(row(data, qi)));
  const queryMs = (performance.now() - t1) / queries.length;
  found.forEach((f, i) => {
    strict += recallAtK(f, exact[i]!, K, 0);
    ties += recallAtK(f, exact[i]!, K, TIE_TOLERANCE);
  });
  return { lib, m, efC, efS, buildPerS: data.rows / buildS, queryMs, recallStrict: strict / queries.length, recallTies: ties / queries.length };
}

async function main(): Promise<void> {
  await selectBackend(args.backend as BackendName);
  const { model, tokenizer } = await loadPretrained(args.model);
  const texts = await sentences();
  const t0 = performance.now();
  const vecs = await embed(model, tokenizer, texts, { batchSize: 128 });
  process.stderr.write(`embedded ${texts.length} sentences in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  model.dispose();
  const data = normalizeRows(toMatrix(vecs, model.config.hiddenSize));
  const nq = Math.min(Number(args.queries), data.rows);
  const queries = Array.from({ length: nq }, (_, i) => Math.floor((i * data.rows) / nq));
  const te = performance.now();
  const exact = queries.map((qi) => exactTopK(data, row(data, qi), K));
  const exactMs = (performance.now() - te) / nq;

  // usearch: cosine metric, f32 storage, vectors added as one matrix on `threads` threads (0: every core).
  const keys = BigUint64Array.from({ length: data.rows }, (_, i) => BigInt(i));
  const measureUsearch = (lib: string, m: number, efC: number, efS: number, threads: number): Result => {
    const u = new usearch.Index({ dimensions: data.dim, metric: usearch.MetricKind.Cos, quantization: usearch.ScalarKind.F32,
      connectivity: m, expansion_add: efC, expansion_search: efS, multi: false });
    return measure(lib, m, efC, efS, data, queries, exact, () => u.add(keys, data.data, threads), (q) => {
      const r = u.search(q, K, 1);
      return Array.from(r.keys, (key, j) => ({ id: Number(key), score: 1 - r.distances[j]! }));
    });
  };

  const results: Result[] = [];
  for (const [m, efC, efS] of SETTINGS) {
    results.push(measureUsearch('usearch', m, efC, efS, 1));
    // hnswlib-node: cosine space, points added one at a time (its only add API), fixed seed.
    const h = new hnswlib.HierarchicalNSW('cosine', data.dim);
    results.push(measure('hnswlib-node', m, efC, efS, data, queries, exact, () => {
      h.initIndex({ maxElements: data.rows, m, efConstruction: efC, randomSeed: 100 });
      for (let i = 0; i < data.rows; i++) h.addPoint(Array.from(row(data, i)), i);
      h.setEf(efS);
    }, (q) => {
      const r = h.searchKnn(Array.from(q), K);
      return r.neighbors.map((id, j) => ({ id, score: 1 - r.distances[j]! }));
    }));
  }
  // usearch's batch add on every core (hnswlib-node's Node binding adds one point per call, on the main thread).
  results.push(measureUsearch('usearch, all cores', 16, 128, 128, 0));
  console.log(`corpus: ${data.rows} vectors of dimension ${data.dim}; ${nq} queries; exact brute force ${exactMs.toFixed(3)} ms/query`);
  console.log('| library | M | efConstruction | efSearch | build (vectors/s) | query (ms) | queries/s | recall@10 strict | recall@10 ties |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const r of results) {
    console.log(`| ${r.lib} | ${r.m} | ${r.efC} | ${r.efS} | ${r.buildPerS.toFixed(0)} | ${r.queryMs.toFixed(3)} | ${(1000 / r.queryMs).toFixed(0)} | ${r.recallStrict.toFixed(4)} | ${r.recallTies.toFixed(4)} |`);
  }
}

await main();
