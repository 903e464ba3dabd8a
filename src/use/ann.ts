/**
 * The approximate-nearest-neighbour index: an HNSW graph from usearch (chosen over hnswlib-node by bench/ann.ts,
 * see README), cosine metric on float32 vectors, keys = corpus row ids. The only module that imports usearch.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { BatchMatches, Index, MetricKind, ScalarKind, type Matches } from 'usearch';
import type { Neighbor } from './vectors.js';

export const ANN_LIBRARY = 'usearch';
export const ANN_LIBRARY_VERSION: string = packageVersion(ANN_LIBRARY);

/** The installed version of a package whose exports hide its package.json: walk up from its entry point. */
function packageVersion(name: string): string {
  let dir = path.dirname(createRequire(import.meta.url).resolve(name));
  for (;;) {
    const file = path.join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === name && typeof pkg.version === 'string') return pkg.version;
    }
    const up = path.dirname(dir);
    if (up === dir) return 'unknown';
    dir = up;
  }
}

/** HNSW parameters; the defaults reach recall@10 >= 0.99 against exact search on the STS-B dev sentences. */
export interface AnnParams {
  /** Graph degree M (usearch `connectivity`). */
  connectivity: number;
  /** Candidate list size while inserting (efConstruction). */
  expansionAdd: number;
  /** Candidate list size while searching (ef); can be raised at query time. */
  expansionSearch: number;
  /** Insertion threads: 1 builds the same graph every time; 0 uses every core. */
  threads: number;
}

export const DEFAULT_ANN_PARAMS: Readonly<AnnParams> = { connectivity: 16, expansionAdd: 128, expansionSearch: 128, threads: 1 };

/** The fields of AnnParams stored in meta.json with the library name and version. */
export interface AnnMeta extends AnnParams {
  library: string;
  version: string;
  metric: 'cos';
  quantization: 'f32';
  /** Index file name inside the index directory. */
  file: string;
  /** Its size in bytes when it was written (absent in indexes built before it was recorded). */
  bytes?: number;
}

export class AnnIndex {
  private constructor(
    private readonly index: Index,
    readonly dim: number,
  ) {}

  static create(dim: number, params: AnnParams): AnnIndex {
    return new AnnIndex(
      new Index({
        dimensions: dim,
        metric: MetricKind.Cos,
        quantization: ScalarKind.F32,
        connectivity: params.connectivity,
        expansion_add: params.expansionAdd,
        expansion_search: params.expansionSearch,
        multi: false,
      }),
      dim,
    );
  }

  /** Opens a saved index; `view` memory-maps it instead of reading it into RAM. */
  static open(file: string, dim: number, params: AnnParams, view = false): AnnIndex {
    const ann = AnnIndex.create(dim, params);
    if (view) ann.index.view(file);
    else ann.index.load(file);
    return ann;
  }

  get size(): number {
    return this.index.size();
  }

  /** Adds rows [n, dim] with ids firstId .. firstId + n - 1. */
  add(firstId: number, data: Float32Array, threads: number): void {
    const n = data.length / this.dim;
    const keys = new BigUint64Array(n);
    for (let i = 0; i < n; i++) keys[i] = BigInt(firstId + i);
    this.index.add(keys, data, threads);
  }

  /** Top-k for each query row [q, dim], best first, scores as cosine similarity (1 - usearch's cos distance). */
  search(queries: Float32Array, k: number, threads = 0): Neighbor[][] {
    const q = queries.length / this.dim;
    const kk = Math.min(k, this.size);
    if (q === 0 || kk === 0) return Array.from({ length: q }, () => []);
    const res = this.index.search(queries, kk, threads);
    const toHits = (m: Matches): Neighbor[] => Array.from(m.keys, (key, j) => ({ id: Number(key), score: 1 - m.distances[j]! }));
    if (res instanceof BatchMatches) return Array.from({ length: q }, (_, i) => toHits(res.get(i)));
    return [toHits(res)];
  }

  save(file: string): void {
    this.index.save(file);
  }
}
