/**
 * `trainInMemory`: the trainer's loop (loop.ts) over sentences and a model held in memory, as a page trains. It
 * writes no files: the config is a partial object merged over the defaults as a YAML file is (the data.* keys that
 * name files are not read), the given model is trained in place and returned, and the metrics come back as the
 * lines metrics.jsonl would hold. The same config and seed give the losses of `train` on the same sentences.
 */
import { stsbDevSpearman, type StsTaskData } from '../../eval/sts.js';
import { checkSentenceCount } from '../data/batchLimits.js';
import { checkTexts, type BertTokenizer } from '../data/tokenizer.js';
import type { BertModel } from '../model/bert.js';
import { embed } from '../model/embed.js';
import { checkConsistency, checkModelFits, defaultConfig, mergeConfig, type PartialTrainConfig } from './config.js';
import { isLoggedStep, runSteps, startTraining, type LoopCounters, type MetricsLine } from './loop.js';

export interface InMemoryTrainOptions {
  /** The training sentences, in corpus order (no subset is drawn: pass the ones to train on). */
  sentences: readonly string[];
  /** Trained in place. model.hiddenDropout / attentionDropout, when the config sets them, are written into its config. */
  model: BertModel;
  tokenizer: BertTokenizer;
  /** Called after every step. */
  onStep?: (line: MetricsLine) => void;
  /** Aborting it stops the run before its next step; the result then has `stopped: true`. */
  signal?: AbortSignal;
  /** STS-B dev pairs: scored before training, at every train.evalSteps-th step and at the end. */
  stsbDev?: StsTaskData;
}

/** A metrics line of an STS-B dev evaluation (Spearman x 100). */
export interface EvalLine {
  step: number;
  epoch: number;
  stsbDev: number;
}

export interface InMemoryTrainResult {
  /** The lines metrics.jsonl would hold: every train.logSteps-th step and every evaluation. */
  metrics: (MetricsLine | EvalLine)[];
  model: BertModel;
  steps: number;
  totalSteps: number;
  stopped: boolean;
  /** Steps replayed from a recorded step (webgpu, train.webgpuReplay); null where steps are not replayed. */
  replayedSteps: number | null;
  /** STS-B dev Spearman x 100 before and after training, when `stsbDev` was given. */
  stsbDev?: { before: number; after: number };
}

/**
 * Trains `opts.model` on `opts.sentences` per `config` (a partial config object, checked at run time as a config file
 * is); see the module comment.
 */
export async function trainInMemory(config: PartialTrainConfig, opts: InMemoryTrainOptions): Promise<InMemoryTrainResult> {
  const c = mergeConfig(defaultConfig(), config, 'config');
  checkConsistency(c, 'config');
  checkTexts(opts.sentences, 'sentences');
  checkSentenceCount(opts.sentences.length);
  const { model, tokenizer } = opts;
  checkModelFits(c, model.config, "the model's config", 'config');
  if (c.model.hiddenDropout !== null) model.config.hiddenDropoutProb = c.model.hiddenDropout;
  if (c.model.attentionDropout !== null) model.config.attentionProbsDropoutProb = c.model.attentionDropout;

  const encode = (s: string[]) => embed(model, tokenizer, s, { batchSize: c.train.evalBatchSize, pooler: 'cls_before_pooler' });
  const stsbDev = opts.stsbDev;
  const score = stsbDev === undefined ? undefined : () => stsbDevSpearman(encode, stsbDev, { batchSize: c.train.evalBatchSize });
  const before = score === undefined ? undefined : await score();
  const metrics: (MetricsLine | EvalLine)[] = [];
  const state: LoopCounters = { step: 0, epoch: 0, badStepsInRow: 0, badStepsTotal: 0 };
  let lastEval: EvalLine | undefined;
  const run = startTraining(c, model, tokenizer, opts.sentences);
  let completed: boolean;
  try {
    completed = await runSteps(c, run, state, {
      stop: () => opts.signal?.aborted === true,
      afterStep: (line) => {
        if (isLoggedStep(c, line)) metrics.push(line);
        opts.onStep?.(line);
      },
      evaluate: async () => {
        if (score === undefined) return;
        lastEval = { step: state.step, epoch: state.epoch, stsbDev: await score() };
        metrics.push(lastEval);
      },
      badStepsHint: 'the model holds the weights of the last step with a finite loss',
    });
  } finally {
    run.dispose();
  }
  const replayedSteps = run.step.replayStats()?.replayed ?? null;
  const result: InMemoryTrainResult = { metrics, model, steps: state.step, totalSteps: run.totalSteps, stopped: !completed, replayedSteps };
  if (score !== undefined) {
    // A stopped run was last scored before its last steps (or never).
    if (lastEval?.step !== state.step) {
      lastEval = { step: state.step, epoch: state.epoch, stsbDev: await score() };
      metrics.push(lastEval);
    }
    result.stsbDev = { before: before!, after: lastEval.stsbDev };
  }
  return result;
}
