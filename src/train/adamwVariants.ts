/**
 * Which AdamW src/train/adamw.ts runs (torch.optim.AdamW or transformers 4.22's own; see its module comment), in a
 * module of its own that loads no TF.js: the training config's optim.variant names them.
 */
export const ADAMW_VARIANTS = ['torch', 'hf'] as const;
export type AdamWVariant = (typeof ADAMW_VARIANTS)[number];
export const DEFAULT_ADAMW_VARIANT: AdamWVariant = 'torch';
