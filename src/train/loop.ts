/**
 * The optimisation loop both trainers run: `train` (trainer.ts: files, checkpoints, resume) and `trainInMemory`
 * (memory.ts: sentences and a model held in memory, as in a page). Nothing here touches files.
 *
 * Reproducibility: every random choice of step s derives from (train.seed, s): the dropout masks
 * (`dropoutSeed`), the AMI draw, and the data order (the iterator's own seeded state).
 */
import { TwoViewBatchIterator, type BatchIteratorOptions, type BatchIteratorState, type TwoViewBatch } from '../data/batches.js';
import type { BertTokenizer } from '../data/tokenizer.js';
import { UserError } from '../errors.js';
import { MlpHead } from '../losses/mlpHead.js';
import { siteSeed, type BertModel } from '../model/bert.js';
import { AdamW, learningRateAt } from './adamw.js';
import { configError, type TrainConfig } from './config.js';
import { actionsAt, totalStepsOf } from './selection.js';
import { FP32, TrainStep, trainableParams, type StepPrecision } from './step.js';
import { LossScaler, type LossScalerState } from './lossScale.js';
import { f16Problem } from '../kernels/f16/index.js';

/** Seed streams derived from train.seed, so each random consumer has its own. */
export const SEED_STREAM = { head: 1, dropout: 2, ami: 3, data: 4 } as const;

export interface MetricsLine {
  step: number;
  epoch: number;
  loss: number;
  infoNCE: number;
  ami: number | null;
  lr: number;
  gradNorm: number;
  sentencesPerSecond: number;
  skipped?: boolean;
  /** train.precision mixed: the step's loss scale. */
  lossScale?: number;
  /** train.precision mixed: skipped because a gradient overflowed at that scale (the scale halved). */
  overflow?: boolean;
}

/** What a run optimises with: the MLP head, AdamW, the batches and the schedule. */
export interface TrainingRun {
  head: MlpHead;
  optimizer: AdamW;
  batches: TwoViewBatchIterator;
  step: TrainStep;
  /** train.precision mixed: the step's loss scaler (its state goes into checkpoints); null in fp32. */
  scaler: LossScaler | null;
  totalSteps: number;
  warmup: number;
  /** Frees the head and the optimizer's moments (not the model). */
  dispose(): void;
}

/**
 * What train.precision asks of the step; `mixed` where the active backend cannot round to float16 is a UserError
 * naming the key and where it was set (configError). `state`: a resumed run's loss scale.
 */
export function stepPrecision(c: TrainConfig, state?: LossScalerState): StepPrecision {
  if (c.train.precision === 'fp32') return FP32;
  const problem = f16Problem();
  if (problem !== null) throw configError(c, ['train.precision'], `train.precision is mixed, but ${problem}; use train.precision: fp32 or another --backend`, 'config');
  return { f16Products: true, scaler: new LossScaler(c.train.lossScaleGrowthInterval, c.train.lossScale, state) };
}

/**
 * Builds the head, the optimizer and the batch iterator of a run over `sentences` (from `dataState` and
 * `scalerState` when resuming).
 */
export function startTraining(c: TrainConfig, model: BertModel, tokenizer: BertTokenizer, sentences: readonly string[],
  dataState?: BatchIteratorState, scalerState?: LossScalerState): TrainingRun {
  const precision = stepPrecision(c, scalerState);
  const head = new MlpHead(model.config.hiddenSize, { initializerRange: model.config.initializerRange, seed: siteSeed(c.train.seed, SEED_STREAM.head) });
  let optimizer: AdamW | undefined;
  // What is built after the head is freed again when a later part throws (a disposed model, a bad sentence list).
  try {
    optimizer = new AdamW(trainableParams(model, head), { variant: c.optim.variant, beta1: c.optim.beta1, beta2: c.optim.beta2, eps: c.optim.eps, weightDecay: c.optim.weightDecay });
    const batchOpts: BatchIteratorOptions = {
      sentences, tokenizer, batchSize: c.train.batchSize, maxSeqLen: c.data.maxSeqLen, dropLast: c.data.dropLast,
      seed: siteSeed(c.train.seed, SEED_STREAM.data),
    };
    const batches = new TwoViewBatchIterator(batchOpts, dataState);
    const totalSteps = totalStepsOf(c, batches.stepsPerEpoch);
    if (totalSteps < 1) throw new UserError(`no training steps: ${sentences.length} sentences with batch ${c.train.batchSize} and dropLast`);
    const warmup = c.optim.warmupSteps > 0 ? c.optim.warmupSteps : Math.round(c.optim.warmupRatio * totalSteps);
    const opt = optimizer;
    return {
      head, optimizer: opt, batches, totalSteps, warmup, step: new TrainStep(model, head, opt, c.objective, precision, c.train.webgpuReplay), scaler: precision.scaler,
      dispose: () => {
        head.dispose();
        opt.dispose();
      },
    };
  } catch (err) {
    head.dispose();
    optimizer?.dispose();
    throw err;
  }
}

/** The counters the loop advances (the trainer's checkpointed state holds them). */
export interface LoopCounters {
  step: number;
  epoch: number;
  badStepsInRow: number;
  badStepsTotal: number;
}

export interface LoopHooks {
  /** Checked before each step: true ends the loop there. */
  stop(): boolean;
  /** After each step, with its metrics line. */
  afterStep(line: MetricsLine): Promise<void> | void;
  /** Where train.selection evaluates STS-B dev (selection.ts actionsAt); `candidate`: it may become the best. */
  evaluate(candidate: boolean): Promise<void>;
  /** Where train.selection writes a checkpoint without evaluating. */
  checkpoint?(): Promise<void>;
  /** Appended to the error when train.maxBadSteps steps in a row had a non-finite loss. */
  badStepsHint: string;
}

/** Runs steps from `state.step` to the run's last; returns false when `hooks.stop()` ended it first. */
export async function runSteps(c: TrainConfig, run: TrainingRun, state: LoopCounters, hooks: LoopHooks): Promise<boolean> {
  while (state.step < run.totalSteps) {
    if (hooks.stop()) return false;
    const batch: TwoViewBatch = run.batches.next().value;
    const t0 = Date.now();
    const stepSeed = siteSeed(c.train.seed, state.step);
    const lr = learningRateAt(state.step, run.totalSteps, c.optim.learningRate, run.warmup, c.optim.schedule);
    const { loss, infoNCE, ami, gradNorm, finite, overflow, lossScale } = await run.step.run(batch, {
      lr, maxGradNorm: c.optim.maxGradNorm, dropoutSeed: siteSeed(stepSeed, SEED_STREAM.dropout), amiSeed: siteSeed(stepSeed, SEED_STREAM.ami),
    });
    // A step skipped for a gradient overflow (mixed precision; the scale has halved) counts as bad too, so that
    // train.maxBadSteps ends a run whose gradients overflow at every scale.
    if (finite && !overflow) {
      state.badStepsInRow = 0;
    } else {
      state.badStepsInRow += 1;
      state.badStepsTotal += 1;
    }
    state.step += 1;
    state.epoch = batch.epoch;
    const sps = (batch.sentences.length * 1000) / Math.max(1, Date.now() - t0);
    const line: MetricsLine = { step: state.step, epoch: batch.epoch, loss, infoNCE, ami, lr, gradNorm, sentencesPerSecond: sps };
    if (!finite || overflow) line.skipped = true;
    if (c.train.precision === 'mixed') line.lossScale = lossScale;
    if (overflow) line.overflow = true;
    await hooks.afterStep(line);
    if (state.badStepsInRow >= c.train.maxBadSteps) {
      const what = overflow ? `were skipped, the last for gradients that overflowed float16 at loss scale ${lossScale}`
        : `had a non-finite loss (last ${loss})`;
      throw new UserError(`stopped: ${state.badStepsInRow} steps in a row ${what}; ` +
        `lower optim.learningRate or check the data; ${hooks.badStepsHint}`);
    }
    const at = actionsAt(state.step, run.totalSteps, c.train);
    if (at.evaluate) await hooks.evaluate(at.candidate);
    else if (at.checkpoint) await hooks.checkpoint?.();
  }
  return true;
}

/** Whether a step's line goes to the metrics (metrics.jsonl): every train.logSteps-th, and every skipped step. */
export function isLoggedStep(c: TrainConfig, line: MetricsLine): boolean {
  return line.step % c.train.logSteps === 0 || line.skipped === true;
}
