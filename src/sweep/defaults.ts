/**
 * The defaults of local sweeps (src/sweep/local.ts), the queue (src/sweep/queue.ts) and its workers
 * (src/sweep/worker.ts), in a module of their own that loads neither BullMQ nor the trainer: the CLI's flags show them.
 */

/** Default number of points run at once. */
export const DEFAULT_PARALLEL = 1;

/** Queue name used when none is given (sweeps share it: job data carries the output directory). */
export const DEFAULT_QUEUE_NAME = 'micse-sweep';

/** BullMQ's defaults, named: how long a job's lock lives without renewal, and how often stalled jobs are looked for. */
export const DEFAULT_LOCK_DURATION_MS = 30_000;
export const DEFAULT_STALLED_INTERVAL_MS = 30_000;
/** A point may be taken again this many times after its worker died before it counts as failed. */
export const DEFAULT_MAX_STALLED_COUNT = 3;
