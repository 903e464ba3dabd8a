/**
 * `embed`: sentences -> vectors, the one path the CLI, the STS harness and the user's code share.
 * Sentences are sorted by length so each batch pads little, then returned in input order.
 */
import { checkMaxLength, checkTexts, type BertTokenizer } from '../data/tokenizer.js';
import { checkInteger, UserError } from '../errors.js';
import { createProgress } from '../progress.js';
import type { BertModel } from './bert.js';
import { maxLengthProblem } from './config.js';
import { DEFAULT_EMBED_BATCH_SIZE, DEFAULT_EMBED_POOLER, type EmbedPooler } from './embedOptions.js';
import { checkPooler, pool } from './pooling.js';
import { tf } from './tf.js';

export interface EmbedOptions {
  /** Sentences per forward pass (SentEval: 128). */
  batchSize?: number;
  /** Truncate to this many tokens, [CLS] and [SEP] included (default: the model's max positions, 512 for BERT); more than that is a UserError. */
  maxLength?: number;
  /** How a sentence's vector is read from the last hidden state (default `cls_before_pooler`; see EMBED_POOLERS). */
  pooler?: EmbedPooler;
  /** Show progress on stderr. */
  progress?: boolean;
  /** Called after each batch with the number of sentences done. */
  onBatch?: (done: number, total: number) => void;
}

/** Throws a UserError unless `batchSize` is a positive integer. */
export function checkBatchSize(batchSize: number): void {
  checkInteger('batchSize', batchSize);
}

/** The token length to embed with: `maxLength`, else the model's max positions; a UserError when the model cannot hold `maxLength`. */
export function embedMaxLength(model: BertModel, maxLength?: number): number {
  if (maxLength === undefined) return model.config.maxPositionEmbeddings;
  checkMaxLength(maxLength);
  const problem = maxLengthProblem('maxLength', maxLength, model.config, "the model's config");
  if (problem !== null) throw new UserError(problem);
  return maxLength;
}

/**
 * Embeds `sentences` in eval mode; returns one vector per sentence, in input order. Every argument is checked
 * before any work: a UserError names the first bad one (a sentence that is not a string, batchSize, maxLength, pooler).
 */
export async function embed(model: BertModel, tokenizer: BertTokenizer, sentences: readonly string[], opts: EmbedOptions = {}): Promise<number[][]> {
  checkTexts(sentences, 'sentences');
  const batchSize = opts.batchSize ?? DEFAULT_EMBED_BATCH_SIZE;
  checkBatchSize(batchSize);
  const maxLength = embedMaxLength(model, opts.maxLength);
  const pooler = opts.pooler ?? DEFAULT_EMBED_POOLER;
  checkPooler(pooler);
  const encoded = sentences.map((s) => tokenizer.encode(s, { maxLength }));
  // Sort by token length (stable), as SentEval does by sentence length, so padding stays small.
  const order = encoded.map((_, i) => i).sort((a, b) => encoded[a]!.length - encoded[b]!.length || a - b);
  const out: number[][] = new Array<number[]>(sentences.length);
  const progress = opts.progress === true ? createProgress({ label: 'embed', total: sentences.length, unit: 'sent' }) : undefined;
  for (let start = 0; start < order.length; start += batchSize) {
    const idx = order.slice(start, start + batchSize);
    const batch = tokenizer.pad(idx.map((i) => encoded[i]!));
    const vectors = tf.tidy(() => {
      const inputIds = tf.tensor2d(batch.inputIds, undefined, 'int32');
      const attentionMask = tf.tensor2d(batch.attentionMask, undefined, 'int32');
      const { lastHiddenState } = model.forward({ inputIds, attentionMask }, { training: false, firstTokenOnly: pooler === 'cls_before_pooler' });
      return pool(lastHiddenState, attentionMask, pooler);
    });
    const data = (await vectors.array()) as number[][];
    vectors.dispose();
    idx.forEach((orig, j) => (out[orig] = data[j]!));
    progress?.tick(idx.length);
    opts.onBatch?.(Math.min(start + batchSize, order.length), order.length);
  }
  progress?.done();
  return out;
}
