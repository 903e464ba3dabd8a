/**
 * How many sentences a training batch holds, how many tokens a row, and how many batches an epoch has, in a module
 * that loads no tokenizer (errors.ts alone): the training config's ranges and defaults (train.batchSize, data.count,
 * data.maxSeqLen), the plan of `micse train --dry-run` (steps per epoch), the trainer and the batch iterator
 * (batches.ts, which loads the tokenizer) read it.
 */
import { UserError } from '../errors.js';

/** The fewest sentences a batch may hold: InfoNCE scores each sentence's views against the other sentences'. */
export const MIN_BATCH_SENTENCES = 2;

/** data.maxSeqLen's default: tokens a training sentence keeps, [CLS] and [SEP] included (the reference's max_seq_len). */
export const DEFAULT_MAX_SEQ_LEN = 32;

/**
 * Throws unless `n` training sentences can fill a batch (InfoNCE contrasts the sentences of a batch); `where`
 * prefixes the message (the file) and `detail` follows the count (the subset that gave it).
 */
export function checkSentenceCount(n: number, where = '', detail = ''): void {
  if (n >= MIN_BATCH_SENTENCES) return;
  throw new UserError(`${where}${n} training sentence${n === 1 ? '' : 's'}${detail}; ` +
    `InfoNCE contrasts the sentences of a batch, so it needs at least ${MIN_BATCH_SENTENCES}`);
}

/** Sentences each epoch leaves out: the last partial batch with dropLast, else a last batch too small to train on. */
export function sentencesLeftOut(numSentences: number, batchSize: number, dropLast = false): number {
  const rest = numSentences % batchSize;
  return dropLast || rest < MIN_BATCH_SENTENCES ? rest : 0;
}

/** Batches per epoch: ceil(n / B), less the last partial batch when `sentencesLeftOut` leaves it out. */
export function stepsPerEpoch(numSentences: number, batchSize: number, dropLast = false): number {
  return Math.ceil((numSentences - sentencesLeftOut(numSentences, batchSize, dropLast)) / batchSize);
}
