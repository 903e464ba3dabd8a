/**
 * The InfoNCE loss (the method: src/losses/infoNCE.ts) as one op, `infoNCE(z1, z2, temperature, eps)`: the composed
 * ops below (cosine logits, log-softmax, the diagonal's mean), or on webgpu (webgpu.ts) 6 dispatches (3 forward,
 * 3 backward) instead of ~63 stock ones (normalisations, the cosine product, log-softmax, one-hot pick, mean, and
 * their gradients): the same arithmetic, op for op, with sums in another order (float rounding only).
 *
 *   A = rows of [z1; z2] over max(||row||, eps)                                 [2B, D]   MicseInfoNCENormalize
 *   forward   term_i = logsumexp_j S_ij - S_ii,  S_ij = (A_i . A_{B+j}) / temperature   [B]   MicseInfoNCETerms
 *             loss = mean_i term_i                                               []        MicseInfoNCEMean
 *   backward  A again; G_ij = dy (P_ij - [i = j]) / (B temperature), P = softmax_j S    [B, B]    MicseInfoNCEG
 *             dA_i = sum_j G_ij A_{B+j},  dA_{B+j} = sum_i G_ij A_i, then through the normalisation:
 *             dz = (dA - a (a . dA)) / ||z|| where ||z|| >= eps, else dA / eps     dz1, dz2   MicseInfoNCEDz
 * Each is a raw program (webgpuPrograms.ts recordRaw; MicseInfoNCEDz has two outputs), one workgroup per row.
 * A row's A is staged in workgroup memory, so D is bounded (INFONCE_MAX_D); larger D and other backends compose the ops.
 * An all-zero row differs from the composed ops: its gradient is dA / eps here, NaN there (sqrt's gradient at 0).
 * Reference: SimCSE cl_forward (see src/losses/infoNCE.ts).
 */
import { tf } from '../../model/tf.js';
import { kernelOn } from '../registry.js';

/** The kernels' names (registered by the backend files: webgpu.ts). */
export const INFONCE = 'MicseInfoNCE';
export const INFONCE_GRAD = 'MicseInfoNCEGrad';

/** Largest embedding width whose row fits workgroup memory (16 KiB guaranteed, with the reduction arrays). */
export const INFONCE_MAX_D = 2048;

/** The kernels' attributes. */
export interface InfoNCEAttrs {
  temperature: number;
  eps: number;
}

/** InfoNCE's gradient kernel, registered with webgpu.ts's kernels. */
export const INFONCE_GRADIENTS: tf.GradConfig[] = [
  {
    kernelName: INFONCE,
    inputsToSave: ['z1', 'z2'],
    gradFunc: (dy, saved, attrs) => {
      const [z1, z2] = saved as [tf.Tensor, tf.Tensor];
      const [dz1, dz2] = tf.engine().runKernel(INFONCE_GRAD, { z1, z2, dy: dy as tf.Tensor }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
      return { z1: () => dz1!, z2: () => dz2! };
    },
  },
];

/** Row-wise L2-normalised copy of `z` with the norm clamped at `eps`. */
function normalizeRows(z: tf.Tensor2D, eps: number): tf.Tensor2D {
  const norm = tf.sqrt(tf.sum(tf.square(z), 1, true)); // [B, 1]
  return tf.div(z, tf.maximum(norm, eps)); // [B, D]
}

/** Pairwise cosine similarity: `[B1, D] x [B2, D] -> [B1, B2]`, norms clamped at `eps` (PyTorch semantics). */
export function cosineMatrix(a: tf.Tensor2D, b: tf.Tensor2D, eps: number): tf.Tensor2D {
  return tf.tidy(() => tf.matMul(normalizeRows(a, eps), normalizeRows(b, eps), false, true)); // [B1, B2]
}

/**
 * The InfoNCE loss of the views `z1, z2 [B, D]` (computed in float32): mean over rows i of
 * logsumexp_j S_ij - S_ii, S = cosineMatrix(z1, z2, eps) / temperature. The fused kernels where the backend has them
 * and 0 < D <= INFONCE_MAX_D, B > 0; else the composed ops.  z1, z2 [B, D] -> []
 */
export function infoNCE(z1: tf.Tensor2D, z2: tf.Tensor2D, temperature: number, eps: number): tf.Scalar {
  const [batch, D] = z1.shape;
  return tf.tidy(() => {
    const a = tf.cast(z1, 'float32') as tf.Tensor2D;
    const b = tf.cast(z2, 'float32') as tf.Tensor2D;
    if (kernelOn(INFONCE, a, b) && batch > 0 && D > 0 && D <= INFONCE_MAX_D) {
      const attrs: InfoNCEAttrs = { temperature, eps };
      return tf.engine().runKernel(INFONCE, { z1: a, z2: b }, attrs as unknown as tf.NamedAttrMap) as tf.Scalar; // 6 dispatches with the gradient
    }
    const logits = tf.div(cosineMatrix(a, b, eps), temperature); // [B, B]
    const logProbs = tf.logSoftmax(logits, 1); // [B, B]
    const labels = tf.oneHot(tf.range(0, batch, 1, 'int32'), batch).toFloat(); // [B, B]
    const picked = tf.sum(tf.mul(logProbs, labels), 1); // [B]: log p(label_i | row i)
    return tf.neg(tf.mean(picked)) as tf.Scalar;
  });
}
