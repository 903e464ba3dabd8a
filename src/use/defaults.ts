/**
 * The defaults of index building (src/use/build.ts, src/use/ann.ts), search (src/use/search.ts) and clustering
 * (src/use/cluster.ts) that the CLI's flags show, in a module of their own that loads neither TF.js, usearch nor
 * ml-kmeans.
 */
import type { AnnParams } from './ann.js';

/** HNSW parameters that reach recall@10 >= 0.99 against exact search on the STS-B dev sentences. */
export const DEFAULT_ANN_PARAMS: Readonly<AnnParams> = { connectivity: 16, expansionAdd: 128, expansionSearch: 128, threads: 1 };
/** Sentences embedded (and checkpointed) per chunk. */
export const DEFAULT_CHUNK_SIZE = 4096;

/** Hits per query. */
export const DEFAULT_TOP_K = 10;

export const DEFAULT_CLUSTER_SEED = 42;
export const DEFAULT_MIN_COMMUNITY_SIZE = 1;
/** Members listed per cluster in the summary. */
export const DEFAULT_NEAREST = 3;
