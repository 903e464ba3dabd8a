/**
 * `micse eval`: STS evaluation of a checkpoint with the SentEval protocol (STS12-16 "all", STS-B, SICK-R; STS-B dev
 * on request). Prints the table in the published layout and optionally writes a JSON report.
 */
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { formatStsDetail, formatStsTable, formatThroughput, stsReportJson } from '../../eval/report.js';
import { isDirectory, resolveSentevalRoot } from '../../eval/senteval.js';
import {
  DEFAULT_EVAL_BATCH_SIZE,
  STS_TASK_NAMES,
  ALL_TASKS_ALIAS,
  evaluateSts,
  loadStsTasks,
  parseStsTasks,
} from '../../eval/sts.js';
import { UserError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import type { BackendName } from '../model/backend.js';
import { embed, type EmbedOptions } from '../model/embed.js';
import { EMBED_POOLERS, type EmbedPooler } from '../model/pooling.js';
import { loadPretrained } from '../model/pretrained.js';
import { activateBackend, withBackend } from './common.js';
import { resolveCheckpoint } from '../model/pretrained.js';

/** Where `--data` points when not given, relative to the working directory. */
export const DEFAULT_SENTEVAL_DIR = path.join('data', 'senteval');

interface EvalArgs {
  model: string;
  data: string;
  tasks: string;
  pooler: EmbedPooler;
  'batch-size': number;
  'max-length'?: number;
  backend: BackendName;
  json?: string;
  detail: boolean;
}

/** A UserError when the SentEval data root is absent, saying how to get it. */
function checkDataDir(dataDir: string): string {
  if (!isDirectory(dataDir)) {
    throw new UserError(`SentEval data not found at ${path.resolve(dataDir)}: run \`npx micse data download senteval\` ` +
      `(needs internet access) or pass --data DIR (the folder holding STS/ and SICK/)`);
  }
  return resolveSentevalRoot(dataDir);
}

export const evalCommand: CommandModule<object, EvalArgs> = {
  command: 'eval',
  describe: 'STS evaluation (SentEval protocol): STS12-16, STS-B, SICK-R, Avg; Spearman x 100',
  builder: (y) =>
    withBackend(y)
      .option('model', { type: 'string', demandOption: true, describe: 'checkpoint directory, run directory (uses best/, else last/) or Hub name' })
      .option('data', { type: 'string', default: DEFAULT_SENTEVAL_DIR, describe: 'SentEval data root (holding STS/ and SICK/)' })
      .option('tasks', {
        type: 'string',
        default: ALL_TASKS_ALIAS,
        describe: `comma-separated: ${STS_TASK_NAMES.join(', ')}; '${ALL_TASKS_ALIAS}' = the 7 test tasks`,
      })
      .option('pooler', { choices: EMBED_POOLERS, default: 'cls_before_pooler' as EmbedPooler, describe: 'raw [CLS] (as miCSE evaluates) or mean' })
      .option('batch-size', { type: 'number', default: DEFAULT_EVAL_BATCH_SIZE, describe: 'sentences per forward pass' })
      .option('max-length', { type: 'number', describe: 'truncate to this many tokens (default: the model maximum, 512)' })
      .option('json', { type: 'string', describe: 'write the full report (per-subset scores and counts) to this JSON file' })
      .option('detail', { type: 'boolean', default: false, describe: 'also print per-subset Spearman/Pearson and pair counts' }) as never,
  handler: async (args) => {
    const tasks = parseStsTasks(args.tasks);
    const batchSize = args['batch-size'];
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new UserError(`--batch-size must be a positive integer, got ${batchSize}`);
    const maxLength = args['max-length'];
    if (maxLength !== undefined && (!Number.isInteger(maxLength) || maxLength < 1)) {
      throw new UserError(`--max-length must be a positive integer, got ${maxLength}`);
    }
    // Read every task file before loading the model, so a missing file fails at once.
    const dataDir = checkDataDir(args.data);
    const data = loadStsTasks(dataDir, tasks);

    await activateBackend(args.backend);
    const modelDir = await resolveCheckpoint(args.model);
    const { model, tokenizer, report } = await loadPretrained(modelDir);
    process.stderr.write(`model: ${report.dir} | pooler: ${args.pooler} | data: ${path.resolve(dataDir)}\n`);
    const embedOpts: EmbedOptions = { batchSize, pooler: args.pooler };
    if (maxLength !== undefined) embedOpts.maxLength = maxLength;
    try {
      const ev = await evaluateSts((s) => embed(model, tokenizer, s, embedOpts), { data, batchSize });
      process.stdout.write(formatStsTable(ev) + '\n');
      if (args.detail) process.stdout.write('\n' + formatStsDetail(ev) + '\n');
      process.stderr.write(formatThroughput(ev) + '\n');
      if (args.json !== undefined) {
        const json = stsReportJson(ev, {
          model: report.dir,
          pooler: args.pooler,
          backend: report.backend.name,
          batchSize,
          maxLength: maxLength ?? null,
          data: path.resolve(dataDir),
        });
        await writeFileAtomic(args.json, JSON.stringify(json, null, 1) + '\n');
        process.stderr.write(`wrote ${args.json}\n`);
      }
    } finally {
      model.dispose();
    }
  },
};
