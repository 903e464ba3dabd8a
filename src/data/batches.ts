/**
 * Two-view training batches for unsupervised SimCSE/miCSE, with an exactly resumable iterator.
 *
 * - Each epoch visits the sentences in a fresh order: a Fisher-Yates permutation drawn from the project PRNG
 *   (`Rng.fromSeed(seed)`, one generator for the whole run, so epoch e's order depends on the seed and e).
 * - A batch of B sentences becomes 2B rows interleaved `[s0, s0, s1, s1, ...]` (the two views differ only by
 *   dropout inside the encoder), token ids truncated to `maxSeqLen` by the tokenizer (keeping [SEP] last), padded
 *   with the tokenizer's pad id to the longest row of the batch; attention mask 1 for tokens, 0 for padding.
 * - The last partial batch of an epoch is kept (the reference behaviour) unless `dropLast`; a last batch of one
 *   sentence is always left out (InfoNCE contrasts the sentences of a batch, so it needs MIN_BATCH_SENTENCES), so
 *   with n = 1 mod B each epoch leaves out one sentence, a different one each epoch.
 * - `state()` is a plain JSON object `{epoch, position, step, rng, ...}` where `rng` is the generator state at the
 *   start of the current epoch (before its shuffle): restoring re-draws that epoch's order and continues at
 *   `position`, so a restored iterator yields exactly what the uninterrupted one would.
 */
import { createHash } from 'node:crypto';
import { UserError } from '../errors.js';
import { checkSentenceCount, DEFAULT_MAX_SEQ_LEN, MIN_BATCH_SENTENCES, stepsPerEpoch } from './batchLimits.js';
import { Rng, type RngState } from './rng.js';
import { padRows } from './tokenizer.js';

/** The part of the tokenizer the batcher needs (the lead's BertTokenizer satisfies it). */
export interface BatchTokenizer {
  /** Ids including [CLS]/[SEP], truncated to `maxLength` keeping [SEP] last. */
  encode(text: string, opts?: { maxLength?: number }): number[];
  readonly padTokenId: number;
}

/** One training batch as plain arrays; the trainer turns them into tensors. */
export interface TwoViewBatch {
  /** [2B, T]: row 2i and 2i+1 are the two views of sentence i. */
  inputIds: number[][];
  /** [2B, T]: 1 for tokens, 0 for padding. */
  attentionMask: number[][];
  /** The B original sentences, in batch order. */
  sentences: string[];
  /** Index into the iterator's sentence list of each of the B sentences. */
  indices: number[];
  /** 0-based epoch of this batch. */
  epoch: number;
  /** 0-based global step of this batch (batches yielded before it). */
  step: number;
}

/** Serialisable iterator state (save it in a checkpoint as JSON). */
export interface BatchIteratorState {
  version: 1;
  /** Epoch of the next batch (0-based). */
  epoch: number;
  /** Index into the epoch's order of the next batch's first sentence. */
  position: number;
  /** Global step of the next batch. */
  step: number;
  /** PRNG state at the start of `epoch`, before its shuffle. */
  rng: RngState;
  /** Checked on restore, so a checkpoint is not resumed on other data or batch settings. */
  numSentences: number;
  batchSize: number;
  dropLast: boolean;
  shuffle: boolean;
  /** sha256 of the sentences joined by "\n". */
  sentencesSha256: string;
}

export interface BatchIteratorOptions {
  sentences: readonly string[];
  tokenizer: BatchTokenizer;
  /** Sentences per batch (the batch has 2 x batchSize rows). */
  batchSize: number;
  /** Truncation length in tokens including [CLS]/[SEP]. Default DEFAULT_MAX_SEQ_LEN. */
  maxSeqLen?: number;
  /** Training seed for the per-epoch shuffle. */
  seed: number;
  /** Drop the last partial batch of each epoch. Default false. */
  dropLast?: boolean;
  /** Shuffle each epoch. Default true (false keeps input order; for debugging). */
  shuffle?: boolean;
  /** Keep token ids of each sentence after the first encode. Default: when there are at most CACHE_MAX_SENTENCES. */
  cacheTokens?: boolean;
}

/** Token ids are cached by default up to this many sentences (the 10% split is 100,000). */
export const CACHE_MAX_SENTENCES = 200_000;

/** Interleaves two identical views of each row and pads to the longest: the batch tensors as arrays. */
export function twoViewRows(rows: readonly (readonly number[])[], padTokenId: number): { inputIds: number[][]; attentionMask: number[][] } {
  const padded = padRows(rows, padTokenId);
  return {
    inputIds: padded.inputIds.flatMap((ids) => [ids, [...ids]]),
    attentionMask: padded.attentionMask.flatMap((mask) => [mask, [...mask]]),
  };
}

function sentencesHash(sentences: readonly string[]): string {
  const h = createHash('sha256');
  for (let i = 0; i < sentences.length; i++) h.update(i === 0 ? sentences[i]! : `\n${sentences[i]!}`);
  return h.digest('hex');
}

/**
 * An endless iterator over two-view batches, epoch after epoch (the trainer stops it at its step budget).
 * `new TwoViewBatchIterator(opts, savedState)` resumes exactly where `state()` was taken.
 */
export class TwoViewBatchIterator implements IterableIterator<TwoViewBatch> {
  /** Batches per epoch. */
  readonly stepsPerEpoch: number;
  private readonly sentences: readonly string[];
  private readonly tokenizer: BatchTokenizer;
  private readonly batchSize: number;
  private readonly maxSeqLen: number;
  private readonly dropLast: boolean;
  private readonly shuffle: boolean;
  private readonly cache: (number[] | undefined)[] | null;
  private readonly rng: Rng;
  private epochStartRng: RngState;
  private order: number[] = [];
  private _epoch: number;
  private position: number;
  private _step: number;
  private fingerprint: string | null = null;

  constructor(opts: BatchIteratorOptions, state?: BatchIteratorState) {
    const n = opts.sentences.length;
    if (!Number.isInteger(opts.batchSize) || opts.batchSize < MIN_BATCH_SENTENCES) {
      throw new UserError(`train.batchSize must be an integer >= ${MIN_BATCH_SENTENCES} (InfoNCE contrasts the sentences of a batch), got ${opts.batchSize}`);
    }
    const maxSeqLen = opts.maxSeqLen ?? DEFAULT_MAX_SEQ_LEN;
    if (!Number.isInteger(maxSeqLen) || maxSeqLen < 2) throw new UserError(`data.maxSeqLen must be an integer >= 2, got ${maxSeqLen}`);
    checkSentenceCount(n);
    this.sentences = opts.sentences;
    this.tokenizer = opts.tokenizer;
    this.batchSize = opts.batchSize;
    this.maxSeqLen = maxSeqLen;
    this.dropLast = opts.dropLast ?? false;
    this.shuffle = opts.shuffle ?? true;
    this.stepsPerEpoch = stepsPerEpoch(n, this.batchSize, this.dropLast);
    if (this.stepsPerEpoch === 0) {
      throw new UserError(`data.dropLast is true but train.batchSize ${this.batchSize} is larger than the ${n} training sentences: no batch at all`);
    }
    this.cache = (opts.cacheTokens ?? n <= CACHE_MAX_SENTENCES) ? new Array<number[] | undefined>(n) : null;

    if (state === undefined) {
      this.rng = Rng.fromSeed(opts.seed);
      this._epoch = 0;
      this.position = 0;
      this._step = 0;
    } else {
      this.checkState(state);
      this.rng = Rng.fromState(state.rng);
      this._epoch = state.epoch;
      this.position = state.position;
      this._step = state.step;
    }
    this.epochStartRng = this.rng.state();
    this.drawOrder();
  }

  /** Epoch of the next batch. */
  get epoch(): number {
    return this._epoch;
  }

  /** Global step of the next batch. */
  get step(): number {
    return this._step;
  }

  /** The iterator's position as plain JSON; pass it to the constructor to resume. */
  state(): BatchIteratorState {
    this.fingerprint ??= sentencesHash(this.sentences);
    return {
      version: 1,
      epoch: this._epoch,
      position: this.position,
      step: this._step,
      rng: this.epochStartRng,
      numSentences: this.sentences.length,
      batchSize: this.batchSize,
      dropLast: this.dropLast,
      shuffle: this.shuffle,
      sentencesSha256: this.fingerprint,
    };
  }

  next(): IteratorResult<TwoViewBatch> {
    const n = this.sentences.length;
    if (n - this.position < (this.dropLast ? this.batchSize : MIN_BATCH_SENTENCES)) {
      this._epoch++;
      this.position = 0;
      this.epochStartRng = this.rng.state();
      this.drawOrder();
    }
    const indices = this.order.slice(this.position, Math.min(n, this.position + this.batchSize));
    const rows = indices.map((i) => this.encode(i));
    const batch: TwoViewBatch = {
      ...twoViewRows(rows, this.tokenizer.padTokenId),
      sentences: indices.map((i) => this.sentences[i] as string),
      indices,
      epoch: this._epoch,
      step: this._step,
    };
    this.position += indices.length;
    this._step++;
    return { value: batch, done: false };
  }

  [Symbol.iterator](): IterableIterator<TwoViewBatch> {
    return this;
  }

  private drawOrder(): void {
    const n = this.sentences.length;
    if (this.shuffle) {
      this.order = this.rng.permutation(n);
    } else {
      this.order = Array.from({ length: n }, (_, i) => i);
    }
  }

  private encode(i: number): number[] {
    const cached = this.cache?.[i];
    if (cached !== undefined) return cached;
    const ids = this.tokenizer.encode(this.sentences[i] as string, { maxLength: this.maxSeqLen });
    if (ids.length > this.maxSeqLen) throw new Error(`tokenizer returned ${ids.length} ids for maxLength ${this.maxSeqLen}`);
    if (this.cache !== null) this.cache[i] = ids;
    return ids;
  }

  private checkState(s: BatchIteratorState): void {
    const where = 'data iterator state in the checkpoint';
    if (s === null || typeof s !== 'object' || s.version !== 1) throw new UserError(`${where}: unknown format ${JSON.stringify(s)?.slice(0, 80)}`);
    const mismatch = (key: string, saved: unknown, now: unknown): never => {
      throw new UserError(`${where}: ${key} was ${JSON.stringify(saved)}, now ${JSON.stringify(now)}; resume with the same data and batch settings`);
    };
    if (s.numSentences !== this.sentences.length) mismatch('number of sentences', s.numSentences, this.sentences.length);
    if (s.batchSize !== this.batchSize) mismatch('train.batchSize', s.batchSize, this.batchSize);
    if (s.dropLast !== this.dropLast) mismatch('data.dropLast', s.dropLast, this.dropLast);
    if (s.shuffle !== this.shuffle) mismatch('shuffle', s.shuffle, this.shuffle);
    this.fingerprint = sentencesHash(this.sentences);
    if (s.sentencesSha256 !== this.fingerprint) mismatch('sha256 of the training sentences', s.sentencesSha256, this.fingerprint);
    const intOk = (x: unknown): boolean => Number.isSafeInteger(x) && (x as number) >= 0;
    if (!intOk(s.epoch) || !intOk(s.step) || !intOk(s.position) || s.position > this.sentences.length) {
      throw new UserError(`${where}: invalid epoch/step/position ${JSON.stringify({ epoch: s.epoch, step: s.step, position: s.position })}`);
    }
  }
}
