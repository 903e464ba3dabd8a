/**
 * `micse data subset` (a reproducible few-shot subset + manifest) and `micse data download` (public corpora).
 */
import type { Argv, CommandModule } from 'yargs';
import { DATASET_NAMES, DEFAULT_DATA_DIR, downloadDataset, type DatasetName } from '../data/download.js';
import {
  BLANK_LINES_CHOICES, CORPUS_FORMATS, DEFAULT_BLANK_LINES, DEFAULT_CORPUS_FORMAT, DEFAULT_ON_INVALID, ON_INVALID_CHOICES,
  type BlankLines, type CorpusFormatChoice, type OnInvalid,
} from '../data/corpusOptions.js';
import { DEFAULT_SUBSET_SEED, MAX_SEED } from '../data/seeds.js';
import type { Duplicates, SubsetOptionNames } from '../data/subset.js';
import { UserError } from '../errors.js';
import { numberFlag, POSITIVE_INT } from './common.js';

interface SubsetArgs {
  input: string;
  output: string;
  fraction?: number;
  count?: number;
  seed: number;
  column?: string;
  format: CorpusFormatChoice;
  'on-invalid': OnInvalid;
  'blank-lines': BlankLines;
  duplicates: Duplicates;
  force: boolean;
}

interface DownloadArgs {
  datasets: DatasetName[];
  dir: string;
  force: boolean;
}

/** The flags of `data subset` that give the options the data layer's messages name. */
const SUBSET_FLAG_NAMES: SubsetOptionNames = {
  column: '--column', format: '--format', blankLines: '--blank-lines', fraction: '--fraction', count: '--count', subsetSeed: '--seed',
};

const subsetCommand: CommandModule<object, SubsetArgs> = {
  command: 'subset',
  describe: 'Draw a reproducible subset (by --fraction or --count) and write it with its manifest beside it (out.txt: out.manifest.json; another name: NAME.manifest.json)',
  builder: (y) =>
    y
      .option('input', { type: 'string', demandOption: true, describe: '.txt (one sentence per line), .csv or .tsv' })
      .option('output', { type: 'string', demandOption: true, describe: 'subset file (one sentence per line)' })
      .option('fraction', { ...numberFlag('fraction', { above: 0, max: 1 }), describe: 'share of the corpus, 0 < f <= 1 (0.001 = 0.1%); this or --count is required' })
      .option('count', { ...numberFlag('count', POSITIVE_INT), describe: 'number of sentences; this or --fraction is required' })
      .option('seed', { ...numberFlag('seed', { integer: true, min: 0, max: MAX_SEED }), default: DEFAULT_SUBSET_SEED, describe: 'subset seed (official: 48..52)' })
      .option('column', { type: 'string', describe: 'CSV/TSV column name or 0-based index (default: first column)' })
      .option('format', { choices: CORPUS_FORMATS, default: DEFAULT_CORPUS_FORMAT, describe: 'auto: by extension' })
      .option('on-invalid', { choices: ON_INVALID_CHOICES, default: DEFAULT_ON_INVALID, describe: 'lines that are not valid UTF-8 or hold a NUL byte' })
      .option('blank-lines', { choices: BLANK_LINES_CHOICES, default: DEFAULT_BLANK_LINES, describe: '.txt: skip blank lines, or keep them as empty sentences (the authors\' text loader)' })
      .option('duplicates', { choices: ['keep', 'drop'] as const, default: 'keep' as const, describe: 'keep: every line is a candidate; drop: first occurrence only' })
      .option('force', { type: 'boolean', default: false, describe: 'replace an existing --output file and its manifest' })
      .conflicts('fraction', 'count') as never,
  handler: async (args) => {
    // Without either the draw would copy the whole corpus (what a training config without both keys does).
    if (args.fraction === undefined && args.count === undefined) throw new UserError('give --count N or --fraction F (how many sentences to draw)');
    const { writeSubset } = await import('../data/subset.js');
    const { manifest, manifestPath, output } = await writeSubset({
      path: args.input,
      output: args.output,
      fraction: args.fraction ?? null,
      count: args.count ?? null,
      subsetSeed: args.seed,
      column: args.column ?? null,
      format: args.format,
      onInvalid: args['on-invalid'],
      blankLines: args['blank-lines'],
      duplicates: args.duplicates,
      force: args.force,
      progress: true,
      names: SUBSET_FLAG_NAMES,
    });
    const i = manifest.input;
    process.stderr.write(
      `${args.input}: ${i.candidates} candidate sentences (${i.blank} blank ${i.blankLines === 'keep' ? 'kept' : 'skipped'}, ${i.invalid} invalid` +
        `${i.invalid > 0 ? ` at lines ${i.invalidLines.join(', ')}${i.invalid > i.invalidLines.length ? ', ...' : ''}` : ''}` +
        `${i.duplicatesDropped > 0 ? `, ${i.duplicatesDropped} duplicates dropped` : ''})\n` +
        `wrote ${manifest.selection.size} sentence${manifest.selection.size === 1 ? '' : 's'} (seed ${manifest.selection.seed}) to ${output}, manifest ${manifestPath}\n`,
    );
  },
};

const downloadCommand: CommandModule<object, DownloadArgs> = {
  command: 'download <datasets..>',
  describe: `Download ${DATASET_NAMES.join(' | ')} (resumable, checksummed)`,
  builder: (y) =>
    y
      .positional('datasets', { choices: DATASET_NAMES, array: true, describe: 'what to fetch' })
      .option('dir', { type: 'string', default: DEFAULT_DATA_DIR, describe: 'download directory' })
      .option('force', { type: 'boolean', default: false, describe: 'download again even if present' }) as never,
  handler: async (args) => {
    for (const name of args.datasets) {
      const { results, sentevalDir } = await downloadDataset(name, { dir: args.dir, force: args.force });
      for (const r of results) process.stderr.write(`${r.status.padEnd(10)} ${r.target} sha256 ${r.sha256}\n`);
      if (sentevalDir !== undefined) process.stderr.write(`SentEval data ready: set data.senteval: ${sentevalDir}\n`);
    }
  },
};

export const dataCommand: CommandModule<object, object> = {
  // No <command> positional: yargs would demand it with its own message, before the one of demandCommand.
  command: 'data',
  describe: 'Training data: few-shot subsets and downloads',
  builder: (y: Argv) =>
    y
      .command(subsetCommand)
      .command(downloadCommand)
      .demandCommand(1, 'name a data command: subset or download') as never,
  handler: () => undefined,
};
