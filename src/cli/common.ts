/** Flags several commands share, so they read and behave the same everywhere. */
import type { Argv } from 'yargs';
import { openCorpus } from '../data/readers.js';
import { BACKEND_NAMES, describeSelection, selectBackend, type BackendName } from '../model/backend.js';
import { DEFAULT_EMBED_BATCH_SIZE } from '../model/embed.js';
import { EMBED_POOLERS, type EmbedPooler } from '../model/pooling.js';

export function withBackend<T>(y: Argv<T>) {
  return y.option('backend', {
    choices: BACKEND_NAMES,
    default: 'auto' as BackendName,
    describe: 'TF.js backend; auto tries tensorflow-gpu, tensorflow, webgpu, wasm, cpu',
  });
}

/** The flags of a command that loads `--model` and embeds sentences with it (`withEmbedFlags`). */
export interface EmbedFlags {
  model: string;
  pooler: EmbedPooler;
  'batch-size': number;
  'max-length'?: number;
  backend: BackendName;
}

/** --model (required), --pooler, --batch-size (default `batchSize`), --max-length and --backend. */
export function withEmbedFlags<T>(y: Argv<T>, batchSize = DEFAULT_EMBED_BATCH_SIZE) {
  return withBackend(y)
    .option('model', { type: 'string', demandOption: true, describe: 'checkpoint directory, run directory (uses best/, else last/) or Hub name' })
    .option('pooler', { choices: EMBED_POOLERS, default: 'cls_before_pooler' as EmbedPooler, describe: 'raw [CLS] (as miCSE evaluates) or mean' })
    .option('batch-size', { type: 'number', default: batchSize, describe: 'sentences per forward pass' })
    .option('max-length', { type: 'number', describe: 'truncate to this many tokens (default: the model maximum)' });
}

/** The `embed` options the flags of `withEmbedFlags` give. */
export function embedOpts(a: EmbedFlags): { pooler: EmbedPooler; batchSize: number; maxLength?: number } {
  return { pooler: a.pooler, batchSize: a['batch-size'], ...(a['max-length'] !== undefined ? { maxLength: a['max-length'] } : {}) };
}

/** Reads every record of a txt/CSV/TSV file, noting skipped lines on stderr. */
export async function readSentences(file: string, column: string | undefined): Promise<{ text: string; line: number }[]> {
  const reader = openCorpus(file, { column: column ?? null });
  const out: { text: string; line: number }[] = [];
  for await (const rec of reader) out.push({ text: rec.text, line: rec.line });
  if (reader.stats.blank > 0 || reader.stats.invalid > 0) {
    process.stderr.write(`${file}: skipped ${reader.stats.blank} blank and ${reader.stats.invalid} invalid lines\n`);
  }
  return out;
}

/** Activates the backend and says on stderr which one was taken and why the others were skipped. */
export async function activateBackend(name: BackendName, quiet = false): Promise<void> {
  const sel = await selectBackend(name);
  if (!quiet) process.stderr.write(describeSelection(sel) + '\n');
}
