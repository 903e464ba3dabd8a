/**
 * Flags several commands share, so they read and behave the same everywhere, and the helpers their handlers share.
 * What only a handler needs (the corpus reader, TF.js) is imported when it runs, so that help and argument errors
 * load neither.
 */
import type { Argv } from 'yargs';
import type { CorpusOptionNames } from '../data/readers.js';
import { UserError } from '../errors.js';
import { BACKEND_NAMES, type BackendName } from '../model/backendNames.js';
import { DEFAULT_EMBED_BATCH_SIZE, DEFAULT_EMBED_POOLER, EMBED_POOLERS, type EmbedPooler } from '../model/embedOptions.js';
import type { LoadOptions } from '../model/pretrained.js';

/** The values a numeric flag accepts: integers only, and bounds (`above`: strictly greater than). */
export interface NumberRange {
  integer?: boolean;
  min?: number;
  above?: number;
  max?: number;
}

function rangeText(r: NumberRange): string {
  const bounds = [
    ...(r.min !== undefined ? [`>= ${r.min}`] : []),
    ...(r.above !== undefined ? [`> ${r.above}`] : []),
    ...(r.max !== undefined ? [`<= ${r.max}`] : []),
  ];
  return `${r.integer === true ? 'an integer' : 'a number'}${bounds.length > 0 ? ` ${bounds.join(' and ')}` : ''}`;
}

/** A flag as it is typed: `-k` for a one-letter name (as yargs' help shows it), `--batch-size` otherwise. */
export function flagName(name: string): string {
  return name.length === 1 ? `-${name}` : `--${name}`;
}

/** The number a flag's raw value (as yargs parsed it) stands for, or a UserError naming the flag and its range. */
export function parseNumberFlag(flag: string, range: NumberRange, raw: unknown): number {
  if (Array.isArray(raw)) throw new UserError(`${flagName(flag)} given ${raw.length} times; give it once`);
  const n = typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : NaN;
  const ok = Number.isFinite(n) && (range.integer !== true || Number.isInteger(n)) &&
    (range.min === undefined || n >= range.min) && (range.above === undefined || n > range.above) && (range.max === undefined || n <= range.max);
  if (!ok) throw new UserError(`${flagName(flag)} must be ${rangeText(range)}, got ${typeof raw === 'string' ? `'${raw}'` : String(raw)}`);
  return n;
}

/**
 * The yargs spec of a numeric flag checked against `range` while parsing: spread it into `.option(flag, {...})`.
 * Every numeric flag of the CLI is declared through this, so each one rejects `0`, `-5` or `abc` the same way.
 */
export function numberFlag(flag: string, range: NumberRange) {
  return { requiresArg: true, coerce: (raw: unknown): number => parseNumberFlag(flag, range, raw) } as const;
}

/** Integers >= 1: batch sizes, counts, lengths. */
export const POSITIVE_INT: NumberRange = { integer: true, min: 1 };

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
    .option('pooler', { choices: EMBED_POOLERS, default: DEFAULT_EMBED_POOLER, describe: 'raw [CLS] (as miCSE evaluates) or mean' })
    .option('batch-size', { ...numberFlag('batch-size', POSITIVE_INT), default: batchSize, describe: 'sentences per forward pass' })
    .option('max-length', { ...numberFlag('max-length', { integer: true, min: 2 }), describe: 'truncate to this many tokens, [CLS] and [SEP] included (default and most: the model\'s max_position_embeddings)' });
}

/** The `embed` options the flags of `withEmbedFlags` give. */
export function embedOpts(a: EmbedFlags): { pooler: EmbedPooler; batchSize: number; maxLength?: number } {
  return { pooler: a.pooler, batchSize: a['batch-size'], ...(a['max-length'] !== undefined ? { maxLength: a['max-length'] } : {}) };
}

/** How the corpus reader names the options of a command whose only one of them is its --column flag. */
export const COLUMN_FLAG_NAMES: Partial<CorpusOptionNames> = { column: '--column', format: null };

/**
 * loadPretrained's options for `--max-length`: a value past the model's max_position_embeddings is refused, naming
 * the flag, as soon as config.json is read.
 */
export function maxLengthLoadOpts(a: EmbedFlags): LoadOptions {
  return a['max-length'] === undefined ? {} : { maxLength: { length: a['max-length'], name: '--max-length' } };
}

/**
 * Reads every record of a txt/CSV/TSV file (its column chosen by the command's --column flag), noting skipped
 * lines on stderr. With `purpose` (what the command does with them: 'embed', 'cluster'), a file that gives no
 * sentence is a UserError naming it, so that the command refuses it before loading a model or writing anything.
 * `what` names the file in a read error (`cannot read <what> FILE: CODE`; default `corpus`).
 */
export async function readSentences(file: string, column: string | undefined, { purpose, what }: { purpose?: string; what?: string } = {}): Promise<{ text: string; line: number }[]> {
  const { openCorpus } = await import('../data/readers.js');
  const reader = openCorpus(file, { column: column ?? null, names: COLUMN_FLAG_NAMES, what });
  const out: { text: string; line: number }[] = [];
  for await (const rec of reader) out.push({ text: rec.text, line: rec.line });
  const { blank, invalid, header } = reader.stats;
  if (out.length === 0 && purpose !== undefined) {
    throw new UserError(`${file}: no sentences to ${purpose} (the file is empty${header !== null ? ' but for its header' : ''}` +
      `${blank + invalid > 0 ? `; ${blank} blank and ${invalid} invalid lines skipped` : ''})`);
  }
  if (blank > 0 || invalid > 0) process.stderr.write(`${file}: skipped ${blank} blank and ${invalid} invalid lines\n`);
  return out;
}

/** Activates the backend and says on stderr which one was taken and why the others were skipped. */
export async function activateBackend(name: BackendName, quiet = false): Promise<void> {
  const { describeSelection, selectBackend } = await import('../model/backend.js');
  const sel = await selectBackend(name);
  if (!quiet) process.stderr.write(describeSelection(sel) + '\n');
}
