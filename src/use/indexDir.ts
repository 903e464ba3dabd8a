/**
 * An index directory's file names and meta.json, and the checks that need neither the model nor usearch: an index
 * build's corpus read through (countIndexCorpus) and its --out (checkIndexOut), and an index's meta.json
 * (readIndexMeta). Loads the corpus readers, not TF.js or usearch, so that `micse index build` says a corpus or --out
 * fault, and `micse search` an index that is not one, before it loads them (src/cli/use.ts); buildIndex (build.ts)
 * and openIndex (search.ts) run the same checks.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { cannotReadError, openCorpus, type CorpusOptionNames, type CorpusReader } from '../data/readers.js';
import { environmentError, UserError } from '../errors.js';
import { exists, fsFault, isJsonObject, isLockEntry, processAlive, readJsonObject, refuseNonEmptyDir, refuseReplacingDir, replacementSiblings, valueAtPath } from '../fsutil.js';
import type { AnnMeta } from './ann.js';
import type { ModelFingerprint } from './fingerprint.js';

/** The files of an index directory (build.ts's module comment says what each holds). */
export const INDEX_FILES = { vectors: 'vectors.npy', texts: 'texts.jsonl', ann: 'index.usearch', meta: 'meta.json', progress: 'progress.json' } as const;
/** The lock a running build holds in the index directory (beside INDEX_FILES, not one of them). */
export const INDEX_LOCK_FILE = 'build.lock';
/** Whether `name` in an index directory is the build lock or a temporary file of a build taking it. */
export const isIndexLock = (name: string) => isLockEntry(name, INDEX_LOCK_FILE);

/** What identifies a corpus file between runs (a changed file cannot be resumed). */
export interface CorpusIdentity {
  path: string;
  column: string | number | null;
  bytes: number;
  mtimeMs: number;
}

/** The corpus of an index build. */
export interface IndexCorpusOptions {
  /** Corpus: .txt (one sentence per line), .csv or .tsv with `column`. */
  corpus: string;
  column?: string | number | null;
  /** How messages name `column`; default the config key (CONFIG_CORPUS_NAMES). */
  names?: Partial<CorpusOptionNames>;
}

/** A corpus read through by countIndexCorpus. */
export interface CountedCorpus {
  reader: CorpusReader;
  identity: CorpusIdentity;
  /** Records in the corpus. */
  total: number;
}

async function countRecords(reader: CorpusReader): Promise<number> {
  let n = 0;
  for await (const _ of reader) n++;
  return n;
}

/**
 * Opens the corpus of an index build and reads it through (counting its records) before anything is loaded or
 * written: a UserError naming it when it cannot be read, its --column does not apply, a record is malformed or it
 * holds no sentence.
 */
export async function countIndexCorpus(opts: IndexCorpusOptions): Promise<CountedCorpus> {
  const column = opts.column ?? null;
  const reader = openCorpus(opts.corpus, { column, ...(opts.names !== undefined ? { names: opts.names } : {}) });
  let st;
  try {
    st = await fs.stat(opts.corpus);
  } catch (err) {
    throw cannotReadError('corpus', opts.corpus, err);
  }
  const identity: CorpusIdentity = { path: path.resolve(opts.corpus), column, bytes: st.size, mtimeMs: st.mtimeMs };
  const total = await countRecords(reader);
  if (total === 0) throw new UserError(`${opts.corpus}: no sentences to index (the file is empty or every line is blank)`);
  return { reader, identity, total };
}

/**
 * The checks of an index build's `out` that need neither the model nor the corpus read: a file in its place (mkdir's
 * fault, said before anything is embedded); with `force`, a folder that replacing it would remove more than it holds
 * for itself (refuseReplacingDir: the current folder or one above it, or one overlapping the corpus or the model
 * folder in `inputs`, where given); without `force`, a folder of anything but an index (no meta.json or
 * progress.json): only an index's own folder is reused or resumed, anything else may be someone's. The CLI runs
 * them before it reads the corpus and loads the model; buildIndex runs them before it reads the corpus, and again
 * before it takes the folder's lock.
 */
export async function checkIndexOut(out: string, force: boolean, inputs: { corpus?: string; model?: string } = {}): Promise<void> {
  const st = await fs.stat(out).catch(() => null);
  if (st === null) return;
  if (!st.isDirectory()) throw environmentError(fsFault('EEXIST', 'mkdir', out))!;
  if (force) {
    await refuseReplacingDir(out, '--out', [
      ...(inputs.corpus !== undefined ? [{ path: inputs.corpus, what: 'the corpus' }] : []),
      ...(inputs.model !== undefined ? [{ path: inputs.model, what: 'the model' }] : []),
    ]);
    return;
  }
  const ours = (await exists(path.join(out, INDEX_FILES.meta))) || (await exists(path.join(out, INDEX_FILES.progress)));
  if (!ours) await refuseNonEmptyDir(out, '--out', ` and not an index (no ${INDEX_FILES.meta} or ${INDEX_FILES.progress})`, isIndexLock);
}

export const INDEX_FORMAT = 'micse-index';
export const INDEX_FORMAT_VERSION = 1;
/** The tag of the siblings `--force` makes beside an index directory (replacementSibling). */
export const INDEX_REPLACEMENT_TAG = 'index';

export interface IndexMeta {
  format: typeof INDEX_FORMAT;
  version: number;
  model: { path: string; fingerprint: ModelFingerprint; hiddenSize: number };
  corpus: CorpusIdentity & { sha256: string | null; records: number; skippedBlank: number; skippedInvalid: number };
  count: number;
  dim: number;
  files: { vectors: string; texts: string };
  ann: AnnMeta;
  build: { embedSeconds: number; sentencesPerSecond: number; indexSeconds: number; vectorsPerSecond: number; createdAt: string };
}

/** The fields of meta.json the code reads, with their JSON types (checked once, by readIndexMeta). */
const META_FIELDS: readonly (readonly [string, 'string' | 'number'])[] = [
  ['version', 'number'], ['count', 'number'], ['dim', 'number'],
  ['model.path', 'string'], ['model.fingerprint.sha256', 'string'], ['model.fingerprint.pooler', 'string'], ['model.fingerprint.maxLength', 'number'],
  ['corpus.path', 'string'], ['corpus.bytes', 'number'], ['corpus.mtimeMs', 'number'],
  ['files.vectors', 'string'], ['files.texts', 'string'],
  ['ann.file', 'string'], ['ann.library', 'string'], ['ann.connectivity', 'number'], ['ann.expansionAdd', 'number'], ['ann.expansionSearch', 'number'],
];

/**
 * Throws a UserError naming `file` and the first key of `fields` that is missing or of another type; where a key
 * above it is there but not an object (`"model": 5` for `model.path`), that key is the one named.
 */
export function checkFields(raw: Record<string, unknown>, fields: readonly (readonly [string, string])[], file: string): void {
  for (const [key, type] of fields) {
    const parts = key.split('.');
    for (let i = 1; i < parts.length; i++) {
      const above = parts.slice(0, i).join('.');
      const v = valueAtPath(raw, above);
      if (v !== undefined && !isJsonObject(v)) throw new UserError(`${file}: ${above} is ${JSON.stringify(v)}, expected an object`);
    }
    const v = valueAtPath(raw, key);
    if (typeof v !== type) throw new UserError(`${file}: ${key} is ${v === undefined ? 'missing' : JSON.stringify(v)}, expected a ${type}`);
  }
}

/**
 * Reads and checks meta.json of an index directory: a UserError naming the file when it is missing, not JSON, not
 * an index's (no `"format": "micse-index"`) or lacks a field the code reads.
 */
export async function readIndexMeta(dir: string): Promise<IndexMeta> {
  const file = path.join(dir, INDEX_FILES.meta);
  if (!(await exists(file))) {
    if (!(await exists(dir))) await refuseSwapped(dir);
    const partial = await exists(path.join(dir, INDEX_FILES.progress));
    throw new UserError(`${dir}: not a finished index (no ${INDEX_FILES.meta})${partial ? '; a build was interrupted there: rerun `micse index build` to finish it' : ''}`);
  }
  const raw = await readJsonObject(file);
  if (raw['format'] !== INDEX_FORMAT) throw new UserError(`${file}: not an index's meta.json (format is ${JSON.stringify(raw['format'])}, expected "${INDEX_FORMAT}")`);
  checkFields(raw, META_FIELDS, file);
  return raw as unknown as IndexMeta;
}

/**
 * Throws a UserError when the missing index directory `dir` was moved aside by a --force rebuild between its two
 * renames: a running one's (wait for it), or a killed one's, with the command that puts the previous index back
 * (a build into `dir` recovers it first, recoverReplacement; one with the previous index's own model and corpus then
 * finds it up to date). Readers do not open the sibling themselves: it is named by a pid and renamed or removed by
 * the next build, and which of the two siblings is wanted (the previous index, or the new one a kill left whole
 * beside it) is the user's choice. Returns when there is no such sibling.
 */
async function refuseSwapped(dir: string): Promise<void> {
  const aside = (await replacementSiblings(dir, INDEX_REPLACEMENT_TAG)).find((s) => s.kind === 'aside');
  if (aside === undefined) return;
  if (processAlive(aside.pid)) {
    throw new UserError(`${dir}: being replaced by a running \`micse index build --force\` (pid ${aside.pid}); retry when it has finished`);
  }
  const prev = await readJsonObject(path.join(aside.path, INDEX_FILES.meta)).catch(() => null);
  const model = valueAtPath(prev, 'model.path');
  const corpus = valueAtPath(prev, 'corpus.path');
  const column = valueAtPath(prev, 'corpus.column');
  const repair = typeof model === 'string' && typeof corpus === 'string'
    ? `\`micse index build --model ${model} --corpus ${corpus}${typeof column === 'string' || typeof column === 'number' ? ` --column ${column}` : ''} --out ${dir}\``
    : `\`micse index build\` with --out ${dir}`;
  throw new UserError(`${dir}: missing: a \`micse index build --force\` into it was killed between its two renames, leaving the previous ` +
    `${prev !== null ? 'index' : 'content'} in ${aside.path}; run ${repair} to put it back`);
}
