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
import { checkOutputFile, writeFileAtomic } from '../fsutil.js';
import { activateBackend, embedOpts, maxLengthLoadOpts, withEmbedFlags, type EmbedFlags } from './common.js';

/** Where `--data` points when not given, relative to the working directory. */
export const DEFAULT_SENTEVAL_DIR = path.join('data', 'senteval');

interface EvalArgs extends EmbedFlags {
  data: string;
  tasks: string;
  json?: string;
  force: boolean;
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
    withEmbedFlags(y, DEFAULT_EVAL_BATCH_SIZE)
      .option('data', { type: 'string', default: DEFAULT_SENTEVAL_DIR, describe: 'SentEval data root (holding STS/ and SICK/)' })
      .option('tasks', {
        type: 'string',
        default: ALL_TASKS_ALIAS,
        describe: `comma-separated: ${STS_TASK_NAMES.join(', ')}; '${ALL_TASKS_ALIAS}' = the 7 test tasks`,
      })
      .option('json', { type: 'string', describe: 'write the full report (per-subset scores and counts) to this .json file' })
      .option('force', { type: 'boolean', default: false, describe: 'replace an existing --json file' })
      .option('detail', { type: 'boolean', default: false, describe: 'also print per-subset Spearman/Pearson and pair counts' }) as never,
  handler: async (args) => {
    const tasks = parseStsTasks(args.tasks);
    const batchSize = args['batch-size'];
    // The report is written after the whole evaluation: a path it cannot go to is refused before anything runs.
    if (args.json !== undefined) {
      if (path.extname(args.json).toLowerCase() !== '.json') throw new UserError(`${args.json}: --json must end in .json`);
      await checkOutputFile(args.json, '--json', args.force);
    }
    // Read every task file before loading the model, so a missing file fails at once.
    const dataDir = checkDataDir(args.data);
    const data = loadStsTasks(dataDir, tasks);

    const { embed } = await import('../model/embed.js');
    const { loadPretrained, resolveCheckpoint } = await import('../model/pretrained.js');
    await activateBackend(args.backend);
    const modelDir = await resolveCheckpoint(args.model);
    const { model, tokenizer, report } = await loadPretrained(modelDir, maxLengthLoadOpts(args));
    process.stderr.write(`model: ${report.dir} | pooler: ${args.pooler} | data: ${path.resolve(dataDir)}\n`);
    const opts = embedOpts(args);
    try {
      const ev = await evaluateSts((s) => embed(model, tokenizer, s, opts), { data, batchSize });
      process.stdout.write(formatStsTable(ev) + '\n');
      if (args.detail) process.stdout.write('\n' + formatStsDetail(ev) + '\n');
      process.stderr.write(formatThroughput(ev) + '\n');
      if (args.json !== undefined) {
        const json = stsReportJson(ev, {
          model: report.dir,
          pooler: args.pooler,
          backend: report.backend.name,
          batchSize,
          maxLength: args['max-length'] ?? null,
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
