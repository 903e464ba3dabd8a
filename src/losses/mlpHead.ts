/**
 * The SimCSE / miCSE training-only MLP head: `tanh(Linear(H, H)(x))` over the [CLS] vector (pooler "cls",
 * `mlp_only_train`). It is newly initialised for training and dropped at evaluation and export, where the raw
 * [CLS] vector ("cls_before_pooler") is the sentence embedding.
 *
 * Reference: SimCSE / miCSE `MLPLayer` (nn.Linear(hidden, hidden) + nn.Tanh), initialised by transformers'
 * `_init_weights`: weight ~ normal(0, initializer_range = 0.02), bias = 0.
 *
 * Shapes: `apply(x [B, H]) -> [B, H]`. The weight variable is held in PyTorch layout `[out, in]` = `[H, H]`, so
 * `namedWeights()` maps one to one onto a checkpoint's `mlp.dense.weight` / `mlp.dense.bias`.
 */
import { tf } from '../model/tf.js';

export interface MlpHeadOptions {
  /** Standard deviation of the normal weight initialiser (BERT's initializer_range). */
  initializerRange?: number;
  /** Seed of the weight initialiser; undefined: unseeded. */
  seed?: number;
  /**
   * Prefix of the TF.js variable names (`<prefix>/dense.weight`, `<prefix>/dense.bias`). TF.js variable names are
   * global and must be unique, so the default (undefined) lets TF.js pick unique names.
   */
  variablePrefix?: string;
}

export const MLP_HEAD_DEFAULTS = {
  initializerRange: 0.02,
} as const;

/** Checkpoint names of the head's weights. */
export const MLP_WEIGHT_NAME = 'mlp.dense.weight';
export const MLP_BIAS_NAME = 'mlp.dense.bias';

export class MlpHead {
  readonly hiddenSize: number;
  /** `[out, in]` = `[H, H]` (PyTorch layout). */
  readonly weight: tf.Variable;
  /** `[H]` */
  readonly bias: tf.Variable;

  constructor(hiddenSize: number, options: MlpHeadOptions = {}) {
    if (!Number.isInteger(hiddenSize) || hiddenSize < 1) throw new Error(`MlpHead: hiddenSize must be a positive integer, got ${hiddenSize}`);
    const std = options.initializerRange ?? MLP_HEAD_DEFAULTS.initializerRange;
    this.hiddenSize = hiddenSize;
    const prefix = options.variablePrefix;
    const w = tf.randomNormal([hiddenSize, hiddenSize], 0, std, 'float32', options.seed); // [out, in]
    const b = tf.zeros([hiddenSize]); // [H]
    this.weight = tf.variable(w, true, prefix === undefined ? undefined : `${prefix}/dense.weight`);
    this.bias = tf.variable(b, true, prefix === undefined ? undefined : `${prefix}/dense.bias`);
    w.dispose();
    b.dispose();
  }

  /** `tanh(x W^T + b)`: `[B, H] -> [B, H]`. */
  apply(x: tf.Tensor2D): tf.Tensor2D {
    if (x.rank !== 2 || x.shape[1] !== this.hiddenSize) {
      throw new Error(`MlpHead.apply: expected [B, ${this.hiddenSize}], got [${x.shape}]`);
    }
    return tf.tidy(() => tf.tanh(tf.add(tf.matMul(x, this.weight, false, true), this.bias)) as tf.Tensor2D);
  }

  /** The trainable variables (weight, bias). */
  variables(): tf.Variable[] {
    return [this.weight, this.bias];
  }

  /** Checkpoint name -> variable; the weight is `[out, in]` (PyTorch layout). */
  namedWeights(): Record<string, tf.Variable> {
    return { [MLP_WEIGHT_NAME]: this.weight, [MLP_BIAS_NAME]: this.bias };
  }

  /** Overwrites the weights from checkpoint tensors (weight `[out, in]`, bias `[H]`); shapes are checked. */
  assignWeights(named: Record<string, tf.Tensor>): void {
    const w = named[MLP_WEIGHT_NAME];
    const b = named[MLP_BIAS_NAME];
    const H = this.hiddenSize;
    if (w === undefined || b === undefined) throw new Error(`MlpHead.assignWeights: need '${MLP_WEIGHT_NAME}' and '${MLP_BIAS_NAME}'`);
    if (w.shape.length !== 2 || w.shape[0] !== H || w.shape[1] !== H || b.shape.length !== 1 || b.shape[0] !== H) {
      throw new Error(`MlpHead.assignWeights: expected weight [${H}, ${H}] and bias [${H}], got [${w.shape}] and [${b.shape}]`);
    }
    tf.tidy(() => {
      this.weight.assign(tf.cast(w, 'float32'));
      this.bias.assign(tf.cast(b, 'float32'));
    });
  }

  dispose(): void {
    this.weight.dispose();
    this.bias.dispose();
  }
}
