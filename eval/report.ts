/**
 * Presentation of an STS evaluation: the table in the published layout (STS12 | ... | SICK-R | Avg, Spearman x 100
 * with two decimals), the per-subset detail, the throughput line and the JSON report.
 *
 * The JSON report is keyed like SentEval's results and the project's reference files (`STS12`, `STSBenchmark`,
 * `SICKRelatedness`, `STSBenchmark-dev`, `avg7`), so a run can be diffed against `senteval_reference.json`.
 */
import { STS_TEST_TASKS, type StsEvaluation, type StsTaskResult } from './sts.js';

/** Decimals of the published tables. */
export const TABLE_DECIMALS = 2;
/** Column title of the average. */
export const AVG_LABEL = 'Avg';

function fmt(x: number | null): string {
  return x === null || !Number.isFinite(x) ? 'n/a' : x.toFixed(TABLE_DECIMALS);
}

/** A Markdown table, columns padded to equal width (readable in a terminal, pasteable in a README). */
function markdownTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  const line = (cells: string[]): string => `| ${cells.map((x, c) => x.padStart(widths[c]!)).join(' | ')} |`;
  const rule = `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}

/**
 * The published table: one column per task evaluated, in table order, then `Avg` (over the test tasks evaluated;
 * marked `Avg (k of 7)` when not all 7 were), then `STS-B dev` when it was evaluated.
 */
export function formatStsTable(ev: StsEvaluation): string {
  const tests = ev.tasks.filter((t) => STS_TEST_TASKS.includes(t.task));
  const others = ev.tasks.filter((t) => !STS_TEST_TASKS.includes(t.task));
  const header: string[] = [];
  const row: string[] = [];
  for (const t of tests) {
    header.push(t.label);
    row.push(fmt(t.spearman));
  }
  if (tests.length > 0) {
    header.push(tests.length === STS_TEST_TASKS.length ? AVG_LABEL : `${AVG_LABEL} (${tests.length} of ${STS_TEST_TASKS.length})`);
    row.push(fmt(ev.average));
  }
  for (const t of others) {
    header.push(t.label);
    row.push(fmt(t.spearman));
  }
  return markdownTable(header, [row]);
}

/** Per-subset detail: task, subset, Spearman, Pearson (x 100), pairs; each task's total row first. */
export function formatStsDetail(ev: StsEvaluation): string {
  const rows: string[][] = [];
  for (const t of ev.tasks) {
    rows.push([t.label, t.subsets.length > 1 ? 'all' : t.subsets[0]!.name, fmt(t.spearman), fmt(t.pearson), String(t.n)]);
    if (t.subsets.length > 1) for (const s of t.subsets) rows.push(['', s.name, fmt(s.spearman), fmt(s.pearson), String(s.n)]);
  }
  return markdownTable(['task', 'subset', 'spearman', 'pearson', 'pairs'], rows);
}

/** One line: distinct sentences encoded, time and sentences per second. */
export function formatThroughput(ev: StsEvaluation): string {
  return `encoded ${ev.sentences} distinct sentences in ${ev.seconds.toFixed(1)} s: ` +
    `${ev.sentencesPerSecond.toFixed(1)} sentences/s`;
}

/** JSON form of one task. */
export interface StsTaskJson {
  task: string;
  label: string;
  /** Spearman x 100 (for STS12-16: all subsets concatenated). */
  spearman: number | null;
  pearson: number | null;
  n: number;
  sentences: number;
  seconds: number;
  subsets: Record<string, { spearman: number | null; pearson: number | null; n: number }>;
}

/** The JSON report: `meta` (model, pooler, backend, ...) and results keyed by SentEval task name. */
export interface StsReportJson {
  protocol: string;
  scale: string;
  meta: Record<string, string | number | boolean | null>;
  results: Record<string, StsTaskJson>;
  /** Mean Spearman of the 7 test tasks; null unless all 7 were evaluated. */
  avg7: number | null;
  /** Mean Spearman over the test tasks evaluated, and which they were. */
  average: number | null;
  averageOver: string[];
  throughput: { sentences: number; seconds: number; sentencesPerSecond: number };
}

/** JSON cannot hold NaN: undefined correlations become null. */
function num(x: number | null): number | null {
  return x === null || !Number.isFinite(x) ? null : x;
}

function taskJson(t: StsTaskResult): StsTaskJson {
  return {
    task: t.task,
    label: t.label,
    spearman: num(t.spearman),
    pearson: num(t.pearson),
    n: t.n,
    sentences: t.sentences,
    seconds: t.seconds,
    subsets: Object.fromEntries(t.subsets.map((s) => [s.name, { spearman: num(s.spearman), pearson: num(s.pearson), n: s.n }])),
  };
}

/** Builds the JSON report of an evaluation. */
export function stsReportJson(ev: StsEvaluation, meta: StsReportJson['meta'] = {}): StsReportJson {
  const all7 = ev.averageOver.length === STS_TEST_TASKS.length;
  return {
    protocol: 'SentEval STS as in SimCSE/miCSE: cosine of sentence embeddings vs gold; STS12-16 "all" (subsets concatenated); STS-B and SICK-R test splits',
    scale: 'correlation x 100',
    meta,
    results: Object.fromEntries(ev.tasks.map((t) => [t.senteval, taskJson(t)])),
    avg7: all7 ? num(ev.average) : null,
    average: num(ev.average),
    averageOver: ev.averageOver,
    throughput: { sentences: ev.sentences, seconds: ev.seconds, sentencesPerSecond: ev.sentencesPerSecond },
  };
}
