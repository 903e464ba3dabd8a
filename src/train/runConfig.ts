/**
 * A run directory's config for `train --resume`: reading it (loadRunConfig), and which keys a resumed run may change
 * (FIXED_ON_RESUME, resumeConfigChanges). Loads what reads configs, not TF.js, so that `train --resume RUN_DIR
 * --dry-run` and the refusals of a bad run directory or --set answer without it.
 */
import path from 'node:path';
import { UserError } from '../errors.js';
import { exists } from '../fsutil.js';
import { loadConfig, parseOverride, SCHEMA, type TrainConfig } from './config.js';
import { CONFIG_FILE } from './runFiles.js';

/**
 * Config keys a resumed run cannot change: they fix the model in the checkpoint (model.init, tokenizer, config),
 * the training sentences and what the data iterator's saved position means (data.*, train.batchSize), or every
 * random choice already made (train.seed). Any other key (learning rate, schedule, steps, objective, evaluation,
 * backend, dropout) applies from the resumed step on and is saved in config.yaml.
 */
export const FIXED_ON_RESUME: readonly string[] = [
  'model.init', 'model.tokenizer', 'model.config', 'data.train', 'data.format', 'data.column', 'data.fraction', 'data.count',
  'data.subsetSeed', 'data.onInvalid', 'data.blankLines', 'data.dropLast', 'train.batchSize', 'train.seed',
];

export interface ConfigChange {
  key: string;
  /** JSON of the saved and the new value. */
  from: string;
  to: string;
}

/**
 * The keys in which `c` differs from the run's saved config.yaml (train.output aside: it is where the run is now);
 * a UserError if one of them is in FIXED_ON_RESUME.
 */
export async function resumeConfigChanges(runDir: string, c: TrainConfig): Promise<ConfigChange[]> {
  const { config: saved } = await loadConfig(path.join(runDir, CONFIG_FILE));
  const changes: ConfigChange[] = [];
  for (const [sec, keys] of Object.entries(SCHEMA)) {
    for (const key of Object.keys(keys)) {
      if (sec === 'train' && key === 'output') continue;
      const value = (cfg: TrainConfig) => JSON.stringify((cfg as unknown as Record<string, Record<string, unknown>>)[sec]![key]);
      if (value(saved) !== value(c)) changes.push({ key: `${sec}.${key}`, from: value(saved), to: value(c) });
    }
  }
  const fixed = changes.filter((d) => FIXED_ON_RESUME.includes(d.key));
  if (fixed.length > 0) {
    throw new UserError(`${runDir}: a resumed run cannot change ${fixed.map((d) => `${d.key} (${d.from} -> ${d.to})`).join(', ')}; ` +
      'start a new run in another train.output instead');
  }
  return changes;
}

/**
 * Loads the run's config for `--resume RUN_DIR` with `sets` applied; a UserError when `sets` move train.output or
 * change a key of FIXED_ON_RESUME (resumeConfigChanges, the check `train` makes of the config it is given), so that
 * `micse train --resume` and its dry run refuse the same --set before anything but the config's reader is loaded.
 */
export async function loadRunConfig(runDir: string, sets: readonly string[] = []): Promise<TrainConfig> {
  const file = path.join(runDir, CONFIG_FILE);
  if (!(await exists(file))) throw new UserError(`${file}: missing; --resume needs a run directory written by micse train`);
  if (sets.some((s) => parseOverride(s).keyPath === 'train.output')) {
    throw new UserError(`--set train.output: a resumed run stays in its directory (${runDir}); copy the run elsewhere to continue it there`);
  }
  const { config } = await loadConfig(file, sets);
  await resumeConfigChanges(runDir, config);
  return config;
}
