/**
 * The range of seeds and the subset draw's default seed, in a module of their own that loads neither the corpus
 * readers nor the training config: the CLI's --seed flags and the config's seed keys name them.
 */

/** The largest seed: seeds are 32-bit unsigned integers (a larger one would wrap and repeat a smaller one's run). */
export const MAX_SEED = 2 ** 32 - 1;

/** Default subset seed (the first of the official seeds 48..52). */
export const DEFAULT_SUBSET_SEED = 48;
