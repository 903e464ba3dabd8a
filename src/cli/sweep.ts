/**
 * `micse sweep --config F [--parallel N] [--out DIR] [--queue redis://HOST:PORT]`, `micse sweep status`,
 * `micse sweep report DIR`, and `micse worker --queue ...`.
 */
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { UserError } from '../errors.js';
import {
  DEFAULT_LOCK_DURATION_MS, DEFAULT_MAX_STALLED_COUNT, DEFAULT_PARALLEL, DEFAULT_QUEUE_NAME, DEFAULT_STALLED_INTERVAL_MS,
} from '../sweep/defaults.js';
import type { QueueStatus } from '../sweep/queue.js';
import { numberFlag, POSITIVE_INT } from './common.js';

/** Where a sweep writes when --out is not given: checkpoints/sweeps/<sweep file name>. */
export function defaultSweepOut(file: string): string {
  return path.join('checkpoints', 'sweeps', path.basename(file).replace(/\.(ya?ml|json)$/i, ''));
}

interface SweepArgs {
  config?: string;
  parallel: number;
  out?: string;
  queue?: string;
  'queue-name': string;
  quiet: boolean;
}

const statusCommand: CommandModule<object, { queue?: string; out?: string; 'queue-name': string }> = {
  command: 'status',
  describe: 'Show done, running, failed and queued points (from --queue, from --out, or both)',
  builder: (y) =>
    y
      .option('queue', { type: 'string', describe: 'redis://HOST:PORT of a distributed sweep' })
      .option('queue-name', { type: 'string', default: DEFAULT_QUEUE_NAME, describe: 'BullMQ queue name' })
      .option('out', { type: 'string', describe: 'sweep output directory (holding sweep.json)' })
      .check((a) => {
        if (a.queue === undefined && a.out === undefined) throw new UserError('pass --queue redis://HOST:PORT and/or --out DIR');
        return true;
      }) as never,
  handler: async (a) => {
    let q: QueueStatus | null = null;
    if (a.queue !== undefined) {
      const { assertQueueUrl, queueStatus } = await import('../sweep/queue.js');
      assertQueueUrl(a.queue);
      q = await queueStatus({ url: a.queue, queueName: a['queue-name'] });
    }
    const { diskStatus, formatStatus } = await import('../sweep/status.js');
    const d = a.out !== undefined ? await diskStatus(a.out) : null;
    process.stdout.write(formatStatus(d, q) + '\n');
  },
};

const reportCommand: CommandModule<object, { dir: string }> = {
  command: 'report <dir>',
  describe: 'Mean ± std over seeds per split/objective/lambda: report.md, report.csv and sts-avg.svg in DIR',
  builder: (y) => y.positional('dir', { type: 'string', demandOption: true, describe: 'sweep output directory' }) as never,
  handler: async (a) => {
    const { writeSweepReport } = await import('../sweep/report.js');
    const { markdown, files } = await writeSweepReport(a.dir);
    process.stdout.write(markdown);
    process.stderr.write(`wrote ${files.join(', ')}\n`);
  },
};

export const sweepCommand: CommandModule<object, SweepArgs> = {
  command: 'sweep',
  describe: 'Run a grid of training runs (few-shot ablations) locally or on a Redis queue; status; report',
  builder: (y) =>
    y
      .command(statusCommand)
      .command(reportCommand)
      // The sweep's own options (global: false): status and report take their own, and these stay off their --help.
      .option('config', { global: false, type: 'string', describe: 'sweep file: base + grid (see configs/sweeps/)' })
      .option('parallel', { global: false, ...numberFlag('parallel', POSITIVE_INT), default: DEFAULT_PARALLEL, describe: 'points at once on this machine (child processes)' })
      .option('out', { global: false, type: 'string', describe: 'output directory (default checkpoints/sweeps/<sweep name>); a shared path with --queue' })
      .option('queue', { global: false, type: 'string', describe: 'redis://HOST:PORT: enqueue the points for `micse worker`s instead of running them' })
      .option('queue-name', { global: false, type: 'string', default: DEFAULT_QUEUE_NAME, describe: 'BullMQ queue name' })
      .option('quiet', { global: false, type: 'boolean', default: false, describe: 'no progress line' }) as never,
  handler: async (a) => {
    if (a.config === undefined) throw new UserError('pass --config SWEEP.yaml (or a subcommand: status, report)');
    const out = a.out ?? defaultSweepOut(a.config);
    if (a.queue !== undefined) {
      const { assertQueueUrl, enqueueSweep } = await import('../sweep/queue.js');
      const { maskRedisUrl, PASSWORD_MASK } = await import('../sweep/redis.js');
      assertQueueUrl(a.queue);
      const r = await enqueueSweep(a.config, { url: a.queue, queueName: a['queue-name'], out });
      const shown = maskRedisUrl(a.queue);
      process.stdout.write(`${r.total} points in ${r.out}: ${r.added.length} enqueued, ${r.retried.length} failed ones retried, ` +
        `${r.queued.length} already queued or running, ${r.done.length} done\n` +
        `start workers with: npx micse worker --queue ${shown}${a['queue-name'] !== DEFAULT_QUEUE_NAME ? ` --queue-name ${a['queue-name']}` : ''}` +
        `${shown !== a.queue ? ` (the password in place of ${PASSWORD_MASK})` : ''}\n`);
      return;
    }
    const { runSweep } = await import('../sweep/local.js');
    const r = await runSweep(a.config, { out, parallel: a.parallel, quiet: a.quiet });
    process.stdout.write(`${r.total} points in ${r.out}: ${r.done.length} run now, ${r.skipped.length} already done, ${r.failed.length} failed\n`);
    if (r.failed.length > 0) {
      throw new UserError(`${r.failed.length} point(s) failed (see error.json in each): ${r.failed.map((f) => f.name).join(', ')}; ` +
        'run the same command again to retry them');
    }
  },
};

interface WorkerArgs {
  queue: string;
  'queue-name': string;
  concurrency: number;
  out?: string;
  name?: string;
  'exit-when-idle': boolean;
  'lock-duration': number;
  'stalled-interval': number;
  'max-stalled': number;
}

export const workerCommand: CommandModule<object, WorkerArgs> = {
  command: 'worker',
  describe: 'Take sweep points from a Redis queue (micse sweep --queue) and run them into the shared output directory',
  builder: (y) =>
    y
      .option('queue', { type: 'string', demandOption: true, describe: 'redis://HOST:PORT' })
      .option('queue-name', { type: 'string', default: DEFAULT_QUEUE_NAME, describe: 'BullMQ queue name' })
      .option('concurrency', { ...numberFlag('concurrency', POSITIVE_INT), default: 1, describe: 'points at once in this worker (child processes)' })
      .option('out', { type: 'string', describe: "the shared output directory's path on this machine (default: as enqueued)" })
      .option('name', { type: 'string', describe: 'worker name in logs and attempts.jsonl (default host:pid)' })
      .option('exit-when-idle', { type: 'boolean', default: false, describe: 'exit once nothing is queued or running' })
      .option('lock-duration', { ...numberFlag('lock-duration', POSITIVE_INT), default: DEFAULT_LOCK_DURATION_MS, describe: 'ms a point lock lives without renewal' })
      .option('stalled-interval', { ...numberFlag('stalled-interval', POSITIVE_INT), default: DEFAULT_STALLED_INTERVAL_MS, describe: 'ms between checks for points of dead workers' })
      .option('max-stalled', { ...numberFlag('max-stalled', POSITIVE_INT), default: DEFAULT_MAX_STALLED_COUNT, describe: 'times a point may be taken again after its worker died' }) as never,
  handler: async (a) => {
    const { assertQueueUrl } = await import('../sweep/queue.js');
    assertQueueUrl(a.queue);
    const { runWorker } = await import('../sweep/worker.js');
    let onSignal: (() => void) | undefined;
    const stop = new Promise<void>((resolve) => {
      onSignal = () => resolve();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
    });
    try {
      const r = await runWorker({
        url: a.queue, queueName: a['queue-name'], concurrency: a.concurrency, lockDurationMs: a['lock-duration'],
        stalledIntervalMs: a['stalled-interval'], maxStalledCount: a['max-stalled'], exitWhenIdle: a['exit-when-idle'], stop,
        ...(a.out !== undefined ? { out: a.out } : {}), ...(a.name !== undefined ? { name: a.name } : {}),
      });
      process.stdout.write(`worker: ${r.completed.length} points done, ${r.failed.length} failed\n`);
    } finally {
      process.off('SIGINT', onSignal!);
      process.off('SIGTERM', onSignal!);
    }
  },
};

/** The commands this module adds to the CLI. */
export const sweepCommands = [sweepCommand, workerCommand] as CommandModule<any, any>[];
