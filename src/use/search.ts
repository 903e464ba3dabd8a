/**
 * `openIndex`: an index directory written by `buildIndex` -> a searchable `SemanticIndex`.
 * Queries are embedded with the model recorded in meta.json, or with a model the caller names, which must have
 * the same fingerprint: vectors of different models live in different spaces, so a mismatch is a UserError.
 * `exact: true` searches by brute-force cosine over vectors.npy instead of the ANN graph (the recall reference).
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { MAX_LINE_BYTES, readLines } from '../data/readers.js';
import { checkInteger, firstLineOf, kindOf, UserError } from '../errors.js';
import { exists } from '../fsutil.js';
import { checkBatchSize, embed } from '../model/embed.js';
import { DEFAULT_EMBED_BATCH_SIZE } from '../model/embedOptions.js';
import { loadPretrained, resolveCheckpoint, type Pretrained } from '../model/pretrained.js';
import { AnnIndex, annFileError, checkAnnFile } from './ann.js';
import { readIndexMeta, type IndexMeta } from './indexDir.js';
import { DEFAULT_TOP_K } from './defaults.js';
import { modelFingerprint, shortFingerprint } from './fingerprint.js';
import { readNpyMatrix } from './npyAppend.js';
import { checkMatrix, exactTopK, normalizeRows, row, toMatrix, type Matrix, type Neighbor } from './vectors.js';

export interface OpenIndexOptions {
  /**
   * The query encoder: a checkpoint directory, run directory (its best/ or last/) or Hub name, an already loaded
   * model, or null for none (then only
   * `searchVectors` works). Default: the model path recorded in meta.json.
   */
  model?: string | Pick<Pretrained, 'model' | 'tokenizer' | 'report'> | null;
  /** ANN candidate list size at query time (default: the one stored at build time). */
  expansionSearch?: number;
  /** Memory-map the ANN file instead of reading it into RAM (for indexes larger than memory). */
  view?: boolean;
  /** Queries embedded per forward pass (default DEFAULT_EMBED_BATCH_SIZE). */
  batchSize?: number;
}

/**
 * Throws a UserError naming the first bad option of `opts` (the checks of embed and buildIndex), before openIndex
 * reads or loads anything.
 */
function checkOpenOptions(opts: OpenIndexOptions): void {
  const o: unknown = opts;
  if (o === null || typeof o !== 'object') throw new UserError(`openIndex options must be an object, got ${kindOf(o)}`);
  const model: unknown = opts.model;
  if (model !== undefined && model !== null && typeof model !== 'string' &&
    !(typeof model === 'object' && 'model' in model && 'tokenizer' in model && 'report' in model)) {
    throw new UserError(`model must be a checkpoint path or Hub name, a loaded model ({ model, tokenizer, report }) or null, got ${kindOf(model)}`);
  }
  // A loaded model's parts are checked by their types too: `{ model: 5, ... }` would otherwise fail later, obscurely.
  if (model !== null && typeof model === 'object') {
    for (const key of ['model', 'tokenizer', 'report'] as const) {
      const part: unknown = (model as Record<string, unknown>)[key];
      if (part === null || typeof part !== 'object') throw new UserError(`model.${key} must be an object, got ${kindOf(part)}`);
    }
    const dir: unknown = (model as { report: Record<string, unknown> }).report['dir'];
    if (typeof dir !== 'string') throw new UserError(`model.report.dir must be a string, got ${kindOf(dir)}`);
  }
  if (opts.expansionSearch !== undefined) checkInteger('expansionSearch', opts.expansionSearch);
  const view: unknown = opts.view;
  if (view !== undefined && typeof view !== 'boolean') throw new UserError(`view must be a boolean, got ${kindOf(view)}`);
  if (opts.batchSize !== undefined) checkBatchSize(opts.batchSize);
}

/** Throws a UserError naming the first bad search option of `opts`. */
function checkSearchOptions(opts: SearchOptions): void {
  const o: unknown = opts;
  if (o === null || typeof o !== 'object') throw new UserError(`search options must be an object, got ${kindOf(o)}`);
  const exact: unknown = opts.exact;
  if (exact !== undefined && typeof exact !== 'boolean') throw new UserError(`exact must be a boolean, got ${kindOf(exact)}`);
}

export interface SearchHit extends Neighbor {
  text: string;
  /** 1-based line of the sentence in the indexed corpus. */
  line: number;
}

export interface SearchOptions {
  /** Brute-force cosine over all vectors instead of the ANN graph. */
  exact?: boolean;
}

export interface SearchResult {
  hits: SearchHit[][];
  /** Time spent embedding the queries and searching them (ms). */
  embedMs: number;
  searchMs: number;
}

type IndexedText = { text: string; line: number };

/**
 * The longest row of texts.jsonl that buildIndex can write: a corpus line of MAX_LINE_BYTES every byte of which
 * JSON.stringify escapes to six (`\u00XX`), in `{"text":"...","line":N}` (N at most 16 digits).
 */
export const MAX_TEXTS_ROW_BYTES = 6 * MAX_LINE_BYTES + 64;

/** What texts.jsonl is and what one line of it holds, for the error on a row past MAX_TEXTS_ROW_BYTES. */
const TEXTS_LINES = 'an index\'s texts.jsonl holds one {"text", "line"} row per line, and `micse index build` writes none this long';

/**
 * Reads texts.jsonl, streamed line by line (readLines, rows up to MAX_TEXTS_ROW_BYTES): `count` rows of
 * {"text", "line"}, blank lines skipped; a bad or overlong row is a UserError naming the file and line, a row count
 * other than `count` one naming the file. Exported for test/use.test.ts (src/index.ts does not export it).
 */
export async function readTexts(file: string, count: number): Promise<IndexedText[]> {
  const texts: IndexedText[] = [];
  for await (const { text, line } of readLines(file, TEXTS_LINES, MAX_TEXTS_ROW_BYTES)) {
    if (text === '') continue;
    let row: unknown;
    try {
      row = JSON.parse(text);
    } catch {
      throw new UserError(`${file}:${line}: invalid JSON`);
    }
    const r = row as Partial<IndexedText> | null;
    if (typeof r?.text !== 'string' || typeof r.line !== 'number') throw new UserError(`${file}:${line}: not a {"text", "line"} row`);
    texts.push({ text: r.text, line: r.line });
  }
  if (texts.length !== count) throw new UserError(`${file}: ${texts.length} rows, meta.json says ${count}`);
  return texts;
}

/**
 * Opens the ANN file of an index. Before usearch reads it (usearch may abort the process on a truncated file
 * instead of throwing), its size is checked against the one meta.json records (indexes built before that was
 * recorded have none) and against the one its own headers imply (checkAnnFile). Those faults, and what usearch
 * throws, are a UserError naming the file: "corrupt or truncated (...); rebuild the index with ...".
 */
async function openAnn(file: string, meta: IndexMeta, opts: OpenIndexOptions): Promise<AnnIndex> {
  const bytes = (await fs.stat(file)).size;
  if (meta.ann.bytes !== undefined && bytes !== meta.ann.bytes) throw annFileError(file, `${bytes} bytes, meta.json says ${meta.ann.bytes}`);
  await checkAnnFile(file, meta.dim);
  const params = { ...meta.ann, expansionSearch: opts.expansionSearch ?? meta.ann.expansionSearch };
  let ann: AnnIndex;
  try {
    ann = AnnIndex.open(file, meta.dim, params, opts.view === true);
  } catch (err) {
    throw annFileError(file, firstLineOf(err), { cause: err });
  }
  if (ann.size !== meta.count) throw new UserError(`${file}: ${ann.size} vectors, meta.json says ${meta.count}`);
  return ann;
}

export class SemanticIndex {
  private exactVectors: Matrix | null = null;
  private constructor(
    readonly dir: string,
    readonly meta: IndexMeta,
    private readonly ann: AnnIndex,
    private readonly texts: IndexedText[],
    /** The query encoder, or null when opened without one. */
    readonly encoder: Pick<Pretrained, 'model' | 'tokenizer' | 'report'> | null,
    private readonly ownsEncoder: boolean,
    private readonly batchSize: number,
  ) {}

  /** @internal use openIndex */
  static async open(dir: string, opts: OpenIndexOptions): Promise<SemanticIndex> {
    checkOpenOptions(opts);
    const meta = await readIndexMeta(dir);
    const texts = await readTexts(path.join(dir, meta.files.texts), meta.count);
    const ann = await openAnn(path.join(dir, meta.ann.file), meta, opts);

    let encoder: Pick<Pretrained, 'model' | 'tokenizer' | 'report'> | null = null;
    let owns = false;
    if (opts.model !== null) {
      const arg = opts.model ?? meta.model.path;
      if (typeof arg === 'string') {
        if (opts.model === undefined && !(await exists(arg))) {
          throw new UserError(`${dir}: the model that built this index, ${arg}, is gone; pass --model with the same checkpoint`);
        }
        encoder = await loadPretrained(await resolveCheckpoint(arg));
        owns = true;
      } else {
        encoder = arg;
      }
      const fp = await modelFingerprint(encoder.report.dir, meta.model.fingerprint.pooler, meta.model.fingerprint.maxLength);
      if (fp.sha256 !== meta.model.fingerprint.sha256) {
        if (owns) encoder.model.dispose();
        throw new UserError(`${dir}: this index was built by model ${meta.model.path} (fingerprint ${shortFingerprint(meta.model.fingerprint)}), ` +
          `but the query model ${encoder.report.dir} has fingerprint ${shortFingerprint(fp)}: embeddings of different models are not comparable; ` +
          'search with the index\'s model or rebuild the index with this one');
      }
    }
    return new SemanticIndex(dir, meta, ann, texts, encoder, owns, opts.batchSize ?? DEFAULT_EMBED_BATCH_SIZE);
  }

  get size(): number {
    return this.meta.count;
  }

  /** The indexed sentence of row `id`. */
  text(id: number): { text: string; line: number } {
    const t = this.texts[id];
    if (t === undefined) throw new RangeError(`row ${id} is not in the index (0..${this.size - 1})`);
    return t;
  }

  /** Embeds `queries` with the index's model and returns the top-k rows for each, best first; `k` and `opts` are checked first. */
  async search(queries: readonly string[], k = DEFAULT_TOP_K, opts: SearchOptions = {}): Promise<SearchResult> {
    if (this.encoder === null) throw new UserError(`${this.dir}: opened without a model (model: null); use searchVectors`);
    checkInteger('top-k', k);
    checkSearchOptions(opts);
    const { pooler, maxLength } = this.meta.model.fingerprint;
    const t0 = performance.now();
    const vecs = await embed(this.encoder.model, this.encoder.tokenizer, [...queries], { batchSize: this.batchSize, pooler, maxLength });
    const t1 = performance.now();
    const neighbors = await this.nearest(this.checkQueries(toMatrix(vecs, this.meta.dim)), k, opts);
    const t2 = performance.now();
    return { hits: neighbors.map((ns) => ns.map((n) => ({ ...n, ...this.text(n.id) }))), embedMs: t1 - t0, searchMs: t2 - t1 };
  }

  /** Top-k rows for each query vector (rows of `queries`, any norm), as ids and cosine scores. */
  async searchVectors(queries: Matrix, k = DEFAULT_TOP_K, opts: SearchOptions = {}): Promise<Neighbor[][]> {
    this.checkQueries(queries);
    checkInteger('top-k', k);
    checkSearchOptions(opts);
    return this.nearest(queries, k, opts);
  }

  /** `queries`, once checked to be a consistent Matrix of finite values with the index's dimension. */
  private checkQueries(queries: Matrix): Matrix {
    checkMatrix(queries, 'queries');
    if (queries.dim !== this.meta.dim) throw new UserError(`query vectors have dimension ${queries.dim}, the index ${this.meta.dim}`);
    return queries;
  }

  /** searchVectors' search, for checked queries, `k` and `opts`. */
  private async nearest(queries: Matrix, k: number, opts: SearchOptions): Promise<Neighbor[][]> {
    const q = normalizeRows(queries);
    if (opts.exact !== true) return this.ann.search(q.data, k);
    const corpus = await this.loadExactVectors();
    return Array.from({ length: q.rows }, (_, i) => exactTopK(corpus, row(q, i), k));
  }

  private async loadExactVectors(): Promise<Matrix> {
    if (this.exactVectors === null) {
      const file = path.join(this.dir, this.meta.files.vectors);
      const m = await readNpyMatrix(file);
      if (m.rows !== this.meta.count || m.cols !== this.meta.dim) throw new UserError(`${file}: ${m.rows} x ${m.cols}, meta.json says ${this.meta.count} x ${this.meta.dim}`);
      this.exactVectors = normalizeRows({ data: m.data, rows: m.rows, dim: m.cols });
    }
    return this.exactVectors;
  }

  /** Frees the encoder's weights when openIndex loaded it. */
  dispose(): void {
    if (this.ownsEncoder) this.encoder?.model.dispose();
  }
}

/** Opens an index directory for search (see OpenIndexOptions). */
export function openIndex(dir: string, opts: OpenIndexOptions = {}): Promise<SemanticIndex> {
  return SemanticIndex.open(dir, opts);
}
