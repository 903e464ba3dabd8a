/**
 * `buildIndex`: corpus -> index directory, resumable.
 *
 * Layout of an index directory:
 *   vectors.npy     float32 [n, hidden] raw sentence embeddings, in corpus order (row id = position)
 *   texts.jsonl     one {"text", "line"} per row (line = 1-based line in the corpus)
 *   index.usearch   the ANN graph over the same rows (keys = row ids)
 *   meta.json       model path and fingerprint, corpus identity, ANN library and parameters, build timings;
 *                   written last, so its presence means the index is complete
 *   progress.json   while embedding: rows done and the byte length of texts.jsonl, rewritten atomically after
 *                   every chunk; a rerun with the same model and corpus continues from there
 *   build.lock      while a build runs (INDEX_LOCK_FILE, not one of the index's files): the building process's pid
 *                   (PidLock), so that a second build into the same directory is refused naming it; a killed
 *                   build's lock names a dead pid and is taken over by the next build. A build that finds the
 *                   index up to date in a folder without a running build's lock takes no lock and writes nothing
 *                   but the removal of a killed build's lock, where it can (so it works in a folder it cannot
 *                   write)
 *
 * The corpus is streamed (src/data/readers.ts) and embedded `chunkSize` sentences at a time, so memory holds
 * one chunk of texts plus the ANN graph, never the corpus.
 *
 * `force` replaces what the directory holds, as `export --force` replaces its output: whole (files that are not
 * the index's go too), and only once the new index is complete. A directory whose replacement would remove more than
 * the user put there for it (the current folder or one above it, or one that is, holds or lies in the corpus or the
 * model folder) is refused before anything is read or written (indexDir.ts checkIndexOut, refuseReplacingDir). The
 * corpus is read through (counted) before anything is written but the lock (a folder made for it alone is removed
 * again when the build fails); a non-empty directory is then rebuilt in a sibling staging folder (`OUT.tmp-index-PID`) that replaces it by two renames (the
 * old one moved to `OUT.old-index-PID`, then removed), so a failed or killed rebuild leaves the previous content
 * whole and no half index under its name; the next build into the same directory repairs what a kill left
 * (recoverReplacement), and `search` on a directory a kill left moved aside says so (readIndexMeta). Between the two
 * renames the directory is missing and its lock moved aside with it: a build starting then may make the directory
 * for its own lock, but it finds the rebuild's sibling, named by a running process, and goes away again; the second
 * rename waits for that (publishStaging). A forced build is not resumed: it starts over.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { CorpusReader } from '../data/readers.js';
import { checkInteger, environmentError, UserError } from '../errors.js';
import { faultPoint } from '../faultPoints.js';
import { ensureDir, exists, PidLock, processAlive, readJsonObject, recoverReplacement, replacementSibling, replacementSiblings, temporaryOwner, writeFileAtomic } from '../fsutil.js';
import { checkBatchSize, embed, embedMaxLength } from '../model/embed.js';
import { DEFAULT_EMBED_BATCH_SIZE, DEFAULT_EMBED_POOLER, type EmbedPooler } from '../model/embedOptions.js';
import { checkPooler } from '../model/pooling.js';
import type { Pretrained } from '../model/pretrained.js';
import { createProgress } from '../progress.js';
import { ANN_LIBRARY, ANN_LIBRARY_VERSION, AnnIndex, type AnnMeta, type AnnParams } from './ann.js';
import { DEFAULT_ANN_PARAMS, DEFAULT_CHUNK_SIZE } from './defaults.js';
import { modelFingerprint, shortFingerprint, type ModelFingerprint } from './fingerprint.js';
import {
  checkFields, checkIndexOut, countIndexCorpus, INDEX_FILES, INDEX_FORMAT, INDEX_FORMAT_VERSION, INDEX_LOCK_FILE, INDEX_REPLACEMENT_TAG, isIndexLock, readIndexMeta,
  type CorpusIdentity, type CountedCorpus, type IndexCorpusOptions, type IndexMeta,
} from './indexDir.js';
import { NpyAppender, readNpyRows } from './npyAppend.js';

interface ProgressState {
  fingerprint: string;
  corpus: CorpusIdentity;
  dim: number;
  rows: number;
  textsBytes: number;
  complete: boolean;
  embedSeconds: number;
}

export interface BuildIndexOptions extends IndexCorpusOptions {
  /** Index directory (created). */
  out: string;
  pooler?: EmbedPooler;
  /** Token limit (default: the model's max positions; more is a UserError). */
  maxLength?: number;
  batchSize?: number;
  chunkSize?: number;
  ann?: Partial<AnnParams>;
  /**
   * Start over, replacing whatever `out` holds (a finished or partial index of something else, other files) once
   * the new index is complete (see the module comment).
   */
  force?: boolean;
  /** Progress bars on stderr. */
  progress?: boolean;
  /** Called after each chunk is safely on disk (rows done, rows total). */
  onChunk?: (rows: number, total: number) => void;
  /**
   * The corpus as countIndexCorpus read it through for these `corpus`, `column` and `names` (the CLI reads it before
   * it loads the model); read here first when absent.
   */
  counted?: CountedCorpus;
}

export interface BuildIndexReport {
  dir: string;
  meta: IndexMeta;
  /** Rows found on disk from an interrupted run and not embedded again. */
  resumedRows: number;
  /** True when `out` already held this exact index and nothing was done. */
  upToDate: boolean;
}

/** The fields of progress.json, with their JSON types. */
const PROGRESS_FIELDS: readonly (readonly [string, 'string' | 'number' | 'boolean'])[] = [
  ['fingerprint', 'string'], ['dim', 'number'], ['rows', 'number'], ['textsBytes', 'number'], ['complete', 'boolean'], ['embedSeconds', 'number'],
  ['corpus.path', 'string'], ['corpus.bytes', 'number'], ['corpus.mtimeMs', 'number'],
];

/** Reads and checks progress.json of a partial build (a UserError naming the file when it is not one). */
async function readProgress(file: string): Promise<ProgressState> {
  const raw = await readJsonObject(file);
  checkFields(raw, PROGRESS_FIELDS, file);
  return raw as unknown as ProgressState;
}

/** Awaits `read`; a UserError (the file is not an index's) gets what to do about an `out` that holds something else. */
async function refusingOther<T>(read: Promise<T>, out: string): Promise<T> {
  try {
    return await read;
  } catch (err) {
    throw err instanceof UserError ? new UserError(`${err.message}; choose another --out, or pass --force to replace what ${out} holds`) : err;
  }
}

function sameCorpus(a: CorpusIdentity, b: CorpusIdentity): boolean {
  return a.path === b.path && a.column === b.column && a.bytes === b.bytes && a.mtimeMs === b.mtimeMs;
}

/** Whether the finished index of `meta` is the one a build of this model, corpus and graph parameters would make. */
function sameIndex(meta: IndexMeta, fingerprint: ModelFingerprint, corpus: CorpusIdentity, params: AnnParams): boolean {
  return meta.model.fingerprint.sha256 === fingerprint.sha256 && sameCorpus(meta.corpus, corpus) &&
    meta.ann.connectivity === params.connectivity && meta.ann.expansionAdd === params.expansionAdd;
}

/**
 * Saves the ANN graph to `file` through a temporary file renamed over it. On failure the temporary file is removed
 * and the error names `file`: usearch's own ("Failed to serialize into stream") names neither the file nor the
 * cause, so the free space of the file system is added to it.
 */
async function saveAnnAtomic(ann: AnnIndex, file: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    // Created here first, so that a read-only or missing directory fails with Node's error code.
    await (await fs.open(tmp, 'w')).close();
    ann.save(tmp);
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    const env = environmentError(err, file, 'write');
    if (env !== null) throw env;
    if (!(err instanceof Error) || 'code' in err) throw err;
    const free = await fs.statfs(path.dirname(file)).then((s) => s.bavail * s.bsize, () => null);
    throw new UserError(`cannot write ${file}: usearch could not save the index (${err.message})` +
      (free !== null ? `; ${(free / 2 ** 20).toFixed(1)} MiB free on its file system` : ''), { cause: err });
  }
}

/** Embeds a corpus into `opts.out` and builds its ANN index (see the module comment for the layout and `force`). */
export async function buildIndex(pretrained: Pick<Pretrained, 'model' | 'tokenizer' | 'report'>, opts: BuildIndexOptions): Promise<BuildIndexReport> {
  const { model } = pretrained;
  const out = opts.out;
  const pooler = opts.pooler ?? DEFAULT_EMBED_POOLER;
  checkPooler(pooler);
  const maxLength = embedMaxLength(model, opts.maxLength);
  const batchSize = opts.batchSize ?? DEFAULT_EMBED_BATCH_SIZE;
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const params: AnnParams = { ...DEFAULT_ANN_PARAMS, ...opts.ann };
  checkInteger('chunkSize', chunkSize);
  checkBatchSize(batchSize);
  for (const key of ['connectivity', 'expansionAdd', 'expansionSearch'] as const) checkInteger(`ann.${key}`, params[key]);
  checkInteger('ann.threads', params.threads, 0, ' (0: every core)');

  // --out's cheap checks first (again after a killed rebuild's recovery, below); then the corpus, read through
  // before anything is written: a corpus that cannot be read (or is empty) leaves `out` as it was.
  const inputs = { corpus: opts.corpus, model: pretrained.report.dir };
  await checkIndexOut(out, opts.force === true, inputs);
  const counted = opts.counted ?? (await countIndexCorpus(opts));
  if (counted.identity.path !== path.resolve(opts.corpus) || counted.identity.column !== (opts.column ?? null)) {
    throw new Error(`buildIndex: counted is the corpus ${counted.identity.path} (column ${counted.identity.column}), not ${opts.corpus} (column ${opts.column ?? null})`);
  }
  const { reader, identity: corpus, total } = counted;
  const fingerprint = await modelFingerprint(pretrained.report.dir, pooler, maxLength);

  await recoverReplacement(out, INDEX_REPLACEMENT_TAG);
  await checkIndexOut(out, opts.force === true, inputs);
  // An index that is already this one needs no write, so no lock: a folder the user may only read still answers
  // "up to date". meta.json is written last, by a rename, and a --force rebuild swaps the folder in by renames, so a
  // meta.json found here belongs to a complete index, never to one a running build is writing: a killed build's lock
  // beside it is no obstacle (it is removed where the folder can be written). A folder whose lock names a running
  // build goes the locked way below, and is refused there.
  const lock = new PidLock(path.join(out, INDEX_LOCK_FILE), 'index build');
  if (opts.force !== true && (await lock.holder()) === null && (await exists(path.join(out, INDEX_FILES.meta)))) {
    const meta = await refusingOther(readIndexMeta(out), out);
    if (sameIndex(meta, fingerprint, corpus, params)) {
      await lock.removeStale();
      return { dir: out, meta, resumedRows: meta.count, upToDate: true };
    }
  }
  // The folder holds the build's lock, so it is made now; when this call made it and wrote nothing else, it goes again.
  const made = !(await exists(out));
  await ensureDir(out);
  try {
    await lock.take().catch((err: unknown) => {
      throw environmentError(err, out, 'write') ?? err;
    });
    faultPoint('index:locked');
    // A --force rebuild between its two renames holds no lock in `out` (it moved aside with the old folder), and this
    // build may have made `out` anew: it goes away again (releasing the lock and the folder it made), so that the
    // rebuild's second rename, which waits for that (publishStaging), puts its index in.
    const swapping = (await replacementSiblings(out, INDEX_REPLACEMENT_TAG)).find((s) => processAlive(s.pid));
    if (swapping !== undefined) {
      throw new UserError(`${out}: in use by another index build (pid ${swapping.pid}, swapping in a rebuilt index from ${swapping.path}); ` +
        'wait for it to finish or stop it');
    }
    return await buildLocked(pretrained, opts, { reader, corpus, fingerprint, params, total, batchSize, chunkSize, lock });
  } finally {
    await lock.release();
    if (made) await fs.rmdir(out).catch(() => undefined);
  }
}

/** How long a --force rebuild's second rename waits for a build that made --out meanwhile to go away (publishStaging). */
const PUBLISH_WAIT_MS = 10_000;

/** Thrown by publishStaging when `out` was taken by someone else: both siblings are left for the user. */
class PublishConflict extends UserError {}

/**
 * The second rename of a --force rebuild: `staging` to `out`, which the first moved aside to `old`. A build that
 * started meanwhile may have made `out` for its lock; it finds `old`, named by this running process, and goes away
 * again (buildIndex), so while `out` holds nothing but locks this waits for that, removing the locks of builds
 * killed meanwhile (the rename replaces the empty folder they leave). `out` holding anything else, or locks that
 * stay for PUBLISH_WAIT_MS, is a PublishConflict naming both siblings, which stay as they are (recoverReplacement
 * keeps such a pair) so that neither index is lost.
 */
async function publishStaging(staging: string, out: string, old: string): Promise<void> {
  const deadline = Date.now() + PUBLISH_WAIT_MS;
  for (;;) {
    try {
      await fs.rename(staging, out);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
    }
    const held = await fs.readdir(out).catch(() => [] as string[]);
    if (held.some((name) => !isIndexLock(name)) || Date.now() > deadline) {
      throw new PublishConflict(`${out}: made by another process while this build swapped its rebuilt index in (it holds ${held.join(', ')}); ` +
        `the previous content is in ${old} and the new index in ${staging}: move ${out} away and rename either of them to ${out}`);
    }
    await new PidLock(path.join(out, INDEX_LOCK_FILE), 'index build').removeStale();
    for (const name of held) {
      const pid = temporaryOwner(name);
      if (pid !== null && !processAlive(pid)) await fs.rm(path.join(out, name), { force: true });
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The body of buildIndex, run holding `lock` in `opts.out`, a folder that exists. */
async function buildLocked(pretrained: Pick<Pretrained, 'model' | 'tokenizer' | 'report'>, opts: BuildIndexOptions,
  held: Omit<BuildInput, 'pretrained' | 'opts' | 'state'> & { lock: PidLock }): Promise<BuildIndexReport> {
  const { lock, ...input } = held;
  const { corpus, fingerprint, params } = input;
  const out = opts.out;
  const dim = pretrained.model.config.hiddenSize;
  const force = opts.force === true;
  const inOut = (name: string) => path.join(out, name);
  let state: ProgressState = { fingerprint: fingerprint.sha256, corpus, dim, rows: 0, textsBytes: 0, complete: false, embedSeconds: 0 };
  if (!force) {
    // Only a folder of this index (finished, or partial) is reused without --force: anything else may be someone's.
    // (checkIndexOut refused a folder of anything else.) A finished index: nothing to do if it is this one, else refuse.
    if (await exists(inOut(INDEX_FILES.meta))) {
      const meta = await refusingOther(readIndexMeta(out), out);
      if (sameIndex(meta, fingerprint, corpus, params)) return { dir: out, meta, resumedRows: meta.count, upToDate: true };
      throw new UserError(`${out} already holds an index of ${meta.corpus.path} by model ${meta.model.path} ` +
        `(fingerprint ${shortFingerprint(meta.model.fingerprint)}); choose another --out, or pass --force to replace it`);
    }
    // A partial run: resume when it is the same model and corpus.
    if (await exists(inOut(INDEX_FILES.progress))) {
      const prev = await refusingOther(readProgress(inOut(INDEX_FILES.progress)), out);
      if (prev.fingerprint !== fingerprint.sha256 || prev.dim !== dim || !sameCorpus(prev.corpus, corpus)) {
        throw new UserError(`${inOut(INDEX_FILES.progress)}: a partial build of another model or corpus (or the corpus changed since); ` +
          'pass --force to start over, or use another --out');
      }
      state = prev;
    }
  }

  // --force on a folder that holds anything but the lock: build beside it, then swap it in (see the module comment).
  const replace = force && (await fs.readdir(out)).some((name) => !isIndexLock(name));
  const staging = replacementSibling(out, INDEX_REPLACEMENT_TAG, 'staging', process.pid);
  const dir = replace ? staging : out;
  if (replace) await fs.rm(staging, { recursive: true, force: true });
  let keepStaging = false;
  try {
    // The staging folder is ours; a fault making it is reported on the --out the user named.
    await ensureDir(dir, out, replace ? 'write' : undefined);
    const report = await buildInto(dir, { ...input, pretrained, opts, state });
    if (!replace) return report;
    // Publish: move the previous content aside, rename the staging folder in, then drop the old one. The staging
    // folder gets a copy of the lock first, so that the folder renamed in is held by this build until it returns.
    await fs.copyFile(lock.file, path.join(staging, INDEX_LOCK_FILE));
    const old = replacementSibling(out, INDEX_REPLACEMENT_TAG, 'aside', process.pid);
    faultPoint('index:staged');
    await fs.rename(out, old);
    faultPoint('index:moved-aside');
    // Should the staging folder not go in, the previous content goes back; where someone else's folder took --out,
    // both stay beside it, named in the error.
    await publishStaging(staging, out, old).catch(async (err: unknown) => {
      if (err instanceof PublishConflict) keepStaging = true;
      else await fs.rename(old, out).catch(() => undefined);
      throw err;
    });
    await fs.rm(old, { recursive: true, force: true });
    return { ...report, dir: out };
  } finally {
    if (replace && !keepStaging) await fs.rm(staging, { recursive: true, force: true });
  }
}

/** What buildIndex has checked and read before it writes, for buildInto. */
interface BuildInput {
  pretrained: Pick<Pretrained, 'model' | 'tokenizer' | 'report'>;
  opts: BuildIndexOptions;
  reader: CorpusReader;
  corpus: CorpusIdentity;
  fingerprint: ModelFingerprint;
  params: AnnParams;
  /** Where embedding starts: a fresh state, or a partial build's to resume. */
  state: ProgressState;
  /** Records in the corpus. */
  total: number;
  /** Sentences per forward pass, and per chunk written (checked). */
  batchSize: number;
  chunkSize: number;
}

/** Embeds the corpus into `dir` (continuing from `input.state`), builds the ANN graph and writes meta.json last. */
async function buildInto(dir: string, input: BuildInput): Promise<BuildIndexReport> {
  const { pretrained, opts, reader, corpus, fingerprint, params, total, batchSize, chunkSize } = input;
  const { model, tokenizer } = pretrained;
  let state = input.state;
  const dim = model.config.hiddenSize;
  const { pooler, maxLength } = fingerprint;
  const file = (name: string) => path.join(dir, name);
  const annMeta: AnnMeta = { library: ANN_LIBRARY, version: ANN_LIBRARY_VERSION, metric: 'cos', quantization: 'f32', file: INDEX_FILES.ann, ...params };
  const resumedRows = state.rows;
  const writeState = () => writeFileAtomic(file(INDEX_FILES.progress), JSON.stringify(state, null, 2) + '\n');

  // 1) Embed the corpus chunk by chunk, appending to vectors.npy and texts.jsonl.
  if (!state.complete) {
    await writeState(); // before any other file, so that a build killed in its first chunk leaves a folder a rerun recognises
    const vectors = await NpyAppender.open(file(INDEX_FILES.vectors), dim, state.rows);
    const texts = await fs.open(file(INDEX_FILES.texts), state.rows === 0 ? 'w' : 'r+');
    try {
      await texts.truncate(state.textsBytes);
      const progress = createProgress({ label: 'embed corpus', total, unit: 'sent', silent: opts.progress !== true });
      progress.tick(state.rows);
      let seen = 0;
      let chunk: { text: string; line: number }[] = [];
      const flush = async () => {
        const t0 = performance.now();
        const vecs = await embed(model, tokenizer, chunk.map((c) => c.text), { batchSize, maxLength, pooler });
        const flat = new Float32Array(vecs.length * dim); // [chunk, dim]
        vecs.forEach((v, i) => flat.set(v, i * dim));
        await vectors.append(flat);
        const body = Buffer.from(chunk.map((c) => JSON.stringify({ text: c.text, line: c.line }) + '\n').join(''), 'utf8');
        try {
          await texts.write(body, 0, body.length, state.textsBytes);
          await texts.sync();
        } catch (err) {
          throw environmentError(err, file(INDEX_FILES.texts), 'write') ?? err;
        }
        state = { ...state, rows: state.rows + chunk.length, textsBytes: state.textsBytes + body.length, embedSeconds: state.embedSeconds + (performance.now() - t0) / 1000 };
        await writeState();
        progress.tick(chunk.length);
        chunk = [];
        opts.onChunk?.(state.rows, total);
      };
      for await (const rec of reader) {
        if (seen++ < state.rows) continue; // done by an earlier run
        chunk.push({ text: rec.text, line: rec.line });
        if (chunk.length === chunkSize) await flush();
      }
      if (chunk.length > 0) await flush();
      if (state.rows !== total) throw new UserError(`${opts.corpus}: read ${state.rows} sentences, counted ${total} before; did the file change during the build?`);
      state = { ...state, complete: true };
      await writeState();
      progress.done();
    } finally {
      await texts.close();
      await vectors.close();
    }
  }

  // 2) Build the ANN graph from vectors.npy (streamed in chunks), save it, then write meta.json.
  const t1 = performance.now();
  const ann = AnnIndex.create(dim, params);
  const fh = await fs.open(file(INDEX_FILES.vectors), 'r');
  const progress = createProgress({ label: 'build index', total: state.rows, unit: 'vec', silent: opts.progress !== true });
  try {
    for (let from = 0; from < state.rows; from += chunkSize) {
      const n = Math.min(chunkSize, state.rows - from);
      ann.add(from, await readNpyRows(fh, dim, from, n), params.threads);
      progress.tick(n);
    }
  } finally {
    await fh.close();
  }
  progress.done();
  await saveAnnAtomic(ann, file(INDEX_FILES.ann));
  const annBytes = (await fs.stat(file(INDEX_FILES.ann))).size;
  const indexSeconds = (performance.now() - t1) / 1000;

  const meta: IndexMeta = {
    format: INDEX_FORMAT,
    version: INDEX_FORMAT_VERSION,
    model: { path: path.resolve(pretrained.report.dir), fingerprint, hiddenSize: dim },
    corpus: { ...corpus, sha256: reader.stats.sha256, records: state.rows, skippedBlank: reader.stats.blank, skippedInvalid: reader.stats.invalid },
    count: state.rows,
    dim,
    files: { vectors: INDEX_FILES.vectors, texts: INDEX_FILES.texts },
    ann: { ...annMeta, bytes: annBytes },
    build: {
      embedSeconds: state.embedSeconds,
      sentencesPerSecond: state.embedSeconds > 0 ? state.rows / state.embedSeconds : 0, // over every run that embedded rows
      indexSeconds,
      vectorsPerSecond: indexSeconds > 0 ? state.rows / indexSeconds : 0,
      createdAt: new Date().toISOString(),
    },
  };
  await writeFileAtomic(file(INDEX_FILES.meta), JSON.stringify(meta, null, 2) + '\n');
  await fs.rm(file(INDEX_FILES.progress), { force: true });
  return { dir, meta, resumedRows, upToDate: false };
}
