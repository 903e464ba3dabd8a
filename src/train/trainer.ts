/**
 * The training run on files: the loop of loop.ts (batch -> miCSE loss -> clipped AdamW step) with STS-B dev
 * selection (selection.ts), atomic checkpoints, exact resume, metrics.jsonl, progress and curves.
 *
 * Reproducibility: every random choice of step s derives from (train.seed, s) (loop.ts), so a run resumed from a
 * checkpoint replays exactly what the uninterrupted run would have done (bitwise on the cpu, wasm and webgpu
 * backends: test/train.test.ts, test/webgpu.test.ts).
 */
import { promises as fs, writeSync } from 'node:fs';
import path from 'node:path';
import { evaluateSts, loadStsTask, loadStsTasks, stsbDevSpearman, STS_TEST_TASKS, type StsEvaluation } from '../../eval/sts.js';
import { formatStsTable, stsReportJson } from '../../eval/report.js';
import { checkSentenceCount, sentencesLeftOut } from '../data/batchLimits.js';
import type { BatchIteratorState } from '../data/batches.js';
import { BertTokenizer } from '../data/tokenizer.js';
import { environmentError, UserError } from '../errors.js';
import { faultPoint } from '../faultPoints.js';
import { exists, PidLock, writeFileAtomic } from '../fsutil.js';
import { describeSelection, type BackendSelection } from '../model/backend.js';
import { BertModel, packQkv } from '../model/bert.js';
import { parseBertConfig } from '../model/config.js';
import { embed } from '../model/embed.js';
import { loadPretrained } from '../model/pretrained.js';
import { tf } from '../model/tf.js';
import { createProgress } from '../progress.js';
import { CHECKPOINTS_DIR, clearUnpublishedRun, readTrainingState, recoverRunDir, saveCheckpoint, type TrainerState } from './checkpoint.js';
import { readTrainingData, runDirectory, trainingFile } from './plan.js';
import { isLoggedStep, runSteps, startTraining, type MetricsLine } from './loop.js';
import { explainAbort, selectTrainingBackend, wasmHeapShortfall } from './step.js';
import { checkModelFits, configToYaml, type TrainConfig } from './config.js';
import { resumeConfigChanges } from './runConfig.js';
import { lineChartSpec, lossChartSpec, renderSvg, type Point } from './plots.js';
import { CONFIG_FILE, DEV_PLOT, EVAL_FILE, LOCK_FILE, LOSS_PLOT, METRICS_FILE, SUBSET_MANIFEST_FILE, SUMMARY_FILE } from './runFiles.js';

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

async function buildModel(c: TrainConfig, resumeDir: string | null): Promise<{ model: BertModel; tokenizer: BertTokenizer }> {
  const dropout = {
    ...(c.model.hiddenDropout !== null ? { hiddenDropoutProb: c.model.hiddenDropout } : {}),
    ...(c.model.attentionDropout !== null ? { attentionProbsDropoutProb: c.model.attentionDropout } : {}),
  };
  if (resumeDir !== null || c.model.init !== 'random') {
    const { model, tokenizer } = await loadPretrained(resumeDir ?? c.model.init,
      { ...dropout, checkConfig: (config, file) => checkModelFits(c, config, file, 'config') });
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

/**
 * Trains per `config` (or resumes the run in config.train.output), holding the run directory's lock (LOCK_FILE):
 * a second training into the same directory is refused while this one runs.
 */
export async function train(config: TrainConfig, opts: TrainOptions = {}): Promise<TrainResult> {
  const lock = new PidLock(path.join(runDirectory(config), LOCK_FILE), 'training');
  try {
    return await trainLocked(config, opts, lock);
  } finally {
    await lock.release();
  }
}

/** What a run writes into its directory besides last/ and best/ (a fresh run replaces these). */
const RUN_FILES = [CONFIG_FILE, SUBSET_MANIFEST_FILE, METRICS_FILE, SUMMARY_FILE, EVAL_FILE, CHECKPOINTS_DIR, LOSS_PLOT, DEV_PLOT];

/**
 * Throws unless a fresh run may start in `runDir`: a run with a published checkpoint is resumed, not overwritten,
 * and a directory holding files of a run's names (config.yaml, checkpoints/, ...) is replaced only when it is a run
 * that died before its first checkpoint (it has the config.yaml and subset-manifest.json a run starts with): a
 * user's own config.yaml or checkpoints/ of other runs there (train.output '.') would be lost. Other files stay.
 */
async function refuseExistingRun(runDir: string): Promise<void> {
  if ((await exists(path.join(runDir, 'last'))) || (await exists(path.join(runDir, 'best')))) {
    throw new UserError(`${runDir}: already holds a run; resume it with --resume ${runDir}, or set train.output to a new directory`);
  }
  const entries = new Set(await fs.readdir(runDir).catch(() => [] as string[]));
  const ours = RUN_FILES.filter((f) => entries.has(f));
  if (ours.length > 0 && !(entries.has(CONFIG_FILE) && entries.has(SUBSET_MANIFEST_FILE))) {
    throw new UserError(`${runDir}: holds ${ours.join(', ')} but no run of micse train (no ${CONFIG_FILE} with ${SUBSET_MANIFEST_FILE}), ` +
      'which a run would replace; set train.output to a new or empty directory. Nothing was written');
  }
}

/** The body of `train`; takes `lock` before it reads or writes the run directory's state. */
async function trainLocked(config: TrainConfig, opts: TrainOptions, lock: PidLock): Promise<TrainResult> {
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const c = config;
  const runDir = runDirectory(c);
  const resuming = opts.resume === true;
  if (resuming && (await exists(runDir))) await lock.take();
  const prior = resuming ? await readTrainingState(runDir) : null;
  if (resuming && prior === null) throw new UserError(`${runDir}: no checkpoint to resume from (expected ${path.join(runDir, 'last')})`);
  if (!resuming) await refuseExistingRun(runDir);
  const changed = prior !== null ? await resumeConfigChanges(runDir, c) : [];
  if (prior !== null) await recoverRunDir(runDir, prior.state);

  // Everything that can fail on the user's input is checked before the run directory is created. The STS-B dev
  // split is read once here and scored at every evaluation; the test tasks of the final evaluation are read here too.
  const stsbDev = loadStsTask(c.data.senteval, 'stsb-dev');
  const finalData = c.train.finalEval ? loadStsTasks(c.data.senteval, STS_TEST_TASKS) : null;
  const data = await readTrainingData(c);
  checkSentenceCount(data.sentences.length, `${trainingFile(c)}: `,
    c.data.count !== null ? ` (data.count ${c.data.count})` : c.data.fraction !== null ? ` (data.fraction ${c.data.fraction})` : '');
  const { selection, model, tokenizer, warning } = await selectBackendAndModel(c, prior?.dir ?? null, data.sentences.length);
  log(describeSelection(selection));
  if (warning !== null) log(warning);
  try {
    // A checkpoint's config.json was checked as buildModel read it; a random init's model is built from model.config.
    if (prior === null && c.model.init === 'random') checkModelFits(c, model.config, null, 'config');
  } catch (err) {
    model.dispose();
    throw err;
  }

  await fs.mkdir(runDir, { recursive: true });
  if (!resuming) {
    await lock.take();
    await refuseExistingRun(runDir);
    await clearUnpublishedRun(runDir, [METRICS_FILE]);
    await writeFileAtomic(path.join(runDir, CONFIG_FILE), configToYaml(c));
    await writeFileAtomic(path.join(runDir, SUBSET_MANIFEST_FILE), JSON.stringify(data.manifest, null, 2) + '\n');
  }

  const run = startTraining(c, model, tokenizer, data.sentences, prior?.state.data as BatchIteratorState | undefined, prior?.state.lossScale);
  const { head, optimizer, batches, totalSteps } = run;

  let state: TrainerState = {
    step: 0, totalSteps, epoch: 0, data: batches.state(), bestScore: null, bestStep: null, badStepsInRow: 0, badStepsTotal: 0, elapsedSeconds: 0,
  };
  if (prior !== null) {
    state = { ...prior.state, totalSteps };
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
    await keepMetricsThrough(path.join(runDir, METRICS_FILE), state.step);
    if (changed.length > 0) {
      await writeFileAtomic(path.join(runDir, CONFIG_FILE), configToYaml(c));
      log(`resume changes ${changed.map((d) => `${d.key} ${d.from} -> ${d.to}`).join(', ')} (saved in ${path.join(runDir, CONFIG_FILE)})`);
    }
    log(`resuming ${runDir} at step ${state.step}/${totalSteps}`);
  }
  log(`training on ${data.sentences.length} sentences, ${batches.stepsPerEpoch} steps/epoch, ${totalSteps} steps, ` +
    `${c.objective.style}${c.objective.style === 'micse' ? ` (lambda ${c.objective.lambda}, layers ${c.objective.minLayer}..${c.objective.maxLayer - 1})` : ''}`);
  if (!c.data.dropLast && sentencesLeftOut(data.sentences.length, c.train.batchSize) > 0) {
    log(`the last batch of each epoch would hold 1 sentence (${data.sentences.length} = 1 mod train.batchSize ${c.train.batchSize}), ` +
      `too few for InfoNCE: it is left out, so each epoch skips one sentence, a different one each epoch`);
  }

  /** Embeds for one of the run's evaluations (`what`); an out-of-memory error names it and train.evalBatchSize. */
  const evalEncoder = (m: BertModel, t: BertTokenizer, what: string) => async (s: string[]): Promise<number[][]> => {
    try {
      return await embed(m, t, s, { batchSize: c.train.evalBatchSize, pooler: 'cls_before_pooler' });
    } catch (err) {
      throw explainAbort(err, `${what} (train.evalBatchSize ${c.train.evalBatchSize} sentences a batch)`, 'train.evalBatchSize');
    }
  };
  const encode = evalEncoder(model, tokenizer, 'the STS-B dev evaluation');
  const metricsFile = await fs.open(path.join(runDir, METRICS_FILE), 'a');
  /** Appends one line in one write (a kill can tear only the last line, which a resume drops). */
  const appendMetrics = async (entry: object): Promise<void> => {
    const text = JSON.stringify(entry) + '\n';
    faultPoint('metrics:torn-line', () => writeSync(metricsFile.fd, text.slice(0, Math.ceil(text.length / 2))));
    await metricsFile.write(text).catch((err: unknown) => { throw environmentError(err, path.join(runDir, METRICS_FILE), 'write') ?? err; });
  };
  const progress = createProgress({ label: 'train', total: totalSteps, unit: 'step', silent: opts.quiet });
  if (state.step > 0) progress.tick(state.step);
  const startedAt = Date.now() - state.elapsedSeconds * 1000;
  let stepsThisProcess = 0;

  /** Scores STS-B dev; a `candidate` evaluation that beats the best becomes it. Writes a checkpoint either way. */
  const evaluateAndSave = async (candidate: boolean): Promise<void> => {
    const score = await stsbDevSpearman(encode, stsbDev, { batchSize: c.train.evalBatchSize });
    const better = candidate && (state.bestScore === null || score > state.bestScore);
    if (better) {
      state.bestScore = score;
      state.bestStep = state.step;
    }
    state.elapsedSeconds = (Date.now() - startedAt) / 1000;
    await appendMetrics({ step: state.step, epoch: state.epoch, stsbDev: score, best: better });
    await saveCheckpoint({ runDir, model, tokenizer, head, optimizer, state: { ...state, data: batches.state(), ...(run.scaler === null ? {} : { lossScale: run.scaler.state() }) }, links: better ? ['last', 'best'] : ['last'] });
    if (opts.quiet !== true) {
      const best = state.bestScore === null ? 'no best yet' : `best ${state.bestScore.toFixed(2)} at step ${state.bestStep}`;
      log(`\nstep ${state.step}: STS-B dev ${score.toFixed(2)}${better ? ' (best)' : ` (${candidate ? '' : 'not a selection step; '}${best})`}`);
    }
  };
  /** A checkpoint without an evaluation (`last` only). */
  const saveLast = async (): Promise<void> => {
    state.elapsedSeconds = (Date.now() - startedAt) / 1000;
    await saveCheckpoint({ runDir, model, tokenizer, head, optimizer, state: { ...state, data: batches.state(), ...(run.scaler === null ? {} : { lossScale: run.scaler.state() }) }, links: ['last'] });
  };

  try {
    // STS-B dev before any update, so the curve shows where training started. It is not a selection candidate (as in
    // the HF Trainer, which never selects step 0): best/ is always a trained checkpoint, and no checkpoint is written
    // here. A resumed run starts past step 0 and keeps this line from metrics.jsonl.
    if (!resuming) {
      const score = await stsbDevSpearman(encode, stsbDev, { batchSize: c.train.evalBatchSize });
      await appendMetrics({ step: 0, epoch: 0, stsbDev: score, best: false });
      if (opts.quiet !== true) log(`step 0: STS-B dev ${score.toFixed(2)} (before training; not a best-checkpoint candidate)`);
    }
    const completed = await runSteps(c, run, state, {
      stop: () => opts.stopAfter !== undefined && stepsThisProcess >= opts.stopAfter,
      afterStep: async (line) => {
        stepsThisProcess += 1;
        if (isLoggedStep(c, line)) await appendMetrics(line);
        opts.onStep?.(line);
        const { loss, infoNCE, ami, lr, sentencesPerSecond } = line;
        progress.tick(1, { loss, infoNCE, ...(ami === null ? {} : { ami }), lr, 'sent/s': Math.round(sentencesPerSecond) });
      },
      evaluate: evaluateAndSave,
      checkpoint: saveLast,
      badStepsHint: `the last good checkpoint is in ${path.join(runDir, 'last')}`,
    });
    if (!completed) return summaryOf();
  } finally {
    await metricsFile.close();
  }
  progress.done();
  const result = summaryOf();
  if (state.bestStep === null) {
    log(`no evaluation at a multiple of train.saveSteps (${c.train.saveSteps}) among ${totalSteps} steps, so there is no best checkpoint ` +
      '(the authors\' Trainer would keep the initial model); lower train.saveSteps or use train.selection every-eval');
  }
  if (finalData !== null && state.bestStep !== null) {
    const best = await loadPretrained(path.join(runDir, 'best'));
    result.final = await evaluateSts(
      evalEncoder(best.model, best.tokenizer, 'the final STS evaluation'),
      { data: finalData, batchSize: c.train.evalBatchSize, silent: opts.quiet },
    );
    best.model.dispose();
    await writeFileAtomic(path.join(runDir, EVAL_FILE), JSON.stringify(stsReportJson(result.final, { model: path.join(runDir, 'best') }), null, 2) + '\n');
    log(formatStsTable(result.final));
  }
  const replay = run.step.replayStats();
  await writeFileAtomic(path.join(runDir, SUMMARY_FILE), JSON.stringify({ ...result, final: undefined, finalAvg: result.final?.average ?? null,
    totalSteps, elapsedSeconds: (Date.now() - startedAt) / 1000, backend: selection.name,
    ...(replay === null ? {} : { replayedSteps: replay.replayed }) }, null, 2) + '\n');
  await writeCurves(runDir, Math.min(c.train.batchSize, data.sentences.length));
  log(`done: ${state.step} steps; best STS-B dev ${state.bestScore?.toFixed(2) ?? '-'} at step ${state.bestStep ?? '-'}` +
    `${state.badStepsTotal > 0 ? `; ${state.badStepsTotal} non-finite steps skipped` : ''}` +
    `${replay === null ? '' : `; ${replay.replayed} steps replayed (train.webgpuReplay)`}; run in ${runDir}`);
  run.dispose();
  model.dispose();
  return result;

  function summaryOf(): TrainResult {
    return { runDir, steps: state.step, bestStep: state.bestStep, bestScore: state.bestScore, badSteps: state.badStepsTotal };
  }
}

/**
 * Keeps the metrics lines of steps <= `step` (later ones belong to steps the resumed run redoes) and drops a torn
 * last line (no newline: the process was killed while writing it). Rewritten atomically. A line that is complete
 * but not JSON with a step is a UserError naming the file and line.
 */
async function keepMetricsThrough(file: string, step: number): Promise<void> {
  const text = await fs.readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return '';
    throw err;
  });
  const lines = text.split('\n').slice(0, -1); // the part after the last newline is empty or torn
  const keep = lines.filter((l, i) => {
    if (l.trim() === '') return false;
    let entry: unknown;
    try {
      entry = JSON.parse(l);
    } catch (err) {
      throw new UserError(`${file}:${i + 1}: not a JSON line (${(err as Error).message})`);
    }
    const s = (entry as { step?: unknown } | null)?.step;
    if (typeof s !== 'number') throw new UserError(`${file}:${i + 1}: no "step" number`);
    return s <= step;
  });
  await writeFileAtomic(file, keep.map((l) => l + '\n').join(''));
}

/** Reads metrics.jsonl and writes loss.svg (with the chance line ln(batchSize)) and stsb-dev.svg. */
export async function writeCurves(runDir: string, batchSize: number): Promise<string[]> {
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
  await write(LOSS_PLOT, await renderSvg(lossChartSpec(lossPts, batchSize)));
  await write(DEV_PLOT, await renderSvg(lineChartSpec('STS-B dev Spearman', 'Spearman x 100', devPts)));
  return files;
}
