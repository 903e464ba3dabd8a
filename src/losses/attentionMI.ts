/**
 * Attention mutual information (AMI), the miCSE regulariser: for every (sentence, head, layer parity) it measures
 * how strongly the log attention probabilities of the two dropout views co-vary, via the mutual information of a
 * bivariate Gaussian, and returns minus its mean times a sparsity scale (so minimising the loss maximises MI).
 *
 * Reference: SAP-samples/acl2023-micse `model/models.py` `cl_forward` (Klein & Nabi, "miCSE: Mutual Information
 * Contrastive Learning for Low-shot Sentence Embeddings", ACL 2023). Step by step, with the shapes used here:
 *   attentions                                   // [2B, L, H, T, T]  rows interleaved: s0 v1, s0 v2, s1 v1, ...
 *   regroup `(h i) (j m) k t z -> (h k m) i (j t z)` (i = view, m = layer parity)
 *   X = view 1, Y = view 2                       // [R, N], R = 2*H*B, N = (L/2)*T*T;  row (b*H + k)*2 + m,
 *                                                //   column j*T*T + t*T + z holds relative layer 2j + m
 *   valid = (X > 0) & (Y > 0)                    // [R, N], no gradient
 *   rows: those with >= targetSamples valid entries, drawing targetSamples each; if there is none, all rows,
 *         drawing min(valid count over rows, targetSamples) each
 *   draw: uniform, without replacement, among the row's valid positions, kept in increasing index order
 *   x = log X[drawn], y = log Y[drawn]           // [rows, samples]
 *   rho = cosine(x - mean(x), y - mean(y)), eps 1e-6 per norm (torch.nn.CosineSimilarity)   // [rows]
 *   I = -0.5 * log(1 - rho^2)                    // [rows]
 *   scale = (valid entries / all entries over the rows the reference keeps)^2 + 1e-6       // constant
 *   AMI = -mean(I) * scale; NaN -> nanValue; no sample -> 0.
 * Gradients reach `attentions` through the drawn probabilities of both views only (mask, draw and scale are
 * constants), exactly as in the reference.
 *
 * Where this deliberately differs from the reference (it misbehaves there):
 * - |rho| = 1 (identical or exactly mirrored centred rows, e.g. a single layer whose rows are a multiple of each
 *   other): the reference returns log(0) = -inf and the loss becomes -inf; here rho is clamped to
 *   [-(1 - rhoEps), 1 - rhoEps] (rhoEps = 1e-6), so I is at most about 6.6, finite, and the clamped rows carry no
 *   gradient. Rounding that pushes |rho| a hair above 1 (NaN in the reference, replaced by 100) is clamped too.
 *   1 - rho^2 is computed as (1 - rho)(1 + rho) for accuracy near |rho| = 1. `rhoEps: 0` turns the clamp off and
 *   gives the reference's behaviour: -inf where |rho| = 1 and NaN (then nanValue, without gradient) where rounding
 *   puts |rho| above 1 (the product is 0, or negative, in the same cases as the reference's 1 - rho^2); it runs on
 *   the stock ops on every backend, webgpu included (slower there: a reference mode).
 * - Fully padded rows (no valid entry in either view): in the fallback regime the reference takes the minimum
 *   valid count over ALL rows, so one empty row makes it draw 0 samples and return 0 for the whole batch. Here
 *   rows without a valid entry are left out of the draw and of the mean (the minimum is taken over the others);
 *   the scale keeps the reference's formula (over all rows in that regime). In the main regime such rows are
 *   excluded by the row filter anyway, as in the reference.
 * - Zero samples (every row empty): value 0 like the reference, but as `0 * attentions[0]`, so it stays on the
 *   gradient tape and `tf.grad` returns zeros instead of throwing "y is not a function of x".
 * - Half precision: the reference under fp16 autocast would take logs and cosines in half precision. Here the
 *   input is cast to float32 first and everything is computed in float32 (TF.js has no float16 tensors; a
 *   backend storing float16 textures only rounds the input).
 * - NaN (now only from non-finite input) -> nanValue, selected on the device with `tf.where`.
 *
 * Device residency: nothing is read back. The row filter is a mask and the sample count a scalar on the device:
 * every row draws S = min(targetSamples, N) positions (seeded uniform keys from kernels/dropout, invalid positions keyed
 * -1, top-k by key, so any prefix is a uniform draw among the valid positions) and uses its first `samples` of them;
 * rows that do not enter the mean are masked out. Shapes are static, so the same kernels run every step and WebGPU
 * (where a host read blocks and, in Node, `dataSync` throws) never waits. `rows`/`samples` come back as a tensor
 * (`drawn`) the caller may read with the loss. The draw's order does not matter: centring and the cosine are
 * permutation invariant. Pinning the draw (`sampleIndices`, for tests and reference comparisons) is the one path
 * that reads the row filter on the host.
 *
 * Kernels: where the backend has the AMI kernels (kernels/ami: webgpu, cpu, wasm), the term is 6 kernels forward
 * and 1 backward straight from `attentions` (row counts, row plan, draw, per-row MI, value, `drawn`; the gradient
 * written into d attentions directly) instead of ~250 stock kernels: the same draw (positions and order) and the
 * same arithmetic within float32 rounding. Pinned draws, S > AMI_DRAW_MAX_SAMPLES and rhoEps 0 take the stock ops
 * below, as every other backend does. Their gather gradients need an UnsortedSegmentSum kernel (kernels/stock
 * registers a scatter-add on cpu and wasm).
 */
import { attentionMI, drawPositions } from '../kernels/ami/index.js';
import { freshSeed } from '../kernels/dropout/index.js';
import { detached, tf } from '../model/tf.js';

export interface AttentionMIOptions {
  /** Samples drawn per row; rows with fewer valid entries are dropped unless no row has enough (objective.targetSamples). */
  targetSamples: number;
  /** Value substituted when the AMI is NaN (the reference's DUMMY_VALUE; objective.nanValue). */
  nanValue: number;
  /** Seed of the draw. Same seed and same input, same draw. Undefined: a fresh random draw. */
  seed?: number;
  /**
   * Pins the draw: the positions (column indices into the regrouped `[rows, N]` matrices, see the module
   * comment) chosen for each KEPT row, in kept-row order (increasing original row index), shape
   * `[rows, samples]`, each row increasing. A tensor must be int32; it is not disposed. Positions are not
   * checked for validity: an invalid one takes log(0) and turns the value into nanValue.
   */
  sampleIndices?: tf.Tensor2D | number[][];
  /** eps of the cosine (per-norm clamp, torch.nn.CosineSimilarity(eps=1e-6) in the reference). */
  cosineEps?: number;
  /**
   * rho is clamped to [-(1 - rhoEps), 1 - rhoEps]; 0: not clamped, as in the reference (-inf at |rho| = 1, NaN and
   * then nanValue above). objective.rhoEps.
   */
  rhoEps: number;
  /** Added to the squared valid ratio in the scale. */
  scaleEps?: number;
}

/** The clamps of AMI's arithmetic (not objective keys). */
export const ATTENTION_MI_DEFAULTS = {
  cosineEps: 1e-6,
  scaleEps: 1e-6,
} as const;

export interface AttentionMIResult {
  /** The AMI term (to be multiplied by lambda), a scalar tensor owned by the caller. */
  value: tf.Scalar;
  /**
   * int32 `[rows, samples]`, owned by the caller: rows that entered the mean, and samples drawn per row (both 0
   * when nothing could be drawn; then value is 0). A tensor so that nothing is read back during the step.
   */
  drawn: tf.Tensor1D;
}

/**
 * The reference's regrouping `(h i) (j m) k t z -> (h k m) i (j t z)`, split by view.
 * `attentions [2B, L, H, T, T]` -> `{ x: view 1 [R, N], y: view 2 [R, N] }` with R = 2*H*B, N = (L/2)*T*T,
 * row `(b*H + k)*2 + m`, column `j*T*T + t*T + z` for relative layer `2j + m`. Float32. L must be even.
 */
export function regroupAttention(attentions: tf.Tensor): { x: tf.Tensor2D; y: tf.Tensor2D } {
  const [twoB, L, H, T] = checkAttentionShape(attentions);
  const B = twoB / 2;
  const J = L / 2;
  const TT = T * T;
  return tf.tidy(() => {
    const a = tf.reshape(tf.cast(attentions, 'float32'), [twoB, J, 2, H, TT]); // [(b i), j, m, k, (t z)]
    const g = tf.transpose(a, [0, 3, 2, 1, 4]); // [(b i), k, m, j, (t z)]
    const v = tf.reshape(g, [B, 2, H * 2 * J * TT]); // [b, i, (k m j t z)]
    const x = tf.reshape(tf.slice(v, [0, 0, 0], [B, 1, -1]), [B * H * 2, J * TT]); // [R, N]
    const y = tf.reshape(tf.slice(v, [0, 1, 0], [B, 1, -1]), [B * H * 2, J * TT]); // [R, N]
    return { x: x as tf.Tensor2D, y: y as tf.Tensor2D };
  });
}

/** `[2B, L, H, T, T]` of `attentions`, checked (two views per sentence, an even number of layers). */
function checkAttentionShape(attentions: tf.Tensor): [number, number, number, number, number] {
  const [twoB, L, H, T, T2] = attentions.shape as [number, number, number, number, number];
  if (attentions.rank !== 5 || T !== T2) {
    throw new Error(`attentionMutualInformation: attentions must be [2B, L, H, T, T]; got [${attentions.shape}]`);
  }
  if (twoB % 2 !== 0) throw new Error(`attentionMutualInformation: the first dimension (2B = ${twoB}) must be even: two views per sentence`);
  if (L % 2 !== 0) throw new Error(`attentionMutualInformation: the number of layers (${L}) must be even: rows pair layers m, m+2, ...`);
  return [twoB, L, H, T, T2];
}

/**
 * For each row, `samples` distinct positions drawn uniformly among the row's valid positions (without
 * replacement), in draw order: `valid [R, N]` (bool or 0/1) -> int32 `[R, samples]`. Any prefix of a row is itself
 * a uniform draw of that size, which is how the AMI draws fewer samples in its fallback regime with a fixed shape.
 * On the device: seeded uniform keys (kernels/dropout), invalid positions keyed -1, top-k by key (equal keys by increasing
 * index, tf.topk's order on cpu). Rows with fewer than `samples` valid positions end with invalid ones. The draw is
 * the op drawPositions of kernels/ami (one kernel where the backend has it). Exported for tests.
 */
export function rankSamplePositions(valid: tf.Tensor2D, samples: number, seed: number): tf.Tensor2D {
  const [R, N] = valid.shape;
  if (!Number.isInteger(samples) || samples < 0 || samples > N) {
    throw new Error(`sample positions: samples must be an integer in [0, ${N}], got ${samples}`);
  }
  return tf.tidy(() => {
    if (samples === 0) return tf.zeros([R, 0], 'int32') as tf.Tensor2D;
    const mask = valid.dtype === 'bool' ? valid : tf.greater(valid, 0); // [R, N]
    return drawPositions(mask as tf.Tensor2D, samples, seed); // [R, S]
  });
}

/**
 * `rankSamplePositions` sorted ascending per row (top-k of the negated positions): the draw as a set, in
 * increasing index order, the form `sampleIndices` takes. Seed undefined: a fresh random draw.
 */
export function drawSamplePositions(valid: tf.Tensor2D, samples: number, seed?: number): tf.Tensor2D {
  return tf.tidy(() => {
    const ranked = rankSamplePositions(valid, samples, seed ?? freshSeed()); // [R, S]
    if (samples === 0) return ranked;
    return tf.neg(tf.topk(tf.neg(ranked), samples, true).values) as tf.Tensor2D; // [R, S] int32, increasing
  });
}

/** `m [R, N]`, `positions [R, S]` -> `m[r, positions[r, s]]` as `[R, S]`, differentiable in `m`. */
function gatherPerRow(m: tf.Tensor2D, positions: tf.Tensor2D): tf.Tensor2D {
  const [R, N] = m.shape;
  const offsets = tf.mul(tf.range(0, R, 1, 'int32'), tf.scalar(N, 'int32')).reshape([R, 1]); // [R, 1]
  const flatIdx = tf.add(positions, offsets); // [R, S]
  const flat: tf.Tensor = tf.reshape(m, [R * N]); // [R*N]
  return tf.gather(flat, flatIdx) as tf.Tensor2D; // [R, S]
}

/** Which rows enter the mean and how many samples each draws, as device tensors (see the module comment). */
interface RowPlan {
  /** 1 for rows that enter the mean, else 0.  [R] float32 */
  rowMask: tf.Tensor1D;
  /** Rows that enter the mean (0 when nothing can be drawn).  scalar float32 */
  rows: tf.Scalar;
  /** Samples drawn per row (0 when nothing can be drawn).  scalar float32 */
  samples: tf.Scalar;
  /** The constant scale.  scalar float32 */
  scale: tf.Scalar;
}

/**
 * The row filter from the per-row valid counts `[R]` (float32, exact below 2^24), on the device:
 * main regime (some row has >= targetSamples valid entries): those rows, targetSamples each, scale over them;
 * fallback: the non-empty rows, min(their smallest count, targetSamples) each, scale over ALL rows.
 */
function planRows(counts: tf.Tensor1D, N: number, targetSamples: number, scaleEps: number): RowPlan {
  const R = counts.shape[0];
  const full = tf.cast(tf.greaterEqual(counts, targetSamples), 'float32'); // [R]
  const nonEmpty = tf.cast(tf.greater(counts, 0), 'float32'); // [R]
  const anyFull = tf.greater(tf.max(full), 0); // scalar bool
  const minNonEmpty = tf.min(tf.where(tf.greater(counts, 0), counts, tf.fill([R], Number.MAX_VALUE))); // scalar
  const fallbackSamples = tf.where(tf.greater(tf.sum(nonEmpty), 0), tf.minimum(minNonEmpty, targetSamples), 0); // scalar
  const samples = tf.where(anyFull, tf.scalar(targetSamples), fallbackSamples) as tf.Scalar;
  const rowMask = tf.mul(tf.where(anyFull, full, nonEmpty), tf.cast(tf.greater(samples, 0), 'float32')) as tf.Tensor1D; // [R]
  const rows = tf.sum(rowMask) as tf.Scalar;
  // Valid entries over the rows the reference keeps: the full rows, or (fallback) all rows.
  const validSum = tf.where(anyFull, tf.sum(tf.mul(counts, full)), tf.sum(counts));
  const rowCount = tf.where(anyFull, rows, tf.scalar(R));
  const ratio = tf.div(validSum, tf.maximum(tf.mul(rowCount, N), 1));
  const scale = tf.add(tf.square(ratio), scaleEps) as tf.Scalar;
  return { rowMask, rows, samples, scale };
}

/**
 * Pinned draw: `sampleIndices [rows, samples]` for the kept rows placed at their rows of an `[R, S]` position
 * matrix (other rows 0). This is the one path that reads the counts on the host (to know which rows are kept);
 * it serves tests and reference comparisons.
 */
function pinnedPositions(indices: tf.Tensor2D | number[][], counts: tf.Tensor1D, plan: RowPlan, S: number): tf.Tensor2D {
  const kept = Array.from(plan.rowMask.dataSync()).flatMap((m, r) => (m > 0 ? [r] : []));
  const samples = plan.samples.dataSync()[0]!;
  const shape = Array.isArray(indices) ? [indices.length, indices[0]?.length ?? 0] : indices.shape;
  if (Array.isArray(indices) && indices.some((row) => row.length !== shape[1])) {
    throw new Error('attentionMutualInformation: sampleIndices rows must all have the same length');
  }
  if (shape[0] !== kept.length || (kept.length > 0 && shape[1] !== samples)) {
    throw new Error(`attentionMutualInformation: sampleIndices must be [rows, samples] = [${kept.length}, ${samples}] ` +
      `for this input (kept rows in increasing row order); got [${shape}]`);
  }
  if (!Array.isArray(indices) && indices.dtype !== 'int32') {
    throw new Error(`attentionMutualInformation: sampleIndices must be int32, got ${indices.dtype}`);
  }
  const given = Array.isArray(indices) ? indices : (indices.arraySync() as number[][]);
  const R = counts.shape[0];
  const out = new Int32Array(R * S);
  kept.forEach((r, i) => out.set(given[i]!.slice(0, S), r * S));
  return tf.tensor2d(out, [R, S], 'int32');
}

/**
 * Per-row Gaussian MI `-0.5 log(1 - rho^2)` of the probabilities `xs, ys [R, S]` over the samples where
 * `use [R, S]` (bool) holds, `count` of them per used row -> `[R]` (0 for rows with no sample).
 */
function gaussianMI(xs: tf.Tensor2D, ys: tf.Tensor2D, use: tf.Tensor2D, count: tf.Scalar, cosineEps: number, rhoEps: number): tf.Tensor1D {
  const m = tf.cast(use, 'float32'); // [R, S]
  const one = tf.onesLike(xs);
  const lx = tf.mul(tf.log(tf.where(use, xs, one)), m); // [R, S], 0 where unused
  const ly = tf.mul(tf.log(tf.where(use, ys, one)), m); // [R, S]
  const n = tf.maximum(count, 1);
  const cx = tf.mul(tf.sub(lx, tf.div(tf.sum(lx, 1, true), n)), m); // [R, S] centred, 0 where unused
  const cy = tf.mul(tf.sub(ly, tf.div(tf.sum(ly, 1, true), n)), m); // [R, S]
  // max(||c||, eps) as sqrt(max(||c||^2, eps^2)): same value, and a finite (zero) gradient for empty rows.
  const nx = tf.sqrt(tf.maximum(tf.sum(tf.square(cx), 1), cosineEps * cosineEps)); // [R]
  const ny = tf.sqrt(tf.maximum(tf.sum(tf.square(cy), 1), cosineEps * cosineEps)); // [R]
  const rho = tf.div(tf.sum(tf.mul(cx, cy), 1), tf.mul(nx, ny)); // [R]
  if (rhoEps > 0) {
    const r = tf.clipByValue(rho, -(1 - rhoEps), 1 - rhoEps); // [R]
    return tf.mul(tf.log(tf.mul(tf.sub(1, r), tf.add(1, r))), -0.5) as tf.Tensor1D; // [R]
  }
  // No clamp: log(q) is -inf at q = 0 and NaN below, as in the reference. Its gradient is taken through
  // log(max-or-1(q)) with the difference added as a constant, so a row at q <= 0 passes no inf or NaN backward
  // (the reference's value there is -inf, a skipped step, or NaN -> nanValue, a constant without gradient).
  const q = tf.mul(tf.sub(1, rho), tf.add(1, rho)); // [R]
  const qSafe = tf.where(detached(() => tf.greater(q, 0)), q, tf.onesLike(q)); // [R]
  const rest = detached(() => tf.sub(tf.log(q), tf.log(qSafe))); // [R]: 0, -inf or NaN
  return tf.mul(tf.add(tf.log(qSafe), rest), -0.5) as tf.Tensor1D; // [R]
}

/** AMI of the stacked attention probabilities; see the module comment. */
export function attentionMutualInformation(attentions: tf.Tensor, options: AttentionMIOptions): AttentionMIResult {
  const { targetSamples, nanValue } = options;
  const cosineEps = options.cosineEps ?? ATTENTION_MI_DEFAULTS.cosineEps;
  const rhoEps = options.rhoEps;
  const scaleEps = options.scaleEps ?? ATTENTION_MI_DEFAULTS.scaleEps;
  if (!Number.isInteger(targetSamples) || targetSamples < 1) {
    throw new Error(`attentionMutualInformation: targetSamples must be a positive integer, got ${targetSamples}`);
  }
  if (!(rhoEps >= 0 && rhoEps < 1)) throw new Error(`attentionMutualInformation: rhoEps must be in [0, 1), got ${rhoEps}`);
  const seed = options.seed ?? freshSeed();
  const [, L, , T] = checkAttentionShape(attentions);
  const S = Math.min(targetSamples, (L / 2) * T * T); // static sample width; a row uses its first `samples` of them
  const args = { targetSamples, samples: S, seed, scaleEps, cosineEps, rhoEps, nanValue, pinnedDraw: options.sampleIndices !== undefined };
  // The op attentionMI (kernels/ami) runs its kernels where the backend has them and they take `args`, else these ops.
  const [value, drawn] = attentionMI(attentions, args, () => tf.tidy(() => {
    const { x, y } = regroupAttention(attentions); // [R, N] each
    const [R, N] = x.shape;
    // [R, N] bool, a constant: the plan and the draw built on it stay off the gradient tape.
    const valid = detached(() => tf.logicalAnd(tf.greater(x, 0), tf.greater(y, 0)));
    const counts = tf.sum(tf.cast(valid, 'float32'), 1) as tf.Tensor1D; // [R]
    const plan = planRows(counts, N, targetSamples, scaleEps);
    const positions = options.sampleIndices !== undefined
      ? pinnedPositions(options.sampleIndices, counts, plan, S)
      : rankSamplePositions(valid as tf.Tensor2D, S, seed); // [R, S]
    const use = tf.logicalAnd(
      tf.less(tf.range(0, S, 1, 'float32').reshape([1, S]), plan.samples), // [1, S]: the first `samples`
      tf.greater(plan.rowMask, 0).reshape([R, 1])); // [R, 1]: kept rows      -> [R, S]
    const xs = gatherPerRow(x, positions); // [R, S]
    const ys = gatherPerRow(y, positions); // [R, S]
    const mi = gaussianMI(xs, ys, use as unknown as tf.Tensor2D, plan.samples, cosineEps, rhoEps); // [R]
    const meanMI = tf.div(tf.sum(tf.mul(mi, plan.rowMask)), tf.maximum(plan.rows, 1)); // scalar
    const ami = tf.mul(tf.neg(meanMI), plan.scale); // scalar
    const finite = tf.where(tf.isNaN(ami), tf.scalar(nanValue), ami);
    // Nothing drawn: 0, but on the tape (0 * an input entry) so tf.grad yields zeros rather than throwing.
    const empty = tf.mul(tf.sum(tf.slice(x, [0, 0], [1, 1])), 0);
    const v = tf.where(tf.greater(plan.rows, 0), finite, empty) as tf.Scalar;
    const d = tf.cast(tf.stack([plan.rows, plan.samples]), 'int32') as tf.Tensor1D; // [2]
    return [v, d] as [tf.Scalar, tf.Tensor1D];
  }));
  return { value, drawn };
}
