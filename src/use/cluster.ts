/**
 * `cluster`: sentences -> one cluster id each, by
 *   - k-means (ml-kmeans, k-means++ initialisation seeded by its own `seed` option, so a seed fixes the result)
 *     on unit-normalised embeddings (squared Euclidean on unit vectors ranks as cosine), or
 *   - threshold communities, when k is unknown: sentence-transformers' `community_detection` (every sentence whose
 *     `minCommunitySize`-th neighbour scores >= threshold is a candidate centre; its community is every sentence
 *     scoring >= threshold with it; communities are taken largest first, each dropping members already taken, and
 *     kept when at least `minCommunitySize` remain). With the default minCommunitySize 1 every sentence ends in a
 *     community (possibly alone); otherwise the rest get id -1 (unassigned).
 * Cluster ids are renumbered by size (largest = 0; ties by first member), and each cluster lists the members
 * nearest its centroid (the mean of its unit vectors) for a readable summary.
 */
import { kmeans } from 'ml-kmeans';
import { checkInteger, shownArgument, UserError } from '../errors.js';
import type { BertTokenizer } from '../data/tokenizer.js';
import type { BertModel } from '../model/bert.js';
import { embed, type EmbedOptions } from '../model/embed.js';
import { DEFAULT_CLUSTER_SEED, DEFAULT_MIN_COMMUNITY_SIZE, DEFAULT_NEAREST } from './defaults.js';
import { checkMatrix, cosine, dotRow, normalizeRows, row, toMatrix, type Matrix, type Neighbor } from './vectors.js';

export const DEFAULT_KMEANS_MAX_ITERATIONS = 100;
export const DEFAULT_KMEANS_TOLERANCE = 1e-6;
/** Id of a sentence in no community (threshold mode with minCommunitySize > 1). */
export const UNASSIGNED = -1;

export interface ClusterOptions {
  /** k-means with this many clusters (give k or threshold, not both). */
  k?: number;
  /** Threshold communities with this cosine threshold. */
  threshold?: number;
  seed?: number;
  maxIterations?: number;
  tolerance?: number;
  minCommunitySize?: number;
  nearest?: number;
}

export interface ClusterInfo {
  id: number;
  size: number;
  /** Row indexes of the members, ascending. */
  members: number[];
  /** The `nearest` members closest to the centroid, best first (cosine). */
  nearest: Neighbor[];
}

export interface ClusterResult {
  method: 'kmeans' | 'threshold';
  /** One cluster id per input row (UNASSIGNED = -1 only in threshold mode with minCommunitySize > 1). */
  assignments: number[];
  clusters: ClusterInfo[];
  /** k-means: iterations run, whether it converged, and clusters that ended empty (dropped). */
  iterations?: number;
  converged?: boolean;
  emptyClusters?: number;
}

function validate(n: number, opts: ClusterOptions, what: string): void {
  if (n === 0) throw new UserError(`${what}: no sentences to cluster (the input is empty or every line is blank)`);
  const hasK = opts.k !== undefined;
  const hasT = opts.threshold !== undefined;
  if (hasK === hasT) throw new UserError('give either k (k-means) or a threshold (communities), not both or neither');
  if (hasK) {
    const k = opts.k!;
    checkInteger('k', k);
    if (k > n) throw new UserError(`k = ${k} is larger than the number of sentences (${n}) in ${what}`);
  } else {
    const t = opts.threshold!;
    if (!Number.isFinite(t) || t < -1 || t > 1) throw new UserError(`threshold must be a cosine in [-1, 1], got ${t}`);
    const m = opts.minCommunitySize ?? DEFAULT_MIN_COMMUNITY_SIZE;
    checkInteger('minCommunitySize', m);
  }
  const { seed, maxIterations, tolerance, nearest } = opts;
  if (seed !== undefined && !Number.isInteger(seed)) throw new UserError(`seed must be an integer, got ${shownArgument(seed)}`);
  if (maxIterations !== undefined) checkInteger('maxIterations', maxIterations);
  if (tolerance !== undefined && !(Number.isFinite(tolerance) && tolerance >= 0)) throw new UserError(`tolerance must be a finite number >= 0, got ${tolerance}`);
  if (nearest !== undefined) checkInteger('nearest', nearest, 0);
}

/** Renumbers raw groups by size (desc, ties by first member) and builds the summaries. */
function finish(unit: Matrix, groups: number[][], nearestN: number): { assignments: number[]; clusters: ClusterInfo[] } {
  const sorted = groups.filter((g) => g.length > 0).map((g) => [...g].sort((a, b) => a - b));
  sorted.sort((a, b) => b.length - a.length || a[0]! - b[0]!);
  const assignments = new Array<number>(unit.rows).fill(UNASSIGNED);
  const clusters = sorted.map((members, id) => {
    for (const i of members) assignments[i] = id;
    const centroid = new Float64Array(unit.dim); // [dim]
    for (const i of members) for (let j = 0; j < unit.dim; j++) centroid[j]! += unit.data[i * unit.dim + j]!;
    const nearest = members
      .map((i) => ({ id: i, score: cosine(row(unit, i), centroid) }))
      .sort((a, b) => b.score - a.score || a.id - b.id)
      .slice(0, nearestN);
    return { id, size: members.length, members, nearest };
  });
  return { assignments, clusters };
}

function kmeansGroups(unit: Matrix, opts: ClusterOptions): Omit<ClusterResult, 'assignments' | 'clusters'> & { groups: number[][] } {
  const k = opts.k!;
  const data = Array.from({ length: unit.rows }, (_, i) => Array.from(row(unit, i)));
  const res = kmeans(data, k, {
    seed: opts.seed ?? DEFAULT_CLUSTER_SEED,
    initialization: 'kmeans++',
    maxIterations: opts.maxIterations ?? DEFAULT_KMEANS_MAX_ITERATIONS,
    tolerance: opts.tolerance ?? DEFAULT_KMEANS_TOLERANCE,
  });
  const groups: number[][] = Array.from({ length: k }, () => []);
  res.clusters.forEach((c, i) => groups[c]!.push(i));
  return { method: 'kmeans', groups, iterations: res.iterations, converged: res.converged, emptyClusters: groups.filter((g) => g.length === 0).length };
}

function communityGroups(unit: Matrix, threshold: number, minSize: number): number[][] {
  const n = unit.rows;
  // Pass 1: neighbours >= threshold per row (itself included), from the symmetric similarity matrix.
  const counts = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const qi = row(unit, i);
    for (let j = i; j < n; j++) {
      if (dotRow(unit, j, qi) >= threshold) {
        counts[i]!++;
        if (j !== i) counts[j]!++;
      }
    }
  }
  // Pass 2: candidate centres, largest community first (stable: ties keep row order, as Python's sort).
  const centres = Array.from({ length: n }, (_, i) => i).filter((i) => counts[i]! >= minSize);
  centres.sort((a, b) => counts[b]! - counts[a]! || a - b);
  const taken = new Uint8Array(n);
  const groups: number[][] = [];
  for (const c of centres) {
    const qc = row(unit, c);
    const fresh: number[] = [];
    for (let j = 0; j < n; j++) if (taken[j] === 0 && dotRow(unit, j, qc) >= threshold) fresh.push(j);
    if (fresh.length >= minSize) {
      for (const j of fresh) taken[j] = 1;
      groups.push(fresh);
    }
  }
  return groups;
}

/**
 * Clusters the rows of `vectors` (any norm; they are unit-normalised first). `what` names the input in errors; a
 * Matrix that is not consistent (checkMatrix) is a UserError naming `vectors`.
 */
export function clusterVectors(vectors: Matrix, opts: ClusterOptions, what = 'the input'): ClusterResult {
  checkMatrix(vectors, 'vectors');
  validate(vectors.rows, opts, what);
  const unit = normalizeRows(vectors);
  const nearestN = opts.nearest ?? DEFAULT_NEAREST;
  if (opts.k !== undefined) {
    const { groups, ...rest } = kmeansGroups(unit, opts);
    return { ...rest, ...finish(unit, groups, nearestN) };
  }
  const groups = communityGroups(unit, opts.threshold!, opts.minCommunitySize ?? DEFAULT_MIN_COMMUNITY_SIZE);
  return { method: 'threshold', ...finish(unit, groups, nearestN) };
}

/** Embeds `sentences` and clusters them (see the module comment). */
export async function cluster(model: BertModel, tokenizer: BertTokenizer, sentences: readonly string[],
  opts: ClusterOptions & Omit<EmbedOptions, 'onBatch'> = {}, what = 'the input'): Promise<ClusterResult> {
  validate(sentences.length, opts, what); // before embedding anything
  const vecs = await embed(model, tokenizer, [...sentences], { batchSize: opts.batchSize, pooler: opts.pooler, maxLength: opts.maxLength, progress: opts.progress });
  return clusterVectors(toMatrix(vecs, model.config.hiddenSize), opts, what);
}
