/**
 * Reproducible few-shot subsets of a corpus and the manifest that describes them.
 *
 * Rules (also in data/README.md):
 * - Candidates are the corpus records left after the reader skipped invalid lines and, unless `blankLines` is
 *   `keep` (then a blank line is an empty sentence, as in the authors' training), blank ones (see readers.ts).
 *   Duplicates (`duplicates`): `keep` (default) treats every line as its own candidate, so a sentence that occurs
 *   twice in the input can occur twice in the subset (at most as often as in the input); `drop` keeps only the
 *   first occurrence of each exact text before drawing.
 * - Size: `count` as given (1 <= count <= candidates); or from `fraction` (0 < fraction <= 1):
 *   size = max(1, round-half-up(fraction x candidates)), computed exactly on the decimal value of `fraction`
 *   (no floating-point error: 0.000064 x 1,000,000 = 64); neither = all candidates (as a training config without
 *   both keys trains; `micse data subset` asks for one). 0.001 x 1,000,000 = 1000.
 * - Draw: `size` distinct candidate positions uniformly without replacement, with the project PRNG
 *   (`Rng.fromSeed(subsetSeed)`, a partial Fisher-Yates shuffle). When size = candidates nothing is drawn.
 * - Output order: input order (ascending line number). Line breaks inside a CSV cell become one space each, so a
 *   subset is always one sentence per line; the manifest counts them.
 * - The manifest has no timestamps or host names, so the same input, options and seed give the same bytes.
 */
import { createHash } from 'node:crypto';
import { shownArgument, UserError } from '../errors.js';
import { checkOutputFile, refuseOverwritingInput, writeAtomic, writeFileAtomic } from '../fsutil.js';
import { createProgress } from '../progress.js';
import {
  CONFIG_CORPUS_NAMES, openCorpus, parseColumn, type BlankLines, type CorpusFormat, type CorpusOptionNames, type OnInvalid, type ReadCorpusOptions,
  type ReadStats,
} from './readers.js';
import { DEFAULT_BLANK_LINES, DEFAULT_CORPUS_FORMAT, DEFAULT_ON_INVALID, type CorpusFormatChoice } from './corpusOptions.js';
import { checkSeed, Rng, RNG_ALGORITHM } from './rng.js';
import { DEFAULT_SUBSET_SEED } from './seeds.js';

/** How repeated identical lines are treated; see the module comment. */
export type Duplicates = 'keep' | 'drop';

/** Manifest format version (2: input.blankLines). */
export const MANIFEST_VERSION = 2;
/** Progress is reported every this many records. */
const PROGRESS_EVERY = 50_000;
/** Sentences per write when saving a subset. */
const WRITE_BLOCK_LINES = 10_000;

/** Which sentences to take. */
export interface SubsetSpec {
  /** 0 < fraction <= 1; exclusive with `count`. */
  fraction?: number | null;
  /** 1 <= count <= candidates; exclusive with `fraction`. */
  count?: number | null;
  /** Default DEFAULT_SUBSET_SEED. */
  subsetSeed?: number;
  /** Default `keep`. */
  duplicates?: Duplicates;
}

/** How subset messages name the options: the training config's keys (CONFIG_SUBSET_NAMES) unless a command's flags. */
export interface SubsetOptionNames extends CorpusOptionNames {
  fraction: string;
  count: string;
  subsetSeed: string;
}

/** The training config's keys of a subset's options. */
const CONFIG_SUBSET_NAMES: SubsetOptionNames = { ...CONFIG_CORPUS_NAMES, fraction: 'data.fraction', count: 'data.count', subsetSeed: 'data.subsetSeed' };

/** Options of `loadTrainingSentences` and `writeSubset`. */
export interface LoadTrainingOptions extends SubsetSpec {
  path: string;
  format?: CorpusFormatChoice;
  column?: string | number | null;
  header?: boolean | 'auto';
  onInvalid?: OnInvalid;
  /** .txt corpora: blank lines skipped (default) or kept as empty sentences. */
  blankLines?: BlankLines;
  /** Print progress on stderr while reading. Default false. */
  progress?: boolean;
  /** How messages name the options above; default CONFIG_SUBSET_NAMES. */
  names?: Partial<SubsetOptionNames>;
}

/** The JSON written beside a subset. Keys are always in this order. */
export interface SubsetManifest {
  manifestVersion: number;
  source: {
    path: string;
    sha256: string;
    bytes: number;
    format: CorpusFormat;
    column: string | number | null;
    header: string[] | null;
  };
  input: {
    lines: number;
    records: number;
    blank: number;
    /** Whether the blank lines were skipped or kept as candidates. */
    blankLines: BlankLines;
    invalid: number;
    invalidLines: number[];
    duplicatesDropped: number;
    candidates: number;
  };
  selection: {
    fraction: number | null;
    count: number | null;
    size: number;
    seed: number;
    rng: string;
    duplicates: Duplicates;
    rule: string;
    order: 'input';
  };
  subset: {
    /** sha256 of the chosen 1-based line numbers, ascending, each followed by "\n". */
    chosenLinesSha256: string;
    /** sha256 of the subset file's bytes (sentences joined by "\n", with a final "\n"). */
    sha256: string;
    /** Chosen sentences equal to an earlier chosen sentence (only with duplicates: keep). */
    duplicates: number;
    lineBreaksReplaced: number;
  };
}

/** The training sentences and the manifest describing how they were chosen. */
export interface TrainingSentences {
  sentences: string[];
  manifest: SubsetManifest;
  /** 1-based source line of each sentence. */
  lines: number[];
}

/** Exact rational value of a finite decimal number as written by `String(x)` (handles exponent form). */
function decimalToRational(x: number): { num: bigint; den: bigint } {
  const m = /^(\d+)(?:\.(\d+))?(?:e([+-]?\d+))?$/i.exec(String(x));
  if (m === null) throw new UserError(`not a decimal number: ${x}`);
  const frac = m[2] ?? '';
  const exp = Number(m[3] ?? '0') - frac.length;
  const digits = BigInt(`${m[1]}${frac}`);
  return exp >= 0 ? { num: digits * 10n ** BigInt(exp), den: 1n } : { num: digits, den: 10n ** BigInt(-exp) };
}

/** Checks a subset spec and fills defaults; errors name the option as `names` says (default: the config key). */
export function normalizeSubsetSpec(
  spec: SubsetSpec, names: SubsetOptionNames = CONFIG_SUBSET_NAMES,
): { fraction: number | null; count: number | null; subsetSeed: number; duplicates: Duplicates } {
  const fraction = spec.fraction ?? null;
  const count = spec.count ?? null;
  if (fraction !== null && count !== null) throw new UserError(`give at most one of ${names.fraction} and ${names.count}`);
  if (fraction !== null && (typeof fraction !== 'number' || !Number.isFinite(fraction) || fraction <= 0 || fraction > 1)) {
    throw new UserError(`${names.fraction} must be a number in (0, 1] (0.001 = 0.1%), got ${shownArgument(fraction)}`);
  }
  if (count !== null && (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 1)) {
    throw new UserError(`${names.count} must be a positive integer, got ${shownArgument(count)}`);
  }
  const subsetSeed = checkSeed(spec.subsetSeed ?? DEFAULT_SUBSET_SEED, names.subsetSeed);
  const duplicates = spec.duplicates ?? 'keep';
  if (duplicates !== 'keep' && duplicates !== 'drop') throw new UserError(`duplicates must be keep or drop, got ${String(duplicates)}`);
  return { fraction, count, subsetSeed, duplicates };
}

/**
 * Subset size for `candidates` lines: `count`, or max(1, round-half-up(fraction x candidates)) computed exactly,
 * or all. Throws a UserError naming `corpus` (its path) when the corpus is empty or `count` (called `countName`)
 * exceeds it.
 */
export function subsetSize(
  candidates: number, spec: { fraction?: number | null; count?: number | null }, corpus = 'the corpus', countName = CONFIG_SUBSET_NAMES.count,
): number {
  if (candidates < 1) throw new UserError(`${corpus}: no usable sentences (the file is empty or all lines are blank or invalid)`);
  if (spec.count !== null && spec.count !== undefined) {
    if (spec.count > candidates) throw new UserError(`${countName} ${spec.count} is larger than ${corpus} (${candidates} sentences)`);
    return spec.count;
  }
  if (spec.fraction === null || spec.fraction === undefined) return candidates;
  const { num, den } = decimalToRational(spec.fraction);
  const size = Number((2n * num * BigInt(candidates) + den) / (2n * den));
  return Math.min(candidates, Math.max(1, size));
}

function ruleText(spec: { fraction: number | null; count: number | null }, blankLines: BlankLines): string {
  const size =
    spec.count !== null
      ? 'size = count'
      : spec.fraction !== null
        ? 'size = max(1, round-half-up(fraction * candidates)), exact decimal arithmetic'
        : 'size = candidates (no fraction or count)';
  return `${size}; candidates = ${blankLines === 'keep' ? 'valid records, blank lines included' : 'non-blank valid records'}; ${RNG_ALGORITHM} seeded with the seed draws size distinct candidates without replacement (partial Fisher-Yates; no draw when size = candidates); written in input order`;
}

const LINE_BREAK = /\r\n|\r|\n/g;

/** 32-bit FNV-1a of a string's UTF-16 code units. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/**
 * Number of strings equal to an earlier one. Sorts (hash, index) pairs in a typed array and compares exact
 * strings only within equal-hash groups, so no hash table of all sentences is built (memory: 8 bytes/sentence).
 */
export function countRepeats(strings: readonly string[]): number {
  const keys = new BigUint64Array(strings.length);
  for (let i = 0; i < strings.length; i++) keys[i] = (BigInt(fnv1a(strings[i]!)) << 32n) | BigInt(i);
  keys.sort();
  let repeats = 0;
  for (let a = 0; a < keys.length; ) {
    const h = keys[a]! >> 32n;
    let b = a + 1;
    while (b < keys.length && keys[b]! >> 32n === h) b++;
    if (b - a > 1) {
      const group = new Set<string>();
      for (let i = a; i < b; i++) group.add(strings[Number(keys[i]! & 0xffffffffn)]!);
      repeats += b - a - group.size;
    }
    a = b;
  }
  return repeats;
}

/** sha256 (hex) of the subset file bytes for `sentences`. */
function subsetBytesHash(sentences: readonly string[]): string {
  const h = createHash('sha256');
  for (const s of sentences) h.update(`${s}\n`);
  return h.digest('hex');
}

/**
 * Reads a corpus and returns the chosen sentences (input order) with their manifest. Without fraction/count (or
 * when the subset is the whole corpus) the file is read once; otherwise twice (count, then collect), so only the
 * chosen sentences are held in memory. The file must not change between the passes (checked by sha256).
 */
export async function loadTrainingSentences(opts: LoadTrainingOptions): Promise<TrainingSentences> {
  const names = { ...CONFIG_SUBSET_NAMES, ...opts.names };
  const spec = normalizeSubsetSpec(opts, names);
  const readOpts: ReadCorpusOptions = {
    format: opts.format ?? DEFAULT_CORPUS_FORMAT, column: parseColumn(opts.column, names.column), header: opts.header ?? 'auto',
    onInvalid: opts.onInvalid ?? DEFAULT_ON_INVALID, blankLines: opts.blankLines ?? DEFAULT_BLANK_LINES, names,
  };
  const reader = openCorpus(opts.path, readOpts);
  const progress = createProgress({ label: `reading ${opts.path}`, unit: 'line', silent: opts.progress !== true });

  // Pass 1: candidates (line numbers; with duplicates: drop, the first occurrence of each text). When everything
  // is taken anyway the texts are kept in the same pass.
  const keepAllTexts = spec.count === null && (spec.fraction === null || spec.fraction === 1);
  const candidateLines: number[] = [];
  const texts: string[] = [];
  const seen = spec.duplicates === 'drop' ? new Set<string>() : null;
  let duplicatesDropped = 0;
  for await (const { text, line } of reader) {
    if (seen !== null) {
      if (seen.has(text)) {
        duplicatesDropped++;
        continue;
      }
      seen.add(text);
    }
    candidateLines.push(line);
    if (keepAllTexts) texts.push(text);
    if (candidateLines.length % PROGRESS_EVERY === 0) progress.tick(PROGRESS_EVERY);
  }
  seen?.clear();
  progress.tick(candidateLines.length % PROGRESS_EVERY);
  const stats1: ReadStats = reader.stats;
  const n = candidateLines.length;
  const size = subsetSize(n, spec, opts.path, names.count);

  let chosenLines: number[];
  let chosenTexts: string[];
  if (size === n && keepAllTexts) {
    chosenLines = candidateLines;
    chosenTexts = texts;
  } else {
    const rng = Rng.fromSeed(spec.subsetSeed);
    const picks = size === n ? candidateLines.map((_, i) => i) : rng.sampleWithoutReplacement(n, size);
    picks.sort((a, b) => a - b);
    chosenLines = picks.map((i) => candidateLines[i] as number);
    candidateLines.length = 0;
    // Pass 2: collect the chosen lines.
    chosenTexts = [];
    let next = 0;
    for await (const { text, line } of reader) {
      if (next < chosenLines.length && line === chosenLines[next]) {
        chosenTexts.push(text);
        next++;
      }
    }
    if (reader.stats.sha256 !== stats1.sha256 || next !== chosenLines.length) {
      throw new UserError(`${opts.path} changed while it was being read (sha256 differs between the two passes)`);
    }
  }
  progress.done({ sentences: chosenTexts.length });

  let lineBreaksReplaced = 0;
  const sentences = chosenTexts.map((t) => {
    LINE_BREAK.lastIndex = 0;
    if (!LINE_BREAK.test(t)) return t;
    lineBreaksReplaced++;
    return t.replace(LINE_BREAK, ' ');
  });
  const duplicatesInSubset = spec.duplicates === 'keep' ? countRepeats(sentences) : 0;
  const linesHash = createHash('sha256');
  for (const l of chosenLines) linesHash.update(`${l}\n`);

  const manifest: SubsetManifest = {
    manifestVersion: MANIFEST_VERSION,
    source: {
      path: opts.path,
      sha256: stats1.sha256 ?? '',
      bytes: stats1.bytes,
      format: reader.format,
      column: readOpts.column ?? null,
      header: stats1.header,
    },
    input: {
      lines: stats1.lines,
      records: stats1.records,
      blank: stats1.blank,
      blankLines: readOpts.blankLines!,
      invalid: stats1.invalid,
      invalidLines: stats1.invalidLines,
      duplicatesDropped,
      candidates: n,
    },
    selection: {
      fraction: spec.fraction,
      count: spec.count,
      size,
      seed: spec.subsetSeed,
      rng: RNG_ALGORITHM,
      duplicates: spec.duplicates,
      rule: ruleText(spec, readOpts.blankLines!),
      order: 'input',
    },
    subset: {
      chosenLinesSha256: linesHash.digest('hex'),
      sha256: subsetBytesHash(sentences),
      duplicates: duplicatesInSubset,
      lineBreaksReplaced,
    },
  };
  return { sentences, manifest, lines: chosenLines };
}

/** `OUT.txt` -> `OUT.manifest.json` (any other name gets `.manifest.json` appended). */
export function manifestPathFor(output: string): string {
  return output.toLowerCase().endsWith('.txt') ? `${output.slice(0, -4)}.manifest.json` : `${output}.manifest.json`;
}

/** Serialises a manifest (2-space JSON, final newline); stable bytes for the same manifest. */
export function manifestJson(manifest: SubsetManifest): string {
  return `${JSON.stringify(manifest, null, 2)}\n`;
}

/** Writes one string per line (final newline) in blocks, so a large subset is not joined into one string. */
async function writeLines(file: string, lines: readonly string[]): Promise<void> {
  await writeAtomic(file, async (handle) => {
    for (let i = 0; i < lines.length; i += WRITE_BLOCK_LINES) {
      await handle.write(`${lines.slice(i, i + WRITE_BLOCK_LINES).join('\n')}\n`);
    }
  });
}

/**
 * Writes the subset (one sentence per line, final newline) to `output` and its manifest beside it, each through a
 * temporary file renamed into place. Before reading the corpus, refuses an `output` or manifest that is the input,
 * that cannot be written (checkOutputFile), or that exists, unless `force`. Returns both paths and the manifest.
 */
export async function writeSubset(
  opts: LoadTrainingOptions & { output: string; force?: boolean },
): Promise<{ output: string; manifestPath: string; manifest: SubsetManifest }> {
  const manifestPath = manifestPathFor(opts.output);
  await refuseOverwritingInput(opts.output, `--output ${opts.output}`, opts.path);
  await refuseOverwritingInput(manifestPath, `its manifest ${manifestPath}`, opts.path);
  await checkOutputFile(opts.output, '--output', opts.force === true);
  await checkOutputFile(manifestPath, '--output', opts.force === true);
  const { sentences, manifest } = await loadTrainingSentences(opts);
  await writeLines(opts.output, sentences);
  await writeFileAtomic(manifestPath, manifestJson(manifest));
  return { output: opts.output, manifestPath, manifest };
}
