/**
 * An index directory's file names, and the checks of an index build that need neither the model nor usearch: its
 * corpus read through (countIndexCorpus) and its --out (checkIndexOut). Loads the corpus readers, not TF.js or
 * usearch, so that `micse index build` says a corpus or --out fault before it loads them (src/cli/use.ts); buildIndex
 * (build.ts) runs the same checks.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { openCorpus, type CorpusOptionNames, type CorpusReader } from '../data/readers.js';
import { environmentError, UserError } from '../errors.js';
import { exists, fsFault, isLockEntry, refuseNonEmptyDir, refuseReplacingDir } from '../fsutil.js';

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
    throw new UserError(`cannot read corpus ${opts.corpus}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
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
