/**
 * One sweep point on disk: its run directory `<out>/<name>/`, the bookkeeping files beside the trainer's, running
 * it (in this process, or in a child process that dies with its parent), and reading its state.
 *
 * Files the sweep adds to a run directory:
 * - `point.json`: name, grid values and the full training config (written before the first attempt).
 * - `attempts.jsonl`: one line per event (`start`, `done`, `failed`) with host, pid and worker; a SIGKILLed attempt
 *   leaves a `start` without an end.
 * - `error.json`: the last failure (message, stack); removed when the point later succeeds.
 * - `done.json`: the done marker, written atomically after eval.json; a point with it is never run again.
 * Everything else is the trainer's (config.yaml, metrics.jsonl, last/, best/, eval.json, summary.json, ...).
 */
import { fork } from 'node:child_process';
import { closeSync, openSync, promises as fs, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '../errors.js';
import { exists, isJsonObject, readJsonObject, writeFileAtomic } from '../fsutil.js';
import { checkConsistency, defaultConfig, mergeConfig, parseJsonLines, placeOf, type TrainConfig } from '../train/config.js';
import { EVAL_FILE, SUMMARY_FILE } from '../train/runFiles.js';
import type { GridValue, Sweep, SweepPoint } from './grid.js';

export const POINT_FILE = 'point.json';
export const ATTEMPTS_FILE = 'attempts.jsonl';
export const ERROR_FILE = 'error.json';
export const DONE_FILE = 'done.json';
export const LOG_FILE = 'train.log';
export const SWEEP_FILE = 'sweep.json';
/** Files of ours that survive when a point restarts from scratch. */
const KEEP_ON_RESTART = new Set([POINT_FILE, ATTEMPTS_FILE, ERROR_FILE, LOG_FILE]);
/** Environment variable naming the worker in attempt lines. */
export const WORKER_ENV = 'MICSE_SWEEP_WORKER';

export type PointState = 'done' | 'failed' | 'started' | 'pending';

export interface PointRecord {
  name: string;
  params: Record<string, GridValue>;
  config: TrainConfig;
}

export interface AttemptLine {
  event: 'start' | 'done' | 'failed';
  at: string;
  host: string;
  pid: number;
  worker: string;
  resume?: boolean;
  recovered?: boolean;
  /** mtime of eval.json when the attempt finished (ms). */
  evalMtimeMs?: number;
  message?: string;
}

export interface SweepManifest {
  sweep: string;
  keys: string[];
  points: { name: string; params: Record<string, GridValue> }[];
}

/** The bits of a config that must match for a rerun to reuse a point directory (train.output may differ). */
function comparable(c: TrainConfig): string {
  return JSON.stringify({ ...c, train: { ...c.train, output: null } });
}

/**
 * Checks what `out` already holds against the sweep before anything is written: its sweep.json must be this sweep's
 * (same grid keys and points), so another sweep's is not replaced, and every point.json that exists must be a valid
 * point (readPoint's UserError otherwise) with the same config, so a changed sweep file cannot silently reuse runs of
 * another config.
 */
export async function checkOutDir(out: string, sweep: Sweep): Promise<void> {
  if (await exists(path.join(out, SWEEP_FILE))) {
    const prev = await readManifest(out);
    const next = manifestOf(sweep);
    if (JSON.stringify([prev.keys, prev.points]) !== JSON.stringify([next.keys, next.points])) {
      throw new UserError(`${path.join(out, SWEEP_FILE)}: ${out} holds another sweep (${prev.sweep}, ${prev.points.length} points), not ${sweep.file} ` +
        `(${sweep.points.length} points); use another --out`);
    }
  }
  for (const p of sweep.points) {
    const dir = path.join(out, p.name);
    // No point.json: the point has not been set up. One that cannot be read as a point stops the sweep here, naming
    // its file and line, instead of when its point's turn comes.
    const rec = (await exists(path.join(dir, POINT_FILE))) ? await readPoint(dir) : null;
    if (rec !== null && comparable(rec.config) !== comparable(p.config)) {
      throw new UserError(`${path.join(out, p.name, POINT_FILE)}: this point was run with another config than ${sweep.file} now gives; ` +
        `use another --out, or delete the point directory to rerun it`);
    }
  }
}

/** The sweep.json of `sweep`: its file, grid keys and points (names and grid values: what tells one sweep from another). */
function manifestOf(sweep: Sweep): SweepManifest {
  return { sweep: sweep.file, keys: sweep.keys, points: sweep.points.map((p) => ({ name: p.name, params: p.params })) };
}

/** Writes sweep.json and each point's point.json (atomically; existing identical ones are left alone). */
export async function writeSweepFiles(out: string, sweep: Sweep): Promise<void> {
  await writeFileAtomic(path.join(out, SWEEP_FILE), JSON.stringify(manifestOf(sweep), null, 2) + '\n');
  for (const p of sweep.points) {
    const file = path.join(out, p.name, POINT_FILE);
    if (await exists(file)) continue;
    const config = structuredClone(p.config);
    config.train.output = path.join(out, p.name);
    await writeFileAtomic(file, JSON.stringify({ name: p.name, params: p.params, config } satisfies PointRecord, null, 2) + '\n');
  }
}

/** What makes parsed sweep.json no sweep manifest, or null when it is one. */
function manifestFault(raw: Record<string, unknown>): string | null {
  const { sweep, keys, points } = raw;
  if (typeof sweep !== 'string') return 'sweep is not the path of a sweep file';
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string')) return 'keys is not a list of grid keys';
  if (!Array.isArray(points) || !points.every((p) => isJsonObject(p) && typeof p['name'] === 'string' && isJsonObject(p['params']))) {
    return 'points is not a list of {name, params}';
  }
  return null;
}

/** Reads sweep.json of an output directory: a UserError naming it when it is missing, not JSON or not a manifest. */
export async function readManifest(out: string): Promise<SweepManifest> {
  const file = path.join(out, SWEEP_FILE);
  if (!(await exists(file))) throw new UserError(`${file}: missing; is ${out} a sweep output directory (written by micse sweep)?`);
  const raw = await readJsonObject(file);
  const fault = manifestFault(raw);
  if (fault !== null) throw new UserError(`${file}: not a sweep manifest (${fault})`);
  return raw as unknown as SweepManifest;
}

/**
 * Reads the point.json of the point directory `dir`; its config is validated again as a config file is (every key,
 * the cross-key rules). Each error names point.json and, for a key of the config, its line.
 */
export async function readPoint(dir: string): Promise<PointRecord> {
  const file = path.join(dir, POINT_FILE);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new UserError(`${file}: cannot read the point (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const rec = parseJsonLines(text, file);
  if (!isJsonObject(rec)) throw new UserError(`${file}: not a sweep point (the top level must be a mapping of name, params and config)`);
  const bad = (key: string, want: string): never => {
    throw new UserError(`${placeOf(file, rec, [key])}: ${key} must be ${want}`);
  };
  if (typeof rec['name'] !== 'string') bad('name', 'the point\'s name');
  if (!isJsonObject(rec['params'])) bad('params', 'a mapping of grid keys to values');
  if (!isJsonObject(rec['config'])) bad('config', 'a mapping of sections (the training config)');
  const config = mergeConfig(defaultConfig(), rec['config'], file);
  checkConsistency(config, file);
  return { name: rec['name'] as string, params: rec['params'] as Record<string, GridValue>, config };
}

/** Reads the attempt log (empty when absent). */
export async function readAttempts(dir: string): Promise<AttemptLine[]> {
  const text = await fs.readFile(path.join(dir, ATTEMPTS_FILE), 'utf8').catch(() => '');
  return text.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as AttemptLine);
}

async function logAttempt(dir: string, line: Omit<AttemptLine, 'at' | 'host' | 'pid' | 'worker'>): Promise<void> {
  const full: AttemptLine = { ...line, at: new Date().toISOString(), host: os.hostname(), pid: process.pid, worker: process.env[WORKER_ENV] ?? 'local' };
  // One short appended line per event (O_APPEND): safe to share between processes on one file system.
  await fs.appendFile(path.join(dir, ATTEMPTS_FILE), JSON.stringify(full) + '\n');
}

/** The state of a point directory, from its marker files. */
export async function pointState(dir: string): Promise<PointState> {
  if (await exists(path.join(dir, DONE_FILE))) return 'done';
  if (await exists(path.join(dir, ERROR_FILE))) return 'failed';
  return (await readAttempts(dir)).some((a) => a.event === 'start') ? 'started' : 'pending';
}

export type PointOutcome = 'done' | 'skipped';

/** What the child process of spawnPoint sends its parent before it exits 0. */
export interface PointMessage {
  outcome: PointOutcome;
}

/**
 * Runs one point in this process: skips a done point; resumes from `last/` when there is one; otherwise clears a
 * partial attempt and trains from scratch. Writes done.json after eval.json, or error.json (and rethrows) on failure.
 */
export async function runPoint(dir: string, opts: { log?: (line: string) => void } = {}): Promise<PointOutcome> {
  if (await exists(path.join(dir, DONE_FILE))) return 'skipped';
  const rec = await readPoint(dir);
  const config = structuredClone(rec.config);
  config.train.output = dir;
  config.train.finalEval = true;
  const hasLast = await exists(path.join(dir, 'last'));
  const finished = hasLast && (await exists(path.join(dir, EVAL_FILE))) && (await exists(path.join(dir, SUMMARY_FILE)));
  await logAttempt(dir, { event: 'start', resume: hasLast });
  try {
    if (finished) {
      // Killed after the trainer finished but before the marker: nothing to redo.
    } else {
      // Imported here, so that reading a sweep's files (status, report) loads no TF.js.
      const { train } = await import('../train/trainer.js');
      if (hasLast) {
        await train(config, { resume: true, quiet: true, ...(opts.log ? { log: opts.log } : {}) });
      } else {
        for (const entry of await fs.readdir(dir)) {
          if (!KEEP_ON_RESTART.has(entry)) await fs.rm(path.join(dir, entry), { recursive: true, force: true });
        }
        await train(config, { quiet: true, ...(opts.log ? { log: opts.log } : {}) });
      }
    }
    const evalStat = await fs.stat(path.join(dir, EVAL_FILE)).catch(() => null);
    if (evalStat === null) throw new UserError(`${dir}: training ended without ${EVAL_FILE} (no checkpoint was selected?)`);
    const ev = JSON.parse(await fs.readFile(path.join(dir, EVAL_FILE), 'utf8')) as { average: number | null };
    await logAttempt(dir, { event: 'done', evalMtimeMs: evalStat.mtimeMs, ...(finished ? { recovered: true } : {}) });
    await fs.rm(path.join(dir, ERROR_FILE), { force: true });
    await writeFileAtomic(path.join(dir, DONE_FILE), JSON.stringify({
      name: rec.name, average: ev.average, finishedAt: new Date().toISOString(), host: os.hostname(), worker: process.env[WORKER_ENV] ?? 'local',
    }, null, 2) + '\n');
    return 'done';
  } catch (err) {
    await recordFailure(dir, err instanceof Error ? err.message : String(err), err instanceof Error ? err.stack : undefined);
    throw err;
  }
}

/** Writes error.json and a `failed` attempt line. */
export async function recordFailure(dir: string, message: string, stack?: string): Promise<void> {
  await writeFileAtomic(path.join(dir, ERROR_FILE), JSON.stringify({ message, stack: stack ?? null, at: new Date().toISOString() }, null, 2) + '\n');
  await logAttempt(dir, { event: 'failed', message });
}

export interface ChildRun {
  /** Resolves with the outcome; rejects with the point's error message. */
  done: Promise<PointOutcome>;
  /** Stops the child (SIGTERM). */
  kill(): void;
}

/**
 * Runs one point in a child process whose entry is the library module pointProcess.ts (its output appended to
 * DIR/train.log), so that training, which blocks its event loop for a whole step, leaves this process free (a queue
 * worker must renew its job's lock), N points use N cores, and a point that runs out of memory takes no other with
 * it. The child exits when this process dies (IPC disconnect), so a killed worker leaves no orphan training.
 */
export function spawnPoint(dir: string, env: NodeJS.ProcessEnv = {}): ChildRun {
  // A retry starts clean: a stale error.json would be mistaken for this attempt's.
  rmSync(path.join(dir, ERROR_FILE), { force: true });
  // The child runs what this process runs: the compiled module from dist/, or the TypeScript source through tsx.
  const ext = path.extname(fileURLToPath(import.meta.url));
  const fd = openSync(path.join(dir, LOG_FILE), 'a');
  const child = fork(fileURLToPath(new URL(`./pointProcess${ext}`, import.meta.url)), [dir], {
    stdio: ['ignore', fd, fd, 'ipc'],
    env: { ...process.env, ...env },
    execArgv: ext === '.ts' ? ['--import', import.meta.resolve('tsx')] : [],
  });
  closeSync(fd);
  let outcome: PointOutcome = 'done';
  child.on('message', (m: PointMessage) => (outcome = m.outcome));
  const done = new Promise<PointOutcome>((resolve, reject) => {
    child.once('error', (e) => reject(e));
    // 'close', not 'exit': it comes after the IPC channel has delivered the outcome.
    child.once('close', (code, signal) => {
      if (code === 0) {
        resolve(outcome);
        return;
      }
      const why = signal !== null ? `killed by ${signal}` : `exit code ${code}`;
      fs.readFile(path.join(dir, ERROR_FILE), 'utf8').then(
        (t) => reject(new Error((JSON.parse(t) as { message: string }).message)),
        () => recordFailure(dir, `the point's process ended (${why}); see ${path.join(dir, LOG_FILE)}`).then(
          () => reject(new Error(`${path.basename(dir)}: ${why}`)), reject),
      );
    });
  });
  return { done, kill: () => child.kill('SIGTERM') };
}

/** A point's run directory. */
export function pointDir(out: string, point: SweepPoint | string): string {
  return path.join(out, typeof point === 'string' ? point : point.name);
}
