/**
 * Distributed sweeps on Redis through BullMQ: the enqueuing side and the queue's view of a sweep.
 *
 * One job per point and output directory, job id = point name @ a hash of the resolved output directory (so
 * enqueuing twice adds nothing, and the same sweep enqueued for two output directories runs twice). A job carries
 * the output directory, which every worker must reach at the same path (a shared file system: NFS, a cloud file
 * share or a bucket mounted with a FUSE driver; a worker started with `--out` maps it to its own mount point).
 * Redis is reached through src/sweep/redis.ts (ioredis); a URL that does not answer fails within the connect
 * timeout, before anything is written; errors show the URL with its password masked.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { Queue, type Job } from 'bullmq';
import { UserError } from '../errors.js';
import { DEFAULT_QUEUE_NAME } from './defaults.js';
import { loadSweep, type Sweep } from './grid.js';
import { checkSweepInputs } from './inputs.js';
import { checkOutDir, pointDir, pointState, writeSweepFiles } from './point.js';
import { checkRedis, createRedis, parseRedisUrl, withMaskedErrors } from './redis.js';

/** Job name of a sweep point. */
export const JOB_NAME = 'point';
/** Hex digits of the output directory's hash in job ids. */
const OUT_HASH_CHARS = 12;

/** The job id of point `name` of the sweep writing into `out` (an absolute path). */
export function pointJobId(out: string, name: string): string {
  return `${name}@${createHash('sha256').update(out).digest('hex').slice(0, OUT_HASH_CHARS)}`;
}

/** How status names a job: its point's directory. */
function jobLabel(j: Job<PointJobData>): string {
  return path.join(j.data.out, j.data.name);
}

export interface QueueOptions {
  /** redis://HOST:PORT[/DB] */
  url: string;
  queueName?: string;
  connectTimeoutMs?: number;
}

export interface PointJobData {
  /** Output directory of the sweep, absolute on the enqueuing machine. */
  out: string;
  name: string;
}

/** An open queue; `close()` also closes the Redis connection (BullMQ leaves connections it was given open). */
export interface OpenQueue {
  queue: Queue<PointJobData>;
  close(): Promise<void>;
}

/** Opens the BullMQ queue (after checking Redis answers). */
export async function openQueue(q: QueueOptions): Promise<OpenQueue> {
  await checkRedis(q);
  const client = createRedis(q);
  const queue = new Queue<PointJobData>(q.queueName ?? DEFAULT_QUEUE_NAME, { connection: client });
  queue.on('error', () => undefined);
  const close = async () => {
    await queue.close().catch(() => undefined);
    client.disconnect();
  };
  try {
    await queue.waitUntilReady();
  } catch (err) {
    await close();
    throw err;
  }
  return { queue, close };
}

export interface EnqueueResult {
  out: string;
  total: number;
  /** Jobs added now. */
  added: string[];
  /** Jobs already waiting or running. */
  queued: string[];
  /** Failed jobs put back in the queue. */
  retried: string[];
  /** Points done on disk (not enqueued). */
  done: string[];
}

/**
 * Puts every point of the sweep that is not done on the queue. The points' inputs (on this machine) and Redis are
 * checked before the output directory is touched. Failed jobs are retried; a job that completed but whose point
 * is not done on disk (deleted since) is replaced.
 */
export async function enqueueSweep(sweepOrFile: Sweep | string, opts: QueueOptions & { out: string }): Promise<EnqueueResult> {
  return withMaskedErrors(opts.url, () => enqueue(sweepOrFile, opts));
}

async function enqueue(sweepOrFile: Sweep | string, opts: QueueOptions & { out: string }): Promise<EnqueueResult> {
  const sweep = typeof sweepOrFile === 'string' ? await loadSweep(sweepOrFile) : sweepOrFile;
  const out = path.resolve(opts.out);
  await checkOutDir(out, sweep);
  await checkSweepInputs(sweep, out);
  const { queue, close } = await openQueue(opts);
  try {
    await writeSweepFiles(out, sweep);
    const r: EnqueueResult = { out, total: sweep.points.length, added: [], queued: [], retried: [], done: [] };
    for (const p of sweep.points) {
      if ((await pointState(pointDir(out, p))) === 'done') {
        r.done.push(p.name);
        continue;
      }
      const data: PointJobData = { out, name: p.name };
      const jobId = pointJobId(out, p.name);
      const existing = await queue.getJob(jobId);
      const state = existing === undefined ? null : await existing.getState();
      if (existing !== undefined && state === 'failed') {
        await existing.updateData(data);
        await existing.retry('failed');
        r.retried.push(p.name);
        continue;
      }
      if (existing !== undefined && state === 'completed') await existing.remove();
      else if (existing !== undefined && state !== 'unknown') {
        r.queued.push(p.name);
        continue;
      }
      await queue.add(JOB_NAME, data, { jobId, attempts: 1, removeOnComplete: false, removeOnFail: false });
      r.added.push(p.name);
    }
    return r;
  } finally {
    await close();
  }
}

export interface QueueStatus {
  counts: Record<'waiting' | 'active' | 'completed' | 'failed' | 'delayed' | 'prioritized', number>;
  /** Jobs by their point's directory (output directory / point name). */
  active: { name: string; worker: string | null }[];
  failed: { name: string; reason: string }[];
  waiting: string[];
}

/** The queue's counts and the names of running, failed and waiting points. */
export async function queueStatus(q: QueueOptions): Promise<QueueStatus> {
  return withMaskedErrors(q.url, () => readQueueStatus(q));
}

async function readQueueStatus(q: QueueOptions): Promise<QueueStatus> {
  const { queue, close } = await openQueue(q);
  try {
    const c = await queue.getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed', 'prioritized');
    const active = (await queue.getJobs(['active'])) as Job<PointJobData>[];
    const failed = (await queue.getJobs(['failed'])) as Job<PointJobData>[];
    const waiting = (await queue.getJobs(['waiting', 'delayed', 'prioritized'])) as Job<PointJobData>[];
    return {
      counts: { waiting: c['waiting'] ?? 0, active: c['active'] ?? 0, completed: c['completed'] ?? 0, failed: c['failed'] ?? 0, delayed: c['delayed'] ?? 0, prioritized: c['prioritized'] ?? 0 },
      active: active.map((j) => ({ name: jobLabel(j), worker: j.processedBy ?? null })),
      failed: failed.map((j) => ({ name: jobLabel(j), reason: j.failedReason ?? '' })),
      waiting: waiting.map(jobLabel),
    };
  } finally {
    await close();
  }
}

/** Asserts `url` is usable before a command writes anything (exported for the CLI's early check). */
export function assertQueueUrl(url: string): void {
  if (url.trim() === '') throw new UserError('--queue is empty; expected redis://HOST:PORT');
  parseRedisUrl(url);
}
