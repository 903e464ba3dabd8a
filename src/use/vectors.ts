/**
 * Dense-vector helpers for similarity, search and clustering: row-major float32 matrices, L2 normalisation,
 * cosine and exact (brute-force) top-k. Pure functions of arrays, no I/O; the exact search is the reference the
 * ANN index's recall is measured against, so it is written plainly (float64 accumulation, ties broken by id).
 */
import { checkInteger, kindOf, UserError } from '../errors.js';

/** A row-major [rows, dim] float32 matrix. */
export interface Matrix {
  data: Float32Array;
  rows: number;
  dim: number;
}

/**
 * Throws a UserError naming `name` (the argument, e.g. `vectors`) and what is wrong unless `m` is a consistent
 * Matrix, as a caller may build one by hand: `data` a Float32Array of exactly rows * dim finite values, `rows` an
 * integer >= 0 and `dim` a positive integer.
 */
export function checkMatrix(m: Matrix, name: string): void {
  const v: unknown = m;
  if (v === null || typeof v !== 'object') throw new UserError(`${name} must be a Matrix { data, rows, dim }, got ${kindOf(v)}`);
  if (!(m.data instanceof Float32Array)) {
    const d: unknown = m.data;
    const kind = d !== null && typeof d === 'object' ? Object.prototype.toString.call(d).slice(8, -1) : kindOf(d);
    throw new UserError(`${name}.data must be a Float32Array, got ${kind}`);
  }
  checkInteger(`${name}.rows`, m.rows, 0);
  checkInteger(`${name}.dim`, m.dim);
  if (m.data.length !== m.rows * m.dim) {
    throw new UserError(`${name}.data has ${m.data.length} values, rows * dim = ${m.rows} * ${m.dim} = ${m.rows * m.dim}`);
  }
  for (let i = 0; i < m.data.length; i++) {
    if (!Number.isFinite(m.data[i]!)) throw new UserError(`${name}.data[${i}] (row ${Math.floor(i / m.dim)}) is ${m.data[i]}, not a finite number`);
  }
}

/** Norms below this are treated as zero (the row is left as zeros rather than divided by ~0). */
export const MIN_NORM = 1e-12;

/** number[][] [rows, dim] -> Matrix. */
export function toMatrix(rows: readonly (readonly number[] | Float32Array)[], dim: number): Matrix {
  const data = new Float32Array(rows.length * dim);
  rows.forEach((r, i) => {
    if (r.length !== dim) throw new Error(`row ${i} has ${r.length} values, expected ${dim}`);
    data.set(r, i * dim);
  });
  return { data, rows: rows.length, dim };
}

/** Row i as a view (no copy). */
export function row(m: Matrix, i: number): Float32Array {
  return m.data.subarray(i * m.dim, (i + 1) * m.dim);
}

/** Returns a copy of `m` with every row scaled to unit L2 norm (zero rows stay zero). */
export function normalizeRows(m: Matrix): Matrix {
  const out = new Float32Array(m.data.length);
  for (let i = 0; i < m.rows; i++) {
    const off = i * m.dim;
    let ss = 0;
    for (let j = 0; j < m.dim; j++) ss += m.data[off + j]! * m.data[off + j]!;
    const norm = Math.sqrt(ss);
    if (norm < MIN_NORM) continue;
    for (let j = 0; j < m.dim; j++) out[off + j] = m.data[off + j]! / norm;
  }
  return { data: out, rows: m.rows, dim: m.dim };
}

/** Cosine similarity of two vectors (0 when either is zero). */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`cosine: lengths differ (${a.length} vs ${b.length})`);
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  const den = Math.sqrt(na) * Math.sqrt(nb);
  return den < MIN_NORM ? 0 : dot / den;
}

/** Dot product of `q` with row i of `m`, accumulated in float64. */
export function dotRow(m: Matrix, i: number, q: ArrayLike<number>): number {
  const off = i * m.dim;
  let s = 0;
  for (let j = 0; j < m.dim; j++) s += m.data[off + j]! * q[j]!;
  return s;
}

/** One neighbour: row id and cosine similarity. */
export interface Neighbor {
  id: number;
  score: number;
}

/**
 * Exact top-k by cosine: `corpus` and `query` must already be unit-normalised (cosine = dot). Returns up to k
 * neighbours, best first; equal scores are ordered by smaller id, so the result is fully deterministic.
 */
export function exactTopK(corpus: Matrix, query: ArrayLike<number>, k: number): Neighbor[] {
  const kk = Math.min(k, corpus.rows);
  // A sorted buffer of the best kk so far (worst last); O(n * k) worst case, O(n) typical for small k.
  const best: Neighbor[] = [];
  const worse = (a: Neighbor, b: Neighbor) => a.score < b.score || (a.score === b.score && a.id > b.id);
  for (let i = 0; i < corpus.rows; i++) {
    const cand = { id: i, score: dotRow(corpus, i, query) };
    if (best.length === kk && !worse(best[kk - 1]!, cand)) continue;
    let pos = best.length === kk ? kk - 1 : best.length;
    best[pos] = cand;
    while (pos > 0 && worse(best[pos - 1]!, best[pos]!)) {
      [best[pos - 1], best[pos]] = [best[pos]!, best[pos - 1]!];
      pos--;
    }
  }
  return best;
}

/**
 * recall@k of `approx` against `exact` for one query, tolerant of ties: an approximate hit counts when it is
 * in the exact top-k or scores at least the exact k-th score minus `tieTolerance` (equal-scoring neighbours,
 * e.g. duplicate sentences, are interchangeable). Scores must be on the same scale (cosine).
 */
export function recallAtK(approx: readonly Neighbor[], exact: readonly Neighbor[], k: number, tieTolerance = 0): number {
  const truth = exact.slice(0, k);
  if (truth.length === 0) return 1;
  const ids = new Set(truth.map((n) => n.id));
  const kth = truth[truth.length - 1]!.score;
  let hit = 0;
  for (const n of approx.slice(0, k)) if (ids.has(n.id) || n.score >= kth - tieTolerance) hit++;
  return Math.min(hit, truth.length) / truth.length;
}
