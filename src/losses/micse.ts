/**
 * The miCSE training objective for one batch: two dropout views of every sentence, InfoNCE over their pooled
 * embeddings, plus lambda times the attention mutual information (AMI) of the selected layers.
 *
 *   total = alpha * InfoNCE(z1, z2) + lambda * AMI(attentions[minLayer, maxLayer))
 *
 * Reference: miCSE `cl_forward` (SAP-samples/acl2023-micse `model/models.py`; Klein & Nabi, "miCSE: Mutual
 * Information Contrastive Learning for Low-shot Sentence Embeddings", ACL 2023); the pieces are
 * src/losses/infoNCE.ts, attentionMI.ts and mlpHead.ts.
 *
 * Inputs:
 * - `model`: the encoder (BertModel or anything with the same `forward` and `config`).
 * - `batch`: `inputIds`, `attentionMask` (and optional `tokenTypeIds`), each int32 `[2B, T]`, rows interleaved by
 *   view: sentence 0 view 1, sentence 0 view 2, sentence 1 view 1, ... (the two rows of a sentence are normally
 *   identical; dropout makes the views).
 * - `config`: see `MicseConfig` (the keys of the `objective` section of the training config, plus the head and
 *   seeds).
 *
 * Views: `interleaved` (default, the reference) makes ONE training-mode pass over the 2B rows; `separate` makes
 * two passes, one over the B view-1 rows and one over the B view-2 rows, with different dropout seeds (what the
 * user card describes as "two dropout-augmented passes"). Both draw dropout masks from the same distribution; with
 * dropout off they compute the same numbers. In both, the attentions are re-interleaved to `[2B, L, H, T, T]`.
 *
 * Style `simcse`: lambda is taken as 0 and the encoder is not asked for attentions (`ami` is null).
 *
 * Pooler: `cls` = [CLS] vector followed by the training-only MLP head (`config.head`, required);
 * `cls_before_pooler` = raw [CLS] vector. Either way the sentence vector that STS-B dev selection, the final
 * evaluation and the exports use is the raw [CLS] (miCSE's protocol), so training on another vector (a mean of the
 * tokens) is not offered: it would be selected and exported on a vector it never trained.
 *
 * Output tensors belong to the caller. Inside `tf.variableGrads(() => ...)` only the returned loss survives that
 * function's scope, so `tf.keep` the parts you want to log:
 *   const { value, grads } = tf.variableGrads(() => {
 *     const r = micseLoss(model, batch, cfg);
 *     tf.keep(r.infoNCE); if (r.ami) tf.keep(r.ami);
 *     parts = r;
 *     return r.loss;
 *   }, vars);
 *
 * Host reads: none (the AMI's row filter and draw stay on the device); only a pinned `sampleIndices` reads the
 * AMI's row filter back (see attentionMI.ts).
 */
import { UserError } from '../errors.js';
import type { BertInputs, BertOutput, ForwardOptions } from '../model/bert.js';
import { siteSeed } from '../model/bert.js';
import { pool } from '../model/pooling.js';
import { tf } from '../model/tf.js';
import { attentionMutualInformation, type AttentionMIOptions } from './attentionMI.js';
import { infoNCE } from './infoNCE.js';
import {
  amiLayerSpanProblem, MICSE_STYLES, MICSE_VIEWS, TRAIN_POOLERS, type MicseStyle, type MicseViews, type TrainPooler,
} from './micseOptions.js';
import type { MlpHead } from './mlpHead.js';

/** What micseLoss needs from the encoder (BertModel satisfies it). */
export interface MicseEncoder {
  readonly config: { readonly numHiddenLayers: number; readonly hiddenSize: number; readonly numAttentionHeads: number };
  forward(inputs: BertInputs, opts?: ForwardOptions): BertOutput;
}

/** int32 `[2B, T]` tensors, rows interleaved by view (sentence 0 view 1, sentence 0 view 2, ...). */
export type MicseBatch = BertInputs;

/**
 * The objective: the keys of the training config's `objective` section (src/train/config.ts SCHEMA holds their
 * defaults and ranges; `defaultConfig().objective` is a complete one).
 */
export interface MicseObjective {
  /** `micse`: InfoNCE + lambda * AMI; `simcse`: InfoNCE only (lambda taken as 0, no attentions). */
  style: MicseStyle;
  /** InfoNCE temperature. */
  temperature: number;
  /** Weight of InfoNCE. */
  alpha: number;
  /** Weight of the AMI term. */
  lambda: number;
  /** First encoder layer (0-based) of the AMI term. */
  minLayer: number;
  /** One past the last AMI layer; maxLayer - minLayer must be even and positive. */
  maxLayer: number;
  /** Attention entries drawn per AMI row. */
  targetSamples: number;
  /** AMI value substituted for NaN. */
  nanValue: number;
  /** AMI rho clamp: |rho| <= 1 - rhoEps; 0 turns it off as the reference has it (see attentionMI.ts). */
  rhoEps: number;
  /** One pass over the 2B interleaved rows, or two passes over the B rows of each view. */
  views: MicseViews;
  /** Training pooler. */
  pooler: TrainPooler;
}

/** The objective plus what varies per step: the head, the seeds, dropout. */
export interface MicseConfig extends MicseObjective {
  /** The training-only MLP head; required with pooler `cls`. */
  head?: MlpHead | null;
  /** Seed of the AMI draw (vary it per step). Undefined: unseeded. */
  seed?: number;
  /** Seed of all dropout masks of this step (vary it per step). Undefined: unseeded. */
  dropoutSeed?: number;
  /** Pins the AMI draw (see AttentionMIOptions.sampleIndices). */
  sampleIndices?: AttentionMIOptions['sampleIndices'];
  /** Dropout on (default). Off only for tests and diagnostics. */
  training?: boolean;
  /** Override the encoder's dropout rates for this step. */
  hiddenDropoutProb?: number;
  attentionProbsDropoutProb?: number;
  /** The encoder's dense products take float16 inputs (ForwardOptions.f16Products; train.precision mixed). */
  f16Products?: boolean;
}

export interface MicseLossResult {
  /** alpha * infoNCE + lambda * ami. */
  loss: tf.Scalar;
  infoNCE: tf.Scalar;
  /** null for style `simcse`. */
  ami: tf.Scalar | null;
  /** int32 `[rows, samples]` of the AMI draw (see AttentionMIResult.drawn); null for style `simcse`. */
  amiDrawn: tf.Tensor1D | null;
}

/** Site index mixed into dropoutSeed for the second pass of `views: separate`. */
const SECOND_VIEW_SITE = 1_000_003;

function oneOf<T extends string>(value: T, choices: readonly T[], key: string): void {
  if (!choices.includes(value)) throw new UserError(`objective.${key} must be one of ${choices.join(', ')}; got '${String(value)}'`);
}

/** Validates `config` against the model and the batch; every failure is a UserError saying why. */
export function checkMicseConfig(model: MicseEncoder, batch: MicseBatch, config: MicseConfig): void {
  const { style, temperature, alpha, lambda, nanValue, targetSamples } = config;
  oneOf(style, MICSE_STYLES, 'style');
  oneOf(config.views, MICSE_VIEWS, 'views');
  oneOf(config.pooler, TRAIN_POOLERS, 'pooler');
  if (!(temperature > 0) || !Number.isFinite(temperature)) throw new UserError(`objective.temperature must be a positive number; got ${temperature}`);
  if (!(alpha >= 0) || !Number.isFinite(alpha)) throw new UserError(`objective.alpha must be a finite number >= 0; got ${alpha}`);
  if (style === 'micse' && (!(lambda >= 0) || !Number.isFinite(lambda))) throw new UserError(`objective.lambda must be a finite number >= 0; got ${lambda}`);
  if (!Number.isFinite(nanValue)) throw new UserError(`objective.nanValue must be finite; got ${nanValue}`);

  if (style === 'micse') {
    const span = amiLayerSpanProblem(config.minLayer, config.maxLayer, model.config.numHiddenLayers);
    if (span !== null) throw new UserError(span);
    if (!Number.isInteger(targetSamples) || targetSamples < 1) {
      throw new UserError(`objective.targetSamples must be a positive integer; got ${targetSamples}`);
    }
  }

  const head = config.head ?? null;
  if (config.pooler === 'cls') {
    if (head === null) throw new UserError("pooler 'cls' needs the training MLP head (config.head); use 'cls_before_pooler' for none");
    if (head.hiddenSize !== model.config.hiddenSize) {
      throw new UserError(`the MLP head has hidden size ${head.hiddenSize} but the encoder has ${model.config.hiddenSize}`);
    }
  }

  const [rows, T] = batch.inputIds.shape;
  if (batch.inputIds.rank !== 2 || rows < 2 || rows % 2 !== 0) {
    throw new UserError(`a miCSE batch holds every sentence twice (2B rows, interleaved by view); got inputIds of shape [${batch.inputIds.shape}]`);
  }
  for (const [name, t] of [['attentionMask', batch.attentionMask], ['tokenTypeIds', batch.tokenTypeIds]] as const) {
    if (t !== undefined && (t.rank !== 2 || t.shape[0] !== rows || t.shape[1] !== T)) {
      throw new UserError(`batch.${name} has shape [${t.shape}] but inputIds has [${rows}, ${T}]`);
    }
  }
}

/** Rows `parity, parity + 2, ...` of an interleaved `[2B, ...]` tensor: `[B, ...]`. */
function viewRows<T extends tf.Tensor>(t: T, parity: 0 | 1): T {
  const [twoB, ...rest] = t.shape;
  const B = twoB! / 2;
  const pairs = tf.reshape(t, [B, 2, ...rest]); // [B, 2, ...]
  const begin = [0, parity, ...rest.map(() => 0)];
  const size = [B, 1, ...rest];
  return tf.reshape(tf.slice(pairs, begin, size), [B, ...rest]) as T; // [B, ...]
}

function sliceBatch(batch: MicseBatch, parity: 0 | 1): MicseBatch {
  const out: MicseBatch = { inputIds: viewRows(batch.inputIds, parity), attentionMask: viewRows(batch.attentionMask, parity) };
  if (batch.tokenTypeIds !== undefined) out.tokenTypeIds = viewRows(batch.tokenTypeIds, parity);
  return out;
}

/** The miCSE loss of one batch; see the module comment. */
export function micseLoss(model: MicseEncoder, batch: MicseBatch, config: MicseConfig): MicseLossResult {
  checkMicseConfig(model, batch, config);
  const c = config;
  const head = config.head ?? null;
  const lambda = c.style === 'simcse' ? 0 : c.lambda;
  const wantAttentions = c.style === 'micse';
  // Both poolers read the [CLS] rows only, so the last layer computes no others (bert.ts firstTokenOnly).
  const fwdBase: ForwardOptions = { training: config.training ?? true, outputAttentions: wantAttentions, firstTokenOnly: true };
  if (wantAttentions) fwdBase.attentionLayers = [c.minLayer, c.maxLayer];
  if (config.hiddenDropoutProb !== undefined) fwdBase.hiddenDropoutProb = config.hiddenDropoutProb;
  if (config.attentionProbsDropoutProb !== undefined) fwdBase.attentionProbsDropoutProb = config.attentionProbsDropoutProb;
  if (config.f16Products === true) fwdBase.f16Products = true;
  const layers = (out: BertOutput): tf.Tensor4D[] => {
    const maps = out.attentions; // layers [minLayer, maxLayer)
    if (maps === undefined || maps.length !== c.maxLayer - c.minLayer) {
      throw new Error(`micseLoss: the encoder returned ${maps?.length ?? 'no'} attention maps for layers [${c.minLayer}, ${c.maxLayer})`);
    }
    return maps; // each [N, heads, T, T]
  };
  const embed = (hidden: tf.Tensor3D, mask: tf.Tensor2D): tf.Tensor2D => {
    const pooled = pool(hidden, mask, 'cls_before_pooler'); // [N, 1, H] -> [N, H]
    return c.pooler === 'cls' ? head!.apply(pooled) : pooled; // [N, H]
  };

  const parts = tf.tidy(() => {
    let z1: tf.Tensor2D; // [B, H]
    let z2: tf.Tensor2D; // [B, H]
    let attentions: tf.Tensor | null = null; // [2B, L, heads, T, T]
    if (c.views === 'interleaved') {
      const fwd: ForwardOptions = { ...fwdBase };
      if (config.dropoutSeed !== undefined) fwd.dropoutSeed = config.dropoutSeed;
      const out = model.forward(batch, fwd);
      const z = embed(out.lastHiddenState, batch.attentionMask); // [2B, H]
      z1 = viewRows(z, 0);
      z2 = viewRows(z, 1);
      if (wantAttentions) attentions = tf.stack(layers(out), 1); // [2B, L, heads, T, T]
    } else {
      const b1 = sliceBatch(batch, 0);
      const b2 = sliceBatch(batch, 1);
      const fwd1: ForwardOptions = { ...fwdBase };
      const fwd2: ForwardOptions = { ...fwdBase };
      if (config.dropoutSeed !== undefined) {
        fwd1.dropoutSeed = config.dropoutSeed;
        fwd2.dropoutSeed = siteSeed(config.dropoutSeed, SECOND_VIEW_SITE);
      }
      const out1 = model.forward(b1, fwd1);
      const out2 = model.forward(b2, fwd2);
      z1 = embed(out1.lastHiddenState, b1.attentionMask);
      z2 = embed(out2.lastHiddenState, b2.attentionMask);
      if (wantAttentions) {
        const l2 = layers(out2);
        const perLayer = layers(out1).map((a1, i) => {
          const [B, heads, T] = a1.shape;
          return tf.reshape(tf.stack([a1, l2[i]!], 1), [2 * B, heads, T, T]); // [2B, heads, T, T], re-interleaved
        });
        attentions = tf.stack(perLayer, 1); // [2B, L, heads, T, T]
      }
    }
    const nce = infoNCE(z1, z2, c.temperature);
    let loss: tf.Scalar = tf.mul(nce, c.alpha);
    if (attentions === null) return { loss, infoNCE: nce };
    const miOptions: AttentionMIOptions = { targetSamples: c.targetSamples, nanValue: c.nanValue, rhoEps: c.rhoEps };
    if (config.seed !== undefined) miOptions.seed = config.seed;
    if (config.sampleIndices !== undefined) miOptions.sampleIndices = config.sampleIndices;
    const mi = attentionMutualInformation(attentions, miOptions);
    loss = tf.add(loss, tf.mul(mi.value, lambda));
    return { loss, infoNCE: nce, ami: mi.value, amiDrawn: mi.drawn };
  });
  return { loss: parts.loss, infoNCE: parts.infoNCE, ami: parts.ami ?? null, amiDrawn: parts.amiDrawn ?? null };
}
