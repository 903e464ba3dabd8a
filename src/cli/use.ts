/**
 * Using a trained encoder: `micse similarity`, `micse index build`, `micse search`, `micse cluster`.
 * Thin: parse flags, call src/use/*, print. Results go to stdout; progress, backend and timing notes to stderr
 * (except where stated in a command's description).
 */
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { UserError } from '../errors.js';
import { checkOutputFile, refuseOverwritingInput, writeFileAtomic } from '../fsutil.js';
import type { BackendName } from '../model/backendNames.js';
import { DEFAULT_EMBED_BATCH_SIZE } from '../model/embedOptions.js';
import type { ClusterResult } from '../use/cluster.js';
import {
  DEFAULT_ANN_PARAMS, DEFAULT_CHUNK_SIZE, DEFAULT_CLUSTER_SEED, DEFAULT_MIN_COMMUNITY_SIZE, DEFAULT_NEAREST, DEFAULT_TOP_K,
} from '../use/defaults.js';
import type { SentencePair } from '../use/pairs.js';
import { activateBackend, COLUMN_FLAG_NAMES, embedOpts, maxLengthLoadOpts, numberFlag, POSITIVE_INT, readSentences, withBackend, withEmbedFlags, type EmbedFlags } from './common.js';

const oneLine = (s: string) => s.replace(/[\t\r\n]/g, ' ');

// ---------------------------------------------------------------------------------------------------- similarity

interface SimilarityArgs extends EmbedFlags {
  sentences?: string[];
  /** The words after the command's name that yargs did not take: the operands after a lone `--` (`-- "-a" "b"`). */
  _: (string | number)[];
  pairs?: string;
  columns: string;
  json: boolean;
}

export const similarityCommand: CommandModule<object, SimilarityArgs> = {
  command: 'similarity [sentences..]',
  describe: 'Cosine similarity of sentence pairs: "A" "B" ["C" "D" ...] are read two by two, or --pairs FILE.tsv',
  builder: (y) =>
    withEmbedFlags(y)
      .positional('sentences', { type: 'string', array: true, describe: 'sentences, paired in order: (A, B), (C, D), ...' })
      .option('pairs', { type: 'string', describe: 'TAB-separated file, one pair per line' })
      .option('columns', { type: 'string', default: '0,1', describe: '0-based columns of the two sentences in --pairs (STS-B: 5,6)' })
      .option('json', { type: 'boolean', default: false, describe: 'print [{"a","b","score"}] instead of a table' }) as never,
  handler: async (args) => {
    // Sentences may start with a dash after `--`; yargs leaves those in `_`, after the command's name.
    const sentences = [...(args.sentences ?? []), ...args._.slice(1).map(String)];
    // The pairs are read before the scorer (TF.js, the tokenizer) is loaded: their faults are said without waiting for it.
    const { pairsFromArgs, readPairsFile } = await import('../use/pairs.js');
    let pairs: SentencePair[];
    if (args.pairs !== undefined) {
      if (sentences.length > 0) throw new UserError('give sentences or --pairs, not both');
      const cols = args.columns.split(',').map((c) => Number(c.trim()));
      if (cols.length !== 2 || cols.some((c) => !Number.isInteger(c) || c < 0)) throw new UserError(`--columns must be two 0-based indexes like 0,1; got ${args.columns}`);
      pairs = await readPairsFile(args.pairs, [cols[0]!, cols[1]!]);
    } else {
      pairs = pairsFromArgs(sentences);
    }
    const { similarity } = await import('../use/similarity.js');
    const { loadPretrained, resolveCheckpoint } = await import('../model/pretrained.js');
    await activateBackend(args.backend);
    const { model, tokenizer } = await loadPretrained(await resolveCheckpoint(args.model), maxLengthLoadOpts(args));
    const scored = await similarity(model, tokenizer, pairs, { ...embedOpts(args), progress: pairs.length > 1000 });
    model.dispose();
    if (args.json) {
      process.stdout.write(JSON.stringify(scored, null, 2) + '\n');
      return;
    }
    process.stdout.write('score\tsentence A\tsentence B\n');
    for (const p of scored) process.stdout.write(`${p.score.toFixed(4)}\t${oneLine(p.a)}\t${oneLine(p.b)}\n`);
  },
};

// --------------------------------------------------------------------------------------------------- index build

interface IndexBuildArgs extends EmbedFlags {
  corpus: string;
  column?: string;
  out: string;
  'chunk-size': number;
  connectivity: number;
  'expansion-add': number;
  'expansion-search': number;
  threads: number;
  force: boolean;
}

const indexBuildCommand: CommandModule<object, IndexBuildArgs> = {
  command: 'build',
  describe: 'Embed a corpus (resumable) and build its usearch HNSW index in --out',
  builder: (y) =>
    withEmbedFlags(y)
      .option('corpus', { type: 'string', demandOption: true, describe: '.txt (one sentence per line), .csv or .tsv' })
      .option('column', { type: 'string', describe: 'CSV/TSV column name or 0-based index' })
      .option('out', { type: 'string', demandOption: true, describe: 'index directory (a rerun resumes an interrupted build there)' })
      .option('chunk-size', { ...numberFlag('chunk-size', POSITIVE_INT), default: DEFAULT_CHUNK_SIZE, describe: 'sentences embedded and saved per resumable chunk' })
      .option('connectivity', { ...numberFlag('connectivity', POSITIVE_INT), default: DEFAULT_ANN_PARAMS.connectivity, describe: 'HNSW graph degree M' })
      .option('expansion-add', { ...numberFlag('expansion-add', POSITIVE_INT), default: DEFAULT_ANN_PARAMS.expansionAdd, describe: 'HNSW efConstruction' })
      .option('expansion-search', { ...numberFlag('expansion-search', POSITIVE_INT), default: DEFAULT_ANN_PARAMS.expansionSearch, describe: 'HNSW ef at query time (search --ef overrides)' })
      .option('threads', { ...numberFlag('threads', { integer: true, min: 0 }), default: DEFAULT_ANN_PARAMS.threads, describe: 'insertion threads (1: the same graph every run; 0: all cores)' })
      .option('force', { type: 'boolean', default: false, describe: 'start over, replacing what --out holds (all of it) once the new index is complete' }) as never,
  handler: async (args) => {
    // --out is checked and the corpus read through before the index builder (TF.js, usearch), the backend and the
    // model are loaded: their faults are said without waiting for them.
    const corpus = { corpus: args.corpus, column: args.column ?? null, names: COLUMN_FLAG_NAMES };
    const { checkIndexOut, countIndexCorpus } = await import('../use/indexDir.js');
    await checkIndexOut(args.out, args.force, { corpus: args.corpus });
    const counted = await countIndexCorpus(corpus);
    const { buildIndex } = await import('../use/build.js');
    const { shortFingerprint } = await import('../use/fingerprint.js');
    const { loadPretrained, resolveCheckpoint } = await import('../model/pretrained.js');
    await activateBackend(args.backend);
    const pretrained = await loadPretrained(await resolveCheckpoint(args.model), maxLengthLoadOpts(args));
    const report = await buildIndex(pretrained, {
      ...corpus,
      counted,
      out: args.out,
      ...embedOpts(args),
      chunkSize: args['chunk-size'],
      ann: { connectivity: args.connectivity, expansionAdd: args['expansion-add'], expansionSearch: args['expansion-search'], threads: args.threads },
      force: args.force,
      progress: true,
    });
    pretrained.model.dispose();
    const m = report.meta;
    if (report.upToDate) {
      process.stdout.write(`${args.out}: already an index of these ${m.count} sentences by this model; nothing to do (--force rebuilds)\n`);
      return;
    }
    if (report.resumedRows > 0) process.stdout.write(`resumed: ${report.resumedRows} sentences were already embedded\n`);
    process.stdout.write(
      `embedded ${m.count} sentences (dimension ${m.dim}) in ${m.build.embedSeconds.toFixed(1)} s: ${m.build.sentencesPerSecond.toFixed(1)} sentences/s\n` +
      `indexed ${m.count} vectors with ${m.ann.library} ${m.ann.version} HNSW (M ${m.ann.connectivity}, efConstruction ${m.ann.expansionAdd}, ef ${m.ann.expansionSearch}) ` +
      `in ${m.build.indexSeconds.toFixed(2)} s: ${m.build.vectorsPerSecond.toFixed(0)} vectors/s\n` +
      `model fingerprint ${shortFingerprint(m.model.fingerprint)}; wrote ${path.resolve(args.out)}\n`,
    );
  },
};

export const indexCommand: CommandModule<object, object> = {
  // No <command> positional: yargs would demand it with its own message, before the one of demandCommand.
  command: 'index',
  describe: 'Semantic search indexes (index build)',
  builder: (y) => y.command(indexBuildCommand as CommandModule<object, never>).demandCommand(1, 'name an index command: build'),
  handler: () => undefined,
};

// -------------------------------------------------------------------------------------------------------- search

interface SearchArgs {
  index: string;
  query?: string[];
  queries?: string;
  column?: string;
  'top-k': number;
  exact: boolean;
  json: boolean;
  model?: string;
  ef?: number;
  'batch-size': number;
  backend: BackendName;
}

export const searchCommand: CommandModule<object, SearchArgs> = {
  command: 'search',
  describe: 'Nearest sentences in an index for --query TEXT (repeatable) or --queries FILE; prints latency and queries/s',
  builder: (y) =>
    withBackend(y)
      .option('index', { type: 'string', demandOption: true, describe: 'index directory written by `micse index build`' })
      .option('query', { type: 'string', array: true, describe: 'query sentence (repeatable)' })
      .option('queries', { type: 'string', describe: 'file of queries: .txt one per line, or .csv/.tsv with --column' })
      .option('column', { type: 'string', describe: 'CSV/TSV column of --queries' })
      .option('top-k', { ...numberFlag('top-k', POSITIVE_INT), default: DEFAULT_TOP_K, describe: 'hits per query' })
      .option('exact', { type: 'boolean', default: false, describe: 'brute-force cosine over all vectors instead of the ANN index' })
      .option('json', { type: 'boolean', default: false, describe: 'print results and timings as JSON' })
      .option('model', { type: 'string', describe: 'query model (default: the one recorded in the index; must have the same fingerprint)' })
      .option('ef', { ...numberFlag('ef', POSITIVE_INT), describe: 'HNSW ef at query time (default: the index\'s)' })
      .option('batch-size', { ...numberFlag('batch-size', POSITIVE_INT), default: DEFAULT_EMBED_BATCH_SIZE, describe: 'queries per forward pass' }) as never,
  handler: async (args) => {
    const queries = [...(args.query ?? [])];
    if (args.queries !== undefined) queries.push(...(await readSentences(args.queries, args.column, { what: 'queries file' })).map((r) => r.text));
    if (queries.length === 0) throw new UserError(args.queries !== undefined ? `${args.queries}: no queries in the file` : 'give --query TEXT or --queries FILE');
    // An index that is not one is refused before TF.js, usearch and the backend load (openIndex checks it again).
    await (await import('../use/indexDir.js')).readIndexMeta(args.index);
    const { openIndex } = await import('../use/search.js');
    const { resolveCheckpoint } = await import('../model/pretrained.js');
    await activateBackend(args.backend);
    const index = await openIndex(args.index, {
      ...(args.model !== undefined ? { model: await resolveCheckpoint(args.model) } : {}),
      ...(args.ef !== undefined ? { expansionSearch: args.ef } : {}),
      batchSize: args['batch-size'],
    });
    const res = await index.search(queries, args['top-k'], { exact: args.exact });
    index.dispose();
    const n = queries.length;
    const how = args.exact ? 'exact cosine' : `${index.meta.ann.library} HNSW (ef ${args.ef ?? index.meta.ann.expansionSearch})`;
    const timing = {
      queries: n,
      method: args.exact ? 'exact' : 'ann',
      embedMs: res.embedMs,
      searchMs: res.searchMs,
      searchMsPerQuery: res.searchMs / n,
      searchQueriesPerSecond: res.searchMs > 0 ? (1000 * n) / res.searchMs : Infinity,
      totalQueriesPerSecond: (1000 * n) / (res.embedMs + res.searchMs),
    };
    const line = `search: ${n} ${n === 1 ? 'query' : 'queries'} over ${index.size} sentences by ${how}: ` +
      `search ${timing.searchMs.toFixed(2)} ms (${timing.searchMsPerQuery.toFixed(3)} ms/query, ${timing.searchQueriesPerSecond.toFixed(0)} queries/s); ` +
      `with query embedding ${(timing.embedMs + timing.searchMs).toFixed(1)} ms (${timing.totalQueriesPerSecond.toFixed(1)} queries/s)\n`;
    if (args.json) {
      const results = queries.map((query, i) => ({ query, hits: res.hits[i] }));
      process.stdout.write(JSON.stringify({ index: path.resolve(args.index), k: args['top-k'], results, timing }, null, 2) + '\n');
      process.stderr.write(line);
      return;
    }
    queries.forEach((q, i) => {
      process.stdout.write(`query: ${oneLine(q)}\n`);
      res.hits[i]!.forEach((h, r) => process.stdout.write(`  ${String(r + 1).padStart(3)}  ${h.score.toFixed(4)}  line ${h.line}  ${oneLine(h.text)}\n`));
    });
    process.stdout.write(line);
  },
};

// ------------------------------------------------------------------------------------------------------- cluster

interface ClusterArgs extends EmbedFlags {
  input: string;
  column?: string;
  k?: number;
  threshold?: number;
  seed: number;
  'min-community-size': number;
  nearest: number;
  output?: string;
  force: boolean;
  json: boolean;
}

/** The readable summary: one block per cluster with its size and the members nearest its centroid. */
export function clusterSummary(res: ClusterResult, texts: readonly { text: string; line: number }[], how: string): string {
  const unassigned = res.assignments.filter((a) => a < 0).length;
  let out = `${how}: ${res.assignments.length} sentences in ${res.clusters.length} clusters`;
  if (res.iterations !== undefined) out += `; ${res.converged === true ? 'converged' : 'stopped'} after ${res.iterations} iterations`;
  if ((res.emptyClusters ?? 0) > 0) out += `; ${res.emptyClusters} clusters ended empty and were dropped`;
  if (unassigned > 0) out += `; ${unassigned} sentences in no community (id -1)`;
  out += '\n';
  for (const c of res.clusters) {
    out += `cluster ${c.id}: ${c.size} sentence${c.size === 1 ? '' : 's'}; nearest the centroid:\n`;
    for (const nb of c.nearest) out += `    ${nb.score.toFixed(4)}  line ${texts[nb.id]!.line}: ${oneLine(texts[nb.id]!.text)}\n`;
  }
  return out;
}

export const clusterCommand: CommandModule<object, ClusterArgs> = {
  command: 'cluster',
  describe: 'Cluster sentences: -k N (k-means) or --threshold T (communities); ids per line to --output (.tsv/.jsonl) ' +
    'or, without it, to stdout with the summary on stderr',
  builder: (y) =>
    withEmbedFlags(y)
      .option('input', { type: 'string', demandOption: true, describe: '.txt (one sentence per line), .csv or .tsv' })
      .option('column', { type: 'string', describe: 'CSV/TSV column name or 0-based index' })
      .option('k', { ...numberFlag('k', POSITIVE_INT), describe: 'number of k-means clusters' })
      .option('threshold', { ...numberFlag('threshold', { min: -1, max: 1 }), describe: 'cosine threshold for community detection (when k is unknown)' })
      .option('seed', { ...numberFlag('seed', { integer: true, min: 0 }), default: DEFAULT_CLUSTER_SEED, describe: 'k-means++ seed (ml-kmeans seed option)' })
      .option('min-community-size', { ...numberFlag('min-community-size', POSITIVE_INT), default: DEFAULT_MIN_COMMUNITY_SIZE, describe: 'threshold mode: smallest community kept' })
      .option('nearest', { ...numberFlag('nearest', { integer: true, min: 0 }), default: DEFAULT_NEAREST, describe: 'members shown per cluster in the summary' })
      .option('output', { type: 'string', describe: 'write one id per sentence: .tsv (line, cluster, text) or .jsonl' })
      .option('force', { type: 'boolean', default: false, describe: 'replace an existing --output file' })
      .option('json', { type: 'boolean', default: false, describe: 'print the whole result (ids, clusters) as JSON on stdout' }) as never,
  handler: async (args) => {
    if ((args.k === undefined) === (args.threshold === undefined)) throw new UserError('give -k N (k-means) or --threshold T (communities)');
    const ext = args.output === undefined ? null : path.extname(args.output).toLowerCase();
    if (ext !== null && ext !== '.tsv' && ext !== '.jsonl') throw new UserError(`${args.output}: --output must end in .tsv or .jsonl`);
    if (args.output !== undefined) {
      await refuseOverwritingInput(args.output, `--output ${args.output}`, args.input);
      await checkOutputFile(args.output, '--output', args.force);
    }
    const records = await readSentences(args.input, args.column, { purpose: 'cluster' });
    const opts = {
      ...(args.k !== undefined ? { k: args.k, seed: args.seed } : { threshold: args.threshold!, minCommunitySize: args['min-community-size'] }),
      nearest: args.nearest,
    };
    // Check k (readSentences checked emptiness) before loading a model.
    if (args.k !== undefined && args.k > records.length) throw new UserError(`-k ${args.k} is larger than the number of sentences (${records.length}) in ${args.input}`);
    const { cluster } = await import('../use/cluster.js');
    const { loadPretrained, resolveCheckpoint } = await import('../model/pretrained.js');
    await activateBackend(args.backend);
    const { model, tokenizer } = await loadPretrained(await resolveCheckpoint(args.model), maxLengthLoadOpts(args));
    const res = await cluster(model, tokenizer, records.map((r) => r.text), { ...opts, ...embedOpts(args), progress: records.length > 1000 }, args.input);
    model.dispose();
    const how = args.k !== undefined ? `k-means (k ${args.k}, seed ${args.seed})` : `communities (threshold ${args.threshold}, min size ${args['min-community-size']})`;
    const summary = clusterSummary(res, records, how);
    const rows = records.map((r, i) => ({ line: r.line, cluster: res.assignments[i]!, text: r.text }));
    const tsv = () => 'line\tcluster\ttext\n' + rows.map((r) => `${r.line}\t${r.cluster}\t${oneLine(r.text)}\n`).join('');
    if (args.output !== undefined) {
      await writeFileAtomic(args.output, ext === '.jsonl' ? rows.map((r) => JSON.stringify(r) + '\n').join('') : tsv());
    }
    if (args.json) {
      process.stdout.write(JSON.stringify({ method: res.method, iterations: res.iterations, converged: res.converged, rows,
        clusters: res.clusters.map((c) => ({ id: c.id, size: c.size, nearest: c.nearest.map((n) => ({ ...rows[n.id], score: n.score })) })) }, null, 2) + '\n');
      process.stderr.write(summary);
    } else if (args.output !== undefined) {
      process.stdout.write(summary + `wrote ${rows.length} cluster ids to ${args.output}\n`);
    } else {
      process.stdout.write(tsv());
      process.stderr.write(summary);
    }
  },
};

/** Registered in src/cli/main.ts as one entry. */
export const useCommands = [similarityCommand, indexCommand, searchCommand, clusterCommand] as const;
