/**
 * A sweep's results: per (split, objective, lambda, other non-seed grid keys), mean and spread over the seeds of
 * every STS task and their average, read from each done point's eval.json; as Markdown, CSV and a Vega-Lite SVG
 * of the STS average against the training-set size (log x), one line per series (objective, lambda, other keys),
 * error bars = +- std.
 *
 * Spread: the sample standard deviation (n - 1 in the denominator); with one seed it is undefined (empty in the
 * CSV, omitted in the table).
 */
import path from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import { STS_TASK_INFO, STS_TEST_TASKS } from '../../eval/sts.js';
import type { StsReportJson } from '../../eval/report.js';
import { firstLineOf, UserError } from '../errors.js';
import { isJsonObject, readJsonObject, writeFileAtomic } from '../fsutil.js';
import { EVAL_FILE, SUBSET_MANIFEST_FILE } from '../train/runFiles.js';
import { CHART_WIDTH, renderSvg, VEGA_LITE_SCHEMA } from '../train/plots.js';
import { SEED_KEYS, SPLIT_KEY, type GridValue } from './grid.js';
import { DONE_FILE, pointDir, pointState, readManifest, readPoint } from './point.js';

export const REPORT_MD = 'report.md';
export const REPORT_CSV = 'report.csv';
export const REPORT_SVG = 'sts-avg.svg';
/** Decimals in the Markdown table (the published tables use 2). */
export const REPORT_DECIMALS = 2;
/** Grid keys shown as their own columns (not as "other keys"). */
const FIXED_KEYS = new Set([SPLIT_KEY, 'data.fraction', 'data.count', 'objective.style', 'objective.lambda']);
const STYLE_LABEL: Readonly<Record<string, string>> = { micse: 'miCSE', simcse: 'SimCSE' };

export interface Stat {
  mean: number;
  /** Sample standard deviation; null with fewer than 2 values. */
  std: number | null;
}

export interface ReportRow {
  /** Training sentences (the subset's size from the run's subset-manifest.json). */
  sentences: number;
  fraction: number | null;
  count: number | null;
  style: string;
  /** Weight of the attention term; null for SimCSE, which has none (empty in the CSV, "-" in the table). */
  lambda: number | null;
  /** Other non-seed grid keys of the group. */
  other: Record<string, GridValue>;
  /** Points averaged (one per seed combination). */
  n: number;
  /** Seed values of the points, e.g. "48,49". */
  seeds: string[];
  /** Per task label (STS12 ... SICK-R). */
  tasks: Record<string, Stat>;
  avg: Stat;
  /** Plot line this row belongs to. */
  series: string;
}

export interface SweepReport {
  dir: string;
  /** Task labels in table order. */
  taskLabels: string[];
  otherKeys: string[];
  rows: ReportRow[];
  /** Points without a done marker (not in the table). */
  missing: { name: string; state: string }[];
}

/** Mean and sample standard deviation. */
export function meanStd(xs: readonly number[]): Stat {
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  if (xs.length < 2) return { mean, std: null };
  const v = xs.reduce((s, x) => s + (x - mean) ** 2, 0) / (xs.length - 1);
  return { mean, std: Math.sqrt(v) };
}

/** One done point: the fields of the row it is grouped into, and its own seed and scores. */
interface PointResult extends Pick<ReportRow, 'sentences' | 'fraction' | 'count' | 'style' | 'other'> {
  name: string;
  /** objective.lambda as configured (a SimCSE run carries one too, unused). */
  lambda: number;
  seed: string;
  scores: Record<string, number | null>;
  avg: number | null;
}

/**
 * Reads a file of a done point and checks it with `valid`: a UserError naming the file when it is unreadable, not
 * JSON or not `what`, saying how to run the point again.
 */
async function readPointFile<T>(file: string, what: string, valid: (raw: Record<string, unknown>) => boolean): Promise<T> {
  const hint = `the point is marked done (${DONE_FILE}); delete that marker to run it again`;
  let raw: Record<string, unknown>;
  try {
    raw = await readJsonObject(file);
  } catch (err) {
    throw new UserError(`${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? ((err as Error).cause as NodeJS.ErrnoException | undefined)?.code ?? firstLineOf(err)}); ${hint}`, { cause: err });
  }
  if (!valid(raw)) throw new UserError(`${file}: not ${what}; ${hint}`);
  return raw as unknown as T;
}

/** Collects the done points of the sweep in `dir` and aggregates them over seeds. */
export async function buildSweepReport(dir: string): Promise<SweepReport> {
  const manifest = await readManifest(dir);
  const otherKeys = manifest.keys.filter((k) => !FIXED_KEYS.has(k) && !SEED_KEYS.includes(k));
  const seedKeys = manifest.keys.filter((k) => SEED_KEYS.includes(k));
  const results: PointResult[] = [];
  const missing: SweepReport['missing'] = [];
  for (const p of manifest.points) {
    const pdir = pointDir(dir, p.name);
    const state = await pointState(pdir);
    if (state !== 'done') {
      missing.push({ name: p.name, state });
      continue;
    }
    const rec = await readPoint(pdir);
    const ev = await readPointFile<StsReportJson>(path.join(pdir, EVAL_FILE), 'an STS evaluation (results and average)',
      (raw) => isJsonObject(raw['results']) && (typeof raw['average'] === 'number' || raw['average'] === null));
    const manifestFile = await readPointFile<{ selection: { size: number } }>(path.join(pdir, SUBSET_MANIFEST_FILE), 'a subset manifest (selection.size)',
      (raw) => isJsonObject(raw['selection']) && typeof raw['selection']['size'] === 'number');
    const scores: Record<string, number | null> = {};
    for (const t of STS_TEST_TASKS) {
      const r = ev.results[STS_TASK_INFO[t].senteval];
      if (r !== undefined) scores[STS_TASK_INFO[t].label] = r.spearman;
    }
    results.push({
      name: p.name,
      sentences: manifestFile.selection.size,
      fraction: rec.config.data.fraction,
      count: rec.config.data.count,
      style: rec.config.objective.style,
      lambda: rec.config.objective.lambda,
      other: Object.fromEntries(otherKeys.map((k) => [k, p.params[k] ?? null])),
      seed: seedKeys.map((k) => String(p.params[k])).join('/') || '-',
      scores,
      avg: ev.average,
    });
  }
  // Task columns: those every done point evaluated, in table order.
  const taskLabels = STS_TEST_TASKS.map((t) => STS_TASK_INFO[t].label).filter((l) => results.length > 0 && results.every((r) => typeof r.scores[l] === 'number'));
  const lambdaInGrid = manifest.keys.includes('objective.lambda');
  const groups = new Map<string, PointResult[]>();
  for (const r of results) {
    const key = JSON.stringify([r.sentences, r.fraction, r.count, r.style, r.lambda, r.other]);
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  const rows: ReportRow[] = [...groups.values()].map((g) => {
    const f = g[0]!;
    const seriesParts = [STYLE_LABEL[f.style] ?? f.style];
    if (lambdaInGrid && f.style === 'micse') seriesParts.push(`lambda=${f.lambda}`);
    for (const k of otherKeys) seriesParts.push(`${k.split('.').pop()}=${String(f.other[k])}`);
    const avgs = g.map((r) => r.avg).filter((x): x is number => typeof x === 'number');
    return {
      sentences: f.sentences, fraction: f.fraction, count: f.count, style: f.style, lambda: f.style === 'simcse' ? null : f.lambda, other: f.other,
      n: g.length,
      seeds: g.map((r) => r.seed),
      tasks: Object.fromEntries(taskLabels.map((l) => [l, meanStd(g.map((r) => r.scores[l] as number))])),
      avg: avgs.length === g.length ? meanStd(avgs) : { mean: NaN, std: null },
      series: seriesParts.join(' '),
    };
  });
  rows.sort((a, b) => a.series.localeCompare(b.series) || a.sentences - b.sentences);
  return { dir, taskLabels, otherKeys, rows, missing };
}

function splitLabel(r: ReportRow): string {
  if (r.fraction !== null) return `${Number((r.fraction * 100).toPrecision(6))}%`;
  if (r.count !== null) return `${r.count} sent.`;
  return `${r.sentences} sent.`; // the whole file (e.g. one of the authors' subset files)
}

function fmtStat(s: Stat): string {
  if (!Number.isFinite(s.mean)) return 'n/a';
  return s.std === null ? s.mean.toFixed(REPORT_DECIMALS) : `${s.mean.toFixed(REPORT_DECIMALS)} ± ${s.std.toFixed(REPORT_DECIMALS)}`;
}

/** The Markdown table (one row per group), then a line naming the points left out. */
export function formatReportMarkdown(r: SweepReport): string {
  const header = ['sentences', 'split', 'objective', 'lambda', ...r.otherKeys, 'seeds', ...r.taskLabels, 'Avg'];
  const body = r.rows.map((row) => [
    String(row.sentences), splitLabel(row), STYLE_LABEL[row.style] ?? row.style, row.lambda === null ? '-' : String(row.lambda),
    ...r.otherKeys.map((k) => String(row.other[k])), String(row.n),
    ...r.taskLabels.map((l) => fmtStat(row.tasks[l]!)), fmtStat(row.avg),
  ]);
  const widths = header.map((h, c) => Math.max(h.length, ...body.map((b) => b[c]!.length)));
  const line = (cells: string[]) => `| ${cells.map((x, c) => x.padStart(widths[c]!)).join(' | ')} |`;
  const out = [
    `STS Spearman x 100, mean ± sample std over seeds (${r.rows.reduce((s, x) => s + x.n, 0)} runs)`,
    '',
    line(header),
    `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
    ...body.map(line),
  ];
  if (r.missing.length > 0) {
    out.push('', `not in the table (${r.missing.length} points not done): ${r.missing.map((m) => `${m.name} (${m.state})`).join(', ')}`);
  }
  return out.join('\n') + '\n';
}

function csvCell(v: string | number | null): string {
  if (v === null) return '';
  const s = String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** CSV with full-precision numbers: `<task>_mean`, `<task>_std` per task and `avg_mean`, `avg_std`. */
export function formatReportCsv(r: SweepReport): string {
  const header = ['sentences', 'fraction', 'count', 'style', 'lambda', ...r.otherKeys, 'n', 'seeds',
    ...r.taskLabels.flatMap((l) => [`${l}_mean`, `${l}_std`]), 'avg_mean', 'avg_std'];
  const lines = [header.map(csvCell).join(',')];
  for (const row of r.rows) {
    const cells: (string | number | null)[] = [row.sentences, row.fraction, row.count, row.style, row.lambda,
      ...r.otherKeys.map((k) => (row.other[k] === null ? null : String(row.other[k]))), row.n, row.seeds.join(' '),
      ...r.taskLabels.flatMap((l) => [row.tasks[l]!.mean, row.tasks[l]!.std]), row.avg.mean, row.avg.std];
    lines.push(cells.map(csvCell).join(','));
  }
  return lines.join('\n') + '\n';
}

export interface CurvePoint {
  sentences: number;
  /** Where the point is drawn: `sentences` shifted by its series' dodge (see DODGE_LOG10). */
  x: number;
  mean: number;
  /** mean - std and mean + std (= mean when std is undefined). */
  lo: number;
  hi: number;
  series: string;
  /** Objective label (miCSE, SimCSE): the line's dash pattern and the marker's shape. */
  objective: string;
}

const Y_TITLE = 'STS average (Spearman x 100)';
/** Horizontal dodge between neighbouring series, in decades of the log x axis (0.02 = 4.7%), so equal points stay apart. */
export const DODGE_LOG10 = 0.02;

/** The plotted points of the report's rows (rows whose average is undefined are left out), each series dodged around its true x. */
export function curvePoints(rows: readonly ReportRow[]): CurvePoint[] {
  const series = [...new Set(rows.map((r) => r.series))];
  return rows.filter((r) => Number.isFinite(r.avg.mean)).map((r) => ({
    sentences: r.sentences,
    x: r.sentences * 10 ** (DODGE_LOG10 * (series.indexOf(r.series) - (series.length - 1) / 2)),
    mean: r.avg.mean, lo: r.avg.mean - (r.avg.std ?? 0), hi: r.avg.mean + (r.avg.std ?? 0),
    series: r.series, objective: STYLE_LABEL[r.style] ?? r.style,
  }));
}

/**
 * Vega-Lite: STS average against training sentences (log x), one line per series (colour), the objective in the
 * dash pattern and the marker shape (so a line hidden under another of the same values still shows), error bars
 * lo..hi.
 */
export function sweepCurveSpec(title: string, points: CurvePoint[]): TopLevelSpec {
  const objective = { field: 'objective', type: 'nominal', title: 'objective' } as const;
  const dash = { ...objective, scale: { range: [[1, 0], [6, 4], [2, 2], [8, 3, 2, 3]] } };
  return {
    $schema: VEGA_LITE_SCHEMA,
    title,
    width: CHART_WIDTH,
    height: 320,
    data: { values: points },
    encoding: {
      x: { field: 'x', type: 'quantitative', scale: { type: 'log' }, title: 'training sentences (log scale)' },
      color: { field: 'series', type: 'nominal', title: null },
    },
    layer: [
      { mark: { type: 'line', strokeWidth: 2 }, encoding: { y: { field: 'mean', type: 'quantitative', scale: { zero: false }, title: Y_TITLE }, strokeDash: dash } },
      { mark: { type: 'point', filled: true, size: 50 }, encoding: { y: { field: 'mean', type: 'quantitative' }, shape: objective } },
      { mark: { type: 'errorbar', ticks: true }, encoding: { y: { field: 'lo', type: 'quantitative', title: Y_TITLE }, y2: { field: 'hi' } } },
    ],
  };
}

/** Builds the report of `dir` and writes report.md, report.csv and sts-avg.svg into it. */
export async function writeSweepReport(dir: string): Promise<{ report: SweepReport; markdown: string; files: string[] }> {
  const report = await buildSweepReport(dir);
  if (report.rows.length === 0) throw new UserError(`${dir}: no point is done yet (${report.missing.length} points); nothing to report`);
  const markdown = formatReportMarkdown(report);
  const files = [REPORT_MD, REPORT_CSV, REPORT_SVG].map((f) => path.join(dir, f));
  await writeFileAtomic(files[0]!, markdown);
  await writeFileAtomic(files[1]!, formatReportCsv(report));
  await writeFileAtomic(files[2]!, await renderSvg(sweepCurveSpec('STS average vs training-set size (mean ± std over seeds)', curvePoints(report.rows))));
  return { report, markdown, files };
}
