/**
 * Sentence vectors from the encoder's last hidden state.
 * - `cls_before_pooler`: the raw [CLS] vector: how miCSE and SimCSE evaluate and export.
 * - `mean`: the mean of the unpadded token vectors.
 * - `cls` (training only) is `cls_before_pooler` followed by the MLP head: see src/losses/mlpHead.ts.
 */
import { didYouMean, shownArgument, UserError } from '../errors.js';
import { EMBED_POOLERS, type EmbedPooler } from './embedOptions.js';
import { tf } from './tf.js';

/** Throws a UserError unless `pooler` is one of EMBED_POOLERS (`cls`, the training pooler, is not one). */
export function checkPooler(pooler: unknown): asserts pooler is EmbedPooler {
  if (!(EMBED_POOLERS as readonly unknown[]).includes(pooler)) {
    const hint = typeof pooler === 'string' ? didYouMean(pooler, EMBED_POOLERS) : '';
    throw new UserError(`pooler must be one of ${EMBED_POOLERS.join(', ')}, got ${shownArgument(pooler)}${hint}`);
  }
}

/** lastHiddenState [B, T, H], attentionMask [B, T] -> [B, H] */
export function pool(lastHiddenState: tf.Tensor3D, attentionMask: tf.Tensor2D, pooler: EmbedPooler): tf.Tensor2D {
  checkPooler(pooler);
  return tf.tidy(() => {
    const [B, , H] = lastHiddenState.shape;
    if (pooler === 'cls_before_pooler') return lastHiddenState.slice([0, 0, 0], [B, 1, H]).reshape([B, H]) as tf.Tensor2D;
    const mask = attentionMask.toFloat().expandDims(2); // [B, T, 1]
    const summed = tf.sum(tf.mul(lastHiddenState, mask), 1); // [B, H]
    const counts = tf.maximum(tf.sum(mask, 1), 1e-9); // [B, 1]
    return tf.div(summed, counts) as tf.Tensor2D;
  });
}
