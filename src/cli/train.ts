/**
 * `micse train --config F [--set key=value ...] [--backend NAME]`, `micse train --resume RUN_DIR`, and `--dry-run [--json]`: the
 * resolved plan (src/train/plan.ts) without training.
 */
import type { CommandModule } from 'yargs';
import { UserError } from '../errors.js';
import { BACKEND_NAMES, type BackendName } from '../model/backendNames.js';
import type { TrainConfig } from '../train/config.js';

interface TrainArgs {
  config?: string;
  set: string[];
  backend?: BackendName;
  resume?: string;
  quiet: boolean;
  'dry-run': boolean;
  json: boolean;
}

export const trainCommand: CommandModule<object, TrainArgs> = {
  command: 'train',
  describe: 'Train a miCSE/SimCSE encoder from a YAML/JSON config, or resume a run',
  builder: (y) =>
    y
      .option('config', { type: 'string', describe: 'YAML or JSON config (see configs/)' })
      .option('set', { type: 'string', array: true, default: [] as string[], describe: 'override a key: --set train.seed=1 (repeatable); with --resume it applies from the resumed step on and is saved in the run\'s config.yaml (model, data, batch size and seed keys are refused)' })
      .option('backend', { choices: BACKEND_NAMES, describe: 'TF.js backend, over the config\'s train.backend (the same as --set train.backend=NAME)' })
      .option('resume', { type: 'string', describe: 'continue the run in this directory from its last checkpoint' })
      .option('quiet', { type: 'boolean', default: false, describe: 'no progress bar' })
      .option('dry-run', { type: 'boolean', default: false, describe: 'print the plan (training file, sentences, steps, evaluation and selection steps, objective, optimizer) and stop' })
      .option('json', { type: 'boolean', default: false, describe: 'with --dry-run: the plan as JSON on stdout' })
      .check((a) => {
        if (a.config === undefined && a.resume === undefined) throw new UserError('pass --config FILE (or --resume RUN_DIR)');
        if (a.config !== undefined && a.resume !== undefined) {
          throw new UserError('--config and --resume: a resumed run reads its own config.yaml; give one of them (--set changes a resumed run)');
        }
        return true;
      }) as never,
  handler: async (args) => {
    const set = args.backend === undefined ? args.set : [...args.set, `train.backend=${args.backend}`];
    let config: TrainConfig;
    if (args.resume !== undefined) {
      const { loadRunConfig } = await import('../train/runConfig.js');
      config = await loadRunConfig(args.resume, set);
      config.train.output = args.resume;
    } else {
      const { loadConfig } = await import('../train/config.js');
      config = (await loadConfig(args.config!, set)).config;
    }
    if (args['dry-run']) {
      const { formatPlan, trainingPlan } = await import('../train/plan.js');
      const plan = await trainingPlan(config);
      process.stdout.write(args.json ? `${JSON.stringify(plan, null, 2)}\n` : `${formatPlan(plan)}\n`);
      return;
    }
    if (args.json) throw new UserError('--json goes with --dry-run');
    const { train } = await import('../train/trainer.js');
    await train(config, { resume: args.resume !== undefined, quiet: args.quiet });
  },
};
