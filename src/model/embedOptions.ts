/**
 * The poolers `embed` (src/model/embed.ts) reads sentence vectors with, and its defaults, in a module of their own
 * that loads no TF.js: the CLI's flags name them.
 */

/** How a sentence's vector is read from the last hidden state (src/model/pooling.ts computes them). */
export const EMBED_POOLERS = ['cls_before_pooler', 'mean'] as const;
export type EmbedPooler = (typeof EMBED_POOLERS)[number];

/** Sentences per forward pass. */
export const DEFAULT_EMBED_BATCH_SIZE = 128;
export const DEFAULT_EMBED_POOLER: EmbedPooler = 'cls_before_pooler';
