/**
 * The names of the files a training run writes into its directory (beside checkpoints/, best and last), shared by
 * the trainer that writes them and the sweep and export code that reads them.
 */
export const CONFIG_FILE = 'config.yaml';
export const METRICS_FILE = 'metrics.jsonl';
export const SUMMARY_FILE = 'summary.json';
export const EVAL_FILE = 'eval.json';
/** Held by the training that writes the run directory (src/fsutil.ts PidLock). */
export const LOCK_FILE = 'train.lock';
/** The manifest of the training subset, written with config.yaml when a run starts. */
export const SUBSET_MANIFEST_FILE = 'subset-manifest.json';
/** The plots the trainer draws from metrics.jsonl. */
export const LOSS_PLOT = 'loss.svg';
export const DEV_PLOT = 'stsb-dev.svg';
