/**
 * InfoNCE over two dropout views, exactly as unsupervised SimCSE computes it (and miCSE, which reuses it).
 *
 * Reference: SimCSE / miCSE `cl_forward` (SAP-samples/acl2023-micse `model/models.py`, after princeton-nlp/SimCSE):
 *   logits[i, j] = cosine(z1_i, z2_j) / temperature          // [B, B]
 *   loss = CrossEntropy(logits, labels = 0..B-1), mean over the B rows.
 * The cosine is `torch.nn.CosineSimilarity(dim=-1)` (eps 1e-8). Current PyTorch clamps each norm separately:
 *   cos(x, y) = x·y / (max(||x||, eps) * max(||y||, eps)),
 * which is what is computed here. (Old PyTorch clamped the product of the norms; the two agree whenever both
 * norms exceed eps, i.e. for every real embedding.)
 *
 * Inputs: z1 = view-1 embeddings `[B, D]`, z2 = view-2 embeddings `[B, D]` (row i of both is sentence i).
 * Output: a scalar tensor, differentiable with respect to z1 and z2. Computed in float32.
 * On webgpu the same arithmetic runs as fused kernels (kernels/infoNCE); other backends compose TF.js ops.
 */
import { tf } from '../model/tf.js';
import { fusedInfoNCE, fusedInfoNCEAvailable } from '../kernels/infoNCE/index.js';

export interface InfoNCEOptions {
  /** Lower bound on each vector norm in the cosine (PyTorch's CosineSimilarity default). */
  eps?: number;
}

/** The cosine's per-norm clamp (PyTorch's CosineSimilarity default). */
export const INFONCE_EPS = 1e-8;

/** Row-wise L2-normalised copy of `z` with the norm clamped at `eps`. */
function normalizeRows(z: tf.Tensor2D, eps: number): tf.Tensor2D {
  const norm = tf.sqrt(tf.sum(tf.square(z), 1, true)); // [B, 1]
  return tf.div(z, tf.maximum(norm, eps)); // [B, D]
}

/**
 * Pairwise cosine similarity: `[B1, D] x [B2, D] -> [B1, B2]`, norms clamped at `eps` (PyTorch semantics).
 */
export function cosineMatrix(a: tf.Tensor2D, b: tf.Tensor2D, eps: number = INFONCE_EPS): tf.Tensor2D {
  return tf.tidy(() => tf.matMul(normalizeRows(a, eps), normalizeRows(b, eps), false, true)); // [B1, B2]
}

/** InfoNCE (SimCSE) loss; see the module comment. */
export function infoNCE(
  z1: tf.Tensor2D,
  z2: tf.Tensor2D,
  temperature: number,
  options: InfoNCEOptions = {},
): tf.Scalar {
  const eps = options.eps ?? INFONCE_EPS;
  if (z1.rank !== 2 || z2.rank !== 2 || z1.shape[0] !== z2.shape[0] || z1.shape[1] !== z2.shape[1]) {
    throw new Error(`infoNCE: z1 and z2 must both be [B, D]; got [${z1.shape}] and [${z2.shape}]`);
  }
  if (!(temperature > 0)) throw new Error(`infoNCE: temperature must be > 0, got ${temperature}`);
  const batch = z1.shape[0];
  return tf.tidy(() => {
    const a = tf.cast(z1, 'float32') as tf.Tensor2D;
    const b = tf.cast(z2, 'float32') as tf.Tensor2D;
    if (fusedInfoNCEAvailable(a, b)) return fusedInfoNCE(a, b, temperature, eps); // webgpu: 6 dispatches with the gradient
    const logits = tf.div(cosineMatrix(a, b, eps), temperature); // [B, B]
    const logProbs = tf.logSoftmax(logits, 1); // [B, B]
    const labels = tf.oneHot(tf.range(0, batch, 1, 'int32'), batch).toFloat(); // [B, B]
    const picked = tf.sum(tf.mul(logProbs, labels), 1); // [B]: log p(label_i | row i)
    return tf.neg(tf.mean(picked)) as tf.Scalar;
  });
}
