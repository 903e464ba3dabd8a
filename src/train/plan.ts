/**
 * What a config will train, resolved without training (`micse train --dry-run`): the training file and its sha256,
 * sentences, steps, the evaluation and selection steps, the objective and the optimizer. The trainer takes its
 * training file, run directory and step count from the same functions, so the plan cannot drift from the run.
 *
 * `{subsetSeed}` in data.train and train.output stands for data.subsetSeed, so one config names the authors' five
 * subset files (`wiki_subset_1M_000.10percent_seed{subsetSeed}.txt`) and `--set data.subsetSeed=50` picks one.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { stepsPerEpoch } from '../data/batchLimits.js';
import { downloadCommandFor } from '../data/download.js';
import { loadTrainingSentences, type TrainingSentences } from '../data/subset.js';
import { UserError } from '../errors.js';
import { parseBertConfig, readBertConfig } from '../model/config.js';
import { localModelDir } from '../model/hub.js';
import { checkModelFits, randomConfigSource, type TrainConfig } from './config.js';
import { scheduleOf, totalStepsOf } from './selection.js';

/** The placeholder of data.subsetSeed in data.train and train.output. */
export const SUBSET_SEED_PLACEHOLDER = '{subsetSeed}';

function withSeed(s: string, c: TrainConfig): string {
  return s.split(SUBSET_SEED_PLACEHOLDER).join(String(c.data.subsetSeed));
}

/** data.train with `{subsetSeed}` filled in. */
export function trainingFile(c: TrainConfig): string {
  return withSeed(c.data.train, c);
}

/** train.output with `{subsetSeed}` filled in. */
export function runDirectory(c: TrainConfig): string {
  return withSeed(c.train.output, c);
}


/** A UserError for a training file that does not exist, with the download command when it is a known file. */
function missingFileError(file: string): UserError {
  const cmd = downloadCommandFor(file);
  return new UserError(`${file}: training file not found${cmd === null ? '' : `; download it with: ${cmd}`}`);
}

/** Reads the training sentences per the config (the trainer's one way in); a missing file names its download. */
export async function readTrainingData(c: TrainConfig): Promise<TrainingSentences> {
  const file = trainingFile(c);
  if (!existsSync(file)) throw missingFileError(file);
  return loadTrainingSentences({
    path: file, format: c.data.format, column: c.data.column, fraction: c.data.fraction, count: c.data.count,
    subsetSeed: c.data.subsetSeed, onInvalid: c.data.onInvalid, blankLines: c.data.blankLines,
  });
}

export interface TrainingPlan {
  trainingFile: {
    path: string;
    exists: boolean;
    /** null when the file is missing. */
    sha256: string | null;
    /** The command that downloads it, when it is a known file. */
    download: string | null;
  };
  data: {
    blankLines: TrainConfig['data']['blankLines'];
    /** `file`: every sentence of the file; `project-draw`: this project's seeded subset draw (fraction / count). */
    subset: 'file' | 'project-draw';
    fraction: number | null;
    count: number | null;
    subsetSeed: number;
    /** Training sentences (after blank-line handling and the draw); null when the file is missing. */
    sentences: number | null;
  };
  steps: {
    batchSize: number;
    dropLast: boolean;
    perEpoch: number | null;
    epochs: number;
    maxSteps: number | null;
    total: number | null;
  };
  evaluation: {
    every: number;
    /** null until the step count is known. */
    steps: number[] | null;
  };
  selection: {
    rule: TrainConfig['train']['selection'];
    /** In words, valid before the step count is known. */
    when: string;
    saveSteps: number | null;
    steps: number[] | null;
  };
  objective: {
    style: TrainConfig['objective']['style'];
    lambda: number | null;
    /** The AMI layers, first and last (inclusive); null for simcse. */
    layers: [number, number] | null;
    temperature: number;
    rhoEps: number;
  };
  optimizer: {
    variant: TrainConfig['optim']['variant'];
    learningRate: number;
    weightDecay: number;
    schedule: TrainConfig['optim']['schedule'];
    warmupSteps: number;
    warmupRatio: number;
    maxGradNorm: number;
  };
  /**
   * data.maxSeqLen and the model's max_position_embeddings it fits, from `source` (model.config or bert-base's
   * default for a random init, else the checkpoint's config.json); both null where model.init is a Hub model not in
   * the local cache, whose config.json the trainer checks once it is downloaded.
   */
  maxSeqLen: { value: number; maxPositionEmbeddings: number | null; source: string | null };
  /** train.backend as configured (`auto` picks when training starts) and train.precision. */
  backend: TrainConfig['train']['backend'];
  precision: TrainConfig['train']['precision'];
  model: string;
  output: string;
  seed: number;
}

function selectionWords(c: TrainConfig): string {
  if (c.train.selection === 'every-eval') return `every evaluation (every ${c.train.evalSteps} steps) and the last step`;
  return `evaluations at multiples of train.saveSteps ${c.train.saveSteps} (evaluations every ${c.train.evalSteps}), ` +
    'not the last step unless it is one (transformers 4.22)';
}

/**
 * The model's max_position_embeddings and where it comes from, once the config is known to fit the model (the
 * trainer's UserError otherwise: checkModelFits, the AMI layers and data.maxSeqLen): model.config or bert-base's default for a random init (loadConfig checked it), the
 * config.json of a checkpoint on this machine (a folder, a cached Hub model); null where the checkpoint must be
 * downloaded first.
 */
async function modelPositions(c: TrainConfig): Promise<{ max: number; source: string } | null> {
  if (c.model.init === 'random') return { max: parseBertConfig(c.model.config ?? {}, 'model.config').maxPositionEmbeddings, source: randomConfigSource(c, 'max_position_embeddings') };
  const dir = await localModelDir(c.model.init);
  if (dir === null) return null;
  const source = path.join(dir, 'config.json');
  const config = await readBertConfig(dir);
  // The trainer's check (checkModelFits, as loadPretrained reads config.json), before anything is loaded.
  checkModelFits(c, config, source, 'config');
  return { max: config.maxPositionEmbeddings, source };
}

/**
 * The plan of `c`; reads the training file when it exists (sha256, sentences) and the config.json of a checkpoint
 * on this machine (checkModelFits: the AMI layers and data.maxSeqLen against it), and nothing else.
 */
export async function trainingPlan(c: TrainConfig): Promise<TrainingPlan> {
  const positions = await modelPositions(c);
  const file = trainingFile(c);
  const exists = existsSync(file);
  const data = exists ? await readTrainingData(c) : null;
  const perEpoch = data === null ? null : stepsPerEpoch(data.sentences.length, c.train.batchSize, c.data.dropLast);
  const total = c.train.maxSteps ?? (perEpoch === null ? null : totalStepsOf(c, perEpoch));
  const schedule = total === null ? null : scheduleOf(total, c.train);
  const micse = c.objective.style === 'micse';
  return {
    trainingFile: { path: file, exists, sha256: data?.manifest.source.sha256 ?? null, download: downloadCommandFor(file) },
    data: {
      blankLines: c.data.blankLines,
      subset: c.data.fraction === null && c.data.count === null ? 'file' : 'project-draw',
      fraction: c.data.fraction,
      count: c.data.count,
      subsetSeed: c.data.subsetSeed,
      sentences: data?.sentences.length ?? null,
    },
    steps: { batchSize: c.train.batchSize, dropLast: c.data.dropLast, perEpoch, epochs: c.train.epochs, maxSteps: c.train.maxSteps, total },
    evaluation: { every: c.train.evalSteps, steps: schedule?.evaluations ?? null },
    selection: {
      rule: c.train.selection,
      when: selectionWords(c),
      saveSteps: c.train.selection === 'hf-save-steps' ? c.train.saveSteps : null,
      steps: schedule?.candidates ?? null,
    },
    objective: {
      style: c.objective.style,
      lambda: micse ? c.objective.lambda : null,
      layers: micse ? [c.objective.minLayer, c.objective.maxLayer - 1] : null,
      temperature: c.objective.temperature,
      rhoEps: c.objective.rhoEps,
    },
    optimizer: {
      variant: c.optim.variant,
      learningRate: c.optim.learningRate,
      weightDecay: c.optim.weightDecay,
      schedule: c.optim.schedule,
      warmupSteps: c.optim.warmupSteps,
      warmupRatio: c.optim.warmupRatio,
      maxGradNorm: c.optim.maxGradNorm,
    },
    maxSeqLen: { value: c.data.maxSeqLen, maxPositionEmbeddings: positions?.max ?? null, source: positions?.source ?? null },
    backend: c.train.backend,
    precision: c.train.precision,
    model: c.model.init,
    output: runDirectory(c),
    seed: c.train.seed,
  };
}

/** `a, b, c, ..., z (n)`: a long step list in one line. */
function stepList(steps: number[] | null): string {
  if (steps === null) return 'unknown until the training file is present';
  if (steps.length === 0) return 'none';
  const shown = steps.length <= 6 ? steps.join(', ') : `${steps.slice(0, 3).join(', ')}, ..., ${steps.at(-1)}`;
  return `${shown} (${steps.length})`;
}

/** The plan as lines for a terminal. */
export function formatPlan(p: TrainingPlan): string {
  const f = p.trainingFile;
  const d = p.data;
  const fileLine = f.exists
    ? `${f.path}  sha256 ${f.sha256}`
    : `${f.path}  MISSING${f.download === null ? '' : `; download: ${f.download}`}`;
  const subset = d.subset === 'file'
    ? 'every sentence of the file'
    : `this project's seeded draw: ${d.fraction !== null ? `fraction ${d.fraction}` : `count ${d.count}`}, subset seed ${d.subsetSeed}`;
  const o = p.optimizer;
  return [
    `training file   ${fileLine}`,
    `sentences       ${d.sentences ?? 'unknown (file missing)'} (${subset}; blank lines ${d.blankLines === 'keep' ? 'kept as empty sentences' : 'skipped'})`,
    `steps           ${p.steps.perEpoch ?? '?'} per epoch (batch ${p.steps.batchSize}${p.steps.dropLast ? ', last partial batch dropped' : ''}) x ` +
      `${p.steps.maxSteps !== null ? `max ${p.steps.maxSteps}` : `${p.steps.epochs} epochs`} = ${p.steps.total ?? '?'} steps`,
    `evaluation      STS-B dev every ${p.evaluation.every} steps: ${stepList(p.evaluation.steps)}`,
    `selection       ${p.selection.rule}: ${p.selection.when}: ${stepList(p.selection.steps)}`,
    `objective       ${p.objective.style}${p.objective.layers !== null ? `, lambda ${p.objective.lambda}, AMI layers ${p.objective.layers[0]}..${p.objective.layers[1]}, rhoEps ${p.objective.rhoEps}` : ''}, temperature ${p.objective.temperature}`,
    `optimizer       AdamW ${o.variant}, lr ${o.learningRate} ${o.schedule}, warmup ${o.warmupSteps > 0 ? `${o.warmupSteps} steps` : `ratio ${o.warmupRatio}`}, ` +
      `weight decay ${o.weightDecay}, clip ${o.maxGradNorm}`,
    `max length      data.maxSeqLen ${p.maxSeqLen.value}, ` + (p.maxSeqLen.source !== null
      ? `within max_position_embeddings ${p.maxSeqLen.maxPositionEmbeddings} (${p.maxSeqLen.source})`
      : `checked against ${p.model}'s config.json when training starts (not in the Hugging Face cache: it is downloaded then)`),
    `backend         ${p.backend}${p.backend === 'auto' ? ' (the first that works, when training starts)' : ''}, precision ${p.precision}`,
    `model           ${p.model} -> ${p.output} (seed ${p.seed})`,
  ].join('\n');
}
