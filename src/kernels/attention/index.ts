/**
 * The attention core of a BERT layer, from the packed query/key/value projection qkv [B, T, 3H] (q, k, v side by
 * side in each row: one dense layer, bert.ts) to the context:
 *
 *   probs   = dropout(softmax(q k^T * scale + maskAdd))   per head   [B, nh, T, T]  (query rows, key columns)
 *   context = probs v, heads side by side                             [B, T, nh * dh]
 *
 * Why: composed of stock ops this is ~26 WebGPU dispatches per layer (forward and backward: three head transposes,
 * the two batched products, scale, mask, softmax, dropout, the transpose back, and their gradients), each with a
 * fixed host cost (issue #9). On webgpu (webgpu.ts) it is 2 dispatches forward and 3 backward, reading q, k, v where they
 * are in qkv (head h of token t is the slice [h * dh, (h + 1) * dh) of part 0, 1 or 2 of row t: no transposes) and
 * writing the context and the gradients in the same layouts directly:
 *   forward   (1) probs: scores tile by tile, softmax (online row max and sum), dropout     MicseAttentionProbs
 *             (2) context = probs v                                                         MicseAttentionContext
 *   backward  of (2): (3) dProbs = dContext v^T and (4) dv = probs^T dContext, one dispatch
 *             of (1): (5) dScores = P * (dP - rowsum(dP * P)) * scale, with dP = dropout(dProbs) (the same mask)
 *                         and P = softmax(scores) recomputed from q and k (rowsum(dP * P) online, as the row sum)
 *                     (6) dq = dScores k and (7) dk = dScores^T q, one dispatch
 * A dispatch with two products is not a TF.js program (its grid and outputs are its own): (3)+(4) and (6)+(7) are
 * raw programs (webgpuPrograms.ts recordRaw) whose grid holds both products' heads. Each op's gradient with
 * respect to qkv is a whole [B, T, 3H] with zeros in the parts it does not read (dv's op writes zeros for q and k,
 * the other zeros for v), and autodiff adds the two.
 * Two ops, not one with two outputs: autodiff sums the probabilities' gradients of the context and of the AMI
 * loss (an Add where the layer's probabilities are used), and where they are not used nothing is uploaded (the
 * engine fills the gradient of an unused output of a kernel with host zeros).
 * The dropout mask is `seededDropout`'s (kernels/dropout `WGSL_DROPOUT`): the same bits at the same flat index of the
 * [B, nh, T, T] probabilities. A fully padded row (every key masked) has equal scores, so uniform probabilities.
 * On cpu and wasm, where the host products run on the system's CBLAS, the same steps as ONE op (host.ts:
 * MicseAttention -> [context, probs], MicseAttentionGrad -> dqkv): on the host the gradient of an unused output is a
 * cheap zero array, and one gradient kernel writes all three parts of dqkv, so neither zero-filled halves nor their
 * sum are made. Every product is one cblas_sgemm per (batch, head) on the head's block where it is in qkv, the context
 * or the gradients (leading dimensions 3H and H); the scale, mask, softmax and dropout run in loops over rows.
 * Every other backend (and cpu and wasm without CBLAS) runs the composed ops: q, k and v split from qkv into heads,
 * stock products and softmax. On cpu the split into heads is then one kernel (host.ts: MicseSplitHeads, each head
 * row copied from qkv to where the head transpose puts it, and its gradient MicseMergeHeads, the way back), where
 * the stock ops make a split, then a transpose of each part (two passes over 3 [B, T, H] arrays, and two back for
 * the gradient); the same values.
 * Reference: Vaswani et al. 2017 (scaled dot-product attention); transformers BertSelfAttention.
 */
import { seededDropout } from '../dropout/index.js';
import { tf } from '../../model/tf.js';
import { kernelOn } from '../registry.js';

/** The kernels' names (registered by the backend files: webgpu.ts, host.ts). */
export const ATTENTION_PROBS = 'MicseAttentionProbs';
export const ATTENTION_PROBS_GRAD = 'MicseAttentionProbsGrad';
export const ATTENTION_CONTEXT = 'MicseAttentionContext';
export const ATTENTION_CONTEXT_GRAD = 'MicseAttentionContextGrad';
/**
 * Both steps in one kernel (the host's): qkv, mask -> [context, probs, undropped]: undropped the probabilities before
 * the dropout, kept for the gradient (an empty [0] where the rate is 0: probs is then that); attrs ProbsAttrs
 */
export const ATTENTION = 'MicseAttention';
/**
 * Its gradient: qkv, probs, undropped, dContext and (where something read the probabilities) dProbs -> dqkv [B, T,
 * 3H]; attrs ProbsAttrs
 */
export const ATTENTION_GRAD = 'MicseAttentionGrad';
/** qkv [B, T, 3H] -> q, k, v [B, nh, T, dh]; attrs HeadsAttrs */
export const SPLIT_HEADS = 'MicseSplitHeads';
/** dq, dk, dv [B, nh, T, dh] -> dqkv [B, T, 3H]; attrs HeadsAttrs */
export const MERGE_HEADS = 'MicseMergeHeads';

export interface AttentionOptions {
  /** Number of heads nh; the hidden size must be a multiple of it. */
  heads: number;
  /** Multiplies q k^T (1 / sqrt(head size) in BERT). */
  scale: number;
  /** Dropout rate of the probabilities, in [0, 1); 0 for none. */
  rate: number;
  /** Seed of the dropout mask (an integer; see kernels/dropout). */
  seed: number;
}

export interface AttentionOutput {
  /** [B, T, H] */
  context: tf.Tensor3D;
  /** [B, nh, T, T] after dropout */
  probs: tf.Tensor4D;
}

/** The kernels' attributes. */
export interface ProbsAttrs {
  heads: number;
  scale: number;
  rate: number;
  seed: number;
}
export interface ContextAttrs {
  heads: number;
}
export interface HeadsAttrs {
  heads: number;
}

/** Sizes of one call: batch B, tokens T, hidden H = nh * dh, heads nh, head size dh; z = B * nh (head, batch). */
export interface Dims {
  B: number;
  T: number;
  H: number;
  nh: number;
  dh: number;
  z: number;
}

/** From the packed projections' shape [B, T, 3H]. */
export function dimsOf(qkvShape: number[], heads: number): Dims {
  const [B, T, H3] = qkvShape as [number, number, number];
  const H = H3 / 3;
  return { B, T, H, nh: heads, dh: H / heads, z: B * heads };
}

const noMaskGradient = (): tf.Tensor => {
  throw new Error('selfAttention: no gradient with respect to the additive mask (it is data, not a parameter)');
};

// Each op's gradient with respect to qkv is a whole [B, T, 3H] (zeros in the parts it does not read); autodiff adds
// the two, one dispatch. The host's one op takes both outputs' gradients (zeros for probabilities nothing read) and
// writes the three parts of dqkv itself.
export const ATTENTION_GRADIENTS: tf.GradConfig[] = [
  {
    kernelName: ATTENTION,
    inputsToSave: ['qkv'],
    outputsToSave: [false, true, true],
    gradFunc: (dys, saved, attrs) => {
      const [qkv, probs, undropped] = saved as [tf.Tensor, tf.Tensor, tf.Tensor];
      const [dContext, dProbs] = dys as tf.Tensor[];
      const dqkv = tf.engine().runKernel(ATTENTION_GRAD, { qkv, probs, undropped, dContext: dContext!, dProbs: dProbs! },
        attrs as unknown as tf.NamedAttrMap) as tf.Tensor;
      return { qkv: () => dqkv, mask: noMaskGradient };
    },
  },
  {
    kernelName: ATTENTION_PROBS,
    inputsToSave: ['qkv', 'mask'],
    gradFunc: (dy, saved, attrs) => {
      const [qkv, mask] = saved as [tf.Tensor, tf.Tensor];
      const dqkv = tf.engine().runKernel(ATTENTION_PROBS_GRAD, { qkv, mask, dProbs: dy as tf.Tensor }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor;
      return { qkv: () => dqkv, mask: noMaskGradient };
    },
  },
  {
    kernelName: ATTENTION_CONTEXT,
    inputsToSave: ['probs', 'qkv'],
    gradFunc: (dy, saved, attrs) => {
      const [probs, qkv] = saved as [tf.Tensor, tf.Tensor];
      const [dProbs, dqkv] = tf.engine().runKernel(ATTENTION_CONTEXT_GRAD, { probs, qkv, dContext: dy as tf.Tensor },
        attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
      return { probs: () => dProbs!, qkv: () => dqkv! };
    },
  },
];

/** The split into heads' gradient: the three heads' gradients back into qkv's layout, one kernel. */
export const SPLIT_HEADS_GRADIENTS: tf.GradConfig[] = [
  {
    kernelName: SPLIT_HEADS,
    gradFunc: (dy, _saved, attrs) => {
      const [dq, dk, dv] = dy as tf.Tensor[];
      return { qkv: () => tf.engine().runKernel(MERGE_HEADS, { dq: dq!, dk: dk!, dv: dv! }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor };
    },
  },
];

/**
 * q, k, v [B, nh, T, dh] from qkv [B, T, 3H]: one kernel where the backend has it (cpu), else one split (whose
 * gradient is one concat; three slices would take three zero-padded gradients and two adds) and each part's heads by
 * reshape and transpose.
 */
function splitHeads(qkv: tf.Tensor3D, heads: number): [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D] {
  if (kernelOn(SPLIT_HEADS, qkv)) {
    const attrs: HeadsAttrs = { heads };
    return tf.engine().runKernel(SPLIT_HEADS, { qkv }, attrs as unknown as tf.NamedAttrMap) as unknown as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
  }
  const { B, T, nh, dh } = dimsOf(qkv.shape, heads);
  const toHeads = (x: tf.Tensor) => x.reshape([B, T, nh, dh]).transpose([0, 2, 1, 3]) as tf.Tensor4D; // [B, T, H] -> [B, nh, T, dh]
  return tf.split(qkv, 3, 2).map(toHeads) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
}

/**
 * The composed ops (where the fused kernels do not run): q, k, v split from qkv into heads (splitHeads), stock
 * products and softmax.
 */
function composedAttention(qkv: tf.Tensor3D, maskAdd: tf.Tensor4D, o: AttentionOptions): AttentionOutput {
  const { B, T, H } = dimsOf(qkv.shape, o.heads);
  const [qh, kh, vh] = splitHeads(qkv, o.heads);
  const scores = tf.add(tf.mul(tf.matMul(qh, kh, false, true), o.scale), maskAdd); // [B, nh, T, T]
  const probs = seededDropout(tf.softmax(scores, -1), o.rate, o.seed) as tf.Tensor4D; // [B, nh, T, T]
  const context = tf.matMul(probs, vh).transpose([0, 2, 1, 3]).reshape([B, T, H]) as tf.Tensor3D; // [B, T, H]
  return { context, probs };
}

/**
 * The context alone of selfAttention, for a caller that does not read the probabilities. On the host kernels the op
 * is one untaped kernel under a custom gradient that keeps the probabilities for the gradient only, so that no
 * gradient of them is made (the engine fills the gradient of a kernel output nothing read with zeros, two
 * [B, nh, T, T] arrays a layer); elsewhere selfAttention's context.
 */
export function selfAttentionContext(qkv: tf.Tensor3D, maskAdd: tf.Tensor4D, opts: AttentionOptions): tf.Tensor3D {
  if (!kernelOn(ATTENTION, qkv, maskAdd)) return selfAttention(qkv, maskAdd, opts).context;
  checkAttention(qkv, maskAdd, opts);
  const attrs = { heads: opts.heads, scale: opts.scale, rate: opts.rate, seed: opts.seed } satisfies ProbsAttrs as unknown as tf.NamedAttrMap;
  const op = tf.customGrad((x, save) => {
    const [context, probs, undropped] = tf.engine().runKernel(ATTENTION, { qkv: x as tf.Tensor, mask: maskAdd }, attrs) as tf.Tensor[];
    (save as tf.GradSaveFunc)([x as tf.Tensor, probs!, undropped!]);
    return {
      value: context!,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sp, su] = saved as [tf.Tensor, tf.Tensor, tf.Tensor];
        return tf.engine().runKernel(ATTENTION_GRAD, { qkv: sx, probs: sp, undropped: su, dContext: dy }, attrs) as tf.Tensor;
      },
    };
  });
  return op(qkv) as tf.Tensor3D;
}

function checkAttention(qkv: tf.Tensor3D, maskAdd: tf.Tensor4D, opts: AttentionOptions): void {
  const [B, T, H3] = qkv.shape;
  if (qkv.rank !== 3 || H3 % 3 !== 0) throw new Error(`selfAttention: qkv must be [B, T, 3H]; got [${qkv.shape}]`);
  const H = H3 / 3;
  if (!Number.isInteger(opts.heads) || opts.heads < 1 || H % opts.heads !== 0) {
    throw new Error(`selfAttention: hidden size ${H} is not a multiple of ${opts.heads} heads`);
  }
  if (!tf.util.arraysEqual(maskAdd.shape, [B, 1, 1, T])) {
    throw new Error(`selfAttention: maskAdd must be [${B}, 1, 1, ${T}]; got [${maskAdd.shape}]`);
  }
}

/**
 * Multi-head attention from the packed query, key and value projections `qkv [B, T, 3H]` (q, k, v side by side in
 * each row, as one dense layer of 3H outputs gives them) and the additive key mask `maskAdd [B, 1, 1, T]` (0 where
 * attended, float32's lowest at padding): `context [B, T, H]` and the probabilities after dropout `probs [B, nh, T,
 * T]`; see the module comment. Differentiable in qkv.
 */
export function selfAttention(qkv: tf.Tensor3D, maskAdd: tf.Tensor4D, opts: AttentionOptions): AttentionOutput {
  checkAttention(qkv, maskAdd, opts);
  const probsAttrs: ProbsAttrs = { heads: opts.heads, scale: opts.scale, rate: opts.rate, seed: opts.seed };
  if (kernelOn(ATTENTION, qkv, maskAdd)) {
    const [context, probs, undropped] = tf.engine().runKernel(ATTENTION, { qkv, mask: maskAdd }, probsAttrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
    undropped!.dispose(); // the gradient's saved copy (when taped) keeps its data
    return { context: context as tf.Tensor3D, probs: probs as tf.Tensor4D };
  }
  if (!kernelOn(ATTENTION_PROBS, qkv, maskAdd)) return composedAttention(qkv, maskAdd, opts);
  const contextAttrs: ContextAttrs = { heads: opts.heads };
  const probs = tf.engine().runKernel(ATTENTION_PROBS, { qkv, mask: maskAdd }, probsAttrs as unknown as tf.NamedAttrMap) as tf.Tensor4D;
  const context = tf.engine().runKernel(ATTENTION_CONTEXT, { probs, qkv }, contextAttrs as unknown as tf.NamedAttrMap) as tf.Tensor3D;
  return { context, probs };
}
