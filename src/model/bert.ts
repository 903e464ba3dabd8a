/**
 * The BERT encoder, Hugging Face BertModel's math exactly (eval mode matches transformers within float32 noise):
 *
 *   x = LayerNorm(word[ids] + position[0..T) + tokenType[typeIds]);  dropout
 *   for each layer:
 *     a = softmax(Q K^T / sqrt(d) + mask);  a = dropout(a)          <- returned as the layer's attention
 *     x = LayerNorm(x + dropout(dense(a V)))
 *     x = LayerNorm(x + dropout(dense(gelu(dense(x)))))
 *   return x                                                        <- last_hidden_state
 *
 * With `firstTokenOnly` (every [CLS] pooler: training, and embeddings of `cls_before_pooler`) the last layer goes on
 * past its attention with the [CLS] rows only: nothing reads the other rows of last_hidden_state, so their output
 * projection, feed-forward product and GELU are not computed. The [CLS] rows are the same numbers as the full pass's,
 * dropout masks included: the two residual LayerNorms still take the whole [B, T, H] (the rows apart from [CLS]
 * padded with zeros), so every dropout element keeps its flat index, and thus its bit. The attention of the last
 * layer (which the AMI reads) is computed whole. The gradients are the full pass's: there the rows apart from [CLS]
 * get zero gradient from the loss.
 *
 * Weights live in one Map keyed by Hugging Face names (see weights.ts); Linear weights are held as [in, out]. A
 * layer's query, key and value projections are one variable, `encoder.layer.N.attention.self.qkv.weight` [H, 3H]
 * (and `.bias` [3H]), q, k and v side by side: one product instead of three forward and backward (and one AdamW
 * update); loading, saving and exporting go through the Hugging Face names (`qkvPart`).
 * Dropout is deterministic given `dropoutSeed`: every dropout site derives its own seed from it, so a training
 * step can be replayed exactly (resume) without saving any RNG state. The masks come from kernels/dropout
 * (`seededDropout`): computed by the backend from (seed, index), identical on every backend, and regenerated in
 * the backward pass instead of being kept.
 */
import { UserError } from '../errors.js';
import type { BertConfig } from './config.js';
import { bertWeightTable, type WeightSpec } from './weights.js';
import type { HostTensor } from './safetensors.js';
import { tf } from './tf.js';
import { selfAttention, selfAttentionContext } from '../kernels/attention/index.js';
import { dense } from '../kernels/dense/index.js';
import { roundToF16 } from '../kernels/f16/index.js';
import { addLayerNorm, layerNorm, type DropoutOptions } from '../kernels/layerNorm/index.js';
import { freshSeed, seededDropout } from '../kernels/dropout/index.js';
import { loggingStepValues, noteStepValue, stepValueOf } from '../kernels/replay/index.js';

export interface BertInputs {
  /** int32 [B, T] */
  inputIds: tf.Tensor2D;
  /** [B, T], 1 for real tokens, 0 for padding (int32 or float32) */
  attentionMask: tf.Tensor2D;
  /** int32 [B, T]; zeros when absent */
  tokenTypeIds?: tf.Tensor2D;
}

export interface ForwardOptions {
  /** Dropout on (training) or off (eval). Default false. */
  training?: boolean;
  /** Also return every layer's attention probabilities (after attention dropout in training). */
  outputAttentions?: boolean;
  /**
   * With outputAttentions, return those of layers [from, to) only (the other layers' probabilities are kept for their
   * own gradient alone). Default: every layer's.
   */
  attentionLayers?: readonly [number, number];
  /** Seed for all dropout masks of this pass; without it masks are unseeded (not reproducible). */
  dropoutSeed?: number;
  /** Override config dropout rates (e.g. 0 for deterministic tests). */
  hiddenDropoutProb?: number;
  attentionProbsDropoutProb?: number;
  /** The dense products take float16 inputs: x and W rounded to float16, and so their gradients (kernels/f16). Default false. */
  f16Products?: boolean;
  /**
   * Only the first token's ([CLS]) row of last_hidden_state is wanted: the last layer past its attention runs on
   * that row (see the module comment), and `lastHiddenState` is [B, 1, H]. Default false.
   */
  firstTokenOnly?: boolean;
}

export interface BertOutput {
  /** [B, T, H]; [B, 1, H], the [CLS] rows, with `firstTokenOnly` */
  lastHiddenState: tf.Tensor3D;
  /** per layer [B, heads, T, T] (query rows, key columns); with attentionLayers, the layers asked for */
  attentions?: tf.Tensor4D[];
}

/** Additive mask for padded keys: float32's lowest value, as transformers uses, so exp() underflows to exactly 0. */
const MASK_VALUE = -3.4028234663852886e38;


/** Mixes a base seed and a dropout-site index into a 31-bit seed (splitmix-style integer hash). */
export function siteSeed(base: number, site: number): number {
  let h = (Math.imul(base | 0, 0x9e3779b1) ^ Math.imul(site + 1, 0x85ebca77)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b) >>> 0;
  const seed = (h ^ (h >>> 16)) & 0x7fffffff;
  if (loggingStepValues()) {
    const from = stepValueOf(base);
    if (from !== undefined) noteStepValue(`s(${from.key},${site})`, seed, null, (r) => siteSeed(from.formula(r), site));
  }
  return seed;
}

/** The projections packed in a layer's qkv variables, in their order. */
const QKV_PARTS = ['query', 'key', 'value'] as const;
const QKV_NAME = /^(encoder\.layer\.\d+\.attention\.self)\.(query|key|value)\.(weight|bias)$/;

/**
 * Where a Hugging Face weight name lives if it is a query, key or value projection: the packed variable's name, the
 * part (0 query, 1 key, 2 value) and the axis the parts are side by side on (1 for a weight [in, out], 0 for a
 * bias). Null for every other name.
 */
export function qkvPart(name: string): { packed: string; part: number; axis: number } | null {
  const m = QKV_NAME.exec(name);
  if (m === null) return null;
  return { packed: `${m[1]}.qkv.${m[3]}`, part: QKV_PARTS.indexOf(m[2] as (typeof QKV_PARTS)[number]), axis: m[3] === 'weight' ? 1 : 0 };
}

/** The part `where` (from qkvPart) of a packed weight [H, 3H] -> [H, H] or bias [3H] -> [H]: a new tensor. */
export function unpackQkv(packed: tf.Tensor, where: { part: number; axis: number }): tf.Tensor {
  const H = packed.shape[where.axis]! / QKV_PARTS.length;
  return where.axis === 1 ? packed.slice([0, where.part * H], [packed.shape[0]!, H]) : packed.slice([where.part * H], [H]);
}

/** Tensors in our layout keyed by Hugging Face names, with each layer's q, k, v parts concatenated under the packed name. */
export function packQkv<T extends tf.Tensor>(named: Map<string, T>): Map<string, tf.Tensor> {
  const out = new Map<string, tf.Tensor>();
  const parts = new Map<string, { axis: number; tensors: T[] }>();
  for (const [name, t] of named) {
    const q = qkvPart(name);
    if (q === null) {
      out.set(name, t);
      continue;
    }
    const entry = parts.get(q.packed) ?? { axis: q.axis, tensors: [] };
    entry.tensors[q.part] = t;
    parts.set(q.packed, entry);
  }
  for (const [packed, { axis, tensors }] of parts) {
    if (tensors.filter((t) => t !== undefined).length !== QKV_PARTS.length) {
      throw new Error(`packQkv: '${packed}' needs its query, key and value parts`);
    }
    out.set(packed, tf.concat(tensors, axis));
  }
  return out;
}

export class BertModel {
  readonly config: BertConfig;
  /**
   * Variable by name: Hugging Face names (Linear weights as [in, out]), except that each layer's query, key and
   * value are one packed variable `encoder.layer.N.attention.self.qkv.weight` [H, 3H] / `.bias` [3H] (`qkvPart`).
   */
  readonly weights: Map<string, tf.Variable>;
  private readonly specs: WeightSpec[];
  private disposed = false;

  private constructor(config: BertConfig, weights: Map<string, tf.Variable>) {
    this.config = config;
    this.weights = weights;
    this.specs = bertWeightTable(config);
  }

  /** Builds a model from tensors already in our layout (see weights.ts `mapCheckpoint`); missing optional ones start fresh. */
  static fromTensors(config: BertConfig, tensors: Map<string, HostTensor>, seed = 0): BertModel {
    const values = new Map<string, tf.Tensor>();
    bertWeightTable(config).forEach((spec, i) => {
      const t = tensors.get(spec.name);
      values.set(spec.name, t !== undefined ? tf.tensor(t.data, t.shape, 'float32') : initTensor(spec, config, siteSeed(seed, i)));
    });
    const weights = new Map<string, tf.Variable>();
    tf.tidy(() => {
      for (const [name, value] of packQkv(values)) weights.set(name, tf.keep(tf.variable(value, true)));
    });
    tf.dispose([...values.values()]);
    return new BertModel(config, weights);
  }

  /** A freshly initialised model (Hugging Face's _init_weights: normal(0, initializerRange), zero biases, unit norms). */
  static random(config: BertConfig, seed = 0): BertModel {
    return BertModel.fromTensors(config, new Map(), seed);
  }

  /** Throws a UserError once `dispose()` has freed the weights (instead of failing on a missing weight). */
  private assertLive(): void {
    if (this.disposed) throw new UserError('BertModel: this model was disposed (dispose() frees its weights); load it again to use it');
  }

  private w(name: string): tf.Variable {
    this.assertLive();
    const v = this.weights.get(name);
    if (v === undefined) throw new Error(`BertModel: no weight '${name}'`);
    return v;
  }

  /**
   * Trainable weights by variable name, in table order, a layer's packed qkv where its query was (the pooler is
   * excluded: miCSE never uses it, so it gets no gradient).
   */
  trainableWeights(): [string, tf.Variable][] {
    const names = this.specs.filter((s) => !s.name.startsWith('pooler.')).map((s) => qkvPart(s.name)?.packed ?? s.name);
    return [...new Set(names)].map((name) => [name, this.w(name)]);
  }

  /** The variables of `trainableWeights()`. */
  trainableVariables(): tf.Variable[] {
    return this.trainableWeights().map(([, v]) => v);
  }

  /** Weights in checkpoint layout (PyTorch [out, in] for Linear weights), for saving. Downloads from the device. */
  async exportTensors(): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
    const out = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const spec of this.specs) {
      const t = tf.tidy(() => {
        const packed = qkvPart(spec.name);
        const v = packed === null ? this.w(spec.name) : unpackQkv(this.w(packed.packed), packed);
        return spec.linear ? v.transpose() : v.clone();
      });
      const data = (await t.data()) as Float32Array;
      t.dispose();
      out.set(spec.name, { shape: spec.shape, data: Float32Array.from(data) });
    }
    return out;
  }

  /** Copies values from host tensors in our layout (Hugging Face names) into the existing variables (resume). */
  assignTensors(tensors: Map<string, HostTensor>): void {
    tf.tidy(() => {
      const named = new Map([...tensors].map(([name, t]) => [name, tf.tensor(t.data, t.shape, 'float32')]));
      for (const [name, value] of packQkv(named)) this.w(name).assign(value);
    });
  }

  /**
   * x [.., in] @ W [in, out] + b (kernels/dense), then the exact GELU with `activation` 'gelu'. On webgpu the bias
   * is added inside the product's kernel and its gradient is one column-sum dispatch; elsewhere the stock MatMul and
   * Add, which the wasm backend routes to the native GEMM (its fused product would not).
   */
  private dense(x: tf.Tensor, name: string, f16: boolean, activation: 'linear' | 'gelu' = 'linear'): tf.Tensor {
    const w = this.w(`${name}.weight`);
    const b = this.w(`${name}.bias`);
    const [inDim, outDim] = w.shape as [number, number];
    const lead = x.shape.slice(0, -1);
    const x2 = x.reshape([-1, inDim]) as tf.Tensor2D; // [N, in]
    const y = f16 ? dense(roundToF16(x2), roundToF16(w as tf.Tensor2D), b as tf.Tensor1D, activation) // [N, out]
      : dense(x2, w as tf.Tensor2D, b as tf.Tensor1D, activation);
    return y.reshape([...lead, outDim]);
  }

  private layerNorm(x: tf.Tensor, name: string): tf.Tensor {
    return layerNorm(x, this.w(`${name}.weight`), this.w(`${name}.bias`), this.config.layerNormEps); // one kernel (kernels/layerNorm)
  }

  /** LayerNorm(dropout(x) + residual) (kernels/layerNorm). */
  private addLayerNorm(x: tf.Tensor, residual: tf.Tensor, name: string, dropout: DropoutOptions): tf.Tensor {
    return addLayerNorm(x, residual, this.w(`${name}.weight`), this.w(`${name}.bias`), this.config.layerNormEps, dropout);
  }

  /**
   * The intermediate dense layer and its activation: the exact GELU inside kernels/dense (one kernel after the
   * product, or in the product's own dispatch where kernels/gemm runs it), the others after it.
   */
  private intermediate(x: tf.Tensor, name: string, f16: boolean): tf.Tensor {
    const act = this.config.hiddenAct;
    if (act === 'gelu') return this.dense(x, name, f16, 'gelu');
    x = this.dense(x, name, f16);
    switch (act) {
      case 'gelu_new':
      case 'gelu_pytorch_tanh': {
        const inner = tf.mul(Math.sqrt(2 / Math.PI), tf.add(x, tf.mul(0.044715, tf.pow(x, 3))));
        return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.tanh(inner)));
      }
      case 'relu':
        return tf.relu(x);
    }
  }

  /**
   * One pass. Call inside `tf.tidy` (or dispose the outputs): intermediates are not kept.
   */
  forward(inputs: BertInputs, opts: ForwardOptions = {}): BertOutput {
    this.assertLive();
    const c = this.config;
    const training = opts.training ?? false;
    const f16 = opts.f16Products ?? false;
    const pHidden = training ? (opts.hiddenDropoutProb ?? c.hiddenDropoutProb) : 0;
    const pAttn = training ? (opts.attentionProbsDropoutProb ?? c.attentionProbsDropoutProb) : 0;
    let site = 0;
    // Unseeded passes draw a base seed, so masks still differ per site and per call.
    const baseSeed = opts.dropoutSeed ?? freshSeed();
    // One seed per dropout site in pass order, sites of rate 0 counted too, so a seeded pass keeps its masks.
    const nextSiteSeed = () => siteSeed(baseSeed, site++);
    const dropout = <T extends tf.Tensor>(x: T, rate: number): T => {
      const seed = nextSiteSeed();
      if (rate === 0) return x;
      return seededDropout(x, rate, seed); // mask regenerated on the device, not stored
    };

    const [B, T] = inputs.inputIds.shape;
    const H = c.hiddenSize;
    const nh = c.numAttentionHeads;
    const dh = H / nh;
    if (T > c.maxPositionEmbeddings) {
      throw new Error(`sequence length ${T} exceeds max_position_embeddings ${c.maxPositionEmbeddings}`);
    }

    // Embeddings
    const ids = inputs.inputIds.toInt();
    const words = tf.gather(this.w('embeddings.word_embeddings.weight'), ids); // [B, T, H]
    const positions = this.w('embeddings.position_embeddings.weight').slice([0, 0], [T, H]); // [T, H]
    const types = inputs.tokenTypeIds === undefined
      ? this.w('embeddings.token_type_embeddings.weight').slice([0, 0], [1, H]) // [1, H], type 0 everywhere
      : tf.gather(this.w('embeddings.token_type_embeddings.weight'), inputs.tokenTypeIds.toInt()); // [B, T, H]
    let x = this.layerNorm(tf.add(tf.add(words, positions), types), 'embeddings.LayerNorm'); // [B, T, H]
    x = dropout(x, pHidden);

    // Additive key mask: 0 where attended, MASK_VALUE at padding.  [B, 1, 1, T]
    const maskAdd = tf.mul(tf.sub(1, inputs.attentionMask.toFloat()), MASK_VALUE).reshape([B, 1, 1, T]) as tf.Tensor4D;
    const scale = 1 / Math.sqrt(dh);

    const attentions: tf.Tensor4D[] = [];
    const [fromLayer, toLayer] = opts.attentionLayers ?? [0, c.numHiddenLayers];
    const returnsAttentions = (i: number): boolean => opts.outputAttentions === true && i >= fromLayer && i < toLayer;
    // Outside a gradient tape nothing reads a layer's intermediates after the layer: each layer runs in its own tidy
    // and the previous layer's output is freed, so an inference pass holds one layer's tensors at a time, not all.
    const inference = tf.engine().state.gradientDepth === 0;
    const lastLayer = c.numHiddenLayers - 1;
    for (let i = 0; i <= lastLayer; i++) {
      const p = `encoder.layer.${i}`;
      const input = x;
      const layer = (): LayerOutput => {
        const qkv = this.dense(input, `${p}.attention.self.qkv`, f16) as tf.Tensor3D; // [B, T, 3H]: q, k, v side by side
        // probs [B, nh, T, T] after dropout, context [B, T, H]; fused kernels on webgpu, the composed ops elsewhere
        const attention = { heads: nh, scale, rate: pAttn, seed: nextSiteSeed() };
        let context: tf.Tensor3D;
        let probs: tf.Tensor4D | undefined;
        if (returnsAttentions(i)) {
          ({ context, probs } = selfAttention(qkv, maskAdd, attention));
        } else {
          context = selfAttentionContext(qkv, maskAdd, attention);
        }
        if (opts.firstTokenOnly === true && i === lastLayer) {
          // The [CLS] rows only from here (module comment); rows apart from [CLS] enter the LayerNorms as zeros.
          const attnOut = this.dense(firstRows(context), `${p}.attention.output.dense`, f16); // [B, 1, H]
          const h = this.addLayerNorm(padRows(attnOut, T), input, `${p}.attention.output.LayerNorm`, { rate: pHidden, seed: nextSiteSeed() }); // [B, T, H]
          const inter = this.intermediate(firstRows(h), `${p}.intermediate.dense`, f16); // [B, 1, I]
          const out = this.dense(inter, `${p}.output.dense`, f16); // [B, 1, H]
          return { x: firstRows(this.addLayerNorm(padRows(out, T), h, `${p}.output.LayerNorm`, { rate: pHidden, seed: nextSiteSeed() })), probs }; // [B, 1, H]
        }
        // x = LayerNorm(dropout(dense) + x), one kernel (kernels/layerNorm); the dropout takes the next site's seed
        const attnOut = this.dense(context, `${p}.attention.output.dense`, f16); // [B, T, H]
        const h = this.addLayerNorm(attnOut, input, `${p}.attention.output.LayerNorm`, { rate: pHidden, seed: nextSiteSeed() });
        const inter = this.intermediate(h, `${p}.intermediate.dense`, f16); // [B, T, I]
        const out = this.dense(inter, `${p}.output.dense`, f16); // [B, T, H]
        return { x: this.addLayerNorm(out, h, `${p}.output.LayerNorm`, { rate: pHidden, seed: nextSiteSeed() }) as tf.Tensor3D, probs }; // [B, T, H]
      };
      const out = inference ? tf.tidy(layer) : layer();
      if (out.probs !== undefined) attentions.push(out.probs);
      x = out.x;
      if (inference) input.dispose();
    }
    const result: BertOutput = { lastHiddenState: x as tf.Tensor3D };
    if (opts.outputAttentions === true) result.attentions = attentions;
    return result;
  }

  /** Frees the weights; any later use of the model throws. A second call does nothing. */
  dispose(): void {
    for (const v of this.weights.values()) v.dispose();
    this.weights.clear();
    this.disposed = true;
  }
}

/** An encoder layer's output, and its attention probabilities where the pass returns them. */
type LayerOutput = { x: tf.Tensor3D; probs: tf.Tensor4D | undefined };

/** The first token's row of every sequence: [B, T, H] -> [B, 1, H]. */
function firstRows(x: tf.Tensor): tf.Tensor3D {
  const [B, , H] = x.shape as [number, number, number];
  return x.slice([0, 0, 0], [B, 1, H]) as tf.Tensor3D;
}

/** [B, 1, H] -> [B, T, H], zeros in the rows after the first. */
function padRows(x: tf.Tensor, T: number): tf.Tensor3D {
  return tf.pad(x as tf.Tensor3D, [[0, 0], [0, T - 1], [0, 0]]);
}

function initTensor(spec: WeightSpec, c: BertConfig, seed: number): tf.Tensor {
  const shape = spec.linear ? [spec.shape[1]!, spec.shape[0]!] : spec.shape;
  switch (spec.init) {
    case 'zeros':
      return tf.zeros(shape);
    case 'ones':
      return tf.ones(shape);
    case 'normal':
      return tf.tidy(() => {
        const w = tf.randomNormal(shape, 0, c.initializerRange, 'float32', seed);
        // transformers zeroes the padding row of the word embeddings.
        if (spec.name === 'embeddings.word_embeddings.weight' && c.padTokenId >= 0 && c.padTokenId < shape[0]!) {
          const rowMask = tf.oneHot([c.padTokenId], shape[0]!).reshape([shape[0]!, 1]);
          return tf.mul(w, tf.sub(1, rowMask));
        }
        return w;
      });
  }
}
