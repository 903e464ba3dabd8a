/**
 * Attention mutual information (AMI), the miCSE regulariser: for every (sentence, head, layer parity) it measures
 * how strongly the log attention probabilities of the two dropout views co-vary, via the mutual information of a
 * bivariate Gaussian, and returns minus its mean times a sparsity scale (so minimising the loss maximises MI).
 *
 * Reference: SAP-samples/acl2023-micse `model/models.py` `cl_forward`, as restated in ../shared/docs/METHOD.md
 * ("Attention mutual information", steps 1-8). Step by step, with the shapes used here:
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
 *   1 - rho^2 is computed as (1 - rho)(1 + rho) for accuracy near |rho| = 1.
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
 * Device residency: the draw is done with device ops (seeded uniform keys, invalid positions set to -1, top-k by
 * key, then the chosen positions sorted ascending with a second top-k, then a gather), so no attention map is
 * downloaded. The one host read per call is the valid-entry count per row (`R` int32 values, e.g. 1,536 for
 * bert-base at batch 64): it decides which rows are kept and how many samples are drawn, i.e. output shapes,
 * and gives `rows`/`samples`/`scale`. The random keys come from `tf.randomUniform`, which TF.js generates on the
 * host and uploads (`R x N` floats); nothing is read back.
 *
 * Cost: on the pure-JS `cpu` backend the regrouping transpose is slow at bert-base sizes (about 5 s forward for
 * `[128, 4, 12, 32, 32]` on a 2-core machine, the same again backward), small next to the encoder on that
 * backend. The gather gradients need an UnsortedSegmentSum kernel (backend.ts registers a fast one on cpu).
 */
import { tf } from '../model/tf.js';

export interface AttentionMIOptions {
  /** Samples drawn per row; rows with fewer valid entries are dropped unless no row has enough. */
  targetSamples?: number;
  /** Value substituted when the AMI is NaN (the reference's DUMMY_VALUE). */
  nanValue?: number;
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
  /** rho is clamped to [-(1 - rhoEps), 1 - rhoEps] (the reference does not clamp and returns -inf at |rho| = 1). */
  rhoEps?: number;
  /** Added to the squared valid ratio in the scale. */
  scaleEps?: number;
}

export const ATTENTION_MI_DEFAULTS = {
  targetSamples: 150,
  nanValue: 100,
  cosineEps: 1e-6,
  rhoEps: 1e-6,
  scaleEps: 1e-6,
} as const;

export interface AttentionMIResult {
  /** The AMI term (to be multiplied by lambda), a scalar tensor owned by the caller. */
  value: tf.Scalar;
  /** Rows that entered the mean. */
  rows: number;
  /** Samples drawn per row (0 when nothing could be drawn; then value is 0). */
  samples: number;
}

/**
 * The reference's regrouping `(h i) (j m) k t z -> (h k m) i (j t z)`, split by view.
 * `attentions [2B, L, H, T, T]` -> `{ x: view 1 [R, N], y: view 2 [R, N] }` with R = 2*H*B, N = (L/2)*T*T,
 * row `(b*H + k)*2 + m`, column `j*T*T + t*T + z` for relative layer `2j + m`. Float32. L must be even.
 */
export function regroupAttention(attentions: tf.Tensor): { x: tf.Tensor2D; y: tf.Tensor2D } {
  const [twoB, L, H, T, T2] = attentions.shape as [number, number, number, number, number];
  if (attentions.rank !== 5 || T !== T2) {
    throw new Error(`attentionMutualInformation: attentions must be [2B, L, H, T, T]; got [${attentions.shape}]`);
  }
  if (twoB % 2 !== 0) throw new Error(`attentionMutualInformation: the first dimension (2B = ${twoB}) must be even: two views per sentence`);
  if (L % 2 !== 0) throw new Error(`attentionMutualInformation: the number of layers (${L}) must be even: rows pair layers m, m+2, ...`);
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

/**
 * Draws `samples` distinct positions per row uniformly among the row's valid positions (without replacement)
 * and returns them in increasing order: `valid [R, N]` (bool or 0/1) -> int32 `[R, samples]`.
 * On the device: seeded uniform keys, invalid positions keyed -1, top-k by key (a uniformly random subset of the
 * valid positions), then the chosen positions sorted ascending (top-k of their negation).
 * Every row must have at least `samples` valid positions (otherwise invalid positions fill the shortfall).
 */
export function drawSamplePositions(valid: tf.Tensor2D, samples: number, seed?: number): tf.Tensor2D {
  const [R, N] = valid.shape;
  if (!Number.isInteger(samples) || samples < 0 || samples > N) {
    throw new Error(`drawSamplePositions: samples must be an integer in [0, ${N}], got ${samples}`);
  }
  return tf.tidy(() => {
    if (samples === 0) return tf.zeros([R, 0], 'int32') as tf.Tensor2D;
    const keys = tf.randomUniform([R, N], 0, 1, 'float32', seed); // [R, N] in [0, 1)
    const mask = valid.dtype === 'bool' ? valid : tf.greater(valid, 0); // [R, N]
    const masked = tf.where(mask, keys, tf.fill([R, N], -1)); // [R, N]
    const chosen = tf.topk(masked, samples, false).indices; // [R, S] int32, random order
    const ascending = tf.topk(tf.neg(chosen), samples, true).values; // [R, S] -(positions), decreasing
    return tf.neg(ascending) as tf.Tensor2D; // [R, S] int32, increasing
  });
}

/**
 * Runs `compute` off the gradient tape and returns its result as a constant: the returned tensor has no tape
 * ancestry, so gradients neither flow through it nor are asked of it. (TF.js has no stopGradient; a custom
 * gradient with no inputs is recorded as a source node, and ops inside a kernel's forward pass are not taped.)
 * Needed for the draw: the positions are computed from the attention values (the valid mask), and TF.js would
 * otherwise ask `gather` for an (int32) gradient of its indices.
 */
export function detached<T extends tf.Tensor>(compute: () => T): T {
  return tf.customGrad(() => ({ value: compute(), gradFunc: () => [] }))() as T;
}

/** `m [R, N]`, `positions [R, S]` -> `m[r, positions[r, s]]` as `[R, S]`, differentiable in `m`. */
function gatherPerRow(m: tf.Tensor2D, positions: tf.Tensor2D): tf.Tensor2D {
  const [R, N] = m.shape;
  const offsets = tf.mul(tf.range(0, R, 1, 'int32'), tf.scalar(N, 'int32')).reshape([R, 1]); // [R, 1]
  const flatIdx = tf.add(positions, offsets); // [R, S]
  const flat: tf.Tensor = tf.reshape(m, [R * N]); // [R*N]
  return tf.gather(flat, flatIdx) as tf.Tensor2D; // [R, S]
}

interface RowPlan {
  /** Original row indices that enter the mean, increasing; null = all rows. */
  kept: number[] | null;
  rows: number;
  samples: number;
  /** The constant scale. */
  scale: number;
}

/** Host-side row filter from the per-row valid counts (see the module comment). */
function planRows(counts: ArrayLike<number>, N: number, targetSamples: number, scaleEps: number): RowPlan {
  const R = counts.length;
  const scaleOf = (validSum: number, rowCount: number): number =>
    rowCount === 0 ? scaleEps : (validSum / (rowCount * N)) ** 2 + scaleEps;
  const full: number[] = [];
  let fullSum = 0;
  const nonEmpty: number[] = [];
  let allSum = 0;
  let minNonEmpty = Infinity;
  for (let r = 0; r < R; r++) {
    const c = counts[r]!;
    allSum += c;
    if (c >= targetSamples) {
      full.push(r);
      fullSum += c;
    }
    if (c > 0) {
      nonEmpty.push(r);
      minNonEmpty = Math.min(minNonEmpty, c);
    }
  }
  if (full.length > 0) {
    return { kept: full.length === R ? null : full, rows: full.length, samples: targetSamples, scale: scaleOf(fullSum, full.length) };
  }
  // Fallback: no row has targetSamples valid entries. The reference keeps all rows (scale over all of them) and
  // draws the minimum count; empty rows are left out of the draw here (see the module comment).
  const samples = nonEmpty.length === 0 ? 0 : Math.min(minNonEmpty, targetSamples);
  return {
    kept: nonEmpty.length === R ? null : nonEmpty,
    rows: samples === 0 ? 0 : nonEmpty.length,
    samples,
    scale: scaleOf(allSum, R),
  };
}

function toPositions(indices: tf.Tensor2D | number[][], rows: number, samples: number): tf.Tensor2D {
  const shape = Array.isArray(indices) ? [indices.length, indices[0]?.length ?? 0] : indices.shape;
  if (Array.isArray(indices) && indices.some((row) => row.length !== shape[1])) {
    throw new Error('attentionMutualInformation: sampleIndices rows must all have the same length');
  }
  if (shape[0] !== rows || (rows > 0 && shape[1] !== samples)) {
    throw new Error(`attentionMutualInformation: sampleIndices must be [rows, samples] = [${rows}, ${samples}] ` +
      `for this input (kept rows in increasing row order); got [${shape}]`);
  }
  if (Array.isArray(indices)) return tf.tensor2d(indices, [rows, samples], 'int32');
  if (indices.dtype !== 'int32') throw new Error(`attentionMutualInformation: sampleIndices must be int32, got ${indices.dtype}`);
  return indices.clone();
}

/** Per-row Gaussian MI `-0.5 log(1 - rho^2)` of the log-probabilities `xs, ys [rows, S]` (> 0) -> `[rows]`. */
function gaussianMI(xs: tf.Tensor2D, ys: tf.Tensor2D, cosineEps: number, rhoEps: number): tf.Tensor1D {
  const lx = tf.log(xs); // [rows, S]
  const ly = tf.log(ys); // [rows, S]
  const cx = tf.sub(lx, tf.mean(lx, 1, true)); // [rows, S]
  const cy = tf.sub(ly, tf.mean(ly, 1, true)); // [rows, S]
  const nx = tf.maximum(tf.sqrt(tf.sum(tf.square(cx), 1)), cosineEps); // [rows]
  const ny = tf.maximum(tf.sqrt(tf.sum(tf.square(cy), 1)), cosineEps); // [rows]
  const rho = tf.div(tf.sum(tf.mul(cx, cy), 1), tf.mul(nx, ny)); // [rows]
  const r = tf.clipByValue(rho, -(1 - rhoEps), 1 - rhoEps); // [rows]
  const oneMinusRho2 = tf.mul(tf.sub(1, r), tf.add(1, r)); // [rows]
  return tf.mul(tf.log(oneMinusRho2), -0.5) as tf.Tensor1D; // [rows]
}

/** AMI of the stacked attention probabilities; see the module comment. */
export function attentionMutualInformation(attentions: tf.Tensor, options: AttentionMIOptions = {}): AttentionMIResult {
  const targetSamples = options.targetSamples ?? ATTENTION_MI_DEFAULTS.targetSamples;
  const nanValue = options.nanValue ?? ATTENTION_MI_DEFAULTS.nanValue;
  const cosineEps = options.cosineEps ?? ATTENTION_MI_DEFAULTS.cosineEps;
  const rhoEps = options.rhoEps ?? ATTENTION_MI_DEFAULTS.rhoEps;
  const scaleEps = options.scaleEps ?? ATTENTION_MI_DEFAULTS.scaleEps;
  if (!Number.isInteger(targetSamples) || targetSamples < 1) {
    throw new Error(`attentionMutualInformation: targetSamples must be a positive integer, got ${targetSamples}`);
  }
  if (!(rhoEps > 0 && rhoEps < 1)) throw new Error(`attentionMutualInformation: rhoEps must be in (0, 1), got ${rhoEps}`);
  let rows = 0;
  let samples = 0;
  const value = tf.tidy(() => {
    const { x, y } = regroupAttention(attentions); // [R, N] each
    const N = x.shape[1];
    const valid = tf.logicalAnd(tf.greater(x, 0), tf.greater(y, 0)); // [R, N] bool, no gradient
    // The one host read: R int32 counts (they decide shapes, rows, samples and the constant scale).
    const counts = tf.sum(tf.cast(valid, 'int32'), 1).dataSync(); // [R]
    const plan = planRows(counts, N, targetSamples, scaleEps);
    rows = plan.rows;
    samples = plan.samples;
    if (plan.samples === 0 || plan.rows === 0) {
      rows = 0;
      samples = 0;
      // 0, but on the tape so tf.grad yields zeros rather than throwing.
      return tf.mul(tf.sum(tf.slice(x, [0, 0], [1, 1])), 0) as tf.Scalar;
    }
    const keep = plan.kept === null ? null : tf.tensor1d(plan.kept, 'int32'); // [rows]
    const xk = keep === null ? x : (tf.gather(x, keep) as tf.Tensor2D); // [rows, N]
    const yk = keep === null ? y : (tf.gather(y, keep) as tf.Tensor2D); // [rows, N]
    const positions = options.sampleIndices !== undefined
      ? toPositions(options.sampleIndices, plan.rows, plan.samples)
      : detached(() => drawSamplePositions((keep === null ? valid : tf.gather(valid, keep)) as tf.Tensor2D, plan.samples, options.seed)); // [rows, S]
    const xs = gatherPerRow(xk, positions); // [rows, S]
    const ys = gatherPerRow(yk, positions); // [rows, S]
    const mi = gaussianMI(xs, ys, cosineEps, rhoEps); // [rows]
    const ami = tf.mul(tf.mean(mi), -plan.scale); // scalar
    return tf.where(tf.isNaN(ami), tf.scalar(nanValue), ami) as tf.Scalar;
  });
  return { value, rows, samples };
}
