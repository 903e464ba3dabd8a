/**
 * Runs a sweep on this machine: every point not yet done, `parallel` at a time, each in its own child process
 * (training is mostly single-threaded, so N processes use N cores). Done points are skipped, interrupted ones
 * resume from their `last/` checkpoint, a failed point is recorded in its error.json and the others go on. Every
 * point's inputs are checked first (src/sweep/inputs.ts): a missing one stops the sweep before anything is written.
 */
import { UserError } from '../errors.js';
import { createProgress } from '../progress.js';
import { DEFAULT_PARALLEL } from './defaults.js';
import { loadSweep, type Sweep } from './grid.js';
import { checkSweepInputs } from './inputs.js';
import { checkOutDir, pointDir, pointState, spawnPoint, writeSweepFiles } from './point.js';

export interface RunSweepOptions {
  /** Output directory (one run directory per point inside). */
  out: string;
  /** Points at once (child processes). */
  parallel?: number;
  /** No progress line. */
  quiet?: boolean;
  /** Where one line per finished point goes (default stderr). */
  log?: (line: string) => void;
}

export interface RunSweepResult {
  out: string;
  total: number;
  /** Points run to completion now. */
  done: string[];
  /** Points already done before this call. */
  skipped: string[];
  failed: { name: string; message: string }[];
}

/** Runs (or continues) the sweep in `sweepOrFile` into `opts.out`. */
export async function runSweep(sweepOrFile: Sweep | string, opts: RunSweepOptions): Promise<RunSweepResult> {
  const sweep = typeof sweepOrFile === 'string' ? await loadSweep(sweepOrFile) : sweepOrFile;
  const parallel = Math.max(1, opts.parallel ?? DEFAULT_PARALLEL);
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  await checkOutDir(opts.out, sweep);
  await checkSweepInputs(sweep, opts.out);
  await writeSweepFiles(opts.out, sweep);

  const result: RunSweepResult = { out: opts.out, total: sweep.points.length, done: [], skipped: [], failed: [] };
  const todo: string[] = [];
  for (const p of sweep.points) {
    if ((await pointState(pointDir(opts.out, p))) === 'done') result.skipped.push(p.name);
    else todo.push(p.name);
  }
  if (todo.length === 0) {
    log(`sweep: all ${sweep.points.length} points are done in ${opts.out}`);
    return result;
  }
  log(`sweep: ${todo.length} of ${sweep.points.length} points to run (${result.skipped.length} done), ${Math.min(parallel, todo.length)} at a time, into ${opts.out}`);
  const progress = createProgress({ label: 'sweep', total: todo.length, unit: 'point', silent: opts.quiet });
  const running = new Set<() => void>();
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    running.forEach((kill) => kill());
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < todo.length && !interrupted) {
      const name = todo[next++]!;
      const run = spawnPoint(pointDir(opts.out, name));
      running.add(run.kill);
      try {
        await run.done;
        result.done.push(name);
        log(`sweep: ${name} done`);
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        result.failed.push({ name, message });
        log(`sweep: ${name} FAILED: ${message}`);
      } finally {
        running.delete(run.kill);
      }
      progress.tick(1, { done: result.done.length, failed: result.failed.length });
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(parallel, todo.length) }, lane));
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  progress.done({ done: result.done.length, failed: result.failed.length });
  if (interrupted) throw new UserError(`sweep interrupted; run the same command again to resume (done points are kept)`);
  return result;
}
