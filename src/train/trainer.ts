/**
 * The training run on files: the loop of loop.ts (batch -> miCSE loss -> clipped AdamW step) with STS-B dev
 * selection every `evalSteps`, atomic checkpoints, exact resume, metrics.jsonl, progress and curves.
 *
 * Reproducibility: every random choice of step s derives from (train.seed, s) (loop.ts), so a run resumed from a
 * checkpoint replays exactly what the uninterrupted run would have done (bitwise on the cpu backend).
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { evaluateSts, loadStsTask, stsbDevSpearman, STS_TEST_TASKS, type StsEvaluation } from '../../eval/sts.js';
import { formatStsTable, stsReportJson } from '../../eval/report.js';
import type { BatchIteratorState } from '../data/batches.js';
import { loadTrainingSentences } from '../data/subset.js';
import { BertTokenizer } from '../data/tokenizer.js';
import { UserError } from '../errors.js';
import { exists, writeFileAtomic } from '../fsutil.js';
import { describeSelection, type BackendSelection } from '../model/backend.js';
import { BertModel, packQkv } from '../model/bert.js';
import { parseBertConfig } from '../model/config.js';
import { embed } from '../model/embed.js';
import { loadPretrained } from '../model/pretrained.js';
import { tf } from '../model/tf.js';
import { createProgress } from '../progress.js';
import { readTrainingState, saveCheckpoint, type TrainerState } from './checkpoint.js';
import { checkObjectiveFits, isLoggedStep, runSteps, startTraining, type MetricsLine } from './loop.js';
import { selectTrainingBackend, wasmHeapShortfall } from './step.js';
import { configToYaml, loadConfig, type TrainConfig } from './config.js';
import { lineChartSpec, renderSvg, type Point } from './plots.js';

export const CONFIG_FILE = 'config.yaml';
export const METRICS_FILE = 'metrics.jsonl';
export const SUMMARY_FILE = 'summary.json';
export const EVAL_FILE = 'eval.json';
export type { MetricsLine } from './loop.js';

export interface TrainOptions {
  /** Continue the run in `config.train.output` from its last checkpoint. */
  resume?: boolean;
  /** Where human-readable lines go (default: stderr). */
  log?: (line: string) => void;
  /** Stop (without a final evaluation) after this many steps in this process; for tests of interruption. */
  stopAfter?: number;
  /** No progress bar or lines. */
  quiet?: boolean;
  /** Called after every step with its metrics (sweeps, tests). */
  onStep?: (line: MetricsLine) => void;
}

export interface TrainResult {
  runDir: string;
  steps: number;
  bestStep: number | null;
  bestScore: number | null;
  badSteps: number;
  final?: StsEvaluation;
}

/** Loads the run's config for `--resume RUN_DIR`. */
export async function loadRunConfig(runDir: string, sets: readonly string[] = []): Promise<TrainConfig> {
  const file = path.join(runDir, CONFIG_FILE);
  if (!(await exists(file))) throw new UserError(`${file}: missing; --resume needs a run directory written by micse train`);
  const { config } = await loadConfig(file, sets);
  return config;
}

async function buildModel(c: TrainConfig, resumeDir: string | null): Promise<{ model: BertModel; tokenizer: BertTokenizer }> {
  const dropout = {
    ...(c.model.hiddenDropout !== null ? { hiddenDropoutProb: c.model.hiddenDropout } : {}),
    ...(c.model.attentionDropout !== null ? { attentionProbsDropoutProb: c.model.attentionDropout } : {}),
  };
  if (resumeDir !== null || c.model.init !== 'random') {
    const { model, tokenizer } = await loadPretrained(resumeDir ?? c.model.init, dropout);
    return { model, tokenizer };
  }
  const tokenizer = await BertTokenizer.fromDir(c.model.tokenizer!);
  const cfg = parseBertConfig({ vocab_size: tokenizer.vocabSize, ...(c.model.config ?? {}) }, 'model.config');
  if (dropout.hiddenDropoutProb !== undefined) cfg.hiddenDropoutProb = dropout.hiddenDropoutProb;
  if (dropout.attentionProbsDropoutProb !== undefined) cfg.attentionProbsDropoutProb = dropout.attentionProbsDropoutProb;
  return { model: BertModel.random(cfg, c.train.seed), tokenizer };
}

/**
 * Selects `c.train.backend` and builds the model on it; `auto` passes over wasm when a step at the batch the data
 * allows would not fit its heap (step.ts selectTrainingBackend).
 */
export async function selectBackendAndModel(c: TrainConfig, resumeDir: string | null, sentences: number): Promise<{
  selection: BackendSelection; model: BertModel; tokenizer: BertTokenizer; wasmShortfall: string | null; warning: string | null;
}> {
  const { selection, built, wasmShortfall, warning } = await selectTrainingBackend(c.train.backend, () => buildModel(c, resumeDir),
    (model) => wasmHeapShortfall(model, Math.min(c.train.batchSize, sentences), c.data.maxSeqLen, 'batch', 'data.maxSeqLen'));
  return { selection, model: built.model, tokenizer: built.tokenizer, wasmShortfall, warning };
}

/** Trains per `config` (or resumes the run in config.train.output). */
export async function train(config: TrainConfig, opts: TrainOptions = {}): Promise<TrainResult> {
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const c = config;
  const runDir = c.train.output;
  const resuming = opts.resume === true;
  const prior = resuming ? await readTrainingState(runDir) : null;
  if (resuming && prior === null) throw new UserError(`${runDir}: no checkpoint to resume from (expected ${path.join(runDir, 'last')})`);
  if (!resuming && (await exists(path.join(runDir, 'last')))) {
    throw new UserError(`${runDir}: already holds a run; resume it with --resume ${runDir}, or set train.output to a new directory`);
  }

  // Everything that can fail on the user's input is checked before the run directory is created. The STS-B dev
  // split is read once here and scored at every evaluation.
  const stsbDev = loadStsTask(c.data.senteval, 'stsb-dev');
  const data = await loadTrainingSentences({
    path: c.data.train, format: c.data.format, column: c.data.column, fraction: c.data.fraction, count: c.data.count,
    subsetSeed: c.data.subsetSeed, onInvalid: c.data.onInvalid,
  });
  if (data.sentences.length === 0) throw new UserError(`${c.data.train}: no training sentences`);
  const { selection, model, tokenizer, warning } = await selectBackendAndModel(c, prior?.dir ?? null, data.sentences.length);
  log(describeSelection(selection));
  if (warning !== null) log(warning);
  checkObjectiveFits(c, model.config.numHiddenLayers);

  await fs.mkdir(runDir, { recursive: true });
  if (!resuming) {
    await writeFileAtomic(path.join(runDir, CONFIG_FILE), configToYaml(c));
    await writeFileAtomic(path.join(runDir, 'subset-manifest.json'), JSON.stringify(data.manifest, null, 2) + '\n');
  }

  const run = startTraining(c, model, tokenizer, data.sentences, prior?.state.data as BatchIteratorState | undefined);
  const { head, optimizer, batches, totalSteps } = run;

  let state: TrainerState = {
    step: 0, totalSteps, epoch: 0, data: batches.state(), bestScore: null, bestStep: null, badStepsInRow: 0, badStepsTotal: 0, elapsedSeconds: 0,
  };
  if (prior !== null) {
    state = prior.state;
    const headTensors = Object.fromEntries([...prior.head].map(([k, t]) => [k, tf.tensor(t.data, t.shape)]));
    head.assignWeights(headTensors);
    tf.dispose(Object.values(headTensors)); // the head's variables are then the sole owners (AdamW updates in place)
    // Moments are keyed by parameter name; a checkpoint written before q, k and v were packed (bert.ts) has them
    // apart, and packQkv puts them side by side as the packed parameter's are.
    for (const kind of ['m', 'v'] as const) {
      tf.tidy(() => {
        const named = new Map([...prior.moments].filter(([key]) => key.startsWith(`${kind}/`))
          .map(([key, t]) => [key.slice(kind.length + 1), tf.tensor(t.data, t.shape)]));
        for (const [name, value] of packQkv(named)) {
          const target = (kind === 'm' ? optimizer.m : optimizer.v).get(name);
          if (target === undefined) throw new UserError(`${prior.dir}: optimizer state has '${kind}/${name}', which the model lacks`);
          target.assign(value);
        }
      });
    }
    optimizer.step = prior.optimizerStep;
    await truncateMetrics(path.join(runDir, METRICS_FILE), state.step);
    log(`resuming ${runDir} at step ${state.step}/${totalSteps}`);
  }
  log(`training on ${data.sentences.length} sentences, ${batches.stepsPerEpoch} steps/epoch, ${totalSteps} steps, ` +
    `${c.objective.style}${c.objective.style === 'micse' ? ` (lambda ${c.objective.lambda}, layers ${c.objective.minLayer}..${c.objective.maxLayer - 1})` : ''}`);

  const encode = (s: string[]) => embed(model, tokenizer, s, { batchSize: c.train.evalBatchSize, pooler: 'cls_before_pooler' });
  const metricsFile = await fs.open(path.join(runDir, METRICS_FILE), 'a');
  const progress = createProgress({ label: 'train', total: totalSteps, unit: 'step', silent: opts.quiet });
  if (state.step > 0) progress.tick(state.step);
  const startedAt = Date.now() - state.elapsedSeconds * 1000;
  let stepsThisProcess = 0;

  const evaluateAndSave = async (): Promise<void> => {
    const score = await stsbDevSpearman(encode, stsbDev, { batchSize: c.train.evalBatchSize });
    const better = state.bestScore === null || score > state.bestScore;
    if (better) {
      state.bestScore = score;
      state.bestStep = state.step;
    }
    state.elapsedSeconds = (Date.now() - startedAt) / 1000;
    await metricsFile.write(JSON.stringify({ step: state.step, epoch: state.epoch, stsbDev: score, best: better }) + '\n');
    await saveCheckpoint({ runDir, model, tokenizer, head, optimizer, state: { ...state, data: batches.state() }, links: better ? ['last', 'best'] : ['last'] });
    if (opts.quiet !== true) log(`\nstep ${state.step}: STS-B dev ${score.toFixed(2)}${better ? ' (best)' : ` (best ${state.bestScore!.toFixed(2)} at step ${state.bestStep})`}`);
  };

  try {
    const completed = await runSteps(c, run, state, {
      stop: () => opts.stopAfter !== undefined && stepsThisProcess >= opts.stopAfter,
      afterStep: async (line) => {
        stepsThisProcess += 1;
        if (isLoggedStep(c, line)) await metricsFile.write(JSON.stringify(line) + '\n');
        opts.onStep?.(line);
        const { loss, infoNCE, ami, lr, sentencesPerSecond } = line;
        progress.tick(1, { loss, infoNCE, ...(ami === null ? {} : { ami }), lr, 'sent/s': Math.round(sentencesPerSecond) });
      },
      evaluate: evaluateAndSave,
      badStepsHint: `the last good checkpoint is in ${path.join(runDir, 'last')}`,
    });
    if (!completed) return summaryOf();
  } finally {
    await metricsFile.close();
  }
  progress.done();
  const result = summaryOf();
  if (c.train.finalEval && state.bestStep !== null) {
    const best = await loadPretrained(path.join(runDir, 'best'));
    result.final = await evaluateSts(
      (s) => embed(best.model, best.tokenizer, s, { batchSize: c.train.evalBatchSize, pooler: 'cls_before_pooler' }),
      { dataDir: c.data.senteval, tasks: STS_TEST_TASKS, batchSize: c.train.evalBatchSize, silent: opts.quiet },
    );
    best.model.dispose();
    await writeFileAtomic(path.join(runDir, EVAL_FILE), JSON.stringify(stsReportJson(result.final, { model: path.join(runDir, 'best') }), null, 2) + '\n');
    log(formatStsTable(result.final));
  }
  await writeFileAtomic(path.join(runDir, SUMMARY_FILE), JSON.stringify({ ...result, final: undefined, finalAvg: result.final?.average ?? null,
    totalSteps, elapsedSeconds: (Date.now() - startedAt) / 1000, backend: selection.name }, null, 2) + '\n');
  await writeCurves(runDir);
  log(`done: ${state.step} steps; best STS-B dev ${state.bestScore?.toFixed(2) ?? '-'} at step ${state.bestStep ?? '-'}` +
    `${state.badStepsTotal > 0 ? `; ${state.badStepsTotal} non-finite steps skipped` : ''}; run in ${runDir}`);
  run.dispose();
  model.dispose();
  return result;

  function summaryOf(): TrainResult {
    return { runDir, steps: state.step, bestStep: state.bestStep, bestScore: state.bestScore, badSteps: state.badStepsTotal };
  }
}

/** Drops metrics lines past `step` (they belong to steps the resumed run will redo). */
async function truncateMetrics(file: string, step: number): Promise<void> {
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  const keep = text.split('\n').filter((l) => l.trim() !== '' && (JSON.parse(l) as { step: number }).step <= step);
  await writeFileAtomic(file, keep.map((l) => l + '\n').join(''));
}

/** Reads metrics.jsonl and writes loss.svg and stsb-dev.svg. */
export async function writeCurves(runDir: string): Promise<string[]> {
  const text = await fs.readFile(path.join(runDir, METRICS_FILE), 'utf8');
  const lossPts: Point[] = [];
  const devPts: Point[] = [];
  for (const l of text.split('\n')) {
    if (l.trim() === '') continue;
    const m = JSON.parse(l) as Partial<MetricsLine> & { stsbDev?: number; step: number };
    if (m.stsbDev !== undefined) devPts.push({ step: m.step, value: m.stsbDev, series: 'STS-B dev' });
    else if (m.skipped !== true && m.loss !== undefined) {
      lossPts.push({ step: m.step, value: m.loss, series: 'loss' }, { step: m.step, value: m.infoNCE!, series: 'InfoNCE' });
      if (m.ami !== null && m.ami !== undefined) lossPts.push({ step: m.step, value: m.ami, series: 'AMI' });
    }
  }
  const files: string[] = [];
  const write = async (name: string, svg: string) => {
    await writeFileAtomic(path.join(runDir, name), svg);
    files.push(name);
  };
  await write('loss.svg', await renderSvg(lineChartSpec('Training loss', 'loss', lossPts)));
  await write('stsb-dev.svg', await renderSvg(lineChartSpec('STS-B dev Spearman', 'Spearman x 100', devPts)));
  return files;
}
