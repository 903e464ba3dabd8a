/**
 * Correlation and similarity metrics of the SentEval STS protocol, in float64 (JavaScript numbers).
 *
 * - `pearson` and `spearman` follow scipy.stats (`pearsonr`, `spearmanr`): Spearman is the Pearson correlation of
 *   the ranks, tied values sharing the average of their ranks. A constant input has no defined correlation: NaN,
 *   as scipy returns.
 * - `cosine` follows SentEval's default similarity `nan_to_num(cosine(nan_to_num(u), nan_to_num(v)))`: NaN
 *   components count as 0 and a zero vector gives similarity 0 instead of NaN.
 */

/** Throws unless the two samples are paired (same length) and large enough to correlate. */
function checkPaired(x: ArrayLike<number>, y: ArrayLike<number>, what: string): void {
  if (x.length !== y.length) throw new RangeError(`${what}: samples differ in length (${x.length} vs ${y.length})`);
  if (x.length < 2) throw new RangeError(`${what}: needs at least 2 pairs, got ${x.length}`);
}

/** Arithmetic mean of a non-empty sample. */
export function mean(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]!;
  return s / x.length;
}

/**
 * Pearson's correlation coefficient of paired samples (scipy.stats.pearsonr's statistic): the cosine of the
 * mean-centred samples. NaN when either sample is constant.
 */
export function pearson(x: ArrayLike<number>, y: ArrayLike<number>): number {
  checkPaired(x, y, 'pearson');
  const mx = mean(x);
  const my = mean(y);
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < x.length; i++) {
    const dx = x[i]! - mx;
    const dy = y[i]! - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  if (sxx === 0 || syy === 0) return NaN;
  const r = sxy / Math.sqrt(sxx * syy);
  // Rounding can push |r| a hair past 1; scipy clips the same way.
  return Math.max(-1, Math.min(1, r));
}

/**
 * 1-based ranks of `x`, tied values receiving the average of the ranks they span (scipy.stats.rankdata's
 * 'average' method). NaN values are not supported (they have no order): the caller must not pass them.
 */
export function averageRanks(x: ArrayLike<number>): Float64Array {
  const n = x.length;
  const order = Array.from({ length: n }, (_, i) => i);
  order.sort((a, b) => (x[a]! < x[b]! ? -1 : x[a]! > x[b]! ? 1 : 0));
  const ranks = new Float64Array(n);
  let start = 0;
  while (start < n) {
    let end = start + 1;
    while (end < n && x[order[end]!]! === x[order[start]!]!) end++;
    // Positions start..end-1 (0-based) hold one tied group; their 1-based ranks average to (start+1+end)/2.
    const rank = (start + 1 + end) / 2;
    for (let k = start; k < end; k++) ranks[order[k]!] = rank;
    start = end;
  }
  return ranks;
}

/**
 * Spearman's rank correlation of paired samples (scipy.stats.spearmanr's statistic): Pearson of the average
 * ranks. NaN when either sample is constant or contains NaN (scipy's default 'propagate' policy).
 */
export function spearman(x: ArrayLike<number>, y: ArrayLike<number>): number {
  checkPaired(x, y, 'spearman');
  for (let i = 0; i < x.length; i++) if (Number.isNaN(x[i]!) || Number.isNaN(y[i]!)) return NaN;
  return pearson(averageRanks(x), averageRanks(y));
}

/**
 * Cosine similarity u.v / (|u| |v|) in float64, SentEval's default STS similarity: NaN components are read as 0
 * and an undefined result (a zero vector) is 0.
 */
export function cosine(u: ArrayLike<number>, v: ArrayLike<number>): number {
  if (u.length !== v.length) throw new RangeError(`cosine: vectors differ in length (${u.length} vs ${v.length})`);
  let uv = 0;
  let uu = 0;
  let vv = 0;
  for (let i = 0; i < u.length; i++) {
    const a = Number.isNaN(u[i]!) ? 0 : u[i]!;
    const b = Number.isNaN(v[i]!) ? 0 : v[i]!;
    uv += a * b;
    uu += a * a;
    vv += b * b;
  }
  const c = uv / (Math.sqrt(uu) * Math.sqrt(vv));
  return Number.isNaN(c) ? 0 : c;
}
