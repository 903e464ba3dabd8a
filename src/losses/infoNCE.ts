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
 * The arithmetic is the op `infoNCE` of src/kernels/infoNCE (TF.js ops, or that op's kernels where the backend has them).
 */
import { tf } from '../model/tf.js';
import { cosineMatrix as cosineOp, infoNCE as infoNCEOp } from '../kernels/infoNCE/index.js';

export interface InfoNCEOptions {
  /** Lower bound on each vector norm in the cosine (PyTorch's CosineSimilarity default). */
  eps?: number;
}

/** The cosine's per-norm clamp (PyTorch's CosineSimilarity default). */
export const INFONCE_EPS = 1e-8;

/**
 * Pairwise cosine similarity: `[B1, D] x [B2, D] -> [B1, B2]`, norms clamped at `eps` (PyTorch semantics).
 */
export function cosineMatrix(a: tf.Tensor2D, b: tf.Tensor2D, eps: number = INFONCE_EPS): tf.Tensor2D {
  return cosineOp(a, b, eps);
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
  return infoNCEOp(z1, z2, temperature, eps);
}
