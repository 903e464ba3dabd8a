/**
 * A sweep worker: takes point jobs from the BullMQ queue and runs each in a child process (so this process's event
 * loop stays free to renew the job's lock however long a training step takes), writing into the shared output
 * directory. A worker that dies stops renewing its locks; after `lockDuration` the job counts as stalled and the
 * next stalled check (every `stalledInterval`, in any live worker) puts it back, and another worker resumes the
 * point from its `last/` checkpoint. The child of a killed worker exits on its own (IPC disconnect).
 */
import os from 'node:os';
import { Worker, type Job } from 'bullmq';
import { UserError } from '../errors.js';
import { DEFAULT_LOCK_DURATION_MS, DEFAULT_MAX_STALLED_COUNT, DEFAULT_QUEUE_NAME, DEFAULT_STALLED_INTERVAL_MS } from './defaults.js';
import { pointDir, pointState, spawnPoint, WORKER_ENV, type ChildRun } from './point.js';
import { openQueue, type PointJobData, type QueueOptions } from './queue.js';
import { checkRedis, createRedis, maskRedisUrl, maskSecrets, withMaskedErrors } from './redis.js';

/** How often `exitWhenIdle` looks at the queue. */
export const IDLE_POLL_MS = 1000;

export interface WorkerOptions extends QueueOptions {
  /** Points at once in this worker (child processes). */
  concurrency?: number;
  lockDurationMs?: number;
  stalledIntervalMs?: number;
  maxStalledCount?: number;
  /** Map every job's output directory to this one (the shared directory's mount point on this machine). */
  out?: string;
  /** Name in attempt logs and in the queue (default host:pid). */
  name?: string;
  /** Return once no job is waiting, delayed or running anywhere (default: run until stopped). */
  exitWhenIdle?: boolean;
  log?: (line: string) => void;
  /** Resolves to stop the worker (the CLI passes a signal). */
  stop?: Promise<unknown>;
}

export interface WorkerResult {
  completed: string[];
  failed: { name: string; message: string }[];
}

/**
 * Runs a worker until stopped (or, with exitWhenIdle, until the queue is drained). Its log lines and errors show
 * the Redis URL with the password masked.
 */
export async function runWorker(opts: WorkerOptions): Promise<WorkerResult> {
  return withMaskedErrors(opts.url, () => work(opts));
}

async function work(opts: WorkerOptions): Promise<WorkerResult> {
  const print = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const log = (line: string) => print(maskSecrets(line, opts.url));
  const name = opts.name ?? `${os.hostname()}:${process.pid}`;
  // Redis is checked once, before anything starts: by openQueue when the idle watcher needs a queue, else here.
  const watcher = opts.exitWhenIdle === true ? await openQueue(opts) : null;
  if (watcher === null) await checkRedis(opts);
  let lost: ((err: Error) => void) | undefined;
  const lostPromise = new Promise<never>((_, reject) => {
    lost = (err) => reject(new UserError(`lost the connection to Redis at ${maskRedisUrl(opts.url)} (${err.message}); points in progress will be taken again by other workers`));
  });
  lostPromise.catch(() => undefined);
  const result: WorkerResult = { completed: [], failed: [] };
  const children = new Set<ChildRun>();

  const processor = async (job: Job<PointJobData>): Promise<string> => {
    const out = opts.out ?? job.data.out;
    const dir = pointDir(out, job.data.name);
    if ((await pointState(dir)) === 'done') {
      log(`worker ${name}: ${job.data.name} already done`);
      return 'already done';
    }
    log(`worker ${name}: ${job.data.name} started`);
    const run = spawnPoint(dir, { [WORKER_ENV]: name });
    children.add(run);
    try {
      await run.done;
      result.completed.push(job.data.name);
      log(`worker ${name}: ${job.data.name} done`);
      return 'done';
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      result.failed.push({ name: job.data.name, message });
      log(`worker ${name}: ${job.data.name} FAILED: ${message}`);
      throw err;
    } finally {
      children.delete(run);
    }
  };

  const client = createRedis(opts, lost);
  const worker = new Worker<PointJobData>(opts.queueName ?? DEFAULT_QUEUE_NAME, processor, {
    connection: client,
    name,
    concurrency: Math.max(1, opts.concurrency ?? 1),
    lockDuration: opts.lockDurationMs ?? DEFAULT_LOCK_DURATION_MS,
    stalledInterval: opts.stalledIntervalMs ?? DEFAULT_STALLED_INTERVAL_MS,
    maxStalledCount: opts.maxStalledCount ?? DEFAULT_MAX_STALLED_COUNT,
    removeOnComplete: { count: -1 } as never,
    autorun: false,
  });
  worker.on('error', (err) => log(`worker ${name}: ${err.message}`));
  const queue = watcher?.queue ?? null;
  log(`worker ${name}: waiting for points on ${maskRedisUrl(opts.url)} (queue ${opts.queueName ?? DEFAULT_QUEUE_NAME})`);

  let finished = false;
  const idle = new Promise<void>((resolve, reject) => {
    if (queue === null) return;
    const tick = async () => {
      if (finished) return;
      try {
        const c = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'waiting-children');
        if (Object.values(c).every((n) => n === 0) && children.size === 0) resolve();
        else setTimeout(() => void tick(), IDLE_POLL_MS);
      } catch (err) {
        reject(err as Error);
      }
    };
    setTimeout(() => void tick(), IDLE_POLL_MS);
  });
  idle.catch(() => undefined);

  const running = worker.run();
  try {
    await Promise.race([idle, lostPromise, ...(opts.stop ? [opts.stop] : []), running]);
  } finally {
    finished = true;
    // Close first (force: without waiting for jobs), so a stopped point is not marked failed but stalls and is
    // taken again by another worker.
    await worker.close(true).catch(() => undefined);
    client.disconnect();
    for (const c of children) c.kill();
    await watcher?.close();
  }
  return result;
}
