/**
 * The fewest sentences of a training batch, in a module that loads nothing: the training config's ranges
 * (train.batchSize, data.count) and the batch iterator (batches.ts, which loads the tokenizer) read it.
 */

/** The fewest sentences a batch may hold: InfoNCE scores each sentence's views against the other sentences'. */
export const MIN_BATCH_SENTENCES = 2;
