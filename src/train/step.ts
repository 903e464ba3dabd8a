/**
 * One optimisation step, shared by the trainer and the bench so what is timed is what trains:
 *   rows [2B, T] int32 (interleaved views) -> tf.variableGrads(micseLoss) -> clipped AdamW update at `lr`, made
 *   only if the loss is finite (decided on the device) -> one read: loss, its parts, gradient norm
 *   non-finite: no update, the optimizer's step count reverted (the caller counts the skip)
 * Mixed precision (StepPrecision): the encoder's dense products take float16 inputs, and with a loss scaler the
 * step differentiates loss x scale, unscales the gradients, and gates the update on the gradients being finite too
 * (an overflow: no update, the scale halves; lossScale.ts).
 * Replay (webgpu, train.webgpuReplay): once two steps of one batch shape have run this way, the next ones of that
 * shape issue the recorded GPU commands of the last with the new batch, seeds, update scalars and loss scale instead
 * (src/kernels/replay/webgpu.ts); the one read and its outcome (the scaler's update included) are the same.
 */
import { micseLoss, type MicseConfig } from '../losses/micse.js';
import type { MlpHead } from '../losses/mlpHead.js';
import { selectBackend, type BackendSelection } from '../model/backend.js';
import type { BackendName } from '../model/backendNames.js';
import type { BertModel } from '../model/bert.js';
import { UserError } from '../errors.js';
import { tf } from '../model/tf.js';
import { bindGroupCacheOf } from '../kernels/platform/bindGroupCache.js';
import { internalsOf } from '../kernels/platform/webgpuPrograms.js';
import { GpuOutOfMemoryError, mappedAllocationFailure, outOfMemoryError } from '../kernels/platform/gpuMemory.js';
import { noteStepValue } from '../kernels/replay/index.js';
import { StepReplay, type StepReplayStats } from '../kernels/replay/webgpu.js';
import type { AdamW, NamedParam } from './adamw.js';
import type { LossScaler } from './lossScale.js';

/** The objective keys of a step (MicseConfig without the per-step head and seeds). */
export type StepObjective = Omit<MicseConfig, 'head' | 'seed' | 'dropoutSeed' | 'sampleIndices'>;

export interface StepRows {
  /** [2B, T] */
  inputIds: number[][];
  /** [2B, T] */
  attentionMask: number[][];
}

export interface StepOutcome {
  loss: number;
  infoNCE: number;
  ami: number | null;
  /** Gradient norm before clipping; NaN when the step was skipped. */
  gradNorm: number;
  /** False: the loss was NaN or infinite and no update was made. */
  finite: boolean;
  /** With a loss scaler: the loss was finite but a gradient overflowed at this step's scale; no update was made. */
  overflow: boolean;
  /** The loss scale this step used (1 without a scaler). */
  lossScale: number;
  /**
   * Milliseconds from the start of the step until its one read was issued: the host's share of the step. On a GPU
   * backend the device works meanwhile, and the rest of the step is waiting for it.
   */
  hostMs: number;
}

/** What training updates: every encoder weight except the unused pooler, then the MLP head. */
export function trainableParams(model: BertModel, head: MlpHead): NamedParam[] {
  return [
    ...model.trainableWeights().map(([name, variable]) => ({ name, variable })),
    ...Object.entries(head.namedWeights()).map(([name, variable]) => ({ name, variable })),
  ];
}

/** train.precision `mixed`: float16 product inputs, and dynamic loss scaling when `scaler` is set. */
export interface StepPrecision {
  f16Products: boolean;
  scaler: LossScaler | null;
}

export const FP32: StepPrecision = { f16Products: false, scaler: null };

/** `1` or `0`: replay on or off whatever train.webgpuReplay says (the bench's A/B sets it). */
export const REPLAY_ENV = 'MICSE_WEBGPU_REPLAY';

/** What varies per step besides the batch. */
export interface StepSettings {
  lr: number;
  maxGradNorm: number;
  dropoutSeed: number;
  amiSeed: number;
}

export class TrainStep {
  private readonly trainables: tf.Variable[];
  /** TF.js variable name -> parameter name (the optimizer's keys). */
  private readonly paramName: Map<string, string>;
  /** The replayer (webgpu with the bind-group cache, replay wanted); undefined until the first step. */
  private replayer: StepReplay | null | undefined;

  /**
   * `replay` (train.webgpuReplay, overridden by MICSE_WEBGPU_REPLAY): on webgpu, record the step's GPU commands and
   * replay them while the batch shape repeats (src/kernels/replay/webgpu.ts), with a loss scaler too (its scale is a
   * root of the step's logged values).
   */
  constructor(private readonly model: BertModel, private readonly head: MlpHead, private readonly optimizer: AdamW,
    private readonly objective: StepObjective, private readonly precision: StepPrecision = FP32, private readonly replay = false) {
    this.trainables = optimizer.params.map((p) => p.variable);
    this.paramName = new Map(optimizer.params.map((p) => [p.variable.name, p.name]));
  }

  /** What the replayer has done; null when steps are not replayed. */
  replayStats(): StepReplayStats | null {
    return this.replayer?.stats ?? null;
  }

  /**
   * Runs one step; every tensor it makes is disposed before it returns. On webgpu a step during which the device ran
   * out of memory is an error (gpuMemory.ts): its commands over the buffers it could not make did not run, so its
   * read and update are not the step's.
   */
  async run(rows: StepRows, o: StepSettings): Promise<StepOutcome> {
    const outcome = await this.runOrReplay(rows, o);
    const oom = tf.getBackend() === 'webgpu' ? outOfMemoryError(stepWhat(rows), OOM_LOWER) : null;
    if (oom !== null) throw oom;
    return outcome;
  }

  private async runOrReplay(rows: StepRows, o: StepSettings): Promise<StepOutcome> {
    try {
      const r = this.replayerOf();
      if (r === null) return await this.runStep(rows, o);
      const start = performance.now();
      const key = `${rows.inputIds.length}x${rows.inputIds[0]?.length ?? 0}, clip ${o.maxGradNorm}`;
      const roots = { dropoutSeed: o.dropoutSeed, amiSeed: o.amiSeed, lr: o.lr, t: this.optimizer.step + 1, lossScale: this.lossScale() };
      const inputs = [Int32Array.from(rows.inputIds.flat()), Int32Array.from(rows.attentionMask.flat())]; // [2B * T] each
      const read = r.replay(key, roots, inputs);
      if (read === null) return await r.record(key, roots, inputs, () => this.runStep(rows, o));
      this.optimizer.step += 1; // what apply does; the outcome reverts it when the gate was not finite
      const hostMs = performance.now() - start;
      return this.outcome(Array.from(await read), roots.lossScale, hostMs);
    } catch (err) {
      throw explainAbort(err, stepWhat(rows));
    }
  }

  /** The loss scale the next step differentiates at: the scaler's, or 1 without one. */
  private lossScale(): number {
    return this.precision.scaler?.scale ?? 1;
  }

  private replayerOf(): StepReplay | null {
    if (this.replayer === undefined) {
      const env = process.env[REPLAY_ENV];
      const wanted = env === '1' ? true : env === '0' ? false : this.replay;
      const backend = tf.backend();
      this.replayer = wanted && tf.getBackend() === 'webgpu' && bindGroupCacheOf(backend) !== undefined
        ? new StepReplay(backend) : null;
    }
    return this.replayer;
  }

  private async runStep(rows: StepRows, o: StepSettings): Promise<StepOutcome> {
    const start = performance.now();
    const scaler = this.precision.scaler;
    const lossScale = this.lossScale();
    let parts: tf.Tensor1D | undefined; // [infoNCE, ami] (ami NaN for simcse)
    let loss: tf.Scalar | undefined; // unscaled (with a scaler, `value` is loss x scale)
    const { value, grads: scaled } = tf.variableGrads(() => {
      const inputs = {
        inputIds: tf.tensor2d(rows.inputIds, undefined, 'int32'),
        attentionMask: tf.tensor2d(rows.attentionMask, undefined, 'int32'),
      };
      // A recorded step takes the batch to the GPU at once: the backend would compute small ops of host-resident
      // inputs on the host (WEBGPU_CPU_FORWARD) and upload their results, bytes a replay could not make.
      if (this.replayer instanceof StepReplay) for (const t of Object.values(inputs)) internalsOf(tf.backend()).uploadToGPU(t.dataId);
      const r = micseLoss(this.model, inputs, {
        ...this.objective, head: this.head, dropoutSeed: o.dropoutSeed, seed: o.amiSeed, f16Products: this.precision.f16Products,
      });
      parts = tf.keep(tf.stack([r.infoNCE, r.ami ?? tf.scalar(NaN)]) as tf.Tensor1D);
      if (scaler === null) return r.loss;
      loss = tf.keep(r.loss);
      // The scale and its reciprocal below reach the GPU as uploaded scalars [1] (a replay writes them from the root).
      noteStepValue('lossScale', lossScale, 'f32', (roots) => roots.lossScale);
      return tf.mul(r.loss, lossScale) as tf.Scalar;
    }, this.trainables);
    // Unscaled gradients (exact: the scale is a power of two); the scaled ones are freed here.
    if (scaler !== null) noteStepValue('1/lossScale', 1 / lossScale, 'f32', (roots) => 1 / roots.lossScale);
    const grads = scaler === null ? scaled : tf.tidy(() => {
      const inverse = tf.scalar(1 / lossScale); // one scalar for every gradient (on webgpu one upload, not one a gradient)
      return Object.fromEntries(Object.entries(scaled).map(([k, g]) => [k, tf.mul(g, inverse)]));
    });
    if (scaler !== null) tf.dispose(Object.values(scaled));
    // The update is gated where it runs (on the loss; with a scaler, on the loss plus 0 x the gradients' sums, which
    // is NaN when any gradient is not finite), so the step's one wait (loss, parts, norm, gate) comes after it: a
    // GPU keeps working while the update is recorded.
    const made: tf.Tensor[] = [value, parts!, ...Object.values(grads), ...(loss === undefined ? [] : [loss])];
    try {
      const named = new Map(Object.entries(grads).map(([k, g]) => [this.paramName.get(k) ?? k, g]));
      const gate = scaler === null ? value
        : tf.tidy(() => tf.add(loss!, tf.mul(tf.sum(tf.stack(Object.values(grads).map((g) => tf.sum(g)))), 0)) as tf.Scalar);
      if (gate !== value) made.push(gate);
      const norm = this.optimizer.apply(named, o.lr, o.maxGradNorm, gate);
      made.push(norm);
      const read = tf.tidy(() => tf.concat([(loss ?? value).reshape([1]), parts!, norm.reshape([1]), gate.reshape([1])]));
      made.push(read);
      const pending = read.data();
      const hostMs = performance.now() - start;
      return this.outcome(Array.from(await pending), lossScale, hostMs);
    } finally {
      tf.dispose(made);
    }
  }

  /** The outcome of the step's one read, [loss, infoNCE, ami, gradient norm, gate]; reverts a step that made no update. */
  private outcome(values: number[], lossScale: number, hostMs: number): StepOutcome {
    const [lossValue, infoNCE, amiValue, normValue, gateValue] = values;
    const finite = Number.isFinite(lossValue!);
    const updated = Number.isFinite(gateValue!);
    if (!updated) this.optimizer.revertStep(); // no update was made
    this.precision.scaler?.update(updated);
    const ami = this.objective.style === 'simcse' ? null : amiValue!;
    return { loss: lossValue!, infoNCE: infoNCE!, ami, gradNorm: updated ? normValue! : NaN, finite, overflow: finite && !updated, lossScale, hostMs };
  }
}

/** The wasm backend's heap ends at 4 GB (32-bit addresses); past it the module aborts and cannot be used again. */
const WASM_HEAP_GB = 4;
export const WASM_HEAP_BYTES = WASM_HEAP_GB * 2 ** 30;

/** Heap bytes of a parameter during training: the weight, its gradient and AdamW's two moments, float32 each. */
const BYTES_PER_PARAM = 16;
/** Vocabulary-table-sized buffers the heap holds on top (the embedding gradient and an update output; measured). */
const VOCAB_TABLE_COPIES = 2;
/**
 * Floats per token row and layer that the forward pass keeps for the backward pass, with the backward pass's
 * temporaries: this many per hidden unit, per intermediate unit and per attention score (a token has heads x T of
 * them in a layer). Fitted to the wasm heap's peak after two steps, less the weights, moments and gradients, per
 * token and layer (vocabulary 30522, AMI on two layers): BERT-base (H 768, I 3072, 12 heads, T 32) at batch 8: 38,400
 * (at batch 16: 32,300, fitting at 3.5 GB); H 64, 12 layers, 4 heads, T 32, batch 64: 20,035 at I 3072 (a peak of
 * 4.07 GB) and 5,820 at I 256, so 5.05 per intermediate unit; H 64, I 256, 2 layers, batch 16, T 128: 16,470 with 4
 * heads, 44,960 with 16; H 128, I 2048, 8 heads, 6 layers, batch 32, T 64: 23,150; H 256, I 1024, 4 heads, 4 layers,
 * batch 64, T 32: 9,216. The estimate is at or above each.
 */
const ACTIVATION_FLOATS = { hidden: 12, intermediate: 6, score: 28 } as const;

/** What a training step's memory depends on. */
export interface StepSize {
  /** Trainable parameters (encoder and head). */
  params: number;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  heads: number;
  layers: number;
  /** Tokens per row (the padded sequence length). */
  seqLen: number;
  /** Token rows a step runs: 2 views x batch x sequence length. */
  tokens: number;
}

/**
 * The wasm heap a training step needs, estimated from the measurements above (BERT-base at batch 64 x 2 views x 32
 * tokens: ~9.5 GB, far past the 4 GB heap; at batch 16: 3.8 GB, where 3.5 GB was measured).
 */
export function wasmStepBytes(s: StepSize): number {
  const perTokenLayer = ACTIVATION_FLOATS.hidden * s.hiddenSize + ACTIVATION_FLOATS.intermediate * s.intermediateSize +
    ACTIVATION_FLOATS.score * s.heads * s.seqLen;
  return BYTES_PER_PARAM * s.params + VOCAB_TABLE_COPIES * 4 * s.vocabSize * s.hiddenSize + 4 * perTokenLayer * s.tokens * s.layers;
}

/**
 * Why a training step of `model` (with its MLP head) on `batch` sentences x 2 views x `seqLen` tokens would not fit
 * the wasm heap (wasmStepBytes), or null when it would. `batchWhat` and `seqWhat` name where the two come from.
 */
export function wasmHeapShortfall(model: BertModel, batch: number, seqLen: number, batchWhat = 'batch', seqWhat = 'sequence length'): string | null {
  const H = model.config.hiddenSize;
  const params = model.trainableVariables().reduce((n, v) => n + v.size, 0) + H * H + H; // + the MLP head
  const c = model.config;
  const bytes = wasmStepBytes({ params, vocabSize: c.vocabSize, hiddenSize: H, intermediateSize: c.intermediateSize, heads: c.numAttentionHeads,
    layers: c.numHiddenLayers, seqLen, tokens: 2 * batch * seqLen });
  if (bytes <= WASM_HEAP_BYTES) return null;
  return `a training step of this model at ${batchWhat} ${batch} x 2 views x ${seqWhat} ${seqLen} ` +
    `needs ~${(bytes / 2 ** 30).toFixed(1)} GB (estimated), past wasm's ${WASM_HEAP_GB} GB heap`;
}

/**
 * Selects `requested` and builds the model on it (`build`). `auto` passes over wasm when a training step would not
 * fit its heap (`shortfall` of the built model; the model is then disposed and built again on the next backend),
 * rather than stop at the first step; an explicit wasm is kept, with a `warning` to log that says why it will likely
 * stop. The trainer and the bench select through this.
 */
export async function selectTrainingBackend<T extends { model: BertModel }>(requested: BackendName, build: () => Promise<T>,
  shortfall: (model: BertModel) => string | null): Promise<{
    selection: BackendSelection; built: T; wasmShortfall: string | null; warning: string | null;
  }> {
  let selection = await selectBackend(requested);
  let built = await build();
  const wasmShortfall = shortfall(built.model);
  if (selection.name === 'wasm' && requested === 'auto' && wasmShortfall !== null) {
    built.model.dispose();
    selection = await selectBackend('auto', { wasm: wasmShortfall });
    built = await build();
  }
  const warning = selection.name === 'wasm' && wasmShortfall !== null
    ? `warning: ${wasmShortfall}; the first step will likely stop (--backend cpu has no such limit)` : null;
  return { selection, built, wasmShortfall, warning };
}

/** What an out-of-memory error says a step was. */
export const stepWhat = (rows: StepRows) => `a training step of ${rows.inputIds.length} rows x ${rows.inputIds[0]?.length ?? 0} tokens`;
/** What an out-of-memory error in a step says to lower. */
const OOM_LOWER = 'train.batchSize or data.maxSeqLen';

/**
 * The wasm module's abort (`RuntimeError: Aborted()`, its out-of-memory end), and the webgpu device's running out of
 * memory (a read's GpuOutOfMemoryError, a replay's read that failed, an upload's RangeError), in `what` (stepWhat for
 * a training step), as a UserError that says what to lower (`lower`, by default the step's batch size and length);
 * any other error unchanged. BERT-base at batch 64 (128 rows of 32 tokens) does not fit wasm's heap: its weights, moments and
 * gradients take ~1.8 GB and the activations kept for the backward pass the rest.
 */
export function explainAbort(err: unknown, what: string, lower = OOM_LOWER): unknown {
  if (err instanceof GpuOutOfMemoryError) return new GpuOutOfMemoryError(err.reported, what, lower);
  const upload = mappedAllocationFailure(err);
  if (upload !== null) return new GpuOutOfMemoryError(upload, what, lower);
  if (err instanceof Error && err.name === 'OperationError' && tf.getBackend() === 'webgpu') return outOfMemoryError(what, lower) ?? err;
  if (!(err instanceof Error) || !err.message.startsWith('Aborted(') || tf.getBackend() !== 'wasm') return err;
  return new UserError(`the wasm backend ran out of its ${WASM_HEAP_GB} GB heap in ${what} ` +
    `and stopped (the process cannot continue on wasm). Lower ${lower}, or train with ` +
    '--backend cpu (no heap limit: BERT-base at batch 64 x 32 tokens takes ~12 GB of RAM) or webgpu / tensorflow-gpu / ' +
    'tensorflow; see bench/README.md for what fits.');
}
