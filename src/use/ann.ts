/**
 * The approximate-nearest-neighbour index: an HNSW graph from usearch (chosen over hnswlib-node by bench/ann.ts,
 * see README), cosine metric on float32 vectors, keys = corpus row ids. The only module that imports usearch.
 */
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { BatchMatches, Index, MetricKind, ScalarKind, type Matches } from 'usearch';
import { UserError } from '../errors.js';
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

/** HNSW parameters (defaults: DEFAULT_ANN_PARAMS in src/use/defaults.ts). */
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

/** The UserError for a damaged usearch file `file`: `what` is wrong, and how to make a new one. */
export function annFileError(file: string, what: string, opts?: ErrorOptions): UserError {
  return new UserError(`${file}: corrupt or truncated (${what}); rebuild the index with \`micse index build --force\``, opts);
}

/**
 * The layout of an index file as usearch 2.x's `index_dense_gt<uint64 key, uint32 slot>` (the Node binding's index)
 * saves it, with the default serialization config (32-bit matrix dimensions, vectors included); see
 * include/usearch/index_dense.hpp (`save_to_stream`, `index_dense_head_t`) and index.hpp (`save_to_stream`,
 * `index_serialized_header_t`, `node_bytes_`, `precompute_`):
 *   uint32 rows, uint32 bytes per vector; rows x bytes per vector of vectors;
 *   a 64-byte head: "usearch", uint16 major, minor, patch, uint8 metric, scalar, key and slot kinds, uint64 count
 *   present, count deleted, dimensions, uint8 multi;
 *   the graph header: uint64 size, connectivity, base connectivity, max level (int16 widened), entry slot;
 *   size x int16 node levels; then each node: uint64 key, int16 level, and per level 0 .. level a uint32 neighbour
 *   count and uint32 slots (base connectivity of them on level 0, connectivity above).
 * All little-endian (usearch writes its structs as they are in memory, and runs on little-endian machines).
 */
const USEARCH_FILE = {
  matrixHeader: 8,
  head: 64,
  magic: 'usearch',
  graphHeader: 40,
  level: 2,
  key: 8,
  slot: 4,
  neighborsCount: 4,
  /** scalar_kind_t values (index_plugins.hpp) of the key, slot and vector element types of the Node binding's f32 index. */
  kinds: { u64: 14, u32: 15, f32: 11 },
  metricCos: 'c'.charCodeAt(0),
} as const;

/**
 * Checks that the usearch file `file` is whole before usearch reads it (usearch aborts the process on some truncated
 * files instead of returning an error): reads its matrix header, its 64-byte head, its graph header and every node's
 * level, computes from them the exact size usearch's save writes, and compares it with the file's. It also checks
 * what that size is computed from: the mark "usearch", the major version of the installed library, uint64 keys and
 * uint32 slots, cosine on float32 vectors of `dim` dimensions, a graph of as many nodes as vectors, node levels within
 * 0 .. max level and an entry slot among the nodes. Neighbour lists (the slots inside nodes) and vector values are not
 * read. A failure is a UserError naming the file and what is wrong, and saying how to rebuild the index.
 */
export async function checkAnnFile(file: string, dim: number): Promise<void> {
  const L = USEARCH_FILE;
  const fail = (what: string) => annFileError(file, what);
  const fh = await fs.open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    const read = async (offset: number, length: number, what: string): Promise<Buffer> => {
      if (offset + length > size) throw fail(`${size} bytes, too short for its ${what} at byte ${offset}`);
      const buf = Buffer.alloc(length);
      const { bytesRead } = await fh.read(buf, 0, length, offset);
      if (bytesRead !== length) throw fail(`${size} bytes, read ${bytesRead} of its ${what} at byte ${offset}`);
      return buf;
    };
    const u64 = (buf: Buffer, at: number, what: string): number => {
      const v = buf.readBigUInt64LE(at);
      if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw fail(`${what} ${v} in its header`);
      return Number(v);
    };

    const matrix = await read(0, L.matrixHeader, 'matrix header');
    const rows = matrix.readUInt32LE(0);
    const rowBytes = matrix.readUInt32LE(4);
    if (rowBytes !== dim * 4) throw fail(`${rowBytes} bytes per vector, expected ${dim * 4} for ${dim} float32 dimensions`);
    const headAt = L.matrixHeader + rows * rowBytes;
    const head = await read(headAt, L.head, `${rows} vectors and head`);
    if (head.toString('latin1', 0, L.magic.length) !== L.magic) throw fail(`no "${L.magic}" mark at byte ${headAt}`);
    const major = head.readUInt16LE(7);
    const libraryMajor = Number(ANN_LIBRARY_VERSION.split('.')[0]);
    if (major !== libraryMajor) throw fail(`written by usearch ${major}.x, this is ${ANN_LIBRARY_VERSION}`);
    const [metric, scalar, key, slot] = [head[13], head[14], head[15], head[16]];
    if (metric !== L.metricCos || scalar !== L.kinds.f32 || key !== L.kinds.u64 || slot !== L.kinds.u32) {
      throw fail(`metric, vector, key and slot kinds ${[metric, scalar, key, slot].join(', ')} in its head, ` +
        'expected cosine on float32 with uint64 keys and uint32 slots');
    }
    const present = u64(head, 17, 'count');
    const deleted = u64(head, 25, 'deleted count');
    const dims = u64(head, 33, 'dimensions');
    if (dims !== dim) throw fail(`${dims} dimensions in its head, expected ${dim}`);
    if (present + deleted !== rows) throw fail(`${present} + ${deleted} deleted vectors in its head, ${rows} in its matrix header`);

    const graphAt = headAt + L.head;
    const graph = await read(graphAt, L.graphHeader, 'graph header');
    const nodes = u64(graph, 0, 'node count');
    const connectivity = u64(graph, 8, 'connectivity');
    const connectivityBase = u64(graph, 16, 'base connectivity');
    const maxLevel = Number(graph.readBigInt64LE(24)); // int16 widened: -1 in an empty graph
    const entry = u64(graph, 32, 'entry slot');
    if (nodes !== rows) throw fail(`${nodes} graph nodes, ${rows} vectors`);
    if (nodes > 0 && entry >= nodes) throw fail(`entry slot ${entry} of ${nodes} nodes`);
    const neighborsBytes = (n: number) => n * L.slot + L.neighborsCount;
    const levelsAt = graphAt + L.graphHeader;
    const levels = await read(levelsAt, nodes * L.level, 'node levels');
    let expected = levelsAt + nodes * L.level;
    for (let i = 0; i < nodes; i++) {
      const level = levels.readInt16LE(i * L.level);
      if (level < 0 || level > maxLevel) throw fail(`node ${i} at level ${level}, the graph's levels are 0 .. ${maxLevel}`);
      expected += L.key + L.level + neighborsBytes(connectivityBase) + level * neighborsBytes(connectivity);
    }
    if (!Number.isSafeInteger(expected)) throw fail(`connectivity ${connectivity} and ${connectivityBase} in its graph header`);
    if (size !== expected) throw fail(`${size} bytes, its headers imply ${expected}`);
  } finally {
    await fh.close();
  }
}
