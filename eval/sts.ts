/**
 * STS task runner with the SentEval protocol as SimCSE and miCSE report it: cosine similarity of the two sentence
 * embeddings against the gold score, Spearman x 100.
 *
 * - STS12-16: the "all" setting: the cosine scores of every subset of the year concatenated, ONE Spearman (per
 *   subset numbers are reported too).
 * - STS-B: the test split; SICK-R: the test split (SICK_test_annotated.txt). `stsb-dev` (STS-B dev split) is the
 *   model-selection score used during training and is not part of the average.
 * - Average: mean of the unrounded scores of the 7 test tasks (STS12-16, STS-B, SICK-R).
 *
 * The runner is independent of the model: it takes an `encode` function that maps sentences to embeddings (in
 * inference mode). Each task's distinct sentences are encoded once, longest first, `batchSize` per call.
 */
import { UserError } from '../src/errors.js';
import { createProgress } from '../src/progress.js';
import { cosine, pearson, spearman } from './metrics.js';
import {
  pySplitWhitespace,
  readSickRelatedness,
  readStsBenchmark,
  readStsYear,
  type StsSubsetData,
  type StsYear,
} from './senteval.js';

/** Task names accepted by `--tasks` and `evaluateSts`, in table order. */
export const STS_TASK_NAMES = ['sts12', 'sts13', 'sts14', 'sts15', 'sts16', 'stsb', 'sickr', 'stsb-dev'] as const;
export type StsTaskName = (typeof STS_TASK_NAMES)[number];
/** The 7 tasks of the published table, averaged into "Avg". */
export const STS_TEST_TASKS: readonly StsTaskName[] = ['sts12', 'sts13', 'sts14', 'sts15', 'sts16', 'stsb', 'sickr'];
/** `--tasks all` means the 7 test tasks. */
export const ALL_TASKS_ALIAS = 'all';
/** SentEval's and SimCSE's evaluation batch size. */
export const DEFAULT_EVAL_BATCH_SIZE = 128;
/** Correlations are reported as points: coefficient x 100, as in SentEval tables and the reference JSON. */
export const POINTS_PER_UNIT = 100;

/** How each task is named in the published table and in SentEval's results (the reference JSON's keys). */
export const STS_TASK_INFO: Readonly<Record<StsTaskName, { label: string; senteval: string }>> = {
  sts12: { label: 'STS12', senteval: 'STS12' },
  sts13: { label: 'STS13', senteval: 'STS13' },
  sts14: { label: 'STS14', senteval: 'STS14' },
  sts15: { label: 'STS15', senteval: 'STS15' },
  sts16: { label: 'STS16', senteval: 'STS16' },
  stsb: { label: 'STS-B', senteval: 'STSBenchmark' },
  sickr: { label: 'SICK-R', senteval: 'SICKRelatedness' },
  'stsb-dev': { label: 'STS-B dev', senteval: 'STSBenchmark-dev' },
};

const STS_YEAR_OF: Partial<Record<StsTaskName, StsYear>> = {
  sts12: 'STS12',
  sts13: 'STS13',
  sts14: 'STS14',
  sts15: 'STS15',
  sts16: 'STS16',
};

/**
 * Parses a task list: comma-separated names (or an array of them), case-insensitive, `all` for the 7 test tasks.
 * Returns them de-duplicated in table order. An unknown name is a UserError listing the valid ones.
 */
export function parseStsTasks(spec: string | readonly string[]): StsTaskName[] {
  const parts = (typeof spec === 'string' ? [spec] : spec)
    .flatMap((s) => s.split(','))
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== '');
  const valid = `valid tasks: ${STS_TASK_NAMES.join(', ')} (or '${ALL_TASKS_ALIAS}' for the 7 test tasks)`;
  if (parts.length === 0) throw new UserError(`no STS task named; ${valid}`);
  const chosen = new Set<StsTaskName>();
  for (const p of parts) {
    if (p === ALL_TASKS_ALIAS) STS_TEST_TASKS.forEach((t) => chosen.add(t));
    else if ((STS_TASK_NAMES as readonly string[]).includes(p)) chosen.add(p as StsTaskName);
    else throw new UserError(`unknown STS task '${p}'; ${valid}`);
  }
  return STS_TASK_NAMES.filter((t) => chosen.has(t));
}

/** A task's pairs, split in subsets (one subset for STS-B and SICK-R). */
export interface StsTaskData {
  task: StsTaskName;
  subsets: StsSubsetData[];
}

/** Reads one task from the SentEval data root; a missing file is a UserError naming it. */
export function loadStsTask(dataDir: string, task: StsTaskName): StsTaskData {
  const year = STS_YEAR_OF[task];
  if (year !== undefined) return { task, subsets: readStsYear(dataDir, year) };
  switch (task) {
    case 'stsb':
      return { task, subsets: [readStsBenchmark(dataDir, 'test')] };
    case 'stsb-dev':
      return { task, subsets: [readStsBenchmark(dataDir, 'dev')] };
    case 'sickr':
      return { task, subsets: [readSickRelatedness(dataDir, 'test')] };
    default:
      throw new Error(`no reader for task ${task}`);
  }
}

/** Reads several tasks (all files are read before any encoding, so a missing file fails fast). */
export function loadStsTasks(dataDir: string, tasks: readonly StsTaskName[] = STS_TEST_TASKS): StsTaskData[] {
  return tasks.map((t) => loadStsTask(dataDir, t));
}

/**
 * Maps sentences to embeddings, one vector per sentence in input order. It must run the model in inference mode
 * (no dropout). For miCSE/SimCSE models that is `embed(model, tokenizer, s, { pooler: 'cls_before_pooler' })`.
 */
export type SentenceEncoder = (sentences: string[]) => Promise<number[][]>;

export interface EvaluateStsOptions {
  /** SentEval data root (holding `STS/` and `SICK/`). Required unless `data` is given. */
  dataDir?: string;
  /** Pre-loaded tasks (from `loadStsTasks`); overrides `dataDir` and `tasks`. */
  data?: readonly StsTaskData[];
  /** Tasks to run (default: the 7 test tasks). */
  tasks?: readonly StsTaskName[];
  /** Sentences per `encode` call (default 128, SentEval's batch size). */
  batchSize?: number;
  /** No progress lines. */
  silent?: boolean;
  /** Where progress goes (default stderr). */
  stream?: NodeJS.WriteStream;
}

/** Scores of one subset (x 100). */
export interface StsSubsetResult {
  name: string;
  spearman: number;
  pearson: number;
  /** Pairs scored. */
  n: number;
}

/** Scores of one task (x 100); for STS12-16 `spearman` and `pearson` are the "all" (concatenated) values. */
export interface StsTaskResult {
  task: StsTaskName;
  /** Column name in the published table (`STS-B`). */
  label: string;
  /** SentEval's task name (`STSBenchmark`), the key of the reference JSON. */
  senteval: string;
  spearman: number;
  pearson: number;
  /** Pairs scored. */
  n: number;
  subsets: StsSubsetResult[];
  /** Distinct sentences encoded. */
  sentences: number;
  /** Wall time of the task (encoding and scoring). */
  seconds: number;
}

export interface StsEvaluation {
  tasks: StsTaskResult[];
  /** Mean Spearman (x 100) over the test tasks evaluated (`averageOver`); null when none was. */
  average: number | null;
  /** The test tasks in `average` (all 7 for the published "Avg"). */
  averageOver: StsTaskName[];
  /** Distinct sentences encoded, over all tasks. */
  sentences: number;
  seconds: number;
  sentencesPerSecond: number;
}

/** Encodes `sentences` (distinct) longest first, `batchSize` per call; returns a sentence -> vector map. */
async function encodeDistinct(
  encode: SentenceEncoder,
  sentences: string[],
  batchSize: number,
  tick: (n: number) => void,
): Promise<Map<string, number[]>> {
  const order = sentences
    .map((s, i) => ({ s, i, len: pySplitWhitespace(s).length }))
    .sort((a, b) => b.len - a.len || a.i - b.i)
    .map((e) => e.s);
  const vectors = new Map<string, number[]>();
  let dim: number | undefined;
  for (let start = 0; start < order.length; start += batchSize) {
    const chunk = order.slice(start, start + batchSize);
    const out = await encode(chunk);
    if (out.length !== chunk.length) throw new Error(`encode returned ${out.length} vectors for ${chunk.length} sentences`);
    out.forEach((v, k) => {
      dim ??= v.length;
      if (v.length !== dim) throw new Error(`encode returned vectors of sizes ${dim} and ${v.length}`);
      vectors.set(chunk[k]!, v);
    });
    tick(chunk.length);
  }
  return vectors;
}

/** Spearman and Pearson (x 100) of system scores against gold. */
function correlate(sys: number[], gold: number[]): { spearman: number; pearson: number } {
  return { spearman: spearman(sys, gold) * POINTS_PER_UNIT, pearson: pearson(sys, gold) * POINTS_PER_UNIT };
}

/** Encodes and scores one task. */
async function runTask(encode: SentenceEncoder, data: StsTaskData, batchSize: number, opts: EvaluateStsOptions): Promise<StsTaskResult> {
  const t0 = performance.now();
  const { label, senteval } = STS_TASK_INFO[data.task];
  const distinct = [...new Set(data.subsets.flatMap((s) => [...s.s1, ...s.s2]))];
  const progress = createProgress({ total: distinct.length, label, unit: 'sent', silent: opts.silent, stream: opts.stream });
  const vectors = await encodeDistinct(encode, distinct, batchSize, (n) => progress.tick(n));
  const allSys: number[] = [];
  const allGold: number[] = [];
  const subsets = data.subsets.map((sub): StsSubsetResult => {
    const sys = sub.s1.map((s, i) => cosine(vectors.get(s)!, vectors.get(sub.s2[i]!)!));
    allSys.push(...sys);
    allGold.push(...sub.gold);
    return { name: sub.name, ...correlate(sys, sub.gold), n: sys.length };
  });
  const all = correlate(allSys, allGold);
  progress.done({ spearman: all.spearman });
  return {
    task: data.task,
    label,
    senteval,
    ...all,
    n: allSys.length,
    subsets,
    sentences: distinct.length,
    seconds: (performance.now() - t0) / 1000,
  };
}

/**
 * Runs the STS tasks with `encode` and returns per-task and per-subset Spearman/Pearson (x 100), pair counts, the
 * average over the test tasks and the throughput. All task files are read before encoding starts.
 */
export async function evaluateSts(encode: SentenceEncoder, opts: EvaluateStsOptions): Promise<StsEvaluation> {
  const batchSize = opts.batchSize ?? DEFAULT_EVAL_BATCH_SIZE;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new UserError(`batch size must be a positive integer, got ${batchSize}`);
  let data: readonly StsTaskData[];
  if (opts.data !== undefined) data = opts.data;
  else if (opts.dataDir !== undefined) data = loadStsTasks(opts.dataDir, opts.tasks ?? STS_TEST_TASKS);
  else throw new Error('evaluateSts needs `dataDir` or `data`');
  const t0 = performance.now();
  const tasks: StsTaskResult[] = [];
  for (const d of data) tasks.push(await runTask(encode, d, batchSize, opts));
  const seconds = (performance.now() - t0) / 1000;
  const tested = tasks.filter((t) => STS_TEST_TASKS.includes(t.task));
  const sentences = tasks.reduce((s, t) => s + t.sentences, 0);
  return {
    tasks,
    average: tested.length > 0 ? tested.reduce((s, t) => s + t.spearman, 0) / tested.length : null,
    averageOver: tested.map((t) => t.task),
    sentences,
    seconds,
    sentencesPerSecond: seconds > 0 ? sentences / seconds : 0,
  };
}

/**
 * STS-B dev Spearman (x 100), the model-selection score of SimCSE/miCSE training. `encode` must run the model in
 * inference mode. `source` is the SentEval data root, or the split pre-loaded once with
 * `loadStsTask(dataDir, 'stsb-dev')` (a trainer evaluating every few hundred steps need not re-read the file).
 * Silent by default (the trainer prints its own line).
 */
export async function stsbDevSpearman(
  encode: SentenceEncoder,
  source: string | StsTaskData,
  opts: Pick<EvaluateStsOptions, 'batchSize' | 'silent' | 'stream'> = {},
): Promise<number> {
  const base = { ...opts, silent: opts.silent ?? true };
  if (typeof source !== 'string' && source.task !== 'stsb-dev') throw new Error(`stsbDevSpearman got task '${source.task}' data`);
  const ev = await evaluateSts(encode, typeof source === 'string' ? { ...base, dataDir: source, tasks: ['stsb-dev'] } : { ...base, data: [source] });
  return ev.tasks[0]!.spearman;
}
